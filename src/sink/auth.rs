//! Credentials and how they reach a registry: HTTP basic, or bearer tokens obtained through
//! the `WWW-Authenticate` challenge (the Docker token protocol: `GET <realm>?service=..&scope=..`
//! with basic credentials, answered by `{"token": ..}`). The exchange itself is in
//! `transport.rs`, over the registry's own HTTP client and TLS settings.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use serde::Deserialize;

/// A password or token. Its `Debug`/`Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// How a registry wants to be authenticated, learned from `GET /v2/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    None,
    Basic,
    Bearer(Challenge),
}

/// Where a bearer registry's tokens come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: Option<String>,
}

pub fn scheme_of(www_authenticate: Option<&str>) -> Scheme {
    let Some(header) = www_authenticate.map(str::trim_start) else {
        return Scheme::None;
    };
    let (name, params) = header.split_once(' ').unwrap_or((header, ""));
    match name.to_ascii_lowercase().as_str() {
        "bearer" => {
            let params = challenge_params(params);
            match params.get("realm") {
                Some(realm) => Scheme::Bearer(Challenge {
                    realm: realm.clone(),
                    service: params.get("service").cloned(),
                }),
                // a bearer challenge without a realm cannot be answered; basic may still work
                None => Scheme::Basic,
            }
        }
        "basic" => Scheme::Basic,
        _ => Scheme::None,
    }
}

/// `key="value", key2=value2`: the parameters of a challenge (quoted values may hold commas,
/// as scopes do).
fn challenge_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap_or(quoted.len());
                (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim(), &after[end..])
            }
        };
        out.insert(key, value.to_string());
        rest = next.trim_start().trim_start_matches(',');
    }
    out
}

/// The answer of a token server (Distribution says `token`, OAuth2-style ones `access_token`).
#[derive(Deserialize)]
pub(super) struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
}

impl TokenAnswer {
    pub fn into_token(self) -> Option<String> {
        self.token.or(self.access_token).filter(|t| !t.is_empty())
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Credentials for `host` from `$REGISTRY_AUTH_FILE`, else `~/.docker/config.json`
/// (the `auths` section; credential helpers are not supported).
pub fn from_auth_files(host: &str) -> Option<Credentials> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        files.push(PathBuf::from(home).join(".docker/config.json"));
    }
    files
        .iter()
        .find_map(|f| lookup(&std::fs::read(f).ok()?, host))
}

fn lookup(config: &[u8], host: &str) -> Option<Credentials> {
    let cfg: DockerConfig = serde_json::from_slice(config).ok()?;
    let entry = cfg.auths.iter().find_map(|(k, v)| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        (k.trim_end_matches('/') == host).then_some(v)
    })?;
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Some(Credentials {
            username: u.clone(),
            password: Secret::new(p.clone()),
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.as_ref()?)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credentials {
        username: u.to_string(),
        password: Secret::new(p),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let c = Credentials {
            username: "admin".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(c.basic_header().starts_with("Basic "));
    }

    #[test]
    fn reads_docker_config() {
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:with:colons");
        let cfg = format!(r#"{{"auths":{{"https://reg.local:5000":{{"auth":"{auth}"}}}}}}"#);
        let c = lookup(cfg.as_bytes(), "reg.local:5000").unwrap();
        assert_eq!(c.username, "u");
        assert_eq!(c.password.expose(), "p:with:colons");
        assert!(lookup(cfg.as_bytes(), "other:5000").is_none());
    }

    #[test]
    fn schemes() {
        assert_eq!(
            scheme_of(Some("Bearer realm=\"x\"")),
            Scheme::Bearer(Challenge {
                realm: "x".into(),
                service: None
            })
        );
        assert_eq!(
            scheme_of(Some("Basic realm=\"basic-realm\"")),
            Scheme::Basic
        );
        assert_eq!(scheme_of(None), Scheme::None);
    }
}

#[cfg(test)]
mod challenge_tests {
    use super::*;

    #[test]
    fn challenges_are_parsed() {
        let h = r#"Bearer realm="https://auth.example/token",service="harbor-registry",scope="repository:a/b:pull,push""#;
        assert_eq!(
            scheme_of(Some(h)),
            Scheme::Bearer(Challenge {
                realm: "https://auth.example/token".into(),
                service: Some("harbor-registry".into()),
            })
        );
        assert_eq!(scheme_of(Some("Basic realm=\"x\"")), Scheme::Basic);
        assert_eq!(scheme_of(Some("bearer service=x")), Scheme::Basic);
        assert_eq!(scheme_of(None), Scheme::None);
        let p = challenge_params(r#"realm=http://t/token, service="s""#);
        assert_eq!(p["realm"], "http://t/token");
        assert_eq!(p["service"], "s");
    }
}
