//! One cluster's Kubernetes API, reached through the platform (or a kubeconfig), and the
//! mapping of its errors (JSON `Status`) to ours: what failed, on which cluster, and what to
//! do about it. Every client is built by [`Cluster::build`], with one policy (connect and
//! idle timeouts, a cap on each answer, our TLS verifier): docs/platform-api.md, "Client
//! policy".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::discovery::{ApiCapabilities, ApiResource};

use crate::error::{Error, ErrorKind, Result};
use crate::sink::Secret;

mod answer;

use answer::{answer_limit, AnswerLimit, AnswerPolicyLayer};

/// A cheap-to-clone handle on one cluster (kube clients share their connection pool).
#[derive(Clone)]
pub struct Cluster {
    pub name: String,
    pub client: kube::Client,
    /// What to do about a certificate that is refused (which flag or file to look at): said
    /// by whoever built the client, since only it knows where the trust came from.
    tls_hint: Arc<str>,
    /// The API is spoken to in plain HTTP (an `http://` address): decides which wrong-scheme
    /// hint a transport error gets.
    plain_http: bool,
    /// Discovery results by "group/kind": each is asked for once per run.
    discovered: Arc<Mutex<HashMap<String, (ApiResource, ApiCapabilities)>>>,
}

/// How long a TCP (and TLS) connection to an API server may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The most one Kubernetes API answer may hold. Lists are read page by page (see
/// [`super::inventory`]), so an answer is one page, one object or one discovery document:
/// a few MiB at most on a real platform. Without a cap, a broken or hostile server could send
/// gigabytes that kube would hold (three times over) before parsing.
pub const MAX_API_ANSWER: u64 = 64 << 20;

/// Where a client's trust comes from.
pub(super) enum Trust {
    /// The platform: system roots, plus `--platform-ca-file` through our verifier (which
    /// accepts a given certificate by exact match, as Go clients do); `--platform-insecure`
    /// accepts any certificate.
    Platform {
        ca_der: Option<Vec<Vec<u8>>>,
        insecure: bool,
    },
    /// A kubeconfig: its CA data, its client certificate, its `tls-server-name`, as kube
    /// reads them (admin.conf authenticates with a client certificate).
    Kubeconfig { path: std::path::PathBuf },
}

