//! Destinations as data: every registry a run writes to (the primary, and in DR setups the
//! standby), resolved once from the flags and, where they say so, from the platform. After
//! this point the primary and the standby are the same code: one value each, carrying its
//! registry address, trust, credentials (and where they came from) and the platform whose
//! Marketplace gets the resources.
//!
//! Not here: the wire (the sink) or what goes where (the engine).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::platform_flags::StdinSecret;
use crate::error::{Error, ErrorKind};
use crate::platform::registry::{self as platform_registry, CredentialSource, ProductRegistry};
use crate::platform::{Cluster, Platform};
use crate::sink::{auth, Credentials, RealmHost, Registry, RegistryOptions, RetryPolicy, Secret};

/// Which side of a DR pair a destination is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Standby,
}

/// One registry the run writes to.
pub struct Destination {
    pub role: Role,
    /// `host[:port]`.
    pub host: String,
    /// Repository prefix (`--dest-repo host/prefix`), empty for none.
    pub prefix: String,
    pub plain: bool,
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    /// Other hosts whose token service may get the credentials (`--allow-token-realm`).
    pub token_realms: Vec<RealmHost>,
    /// More CA certificates (DER), e.g. the cluster CA of the node's kubeconfig.
    pub extra_roots: Vec<Vec<u8>>,
    pub credentials: Option<Credentials>,
    /// Where the credentials came from, for the line printed before the run and for errors.
    pub credential_origin: String,
    /// Why this registry (which flag, or which platform resource named it).
    pub why: String,
    /// The platform whose Marketplace gets this side's resources, if any.
    pub platform: Option<Arc<Platform>>,
}

impl Destination {
    /// A registry given by address (`host[:port][/prefix]`, optional scheme), as the flags of
    /// push and sync spell it.
    pub fn from_address(role: Role, address: &str, trust: Trust) -> Result<Self, Error> {
        let (host, plain, prefix) = split_host(address, trust.plain)?;
        Ok(Destination {
            role,
            host,
            prefix,
            plain,
            insecure: trust.insecure,
            ca_file: trust.ca_file,
            token_realms: trust.token_realms,
            extra_roots: Vec::new(),
            credentials: None,
            credential_origin: CredentialSource::None.to_string(),
            why: String::new(),
            platform: None,
        })
    }

    /// A registry address a server gave (ProductBase `spec.registry.address`). The server
    /// never chooses the scheme: an `http://` there would send the registry password in clear
    /// without the user having said so, so it is refused unless `--plain` (`--standby-plain`)
    /// was given; without a scheme, or with `https://`, it is TLS unless `--plain`.
    pub fn from_server(
        role: Role,
        address: &str,
        trust: Trust,
        flag_prefix: &str,
    ) -> Result<Self, Error> {
        let a = address.trim();
        if a.len() >= 7 && a[..7].eq_ignore_ascii_case("http://") && !trust.plain {
            return Err(Error::new(
                ErrorKind::Platform,
                format!(
                    "ProductBase base names the registry as {a}: plain HTTP chosen by the server \
                     is refused (the registry's credentials would travel in clear). If that \
                     registry really speaks plain HTTP, say so with --{flag_prefix}plain; \
                     otherwise give its TLS address with the registry flag"
                ),
            ));
        }
        let scheme_less = if a.len() >= 8 && a[..8].eq_ignore_ascii_case("https://") {
            &a[8..]
        } else if a.len() >= 7 && a[..7].eq_ignore_ascii_case("http://") {
            &a[7..]
        } else {
            a
        };
        Self::from_address(role, scheme_less, trust)
    }

    /// `host[:port][/prefix]`, as the engine and the reports name the destination.
    pub fn label(&self) -> String {
        crate::sink::registry_label(&self.host, &self.prefix)
    }

