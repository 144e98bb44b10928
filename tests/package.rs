//! `ferry package create` + `build` against a real Distribution registry filled by the tests'
//! own code (tests/common/package_source.rs): a plugin chart for amd64 and for both arches,
//! a bundle, a chart; byte-identical rebuilds; the built package pushed to a second registry
//! (checked with skopeo) and to the fake platform (checked with kubectl).

mod common;
#[path = "common/package_source.rs"]
mod package_source;

use std::path::{Path, PathBuf};

use common::platform::*;
use common::*;
use package_source::*;
use serde_json::Value;

fn source() -> (Registry, Pusher) {
    let reg = Registry::start(RegistryOpts::default());
    let pusher = Pusher::new(reg.port, &reg.host());
    (reg, pusher)
}

fn create(dir: &Path, artifact: &str, platforms: &str) -> Value {
    let run = ferry(&[
        "package",
        "create",
        dir.to_str().unwrap(),
        "--artifact",
        artifact,
        "--platforms",
        platforms,
        "--plain",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    run.json()
}

fn build(dir: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "package",
        "build",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--plain",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    ferry(&args)
}

fn built(dir: &Path, out: &Path, extra: &[&str]) -> (PathBuf, Value) {
    let run = build(dir, out, extra);
    assert_eq!(run.code, 0, "{}", run.all());
    let v = run.json();
    (PathBuf::from(v["output"].as_str().unwrap()), v)
}

fn locked<'a>(lock: &'a Value, repo: &str) -> &'a Value {
    lock["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["reference"]
                .as_str()
                .unwrap()
                .contains(&format!("/{repo}:"))
        })
        .unwrap_or_else(|| panic!("{repo} not in {lock}"))
}

fn push_to(reg: &Registry, pkg: &Path) {
    let mut args = vec!["push".to_string(), pkg.display().to_string()];
    args.extend(reg.push_flags());
    let run = ferry(&args);
    assert_eq!(run.code, 0, "{}", run.all());
}

