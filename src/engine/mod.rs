//! The transfer engine: for each package, read its head, ask every destination what it
//! already has, plan, then move the bytes — mounts first, small blobs from memory, large blobs
//! in streaming passes over the package — and push manifests only once every blob of their
//! image is in place (children before the index that lists them).
//!
//! Several destinations (a DR primary and standby) are fed from one read of the package:
//! a blob both need is decompressed and hashed once and sent to both.

mod buffers;
pub mod outcome;
mod state;
mod stop;
pub mod stream;
mod verifier;

pub use outcome::{
    BlobCounts, DestinationOutcome, ImageOutcome, ImageState, Observer, PackageObserver,
    PackageOutcome, PlanSummary,
};
pub(crate) use stop::interrupted;
pub use stop::Stop;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use futures::stream::{self as fstream, StreamExt};
use tokio::sync::Mutex;

pub use state::StateStore;
use stream::{StreamCtx, StreamJob, Target};

use crate::error::{Error, Result};
use crate::oci::Digest;
use crate::plan::{self, ImageNeeds, Mount, Plan};
use crate::sink::{MountOutcome, RegistryApi};
use crate::source::{BrokenImage, Image, Package, PackageHead};

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Large blobs in flight at once; small blobs (by bytes) and small requests (HEAD, mount,
    /// manifests) up to 8 times as many.
    pub concurrency: usize,
    /// Blobs up to this size go in one request; larger ones in chunks of this size.
    pub chunk_size: usize,
    pub allow_nondistributable: bool,
    pub dry_run: bool,
    /// Where open upload sessions are remembered; `None` keeps them in memory only.
    pub state_dir: Option<PathBuf>,
    /// Streaming passes over a package for blobs that failed transiently.
    pub passes: u32,
    pub stop: Stop,
    /// With several destinations, how long one may take no data before it is dropped from a
    /// blob (so a hung standby does not hold the primary back).
    pub stall: std::time::Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            concurrency: 4,
            chunk_size: 8 << 20,
            allow_nondistributable: false,
            dry_run: false,
            state_dir: None,
            passes: 3,
            stop: Stop::default(),
            stall: std::time::Duration::from_secs(120),
        }
    }
}

struct Destination {
    registry: Arc<dyn RegistryApi>,
    /// Blobs this run has placed (or found) in this registry: digest → a repository holding it.
    known: Mutex<HashMap<Digest, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Placed {
    Present,
    Mounted,
    Uploaded,
}

/// Per destination: what each blob became, and each image's state.
struct DestRun {
    blobs: HashMap<(String, Digest), std::result::Result<Placed, Error>>,
    images: Vec<ImageState>,
    plan: Plan,
}

pub struct Engine {
    opts: EngineOptions,
    dests: Vec<Destination>,
    stream: Arc<StreamCtx>,
}

type Shared<T> = std::result::Result<T, Error>;

impl Engine {
    pub fn new(opts: EngineOptions, registries: Vec<Arc<dyn RegistryApi>>) -> Self {
        let stream = Arc::new(StreamCtx {
            registries: registries.clone(),
            state: StateStore::new(opts.state_dir.clone()),
            chunk_size: opts.chunk_size,
            concurrency: opts.concurrency,
            stall: opts.stall,
            stop: opts.stop.clone(),
            in_flight: stream::InFlight::new(opts.concurrency, opts.chunk_size),
            buffers: buffers::Pool::new(opts.chunk_size),
            health: registries.iter().map(|_| Default::default()).collect(),
        });
        let dests = registries
            .into_iter()
            .map(|registry| Destination {
                registry,
                known: Mutex::new(HashMap::new()),
            })
            .collect();
        Engine {
            opts,
            dests,
            stream,
        }
    }

    /// Pushes one package to every destination of the engine. Never fails as a whole: what
    /// went wrong is in the outcome (the package's error, or an image's state).
    pub async fn push_package(&self, pkg: &Package, observer: &dyn Observer) -> PackageOutcome {
        let line = observer.package(&pkg.label());
        let mut outcome = PackageOutcome::new(pkg.label());
        if self.opts.stop.requested() {
            return failed_package(outcome, line.as_ref(), interrupted());
        }
        line.step("reading package");
        let reader = pkg.clone();
        let head = match tokio::task::spawn_blocking(move || reader.read_head()).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return failed_package(outcome, line.as_ref(), e),
            Err(e) => {
                let e = Error::internal(format!("reader crashed: {e}"));
                return failed_package(outcome, line.as_ref(), e);
            }
        };
        outcome.meta = Some(head.meta.clone());
        outcome.charts = head.charts.clone();
        outcome.warnings = head.warnings.clone();
        for w in &head.warnings {
            tracing::warn!("{}: {w}", pkg.label());
        }

