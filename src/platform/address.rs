//! The platform's address as the user gives it (`--platform-address`) and the CA file that
//! trusts it (`--platform-ca-file`): parsed and checked before any call is made.

use url::Url;

use crate::error::{Error, ErrorKind, Result};

pub(super) fn host_of(u: &Url) -> String {
    match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => u.to_string(),
    }
}

/// `https://host[:port]` (a bare host means https). A path is dropped with a warning: a URL
/// pasted from the browser (`https://host/console-platform/...`) names the same platform.
/// `http://` is refused unless `plain_http` (the user's `--platform-plain-http`): the token,
/// the password and then the registry Secret would travel in clear.
pub fn parse_address(s: &str, plain_http: bool) -> Result<Url> {
    let bad = |why: String| {
        Error::new(
            ErrorKind::Usage,
            format!("--platform-address {s:?}: {why} (expected https://host[:port])"),
        )
    };
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("https://{s}")
    };
    let mut u = Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
    match (u.scheme(), plain_http) {
        ("https", _) => {}
        ("http", true) => tracing::warn!(
            "the platform at {} is spoken to in plain HTTP (--platform-plain-http): its token, \
             password and the registry credentials it holds travel unencrypted",
            host_of(&u)
        ),
        ("http", false) => {
            return Err(bad(
                "plain HTTP would send the token, the password and the registry Secret in \
                 clear: use https://, or --platform-plain-http if the platform really serves \
                 only plain HTTP"
                    .into(),
            ))
        }
        (other, _) => return Err(bad(format!("scheme {other:?} is not https"))),
    }
    if u.host_str().is_none() {
        return Err(bad("no host".into()));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad(
            "credentials do not belong in the address; use --platform-username/--platform-token"
                .into(),
        ));
    }
    if !u.path().trim_matches('/').is_empty() || u.query().is_some() || u.fragment().is_some() {
        tracing::warn!(
            "--platform-address: the path {:?} was dropped; the platform is {}",
            u.path(),
            host_of(&u)
        );
    }
    u.set_path("/");
    u.set_query(None);
    u.set_fragment(None);
    Ok(u)
}

pub(super) fn read_pem_certs(path: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::Usage,
            format!("--platform-ca-file {}: cannot read: {e}", path.display()),
        )
    })?;
    let certs: Vec<Vec<u8>> = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            Error::new(
                ErrorKind::Usage,
                format!(
                    "--platform-ca-file {}: not PEM certificates: {e}",
                    path.display()
                ),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::Usage,
            format!(
                "--platform-ca-file {}: no certificate in it",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("https://example.com", false)
                .unwrap()
                .as_str(),
            "https://example.com/"
        );
        assert_eq!(
            parse_address("example.com:8443/", false).unwrap().as_str(),
            "https://example.com:8443/"
        );
        assert_eq!(
            parse_address("https://[fd00::10]", false).unwrap().as_str(),
            "https://[fd00::10]/"
        );
        assert_eq!(
            parse_address("https://[fd00::10]:8443", false)
                .unwrap()
                .join("kubernetes/global")
                .unwrap()
                .as_str(),
            "https://[fd00::10]:8443/kubernetes/global"
        );
        assert!(parse_address("https://u:p@example.com", false).is_err());
        assert_eq!(
            parse_address("https://example.com/console-platform/#/home?x=1", false)
                .unwrap()
                .as_str(),
            "https://example.com/"
        );
        assert!(parse_address("ftp://example.com", false).is_err());
        assert!(parse_address("http://example.com", false).is_err());
        assert!(parse_address("http://example.com", true).is_ok());
    }
}
