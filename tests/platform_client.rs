//! The platform client's policy (docs/platform-api.md, "Client policy"): Secret data never
//! reaches the output, TLS errors name the flags that fix them, lists are read page by page.

mod common;

use base64::Engine as _;
use common::platform::*;
use common::*;
use serde_json::json;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn assert_never_shown(run: &Run, secrets: &[&str]) {
    for s in secrets {
        assert!(!run.all().contains(s), "{s:?} leaked:\n{}", run.all());
    }
}

/// A registry-admin Secret that a typed (k8s-openapi) read cannot parse: kube-client used to
/// log the whole answer, the password in it, at WARN, even without --debug.
#[test]
fn a_registry_admin_secret_that_breaks_typed_parsing_never_reaches_the_output() {
    let reg = Registry::start(RegistryOpts {
        tls: true,
        auth: true,
        ..Default::default()
    });
    let p = FakePlatform::start(PlatformOpts::default());
    p.set_product_base(&reg.host(), None, false);
    let pkg = fixture("oam-application").display().to_string();
    let push = |debug: bool| {
        let mut args: Vec<String> = vec!["push".into(), pkg.clone(), "--skip-crs".into()];
        args.extend(p.token_flags());
        args.extend(["--ca-file".into(), reg.ca().display().to_string()]);
        if debug {
            args.push("--debug".into());
        }
        ferry(&args)
    };
    let secret = |data: serde_json::Value| {
        p.put(
            "global",
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "registry-admin", "namespace": "cpaas-system"},
                "data": data}),
        );
    };

    // username and password are fine, another key is a number: ferry reads what it needs
    secret(json!({"username": b64(USER), "password": b64(PASSWORD), "replicas": 12345}));
    for debug in [false, true] {
        let run = push(debug);
        assert_eq!(run.code, 0, "{}", run.all());
        assert!(
            run.stderr
                .contains("credentials from Secret cpaas-system/registry-admin"),
            "{}",
            run.stderr
        );
        assert_never_shown(&run, &[PASSWORD, &b64(PASSWORD), TOKEN]);
    }

    // the password is not base64 (its plain text is in the answer): a clear error, no body
    secret(json!({"username": b64(USER), "password": format!("{PASSWORD}!")}));
    for debug in [false, true] {
        let run = push(debug);
        assert_eq!(run.code, 7, "{}", run.all());
        assert!(
            run.stderr.contains(
                "cluster global: Secret cpaas-system/registry-admin: data.password is not base64"
            ),
            "{}",
            run.stderr
        );
        assert_never_shown(&run, &[PASSWORD, TOKEN]);
    }

    // data is not even a map
    secret(json!(format!("{PASSWORD}")));
    let run = push(true);
    assert_eq!(run.code, 7, "{}", run.all());
    assert_never_shown(&run, &[PASSWORD, TOKEN]);
}

/// Without `--platform-ca-file` the platform's certificate is refused (exit 6), and the message
/// names the two flags of the platform (not the registry's `--insecure`).
#[test]
fn the_platform_tls_error_names_platform_ca_file_and_platform_insecure() {
    let p = FakePlatform::start(PlatformOpts::default());
    let pkg = fixture("oam-application").display().to_string();
    let token = ferry(&[
        "push",
        &pkg,
        "--platform-address",
        &p.url(),
        "--platform-token",
        TOKEN,
        "--plain",
    ]);
    let password = ferry_with(
        &[
            "push",
            &pkg,
            "--platform-address",
            &p.url(),
            "--platform-username",
            ADMIN,
            "--plain",
        ],
        &[("FERRY_PLATFORM_PASSWORD", ADMIN_PASSWORD)],
        None,
    );
    let list = ferry(&[
        "list",
        "--platform-address",
        &p.url(),
        "--platform-token",
        TOKEN,
        "--clusters",
        "global",
    ]);
    for run in [token, password, list] {
        assert_eq!(run.code, 6, "{}", run.all());
        assert!(
            run.stderr.contains("--platform-ca-file") && run.stderr.contains("--platform-insecure"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("or --insecure"), "{}", run.stderr);
        assert_never_shown(&run, &[TOKEN, ADMIN_PASSWORD]);
    }
    // and --platform-insecure does what it says
    let run = ferry(&[
        "list",
        "--platform-address",
        &p.url(),
        "--platform-token",
        TOKEN,
        "--clusters",
        "global",
        "--platform-insecure",
        "--output-file",
        p.dir.path().join("apps.yaml").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
}

/// More Artifacts than one page holds: every one is read, through `limit` and `continue`.
#[test]
fn lists_are_read_page_by_page() {
    let p = FakePlatform::start(PlatformOpts::default());
    let n = 730;
    for i in 0..n {
        p.put(
            "global",
            "artifacts",
            json!({"apiVersion": "app.alauda.io/v1alpha1", "kind": "Artifact",
            "metadata": {"name": format!("op-{i:04}"), "namespace": "cpaas-system"},
            "spec": {"type": "bundle", "registry": "10.0.0.5:11443", "present": true}}),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.yaml");
    let mut args: Vec<String> = [
        "list",
        "--clusters",
        "global",
        "--output",
        "json",
        "--output-file",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(file.display().to_string());
    args.extend(p.token_flags());
    let run = ferry(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    let apps = run.json();
    for i in 0..n {
        let name = format!("op-{i:04}");
        assert_eq!(
            apps["applications"][&name]["type"], "OperatorBundle",
            "{name} missing"
        );
    }
    let pages: Vec<String> = p
        .state
        .lock()
        .unwrap()
        .list_pages
        .iter()
        .filter(|l| l.starts_with("global artifacts "))
        .cloned()
        .collect();
    assert!(pages.len() >= 2, "{pages:?}");
    assert!(
        pages[0].contains("limit=") && pages[0].ends_with("continue="),
        "{pages:?}"
    );
    assert!(
        pages[1..].iter().all(|l| !l.ends_with("continue=")),
        "{pages:?}"
    );
}

/// A narrower `FERRY_LOG` directive cannot lift the cap on kube's logs: a ProductBase whose
/// answer does not parse (kube logs such an answer whole) never shows its password.
#[test]
fn ferry_log_cannot_lift_the_cap_on_dependency_logs() {
    let p = FakePlatform::start(PlatformOpts::default());
    p.put(
        "global",
        "productbases",
        json!({"apiVersion": "product.alauda.io/v1alpha1", "kind": "ProductBase",
            "metadata": {"name": "base", "labels": 7},
            "spec": {"registry": {"address": "127.0.0.1:1", "username": "u", "password": PASSWORD}}}),
    );
    let mut args: Vec<String> = vec![
        "push".into(),
        fixture("oam-application").display().to_string(),
        "--debug".into(),
    ];
    args.extend(p.token_flags());
    let run = ferry_with(
        &args,
        &[("FERRY_LOG", "trace,kube_client::client=trace,kube=trace")],
        None,
    );
    assert_ne!(run.code, 0, "{}", run.all());
    assert_never_shown(&run, &[PASSWORD, TOKEN]);
}
