//! Manifests go up only for images whose every blob is in place in their repository (or
//! deliberately left out), children before the index that lists them: most while the blobs
//! still go (`early.rs`), the rest here after the last pass.

use std::collections::HashMap;

use futures::stream::{self as fstream, StreamExt};

use super::{DestRun, Engine, ImageState, Placed, Shared};
use crate::error::Error;
use crate::oci::Digest;
use crate::sink::RegistryApi;
use crate::source::Image;

impl Engine {
    /// The manifests of the images of destination `di` still to be pushed (those the early
    /// work did not push while the blobs went).
    pub(super) async fn push_manifests(&self, di: usize, run: &mut DestRun, images: &[Image]) {
        let reg = self.dests[di].registry.as_ref();
        let allow = self.opts.allow_nondistributable;
        let ready: Vec<(usize, Shared<()>)> = images
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(run.images[*i], ImageState::Planned))
            .map(|(i, img)| (i, blobs_ready(img, &run.blobs, allow)))
            .collect();
        let results: Vec<(usize, Shared<()>)> =
            fstream::iter(ready.into_iter().map(|(i, ready)| async move {
                if let Err(e) = ready {
                    return (i, Err(e.context("manifest not pushed")));
                }
                (i, put_image_manifests(reg, &images[i]).await)
            }))
            .buffer_unordered(self.small_requests())
            .collect()
            .await;
        for (i, r) in results {
            run.images[i] = match r {
                Ok(()) => ImageState::Pushed,
                Err(e) => ImageState::Failed(e),
            };
        }
    }
}

/// One image's manifests, in the order the graph lists them: children before the index that
/// lists them, the root under the image's tag.
pub(super) async fn put_image_manifests(reg: &dyn RegistryApi, img: &Image) -> Shared<()> {
    for (desc, bytes) in &img.graph.manifests {
        let is_root = desc.digest == img.graph.root.digest;
        let reference = if is_root {
            img.reference.as_str()
        } else {
            desc.digest.as_str()
        };
        reg.put_manifest(&img.repo, reference, &desc.media_type, bytes.clone())
            .await?;
    }
    Ok(())
}

/// Every blob of the image is in its repository (or deliberately left out).
pub(super) fn blobs_ready(
    img: &Image,
    blobs: &HashMap<(String, Digest), Shared<Placed>>,
    allow_nondist: bool,
) -> Shared<()> {
    for b in &img.graph.blobs {
        if b.is_nondistributable() && !allow_nondist {
            continue;
        }
        match blobs.get(&(img.repo.clone(), b.digest.clone())) {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.clone()),
            None => {
                return Err(Error::internal(format!(
                    "blob {} was never placed",
                    b.digest
                )))
            }
        }
    }
    Ok(())
}