#[test]
fn plugin_for_amd64_rewrites_the_indexes_and_pushes_byte_exact() {
    let (src, mut p) = source();
    let artifact = p.plugin();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("demo");
    let created = create(&dir, &artifact, "linux/amd64");
    let meta = &created["package"];
    assert_eq!(meta["metadata"]["name"], "demo-plugin");
    assert_eq!(meta["metadata"]["displayName"], "Demo Plugin");
    assert_eq!(meta["metadata"]["version"], "1.2.0");
    assert_eq!(meta["spec"]["type"], "plugin");
    assert_eq!(meta["spec"]["artifact"], artifact.as_str());
    let lock = &created["lock"];
    assert_eq!(lock["images"].as_array().unwrap().len(), 4, "{lock}");
    assert_eq!(lock["images"][0]["reference"], artifact.as_str());
    for repo in ["acp/web", "acp/worker", "acp/legacy"] {
        let l = locked(lock, repo);
        assert_eq!(l["indexRewritten"], true, "{l}");
        assert_eq!(l["digest"], p.filled.indexes[repo].as_str());
        assert_eq!(l["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(
            l["manifests"][0]["digest"],
            p.filled.manifests[&(repo.to_string(), "amd64".to_string())].as_str()
        );
    }
    assert!(dir.join("images.lock").exists() && dir.join("package.yaml").exists());

    let out = work.path().join("out");
    let (pkg, report) = built(&dir, &out, &[]);
    assert_eq!(pkg.file_name().unwrap(), "demo-plugin.amd64.v1.2.0.tgz");
    assert!(out.join("demo-plugin.amd64.v1.2.0.tgz.sha256").exists());
    let web = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"].as_str().unwrap().ends_with("/acp/web:v1"))
        .unwrap();
    assert_eq!(
        web["rewritten_from"].as_str(),
        p.filled.indexes["acp/web"].as_str().into()
    );

    // ferry reads it; pushed to a second registry, skopeo sees the amd64 manifests and layers
    // byte for byte and an index that lists amd64 only, under the same tag
    let show = ferry(&["show", pkg.to_str().unwrap(), "--all"]);
    assert_eq!(show.code, 0, "{}", show.all());
    assert!(
        show.stdout.contains(&format!(
            "/acp/web:v1 (index rewritten to the package's platforms; the registry's was {})",
            p.filled.indexes["acp/web"]
        )),
        "{}",
        show.stdout
    );
    let dest = Registry::start(RegistryOpts::default());
    push_to(&dest, &pkg);
    for repo in ["acp/web", "acp/worker", "acp/legacy"] {
        let raw = dest.skopeo_raw(&format!("{repo}:v1")).unwrap();
        assert_ne!(ferry::oci::Digest::of(&raw), p.filled.indexes[repo]);
        let index: Value = serde_json::from_slice(&raw).unwrap();
        let children = index["manifests"].as_array().unwrap();
        assert_eq!(children.len(), 1, "{index}");
        assert_eq!(children[0]["platform"]["architecture"], "amd64");
        let amd = &p.filled.manifests[&(repo.to_string(), "amd64".to_string())];
        let at = |r: &Registry| r.skopeo_raw(&format!("{repo}@{amd}")).unwrap();
        assert_eq!(at(&dest), at(&src));
        assert!(dest
            .skopeo_raw(&format!(
                "{repo}@{}",
                p.filled.manifests[&(repo.to_string(), "arm64".to_string())]
            ))
            .is_none());
    }
    let stored = stored_blobs(&dest);
    for ((repo, arch), layers) in &p.filled.layers {
        for l in layers {
            let shared = p
                .filled
                .layers
                .iter()
                .any(|((_, a), ls)| a == "amd64" && ls.contains(l));
            if arch == "amd64" || shared {
                assert_eq!(
                    stored.get(l.hex()),
                    Some(&p.filled.sizes[l]),
                    "{repo} {arch} {l}"
                );
            } else {
                assert!(
                    !stored.contains_key(l.hex()),
                    "{repo} {arch} {l} was not asked for"
                );
            }
        }
    }
    // the chart artifact went as it was
    assert_eq!(
        dest.skopeo_raw(&format!("{CHART_REPO}:{CHART_TAG}")),
        src.skopeo_raw(&format!("{CHART_REPO}:{CHART_TAG}"))
    );
}

#[test]
fn both_arches_keep_indexes_byte_for_byte_and_rebuilds_are_identical() {
    let (src, mut p) = source();
    let artifact = p.plugin();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("demo");
    let created = create(&dir, &artifact, "linux/amd64,linux/arm64");
    let lock = &created["lock"];
    for repo in ["acp/web", "acp/worker"] {
        let l = locked(lock, repo);
        assert!(l["indexRewritten"].is_null(), "{l}");
        assert_eq!(l["manifests"].as_array().unwrap().len(), 2);
    }
    // support_arm: false: amd64 only, and said so
    let legacy = locked(lock, "acp/legacy");
    assert_eq!(legacy["indexRewritten"], true);
    assert_eq!(legacy["manifests"].as_array().unwrap().len(), 1);
    assert!(legacy["note"]
        .as_str()
        .unwrap()
        .contains("support_arm: false"));

    // the plan: bytes per image and platform, nothing written
    let run = ferry(&[
        "package",
        "build",
        dir.to_str().unwrap(),
        "--plain",
        "--dry-run",
        "-o",
        work.path().join("dry").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("linux/arm64: ") && run.stdout.contains("support_arm: false"),
        "{}",
        run.stdout
    );
    assert!(!work.path().join("dry").exists());

    // two builds of one lock: one fetch at a time, and 8 at once with no memory budget (every
    // blob fetched ahead of the writer waits in a file); a tag moved in between changes nothing
    let (a, ra) = built(
        &dir,
        &work.path().join("a"),
        &["--no-cache", "--concurrency", "1"],
    );
    p.multiarch("acp/web", "v1", 99, 10_000);
    let (b, rb) = built(
        &dir,
        &work.path().join("b"),
        &["--no-cache", "--concurrency", "8", "--memory-mib", "0"],
    );
    assert_eq!(a.file_name().unwrap(), "demo-plugin.ALL.v1.2.0.tgz");
    assert!(rb["spilled_bytes"].as_u64().unwrap() > 0, "{rb}");
    assert_eq!(tar_names(&a), tar_names(&b));
    assert_eq!(ra["sha256"], rb["sha256"]);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "rebuild differs"
    );

    // canonical order: documents before the first layer, nothing after the layers but charts
    let names = tar_names(&a);
    assert_eq!(
        &names[..3],
        ["package.yaml", "images/oci-layout", "images/index.json"]
    );
    let first_layer = names
        .iter()
        .position(|n| p.filled.sizes.keys().any(|d| n.ends_with(d.hex())))
        .unwrap();
    for n in &names[first_layer..] {
        assert!(
            p.filled.sizes.keys().any(|d| n.ends_with(d.hex())),
            "{n} after a layer"
        );
    }

    let dest = Registry::start(RegistryOpts::default());
    push_to(&dest, &a);
    // the indexes of the lock, byte for byte, under their tags (acp/web's tag moved in the
    // source since: the package still carries what the lock says)
    for repo in ["acp/web", "acp/worker"] {
        let digest = locked(lock, repo)["digest"].as_str().unwrap().to_string();
        assert_eq!(
            dest.skopeo_raw(&format!("{repo}:v1")),
            src.skopeo_raw(&format!("{repo}@{digest}"))
        );
    }
    let legacy = dest.skopeo_raw("acp/legacy:v1").unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&legacy).unwrap()["manifests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

fn tar_names(pkg: &Path) -> Vec<String> {
    let f = std::fs::File::open(pkg).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_bundle_and_a_chart() {
    let (_src, mut p) = source();
    let bundle = p.bundle();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("op");
    let created = create(&dir, &bundle, "linux/amd64");
    let meta = &created["package"];
    assert_eq!(meta["metadata"]["name"], "demo-operator");
    assert_eq!(meta["metadata"]["version"], "2.0.0");
    assert_eq!(meta["metadata"]["displayName"], "Demo Operator");
    assert_eq!(meta["spec"]["type"], "bundle");
    let refs: Vec<&str> = created["lock"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert_eq!(refs.len(), 3, "{refs:?}");
    assert_eq!(refs[0], bundle);
    assert!(
        refs[1].ends_with("/acp/operand:v2") && refs[2].ends_with("/acp/operator:v2"),
        "{refs:?}"
    );
    let (pkg, _) = built(&dir, &work.path().join("out"), &[]);
    assert_eq!(pkg.file_name().unwrap(), "demo-operator.amd64.v2.0.0.tgz");
    let show = ferry(&["show", pkg.to_str().unwrap(), "--all", "--output", "json"]);
    assert_eq!(show.code, 0, "{}", show.all());
    assert_eq!(
        show.json()["images"].as_array().unwrap().len(),
        3,
        "{}",
        show.stdout
    );

    // a chart without module-plugin.yaml is a chart package: its archive under charts/
    let chart = p.chart();
    let cdir = work.path().join("chart");
    let list = work.path().join("images.txt");
    let operand = refs[1].to_string();
    std::fs::write(
        &list,
        format!("# more images\n{operand}  # the operand\n\n"),
    )
    .unwrap();
    let run = ferry(&[
        "package",
        "create",
        cdir.to_str().unwrap(),
        "--artifact",
        &chart,
        "--plain",
        "--images",
        list.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let created = run.json();
    assert_eq!(created["package"]["spec"]["type"], "chart");
    let refs: Vec<&str> = created["lock"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert_eq!(refs.len(), 2, "{refs:?}");
    assert!(
        refs.contains(&operand.as_str()) && refs[1].ends_with("/acp/web:v1"),
        "{refs:?}"
    );
    let (cpkg, _) = built(&cdir, &work.path().join("out"), &[]);
    let names = tar_names(&cpkg);
    assert_eq!(names.last().unwrap(), "charts/plain-chart-0.3.0.tgz");
}

#[test]
fn the_built_plugin_pushed_to_the_platform_creates_its_artifact() {
    let (_src, mut p) = source();
    let artifact = p.plugin();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("demo");
    create(&dir, &artifact, "linux/amd64");
    let (pkg, _) = built(&dir, &work.path().join("out"), &[]);
    let dest = Registry::start(RegistryOpts::default());
    let platform = FakePlatform::start(PlatformOpts::default());
    platform.set_product_base(&dest.host(), None, false);
    let mut args: Vec<String> = vec!["push".into(), pkg.display().to_string(), "--plain".into()];
    args.extend(platform.token_flags());
    let run = ferry(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    let artifacts = platform.kubectl_items("global", "artifacts.app.alauda.io");
    assert_eq!(artifacts.len(), 1);
    let a = &artifacts[0];
    assert_eq!(a["metadata"]["name"], "demo-plugin");
    assert_eq!(a["spec"]["type"], "plugin");
    assert_eq!(a["spec"]["repository"], CHART_REPO);
    let versions = platform.kubectl_items("global", "artifactversions.app.alauda.io");
    assert_eq!(versions[0]["metadata"]["name"], "demo-plugin.v1.2.0");
    assert_eq!(versions[0]["spec"]["tag"], CHART_TAG);
    assert!(dest.skopeo_raw("acp/web:v1").is_some());
}
