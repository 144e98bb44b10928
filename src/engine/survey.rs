//! Asking a destination what it already has (tag and blob HEADs, many in flight) and planning
//! the rest with `plan`. Blobs whose HEAD failed fail their images with that error, while
//! the other repositories wanting the same blob still get it.
//!
//! The tag HEADs and the blob HEADs go out together (`lookahead.rs`: blobs of images found
//! in the registry are skipped once that is known). Once the tags are in, each blob is
//! planned as soon as its own HEADs are in, in the order the images name them, and told to
//! the [`Gate`] and the early work, so the streaming pass can start with the first blobs
//! while the HEADs of the later ones are on the wire.

use std::collections::{HashMap, HashSet};

use futures::stream::{self as fstream, StreamExt};

use tokio::sync::mpsc;

use super::early::Told;
use super::gate::Gate;
use super::lookahead::{Lookahead, Pair, TagStates};
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
        // Twice the usual number in flight: nothing is planned before the last tag is in,
        // and a second wave of them is a round trip of an idle link on a distant one.
        let tags: Vec<Shared<bool>> = fstream::iter(tags)
            .buffered(2 * self.small_requests())
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

    /// Takes destination `di`'s answers about the blobs of its missing images from `ahead`
    /// and plans the rest into `run.plan`, telling `live` (if any) each blob's plan as soon
    /// as it is known.
    pub(super) async fn survey_blobs(
        &self,
        di: usize,
        run: &mut DestRun,
        images: &[Image],
        mut ahead: Lookahead,
        live: Option<Live<'_>>,
    ) {
        let reg = &self.dests[di].registry;
        let known = self.dests[di].known.lock().await.clone();
        let allow_nondist = self.opts.allow_nondistributable;
        let pairs = ahead.pairs.clone();
        let planned = |p: &Pair| {
            p.images
                .iter()
                .any(|&i| matches!(run.images[i], ImageState::Planned))
        };

        // The answers come in pair order, each blob's pairs together.
        let mut present = HashSet::new();
        for group in pairs.chunk_by(|a, b| a.blob.digest == b.blob.digest) {
            let digest = &group[0].blob.digest;
            let mut here = HashSet::new();
            let mut wanting = Vec::new();
            for p in group {
                let answer = ahead.answers.recv().await;
                if !planned(p) {
                    continue;
                }
                wanting.push(p);
                let answer = match answer {
                    Some(Some(answer)) => answer,
                    // not asked (no image wanted it then) or the asking stopped: ask now
                    _ => reg.blob_present(&p.repo, digest, p.blob.size).await,
                };
                let key = (p.repo.clone(), digest.clone());
                match answer {
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
            if let (Some(live), false) = (&live, wanting.is_empty()) {
                let needs: Vec<ImageNeeds> = wanting
                    .iter()
                    .map(|p| ImageNeeds {
                        repo: &p.repo,
                        blobs: std::slice::from_ref(&p.blob),
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
