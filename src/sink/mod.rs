//! Registry sink: where bytes leave ferry. One [`Registry`] per destination registry speaks
//! the OCI distribution API: blob HEAD, cross-repository mount, monolithic and chunked
//! uploads (with upload-session status for resume), manifest HEAD and PUT.
//!
//! Every request goes through [`Registry::send`], which adds authentication, retries
//! transient failures (see [`retry::RetryPolicy`]) and turns failures into errors that name
//! the registry, repository, object and HTTP status.

pub mod auth;
pub mod retry;
pub mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::source::layout::{OCI_INDEX, OCI_MANIFEST};
pub use auth::{Credentials, Scheme, Secret};
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
    oci: oci_client::Client,
    plain_http: bool,
    credentials: Option<Credentials>,
    credential_origin: Option<String>,
    scheme: Mutex<Option<Scheme>>,
    tokens: Mutex<HashMap<String, String>>,
    /// The token server refused our credentials: remembered, so that they are not tried again.
    token_refused: Mutex<Option<Error>>,
    retry: RetryPolicy,
    pub counters: Arc<Counters>,
    /// Cleared the first time the registry refuses a `Content-Range` PATCH: from then on
    /// large blobs are streamed in one request (not resumable inside the blob).
    chunked: AtomicBool,
}

/// An open upload session: where to send the next bytes.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct UploadSession {
    pub location: String,
    /// Bytes the registry has committed so far.
    pub offset: u64,
}

/// A request body that can be sent again on retry.
#[derive(Clone)]
struct Body {
    bytes: Bytes,
    content_type: HeaderValue,
}

/// Bytes of an error answer read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

