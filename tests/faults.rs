//! A faulty network between ferry and a real registry (see common/proxy.rs).

mod common;

use common::proxy::{Fault, Proxy, Rule};
use common::*;
use std::path::Path;
use std::time::Duration;

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

/// A DR push: `primary` directly, the standby (plain HTTP, anonymous) through `standby`.
fn push_dr_via(primary: &Registry, standby: &Proxy, pkg: &Path, extra: &[&str]) -> Run {
    let (primary, standby) = (primary.host(), standby.host());
    let mut args = vec![
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &primary,
        "--plain",
        "--standby-registry",
        &standby,
        "--standby-plain",
        "--standby-no-auth",
    ];
    args.extend_from_slice(extra);
    ferry(&args)
}

fn assert_landed(reg: &Registry) {
    assert!(
        reg.skopeo_raw("acp/big:v1").is_some(),
        "acp/big:v1 is not in the registry"
    );
    let dir = tempfile::tempdir().unwrap();
    reg.skopeo_copy_back("acp/big:v1", dir.path());
}

#[test]
fn transient_faults_are_retried_and_the_push_completes() {
    let (reg, _dir, pkg, proxy) = big_behind_proxy(
        false,
        vec![
            Rule::new("HEAD", "/blobs/sha256:", Fault::Status(503, None)),
            Rule::new("POST", "/blobs/uploads/", Fault::Status(429, Some(1))),
            // reset the second chunk's connection before any of its bytes reach the registry
            Rule::new("PATCH", "/blobs/uploads/", Fault::ResetAfter(0)).skip(1),
            Rule::new("PUT", "/blobs/uploads/", Fault::Status(502, None)),
            Rule::new("PUT", "/manifests/", Fault::Status(500, None)),
            Rule::new(
                "HEAD",
                "/manifests/",
                Fault::Dribble(Duration::from_millis(2)),
            ),
        ],
    );
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let report = run.json();
    assert!(
        report["totals"]["retries"].as_u64().unwrap() >= 4,
        "{report}"
    );
    assert_eq!(report["totals"]["blobs"]["uploaded"], 3);
    // the reset chunk was re-sent, not the whole blob: one upload session per blob
    let posts = reg
        .log()
        .matches("\"POST /v2/acp/big/blobs/uploads/")
        .count();
    assert_eq!(posts, 3, "a blob was restarted after a connection reset");
    assert_landed(&reg);
}

#[test]
fn a_reset_on_the_first_chunk_continues_the_same_session() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    // the very first chunk's connection dies before its body: the registry then reports
    // `Range: 0-0`, which means nothing held (not one byte)
    let proxy = Proxy::start(
        reg.port,
        vec![Rule::new("PATCH", "/blobs/uploads/", Fault::ResetAfter(0))],
    );
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let posts = reg
        .log()
        .matches("\"POST /v2/acp/big/blobs/uploads/")
        .count();
    assert_eq!(posts, 3, "the blob was restarted instead of resumed");
    assert!(
        !reg.log().contains("\" 416 "),
        "a chunk was sent at the wrong offset"
    );
    assert_landed(&reg);
}

#[test]
fn a_commit_whose_answer_was_lost_is_not_reported_as_failed() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    // every blob commit takes effect, but ferry never hears the answer: its retry is refused
    // (the session is gone), and only a HEAD tells that the blob is in
    let proxy = Proxy::start(
        reg.port,
        vec![Rule::new("PUT", "/blobs/uploads/", Fault::DropAnswer).times(usize::MAX)],
    );
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        reg.log().contains("\" 404 "),
        "the retried commit was not refused"
    );
    assert_landed(&reg);
}

#[test]
fn an_upload_location_on_another_host_is_refused() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    // something between ferry and the registry points uploads at another host: our
    // Authorization header must not follow
    let evil = common::proxy::Proxy::start(reg.port, vec![]);
    let proxy = Proxy::start(
        reg.port,
        vec![Rule::new(
            "POST",
            "/blobs/uploads/",
            Fault::RewriteLocation(Box::leak(
                format!("http://{}", evil.host()).into_boxed_str(),
            )),
        )
        .times(usize::MAX)],
    );
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.stdout.contains("upload location is on another origin"),
        "{}",
        run.stdout
    );
    assert_eq!(evil.bytes(), 0, "bytes went to the other host");
}

