//! Reused read buffers for blob data. A fresh buffer of 1 MiB or more is a fresh mapping
//! (glibc serves it with mmap, see `main.rs`): a page fault per 4 KiB on first touch, zeroing,
//! and an munmap when freed — about a tenth of a level-0 push's CPU in `perf` when only full
//! chunks were reused. A fresh one from 64 KiB up comes from the heap, which glibc trims and
//! hands back zeroed with `memset` or page faults (5 % of the CPU of a 1,000-image push, most
//! of whose blobs are 64 KiB - 1 MiB). So every buffer from 64 KiB up comes from a pool: the
//! smallest idle one that fits (for a read under 1 MiB, at most twice its size unless the pool
//! is at its cap), else a new one rounded up to 64 KiB (under 1 MiB) or to a whole MiB, after
//! waiting for a buffer to come back when at the cap; it goes back to the pool when the last
//! `Bytes` pointing into it (uploads, verifier) is dropped. The cap on all of them, in use and
//! idle, is what bounds memory; reusing a larger idle buffer for a smaller read adds nothing
//! under it. Reads under 64 KiB come from the heap's small bins, cheaply.

use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;

/// From this size up, buffers are whole MiB (glibc's mmap threshold, set in `main.rs`).
const GRAIN: usize = 1 << 20;
/// Below this, buffers come from the heap and are not pooled; up to [`GRAIN`], they are
/// multiples of it.
const SMALL: usize = 64 << 10;
/// Idle buffers kept, in chunks' worth of bytes (as when only full chunks were pooled); past
/// it the oldest idle one is freed, so memory stays flat while the sizes in use are kept.
const KEEP_CHUNKS: usize = 4;

/// What the read buffers of a blob of `size` bytes weigh in the in-flight budget (with the
/// cap of two chunks the reader applies). A blob may be given a larger idle buffer than that;
/// the pool's cap, not this weight, bounds the bytes all buffers hold.
pub(super) fn held_for(size: u64) -> u64 {
    if size < GRAIN as u64 {
        size
    } else {
        size.next_multiple_of(GRAIN as u64) + GRAIN as u64
    }
}

/// All read buffers of a run, in use and idle: `concurrency + 2` chunks (48 MiB with the
/// defaults): each of the `concurrency` large uploads sends one chunk while the reader fills
/// one and one waits for its upload. The in-flight budget (`stream::InFlight`, two chunks per
/// large blob) decides how many blobs go at once; this bounds the bytes they hold, which the
/// budget did not: a blob's chunks also wait in channels and, with several destinations, at
/// the slowest of them (up to five chunks of one blob alive at once), and idle buffers of
/// the wrong size sat on top. A 1,000-image push peaked at 78 MB of buffers for the 64 MiB
/// budget, 104-113 MB of RSS in all (heaptrack, docs/benchmarks.md). 48 rather than 64 MiB
/// measured no slower on loopback and keeps a single push under 100 MiB with a margin.
pub(super) fn cap(concurrency: usize, chunk: usize) -> usize {
    (concurrency.max(1) + 2) * chunk.max(GRAIN)
}

/// The reader waits in [`Pool::take`] until the buffer it needs fits under the cap, after
/// freeing idle ones; buffers in use are released by the uploads, never by the reader, so
/// the wait ends.
pub struct Pool {
    keep_bytes: usize,
    cap: usize,
    inner: Mutex<Inner>,
    freed: Condvar,
}

#[derive(Default)]
struct Inner {
    idle: Vec<Vec<u8>>,
    idle_bytes: usize,
    /// Bytes of the buffers handed out and not yet returned (heap ones included).
    live_bytes: usize,
}

impl Inner {
    /// The smallest idle buffer of `size..=most` bytes.
    fn take_idle(&mut self, size: usize, most: usize) -> Option<Vec<u8>> {
        let at = (0..self.idle.len())
            .filter(|&i| (size..=most).contains(&self.idle[i].len()))
            .min_by_key(|&i| self.idle[i].len())?;
        let buf = self.idle.remove(at);
        self.idle_bytes -= buf.len();
        Some(buf)
    }

