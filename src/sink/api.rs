//! What the engine needs from a registry, as a trait: [`Registry`] speaks it over HTTP, and a
//! test can put an in-process fake behind it to check the engine's rules (every blob in and
//! verified before its manifest; mounts, retries, fallbacks) without a server.
//!
//! Contract of each call, whoever implements it:
//! * answers say what happened in types (`Ok(None)` for "not there", [`MountOutcome`],
//!   [`UploadError::ChunksRefused`]); an `Err` is a failure, `retryable` when another try may
//!   succeed;
//! * nothing is committed without a [`Verified`] proof for its digest;
//! * errors name the registry, the repository and the object.
//!
//! The futures are boxed so that the engine can hold registries as `Arc<dyn RegistryApi>`
//! (an allocation per request is nothing next to a round trip).

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::{Counters, MountOutcome, Registry, RetryPolicy, UploadError, UploadSession};
use crate::error::Result;
use crate::oci::{Digest, Verified};

/// A blob body streamed in one request; ends in an error to abort the request.
pub type BodyStream = BoxStream<'static, std::io::Result<Bytes>>;

pub trait RegistryApi: Send + Sync {
    /// `host[:port]`.
    fn host(&self) -> &str;
    /// `https://host[:port]` or `http://...`: where saved upload sessions may be resumed
    /// (a session saved over plain HTTP must never be continued by a TLS run, nor the
    /// reverse: the credentials would follow the scheme of the saved location).
    fn origin(&self) -> String {
        format!("https://{}", self.host())
    }
    /// `host[:port][/prefix]`, as reports name the destination.
    fn label(&self) -> String;
    /// Bytes sent, retries and requests, for progress and the report.
    fn counters(&self) -> &Arc<Counters>;
    fn retry_policy(&self) -> &RetryPolicy;

    /// Whether the registry answers and accepts our credentials.
    fn check(&self) -> BoxFuture<'_, Result<()>>;
    /// The digest `repo:reference` points at, `None` when absent.
    fn manifest_digest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>>;
    /// Whether `repo` holds the blob (an error when it holds it with another size).
    fn blob_present<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
        size: u64,
    ) -> BoxFuture<'a, Result<bool>>;
    fn mount<'a>(
        &'a self,
        repo: &'a str,
        from: &'a str,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<MountOutcome>>;
    fn begin_upload<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<UploadSession>>;
    /// Where a session stands (`None`: unknown or expired).
    fn upload_status<'a>(
        &'a self,
        repo: &'a str,
        session: &'a UploadSession,
    ) -> BoxFuture<'a, Result<Option<UploadSession>>>;
    /// One chunk at the session's offset; the session moves on when it is taken.
    fn upload_chunk<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
        session: &'a mut UploadSession,
        chunk: Bytes,
    ) -> BoxFuture<'a, std::result::Result<(), UploadError>>;
    /// The whole blob in one streamed request (for registries that refuse chunks).
    fn upload_stream<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
        session: &'a mut UploadSession,
        body: BodyStream,
    ) -> BoxFuture<'a, Result<()>>;
    /// Commits the session with its last bytes (possibly none).
    fn finish_upload<'a>(
        &'a self,
        repo: &'a str,
        verified: &'a Verified,
        session: &'a UploadSession,
        tail: Bytes,
    ) -> BoxFuture<'a, Result<()>>;
    /// Best effort; failures are ignored by callers.
    fn cancel<'a>(&'a self, repo: &'a str, session: &'a UploadSession)
        -> BoxFuture<'a, Result<()>>;
    fn put_manifest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
        media_type: &'a str,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<()>>;

    /// A whole, verified blob held in memory: begin, commit, and cancel what a failed commit
    /// left behind.
    fn upload_whole<'a>(
        &'a self,
        repo: &'a str,
        verified: &'a Verified,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let session = self.begin_upload(repo, verified.digest()).await?;
            let r = self.finish_upload(repo, verified, &session, bytes).await;
            if r.is_err() {
                let _ = self.cancel(repo, &session).await;
            }
            r
        })
    }
}

impl RegistryApi for Registry {
    fn host(&self) -> &str {
        &self.host
    }

    fn origin(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }

    fn label(&self) -> String {
        Registry::label(self)
    }

    fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    fn retry_policy(&self) -> &RetryPolicy {
        Registry::retry_policy(self)
    }

    fn check(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Registry::check(self))
    }

    fn manifest_digest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(Registry::manifest_digest(self, repo, reference))
    }

    fn blob_present<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
        size: u64,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Registry::blob_present(self, repo, digest, size))
    }

    fn mount<'a>(
        &'a self,
        repo: &'a str,
        from: &'a str,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<MountOutcome>> {
        Box::pin(Registry::mount(self, repo, from, digest))
    }

    fn begin_upload<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<UploadSession>> {
        Box::pin(Registry::begin_upload(self, repo, digest))
    }

    fn upload_status<'a>(
        &'a self,
        repo: &'a str,
        session: &'a UploadSession,
    ) -> BoxFuture<'a, Result<Option<UploadSession>>> {
        Box::pin(Registry::upload_status(self, repo, session))
    }

    fn upload_chunk<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
        session: &'a mut UploadSession,
        chunk: Bytes,
    ) -> BoxFuture<'a, std::result::Result<(), UploadError>> {
        Box::pin(Registry::upload_chunk(self, repo, digest, session, chunk))
    }

    fn upload_stream<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
        session: &'a mut UploadSession,
        body: BodyStream,
    ) -> BoxFuture<'a, Result<()>> {
        let body = reqwest::Body::wrap_stream(body);
        Box::pin(Registry::upload_stream(self, repo, digest, session, body))
    }

    fn finish_upload<'a>(
        &'a self,
        repo: &'a str,
        verified: &'a Verified,
        session: &'a UploadSession,
        tail: Bytes,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Registry::finish_upload(self, repo, verified, session, tail))
    }

    fn cancel<'a>(
        &'a self,
        repo: &'a str,
        session: &'a UploadSession,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Registry::cancel(self, repo, session))
    }

    fn put_manifest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
        media_type: &'a str,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Registry::put_manifest(
            self, repo, reference, media_type, bytes,
        ))
    }
}
