//! Blob HEADs sent before the tag answers are in. On a distant link the tag HEADs of a
//! package of many images take a few round trips, and the blob HEADs used to start only
//! after the last of them: the first upload then waited for tags and blobs one after the
//! other. Here the blob HEADs go out at once, in the order the surveys read them; a blob
//! wanted only by images already found in the registry is not asked about once that is known
//! (so a re-push asks at most one window of blob HEADs it did not need, in parallel with the
//! tags), and its answer, if asked, is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use futures::stream::{self as fstream, StreamExt};
use tokio::sync::mpsc;

use super::{Engine, Shared};
use crate::oci::Digest;
use crate::source::{Descriptor, Image};

/// What the tag HEADs said so far, per image: not known yet, to be pushed, or not (already
/// there, or its tag could not be read).
#[derive(Default)]
pub(super) struct TagStates(Vec<AtomicU8>);

const UNKNOWN: u8 = 0;
const WANTED: u8 = 1;
const NOT_WANTED: u8 = 2;

impl TagStates {
    pub fn new(images: usize) -> Arc<TagStates> {
        Arc::new(TagStates(
            (0..images).map(|_| AtomicU8::new(UNKNOWN)).collect(),
        ))
    }

    pub fn set(&self, image: usize, wanted: bool) {
        let v = if wanted { WANTED } else { NOT_WANTED };
        self.0[image].store(v, Ordering::SeqCst);
    }

    /// Found in the registry (or its tag unreadable): nothing of it is to be pushed.
    pub fn not_wanted(&self, image: usize) -> bool {
        self.0[image].load(Ordering::SeqCst) == NOT_WANTED
    }

    /// Known to be pushed.
    pub fn wanted(&self, image: usize) -> bool {
        self.0[image].load(Ordering::SeqCst) == WANTED
    }
}

/// One blob in one repository, with the images that want it there.
pub(super) struct Pair {
    pub repo: String,
    pub blob: Descriptor,
    pub images: Vec<usize>,
}

/// The HEADs of every (repository, blob) pair of a package, answered in order.
pub(super) struct Lookahead {
    /// Grouped by blob, blobs in the order the images first name them, repositories in image
    /// order.
    pub pairs: Arc<Vec<Pair>>,
    /// One answer per pair, in order: `None` when it was not asked (not wanted any more).
    pub answers: mpsc::UnboundedReceiver<Option<Shared<bool>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Lookahead {
    fn drop(&mut self) {
        // a push that ends early (or a dry run) need not hear the rest
        self.task.abort();
    }
}

impl Engine {
    /// Starts asking destination `di` about every blob of `images`, skipping those `tags`
    /// says are wanted by no image.
    pub(super) fn look_ahead(
        &self,
        di: usize,
        images: &[Image],
        tags: Arc<TagStates>,
    ) -> Lookahead {
        let pairs = Arc::new(all_pairs(images));
        let registry = self.dests[di].registry.clone();
        let in_flight = self.small_requests();
        let (tx, answers) = mpsc::unbounded_channel();
        let asked = pairs.clone();
        let task = tokio::spawn(async move {
            let mut heads = fstream::iter(0..asked.len())
                .map(|k| {
                    let (pairs, registry, tags) = (asked.clone(), registry.clone(), tags.clone());
                    async move {
                        let p = &pairs[k];
                        if p.images.iter().all(|&i| tags.not_wanted(i)) {
                            return None;
                        }
                        let size = p.blob.size;
                        Some(registry.blob_present(&p.repo, &p.blob.digest, size).await)
                    }
                })
                .buffered(in_flight);
            while let Some(answer) = heads.next().await {
                if tx.send(answer).is_err() {
                    return;
                }
            }
        });
        Lookahead {
            pairs,
            answers,
            task,
        }
    }
}

/// Every (repository, blob) pair of the images, grouped by blob in first-seen order, each
/// with the images that want it.
fn all_pairs(images: &[Image]) -> Vec<Pair> {
    let mut by_blob: Vec<Vec<Pair>> = Vec::new();
    let mut blob_at: HashMap<&Digest, usize> = HashMap::new();
    let mut pair_at: HashMap<(&str, &Digest), (usize, usize)> = HashMap::new();
    for (i, img) in images.iter().enumerate() {
        for b in &img.graph.blobs {
            if let Some(&(g, k)) = pair_at.get(&(img.repo.as_str(), &b.digest)) {
                let wanting = &mut by_blob[g][k].images;
                if wanting.last() != Some(&i) {
                    wanting.push(i);
                }
                continue;
            }
            let g = *blob_at.entry(&b.digest).or_insert_with(|| {
                by_blob.push(Vec::new());
                by_blob.len() - 1
            });
            by_blob[g].push(Pair {
                repo: img.repo.clone(),
                blob: b.clone(),
                images: vec![i],
            });
            pair_at.insert((img.repo.as_str(), &b.digest), (g, by_blob[g].len() - 1));
        }
    }
    by_blob.into_iter().flatten().collect()
}