    fn drop_oldest_idle(&mut self) {
        let buf = self.idle.remove(0);
        self.idle_bytes -= buf.len();
    }
}

impl Pool {
    /// A pool for chunks of `chunk` bytes whose buffers stay within `cap` bytes in all.
    pub(super) fn new(chunk: usize, cap: usize) -> Arc<Pool> {
        let chunk = chunk.max(GRAIN);
        Arc::new(Pool {
            keep_bytes: chunk * KEEP_CHUNKS,
            // one chunk always fits, so the reader can always make progress
            cap: cap.max(chunk + GRAIN),
            inner: Mutex::new(Inner::default()),
            freed: Condvar::new(),
        })
    }

    /// A buffer of at least `len` bytes to read into (its first `len` are for the data);
    /// waits while the buffers in use leave no room for it.
    pub(super) fn take(self: &Arc<Self>, len: usize) -> Filling {
        let size = if len < SMALL {
            len
        } else if len < GRAIN {
            len.next_multiple_of(SMALL)
        } else {
            len.next_multiple_of(GRAIN)
        };
        // A read under 1 MiB takes at most twice its size while there is room, so that the
        // many small blobs in flight on a distant link do not each sit on a chunk-sized
        // buffer; a larger one may take any idle buffer that fits.
        let most = if len < GRAIN { 2 * size } else { usize::MAX };
        let mut inner = self.inner.lock().expect("not poisoned");
        let buf = loop {
            if len < SMALL {
                if inner.live_bytes + inner.idle_bytes + size <= self.cap {
                    break vec![0u8; size];
                }
            } else {
                // Reusing beats a fresh buffer, even a larger idle one: it is already counted
                // under the cap, while a fresh one costs page faults and zeroing on first
                // touch (a blob's last piece is rarely a whole chunk; every odd size was a new
                // mapping, about 5 % of a push's CPU in `perf`). At the cap, any idle buffer
                // that fits is taken rather than freeing it to map a new one (a slow registry
                // keeps the pool at its cap: that churn faulted in 250k pages in one push).
                let room = inner.live_bytes + inner.idle_bytes + size <= self.cap;
                let most = if room { most } else { usize::MAX };
                if let Some(buf) = inner.take_idle(size, most) {
                    break buf;
                }
                if room {
                    break vec![0u8; size];
                }
            }
            if inner.idle.is_empty() {
                // buffers in use are released by the uploads, never by the reader
                inner = self.freed.wait(inner).expect("not poisoned");
            } else {
                inner.drop_oldest_idle();
            }
        };
        inner.live_bytes += buf.len();
        Filling {
            buf,
            pool: self.clone(),
        }
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.live_bytes -= buf.len();
        if buf.len() >= SMALL {
            inner.idle_bytes += buf.len();
            inner.idle.push(buf);
            while inner.idle_bytes > self.keep_bytes {
                inner.drop_oldest_idle();
            }
        }
        drop(inner);
        self.freed.notify_all();
    }
}

/// A buffer being filled by the reader.
pub(super) struct Filling {
    pub buf: Vec<u8>,
    pool: Arc<Pool>,
}

impl Filling {
    /// The first `len` bytes, shared; the buffer returns to the pool when the last clone goes.
    pub fn freeze(mut self, len: usize) -> Bytes {
        Bytes::from_owner(Pooled {
            buf: std::mem::take(&mut self.buf),
            len,
            pool: self.pool.clone(),
        })
    }
}

/// A buffer given up unfilled (a read error, a blob shorter than said) goes back too, or the
/// pool would count it in use for ever and the reader could end up waiting for it.
impl Drop for Filling {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.pool.give_back(std::mem::take(&mut self.buf));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(pool: &Pool) -> (usize, usize) {
        let inner = pool.inner.lock().unwrap();
        (inner.live_bytes, inner.idle_bytes)
    }

