//! Upload sessions opened beside the first blob HEADs of a package, one round trip earlier.
//!
//! An upload starts with a `POST` that opens its session (Distribution ignores a blob sent
//! with that `POST`), and that `POST` used to wait for the blob's HEAD: on a distant link the
//! first data then left two round trips after the HEADs, with the link idle meanwhile. For
//! the first blobs of a package (about one round trip of a fast link's data,
//! [`AHEAD_BYTES`]) the session is opened with the HEAD instead, so that their data leaves as
//! soon as the HEAD says the blob is missing, and the link is busy while the later blobs'
//! sessions open.
//!
//! The `POST` asks to mount the blob from the very repository it goes to
//! (`?mount=<digest>&from=<repo>`): a registry holding the blob there answers "mounted" and
//! opens nothing, so a re-push leaves no session behind; one that does not opens the session.
//! The answer never decides what is pushed: the HEAD does. A session the plan does not use
//! (the blob was there, or is mounted from elsewhere) is cancelled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::error::Result;
use crate::oci::{Digest, Verified};
use crate::sink::{RegistryApi, UploadSession};

/// Bytes of blobs, in survey order, whose sessions are opened with their HEADs: 5 MB is one
/// 40 ms round trip at 1 Gbit/s. A few more cost a `POST` and a `DELETE` each when the blobs
/// turn out to be there.
pub const AHEAD_BYTES: u64 = 8 << 20;
/// And at most this many sessions (many tiny blobs).
pub const AHEAD_SESSIONS: usize = 32;

type Opening = JoinHandle<Result<Option<UploadSession>>>;

/// The sessions opened ahead for one destination, by (repository, blob).
pub struct OpenedAhead {
    registry: Arc<dyn RegistryApi>,
    opening: Mutex<HashMap<(String, Digest), Opening>>,
}

impl OpenedAhead {
    pub fn new(registry: Arc<dyn RegistryApi>) -> Self {
        OpenedAhead {
            registry,
            opening: Mutex::new(HashMap::new()),
        }
    }

    /// Starts opening a session for `digest` in `repo` (once per pair).
    pub fn open(&self, repo: &str, digest: &Digest) {
        let mut opening = self.opening.lock().expect("not poisoned");
        let key = (repo.to_string(), digest.clone());
        if opening.contains_key(&key) {
            return;
        }
        let registry = self.registry.clone();
        let (r, d) = key.clone();
        opening.insert(
            key,
            tokio::spawn(async move { registry.open_session(&r, &d).await }),
        );
    }

    /// The session opened ahead for this upload, if one was and it opened.
    pub async fn take(&self, repo: &str, digest: &Digest) -> Option<UploadSession> {
        let handle = self
            .opening
            .lock()
            .expect("not poisoned")
            .remove(&(repo.to_string(), digest.clone()))?;
        match handle.await {
            Ok(Ok(session)) => session,
            // the upload opens its own, the usual way (and says what fails, if it does)
            Ok(Err(e)) => {
                tracing::debug!(%digest, repo, error = %e, "session opened ahead failed; opening another");
                None
            }
            Err(_) => None,
        }
    }

    /// A whole blob held in memory, in the session opened ahead for it if there is one.
    pub async fn upload_whole(
        &self,
        repo: &str,
        verified: &Verified,
        bytes: bytes::Bytes,
    ) -> Result<()> {
        match self.take(repo, verified.digest()).await {
            Some(session) => {
                self.registry
                    .commit_whole(repo, verified, bytes, session)
                    .await
            }
            None => self.registry.upload_whole(repo, verified, bytes).await,
        }
    }

    /// Cancels the session opened for a pair the plan does not upload.
    pub fn discard(&self, repo: &str, digest: &Digest) -> Option<JoinHandle<()>> {
        let handle = self
            .opening
            .lock()
            .expect("not poisoned")
            .remove(&(repo.to_string(), digest.clone()))?;
        let registry = self.registry.clone();
        let repo = repo.to_string();
        Some(tokio::spawn(async move {
            cancel(registry.as_ref(), &repo, handle).await
        }))
    }

    /// Cancels every session of `pairs` not taken (once a package's uploads are over). The
    /// caller waits for them after its manifests, not before: by then they are mostly done,
    /// and a run that ends right after its last package leaves none open.
    pub fn cancel_rest(
        &self,
        pairs: impl IntoIterator<Item = (String, Digest)>,
    ) -> Vec<JoinHandle<()>> {
        pairs
            .into_iter()
            .filter_map(|(repo, digest)| self.discard(&repo, &digest))
            .collect()
    }
}

async fn cancel(registry: &dyn RegistryApi, repo: &str, handle: Opening) {
    if let Ok(Ok(Some(session))) = handle.await {
        // best effort: Distribution purges unfinished uploads after a week anyway
        let _ = registry.cancel(repo, &session).await;
    }
}
