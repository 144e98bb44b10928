//! Hostile and malformed packages: each gives a clear error naming the package and the entry,
//! pushes nothing for the affected images, and never panics.

mod common;

use common::*;
use std::io::Read;
use std::path::{Path, PathBuf};

enum Kind {
    File,
    Symlink(&'static str),
    Hardlink(&'static str),
    CharDevice,
}

/// The fixture's entries as (path, bytes), in order.
fn entries_of(pkg: &Path) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(pkg).unwrap(),
    ));
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (e.path().unwrap().to_string_lossy().into_owned(), data)
        })
        .collect()
}

/// Writes a .tgz with raw names (no sanitising: '..' and absolute paths go in as given).
fn craft(out: &Path, entries: &[(String, Kind, Vec<u8>)]) {
    let f = std::fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        f,
        flate2::Compression::fast(),
    ));
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        let raw = name.as_bytes();
        h.as_gnu_mut().unwrap().name[..raw.len()].copy_from_slice(raw);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        match kind {
            Kind::File => h.set_entry_type(tar::EntryType::Regular),
            Kind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(t).unwrap();
                h.set_size(0);
            }
            Kind::Hardlink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_link_name(t).unwrap();
                h.set_size(0);
            }
            Kind::CharDevice => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_size(0);
            }
        }
        h.set_cksum();
        let body: &[u8] = if matches!(kind, Kind::File) {
            data
        } else {
            &[]
        };
        b.append(&h, body).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

type Entries = Vec<(String, Kind, Vec<u8>)>;
type Edit = Box<dyn Fn(&mut Entries)>;

fn as_files(entries: Vec<(String, Vec<u8>)>) -> Vec<(String, Kind, Vec<u8>)> {
    entries
        .into_iter()
        .map(|(n, d)| (n, Kind::File, d))
        .collect()
}

/// Pushes `pkg` and checks: exit 3, every `want` in the output, no panic, no manifest pushed.
fn refused(reg: &Registry, pkg: &Path, want: &[&str]) {
    let host = reg.host();
    let run = ferry(&[
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &host,
        "--plain",
        "--retry-base-ms",
        "10",
    ]);
    let all = run.all();
    assert_eq!(run.code, 3, "{all}");
    assert!(!all.contains("panicked"), "{all}");
    let name = pkg.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        all.contains(&name),
        "package name {name} missing from: {all}"
    );
    for w in want {
        assert!(all.contains(w), "{w:?} missing from: {all}");
    }
    assert!(
        !reg.log()
            .contains("\"PUT /v2/acp/topolvm-operator-bundle/manifests/"),
        "a manifest was pushed: {all}"
    );
}

fn blob_entry(
    entries: &[(String, Vec<u8>)],
    pick: impl Fn(&serde_json::Value) -> String,
) -> String {
    let images = package_images(&fixture("topolvm-operator"));
    let m: serde_json::Value = serde_json::from_slice(&images[0].1).unwrap();
    let hex = pick(&m).trim_start_matches("sha256:").to_string();
    entries
        .iter()
        .map(|(n, _)| n.clone())
        .find(|n| n.ends_with(&hex))
        .unwrap()
}

