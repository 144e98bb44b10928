//! The transfer engine: for each package, read its head, ask every destination about its
//! tags and blobs at once (`lookahead.rs`) while the first streaming pass already sends what
//! is missing (each blob waits for its own answers only: `gate.rs`), mounting each uploaded
//! blob into the other repositories that want it and pushing each image's manifests as soon
//! as every blob of that image is in place (`early.rs`; children before the index that lists
//! them); then configs from memory, further passes for what failed transiently, and the
//! manifests those completed.
//!
//! Several destinations (a DR primary and standby) are fed from one read of the package:
//! a blob both need is decompressed and hashed once and sent to both.

mod buffers;
mod early;
mod gate;
mod lookahead;
mod manifests;
pub mod outcome;
mod state;
mod stop;
pub mod stream;
mod survey;
mod tally;
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
use gate::Gate;
use tokio::sync::{mpsc, Mutex};

pub use state::StateStore;
use stream::{StreamCtx, StreamJob, Target};

use crate::error::{Error, Result};
use crate::oci::Digest;
use crate::plan::{Mount, Plan};
use crate::sink::{MountOutcome, RegistryApi};
use crate::source::{Image, Package, PackageHead};
use tally::{planned_counts, summarize};

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Large blobs in flight at once; small blobs (by bytes) and small requests (HEAD, mount,
    /// manifests) up to [`SMALL_PER_LARGE`] times as many.
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

/// Small blobs and small requests (HEAD, mount, manifest) in flight per large blob: 32, so
/// 128 with the default `--concurrency 4`. At 40 ms of round trip every request costs a round
/// trip whatever its size; scripts/bench-latency.sh measured, for 2,400 blobs (270 MB) into a
/// registry that stores nothing, 3.4 s with 16 (64 in flight), 2.7 s with 32 (1.25x the wire)
/// and 2.8 s with 64 (and 117 MB of memory instead of 74). With HTTP/1.1 each is a connection.
pub const SMALL_PER_LARGE: usize = 32;

/// One package on its way: what the passes read from.
#[derive(Clone, Copy)]
struct Shipment<'a> {
    pkg: &'a Package,
    head: &'a PackageHead,
    images: &'a [Image],
    sizes: &'a HashMap<Digest, u64>,
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
    /// (repository, blob) pairs the images to push need. A blob may also have gone to the
    /// repository of an image found in the registry (planned before its tag was in); how
    /// that went is nobody's failure.
    wanted: HashSet<(String, Digest)>,
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
            buffers: buffers::Pool::new(
                opts.chunk_size,
                buffers::cap(opts.concurrency, opts.chunk_size),
            ),
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
        outcome.warnings = head.warnings.clone();
        for w in &head.warnings {
            tracing::warn!("{}: {w}", pkg.label());
        }

        let (images, broken) = head.resolve_images();
        let sizes = match blob_sizes(&images) {
            Ok(sizes) => sizes,
            Err(e) => {
                let e = e.context(format!("package {}", pkg.label()));
                return failed_package(outcome, line.as_ref(), e);
            }
        };
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
        // Every destination at once: a DR standby at a distant site costs its round trips in
        // parallel with the primary's, not after them; and the blob HEADs go out with the tag
        // HEADs, not after them.
        let tag_states: Vec<_> = self
            .dests
            .iter()
            .map(|_| lookahead::TagStates::new(images.len()))
            .collect();
        let ahead: Vec<_> = (0..self.dests.len())
            .map(|di| self.look_ahead(di, &images, tag_states[di].clone()))
            .collect();

        if self.opts.dry_run {
            let surveys = ahead
                .into_iter()
                .enumerate()
                .map(|(di, ahead)| self.survey(di, &images, ahead, &tag_states[di], None));
            let runs = futures::future::join_all(surveys).await;
            for (d, run) in self.dests.iter().zip(&runs) {
                let mut dest = self.destination_outcome(d, run, &images, &broken, pkg);
                dest.plan = Some(summarize(d, run, &images));
                dest.blobs = planned_counts(&run.plan);
                outcome.destinations.push(dest);
            }
            line.done("planned (dry run)");
            return outcome;
        }

        let shipment = Shipment {
            pkg,
            head: &head,
            images: &images,
            sizes: &sizes,
        };
        let mut runs = self
            .move_blobs(&shipment, ahead, &tag_states, observer, line.as_ref())
            .await;
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
            dest.blobs = self.placed_counts(d, run, &sizes).await;
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
            format!(
                "done ({})",
                crate::report::count(images.len() as u64, "image")
            )
        } else {
            format!("{} FAILED", crate::report::count(failed as u64, "image"))
        });
        outcome
    }

    /// Small requests (HEAD, mount, manifest, configs from memory) in flight at once: on a
    /// distant link each costs a round trip, not bandwidth, so they go [`SMALL_PER_LARGE`]
    /// per large blob.
    fn small_requests(&self) -> usize {
        self.opts.concurrency.max(1) * SMALL_PER_LARGE
    }

    /// The blob surveys and the first upload pass together (each blob streamed as soon as
    /// its own HEADs are in, mounts and manifests as soon as their own blobs are in), then
    /// the mounts left, then further passes for what failed transiently or whose mount was
    /// declined, up to `passes` in all. Gives back each destination's run, with the images
    /// whose manifests the early work put already marked as such.
    async fn move_blobs(
        &self,
        ship: &Shipment<'_>,
        ahead: Vec<lookahead::Lookahead>,
        tags: &[Arc<lookahead::TagStates>],
        observer: &dyn Observer,
        line: &dyn PackageObserver,
    ) -> Vec<DestRun> {
        let (mut all_runs, first, early) = self
            .survey_and_send(ship, ahead, tags, observer, line)
            .await;
        let runs = &mut all_runs[..];
        let mut mounted = early.mounts;
        // (target, digest) → repositories to mount into once uploaded
        let mut then_mount: HashMap<(Target, Digest), Vec<String>> = HashMap::new();
        let mut mounts: Vec<(usize, Mount)> = Vec::new();
        for (di, run) in runs.iter().enumerate() {
            for u in &run.plan.uploads {
                let t = Target {
                    dest: di,
                    repo: u.repo.clone(),
                };
                then_mount.insert((t, u.digest.clone()), u.then_mount.clone());
            }
            mounts.extend(run.plan.mounts.iter().map(|m| (di, m.clone())));
        }
        let passes = self.opts.passes.max(1);
        let mut todo = Vec::new();
        let last = passes == 1 || self.opts.stop.requested();
        self.settle(first, last, runs, &mut then_mount, &mut todo, &mut mounts);

        for pass in 1..passes {
            let last = pass + 1 == passes || self.opts.stop.requested();
            // Mounts (from repositories that hold the blob) first: cheap, and a declined
            // mount becomes an upload in this same pass.
            for (di, mount, r) in self
                .mount_all(std::mem::take(&mut mounts), &mut mounted)
                .await
            {
                todo.extend(record_mount(runs, di, mount, r));
            }
            if todo.is_empty() {
                break;
            }
            let outcomes = self.upload_all(ship, std::mem::take(&mut todo), None).await;
            self.settle(
                outcomes,
                last,
                runs,
                &mut then_mount,
                &mut todo,
                &mut mounts,
            );
            if last {
                break;
            }
        }
        // Mounts still queued after the last pass get their one try.
        for (di, mount, r) in self
            .mount_all(std::mem::take(&mut mounts), &mut mounted)
            .await
        {
            if let Some((digest, Target { dest, repo })) = record_mount(runs, di, mount, r) {
                let e = Error::new(
                    crate::error::ErrorKind::Registry,
                    format!(
                        "registry {} declined to mount blob {digest} into {repo}",
                        self.dests[dest].registry.host()
                    ),
                );
                runs[dest].blobs.insert((repo, digest), Err(e));
            }
        }
        for ((di, i), r) in early.manifests {
            all_runs[di].images[i] = match r {
                Ok(()) => ImageState::Pushed,
                Err(e) => ImageState::Failed(e),
            };
        }
        all_runs
    }

    /// Pass one: every destination's blob survey runs while the package streams; each blob
    /// waits at the gate for its own decision only. Blobs held in memory (configs) go once
    /// the surveys are done.
    async fn survey_and_send(
        &self,
        ship: &Shipment<'_>,
        ahead: Vec<lookahead::Lookahead>,
        tags: &[Arc<lookahead::TagStates>],
        observer: &dyn Observer,
        line: &dyn PackageObserver,
    ) -> (Vec<DestRun>, Vec<stream::Outcome>, early::EarlyResults) {
        // In image order, as the surveys ask: the order a directory source streams them in.
        // Every image's: the tags are not in yet (blobs of images found there are decided
        // to go nowhere as soon as their HEADs say so).
        let mut seen = HashSet::new();
        let streamable: Vec<Digest> = ship
            .images
            .iter()
            .flat_map(|img| img.graph.blobs.iter().map(|b| &b.digest))
            .filter(|d| !ship.head.docs.contains_key(*d) && seen.insert(*d))
            .cloned()
            .collect();
        let gate = Arc::new(Gate::new(streamable, self.dests.len()));
        let allow_nondist = self.opts.allow_nondistributable;
        let tracker = early::Tracker::new(ship.images, self.dests.len(), allow_nondist);
        let (told, told_rx) = mpsc::unbounded_channel();
        let (uploaded, uploaded_rx) = mpsc::unbounded_channel();
        let inbox = early::Inbox {
            told: told_rx,
            uploaded: uploaded_rx,
        };
        let early = self.early_work(ship.pkg, ship.images, tracker, inbox);
        let uploaded_by_stream = uploaded.clone();
        let surveys = async {
            let surveys = ahead.into_iter().enumerate().map(|(di, ahead)| {
                let live = survey::Live {
                    gate: &gate,
                    told: &told,
                };
                self.survey(di, ship.images, ahead, &tags[di], Some(live))
            });
            let runs = futures::future::join_all(surveys).await;
            drop(told); // the early work hears no more from the surveys
            let (mut uploads, mut bytes) = (0, 0);
            let mut from_memory = Vec::new();
            for (di, run) in runs.iter().enumerate() {
                let planned = run.plan.bytes_to_send();
                observer.planned_bytes(planned);
                uploads += run.plan.uploads.len();
                bytes += planned;
                from_memory.extend(
                    run.plan
                        .uploads
                        .iter()
                        .filter(|u| ship.head.docs.contains_key(&u.digest))
                        .map(|u| {
                            let t = Target {
                                dest: di,
                                repo: u.repo.clone(),
                            };
                            (u.digest.clone(), t)
                        }),
                );
            }
            if uploads > 0 {
                line.note(&format!(
                    "sending {} ({})",
                    crate::report::count(uploads as u64, "blob"),
                    crate::report::human_bytes(bytes)
                ));
            }
            let sent = self.upload_all(ship, from_memory, Some(uploaded)).await;
            (runs, sent)
        };
        let jobs = gate
            .digests()
            .map(|digest| StreamJob {
                size: ship.sizes[digest],
                digest: digest.clone(),
                targets: Vec::new(), // from the gate
            })
            .collect();
        let streamed = stream::run_pass(
            self.stream.clone(),
            ship.pkg.clone(),
            jobs,
            Some(gate.clone()),
            Some(uploaded_by_stream),
        );
        let ((runs, mut outcomes), streamed, early) = futures::join!(surveys, streamed, early);
        outcomes.extend(streamed);
        (runs, outcomes, early)
    }

    /// Takes one pass's upload outcomes in: placed blobs are recorded and their mounts
    /// queued; transient failures go round again unless this was the `last` pass.
    fn settle(
        &self,
        outcomes: Vec<stream::Outcome>,
        last: bool,
        runs: &mut [DestRun],
        then_mount: &mut HashMap<(Target, Digest), Vec<String>>,
        todo: &mut Vec<(Digest, Target)>,
        mounts: &mut Vec<(usize, Mount)>,
    ) {
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
                    let mut then = then_mount
                        .remove(&(target.clone(), digest.clone()))
                        .unwrap_or_default();
                    if !runs[target.dest].wanted.contains(&key) {
                        // Sent for an image found in the registry after all: the next
                        // repository in line takes the upload (in the next pass), as when
                        // a HEAD fails; no failure is counted for this one.
                        if !last && !then.is_empty() {
                            let t = Target {
                                dest: target.dest,
                                repo: then.remove(0),
                            };
                            then_mount.insert((t.clone(), digest.clone()), then);
                            todo.push((digest, t));
                            continue;
                        }
                    } else {
                        runs[target.dest].blobs.insert(key, Err(e.clone()));
                    }
                    for repo in then {
                        runs[target.dest]
                            .blobs
                            .insert((repo, digest.clone()), Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Mounts, per destination index; each comes back with its outcome. Those the early work
    /// did already (in `mounted`) are not asked again.
    async fn mount_all(
        &self,
        mounts: Vec<(usize, Mount)>,
        mounted: &mut HashMap<(usize, String, Digest), Shared<MountOutcome>>,
    ) -> Vec<(usize, Mount, Shared<MountOutcome>)> {
        let mounts: Vec<_> = mounts
            .into_iter()
            .map(|(di, m)| {
                let done = mounted.remove(&(di, m.repo.clone(), m.digest.clone()));
                (di, m, done)
            })
            .collect();
        fstream::iter(mounts.into_iter().map(|(di, m, done)| async move {
            let r = match done {
                Some(r) => r,
                None => {
                    self.dests[di]
                        .registry
                        .mount(&m.repo, &m.from, &m.digest)
                        .await
                }
            };
            (di, m, r)
        }))
        .buffer_unordered(self.small_requests())
        .collect()
        .await
    }

    /// Uploads: blobs held in memory (configs) directly, the rest in one streaming pass; each
    /// outcome told to `uploaded` as it comes, if given.
    async fn upload_all(
        &self,
        ship: &Shipment<'_>,
        todo: Vec<(Digest, Target)>,
        uploaded: Option<mpsc::UnboundedSender<stream::Outcome>>,
    ) -> Vec<stream::Outcome> {
        let Shipment {
            pkg, head, sizes, ..
        } = *ship;
        let mut from_memory = Vec::new();
        let mut streamed: HashMap<Digest, Vec<Target>> = HashMap::new();
        for (digest, target) in todo {
            match head.docs.get(&digest) {
                Some(bytes) => from_memory.push((digest, target, bytes.clone())),
                None => streamed.entry(digest).or_default().push(target),
            }
        }
        let told = uploaded.as_ref();
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
                if let Some(tx) = told {
                    let _ = tx.send(outcome.clone());
                }
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
            let pass = stream::run_pass(self.stream.clone(), pkg.clone(), jobs, None, uploaded);
            outcomes.extend(pass.await);
        }
        outcomes
    }
}

/// Every blob's (and manifest's) size, by digest. One digest, one size: a package whose
/// descriptors give a blob two sizes is refused, as one of them is a lie and which one would
/// otherwise depend on the order of reading.
fn blob_sizes(images: &[Image]) -> Result<HashMap<Digest, u64>> {
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
    Ok(seen
        .into_iter()
        .map(|(d, (size, _))| (d.clone(), size))
        .collect())
}

/// Records a mount's outcome in its destination's run; a declined mount comes back, as the
/// upload it has to become (or the error it is after the last pass).
fn record_mount(
    runs: &mut [DestRun],
    di: usize,
    Mount { repo, digest, .. }: Mount,
    r: Shared<MountOutcome>,
) -> Option<(Digest, Target)> {
    let placed = match r {
        Ok(MountOutcome::Mounted) => Ok(Placed::Mounted),
        Ok(MountOutcome::Declined) => return Some((digest, Target { dest: di, repo })),
        Err(e) => Err(e),
    };
    runs[di].blobs.insert((repo, digest), placed);
    None
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