    /// The one line told before anything is sent: which registry, why, how it is reached,
    /// where the credentials come from (never the secret).
    pub fn describe(&self) -> String {
        let transport = if self.plain {
            "plain HTTP"
        } else if self.insecure {
            "TLS, certificate NOT verified"
        } else {
            "TLS"
        };
        format!(
            "{}registry {} ({}); {transport}; credentials {}",
            match self.role {
                Role::Primary => "",
                Role::Standby => "standby ",
            },
            self.label(),
            self.why,
            self.credential_origin
        )
    }

    pub fn registry(&self, retry: &RetryPolicy, timeout: Duration) -> Result<Arc<Registry>, Error> {
        let registry = Registry::new(RegistryOptions {
            host: self.host.clone(),
            prefix: self.prefix.clone(),
            plain_http: self.plain,
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
            extra_roots: self.extra_roots.clone(),
            credentials: self.credentials.clone(),
            credential_origin: Some(self.credential_origin.clone()),
            token_realms: self.token_realms.clone(),
            retry: retry.clone(),
            timeout,
        });
        match self.role {
            Role::Primary => registry.map(Arc::new),
            Role::Standby => registry.map(Arc::new).map_err(|e| e.context("DR standby")),
        }
    }
}

/// How a registry is reached and trusted (`--plain`, `--insecure`, `--ca-file` and their
/// `--standby-` twins; `--allow-token-realm` for both).
#[derive(Clone, Debug, Default)]
pub struct Trust {
    pub plain: bool,
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    pub token_realms: Vec<RealmHost>,
}

/// Where one destination's credentials come from.
#[derive(Clone, Copy)]
pub struct CredentialFlags<'a> {
    pub no_auth: bool,
    pub username: Option<&'a String>,
    pub password: Option<&'a String>,
    pub password_stdin: bool,
    /// Standard input, which at most one secret flag of the run may read.
    pub stdin: &'a StdinSecret,
    /// Flag names, for messages (`""` or `"standby-"`).
    pub prefix: &'a str,
}

impl<'a> CredentialFlags<'a> {
    /// The DR standby's (`--standby-username`, `--standby-password`, `--standby-no-auth`), as
    /// push and sync spell them. No standby secret is read from standard input.
    pub fn standby(
        no_auth: bool,
        username: Option<&'a String>,
        password: Option<&'a String>,
        stdin: &'a StdinSecret,
    ) -> Self {
        CredentialFlags {
            no_auth,
            username,
            password,
            password_stdin: false,
            stdin,
            prefix: "standby-",
        }
    }

    pub(crate) fn given(&self) -> bool {
        self.username.is_some() || self.password.is_some() || self.password_stdin
    }

    /// The credentials the flags give; with none, those of a docker/podman login file for
    /// `host`, if any.
    pub fn resolve(&self, host: &str) -> Result<Option<Credentials>, Error> {
        if self.no_auth {
            return Ok(None);
        }
        let password = if self.password_stdin {
            Some(
                self.stdin
                    .read(&format!("--{}password-stdin", self.prefix))?,
            )
        } else {
            self.password.cloned()
        };
        let p = self.prefix;
        match (self.username, password) {
            (Some(u), Some(pw)) => Ok(Some(Credentials {
                username: u.clone(),
                password: Secret::new(pw),
            })),
            (Some(_), None) => Err(Error::new(
                ErrorKind::Auth,
                format!("--{p}username needs --{p}password (or its environment variable)"),
            )),
            (None, Some(_)) => Err(Error::new(
                ErrorKind::Auth,
                format!("a password was given without --{p}username"),
            )),
            (None, None) => Ok(auth::from_auth_files(host)),
        }
    }
}

/// Where a side's registry is when its flag names none: nowhere, or read from `ProductBase`
/// `base` of the global cluster.
#[derive(Clone, Debug)]
pub enum RegistryFrom {
    /// Nothing is looked up: only the flag names the registry (sync's standby; push without
    /// a platform).
    Flag,
    /// `spec.registry.address` as written (push: the platform's address for its registry).
    /// `platform` names the platform in the printed reason.
    ProductBase { platform: String },
    /// The built-in registry at the global VIP, on the port of `spec.registry.address` (sync,
    /// on a control-plane node, which may not reach the address the ProductBase holds). An
    /// external registry (`spec.registry.external`) is then not synced, as upgrade.sh does.
    /// `named_by` says where the VIP came from.
    Vip { vip: String, named_by: String },
}

