//! DR in one run (`push --platform-address A --standby-platform-address B`): one side failing
//! never stops the other, and each side's platform is trusted only as that side's flags say.
//! The fake platform (tests/common/platform.rs) plays both global clusters; real Distribution
//! registries hold the images.

mod common;

use common::platform::*;
use common::*;
use serde_json::Value;

fn side() -> (FakePlatform, Registry) {
    let reg = Registry::start(RegistryOpts::default());
    let p = FakePlatform::start(PlatformOpts::default());
    p.set_product_base(&reg.host(), None, false);
    (p, reg)
}

fn standby_flags(url: &str, token: &str, ca: Option<&std::path::Path>) -> Vec<String> {
    let mut v = vec![
        "--standby-platform-address".to_string(),
        url.to_string(),
        "--standby-platform-token".into(),
        token.into(),
        "--standby-plain".into(),
    ];
    if let Some(ca) = ca {
        v.extend([
            "--standby-platform-ca-file".into(),
            ca.display().to_string(),
        ]);
    }
    v
}

fn push_dr(primary: &FakePlatform, pkg: &str, standby: Vec<String>) -> Run {
    let mut args: Vec<String> = vec!["push".into(), pkg.into()];
    args.extend(primary.token_flags());
    args.extend(["--plain".into(), "--output".into(), "json".into()]);
    args.extend(standby);
    ferry(&args)
}

fn artifact_names(p: &FakePlatform) -> Vec<String> {
    let mut v: Vec<String> = p
        .list("global", "artifacts")
        .iter()
        .map(|a| a["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Blob uploads the registry's access log shows (a PUT that commits a blob).
fn blob_commits(reg: &Registry) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/"))
        .count()
}

#[test]
fn a_dead_or_refusing_standby_platform_leaves_the_standby_out_and_the_primary_completes() {
    let (primary, primary_reg) = side();
    let pkg = fixture("topolvm-operator").display().to_string();

    // 1. the standby platform does not answer at all (connection refused)
    let dead = format!("https://127.0.0.1:{}", free_port());
    let run = push_dr(&primary, &pkg, standby_flags(&dead, TOKEN, None));
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(
        run.stderr.contains("DR standby left out of this run"),
        "{}",
        run.stderr
    );
    assert!(primary_reg
        .skopeo_raw("acp/topolvm-operator-bundle:v3.11.0")
        .is_some());
    assert_eq!(artifact_names(&primary), ["topolvm-operator"]);
    let report: Value = run.json();
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("DR standby"),
        "{}",
        run.stdout
    );
    let sent = blob_commits(&primary_reg);
    assert!(sent > 0);

    // 2. the standby platform answers but rejects the token: left out, exit 5 (auth)
    let (standby, standby_reg) = side();
    let run = push_dr(
        &primary,
        &pkg,
        standby_flags(&standby.url(), "not-a-token", Some(&standby.ca())),
    );
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(
        run.stderr.contains("DR standby left out of this run") && run.stderr.contains("HTTP 401"),
        "{}",
        run.stderr
    );
    assert!(artifact_names(&standby).is_empty());
    assert!(!run.all().contains("not-a-token"), "{}", run.all());

    // 3. back and accepted: the standby is completed, the primary sent nothing again
    let run = push_dr(
        &primary,
        &pkg,
        standby_flags(&standby.url(), TOKEN, Some(&standby.ca())),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(artifact_names(&standby), ["topolvm-operator"]);
    assert!(standby_reg
        .skopeo_raw("acp/topolvm-operator-bundle:v3.11.0")
        .is_some());
    assert_eq!(
        blob_commits(&primary_reg),
        sent,
        "the primary's blobs were sent again"
    );
}

#[test]
fn the_primarys_platform_insecure_does_not_switch_off_the_standbys_verification() {
    let (primary, primary_reg) = side();
    let (standby, _standby_reg) = side();
    let pkg = fixture("oam-application").display().to_string();
    let mut args: Vec<String> = vec![
        "push".into(),
        pkg,
        "--platform-address".into(),
        primary.url(),
        "--platform-token".into(),
        TOKEN.into(),
        "--platform-insecure".into(),
        "--plain".into(),
    ];
    // the standby's CA is not given: its certificate must be verified, and fail
    args.extend(standby_flags(&standby.url(), TOKEN, None));
    let run = ferry(&args);
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(
        run.stderr.contains("DR standby left out of this run")
            && run.stderr.contains("certificate"),
        "{}",
        run.stderr
    );
    assert!(
        !standby
            .log()
            .iter()
            .any(|l| l.starts_with("GET /kubernetes/")),
        "the standby was spoken to without verifying it: {:?}",
        standby.log()
    );
    assert!(artifact_names(&standby).is_empty());
    assert_eq!(artifact_names(&primary), ["oam-application"]);
    assert!(primary_reg.log().contains("PUT /v2/"));
    // its own flag, given on purpose, does switch it off
    args.push("--standby-platform-insecure".into());
    let run = ferry(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(artifact_names(&standby), ["oam-application"]);
}

#[test]
fn standard_input_holds_one_secret_and_an_empty_one_is_refused_locally() {
    let (p, _reg) = side();
    let pkg = fixture("oam-application").display().to_string();
    let ca = p.ca().display().to_string();
    let url = p.url();
    let base = [
        "push",
        &pkg,
        "--platform-address",
        &url,
        "--platform-ca-file",
        &ca,
        "--platform-username",
        ADMIN,
        "--platform-password-stdin",
        "--plain",
    ];
    let mut two = base.to_vec();
    two.extend([
        "--dest-repo",
        "127.0.0.1:1",
        "--username",
        "u",
        "--password-stdin",
    ]);
    let run = ferry_with(&two, &[], Some(&format!("{ADMIN_PASSWORD}\nsecond\n")));
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("--password-stdin and --platform-password-stdin"),
        "{}",
        run.stderr
    );
    assert!(p.log().is_empty(), "nothing may be sent: {:?}", p.log());

    let run = ferry_with(&base, &[], Some("\n"));
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("empty"), "{}", run.stderr);
    assert!(p.log().is_empty(), "nothing may be sent: {:?}", p.log());

    let run = ferry_with(&base, &[], Some(&format!("{ADMIN_PASSWORD}\n")));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(!run.all().contains(ADMIN_PASSWORD));
}
