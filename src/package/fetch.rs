//! The blob pipeline of `ferry package build`. Layers stream from the registry through the
//! digest check into the `.tgz` writer; `concurrency` are fetched at once (started in the
//! order they are written), one is written at a time. A fetch that is ahead of the writer
//! keeps its bytes in memory while the shared budget lasts, then in an unnamed temporary file
//! beside the output (gone when closed); the blob being written gets a window of its own, so
//! that blobs waiting their turn can never starve it.
//!
//! A content-addressed cache (`<dir>/sha256/<hex>`) gets every verified blob as it streams
//! by; a blob found there is checked whole before it is used, so an interrupted build run
//! again reads what it had from disk and downloads only the rest.

use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Connections;
use crate::error::{Error, ErrorKind, Result};
use crate::oci::{Check, Digest};

/// What the writer may hold of the blob it is writing, whatever the budget.
const HEAD_WINDOW: usize = 16 << 20;
/// Chunks read from the cache.
const CACHE_CHUNK: usize = 1 << 20;

/// One layer to fetch: where from, and which image it is for (for errors).
#[derive(Debug, Clone)]
pub struct Job {
    pub host: String,
    pub repo: String,
    pub digest: Digest,
    pub size: u64,
    pub image: String,
}

pub enum Piece {
    /// Bytes held in memory; the permit returns their room to the budget once written.
    Mem(Bytes, Option<OwnedSemaphorePermit>),
    /// The rest of the blob, spilled to a temporary file (positioned at its start).
    Spill(File, u64),
    End(Result<()>),
}

#[derive(Default, Debug)]
pub struct Stats {
    pub downloaded: AtomicU64,
    pub from_cache: AtomicU64,
    pub spilled: AtomicU64,
}

pub struct Pipeline {
    pub conns: Arc<Connections>,
    pub cache: Option<PathBuf>,
    pub spill_dir: PathBuf,
    pub concurrency: usize,
    pub budget: usize,
    pub stats: Arc<Stats>,
    /// Index of the blob being written.
    pub head: Arc<AtomicUsize>,
}

impl Pipeline {
    /// Starts the fetches (at most `concurrency` at once, in order); one receiver per job.
    pub fn start(&self, jobs: Vec<Job>) -> Vec<UnboundedReceiver<Piece>> {
        let waiting = Arc::new(Semaphore::new(self.budget));
        let window = Arc::new(Semaphore::new(HEAD_WINDOW));
        let slots = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut receivers = Vec::new();
        let mut senders = Vec::new();
        for _ in &jobs {
            let (tx, rx) = unbounded_channel();
            receivers.push(rx);
            senders.push(tx);
        }
        let (conns, cache, spill_dir, stats, head) = (
            self.conns.clone(),
            self.cache.clone(),
            self.spill_dir.clone(),
            self.stats.clone(),
            self.head.clone(),
        );
        tokio::spawn(async move {
            for (index, (job, tx)) in jobs.into_iter().zip(senders).enumerate() {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut out = Out {
                    tx,
                    index,
                    head: head.clone(),
                    waiting: waiting.clone(),
                    window: window.clone(),
                    spill: None,
                    spill_dir: spill_dir.clone(),
                    stats: stats.clone(),
                };
                let (conns, cache, stats) = (conns.clone(), cache.clone(), stats.clone());
                tokio::spawn(async move {
                    let r = fetch(&job, &conns, cache.as_deref(), &mut out, &stats).await;
                    drop(permit);
                    let r = match r {
                        Ok(()) => out.finish_spill(),
                        Err(e) => Err(e),
                    };
                    let _ = out.tx.send(Piece::End(r.map_err(|e| {
                        e.context(format!("image {}, blob {}", job.image, job.digest))
                    })));
                });
            }
        });
        receivers
    }
}

/// Where a fetch puts its bytes.
struct Out {
    tx: UnboundedSender<Piece>,
    index: usize,
    head: Arc<AtomicUsize>,
    waiting: Arc<Semaphore>,
    window: Arc<Semaphore>,
    spill: Option<(File, u64)>,
    spill_dir: PathBuf,
    stats: Arc<Stats>,
}

