//! Reused chunk buffers for large blobs. A fresh 8 MiB buffer per chunk is a fresh mapping
//! (glibc serves it with mmap, see `main.rs`): thousands of page faults and a munmap per
//! chunk, plus zeroing it. Full-size chunks instead come from a small pool and go back to it
//! when the last `Bytes` pointing at them (uploads, verifier) is dropped. Smaller reads are
//! allocated as before: they come from the heap, without new mappings.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Idle buffers kept; more are freed (memory stays flat: a few chunks).
const KEEP: usize = 4;

pub struct Pool {
    chunk: usize,
    idle: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    pub(super) fn new(chunk: usize) -> Arc<Pool> {
        Arc::new(Pool {
            chunk,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A buffer of `len` bytes to read into: pooled when `len` is a full chunk.
    pub(super) fn take(self: &Arc<Self>, len: usize) -> Filling {
        let buf = if len == self.chunk {
            self.idle.lock().expect("not poisoned").pop()
        } else {
            None
        };
        let buf = buf.unwrap_or_else(|| vec![0u8; len]);
        Filling {
            buf,
            pool: (len == self.chunk).then(|| self.clone()),
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
        let mut idle = self.pool.idle.lock().expect("not poisoned");
        if idle.len() < KEEP {
            idle.push(std::mem::take(&mut self.buf));
        }
    }
}
