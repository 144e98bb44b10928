//! The planner: given what a package holds and what a destination registry already has,
//! decide for every blob whether to skip it, mount it from another repository, or upload it.
//! Pure functions, no I/O: the engine asks the registry, the planner decides.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::oci::Digest;
use crate::source::Descriptor;

/// The blobs (configs and layers) one image needs in one destination repository.
#[derive(Debug, Clone)]
pub struct ImageNeeds<'a> {
    pub repo: &'a str,
    pub blobs: &'a [Descriptor],
}

/// Upload one blob into `repo`, then mount it into `then_mount`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upload {
    pub digest: Digest,
    pub size: u64,
    pub repo: String,
    pub then_mount: Vec<String>,
}

/// Mount a blob the registry already has in `from` into `repo`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mount {
    pub digest: Digest,
    pub repo: String,
    pub from: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub uploads: Vec<Upload>,
    pub mounts: Vec<Mount>,
    /// (repository, blob) pairs the registry already has.
    pub present: usize,
    /// Foreign/non-distributable layers left out (see `--allow-nondistributable-artifacts`).
    pub nondistributable: Vec<Digest>,
}

impl Plan {
    pub fn bytes_to_send(&self) -> u64 {
        self.uploads.iter().map(|u| u.size).sum()
    }
}

/// Plans one destination.
///
/// * `present`: (repo, digest) pairs the registry answered HEAD 200 for.
/// * `known`: blobs this run already placed in some repository of this registry (earlier
///   packages), usable as mount sources.
pub fn plan_destination(
    images: &[ImageNeeds<'_>],
    present: &HashSet<(String, Digest)>,
    known: &HashMap<Digest, String>,
    allow_nondistributable: bool,
) -> Plan {
    let mut plan = Plan::default();
    // digest → (size, repos needing it, in first-seen order)
    let mut needed: BTreeMap<Digest, (u64, Vec<String>)> = BTreeMap::new();
    // digest → a repository that already holds it
    let mut holder: HashMap<Digest, String> = known.clone();
    let mut nondist = HashSet::new();
    for (repo, d) in present {
        holder.entry(d.clone()).or_insert_with(|| repo.clone());
    }
    let mut seen = HashSet::new();
    for img in images {
        for b in img.blobs {
            if !seen.insert((img.repo.to_string(), b.digest.clone())) {
                continue;
            }
            if b.is_nondistributable() && !allow_nondistributable {
                if nondist.insert(b.digest.clone()) {
                    plan.nondistributable.push(b.digest.clone());
                }
                continue;
            }
            if present.contains(&(img.repo.to_string(), b.digest.clone())) {
                plan.present += 1;
                continue;
            }
            let entry = needed
                .entry(b.digest.clone())
                .or_insert((b.size, Vec::new()));
            entry.1.push(img.repo.to_string());
        }
    }
    for (digest, (size, repos)) in needed {
        match holder.get(&digest) {
            Some(from) => {
                for repo in repos {
                    plan.mounts.push(Mount {
                        digest: digest.clone(),
                        repo,
                        from: from.clone(),
                    });
                }
            }
            None => {
                let mut repos = repos.into_iter();
                let first = repos
                    .next()
                    .expect("a needed blob has at least one repository");
                plan.uploads.push(Upload {
                    digest,
                    size,
                    repo: first,
                    then_mount: repos.collect(),
                });
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(content: &[u8], media: &str) -> Descriptor {
        Descriptor {
            media_type: media.into(),
            digest: Digest::of(content),
            size: content.len() as u64,
            annotations: None,
            platform: None,
        }
    }

    const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    #[test]
    fn uploads_once_then_mounts_shared_layers() {
        let base = blob(b"base", LAYER);
        let a = [base.clone(), blob(b"a", LAYER)];
        let b = [base.clone(), blob(b"bb", LAYER)];
        let images = [
            ImageNeeds {
                repo: "acp/a",
                blobs: &a,
            },
            ImageNeeds {
                repo: "acp/b",
                blobs: &b,
            },
        ];
        let plan = plan_destination(&images, &HashSet::new(), &HashMap::new(), false);
        assert_eq!(plan.uploads.len(), 3);
        let shared = plan
            .uploads
            .iter()
            .find(|u| u.digest == base.digest)
            .unwrap();
        assert_eq!(shared.repo, "acp/a");
        assert_eq!(shared.then_mount, vec!["acp/b".to_string()]);
        assert_eq!(plan.bytes_to_send(), 4 + 1 + 2);
        assert!(plan.mounts.is_empty());
    }

    #[test]
    fn present_blobs_are_skipped_and_used_as_mount_sources() {
        let base = blob(b"base", LAYER);
        let a = [base.clone()];
        let b = [base.clone()];
        let images = [
            ImageNeeds {
                repo: "acp/a",
                blobs: &a,
            },
            ImageNeeds {
                repo: "acp/b",
                blobs: &b,
            },
        ];
        let present: HashSet<_> = [("acp/a".to_string(), base.digest.clone())].into();
        let plan = plan_destination(&images, &present, &HashMap::new(), false);
        assert_eq!(plan.present, 1);
        assert!(plan.uploads.is_empty());
        assert_eq!(
            plan.mounts,
            vec![Mount {
                digest: base.digest.clone(),
                repo: "acp/b".into(),
                from: "acp/a".into()
            }]
        );
        assert_eq!(plan.bytes_to_send(), 0);
    }

    #[test]
    fn blobs_from_earlier_packages_are_mounted() {
        let base = blob(b"base", LAYER);
        let a = [base.clone()];
        let known: HashMap<_, _> = [(base.digest.clone(), "acp/earlier".to_string())].into();
        let plan = plan_destination(
            &[ImageNeeds {
                repo: "acp/a",
                blobs: &a,
            }],
            &HashSet::new(),
            &known,
            false,
        );
        assert_eq!(plan.mounts.len(), 1);
        assert_eq!(plan.mounts[0].from, "acp/earlier");
    }

    #[test]
    fn nondistributable_layers_are_left_out_unless_allowed() {
        let foreign = blob(
            b"win",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        );
        let a = [foreign.clone()];
        let images = [ImageNeeds {
            repo: "acp/a",
            blobs: &a,
        }];
        let plan = plan_destination(&images, &HashSet::new(), &HashMap::new(), false);
        assert_eq!(plan.nondistributable, vec![foreign.digest.clone()]);
        assert!(plan.uploads.is_empty());
        let plan = plan_destination(&images, &HashSet::new(), &HashMap::new(), true);
        assert_eq!(plan.uploads.len(), 1);
    }
}
