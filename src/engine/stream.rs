//! One streaming pass over a package: the reader thread decompresses and hashes each wanted
//! blob once, in archive order, and hands its bytes in chunks to upload tasks — one per
//! destination (registry, repository) — that send them while the reader moves on.
//!
//! Integrity: the reader hashes every byte and counts the size; an upload is committed
//! (`PUT ?digest=`) only after the reader said `Done`, i.e. after the digest and size matched.
//! A mismatch sends `Fail` instead: the upload session is cancelled and nothing is committed.
//!
//! Memory: each blob in flight holds at most a few chunks (reader → blob task → target task,
//! channels of capacity 1); at most `concurrency` blobs are in flight.
//!
//! DR fan-out: reading once means the destinations move together, at the pace of the slower
//! one. A destination that takes no chunk for `stall` is dropped from that blob (the others
//! go on), and one whose blobs fail [`GIVE_UP_AFTER`] times in a row is no longer fed for the
//! rest of the run, so a hung standby costs a bounded time and the primary finishes.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::buffers::Pool;
use super::gate::Gate;
use super::state::StateStore;
use super::verifier::Verifier;
use crate::error::{Error, Result};
use crate::oci::{Digest, Verified};
use crate::sink::{RegistryApi, UploadError, UploadSession};
use crate::source::{Flow, Package, Wanted};

/// Where one blob must go: a destination registry (index) and repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub dest: usize,
    pub repo: String,
}

#[derive(Debug, Clone)]
pub struct StreamJob {
    pub digest: Digest,
    pub size: u64,
    pub targets: Vec<Target>,
}

pub struct StreamCtx {
    pub registries: Vec<Arc<dyn RegistryApi>>,
    pub state: StateStore,
    /// Blobs up to this size are sent in one request; larger ones in chunks of this size.
    pub chunk_size: usize,
    pub concurrency: usize,
    /// With several destinations: the longest a destination may take no chunk before it is
    /// dropped from that blob (the registry timeout).
    pub stall: Duration,
    pub health: Vec<Arc<Health>>,
    pub stop: super::Stop,
    /// Shared by every pass of every package of the run, so that memory stays bounded
    /// however many packages go at once.
    pub in_flight: InFlight,
    /// Full-size chunk buffers, reused across passes and packages.
    pub buffers: Arc<Pool>,
}

/// Blobs that failed on one destination, in a row, in this run.
#[derive(Default)]
pub struct Health {
    failures_in_a_row: AtomicU32,
    given_up: AtomicBool,
    /// The registry refused a chunked upload: whole blobs in one request from then on.
    chunks_refused: AtomicBool,
}

impl Health {
    fn takes_chunks(&self) -> bool {
        !self.chunks_refused.load(Ordering::SeqCst)
    }

    fn refuse_chunks(&self, registry: &dyn RegistryApi, e: &Error) {
        if !self.chunks_refused.swap(true, Ordering::SeqCst) {
            tracing::debug!(registry = %registry.host(), error = %e.message, "registry refuses chunked uploads (PATCH with Content-Range); falling back to one streamed request per blob");
        }
    }
}

/// Consecutive failed blobs after which a fan-out stops feeding a destination.
pub const GIVE_UP_AFTER: u32 = 3;

impl StreamCtx {
    pub(super) fn given_up(&self, dest: usize) -> bool {
        self.registries.len() > 1 && self.health[dest].given_up.load(Ordering::SeqCst)
    }

    /// Counts one blob's results per destination; interruptions say nothing about health.
    pub(super) fn record(&self, outcomes: &[Outcome]) {
        if self.registries.len() < 2 {
            return;
        }
        let mut failed: HashMap<usize, bool> = HashMap::new();
        for (_, t, r) in outcomes {
            if matches!(r, Err(e) if e.kind == crate::error::ErrorKind::Interrupted) {
                continue;
            }
            *failed.entry(t.dest).or_default() |= r.is_err();
        }
        for (dest, failed) in failed {
            let h = &self.health[dest];
            if !failed {
                h.failures_in_a_row.store(0, Ordering::SeqCst);
            } else if h.failures_in_a_row.fetch_add(1, Ordering::SeqCst) + 1 >= GIVE_UP_AFTER
                && !h.given_up.swap(true, Ordering::SeqCst)
            {
                tracing::warn!(
                    registry = %self.registries[dest].host(),
                    "{GIVE_UP_AFTER} blobs in a row failed on this registry: it is no longer fed in this run, so the other destinations can finish"
                );
            }
        }
    }

