//! A Docker archive in the legacy format: `docker save` (before Docker 25), `podman save`,
//! `skopeo copy ... docker-archive:`. A `manifest.json` lists each image as a config file,
//! its `RepoTags` and one uncompressed tar per layer; there is no registry manifest.
//!
//! The manifest is made as containers/image makes it when it reads such an archive
//! (`docker/internal/tarfile/src.go`, what `skopeo copy --preserve-digests docker-archive:...
//! docker://` pushes): Docker schema 2, config `application/vnd.docker.container.image.v1+
//! json`, one layer per entry of the config's `rootfs.diff_ids`, in that order (a repeated
//! layer listed each time), digest the diff ID, size the layer file's; serialized as Go's
//! `encoding/json` does (field order of the struct, no spaces). Layers are pushed as they
//! are: their digest is their diff ID.
//!
//! The layer media type is containers/image's too: `...rootfs.diff.tar.gzip`, although the
//! layers are plain tars (containers/image issue #1270, open since 2021). That is a choice:
//! with the exact `...diff.tar` the manifest's digest would differ from skopeo's, so an image
//! pushed by ferry and the same archive pushed by skopeo would be two images; pullers
//! (containerd, docker, CRI-O) find a layer's compression from its bytes, not its label.
//!
//! Two passes over the file: `manifest.json` comes last in every writer, so the first pass
//! lists the entries (sizes, links) and holds the small files (configs), and the second
//! streams the layers. For a gzip'd archive that is two decompressions of the whole file:
//! there is no other way to learn which entries are layers without extracting to disk.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::foreign::{named, stand_in_meta, ForeignFormat};
use super::image_tar::{self, compressed_magic, resolve, Member};
use super::layout::MAX_DOCUMENT_BYTES;
use super::{read_limited, ArchiveBytes, BlobSink, DocBudget, Flow, PackageHead};
use super::{Source, Wanted};
use crate::error::{Error, Result};
use crate::oci::media::DOCKER_MANIFEST;
use crate::oci::{Descriptor, Digest};

pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Not `...diff.tar`: see the module documentation.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Small files held in the first pass (configs are a few kB; a small layer may be held too).
const MAX_HELD_BYTES: u64 = 64 << 20;
/// What the first pass's list of entries may hold, names included: `manifest.json` comes
/// last, so every entry is listed, and a name can be a MiB (GNU long names). A docker save
/// of a thousand images of fifty layers lists some 150 000 entries of under 200 bytes.
const MAX_CATALOG_BYTES: u64 = 64 << 20;
/// What one listed entry costs besides its names (map slots, size, held bytes' handle).
const ENTRY_OVERHEAD: u64 = 128;

#[derive(Debug)]
pub struct DockerArchiveSource {
    label: String,
    bytes: Box<dyn ArchiveBytes>,
    /// Layer file path → the diff ID it is pushed as; set by `read_head`.
    layers: OnceLock<HashMap<String, Digest>>,
}

impl DockerArchiveSource {
    pub fn new(label: String, bytes: Box<dyn ArchiveBytes>) -> Self {
        DockerArchiveSource {
            label,
            bytes,
            layers: OnceLock::new(),
        }
    }
}

/// One element of `manifest.json`.
#[derive(Deserialize)]
struct ManifestItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct ImageConfig {
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

/// containers/image's `manifest.Schema2` field for field, so that serde_json writes the
/// bytes Go's `json.Marshal` writes.
#[derive(Serialize)]
struct Schema2<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Schema2Descriptor<'a>,
    layers: Vec<Schema2Descriptor<'a>>,
}

#[derive(Serialize)]
struct Schema2Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    size: u64,
    digest: &'a Digest,
}

