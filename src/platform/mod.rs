//! The platform side: everything ferry does through the platform's API rather than the
//! registry's. It is one module so that the contract (documented in docs/platform-api.md)
//! can be adjusted in one place.
//!
//! * [`Platform::connect`] logs in (a token as given, or the five-call password flow in
//!   [`login`]) and hands out one [`Cluster`] per cluster name: a `kube::Client` pointed at
//!   `<platform>/kubernetes/<cluster>` with the bearer token.
//!   [`Platform::each_cluster`] is the one way to do something on several clusters at once
//!   (publishing, the inventory, gc's deletes): bounded, each cluster's result on its own.
//! * [`kubeconfig`]: the other way in, for `ferry sync` on a node: the cluster of the node's
//!   kubeconfig, spoken to directly with its own credentials and CA, not through a platform.
//! * [`registry`] finds the platform's registry and its credentials (`ProductBase` `base`,
//!   Secret `cpaas-system/registry-admin`).
//! * [`artifacts`] writes the Marketplace resources (`Artifact`, `ArtifactVersion`) of a
//!   package once every image of it is in the registry (create, or update on 409; the
//!   ArtifactVersion owned by the Artifact in the version discovery found).
//! * [`apply`] server-side applies a core package's manifests (field manager `ferry`,
//!   forcing conflicts, as `kubectl apply --server-side --force-conflicts` does).
//! * [`preflight`] (`sync --preflight`) reads the upgrade checks from the
//!   `ClusterVersionShadow` named after the cluster (`config.alauda.io`, `cpaas-system`).
//! * [`inventory`] reads what is uploaded and installed where (`ferry list`); [`gc`] plans
//!   and performs the cleanup of old uploads (`ferry gc`).
//!
//! What this module is not: it never touches the registry's bytes, and it reads only the
//! package's metadata and the push outcome, never the engine's or the sink's internals.

mod address;
pub mod apply;
pub mod artifacts;
mod cluster;
pub mod gc;
pub mod inventory;
pub mod kubeconfig;
pub mod login;
pub mod preflight;
pub mod registry;
pub mod upgrade;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use url::Url;

pub use address::parse_address;
use address::{host_of, read_pem_certs};
pub use cluster::Cluster;
pub use login::PasswordLogin;

use crate::error::{Error, ErrorKind, Result};
use crate::sink::Secret;

/// Clusters spoken to at once by [`Platform::each_cluster`]: every cluster of a usual
/// platform, while one with hundreds does not open hundreds of connections at once.
pub const CLUSTERS_AT_ONCE: usize = 16;

/// How to authenticate to the platform.
#[derive(Clone, Debug)]
pub enum PlatformAuth {
    /// An API token (Profile > API Tokens), used as is.
    Token(Secret),
    /// Username and password, exchanged for a token by the documented login flow.
    Password(PasswordLogin),
}

#[derive(Clone, Debug)]
pub struct PlatformOptions {
    /// As the user typed it: `https://host[:port]`, `host`, `https://[fd00::10]`.
    pub address: String,
    pub auth: PlatformAuth,
    /// Extra trusted CA (PEM) for the platform's certificate.
    pub ca_file: Option<PathBuf>,
    /// Do not verify the platform's certificate.
    pub insecure: bool,
    /// The user allows an `http://` address (`--platform-plain-http`).
    pub plain_http: bool,
    pub timeout: Duration,
}

/// A logged-in platform.
pub struct Platform {
    /// `https://host[:port]/` (always with the trailing slash).
    pub address: Url,
    token: Secret,
    ca_der: Option<Vec<Vec<u8>>>,
    insecure: bool,
    timeout: Duration,
    clients: Mutex<HashMap<String, Cluster>>,
}