    pub(super) fn left_out(&self, dest: usize) -> Error {
        Error::new(
            crate::error::ErrorKind::Registry,
            format!(
                "registry {}: left out for the rest of this run after {GIVE_UP_AFTER} failed blobs in a row (see the errors above); run again once it is healthy",
                self.registries[dest].host()
            ),
        )
    }
}

#[derive(Clone)]
pub(super) enum Msg {
    Chunk(Bytes),
    /// Every chunk was sent, and the verifier's proof that they were the right bytes.
    Done(Verified),
    Fail(Error),
}

struct BlobStart {
    digest: Digest,
    rx: mpsc::Receiver<Msg>,
    /// Where it goes, when decided as the reader met it (see [`Gate`]).
    targets: Option<Vec<Target>>,
}

pub type Outcome = (Digest, Target, Result<()>);

/// How many blobs may be in flight at once: by bytes and by count, so that small blobs do not
/// wait behind large ones (on a distant link each costs round trips, not bytes). A blob
/// weighs its size (`buffers::held_for`, up to two chunks; the buffers themselves are bounded
/// by the pool's cap, which may hand a blob a larger idle one); the byte budget is
/// `concurrency` large blobs, as before, and up to [`super::SMALL_PER_LARGE`] x `concurrency`
/// blobs go at once.
pub struct InFlight {
    count: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    chunk_kib: u32,
    budget_kib: u32,
}

impl InFlight {
    pub fn new(concurrency: usize, chunk: usize) -> Self {
        let concurrency = concurrency.max(1);
        let chunk_kib = (chunk / 1024).max(1) as u32;
        let budget_kib = chunk_kib.saturating_mul(2 * concurrency as u32);
        InFlight {
            count: Arc::new(Semaphore::new(concurrency * super::SMALL_PER_LARGE)),
            bytes: Arc::new(Semaphore::new(budget_kib as usize)),
            chunk_kib,
            budget_kib,
        }
    }

    async fn admit(
        &self,
        size: u64,
    ) -> (
        tokio::sync::OwnedSemaphorePermit,
        tokio::sync::OwnedSemaphorePermit,
    ) {
        let held = super::buffers::held_for(size);
        let kib = (held.div_ceil(1024).min(u64::from(2 * self.chunk_kib)) as u32)
            .clamp(1, self.budget_kib);
        let bytes = self
            .bytes
            .clone()
            .acquire_many_owned(kib)
            .await
            .expect("semaphore never closed");
        let count = self
            .count
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        (bytes, count)
    }
}