impl Out {
    async fn send(&mut self, chunk: Bytes) -> Result<()> {
        if self.spill.is_none() {
            let n = chunk.len().min(HEAD_WINDOW) as u32;
            let permit = if self.head.load(Ordering::Acquire) == self.index {
                self.window.clone().acquire_many_owned(n).await.ok()
            } else {
                self.waiting.clone().try_acquire_many_owned(n).ok()
            };
            if let Some(p) = permit {
                return self
                    .tx
                    .send(Piece::Mem(chunk, Some(p)))
                    .map_err(|_| stopped());
            }
            let file = tempfile::tempfile_in(&self.spill_dir).map_err(|e| {
                Error::internal(format!(
                    "a temporary file in {}: {e}",
                    self.spill_dir.display()
                ))
            })?;
            self.spill = Some((file, 0));
        }
        let (file, len) = self.spill.as_mut().expect("spilling");
        file.write_all(&chunk)
            .map_err(|e| Error::internal(format!("writing a temporary file: {e}")))?;
        *len += chunk.len() as u64;
        self.stats
            .spilled
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn finish_spill(&mut self) -> Result<()> {
        if let Some((mut file, len)) = self.spill.take() {
            file.rewind()
                .map_err(|e| Error::internal(format!("temporary file: {e}")))?;
            self.tx
                .send(Piece::Spill(file, len))
                .map_err(|_| stopped())?;
        }
        Ok(())
    }
}

fn stopped() -> Error {
    Error::internal("the writer stopped")
}

async fn fetch(
    job: &Job,
    conns: &Connections,
    cache: Option<&Path>,
    out: &mut Out,
    stats: &Stats,
) -> Result<()> {
    if let Some(dir) = cache {
        if let Some(file) = cached(dir, &job.digest, job.size) {
            let mut reader = BufReader::with_capacity(CACHE_CHUNK, file);
            loop {
                let mut buf = vec![0u8; CACHE_CHUNK];
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| Error::internal(format!("reading the cache: {e}")))?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                out.send(Bytes::from(buf)).await?;
            }
            stats.from_cache.fetch_add(job.size, Ordering::Relaxed);
            return Ok(());
        }
    }
    let reg = conns.get(&job.host).await?;
    let mut keep = match cache {
        Some(dir) => Some(CacheEntry::new(dir, &job.digest)?),
        None => None,
    };
    let mut check = Check::new(&job.digest, job.size);
    let mut offset = 0u64;
    let mut attempt = 0;
    loop {
        let failed = match reg.get_blob(&job.repo, &job.digest, offset).await {
            Err(e) if !e.retryable => return Err(e),
            Err(e) => e,
            Ok(body) => {
                let mut response = body.response;
                // an answer from byte 0 to a Range request: skip what we have
                let mut skip = if body.partial { 0 } else { offset };
                loop {
                    match response.chunk().await {
                        Ok(Some(mut chunk)) => {
                            if skip > 0 {
                                let n = skip.min(chunk.len() as u64);
                                chunk = chunk.slice(n as usize..);
                                skip -= n;
                            }
                            if offset + chunk.len() as u64 > job.size {
                                return Err(Error::integrity(format!(
                                    "the registry sends more than the {} bytes of blob {}",
                                    job.size, job.digest
                                )));
                            }
                            check.update(&chunk);
                            offset += chunk.len() as u64;
                            stats
                                .downloaded
                                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            if let Some(k) = keep.as_mut() {
                                k.write(&chunk)?;
                            }
                            out.send(chunk).await?;
                        }
                        Ok(None) if offset < job.size => {
                            break Error::new(
                                ErrorKind::Registry,
                                format!("registry {}: the answer ended early", job.host),
                            )
                        }
                        Ok(None) => {
                            check.finish()?;
                            if let Some(k) = keep {
                                k.commit();
                            }
                            return Ok(());
                        }
                        Err(e) => {
                            break Error::new(
                                ErrorKind::Registry,
                                format!("registry {}: reading: {e}", job.host),
                            )
                        }
                    }
                }
            }
        };
        attempt += 1;
        let policy = reg.retry_policy();
        if attempt >= policy.attempts {
            return Err(failed.context(format!("after {attempt} tries")));
        }
        tracing::debug!(blob = %job.digest, error = %failed.message, offset, "resuming");
        tokio::time::sleep(policy.backoff(attempt - 1, None)).await;
    }
}

