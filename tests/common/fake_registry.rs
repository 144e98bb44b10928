//! An in-process registry behind `RegistryApi`, for testing the engine without a server. It
//! keeps what a real registry would refuse refused: a commit whose bytes do not hash to the
//! digest, a manifest whose blobs (or child manifests) are not in its repository. It logs
//! every commit and manifest in order, so tests can check the engine's ordering rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;

use ferry::error::{Error, ErrorKind, Result};
use ferry::oci::{Digest, Verified};
use ferry::sink::{
    BodyStream, Counters, MountOutcome, RegistryApi, RetryPolicy, UploadError, UploadSession,
};

#[derive(Default, Clone, Copy)]
pub struct Behaviour {
    /// Answer the first chunk of every session as registries without chunked uploads do.
    pub refuse_chunks: bool,
    /// Decline every cross-repository mount.
    pub decline_mounts: bool,
    /// Answer every blob HEAD only after this long, as a distant registry does.
    pub head_delay: Option<std::time::Duration>,
    /// Commit uploads into this repository only after this long (a slow blob).
    pub slow_commits: Option<(&'static str, std::time::Duration)>,
    /// Answer every tag HEAD only after this long.
    pub tag_delay: Option<std::time::Duration>,
    /// Refuse (for good) every commit of an upload into this repository.
    pub refuse_commits: Option<&'static str>,
    /// Fail (transiently) the first this many commits of uploads into this repository.
    pub flaky_commits: Option<(&'static str, u64)>,
    /// Fail every tag HEAD (after `tag_delay`, if any).
    pub fail_tags: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Blob { repo: String, digest: Digest },
    Manifest { repo: String, reference: String },
}

#[derive(Default)]
pub struct Store {
    pub blobs: HashMap<(String, Digest), Bytes>,
    /// (repo, tag or digest) → manifest bytes
    pub manifests: HashMap<(String, String), Bytes>,
    pub log: Vec<Event>,
    pub chunks: u64,
    pub mounts: u64,
    /// Blob HEADs answered so far, and how many had been when the first upload was committed.
    pub heads_answered: u64,
    pub heads_before_first_upload: Option<u64>,
    /// Tag HEADs answered so far, and how many had been when the first upload was committed.
    pub tags_answered: u64,
    pub tags_before_first_upload: Option<u64>,
    /// Commits failed as `flaky_commits` says.
    pub flaky_failed: u64,
    sessions: HashMap<String, Vec<u8>>,
    next_session: u64,
}

pub struct FakeRegistry {
    behaviour: Behaviour,
    counters: Arc<Counters>,
    retry: RetryPolicy,
    pub store: Mutex<Store>,
}

impl FakeRegistry {
    /// Takes an upload session's bytes as the blob, if they hash to its digest.
    fn commit(
        &self,
        repo: &str,
        verified: &Verified,
        session: &UploadSession,
        tail: Bytes,
    ) -> Result<()> {
        let mut store = self.store.lock().unwrap();
        let mut data = store
            .sessions
            .remove(&session.location)
            .ok_or_else(|| refused(format!("upload session {} unknown", session.location)))?;
        data.extend_from_slice(&tail);
        let digest = verified.digest().clone();
        if Digest::of(&data) != digest {
            return Err(refused(format!("DIGEST_INVALID: {digest}")));
        }
        store
            .blobs
            .insert((repo.to_string(), digest.clone()), Bytes::from(data));
        if store.heads_before_first_upload.is_none() {
            store.heads_before_first_upload = Some(store.heads_answered);
            store.tags_before_first_upload = Some(store.tags_answered);
        }
        store.log.push(Event::Blob {
            repo: repo.to_string(),
            digest,
        });
        Ok(())
    }

    pub fn new(behaviour: Behaviour) -> Arc<Self> {
        Arc::new(FakeRegistry {
            behaviour,
            counters: Arc::default(),
            retry: RetryPolicy::default(),
            store: Mutex::default(),
        })
    }

    fn session_data<'s>(store: &'s mut Store, location: &str) -> Result<&'s mut Vec<u8>> {
        store
            .sessions
            .get_mut(location)
            .ok_or_else(|| refused(format!("upload session {location} unknown")))
    }
}

fn refused(message: String) -> Error {
    Error::new(ErrorKind::Registry, format!("fake registry: {message}"))
}

/// The digests a manifest (or index) needs in its repository first.
pub fn references(bytes: &[u8]) -> Vec<Digest> {
    let doc: serde_json::Value = serde_json::from_slice(bytes).expect("manifest is JSON");
    let mut out = Vec::new();
    let listed = doc["manifests"]
        .as_array()
        .into_iter()
        .chain(doc["layers"].as_array())
        .flatten()
        .chain(doc.get("config"));
    for d in listed {
        out.push(Digest::parse(d["digest"].as_str().expect("digest")).expect("valid"));
    }
    out
}

impl RegistryApi for FakeRegistry {
    fn host(&self) -> &str {
        "fake.invalid"
    }

    fn label(&self) -> String {
        "fake.invalid".into()
    }

    fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    fn check(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn manifest_digest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        let delay = self.behaviour.tag_delay;
        Box::pin(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            if self.behaviour.fail_tags {
                return Err(refused("HTTP 500 on a tag HEAD".into()));
            }
            let mut store = self.store.lock().unwrap();
            store.tags_answered += 1;
            let found = store
                .manifests
                .get(&(repo.to_string(), reference.to_string()))
                .map(|b| Digest::of(b).to_string());
            Ok(found)
        })
    }

    fn blob_present<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
        size: u64,
    ) -> BoxFuture<'a, Result<bool>> {
        let delay = self.behaviour.head_delay;
        Box::pin(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let mut store = self.store.lock().unwrap();
            store.heads_answered += 1;
            match store.blobs.get(&(repo.to_string(), digest.clone())) {
                Some(b) if b.len() as u64 != size => Err(Error::integrity("size differs")),
                found => Ok(found.is_some()),
            }
        })
    }

    fn mount<'a>(
        &'a self,
        repo: &'a str,
        from: &'a str,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<MountOutcome>> {
        let mut store = self.store.lock().unwrap();
        let held = store
            .blobs
            .get(&(from.to_string(), digest.clone()))
            .cloned();
        let r = match held {
            Some(bytes) if !self.behaviour.decline_mounts => {
                store.mounts += 1;
                store
                    .blobs
                    .insert((repo.to_string(), digest.clone()), bytes);
                store.log.push(Event::Blob {
                    repo: repo.to_string(),
                    digest: digest.clone(),
                });
                MountOutcome::Mounted
            }
            _ => MountOutcome::Declined,
        };
        Box::pin(async move { Ok(r) })
    }

    fn begin_upload<'a>(
        &'a self,
        _repo: &'a str,
        _digest: &'a Digest,
    ) -> BoxFuture<'a, Result<UploadSession>> {
        let mut store = self.store.lock().unwrap();
        store.next_session += 1;
        let location = format!("fake://session/{}", store.next_session);
        store.sessions.insert(location.clone(), Vec::new());
        Box::pin(async move {
            Ok(UploadSession {
                location,
                offset: 0,
            })
        })
    }

    fn upload_status<'a>(
        &'a self,
        _repo: &'a str,
        session: &'a UploadSession,
    ) -> BoxFuture<'a, Result<Option<UploadSession>>> {
        let store = self.store.lock().unwrap();
        let r = store
            .sessions
            .get(&session.location)
            .map(|d| UploadSession {
                location: session.location.clone(),
                offset: d.len() as u64,
            });
        Box::pin(async move { Ok(r) })
    }

    fn upload_chunk<'a>(
        &'a self,
        _repo: &'a str,
        _digest: &'a Digest,
        session: &'a mut UploadSession,
        chunk: Bytes,
    ) -> BoxFuture<'a, std::result::Result<(), UploadError>> {
        let r = (|| {
            if self.behaviour.refuse_chunks && session.offset == 0 {
                return Err(UploadError::ChunksRefused(refused(
                    "HTTP 416: no Content-Range uploads here".into(),
                )));
            }
            let mut store = self.store.lock().unwrap();
            store.chunks += 1;
            let data = FakeRegistry::session_data(&mut store, &session.location)?;
            if data.len() as u64 != session.offset {
                return Err(refused("chunk at the wrong offset".into()).into());
            }
            data.extend_from_slice(&chunk);
            session.offset += chunk.len() as u64;
            Ok(())
        })();
        Box::pin(async move { r })
    }

    fn upload_stream<'a>(
        &'a self,
        _repo: &'a str,
        _digest: &'a Digest,
        session: &'a mut UploadSession,
        mut body: BodyStream,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut got = Vec::new();
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| refused(format!("request aborted: {e}")))?;
                got.extend_from_slice(&piece);
            }
            let mut store = self.store.lock().unwrap();
            FakeRegistry::session_data(&mut store, &session.location)?.extend(got);
            Ok(())
        })
    }

    fn finish_upload<'a>(
        &'a self,
        repo: &'a str,
        verified: &'a Verified,
        session: &'a UploadSession,
        tail: Bytes,
    ) -> BoxFuture<'a, Result<()>> {
        let delay = match self.behaviour.slow_commits {
            Some((slow, delay)) if slow == repo => Some(delay),
            _ => None,
        };
        let refuse = self.behaviour.refuse_commits == Some(repo);
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if refuse {
                return Err(refused(format!("commit into {repo} refused")));
            }
            if let Some((flaky, n)) = self.behaviour.flaky_commits {
                let mut store = self.store.lock().unwrap();
                if flaky == repo && store.flaky_failed < n {
                    store.flaky_failed += 1;
                    store.sessions.remove(&session.location);
                    return Err(refused(format!("HTTP 503 on commit into {repo}")).retryable(true));
                }
            }
            self.commit(repo, verified, session, tail)
        })
    }

    fn cancel<'a>(
        &'a self,
        _repo: &'a str,
        session: &'a UploadSession,
    ) -> BoxFuture<'a, Result<()>> {
        self.store
            .lock()
            .unwrap()
            .sessions
            .remove(&session.location);
        Box::pin(async { Ok(()) })
    }

    fn put_manifest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
        _media_type: &'a str,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<()>> {
        let mut store = self.store.lock().unwrap();
        let key = |r: &str| (repo.to_string(), r.to_string());
        let r = (|| {
            for d in references(&bytes) {
                let there = store.blobs.contains_key(&(repo.to_string(), d.clone()))
                    || store.manifests.contains_key(&key(d.as_str()));
                if !there {
                    return Err(refused(format!("MANIFEST_BLOB_UNKNOWN: {d} in {repo}")));
                }
            }
            let digest = Digest::of(&bytes);
            store.manifests.insert(key(digest.as_str()), bytes.clone());
            store.manifests.insert(key(reference), bytes);
            store.log.push(Event::Manifest {
                repo: repo.to_string(),
                reference: reference.to_string(),
            });
            Ok(())
        })();
        Box::pin(async move { r })
    }
}