        let (images, broken) = head.resolve_images();
        if let Err(e) = consistent_sizes(&images) {
            let e = e.context(format!("package {}", pkg.label()));
            return failed_package(outcome, line.as_ref(), e);
        }
        for img in &images {
            for b in img
                .graph
                .blobs
                .iter()
                .filter(|b| !crate::oci::media::is_known_blob_type(&b.media_type))
            {
                let w = format!(
                    "image {}: blob {} has unknown media type {:?}; pushed as-is",
                    img.source, b.digest, b.media_type
                );
                tracing::warn!("{}: {w}", pkg.label());
                outcome.warnings.push(w);
            }
        }

        line.step("checking what the registry has");
        // every destination at once: a DR standby at a distant site costs its round trips in
        // parallel with the primary's, not after them
        let surveys = self.dests.iter().map(|d| self.survey(d, &images));
        let mut runs = futures::future::join_all(surveys).await;
        for run in &runs {
            observer.planned_bytes(run.plan.bytes_to_send());
        }

        if self.opts.dry_run {
            for (d, run) in self.dests.iter().zip(&runs) {
                let mut dest = self.destination_outcome(d, run, &images, &broken, pkg);
                dest.plan = Some(summarize(d, run, &images));
                dest.blobs = planned_counts(&run.plan);
                outcome.destinations.push(dest);
            }
            line.done("planned (dry run)");
            return outcome;
        }

        let uploads: usize = runs.iter().map(|r| r.plan.uploads.len()).sum();
        let bytes: u64 = runs.iter().map(|r| r.plan.bytes_to_send()).sum();
        if uploads > 0 {
            line.note(&format!(
                "sending {uploads} blobs ({})",
                crate::report::human_bytes(bytes)
            ));
        }
        self.move_blobs(pkg, &head, &images, &mut runs).await;
        // The blobs came from the file as it was verified; if it changed since, no manifest
        // goes up, so nothing that was not verified can become a visible image.
        if let Err(e) = pkg.check_unchanged() {
            for state in runs.iter_mut().flat_map(|r| r.images.iter_mut()) {
                if matches!(state, ImageState::Planned) {
                    *state = ImageState::Failed(e.clone().context("manifest not pushed"));
                }
            }
        }

        line.step("pushing manifests");
        for (di, run) in runs.iter_mut().enumerate() {
            self.push_manifests(di, run, &images).await;
            let d = &self.dests[di];
            let mut dest = self.destination_outcome(d, run, &images, &broken, pkg);
            dest.blobs = self.placed_counts(d, run, &images).await;
            outcome.destinations.push(dest);
        }
        let images: Vec<&ImageOutcome> = outcome
            .destinations
            .iter()
            .flat_map(|d| &d.images)
            .collect();
        let failed = images
            .iter()
            .filter(|i| matches!(i.state, ImageState::Failed(_)))
            .count();
        line.done(&if failed == 0 {
            format!("done ({} images)", images.len())
        } else {
            format!("{failed} images FAILED")
        });
        outcome
    }

    /// Small requests (HEAD, mount, manifest, configs from memory) in flight at once: on a
    /// distant link each costs a round trip, not bandwidth, so they go 8 per blob stream.
    fn small_requests(&self) -> usize {
        self.opts.concurrency.max(1) * 16
    }

