//! Review of the upload sessions opened with the first HEADs (`src/engine/sessions.rs`):
//! a hostile or broken registry answering the early `POST ?mount=<digest>&from=<repo>`.

mod common;

use common::proxy::{Fault, Proxy, Rule};
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn push_via(proxy: &Proxy, pkg: &Path, extra: &[&str]) -> Run {
    let host = proxy.host();
    let mut args = vec![
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &host,
        "--plain",
        "--chunk-size-mb",
        "1",
        "--retry-base-ms",
        "20",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    ferry(&args)
}

fn assert_landed(reg: &Registry) {
    assert!(reg.skopeo_raw("acp/big:v1").is_some(), "acp/big:v1 missing");
    let dir = tempfile::tempdir().unwrap();
    reg.skopeo_copy_back("acp/big:v1", dir.path());
}

/// The early `POST`s only: `?mount=` from the repository itself.
const MOUNT: &str = "/blobs/uploads/?mount=";

#[test]
fn a_lying_mounted_answer_to_the_early_post_does_not_count_as_pushed() {
    // 201 "mounted" for blobs the registry does not hold: the HEAD decides, all three go up.
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    let proxy = Proxy::start(
        reg.port,
        vec![Rule::new("POST", MOUNT, Fault::Status(201, None)).times(usize::MAX)],
    );
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        run.json()["totals"]["blobs"]["uploaded"],
        3,
        "{}",
        run.all()
    );
    assert_landed(&reg);
}

#[test]
fn an_early_session_without_location_falls_back_to_a_session_of_its_own() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    let proxy = Proxy::start(
        reg.port,
        vec![Rule::new("POST", MOUNT, Fault::Status(202, None)).times(usize::MAX)],
    );
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_landed(&reg);
}

#[test]
fn an_early_session_on_another_origin_gets_no_credentials_and_no_bytes() {
    let reg = Registry::start(RegistryOpts {
        auth: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    let evil = Proxy::start(reg.port, vec![]);
    let proxy = Proxy::start(
        reg.port,
        vec![Rule::new(
            "POST",
            MOUNT,
            Fault::RewriteLocation(Box::leak(
                format!("http://{}", evil.host()).into_boxed_str(),
            )),
        )
        .times(usize::MAX)],
    );
    let run = push_via(&proxy, &pkg, &["--username", USER, "--password", PASSWORD]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(evil.seen().is_empty(), "{:?}", evil.seen());
    assert_landed(&reg);
}

#[test]
fn an_early_post_the_registry_never_answers_does_not_hold_the_first_uploads() {
    // A registry (or a front) that never answers `POST ?mount=` but answers plain upload
    // POSTs at once. Before the sessions opened ahead, a fresh push into one repository sent
    // no mount at all. At most one --timeout may be lost on the early POST; the upload then
    // opens its own session.
    let timeout = 2;
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    let proxy = Proxy::start(
        reg.port,
        vec![Rule::new("POST", MOUNT, Fault::Hold).times(usize::MAX)],
    );
    let started = Instant::now();
    let run = push_via(&proxy, &pkg, &["--timeout", &timeout.to_string()]);
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.all());
    assert_landed(&reg);
    let held = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path.contains(MOUNT))
        .count();
    assert!(
        took < Duration::from_secs(2 * timeout + 3),
        "the push took {took:?} with --timeout {timeout}: the uploads waited for {held} \
         early POSTs (retried) that never answered"
    );
}

#[test]
fn sessions_opened_for_a_blob_that_fails_are_cancelled_before_the_run_ends() {
    // A corrupt small layer fails before its upload takes the session opened for it; the
    // package's end cancels it, and waits for that after its manifests (it did not: the
    // run ended first and the session stayed open, no DELETE sent).
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    let blobs = pkg.join("images/blobs/sha256");
    let small = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 10_000)
        .min_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&small).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&small, bytes).unwrap();
    let proxy = Proxy::start(reg.port, vec![]);
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(run.stdout.contains("digest mismatch"), "{}", run.stdout);
    // every session opened was committed (PUT) or cancelled (DELETE) before the run ended
    // (`Registry::open_uploads` is no oracle here: this Distribution keeps the directory of
    // a cancelled empty session, "error closing blobwriter ... file already closed")
    let seen = proxy.seen();
    let count = |m: &str| seen.iter().filter(|s| s.method == m).count();
    let opened = seen
        .iter()
        .filter(|s| s.method == "POST" && s.path.contains("/blobs/uploads/"))
        .count();
    assert_eq!(count("PUT") + count("DELETE"), opened, "{seen:?}");
}

#[test]
fn without_credentials_an_auth_registry_gets_early_posts_that_open_nothing() {
    // The early POSTs go beside the check only when no credentials were given; against a
    // registry that wants some they are refused (401), the run fails with exit 5 and no
    // session is left open. No request carries credentials before the check's answer.
    let held = Duration::from_millis(800);
    let reg = Registry::start(RegistryOpts {
        auth: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    let proxy = Proxy::start(reg.port, vec![Rule::new("GET", "/v2/", Fault::Delay(held))]);
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 5, "{}", run.all());
    let seen = proxy.seen();
    assert!(
        seen.iter()
            .any(|s| s.method == "POST" && s.path.contains(MOUNT)),
        "the test means nothing unless early POSTs went out: {seen:?}"
    );
    assert!(seen.iter().all(|s| !s.authorized), "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.method != "PATCH" && s.method != "PUT"),
        "{seen:?}"
    );
    assert_eq!(reg.open_uploads(), Vec::<std::path::PathBuf>::new());
}