/// Streams every job's blob out of `pkg` to its targets. Returns one outcome per
/// (blob, target); never fails as a whole.
///
/// With a `gate`, the jobs' own targets are not used: the reader, meeting a blob, waits for
/// its targets at the gate (the surveys decide them meanwhile); a blob with none is skipped,
/// and once nothing further can be wanted the reading stops.
/// One streaming pass over `pkg` for `jobs` (with `gate`, their targets come from the
/// surveys as they decide). Each outcome is also told to `uploaded`, if given, as soon as its
/// blob is done, so that work waiting for that blob need not wait for the whole pass.
pub async fn run_pass(
    ctx: Arc<StreamCtx>,
    pkg: Package,
    jobs: Vec<StreamJob>,
    gate: Option<Arc<Gate>>,
    uploaded: Option<mpsc::UnboundedSender<Outcome>>,
) -> Vec<Outcome> {
    let wanted: Wanted = jobs.iter().map(|j| (j.digest.clone(), j.size)).collect();
    let by_digest: HashMap<Digest, StreamJob> =
        jobs.into_iter().map(|j| (j.digest.clone(), j)).collect();
    let (start_tx, mut start_rx) = mpsc::channel::<BlobStart>(1);
    let chunk = ctx.chunk_size;
    let buffers = ctx.buffers.clone();
    let reader_gate = gate.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let reader = ReaderSide {
            chunk,
            starts: start_tx,
            verifier: Verifier::start(),
            buffers: buffers.clone(),
        };
        let mut sink = |d: &Digest, size: u64, r: &mut dyn Read| {
            let Some(gate) = &reader_gate else {
                read_blob(d, size, wanted[d], r, &reader, None)?;
                return Ok(Flow::More);
            };
            // the reader thread waits here for this blob's own HEADs only
            let targets = futures::executor::block_on(gate.targets(d));
            gate.reached(d);
            if targets.is_empty() {
                // Skipping means reading through it (a tar entry in a gzip stream): before
                // that, let the surveys finish; the rest may well be there too (a resumed
                // push), and then nothing more is read at all.
                futures::executor::block_on(gate.settled());
            } else {
                read_blob(d, size, wanted[d], r, &reader, Some(targets))?;
            }
            Ok(gate.flow())
        };
        let r = pkg.stream_blobs(&wanted, &mut sink);
        reader.verifier.finish();
        r
    });

    let mut tasks = JoinSet::new();
    let mut started = Vec::new();
    let mut outcomes_early: Vec<Outcome> = Vec::new();
    while let Some(start) = start_rx.recv().await {
        let mut job = by_digest[&start.digest].clone();
        started.push(job.digest.clone());
        if let Some(targets) = start.targets {
            job.targets = targets;
        }
        // Waiting for room ends when a stop is asked for: that blob is not started.
        let permit = tokio::select! {
            p = ctx.in_flight.admit(job.size), if !ctx.stop.requested() => Some(p),
            _ = ctx.stop.requested_wait() => None,
        };
        let Some(permit) = permit else {
            // Dropping the receiver tells the reader to skip this blob.
            for t in &job.targets {
                outcomes_early.push((job.digest.clone(), t.clone(), Err(super::interrupted())));
            }
            continue;
        };
        let (ctx, uploaded) = (ctx.clone(), uploaded.clone());
        tasks.spawn(async move {
            let out = blob_task(&ctx, &job, start.rx).await;
            drop(permit);
            if let Some(tx) = &uploaded {
                for o in &out {
                    // the listener only ever hears: if it has gone, nothing is lost
                    let _ = tx.send(o.clone());
                }
            }
            out
        });
    }
    let mut outcomes: Vec<Outcome> = outcomes_early;
    while let Some(r) = tasks.join_next().await {
        outcomes.extend(r.unwrap_or_default());
    }
    // Blobs the reader never reached: missing from the package, or the archive broke first.
    let unreached: Vec<&StreamJob> = by_digest
        .values()
        .filter(|j| !started.contains(&j.digest))
        .collect();
    let why = match reader.await {
        Ok(Ok(_missing)) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(Error::internal(format!("package reader crashed: {e}"))),
    };
    for job in unreached {
        let targets = match &gate {
            Some(gate) => gate.targets(&job.digest).await,
            None => job.targets.clone(),
        };
        let err = why.clone().unwrap_or_else(|| {
            Error::integrity(format!(
                "blob {} is missing from the package (images/blobs/sha256/{})",
                job.digest,
                job.digest.hex()
            ))
        });
        for t in targets {
            outcomes.push((job.digest.clone(), t, Err(err.clone())));
        }
    }
    outcomes
}

/// What the reader thread works with: where blobs start, the verifier, the chunk buffers.
struct ReaderSide {
    chunk: usize,
    starts: mpsc::Sender<BlobStart>,
    verifier: Verifier,
    buffers: Arc<Pool>,
}

