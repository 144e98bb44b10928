//! Where each blob must go, decided blob by blob while the surveys run, so that the first
//! streaming pass need not wait for every HEAD of every destination: on a distant link the
//! survey of a package of thousands of blobs is a good part of a second, and the reader can
//! be sending the first blobs meanwhile. The reader meets each blob in archive order and
//! waits here only for that blob's decision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

use super::stream::Target;
use crate::oci::Digest;
use crate::source::Flow;

pub struct Gate {
    /// The digests in the order the surveys decide them (image order).
    order: Vec<Digest>,
    slots: HashMap<Digest, Slot>,
    /// Blobs the reader may still have to send: not reached yet, and not decided to go
    /// nowhere. At zero the rest of the package need not be read.
    open: AtomicUsize,
    /// Blobs not decided yet; `all_decided` turns true at zero.
    undecided: AtomicUsize,
    all_decided: watch::Sender<bool>,
}

struct Slot {
    /// Reached by the reader, or decided to go nowhere.
    closed: AtomicBool,
    /// Per destination: has it decided this blob yet; and the targets so far.
    pending: Mutex<(Vec<bool>, Vec<Target>)>,
    decided: watch::Sender<Option<Vec<Target>>>,
}

impl Gate {
    /// A gate for `digests` (in the order the surveys go), each decided once by every one of
    /// `dests` destinations.
    pub fn new(order: Vec<Digest>, dests: usize) -> Gate {
        let slots: HashMap<Digest, Slot> = order
            .iter()
            .cloned()
            .map(|d| {
                let slot = Slot {
                    closed: AtomicBool::new(false),
                    pending: Mutex::new((vec![false; dests], Vec::new())),
                    decided: watch::channel(None).0,
                };
                (d, slot)
            })
            .collect();
        let n = slots.len();
        Gate {
            order,
            slots,
            open: AtomicUsize::new(n),
            undecided: AtomicUsize::new(n),
            all_decided: watch::channel(n == 0).0,
        }
    }

    /// In the order the surveys decide them: the order to read them in, where a source can.
    pub fn digests(&self) -> impl Iterator<Item = &Digest> {
        self.order.iter()
    }

    /// Destination `dest` wants `digest` uploaded to `targets` (possibly none). A blob is
    /// decided once every destination has said.
    pub fn decide(&self, digest: &Digest, dest: usize, targets: impl IntoIterator<Item = Target>) {
        let Some(slot) = self.slots.get(digest) else {
            return;
        };
        let mut pending = slot.pending.lock().expect("gate lock");
        let (said, so_far) = &mut *pending;
        if std::mem::replace(&mut said[dest], true) {
            return;
        }
        so_far.extend(targets);
        if said.iter().all(|s| *s) {
            if so_far.is_empty() {
                self.close(slot);
            }
            slot.decided.send_replace(Some(std::mem::take(so_far)));
            if self.undecided.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.all_decided.send_replace(true);
            }
        }
    }

    /// Once every blob is decided (the surveys are done).
    pub async fn settled(&self) {
        let mut rx = self.all_decided.subscribe();
        // the sender lives as long as the gate
        let _ = rx.wait_for(|done| *done).await;
    }

    fn close(&self, slot: &Slot) {
        if !slot.closed.swap(true, Ordering::SeqCst) {
            self.open.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The reader met `digest` (it sends it, or skips it).
    pub fn reached(&self, digest: &Digest) {
        if let Some(slot) = self.slots.get(digest) {
            self.close(slot);
        }
    }

    /// Whether the reader must go on: some blob not reached yet may still have to go.
    pub fn flow(&self) -> Flow {
        if self.open.load(Ordering::SeqCst) == 0 {
            Flow::Enough
        } else {
            Flow::More
        }
    }

    /// Destination `dest` is done: whatever it did not decide, it wants nowhere.
    pub fn finish(&self, dest: usize) {
        for digest in self.slots.keys() {
            self.decide(digest, dest, None);
        }
    }

    /// Where `digest` must go, once decided; a digest not in the gate goes nowhere.
    pub async fn targets(&self, digest: &Digest) -> Vec<Target> {
        let Some(slot) = self.slots.get(digest) else {
            return Vec::new();
        };
        let mut rx = slot.decided.subscribe();
        let decided = rx.wait_for(|d| d.is_some()).await;
        match decided {
            Ok(d) => d.clone().unwrap_or_default(),
            // the sender lives as long as the gate: not reached while we hold `self`
            Err(_) => Vec::new(),
        }
    }
}
