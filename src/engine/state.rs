//! Open upload sessions kept on disk, so that a re-run after a kill continues a large blob
//! from the offset the registry committed instead of from zero.
//!
//! One small JSON file per session under the state directory (`--state-dir`, else
//! `$XDG_STATE_HOME/ferry`, else `~/.local/state/ferry`), named after a hash of
//! (registry, repository, digest); written atomically (temp file + rename) after every
//! committed chunk and removed when the blob is complete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::sink::UploadSession;

#[derive(Debug, Clone)]
pub struct StateStore {
    dir: Option<PathBuf>,
    /// Set once the operator was told that state cannot be written (said once per run).
    warned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    registry: String,
    repository: String,
    digest: Digest,
    session: UploadSession,
}

impl StateStore {
    /// A store under `dir`; `None` disables persistence (sessions live only in memory).
    pub fn new(dir: Option<PathBuf>) -> Self {
        StateStore {
            dir,
            warned: Default::default(),
        }
    }

    pub fn default_dir() -> Option<PathBuf> {
        if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
            return Some(PathBuf::from(x).join("ferry"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/ferry"))
    }

    fn path(&self, registry: &str, repo: &str, digest: &Digest) -> Option<PathBuf> {
        let key = Digest::of(format!("{registry}\n{repo}\n{digest}").as_bytes());
        Some(
            self.dir
                .as_ref()?
                .join(format!("upload-{}.json", key.short())),
        )
    }

    pub fn load(&self, registry: &str, repo: &str, digest: &Digest) -> Option<UploadSession> {
        let p = self.path(registry, repo, digest)?;
        let rec: Record = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
        (rec.registry == registry && rec.repository == repo && &rec.digest == digest)
            .then_some(rec.session)
    }

    /// Best effort: a state directory that cannot be written only costs resumability.
    pub fn save(&self, registry: &str, repo: &str, digest: &Digest, session: &UploadSession) {
        let Some(p) = self.path(registry, repo, digest) else {
            return;
        };
        let rec = Record {
            registry: registry.into(),
            repository: repo.into(),
            digest: digest.clone(),
            session: session.clone(),
        };
        if let Err(e) = write_atomic(&p, &serde_json::to_vec(&rec).unwrap_or_default()) {
            tracing::debug!(path = %p.display(), error = %e, "cannot save upload state");
            if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                let dir = p.parent().unwrap_or(&p).display().to_string();
                let why = if e.raw_os_error() == Some(libc::ENOSPC) {
                    "the disk is full".to_string()
                } else {
                    e.to_string()
                };
                tracing::warn!(
                    "cannot save upload state in {dir} ({why}): the push goes on, but after an \
                     interruption large blobs start again. Free space there, or give --state-dir \
                     on another filesystem"
                );
            }
        }
    }

    pub fn remove(&self, registry: &str, repo: &str, digest: &Digest) {
        if let Some(p) = self.path(registry, repo, digest) {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("state files live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        // a half-written file on a full disk would only take more space
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(Some(dir.path().to_path_buf()));
        let d = Digest::of(b"x");
        let s = UploadSession {
            location: "http://r/v2/a/blobs/uploads/u1".into(),
            offset: 42,
        };
        assert!(store.load("r", "a", &d).is_none());
        store.save("r", "a", &d, &s);
        assert_eq!(store.load("r", "a", &d).unwrap().offset, 42);
        assert!(store.load("r", "b", &d).is_none());
        store.remove("r", "a", &d);
        assert!(store.load("r", "a", &d).is_none());
    }
}
