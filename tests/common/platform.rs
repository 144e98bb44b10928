//! A fake ACP platform for the tests, faithful to what ferry touches:
//!
//! * the documented five-call password login (RSA key made here, one-time `ts`, the
//!   `cpaas_oidc_auth_flow` cookie checked at steps 4 and 5, 401 on a wrong password);
//! * each cluster's Kubernetes API under `/kubernetes/<cluster>/` with bearer-token checks:
//!   discovery (`/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`),
//!   get/list/create/replace/delete with `resourceVersion` and `uid`, JSON `Status` errors
//!   (401, 403, 404, 409 AlreadyExists / Conflict).
//!
//! It serves HTTPS with a CA made here so that `kubectl` (which sends tokens only over TLS)
//! can be the independent client that checks what landed.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use rsa::pkcs8::EncodePublicKey;
use serde_json::{json, Value};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "Platform-Pa55-never-print";
pub const LDAP_USER: &str = "jdoe";
pub const LDAP_PASSWORD: &str = "Ldap-Pa55-never-print";
/// A token with every right.
pub const TOKEN: &str = "tok-admin-0123456789abcdef-never-print";
/// A token the platform knows but that lacks the platform-admin-system role.
pub const WEAK_TOKEN: &str = "tok-viewer-0123456789abcdef";

/// One kind the fake serves: (group, version, plural, kind, namespaced).
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

pub fn kinds(product_base_version: &'static str) -> Vec<Kind> {
    let k = |group, version, plural, kind, namespaced| Kind {
        group,
        version,
        plural,
        kind,
        namespaced,
    };
    vec![
        k("", "v1", "secrets", "Secret", true),
        k("", "v1", "namespaces", "Namespace", false),
        k(
            "product.alauda.io",
            product_base_version,
            "productbases",
            "ProductBase",
            false,
        ),
        k("app.alauda.io", "v1alpha1", "artifacts", "Artifact", true),
        k(
            "app.alauda.io",
            "v1alpha1",
            "artifactversions",
            "ArtifactVersion",
            true,
        ),
        k(
            "config.alauda.io",
            "v1",
            "clusterversionshadows",
            "ClusterVersionShadow",
            true,
        ),
        k("apps", "v1", "deployments", "Deployment", true),
        // what `ferry list` and `ferry gc` read
        k("platform.tkestack.io", "v1", "clusters", "Cluster", false),
        k(
            "cluster.alauda.io",
            "v1alpha1",
            "moduleplugins",
            "ModulePlugin",
            false,
        ),
        k(
            "cluster.alauda.io",
            "v1alpha1",
            "moduleconfigs",
            "ModuleConfig",
            false,
        ),
        k(
            "cluster.alauda.io",
            "v1alpha1",
            "moduleinfoes",
            "ModuleInfo",
            false,
        ),
        k(
            "operators.coreos.com",
            "v1alpha1",
            "clusterserviceversions",
            "ClusterServiceVersion",
            true,
        ),
        k(
            "app.alauda.io",
            "v1alpha1",
            "helmrequests",
            "HelmRequest",
            true,
        ),
    ]
}

#[derive(Default)]
struct Flow {
    state: String,
    req: String,
    code: Option<String>,
}

pub struct State {
    pub clusters: Vec<String>,
    kinds: Vec<Kind>,
    key: rsa::RsaPrivateKey,
    pubkey_pem: String,
    flows: HashMap<String, Flow>,
    unused_ts: HashSet<String>,
    /// token → may write (platform-admin-system)
    tokens: HashMap<String, bool>,
    /// "cluster|plural|ns|name" → object
    objects: BTreeMap<String, Value>,
    rv: u64,
    counter: u64,
    /// "METHOD path" of every request, for assertions.
    pub log: Vec<String>,
    /// Answer the next N replace (PUT) or merge-patch calls with 409 Conflict, as if someone
    /// wrote first.
    pub inject_conflicts: usize,
    /// Names of objects another writer changes (a new resourceVersion) just before a DELETE
    /// of them arrives: what a concurrent edit between a plan and its execution looks like.
    pub changed_before_delete: Vec<String>,
    /// (name, "cluster|plural", object): the object is created just before a DELETE of `name`
    /// arrives: an upload racing a cleanup.
    pub created_before_delete: Vec<(String, String, Value)>,
    /// "cluster|plural": reading (GET) these answers 503, as an API server whose aggregated
    /// API or etcd is unwell does.
    pub failing_reads: Vec<String>,
    /// "cluster|group": API groups this cluster does not serve (no CRD installed there).
    pub missing_groups: Vec<String>,
    /// Names of objects answered (get and list) without `metadata.uid` and
    /// `metadata.resourceVersion`: an odd or hostile API server.
    pub bare_metadata: Vec<String>,
    /// Sleep this long before answering any /kubernetes/ call (latency benchmark).
    pub api_delay: std::time::Duration,
    /// Kubernetes API calls being answered now, and the most there ever were at once.
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// "cluster plural limit=N continue=T" of every list call that asked for a page.
    pub list_pages: Vec<String>,
    base_url: String,
    /// The simulated cluster-version operator (tests/common/cvo.rs), off unless installed.
    pub cvo: super::cvo::Cvo,
}

