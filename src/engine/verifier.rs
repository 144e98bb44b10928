//! The check of every blob's SHA-256 and size, on a thread of its own: the package reader
//! hands each chunk to it (a shared `Bytes`, no copy) as it hands it to the uploads, so that
//! inflating and hashing run on two cores instead of one. The verdict (`Done` with the
//! [`Verified`](crate::oci::Verified) proof when digest and size match, else `Fail`) goes to the blob's channel after every chunk of it, and an upload
//! is committed only on `Done`, as before.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::stream::Msg;
use crate::oci::{Check, Digest};

/// Chunks the reader may be ahead of the hashing (each up to a chunk in size, shared).
const QUEUE: usize = 2;

enum Work {
    Begin {
        digest: Digest,
        size: u64,
        verdict_to: mpsc::Sender<Msg>,
    },
    Chunk(Bytes),
    /// The reader is done with the blob (a short blob is found short by the check).
    End,
    /// The reader gave up on the blob (read error, or no upload listens): no verdict.
    Abandon,
}

pub(super) struct Verifier {
    tx: SyncSender<Work>,
    thread: JoinHandle<()>,
}

impl Verifier {
    pub fn start() -> Verifier {
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("ferry-verify".into())
            .spawn(move || run(rx))
            .expect("a thread can be started");
        Verifier { tx, thread }
    }

    pub fn begin(&self, digest: &Digest, size: u64, verdict_to: mpsc::Sender<Msg>) {
        let _ = self.tx.send(Work::Begin {
            digest: digest.clone(),
            size,
            verdict_to,
        });
    }

    pub fn chunk(&self, bytes: Bytes) {
        let _ = self.tx.send(Work::Chunk(bytes));
    }

    pub fn end(&self) {
        let _ = self.tx.send(Work::End);
    }

    pub fn abandon(&self) {
        let _ = self.tx.send(Work::Abandon);
    }

    pub fn finish(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

fn run(rx: Receiver<Work>) {
    let mut current: Option<(Check, mpsc::Sender<Msg>)> = None;
    for work in rx {
        match work {
            Work::Begin {
                digest,
                size,
                verdict_to,
            } => current = Some((Check::new(&digest, size), verdict_to)),
            Work::Chunk(b) => {
                if let Some((check, _)) = current.as_mut() {
                    check.update(&b);
                }
            }
            Work::End => {
                if let Some((check, to)) = current.take() {
                    let verdict = match check.finish() {
                        Ok(v) => Msg::Done(v),
                        Err(e) => Msg::Fail(e),
                    };
                    let _ = to.blocking_send(verdict);
                }
            }
            Work::Abandon => current = None,
        }
    }
}
