//! Work that need not wait for the end of the first streaming pass: mounting a just-uploaded
//! blob into the other repositories that want it, mounting from repositories that already
//! hold a blob, and putting an image's manifests once every blob of its own is in place.
//!
//! On a distant link each of these is a round trip; done after the pass they add up to a
//! few round trips of nothing on the wire at the end of every package (issue 25: 200 images
//! spent ~0.25 s of 2 s there at 40 ms). Done as soon as their own blobs are in, they overlap
//! with the uploads still going.
//!
//! The rules do not change: a manifest goes up only when every blob of its image is placed
//! (present, uploaded and verified, or mounted) in its repository, children before the index
//! that lists them, and only while the package file is unchanged. What this work did is
//! handed to the end of the pass, which uses it instead of asking again; whatever it did not
//! do (a blob that failed, a mount declined) is left to the passes and the final manifest
//! phase as before.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, Semaphore};

use super::stream::Outcome;
use super::{Engine, Shared};
use crate::oci::Digest;
use crate::plan::{Mount, Plan};
use crate::sink::MountOutcome;
use crate::source::{Image, Package};

/// What a survey tells the early work as its answers come in.
pub(super) enum Told {
    /// Destination `dest` holds `digest` in `repo` already.
    Present {
        dest: usize,
        repo: String,
        digest: Digest,
    },
    /// Destination `dest` planned one blob: its uploads (with the repositories to mount into
    /// once uploaded) and its mounts from repositories that hold it.
    Decided { dest: usize, plan: Plan },
    /// Destination `dest`'s tags are in: per image, whether it is to be pushed.
    Tags { dest: usize, planned: Vec<bool> },
}

/// What the early work did, for the rest of the push to take instead of doing it again.
#[derive(Default)]
pub(super) struct EarlyResults {
    /// (destination, repository, digest) → how the mount into that repository went.
    pub mounts: HashMap<(usize, String, Digest), Shared<MountOutcome>>,
    /// (destination, image index) → how its manifests went.
    pub manifests: HashMap<(usize, usize), Shared<()>>,
}

/// Which images wait for which blobs, per destination.
pub(super) struct Tracker {
    /// Per destination: (repository, digest) not placed yet → the images waiting for it.
    waiting: Vec<HashMap<(String, Digest), Vec<usize>>>,
    /// Per destination, per image: its blobs not placed yet.
    missing: Vec<Vec<usize>>,
    /// Per destination, per image: to be pushed (its tag is missing), once the tags are in.
    planned: Vec<Vec<Option<bool>>>,
    /// (destination, repository uploaded into, digest) → repositories to mount it into.
    then_mount: HashMap<(usize, String, Digest), Vec<String>>,
}

impl Tracker {
    /// For every image, in each of `dests` destinations, the blobs it needs in its
    /// repository: all but the non-distributable ones left out. Which images are to be
    /// pushed at all is told later ([`Told::Tags`]).
    pub fn new(images: &[Image], dests: usize, allow_nondist: bool) -> Tracker {
        let mut by_blob: HashMap<(String, Digest), Vec<usize>> = HashMap::new();
        let mut counts = Vec::new();
        for (i, img) in images.iter().enumerate() {
            let needed: HashSet<&Digest> = img
                .graph
                .blobs
                .iter()
                .filter(|b| allow_nondist || !b.is_nondistributable())
                .map(|b| &b.digest)
                .collect();
            counts.push(needed.len());
            for d in needed {
                by_blob
                    .entry((img.repo.clone(), d.clone()))
                    .or_default()
                    .push(i);
            }
        }
        Tracker {
            waiting: vec![by_blob; dests],
            missing: vec![counts; dests],
            planned: vec![vec![None; images.len()]; dests],
            then_mount: HashMap::new(),
        }
    }

    /// The tags of `dest` are in: the images to push whose blobs are all in already.
    fn tags(&mut self, dest: usize, planned: Vec<bool>) -> Vec<usize> {
        let ready = planned
            .iter()
            .enumerate()
            .filter(|(i, p)| **p && self.missing[dest][*i] == 0)
            .map(|(i, _)| i)
            .collect();
        self.planned[dest] = planned.into_iter().map(Some).collect();
        ready
    }

    /// `digest` is in `repo` of `dest`: the images to push that now have every blob. Told
    /// twice about one blob, it counts it once.
    fn placed(&mut self, dest: usize, repo: &str, digest: &Digest) -> Vec<usize> {
        let key = (repo.to_string(), digest.clone());
        let Some(images) = self.waiting[dest].remove(&key) else {
            return Vec::new();
        };
        let mut ready = Vec::new();
        for i in images {
            let n = &mut self.missing[dest][i];
            *n -= 1;
            if *n == 0 && self.planned[dest][i] == Some(true) {
                ready.push(i);
            }
        }
        ready
    }
}

