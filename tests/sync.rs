//! `ferry sync` (and `upgrade.sh`, its wrapper) on a small core package made by
//! `ferry dev core`: registry decided from the cluster (kubeconfig → the fake platform's
//! Kubernetes API), images into real registries (checked with skopeo), manifests applied
//! server-side (checked with kubectl), preflight tables and exit codes.

mod common;

use common::platform::*;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn core(dir: &Path) -> PathBuf {
    let out = dir.join("core");
    let plugin = fixture("oam-application");
    let run = ferry(&[
        "dev",
        "core",
        out.to_str().unwrap(),
        "--plugin",
        plugin.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    out
}

fn sync(args: &[&str]) -> Run {
    let mut v = vec!["sync", "--retry-base-ms", "20"];
    v.extend_from_slice(args);
    ferry(&v)
}

/// A plain-HTTP primary registry that needs no login (credentials given, as upgrade.sh wants).
const PLAIN_PRIMARY: [&str; 5] = [
    "--username",
    "nobody",
    "--password",
    "unused-pass",
    "--plain",
];

const CORE_IMAGES: [&str; 2] = [
    "acp/cluster-version-operator:v4.2.0",
    "3rdparty/etcd:v3.5.21",
];

#[test]
fn registry_from_product_base_rebuilt_from_the_vip_with_the_secrets_credentials() {
    let reg = Registry::start(RegistryOpts {
        tls: true,
        auth: true,
        ..Default::default()
    });
    let p = FakePlatform::start(PlatformOpts::default());
    // ProductBase names some other host; the node reaches the registry at the VIP, same port
    p.set_product_base(&format!("registry.internal:{}", reg.port), None, false);
    p.set_registry_admin(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let pkg = core(dir.path());
    let kubeconfig = p.kubeconfig("global");
    let run = sync(&[
        "--package",
        pkg.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--ca-file",
        reg.ca().to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "registry 127.0.0.1:{} (built-in registry at the global VIP 127.0.0.1",
            reg.port
        )) && run
            .stderr
            .contains("credentials from Secret cpaas-system/registry-admin"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains(PASSWORD) && !run.all().contains(TOKEN));
    assert_core_and_plugin_synced(&run, &reg);
    // the Deployment was applied server-side, its image pointed at the registry
    let out = p.kubectl(
        "global",
        &[
            "get",
            "deployments.apps",
            "cluster-version-operator",
            "-n",
            "cpaas-system",
            "-o",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("127.0.0.1:{}/acp/cluster-version-operator:v4.2.0", reg.port)
    );
    // kubectl hides managedFields: read them from the fake's store
    let stored = p
        .get(
            "global",
            "deployments",
            "cpaas-system",
            "cluster-version-operator",
        )
        .unwrap();
    assert_eq!(stored["metadata"]["managedFields"][0]["manager"], "ferry");
    assert!(p.log().iter().any(|l| l.starts_with(
        "PATCH /kubernetes/global/apis/apps/v1/namespaces/cpaas-system/deployments/"
    )));
}

#[test]
fn upgrade_sh_spelling_with_an_explicit_registry_and_a_standby() {
    let primary = Registry::start(RegistryOpts::default());
    let standby = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = core(dir.path());
    // only-sync-image needs no cluster when registry and credentials are given
    let upgrade = pkg.join("upgrade.sh");
    let out = std::process::Command::new("bash")
        .arg(&upgrade)
        .arg("--only-sync-image=true")
        .args(["--registry", &primary.host()])
        .args(["--username", "nobody", "--password", "unused-pass"])
        .args([
            "--standby-registry",
            &standby.host(),
            "--standby-no-auth",
            "--standby-plain",
        ])
        .args(["--plain", "--kubeconfig", "/nonexistent"])
        .env("FERRY", env!("CARGO_BIN_EXE_ferry"))
        .env("HOME", scratch_home())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("from --registry"), "{text}");
    for reg in [&primary, &standby] {
        for image in CORE_IMAGES {
            assert!(
                reg.skopeo_raw(image).is_some(),
                "{image} not in {}",
                reg.host()
            );
        }
    }
    assert!(!text.contains("unused-pass"));
}

#[test]
fn a_checksum_mismatch_stops_before_any_upload_unless_skipped() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = core(dir.path());
    std::fs::write(
        pkg.join("manifests/cluster-version-operator.yaml"),
        "tampered: true\n",
    )
    .unwrap();
    let args = [
        "--package",
        pkg.to_str().unwrap(),
        "--only-sync-image",
        "--registry",
        &reg.host(),
        "--username",
        "u",
        "--password",
        "p",
        "--plain",
    ];
    let run = sync(&args);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr
            .contains("manifests/cluster-version-operator.yaml: checksum mismatch"),
        "{}",
        run.stderr
    );
    assert!(!reg.log().contains("\"POST "), "something was uploaded");
    let mut skipped = args.to_vec();
    skipped.push("--skip-check-artifacts");
    let run = sync(&skipped);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(reg.skopeo_raw(CORE_IMAGES[0]).is_some());
}

#[test]
fn external_registry_skips_the_sync_and_skip_sync_image_checks_images_first() {
    let reg = Registry::start(RegistryOpts::default());
    let p = FakePlatform::start(PlatformOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = core(dir.path());
    let kubeconfig = p.kubeconfig("global");
    let kc = kubeconfig.to_str().unwrap();

    p.set_product_base("harbor.example.com", None, true);
    let run = sync(&[
        "--package",
        pkg.to_str().unwrap(),
        "--kubeconfig",
        kc,
        "--only-sync-image",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr
            .contains("external registry; image synchronization is skipped"),
        "{}",
        run.stderr
    );

    // built-in registry at the VIP: --skip-sync-image refuses while the images are missing
    p.set_product_base(&format!("10.1.2.3:{}", reg.port), None, false);
    let skip = [
        "--package",
        pkg.to_str().unwrap(),
        "--kubeconfig",
        kc,
        "--skip-sync-image",
        "--vip",
        "127.0.0.1",
        "--plain",
    ];
    let run = sync(&skip);
    assert_eq!(run.code, 4, "{}", run.all());
    // the error on stderr, the result on stdout
    assert!(run.stderr.contains("not in the registry"), "{}", run.all());
    assert!(
        run.stderr.contains("acp/cluster-version-operator:v4.2.0"),
        "{}",
        run.all()
    );
    assert!(p.list("global", "deployments").is_empty());

    // after the images: the manifests are applied
    let run = sync(&[
        "--package",
        pkg.to_str().unwrap(),
        "--kubeconfig",
        kc,
        "--only-sync-image=true",
        "--vip",
        "127.0.0.1",
        "--plain",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        p.list("global", "deployments").is_empty(),
        "only-sync-image applied manifests"
    );
    let run = sync(&skip);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(p.list("global", "deployments").len(), 1);
}

fn shadow(p: &FakePlatform, state: &str, generation: i64, observed: i64) {
    p.put(
        "global",
        "clusterversionshadows",
        json!({
            "apiVersion": "config.alauda.io/v1",
            "kind": "ClusterVersionShadow",
            "metadata": {"name": "global", "namespace": "cpaas-system", "generation": generation},
            "spec": {"desiredUpdate": {"version": "v4.2.0"}},
            "status": {
                "current": {"version": "v4.1.3"},
                "desired": {"version": "v4.2.0", "image": "registry.alauda.cn:60080/acp/release:v4.2.0"},
                "conditions": [{"type": "PreflightReady", "status": if state == "Passed" { "True" } else { "False" },
                                "observedGeneration": observed, "reason": "Checked", "message": "",
                                "lastTransitionTime": "2026-11-25T10:00:00Z"}],
                "preflight": {"observedAt": "2026-11-25T10:00:00Z", "checks": [
                    {"name": "etcd-health", "policy": "Block", "state": "Passed", "reason": "Healthy", "message": "3/3 members healthy"},
                    {"name": "registry-images", "policy": "Block", "state": state, "reason": "Checked", "message": "core images present"}
                ]}
            }
        }),
    );
}

#[test]
fn preflight_prints_summary_and_checks_and_exits_by_the_result() {
    let p = FakePlatform::start(PlatformOpts::default());
    let kubeconfig = p.kubeconfig("global");
    let kc = kubeconfig.to_str().unwrap();
    shadow(&p, "Passed", 2, 2);
    let run = sync(&["--preflight", "--kubeconfig", kc]);
    assert_eq!(run.code, 0, "{}", run.all());
    for text in [
        "Summary",
        "Result           Passed",
        "Current version  v4.1.3",
        "Desired version  v4.2.0",
        "Observed at      2026-11-25T10:00:00Z",
        "Checks",
        "NAME             POLICY  STATE   REASON   MESSAGE",
        "etcd-health      Block   Passed  Healthy  3/3 members healthy",
    ] {
        assert!(
            run.stdout.contains(text),
            "{text:?} missing:\n{}",
            run.stdout
        );
    }
    shadow(&p, "Failed", 2, 2);
    let run = sync(&["--preflight", "--kubeconfig", kc, "--output", "json"]);
    assert_eq!(run.code, 8, "{}", run.all());
    assert_eq!(run.json()["checks"][1]["passed"], false);
    // passed, but for an older desired update
    shadow(&p, "Passed", 3, 2);
    let run = sync(&["--preflight", "--kubeconfig", kc]);
    assert_eq!(run.code, 8, "{}", run.all());
    assert!(run.stdout.contains("stale"), "{}", run.stdout);
    // read-only
    assert!(!p.log().iter().any(|l| !l.starts_with("GET ")));
}

/// The run verified the checksums, and every core and plugin image is in `reg` (skopeo).
fn assert_core_and_plugin_synced(run: &Run, reg: &Registry) {
    let report = run.json();
    assert!(
        report["checksums_verified"].as_u64().unwrap() > 5,
        "{report}"
    );
    for image in CORE_IMAGES {
        assert!(reg.skopeo_raw(image).is_some(), "{image} not synced");
    }
    for (reference, manifest) in package_images(&fixture("oam-application")) {
        let got = reg.skopeo_raw(&path_of(&reference));
        assert_eq!(
            got.as_deref(),
            Some(&manifest[..]),
            "plugin image {reference}"
        );
    }
}

/// Packs a directory the way operators receive core packages: GNU tar, gzip.
fn tar_czf(dir: &Path, out: &Path) {
    let run = std::process::Command::new("tar")
        .arg("czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_registry_storage_tree_is_read_from_disk_like_an_oci_layout() {
    // The storage tree is a real one: what Distribution wrote when the core images were
    // synced into it from the OCI layout.
    let first = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = core(dir.path());
    let plain = PLAIN_PRIMARY;
    let host = first.host();
    let mut args = vec!["--only-sync-image", "--package", pkg.to_str().unwrap()];
    args.extend(["--registry", &host]);
    args.extend(plain);
    let run = sync(&args);
    assert_eq!(run.code, 0, "{}", run.all());

    let tree_pkg = dir.path().join("core-storage");
    std::fs::create_dir_all(&tree_pkg).unwrap();
    std::fs::copy(pkg.join("package.yaml"), tree_pkg.join("package.yaml")).unwrap();
    copy_tree(
        &first.dir.path().join("data/docker"),
        &tree_pkg.join("registry/docker"),
    );
    assert!(!tree_pkg.join("images").exists());

    let second = Registry::start(RegistryOpts::default());
    let host2 = second.host();
    let mut args = vec!["--only-sync-image", "--skip-check-artifacts", "--package"];
    args.push(tree_pkg.to_str().unwrap());
    args.extend(["--registry", &host2]);
    args.extend(plain);
    args.extend(["--output", "json"]);
    let run = sync(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    // every image, byte for byte and digest for digest, as skopeo sees both registries
    for image in CORE_IMAGES {
        let a = first.skopeo_raw(image).expect("in the first registry");
        let b = second
            .skopeo_raw(image)
            .unwrap_or_else(|| panic!("{image} not synced from the storage tree"));
        assert_eq!(a, b, "{image} differs");
    }
    let back = tempfile::tempdir().unwrap();
    second.skopeo_copy_back(CORE_IMAGES[0], back.path());

    // the same tree inside a packed .tgz, nothing extracted
    let tgz = dir.path().join("core-storage.tgz");
    tar_czf(&tree_pkg, &tgz);
    let third = Registry::start(RegistryOpts::default());
    let host3 = third.host();
    let mut args = vec!["--only-sync-image", "--skip-check-artifacts", "--package"];
    args.push(tgz.to_str().unwrap());
    args.extend(["--registry", &host3]);
    args.extend(plain);
    let run = sync(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    for image in CORE_IMAGES {
        assert_eq!(
            third.skopeo_raw(image),
            first.skopeo_raw(image),
            "{image} from the packed storage tree"
        );
    }
}

#[test]
fn a_packed_core_package_syncs_without_extraction_plugins_streamed_from_inside() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = core(dir.path());
    // packed the way operators receive it, by GNU tar (plugins/*.tgz nested inside)
    let tgz = dir.path().join("core-v4.2.0.tgz");
    tar_czf(&pkg, &tgz);
    std::fs::remove_dir_all(&pkg).unwrap();

    let reg = Registry::start(RegistryOpts::default());
    let host = reg.host();
    let base = ["--package", tgz.to_str().unwrap(), "--registry", &host];
    let plain = PLAIN_PRIMARY;
    let mut args = vec!["--only-sync-image", "--output", "json"];
    args.extend(base);
    args.extend(plain);
    let run = sync(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_core_and_plugin_synced(&run, &reg);
    assert!(!dir.path().join("core").exists(), "nothing was extracted");

    // a damaged file inside the archive is found by checksums.sha256, before any upload
    let damaged = dir.path().join("damaged.tgz");
    rewrite_tgz(&tgz, &damaged, |name, mut data| {
        if name.contains("manifests/") {
            data.extend_from_slice(b"# changed\n");
        }
        Some(data)
    });
    let fresh = Registry::start(RegistryOpts::default());
    let fresh_host = fresh.host();
    let mut args = vec!["--only-sync-image", "--package", damaged.to_str().unwrap()];
    args.extend(["--registry", &fresh_host]);
    args.extend(plain);
    let run = sync(&args);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(run.all().contains("checksum mismatch"), "{}", run.all());
    assert!(!fresh.log().contains("PUT /v2/"), "something was uploaded");
}

fn du(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path)
            .unwrap()
            .map(|e| du(&e.unwrap().path()))
            .sum()
    } else {
        std::fs::metadata(path).unwrap().len()
    }
}

#[test]
fn dr_fan_out_reads_the_package_once_for_two_registries() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = core(dir.path());
    let sync_to = |hosts: &[&str]| {
        let mut args = vec!["--only-sync-image", "--package", pkg.to_str().unwrap()];
        args.extend(["--registry", hosts[0], "--plain"]);
        args.extend(["--username", "nobody", "--password", "unused-pass"]);
        if let Some(standby) = hosts.get(1) {
            args.extend([
                "--standby-registry",
                standby,
                "--standby-no-auth",
                "--standby-plain",
            ]);
        }
        args.extend(["--output", "json"]);
        let run = sync(&args);
        assert_eq!(run.code, 0, "{}", run.all());
        run.json()["transfer"]["totals"].clone()
    };
    let alone = Registry::start(RegistryOpts::default());
    let single = sync_to(&[&alone.host()]);
    let (primary, standby) = (
        Registry::start(RegistryOpts::default()),
        Registry::start(RegistryOpts::default()),
    );
    let dr = sync_to(&[&primary.host(), &standby.host()]);
    for reg in [&primary, &standby] {
        for image in CORE_IMAGES {
            assert!(
                reg.skopeo_raw(image).is_some(),
                "{image} not in {}",
                reg.host()
            );
        }
    }
    let bytes = |t: &Value| t["blobs"]["bytes"].as_u64().unwrap();
    let read = |t: &Value| t["package_bytes_read"].as_u64().unwrap();
    // twice the bytes went out, from the same bytes read in
    assert_eq!(bytes(&dr), 2 * bytes(&single), "{dr} vs {single}");
    assert!(read(&single) > 0);
    assert_eq!(read(&dr), read(&single), "{dr} vs {single}");
    let size = du(&pkg.join("images")) + du(&pkg.join("plugins"));
    assert!(
        read(&dr) < 2 * size,
        "read {} of a {size}-byte package",
        read(&dr)
    );

    // a standby that does not answer is left out (exit 6); the primary still gets everything
    let lonely = Registry::start(RegistryOpts::default());
    let dead = format!("127.0.0.1:{}", free_port());
    let (h, pkg_path) = (lonely.host(), pkg.to_str().unwrap());
    let run = sync(&[
        "--only-sync-image",
        "--package",
        pkg_path,
        "--registry",
        &h,
        "--plain",
        "--username",
        "nobody",
        "--password",
        "unused-pass",
        "--standby-registry",
        &dead,
        "--standby-no-auth",
        "--standby-plain",
    ]);
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(
        run.all().contains("DR standby left out of this run"),
        "{}",
        run.all()
    );
    for image in CORE_IMAGES {
        assert!(
            lonely.skopeo_raw(image).is_some(),
            "{image} not in the primary"
        );
    }
}

#[test]
fn pack_puts_upgrade_sh_into_core_packages() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("c");
    let run = ferry(&[
        "dev",
        "corpus",
        src.to_str().unwrap(),
        "--images",
        "1",
        "--scale",
        "0.01",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let tgz = dir.path().join("core.tgz");
    pack(&src.join("layout"), &src, &tgz);
    let out = std::process::Command::new("tar")
        .arg("tvzf")
        .arg(&tgz)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.ends_with(" upgrade.sh"))
        .unwrap_or_else(|| panic!("no upgrade.sh in {listing}"));
    assert!(line.starts_with("-rwxr-xr-x"), "{line}");
}

/// Manifests are applied with forced ownership: whatever is applied must be covered by
/// checksums.sha256, also with `--skip-sync-image` (which uploads nothing), and a manifest
/// the list does not name is refused, before anything is applied or uploaded (issue 20,
/// item 13).
#[test]
fn manifests_are_applied_only_when_checksums_sha256_covers_them() {
    let reg = Registry::start(RegistryOpts::default());
    let p = FakePlatform::start(PlatformOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = core(dir.path());
    let kubeconfig = p.kubeconfig("global");
    let host = reg.host();
    p.set_product_base(&host, None, false);
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--package",
            pkg.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--registry",
            &host,
        ]
        .iter()
        .chain(PLAIN_PRIMARY.iter())
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        v.insert(0, "sync".into());
        v.insert(1, "--retry-base-ms".into());
        v.insert(2, "20".into());
        v
    };
    // the images first, as upgrade.sh runs before --skip-sync-image
    let run = ferry(&args(&["--only-sync-image"]));
    assert_eq!(run.code, 0, "{}", run.all());
    let applied = |p: &FakePlatform| {
        p.log()
            .iter()
            .filter(|l| l.starts_with("PATCH ") || l.starts_with("POST ") || l.starts_with("PUT "))
            .cloned()
            .collect::<Vec<_>>()
    };

    // a manifest changed after the package was made
    let manifest = pkg.join("manifests/cluster-version-operator.yaml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{original}# changed after packing\n")).unwrap();
    let run = ferry(&args(&["--skip-sync-image"]));
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.all()
            .contains("manifests/cluster-version-operator.yaml: checksum mismatch"),
        "{}",
        run.all()
    );
    assert!(applied(&p).is_empty(), "applied: {:?}", applied(&p));
    assert!(p.list("global", "deployments").is_empty());
    std::fs::write(&manifest, &original).unwrap();

    // a manifest the list does not name: refused, with or without --skip-sync-image
    std::fs::write(
        pkg.join("manifests/zz-planted.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: planted\n  namespace: cpaas-system\ndata:\n  k: dg==\n",
    )
    .unwrap();
    for extra in [&["--skip-sync-image"][..], &[]] {
        let posts_before = reg.log().matches("\"POST ").count();
        let run = ferry(&args(extra));
        assert_eq!(run.code, 3, "{extra:?}: {}", run.all());
        assert!(
            run.all().contains("manifests/zz-planted.yaml")
                && run.all().contains("not listed in checksums.sha256"),
            "{extra:?}: {}",
            run.all()
        );
        assert!(applied(&p).is_empty(), "applied: {:?}", applied(&p));
        assert_eq!(
            reg.log().matches("\"POST ").count(),
            posts_before,
            "{extra:?}: something was uploaded"
        );
        assert!(!run.all().contains("unused-pass"), "{}", run.all());
    }
    assert!(p.list("global", "secrets").is_empty());

    // --skip-check-artifacts is the way to apply without the list
    let run = ferry(&args(&["--skip-sync-image", "--skip-check-artifacts"]));
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(p.list("global", "deployments").len(), 1);
    // covered and unchanged: applied with --skip-sync-image
    std::fs::remove_file(pkg.join("manifests/zz-planted.yaml")).unwrap();
    let run = ferry(&args(&["--skip-sync-image"]));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("checksums.sha256:"),
        "the manifests were verified: {}",
        run.stderr
    );
}
