//! `ferry sync`'s registries resolved as push resolves them (cli/destination/): a login
//! file for `--registry`, `--password-stdin`, a standby without credentials, the refusals of
//! push; and `--preflight`'s cluster name and current image.

mod common;

use common::core_sync::*;
use common::platform::*;
use common::*;

const CORE_IMAGE: &str = "acp/cluster-version-operator:v4.2.0";

/// A docker login file holding `USER`/`PASSWORD` for `host`.
fn login_file(dir: &std::path::Path, host: &str) -> std::path::PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let path = dir.join("auth.json");
    std::fs::write(
        &path,
        serde_json::json!({"auths": {host: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    path
}

/// A TLS registry that needs `USER`'s login, and a core package in a temporary directory.
fn login_registry_and_core() -> (Registry, tempfile::TempDir, std::path::PathBuf) {
    let reg = Registry::start(RegistryOpts {
        tls: true,
        auth: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let pkg = core(dir.path());
    (reg, dir, pkg)
}

#[test]
fn registry_without_credentials_uses_a_login_file_and_needs_no_cluster() {
    let (reg, dir, pkg) = login_registry_and_core();
    let auth = login_file(dir.path(), &reg.host());
    let run = sync_with(
        &[
            "--package",
            pkg.to_str().unwrap(),
            "--only-sync-image",
            "--registry",
            &reg.host(),
            "--ca-file",
            reg.ca().to_str().unwrap(),
            // the credentials are on the node: no cluster is asked for them
            "--kubeconfig",
            "/nonexistent",
        ],
        &[("REGISTRY_AUTH_FILE", auth.to_str().unwrap())],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr
            .contains("(from --registry); credentials from a docker/podman login file"),
        "{}",
        run.stderr
    );
    assert!(reg.skopeo_raw(CORE_IMAGE).is_some());
    assert!(!run.all().contains(PASSWORD));
}

#[test]
fn password_stdin_gives_the_registry_password_and_an_empty_line_is_refused() {
    let (reg, _dir, pkg) = login_registry_and_core();
    let ca = reg.ca();
    let args = [
        "--package",
        pkg.to_str().unwrap(),
        "--only-sync-image",
        "--registry",
        &reg.host(),
        "--username",
        USER,
        "--password-stdin",
        "--ca-file",
        ca.to_str().unwrap(),
        "--kubeconfig",
        "/nonexistent",
    ];
    let run = sync_with(&args, &[], Some("\n"));
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("empty line"), "{}", run.stderr);
    assert!(reg.skopeo_raw(CORE_IMAGE).is_none());

    let run = sync_with(&args, &[], Some(&format!("{PASSWORD}\n")));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("credentials from the command line"),
        "{}",
        run.stderr
    );
    assert!(reg.skopeo_raw(CORE_IMAGE).is_some());
    assert!(!run.all().contains(PASSWORD));
}

#[test]
fn credential_flags_are_refused_as_push_refuses_them_and_a_standby_may_be_anonymous() {
    let primary = Registry::start(RegistryOpts::default());
    let standby = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = core(dir.path());
    let base = [
        "--package",
        pkg.to_str().unwrap(),
        "--only-sync-image",
        "--registry",
        &primary.host(),
        "--plain",
        "--kubeconfig",
        "/nonexistent",
    ];
    // a user without a password is an authentication problem (exit 5), as in push
    let mut args = base.to_vec();
    args.extend(["--username", "nobody"]);
    let run = sync(&args);
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(
        run.stderr.contains("--username needs --password"),
        "{}",
        run.stderr
    );

    // a standby registry that needs no login needs no credential flags, as in push
    let mut args = base.to_vec();
    args.extend(["--username", "nobody", "--password", "unused-pass"]);
    let standby_host = standby.host();
    args.extend(["--standby-registry", &standby_host, "--standby-plain"]);
    let run = sync(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "standby registry {} (from --standby-registry); plain HTTP; credentials none",
            standby.host()
        )),
        "{}",
        run.stderr
    );
    for reg in [&primary, &standby] {
        assert!(
            reg.skopeo_raw(CORE_IMAGE).is_some(),
            "not in {}",
            reg.host()
        );
    }
}

#[test]
fn preflight_cluster_is_trimmed_shows_the_current_image_and_names_the_clusters() {
    let p = FakePlatform::start(PlatformOpts {
        clusters: vec!["global", "region2"],
        ..Default::default()
    });
    let kubeconfig = p.kubeconfig("global");
    let kc = kubeconfig.to_str().unwrap();
    shadow(&p, "Passed", 2, 2);
    let current = "registry.alauda.cn:60080/acp/release:v4.1.3";

    let run = sync(&["--preflight", "--kubeconfig", kc, "--cluster", " global "]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains(&format!("Current image    {current}")),
        "{}",
        run.stdout
    );
    let run = sync(&["--preflight", "--kubeconfig", kc, "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.json()["current_image"], current);

    let run = sync(&["--preflight", "--kubeconfig", kc, "--cluster", " "]);
    assert_eq!(run.code, 2, "{}", run.all());

    let run = sync(&["--preflight", "--kubeconfig", kc, "--cluster", "region3"]);
    assert_eq!(run.code, 7, "{}", run.all());
    assert!(
        run.stderr
            .contains("no ClusterVersionShadow cpaas-system/region3")
            && run.stderr.contains("the clusters are: global, region2"),
        "{}",
        run.stderr
    );
}
