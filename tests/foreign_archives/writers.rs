//! The test's own writers of other tools' archives: real layers (uncompressed tars), a
//! `docker save` (legacy format) and an OCI archive, byte for byte as the tests choose.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::Digest as _;

pub fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// Seeded bytes (xorshift): layers that differ per seed and compress poorly, like real ones.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A real layer: an uncompressed tar of a few files.
pub fn layer_tar(seed: u64) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..3u64 {
        let data = noise(seed * 10 + i, 20_000 + 7_000 * i as usize);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, format!("data/l{seed}/f{i}"), data.as_slice())
            .unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// An image as a test writes it: its names, its layers (uncompressed tars) and its config.
pub struct TestImage {
    pub names: Vec<String>,
    pub layers: Vec<Vec<u8>>,
    pub config: Vec<u8>,
}

impl TestImage {
    pub fn new(names: &[&str], seeds: &[u64]) -> TestImage {
        let layers: Vec<Vec<u8>> = seeds.iter().map(|s| layer_tar(*s)).collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": format!("test image {names:?}")}],
        }))
        .unwrap();
        TestImage {
            names: names.iter().map(|s| s.to_string()).collect(),
            layers,
            config,
        }
    }

    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| sha(l)).collect()
    }
}

pub fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, path, data).unwrap();
}

/// What `docker save` (before Docker 25) writes: per layer `<id>/VERSION`, `<id>/json`,
/// `<id>/layer.tar` (a layer another image already wrote is a symlink to it), the config as
/// `<hex>.json`, then `manifest.json` and `repositories` at the end.
pub fn docker_save(images: &[TestImage]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut written: BTreeMap<String, String> = BTreeMap::new();
    let mut manifest = Vec::new();
    for (n, img) in images.iter().enumerate() {
        let mut paths = Vec::new();
        for (i, layer) in img.layers.iter().enumerate() {
            let id = hex_of(&sha(format!("{n}/{i}/{}", sha(layer)).as_bytes())).to_string();
            let path = format!("{id}/layer.tar");
            file(&mut b, &format!("{id}/VERSION"), b"1.0");
            file(&mut b, &format!("{id}/json"), b"{}");
            match written.get(&sha(layer)) {
                Some(first) => {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_mode(0o777);
                    b.append_link(&mut h, &path, format!("../{first}")).unwrap();
                }
                None => {
                    file(&mut b, &path, layer);
                    written.insert(sha(layer), path.clone());
                }
            }
            paths.push(path);
        }
        let config_path = format!("{}.json", hex_of(&sha(&img.config)));
        file(&mut b, &config_path, &img.config);
        manifest.push(json!({"Config": config_path, "RepoTags": img.names, "Layers": paths}));
    }
    file(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    file(&mut b, "repositories", b"{}");
    b.into_inner().unwrap()
}

/// An OCI image manifest for `img` with gzip'd layers: (manifest bytes, blobs by digest).
pub fn oci_image(img: &TestImage) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut blobs = vec![(sha(&img.config), img.config.clone())];
    let mut layers = Vec::new();
    for l in &img.layers {
        let gz = gzip(l);
        layers.push(
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                           "digest": sha(&gz), "size": gz.len()}),
        );
        blobs.push((sha(&gz), gz));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(&img.config), "size": img.config.len()},
        "layers": layers,
    }))
    .unwrap();
    (manifest, blobs)
}

/// A tar of an OCI layout in skopeo's order (`blobs/` first, `index.json`, `oci-layout`);
/// each image's index entry gets `annotations`. Returns the tar and each manifest.
pub fn oci_archive(images: &[(&TestImage, Value)]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut b = tar::Builder::new(Vec::new());
    let mut entries = Vec::new();
    let mut manifests = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (img, annotations) in images {
        let (manifest, blobs) = oci_image(img);
        for (d, bytes) in blobs
            .iter()
            .chain([(sha(&manifest), manifest.clone())].iter())
        {
            if seen.insert(d.clone()) {
                file(&mut b, &format!("blobs/sha256/{}", hex_of(d)), bytes);
            }
        }
        entries.push(
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": sha(&manifest), "size": manifest.len(),
                            "annotations": annotations}),
        );
        manifests.push(manifest);
    }
    let index = json!({"schemaVersion": 2, "manifests": entries});
    file(&mut b, "index.json", &serde_json::to_vec(&index).unwrap());
    file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    (b.into_inner().unwrap(), manifests)
}

pub fn ref_name(name: &str) -> Value {
    json!({"org.opencontainers.image.ref.name": name})
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}
