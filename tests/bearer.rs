//! A registry with bearer-token auth (Distribution `auth: token`), fed by a small token server
//! written here (ES256 JWTs with an x5c header, checked by the registry against our CA). The
//! token and the password must never reach the output, even with --debug.

mod common;

use base64::Engine as _;
use common::*;
use p256::ecdsa::{signature::Signer, Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

const SERVICE: &str = "ferry-test";
const ISSUER: &str = "ferry-test-issuer";

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Serves `GET /token` on `ip` (over TLS when `tls` is given): checks basic credentials,
/// answers a JWT granting the asked scope. Every request is recorded in `issued` (the token,
/// or `REFUSED`), so an empty list means no request, and no credentials, ever arrived.
fn token_server(
    key: SigningKey,
    cert_der: Vec<u8>,
    issued: Arc<Mutex<Vec<String>>>,
    ip: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            match &tls {
                None => answer_token(conn, &key, &cert_der, &issued),
                Some(cfg) => {
                    let tls = rustls::ServerConnection::new(cfg.clone()).unwrap();
                    answer_token(
                        rustls::StreamOwned::new(tls, conn),
                        &key,
                        &cert_der,
                        &issued,
                    )
                }
            }
        }
    });
    port
}

fn answer_token<S: Read + Write>(
    conn: S,
    key: &SigningKey,
    cert_der: &[u8],
    issued: &Mutex<Vec<String>>,
) {
    let mut r = BufReader::new(conn);
    let mut first = String::new();
    if r.read_line(&mut first).is_err() {
        return; // e.g. a TLS handshake the client gave up
    }
    let mut auth = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
            break;
        }
        if l.to_ascii_lowercase().starts_with("authorization:") {
            auth = l[14..].trim().to_string();
        }
    }
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let w = r.get_mut();
    if auth != want {
        issued.lock().unwrap().push("REFUSED".into());
        let _ = w.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = w.flush();
        return;
    }
    let query = first
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split_once('?')
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    // every scope asked for is granted (a mount asks for two: push on the target,
    // pull on the source)
    let mut access = Vec::new();
    for (_, scope) in url::form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k == "scope") {
        if let [kind, name, actions] = scope.split(':').collect::<Vec<_>>()[..] {
            access.push(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [base64::engine::general_purpose::STANDARD.encode(cert_der)]});
    let claims = serde_json::json!({"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()), "access": access});
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig: Signature = key.sign(signing_input.as_bytes());
    let jwt = format!("{signing_input}.{}", b64url(&sig.to_bytes()));
    issued.lock().unwrap().push(jwt.clone());
    let body =
        serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300}).to_string();
    let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = w.flush();
}

struct TokenRegistry {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
    /// Where its token service is (the `realm` it announces).
    realm: String,
}

impl TokenRegistry {
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The certificate of the registry and of its token service (when they speak TLS).
    fn ca(&self) -> String {
        self.dir.path().join("tls.pem").display().to_string()
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the registry and its token service are reached.
#[derive(Clone, Copy)]
struct Setup {
    /// The registry speaks TLS.
    tls: bool,
    /// The token service listens here, over TLS when `token_tls`.
    token_ip: &'static str,
    token_tls: bool,
}

const PLAIN: Setup = Setup {
    tls: false,
    token_ip: "127.0.0.1",
    token_tls: false,
};

fn start(issued: Arc<Mutex<Vec<String>>>) -> TokenRegistry {
    start_with(issued, PLAIN)
}

fn start_with(issued: Arc<Mutex<Vec<String>>>, setup: Setup) -> TokenRegistry {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["ferry-token-signer".to_string()]).unwrap();
    std::fs::write(dir.path().join("token.pem"), ck.cert.pem()).unwrap();
    let key = SigningKey::from_pkcs8_der(&ck.key_pair.serialize_der()).unwrap();
    // one server certificate for the registry and its token service
    let server = rcgen::generate_simple_self_signed(vec![
        "127.0.0.1".to_string(),
        "127.0.0.2".to_string(),
        "localhost".to_string(),
    ])
    .unwrap();
    std::fs::write(dir.path().join("tls.pem"), server.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("tls-key.pem"),
        server.key_pair.serialize_pem(),
    )
    .unwrap();
    let tls = setup.token_tls.then(|| {
        Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server.key_pair.serialize_der().into()),
            )
            .unwrap(),
        )
    });
    let tport = token_server(key, ck.cert.der().to_vec(), issued, setup.token_ip, tls);
    let realm = format!(
        "{}://{}:{tport}/token",
        if setup.token_tls { "https" } else { "http" },
        setup.token_ip
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tls_cfg = if setup.tls {
        format!(
            "  tls:\n    certificate: {d}/tls.pem\n    key: {d}/tls-key.pem\n",
            d = dir.path().display()
        )
    } else {
        String::new()
    };
    let cfg = format!(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_cfg}auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {d}/token.pem\n",
        d = dir.path().display()
    );
    std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
    let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for(20, "the registry", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    TokenRegistry {
        port,
        dir,
        child,
        realm,
    }
}

