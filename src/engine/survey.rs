//! Asking a destination what it already has (tag and blob HEADs, many in flight) and planning
//! the rest with `plan`. Blobs whose HEAD failed fail their images with that error, while
//! the other repositories wanting the same blob still get it.
//!
//! Two steps: the tags first (a handful of requests), then the blobs of the images still
//! missing. The blob HEADs go out in image order and each blob is planned as soon as its own
//! HEADs are in, and told to the [`Gate`], so the streaming pass can start with the first
//! blobs while the HEADs of the later ones are on the wire.

use std::collections::{HashMap, HashSet};

use futures::stream::{self as fstream, StreamExt};

use tokio::sync::mpsc;

use super::early::Told;
use super::gate::Gate;
use super::stream::Target;
use super::{DestRun, Engine, ImageState, Placed, Shared};
use crate::oci::Digest;
use crate::plan::{self, ImageNeeds, Plan};
use crate::source::{Descriptor, Image};

/// A survey running beside the first streaming pass: it tells the gate where each blob
/// goes, and the early work what is present and what was planned.
pub(super) struct Live<'a> {
    pub gate: &'a Gate,
    pub told: &'a mpsc::UnboundedSender<Told>,
}

impl Engine {
    /// Asks destination `di` which images it already has (tag HEADs).
    pub(super) async fn survey_tags(&self, di: usize, images: &[Image]) -> DestRun {
        let reg = &self.dests[di].registry;
        let tags: Vec<Shared<bool>> = fstream::iter(images.iter().map(|img| async move {
            reg.manifest_digest(&img.repo, &img.reference)
                .await
                .map(|got| got.as_deref() == Some(img.graph.root.digest.as_str()))
        }))
        .buffered(self.small_requests())
        .collect()
        .await;
        let images = tags
            .into_iter()
            .map(|present| match present {
                Ok(true) => ImageState::Present,
                Ok(false) => ImageState::Planned,
                Err(e) => ImageState::Failed(e),
            })
            .collect();
        DestRun {
            blobs: HashMap::new(),
            images,
            plan: Plan::default(),
        }
    }

    /// Asks destination `di` which blobs of its missing images it has and plans the rest into
    /// `run.plan`, telling `live` (if any) each blob's plan as soon as it is known.
    pub(super) async fn survey_blobs(
        &self,
        di: usize,
        run: &mut DestRun,
        images: &[Image],
        sizes: &HashMap<Digest, u64>,
        live: Option<Live<'_>>,
    ) {
        let reg = &self.dests[di].registry;
        let wanted = wanted_by_digest(images, &run.images);
        let known = self.dests[di].known.lock().await.clone();
        let allow_nondist = self.opts.allow_nondistributable;
        let pairs = wanted
            .iter()
            .flat_map(|(digest, repos)| repos.iter().map(move |(repo, _)| (repo, digest)));
        let mut heads = fstream::iter(pairs.map(|(repo, digest)| {
            let size = sizes.get(digest).copied().unwrap_or(0);
            async move { reg.blob_present(repo, digest, size).await }
        }))
        .buffered(self.small_requests());

        // `buffered` answers in order: each digest's HEADs arrive together.
        let mut present = HashSet::new();
        for (digest, repos) in &wanted {
            let mut here = HashSet::new();
            for (repo, _) in repos {
                let key = (repo.to_string(), digest.clone());
                match heads.next().await.expect("one answer per HEAD") {
                    Ok(true) => {
                        run.blobs.insert(key.clone(), Ok(Placed::Present));
                        if let Some(live) = &live {
                            let _ = live.told.send(Told::Present {
                                dest: di,
                                repo: key.0.clone(),
                                digest: key.1.clone(),
                            });
                        }
                        here.insert(key);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        run.blobs.insert(key, Err(e));
                    }
                }
            }
            if let Some(live) = &live {
                let needs: Vec<ImageNeeds> = repos
                    .iter()
                    .map(|(repo, b)| ImageNeeds {
                        repo,
                        blobs: std::slice::from_ref(*b),
                    })
                    .collect();
                let one = plan::plan_destination(&needs, &here, &known, allow_nondist);
                let one = without_failed(one, &run.blobs);
                let targets: Vec<Target> = one
                    .uploads
                    .iter()
                    .map(|u| Target {
                        dest: di,
                        repo: u.repo.clone(),
                    })
                    .collect();
                // the early work first: it must know where to mount an upload before the
                // upload can end
                let _ = live.told.send(Told::Decided {
                    dest: di,
                    plan: one,
                });
                live.gate.decide(digest, di, targets);
            }
            present.extend(here);
        }
        if let Some(live) = &live {
            live.gate.finish(di);
        }

        // The whole plan once more, from the same answers: the one the report and the later
        // passes read, identical to the per-blob decisions above (the planner decides each
        // digest on its own) and cheap next to a single round trip.
        let needs: Vec<ImageNeeds> = images
            .iter()
            .zip(&run.images)
            .filter(|(_, s)| matches!(s, ImageState::Planned))
            .map(|(img, _)| ImageNeeds {
                repo: &img.repo,
                blobs: &img.graph.blobs,
            })
            .collect();
        let plan = plan::plan_destination(&needs, &present, &known, allow_nondist);
        run.plan = without_failed(plan, &run.blobs);
    }
}

/// Every blob of the images still `Planned`, in first-seen order, with the repositories (in
/// image order, each once) that want it.
fn wanted_by_digest<'a>(
    images: &'a [Image],
    states: &[ImageState],
) -> Vec<(Digest, Vec<(&'a str, &'a Descriptor)>)> {
    let mut order: Vec<(Digest, Vec<(&str, &Descriptor)>)> = Vec::new();
    let mut at: HashMap<&Digest, usize> = HashMap::new();
    let mut seen: HashSet<(&str, &Digest)> = HashSet::new();
    for (img, _) in images
        .iter()
        .zip(states)
        .filter(|(_, s)| matches!(s, ImageState::Planned))
    {
        for b in &img.graph.blobs {
            if !seen.insert((img.repo.as_str(), &b.digest)) {
                continue;
            }
            let i = *at.entry(&b.digest).or_insert_with(|| {
                order.push((b.digest.clone(), Vec::new()));
                order.len() - 1
            });
            order[i].1.push((img.repo.as_str(), b));
        }
    }
    order
}

/// Blobs whose HEAD failed are not retried blindly: their images fail with that error. The
/// other repositories that want the same blob still get it: when the upload target is the one
/// that failed, the next repository in line becomes the upload target.
fn without_failed(mut plan: Plan, blobs: &HashMap<(String, Digest), Shared<Placed>>) -> Plan {
    let failed = |repo: &str, digest: &Digest| {
        matches!(blobs.get(&(repo.to_string(), digest.clone())), Some(Err(_)))
    };
    plan.uploads = std::mem::take(&mut plan.uploads)
        .into_iter()
        .filter_map(|mut u| {
            u.then_mount.retain(|r| !failed(r, &u.digest));
            if failed(&u.repo, &u.digest) {
                if u.then_mount.is_empty() {
                    return None;
                }
                u.repo = u.then_mount.remove(0);
            }
            Some(u)
        })
        .collect();
    plan.mounts.retain(|m| !failed(&m.repo, &m.digest));
    plan
}
