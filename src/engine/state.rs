//! Open upload sessions kept on disk, so that a re-run after a kill continues a large blob
//! from the offset the registry committed instead of from zero.
//!
//! One small JSON file per session under the state directory (`--state-dir`, else
//! `$XDG_STATE_HOME/ferry`, else `~/.local/state/ferry`), named after a hash of
//! (registry, repository, digest); written atomically (temp file + rename) after every
//! committed chunk and removed when the blob is complete.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::oci::Digest;
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

/// Saved sessions older than this are removed when a run starts: Distribution purges
/// unfinished uploads after 7 days by default, so an older session cannot be resumed anyway.
pub const PRUNE_AFTER: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

impl StateStore {
    /// A store under `dir`; `None` disables persistence (sessions live only in memory).
    pub fn new(dir: Option<PathBuf>) -> Self {
        let store = StateStore {
            dir,
            warned: Default::default(),
        };
        store.prune();
        store
    }

    pub fn default_dir() -> Option<PathBuf> {
        if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
            return Some(PathBuf::from(x).join("ferry"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/ferry"))
    }

    fn key(registry: &str, repo: &str, digest: &Digest) -> String {
        Digest::of(format!("{registry}\n{repo}\n{digest}").as_bytes())
            .short()
            .to_string()
    }

    /// The state directory, created 0700 if missing, and trusted only if it is ours and not
    /// writable by group or others (upload URLs in it are credentials of a sort: whoever can
    /// rewrite them can send our Authorization header elsewhere).
    fn trusted_dir(&self) -> Option<&Path> {
        let dir = self.dir.as_deref()?;
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            self.warn_once(dir, &e);
            return None;
        }
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() && owned_and_private(&m) => Some(dir),
            Ok(_) => {
                self.warn_untrusted(dir);
                None
            }
            Err(e) => {
                self.warn_once(dir, &e);
                None
            }
        }
    }

    fn warn_untrusted(&self, what: &Path) {
        if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                "state {} is not owned by this user or is writable by others: it is not used \
                 (no resume inside blobs this run). Fix its owner/mode (chmod 700) or give \
                 --state-dir",
                what.display()
            );
        }
    }

    fn warn_once(&self, dir: &Path, e: &std::io::Error) {
        tracing::debug!(path = %dir.display(), error = %e, "cannot save upload state");
        if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let why = if e.raw_os_error() == Some(libc::ENOSPC) {
                "the disk is full".to_string()
            } else {
                e.to_string()
            };
            tracing::warn!(
                "cannot save upload state in {} ({why}): the push goes on, but after an \
                 interruption large blobs start again. Free space there, or give --state-dir \
                 on another filesystem",
                dir.display()
            );
        }
    }

    /// Removes saved sessions older than [`PRUNE_AFTER`].
    fn prune(&self) {
        let Some(dir) = self.dir.as_deref() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("upload-") {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > PRUNE_AFTER);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The right to drive the upload session of one blob: an exclusive lock on its state file,
    /// so that two runs never resume the same session. When another run holds it, this run
    /// neither reads nor writes that state (it uploads in a session of its own).
    pub fn lease(&self, registry: &str, repo: &str, digest: &Digest) -> Lease {
        let mut lease = Lease {
            store: self.clone(),
            path: None,
            _lock: None,
            registry: registry.to_string(),
            repo: repo.to_string(),
            digest: digest.clone(),
        };
        let Some(dir) = self.trusted_dir() else {
            return lease;
        };
        let key = Self::key(registry, repo, digest);
        let lock_path = dir.join(format!("upload-{key}.lock"));
        let Ok(lock) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
        else {
            return lease;
        };
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            tracing::info!(%digest, repo, "another ferry run is uploading this blob; not resuming its session");
            return lease;
        }
        lease.path = Some(dir.join(format!("upload-{key}.json")));
        lease._lock = Some(lock);
        lease
    }
}

/// See [`StateStore::lease`]. Dropping it releases the lock.
pub struct Lease {
    store: StateStore,
    /// The state file, when this run holds the lock.
    path: Option<PathBuf>,
    _lock: Option<std::fs::File>,
    registry: String,
    repo: String,
    digest: Digest,
}

