//! Registry sink: where bytes leave ferry. One [`Registry`] per destination registry speaks
//! the OCI distribution API: blob HEAD, cross-repository mount, monolithic and chunked
//! uploads (with upload-session status for resume), manifest HEAD and PUT.
//!
//! Every request goes through `Registry::send` (`transport.rs`), which adds authentication,
//! retries transient failures (see [`retry::RetryPolicy`]) and turns failures into errors that
//! name the registry, repository, object and HTTP status. Blobs are in `blobs.rs`, manifests
//! in `manifests.rs`; this file holds the registry's set-up, its checks and shared helpers.

mod api;
pub mod auth;
mod blobs;
mod manifests;
mod pull;
pub mod retry;
pub mod tls;
mod transport;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{
    HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use tokio::sync::Mutex;
use url::Url;

use futures::StreamExt;

use crate::error::{Error, ErrorKind, Result};
use crate::oci::{Digest, Verified};
pub use api::{BodyStream, RegistryApi};
pub use auth::{Challenge, Credentials, RealmHost, Scheme, Secret};
pub use blobs::{MountOutcome, UploadError};
pub use pull::{BlobBody, Pulled};
pub use retry::RetryPolicy;

#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// `host[:port]`.
    pub host: String,
    /// Repository prefix inside the registry (`--dest-repo host/prefix`): every repository
    /// goes under it, e.g. a Harbor project. Empty for none.
    pub prefix: String,
    /// Speak HTTP instead of HTTPS.
    pub plain_http: bool,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// Extra CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// More CA certificates (DER) to trust, e.g. the cluster CA of a kubeconfig, which issues
    /// the built-in registry's certificate.
    pub extra_roots: Vec<Vec<u8>>,
    pub credentials: Option<Credentials>,
    /// Where the credentials came from ("from Secret cpaas-system/registry-admin", ...), named
    /// when the registry refuses them.
    pub credential_origin: Option<String>,
    /// Hosts other than the registry's own whose token service may get the credentials
    /// (`--allow-token-realm`); see [`auth::realm_refusal`].
    pub token_realms: Vec<RealmHost>,
    pub retry: RetryPolicy,
    /// Longest wait for the registry to send anything (per read, not per request).
    pub timeout: Duration,
}

/// Bytes actually sent in request bodies (blob data and manifests), for the report.
#[derive(Default, Debug)]
pub struct Counters {
    pub bytes_sent: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
}

pub struct Registry {
    pub host: String,
    /// See [`RegistryOptions::prefix`]; applied where URLs, mount sources and token scopes
    /// are built, so callers always speak of the package's own repository names.
    prefix: String,
    base: Url,
    http: reqwest::Client,
    /// For chunk uploads, watched by [`Registry::send_upload`] (no reqwest read timeout).
    upload_http: reqwest::Client,
    /// --timeout: the longest time without a byte moving.
    idle_timeout: Duration,
    plain_http: bool,
    credentials: Option<Credentials>,
    credential_origin: Option<String>,
    scheme: Mutex<Option<Scheme>>,
    tokens: Mutex<HashMap<String, String>>,
    /// The token server refused our credentials: remembered, so that they are not tried again.
    token_refused: Mutex<Option<Error>>,
    /// See [`RegistryOptions::token_realms`].
    token_realms: Vec<RealmHost>,
    retry: RetryPolicy,
    pub counters: Arc<Counters>,
    /// [`Registry::check`] was called; its answer, once in.
    check_started: std::sync::atomic::AtomicBool,
    checked: tokio::sync::watch::Sender<Option<Result<()>>>,
}

/// Answers a registry check that was given up before it answered (see [`Registry::check`]).
struct Unanswered<'a>(&'a tokio::sync::watch::Sender<Option<Result<()>>>);

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        self.0.send_if_modified(|answer| {
            if answer.is_some() {
                return false;
            }
            *answer = Some(Err(Error::new(
                ErrorKind::Interrupted,
                "the registry check was given up (interrupted); nothing was sent after it",
            )));
            true
        });
    }
}

/// An open upload session: where to send the next bytes.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct UploadSession {
    pub location: String,
    /// Bytes the registry has committed so far.
    pub offset: u64,
}

