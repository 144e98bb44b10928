//! Asking a destination what it already has (tag and blob HEADs, many in flight) and planning
//! the rest with `plan`. Blobs whose HEAD failed fail their images with that error, while
//! the other repositories wanting the same blob still get it.
//!
//! The tag HEADs and the blob HEADs go out together (`lookahead.rs`: blobs of images found
//! in the registry are skipped once that is known). Each blob is planned as soon as its own
//! HEADs are in, in the order the images name them, without waiting for the tags, and told
//! to the [`Gate`] and the early work, so the streaming pass starts with the first blobs
//! while the tags and the HEADs of the later blobs are still on the wire.

use std::collections::{HashMap, HashSet};

use futures::stream::{self as fstream, StreamExt};

use tokio::sync::mpsc;

use super::early::Told;
use super::gate::Gate;
use super::lookahead::{Lookahead, TagStates};
use super::stream::Target;
use super::{DestRun, Engine, ImageState, Placed, Shared};
use crate::oci::Digest;
use crate::plan::{self, ImageNeeds, Plan};
use crate::source::Image;

/// A survey running beside the first streaming pass: it tells the gate where each blob
/// goes, and the early work what is present and what was planned.
pub(super) struct Live<'a> {
    pub gate: &'a Gate,
    pub told: &'a mpsc::UnboundedSender<Told>,
}

impl Engine {
    /// Asks destination `di` which images it already has (tag HEADs).
    /// Each answer is told to `states` as it comes (the blob HEADs already going out skip
    /// the images found there).
    pub(super) async fn survey_tags(
        &self,
        di: usize,
        images: &[Image],
        states: &TagStates,
    ) -> DestRun {
        let reg = &self.dests[di].registry;
        let tags = images.iter().enumerate().map(|(i, img)| async move {
            let r = reg
                .manifest_digest(&img.repo, &img.reference)
                .await
                .map(|got| got.as_deref() == Some(img.graph.root.digest.as_str()));
            states.set(i, matches!(r, Ok(false)));
            r
        });
        let tags: Vec<Shared<bool>> = fstream::iter(tags)
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
            wanted: HashSet::new(),
        }
    }

    /// Asks destination `di` about the tags and the blobs of `images` at once and plans what
    /// is missing, telling `live` (if any) the tags once they are in and each blob's plan as
    /// soon as its own HEADs are in.
    pub(super) async fn survey(
        &self,
        di: usize,
        images: &[Image],
        ahead: Lookahead,
        tag_states: &TagStates,
        live: Option<Live<'_>>,
    ) -> DestRun {
        let tags = async {
            let run = self.survey_tags(di, images, tag_states).await;
            if let Some(live) = &live {
                let planned = run
                    .images
                    .iter()
                    .map(|s| matches!(s, ImageState::Planned))
                    .collect();
                let _ = live.told.send(Told::Tags { dest: di, planned });
            }
            run
        };
        let (mut run, (mut blobs, present, mut plan)) = futures::join!(
            tags,
            self.survey_blobs(di, ahead, tag_states, live.as_ref())
        );

        // Answers about images found in the registry (asked before their tag was in) are
        // not this run's business: no failure is counted for them.
        run.wanted = images
            .iter()
            .zip(&run.images)
            .filter(|(_, s)| matches!(s, ImageState::Planned))
            .flat_map(|(img, _)| {
                img.graph
                    .blobs
                    .iter()
                    .map(|b| (img.repo.clone(), b.digest.clone()))
            })
            .collect();
        blobs.retain(|key, _| run.wanted.contains(key));
        run.blobs = blobs;
        // The plan is the per-blob decisions as they were made (the gate and the early work
        // act on them); only its count of blobs already there is of the images to push.
        plan.present = present.iter().filter(|k| run.wanted.contains(*k)).count();
        run.plan = plan;
        run
    }

    /// Takes destination `di`'s answers about the blobs from `ahead` and plans each blob as
    /// soon as its own HEADs are in. It needs no tag answer: an image found in the registry
    /// has its blobs there too, so planning as if every image not yet known to be there were
    /// missing plans the same (where a registry holds a tag without its blobs, the blob goes
    /// up once more: harmless, and a failure of it is nobody's; see `settle`). Gives back
    /// each pair's answer, those found present, and the plan: the decisions as made.
    async fn survey_blobs(
        &self,
        di: usize,
        mut ahead: Lookahead,
        tags: &TagStates,
        live: Option<&Live<'_>>,
    ) -> (
        HashMap<(String, Digest), Shared<Placed>>,
        HashSet<(String, Digest)>,
        Plan,
    ) {
        let known = self.dests[di].known.lock().await.clone();
        let allow_nondist = self.opts.allow_nondistributable;
        let pairs = ahead.pairs.clone();
        let mut blobs = HashMap::new();
        let mut present = HashSet::new();
        let mut decided = Plan::default();
        // The answers come in pair order, each blob's pairs together.
        for group in pairs.chunk_by(|a, b| a.blob.digest == b.blob.digest) {
            let digest = &group[0].blob.digest;
            let mut here = HashSet::new();
            let mut asked = Vec::new();
            for p in group {
                // not asked: every image wanting it was found in the registry by then
                let Some(Some(answer)) = ahead.answers.recv().await else {
                    continue;
                };
                asked.push(p);
                let key = (p.repo.clone(), digest.clone());
                match answer {
                    Ok(true) => {
                        if let Some(live) = live {
                            let _ = live.told.send(Told::Present {
                                dest: di,
                                repo: key.0.clone(),
                                digest: key.1.clone(),
                            });
                        }
                        blobs.insert(key.clone(), Ok(Placed::Present));
                        here.insert(key);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        blobs.insert(key, Err(e));
                    }
                }
            }
            // Repositories whose images are known to be pushed go first (the upload goes to
            // the first in line); those whose images were found in the registry meanwhile
            // are left out (a holder of the blob is still a source to mount from).
            asked.retain(|p| !p.images.iter().all(|&i| tags.not_wanted(i)));
            asked.sort_by_key(|p| !p.images.iter().any(|&i| tags.wanted(i)));
            let needs: Vec<ImageNeeds> = asked
                .iter()
                .map(|p| ImageNeeds {
                    repo: &p.repo,
                    blobs: std::slice::from_ref(&p.blob),
                })
                .collect();
            let one = plan::plan_destination(&needs, &here, &known, allow_nondist);
            let one = without_failed(one, &blobs);
            decided.uploads.extend(one.uploads.iter().cloned());
            decided.mounts.extend(one.mounts.iter().cloned());
            decided
                .nondistributable
                .extend(one.nondistributable.iter().cloned());
            if let Some(live) = live {
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
        if let Some(live) = live {
            live.gate.finish(di);
        }
        (blobs, present, decided)
    }
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