impl Cluster {
    /// A cluster through the platform's `/kubernetes/<cluster>` with the bearer token.
    pub(super) fn new(
        name: &str,
        url: &str,
        token: &Secret,
        trust: Trust,
        timeout: Duration,
    ) -> Result<Self> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::internal(format!("cluster {name:?}: URL {url}: {e}")))?;
        let mut cfg = kube::Config::new(uri);
        cfg.default_namespace = super::artifacts::NAMESPACE.into();
        cfg.auth_info.token = Some(secrecy::SecretString::from(token.expose().to_string()));
        Self::build(name, cfg, trust, timeout)
    }

    /// The one client stack every cluster is reached through (docs/platform-api.md, "Client
    /// policy"): kube's own layers (base URI, credentials, extra headers) over a hyper client
    /// that we build, because kube's default stack offers no hook for the TLS verifier, puts
    /// no bound on an answer's size and has only socket-level timeouts. The policy:
    /// * connect timeout [`CONNECT_TIMEOUT`];
    /// * idle timeout `idle` (the command's `--timeout`): the wait for the answer's head, and
    ///   the wait for each piece of its body; a slow but moving answer is never cut, as a
    ///   whole-request deadline would;
    /// * every answer capped at [`MAX_API_ANSWER`];
    /// * TLS per [`Trust`].
    pub(super) fn build(
        name: &str,
        mut cfg: kube::Config,
        trust: Trust,
        idle: Duration,
    ) -> Result<Self> {
        use kube::client::ConfigExt;
        let setup = |e: String| Error::internal(format!("cluster {name:?}: API client: {e}"));
        let (tls, tls_hint) = match trust {
            Trust::Platform {
                ca_der: Some(trusted),
                insecure: false,
            } => (
                crate::sink::tls::client_config(&trusted)?,
                PLATFORM_TLS_HINT.to_string(),
            ),
            Trust::Platform { ca_der, insecure } => {
                cfg.root_cert = ca_der;
                cfg.accept_invalid_certs = insecure;
                (
                    cfg.rustls_client_config()
                        .map_err(|e| setup(e.to_string()))?,
                    PLATFORM_TLS_HINT.to_string(),
                )
            }
            Trust::Kubeconfig { path } => (
                cfg.rustls_client_config()
                    .map_err(|e| setup(e.to_string()))?,
                format!(
                    "check certificate-authority-data of the cluster in kubeconfig {}, or \
                     give another kubeconfig with --kubeconfig",
                    path.display()
                ),
            ),
        };
        let plain_http = cfg.cluster_url.scheme_str() == Some("http");
        let mut tls = tls;
        tls.alpn_protocols.clear(); // hyper-rustls sets its own (http/1.1)
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let mut https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        if let Some(sni) = &cfg.tls_server_name {
            let sni = rustls_pki_types::ServerName::try_from(sni.clone())
                .map_err(|e| setup(format!("tls-server-name {sni:?}: {e}")))?;
            https =
                https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(sni));
        }
        let https = https.enable_http1().wrap_connector(http);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, kube::client::Body>(https);
        let auth = cfg.auth_layer().map_err(|e| setup(e.to_string()))?;
        let headers = cfg
            .extra_headers_layer()
            .map_err(|e| setup(e.to_string()))?;
        let service = tower::ServiceBuilder::new()
            .layer(cfg.base_uri_layer())
            .option_layer(auth)
            .layer(headers)
            .layer(AnswerPolicyLayer {
                idle,
                cap: MAX_API_ANSWER,
            })
            .service(client);
        Ok(Cluster {
            name: name.to_string(),
            client: kube::Client::new(service, cfg.default_namespace),
            tls_hint: tls_hint.into(),
            plain_http,
            discovered: Default::default(),
        })
    }

    /// Finds the served version of `group`'s `kind` by discovery (the platform has shipped
    /// v1alpha1 and v1alpha2 of some of its kinds; the preferred served version wins). A group
    /// the cluster does not serve is an error naming the group and the cluster: for a group
    /// the command cannot do without. Where it can, see [`Cluster::discover_if_served`].
    pub async fn discover(
        &self,
        group: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities)> {
        self.discover_if_served(group, kind)
            .await?
            .ok_or_else(|| self.missing_group(group, kind))
    }

    /// As [`Cluster::discover`], but `None` when the cluster answered that it does not serve
    /// `group` at all (its `/apis` lists no such group): for a group that is optional for the
    /// command, such as OLM's `operators.coreos.com` for `list` and `gc`. Any other failure
    /// (the cluster unreachable, an error answer, the group served without `kind`) is still
    /// an error: only the platform's own answer says "not there".
    pub async fn discover_if_served(
        &self,
        group: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, ApiCapabilities)>> {
        let key = format!("{group}/{kind}");
        if let Some(found) = self.discovered.lock().expect("not poisoned").get(&key) {
            return Ok(Some(found.clone()));
        }
        let g = match kube::discovery::group(&self.client, group).await {
            Ok(g) => g,
            // the platform answered: the group is not served there. kube's message for it
            // reads like a network failure ("cannot reach"), which sends people the wrong way
            Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_))) => {
                return Ok(None)
            }
            Err(e) => return Err(self.error(e, &format!("discovery of API group {group}"))),
        };
        let found = g.recommended_kind(kind).ok_or_else(|| {
            Error::new(
                ErrorKind::Platform,
                format!(
                    "cluster {}: API group {group} serves no {kind}: is this an ACP cluster of a \
                     supported version?",
                    self.name
                ),
            )
        })?;
        self.discovered
            .lock()
            .expect("not poisoned")
            .insert(key, found.clone());
        Ok(Some(found))
    }

    /// The one mapping of a group the cluster does not serve, for every command that uses
    /// discovery: the platform answered, so not "cannot reach" (exit 7, not 6).
    pub fn missing_group(&self, group: &str, kind: &str) -> Error {
        Error::new(
            ErrorKind::Platform,
            format!(
                "cluster {}: the API group {group} is not served there (no {kind} resource): is \
                 this the global cluster's platform address, and an ACP cluster with that \
                 component installed?",
                self.name
            ),
        )
    }

    /// A namespaced API for a discovered resource.
    pub fn namespaced(&self, ar: &ApiResource, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, ar)
    }

    /// A cluster-scoped API for a discovered resource.
    pub fn all(&self, ar: &ApiResource) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), ar)
    }

    /// Maps a kube error to ours, naming this cluster and `what` was being done.
    pub fn error(&self, e: kube::Error, what: &str) -> Error {
        map_error(&self.name, e, what, &self.tls_hint, self.plain_http)
    }
}

