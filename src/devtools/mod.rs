//! Hidden `ferry dev` helpers that generate test data with our own code: the small fixture
//! packages checked in under `fixtures/`, and the benchmark corpus (`scripts/bench.sh`).
//! Layers are real gzip'd tar files of pseudo-random (incompressible) bytes, deterministic for
//! a given seed, so that fixtures can be rebuilt byte for byte.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::oci::Descriptor;
use crate::oci::Digest;

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// xorshift64*: tiny, deterministic, good enough for incompressible filler.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A gzip'd tar with one file of `size` pseudo-random bytes. Stored (level 0) deflate blocks:
/// the data is incompressible anyway, and generating stays fast.
pub fn random_layer(seed: u64, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    Rng::new(seed).fill(&mut data);
    let mut gz =
        flate2::write::GzEncoder::new(Vec::with_capacity(size + 4096), flate2::Compression::none());
    {
        let mut tar = tar::Builder::new(&mut gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, format!("data/{seed}.bin"), data.as_slice())
            .expect("in-memory tar");
        tar.finish().expect("in-memory tar");
    }
    gz.finish().expect("in-memory gzip")
}

/// Writes an OCI image layout directory.
pub struct LayoutWriter {
    dir: PathBuf,
    entries: Vec<Descriptor>,
}

fn io(e: std::io::Error) -> Error {
    Error::internal(format!("writing layout: {e}"))
}

impl LayoutWriter {
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(io)?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
        Ok(LayoutWriter {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        })
    }

    pub fn blob(&mut self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let digest = Digest::of(bytes);
        let p = self.dir.join("blobs/sha256").join(digest.hex());
        if !p.exists() {
            std::fs::write(p, bytes).map_err(io)?;
        }
        Ok(Descriptor {
            media_type: media_type.into(),
            digest,
            size: bytes.len() as u64,
            annotations: None,
            platform: None,
        })
    }

    /// An image manifest with a generated config; `docker` selects Docker v2 schema 2 types.
    pub fn image(
        &mut self,
        name: &str,
        arch: &str,
        layers: &[Descriptor],
        docker: bool,
    ) -> Result<Descriptor> {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Labels": {"ferry.fixture": name}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        });
        let config = self.blob(
            if docker { DOCKER_CONFIG } else { OCI_CONFIG },
            &serde_json::to_vec(&config).expect("json"),
        )?;
        let media = if docker {
            crate::oci::media::DOCKER_MANIFEST
        } else {
            crate::oci::media::OCI_MANIFEST
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": media, "config": config, "layers": layers,
        });
        let mut d = self.blob(media, &serde_json::to_vec_pretty(&manifest).expect("json"))?;
        d.platform = Some(serde_json::json!({"architecture": arch, "os": "linux"}));
        Ok(d)
    }

    pub fn index(&mut self, manifests: &[Descriptor], docker: bool) -> Result<Descriptor> {
        let media = if docker {
            crate::oci::media::DOCKER_LIST
        } else {
            crate::oci::media::OCI_INDEX
        };
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": media, "manifests": manifests});
        self.blob(media, &serde_json::to_vec_pretty(&index).expect("json"))
    }

    pub fn layer(&mut self, seed: u64, size: usize, docker: bool) -> Result<Descriptor> {
        self.blob(
            if docker { DOCKER_LAYER } else { OCI_LAYER },
            &random_layer(seed, size),
        )
    }

    pub fn tag(&mut self, desc: &Descriptor, reference: &str) {
        let mut d = desc.clone();
        d.platform = None;
        d.annotations = Some(BTreeMap::from([(
            crate::oci::media::REF_NAME_ANNOTATION.to_string(),
            reference.to_string(),
        )]));
        self.entries.push(d);
    }

    pub fn finish(self) -> Result<()> {
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": crate::oci::media::OCI_INDEX, "manifests": self.entries});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index).expect("json"),
        )
        .map_err(io)
    }
}