/// Runs on the reader thread: reads one blob entry in chunks and hands each to the uploads
/// and to the verifier (which sends the verdict after the last chunk).
fn read_blob(
    digest: &Digest,
    size: u64,
    expected: u64,
    r: &mut dyn Read,
    reader: &ReaderSide,
    targets: Option<Vec<Target>>,
) -> Result<()> {
    let ReaderSide {
        chunk,
        starts,
        verifier,
        buffers,
    } = reader;
    let chunk = *chunk;
    let (tx, rx) = mpsc::channel(1);
    starts
        .blocking_send(BlobStart {
            digest: digest.clone(),
            rx,
            targets,
        })
        .map_err(|_| Error::internal("upload side stopped"))?;
    if size != expected {
        let _ = tx.blocking_send(Msg::Fail(Error::integrity(format!(
            "blob {digest}: size mismatch: manifest says {expected} bytes, package has {size}"
        ))));
        return Ok(());
    }
    verifier.begin(digest, size, tx.clone());
    let mut total = 0u64;
    while total < size {
        let want = chunk.min((size - total) as usize);
        let mut filling = buffers.take(want);
        let buf = &mut filling.buf;
        let mut filled = 0;
        while filled < want {
            match r.read(&mut buf[filled..want]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    verifier.abandon();
                    let err = Error::package(format!(
                        "reading blob {digest} failed after {} bytes ({e}); the .tgz may be truncated or corrupt",
                        total + filled as u64
                    ));
                    let _ = tx.blocking_send(Msg::Fail(err.clone()));
                    return Err(err);
                }
            }
        }
        if filled == 0 {
            break;
        }
        let bytes = filling.freeze(filled);
        verifier.chunk(bytes.clone());
        total += filled as u64;
        if tx.blocking_send(Msg::Chunk(bytes)).is_err() {
            // Every target already failed: stop reading this blob.
            verifier.abandon();
            return Ok(());
        }
    }
    // Every chunk is queued for the uploads before the verdict can be.
    verifier.end();
    Ok(())
}

/// Fans one blob's chunks out to every target's upload task.
async fn blob_task(ctx: &StreamCtx, job: &StreamJob, rx: mpsc::Receiver<Msg>) -> Vec<Outcome> {
    let (live, gone): (Vec<&Target>, Vec<&Target>) =
        job.targets.iter().partition(|t| !ctx.given_up(t.dest));
    let mut out: Vec<Outcome> = gone
        .into_iter()
        .map(|t| (job.digest.clone(), t.clone(), Err(ctx.left_out(t.dest))))
        .collect();
    out.extend(fan_out(ctx, job, &live, rx).await);
    ctx.record(&out);
    out
}

async fn fan_out(
    ctx: &StreamCtx,
    job: &StreamJob,
    targets: &[&Target],
    mut rx: mpsc::Receiver<Msg>,
) -> Vec<Outcome> {
    if let [t] = targets {
        // One destination: no fan-out hop, one chunk less held in memory.
        let registry = &ctx.registries[t.dest];
        let r = upload_target(
            registry.as_ref(),
            &ctx.health[t.dest],
            &ctx.state,
            ctx.chunk_size,
            &t.repo,
            &job.digest,
            job.size,
            rx,
        )
        .await;
        return vec![(job.digest.clone(), (*t).clone(), r)];
    }
    let mut senders = Vec::new();
    let mut uploads = JoinSet::new();
    for &t in targets {
        let (tx, trx) = mpsc::channel(1);
        let registry = ctx.registries[t.dest].clone();
        let (repo, digest, size) = (t.repo.clone(), job.digest.clone(), job.size);
        let (state, chunk) = (ctx.state.clone(), ctx.chunk_size);
        let target = t.clone();
        let health = ctx.health[t.dest].clone();
        let task = uploads.spawn(async move {
            let r = upload_target(
                registry.as_ref(),
                &health,
                &state,
                chunk,
                &repo,
                &digest,
                size,
                trx,
            )
            .await;
            (digest, target, r)
        });
        senders.push(Some((tx, task, t)));
    }
    let mut out = Vec::new();
    while let Some(msg) = rx.recv().await {
        let last = !matches!(msg, Msg::Chunk(_));
        // Every live target gets the chunk at once; a target that takes nothing for `stall`
        // is dropped from this blob instead of holding the others back.
        let sends = senders.iter().map(|s| async {
            match s {
                Some((tx, _, _)) => {
                    Some(tokio::time::timeout(ctx.stall, tx.send(msg.clone())).await)
                }
                None => None,
            }
        });
        let results = futures::future::join_all(sends).await;
        let mut any = false;
        for (slot, result) in senders.iter_mut().zip(results) {
            match result {
                Some(Ok(Ok(()))) => any = true,
                Some(Ok(Err(_))) => *slot = None, // that target failed; the others go on
                Some(Err(_elapsed)) => {
                    let (_, task, t) = slot.take().expect("live sender");
                    task.abort();
                    let host = ctx.registries[t.dest].host();
                    out.push((
                        job.digest.clone(),
                        t.clone(),
                        Err(Error::new(
                            crate::error::ErrorKind::Registry,
                            format!(
                                "registry {host}: blob {} to {}: took no data for {} s while the other destinations went on; check that registry and its link",
                                job.digest,
                                t.repo,
                                ctx.stall.as_secs()
                            ),
                        )
                        .retryable(true)),
                    ));
                }
                None => {}
            }
        }
        if last || !any {
            break;
        }
    }
    drop(senders);
    while let Some(r) = uploads.join_next().await {
        if let Ok(o) = r {
            out.push(o);
        }
    }
    out
}