impl Registry {
    pub fn new(opts: RegistryOptions) -> Result<Self> {
        let scheme = if opts.plain_http { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{}/", opts.host)).map_err(|e| {
            Error::new(
                ErrorKind::Unreachable,
                format!("registry {:?} is not host[:port]: {e}", opts.host),
            )
        })?;
        let base_builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(15))
                .pool_max_idle_per_host(32)
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
        if !opts.insecure && !opts.plain_http {
            builder = builder.use_preconfigured_tls(tls::client_config(&trusted)?);
            upload_builder = upload_builder.use_preconfigured_tls(tls::client_config(&trusted)?);
        }
        let oci_certs: Vec<oci_client::client::Certificate> = trusted
            .iter()
            .map(|der| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Der,
                data: der.clone(),
            })
            .collect();
        let http = builder
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        let upload_http = upload_builder
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        let oci = oci_client::Client::new(oci_client::client::ClientConfig {
            protocol: if opts.plain_http {
                oci_client::client::ClientProtocol::Http
            } else {
                oci_client::client::ClientProtocol::Https
            },
            accept_invalid_certificates: opts.insecure,
            extra_root_certificates: oci_certs,
            // a token server that never answers must not hang every request to the registry
            read_timeout: Some(opts.timeout),
            connect_timeout: Some(Duration::from_secs(15)),
            ..Default::default()
        });
        Ok(Registry {
            host: opts.host,
            prefix: opts.prefix.trim_matches('/').to_string(),
            base,
            http,
            upload_http,
            idle_timeout: opts.timeout,
            oci,
            plain_http: opts.plain_http,
            credentials: opts.credentials,
            credential_origin: opts.credential_origin,
            scheme: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            token_refused: Mutex::new(None),
            retry: opts.retry,
            counters: Arc::new(Counters::default()),
            chunked: AtomicBool::new(true),
        })
    }

    /// `GET /v2/`: is the registry there, which auth does it want, are our credentials good?
    /// Done once before any work so that a wrong password or a dead registry fails fast.
    pub async fn check(&self) -> Result<()> {
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
            Scheme::Bearer => match self.authorize("ferry-credential-check", true).await {
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
        if self.prefix.is_empty() {
            self.host.clone()
        } else {
            format!("{}/{}", self.host, self.prefix)
        }
    }

    /// Adds `Authorization` for `repo` according to the registry's scheme.
    async fn authorize(&self, repo: &str, refresh: bool) -> Result<Option<String>> {
        let scheme = self.scheme.lock().await.clone().unwrap_or(Scheme::None);
        let Some(creds) = &self.credentials else {
            return Ok(None);
        };
        match scheme {
            Scheme::None => Ok(None),
            Scheme::Basic => Ok(Some(creds.basic_header())),
            Scheme::Bearer => {
                if let Some(e) = self.token_refused.lock().await.clone() {
                    // credentials the token server refused once are not tried again: every
                    // try could count towards an account lockout
                    return Err(e);
                }
                if !refresh {
                    if let Some(t) = self.tokens.lock().await.get(repo) {
                        return Ok(Some(format!("Bearer {t}")));
                    }
                }
                // no lock is held while the token server is asked
                let reference = oci_client::Reference::with_tag(
                    self.host.clone(),
                    self.full_repo(repo),
                    "latest".into(),
                );
                let auth = oci_client::secrets::RegistryAuth::Basic(
                    creds.username.clone(),
                    creds.password.expose().to_string(),
                );
                let token = match self
                    .oci
                    .auth(&reference, &auth, oci_client::RegistryOperation::Push)
                    .await
                {
                    Ok(t) => t,
                    Err(e) => {
                        // The error text of a failed token request is the token server's body;
                        // it cannot contain our password, but keep it short.
                        let text: String = e.to_string().chars().take(200).collect();
                        let lower = text.to_lowercase();
                        // oci-client says "Authentication failure" for a 401/403 of the token
                        // server; anything else (no answer, 5xx) is worth another try
                        // (a 403 can be about the scope, not the credentials: not remembered)
                        let refused = lower.contains("authentication failure")
                            || lower.contains("401")
                            || lower.contains("unauthorized");
                        let err = Error::new(
                            if refused {
                                ErrorKind::Auth
                            } else {
                                ErrorKind::Unreachable
                            },
                            format!(
                                "registry {}: getting a push token for {repo} failed: {text}{}",
                                self.host,
                                if refused {
                                    format!(
                                        " (user {:?}, credentials {}): check them",
                                        creds.username,
                                        self.credential_origin
                                            .as_deref()
                                            .unwrap_or("from the command line")
                                    )
                                } else {
                                    String::new()
                                }
                            ),
                        );
                        if refused {
                            *self.token_refused.lock().await = Some(err.clone());
                        }
                        return Err(err.retryable(!refused));
                    }
                };
                match token {
                    Some(t) => {
                        self.tokens.lock().await.insert(repo.to_string(), t.clone());
                        Ok(Some(format!("Bearer {t}")))
                    }
                    None => Ok(Some(creds.basic_header())),
                }
            }
        }
    }

    /// One request, no retry. Connection-level failures become errors here.
    async fn send_once(
        &self,
        method: Method,
        url: Url,
        auth: Option<&str>,
        body: Option<&Body>,
        accept: Option<&str>,
        repo: &str,
    ) -> Result<reqwest::Response> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let mut rb = self.http.request(method.clone(), url);
        if let Some(a) = accept {
            rb = rb.header(ACCEPT, a);
        }
        if let Some(a) = auth {
            rb = rb.header(reqwest::header::AUTHORIZATION, sensitive(a)?);
        }
        if let Some(b) = body {
            rb = rb
                .header(CONTENT_TYPE, b.content_type.clone())
                .header(CONTENT_LENGTH, b.bytes.len())
                .body(b.bytes.clone());
        } else if method == Method::PUT || method == Method::POST {
            rb = rb.header(CONTENT_LENGTH, 0);
        }
        let resp = rb.send().await.map_err(|e| self.transport_error(e, repo))?;
        if let Some(b) = body {
            self.counters
                .bytes_sent
                .fetch_add(b.bytes.len() as u64, Ordering::Relaxed);
        }
        Ok(resp)
    }

    fn transport_error(&self, e: reqwest::Error, repo: &str) -> Error {
        let mut chain = String::new();
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = src {
            chain.push_str(&format!(": {s}"));
            src = s.source();
        }
        // reqwest's messages include the URL; strip any query (upload state tokens).
        let chain = strip_queries(&chain);
        let lower = chain.to_lowercase();
        let place = if repo.is_empty() {
            String::new()
        } else {
            format!(" ({repo})")
        };
        if lower.contains("certificate")
            || lower.contains("unknownissuer")
            || lower.contains("tls") && e.is_connect()
        {
            return Error::new(
                ErrorKind::Unreachable,
                format!(
                    "registry {}: TLS certificate not trusted{chain}. Give the registry's CA with --ca-file FILE (or put it where docker/containerd look: /etc/docker/certs.d/<host:port>/ca.crt, /etc/containers/certs.d/..., /etc/containerd/certs.d/...), or skip verification with --insecure",
                    self.host
                ),
            );
        }
        if e.is_connect() {
            let hint = if self.plain_http {
                ""
            } else {
                " (if it speaks plain HTTP, add --plain)"
            };
            return Error::new(
                ErrorKind::Unreachable,
                format!("registry {} is not reachable{chain}: check --dest-repo and that the registry is up{hint}", self.host),
            )
            .retryable(true);
        }
        Error::new(
            ErrorKind::Registry,
            format!("registry {}{place}: request failed{chain}", self.host),
        )
        .retryable(true)
    }

    /// A request with auth and retries. Returns the response of any status the caller must
    /// interpret; 401 after a fresh token becomes an auth error, 429/5xx are retried and, once
    /// the budget is spent, become an error with the last status.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Body>,
        repo: &str,
        what: &str,
    ) -> Result<reqwest::Response> {
        self.send_full(method, url, body, None, repo, what).await
    }

    async fn send_accept(
        &self,
        method: Method,
        url: Url,
        accept: &str,
        repo: &str,
        what: &str,
    ) -> Result<reqwest::Response> {
        self.send_full(method, url, None, Some(accept), repo, what)
            .await
    }

    async fn send_full(
        &self,
        method: Method,
        url: Url,
        body: Option<Body>,
        accept: Option<&str>,
        repo: &str,
        what: &str,
    ) -> Result<reqwest::Response> {
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            let auth = self.authorize(repo, false).await?;
            let result = self
                .send_once(
                    method.clone(),
                    url.clone(),
                    auth.as_deref(),
                    body.as_ref(),
                    accept,
                    repo,
                )
                .await;
            let (err, retry_after) = match result {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    if !refreshed && self.credentials.is_some() {
                        refreshed = true;
                        self.authorize(repo, true).await?;
                        continue;
                    }
                    let _ = resp.bytes().await;
                    return Err(if self.credentials.is_some() {
                        self.auth_refused()
                    } else {
                        Error::new(ErrorKind::Auth, format!("registry {}: {what}: authentication required (HTTP 401): give --username/--password", self.host))
                    });
                }
                Ok(resp)
                    if resp.status() == StatusCode::TOO_MANY_REQUESTS
                        || resp.status().is_server_error() =>
                {
                    let ra = retry::parse_retry_after(resp.headers().get("retry-after"));
                    let e = self
                        .status_error(resp.status(), what, resp)
                        .await
                        .retryable(true);
                    (e, ra)
                }
                Ok(resp) => return Ok(resp),
                Err(e) if e.retryable => (e, None),
                Err(e) => return Err(e),
            };
            attempt += 1;
            if attempt >= self.retry.attempts {
                return Err(err.context(format!("after {attempt} tries")));
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            let wait = self.retry.backoff(attempt - 1, retry_after);
            tracing::debug!(registry = %self.host, %what, error = %err, ?wait, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Error for an unexpected status, with the registry's own error code when it gave one.
    async fn status_error(
        &self,
        status: StatusCode,
        what: &str,
        mut resp: reqwest::Response,
    ) -> Error {
        // the registry's error document, read up to a cap: a hostile or broken server could
        // otherwise send gigabytes into our memory
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk[..chunk.len().min(MAX_ERROR_BODY - body.len())]);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
        let detail = registry_error_text(&body);
        let kind = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Auth,
            _ => ErrorKind::Registry,
        };
        Error::new(
            kind,
            format!(
                "registry {}: {what}: HTTP {}{detail}",
                self.host,
                status.as_u16()
            ),
        )
    }

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
    async fn head_blob(&self, repo: &str, digest: &Digest) -> Result<Option<Option<u64>>> {
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

    /// The digest a tag (or digest) currently points at, if any.
    pub async fn manifest_digest(&self, repo: &str, reference: &str) -> Result<Option<String>> {
        let what = format!("checking manifest {repo}:{reference}");
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let resp = self
            .send_accept(Method::HEAD, url, MANIFEST_ACCEPT, repo, &what)
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.status_error(s, &what, resp).await),
        }
    }

    /// Cross-repository mount. `Ok(false)` when the registry declined (it then opened an
    /// upload session, which we cancel: the caller uploads instead).
    pub async fn mount(&self, repo: &str, from: &str, digest: &Digest) -> Result<bool> {
        let what = format!("mounting blob {digest} from {from} into {repo}");
        let mut url = self.url(&format!("v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", &self.full_repo(from));
        let resp = match self.send(Method::POST, url, None, repo, &what).await {
            // Our bearer tokens are scoped to one repository (oci-client asks for one scope),
            // so a token server may refuse pulling from `from`: upload instead.
            Err(e)
                if e.kind == ErrorKind::Auth
                    && *self.scheme.lock().await == Some(Scheme::Bearer) =>
            {
                tracing::debug!(registry = %self.host, %digest, from, repo, "mount refused by the token's scope; uploading instead");
                return Ok(false);
            }
            r => r?,
        };
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            // not allowed to read `from` (a robot account scoped to one project): upload
            StatusCode::FORBIDDEN => Ok(false),
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
                Ok(false)
            }
            s => Err(self.status_error(s, &what, resp).await),
        }
    }

    fn location(&self, resp: &reqwest::Response, what: &str) -> Result<String> {
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

    /// Sends `chunk` at the session's offset (`PATCH` with `Content-Range`). Not retried here:
    /// after a failure the caller asks [`Registry::upload_status`] where the session stands.
    pub async fn upload_chunk(
        &self,
        repo: &str,
        digest: &Digest,
        session: &mut UploadSession,
        chunk: Bytes,
    ) -> Result<()> {
        let what = format!(
            "uploading blob {digest} to {repo} (offset {})",
            session.offset
        );
        let len = chunk.len() as u64;
        let url = Url::parse(&session.location)
            .map_err(|e| Error::internal(format!("upload location: {e}")))?;
        let auth = self.authorize(repo, false).await?;
        let mut rb = self
            .upload_http
            .patch(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len)
            .header(
                "Content-Range",
                format!("{}-{}", session.offset, session.offset + len - 1),
            );
        if let Some(a) = auth {
            rb = rb.header(reqwest::header::AUTHORIZATION, sensitive(&a)?);
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self.send_upload(rb, chunk, repo).await?;
        self.counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED => {
                session.location = self.location(&resp, &what)?;
                session.offset += len;
                Ok(())
            }
            s if session.offset == 0 && CHUNK_REFUSALS.contains(&s) => {
                if self.chunked.swap(false, Ordering::SeqCst) {
                    tracing::debug!(registry = %self.host, status = s.as_u16(), "registry refuses chunked uploads (PATCH with Content-Range); falling back to one streamed request per blob");
                }
                Err(self.status_error(s, &what, resp).await)
            }
            // 416: our offset and the registry's disagree; the caller asks where it stands
            // and continues from there.
            s if s.is_server_error()
                || s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::RANGE_NOT_SATISFIABLE =>
            {
                Err(self.status_error(s, &what, resp).await.retryable(true))
            }
            StatusCode::UNAUTHORIZED => {
                self.authorize(repo, true).await?;
                Err(self
                    .status_error(StatusCode::UNAUTHORIZED, &what, resp)
                    .await
                    .retryable(true))
            }
            s => Err(self.status_error(s, &what, resp).await),
        }
    }

    /// Sends `body` with `rb`, giving up only when no byte has moved for `--timeout`: while
    /// the body goes out, progress is the body being taken by the connection; after it, the
    /// answer must start within `--timeout`.
    async fn send_upload(
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

    /// Whether the registry accepts chunked uploads (until it refused one).
    pub fn supports_chunks(&self) -> bool {
        self.chunked.load(Ordering::SeqCst)
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
        let url = Url::parse(&session.location)
            .map_err(|e| Error::internal(format!("upload location: {e}")))?;
        let mut rb = self
            .http
            .patch(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(a) = self.authorize(repo, false).await? {
            rb = rb.header(reqwest::header::AUTHORIZATION, sensitive(&a)?);
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let resp = rb.send().await.map_err(|e| self.transport_error(e, repo))?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED => {
                session.location = self.location(&resp, &what)?;
                Ok(())
            }
            s => {
                let retry = s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS;
                Err(self.status_error(s, &what, resp).await.retryable(retry))
            }
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
        let url = Url::parse(&session.location)
            .map_err(|e| Error::internal(format!("upload location: {e}")))?;
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

    /// Commits an upload session: `PUT ?digest=` with the final bytes (possibly none). The
    /// registry checks the digest again; we have already checked it while streaming.
    pub async fn finish_upload(
        &self,
        repo: &str,
        digest: &Digest,
        session: &UploadSession,
        tail: Bytes,
    ) -> Result<()> {
        let what = format!("committing blob {digest} in {repo}");
        let mut url = Url::parse(&session.location)
            .map_err(|e| Error::internal(format!("upload location: {e}")))?;
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

    /// Uploads a whole, already verified blob held in memory: POST then PUT. A session left
    /// behind by a failed PUT is cancelled.
    pub async fn upload_whole(&self, repo: &str, digest: &Digest, bytes: Bytes) -> Result<()> {
        let session = self.begin_upload(repo, digest).await?;
        let r = self.finish_upload(repo, digest, &session, bytes).await;
        if r.is_err() {
            let _ = self.cancel(repo, &session).await;
        }
        r
    }

    /// Cancels an upload session (best effort; registries may refuse).
    pub async fn cancel(&self, repo: &str, session: &UploadSession) -> Result<()> {
        let url = Url::parse(&session.location)
            .map_err(|e| Error::internal(format!("upload location: {e}")))?;
        let auth = self.authorize(repo, false).await?;
        let _ = self
            .send_once(Method::DELETE, url, auth.as_deref(), None, None, repo)
            .await;
        Ok(())
    }

    /// Pushes manifest bytes exactly as given, under `reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<()> {
        let what = format!("pushing manifest {repo}:{reference}");
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let content_type = if media_type.is_empty() {
            sniff_media_type(&bytes)
        } else {
            media_type.to_string()
        };
        let body = Body {
            bytes,
            content_type: HeaderValue::from_str(&content_type)
                .map_err(|_| Error::package(format!("bad media type {content_type:?}")))?,
        };
        let resp = self.send(Method::PUT, url, Some(body), repo, &what).await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED => Ok(()),
            s => Err(self.status_error(s, &what, resp).await),
        }
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

/// A manifest's own `mediaType` field, for descriptors that lack one.
fn sniff_media_type(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<M>(bytes) {
        Ok(M {
            media_type: Some(m),
            ..
        }) => m,
        Ok(M {
            manifests: Some(_), ..
        }) => OCI_INDEX.to_string(),
        _ => OCI_MANIFEST.to_string(),
    }
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
    use crate::source::layout::DOCKER_MANIFEST;

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
