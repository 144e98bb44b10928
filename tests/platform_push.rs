//! `ferry push` to the platform: login (token and the five-call password flow), registry and
//! credentials discovered from the cluster, Artifact/ArtifactVersion written after the images.
//! The fake platform (tests/common/platform.rs) plays the platform; a real Distribution
//! registry holds the images; kubectl and skopeo check what landed.

mod common;

use common::platform::*;
use common::*;
use serde_json::Value;

/// A plain-HTTP registry with its address in ProductBase and no credentials needed.
fn platform_with_registry(opts: PlatformOpts) -> (FakePlatform, Registry) {
    let reg = Registry::start(RegistryOpts::default());
    let p = FakePlatform::start(opts);
    p.set_product_base(&reg.host(), None, false);
    (p, reg)
}

fn push(p: &FakePlatform, pkg: &str, extra: &[&str]) -> Run {
    let mut args: Vec<String> = vec!["push".into(), pkg.into()];
    args.extend(p.token_flags());
    args.extend(["--plain".into(), "--output".into(), "json".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    ferry(&args)
}

fn names(items: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn assert_no_secrets(run: &Run) {
    for secret in [TOKEN, ADMIN_PASSWORD, LDAP_PASSWORD, PASSWORD] {
        assert!(
            !run.all().contains(secret),
            "a secret leaked: {}",
            run.all()
        );
    }
}

/// The line ferry prints before the upload: the registry from ProductBase, its login from the
/// Secret.
fn assert_registry_and_credentials_from_the_platform(run: &Run, registry: &str) {
    assert!(
        run.stderr.contains(&format!(
            "registry {registry} (from ProductBase base in cluster global"
        )) && run
            .stderr
            .contains("credentials from Secret cpaas-system/registry-admin"),
        "{}",
        run.stderr
    );
}

#[test]
fn operator_goes_to_global_with_registry_from_product_base_and_credentials_from_the_secret() {
    let reg = Registry::start(RegistryOpts {
        tls: true,
        auth: true,
        ..Default::default()
    });
    let p = FakePlatform::start(PlatformOpts::default());
    p.set_product_base(&reg.host(), None, false);
    p.set_registry_admin(USER, PASSWORD);
    let pkg = fixture("topolvm-operator");
    let ca = reg.ca();
    let mut args: Vec<String> = vec!["push".into(), pkg.display().to_string(), "--debug".into()];
    args.extend(p.token_flags());
    args.extend(["--ca-file".into(), ca.display().to_string()]);
    let run = ferry(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_no_secrets(&run);
    assert_registry_and_credentials_from_the_platform(&run, &reg.host());
    assert!(
        run.stdout
            .contains("created       Artifact topolvm-operator (cluster global of "),
        "{}",
        run.stdout
    );

    // the images are in the registry (skopeo), the resources on the platform (kubectl)
    for (reference, manifest) in package_images(&pkg) {
        assert_eq!(reg.skopeo_raw(&path_of(&reference)).unwrap(), manifest);
    }
    let artifacts = p.kubectl_items("global", "artifacts.app.alauda.io");
    assert_eq!(names(&artifacts), ["topolvm-operator"]);
    let a = &artifacts[0];
    assert_eq!(a["metadata"]["labels"]["cpaas.io/artifact-type"], "bundle");
    assert_eq!(
        a["metadata"]["labels"]["cpaas.io/catalog-source"],
        "platform"
    );
    assert_eq!(a["spec"]["type"], "bundle");
    assert_eq!(a["spec"]["registry"], reg.host());
    assert_eq!(a["spec"]["repository"], "acp/topolvm-operator-bundle");
    assert_eq!(a["spec"]["present"], true);
    assert_eq!(
        a["spec"]["artifactVersionSelector"]["matchLabels"]["cpaas.io/artifact"],
        "topolvm-operator"
    );
    let versions = p.kubectl_items("global", "artifactversions.app.alauda.io");
    assert_eq!(names(&versions), ["topolvm-operator.v2.3.0"]);
    let v = &versions[0];
    assert_eq!(v["spec"]["tag"], "v3.11.0");
    assert_eq!(
        v["metadata"]["labels"]["cpaas.io/artifact"],
        "topolvm-operator"
    );
    assert_eq!(
        v["metadata"]["labels"]["cpaas.io/artifact-version"],
        "2.3.0"
    );
    assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Artifact");
    assert_eq!(
        v["metadata"]["ownerReferences"][0]["uid"],
        a["metadata"]["uid"]
    );

    // twice: nothing new, one object each
    args.extend(["--output".into(), "json".into()]);
    let again = ferry(&args);
    assert_eq!(again.code, 0, "{}", again.all());
    let report = again.json();
    let actions: Vec<&str> = report["packages"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["unchanged", "unchanged"], "{report}");
    assert_eq!(p.list("global", "artifacts").len(), 1);
    assert_eq!(p.list("global", "artifactversions").len(), 1);
}

#[test]
fn password_login_local_and_ldap_and_a_wrong_password() {
    let (p, _reg) = platform_with_registry(PlatformOpts::default());
    let pkg = fixture("topolvm-operator").display().to_string();
    let login = |user: &str, password: &str, idp: &str| {
        ferry_with(
            &[
                "push",
                &pkg,
                "--platform-address",
                &p.url(),
                "--platform-ca-file",
                p.ca().to_str().unwrap(),
                "--platform-username",
                user,
                "--idp",
                idp,
                "--plain",
                "--skip-crs",
                "--debug",
            ],
            &[("FERRY_PLATFORM_PASSWORD", password)],
            None,
        )
    };
    let run = login(ADMIN, ADMIN_PASSWORD, "local");
    assert_eq!(run.code, 0, "{}", run.all());
    assert_no_secrets(&run);
    let run = login(LDAP_USER, LDAP_PASSWORD, "ldap");
    assert_eq!(run.code, 0, "{}", run.all());
    // the five calls, in order, each once per login
    let log = p.log();
    let steps: Vec<&String> = log.iter().filter(|l| !l.contains("/kubernetes/")).collect();
    assert_eq!(steps.len(), 10, "{steps:?}");
    assert!(steps[3].starts_with("POST /dex/api/v1/authorize/local"));
    assert!(steps[8].starts_with("POST /dex/api/v1/authorize/ldap"));

    let run = login(ADMIN, "wrong-password", "local");
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(
        run.stderr.contains("login failed at step 4/5"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains("wrong-password"));
    // an LDAP user tried against the local connector is refused too
    let run = login(LDAP_USER, LDAP_PASSWORD, "local");
    assert_eq!(run.code, 5, "{}", run.all());

    // password from stdin
    let run = ferry_with(
        &[
            "push",
            &pkg,
            "--platform-address",
            &p.url(),
            "--platform-ca-file",
            p.ca().to_str().unwrap(),
            "--platform-username",
            ADMIN,
            "--platform-password-stdin",
            "--plain",
            "--skip-crs",
        ],
        &[],
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
    assert_eq!(run.code, 0, "{}", run.all());
}

#[test]
fn rejected_and_underprivileged_tokens_fail_clearly() {
    let (p, _reg) = platform_with_registry(PlatformOpts::default());
    let pkg = fixture("topolvm-operator").display().to_string();
    let base = |token: &str| {
        ferry(&[
            "push",
            &pkg,
            "--platform-address",
            &p.url(),
            "--platform-ca-file",
            p.ca().to_str().unwrap(),
            "--platform-token",
            token,
            "--plain",
        ])
    };
    let run = base("not-a-token");
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(
        run.stderr.contains("rejected the token (HTTP 401"),
        "{}",
        run.stderr
    );

    // a viewer token can read ProductBase, push images, but not write the Artifact
    let run = base(WEAK_TOKEN);
    assert_eq!(run.code, 7, "{}", run.all());
    assert!(run.stdout.contains("HTTP 403"), "{}", run.all());
    assert!(
        run.stdout.contains("platform-admin-system"),
        "{}",
        run.all()
    );

    // the platform's certificate is not trusted without --platform-ca-file
    let run = ferry(&[
        "push",
        &pkg,
        "--platform-address",
        &p.url(),
        "--platform-token",
        TOKEN,
        "--plain",
    ]);
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(run.stderr.contains("--platform-ca-file"), "{}", run.stderr);
}

#[test]
fn operator_to_named_clusters_and_plugin_ignores_clusters() {
    let (p, _reg) = platform_with_registry(PlatformOpts {
        clusters: vec!["global", "region1", "region2"],
        ..Default::default()
    });
    let run = push(
        &p,
        fixture("topolvm-operator").to_str().unwrap(),
        &["--clusters", "region1,region2"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    for c in ["region1", "region2"] {
        assert_eq!(
            names(&p.kubectl_items(c, "artifacts.app.alauda.io")),
            ["topolvm-operator"]
        );
        assert_eq!(
            names(&p.kubectl_items(c, "artifactversions.app.alauda.io")),
            ["topolvm-operator.v2.3.0"]
        );
    }
    assert!(p.list("global", "artifacts").is_empty());

    let run = push(
        &p,
        fixture("oam-application").to_str().unwrap(),
        &["--clusters", "region1"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let report = run.json();
    assert!(
        report["packages"][0]["warnings"]
            .to_string()
            .contains("--clusters is ignored"),
        "{report}"
    );
    let artifacts = p.kubectl_items("global", "artifacts.app.alauda.io");
    assert_eq!(names(&artifacts), ["oam-application"]);
    assert_eq!(
        artifacts[0]["metadata"]["labels"]["cpaas.io/artifact-type"],
        "plugin"
    );
    assert!(artifacts[0]["metadata"]["labels"]["cpaas.io/catalog-source"].is_null());
    assert!(
        p.list("region1", "artifacts").len() == 1,
        "only the operator"
    );

    // names as runbooks write them: spaces around the commas are dropped
    let run = push(
        &p,
        fixture("topolvm-operator").to_str().unwrap(),
        &["--clusters", "region1, region2"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
}

#[test]
fn a_mistyped_or_empty_cluster_fails_before_any_upload_naming_the_valid_ones() {
    let (p, reg) = platform_with_registry(PlatformOpts {
        clusters: vec!["global", "region1", "region2"],
        ..Default::default()
    });
    let run = push(
        &p,
        fixture("topolvm-operator").to_str().unwrap(),
        &["--clusters", "region1,regoin2"],
    );
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("regoin2 is not a cluster of the platform")
            && run
                .stderr
                .contains("(its clusters: global, region1, region2)"),
        "{}",
        run.stderr
    );
    assert!(
        !reg.log().contains("/blobs/uploads/"),
        "an upload started: {}",
        reg.log()
    );
    assert!(p.list("region1", "artifacts").is_empty());
    let run = push(
        &p,
        fixture("topolvm-operator").to_str().unwrap(),
        &["--clusters", "region1,,region2"],
    );
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("empty cluster name"), "{}", run.stderr);
}

#[test]
fn skip_crs_and_skip_push() {
    let (p, reg) = platform_with_registry(PlatformOpts::default());
    let pkg = fixture("topolvm-operator");
    let pkg = pkg.to_str().unwrap();

    // resources only, images absent: refused, naming what is missing; nothing written
    let run = push(&p, pkg, &["--skip-push"]);
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.stdout.contains("is not in the registry"),
        "{}",
        run.stdout
    );
    assert!(p.list("global", "artifacts").is_empty());
    assert_eq!(reg.skopeo_raw("acp/topolvm-operator-bundle:v3.11.0"), None);

    // images only
    let run = push(&p, pkg, &["--skip-crs"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(p.list("global", "artifacts").is_empty());
    assert!(reg
        .skopeo_raw("acp/topolvm-operator-bundle:v3.11.0")
        .is_some());

    // now resources only: written, no blob sent
    let run = push(&p, pkg, &["--skip-push"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let report = run.json();
    assert_eq!(report["totals"]["bytes_sent"], 0);
    assert_eq!(p.list("global", "artifacts").len(), 1);
    assert_eq!(p.list("global", "artifactversions").len(), 1);

    let both = push(&p, pkg, &["--skip-push", "--skip-crs"]);
    assert_eq!(both.code, 2, "{}", both.all());
}

#[test]
fn dest_repo_with_a_platform_needs_credentials_or_no_auth() {
    let (p, reg) = platform_with_registry(PlatformOpts::default());
    let pkg = fixture("topolvm-operator");
    let run = push(&p, pkg.to_str().unwrap(), &["--dest-repo", &reg.host()]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("--no-auth"), "{}", run.stderr);
    // the DR standby way: explicit registry, --no-auth
    // (here under a prefix, as a Harbor project would need)
    let dest = format!("{}/dr", reg.host());
    let run = push(
        &p,
        pkg.to_str().unwrap(),
        &["--dest-repo", &dest, "--no-auth"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr
            .contains(&format!("registry {dest} (from --dest-repo)")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("credentials none"), "{}", run.stderr);
    assert!(reg
        .skopeo_raw("dr/acp/topolvm-operator-bundle:v3.11.0")
        .is_some());
    let artifacts = p.kubectl_items("global", "artifacts.app.alauda.io");
    assert_eq!(artifacts[0]["spec"]["registry"], reg.host());
    assert_eq!(
        artifacts[0]["spec"]["repository"],
        "dr/acp/topolvm-operator-bundle"
    );
}

#[test]
fn a_package_with_a_broken_image_gets_no_resources() {
    let (p, _reg) = platform_with_registry(PlatformOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("topolvm-operator");
    let broken = dir.path().join("topolvm-operator.amd64.v2.3.0.tgz");
    // corrupt one layer: its digest check fails while it streams
    let mut corrupted = false;
    rewrite_tgz(&src, &broken, |path, mut bytes| {
        if !corrupted && path.starts_with("images/blobs/") && bytes.len() > 10_000 {
            bytes[5000] ^= 0xff;
            corrupted = true;
        }
        Some(bytes)
    });
    assert!(corrupted);
    let run = push(&p, broken.to_str().unwrap(), &[]);
    assert_eq!(run.code, 3, "{}", run.all());
    let report = run.json();
    assert!(
        report["packages"][0]["resources_skipped"]
            .as_str()
            .unwrap()
            .contains("image(s) of the package are not in registry"),
        "{report}"
    );
    assert!(p.list("global", "artifacts").is_empty());
}

/// The ArtifactVersion's owner reference names the Artifact in the version the cluster
/// serves (discovery's answer), not a version ferry assumed.
#[test]
fn the_owner_reference_uses_the_discovered_artifact_version() {
    let (p, _reg) = platform_with_registry(PlatformOpts {
        artifact_version: "v1beta1",
        ..Default::default()
    });
    let run = push(&p, fixture("topolvm-operator").to_str().unwrap(), &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let versions = p.list("global", "artifactversions");
    assert_eq!(versions.len(), 1, "{}", run.all());
    let owner = &versions[0]["metadata"]["ownerReferences"][0];
    assert_eq!(owner["apiVersion"], "app.alauda.io/v1beta1", "{owner}");
    assert_eq!(owner["kind"], "Artifact");
}

#[test]
fn a_new_version_adds_an_artifact_version_and_conflicts_are_retried() {
    let (p, _reg) = platform_with_registry(PlatformOpts {
        product_base_version: "v1alpha2",
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("topolvm-operator");
    let run = push(&p, src.to_str().unwrap(), &[]);
    assert_eq!(run.code, 0, "{}", run.all());

    let newer = dir.path().join("topolvm-operator.amd64.v2.4.0.tgz");
    rewrite_tgz(&src, &newer, |path, bytes| {
        if path == "package.yaml" {
            let text = String::from_utf8(bytes).unwrap();
            Some(
                text.replace("version: 2.3.0", "version: 2.4.0")
                    .replace("displayName", "x")
                    .into_bytes(),
            )
        } else {
            Some(bytes)
        }
    });
    // someone else changed the Artifact: our update must read it again and win the race
    let mut a = p
        .get("global", "artifacts", "cpaas-system", "topolvm-operator")
        .unwrap();
    a["spec"]["registry"] = serde_json::json!("old-registry:5000");
    a["metadata"]["labels"]["kept"] = serde_json::json!("yes");
    p.put("global", "artifacts", a);
    p.state.lock().unwrap().inject_conflicts = 2;

    let run = push(&p, newer.to_str().unwrap(), &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let report = run.json();
    let actions: Vec<&str> = report["packages"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["updated", "created"], "{report}");
    let versions = p.kubectl_items("global", "artifactversions.app.alauda.io");
    assert_eq!(
        names(&versions),
        ["topolvm-operator.v2.3.0", "topolvm-operator.v2.4.0"]
    );
    let artifacts = p.kubectl_items("global", "artifacts.app.alauda.io");
    assert_eq!(artifacts.len(), 1);
    assert_ne!(artifacts[0]["spec"]["registry"], "old-registry:5000");
    assert_eq!(artifacts[0]["metadata"]["labels"]["kept"], "yes");
}

#[test]
fn dry_run_lists_resources_and_writes_nothing() {
    let (p, reg) = platform_with_registry(PlatformOpts::default());
    let run = push(
        &p,
        fixture("topolvm-operator").to_str().unwrap(),
        &["--dry-run"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let report = run.json();
    let actions: Vec<&str> = report["packages"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["would_create", "would_create"], "{report}");
    assert!(p.list("global", "artifacts").is_empty());
    assert!(!p.log().iter().any(|l| l.starts_with("POST /kubernetes")));
    assert_eq!(reg.skopeo_raw("acp/topolvm-operator-bundle:v3.11.0"), None);
}

#[test]
fn ipv6_platform_and_registry_addresses() {
    let reg = Registry::start(RegistryOpts {
        ipv6: true,
        ..Default::default()
    });
    let p = FakePlatform::start(PlatformOpts {
        ipv6: true,
        ..Default::default()
    });
    p.set_product_base(&reg.host(), None, false);
    assert!(p.url().starts_with("https://[::1]:"));
    assert!(reg.host().starts_with("[::1]:"));
    // registry found in ProductBase
    let run = push(&p, fixture("oam-application").to_str().unwrap(), &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(p.list("global", "artifacts").len(), 1);
    assert_eq!(
        p.list("global", "artifacts")[0]["spec"]["registry"],
        reg.host()
    );
    // and given with --dest-repo, with a prefix
    let dest = format!("{}/dr", reg.host());
    let run = push(
        &p,
        fixture("topolvm-operator").to_str().unwrap(),
        &["--dest-repo", &dest, "--no-auth"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    // skopeo cannot parse IPv6 literals: python's urllib reads the manifest back instead
    let url = format!(
        "http://{}/v2/dr/acp/topolvm-operator-bundle/manifests/v3.11.0",
        reg.host()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys,urllib.request as u; r=u.Request(sys.argv[1], headers={'Accept': 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json'}); sys.stdout.buffer.write(u.urlopen(r).read())", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, manifest) = package_images(&fixture("topolvm-operator")).remove(0);
    assert_eq!(out.stdout, manifest);
}

#[test]
fn product_base_credentials_win_over_the_secret() {
    let reg = Registry::start(RegistryOpts {
        tls: true,
        auth: true,
        ..Default::default()
    });
    let p = FakePlatform::start(PlatformOpts::default());
    p.set_product_base(&reg.host(), Some((USER, PASSWORD)), false);
    p.set_registry_admin("someone-else", "wrong");
    let mut args: Vec<String> = vec![
        "push".into(),
        fixture("oam-application").display().to_string(),
        "--skip-crs".into(),
    ];
    args.extend(p.token_flags());
    args.extend(["--ca-file".into(), reg.ca().display().to_string()]);
    let run = ferry(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("credentials from ProductBase base"),
        "{}",
        run.stderr
    );
    assert_no_secrets(&run);

    // without them the Secret's (wrong) credentials are used: the 401 names where they came from
    p.set_product_base(&reg.host(), None, false);
    let run = ferry(&args);
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(
        run.all()
            .contains("user \"someone-else\" (from Secret cpaas-system/registry-admin)"),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("wrong"), "{}", run.all());
}

#[test]
fn a_directory_of_forty_packages_goes_up_concurrently() {
    let (p, reg) = platform_with_registry(PlatformOpts::default());
    p.state.lock().unwrap().api_delay = std::time::Duration::from_millis(20);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("packages");
    std::fs::create_dir_all(&out).unwrap();
    for i in 0..40u64 {
        let src = dir.path().join(format!("src{i}"));
        let mut w = ferry::devtools::LayoutWriter::create(&src.join("images")).unwrap();
        let shared = w.layer(4242, 30_000, false).unwrap();
        let own = w.layer(5000 + i, 20_000, false).unwrap();
        let m = w
            .image(&format!("p{i}"), "amd64", &[shared, own], false)
            .unwrap();
        w.tag(&m, &format!("registry.alauda.cn:60080/acp/p{i}:v1.0.{i}"));
        w.finish().unwrap();
        std::fs::write(
            src.join("package.yaml"),
            format!("apiVersion: ferry/v1\nkind: Package\nmetadata:\n  name: p{i}\n  version: 1.0.{i}\n  arch: [linux/amd64]\nspec:\n  type: plugin\n  lifecycle: aligned\n  artifact: registry.alauda.cn:60080/acp/p{i}:v1.0.{i}\n"),
        )
        .unwrap();
        pack(
            &src.join("images"),
            &src,
            &out.join(format!("p{i}.amd64.v1.0.{i}.tgz")),
        );
    }
    let run = push(&p, out.to_str().unwrap(), &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let report = run.json();
    assert_eq!(report["packages"].as_array().unwrap().len(), 40);
    // the report keeps the packages' order
    assert!(report["packages"][0]["file"]
        .as_str()
        .unwrap()
        .starts_with("p0."));
    assert_eq!(p.list("global", "artifacts").len(), 40);
    assert_eq!(p.list("global", "artifactversions").len(), 40);
    for i in [0, 17, 39] {
        assert!(reg.skopeo_raw(&format!("acp/p{i}:v1.0.{i}")).is_some());
    }
    let most = p.state.lock().unwrap().max_in_flight;
    assert!(
        most >= 2,
        "packages were written one after the other (at most {most} API calls at once)"
    );
}

#[test]
fn dr_in_one_run_fills_both_sides_and_a_dead_standby_does_not_stop_the_primary() {
    let (primary, primary_reg) = platform_with_registry(PlatformOpts::default());
    let standby = FakePlatform::start(PlatformOpts::default());
    let standby_reg = Registry::start(RegistryOpts::default());
    standby.set_product_base(&standby_reg.host(), None, false);
    let pkg = fixture("topolvm-operator");
    let mut args: Vec<String> = vec!["push".into(), pkg.display().to_string()];
    args.extend(primary.token_flags());
    args.extend([
        "--standby-platform-address".into(),
        standby.url(),
        "--standby-platform-token".into(),
        TOKEN.into(),
        "--standby-platform-ca-file".into(),
        standby.ca().display().to_string(),
        "--plain".into(),
        "--standby-plain".into(),
        "--output".into(),
        "json".into(),
    ]);
    let run = ferry(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "standby registry {} (from ProductBase base in cluster global of {}",
            standby_reg.host(),
            standby.url().trim_start_matches("https://")
        )),
        "{}",
        run.stderr
    );
    for (p, reg) in [(&primary, &primary_reg), (&standby, &standby_reg)] {
        assert!(reg
            .skopeo_raw("acp/topolvm-operator-bundle:v3.11.0")
            .is_some());
        let artifacts = p.kubectl_items("global", "artifacts.app.alauda.io");
        assert_eq!(names(&artifacts), ["topolvm-operator"]);
        assert_eq!(
            artifacts[0]["spec"]["registry"],
            reg.host(),
            "each side names its own registry"
        );
        assert_eq!(p.list("global", "artifactversions").len(), 1);
    }
    let report = run.json();
    assert_eq!(
        report["packages"][0]["resources"].as_array().unwrap().len(),
        4
    );

    // the standby's registry is down: the primary side completes, the exit code says it failed
    let other = fixture("oam-application");
    drop(standby_reg);
    args[1] = other.display().to_string();
    let run = ferry(&args);
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(
        run.stdout.contains("DR standby left out of this run"),
        "{}",
        run.stdout
    );
    assert_eq!(
        names(&primary.list("global", "artifacts")),
        ["oam-application", "topolvm-operator"]
    );
    assert_eq!(
        names(&standby.list("global", "artifacts")),
        ["topolvm-operator"]
    );
    assert!(
        run.json()["packages"][0]["resources_skipped"]
            .as_str()
            .unwrap()
            .contains("no image of the package reached registry"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_self_signed_ca_true_platform_certificate_given_with_platform_ca_file_is_accepted() {
    let (p, _reg) = platform_with_registry(PlatformOpts {
        self_signed_ca: true,
        ..Default::default()
    });
    // password login (reqwest) and the Kubernetes API (kube) both trust it by exact match
    let run = ferry_with(
        &[
            "push",
            fixture("oam-application").to_str().unwrap(),
            "--platform-address",
            &p.url(),
            "--platform-ca-file",
            p.ca().to_str().unwrap(),
            "--platform-username",
            ADMIN,
            "--plain",
        ],
        &[("FERRY_PLATFORM_PASSWORD", ADMIN_PASSWORD)],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(p.list("global", "artifacts").len(), 1);
    // another certificate is still refused
    let other = FakePlatform::start(PlatformOpts {
        self_signed_ca: true,
        ..Default::default()
    });
    let run = ferry(&[
        "push",
        fixture("oam-application").to_str().unwrap(),
        "--platform-address",
        &p.url(),
        "--platform-ca-file",
        other.ca().to_str().unwrap(),
        "--platform-token",
        TOKEN,
        "--plain",
    ]);
    assert_eq!(run.code, 6, "{}", run.all());
}

/// A chart package: one image and `charts/mychart-0.1.0.tgz`, packed by ferry.
fn chart_package(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("chart-src");
    let mut w = ferry::devtools::LayoutWriter::create(&src.join("images")).unwrap();
    let layer = w.layer(31337, 20_000, false).unwrap();
    let m = w.image("mychart", "amd64", &[layer], false).unwrap();
    w.tag(&m, "registry.alauda.cn:60080/acp/mychart-app:v0.1.0");
    w.finish().unwrap();
    std::fs::write(
        src.join("package.yaml"),
        "apiVersion: ferry/v1\nkind: Package\nmetadata:\n  name: mychart\n  displayName: My Chart\n  version: 0.1.0\n  arch: [linux/amd64]\nspec:\n  type: chart\n  lifecycle: agnostic\n  artifact: registry.alauda.cn:60080/acp/mychart-app:v0.1.0\n",
    )
    .unwrap();
    // the chart archive, as `helm package` lays it out
    let charts = dir.join("charts");
    std::fs::create_dir_all(&charts).unwrap();
    let f = std::fs::File::create(charts.join("mychart-0.1.0.tgz")).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        f,
        flate2::Compression::default(),
    ));
    for (path, text) in [
        ("mychart/Chart.yaml", "apiVersion: v2\nname: mychart\nversion: 0.1.0\nappVersion: \"1.0\"\ndescription: a test chart\n"),
        ("mychart/values.yaml", "image: registry.alauda.cn:60080/acp/mychart-app:v0.1.0\n"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, text.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
    let out = dir.join("mychart.ALL.v0.1.0.tgz");
    let run = ferry(&[
        "pack",
        "--from",
        src.join("images").to_str().unwrap(),
        "--metadata",
        src.join("package.yaml").to_str().unwrap(),
        "--charts",
        charts.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    out
}

#[test]
fn a_chart_goes_to_the_chart_repository_as_a_helm_oci_artifact() {
    let (p, reg) = platform_with_registry(PlatformOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = chart_package(dir.path());
    let run = push(&p, pkg.to_str().unwrap(), &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    // Helm's media types, read back with skopeo
    let raw = reg
        .skopeo_raw("public-charts/mychart:0.1.0")
        .unwrap_or_else(|| panic!("the chart is not in public-charts: {}", run.all()));
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.cncf.helm.config.v1+json"
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
    );
    let artifacts = p.kubectl_items("global", "artifacts.app.alauda.io");
    assert_eq!(names(&artifacts), ["mychart"]);
    assert_eq!(artifacts[0]["spec"]["type"], "chart");
    assert_eq!(artifacts[0]["spec"]["displayName"], "My Chart");
    assert_eq!(artifacts[0]["spec"]["repository"], "public-charts/mychart");
    let versions = p.kubectl_items("global", "artifactversions.app.alauda.io");
    assert_eq!(versions[0]["spec"]["tag"], "0.1.0");

    // another chart repository, and a second push finds it there
    let run = push(
        &p,
        pkg.to_str().unwrap(),
        &["--target-chartrepo", "team-charts"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(reg.skopeo_raw("team-charts/mychart:0.1.0").is_some());
    let run = push(
        &p,
        pkg.to_str().unwrap(),
        &["--target-chartrepo", "team-charts"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let chart = run.json()["packages"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["source"] == "charts/mychart-0.1.0.tgz")
        .cloned()
        .unwrap();
    assert_eq!(chart["status"], "present");
}

/// DR: the chart goes through the engine like every image, so the standby registry gets it
/// from the same run, with the same media types, and the report lists it per registry.
#[test]
fn a_chart_reaches_the_dr_standby_registry_too() {
    let (p, reg) = platform_with_registry(PlatformOpts::default());
    let standby = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = chart_package(dir.path());
    let dr = [
        "--standby-registry",
        &standby.host(),
        "--standby-plain",
        "--standby-no-auth",
    ];
    // the dry run's plan (and so its estimate) counts the chart, on both registries
    let mut dry = dr.to_vec();
    dry.push("--dry-run");
    let run = push(&p, pkg.to_str().unwrap(), &dry);
    assert_eq!(run.code, 0, "{}", run.all());
    let plan = run.json()["packages"][0]["plan"].clone();
    assert_eq!(plan.as_array().map(Vec::len), Some(2), "{plan}");
    for side in plan.as_array().unwrap() {
        // the app image and the chart
        assert_eq!(side["images_to_push"], 2, "{plan}");
        assert_eq!(side["blobs_to_upload"], 4, "{plan}");
    }
    let run = push(&p, pkg.to_str().unwrap(), &dr);
    assert_eq!(run.code, 0, "{}", run.all());
    // the chart's config and content are counted with the image's blobs, per registry
    assert_eq!(
        run.json()["packages"][0]["blobs"]["uploaded"],
        8,
        "{}",
        run.all()
    );
    for r in [&reg, &standby] {
        let raw = r
            .skopeo_raw("public-charts/mychart:0.1.0")
            .unwrap_or_else(|| panic!("the chart is not in {}: {}", r.host(), run.all()));
        let m: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
        );
        assert!(r.skopeo_raw("acp/mychart-app:v0.1.0").is_some());
    }
    // the same manifest on both sides
    assert_eq!(
        reg.skopeo_raw("public-charts/mychart:0.1.0"),
        standby.skopeo_raw("public-charts/mychart:0.1.0")
    );
    let charts: Vec<Value> = run.json()["packages"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["source"] == "charts/mychart-0.1.0.tgz")
        .cloned()
        .collect();
    assert_eq!(charts.len(), 2, "{}", run.all());
    assert!(charts.iter().all(|c| c["status"] == "pushed"), "{charts:?}");
}

#[test]
fn a_missing_file_argument_is_found_before_the_first_network_call() {
    let (p, _reg) = platform_with_registry(PlatformOpts::default());
    let url = p.url();
    for flag in [
        "--ca-file",
        "--standby-ca-file",
        "--standby-platform-ca-file",
    ] {
        let run = push(
            &p,
            fixture("oam-application").to_str().unwrap(),
            &[
                flag,
                "/nonexistent/ca.pem",
                "--standby-platform-address",
                &url,
                "--standby-platform-token",
                TOKEN,
            ],
        );
        assert_eq!(run.code, 2, "{flag}: {}", run.all());
        assert!(
            run.stderr
                .contains(&format!("{flag} /nonexistent/ca.pem: cannot read")),
            "{}",
            run.stderr
        );
    }
    assert!(p.log().is_empty(), "the platform was called: {:?}", p.log());
}

/// The demo's platform (scripts/demo.sh): examples/fake-platform.rs, the fake above as a
/// program. It starts on the address it is given, takes a push with the password login, the
/// registry from its ProductBase and the credentials from its Secret, and kubectl sees what
/// ferry wrote.
#[test]
fn the_demo_platform_program_takes_a_push_that_kubectl_sees() {
    use std::io::BufRead as _;
    // cargo puts examples in `examples/` beside the binaries (`cargo test` builds them)
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_ferry"))
        .with_file_name("examples")
        .join("fake-platform");
    assert!(
        exe.exists(),
        "{} is not built: `cargo test --all-targets` or `cargo build --example fake-platform`",
        exe.display()
    );
    let reg = Registry::start(RegistryOpts {
        tls: true,
        auth: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = std::process::Command::new(&exe)
        .args(["--listen", &listen, "--registry", &reg.host()])
        .args(["--registry-user", USER, "--registry-password", PASSWORD])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // killed however the test ends; its stdout kept open while it runs
    struct Running(
        std::process::Child,
        std::io::BufReader<std::process::ChildStdout>,
    );
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut running = Running(child, out);
    let mut first = String::new();
    running.1.read_line(&mut first).unwrap();
    let url = format!("https://{listen}");
    let ca = dir.path().join("ca.pem");
    assert_eq!(
        first.trim_end(),
        format!("fake platform at {url} (CA {})", ca.display())
    );

    let pkg = fixture("topolvm-operator");
    let run = ferry_with(
        &[
            "push".as_ref(),
            pkg.as_os_str(),
            "--platform-address".as_ref(),
            url.as_ref(),
            "--platform-username".as_ref(),
            ADMIN.as_ref(),
            "--platform-password-stdin".as_ref(),
            "--platform-ca-file".as_ref(),
            ca.as_os_str(),
            "--ca-file".as_ref(),
            reg.ca().as_os_str(),
        ],
        &[],
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_no_secrets(&run);
    assert_registry_and_credentials_from_the_platform(&run, &reg.host());
    for (reference, manifest) in package_images(&pkg) {
        assert_eq!(reg.skopeo_raw(&path_of(&reference)).unwrap(), manifest);
    }

    // kubectl, as the demo runs it: an empty kubeconfig, the server, the CA and the token
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "--server",
            &format!("{url}/kubernetes/global"),
            "--token",
            TOKEN,
        ])
        .arg("--certificate-authority")
        .arg(&ca)
        .args([
            "get",
            "artifacts.app.alauda.io,artifactversions.app.alauda.io",
        ])
        .args(["-n", "cpaas-system", "-o", "json"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, String)> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_string(),
                i["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("Artifact".to_string(), "topolvm-operator".to_string()),
            (
                "ArtifactVersion".to_string(),
                "topolvm-operator.v2.3.0".to_string()
            )
        ]
    );
    assert_eq!(items["items"][0]["spec"]["registry"], reg.host());
}
