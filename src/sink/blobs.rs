//! Blobs: presence (HEAD), cross-repository mounts, and uploads — whole in one request,
//! streamed, or in chunks that resume from the registry's committed offset — committed with
//! `PUT ?digest=` only after the caller's check said the bytes are right.
use super::transport::{transient, Access};
use super::*;

/// What a cross-repository mount came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountOutcome {
    Mounted,
    /// The registry (or our token's scope) would not mount: upload instead.
    Declined,
}

/// Why a chunk did not go up.
#[derive(Debug)]
pub enum UploadError {
    /// The registry does not take chunked uploads (`PATCH` with `Content-Range`): send whole
    /// blobs in one request instead.
    ChunksRefused(Error),
    Failed(Error),
}

impl From<Error> for UploadError {
    fn from(e: Error) -> Self {
        UploadError::Failed(e)
    }
}

impl From<UploadError> for Error {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::ChunksRefused(e) | UploadError::Failed(e) => e,
        }
    }
}

impl Registry {
    pub async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool> {
        Ok(self.head_blob(repo, digest).await?.is_some())
    }

    /// Is the blob there, with the size the package declares? A registry that holds the
    /// digest with another size means the package's descriptor is wrong: refused, naming both.
    pub async fn blob_present(&self, repo: &str, digest: &Digest, size: u64) -> Result<bool> {
        match self.head_blob(repo, digest).await? {
            Some(Some(held)) if held != size => Err(Error::integrity(format!(
                "registry {} holds blob {digest} in {repo} with {held} bytes, but the package \
                 declares {size}: the package's descriptor is wrong; replace the package",
                self.host
            ))),
            found => Ok(found.is_some()),
        }
    }

