//! A registry with bearer-token auth (Distribution `auth: token`), fed by a small token server
//! written here (ES256 JWTs with an x5c header, checked by the registry against our CA). The
//! token and the password must never reach the output, even with --debug.

mod common;

use base64::Engine as _;
use common::*;
use p256::ecdsa::{signature::Signer, Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

const SERVICE: &str = "ferry-test";
const ISSUER: &str = "ferry-test-issuer";

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Serves `GET /token`: checks basic credentials, answers a JWT granting the asked scope.
fn token_server(key: SigningKey, cert_der: Vec<u8>, issued: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            let mut auth = String::new();
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap() == 0 || l == "\r\n" {
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
            let mut w = conn;
            if auth != want {
                issued.lock().unwrap().push("REFUSED".into());
                let _ = w.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
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
            for (_, scope) in
                url::form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k == "scope")
            {
                if let [kind, name, actions] = scope.split(':').collect::<Vec<_>>()[..] {
                    access.push(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [base64::engine::general_purpose::STANDARD.encode(&cert_der)]});
            let claims = serde_json::json!({"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()), "access": access});
            let signing_input = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let sig: Signature = key.sign(signing_input.as_bytes());
            let jwt = format!("{signing_input}.{}", b64url(&sig.to_bytes()));
            issued.lock().unwrap().push(jwt.clone());
            let body = serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300})
                .to_string();
            let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    port
}

struct TokenRegistry {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(issued: Arc<Mutex<Vec<String>>>) -> TokenRegistry {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["ferry-token-signer".to_string()]).unwrap();
    std::fs::write(dir.path().join("token.pem"), ck.cert.pem()).unwrap();
    let key = SigningKey::from_pkcs8_der(&ck.key_pair.serialize_der()).unwrap();
    let tport = token_server(key, ck.cert.der().to_vec(), issued);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {d}/token.pem\n",
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
    TokenRegistry { port, dir, child }
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
