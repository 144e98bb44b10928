//! `ferry push` / `ferry show` of archives other tools write, without a package.yaml: Docker
//! archives (`docker save` legacy format, plain or gzip'd, several images, shared layers as
//! links) and OCI archives (tar, .tgz, .tar.zst; names from `ref.name` or containerd's
//! annotation). Fixtures are written here, and skopeo writes archives too as the independent
//! writer; what lands is checked with skopeo against a real Distribution registry.

mod common;

#[path = "foreign_archives/writers.rs"]
mod writers;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{json, Value};
use writers::*;

fn push(reg: &Registry, files: &[&Path], extra: &[&str]) -> (Run, Value) {
    let mut args: Vec<String> = vec!["push".into()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    args.extend(reg.push_flags());
    args.extend(["--output".into(), "json".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let run = ferry(&args);
    let json = run.json();
    (run, json)
}

fn skopeo(args: &[String]) {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// skopeo as the reference reader of a Docker archive: its image `index` pushed with the
/// manifest it makes, digests preserved (layers as they are, not recompressed).
fn skopeo_push_docker_archive(archive: &Path, index: usize, reg: &Registry, dest: &str) {
    skopeo(&[
        "copy".into(),
        "--preserve-digests".into(),
        "--dest-tls-verify=false".into(),
        format!("docker-archive:{}:@{index}", archive.display()),
        format!("docker://{}/{dest}", reg.host()),
    ]);
}

/// The layer digests of what skopeo copies back from `reg` into a `dir:` (as the registry
/// serves them: an `oci:` copy would compress the plain layers of a docker archive), each
/// checked against its bytes.
fn copied_back_layers(reg: &Registry, reference: &str, into: &Path) -> Vec<String> {
    skopeo(&[
        "copy".into(),
        "--src-tls-verify=false".into(),
        format!("docker://{}/{reference}", reg.host()),
        format!("dir:{}", into.display()),
    ]);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(into.join("manifest.json")).unwrap()).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().unwrap().to_string();
            let bytes = std::fs::read(into.join(hex_of(&d))).unwrap();
            assert_eq!(sha(&bytes), d, "copied-back blob content");
            d
        })
        .collect()
}

fn two_images() -> Vec<TestImage> {
    vec![
        TestImage::new(
            &["example.com/acp/web:v1", "example.com/acp/web:latest"],
            &[1, 2],
        ),
        // shares layer 1 with the first (a symlink in the archive) and is named docker-style
        TestImage::new(&["busybox:1.36"], &[1, 3]),
    ]
}

#[test]
fn docker_save_archive_pushes_the_manifests_skopeo_makes() {
    let tmp = tempfile::tempdir().unwrap();
    let images = two_images();
    let tar = docker_save(&images);
    let plain = write(tmp.path(), "images.tar", &tar);
    let gz = write(tmp.path(), "images.tar.gz", &gzip(&tar));

    let shown = ferry(&["show", plain.to_str().unwrap(), "--output", "json"]);
    assert_eq!(shown.code, 0, "{}", shown.all());
    let shown = shown.json();
    assert_eq!(shown["format"], "docker-archive");
    let names: Vec<&str> = shown["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "example.com/acp/web:v1",
            "example.com/acp/web:latest",
            "docker.io/library/busybox:1.36"
        ]
    );

    let (ferry_reg, skopeo_reg) = (
        Registry::start(RegistryOpts::default()),
        Registry::start(RegistryOpts::default()),
    );
    let (run, report) = push(&ferry_reg, &[&plain], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(report["totals"]["images_failed"], 0, "{report}");
    skopeo_push_docker_archive(&plain, 0, &skopeo_reg, "acp/web:v1");
    skopeo_push_docker_archive(&plain, 1, &skopeo_reg, "library/busybox:1.36");
    for (reference, img) in [
        ("acp/web:v1", &images[0]),
        ("acp/web:latest", &images[0]),
        ("library/busybox:1.36", &images[1]),
    ] {
        let ours = ferry_reg.skopeo_raw(reference).expect("pushed by ferry");
        let theirs = skopeo_reg
            .skopeo_raw(if reference == "acp/web:latest" {
                "acp/web:v1"
            } else {
                reference
            })
            .expect("pushed by skopeo");
        let mut theirs = String::from_utf8(theirs).unwrap();
        if reference.contains("busybox") {
            // busybox's first layer is a symlink to web's (as docker save writes a shared
            // layer): skopeo 1.9 (containers/image 5.23) lists it with the link's size, 0;
            // later containers/image follows the link (src.go, prepareLayerData), as ferry does
            let shared = format!("\"size\":{},", img.layers[0].len());
            assert!(theirs.contains("\"size\":0,") || theirs.contains(&shared));
            theirs = theirs.replacen("\"size\":0,", &shared, 1);
        }
        assert_eq!(
            String::from_utf8_lossy(&ours),
            theirs,
            "{reference}: the manifest differs from skopeo's"
        );
        let back = tmp
            .path()
            .join(format!("back-{}", reference.replace(['/', ':'], "_")));
        assert_eq!(
            copied_back_layers(&ferry_reg, reference, &back),
            img.diff_ids(),
            "{reference}: layers pushed as they are, digest = diff ID"
        );
    }

    // gzip'd: the same images, the same digests
    let other = Registry::start(RegistryOpts::default());
    let (run, report) = push(&other, &[&gz], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(report["totals"]["images_failed"], 0, "{report}");
    for reference in ["acp/web:v1", "library/busybox:1.36"] {
        assert_eq!(
            other.skopeo_raw(reference),
            ferry_reg.skopeo_raw(reference),
            "{reference}"
        );
    }
    // a second push of the same archive sends nothing
    let (run, again) = push(&other, &[&gz], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(again["totals"]["bytes_sent"], 0, "{again}");
}

#[test]
fn oci_archives_tar_tgz_and_zst_push_byte_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let a = TestImage::new(&[], &[11, 12]);
    let b = TestImage::new(&[], &[11, 13]);
    let unnamed = TestImage::new(&[], &[14]);
    let (tar, manifests) = oci_archive(&[
        (&a, ref_name("example.com/acp/app:v2")),
        // Docker 25+ / containerd: a bare tag in ref.name, the full name in containerd's
        (
            &b,
            json!({"org.opencontainers.image.ref.name": "3.0",
                   "io.containerd.image.name": "docker.io/acme/tool:3.0"}),
        ),
        (&unnamed, ref_name("latest")),
    ]);
    let plain = write(tmp.path(), "oci.tar", &tar);
    let tgz = write(tmp.path(), "oci.tgz", &gzip(&tar));
    let zst = write(
        tmp.path(),
        "haul.tar.zst",
        &zstd::encode_all(tar.as_slice(), 3).unwrap(),
    );

    let shown = ferry(&["show", zst.to_str().unwrap()]);
    assert_eq!(shown.code, 0, "{}", shown.all());
    assert!(shown.stdout.contains("oci-archive"), "{}", shown.all());
    assert!(
        shown.stdout.contains("example.com/acp/app:v2"),
        "{}",
        shown.all()
    );
    assert!(
        shown.stdout.contains("docker.io/acme/tool:3.0"),
        "{}",
        shown.all()
    );
    assert!(shown.stderr.contains("no image name"), "{}", shown.all());

    for f in [&plain, &tgz, &zst] {
        let reg = Registry::start(RegistryOpts::default());
        let (run, report) = push(&reg, &[f], &[]);
        // the entry named only "latest" is reported, not pushed; the others are
        assert_eq!(run.code, 3, "{}: {}", f.display(), run.all());
        assert_eq!(report["totals"]["images_failed"], 1, "{report}");
        let text = report.to_string();
        assert!(text.contains("\\\"latest\\\""), "{report}");
        assert!(text.contains("no image name"), "{report}");
        for (reference, manifest, img) in [
            ("acp/app:v2", &manifests[0], &a),
            ("acme/tool:3.0", &manifests[1], &b),
        ] {
            let raw = reg.skopeo_raw(reference).expect("pushed");
            assert_eq!(
                &raw,
                manifest,
                "{}: {reference} not byte-exact",
                f.display()
            );
            let back = tmp.path().join(format!(
                "back-{}-{}",
                f.file_name().unwrap().to_string_lossy(),
                reference.replace(['/', ':'], "_")
            ));
            let layers = copied_back_layers(&reg, reference, &back);
            let expected: Vec<String> = img.layers.iter().map(|l| sha(&gzip(l))).collect();
            assert_eq!(layers, expected);
        }
    }
}

#[test]
fn archives_skopeo_writes_push_byte_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let source = Registry::start(RegistryOpts::default());
    // fill the source registry: an OCI layout written here, copied in by skopeo
    let img = TestImage::new(&[], &[21, 22, 23]);
    let (tar, _) = oci_archive(&[(&img, ref_name("src"))]);
    let layout = tmp.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    tar::Archive::new(tar.as_slice()).unpack(&layout).unwrap();
    skopeo(&[
        "copy".into(),
        "--dest-tls-verify=false".into(),
        format!("oci:{}:src", layout.display()),
        format!("docker://{}/acp/origin:v1", source.host()),
    ]);
    let origin = source.skopeo_raw("acp/origin:v1").unwrap();

    let docker = tmp.path().join("skopeo-docker.tar");
    let oci = tmp.path().join("skopeo-oci.tar");
    for (transport, path, name) in [
        ("docker-archive", &docker, "example.com/acp/from-docker:v1"),
        ("oci-archive", &oci, "example.com/acp/from-oci:v1"),
    ] {
        skopeo(&[
            "copy".into(),
            "--src-tls-verify=false".into(),
            format!("docker://{}/acp/origin:v1", source.host()),
            format!("{transport}:{}:{name}", path.display()),
        ]);
    }

    let dest = Registry::start(RegistryOpts::default());
    let (run, report) = push(&dest, &[&docker, &oci], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(report["totals"]["images_failed"], 0, "{report}");
    // the OCI archive carries the registry's manifest: it lands byte for byte
    assert_eq!(dest.skopeo_raw("acp/from-oci:v1").unwrap(), origin);
    // the docker archive has none: the one made lands as skopeo's own push of it
    let by_skopeo = Registry::start(RegistryOpts::default());
    skopeo_push_docker_archive(&docker, 0, &by_skopeo, "acp/from-docker:v1");
    assert_eq!(
        String::from_utf8(dest.skopeo_raw("acp/from-docker:v1").unwrap()).unwrap(),
        String::from_utf8(by_skopeo.skopeo_raw("acp/from-docker:v1").unwrap()).unwrap()
    );
    assert_eq!(
        copied_back_layers(&dest, "acp/from-docker:v1", &tmp.path().join("back-d")),
        img.diff_ids()
    );
    let gz: Vec<String> = img.layers.iter().map(|l| sha(&gzip(l))).collect();
    assert_eq!(
        copied_back_layers(&dest, "acp/from-oci:v1", &tmp.path().join("back-o")),
        gz
    );
}

#[test]
fn a_corrupt_layer_is_refused_naming_image_and_blob_and_nothing_is_tagged() {
    let tmp = tempfile::tempdir().unwrap();
    let img = TestImage::new(&["example.com/acp/broken:v1"], &[31, 32]);
    let mut tar = docker_save(std::slice::from_ref(&img));
    // flip a byte inside the second layer's data (its diff ID stays what the config says)
    let needle = &img.layers[1][1024..1088];
    let at = tar.windows(needle.len()).position(|w| w == needle).unwrap();
    tar[at + 10] ^= 0xff;
    let gz = write(tmp.path(), "broken.tar.gz", &gzip(&tar));

    let reg = Registry::start(RegistryOpts::default());
    let (run, report) = push(&reg, &[&gz], &[]);
    assert_eq!(run.code, 3, "{}", run.all());
    let err = report["packages"][0]["images"][0]["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{report}"));
    assert!(err.contains("example.com/acp/broken:v1"), "{err}");
    assert!(err.contains(&img.diff_ids()[1]), "{err}");
    assert!(err.contains("mismatch"), "{err}");
    assert!(
        reg.skopeo_raw("acp/broken:v1").is_none(),
        "a tag was pushed"
    );

    // the same in an OCI archive (zstd): a blob whose bytes do not match its name
    let (mut tar, _) = oci_archive(&[(&img, ref_name("example.com/acp/broken:v2"))]);
    let gz_layer = gzip(&img.layers[0]);
    let needle = &gz_layer[2000..2064];
    let at = tar.windows(needle.len()).position(|w| w == needle).unwrap();
    tar[at] ^= 0xff;
    let zst = write(
        tmp.path(),
        "broken.tar.zst",
        &zstd::encode_all(tar.as_slice(), 3).unwrap(),
    );
    let (run, report) = push(&reg, &[&zst], &[]);
    assert_eq!(run.code, 3, "{}", run.all());
    let err = report.to_string();
    assert!(err.contains("example.com/acp/broken:v2"), "{err}");
    assert!(err.contains(&sha(&gz_layer)), "{err}");
    assert!(
        reg.skopeo_raw("acp/broken:v2").is_none(),
        "a tag was pushed"
    );
}

#[test]
fn archives_go_to_registries_only() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write(
        tmp.path(),
        "one.tar",
        &docker_save(&[TestImage::new(&["example.com/a/b:v1"], &[41])]),
    );
    let run = ferry(&[
        "push",
        f.to_str().unwrap(),
        "--platform-address",
        "https://127.0.0.1:1",
        "--platform-username",
        "admin",
        "--platform-password",
        "x",
    ]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("docker-archive"), "{}", run.all());
    assert!(run.stderr.contains("--dest-repo"), "{}", run.all());
}