#[test]
fn bearer_token_registries_work_and_tokens_never_leak() {
    let issued = Arc::new(Mutex::new(Vec::new()));
    let reg = start(issued.clone());
    let host = format!("127.0.0.1:{}", reg.port);
    let all = fixtures();
    let run = ferry(&[
        "push",
        all.to_str().unwrap(),
        "--dest-repo",
        &host,
        "--plain",
        "--username",
        USER,
        "--password",
        PASSWORD,
        "--debug",
        "--output",
        "json",
    ]);
    let log = std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default();
    assert_eq!(run.code, 0, "{}\nregistry log:\n{log}", run.all());
    // blobs shared between repositories were mounted, with tokens scoped to both sides
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let mounted = report["totals"]["blobs"]["mounted"].as_u64().unwrap();
    assert!(mounted > 0, "{}", run.stdout);
    let tokens = issued.lock().unwrap().clone();
    assert!(!tokens.is_empty(), "no token was requested");
    for t in &tokens {
        assert!(
            !run.all().contains(t.as_str()),
            "a bearer token leaked into the output"
        );
    }
    assert!(!run.all().contains(PASSWORD));
    // what landed, read back with skopeo through the same token server
    let images = package_images(&fixture("oam-application"));
    for (r, manifest) in images {
        let out = Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("--creds={USER}:{PASSWORD}"),
                &format!("docker://{host}/{}", path_of(&r)),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, manifest);
    }

    // wrong password: the token server says no; exit 5, nothing leaked
    let run = ferry(&[
        "push",
        all.to_str().unwrap(),
        "--dest-repo",
        &host,
        "--plain",
        "--username",
        USER,
        "--password",
        "not-the-password",
        "--debug",
    ]);
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(!run.all().contains("not-the-password"));
    // asked once, early: not once per image (account lockout)
    let refused = issued
        .lock()
        .unwrap()
        .iter()
        .filter(|t| *t == "REFUSED")
        .count();
    assert_eq!(
        refused, 1,
        "the refused credentials were tried {refused} times"
    );
    assert!(run.all().contains("check them"), "{}", run.all());
}

fn push_to(reg: &TokenRegistry, extra: &[&str]) -> Run {
    let pkg = fixture("oam-application");
    let host = reg.host();
    let ca = reg.ca();
    let mut args = vec![
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &host,
        "--ca-file",
        &ca,
        "--username",
        USER,
        "--password",
        PASSWORD,
        "--retry-base-ms",
        "20",
        "--debug",
    ];
    args.extend_from_slice(extra);
    ferry(&args)
}

/// An HTTPS registry whose bearer challenge names a plain-HTTP token service: docker clients
/// send the password there in the clear; ferry sends nothing, whatever the flags say
/// (issue 20, item 10).
#[test]
fn an_https_registry_never_gets_credentials_sent_to_a_plain_http_token_realm() {
    let issued = Arc::new(Mutex::new(Vec::new()));
    let reg = start_with(
        issued.clone(),
        Setup {
            tls: true,
            token_ip: "127.0.0.1",
            token_tls: false,
        },
    );
    assert!(reg.realm.starts_with("http://127.0.0.1:"));
    for extra in [&[][..], &["--allow-token-realm", "127.0.0.1"]] {
        let run = push_to(&reg, extra);
        assert_eq!(run.code, 5, "{extra:?}: {}", run.all());
        let out = run.all();
        assert!(
            out.contains(&reg.realm) && out.contains("plain HTTP") && out.contains("https://"),
            "the message names the realm, the problem and the fix: {out}"
        );
        assert!(!out.contains(PASSWORD), "{out}");
        assert!(
            issued.lock().unwrap().is_empty(),
            "{extra:?}: a request reached the token service"
        );
    }
}