/// Where the early work hears from: the surveys, and the uploads as each one ends.
pub(super) struct Inbox {
    pub told: mpsc::UnboundedReceiver<Told>,
    pub uploaded: mpsc::UnboundedReceiver<Outcome>,
}

enum Done {
    Mount(usize, Mount, Shared<MountOutcome>),
    Manifests(usize, usize, Shared<()>),
}

impl Engine {
    /// Runs until both the surveys and the uploads of the pass have hung up and every mount
    /// and manifest it started has answered.
    pub(super) async fn early_work<'a>(
        &'a self,
        pkg: &'a Package,
        images: &'a [Image],
        mut tracker: Tracker,
        mut inbox: Inbox,
    ) -> EarlyResults {
        // as many in flight per destination as the other small requests (each is a round
        // trip, not bytes); one destination's slow answers do not hold the other's
        let limits: Vec<Arc<Semaphore>> = self
            .dests
            .iter()
            .map(|_| Arc::new(Semaphore::new(self.small_requests())))
            .collect();
        let mut results = EarlyResults::default();
        let mut work: FuturesUnordered<BoxFuture<'a, Done>> = FuturesUnordered::new();
        let manifests = |dest: usize, i: usize| -> BoxFuture<'a, Done> {
            let limit = limits[dest].clone();
            Box::pin(async move {
                let _permit = limit.acquire().await;
                let r = match pkg.check_unchanged() {
                    Ok(()) => {
                        let reg = self.dests[dest].registry.as_ref();
                        super::manifests::put_image_manifests(reg, &images[i]).await
                    }
                    Err(e) => Err(e.context("manifest not pushed")),
                };
                Done::Manifests(dest, i, r)
            })
        };
        let mount = |dest: usize, m: Mount| -> BoxFuture<'a, Done> {
            let limit = limits[dest].clone();
            Box::pin(async move {
                let _permit = limit.acquire().await;
                let r = self.dests[dest]
                    .registry
                    .mount(&m.repo, &m.from, &m.digest)
                    .await;
                Done::Mount(dest, m, r)
            })
        };
        let (mut told_open, mut uploads_open) = (true, true);
        loop {
            tokio::select! {
                // what the surveys said first: an upload's mounts are known before it ends
                biased;
                told = inbox.told.recv(), if told_open => match told {
                    Some(Told::Present { dest, repo, digest }) => {
                        for i in tracker.placed(dest, &repo, &digest) {
                            work.push(manifests(dest, i));
                        }
                    }
                    Some(Told::Decided { dest, plan }) => {
                        for u in plan.uploads.into_iter().filter(|u| !u.then_mount.is_empty()) {
                            tracker.then_mount.insert((dest, u.repo, u.digest), u.then_mount);
                        }
                        for m in plan.mounts {
                            work.push(mount(dest, m));
                        }
                    }
                    Some(Told::Tags { dest, planned }) => {
                        for i in tracker.tags(dest, planned) {
                            work.push(manifests(dest, i));
                        }
                    }
                    None => told_open = false,
                },
                uploaded = inbox.uploaded.recv(), if uploads_open => match uploaded {
                    Some((digest, target, Ok(()))) => {
                        let key = (target.dest, target.repo, digest);
                        for repo in tracker.then_mount.remove(&key).unwrap_or_default() {
                            let (dest, from, digest) = key.clone();
                            work.push(mount(dest, Mount { digest, repo, from }));
                        }
                        let (dest, repo, digest) = key;
                        for i in tracker.placed(dest, &repo, &digest) {
                            work.push(manifests(dest, i));
                        }
                    }
                    Some((_, _, Err(_))) => {} // left to the passes
                    None => uploads_open = false,
                },
                Some(done) = work.next(), if !work.is_empty() => match done {
                    Done::Mount(dest, m, r) => {
                        if matches!(r, Ok(MountOutcome::Mounted)) {
                            for i in tracker.placed(dest, &m.repo, &m.digest) {
                                work.push(manifests(dest, i));
                            }
                        }
                        results.mounts.insert((dest, m.repo, m.digest), r);
                    }
                    Done::Manifests(dest, i, r) => {
                        results.manifests.insert((dest, i), r);
                    }
                },
                else => break,
            }
        }
        results
    }
}
