//! Which certificates a registry is trusted with, the way the node's container tools decide:
//!
//! * the system roots (rustls-native-certs, which honours `$SSL_CERT_FILE` / `$SSL_CERT_DIR`);
//! * `--ca-file`, else the CA files docker, podman/skopeo and containerd use for that
//!   registry: `/etc/docker/certs.d/<host[:port]>/*.crt`, `/etc/containers/certs.d/<...>/*.crt`,
//!   `/etc/containerd/certs.d/<...>/*.crt` and the `ca` named in its `hosts.toml`;
//! * extra roots handed in (the cluster CA of a kubeconfig).
//!
//! Why not reqwest's own root handling: a registry certificate made by
//! `openssl req -x509` (as docker's docs suggest) carries `CA:TRUE`, and webpki refuses it as
//! a server certificate (`CaUsedAsEndEntity`) even when it is exactly the certificate the
//! user told us to trust. Go's TLS stack (docker, skopeo, violet) accepts that case. We wrap
//! webpki's verifier: full verification first; if it fails, a server certificate that is
//! byte-for-byte one of the explicitly trusted certificates is accepted, provided it is valid
//! for the name we connected to. The handshake signature is always checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::error::{Error, ErrorKind, Result};

/// Where container tools keep per-registry CA files (`<root>/<host[:port]>/`).
const CERTS_D: &[&str] = &[
    "/etc/docker/certs.d",
    "/etc/containers/certs.d",
    "/etc/containerd/certs.d",
];

/// PEM certificates in a file (DER each).
pub fn read_pem(path: &Path, what: &str) -> Result<Vec<Vec<u8>>> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::Usage,
            format!("{what} {}: cannot read: {e}", path.display()),
        )
    })?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            Error::new(
                ErrorKind::Usage,
                format!("{what} {}: not PEM certificates: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("{what} {}: no certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

/// The CA files the node's container tools would use for `host` (as `host[:port]`), in the
/// order docker, containers (podman/skopeo), containerd.
pub fn node_ca_files(host: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in CERTS_D {
        let dir = Path::new(root).join(host);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut crts: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        crts.sort();
        out.extend(crts);
        if root.ends_with("containerd/certs.d") {
            out.extend(hosts_toml_cas(&dir));
        }
    }
    out.dedup();
    out
}

/// containerd's `hosts.toml`: `ca = "file"` or `ca = ["a", "b"]`, at the top level or under
/// `[host."..."]`; relative paths are relative to the directory.
fn hosts_toml_cas(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(dir.join("hosts.toml")) else {
        return Vec::new();
    };
    let Ok(doc) = text.parse::<toml::Table>() else {
        tracing::warn!(
            "{}: not valid TOML; ignored",
            dir.join("hosts.toml").display()
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut take = |v: &toml::Value| {
        let items: Vec<&toml::Value> = match v {
            toml::Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for s in items.into_iter().filter_map(|i| i.as_str()) {
            out.push(dir.join(s));
        }
    };
    if let Some(ca) = doc.get("ca") {
        take(ca);
    }
    if let Some(toml::Value::Table(hosts)) = doc.get("host") {
        for h in hosts.values() {
            if let Some(ca) = h.get("ca") {
                take(ca);
            }
        }
    }
    out
}

/// Whether to offer HTTP/2: only when `FERRY_HTTP2` is set. Registries written in Go
/// (Distribution, Harbor's) speak HTTP/2 over TLS, and Go's HTTP/2 server lets a client have
/// only 1 MiB unacknowledged per connection: every upload shares that one window, so a push
/// is bound by 1 MiB per round trip (about 25 MB/s at 40 ms). Over HTTP/1.1 each upload has
/// its own TCP connection and window. Measured through a 40 ms RTT (docs/benchmarks.md,
/// bench-latency): 239 MB in large blobs 9.7 s over HTTP/2, 3.4-3.5 s over HTTP/1.1; 2,400
/// small blobs 14.2-14.4 s against 9.0-9.4 s; no delay 1.08 s against 1.00 s.
pub fn http2_wanted() -> bool {
    std::env::var_os("FERRY_HTTP2").is_some()
}

/// A rustls client configuration: system roots plus `trusted` (also accepted by exact match).
pub fn client_config(trusted: &[Vec<u8>]) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    // system roots, with $SSL_CERT_FILE / $SSL_CERT_DIR honoured; like Go, a server
    // certificate that is itself one of them is accepted by exact match too
    let mut pinned: Vec<Vec<u8>> = trusted.to_vec();
    for cert in rustls_native_certs::load_native_certs().certs {
        pinned.push(cert.to_vec());
        let _ = roots.add(cert);
    }
    for der in trusted {
        // a certificate webpki cannot use as an anchor is still accepted by exact match
        let _ = roots.add(CertificateDer::from(der.clone()));
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::internal(format!("TLS verifier: {e}")))?;
    let verifier = ExactOrWebPki { inner, pinned };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = if http2_wanted() {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

#[derive(Debug)]
struct ExactOrWebPki {
    inner: Arc<WebPkiServerVerifier>,
    pinned: Vec<Vec<u8>>,
}

impl ServerCertVerifier for ExactOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(v) => Ok(v),
            Err(e)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_slice() == end_entity.as_ref()) =>
            {
                let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| e.clone())?;
                cert.verify_is_valid_for_subject_name(server_name)
                    .map_err(|_| e.clone())?;
                tracing::debug!("server certificate accepted as an explicitly trusted certificate (exact match): {e}");
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_toml_names_cas() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hosts.toml"),
            "server = \"https://r:5000\"\n[host.\"https://r:5000\"]\n  ca = [\"a.pem\", \"/etc/b.pem\"]\n",
        )
        .unwrap();
        let cas = hosts_toml_cas(dir.path());
        assert_eq!(cas, [dir.path().join("a.pem"), PathBuf::from("/etc/b.pem")]);
    }
}