#[test]
fn a_redirect_on_blob_head_means_the_blob_is_there() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    let direct = Proxy::start(reg.port, vec![]);
    let run = push_via(&direct, &pkg, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    // drop the tag, keep the blobs; then blob HEADs answer 307 as S3-backed registries do
    let out = std::process::Command::new("skopeo")
        .args(["delete", "--tls-verify=false"])
        .arg(format!("docker://{}/acp/big:v1", reg.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proxy = Proxy::start(
        reg.port,
        vec![Rule::new("HEAD", "/blobs/sha256:", Fault::Status(307, None)).times(usize::MAX)],
    );
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let report = run.json();
    assert_eq!(report["totals"]["blobs"]["uploaded"], 0, "{report}");
    assert_eq!(report["totals"]["images_pushed"], 1, "{report}");
    assert_landed(&reg);
}

#[test]
fn timeout_is_idle_time_not_a_deadline_for_a_slow_but_moving_upload() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    // each 1 MiB chunk of the 3.5 MB blob crosses at 400 kB/s: about 2.6 s a request, well
    // over --timeout 1, yet bytes keep moving, so it must not time out
    let proxy = Proxy::start(
        reg.port,
        vec![Rule::new("PATCH", "/blobs/uploads/", Fault::SlowBody(400_000)).times(usize::MAX)],
    );
    let run = push_via(&proxy, &pkg, &["--timeout", "1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        run.json()["totals"]["retries"],
        0,
        "a moving upload was retried"
    );
    assert_landed(&reg);
}

#[test]
fn a_reset_mid_chunk_and_a_stall_are_survived() {
    let (reg, _dir, pkg, proxy) = big_behind_proxy(
        false,
        vec![
            // half of the third chunk reaches the registry, then the connection dies
            Rule::new("PATCH", "/blobs/uploads/", Fault::ResetAfter(500_000)).skip(2),
            Rule::new("PUT", "/manifests/", Fault::Stall(Duration::from_secs(4))),
        ],
    );
    let run = push_via(&proxy, &pkg, &["--timeout", "1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_landed(&reg);
}

#[test]
fn permanent_faults_stop_after_the_retry_budget_with_a_precise_error() {
    let (reg, _dir, pkg, proxy) = big_behind_proxy(
        false,
        vec![Rule::new("PATCH", "/blobs/uploads/", Fault::Status(503, None)).times(usize::MAX)],
    );
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 4, "{}", run.all());
    let report = run.json();
    let msg = report["packages"][0]["images"][0]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    for want in [
        proxy.host().as_str(),
        "acp/big",
        "sha256:",
        "HTTP 503",
        "manifest not pushed",
    ] {
        assert!(msg.contains(want), "{want:?} missing from: {msg}");
    }
    assert!(reg.skopeo_raw("acp/big:v1").is_none());

    proxy.set_rules(vec![Rule::new(
        "PUT",
        "/manifests/",
        Fault::Status(500, None),
    )
    .times(usize::MAX)]);
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 4, "{}", run.all());
    let msg = run.json()["packages"][0]["images"][0]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("HTTP 500") && msg.contains("acp/big:v1") && msg.contains("after 6 tries"),
        "{msg}"
    );
}

#[test]
fn a_corrupt_large_blob_cancels_its_upload_session() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    // corrupt the big layer's last byte on disk: detected only at the end of the stream
    let blobs = pkg.join("images/blobs/sha256");
    let big = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&big).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&big, bytes).unwrap();
    let proxy = Proxy::start(reg.port, vec![]);
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(run.stdout.contains("digest mismatch"), "{}", run.stdout);
    assert!(
        reg.log().contains("\"DELETE /v2/acp/big/blobs/uploads/"),
        "upload session not cancelled"
    );
    assert!(reg.skopeo_raw("acp/big:v1").is_none());
}

#[test]
fn a_registry_that_refuses_chunks_gets_one_streamed_request_per_blob() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    let proxy = Proxy::start(
        reg.port,
        vec![
            Rule::new("PATCH", "/blobs/uploads/", Fault::Status(416, None))
                .with_header("content-range")
                .times(usize::MAX),
        ],
    );
    let run = push_via(&proxy, &pkg, &["--debug"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("refuses chunked uploads"),
        "{}",
        run.stderr
    );
    assert_eq!(
        proxy.stats.faults.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "detected once per registry"
    );
    assert_landed(&reg);
}