    /// HEAD of a blob: None when absent, else the `Content-Length` it announced (if any).
    pub(super) async fn head_blob(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<Option<u64>>> {
        let what = format!("checking blob {digest} in {repo}");
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let resp = self.send(Method::HEAD, url, None, repo, &what).await?;
        match resp.status() {
            StatusCode::OK => Ok(Some(
                resp.headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
            )),
            // storage drivers that serve blobs from elsewhere (S3, a CDN) redirect: the blob
            // is there (we never follow the redirect: it would carry our credentials away)
            s if s.is_redirection() => Ok(Some(None)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.status_error(s, &what, resp).await),
        }
    }

    /// Cross-repository mount. [`MountOutcome::Declined`] when the registry would not (it
    /// then opened an upload session, which we cancel: the caller uploads instead).
    pub async fn mount(&self, repo: &str, from: &str, digest: &Digest) -> Result<MountOutcome> {
        let what = format!("mounting blob {digest} from {from} into {repo}");
        let mut url = self.url(&format!("v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", &self.full_repo(from));
        let access = Access {
            repo,
            pull_from: Some(from),
            pull_only: false,
        };
        let sent = self
            .send_full(Method::POST, url, None, None, access, &what)
            .await;
        let bearer = matches!(*self.scheme.lock().await, Some(Scheme::Bearer(_)));
        let resp = match sent {
            // The token asks for pull on `from` too, but a token server grants only what the
            // account may do and drops the rest silently: the registry then says 401. The
            // blob is uploaded instead.
            Err(e) if e.kind == ErrorKind::Auth && bearer => {
                tracing::debug!(registry = %self.host, %digest, from, repo, "mount refused by the token's scope; uploading instead");
                return Ok(MountOutcome::Declined);
            }
            r => r?,
        };
        match resp.status() {
            StatusCode::CREATED => Ok(MountOutcome::Mounted),
            // not allowed to read `from` (a robot account scoped to one project): upload
            StatusCode::FORBIDDEN => Ok(MountOutcome::Declined),
            StatusCode::ACCEPTED => {
                if let Ok(loc) = self.location(&resp, &what) {
                    let _ = self
                        .cancel(
                            repo,
                            &UploadSession {
                                location: loc,
                                offset: 0,
                            },
                        )
                        .await;
                }
                Ok(MountOutcome::Declined)
            }
            s => Err(self.status_error(s, &what, resp).await),
        }
    }

    pub(super) fn location(&self, resp: &reqwest::Response, what: &str) -> Result<String> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Registry,
                    format!(
                        "registry {}: {what}: no Location header in the answer",
                        self.host
                    ),
                )
            })?;
        let abs = self.base.join(loc).map_err(|e| {
            Error::new(
                ErrorKind::Registry,
                format!("registry {}: {what}: bad Location header: {e}", self.host),
            )
        })?;
        // Our Authorization header goes wherever the upload continues: only to the registry
        // itself, never to a host its answer names.
        if abs.origin() != self.base.origin() {
            return Err(Error::new(
                ErrorKind::Registry,
                format!(
                    "registry {}: {what}: the upload location is on another origin ({}://{}): \
                     refused, our credentials would go there. Is a proxy rewriting Location \
                     headers? Push to the address the registry itself announces",
                    self.host,
                    abs.scheme(),
                    abs.host_str().unwrap_or("?")
                ),
            ));
        }
        Ok(abs.to_string())
    }

    /// Opens an upload session.
    pub async fn begin_upload(&self, repo: &str, digest: &Digest) -> Result<UploadSession> {
        let what = format!("starting upload of blob {digest} to {repo}");
        let url = self.url(&format!("v2/{repo}/blobs/uploads/"));
        let resp = self.send(Method::POST, url, None, repo, &what).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(resp.status(), &what, resp).await);
        }
        Ok(UploadSession {
            location: self.location(&resp, &what)?,
            offset: 0,
        })
    }

    /// A `PATCH` of blob bytes to an open upload session, authorized for `repo`.
    async fn patch(
        &self,
        client: &reqwest::Client,
        repo: &str,
        session: &UploadSession,
    ) -> Result<reqwest::RequestBuilder> {
        let auth = self.authorize(repo, false).await?;
        Ok(self
            .request(client, Method::PATCH, session.url()?, auth.as_deref())?
            .header(CONTENT_TYPE, "application/octet-stream"))
    }

    /// Sends `chunk` at the session's offset (`PATCH` with `Content-Range`). Not retried here:
    /// after a failure the caller asks [`Registry::upload_status`] where the session stands.
    /// A registry that refuses the first chunk of a session in a way that means "no chunks
    /// here" answers [`UploadError::ChunksRefused`]: the caller sends whole blobs instead.
    pub async fn upload_chunk(
        &self,
        repo: &str,
        digest: &Digest,
        session: &mut UploadSession,
        chunk: Bytes,
    ) -> std::result::Result<(), UploadError> {
        let what = format!(
            "uploading blob {digest} to {repo} (offset {})",
            session.offset
        );
        let len = chunk.len() as u64;
        let rb = self
            .patch(&self.upload_http, repo, session)
            .await?
            .header(CONTENT_LENGTH, len)
            .header(
                "Content-Range",
                format!("{}-{}", session.offset, session.offset + len - 1),
            );
        let resp = self.send_upload(rb, chunk, repo).await?;
        self.counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED => {
                session.location = self.location(&resp, &what)?;
                session.offset += len;
                Ok(())
            }
            s if session.offset == 0 && CHUNK_REFUSALS.contains(&s) => Err(
                UploadError::ChunksRefused(self.status_error(s, &what, resp).await),
            ),
            // 416: our offset and the registry's disagree; the caller asks where it stands
            // and continues from there.
            s if transient(s) || s == StatusCode::RANGE_NOT_SATISFIABLE => Err(self
                .status_error(s, &what, resp)
                .await
                .retryable(true)
                .into()),
            StatusCode::UNAUTHORIZED => {
                self.authorize(repo, true).await?;
                Err(self
                    .status_error(StatusCode::UNAUTHORIZED, &what, resp)
                    .await
                    .retryable(true)
                    .into())
            }
            s => Err(self.status_error(s, &what, resp).await.into()),
        }
    }

    /// Sends `body` with `rb`, giving up only when no byte has moved for `--timeout`: while
    /// the body goes out, progress is the body being taken by the connection; after it, the
    /// answer must start within `--timeout`.
    pub(super) async fn send_upload(
        &self,
        rb: reqwest::RequestBuilder,
        body: Bytes,
        repo: &str,
    ) -> Result<reqwest::Response> {
        use std::sync::atomic::AtomicU64;
        let started = std::time::Instant::now();
        let last = Arc::new(AtomicU64::new(0)); // ms since `started` of the last progress
        let seen = last.clone();
        const PIECE: usize = 64 * 1024;
        let pieces: Vec<Bytes> = (0..body.len())
            .step_by(PIECE)
            .map(|i| body.slice(i..(i + PIECE).min(body.len())))
            .collect();
        let stream = futures::stream::iter(pieces).map(move |p| {
            seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            Ok::<Bytes, std::io::Error>(p)
        });
        let send = rb.body(reqwest::Body::wrap_stream(stream)).send();
        tokio::pin!(send);
        // Once the whole body is handed to the connection, what sits in the kernel's buffers
        // still has to cross the link before an answer can come: allow for it at a floor
        // rate (128 KiB/s; slower links need a larger --timeout or smaller chunks).
        let drain = Duration::from_secs_f64(body.len() as f64 / (128.0 * 1024.0));
        let idle = self.idle_timeout;
        let allowed = idle + drain;
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let quiet = started.elapsed().saturating_sub(since);
            if quiet >= allowed {
                return Err(Error::new(
                    ErrorKind::Registry,
                    format!(
                        "registry {}: upload to {repo}: no answer {} s after the last byte was \
                         handed over (--timeout {} s, plus time for the bytes in flight)",
                        self.host,
                        allowed.as_secs(),
                        idle.as_secs()
                    ),
                )
                .retryable(true));
            }
            tokio::select! {
                r = &mut send => return r.map_err(|e| self.transport_error(e, repo)),
                _ = tokio::time::sleep(allowed - quiet) => {}
            }
        }
    }

    /// Sends a whole blob as one streamed `PATCH` (no `Content-Range`), for registries that
    /// refuse chunks. The body stream ends in an error when the blob fails verification,
    /// which aborts the request: the caller then cancels the session.
    pub async fn upload_stream(
        &self,
        repo: &str,
        digest: &Digest,
        session: &mut UploadSession,
        body: reqwest::Body,
    ) -> Result<()> {
        let what = format!("uploading blob {digest} to {repo} (one request)");
        let rb = self.patch(&self.http, repo, session).await?.body(body);
        let resp = rb.send().await.map_err(|e| self.transport_error(e, repo))?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED => {
                session.location = self.location(&resp, &what)?;
                Ok(())
            }
            s => Err(self
                .status_error(s, &what, resp)
                .await
                .retryable(transient(s))),
        }
    }

    /// Where an upload session stands: the number of bytes the registry holds, or `None`
    /// when the session is unknown or expired.
    pub async fn upload_status(
        &self,
        repo: &str,
        session: &UploadSession,
    ) -> Result<Option<UploadSession>> {
        let what = format!("checking an upload session in {repo}");
        let url = session.url()?;
        let resp = self.send(Method::GET, url, None, repo, &what).await?;
        match resp.status() {
            StatusCode::NO_CONTENT | StatusCode::OK => {
                let offset = resp
                    .headers()
                    .get("range")
                    .and_then(|v| v.to_str().ok())
                    .map(held_bytes)
                    .unwrap_or(0);
                let location = self
                    .location(&resp, &what)
                    .unwrap_or_else(|_| session.location.clone());
                Ok(Some(UploadSession { location, offset }))
            }
            _ => Ok(None),
        }
    }

    /// Commits an upload session: `PUT ?digest=` with the final bytes (possibly none). Only
    /// [`Verified`] bytes can be committed; the registry checks the digest again.
    pub async fn finish_upload(
        &self,
        repo: &str,
        verified: &Verified,
        session: &UploadSession,
        tail: Bytes,
    ) -> Result<()> {
        let digest = verified.digest();
        let what = format!("committing blob {digest} in {repo}");
        let mut url = session.url()?;
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let body = Body {
            bytes: tail,
            content_type: HeaderValue::from_static("application/octet-stream"),
        };
        let result = match self.send(Method::PUT, url, Some(body), repo, &what).await {
            Ok(resp) => match resp.status() {
                StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
                s => Err(self.status_error(s, &what, resp).await),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            // A commit whose answer was lost is retried and then refused (the session is
            // gone, 404) although the blob is in: ask before calling it failed.
            Err(e) => match self.blob_exists(repo, digest).await {
                Ok(true) => {
                    tracing::debug!(registry = %self.host, %digest, repo, error = %e, "commit reported failure but the blob is there");
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    /// Cancels an upload session (best effort; registries may refuse).
    pub async fn cancel(&self, repo: &str, session: &UploadSession) -> Result<()> {
        let url = session.url()?;
        let auth = self.authorize(repo, false).await?;
        let _ = self
            .send_once(Method::DELETE, url, auth.as_deref(), None, None, repo)
            .await;
        Ok(())
    }
}