/// What the first pass learns about every entry.
#[derive(Default)]
struct Catalog {
    /// Regular files: size and, when its first bytes say so, its compression.
    files: HashMap<String, (u64, Option<&'static str>)>,
    links: HashMap<String, String>,
    held: HashMap<String, Bytes>,
    manifest: Option<Vec<u8>>,
}

fn catalog(bytes: &dyn ArchiveBytes) -> Result<Catalog> {
    let mut c = Catalog::default();
    let mut held_bytes = 0u64;
    let mut listed = 0u64;
    image_tar::walk(bytes, &mut |m, r| {
        let (path, names) = match m {
            Member::Link { path, target } => (path, path.len() + target.len()),
            Member::File { path, .. } => (path, path.len()),
            Member::Skip => return Ok(Flow::More),
        };
        listed += names as u64 + ENTRY_OVERHEAD;
        if listed > MAX_CATALOG_BYTES {
            return Err(Error::package(format!(
                "the archive lists more entries, or longer names, than {} MiB hold: refusing a \
                 hostile or broken archive (a docker save lists a few entries per layer, each \
                 named in under 200 bytes)",
                MAX_CATALOG_BYTES >> 20
            )));
        }
        // `tar -x` and docker load keep the last of two entries of one name: refusing them
        // means ferry pushes what any other reader of the archive sees
        let twice = if path == "manifest.json" {
            c.manifest.is_some() || c.links.contains_key(path)
        } else {
            c.files.contains_key(path) || c.links.contains_key(path)
        };
        if twice {
            return Err(Error::package(format!(
                "entry {path:?} appears twice: refusing an archive that other tools would read \
                 otherwise (docker save and podman save write each name once); save the images again"
            )));
        }
        match m {
            Member::Link { path, target } => {
                c.links.insert(path.clone(), target.clone());
            }
            Member::File { path, size } if path == "manifest.json" => {
                c.manifest = Some(read_limited(r, *size, MAX_DOCUMENT_BYTES, path)?);
            }
            Member::File { path, size } => {
                let small = *size <= MAX_DOCUMENT_BYTES && held_bytes + size <= MAX_HELD_BYTES;
                let mut head = Vec::new();
                if small {
                    head = read_limited(r, *size, *size, &format!("{path:?}"))?;
                    held_bytes += size;
                } else {
                    std::io::Read::read_to_end(&mut std::io::Read::take(r, 6), &mut head)
                        .map_err(image_tar_error)?;
                }
                c.files
                    .insert(path.clone(), (*size, compressed_magic(&head)));
                if small {
                    c.held.insert(path.clone(), Bytes::from(head));
                }
            }
            Member::Skip => {}
        }
        Ok(Flow::More)
    })?;
    Ok(c)
}

fn image_tar_error(e: std::io::Error) -> Error {
    super::tar_guard::archive_error(e)
}

/// Reads the named files (configs not held in the first pass) in one more pass.
fn fetch(bytes: &dyn ArchiveBytes, paths: &HashSet<String>) -> Result<HashMap<String, Bytes>> {
    let mut out = HashMap::new();
    image_tar::walk(bytes, &mut |m, r| {
        if let Member::File { path, size } = m {
            if paths.contains(path) {
                out.insert(
                    path.clone(),
                    Bytes::from(read_limited(
                        r,
                        *size,
                        MAX_DOCUMENT_BYTES,
                        &format!("{path:?}"),
                    )?),
                );
            }
        }
        Ok(if out.len() == paths.len() {
            Flow::Enough
        } else {
            Flow::More
        })
    })?;
    Ok(out)
}

/// One image of the archive, made into registry terms.
struct Made {
    names: Vec<String>,
    manifest: Bytes,
    config: (Digest, Bytes),
    /// (diff ID, layer file path)
    layers: Vec<(Digest, String)>,
}

fn make_image(item: &ManifestItem, config: Bytes, cat: &Catalog) -> Result<Made> {
    let what = match item.repo_tags.as_deref() {
        Some([first, ..]) => format!("image {first:?}"),
        _ => format!("image with config {:?}", item.config),
    };
    let fail = |m: String| Error::package(format!("{what}: {m}"));
    let parsed: ImageConfig = serde_json::from_slice(&config)
        .map_err(|e| fail(format!("config {:?} is not valid: {e}", item.config)))?;
    let diff_ids = parsed
        .rootfs
        .ok_or_else(|| fail(format!("config {:?} has no rootfs", item.config)))?
        .diff_ids;
    if diff_ids.len() != item.layers.len() {
        return Err(fail(format!(
            "{} layers in manifest.json but {} in its config",
            item.layers.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    let mut sizes: HashMap<&Digest, u64> = HashMap::new();
    for (diff_id, layer) in diff_ids.iter().zip(&item.layers) {
        let path = resolve(&cat.links, layer);
        let &(size, compression) = cat.files.get(&path).ok_or_else(|| {
            fail(format!(
                "layer {layer:?} (diff ID {diff_id}) is not in the archive: it is incomplete; \
                 save the image again"
            ))
        })?;
        if let Some(c) = compression {
            return Err(fail(format!(
                "layer {layer:?} is {c}-compressed: a docker archive's layers are plain tars \
                 (their digest is their diff ID); re-save the image with docker, podman or skopeo"
            )));
        }
        // a layer repeated in one image is one blob (containers/image lists it each time)
        if sizes.insert(diff_id, size).is_none() {
            layers.push((diff_id.clone(), path));
        }
        descriptors.push(Schema2Descriptor {
            media_type: DOCKER_LAYER,
            size,
            digest: diff_id,
        });
    }
    let config_digest = Digest::of(&config);
    let manifest = serde_json::to_vec(&Schema2 {
        schema_version: 2,
        media_type: DOCKER_MANIFEST,
        config: Schema2Descriptor {
            media_type: DOCKER_CONFIG,
            size: config.len() as u64,
            digest: &config_digest,
        },
        layers: descriptors,
    })
    .expect("plain data");
    Ok(Made {
        names: item.repo_tags.clone().unwrap_or_default(),
        manifest: Bytes::from(manifest),
        config: (config_digest, config),
        layers,
    })
}

impl DockerArchiveSource {
    fn made(&self, budget: &mut DocBudget) -> Result<Vec<Made>> {
        let bytes = self.bytes.as_ref();
        let mut cat = catalog(bytes)?;
        let manifest = cat.manifest.take().ok_or_else(|| {
            Error::package(
                "manifest.json is missing: not a docker archive (docker save, podman save, \
                 skopeo docker-archive:), or one from a docker older than 1.10",
            )
        })?;
        let items: Vec<ManifestItem> = serde_json::from_slice(&manifest)
            .map_err(|e| Error::package(format!("manifest.json is not valid: {e}")))?;
        let config_paths: Vec<String> = items
            .iter()
            .map(|i| resolve(&cat.links, &i.config))
            .collect();
        let missing: HashSet<String> = config_paths
            .iter()
            .filter(|p| !cat.held.contains_key(*p) && cat.files.contains_key(*p))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let fetched = fetch(bytes, &missing)?;
            cat.held.extend(fetched);
        }
        items
            .iter()
            .zip(config_paths)
            .map(|(item, path)| {
                let config = cat.held.get(&path).cloned().ok_or_else(|| {
                    Error::package(format!(
                        "config {:?} of image {} is not in the archive (or over {} bytes): \
                         the archive is incomplete; save the image again",
                        item.config,
                        item.repo_tags
                            .as_ref()
                            .and_then(|t| t.first())
                            .map(|t| format!("{t:?}"))
                            .unwrap_or_else(|| "without a name".into()),
                        MAX_DOCUMENT_BYTES
                    ))
                })?;
                budget.take(config.len() as u64)?;
                make_image(item, config, &cat)
            })
            .collect()
    }
}

impl Source for DockerArchiveSource {
    fn read_head(&self) -> Result<PackageHead> {
        let mut budget = DocBudget::default();
        let made = self.made(&mut budget)?;
        let mut docs = HashMap::new();
        let mut images = Vec::new();
        let mut warnings = Vec::new();
        let mut layer_paths = HashMap::new();
        for (i, m) in made.into_iter().enumerate() {
            let desc = Descriptor {
                media_type: DOCKER_MANIFEST.to_string(),
                digest: Digest::of(&m.manifest),
                size: m.manifest.len() as u64,
                annotations: None,
                platform: None,
            };
            let what = format!("manifest.json entry {}", i + 1);
            // Each name is an image of its own (resolved, held, pushed): its manifest counts
            // once per name, as each index.json entry of a package does. One manifest.json of
            // 4 MiB could otherwise name one 300-layer image 400 000 times (tens of GB held).
            let names = m.names.len().max(1) as u64;
            budget
                .take(m.manifest.len() as u64 * names)
                .map_err(|e| e.context(format!("{what} ({names} names)")))?;
            if m.names.is_empty() {
                images.push(named(
                    desc.clone(),
                    Err(String::new()),
                    &what,
                    &mut warnings,
                ));
            }
            for n in &m.names {
                let name = super::image_names::normalize(n).ok_or_else(|| n.clone());
                images.push(named(desc.clone(), name, &what, &mut warnings));
            }
            docs.insert(desc.digest.clone(), m.manifest);
            docs.insert(m.config.0, m.config.1);
            for (d, p) in m.layers {
                layer_paths.insert(p, d);
            }
        }
        let _ = self.layers.set(layer_paths);
        Ok(PackageHead {
            meta: stand_in_meta(&self.label),
            images,
            docs,
            charts: Vec::new(),
            extra_images: Vec::new(),
            warnings,
        })
    }

    fn stream_blobs(&self, wanted: &Wanted, sink: &mut BlobSink<'_>) -> Result<HashSet<Digest>> {
        let mut remaining: HashSet<Digest> = wanted.keys().cloned().collect();
        if remaining.is_empty() {
            return Ok(remaining);
        }
        if self.layers.get().is_none() {
            self.read_head()?;
        }
        let layers = self.layers.get().expect("set by read_head");
        image_tar::walk(self.bytes.as_ref(), &mut |m, r| {
            let Member::File { path, size } = m else {
                return Ok(Flow::More);
            };
            match layers.get(path) {
                Some(d) if remaining.remove(d) => {
                    let flow = sink(d, *size, r)?;
                    Ok(if flow == Flow::Enough || remaining.is_empty() {
                        Flow::Enough
                    } else {
                        Flow::More
                    })
                }
                _ => Ok(Flow::More),
            }
        })?;
        Ok(remaining)
    }

    fn list_charts(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn read_chart(&self, name: &str) -> Result<Vec<u8>> {
        Err(Error::package(format!(
            "{name}: a docker archive has no charts"
        )))
    }

    fn check_unchanged(&self) -> Result<()> {
        self.bytes.check_unchanged()
    }

    fn archive(&self) -> Option<&dyn ArchiveBytes> {
        Some(self.bytes.as_ref())
    }

    fn foreign_format(&self) -> Option<ForeignFormat> {
        Some(ForeignFormat::DockerArchive)
    }
}