#[test]
fn a_hung_standby_is_given_up_after_three_failed_blobs_and_the_primary_finishes() {
    let primary = Registry::start(RegistryOpts::default());
    let standby = Registry::start(RegistryOpts::default());
    // The standby's link swallows every blob upload and never answers.
    let proxy = Proxy::start(
        standby.port,
        vec![Rule::new("PUT", "/blobs/uploads/", Fault::Hold).times(usize::MAX)],
    );
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("many");
    let mut w = ferry::devtools::LayoutWriter::create(&pkg.join("images")).unwrap();
    let layers: Vec<_> = (0..60)
        .map(|i| w.layer(40 + i, 30_000, false).unwrap())
        .collect();
    let m = w.image("many", "amd64", &layers, false).unwrap();
    w.tag(&m, "registry.alauda.cn:60080/acp/many:v1");
    w.finish().unwrap();
    write_package_yaml(&pkg, "many");

    let run = push_dr_via(
        &primary,
        &proxy,
        &pkg,
        &[
            "--no-auth",
            "--concurrency",
            "1",
            "--timeout",
            "1",
            "--retry-base-ms",
            "10",
        ],
    );
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.all()
            .contains("3 blobs in a row failed on this registry: it is no longer fed in this run"),
        "{}",
        run.all()
    );
    // The primary got the image in full (checked with skopeo)...
    let back = tempfile::tempdir().unwrap();
    primary.skopeo_copy_back("acp/many:v1", back.path());
    assert!(standby.skopeo_raw("acp/many:v1").is_none());
    // ...and the standby was tried for at most the blobs in flight when it was given up (32
    // small blobs at --concurrency 1, 6 attempts each, and a few more), not for all 61 blobs
    // in every one of the 3 passes (1,098).
    let held = proxy.stats.faults.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=40 * 6).contains(&held),
        "{held} uploads sent to the hung standby"
    );
}

#[test]
fn a_failed_blob_head_in_one_repository_does_not_fail_the_others_sharing_the_blob() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("shared");
    let mut w = ferry::devtools::LayoutWriter::create(&pkg.join("images")).unwrap();
    let shared = w.layer(60, 50_000, false).unwrap();
    let (own_a, own_b) = (
        w.layer(61, 1_000, false).unwrap(),
        w.layer(62, 1_000, false).unwrap(),
    );
    let a = w
        .image("a", "amd64", &[shared.clone(), own_a], false)
        .unwrap();
    let b = w
        .image("b", "amd64", &[shared.clone(), own_b], false)
        .unwrap();
    w.tag(&a, "registry.alauda.cn:60080/acp/a:v1");
    w.tag(&b, "registry.alauda.cn:60080/acp/b:v1");
    w.finish().unwrap();
    write_package_yaml(&pkg, "shared");
    // acp/a would be the upload target of the shared layer (acp/b mounts it from there), but
    // the registry fails every HEAD of that blob in acp/a.
    let proxy = Proxy::start(
        reg.port,
        vec![Rule::new(
            "HEAD",
            &format!("/v2/acp/a/blobs/{}", shared.digest),
            Fault::Status(500, None),
        )
        .times(usize::MAX)],
    );
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 4, "{}", run.all());
    let report = run.json();
    assert_eq!(report["totals"]["images_pushed"], 1, "{report}");
    assert_eq!(report["totals"]["images_failed"], 1, "{report}");
    let why = format!("checking blob {} in acp/a: HTTP 500", shared.digest);
    assert!(run.all().contains(&why), "{}", run.all());
    let back = tempfile::tempdir().unwrap();
    reg.skopeo_copy_back("acp/b:v1", back.path());
    assert!(reg.skopeo_raw("acp/a:v1").is_none());
}

