//! Errors from the platform say what failed, where, and what to do next.

mod common;

use common::platform::*;
use common::*;

/// `ferry list` against the fake (its apps.yaml goes to a temp dir).
fn list(p: &FakePlatform) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec![
        "list".into(),
        "--output-file".into(),
        dir.path().join("apps.yaml").display().to_string(),
    ];
    args.extend(p.token_flags());
    ferry(&args)
}

#[test]
fn a_missing_api_group_names_the_group_and_the_cluster_not_cannot_reach() {
    let p = FakePlatform::start(PlatformOpts::default());
    p.state
        .lock()
        .unwrap()
        .missing_groups
        .push("global|cluster.alauda.io".into());
    let run = list(&p);
    assert_eq!(run.code, 7, "{}", run.all());
    assert!(
        run.stderr
            .contains("cluster global: the API group cluster.alauda.io is not served there")
            && run
                .stderr
                .contains("is this the global cluster's platform address"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("cannot reach"), "{}", run.stderr);
}

#[test]
fn list_counts_the_clusters_it_read_and_names_the_rest() {
    let p = FakePlatform::start(PlatformOpts {
        clusters: vec!["global", "region1"],
        ..Default::default()
    });
    p.state
        .lock()
        .unwrap()
        .failing_reads
        .push("region1|artifacts".into());
    let run = list(&p);
    assert_eq!(run.code, 7, "{}", run.all());
    assert!(
        run.stderr
            .contains("0 applications on 1 cluster read (1 could not be read: region1)"),
        "{}",
        run.stderr
    );
}

#[test]
fn gc_checks_its_backup_dir_before_the_first_network_call() {
    let p = FakePlatform::start(PlatformOpts::default());
    let mut args: Vec<String> = vec![
        "gc".into(),
        "--yes".into(),
        "--backup-dir".into(),
        "/nonexistent/backups".into(),
    ];
    args.extend(p.token_flags());
    let run = ferry(&args);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("--backup-dir /nonexistent/backups: cannot write there"),
        "{}",
        run.stderr
    );
    assert!(p.log().is_empty(), "the platform was called: {:?}", p.log());
}

/// A server on a local port that answers each connection with `answer`.
fn serve_each(
    answer: fn(
        tokio::net::TcpStream,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    serve_in_background(listener, 1, answer);
    port
}

/// `ferry list` at `address` (token and password login alike), with `extra` flags.
fn list_at(address: &str, extra: &[&str]) -> Vec<Run> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.yaml").display().to_string();
    let logins: [&[&str]; 2] = [
        &["--platform-token", TOKEN],
        &[
            "--platform-username",
            ADMIN,
            "--platform-password",
            ADMIN_PASSWORD,
        ],
    ];
    logins
        .iter()
        .map(|login| {
            let mut args = vec![
                "list",
                "--output-file",
                &file,
                "--platform-address",
                address,
            ];
            args.extend_from_slice(login);
            args.extend_from_slice(extra);
            ferry(&args)
        })
        .collect()
}

#[test]
fn an_http_address_for_an_https_platform_suggests_https_and_the_reverse_checks_the_scheme() {
    // plain HTTP to a TLS port: the fake platform answers with a TLS alert; a server that
    // resets the connection (as the platform did) says "connection reset"
    let p = FakePlatform::start(PlatformOpts::default());
    let reset = serve_each(|tcp| {
        Box::pin(async move {
            use tokio::io::AsyncReadExt;
            let mut tcp = tcp;
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.set_zero_linger();
            drop(tcp); // RST
        })
    });
    for address in [
        format!("http://127.0.0.1:{}", p.port),
        format!("http://127.0.0.1:{reset}"),
    ] {
        for run in list_at(&address, &["--platform-plain-http"]) {
            assert_eq!(run.code, 6, "{}", run.all());
            assert!(
                run.stderr.contains(
                    "the server there seems to speak HTTPS: give the address with https://"
                ),
                "{address}: {}",
                run.stderr
            );
        }
    }
    // TLS to a plain-HTTP port
    let plain = serve_each(|tcp| {
        Box::pin(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tcp;
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        })
    });
    for run in list_at(&format!("https://127.0.0.1:{plain}"), &[]) {
        assert_eq!(run.code, 6, "{}", run.all());
        assert!(
            run.stderr.contains(
                "the server there does not seem to speak TLS: check the address's scheme"
            ),
            "{}",
            run.stderr
        );
    }
}
