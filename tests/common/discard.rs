//! A registry that throws the bytes away, for the streaming-ceiling benchmark
//! (benches/ceiling.rs): it answers the OCI distribution calls ferry makes like Distribution
//! does (POST 202 with a Location, PATCH 202 with Range, PUT 201, manifest PUT 201; blob HEAD
//! and cross-repository mounts from the digests and sizes it was given, 404 / 202 for others)
//! but neither stores nor hashes blob bytes, so that neither a registry's disk nor its hashing
//! bounds what is measured: ferry's own reading, verifying and sending.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response};
use sha2::{Digest as _, Sha256};

#[derive(Default)]
pub struct Counts {
    pub body_bytes: AtomicU64,
    pub requests: AtomicU64,
}

pub struct Discard {
    pub port: u16,
    pub counts: Arc<Counts>,
}

impl Discard {
    pub fn start() -> Discard {
        Discard::start_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// Serves on `listener` (examples/discard-registry.rs binds it across a shaped link).
    pub fn start_on(listener: std::net::TcpListener) -> Discard {
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let state: Arc<Mutex<State>> = Arc::default();
        let c = counts.clone();
        super::serve::serve_in_background(listener, 2, move |stream| {
            let (c, state) = (c.clone(), state.clone());
            async move {
                let svc =
                    hyper::service::service_fn(move |req| handle(req, c.clone(), state.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            }
        });
        Discard { port, counts }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// What the registry remembers: bytes received per open upload, and the blobs committed
/// (repository, digest) → size. No bytes.
#[derive(Default)]
struct State {
    uploads: HashMap<String, u64>,
    blobs: HashMap<(String, String), u64>,
}

type Resp = Response<Empty<Bytes>>;

fn answer(code: u16, headers: &[(&str, String)]) -> Resp {
    let mut r = Response::builder()
        .status(code)
        .header("Docker-Distribution-Api-Version", "registry/2.0")
        .header("Content-Length", "0");
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Empty::new()).unwrap()
}

/// The value of `key` in a query string, with the escapes ferry's clients use undone.
fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.replace("%3A", ":").replace("%2F", "/"))
}

/// A blob HEAD's answer: its size and digest, no body.
fn answer_sized(code: u16, size: u64, digest: &str) -> Resp {
    Response::builder()
        .status(code)
        .header("Docker-Distribution-Api-Version", "registry/2.0")
        .header("Content-Length", size.to_string())
        .header("Docker-Content-Digest", digest)
        .body(Empty::new())
        .unwrap()
}

/// With `DISCARD_TRACE=<file>` (set for examples/discard-registry.rs by a benchmark), one line
/// per request: milliseconds since the first request at its start and at its answer, method,
/// what it was for, body bytes, the object (digest or tag). To see where a push spends its round trips.
fn trace(start: std::time::Instant, method: &str, path: &str, query: &str, n: u64) {
    use std::io::Write as _;
    static FILE: std::sync::OnceLock<Option<Mutex<(std::fs::File, std::time::Instant)>>> =
        std::sync::OnceLock::new();
    let file = FILE.get_or_init(|| {
        let path = std::env::var_os("DISCARD_TRACE")?;
        let mut f = std::fs::File::create(path).ok()?;
        // The wall clock of the first request, to line the trace up with the client's start.
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let _ = writeln!(
            f,
            "# first request at {:.3} s since the epoch",
            epoch.as_secs_f64()
        );
        Some(Mutex::new((f, start)))
    });
    if let Some(file) = file {
        let mut f = file.lock().unwrap();
        let t0 = f.1;
        let kind = if path.contains("/manifests/") {
            "manifest"
        } else if query.contains("mount=") {
            "mount"
        } else if path.contains("/blobs/uploads/") {
            "upload"
        } else if path.contains("/blobs/") {
            "blob"
        } else {
            "other"
        };
        let ms = |t: std::time::Instant| t.saturating_duration_since(t0).as_secs_f64() * 1e3;
        // the object: a blob's or manifest's last path segment, an upload's digest
        let object = query_param(query, "digest")
            .or_else(|| query_param(query, "mount"))
            .unwrap_or_else(|| path.rsplit('/').next().unwrap_or("").to_string());
        let _ = writeln!(
            f.0,
            "{:.1}\t{:.1}\t{method}\t{kind}\t{n}\t{object}",
            ms(start),
            ms(std::time::Instant::now())
        );
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    counts: Arc<Counts>,
    state: Arc<Mutex<State>>,
) -> Result<Resp, Infallible> {
    let started = std::time::Instant::now();
    let r = answer_request(req, &counts, &state).await;
    trace(started, &r.1, &r.2, &r.3, r.4);
    Ok(r.0)
}

async fn answer_request(
    req: Request<hyper::body::Incoming>,
    counts: &Counts,
    state: &Mutex<State>,
) -> (Resp, String, String, String, u64) {
    counts.requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    // Drain the body, counting it; a manifest (small) is hashed for its digest header.
    let manifest = path.contains("/manifests/");
    let mut hasher = Sha256::new();
    let mut body = req.into_body();
    let mut n = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            n += data.len() as u64;
            if manifest {
                hasher.update(data);
            }
        }
    }
    counts.body_bytes.fetch_add(n, Ordering::Relaxed);
    let resp = route(&method, &path, &query, n, hasher, counts, state);
    (resp, method, path, query, n)
}

fn route(
    method: &str,
    path: &str,
    query: &str,
    n: u64,
    hasher: Sha256,
    counts: &Counts,
    state: &Mutex<State>,
) -> Resp {
    let manifest = path.contains("/manifests/");
    let Some(rest) = path.strip_prefix("/v2/") else {
        return answer(404, &[]);
    };
    if rest.is_empty() {
        return answer(200, &[]);
    }
    if let Some((name, id)) = rest.split_once("/blobs/uploads/") {
        match method {
            "POST" => {
                let mut st = state.lock().unwrap();
                let mount = (query_param(query, "mount"), query_param(query, "from"));
                if let (Some(digest), Some(from)) = mount {
                    if let Some(&size) = st.blobs.get(&(from, digest.clone())) {
                        st.blobs.insert((name.to_string(), digest.clone()), size);
                        return answer(
                            201,
                            &[
                                ("Location", format!("/v2/{name}/blobs/{digest}")),
                                ("Docker-Content-Digest", digest),
                            ],
                        );
                    }
                }
                let id = format!("u{}", counts.requests.load(Ordering::Relaxed));
                st.uploads.insert(id.clone(), 0);
                answer(
                    202,
                    &[
                        ("Location", format!("/v2/{name}/blobs/uploads/{id}")),
                        ("Range", "0-0".into()),
                        ("Docker-Upload-UUID", id),
                    ],
                )
            }
            "PATCH" => {
                let mut st = state.lock().unwrap();
                let held = st.uploads.entry(id.to_string()).or_default();
                *held += n;
                answer(
                    202,
                    &[
                        ("Location", format!("/v2/{name}/blobs/uploads/{id}")),
                        ("Range", format!("0-{}", held.saturating_sub(1))),
                    ],
                )
            }
            "PUT" => {
                let mut st = state.lock().unwrap();
                let size = st.uploads.remove(id).unwrap_or(0) + n;
                let digest = query_param(query, "digest").unwrap_or_default();
                st.blobs.insert((name.to_string(), digest.clone()), size);
                answer(
                    201,
                    &[
                        ("Location", format!("/v2/{name}/blobs/{digest}")),
                        ("Docker-Content-Digest", digest),
                    ],
                )
            }
            "GET" => {
                let held = state.lock().unwrap().uploads.get(id).copied().unwrap_or(0);
                answer(204, &[("Range", format!("0-{}", held.saturating_sub(1)))])
            }
            _ => answer(204, &[]),
        }
    } else if manifest && method == "PUT" {
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        answer(201, &[("Docker-Content-Digest", digest)])
    } else if let Some((name, digest)) = rest.split_once("/blobs/") {
        match state
            .lock()
            .unwrap()
            .blobs
            .get(&(name.to_string(), digest.to_string()))
        {
            Some(&size) => answer_sized(200, size, digest),
            None => answer(404, &[]),
        }
    } else {
        // HEAD of manifests: none is kept.
        answer(404, &[])
    }
}