pub struct FakePlatform {
    pub port: u16,
    /// `127.0.0.1` or `[::1]`
    pub host: String,
    pub dir: tempfile::TempDir,
    pub state: Arc<Mutex<State>>,
}

#[derive(Clone)]
pub struct PlatformOpts {
    pub ipv6: bool,
    /// Serve one self-signed certificate with CA:TRUE (as `openssl req -x509` makes), and
    /// give that very certificate as the CA to trust.
    pub self_signed_ca: bool,
    /// With `self_signed_ca`: that certificate expired in 2021.
    pub expired: bool,
    pub clusters: Vec<&'static str>,
    pub product_base_version: &'static str,
    /// The version `app.alauda.io` Artifacts and ArtifactVersions are served in.
    pub artifact_version: &'static str,
}

impl Default for PlatformOpts {
    fn default() -> Self {
        PlatformOpts {
            ipv6: false,
            self_signed_ca: false,
            expired: false,
            clusters: vec!["global"],
            product_base_version: "v1alpha1",
            artifact_version: "v1alpha1",
        }
    }
}

impl FakePlatform {
    pub fn start(opts: PlatformOpts) -> FakePlatform {
        let ip = if opts.ipv6 { "[::1]" } else { "127.0.0.1" };
        Self::start_on(
            opts,
            std::net::TcpListener::bind(format!("{ip}:0")).unwrap(),
        )
    }

    /// As `start`, on a listener the caller bound (examples/fake-platform.rs listens on a
    /// fixed address); its certificate names localhost, 127.0.0.1 and ::1.
    pub fn start_on(opts: PlatformOpts, listener: std::net::TcpListener) -> FakePlatform {
        let dir = tempfile::tempdir().unwrap();
        let addr = listener.local_addr().unwrap();
        let ip = match addr.ip() {
            std::net::IpAddr::V4(a) => a.to_string(),
            std::net::IpAddr::V6(a) => format!("[{a}]"),
        };
        let port = addr.port();

        // a CA and a server certificate it signs (kubectl and ferry verify the chain)
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fake platform CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let (leaf, leaf_key) = if opts.self_signed_ca {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            if opts.expired {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            let cert = params.self_signed(&key).unwrap();
            std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
            (cert, key)
        } else {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(names).unwrap();
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
            (cert, key)
        };

        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let pubkey_pem = key
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap();
        let mut tokens = HashMap::new();
        tokens.insert(TOKEN.to_string(), true);
        tokens.insert(WEAK_TOKEN.to_string(), false);
        let state = Arc::new(Mutex::new(State {
            clusters: opts.clusters.iter().map(|s| s.to_string()).collect(),
            kinds: kinds(opts.product_base_version)
                .into_iter()
                .map(|mut k| {
                    if k.group == "app.alauda.io" && k.plural.starts_with("artifact") {
                        k.version = opts.artifact_version;
                    }
                    k
                })
                .collect(),
            key,
            pubkey_pem,
            flows: HashMap::new(),
            unused_ts: HashSet::new(),
            tokens,
            objects: BTreeMap::new(),
            rv: 100,
            counter: 0,
            log: Vec::new(),
            inject_conflicts: 0,
            changed_before_delete: Vec::new(),
            failing_reads: Vec::new(),
            created_before_delete: Vec::new(),
            missing_groups: Vec::new(),
            bare_metadata: Vec::new(),
            api_delay: std::time::Duration::ZERO,
            in_flight: 0,
            max_in_flight: 0,
            list_pages: Vec::new(),
            base_url: format!("https://{ip}:{port}"),
            cvo: Default::default(),
        }));

        let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let shared = state.clone();
        super::serve_in_background(listener, 2, move |tcp| {
            let acceptor = acceptor.clone();
            let state = shared.clone();
            async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            }
        });
        let p = FakePlatform {
            port,
            host: ip.to_string(),
            dir,
            state,
        };
        // the global cluster lists every cluster of the platform, as ACP's does
        for c in &opts.clusters {
            p.put(
                "global",
                "clusters",
                json!({"apiVersion": "platform.tkestack.io/v1",
                "kind": "Cluster", "metadata": {"name": c}}),
            );
        }
        p
    }

