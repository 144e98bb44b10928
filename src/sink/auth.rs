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

/// A host whose token service may receive a registry's credentials although it is not the
/// registry's own host (`--allow-token-realm HOST`). A host, not a port: the registry's own
/// host is trusted on every port too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmHost(url::Host<String>);

impl fmt::Display for RealmHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `--allow-token-realm`'s value: a host name or an IP address (IPv6 bare or bracketed).
pub fn parse_realm_host(s: &str) -> Result<RealmHost, String> {
    let s = s.trim();
    let refuse = || {
        format!(
            "{s:?} is not a host: give the token service's host name or IP address, without \
             scheme, port or path (e.g. --allow-token-realm auth.example.com)"
        )
    };
    if let Ok(v6) = s.parse::<std::net::Ipv6Addr>() {
        return Ok(RealmHost(url::Host::Ipv6(v6)));
    }
    if s.is_empty() || s.contains(['/', '@', '?', '#']) {
        return Err(refuse());
    }
    let u = url::Url::parse(&format!("https://{s}/")).map_err(|_| refuse())?;
    if u.port().is_some() || s.rsplit_once(':').is_some_and(|(_, p)| !p.ends_with(']')) {
        return Err(refuse());
    }
    u.host().map(|h| RealmHost(h.to_owned())).ok_or_else(refuse)
}

/// Why the registry's credentials must not go to the token service at `realm`, if they must
/// not. Rules: the realm is http(s); it is not weaker than the registry (an HTTPS registry
/// needs an HTTPS realm; a plain-HTTP registry may have either); it is on the registry's own
/// host (any port), or on one the user allowed. Docker clients follow any realm: a registry
/// (or whoever answers in its name) can otherwise collect the password in the clear, or on a
/// host of its choosing.
pub fn realm_refusal(
    realm: &url::Url,
    registry: &url::Url,
    allowed: &[RealmHost],
) -> Option<RealmRefusal> {
    match (registry.scheme(), realm.scheme()) {
        (_, "https") | ("http", "http") => {}
        ("https", "http") => return Some(RealmRefusal::PlainHttp),
        _ => return Some(RealmRefusal::NotHttp),
    }
    let Some(host) = realm.host().map(|h| h.to_owned()) else {
        return Some(RealmRefusal::NotHttp);
    };
    if registry.host().map(|h| h.to_owned()).as_ref() == Some(&host)
        || allowed.iter().any(|a| a.0 == host)
    {
        return None;
    }
    Some(RealmRefusal::OtherHost(RealmHost(host)))
}

#[derive(Debug, PartialEq, Eq)]
pub enum RealmRefusal {
    /// An `http://` realm for an HTTPS registry: the credentials would travel in the clear.
    PlainHttp,
    /// Neither http nor https.
    NotHttp,
    /// On a host other than the registry's, not named by `--allow-token-realm`.
    OtherHost(RealmHost),
}

/// A realm as messages show it: scheme, host, port and path; no user info, no query.
pub fn realm_label(realm: &url::Url) -> String {
    let host = match (realm.host_str(), realm.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    format!("{}://{host}{}", realm.scheme(), realm.path())
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
    fn realms_follow_the_registrys_scheme_and_host() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        let allowed = [parse_realm_host("auth.example.com").unwrap()];
        let https = u("https://reg.example.com:5000/");
        let plain = u("http://reg.example.com:5000/");
        // own host, any port, same or stronger scheme
        for (reg, realm) in [
            (&https, "https://reg.example.com/token"),
            (&https, "https://REG.example.com:8443/token"),
            (&plain, "http://reg.example.com:5001/token"),
            (&plain, "https://reg.example.com/token"),
            (&https, "https://auth.example.com/service/token"),
            (&plain, "http://auth.example.com/token"),
        ] {
            assert_eq!(realm_refusal(&u(realm), reg, &allowed), None, "{realm}");
        }
        // weaker scheme: never, allowed host or not
        for realm in [
            "http://reg.example.com:5000/token",
            "http://auth.example.com/token",
        ] {
            assert_eq!(
                realm_refusal(&u(realm), &https, &allowed),
                Some(RealmRefusal::PlainHttp),
                "{realm}"
            );
        }
        assert_eq!(
            realm_refusal(&u("ftp://reg.example.com/t"), &plain, &allowed),
            Some(RealmRefusal::NotHttp)
        );
        // another host, not allowed
        let other = realm_refusal(&u("https://evil.example.net/token"), &https, &allowed);
        assert_eq!(
            other,
            Some(RealmRefusal::OtherHost(
                parse_realm_host("evil.example.net").unwrap()
            ))
        );
        let ip = u("https://127.0.0.1:5000/");
        assert!(realm_refusal(&u("https://127.0.0.2:1/t"), &ip, &[]).is_some());
        assert!(realm_refusal(&u("https://127.0.0.1:1/t"), &ip, &[]).is_none());
        assert!(realm_refusal(&u("https://localhost:5000/t"), &ip, &[]).is_some());
        let v6 = u("https://[::1]:5000/");
        assert!(realm_refusal(&u("https://[::1]:9/t"), &v6, &[]).is_none());
        assert!(realm_refusal(
            &u("https://[fd00::2]/t"),
            &v6,
            &[parse_realm_host("fd00::2").unwrap()]
        )
        .is_none());
        assert!(realm_refusal(
            &u("https://[fd00::2]/t"),
            &v6,
            &[parse_realm_host("[fd00::2]").unwrap()]
        )
        .is_none());
    }

    #[test]
    fn allowed_realm_hosts_are_hosts() {
        assert_eq!(
            parse_realm_host("Auth.Example.com").unwrap().to_string(),
            "auth.example.com"
        );
        assert_eq!(
            parse_realm_host("10.0.0.5").unwrap().to_string(),
            "10.0.0.5"
        );
        for bad in [
            "",
            "https://auth.example.com",
            "auth.example.com:443",
            "auth.example.com/token",
            "u:p@auth.example.com",
            "[fd00::2]:443",
        ] {
            assert!(parse_realm_host(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            realm_label(&url::Url::parse("https://u:p@h:1/token?x=secret").unwrap()),
            "https://h:1/token"
        );
    }

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