/// A registry (with htpasswd when `auth`) behind the fault proxy with `rules`, and the big
/// package to push through it (the directory lives as long as the returned guard).
fn big_behind_proxy(
    auth: bool,
    rules: Vec<Rule>,
) -> (Registry, tempfile::TempDir, std::path::PathBuf, Proxy) {
    let reg = Registry::start(RegistryOpts {
        auth,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    let proxy = Proxy::start(reg.port, rules);
    (reg, dir, pkg, proxy)
}

/// Arrival of the registry check (`GET /v2/`) and of every blob HEAD, from the proxy's log.
fn check_and_heads(proxy: &Proxy) -> (std::time::Instant, Vec<common::proxy::Seen>) {
    let seen = proxy.seen();
    let check = seen
        .iter()
        .find(|s| s.method == "GET" && s.path == "/v2/")
        .expect("the registry check")
        .at;
    let heads = seen
        .into_iter()
        .filter(|s| s.method == "HEAD" && s.path.contains("/blobs/sha256:"))
        .collect();
    (check, heads)
}

#[test]
fn the_first_blob_heads_travel_with_the_registry_check() {
    // An anonymous registry whose check answers late: the blob HEADs do not wait for it,
    // and their answers are the survey's (no blob asked twice); nothing else goes before it.
    let held = Duration::from_millis(800);
    let (reg, _dir, pkg, proxy) =
        big_behind_proxy(false, vec![Rule::new("GET", "/v2/", Fault::Delay(held))]);
    let run = push_via(&proxy, &pkg, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_landed(&reg);
    let (check, heads) = check_and_heads(&proxy);
    assert!(
        heads.iter().any(|h| h.at < check + held),
        "no blob HEAD went out while the check was held: {heads:?}"
    );
    // nothing but HEADs before the check's answer: no upload, no manifest
    let early: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.at < check + held && s.method != "HEAD" && s.path != "/v2/")
        .collect();
    assert!(
        early.is_empty(),
        "sent before the check answered: {early:?}"
    );
    let mut paths: Vec<&str> = heads.iter().map(|h| h.path.as_str()).collect();
    let asked = paths.len();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), asked, "a blob was asked twice: {heads:?}");
}

#[test]
fn answers_before_the_check_count_only_where_the_registry_wants_no_credentials() {
    // A registry that wants credentials, and a lie to every HEAD without them ("present"):
    // taken at its word, ferry would send no blob and the manifest would fail. No credentials
    // may go out before the check has found the registry's scheme either.
    let held = Duration::from_millis(800);
    let (reg, _dir, pkg, proxy) = big_behind_proxy(
        true,
        vec![
            Rule::new("GET", "/v2/", Fault::Delay(held)),
            Rule::new("HEAD", "/blobs/sha256:", Fault::Status(200, None))
                .without_header("authorization")
                .times(usize::MAX),
        ],
    );
    let run = push_via(&proxy, &pkg, &["--username", USER, "--password", PASSWORD]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        run.json()["totals"]["blobs"]["uploaded"],
        3,
        "{}",
        run.all()
    );
    assert_landed(&reg);
    let (check, heads) = check_and_heads(&proxy);
    assert!(
        heads.iter().any(|h| h.at < check + held && !h.authorized),
        "the test means nothing unless HEADs went out beside the check: {heads:?}"
    );
    let early: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.authorized && s.at < check + held)
        .collect();
    assert!(
        early.is_empty(),
        "credentials sent before the check answered: {early:?}"
    );
}

#[test]
fn a_refused_password_ends_the_run_before_the_prepared_work_sends_anything() {
    // The package is read and surveyed while the check is on the wire; when the check finds
    // the password wrong, that work sends nothing (a password is tried once: lockouts).
    let (_reg, _dir, pkg, proxy) = big_behind_proxy(
        true,
        vec![Rule::new(
            "GET",
            "/v2/",
            Fault::Delay(Duration::from_millis(500)),
        )],
    );
    let run = push_via(&proxy, &pkg, &["--username", USER, "--password", "wrong"]);
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(
        run.all().contains("refused the credentials"),
        "{}",
        run.all()
    );
    let seen = proxy.seen();
    let with_password: Vec<_> = seen.iter().filter(|s| s.authorized).collect();
    assert_eq!(
        with_password.len(),
        1,
        "the password went out more than once (the check's own GET only): {seen:?}"
    );
    let work: Vec<_> = seen
        .iter()
        .filter(|s| s.method != "HEAD" && s.path != "/v2/")
        .collect();
    assert!(work.is_empty(), "work sent after a refused check: {work:?}");
}