/// A cached blob, checked whole before it is used; a damaged one is removed.
fn cached(dir: &Path, digest: &Digest, size: u64) -> Option<File> {
    let path = dir.join("sha256").join(digest.hex());
    let mut file = File::open(&path).ok()?;
    if file.metadata().ok()?.len() != size {
        let _ = std::fs::remove_file(&path);
        return None;
    }
    let mut check = Check::new(digest, size);
    let mut buf = vec![0u8; CACHE_CHUNK];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        check.update(&buf[..n]);
    }
    if check.finish().is_err() {
        tracing::warn!(
            "cache entry {} is damaged: removed, downloading again",
            path.display()
        );
        let _ = std::fs::remove_file(&path);
        return None;
    }
    file.rewind().ok()?;
    Some(file)
}

/// A blob being written to the cache: a private partial file, renamed into place once the
/// whole blob was verified.
struct CacheEntry {
    file: std::io::BufWriter<File>,
    partial: PathBuf,
    path: PathBuf,
}

impl CacheEntry {
    fn new(dir: &Path, digest: &Digest) -> Result<Self> {
        let sub = dir.join("sha256");
        std::fs::create_dir_all(&sub)
            .map_err(|e| Error::internal(format!("cache {}: {e}", sub.display())))?;
        let partial = sub.join(format!("{}.partial-{}", digest.hex(), std::process::id()));
        let file = File::create(&partial)
            .map_err(|e| Error::internal(format!("cache {}: {e}", partial.display())))?;
        Ok(CacheEntry {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            partial,
            path: sub.join(digest.hex()),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::internal(format!("cache {}: {e}", self.partial.display())))
    }

    fn commit(mut self) {
        if self.file.flush().is_ok() {
            let _ = std::fs::rename(&self.partial, &self.path);
        }
    }
}

impl Drop for CacheEntry {
    fn drop(&mut self) {
        // after a commit the partial file is gone already
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// The writer's side of one blob: reads its pieces in order, exactly `size` bytes, and turns
/// a failed fetch into an I/O error carrying the fetch's error.
pub struct SlotReader {
    rx: UnboundedReceiver<Piece>,
    cur: Current,
    pub failure: Option<Error>,
}

enum Current {
    None,
    /// The permit is only held: dropping it gives the bytes' room back to the budget.
    Mem(Bytes, #[allow(dead_code)] Option<OwnedSemaphorePermit>),
    File(std::io::Take<BufReader<File>>),
}

impl SlotReader {
    pub fn new(rx: UnboundedReceiver<Piece>) -> Self {
        SlotReader {
            rx,
            cur: Current::None,
            failure: None,
        }
    }
}

impl Read for SlotReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match &mut self.cur {
                Current::Mem(bytes, _) if !bytes.is_empty() => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    *bytes = bytes.slice(n..);
                    return Ok(n);
                }
                Current::File(f) => {
                    let n = f.read(buf)?;
                    if n > 0 {
                        return Ok(n);
                    }
                }
                _ => {}
            }
            // the piece is used up: its permit (if any) goes back here
            self.cur = Current::None;
            match self.rx.blocking_recv() {
                Some(Piece::Mem(b, p)) => self.cur = Current::Mem(b, p),
                Some(Piece::Spill(f, len)) => {
                    self.cur = Current::File(BufReader::with_capacity(1 << 20, f).take(len))
                }
                Some(Piece::End(Ok(()))) => return Ok(0),
                Some(Piece::End(Err(e))) => {
                    let msg = e.message.clone();
                    self.failure = Some(e);
                    return Err(std::io::Error::other(msg));
                }
                None => return Err(std::io::Error::other("the fetch stopped")),
            }
        }
    }
}
