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

mod side;

pub use side::{RegistryFrom, Resolved, Side};

use super::platform_flags::StdinSecret;
use crate::error::{Error, ErrorKind};
use crate::platform::registry::CredentialSource;
use crate::platform::Platform;
use crate::sink::{auth, Credentials, RealmHost, Registry, RegistryOptions, RetryPolicy, Secret};

/// Which side of a DR pair a destination is (the pipeline's, which the run acts on too).
pub use crate::pipeline::Role;

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
    pub credential_origin: CredentialSource,
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
            credential_origin: CredentialSource::None,
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
        // what is left names no scheme of its own (`https://http://host` must not become
        // plain HTTP through the flag-address parser, which honours a leading http://)
        if scheme_less.contains("://") {
            return Err(Error::new(
                ErrorKind::Platform,
                format!(
                    "ProductBase base names the registry as {a:?}, which is not \
                     [https://]host[:port]: give the registry with the registry flag"
                ),
            ));
        }
        Self::from_address(role, scheme_less, trust).map_err(|e| {
            Error::new(
                ErrorKind::Platform,
                format!(
                    "ProductBase base names the registry as {a:?}: {}; give the registry with \
                     the registry flag",
                    e.message
                ),
            )
        })
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
            credential_origin: Some(self.credential_origin.to_string()),
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
    let valid = !host.contains(|c: char| c.is_whitespace() || c == '\\')
        && url::Url::parse(&format!("https://{host}/"))
            .is_ok_and(|u| u.host_str().is_some() && u.path() == "/");
    if !valid {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("registry address {s:?} is not host[:port][/prefix]"),
        ));
    }
    Ok((host.to_string(), plain, prefix.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(address: &str, plain: bool) -> Result<Destination, Error> {
        let trust = Trust {
            plain,
            ..Trust::default()
        };
        Destination::from_server(Role::Primary, address, trust, "")
    }

    #[test]
    fn a_server_never_chooses_plain_http() {
        for a in [
            "http://r:5000",
            "HTTP://r:5000",
            " http://r:5000",
            "https://http://r:5000",
            "HTTPS://http://r:5000",
            "https://HTTP://r:5000",
            "bad host:5000",
            "r:5000\\x",
        ] {
            assert!(server(a, false).is_err(), "{a:?} was accepted");
        }
        let d = server("https://r:5000", false).unwrap();
        assert!(!d.plain);
        assert_eq!(d.host, "r:5000");
        let d = server("r:5000", false).unwrap();
        assert!(!d.plain);
        let d = server("http://r:5000", true).unwrap();
        assert!(d.plain && d.host == "r:5000");
    }
}