/// A side resolved: the registry to write to, or (sync only) the platform's external registry,
/// which is left alone.
pub enum Resolved {
    To(Box<Destination>),
    External { address: Option<String> },
}

/// One side's flags (primary: `--dest-repo` or `--registry`, `--username`...; DR standby:
/// `--standby-registry`, `--standby-username`...) and the global cluster to read the registry
/// and its credentials from, if any. Push and sync, primary and standby, all resolve here:
/// the flags, else ProductBase `base`, for the address; the flags, else the platform's own
/// credentials (ProductBase, else Secret `cpaas-system/registry-admin`), for the login.
pub struct Side<'a> {
    pub role: Role,
    pub dest_repo: Option<&'a String>,
    pub creds: CredentialFlags<'a>,
    pub trust: Trust,
    /// The flag naming the registry, for messages.
    pub dest_flag: &'a str,
    /// Cluster `global`, where ProductBase and the Secret are read (push: through the
    /// platform; sync: through the node's kubeconfig). None: the flags are all there is.
    pub global: Option<Cluster>,
    pub from: RegistryFrom,
    /// The platform whose Marketplace gets this side's resources (push only).
    pub publisher: Option<Arc<Platform>>,
}

impl<'a> Side<'a> {
    /// The DR standby as its flags give it (`--standby-registry`, its credentials and trust),
    /// nothing looked up; push adds its platform.
    pub fn standby(
        dest_repo: Option<&'a String>,
        creds: CredentialFlags<'a>,
        trust: Trust,
    ) -> Self {
        Side {
            role: Role::Standby,
            dest_repo,
            creds,
            trust,
            dest_flag: "--standby-registry",
            global: None,
            from: RegistryFrom::Flag,
            publisher: None,
        }
    }

    /// The registry given by the flags, else the platform's registry, with its credentials.
    pub async fn resolve(self) -> Result<Destination, Error> {
        match self.resolve_any().await? {
            Resolved::To(d) => Ok(*d),
            // only RegistryFrom::Vip leaves an external registry alone
            Resolved::External { .. } => Err(Error::internal(
                "an external registry was left alone where one is needed",
            )),
        }
    }

    /// As `resolve`, and an external registry found through the VIP is `Resolved::External`.
    pub async fn resolve_any(self) -> Result<Resolved, Error> {
        let r = self.resolve_inner().await;
        match self.role {
            Role::Primary => r,
            Role::Standby => r.map_err(|e| e.context("DR standby")),
        }
    }