#[test]
fn unsafe_entries_are_refused() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let base = entries_of(&fixture("topolvm-operator"));
    let layer = blob_entry(&base, |m| {
        m["layers"][0]["digest"].as_str().unwrap().to_string()
    });
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "dotdot",
            Box::new(|e| {
                e.insert(
                    1,
                    ("images/../../etc/evil".into(), Kind::File, b"x".to_vec()),
                )
            }),
            vec!["images/../../etc/evil", "'..'"],
        ),
        (
            "absolute",
            Box::new(|e| e.insert(1, ("/etc/evil".into(), Kind::File, b"x".to_vec()))),
            vec!["/etc/evil", "absolute"],
        ),
        (
            "symlink",
            Box::new(|e| {
                e.insert(
                    1,
                    (
                        "images/blobs/sha256/link".into(),
                        Kind::Symlink("/etc/passwd"),
                        vec![],
                    ),
                )
            }),
            vec!["images/blobs/sha256/link", "Symlink"],
        ),
        (
            "hardlink",
            Box::new(|e| {
                e.insert(
                    1,
                    ("images/hard".into(), Kind::Hardlink("package.yaml"), vec![]),
                )
            }),
            vec!["images/hard", "Link"],
        ),
        (
            "device",
            Box::new(|e| e.insert(1, ("images/dev".into(), Kind::CharDevice, vec![]))),
            vec!["images/dev", "Char"],
        ),
        (
            "dup-meta",
            Box::new(|e| {
                e.insert(1, ("package.yaml".into(), Kind::File, b"apiVersion: ferry/v1\nkind: Package\nmetadata: {name: other, version: 9}\n".to_vec()))
            }),
            vec!["package.yaml", "appears twice"],
        ),
        (
            "bad-digest-name",
            Box::new(|e| {
                e.insert(
                    3,
                    (
                        "images/blobs/sha256/not-a-digest".into(),
                        Kind::File,
                        b"x".to_vec(),
                    ),
                )
            }),
            vec!["images/blobs/sha256/not-a-digest", "not a valid digest"],
        ),
        (
            "index-not-json",
            Box::new(|e| {
                let i = e.iter().position(|x| x.0 == "images/index.json").unwrap();
                e[i].2 = b"{not json".to_vec();
            }),
            vec!["images/index.json", "not a valid OCI index"],
        ),
        (
            "index-too-big",
            Box::new(|e| {
                let i = e.iter().position(|x| x.0 == "images/index.json").unwrap();
                e[i].2 = vec![b' '; 5 << 20];
            }),
            vec!["images/index.json", "limit"],
        ),
        (
            "no-package-yaml",
            Box::new(|e| e.retain(|x| x.0 != "package.yaml")),
            vec!["package.yaml is missing"],
        ),
        (
            "bad-package-yaml",
            Box::new(|e| {
                e[0].2 = b"apiVersion: ferry/v1\nkind: Package\nmetadata:\n  name: x\n".to_vec()
            }),
            vec!["package.yaml", "metadata.version is required"],
        ),
        (
            "missing-layer",
            Box::new(move |e| e.retain(|x| x.0 != layer)),
            vec!["missing from the package"],
        ),
    ];
    for (name, edit, want) in cases {
        let mut e = as_files(base.clone());
        edit(&mut e);
        let pkg = dir.path().join(format!("{name}.amd64.v2.3.0.tgz"));
        craft(&pkg, &e);
        refused(&reg, &pkg, &want);
    }
}

#[test]
fn malformed_manifests_fail_their_image() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let base = entries_of(&fixture("topolvm-operator"));
    let index: serde_json::Value =
        serde_json::from_slice(&base.iter().find(|x| x.0 == "images/index.json").unwrap().1)
            .unwrap();
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();

    // a manifest whose bytes are not JSON (and so do not match their digest)
    let mut e = as_files(base.clone());
    for x in e.iter_mut().filter(|x| x.0.ends_with(&mdigest)) {
        x.2 = b"definitely not json".to_vec();
    }
    let pkg = dir.path().join("bad-manifest.amd64.v2.3.0.tgz");
    craft(&pkg, &e);
    refused(&reg, &pkg, &[&mdigest, "mismatch"]);

    // a manifest over the size limit
    let mut e = as_files(base.clone());
    let big = vec![b' '; 5 << 20];
    for x in e.iter_mut().filter(|x| x.0.ends_with(&mdigest)) {
        x.2 = big.clone();
    }
    let pkg = dir.path().join("huge-manifest.amd64.v2.3.0.tgz");
    craft(&pkg, &e);
    refused(&reg, &pkg, &[&mdigest, "limit"]);

    // an index that lists itself (a cycle can only be made by lying about a digest)
    let fake = "a".repeat(64);
    let looping = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{fake}"), "size": 10}]});
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": format!("sha256:{fake}"), "size": 10,
        "annotations": {"org.opencontainers.image.ref.name": "registry.alauda.cn:60080/acp/topolvm-operator-bundle:v3.11.0"}}]});
    let mut e = as_files(base.clone());
    for x in e.iter_mut().filter(|x| x.0 == "images/index.json") {
        x.2 = serde_json::to_vec(&idx).unwrap();
    }
    e.insert(
        3,
        (
            format!("images/blobs/sha256/{fake}"),
            Kind::File,
            serde_json::to_vec(&looping).unwrap(),
        ),
    );
    let pkg = dir.path().join("cycle.amd64.v2.3.0.tgz");
    craft(&pkg, &e);
    refused(&reg, &pkg, &[&fake]);
}

