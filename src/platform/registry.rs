//! Where the platform keeps its images: `ProductBase` `base` in cluster `global`
//! (`product.alauda.io`, cluster-scoped), `spec.registry`, and the credentials the
//! platform itself uses for it (the ProductBase, else Secret `cpaas-system/registry-admin`).

use base64::Engine as _;
use serde_json::Value;

use super::artifacts::NAMESPACE;
use super::cluster::status_code;
use super::Cluster;
use crate::error::{Error, ErrorKind, Result};
use crate::sink::{Credentials, Secret};

/// What `ProductBase` `base` says about the registry.
#[derive(Debug, Clone)]
pub struct ProductRegistry {
    /// `spec.registry.address` (`host[:port]`), if set.
    pub address: Option<String>,
    /// `spec.registry.external`: the platform uses a registry it does not run.
    pub external: bool,
    /// `spec.registry.username` / `password`, when both are set.
    pub credentials: Option<Credentials>,
}

/// Reads `ProductBase` `base`, whichever of its versions the cluster serves.
pub async fn product_registry(global: &Cluster) -> Result<ProductRegistry> {
    let (ar, _) = global.discover("product.alauda.io", "ProductBase").await?;
    let base = global
        .all(&ar)
        .get("base")
        .await
        .map_err(|e| global.error(e, &format!("reading {}/base", ar.kind)))?;
    Ok(parse_product_registry(&base.data))
}

pub(crate) fn parse_product_registry(data: &Value) -> ProductRegistry {
    let reg = &data["spec"]["registry"];
    let text = |k: &str| {
        reg[k]
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let credentials = match (text("username"), text("password")) {
        (Some(username), Some(password)) => Some(Credentials {
            username,
            password: Secret::new(password),
        }),
        _ => None,
    };
    ProductRegistry {
        address: text("address"),
        external: reg["external"].as_bool().unwrap_or(false),
        credentials,
    }
}

/// Secret `cpaas-system/registry-admin` (keys `username`, `password`), if it exists.
///
/// Read as raw JSON and decoded here, not as a typed `k8s_openapi` Secret: when a typed read
/// fails to parse, kube-client logs the whole answer (the password in it); and our errors
/// name the key that is wrong, never its value or the answer.
pub async fn registry_admin_secret(global: &Cluster) -> Result<Option<Credentials>> {
    let what = format!("Secret {NAMESPACE}/registry-admin");
    let req = http::Request::get(format!(
        "/api/v1/namespaces/{NAMESPACE}/secrets/registry-admin"
    ))
    .body(Vec::new())
    .expect("a static request is valid");
    let answer = match global.client.request_text(req).await {
        Ok(text) => Secret::new(text),
        Err(e) if status_code(&e) == Some(404) => return Ok(None),
        Err(e) => return Err(global.error(e, &format!("reading {what}"))),
    };
    let bad = |why: String| {
        Error::new(
            ErrorKind::Platform,
            format!(
                "cluster {}: {what}: {why}; give the registry credentials with \
                 --username/--password",
                global.name
            ),
        )
    };
    let secret: Value = serde_json::from_str(answer.expose()).map_err(|e| {
        // the position only: serde's message could quote the answer
        bad(format!(
            "the answer is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let data = match &secret["data"] {
        Value::Object(m) => m,
        Value::Null => &serde_json::Map::new(),
        _ => return Err(bad("data is not a map".into())),
    };
    let field = |k: &str| -> Result<Option<String>> {
        let Some(v) = data.get(k) else {
            return Ok(None);
        };
        let b64 = v
            .as_str()
            .ok_or_else(|| bad(format!("data.{k} is not a string")))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| bad(format!("data.{k} is not base64")))?;
        Ok(Some(String::from_utf8_lossy(&raw).trim_end().to_string()).filter(|s| !s.is_empty()))
    };
    match (field("username")?, field("password")?) {
        (Some(username), Some(password)) => Ok(Some(Credentials {
            username,
            password: Secret::new(password),
        })),
        _ => Err(bad("it has no username/password keys".into())),
    }
}

/// Port the built-in registry listens on when the ProductBase address names none.
pub const DEFAULT_REGISTRY_PORT: u16 = 11443;

/// The built-in registry's address as this node reaches it: the global VIP (bracketed when it
/// is IPv6) with the port of the ProductBase address, else 11443.
pub fn rebuild_from_vip(vip: &str, product_address: Option<&str>) -> String {
    let vip = vip.trim().trim_start_matches('[').trim_end_matches(']');
    let port = product_address
        .and_then(port_of)
        .unwrap_or(DEFAULT_REGISTRY_PORT);
    if vip.contains(':') {
        format!("[{vip}]:{port}")
    } else {
        format!("{vip}:{port}")
    }
}

/// The port of `host:port`, `[v6]:port` (none for a bare host or a bare IPv6 address).
fn port_of(address: &str) -> Option<u16> {
    let a = address
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let a = a.split('/').next().unwrap_or(a);
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split_once("]:").and_then(|(_, p)| p.parse().ok());
    }
    match a.split(':').collect::<Vec<_>>()[..] {
        [_, p] => p.parse().ok(),
        _ => None,
    }
}

/// Where the credentials for the registry came from (for the one line printed before any
/// upload; never the secret itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Flags,
    ProductBase,
    Secret,
    /// Docker/podman login files on this machine.
    AuthFile,
    None,
}

impl std::fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CredentialSource::Flags => "from the command line",
            CredentialSource::ProductBase => "from ProductBase base (spec.registry)",
            CredentialSource::Secret => {
                return write!(f, "from Secret {NAMESPACE}/registry-admin");
            }
            CredentialSource::AuthFile => "from a docker/podman login file",
            CredentialSource::None => "none (anonymous)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_rebuilds_the_registry_address() {
        assert_eq!(
            rebuild_from_vip("10.0.0.5", Some("1.2.3.4:11443")),
            "10.0.0.5:11443"
        );
        assert_eq!(
            rebuild_from_vip("10.0.0.5", Some("reg.local:5000")),
            "10.0.0.5:5000"
        );
        assert_eq!(rebuild_from_vip("10.0.0.5", None), "10.0.0.5:11443");
        assert_eq!(
            rebuild_from_vip("10.0.0.5", Some("reg.local")),
            "10.0.0.5:11443"
        );
        assert_eq!(
            rebuild_from_vip("fd00::10", Some("[fd00::1]:8443")),
            "[fd00::10]:8443"
        );
        assert_eq!(
            rebuild_from_vip("[fd00::10]", Some("fd00::1")),
            "[fd00::10]:11443"
        );
    }

    #[test]
    fn product_registry_fields() {
        let v = serde_json::json!({"spec": {"registry": {
            "address": "192.168.1.10:11443", "username": "admin", "password": "pw"}}});
        let r = parse_product_registry(&v);
        assert_eq!(r.address.as_deref(), Some("192.168.1.10:11443"));
        assert!(!r.external);
        assert_eq!(r.credentials.unwrap().username, "admin");
        let v = serde_json::json!({"spec": {"registry": {"address": "h:1", "username": "a",
            "external": true}}});
        let r = parse_product_registry(&v);
        assert!(r.external);
        assert!(
            r.credentials.is_none(),
            "a username without a password is not credentials"
        );
        assert!(parse_product_registry(&serde_json::json!({}))
            .address
            .is_none());
    }
}
