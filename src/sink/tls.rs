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
//! webpki's verifier: full verification first; if it fails only because the certificate is a
//! CA (`CaUsedAsEndEntity`) or leads to no root (`UnknownIssuer`), a server certificate that
//! is byte-for-byte one of the explicitly trusted certificates is accepted, provided it is
//! within its validity period and valid for the name we connected to. Every other failure
//! (expired, wrong name, bad signature...) stands. The handshake signature is always checked.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

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
    let verifier = ExactOrWebPki::new(trusted, provider.clone());
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

/// The system roots, read once per process. Reading them means opening every file of
/// `/etc/ssl/certs` (about 150 on Debian) and parsing each: 10-20 ms, and before this every
/// HTTP client built read them again (two per registry, four for a DR pair), all before the
/// first request could leave.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// Built at the first certificate to verify, not with the client: a plain-HTTP registry
/// never reads the roots, and on a distant HTTPS one they are read while the handshake's first
/// round trip is on the wire rather than before the first request leaves.
#[derive(Debug)]
struct ExactOrWebPki {
    trusted: Vec<Vec<u8>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    built: OnceLock<std::result::Result<Built, String>>,
}

#[derive(Debug)]
struct Built {
    inner: Arc<WebPkiServerVerifier>,
    pinned: Vec<Vec<u8>>,
}

impl ExactOrWebPki {
    fn new(trusted: &[Vec<u8>], provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        ExactOrWebPki {
            trusted: trusted.to_vec(),
            provider,
            built: OnceLock::new(),
        }
    }

    /// System roots plus `trusted`; all of them are also accepted by exact match.
    fn built(&self) -> std::result::Result<&Built, rustls::Error> {
        let built = self.built.get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            // system roots, with $SSL_CERT_FILE / $SSL_CERT_DIR honoured; like Go, a server
            // certificate that is itself one of them is accepted by exact match too
            let mut pinned: Vec<Vec<u8>> = self.trusted.clone();
            for cert in system_roots() {
                pinned.push(cert.to_vec());
                let _ = roots.add(cert.clone());
            }
            for der in &self.trusted {
                // a certificate webpki cannot use as an anchor is still accepted by exact match
                let _ = roots.add(CertificateDer::from(der.clone()));
            }
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    // the caller's hint says what to give (--ca-file, certs.d, --insecure)
                    .map_err(|e| format!("this system has no CA certificate ({e})"))?;
            Ok(Built { inner, pinned })
        });
        built
            .as_ref()
            .map_err(|e| rustls::Error::General(e.clone()))
    }
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
        let built = self.built()?;
        let err =
            match built
                .inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
        if !exact_match_may_answer(&err)
            || !built
                .pinned
                .iter()
                .any(|p| p.as_slice() == end_entity.as_ref())
        {
            return Err(err);
        }
        // the certificate is one the user trusts, refused only for what it is (CA:TRUE) or
        // because webpki cannot use it as an anchor: everything else is still checked
        check_validity(end_entity.as_ref(), now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| err.clone())?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|e| match e {
                webpki::Error::CertNotValidForName(cx) => rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext {
                        expected: cx.expected,
                        presented: cx.presented,
                    },
                ),
                _ => err.clone(),
            })?;
        tracing::debug!(
            "server certificate accepted as an explicitly trusted certificate (exact match): {err}"
        );
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        // what webpki's verifier does, without waiting for the roots it is built with
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The verification failures an exact match may answer: the certificate carries `CA:TRUE`
/// (`openssl req -x509`), or no chain leads to a root (webpki could not take it as an
/// anchor). Expiry, a wrong name, a bad signature, revocation and the rest are never
/// overridden.
fn exact_match_may_answer(e: &rustls::Error) -> bool {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => true,
        rustls::Error::InvalidCertificate(C::Other(other)) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}

/// The certificate's validity period (notBefore, notAfter) holds `now`.
fn check_validity(der: &[u8], now: UnixTime) -> std::result::Result<(), rustls::Error> {
    use rustls::CertificateError as C;
    let (not_before, not_after) =
        validity(der).ok_or(rustls::Error::InvalidCertificate(C::BadEncoding))?;
    let time = now.as_secs();
    if time < not_before {
        return Err(rustls::Error::InvalidCertificate(C::NotValidYetContext {
            time: now,
            not_before: UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_before)),
        }));
    }
    if time > not_after {
        return Err(rustls::Error::InvalidCertificate(C::ExpiredContext {
            time: now,
            not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_after)),
        }));
    }
    Ok(())
}