impl UploadSession {
    /// The session's location (absolute, on the registry's own origin: see `location`).
    fn url(&self) -> Result<Url> {
        Url::parse(&self.location).map_err(|e| Error::internal(format!("upload location: {e}")))
    }
}

/// A request body that can be sent again on retry.
#[derive(Clone)]
struct Body {
    bytes: Bytes,
    content_type: HeaderValue,
}

/// Bytes of an error answer read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

impl Registry {
    pub fn new(opts: RegistryOptions) -> Result<Self> {
        let scheme = if opts.plain_http { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{}/", opts.host)).map_err(|e| {
            Error::new(
                ErrorKind::Unreachable,
                format!("registry {:?} is not host[:port]: {e}", opts.host),
            )
        })?;
        let http2 = tls::http2_wanted();
        let base_builder = || {
            let b = reqwest::Client::builder();
            // HTTP/1.1 also where reqwest builds the TLS itself (--insecure): see
            // `tls::http2_wanted`
            let b = if http2 { b } else { b.http1_only() };
            b.connect_timeout(Duration::from_secs(15))
                .pool_max_idle_per_host(128)
                .tcp_nodelay(true)
                .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
                // Redirects would carry our Authorization header to another host.
                .redirect(reqwest::redirect::Policy::none())
                .danger_accept_invalid_certs(opts.insecure)
        };
        // Small answers: --timeout is the longest silence on a read.
        let mut builder = base_builder().read_timeout(opts.timeout);
        // Chunk uploads: reqwest's read timeout would also run while a slow link is still
        // sending the body (no answer can come before it ends), so these requests have none;
        // `send_upload` watches progress instead: --timeout of no bytes moving, either way.
        let mut upload_builder = base_builder();
        // What to trust beyond the system roots: --ca-file, else the node's certs.d files for
        // this registry; plus roots handed in (a kubeconfig's cluster CA).
        let mut trusted: Vec<Vec<u8>> = Vec::new();
        if let Some(ca) = &opts.ca_file {
            trusted.extend(tls::read_pem(ca, "--ca-file")?);
            tracing::debug!(registry = %opts.host, "trusting --ca-file {}", ca.display());
        } else if !opts.plain_http {
            for f in tls::node_ca_files(&opts.host) {
                match tls::read_pem(&f, "CA file") {
                    Ok(certs) => {
                        tracing::debug!(registry = %opts.host, "trusting {} (found where docker/podman/containerd look for this registry)", f.display());
                        trusted.extend(certs);
                    }
                    Err(e) => tracing::warn!("{}", e.message),
                }
            }
        }
        trusted.extend(opts.extra_roots.iter().cloned());
        // One TLS setup for both clients, also for a plain-HTTP registry (its token service
        // may still be HTTPS): left to itself, reqwest reads the system roots again for every
        // client it builds. With --insecure nothing is verified, so no roots are read at all.
        if opts.insecure {
            builder = builder.tls_built_in_root_certs(false);
            upload_builder = upload_builder.tls_built_in_root_certs(false);
        } else {
            let config = tls::client_config(&trusted)?;
            builder = builder.use_preconfigured_tls(config.clone());
            upload_builder = upload_builder.use_preconfigured_tls(config);
        }
        let http = builder
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        let upload_http = upload_builder
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        Ok(Registry {
            host: opts.host,
            prefix: opts.prefix.trim_matches('/').to_string(),
            base,
            http,
            upload_http,
            idle_timeout: opts.timeout,
            plain_http: opts.plain_http,
            credentials: opts.credentials,
            credential_origin: opts.credential_origin,
            scheme: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            token_refused: Mutex::new(None),
            token_realms: opts.token_realms,
            retry: opts.retry,
            counters: Arc::new(Counters::default()),
            check_started: Default::default(),
            checked: tokio::sync::watch::channel(None).0,
        })
    }

    /// `GET /v2/`: is the registry there, which auth does it want, are our credentials good?
    /// Done once, before any work is sent, so that a wrong password or a dead registry fails
    /// fast. Work may be prepared meanwhile: every request but the check's own (and the
    /// anonymous HEADs of [`Registry::ahead_of_check`]) waits for it, and fails with its error
    /// if it failed (so a refused password is not tried again by the work). A second call
    /// waits for the first one's answer.
    pub async fn check(&self) -> Result<()> {
        let mut answered = self.checked.subscribe();
        if self.check_started.swap(true, Ordering::SeqCst) {
            return Self::answer_of(&mut answered).await;
        }
        // a check given up (its future dropped at a Ctrl-C) must not leave the requests
        // waiting for it waiting forever
        let unanswered = Unanswered(&self.checked);
        // A few small requests: --timeout bounds all of them together, not only each silence,
        // so that a registry trickling its answer (a DR standby among them: the other side
        // waits for both checks) cannot hold the run for longer.
        let r = tokio::time::timeout(self.idle_timeout, self.check_once())
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Unreachable,
                    format!(
                        "registry {}: checking the API (GET /v2/): no whole answer within \
                         --timeout ({} s): check that the registry is up and not overloaded, \
                         or give it a longer --timeout",
                        self.host,
                        self.idle_timeout.as_secs()
                    ),
                ))
            });
        self.checked.send_replace(Some(r.clone()));
        drop(unanswered);
        r
    }

    /// Waits for a check under way, if any: its error, or go ahead.
    pub(super) async fn after_check(&self) -> Result<()> {
        if !self.check_started.load(Ordering::SeqCst) {
            return Ok(());
        }
        Self::answer_of(&mut self.checked.subscribe()).await
    }

    /// The check was asked for and has not answered yet.
    pub(super) fn check_in_flight(&self) -> bool {
        self.check_started.load(Ordering::SeqCst) && self.checked.borrow().is_none()
    }

    async fn answer_of(
        answered: &mut tokio::sync::watch::Receiver<Option<Result<()>>>,
    ) -> Result<()> {
        match answered.wait_for(Option::is_some).await {
            Ok(answer) => answer.clone().expect("waited for an answer"),
            // the sender lives as long as the registry
            Err(_) => Err(Error::internal("registry check abandoned")),
        }
    }

    async fn check_once(&self) -> Result<()> {
        let url = self.base.join("v2/").expect("static path");
        let first = self
            .send_once(Method::GET, url.clone(), None, None, None, "")
            .await?;
        let scheme = match first.status() {
            s if s.is_success() => Scheme::None,
            StatusCode::UNAUTHORIZED => auth::scheme_of(
                first
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok()),
            ),
            StatusCode::NOT_FOUND => {
                return Err(Error::new(
                    ErrorKind::Registry,
                    format!(
                        "registry {}: checking the API (GET /v2/): HTTP 404: this address does not \
                         serve the registry API. Check host and port; a repository prefix goes \
                         after the host (--dest-repo host:port/project), not into the host",
                        self.host
                    ),
                ));
            }
            s => {
                return Err(self
                    .status_error(s, "checking the API (GET /v2/)", first)
                    .await);
            }
        };
        *self.scheme.lock().await = Some(scheme.clone());
        match scheme {
            Scheme::None => Ok(()),
            _ if self.credentials.is_none() => Err(Error::new(
                ErrorKind::Auth,
                format!(
                    "registry {} requires authentication (HTTP 401): give --username and --password (or --password-stdin), or a login in $REGISTRY_AUTH_FILE / ~/.docker/config.json",
                    self.host
                ),
            )),
            Scheme::Basic => {
                let resp = self.send_once(Method::GET, url, self.credentials.as_ref().map(|c| c.basic_header()).as_deref(), None, None, "").await?;
                if resp.status() == StatusCode::UNAUTHORIZED {
                    return Err(self.auth_refused());
                }
                Ok(())
            }
            // Bearer registries: ask for one token now, so that a wrong password fails once,
            // before any work, with exit 5 (and is then remembered, not retried).
            Scheme::Bearer(_) => match self
                .authorize_now(transport::Access::push("ferry-credential-check"), true)
                .await
            {
                Err(e) if e.kind == ErrorKind::Auth => Err(e),
                _ => Ok(()),
            },
        }
    }

    fn auth_refused(&self) -> Error {
        let user = self
            .credentials
            .as_ref()
            .map(|c| c.username.as_str())
            .unwrap_or("");
        Error::new(
            ErrorKind::Auth,
            format!(
                "registry {} refused the credentials of user {user:?} ({}) (HTTP 401): check them, or give the right ones with --username and --password-stdin",
                self.host,
                self.credential_origin.as_deref().unwrap_or("from the command line")
            ),
        )
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn url(&self, path: &str) -> Url {
        let path = match path.strip_prefix("v2/") {
            Some(rest) if !rest.is_empty() && !self.prefix.is_empty() => {
                format!("v2/{}/{rest}", self.prefix)
            }
            _ => path.to_string(),
        };
        self.base
            .join(&path)
            .expect("paths built from validated repositories and digests")
    }

    /// A repository's name in this registry (with the prefix, if any).
    pub fn full_repo(&self, repo: &str) -> String {
        if self.prefix.is_empty() {
            repo.to_string()
        } else {
            format!("{}/{repo}", self.prefix)
        }
    }

    /// `host[:port][/prefix]`, for reports.
    pub fn label(&self) -> String {
        registry_label(&self.host, &self.prefix)
    }
}

