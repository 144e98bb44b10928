//! One cluster's Kubernetes API, reached through the platform, and the mapping of its errors
//! (JSON `Status`) to ours: what failed, on which cluster, and what to do about it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::discovery::{ApiCapabilities, ApiResource};

use crate::error::{Error, ErrorKind, Result};
use crate::sink::Secret;

/// A cheap-to-clone handle on one cluster (kube clients share their connection pool).
#[derive(Clone)]
pub struct Cluster {
    pub name: String,
    pub client: kube::Client,
    /// Discovery results by "group/kind": each is asked for once per run.
    discovered: Arc<Mutex<HashMap<String, (ApiResource, ApiCapabilities)>>>,
}

impl Cluster {
    pub(super) fn new(
        name: &str,
        url: &str,
        token: &Secret,
        ca_der: Option<Vec<Vec<u8>>>,
        insecure: bool,
        timeout: Duration,
    ) -> Result<Self> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::internal(format!("cluster {name:?}: URL {url}: {e}")))?;
        let mut cfg = kube::Config::new(uri);
        cfg.default_namespace = "cpaas-system".into();
        cfg.root_cert = ca_der;
        cfg.accept_invalid_certs = insecure;
        cfg.connect_timeout = Some(Duration::from_secs(15));
        cfg.read_timeout = Some(timeout);
        cfg.write_timeout = Some(timeout);
        cfg.auth_info.token = Some(secrecy::SecretString::from(token.expose().to_string()));
        match (&cfg.root_cert, insecure) {
            (Some(trusted), false) => {
                let trusted = trusted.clone();
                Self::with_exact_match_trust(name, cfg, &trusted, timeout)
            }
            _ => Self::from_config(name, cfg),
        }
    }

    /// kube's client stack (base URI, bearer token), but with our TLS verifier: a platform
    /// certificate that is itself one of the `--platform-ca-file` certificates is accepted even
    /// when it carries CA:TRUE (as `openssl req -x509` makes them), as Go clients accept it.
    /// kube builds its rustls configuration itself and offers no hook for the verifier.
    fn with_exact_match_trust(
        name: &str,
        cfg: kube::Config,
        trusted: &[Vec<u8>],
        timeout: Duration,
    ) -> Result<Self> {
        use kube::client::ConfigExt;
        let setup = |e: String| Error::internal(format!("cluster {name:?}: API client: {e}"));
        let mut tls = crate::sink::tls::client_config(trusted)?;
        tls.alpn_protocols.clear(); // hyper-rustls sets its own (http/1.1)
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(15)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, kube::client::Body>(https);
        let auth = cfg.auth_layer().map_err(|e| setup(e.to_string()))?;
        let service = tower::ServiceBuilder::new()
            .layer(cfg.base_uri_layer())
            .option_layer(auth)
            // API answers are small: a whole-request deadline is right here
            .layer(tower::timeout::TimeoutLayer::new(timeout))
            .service(client);
        Ok(Cluster {
            name: name.to_string(),
            client: kube::Client::new(service, cfg.default_namespace),
            discovered: Default::default(),
        })
    }

    /// A cluster from a ready kube configuration (a kubeconfig's context).
    pub fn from_config(name: &str, cfg: kube::Config) -> Result<Self> {
        let client = kube::Client::try_from(cfg).map_err(|e| {
            Error::internal(format!(
                "cluster {name:?}: cannot set up the API client: {e}"
            ))
        })?;
        Ok(Cluster {
            name: name.to_string(),
            client,
            discovered: Default::default(),
        })
    }

    /// Finds the served version of `group`'s `kind` by discovery (the platform has shipped
    /// v1alpha1 and v1alpha2 of some of its kinds; the preferred served version wins).
    pub async fn discover(
        &self,
        group: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities)> {
        let key = format!("{group}/{kind}");
        if let Some(found) = self.discovered.lock().expect("not poisoned").get(&key) {
            return Ok(found.clone());
        }
        let g = kube::discovery::group(&self.client, group)
            .await
            .map_err(|e| self.error(e, &format!("discovery of API group {group}")))?;
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
        Ok(found)
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
        map_error(&self.name, e, what)
    }
}

/// The HTTP status of a kube API error, if the server answered.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

pub(super) fn map_error(cluster: &str, e: kube::Error, what: &str) -> Error {
    let at = format!("cluster {cluster}: {what}");
    match e {
        kube::Error::Api(s) => {
            let msg = if s.message.is_empty() {
                s.reason.clone()
            } else {
                s.message.clone()
            };
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
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(&other);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            let hint = if msg.contains("certificate") || msg.contains("UnknownIssuer") {
                " (give the platform's CA with --platform-ca-file, or --insecure)"
            } else {
                ""
            };
            Error::new(
                ErrorKind::Unreachable,
                format!("{at}: cannot reach the platform: {msg}{hint}"),
            )
            .retryable(true)
        }
    }
}