/// One DER element: (tag, contents, what follows).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// notBefore and notAfter of an X.509 certificate, in seconds since the Unix epoch
/// (`Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
/// serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter }, ..}, ..}`).
fn validity(der: &[u8]) -> Option<(u64, u64)> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, cert, _) = der_element(der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = der_element(cert)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2; // version
    }
    let rest = der_element(tbs)?.2; // serialNumber
    let rest = der_element(rest)?.2; // signature algorithm
    let rest = der_element(rest)?.2; // issuer
    let (SEQUENCE, validity, _) = der_element(rest)? else {
        return None;
    };
    let (tag, not_before, rest) = der_element(validity)?;
    let not_before = asn1_time(tag, not_before)?;
    let (tag, not_after, _) = der_element(rest)?;
    Some((not_before, asn1_time(tag, not_after)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), as
/// RFC 5280 has them, to seconds since the Unix epoch (0 for times before it).
fn asn1_time(tag: u8, text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, hour, min, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    // days from the civil date (Howard Hinnant's algorithm)
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3_600 + min * 60 + sec;
    Some(secs.max(0) as u64)
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

#[cfg(test)]
mod exact_match_tests {
    use super::*;

    /// A self-signed `CA:TRUE` certificate for 127.0.0.1 (as `openssl req -x509` makes),
    /// valid from `from` to `to` (years).
    fn self_signed_ca(from: i32, to: i32) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn verify(pinned: &[u8], name: &str) -> std::result::Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let v = ExactOrWebPki::new(&[pinned.to_vec()], provider);
        v.verify_server_cert(
            &CertificateDer::from(pinned.to_vec()),
            &[],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
    }

    #[test]
    fn a_pinned_ca_true_certificate_is_accepted_within_its_validity_for_its_name() {
        let cert = self_signed_ca(2020, 2200);
        verify(&cert, "127.0.0.1").unwrap();
        let e = verify(&cert, "127.0.0.2").unwrap_err();
        assert!(e.to_string().contains("not valid for name"), "{e}");
    }

    #[test]
    fn a_pinned_certificate_that_expired_or_is_not_valid_yet_is_refused() {
        let e = verify(&self_signed_ca(2019, 2020), "127.0.0.1").unwrap_err();
        assert!(e.to_string().contains("certificate expired"), "{e}");
        let e = verify(&self_signed_ca(2190, 2200), "127.0.0.1").unwrap_err();
        assert!(e.to_string().contains("not valid yet"), "{e}");
    }

    #[test]
    fn the_exact_match_answers_only_ca_true_and_unknown_issuer() {
        use rustls::CertificateError as C;
        let other = |e: webpki::Error| {
            rustls::Error::InvalidCertificate(C::Other(rustls::OtherError(Arc::new(e))))
        };
        assert!(exact_match_may_answer(&other(
            webpki::Error::CaUsedAsEndEntity
        )));
        assert!(exact_match_may_answer(&rustls::Error::InvalidCertificate(
            C::UnknownIssuer
        )));
        assert!(!exact_match_may_answer(&rustls::Error::InvalidCertificate(
            C::Expired
        )));
        assert!(!exact_match_may_answer(&rustls::Error::InvalidCertificate(
            C::BadSignature
        )));
        assert!(!exact_match_may_answer(&other(webpki::Error::CertRevoked)));
    }

    #[test]
    fn validity_is_read_from_the_certificate() {
        let cert = self_signed_ca(2020, 2030);
        // 2020-01-01 and 2030-01-01, 00:00:00 UTC
        assert_eq!(validity(&cert), Some((1_577_836_800, 1_893_456_000)));
        assert_eq!(asn1_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(asn1_time(0x17, b"000301000000Z"), Some(951_868_800));
        assert_eq!(asn1_time(0x18, b"20000301000000Z"), Some(951_868_800));
        assert_eq!(asn1_time(0x18, b"2000030100000Z"), None);
        assert_eq!(asn1_time(0x17, b"001301000000Z"), None);
        assert_eq!(validity(b"\x30\x03\x02\x01"), None);
    }
}