impl Lease {
    /// The saved session, if it is trustworthy: our own file, not writable by others, for
    /// this exact blob, and with an upload location on the same registry (host and port).
    pub fn load(&self) -> Option<UploadSession> {
        let p = self.path.as_ref()?;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)
            .ok()?;
        let m = f.metadata().ok()?;
        if !m.is_file() || !owned_and_private(&m) {
            self.store.warn_untrusted(p);
            return None;
        }
        let rec: Record = serde_json::from_reader(f).ok()?;
        let same_blob = rec.registry == self.registry
            && rec.repository == self.repo
            && rec.digest == self.digest;
        if !same_blob {
            return None;
        }
        if !same_origin(&rec.session.location, &self.registry) {
            tracing::warn!(
                "{}: the saved upload location is not on registry {}; ignored",
                p.display(),
                self.registry
            );
            return None;
        }
        Some(rec.session)
    }

    /// Best effort: a state directory that cannot be written only costs resumability. Written
    /// on the blocking pool: an fsync on a slow or busy disk would otherwise hold a runtime
    /// worker, and every upload and request on it, for as long as the disk takes.
    pub async fn save(&self, session: &UploadSession) {
        let Some(p) = self.path.clone() else {
            return;
        };
        let rec = Record {
            registry: self.registry.clone(),
            repository: self.repo.clone(),
            digest: self.digest.clone(),
            session: session.clone(),
        };
        let bytes = serde_json::to_vec(&rec).unwrap_or_default();
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = write_atomic(&p, &bytes) {
                store.warn_once(p.parent().unwrap_or(&p), &e);
            }
        })
        .await;
    }

    /// Forgets the session (and its lock file: nothing is left to resume).
    pub fn remove(&self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_file(p.with_extension("lock"));
        }
    }
}

fn owned_and_private(m: &std::fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    m.uid() == me && m.mode() & 0o022 == 0
}

/// Is `location` on `registry` (`https://host[:port]`, IPv6 bracketed)? Scheme, host and
/// port must all be the same (default ports made explicit), so that a session saved by a
/// plain-HTTP run is never continued, credentials and all, in clear by a TLS run.
fn same_origin(location: &str, registry: &str) -> bool {
    match (url::Url::parse(location), url::Url::parse(registry)) {
        (Ok(l), Ok(r)) => l.origin().is_tuple() && l.origin() == r.origin(),
        _ => false,
    }
}

/// Temp file created exclusively and without following symlinks (0600), then renamed over.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp); // ours from an earlier crash; unlink never follows
    let r = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()
    })();
    if let Err(e) = r {
        // a half-written file on a full disk would only take more space
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn session(loc: &str) -> UploadSession {
        UploadSession {
            location: loc.into(),
            offset: 42,
        }
    }

    #[tokio::test]
    async fn saves_loads_and_removes_privately() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = StateStore::new(Some(state.clone()));
        let d = Digest::of(b"x");
        let lease = store.lease("http://r:5000", "a", &d);
        assert!(lease.load().is_none());
        lease
            .save(&session("http://r:5000/v2/a/blobs/uploads/u1"))
            .await;
        assert_eq!(lease.load().unwrap().offset, 42);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        let file = std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .unwrap()
            .path();
        assert_eq!(mode(&file), 0o600);
        lease.remove();
        assert!(lease.load().is_none());
    }

    #[tokio::test]
    async fn foreign_locations_and_writable_files_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(Some(dir.path().join("s")));
        let d = Digest::of(b"y");
        let lease = store.lease("http://r:5000", "a", &d);
        lease
            .save(&session("https://evil.example.com/v2/a/blobs/uploads/u1"))
            .await;
        assert!(
            lease.load().is_none(),
            "a location on another host was used"
        );
        lease
            .save(&session("https://r:5000/v2/a/blobs/uploads/u1"))
            .await;
        assert!(
            lease.load().is_none(),
            "a location with another scheme was used"
        );
        lease
            .save(&session("http://r:5000/v2/a/blobs/uploads/u1"))
            .await;
        let file = std::fs::read_dir(dir.path().join("s"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .unwrap()
            .path();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            lease.load().is_none(),
            "a world-writable state file was trusted"
        );
        // a symlink where the temp file goes is not written through
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        lease
            .save(&session("http://r:5000/v2/a/blobs/uploads/u2"))
            .await;
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(lease.load().unwrap().location.ends_with("u2"));
    }

    #[tokio::test]
    async fn one_run_at_a_time_drives_a_session_and_old_state_is_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(Some(dir.path().to_path_buf()));
        let d = Digest::of(b"z");
        let first = store.lease("http://r", "a", &d);
        first.save(&session("http://r/v2/a/blobs/uploads/u1")).await;
        let second = store.lease("http://r", "a", &d);
        assert!(second.load().is_none(), "two leases on one session");
        drop(first);
        let third = store.lease("http://r", "a", &d);
        assert!(third.load().is_some());
        drop(third);
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .unwrap()
            .path();
        let old = std::time::SystemTime::now() - PRUNE_AFTER - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let _ = StateStore::new(Some(dir.path().to_path_buf()));
        assert!(!file.exists(), "a week-old session was kept");
    }

    #[test]
    fn origins() {
        assert!(same_origin("https://r:5000/v2/x?y", "https://r:5000"));
        assert!(same_origin("https://[::1]:5000/v2/x", "https://[::1]:5000"));
        assert!(same_origin("https://r/v2/x", "https://r"));
        assert!(same_origin("https://r:443/v2/x", "https://r"));
        assert!(!same_origin("https://r:5001/v2/x", "https://r:5000"));
        assert!(!same_origin("https://r:5001/v2/x", "https://r"));
        assert!(!same_origin("https://other/v2/x", "https://r"));
        assert!(!same_origin("http://r:5000/v2/x", "https://r:5000"));
        assert!(!same_origin("https://r:5000/v2/x", "http://r:5000"));
    }
}