    pub fn url(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Flags that log ferry in with the admin token and trust our CA.
    pub fn token_flags(&self) -> Vec<String> {
        vec![
            "--platform-address".into(),
            self.url(),
            "--platform-token".into(),
            TOKEN.into(),
            "--platform-ca-file".into(),
            self.ca().display().to_string(),
        ]
    }

    /// Stores an object as if someone had created it (fills uid and resourceVersion).
    pub fn put(&self, cluster: &str, plural: &str, mut obj: Value) {
        let mut s = self.state.lock().unwrap();
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        s.rv += 1;
        s.counter += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        obj["metadata"]["uid"] = json!(format!("uid-{}", s.counter));
        let key = format!("{cluster}|{plural}|{ns}|{name}");
        s.objects.insert(key, obj);
    }

    pub fn get(&self, cluster: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let s = self.state.lock().unwrap();
        s.objects
            .get(&format!("{cluster}|{plural}|{ns}|{name}"))
            .cloned()
    }

    /// Every object of `plural` in `cluster`.
    pub fn list(&self, cluster: &str, plural: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        let prefix = format!("{cluster}|{plural}|");
        s.objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// ProductBase `base` pointing at a registry, with or without credentials.
    pub fn set_product_base(&self, address: &str, creds: Option<(&str, &str)>, external: bool) {
        let version = {
            let s = self.state.lock().unwrap();
            s.kinds
                .iter()
                .find(|k| k.kind == "ProductBase")
                .unwrap()
                .version
        };
        let mut registry = json!({"address": address});
        if external {
            registry["external"] = json!(true);
        }
        if let Some((u, p)) = creds {
            registry["username"] = json!(u);
            registry["password"] = json!(p);
        }
        self.put(
            "global",
            "productbases",
            json!({
                "apiVersion": format!("product.alauda.io/{version}"),
                "kind": "ProductBase",
                "metadata": {"name": "base"},
                "spec": {"registry": registry, "version": "v4.2.0"},
            }),
        );
    }

    /// Secret cpaas-system/registry-admin with these credentials.
    pub fn set_registry_admin(&self, user: &str, password: &str) {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        self.put(
            "global",
            "secrets",
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "registry-admin", "namespace": "cpaas-system"},
                "type": "Opaque",
                "data": {"username": b(user), "password": b(password)},
            }),
        );
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// A kubeconfig for `cluster` (as on a control-plane node, but through the platform's
    /// `/kubernetes/<cluster>` path) with the admin token and our CA.
    pub fn kubeconfig(&self, cluster: &str) -> PathBuf {
        let path = self.dir.path().join(format!("kubeconfig-{cluster}"));
        let ca =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(self.ca()).unwrap());
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {}/kubernetes/{cluster}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: admin\ncurrent-context: {cluster}\n",
                self.url()
            ),
        )
        .unwrap();
        path
    }

    /// Runs kubectl against one cluster through the platform, with the admin token.
    pub fn kubectl(&self, cluster: &str, args: &[&str]) -> std::process::Output {
        // an empty kubeconfig of its own, so that nothing of the machine's leaks in
        let kubeconfig = self.dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--server")
            .arg(format!("{}/kubernetes/{cluster}", self.url()))
            .arg("--token")
            .arg(TOKEN)
            .arg("--certificate-authority")
            .arg(self.ca())
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// `kubectl get <resource> -n cpaas-system -o json` → items.
    pub fn kubectl_items(&self, cluster: &str, resource: &str) -> Vec<Value> {
        let out = self.kubectl(
            cluster,
            &["get", resource, "-n", "cpaas-system", "-o", "json"],
        );
        assert!(
            out.status.success(),
            "kubectl get {resource} on {cluster}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }
}

type Resp = Response<Full<Bytes>>;

/// One request to a cluster's Kubernetes API, as the fake sees it.
struct ApiCall<'a> {
    method: &'a str,
    cluster: &'a str,
    path: &'a str,
    bearer: Option<String>,
    body: &'a [u8],
    content_type: &'a str,
    q: &'a HashMap<String, String>,
}

fn serde_yaml_value(body: &[u8]) -> Result<Value, ()> {
    serde_yaml::from_slice(body).map_err(|_| ())
}

/// Server-side apply, simplified: the applied fields win, others are kept.
fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn respond(code: u16, body: Value) -> Resp {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A Kubernetes `Status` error, as the API server sends it.
fn status(code: u16, reason: &str, message: String) -> Resp {
    respond(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn query(req: &Request<hyper::body::Incoming>) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn cookie(req: &Request<hyper::body::Incoming>) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("cpaas_oidc_auth_flow="))
        .map(str::to_string)
        .next()
}

async fn handle(state: Arc<Mutex<State>>, req: Request<hyper::body::Incoming>) -> Resp {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let q = query(&req);
    let cookie = cookie(&req);
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let api = path.starts_with("/kubernetes/");
    let delay = {
        let mut s = state.lock().unwrap();
        s.log.push(format!("{method} {path}"));
        if api {
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
        }
        s.api_delay
    };
    if api && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = state.lock().unwrap();
    if api {
        s.in_flight -= 1;
    }
    match (method.as_str(), path.as_str()) {
        ("GET", "/console-platform/api/v1/token/login") => s.login_meta(&q),
        ("GET", "/dex/api/v1/authorize") => s.authorize(&q),
        ("GET", "/dex/pubkey") => s.pubkey(),
        ("POST", p) if p.starts_with("/dex/api/v1/authorize/") => {
            let idp = p.trim_start_matches("/dex/api/v1/authorize/").to_string();
            s.credentials(&idp, &q, cookie, &body)
        }
        ("GET", "/console-platform/api/v1/token/callback") => s.callback(&q, cookie),
        (_, p) if p.starts_with("/kubernetes/") => {
            let rest = p.trim_start_matches("/kubernetes/");
            let (cluster, api_path) = rest.split_once('/').unwrap_or((rest, ""));
            s.kube(ApiCall {
                method: &method,
                cluster,
                path: api_path,
                bearer,
                body: &body,
                content_type: &content_type,
                q: &q,
            })
        }
        _ => respond(404, json!({"error": "not found"})),
    }
}

impl State {
    /// The object as the API answers it ([`State::bare_metadata`] strips its identity).
    fn as_answered(&self, o: &Value) -> Value {
        let mut o = o.clone();
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if self.bare_metadata.contains(&name) {
            if let Some(m) = o["metadata"].as_object_mut() {
                m.remove("uid");
                m.remove("resourceVersion");
            }
        }
        o
    }

    fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}{}", self.counter, self.rv)
    }

    fn login_meta(&mut self, q: &HashMap<String, String>) -> Resp {
        if q.get("client_id").map(String::as_str) != Some("alauda-auth")
            || q.get("response_type").map(String::as_str) != Some("code")
            || !q.get("scope").is_some_and(|s| s.contains("openid"))
            || q.get("redirect_uri") != Some(&format!("{}/dex/callback", self.base_url))
        {
            return respond(400, json!({"error": "invalid login request"}));
        }
        let state = self.next("state-");
        let auth_url = format!(
            "{}/console-dex/auth?access_type=offline&client_id=alauda-auth&code_challenge=xyz&code_challenge_method=S256&redirect_uri={}&response_type=code&state={state}",
            self.base_url,
            url::form_urlencoded::byte_serialize(format!("{}/dex/callback", self.base_url).as_bytes()).collect::<String>()
        );
        respond(200, json!({"auth_url": auth_url, "state": state}))
    }

    fn authorize(&mut self, q: &HashMap<String, String>) -> Resp {
        let (Some(state), Some("alauda-auth")) =
            (q.get("state"), q.get("client_id").map(String::as_str))
        else {
            return respond(400, json!({"error": "invalid authorize request"}));
        };
        let flow_id = self.next("flow-");
        let req = self.next("req-");
        self.flows.insert(
            flow_id.clone(),
            Flow {
                state: state.clone(),
                req: req.clone(),
                code: None,
            },
        );
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header(
                "set-cookie",
                format!("cpaas_oidc_auth_flow={flow_id}; Path=/; HttpOnly; Secure"),
            )
            .body(Full::new(Bytes::from(json!({"req": req}).to_string())))
            .unwrap()
    }

    fn pubkey(&mut self) -> Resp {
        let ts = self.next("");
        self.unused_ts.insert(ts.clone());
        respond(
            200,
            json!({"ts": ts, "pubkey": self.pubkey_pem,
                   "pubkey_encode": base64::engine::general_purpose::STANDARD.encode(&self.pubkey_pem)}),
        )
    }

    fn credentials(
        &mut self,
        idp: &str,
        q: &HashMap<String, String>,
        cookie: Option<String>,
        body: &[u8],
    ) -> Resp {
        let Some(flow_id) = cookie.filter(|c| self.flows.contains_key(c)) else {
            return respond(400, json!({"error": "invalid authentication session"}));
        };
        if q.get("req") != Some(&self.flows[&flow_id].req) {
            return respond(400, json!({"error": "unknown request"}));
        }
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let account = v["account"].as_str().unwrap_or("").to_string();
        let Some(sealed) = v["password"]
            .as_str()
            .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
        else {
            return respond(400, json!({"error": "password is not base64"}));
        };
        let Ok(plain) = self.key.decrypt(rsa::Pkcs1v15Encrypt, &sealed) else {
            return respond(400, json!({"error": "cannot decrypt password"}));
        };
        let inner: Value = serde_json::from_slice(&plain).unwrap_or(Value::Null);
        let ts = inner["ts"].as_str().unwrap_or("").to_string();
        if !self.unused_ts.remove(&ts) {
            return respond(401, json!({"error": "timestamp expired or reused"}));
        }
        let password = inner["password"].as_str().unwrap_or("");
        let ok = matches!(
            (idp, account.as_str(), password),
            ("local", ADMIN, ADMIN_PASSWORD) | ("ldap", LDAP_USER, LDAP_PASSWORD)
        );
        if !ok {
            return respond(401, json!({"error": "invalid username or password"}));
        }
        let code = self.next("code-");
        let flow = self.flows.get_mut(&flow_id).unwrap();
        flow.code = Some(code.clone());
        let redirect = format!(
            "{}/dex/callback?code={code}&state={}",
            self.base_url, flow.state
        );
        respond(200, json!({"session_state": "", "redirect_url": redirect}))
    }

    fn callback(&mut self, q: &HashMap<String, String>, cookie: Option<String>) -> Resp {
        let Some(flow) = cookie.and_then(|c| self.flows.remove(&c)) else {
            return respond(400, json!({"error": "invalid authentication session"}));
        };
        if flow.code.is_none()
            || q.get("code") != flow.code.as_ref()
            || q.get("state") != Some(&flow.state)
        {
            return respond(400, json!({"error": "invalid code"}));
        }
        let token = self.next("tok-login-");
        self.tokens.insert(token.clone(), true);
        respond(
            200,
            json!({"token_type": "bearer", "access_token": token, "id_token": "x",
                   "refresh_token": "y", "expire_at": "2099-01-01T00:00:00Z",
                   "issued_at": "2026-01-01T00:00:00Z", "token_storage": "local"}),
        )
    }

    fn kube(&mut self, call: ApiCall<'_>) -> Resp {
        let ApiCall {
            method,
            cluster,
            path,
            bearer,
            body,
            content_type,
            q,
        } = call;
        {
            let Some(can_write) = bearer.and_then(|t| self.tokens.get(&t).copied()) else {
                return status(401, "Unauthorized", "Unauthorized".into());
            };
            if !self.clusters.iter().any(|c| c == cluster) {
                return status(404, "NotFound", format!("cluster {cluster} not found"));
            }
            self.cvo.tick(&mut self.objects, &mut self.rv);
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            if let ["apis", g, ..] = segs.as_slice() {
                if self.missing_groups.contains(&format!("{cluster}|{g}")) {
                    return status(404, "NotFound", format!("group {g} not found"));
                }
            }
            if let ["apis"] = segs.as_slice() {
                let mut list = self.group_list();
                if let Some(groups) = list["groups"].as_array_mut() {
                    groups.retain(|g| {
                        let name = g["name"].as_str().unwrap_or_default();
                        !self.missing_groups.contains(&format!("{cluster}|{name}"))
                    });
                }
                return respond(200, list);
            }
            match segs.as_slice() {
                ["api"] => {
                    return respond(
                        200,
                        json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
                    )
                }
                ["apis"] => return respond(200, self.group_list()),
                ["api", "v1"] => return respond(200, self.resource_list("", "v1")),
                ["apis", g] => {
                    return match self.group(g) {
                        Some(v) => respond(200, v),
                        None => status(404, "NotFound", format!("group {g} not found")),
                    }
                }
                ["apis", g, v] => return respond(200, self.resource_list(g, v)),
                _ => {}
            }
            let (group, version, rest) = match segs.as_slice() {
                ["api", "v1", rest @ ..] => ("", "v1", rest),
                ["apis", g, v, rest @ ..] => (*g, *v, rest),
                _ => return status(404, "NotFound", format!("the server could not find {path}")),
            };
            let (ns, plural, name) = match rest {
                ["namespaces", ns, plural] => (*ns, *plural, None),
                ["namespaces", ns, plural, name] => (*ns, *plural, Some(*name)),
                [plural] => ("", *plural, None),
                [plural, name] => ("", *plural, Some(*name)),
                _ => return status(404, "NotFound", format!("the server could not find {path}")),
            };
            let Some(kind) = self
                .kinds
                .iter()
                .find(|k| k.group == group && k.version == version && k.plural == plural)
            else {
                return status(
                    404,
                    "NotFound",
                    format!(
                    "the server could not find the requested resource ({plural}.{group}/{version})"
                ),
                );
            };
            let (kind_name, api_version) = (
                kind.kind.to_string(),
                if group.is_empty() {
                    version.to_string()
                } else {
                    format!("{group}/{version}")
                },
            );
            let gr = if group.is_empty() {
                plural.to_string()
            } else {
                format!("{plural}.{group}")
            };
            let key = |n: &str| format!("{cluster}|{plural}|{ns}|{n}");
            if method != "GET" && !can_write {
                return status(
                403,
                "Forbidden",
                format!("{gr} is forbidden: User \"viewer\" cannot {} resource \"{plural}\" in API group \"{group}\" in the namespace \"{ns}\"", method.to_lowercase()),
            );
            }
            if method == "GET" && self.failing_reads.contains(&format!("{cluster}|{plural}")) {
                return status(
                    503,
                    "ServiceUnavailable",
                    format!("the server is currently unable to handle the request ({gr})"),
                );
            }
            match (method, name) {
                ("GET", Some(n)) => match self.objects.get(&key(n)) {
                    Some(o) => respond(200, self.as_answered(o)),
                    None => status(404, "NotFound", format!("{gr} \"{n}\" not found")),
                },
                ("GET", None) => {
                    let prefix =
                        format!("{cluster}|{plural}|{}", if ns.is_empty() { "" } else { ns });
                    // paging as the API server pages: at most `limit` items in key order;
                    // `continue` (opaque to clients) is the key the previous page ended at
                    let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok());
                    let after = q.get("continue").cloned().unwrap_or_default();
                    if limit.is_some() || !after.is_empty() {
                        let l = q.get("limit").map_or("", String::as_str);
                        self.list_pages
                            .push(format!("{cluster} {plural} limit={l} continue={after}"));
                    }
                    let limit = limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
                    let mut items: Vec<Value> = Vec::new();
                    let mut last = String::new();
                    let mut more = false;
                    for (k, v) in self.objects.iter().filter(|(k, _)| {
                        k.starts_with(&prefix) && (after.is_empty() || k.as_str() > after.as_str())
                    }) {
                        if items.len() == limit {
                            more = true;
                            break;
                        }
                        items.push(self.as_answered(v));
                        last = k.clone();
                    }
                    let mut meta = json!({"resourceVersion": self.rv.to_string()});
                    if more {
                        meta["continue"] = json!(last);
                    }
                    respond(
                        200,
                        json!({"kind": format!("{kind_name}List"), "apiVersion": api_version,
                    "metadata": meta, "items": items}),
                    )
                }
                ("POST", None) => {
                    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
                        return status(400, "BadRequest", "body is not JSON".into());
                    };
                    let Some(n) = obj["metadata"]["name"].as_str().map(str::to_string) else {
                        return status(422, "Invalid", "metadata.name: Required value".into());
                    };
                    if obj["kind"] != json!(kind_name) || obj["apiVersion"] != json!(api_version) {
                        return status(
                            400,
                            "BadRequest",
                            format!("the object's kind/apiVersion do not match {gr}"),
                        );
                    }
                    if self.objects.contains_key(&key(&n)) {
                        return status(
                            409,
                            "AlreadyExists",
                            format!("{gr} \"{n}\" already exists"),
                        );
                    }
                    self.rv += 1;
                    let uid = self.next("uid-");
                    obj["metadata"]["uid"] = json!(uid);
                    obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                    obj["metadata"]["creationTimestamp"] = json!("2026-11-25T00:00:00Z");
                    obj["metadata"]["generation"] = json!(1);
                    if !ns.is_empty() {
                        obj["metadata"]["namespace"] = json!(ns);
                    }
                    self.objects.insert(key(&n), obj.clone());
                    respond(201, obj)
                }
                ("PUT", Some(n)) => {
                    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
                        return status(400, "BadRequest", "body is not JSON".into());
                    };
                    let Some(cur) = self.objects.get(&key(n)).cloned() else {
                        return status(404, "NotFound", format!("{gr} \"{n}\" not found"));
                    };
                    if self.inject_conflicts > 0 {
                        self.inject_conflicts -= 1;
                        self.rv += 1;
                        let mut bumped = cur.clone();
                        bumped["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                        self.objects.insert(key(n), bumped);
                    }
                    let cur = self.objects[&key(n)].clone();
                    if obj["metadata"]["resourceVersion"] != cur["metadata"]["resourceVersion"] {
                        return status(409, "Conflict", format!("Operation cannot be fulfilled on {gr} \"{n}\": the object has been modified; please apply your changes to the latest version and try again"));
                    }
                    if obj["metadata"]["uid"].is_string()
                        && obj["metadata"]["uid"] != cur["metadata"]["uid"]
                    {
                        return status(409, "Conflict", format!("Precondition failed: UID in precondition does not match the UID in object {gr} \"{n}\""));
                    }
                    self.rv += 1;
                    obj["metadata"]["uid"] = cur["metadata"]["uid"].clone();
                    obj["metadata"]["creationTimestamp"] =
                        cur["metadata"]["creationTimestamp"].clone();
                    obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                    self.objects.insert(key(n), obj.clone());
                    respond(200, obj)
                }
                ("PATCH", Some(n)) if content_type == "application/merge-patch+json" => {
                    self.merge_patch(&key(n), &gr, n, body)
                }
                ("PATCH", Some(n)) => {
                    // server-side apply (what ferry applies with) or a merge patch (above)
                    if content_type != "application/apply-patch+yaml" {
                        return status(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/apply-patch+yaml (got {content_type})"));
                    }
                    if q.get("fieldManager").is_none_or(|m| m.is_empty()) {
                        return status(400, "BadRequest", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into());
                    }
                    let Ok(patch) =
                        serde_json::from_slice::<Value>(body).or_else(|_| serde_yaml_value(body))
                    else {
                        return status(400, "BadRequest", "body is not YAML".into());
                    };
                    if patch["metadata"]["name"] != json!(n) || patch["kind"] != json!(kind_name) {
                        return status(
                            400,
                            "BadRequest",
                            "name or kind in the body does not match the URL".into(),
                        );
                    }
                    let existing = self.objects.get(&key(n)).cloned();
                    let mut obj = existing.clone().unwrap_or_else(|| json!({}));
                    merge(&mut obj, &patch);
                    self.rv += 1;
                    if existing.is_none() {
                        obj["metadata"]["uid"] = json!(self.next("uid-"));
                        obj["metadata"]["creationTimestamp"] = json!("2026-11-25T00:00:00Z");
                    }
                    if !ns.is_empty() {
                        obj["metadata"]["namespace"] = json!(ns);
                    }
                    obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                    obj["metadata"]["managedFields"] =
                        json!([{"manager": q["fieldManager"], "operation": "Apply"}]);
                    if q.get("dryRun").map(String::as_str) != Some("All") {
                        self.objects.insert(key(n), obj.clone());
                    }
                    respond(if existing.is_some() { 200 } else { 201 }, obj)
                }
                ("DELETE", Some(n)) => {
                    let arriving: Vec<(String, String, Value)> = self
                        .created_before_delete
                        .iter()
                        .filter(|(t, _, _)| t == n)
                        .cloned()
                        .collect();
                    self.created_before_delete.retain(|(t, _, _)| t != n);
                    for (_, at, mut obj) in arriving {
                        self.rv += 1;
                        obj["metadata"]["uid"] = json!(self.next("uid-"));
                        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                        let ons = obj["metadata"]["namespace"].as_str().unwrap_or("");
                        let oname = obj["metadata"]["name"].as_str().unwrap_or("");
                        self.objects
                            .insert(format!("{at}|{ons}|{oname}"), obj.clone());
                    }
                    if self.changed_before_delete.iter().any(|c| c == n) {
                        self.rv += 1;
                        if let Some(o) = self.objects.get_mut(&key(n)) {
                            o["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                        }
                    }
                    let Some(cur) = self.objects.get(&key(n)).cloned() else {
                        return status(404, "NotFound", format!("{gr} \"{n}\" not found"));
                    };
                    let opts: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                    let pre = &opts["preconditions"];
                    if (pre["uid"].is_string() && pre["uid"] != cur["metadata"]["uid"])
                        || (pre["resourceVersion"].is_string()
                            && pre["resourceVersion"] != cur["metadata"]["resourceVersion"])
                    {
                        return status(409, "Conflict", format!("Operation cannot be fulfilled on {gr} \"{n}\": the precondition does not match"));
                    }
                    self.objects.remove(&key(n));
                    // What the garbage collector does to dependants (same cluster, any kind):
                    // Orphan strips their owner reference; the default (Background) deletes
                    // them, and theirs in turn.
                    let policy = opts["propagationPolicy"]
                        .as_str()
                        .or(q.get("propagationPolicy").map(String::as_str))
                        .unwrap_or("Background")
                        .to_string();
                    let mut owners = vec![cur["metadata"]["uid"].clone()];
                    while let Some(owner) = owners.pop() {
                        let prefix = format!("{cluster}|");
                        let owned: Vec<String> = self
                            .objects
                            .iter()
                            .filter(|(k, o)| {
                                k.starts_with(&prefix)
                                    && o["metadata"]["ownerReferences"]
                                        .as_array()
                                        .is_some_and(|r| r.iter().any(|r| r["uid"] == owner))
                            })
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in owned {
                            if policy == "Orphan" {
                                self.rv += 1;
                                let o = self.objects.get_mut(&k).unwrap();
                                if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut()
                                {
                                    refs.retain(|r| r["uid"] != owner);
                                }
                                o["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                            } else if let Some(o) = self.objects.remove(&k) {
                                owners.push(o["metadata"]["uid"].clone());
                            }
                        }
                    }
                    respond(
                        200,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Success",
                    "details": {"name": n, "group": group, "kind": plural, "uid": cur["metadata"]["uid"]}}),
                    )
                }
                _ => status(
                    405,
                    "MethodNotAllowed",
                    format!("{method} is not supported here"),
                ),
            }
        }
    }

    fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for k in self.kinds.iter().filter(|k| !k.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == k.group) {
                Some((_, vs)) if !vs.contains(&k.version) => vs.push(k.version),
                Some(_) => {}
                None => out.push((k.group, vec![k.version])),
            }
        }
        out
    }

    fn group_json(g: &str, versions: &[&str]) -> Value {
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
            .collect();
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": vs,
               "preferredVersion": vs[0]})
    }

    fn group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(g, vs)| Self::group_json(g, vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn group(&self, g: &str) -> Option<Value> {
        self.groups()
            .iter()
            .find(|(n, _)| *n == g)
            .map(|(n, vs)| Self::group_json(n, vs))
    }

    fn resource_list(&self, g: &str, v: &str) -> Value {
        let resources: Vec<Value> = self
            .kinds
            .iter()
            .filter(|k| k.group == g && k.version == v)
            .map(|k| {
                json!({"name": k.plural, "singularName": k.kind.to_lowercase(),
                       "namespaced": k.namespaced, "kind": k.kind,
                       "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect();
        let gv = if g.is_empty() {
            v.to_string()
        } else {
            format!("{g}/{v}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
               "resources": resources})
    }
}

// --- JSON merge patch (RFC 7386), what `ferry upgrade` writes with ---------------------------

/// `patch` onto `into`: objects merged key by key, `null` removes, anything else replaces.
fn merge_patch_into(into: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !into.is_object() {
                *into = json!({});
            }
            let o = into.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    o.remove(k);
                } else {
                    merge_patch_into(o.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        v => *into = v.clone(),
    }
}

impl State {
    /// A merge patch: a `metadata.resourceVersion` in it is a precondition (409 Conflict when
    /// the object changed since), and a change of `spec` bumps `metadata.generation`.
    fn merge_patch(&mut self, key: &str, gr: &str, n: &str, body: &[u8]) -> Resp {
        let Ok(patch) = serde_json::from_slice::<Value>(body) else {
            return status(400, "BadRequest", "body is not JSON".into());
        };
        if self.inject_conflicts > 0 && self.objects.contains_key(key) {
            // someone else writes first
            self.inject_conflicts -= 1;
            self.rv += 1;
            let rv = json!(self.rv.to_string());
            self.objects.get_mut(key).unwrap()["metadata"]["resourceVersion"] = rv;
        }
        let Some(cur) = self.objects.get(key).cloned() else {
            return status(404, "NotFound", format!("{gr} \"{n}\" not found"));
        };
        if let Some(want) = patch["metadata"]["resourceVersion"].as_str() {
            if json!(want) != cur["metadata"]["resourceVersion"] {
                return status(409, "Conflict", format!("Operation cannot be fulfilled on {gr} \"{n}\": the object has been modified; please apply your changes to the latest version and try again"));
            }
        }
        let mut obj = cur.clone();
        merge_patch_into(&mut obj, &patch);
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if obj["spec"] != cur["spec"] {
            let g = cur["metadata"]["generation"].as_i64().unwrap_or(1);
            obj["metadata"]["generation"] = json!(g + 1);
        }
        self.objects.insert(key.to_string(), obj.clone());
        respond(200, obj)
    }
}
