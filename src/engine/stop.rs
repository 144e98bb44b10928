//! Stopping a run cleanly on SIGINT/SIGTERM.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// Asks a run to stop. On a first SIGINT/SIGTERM the engine starts no new upload (blobs
/// waiting for room are let go at once), lets those in flight finish, pushes the manifests of
/// complete images, and returns so that the summary can be printed. Which signal it was is
/// kept for the exit code (130 or 143). One per run, handed down; no process-wide state.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    token: CancellationToken,
    signal: Arc<AtomicI32>,
}

impl Stop {
    pub fn request(&self, signal: i32) {
        self.signal.store(signal, Ordering::SeqCst);
        self.token.cancel();
    }

    pub fn signal(&self) -> Option<i32> {
        Some(self.signal.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }

    pub fn requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when a stop is requested.
    pub async fn requested_wait(&self) {
        self.token.cancelled().await
    }
}

pub(crate) fn interrupted() -> Error {
    Error::new(
        crate::error::ErrorKind::Interrupted,
        "interrupted before this was sent; run the same command again to continue",
    )
}
