//! `ferry package create` / `build`: packages made straight from a registry.
//!
//! * [`discover`] — what an artifact is and which images it names (a plugin's
//!   `module-plugin.yaml` and `values.yaml`, a bundle's CSV); pure parsing, unit-tested.
//! * [`resolve`]  — `create`: pulls the artifact, resolves every image to its digests per
//!   platform, writes `package.yaml` and `images.lock`.
//! * [`lock`]     — the `images.lock` format.
//! * [`build`]    — `build`: fetches the documents of the lock, writes the `.tgz`.
//! * [`fetch`]    — the blob pipeline of `build`: N fetches at once, one written at a time,
//!   the others held in memory up to a budget and spilled beyond it, a verified cache.
//!
//! Registries are spoken to through the sink's [`Registry`] (same transport, auth, TLS and
//! retries as `push`), only reading.

pub mod build;
pub mod discover;
pub mod fetch;
pub mod lock;
mod progress;
pub mod resolve;
pub mod sign;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::sink::{auth, Credentials, Registry, RegistryOptions, RetryPolicy};

/// How to reach the source registries (the flags of both commands).
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub plain: bool,
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    /// `--username`/`--password`: for `credentials_host` only; every other host gets the
    /// login of `$REGISTRY_AUTH_FILE` / `~/.docker/config.json`, if any. Credentials are never
    /// sent to a host they were not given for (a third-party image's registry).
    pub credentials: Option<Credentials>,
    pub credentials_host: String,
}

/// One checked [`Registry`] per host, made on first use.
pub struct Connections {
    access: Access,
    open: Mutex<HashMap<String, Arc<Registry>>>,
}

impl Connections {
    pub fn new(access: Access) -> Self {
        Connections {
            access,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(&self, host: &str) -> Result<Arc<Registry>> {
        let mut open = self.open.lock().await;
        if let Some(r) = open.get(host) {
            return Ok(r.clone());
        }
        let (credentials, origin) =
            if host == self.access.credentials_host && self.access.credentials.is_some() {
                (self.access.credentials.clone(), "from the command line")
            } else {
                (auth::from_auth_files(host), "from ~/.docker/config.json")
            };
        let registry = Registry::new(RegistryOptions {
            host: host.to_string(),
            prefix: String::new(),
            plain_http: self.access.plain,
            insecure: self.access.insecure,
            ca_file: self.access.ca_file.clone(),
            extra_roots: Vec::new(),
            credential_origin: credentials.as_ref().map(|_| origin.to_string()),
            credentials,
            token_realms: Vec::new(),
            retry: retry_policy(),
            timeout: Duration::from_secs(60),
        })?;
        registry
            .check()
            .await
            .map_err(|e| e.context(format!("source registry {host}")))?;
        let registry = Arc::new(registry);
        open.insert(host.to_string(), registry.clone());
        Ok(registry)
    }

    /// Requests sent to every registry so far (for the report).
    pub async fn requests(&self) -> u64 {
        let open = self.open.lock().await;
        open.values()
            .map(|r| {
                r.counters
                    .requests
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum()
    }
}

/// `FERRY_RETRY_BASE_MS` shortens the backoff (tests), as for push.
fn retry_policy() -> RetryPolicy {
    let mut p = RetryPolicy::default();
    if let Some(ms) = std::env::var("FERRY_RETRY_BASE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        p.base = Duration::from_millis(ms);
    }
    p
}

/// `os/arch[/variant]`, as `--platforms` spells it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let ok = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric());
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(Error::new(
                ErrorKind::Usage,
                format!("--platforms: {s:?} is not os/arch[/variant] (e.g. linux/amd64)"),
            )),
        }
    }

    /// Whether an index entry's or a config's `platform` object is this one (a variant asked
    /// for must match; none asked takes any).
    pub fn matches(&self, p: &serde_json::Value) -> bool {
        let field = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
        field("os") == self.os
            && field("architecture") == self.arch
            && self
                .variant
                .as_deref()
                .is_none_or(|v| field("variant") == v)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The file name `build` writes: `<name>.<arch>.v<version>.tgz`.
pub fn file_name(meta: &crate::source::PackageMeta) -> String {
    format!(
        "{}.{}.v{}.tgz",
        meta.metadata.name,
        meta.file_arch(),
        meta.metadata.version.trim_start_matches('v')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches(
            &serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"})
        ));
        assert!(!p.matches(&serde_json::json!({"os": "linux", "architecture": "amd64"})));
        let v = Platform::parse("linux/arm/v7").unwrap();
        assert!(
            !v.matches(&serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v6"}))
        );
        assert!(Platform::parse("amd64").is_err());
        assert_eq!(v.to_string(), "linux/arm/v7");
    }
}
