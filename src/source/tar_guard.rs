//! A tar stream with limits the `tar` crate does not have.
//!
//! Why a wrapper: `tar` reads PAX extension entries (`x`) and GNU long names (`L`, `K`)
//! whole into memory, with no size limit, before it hands out the entry they describe
//! (`EntryFields::read_all`). A hostile package with a multi-GB long name would take that
//! much memory before any of our checks ran, and at gzip level 0 the bomb guard cannot help.
//! The `raw` mode of the crate does not apply PAX `size` records, so it would read such
//! archives wrongly. Instead, the reader under `tar` knows where the data of the entry it
//! last handed out ends; every byte `tar` reads past that while looking for the next entry
//! is header or extension, and those are capped at [`MAX_EXTENSION_BYTES`].
//!
//! It also keeps the gzip bomb guard: past [`BOMB_CHECK_AFTER`] decompressed bytes, the
//! archive may not have expanded more than [`MAX_EXPANSION`] times.

use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::Error;

/// Headers and extension entries (PAX records, GNU long names) before one entry, in total.
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;
/// Gzip bomb guard: past this many decompressed bytes, the archive may not have expanded
/// more than [`MAX_EXPANSION`] times its compressed size.
const BOMB_CHECK_AFTER: u64 = 1 << 30;
const MAX_EXPANSION: u64 = 100;

/// An I/O error that is a refusal of the package, not damage: shown as it is.
#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

fn refuse(msg: String) -> std::io::Error {
    std::io::Error::other(Refusal(msg))
}

/// The package error for an I/O error of the tar stream: a refusal says why; anything else
/// means the file is damaged.
pub fn archive_error(e: std::io::Error) -> Error {
    if let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<Refusal>()) {
        return Error::package(r.0.clone());
    }
    Error::package(format!(
        "archive is unreadable ({}); the .tgz may be truncated or corrupt: check it with `ferry verify` or copy it again",
        without_controls(&e.to_string())
    ))
}

/// `tar`'s errors quote entry names as they are: a name from a hostile archive could carry
/// terminal escapes to the operator's screen. Control characters are shown escaped.
fn without_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Counts the compressed bytes read, for the bomb guard.
pub struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Counts what the reader above consumes (flate2's `bufread` decoders read this way).
impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        self.inner.consume(n);
    }
}

impl<R> Counting<R> {
    pub fn new(inner: R) -> (Self, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        let me = Counting {
            inner,
            count: count.clone(),
        };
        (me, count)
    }
}

#[derive(Default)]
struct Watch {
    /// Decompressed bytes handed to `tar` so far: its position in the stream.
    out: AtomicU64,
    /// `tar` is looking for the next entry.
    between_entries: AtomicBool,
    /// Where the data of the entry last handed out ends (rounded up to 512).
    data_end: AtomicU64,
}

/// The decompressed stream under `tar`, with both guards.
pub struct Guarded<R> {
    inner: R,
    compressed: Option<Arc<AtomicU64>>,
    watch: Arc<Watch>,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let out = self.watch.out.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if self.watch.between_entries.load(Ordering::Relaxed) {
            let past = out.saturating_sub(self.watch.data_end.load(Ordering::Relaxed));
            if past > MAX_EXTENSION_BYTES {
                return Err(refuse(format!(
                    "tar headers and extensions (PAX records, GNU long names) before one entry exceed {MAX_EXTENSION_BYTES} bytes at offset {out}: refusing a hostile or broken package"
                )));
            }
        }
        if let Some(compressed) = &self.compressed {
            if out > BOMB_CHECK_AFTER {
                let c = compressed.load(Ordering::Relaxed).max(1);
                if out / c > MAX_EXPANSION {
                    return Err(refuse(format!(
                        "archive expands more than {MAX_EXPANSION}x ({c} compressed bytes gave {out} bytes): refusing a possible gzip bomb"
                    )));
                }
            }
        }
        Ok(n)
    }
}

/// An uncompressed archive skipping an entry: the stream position moves as if it had been
/// read (`tar` takes the position it is told back as its own).
impl<R: Read + std::io::Seek> std::io::Seek for Guarded<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let at = self.inner.seek(pos)?;
        self.watch.out.store(at, Ordering::Relaxed);
        Ok(at)
    }
}

/// A tar archive read through the guards.
pub struct GuardedTar<R: Read> {
    archive: tar::Archive<Guarded<R>>,
    watch: Arc<Watch>,
}

impl<R: Read> GuardedTar<R> {
    /// `decompressed` is the tar stream; `compressed` counts the bytes it came from, when the
    /// bomb guard should run.
    pub fn new(decompressed: R, compressed: Option<Arc<AtomicU64>>) -> Self {
        let watch = Arc::new(Watch::default());
        let archive = tar::Archive::new(Guarded {
            inner: decompressed,
            compressed,
            watch: watch.clone(),
        });
        GuardedTar { archive, watch }
    }

    pub fn entries(&mut self) -> crate::error::Result<Entries<'_, R>> {
        Ok(Entries {
            inner: self.archive.entries().map_err(archive_error)?,
            watch: self.watch.clone(),
        })
    }
}

impl<R: Read + std::io::Seek> GuardedTar<R> {
    /// Like [`GuardedTar::entries`], but the data of an entry not read is skipped by seeking.
    pub fn entries_seeking(&mut self) -> crate::error::Result<Entries<'_, R>> {
        Ok(Entries {
            inner: self.archive.entries_with_seek().map_err(archive_error)?,
            watch: self.watch.clone(),
        })
    }
}

pub struct Entries<'a, R: Read> {
    inner: tar::Entries<'a, Guarded<R>>,
    watch: Arc<Watch>,
}

impl<'a, R: Read> Iterator for Entries<'a, R> {
    type Item = crate::error::Result<tar::Entry<'a, Guarded<R>>>;

    fn next(&mut self) -> Option<Self::Item> {
        // Skipping the rest of the previous entry's data is free; the cap counts from there.
        self.watch.between_entries.store(true, Ordering::Relaxed);
        let next = self.inner.next();
        self.watch.between_entries.store(false, Ordering::Relaxed);
        if let Some(Ok(entry)) = &next {
            // `tar` has read exactly up to the entry's data.
            let at = self.watch.out.load(Ordering::Relaxed);
            let data = entry.size().saturating_add(511) & !511;
            self.watch
                .data_end
                .store(at.saturating_add(data), Ordering::Relaxed);
        }
        next.map(|r| r.map_err(archive_error))
    }
}