impl Platform {
    /// Logs in (when given a password) and checks nothing else: the first API call tells
    /// whether the token is accepted, with an error naming the cluster.
    pub async fn connect(opts: PlatformOptions) -> Result<Platform> {
        let address = parse_address(&opts.address, opts.plain_http)?;
        let ca_der = match &opts.ca_file {
            Some(path) => Some(read_pem_certs(path)?),
            None => None,
        };
        let token = match &opts.auth {
            PlatformAuth::Token(t) => t.clone(),
            PlatformAuth::Password(who) => {
                // the client policy of the API clients (cluster.rs): connect timeout, idle
                // timeout, no whole-request deadline; login.rs caps each answer
                let mut http = reqwest::Client::builder()
                    .cookie_store(true)
                    .connect_timeout(cluster::CONNECT_TIMEOUT)
                    .read_timeout(opts.timeout)
                    .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
                    .redirect(reqwest::redirect::Policy::none())
                    .danger_accept_invalid_certs(opts.insecure);
                if let (Some(trusted), false) = (&ca_der, opts.insecure) {
                    // the same verifier as for registries: exact match accepted (CA:TRUE)
                    let tls = crate::sink::tls::client_config(trusted)?;
                    http = http.use_preconfigured_tls(tls);
                }
                let http = http
                    .build()
                    .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
                let done = login::login(&http, &address, who)
                    .await
                    .map_err(|e| e.context(format!("platform {}", host_of(&address))))?;
                tracing::debug!(
                    "logged in to {} as {:?} (token expires {})",
                    host_of(&address),
                    who.username,
                    done.expire_at.as_deref().unwrap_or("at an unknown time")
                );
                done.token
            }
        };
        Ok(Platform {
            address,
            token,
            ca_der,
            insecure: opts.insecure,
            timeout: opts.timeout,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Logs in and makes one cheap call (discovery of the Marketplace kind in `global`), so
    /// that an unreachable platform or a rejected token is known before any upload rather
    /// than after hours of it.
    pub async fn connect_checked(opts: PlatformOptions) -> Result<Platform> {
        let platform = Platform::connect(opts).await?;
        platform
            .cluster(inventory::GLOBAL)?
            .discover("app.alauda.io", "Artifact")
            .await?;
        Ok(platform)
    }

    /// Refuses names that are not clusters of this platform (its `Cluster` list), naming the
    /// valid ones: before any upload, so that a typo costs seconds.
    pub async fn check_clusters(&self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let known = inventory::platform_clusters(self).await?;
        let unknown: Vec<&String> = names.iter().filter(|n| !known.contains(n)).collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Usage,
            format!(
                "{} not a cluster of the platform {} (its clusters: {}); check --clusters",
                unknown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
                    + if unknown.len() == 1 { " is" } else { " are" },
                self.host(),
                known.join(", ")
            ),
        ))
    }

    /// The Kubernetes API of one cluster, through the platform's `/kubernetes/<cluster>/`.
    pub fn cluster(&self, name: &str) -> Result<Cluster> {
        let mut clients = self.clients.lock().expect("not poisoned");
        if let Some(c) = clients.get(name) {
            return Ok(c.clone());
        }
        let url = self
            .address
            .join(&format!("kubernetes/{name}"))
            .map_err(|e| Error::internal(format!("cluster {name:?}: {e}")))?;
        let trust = cluster::Trust::Platform {
            ca_der: self.ca_der.clone(),
            insecure: self.insecure,
        };
        let c = Cluster::new(name, url.as_str(), &self.token, trust, self.timeout)?;
        clients.insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Runs `f` on each named cluster, up to `limit` at once, and returns every cluster's
    /// result in the order of `names`: one cluster failing (no client for it, or `f`'s
    /// error) never stops the others, and each caller decides what a failure means.
    pub async fn each_cluster<T, F, Fut>(
        &self,
        names: &[String],
        limit: usize,
        f: F,
    ) -> Vec<(String, Result<T>)>
    where
        F: Fn(Cluster) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        use futures::StreamExt;
        let f = &f;
        futures::stream::iter(names)
            .map(|name| async move {
                let r = match self.cluster(name) {
                    Ok(c) => f(c).await,
                    Err(e) => Err(e),
                };
                (name.clone(), r)
            })
            .buffered(limit.max(1))
            .collect()
            .await
    }

    /// The CA certificates (DER) given for the platform (`--platform-ca-file`), if any.
    pub fn ca_der(&self) -> Option<&[Vec<u8>]> {
        self.ca_der.as_deref()
    }

    /// For messages: the platform's `host[:port]`.
    pub fn host(&self) -> String {
        host_of(&self.address)
    }
}

/// A transport error in words an operator can act on: the whole chain of causes (each said
/// once), and `tls_hint` (which flag or file decides the trust; the builder of the client
/// knows) when a certificate was refused. Used for the login client (reqwest, whose errors
/// should come `without_url()`: a URL's query could carry a login code) and for the API
/// clients (kube).
pub(crate) fn describe_transport_error(
    e: &(dyn std::error::Error + 'static),
    tls_hint: &str,
    plain_http: bool,
) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !msg.contains(&s_text) {
            msg = format!("{msg}: {s_text}");
        }
        src = s.source();
    }
    if msg.contains("certificate") || msg.contains("UnknownIssuer") {
        msg = format!("{msg} ({tls_hint})");
    }
    if let Some(hint) = scheme_hint(&msg, plain_http) {
        msg = format!("{msg} ({hint})");
    }
    msg
}

/// A likely wrong scheme, from what the failure looks like: plain HTTP sent to a TLS port is
/// answered with a TLS alert (which hyper reads as a bad HTTP version) or a reset; a TLS
/// hello sent to a plain-HTTP port is answered in HTTP, which rustls reads as a record of an
/// invalid content type.
fn scheme_hint(msg: &str, plain_http: bool) -> Option<&'static str> {
    let lower = msg.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if plain_http
        && any(&[
            "invalid http version",
            "connection reset",
            "connection closed before message completed",
            "invalid status code",
        ])
    {
        Some(
            "the server there seems to speak HTTPS: give the address with https:// (and drop \
             --platform-plain-http)",
        )
    } else if !plain_http
        && any(&[
            "invalidcontenttype",
            "invalid content type",
            "corrupt message",
            "wrong version number",
            "record overflow",
        ])
    {
        Some(
            "the server there does not seem to speak TLS: check the address's scheme; a \
             platform that really serves plain HTTP needs http:// and --platform-plain-http",
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn transport_errors_say_each_cause_once_and_the_builders_tls_hint() {
        let e = Layer(
            "client error (Connect)",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(Layer(
                    "invalid peer certificate: UnknownIssuer",
                    None,
                ))),
            ))),
        );
        assert_eq!(
            describe_transport_error(&e, cluster::PLATFORM_TLS_HINT, false),
            "client error (Connect): invalid peer certificate: UnknownIssuer (give the \
             platform's CA with --platform-ca-file, or skip verification with --platform-insecure)"
        );
        // the wrong scheme, each way
        let e = Layer(
            "client error (SendRequest)",
            Some(Box::new(Layer("invalid HTTP version parsed", None))),
        );
        assert!(describe_transport_error(&e, "", true).contains("give the address with https://"));
        assert!(!describe_transport_error(&e, "", false).contains("https://"));
        let e = Layer("received corrupt message of type InvalidContentType", None);
        assert!(describe_transport_error(&e, "", false).contains("check the address's scheme"));
        let e = Layer("connection refused", None);
        assert_eq!(
            describe_transport_error(&e, "check kubeconfig x", false),
            "connection refused"
        );
    }
}