#[test]
fn a_gzip_bomb_is_refused_with_bounded_memory() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg: PathBuf = dir.path().join("bomb.amd64.v2.3.0.tgz");
    {
        let f = std::fs::File::create(&pkg).unwrap();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            f,
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_gnu();
        let size: u64 = 1200 << 20;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(
            &mut h,
            format!("images/blobs/sha256/{}", "0".repeat(64)),
            std::io::repeat(0).take(size),
        )
        .unwrap();
        b.into_inner().unwrap().finish().unwrap();
    }
    assert!(std::fs::metadata(&pkg).unwrap().len() < 20 << 20);
    refused(&reg, &pkg, &["gzip bomb"]);
}

#[test]
fn unknown_media_types_are_pushed_as_is_with_a_warning() {
    use ferry::devtools::LayoutWriter;
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("odd");
    let mut w = LayoutWriter::create(&pkg.join("images")).unwrap();
    let blob = w
        .blob("application/vnd.example.custom.blob", b"custom payload")
        .unwrap();
    let m = w.image("odd", "amd64", &[blob], false).unwrap();
    w.tag(&m, "registry.alauda.cn:60080/acp/odd:v1");
    w.finish().unwrap();
    write_package_yaml(&pkg, "odd");
    let host = reg.host();
    let run = ferry(&[
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &host,
        "--plain",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.all()
            .contains("unknown media type \"application/vnd.example.custom.blob\""),
        "{}",
        run.all()
    );
    assert!(reg.skopeo_raw("acp/odd:v1").is_some());
}

/// A fixture unpacked into a directory package (which ferry pushes as it is).
fn unpack_fixture(prefix: &str, into: &Path) -> PathBuf {
    let f = std::fs::File::open(fixture(prefix)).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(f))
        .unpack(into)
        .unwrap();
    into.to_path_buf()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The manifest `digest` of a directory package.
fn manifest_of(pkg: &Path, digest: &str) -> serde_json::Value {
    read_json(
        &pkg.join("images/blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
}

/// Writes `m` as a blob and points index.json entry `i` at it.
fn replace_manifest(pkg: &Path, i: usize, m: &serde_json::Value) {
    let bytes = serde_json::to_vec(m).unwrap();
    let digest = ferry::oci::Digest::of(&bytes);
    std::fs::write(pkg.join("images/blobs/sha256").join(digest.hex()), &bytes).unwrap();
    let mut index = read_json(&pkg.join("images/index.json"));
    index["manifests"][i]["digest"] = serde_json::json!(digest.to_string());
    index["manifests"][i]["size"] = serde_json::json!(bytes.len());
    std::fs::write(
        pkg.join("images/index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_blob_declared_with_two_sizes_is_refused() {
    // oam-application's images share a base layer; unpack it as a directory package and make
    // one manifest claim another size for that layer
    let dir = tempfile::tempdir().unwrap();
    let pkg = unpack_fixture("oam-application", &dir.path().join("oam"));
    let index = read_json(&pkg.join("images/index.json"));
    let manifests: Vec<(usize, serde_json::Value)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| (i, manifest_of(&pkg, d["digest"].as_str().unwrap())))
        .filter(|(_, m)| m["layers"].is_array())
        .collect();
    let first_layers: Vec<String> = manifests[0].1["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let shared =
        |l: &serde_json::Value| first_layers.contains(&l["digest"].as_str().unwrap().to_string());
    let (i, mut m) = manifests[1..]
        .iter()
        .find(|(_, m)| m["layers"].as_array().unwrap().iter().any(shared))
        .cloned()
        .expect("two images share a layer");
    for l in m["layers"].as_array_mut().unwrap() {
        if shared(l) {
            l["size"] = serde_json::json!(l["size"].as_u64().unwrap() + 1);
        }
    }
    replace_manifest(&pkg, i, &m);

    let reg = Registry::start(RegistryOpts::default());
    let run = ferry(&[
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &reg.host(),
        "--plain",
    ]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(run.all().contains("is declared with"), "{}", run.all());
    assert!(!reg.log().contains("\"PUT /v2/"), "something was pushed");
}

#[test]
fn a_blob_the_registry_holds_with_another_size_is_refused() {
    // push the real package, then one that consistently declares a layer one byte longer
    let reg = Registry::start(RegistryOpts::default());
    let pkg = fixture("topolvm-operator");
    let run = ferry(&[
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &reg.host(),
        "--plain",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());

    let dir = tempfile::tempdir().unwrap();
    let lying = unpack_fixture("topolvm-operator", &dir.path().join("lying"));
    let index = read_json(&lying.join("images/index.json"));
    let mut m = manifest_of(&lying, index["manifests"][0]["digest"].as_str().unwrap());
    assert!(
        m["layers"].is_array(),
        "the fixture's first image is a manifest"
    );
    let size = m["layers"][0]["size"].as_u64().unwrap();
    m["layers"][0]["size"] = serde_json::json!(size + 1);
    replace_manifest(&lying, 0, &m);
    // under another tag, so that the tag check does not short-circuit
    let text = std::fs::read_to_string(lying.join("images/index.json")).unwrap();
    std::fs::write(
        lying.join("images/index.json"),
        text.replace(":v3.11.0", ":v3.11.0-lying"),
    )
    .unwrap();

    let run = ferry(&[
        "push",
        lying.to_str().unwrap(),
        "--dest-repo",
        &reg.host(),
        "--plain",
    ]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.all().contains("but the package declares"),
        "{}",
        run.all()
    );
    assert!(reg
        .skopeo_raw("acp/topolvm-operator-bundle:v3.11.0-lying")
        .is_none());
}

#[test]
fn manifests_and_configs_beyond_the_total_limit_are_refused() {
    use ferry::oci::media::OCI_MANIFEST;
    const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("fat");
    let mut w = ferry::devtools::LayoutWriter::create(&pkg.join("images")).unwrap();
    let config = w.blob(OCI_CONFIG, b"{}").unwrap();
    // 17 manifests just under the 4 MiB per-document limit: 68 MB in all, over the 64 MiB cap.
    for i in 0..17 {
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [],
            "annotations": {"pad": format!("{i}{}", "x".repeat(4_000_000))},
        });
        let d = w
            .blob(OCI_MANIFEST, &serde_json::to_vec(&m).unwrap())
            .unwrap();
        w.tag(&d, &format!("registry.alauda.cn:60080/acp/fat{i}:v1"));
    }
    w.finish().unwrap();
    write_package_yaml(&pkg, "fat");
    let run = ferry(&["show", pkg.to_str().unwrap()]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.all()
            .contains("its manifests and configs exceed 64 MiB in total"),
        "{}",
        run.all()
    );
}

/// One big manifest listed under thousands of names in index.json: every entry resolves a
/// graph of its own, so each counts the manifest against the documents' total (a 1 MB
/// index.json and one 230 kB manifest held 1.6 GB before).
#[test]
fn one_manifest_under_countless_names_is_refused_with_bounded_memory() {
    use ferry::oci::media::OCI_MANIFEST;
    const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("names");
    let mut w = ferry::devtools::LayoutWriter::create(&pkg.join("images")).unwrap();
    let config = w.blob(OCI_CONFIG, b"{}").unwrap();
    let layers: Vec<serde_json::Value> = (0..3000u32)
        .map(|i| {
            let d = ferry::oci::Digest::of(&i.to_be_bytes());
            serde_json::json!({"mediaType": LAYER, "digest": d.to_string(), "size": 1000})
        })
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers,
    });
    let d = w
        .blob(OCI_MANIFEST, &serde_json::to_vec(&m).unwrap())
        .unwrap();
    for i in 0..2000 {
        w.tag(&d, &format!("registry.alauda.cn:60080/acp/many:v{i}"));
    }
    w.finish().unwrap();
    write_package_yaml(&pkg, "names");
    let reg = Registry::start(RegistryOpts::default());
    refused(&reg, &pkg, &["index.json entry", "64 MiB"]);
    assert!(!reg.log().contains("\"PUT /v2/"), "something was pushed");
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let peak = usage.ru_maxrss as u64 * 1024;
    assert!(peak < 300 << 20, "peak RSS {} MB", peak >> 20);
}
