//! A package inside another package's `.tgz` (`plugins/*.tgz` of a core package), streamed
//! from it without extracting: each reading of the inner archive runs a thread that reads the
//! outer archive up to that entry and hands the entry's bytes over a bounded channel. The
//! two decompressions (outer, inner) overlap on two cores, and memory stays at a few chunks.

use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver};

use super::{archive, ArchiveBytes, Package};
use crate::error::{Error, Result};

/// Chunks of the entry in flight between the outer reader and the inner one.
const CHANNEL_CHUNKS: usize = 4;
/// Below glibc's mmap threshold (1 MiB, `main.rs`): each chunk comes from the heap, reused,
/// instead of a fresh mapping faulted in page by page. With 1 MiB chunks, filled whole by
/// the outer decoder, a sync's peak RSS was about 25 MB higher (docs/benchmarks.md).
const CHUNK: usize = 256 << 10;

#[derive(Debug)]
pub struct NestedEntry {
    pub outer: Package,
    /// Entry name in the outer archive, e.g. `plugins/x.tgz`.
    pub entry: String,
}

impl ArchiveBytes for NestedEntry {
    fn open(&self) -> Result<Box<dyn Read + Send>> {
        let outer = self.outer.clone();
        let entry = self.entry.clone();
        let (tx, rx) = sync_channel::<std::io::Result<Vec<u8>>>(CHANNEL_CHUNKS);
        std::thread::Builder::new()
            .name("nested-package".into())
            .spawn(move || {
                let mut send = |r: &mut dyn Read| -> Result<()> {
                    loop {
                        let mut buf = vec![0u8; CHUNK];
                        let n = r
                            .read(&mut buf)
                            .map_err(|e| Error::package(format!("{entry}: read failed: {e}")))?;
                        if n == 0 {
                            return Ok(());
                        }
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            return Ok(()); // the reader has what it wanted
                        }
                    }
                };
                let r = outer
                    .archive()
                    .and_then(|src| archive::with_entry(src, &entry, &mut send));
                if let Err(e) = r {
                    let _ = tx.send(Err(std::io::Error::other(e.message)));
                }
            })
            .map_err(|e| Error::internal(format!("starting a reader thread: {e}")))?;
        Ok(Box::new(ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }))
    }

    fn check_unchanged(&self) -> Result<()> {
        self.outer.check_unchanged()
    }
}

struct ChannelReader {
    rx: Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.chunk = c;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // the sender finished: end of the entry
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