#[test]
fn heads_a_front_never_answers_without_credentials_do_not_hold_a_push_that_has_them() {
    // review2: a front (WAF, auth proxy) that tarpits requests without credentials. The old
    // code sent no anonymous HEAD to a registry that wants credentials; the HEADs sent beside
    // the check must not hold the push once the check has found the registry wants them.
    let (reg, _dir, pkg, proxy) = big_behind_proxy(
        true,
        vec![
            Rule::new("GET", "/v2/", Fault::Delay(Duration::from_millis(500))),
            Rule::new("HEAD", "/v2/", Fault::Hold)
                .without_header("authorization")
                .times(usize::MAX),
        ],
    );
    let started = std::time::Instant::now();
    let run = push_via(
        &proxy,
        &pkg,
        &[
            "--username",
            USER,
            "--password",
            PASSWORD,
            "--timeout",
            "30",
        ],
    );
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.all());
    assert_landed(&reg);
    assert!(
        proxy
            .seen()
            .iter()
            .any(|s| s.method == "HEAD" && !s.authorized),
        "the test means nothing unless HEADs went out beside the check"
    );
    assert!(
        took < Duration::from_secs(15),
        "the push waited {took:?} for anonymous HEADs a registry that wants credentials \
         never answers"
    );
}

#[test]
fn sigint_while_the_registry_check_is_held_ends_the_run_at_once() {
    // review2: before, the signal watcher started after the checks, so a Ctrl-C during a
    // check ended ferry at once; a check held by a stalled registry must not hold a Ctrl-C
    // for --timeout.
    let (reg, _dir, pkg, proxy) =
        big_behind_proxy(false, vec![Rule::new("GET", "/v2/", Fault::Hold)]);
    let host = proxy.host();
    let child = ferry_spawn(&[
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &host,
        "--plain",
        "--output",
        "json",
    ]);
    wait_for(30, "the registry check", || {
        proxy
            .stats
            .holding
            .load(std::sync::atomic::Ordering::SeqCst)
    });
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let signalled = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a Ctrl-C during the registry check took {took:?} to end the run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        reg.skopeo_raw("acp/big:v1").is_none(),
        "pushed after a Ctrl-C"
    );
}

#[test]
fn a_standby_trickling_its_check_answer_is_left_out_within_timeout() {
    // Each byte of the standby's check answer comes well within --timeout of the last, and the
    // primary waits for both checks: the check as a whole must be bounded.
    let primary = Registry::start(RegistryOpts::default());
    let (_standby, _dir, pkg, proxy) = big_behind_proxy(
        false,
        vec![
            Rule::new("GET", "/v2/", Fault::Dribble(Duration::from_millis(300))).times(usize::MAX),
        ],
    );
    let started = std::time::Instant::now();
    let run = push_dr_via(&primary, &proxy, &pkg, &["--timeout", "3"]);
    let took = started.elapsed();
    // the primary is complete; the standby's failure is the exit code (a timeout: 4)
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.all().contains("DR standby left out of this run"),
        "{}",
        run.all()
    );
    assert!(primary.skopeo_raw("acp/big:v1").is_some(), "{}", run.all());
    // the answer trickles for over a minute (~250 bytes at 300 ms each)
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn a_token_service_trickling_its_answer_fails_the_check_within_timeout() {
    // The check's token answer comes one byte at a time, each well within --timeout of the
    // last: only a deadline for the check as a whole ends it (else the run would wait for
    // ever, and with DR hold the other registry too).
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut conn = conn;
                if first.contains("/token") {
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
                    );
                    while conn.write_all(b" ").is_ok() {
                        std::thread::sleep(Duration::from_millis(300));
                    }
                } else {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"s\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    let started = std::time::Instant::now();
    let run = ferry(&[
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &format!("127.0.0.1:{port}"),
        "--plain",
        "--username",
        USER,
        "--password",
        PASSWORD,
        "--timeout",
        "2",
    ]);
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(
        run.all().contains("no whole answer within --timeout (2 s)"),
        "{}",
        run.all()
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{}", run.all());
}
