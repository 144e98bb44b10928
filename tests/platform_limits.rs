//! Answers from the platform are bounded: a hostile or broken platform that answers with
//! hundreds of MiB (made on the fly here, never stored) gets a clear error naming the cap and
//! the call, and ferry's memory stays small. Its own test binary: getrusage(RUSAGE_CHILDREN)
//! reports the largest child waited for, and here every child is a ferry run.

mod common;

use common::*;

/// What the hostile platform sends where it sends too much.
const HUGE: u64 = 400 << 20;
/// Peak RSS of a ferry that refused such an answer (the API cap is 64 MiB).
const BUDGET_BYTES: u64 = 150 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Every call gets HUGE bytes.
    Huge,
    /// Discovery is answered; every other call gets HUGE bytes.
    HugeList,
    /// Discovery is answered slowly (a piece every 700 ms, 2.8 s in all); every other call
    /// gets a head and one byte, then nothing.
    Stall,
}

/// A plain-HTTP "platform" on 127.0.0.1. Per `mode`, it answers the discovery of
/// `cluster.alauda.io` (ModuleConfig, ModulePlugin) as a cluster would; other calls get HUGE
/// bytes of JSON-ish filler, written 1 MiB at a time until the client hangs up, or stall.
fn hostile(mode: Mode) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    serve_in_background(listener, 1, move |mut tcp| async move {
        loop {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            let path = text
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap_or("/")
                .to_string();
            let small = if mode == Mode::Huge {
                None
            } else if path.ends_with("/apis") {
                Some(
                    serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                    {"name": "cluster.alauda.io", "versions": [{"groupVersion": "cluster.alauda.io/v1alpha1", "version": "v1alpha1"}],
                     "preferredVersion": {"groupVersion": "cluster.alauda.io/v1alpha1", "version": "v1alpha1"}}]}),
                )
            } else if path.ends_with("/apis/cluster.alauda.io/v1alpha1") {
                let r = |name: &str, kind: &str| {
                    serde_json::json!({"name": name, "namespaced": false,
                    "kind": kind, "verbs": ["get", "list"]})
                };
                Some(
                    serde_json::json!({"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": "cluster.alauda.io/v1alpha1",
                    "resources": [r("moduleconfigs", "ModuleConfig"), r("moduleplugins", "ModulePlugin")]}),
                )
            } else {
                None
            };
            if let Some(v) = small {
                let body = v.to_string();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if tcp.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let pieces = if mode == Mode::Stall { 5 } else { 1 };
                let step = body.len().div_ceil(pieces);
                for (i, piece) in body.as_bytes().chunks(step).enumerate() {
                    if i > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
                    }
                    if tcp.write_all(piece).await.is_err() || tcp.flush().await.is_err() {
                        return;
                    }
                }
                continue;
            }
            if mode == Mode::Stall {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")
                    .await;
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                return;
            }
            let start = b"{\"auth_url\": \"";
            // no content-length: the body ends when the connection does, so only a cap on
            // what is read (not a check of a declared length) stops it
            let answer =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
            if tcp.write_all(answer.as_bytes()).await.is_err()
                || tcp.write_all(start).await.is_err()
            {
                return;
            }
            let chunk = vec![b'a'; 1 << 20];
            let mut left = HUGE - start.len() as u64;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if tcp.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n as u64;
            }
            return;
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn peak_rss_of_children() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    usage.ru_maxrss as u64 * 1024
}

fn assert_small(what: &str) {
    let peak = peak_rss_of_children();
    println!("{what}: peak RSS {} MB", peak / 1_000_000);
    assert!(
        peak < BUDGET_BYTES,
        "{what}: peak RSS {peak} over {BUDGET_BYTES}"
    );
}

#[test]
fn a_huge_answer_to_the_first_login_call_is_cut_at_the_login_cap() {
    let url = hostile(Mode::Huge);
    let run = ferry_with(
        &[
            "push",
            fixture("oam-application").to_str().unwrap(),
            "--platform-address",
            &url,
            "--platform-plain-http",
            "--platform-username",
            "admin",
            "--plain",
        ],
        &[("FERRY_PLATFORM_PASSWORD", "pw")],
        None,
    );
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr
            .contains("platform login failed at step 1/5 (login metadata)")
            && run.stderr.contains("1 MiB"),
        "{}",
        run.stderr
    );
    assert_small("login");
}

#[test]
fn a_huge_discovery_answer_is_cut_at_the_api_cap() {
    let url = hostile(Mode::Huge);
    let run = ferry(&[
        "push",
        fixture("oam-application").to_str().unwrap(),
        "--platform-address",
        &url,
        "--platform-plain-http",
        "--platform-token",
        "tok",
        "--plain",
    ]);
    assert_eq!(run.code, 7, "{}", run.all());
    assert!(
        run.stderr
            .contains("cluster global: discovery of API group app.alauda.io")
            && run.stderr.contains("64 MiB"),
        "{}",
        run.stderr
    );
    assert_small("discovery");
}

#[test]
fn a_huge_list_answer_is_cut_at_the_api_cap() {
    let url = hostile(Mode::HugeList);
    let dir = tempfile::tempdir().unwrap();
    let run = ferry(&[
        "list",
        "--platform-address",
        &url,
        "--platform-plain-http",
        "--platform-token",
        "tok",
        "--clusters",
        "global",
        "--output-file",
        dir.path().join("apps.yaml").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 7, "{}", run.all());
    assert!(
        run.stderr.contains("cluster global: listing ModuleConfigs")
            && run.stderr.contains("64 MiB"),
        "{}",
        run.stderr
    );
    assert_small("list");
}

/// `--timeout` is idle time: a discovery answer that trickles in over longer than it is read
/// to the end; a list answer that stops is given up after it.
#[test]
fn the_timeout_is_idle_time_not_a_deadline() {
    let url = hostile(Mode::Stall);
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let run = ferry(&[
        "list",
        "--platform-address",
        &url,
        "--platform-plain-http",
        "--platform-token",
        "tok",
        "--clusters",
        "global",
        "--timeout",
        "2",
        "--output-file",
        dir.path().join("apps.yaml").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(
        run.stderr.contains(
            "cluster global: listing ModuleConfigs: the platform stopped answering: no data for 2 s"
        ),
        "{}",
        run.stderr
    );
    // discovery took 2.8 s, the stalled list 2 s more
    assert!(started.elapsed() > std::time::Duration::from_millis(4500));
    assert_small("stall");
}
