//! Reused read buffers for blob data. A fresh buffer of 1 MiB or more is a fresh mapping
//! (glibc serves it with mmap, see `main.rs`): a page fault per 4 KiB on first touch, zeroing,
//! and an munmap when freed — about a tenth of a level-0 push's CPU in `perf` when only full
//! chunks were reused. So every buffer from 1 MiB up comes from a pool: the smallest idle one
//! that fits with at most 1 MiB to spare, else a new one rounded up to a whole MiB; it goes
//! back to the pool when the last `Bytes` pointing into it (uploads, verifier) is dropped. A
//! blob so holds at most 2 MiB beyond its size. Smaller reads come from the heap, which
//! serves them without new mappings.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Below this, buffers come from the heap (glibc's mmap threshold, set in `main.rs`).
const GRAIN: usize = 1 << 20;
/// Idle buffers kept, in chunks' worth of bytes (as when only full chunks were pooled); past
/// it the oldest idle one is freed, so memory stays flat while the sizes in use are kept.
const KEEP_CHUNKS: usize = 4;

/// The most memory the read buffers of a blob of `size` bytes can hold at once, counted in
/// the in-flight budget (with the cap of two chunks the reader applies).
pub(super) fn held_for(size: u64) -> u64 {
    if size < GRAIN as u64 {
        size
    } else {
        size.next_multiple_of(GRAIN as u64) + GRAIN as u64
    }
}

pub struct Pool {
    keep_bytes: usize,
    idle: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    pub(super) fn new(chunk: usize) -> Arc<Pool> {
        Arc::new(Pool {
            keep_bytes: chunk.max(GRAIN) * KEEP_CHUNKS,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A buffer of at least `len` bytes to read into (its first `len` are for the data).
    pub(super) fn take(self: &Arc<Self>, len: usize) -> Filling {
        if len < GRAIN {
            return Filling {
                buf: vec![0u8; len],
                pool: None,
            };
        }
        let size = len.next_multiple_of(GRAIN);
        let reused = {
            let mut idle = self.idle.lock().expect("not poisoned");
            // the smallest idle buffer that fits, with at most 1 MiB to spare
            let most = held_for(len as u64) as usize;
            let at = (0..idle.len())
                .filter(|&i| (size..=most).contains(&idle[i].len()))
                .min_by_key(|&i| idle[i].len());
            at.map(|i| idle.remove(i))
        };
        Filling {
            buf: reused.unwrap_or_else(|| vec![0u8; size]),
            pool: Some(self.clone()),
        }
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut idle = self.idle.lock().expect("not poisoned");
        idle.push(buf);
        let mut held: usize = idle.iter().map(Vec::len).sum();
        while held > self.keep_bytes {
            held -= idle.remove(0).len();
        }
    }
}

/// A buffer being filled by the reader.
pub(super) struct Filling {
    pub buf: Vec<u8>,
    pool: Option<Arc<Pool>>,
}

impl Filling {
    /// The first `len` bytes, shared; the buffer returns to the pool when the last clone goes.
    pub fn freeze(self, len: usize) -> Bytes {
        match self.pool {
            Some(pool) => Bytes::from_owner(Pooled {
                buf: self.buf,
                len,
                pool,
            }),
            None => {
                let mut buf = self.buf;
                buf.truncate(len);
                Bytes::from(buf)
            }
        }
    }
}

struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}