fn write_metadata(
    path: &Path,
    name: &str,
    version: &str,
    kind: &str,
    arch: &[&str],
    artifact: &str,
) -> Result<()> {
    let lifecycle = if kind == "core" { "core" } else { "aligned" };
    let text = format!(
        "apiVersion: ferry/v1\nkind: Package\nmetadata:\n  name: {name}\n  version: {version}\n  arch: [{}]\nspec:\n  type: {kind}\n  lifecycle: {lifecycle}\n  artifact: {artifact}\n",
        arch.join(", ")
    );
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

const SRC: &str = "registry.alauda.cn:60080";

/// The fixture packages' sources: `<out>/<name>/layout` and `<out>/<name>/package.yaml`.
pub fn fixtures(out: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();

    // An operator bundle with one image.
    let dir = out.join("topolvm-operator");
    let mut w = LayoutWriter::create(&dir.join("layout"))?;
    let l = w.layer(1, 40_000, false)?;
    let m = w.image("topolvm-operator-bundle", "amd64", &[l], false)?;
    let artifact = format!("{SRC}/acp/topolvm-operator-bundle:v3.11.0");
    w.tag(&m, &artifact);
    w.finish()?;
    write_metadata(
        &dir.join("package.yaml"),
        "topolvm-operator",
        "2.3.0",
        "bundle",
        &["linux/amd64"],
        &artifact,
    )?;
    names.push("topolvm-operator".to_string());

    // A plugin with several images sharing a base layer (one layer above the chunk size of
    // small test runs, so chunked uploads are exercised too).
    let dir = out.join("oam-application");
    let mut w = LayoutWriter::create(&dir.join("layout"))?;
    let base = w.layer(10, 300_000, false)?;
    let mut first = None;
    for (i, name) in ["oam-controller", "oam-webhook", "oam-apiserver"]
        .iter()
        .enumerate()
    {
        let own = w.layer(20 + i as u64, 50_000 + 30_000 * i, false)?;
        let m = w.image(name, "amd64", &[base.clone(), own], false)?;
        let r = format!("{SRC}/acp/{name}:v4.2.1");
        first.get_or_insert(r.clone());
        w.tag(&m, &r);
    }
    w.finish()?;
    write_metadata(
        &dir.join("package.yaml"),
        "oam-application",
        "4.2.1",
        "plugin",
        &["linux/amd64"],
        &first.unwrap_or_default(),
    )?;
    names.push("oam-application".to_string());

    // A multi-arch image (OCI image index over amd64 and arm64).
    let dir = out.join("multiarch-tool");
    let mut w = LayoutWriter::create(&dir.join("layout"))?;
    let amd = w.layer(30, 60_000, false)?;
    let arm = w.layer(31, 61_000, false)?;
    let ma = w.image("multiarch-tool", "amd64", &[amd], false)?;
    let mb = w.image("multiarch-tool", "arm64", &[arm], false)?;
    let idx = w.index(&[ma, mb], false)?;
    let artifact = format!("{SRC}/acp/multiarch-tool:v1.0.0");
    w.tag(&idx, &artifact);
    w.finish()?;
    write_metadata(
        &dir.join("package.yaml"),
        "multiarch-tool",
        "1.0.0",
        "plugin",
        &["linux/amd64", "linux/arm64"],
        &artifact,
    )?;
    names.push("multiarch-tool".to_string());

    // Docker v2 schema 2 media types: a manifest list over two docker manifests, plus a
    // single docker image.
    let dir = out.join("docker-legacy");
    let mut w = LayoutWriter::create(&dir.join("layout"))?;
    let l1 = w.layer(40, 45_000, true)?;
    let l2 = w.layer(41, 46_000, true)?;
    let d1 = w.image("docker-legacy", "amd64", std::slice::from_ref(&l1), true)?;
    let d2 = w.image("docker-legacy", "arm64", &[l2], true)?;
    let list = w.index(&[d1.clone(), d2], true)?;
    let artifact = format!("{SRC}/acp/docker-legacy:v0.9.0");
    w.tag(&list, &artifact);
    w.tag(&d1, &format!("{SRC}/3rdparty/docker-legacy-amd64:v0.9.0"));
    w.finish()?;
    write_metadata(
        &dir.join("package.yaml"),
        "docker-legacy",
        "0.9.0",
        "chart",
        &["linux/amd64", "linux/arm64"],
        &artifact,
    )?;
    names.push("docker-legacy".to_string());
    Ok(names)
}

/// The benchmark corpus: `images` images over `repos` repositories, each on a shared base
/// layer plus own layers with sizes from 0.2 to 60 MB, scaled by `scale`.
pub fn corpus(out: &Path, images: usize, scale: f64, seed: u64) -> Result<u64> {
    let mut w = LayoutWriter::create(&out.join("layout"))?;
    let mut rng = Rng::new(seed);
    // Sizes in kB: a realistic spread, heavy on small layers, a few large.
    const MIX_KB: [usize; 8] = [200, 800, 2_000, 5_000, 12_000, 25_000, 40_000, 60_000];
    let scaled = |kb: usize| ((kb as f64 * scale) as usize * 1000).max(1000);
    let bases = [
        w.layer(seed ^ 0xBA5E, scaled(30_000), false)?,
        w.layer(seed ^ 0xBA5F, scaled(12_000), false)?,
    ];
    let mut total: u64 = bases.iter().map(|b| b.size).sum();
    for i in 0..images {
        let mut layers = vec![bases[i % 2].clone()];
        for j in 0..3 {
            let kb = MIX_KB[(rng.next_u64() % MIX_KB.len() as u64) as usize];
            let l = w.layer(
                seed.wrapping_add((i * 16 + j) as u64 + 1),
                scaled(kb),
                false,
            )?;
            total += l.size;
            layers.push(l);
        }
        let name = format!("bench-{i:03}");
        let m = w.image(&name, "amd64", &layers, false)?;
        w.tag(&m, &format!("{SRC}/bench/repo{}/{name}:v1", i % 4));
    }
    w.finish()?;
    write_metadata(
        &out.join("package.yaml"),
        "bench-corpus",
        "1.0.0",
        "core",
        &["linux/amd64"],
        &format!("{SRC}/bench/repo0/bench-000:v1"),
    )?;
    Ok(total)
}

/// The latency corpus: many small blobs and a few large ones (what makes a distant link
/// latency-bound): `blobs` layers in images of 10 layers, half of them 20-100 kB, most of the
/// rest 100-200 kB, and one in two hundred 4-8 MB.
pub fn small_blob_corpus(out: &Path, blobs: usize, seed: u64) -> Result<u64> {
    let mut w = LayoutWriter::create(&out.join("layout"))?;
    let mut rng = Rng::new(seed);
    let mut total = 0u64;
    let mut layers = Vec::new();
    for i in 0..blobs {
        let r = rng.next_u64();
        let size = if i % 200 == 199 {
            4_000_000 + (r % 4_000_000) as usize
        } else if i % 2 == 0 {
            20_000 + (r % 80_000) as usize
        } else {
            100_000 + (r % 100_000) as usize
        };
        let l = w.layer(
            seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            size,
            false,
        )?;
        total += l.size;
        layers.push(l);
        if layers.len() == 10 || i + 1 == blobs {
            let n = i / 10;
            let name = format!("small-{n:04}");
            let m = w.image(&name, "amd64", &layers, false)?;
            w.tag(&m, &format!("{SRC}/bench/small{}/{name}:v1", n % 8));
            layers.clear();
        }
    }
    w.finish()?;
    write_metadata(
        &out.join("package.yaml"),
        "bench-small",
        "1.0.0",
        "plugin",
        &["linux/amd64"],
        &format!("{SRC}/bench/small0/small-0000:v1"),
    )?;
    Ok(total)
}

/// The field-scale corpus: `images` images (a core package has a thousand or more) over 50
/// repositories, each on one of 8 shared base layers (4x `mean_kb`) plus 3 own layers of
/// 0.2-1.8x `mean_kb`: about 4 blobs per image with its config. With `mean_kb` 1 the count is
/// what matters (the memory test); with 750 it is several GB (`scripts/bench.sh --scale`).
pub fn scale_corpus(out: &Path, images: usize, mean_kb: usize, seed: u64) -> Result<u64> {
    let mut w = LayoutWriter::create(&out.join("layout"))?;
    let mut rng = Rng::new(seed);
    let mean = mean_kb.max(1) * 1000;
    let mut total = 0u64;
    let mut bases = Vec::new();
    for b in 0..8u64 {
        let l = w.layer(seed ^ (0xBA5E + b), 4 * mean, false)?;
        total += l.size;
        bases.push(l);
    }
    for i in 0..images {
        let mut layers = vec![bases[i % bases.len()].clone()];
        for j in 0..3 {
            let size = mean / 5 + (rng.next_u64() % (mean as u64 * 8 / 5)) as usize;
            let l = w.layer(
                seed.wrapping_mul(1_000_003)
                    .wrapping_add((i * 4 + j) as u64 + 1),
                size,
                false,
            )?;
            total += l.size;
            layers.push(l);
        }
        let name = format!("scale-{i:04}");
        let m = w.image(&name, "amd64", &layers, false)?;
        w.tag(&m, &format!("{SRC}/bench/scale{:02}/{name}:v1", i % 50));
    }
    w.finish()?;
    write_metadata(
        &out.join("package.yaml"),
        "bench-scale",
        "1.0.0",
        "core",
        &["linux/amd64"],
        &format!("{SRC}/bench/scale00/scale-0000:v1"),
    )?;
    Ok(total)
}

/// A small core package directory (what `tar xzf` of a core package gives): two core images in
/// `images/`, the given plugin packages under `plugins/`, a Deployment in `manifests/` that
/// uses one of the images, `upgrade.sh` (the wrapper around `ferry sync`) and
/// `checksums.sha256` over everything else.
pub fn core_package(out: &Path, version: &str, plugins: &[PathBuf]) -> Result<()> {
    let io = |e: std::io::Error| Error::internal(format!("{}: {e}", out.display()));
    std::fs::create_dir_all(out.join("plugins")).map_err(io)?;
    std::fs::create_dir_all(out.join("manifests")).map_err(io)?;
    let mut w = LayoutWriter::create(&out.join("images"))?;
    let base = w.layer(9001, 300_000, false)?;
    let cvo = w.layer(9002, 120_000, false)?;
    let etcd = w.layer(9003, 200_000, false)?;
    let m = w.image(
        "cluster-version-operator",
        "amd64",
        &[base.clone(), cvo],
        false,
    )?;
    w.tag(
        &m,
        &format!("registry.alauda.cn:60080/acp/cluster-version-operator:{version}"),
    );
    let m = w.image("etcd", "amd64", &[base, etcd], false)?;
    w.tag(&m, "registry.alauda.cn:60080/3rdparty/etcd:v3.5.21");
    w.finish()?;
    std::fs::write(
        out.join("package.yaml"),
        format!("apiVersion: ferry/v1\nkind: Package\nmetadata:\n  name: acp-core\n  version: {version}\n  arch: [linux/amd64]\nspec:\n  type: core\n  lifecycle: core\n"),
    )
    .map_err(io)?;
    std::fs::write(
        out.join("manifests/cluster-version-operator.yaml"),
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: cluster-version-operator\n  namespace: cpaas-system\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: cvo}}\n  template:\n    metadata:\n      labels: {{app: cvo}}\n    spec:\n      containers:\n      - name: cvo\n        image: registry.alauda.cn:60080/acp/cluster-version-operator:{version}\n"),
    )
    .map_err(io)?;
    std::fs::write(
        out.join("upgrade.sh"),
        include_str!("../../scripts/upgrade.sh"),
    )
    .map_err(io)?;
    for p in plugins {
        let name = p
            .file_name()
            .ok_or_else(|| Error::internal("plugin without a name"))?;
        std::fs::copy(p, out.join("plugins").join(name)).map_err(io)?;
    }
    // checksums over every other file, in sha256sum format
    let mut files = Vec::new();
    collect_files(out, out, &mut files)?;
    files.sort();
    let mut sums = String::new();
    for rel in files {
        let bytes = std::fs::read(out.join(&rel)).map_err(io)?;
        sums.push_str(&format!(
            "{}  {rel}\n",
            crate::oci::Digest::of(&bytes).hex()
        ));
    }
    std::fs::write(out.join("checksums.sha256"), sums).map_err(io)?;
    Ok(())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            let rel = rel.to_string_lossy().into_owned();
            if rel != "checksums.sha256" {
                out.push(rel);
            }
        }
    }
    Ok(())
}