    async fn resolve_inner(&self) -> Result<Resolved, Error> {
        let c = self.creds;
        let p = c.prefix;
        if let Some(address) = self.dest_repo {
            let by_vip = matches!(self.from, RegistryFrom::Vip { .. });
            // Push's --dest-repo names another registry than the platform's: the platform's
            // credentials are not sent there. Sync's --registry is the platform's own registry
            // by another address (upgrade.sh's meaning): they are, after a login file.
            if self.global.is_some() && !by_vip && !c.given() && !c.no_auth {
                return Err(Error::new(
                    ErrorKind::Usage,
                    format!(
                        "{} with --{p}platform-address needs the registry's credentials \
                         (--{p}username with --{p}password) or --{p}no-auth",
                        self.dest_flag
                    ),
                ));
            }
            let mut d = Destination::from_address(self.role, address, self.trust.clone())?;
            let credentials = c.resolve(&d.host)?;
            let source = match (&credentials, c.given()) {
                (None, _) => CredentialSource::None,
                (Some(_), true) => CredentialSource::Flags,
                (Some(_), false) => CredentialSource::AuthFile,
            };
            let (credentials, source) = match (&self.global, source) {
                (Some(global), CredentialSource::None) if by_vip && !c.no_auth => {
                    let product = platform_registry::product_registry(global).await?;
                    platform_credentials(global, &product).await?
                }
                _ => (credentials, source),
            };
            d.credentials = credentials;
            d.credential_origin = source.to_string();
            d.why = format!("from {}", self.dest_flag);
            d.platform = self.publisher.clone();
            return Ok(Resolved::To(Box::new(d)));
        }
        let (Some(global), false) = (&self.global, matches!(self.from, RegistryFrom::Flag)) else {
            return Err(Error::new(
                ErrorKind::Usage,
                format!(
                    "give {} or a platform to find the registry on",
                    self.dest_flag
                ),
            ));
        };
        let product = platform_registry::product_registry(global).await?;
        let mut d = match &self.from {
            RegistryFrom::Flag => unreachable!("refused above"),
            RegistryFrom::ProductBase { platform } => {
                let address = product.address.clone().ok_or_else(|| {
                    Error::new(
                        ErrorKind::Platform,
                        format!(
                            "cluster global: ProductBase base has no spec.registry.address; \
                             give the registry with {}",
                            self.dest_flag
                        ),
                    )
                })?;
                let mut d = Destination::from_server(self.role, &address, self.trust.clone(), p)?;
                d.why = format!(
                    "from ProductBase base in cluster global of {platform}{}",
                    if product.external {
                        ", an external registry"
                    } else {
                        ""
                    }
                );
                d
            }
            RegistryFrom::Vip { vip, named_by } => {
                if product.external {
                    return Ok(Resolved::External {
                        address: product.address.clone(),
                    });
                }
                let address = platform_registry::rebuild_from_vip(vip, product.address.as_deref());
                let mut d = Destination::from_address(self.role, &address, self.trust.clone())?;
                d.why = format!(
                    "built-in registry at the global VIP {vip} ({named_by}), port from \
                     ProductBase base"
                );
                d
            }
        };
        let (credentials, source) = if c.no_auth {
            (None, CredentialSource::None)
        } else if c.given() {
            (c.resolve(&d.host)?, CredentialSource::Flags)
        } else {
            platform_credentials(global, &product).await?
        };
        d.credentials = credentials;
        d.credential_origin = source.to_string();
        d.platform = self.publisher.clone();
        Ok(Resolved::To(Box::new(d)))
    }
}

/// The credentials the platform itself uses for its registry: the ProductBase's, else Secret
/// `cpaas-system/registry-admin`, else none.
async fn platform_credentials(
    global: &Cluster,
    product: &ProductRegistry,
) -> Result<(Option<Credentials>, CredentialSource), Error> {
    let (c, source) = if let Some(c) = product.credentials.clone() {
        (Some(c), CredentialSource::ProductBase)
    } else if let Some(c) = platform_registry::registry_admin_secret(global).await? {
        (Some(c), CredentialSource::Secret)
    } else {
        (None, CredentialSource::None)
    };
    Ok((c, source))
}

/// `host[:port][/prefix]`, or with `http://` (plain HTTP) / `https://` in front. IPv6 hosts
/// are bracketed (`[fd00::20]:11443`). Credentials in the address (`user:pass@host`) are
/// refused: they would be echoed in errors, logs and reports, where the flags' values never are.
pub(crate) fn split_host(s: &str, plain: bool) -> Result<(String, bool, String), Error> {
    let (rest, plain) = match s.trim().trim_end_matches('/') {
        h if h.starts_with("http://") => (h.trim_start_matches("http://"), true),
        h => (h.trim_start_matches("https://"), plain),
    };
    let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if host.contains('@') {
        return Err(Error::new(
            ErrorKind::Usage,
            "the registry address must not carry credentials (user:password@host): give them \
             with --username and --password-stdin (or FERRY_PASSWORD) instead",
        ));
    }
    if host.is_empty() {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("registry address {s:?} has no host"),
        ));
    }
    Ok((host.to_string(), plain, prefix.to_string()))
}