/// The HTTP status of a kube API error, if the server answered.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

pub(super) fn map_error(
    cluster: &str,
    e: kube::Error,
    what: &str,
    tls_hint: &str,
    plain_http: bool,
) -> Error {
    let at = format!("cluster {cluster}: {what}");
    match e {
        kube::Error::Api(s) => {
            // the server's text (kube puts a non-Status error body there, whatever its size):
            // quoted up to MAX_QUOTED
            let msg = quoted(if s.message.is_empty() {
                &s.reason
            } else {
                &s.message
            });
            match s.code {
                401 => Error::new(
                    ErrorKind::Auth,
                    format!(
                        "{at}: the platform rejected the token (HTTP 401{}): log in again, or \
                         create a new API token (Profile > API Tokens)",
                        if msg.is_empty() {
                            String::new()
                        } else {
                            format!(": {msg}")
                        }
                    ),
                ),
                403 => Error::new(
                    ErrorKind::Platform,
                    format!(
                        "{at}: forbidden (HTTP 403: {msg}): the account needs the \
                         platform-admin-system role"
                    ),
                ),
                404 => Error::new(
                    ErrorKind::Platform,
                    format!("{at}: not found (HTTP 404: {msg})"),
                ),
                code @ (429 | 500..=599) => Error::new(
                    ErrorKind::Platform,
                    format!("{at}: the platform failed (HTTP {code}: {msg}); try again later"),
                )
                .retryable(true),
                code => Error::new(ErrorKind::Platform, format!("{at}: HTTP {code}: {msg}")),
            }
        }
        other => {
            let at = format!("{at}: ");
            if let Some(limit) = answer_limit(&other) {
                return match limit {
                    AnswerLimit::TooLarge { .. } => {
                        Error::new(ErrorKind::Platform, format!("{at}{limit}"))
                    }
                    AnswerLimit::Idle(_) => Error::new(
                        ErrorKind::Unreachable,
                        format!("{at}the platform stopped answering: {limit}; try again later"),
                    )
                    .retryable(true),
                };
            }
            Error::new(
                ErrorKind::Unreachable,
                format!(
                    "{at}cannot reach the platform: {}",
                    super::describe_transport_error(&other, tls_hint, plain_http)
                ),
            )
            .retryable(true)
        }
    }
}

/// What to do about a refused platform certificate.
pub(super) const PLATFORM_TLS_HINT: &str =
    "give the platform's CA with --platform-ca-file, or skip verification with --platform-insecure";

/// At most this much of a server's error text is quoted.
const MAX_QUOTED: usize = 300;

fn quoted(msg: &str) -> String {
    match msg.char_indices().nth(MAX_QUOTED) {
        Some((i, _)) => format!("{}...", &msg[..i]),
        None => msg.to_string(),
    }
}