/// Sends one blob to one repository: in one request when small, else in chunks that can
/// resume from the registry's committed offset.
#[allow(clippy::too_many_arguments)] // one blob, one target: all of it is needed here
async fn upload_target(
    registry: &dyn RegistryApi,
    health: &Health,
    state: &StateStore,
    chunk: usize,
    repo: &str,
    digest: &Digest,
    size: u64,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<()> {
    let ended = || Error::internal(format!("blob {digest}: the package reader stopped early"));
    if size <= chunk as u64 {
        let mut parts = Vec::new();
        let verified = loop {
            match rx.recv().await.ok_or_else(ended)? {
                Msg::Chunk(b) => parts.push(b),
                Msg::Done(v) => break v,
                Msg::Fail(e) => return Err(e),
            }
        };
        let bytes = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            concat(parts)
        };
        return registry.upload_whole(repo, &verified, bytes).await;
    }

    if !health.takes_chunks() {
        return stream_whole(registry, repo, digest, None, rx).await;
    }
    let lease = state.lease(&registry.origin(), repo, digest);
    let mut session = match lease.load() {
        Some(saved) => match registry.upload_status(repo, &saved).await {
            Ok(Some(s)) if s.offset <= size => {
                tracing::info!(%digest, repo, offset = s.offset, "resuming upload where the registry stands");
                s
            }
            _ => registry.begin_upload(repo, digest).await?,
        },
        None => registry.begin_upload(repo, digest).await?,
    };
    let mut pos = 0u64;
    loop {
        match rx.recv().await.ok_or_else(ended)? {
            Msg::Chunk(b) => {
                let end = pos + b.len() as u64;
                if end > session.offset {
                    if session.offset < pos {
                        return Err(Error::internal(format!(
                            "blob {digest}: upload session behind the stream"
                        )));
                    }
                    let piece = b.slice((session.offset - pos) as usize..);
                    match send_chunk(registry, repo, digest, &mut session, piece).await {
                        Ok(()) => {}
                        Err(UploadError::ChunksRefused(e)) if pos == 0 => {
                            health.refuse_chunks(registry, &e);
                            let _ = registry.cancel(repo, &session).await;
                            lease.remove();
                            return stream_whole(registry, repo, digest, Some(b), rx).await;
                        }
                        Err(e) => {
                            let e = Error::from(e);
                            if !e.retryable {
                                let _ = registry.cancel(repo, &session).await;
                                lease.remove();
                            }
                            return Err(e);
                        }
                    }
                    lease.save(&session).await;
                }
                pos = end;
            }
            Msg::Done(verified) => {
                let r = registry
                    .finish_upload(repo, &verified, &session, Bytes::new())
                    .await;
                if r.as_ref().is_err_and(|e| !e.retryable) {
                    let _ = registry.cancel(repo, &session).await;
                }
                lease.remove();
                return r;
            }
            Msg::Fail(e) => {
                let _ = registry.cancel(repo, &session).await;
                lease.remove();
                return Err(e);
            }
        }
    }
}