    /// Asks one destination which images and blobs it already has, and plans the rest.
    async fn survey(&self, d: &Destination, images: &[Image]) -> DestRun {
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
        let sizes: HashMap<&Digest, u64> = images
            .iter()
            .flat_map(|i| i.graph.blobs.iter().map(|b| (&b.digest, b.size)))
            .collect();
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

    /// Mounts, then uploads (from memory or streamed), then mounts of freshly uploaded blobs;
    /// a declined mount or a transient failure goes round again, up to `passes` times.
    async fn move_blobs(
        &self,
        pkg: &Package,
        head: &PackageHead,
        images: &[Image],
        runs: &mut [DestRun],
    ) {
        let sizes: HashMap<Digest, u64> = images
            .iter()
            .flat_map(|i| i.graph.blobs.iter().map(|b| (b.digest.clone(), b.size)))
            .collect();
        // (target, digest) → repositories to mount into once uploaded
        let mut then_mount: HashMap<(Target, Digest), Vec<String>> = HashMap::new();
        let mut todo: Vec<(Digest, Target)> = Vec::new();
        let mut mounts: Vec<(usize, Mount)> = Vec::new();
        for (di, run) in runs.iter().enumerate() {
            for u in &run.plan.uploads {
                let t = Target {
                    dest: di,
                    repo: u.repo.clone(),
                };
                then_mount.insert((t.clone(), u.digest.clone()), u.then_mount.clone());
                todo.push((u.digest.clone(), t));
            }
            for m in &run.plan.mounts {
                mounts.push((di, m.clone()));
            }
        }

        for pass in 0..self.opts.passes.max(1) {
            let last = pass + 1 == self.opts.passes.max(1) || self.opts.stop.requested();
            // Mounts (from repositories that hold the blob) first: cheap, and a declined
            // mount becomes an upload in this same pass.
            for (di, Mount { repo, digest, .. }, r) in
                self.mount_all(std::mem::take(&mut mounts)).await
            {
                match r {
                    Ok(MountOutcome::Mounted) => {
                        runs[di].blobs.insert((repo, digest), Ok(Placed::Mounted));
                    }
                    Ok(MountOutcome::Declined) => todo.push((digest, Target { dest: di, repo })),
                    Err(e) => {
                        runs[di].blobs.insert((repo, digest), Err(e));
                    }
                }
            }
            if todo.is_empty() {
                break;
            }
            let outcomes = self
                .upload_all(pkg, head, &sizes, std::mem::take(&mut todo))
                .await;
            for (digest, target, r) in outcomes {
                let key = (target.repo.clone(), digest.clone());
                match r {
                    Ok(()) => {
                        runs[target.dest].blobs.insert(key, Ok(Placed::Uploaded));
                        for repo in then_mount
                            .remove(&(target.clone(), digest.clone()))
                            .unwrap_or_default()
                        {
                            let from = target.repo.clone();
                            let digest = digest.clone();
                            mounts.push((target.dest, Mount { digest, repo, from }));
                        }
                    }
                    Err(e) if e.retryable && !last => {
                        tracing::warn!(%digest, repo = %target.repo, error = %e, "will try this blob again in the next pass");
                        todo.push((digest, target));
                    }
                    Err(e) => {
                        for repo in then_mount
                            .remove(&(target.clone(), digest.clone()))
                            .unwrap_or_default()
                        {
                            runs[target.dest]
                                .blobs
                                .insert((repo, digest.clone()), Err(e.clone()));
                        }
                        runs[target.dest].blobs.insert(key, Err(e));
                    }
                }
            }
            if last {
                // Mounts still queued after the last pass get their one try.
                for (di, Mount { repo, digest, .. }, r) in
                    self.mount_all(std::mem::take(&mut mounts)).await
                {
                    let v = match r {
                        Ok(MountOutcome::Mounted) => Ok(Placed::Mounted),
                        Ok(MountOutcome::Declined) => Err(Error::new(
                            crate::error::ErrorKind::Registry,
                            format!(
                                "registry {} declined to mount blob {digest} into {repo}",
                                self.dests[di].registry.host()
                            ),
                        )),
                        Err(e) => Err(e),
                    };
                    runs[di].blobs.insert((repo, digest), v);
                }
            }
        }
    }

    /// Mounts, per destination index; each comes back with its outcome.
    async fn mount_all(
        &self,
        mounts: Vec<(usize, Mount)>,
    ) -> Vec<(usize, Mount, Shared<MountOutcome>)> {
        fstream::iter(mounts.into_iter().map(|(di, m)| async move {
            let r = self.dests[di]
                .registry
                .mount(&m.repo, &m.from, &m.digest)
                .await;
            (di, m, r)
        }))
        .buffer_unordered(self.small_requests())
        .collect()
        .await
    }

    /// Uploads: blobs held in memory (configs) directly, the rest in one streaming pass.
    async fn upload_all(
        &self,
        pkg: &Package,
        head: &PackageHead,
        sizes: &HashMap<Digest, u64>,
        todo: Vec<(Digest, Target)>,
    ) -> Vec<stream::Outcome> {
        let mut from_memory = Vec::new();
        let mut streamed: HashMap<Digest, Vec<Target>> = HashMap::new();
        for (digest, target) in todo {
            match head.docs.get(&digest) {
                Some(bytes) => from_memory.push((digest, target, bytes.clone())),
                None => streamed.entry(digest).or_default().push(target),
            }
        }
        let mut outcomes: Vec<stream::Outcome> = fstream::iter(from_memory.into_iter().map(
            |(digest, target, bytes)| async move {
                let r = match crate::oci::verify(&digest, sizes[&digest], &bytes) {
                    Ok(_) if self.stream.given_up(target.dest) => {
                        Err(self.stream.left_out(target.dest))
                    }
                    Ok(verified) => {
                        self.dests[target.dest]
                            .registry
                            .upload_whole(&target.repo, &verified, bytes)
                            .await
                    }
                    Err(e) => Err(e),
                };
                let outcome = (digest, target, r);
                self.stream.record(std::slice::from_ref(&outcome));
                outcome
            },
        ))
        .buffer_unordered(self.small_requests())
        .collect()
        .await;
        if !streamed.is_empty() {
            let jobs = streamed
                .into_iter()
                .map(|(digest, targets)| StreamJob {
                    size: sizes[&digest],
                    digest,
                    targets,
                })
                .collect();
            outcomes.extend(stream::run_pass(self.stream.clone(), pkg.clone(), jobs).await);
        }
        outcomes
    }

    async fn push_manifests(&self, di: usize, run: &mut DestRun, images: &[Image]) {
        let reg = &self.dests[di].registry;
        let allow = self.opts.allow_nondistributable;
        let ready: Vec<(usize, Shared<()>)> = images
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(run.images[*i], ImageState::Planned))
            .map(|(i, img)| (i, blobs_ready(img, &run.blobs, allow)))
            .collect();
        let results: Vec<(usize, Shared<()>)> =
            fstream::iter(ready.into_iter().map(|(i, ready)| async move {
                let img = &images[i];
                if let Err(e) = ready {
                    return (i, Err(e.context("manifest not pushed")));
                }
                for (desc, bytes) in &img.graph.manifests {
                    let is_root = desc.digest == img.graph.root.digest;
                    let reference = if is_root {
                        img.reference.as_str()
                    } else {
                        desc.digest.as_str()
                    };
                    if let Err(e) = reg
                        .put_manifest(&img.repo, reference, &desc.media_type, bytes.clone())
                        .await
                    {
                        return (i, Err(e));
                    }
                }
                (i, Ok(()))
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

    /// What this run placed in one destination (and remembers it for later packages).
    async fn placed_counts(&self, d: &Destination, run: &DestRun, images: &[Image]) -> BlobCounts {
        let sizes: HashMap<&Digest, u64> = images
            .iter()
            .flat_map(|i| i.graph.blobs.iter().map(|b| (&b.digest, b.size)))
            .collect();
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
    fn destination_outcome(
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
fn planned_counts(plan: &Plan) -> BlobCounts {
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
fn plan_mounts(plan: &Plan) -> u64 {
    plan.mounts.len() as u64
        + plan
            .uploads
            .iter()
            .map(|u| u.then_mount.len() as u64)
            .sum::<u64>()
}

fn summarize(d: &Destination, run: &DestRun, images: &[Image]) -> PlanSummary {
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

/// Every blob of the image is in its repository (or deliberately left out).
fn blobs_ready(
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

/// One digest, one size: a package whose descriptors give a blob two sizes is refused, as
/// one of them is a lie and which one would otherwise depend on the order of reading.
fn consistent_sizes(images: &[Image]) -> Result<()> {
    let mut seen: HashMap<&Digest, (u64, &str)> = HashMap::new();
    for img in images {
        let descriptors = img
            .graph
            .blobs
            .iter()
            .chain(img.graph.manifests.iter().map(|(d, _)| d));
        for d in descriptors {
            match seen.get(&d.digest) {
                Some((size, by)) if *size != d.size => {
                    return Err(Error::package(format!(
                        "blob {} is declared with {} bytes by image {by} and with {} bytes by \
                         image {}: the package is inconsistent; replace it",
                        d.digest, size, d.size, img.source
                    )))
                }
                Some(_) => {}
                None => {
                    seen.insert(&d.digest, (d.size, &img.source));
                }
            }
        }
    }
    Ok(())
}

fn failed_package(
    mut outcome: PackageOutcome,
    line: &dyn PackageObserver,
    e: Error,
) -> PackageOutcome {
    line.done(&format!("FAILED: {}", e.message));
    outcome.error = Some(e);
    outcome
}
