//! Asking a destination what it already has (tag and blob HEADs, many in flight) and planning
//! the rest with `plan`. Blobs whose HEAD failed fail their images with that error, while
//! the other repositories wanting the same blob still get it.

use std::collections::{HashMap, HashSet};

use futures::stream::{self as fstream, StreamExt};

use super::{DestRun, Destination, Engine, ImageState, Placed, Shared};
use crate::oci::Digest;
use crate::plan::{self, ImageNeeds, Plan};
use crate::source::Image;

impl Engine {
    /// Asks one destination which images and blobs it already has, and plans the rest.
    pub(super) async fn survey(
        &self,
        d: &Destination,
        images: &[Image],
        sizes: &HashMap<Digest, u64>,
    ) -> DestRun {
        let reg = &d.registry;
        let width = self.small_requests();
        let tags: Vec<Shared<bool>> = fstream::iter(images.iter().map(|img| async move {
            reg.manifest_digest(&img.repo, &img.reference)
                .await
                .map(|got| got.as_deref() == Some(img.graph.root.digest.as_str()))
        }))
        .buffered(width)
        .collect()
        .await;

        let mut run = DestRun {
            blobs: HashMap::new(),
            images: vec![ImageState::Planned; images.len()],
            plan: Plan::default(),
        };
        let mut pairs: HashSet<(String, Digest)> = HashSet::new();
        for (i, (img, present)) in images.iter().zip(tags).enumerate() {
            match present {
                Ok(true) => run.images[i] = ImageState::Present,
                Ok(false) => pairs.extend(
                    img.graph
                        .blobs
                        .iter()
                        .map(|b| (img.repo.clone(), b.digest.clone())),
                ),
                Err(e) => run.images[i] = ImageState::Failed(e),
            }
        }
        let heads: Vec<((String, Digest), Shared<bool>)> =
            fstream::iter(pairs.into_iter().map(|(repo, digest)| {
                let size = sizes.get(&digest).copied().unwrap_or(0);
                async move {
                    let r = reg.blob_present(&repo, &digest, size).await;
                    ((repo, digest), r)
                }
            }))
            .buffer_unordered(width)
            .collect()
            .await;
        let mut present = HashSet::new();
        for (key, r) in heads {
            match r {
                Ok(true) => {
                    run.blobs.insert(key.clone(), Ok(Placed::Present));
                    present.insert(key);
                }
                Ok(false) => {}
                Err(e) => {
                    run.blobs.insert(key, Err(e));
                }
            }
        }
        let needs: Vec<ImageNeeds> = images
            .iter()
            .zip(&run.images)
            .filter(|(_, s)| matches!(s, ImageState::Planned))
            .map(|(img, _)| ImageNeeds {
                repo: &img.repo,
                blobs: &img.graph.blobs,
            })
            .collect();
        let known = d.known.lock().await.clone();
        let mut plan =
            plan::plan_destination(&needs, &present, &known, self.opts.allow_nondistributable);
        // Blobs whose HEAD failed are not retried blindly: their images fail with that error.
        // The other repositories that want the same blob still get it: when the upload target
        // is the one that failed, the next repository in line becomes the upload target.
        let failed = |repo: &str, digest: &Digest| {
            run.blobs.contains_key(&(repo.to_string(), digest.clone()))
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
        run.plan = plan;
        run
    }
}