/// PATCHes one chunk; after a transient failure asks the registry how much of it arrived
/// and sends only the rest.
async fn send_chunk(
    registry: &dyn RegistryApi,
    repo: &str,
    digest: &Digest,
    session: &mut UploadSession,
    mut piece: Bytes,
) -> std::result::Result<(), UploadError> {
    let policy = registry.retry_policy();
    let mut attempt = 0;
    loop {
        let start = session.offset;
        let err = match registry
            .upload_chunk(repo, digest, session, piece.clone())
            .await
        {
            Ok(()) => return Ok(()),
            Err(UploadError::Failed(e)) if e.retryable && attempt + 1 < policy.attempts => e,
            Err(e) => return Err(e),
        };
        tracing::debug!(%digest, repo, error = %err, "chunk failed; asking the registry where the upload stands");
        tokio::time::sleep(policy.backoff(attempt, None)).await;
        attempt += 1;
        match registry.upload_status(repo, session).await {
            Ok(Some(s)) if s.offset >= start && s.offset <= start + piece.len() as u64 => {
                piece = piece.slice((s.offset - start) as usize..);
                *session = s;
                if piece.is_empty() {
                    return Ok(());
                }
            }
            _ => return Err(err.into()),
        }
    }
}

/// For registries that refuse chunks: the whole blob in one streamed request. The stream
/// ends in an error if the reader reports a mismatch, aborting the request; only a verified
/// blob is committed.
async fn stream_whole(
    registry: &dyn RegistryApi,
    repo: &str,
    digest: &Digest,
    first: Option<Bytes>,
    rx: mpsc::Receiver<Msg>,
) -> Result<()> {
    let mut session = registry.begin_upload(repo, digest).await?;
    let (verdict_tx, verdict_rx) = tokio::sync::oneshot::channel::<Result<Verified>>();
    let counters = registry.counters().clone();
    let body = futures::stream::unfold(
        (first, rx, Some(verdict_tx)),
        move |(first, mut rx, mut verdict)| {
            let counters = counters.clone();
            async move {
                let next = match first {
                    Some(b) => Some(Msg::Chunk(b)),
                    None => rx.recv().await,
                };
                let fail =
                    |verdict: &mut Option<tokio::sync::oneshot::Sender<Result<Verified>>>,
                     e: Error| {
                        if let Some(t) = verdict.take() {
                            let _ = t.send(Err(e));
                        }
                        std::io::Error::other("blob failed verification")
                    };
                match next {
                    Some(Msg::Chunk(b)) => {
                        counters
                            .bytes_sent
                            .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        Some((Ok(b), (None, rx, verdict)))
                    }
                    Some(Msg::Done(v)) => {
                        if let Some(t) = verdict.take() {
                            let _ = t.send(Ok(v));
                        }
                        None
                    }
                    Some(Msg::Fail(e)) => Some((Err(fail(&mut verdict, e)), (None, rx, None))),
                    None => {
                        let e = Error::internal(
                            "the package reader stopped before the end of the blob",
                        );
                        Some((Err(fail(&mut verdict, e)), (None, rx, None)))
                    }
                }
            }
        },
    );
    let sent = registry
        .upload_stream(repo, digest, &mut session, futures::StreamExt::boxed(body))
        .await;
    let verdict = verdict_rx.await.ok();
    let outcome = match (sent, verdict) {
        (_, Some(Err(e))) => Err(e),
        (Err(e), _) => Err(e),
        (Ok(()), Some(Ok(verified))) => {
            return registry
                .finish_upload(repo, &verified, &session, Bytes::new())
                .await
        }
        (Ok(()), None) => Err(Error::internal(format!(
            "blob {digest}: upload ended before the blob was verified"
        ))),
    };
    let _ = registry.cancel(repo, &session).await;
    outcome
}

fn concat(parts: Vec<Bytes>) -> Bytes {
    let mut b = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        b.extend_from_slice(&p);
    }
    b.freeze()
}
