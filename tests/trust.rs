//! Registries are trusted the way docker, podman/skopeo and containerd on the node trust them:
//! a self-signed `openssl req -x509` certificate (CA:TRUE) given with --ca-file, or found in
//! /etc/docker/certs.d, /etc/containers/certs.d or /etc/containerd/certs.d (hosts.toml).

mod common;

use common::*;
use std::path::PathBuf;

fn registry() -> Registry {
    Registry::start(RegistryOpts {
        tls: true,
        openssl_cert: true,
        ..Default::default()
    })
}

fn push(reg: &Registry, extra: &[&str]) -> Run {
    let pkg = fixture("oam-application");
    let host = reg.host();
    let mut args = vec![
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &host,
        "--debug",
    ];
    args.extend_from_slice(extra);
    ferry(&args)
}

/// A certs.d directory for this registry, removed when dropped (the port is random, so no
/// other registry's directory is touched).
struct CertsDir(PathBuf);

impl CertsDir {
    fn new(root: &str, reg: &Registry) -> CertsDir {
        let dir = PathBuf::from(root).join(reg.host());
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the trust tests write the node's certs.d as root, as CI runs)",
                dir.display()
            )
        });
        CertsDir(dir)
    }
}

impl Drop for CertsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_self_signed_ca_true_certificate_given_with_ca_file_is_accepted() {
    let reg = registry();
    let pem = std::fs::read_to_string(reg.ca()).unwrap();
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(reg.ca())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "the test certificate should carry CA:TRUE: {pem}"
    );
    let run = push(&reg, &["--ca-file", reg.ca().to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(reg.skopeo_raw("acp/oam-controller:v4.2.1").is_some());

    // without it: not trusted, and the message says where a CA can go
    let run = push(&reg, &[]);
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(run.all().contains("--ca-file"), "{}", run.all());
    assert!(run.all().contains("/etc/docker/certs.d/"), "{}", run.all());
}

#[test]
fn the_ca_is_found_where_docker_and_podman_look() {
    for root in ["/etc/docker/certs.d", "/etc/containers/certs.d"] {
        let reg = registry();
        let dir = CertsDir::new(root, &reg);
        std::fs::copy(reg.ca(), dir.0.join("ca.crt")).unwrap();
        let run = push(&reg, &[]);
        assert_eq!(run.code, 0, "{root}: {}", run.all());
        assert!(
            run.stderr
                .contains(&format!("trusting {}/ca.crt", dir.0.display())),
            "--debug names the file: {}",
            run.stderr
        );
    }
}

#[test]
fn the_ca_named_in_containerds_hosts_toml_is_used() {
    let reg = registry();
    let dir = CertsDir::new("/etc/containerd/certs.d", &reg);
    std::fs::copy(reg.ca(), dir.0.join("registry-ca.pem")).unwrap();
    std::fs::write(
        dir.0.join("hosts.toml"),
        format!(
            "server = \"https://{0}\"\n\n[host.\"https://{0}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  ca = \"registry-ca.pem\"\n",
            reg.host()
        ),
    )
    .unwrap();
    let run = push(&reg, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("registry-ca.pem"), "{}", run.stderr);
}

#[test]
fn ssl_cert_file_is_honoured() {
    let reg = registry();
    let pkg = fixture("oam-application");
    let run = ferry_with(
        &["push", pkg.to_str().unwrap(), "--dest-repo", &reg.host()],
        &[("SSL_CERT_FILE", reg.ca().to_str().unwrap())],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.all());
}

/// The registry offers HTTP/2 over TLS (Go does by default), whose one shared window bounds
/// uploads to 1 MiB per round trip (docs/benchmarks.md, latency section): ferry keeps to
/// HTTP/1.1 with our TLS setup and with reqwest's own (--insecure), and offers HTTP/2 only
/// when FERRY_HTTP2 is set.
#[test]
fn registries_are_spoken_to_in_http1_unless_http2_is_asked_for() {
    let protocols = |reg: &Registry| {
        let log = reg.log();
        (log.contains("HTTP/1.1"), log.contains("HTTP/2.0"))
    };
    let reg = registry();
    let run = push(&reg, &["--ca-file", reg.ca().to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(protocols(&reg), (true, false), "{}", reg.log());

    let reg = registry();
    let run = push(&reg, &["--insecure"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(protocols(&reg), (true, false), "{}", reg.log());

    // the switch works, so the assertions above can tell the two apart
    let reg = registry();
    let pkg = fixture("oam-application");
    let host = reg.host();
    let ca = reg.ca();
    let run = ferry_with(
        &[
            "push",
            pkg.to_str().unwrap(),
            "--dest-repo",
            &host,
            "--ca-file",
            ca.to_str().unwrap(),
        ],
        &[("FERRY_HTTP2", "1")],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(protocols(&reg).1, "{}", reg.log());
}

/// The exact match answers only "this certificate is a CA" and "no chain to a root": a trusted
/// certificate that has expired is refused like any other (issue 20, item 8).
#[test]
fn an_expired_self_signed_ca_true_certificate_given_with_ca_file_is_refused() {
    let reg = Registry::start(RegistryOpts {
        tls: true,
        expired_cert: true,
        auth: true,
        ..Default::default()
    });
    let run = push(
        &reg,
        &[
            "--ca-file",
            reg.ca().to_str().unwrap(),
            "--username",
            USER,
            "--password",
            PASSWORD,
        ],
    );
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(
        run.all().contains("certificate expired"),
        "the message names the problem: {}",
        run.all()
    );
    assert!(
        run.all().contains("renew"),
        "the message says what to do: {}",
        run.all()
    );
    assert!(!run.all().contains(PASSWORD), "{}", run.all());
    // nothing reached the registry: no HTTP request was made over the refused connection
    assert!(!reg.log().contains("\"GET /v2/"), "{}", reg.log());
}

#[test]
fn an_expired_self_signed_ca_true_platform_certificate_is_refused() {
    use common::platform::*;
    let p = FakePlatform::start(PlatformOpts {
        self_signed_ca: true,
        expired: true,
        ..Default::default()
    });
    let pkg = fixture("oam-application");
    // the Kubernetes API (kube's client), with a token
    let run = ferry(&[
        "push",
        pkg.to_str().unwrap(),
        "--platform-address",
        &p.url(),
        "--platform-ca-file",
        p.ca().to_str().unwrap(),
        "--platform-token",
        TOKEN,
    ]);
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(run.all().contains("certificate expired"), "{}", run.all());
    assert!(!run.all().contains(TOKEN), "{}", run.all());
    // the password login (reqwest)
    let run = ferry_with(
        &[
            "push",
            pkg.to_str().unwrap(),
            "--platform-address",
            &p.url(),
            "--platform-ca-file",
            p.ca().to_str().unwrap(),
            "--platform-username",
            ADMIN,
        ],
        &[("FERRY_PLATFORM_PASSWORD", ADMIN_PASSWORD)],
        None,
    );
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(run.all().contains("certificate expired"), "{}", run.all());
    assert!(!run.all().contains(ADMIN_PASSWORD), "{}", run.all());
    assert!(
        p.log().is_empty(),
        "a request reached the platform: {:?}",
        p.log()
    );
}

/// A node with no CA certificates at all (an empty `$SSL_CERT_FILE` and `$SSL_CERT_DIR`): a
/// plain-HTTP registry needs none and is pushed to; an HTTPS one fails at its handshake, saying
/// what to give, and nothing is sent over the refused connection. The roots are read at the
/// first certificate to verify, not when the client is built (src/sink/tls.rs).
#[test]
fn a_node_without_ca_certificates_pushes_over_http_and_names_ca_file_for_https() {
    let empty = tempfile::tempdir().unwrap();
    let file = empty.path().join("none.pem");
    std::fs::write(&file, "").unwrap();
    let no_roots = [
        ("SSL_CERT_FILE", file.to_str().unwrap()),
        ("SSL_CERT_DIR", empty.path().to_str().unwrap()),
    ];
    let pkg = fixture("oam-application");

    let plain = Registry::start(RegistryOpts::default());
    let run = ferry_with(
        &[
            "push",
            pkg.to_str().unwrap(),
            "--dest-repo",
            &plain.host(),
            "--plain",
        ],
        &no_roots,
        None,
    );
    assert_eq!(run.code, 0, "{}", run.all());

    let tls = registry();
    let run = ferry_with(
        &["push", pkg.to_str().unwrap(), "--dest-repo", &tls.host()],
        &no_roots,
        None,
    );
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(run.all().contains("--ca-file"), "{}", run.all());
    assert!(!tls.log().contains("\"GET /v2/"), "{}", tls.log());
}