/// `host[:port][/prefix]`: how reports, the engine's outcomes and the publishing step name a
/// destination registry.
pub fn registry_label(host: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{prefix}")
    }
}

/// Answers to a first `Content-Range` PATCH that mean "no chunked uploads here".
const CHUNK_REFUSALS: [StatusCode; 4] = [
    StatusCode::RANGE_NOT_SATISFIABLE,
    StatusCode::BAD_REQUEST,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::NOT_IMPLEMENTED,
];

/// An `Authorization` value marked sensitive, so that no debug output of the request shows it.
fn sensitive(value: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        Error::internal("credentials contain characters not allowed in an HTTP header")
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// `{"errors":[{"code":"...","message":"..."}]}` → ` (CODE: message)`.
fn registry_error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Errs>(body) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e
                .errors
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.code.as_deref().unwrap_or("?"),
                        e.message.as_deref().unwrap_or("")
                    )
                })
                .collect();
            format!(" ({})", parts.join("; "))
        }
        _ => String::new(),
    }
}

/// Removes `?query` parts from URLs inside a message: upload URLs carry state tokens.
fn strip_queries(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut skipping = false;
    for c in s.chars() {
        if c == '?' {
            skipping = true;
        } else if skipping && (c == ')' || c.is_whitespace()) {
            skipping = false;
        }
        if !skipping {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media::{sniff_media_type, DOCKER_MANIFEST, OCI_INDEX};

    #[test]
    fn registry_errors_are_readable() {
        let t = registry_error_text(
            br#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match"}]}"#,
        );
        assert_eq!(t, " (DIGEST_INVALID: provided digest did not match)");
        assert_eq!(registry_error_text(b"<html>"), "");
    }

    #[test]
    fn queries_are_stripped() {
        assert_eq!(
            strip_queries("error for url (http://h/v2/x?_state=abc)"),
            "error for url (http://h/v2/x)"
        );
    }

    #[test]
    fn sniffs_media_types() {
        assert_eq!(sniff_media_type(br#"{"manifests":[]}"#), OCI_INDEX);
        assert_eq!(
            sniff_media_type(format!(r#"{{"mediaType":"{DOCKER_MANIFEST}"}}"#).as_bytes()),
            DOCKER_MANIFEST
        );
    }
}

/// Bytes an upload session holds, from its `Range: 0-<last>` header. Distribution answers
/// `0-0` both for an empty session and for one holding a single byte; we read it as empty
/// (resending one byte is harmless, skipping one is not: the registry would answer 416).
fn held_bytes(range: &str) -> u64 {
    match range.trim().rsplit_once('-') {
        Some((_, "0")) => 0,
        Some((_, end)) => end.trim().parse::<u64>().map_or(0, |e| e + 1),
        None => 0,
    }
}

#[cfg(test)]
mod range_tests {
    #[test]
    fn held_bytes_reads_ranges() {
        assert_eq!(super::held_bytes("0-0"), 0);
        assert_eq!(super::held_bytes("0-1048575"), 1 << 20);
        assert_eq!(super::held_bytes("bytes=0-99"), 100);
        assert_eq!(super::held_bytes("junk"), 0);
    }
}