/// A token service on another host than the registry gets the credentials only when
/// --allow-token-realm names that host (repeatable or comma-separated).
#[test]
fn credentials_go_to_a_token_realm_on_another_host_only_when_allowed() {
    let issued = Arc::new(Mutex::new(Vec::new()));
    let reg = start_with(
        issued.clone(),
        Setup {
            tls: true,
            token_ip: "127.0.0.2",
            token_tls: true,
        },
    );
    for extra in [&[][..], &["--allow-token-realm", "auth.example.com"]] {
        let run = push_to(&reg, extra);
        assert_eq!(run.code, 5, "{extra:?}: {}", run.all());
        let out = run.all();
        assert!(
            out.contains(&reg.realm) && out.contains("--allow-token-realm 127.0.0.2"),
            "the message names the realm host and how to allow it: {out}"
        );
        assert!(!out.contains(PASSWORD), "{out}");
        assert!(
            issued.lock().unwrap().is_empty(),
            "{extra:?}: a request reached the token service"
        );
    }

    for allow in [
        &["--allow-token-realm", "auth.example.com,127.0.0.2"][..],
        &[
            "--allow-token-realm",
            "auth.example.com",
            "--allow-token-realm",
            "127.0.0.2",
            "--output",
            "json",
        ],
    ] {
        let run = push_to(&reg, allow);
        assert_eq!(run.code, 0, "{allow:?}: {}", run.all());
        let tokens = issued.lock().unwrap().clone();
        assert!(!tokens.is_empty() && !tokens.contains(&"REFUSED".to_string()));
        for t in &tokens {
            assert!(!run.all().contains(t.as_str()), "a token leaked");
        }
        assert!(!run.all().contains(PASSWORD));
    }
    let log = std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default();
    assert!(
        log.contains("\"PUT /v2/acp/oam-controller/manifests/"),
        "the image was pushed: {log}"
    );

    // not a host: a usage error
    let run = push_to(&reg, &["--allow-token-realm", "https://127.0.0.2/token"]);
    assert_eq!(run.code, 2, "{}", run.all());
}

/// `sync` takes the same rule and flag, for the standby registry too.
#[test]
fn sync_to_a_standby_whose_token_realm_is_on_another_host_needs_it_allowed() {
    let issued = Arc::new(Mutex::new(Vec::new()));
    let standby = start_with(
        issued.clone(),
        Setup {
            tls: true,
            token_ip: "127.0.0.2",
            token_tls: true,
        },
    );
    let primary = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core");
    let plugin = fixture("oam-application");
    let run = ferry(&[
        "dev",
        "core",
        core.to_str().unwrap(),
        "--plugin",
        plugin.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let (primary_host, standby_host, ca) = (primary.host(), standby.host(), standby.ca());
    let sync = |extra: &[&str]| {
        let mut args = vec![
            "sync",
            "--package",
            core.to_str().unwrap(),
            "--only-sync-image",
            "--registry",
            &primary_host,
            "--username",
            "nobody",
            "--password",
            "unused-pass",
            "--plain",
            "--standby-registry",
            &standby_host,
            "--standby-username",
            USER,
            "--standby-password",
            PASSWORD,
            "--ca-file",
            &ca,
            "--kubeconfig",
            "/nonexistent",
            "--retry-base-ms",
            "20",
        ];
        args.extend_from_slice(extra);
        ferry(&args)
    };
    let run = sync(&[]);
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(
        run.all().contains("--allow-token-realm 127.0.0.2"),
        "{}",
        run.all()
    );
    assert!(issued.lock().unwrap().is_empty());
    assert!(!run.all().contains(PASSWORD), "{}", run.all());

    let run = sync(&["--allow-token-realm", "127.0.0.2"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(!issued.lock().unwrap().is_empty());
    assert!(!run.all().contains(PASSWORD), "{}", run.all());
}