    #[test]
    fn idle_buffers_are_freed_before_the_cap_is_passed() {
        let pool = Pool::new(8 << 20, 24 << 20);
        let a = pool.take(4 << 20).freeze(4 << 20);
        let b = pool.take(4 << 20).freeze(4 << 20);
        drop((a, b)); // 8 MiB idle, too small for the next buffers
        let c = pool.take(8 << 20).freeze(8 << 20);
        let d = pool.take(8 << 20).freeze(8 << 20);
        assert_eq!(
            bytes(&pool),
            (16 << 20, 8 << 20),
            "under the cap: idle ones kept"
        );
        let e = pool.take(8 << 20).freeze(8 << 20);
        assert_eq!(
            bytes(&pool),
            (24 << 20, 0),
            "both idle buffers freed to stay within 24 MiB"
        );
        drop((c, d, e));
    }

    #[test]
    fn larger_idle_buffers_are_reused_and_small_reads_take_at_most_twice_their_size() {
        let pool = Pool::new(8 << 20, 48 << 20);
        let a = pool.take(8 << 20).freeze(8 << 20);
        let b = pool.take(2 << 20).freeze(2 << 20);
        drop((a, b));
        assert_eq!(bytes(&pool), (0, 10 << 20));
        // a blob's 3 MiB last piece goes into the idle 8 MiB chunk: no fresh mapping
        let tail = pool.take(3 << 20).freeze(3 << 20);
        assert_eq!(bytes(&pool), (8 << 20, 2 << 20));
        // a 300 KiB blob does not sit on the 2 MiB one: a buffer of its own, 320 KiB
        let small = pool.take(300 << 10).freeze(300 << 10);
        assert_eq!(bytes(&pool), ((8 << 20) + (320 << 10), 2 << 20));
        drop(small);
        // ... which the next blob of that size class reuses
        let again = pool.take(290 << 10).freeze(290 << 10);
        assert_eq!(bytes(&pool), ((8 << 20) + (320 << 10), 2 << 20));
        // under 64 KiB: the heap, not pooled
        let tiny = pool.take(1000).freeze(1000);
        drop(tiny);
        assert_eq!(bytes(&pool), ((8 << 20) + (320 << 10), 2 << 20));
        drop((tail, again));
    }

    #[test]
    fn at_the_cap_idle_buffers_are_reused_rather_than_freed_and_mapped_anew() {
        let pool = Pool::new(8 << 20, 16 << 20);
        let a = pool.take(8 << 20).freeze(8 << 20);
        let first = a.as_ptr() as usize;
        let b = pool.take(8 << 20).freeze(8 << 20);
        let p = pool.clone();
        let reader = std::thread::spawn(move || {
            let next = p.take(8 << 20);
            next.buf.as_ptr() as usize
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(a);
        let got = reader.join().unwrap();
        assert_eq!(
            got, first,
            "the waiting reader got the buffer that came back"
        );
        drop(b);
        // at the cap, a small read takes an idle chunk rather than freeing it
        let c = pool.take(8 << 20).freeze(8 << 20);
        let _d = pool.take(8 << 20).freeze(8 << 20);
        drop(c);
        let small = pool.take(100 << 10).freeze(100 << 10);
        assert_eq!(bytes(&pool), (16 << 20, 0));
        drop(small);
    }

    #[test]
    fn the_reader_waits_for_buffers_in_use_and_goes_on_when_they_return() {
        let pool = Pool::new(1 << 20, 2 << 20);
        let held = pool.take(2 << 20).freeze(2 << 20);
        let (tx, rx) = std::sync::mpsc::channel();
        let p = pool.clone();
        let reader = std::thread::spawn(move || {
            let next = p.take(1 << 20);
            tx.send(()).unwrap();
            drop(next);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "over the cap: the reader waits");
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the reader goes on once the buffer is back");
        reader.join().unwrap();
    }
}
