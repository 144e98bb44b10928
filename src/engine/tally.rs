//! A run's state turned into outcomes: per destination, each image's state and the blob
//! counts (what was placed, or in a dry run what the plan would do).

use std::collections::HashMap;

use super::{
    BlobCounts, DestRun, Destination, DestinationOutcome, Engine, ImageOutcome, ImageState, Placed,
    PlanSummary,
};
use crate::error::Error;
use crate::oci::Digest;
use crate::plan::Plan;
use crate::source::{BrokenImage, Image, Package};

impl Engine {
    /// What this run placed in one destination (and remembers it for later packages).
    pub(super) async fn placed_counts(
        &self,
        d: &Destination,
        run: &DestRun,
        sizes: &HashMap<Digest, u64>,
    ) -> BlobCounts {
        let mut counts = BlobCounts::default();
        let mut known = d.known.lock().await;
        for ((repo, digest), r) in &run.blobs {
            match r {
                Ok(p) => {
                    known.entry(digest.clone()).or_insert_with(|| repo.clone());
                    match p {
                        Placed::Present => counts.present += 1,
                        Placed::Mounted => counts.mounted += 1,
                        Placed::Uploaded => {
                            counts.uploaded += 1;
                            counts.bytes += sizes.get(digest).copied().unwrap_or(0);
                        }
                    }
                }
                Err(_) => counts.failed += 1,
            }
        }
        counts.nondistributable = run.plan.nondistributable.len() as u64;
        counts
    }

    /// The images of one destination: the unresolvable ones first, then the package's order.
    pub(super) fn destination_outcome(
        &self,
        d: &Destination,
        run: &DestRun,
        images: &[Image],
        broken: &[BrokenImage],
        pkg: &Package,
    ) -> DestinationOutcome {
        let in_package = |source: &str, e: &Error| {
            e.clone()
                .context(format!("package {}: image {source}", pkg.label()))
        };
        let unresolved = broken.iter().map(|b| ImageOutcome {
            source: b.source.clone(),
            repo: None,
            reference: String::new(),
            digest: b.digest.to_string(),
            state: ImageState::Failed(in_package(&b.source, &b.error)),
        });
        let resolved = images
            .iter()
            .zip(&run.images)
            .map(|(img, state)| ImageOutcome {
                source: img.source.clone(),
                repo: Some(img.repo.clone()),
                reference: img.reference.clone(),
                digest: img.graph.root.digest.to_string(),
                state: match state {
                    ImageState::Failed(e) => ImageState::Failed(in_package(&img.source, e)),
                    other => other.clone(),
                },
            });
        DestinationOutcome {
            label: d.registry.label(),
            images: unresolved.chain(resolved).collect(),
            blobs: BlobCounts::default(),
            plan: None,
        }
    }
}

/// A dry run's counts: what the plan would do.
pub(super) fn planned_counts(plan: &Plan) -> BlobCounts {
    BlobCounts {
        uploaded: plan.uploads.len() as u64,
        bytes: plan.bytes_to_send(),
        mounted: plan_mounts(plan),
        present: plan.present as u64,
        nondistributable: plan.nondistributable.len() as u64,
        failed: 0,
    }
}

/// Mounts from repositories that hold the blob, and of blobs once uploaded.
pub(super) fn plan_mounts(plan: &Plan) -> u64 {
    plan.mounts.len() as u64
        + plan
            .uploads
            .iter()
            .map(|u| u.then_mount.len() as u64)
            .sum::<u64>()
}

pub(super) fn summarize(d: &Destination, run: &DestRun, images: &[Image]) -> PlanSummary {
    let present = run
        .images
        .iter()
        .filter(|s| matches!(s, ImageState::Present))
        .count() as u64;
    PlanSummary {
        destination: d.registry.host().to_string(),
        images_to_push: images.len() as u64 - present,
        images_present: present,
        blobs_to_upload: run.plan.uploads.len() as u64,
        bytes_to_upload: run.plan.bytes_to_send(),
        blobs_to_mount: plan_mounts(&run.plan),
        blobs_present: run.plan.present as u64,
        nondistributable: run.plan.nondistributable.len() as u64,
    }
}
