//! `ferry package create`: pulls the artifact, finds its type and images, resolves every
//! image to its digests per platform, and writes `<dir>/package.yaml` and
//! `<dir>/images.lock`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;

use super::discover::{self, Named};
use super::lock::{ChartFile, Lock, Locked, PlatformManifest, META_FILE};
use super::{Connections, Platform};
use crate::error::{Error, Result};
use crate::oci::media::is_index_type;
use crate::oci::{Descriptor, Digest};
use crate::source::chart::{HELM_CHART, HELM_CONFIG};
use crate::source::layout::{Document, SourceRef};
use crate::source::metadata::{Metadata, Spec};
use crate::source::{PackageKind, PackageMeta};

/// Blobs read whole (configs, chart archives, bundle layers) are at most this big.
const MAX_SMALL_BLOB: u64 = 64 << 20;
const MAX_CONFIG: u64 = 4 << 20;

pub struct CreateOptions {
    pub dir: PathBuf,
    pub artifact: String,
    pub kind: Option<PackageKind>,
    pub platforms: Vec<Platform>,
    pub images: Vec<String>,
    pub module_plugin: Option<PathBuf>,
}

pub struct Created {
    pub meta: PackageMeta,
    pub lock: Lock,
    pub warnings: Vec<String>,
}

/// A whole small blob, verified.
pub async fn blob_bytes(
    conns: &Connections,
    at: &SourceRef,
    digest: &Digest,
    size: u64,
    cap: u64,
) -> Result<Bytes> {
    if size > cap {
        return Err(Error::package(format!(
            "{}/{}: blob {digest} is {size} bytes, more than the {} MiB read whole",
            at.host,
            at.repository,
            cap >> 20
        )));
    }
    let reg = conns.get(&at.host).await?;
    let mut body = reg.get_blob(&at.repository, digest, 0).await?.response;
    let mut check = crate::oci::Check::new(digest, size);
    let mut out = Vec::with_capacity(size as usize);
    while let Some(chunk) = body.chunk().await.map_err(|e| {
        Error::new(
            crate::error::ErrorKind::Registry,
            format!("registry {}: reading blob {digest}: {e}", at.host),
        )
    })? {
        check.update(&chunk);
        if out.len() + chunk.len() > size as usize {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    check
        .finish()
        .map_err(|e| e.context(format!("{}/{}", at.host, at.repository)))?;
    Ok(Bytes::from(out))
}

pub async fn create(opts: &CreateOptions, conns: &Connections) -> Result<Created> {
    let art = SourceRef::parse(&opts.artifact).map_err(|e| e.context("--artifact"))?;
    let reg = conns.get(&art.host).await?;
    let root = reg.get_manifest(&art.repository, &art.reference).await?;
    let mut warnings = Vec::new();
    // the manifest that says what the artifact is (for an index: its first child)
    let (config, layers) = match Document::parse(&root.bytes, &root.media_type)? {
        Document::Manifest { config, layers } => (config, layers),
        Document::Index(children) => {
            let first = children.first().ok_or_else(|| {
                Error::package(format!("{}: an empty image index", opts.artifact))
            })?;
            let child = reg
                .get_manifest(&art.repository, first.digest.as_str())
                .await?;
            match Document::parse(&child.bytes, &child.media_type)? {
                Document::Manifest { config, layers } => (config, layers),
                Document::Index(_) => {
                    return Err(Error::package(format!(
                        "{}: nested image indexes are not an artifact ferry can read",
                        opts.artifact
                    )))
                }
            }
        }
    };
    let plugin_file = match &opts.module_plugin {
        Some(p) => Some(std::fs::read(p).map_err(|e| {
            Error::new(
                crate::error::ErrorKind::Usage,
                format!("--module-plugin {}: {e}", p.display()),
            )
        })?),
        None => None,
    };
    let mut named: Vec<Named> = Vec::new();
    let mut chart_file = None;
    let (kind, meta_bits) = if config.media_type == HELM_CONFIG {
        let layer = layers
            .iter()
            .find(|l| l.media_type == HELM_CHART)
            .ok_or_else(|| {
                Error::package(format!(
                    "{}: a Helm artifact without its chart layer",
                    opts.artifact
                ))
            })?;
        let tgz = blob_bytes(conns, &art, &layer.digest, layer.size, MAX_SMALL_BLOB).await?;
        let chart = discover::read_chart(&tgz)?;
        if let Some(values) = &chart.values {
            named.extend(discover::chart_images(values, &art.host)?);
        }
        let module_plugin = plugin_file.or(chart.module_plugin.clone());
        let kind = match (opts.kind, &module_plugin) {
            (Some(k), _) => k,
            (None, Some(_)) => PackageKind::Plugin,
            (None, None) => PackageKind::Chart,
        };
        let info = match &module_plugin {
            Some(m) => discover::plugin_info(m)?,
            None if kind == PackageKind::Plugin => {
                return Err(Error::package(format!(
                    "{}: a plugin chart needs module-plugin.yaml at its root (or give \
                     --module-plugin FILE)",
                    opts.artifact
                )))
            }
            None => Default::default(),
        };
        if kind == PackageKind::Chart {
            chart_file = Some(ChartFile {
                file: format!("{}-{}.tgz", chart.name, chart.version),
                digest: layer.digest.clone(),
                size: layer.size,
            });
        }
        let name = info.name.unwrap_or_else(|| chart.name.clone());
        (
            kind,
            (
                name,
                info.display_name,
                chart.version.clone(),
                info.lifecycle,
            ),
        )
    } else {
        // an OLM bundle image: its CSV names the images
        let mut files = Vec::new();
        for l in &layers {
            let bytes = blob_bytes(conns, &art, &l.digest, l.size, MAX_SMALL_BLOB).await?;
            files.extend(discover::bundle_files(&bytes)?);
        }
        let (csv_file, csv_text) = files
            .iter()
            .find(|(p, _)| p.ends_with(".clusterserviceversion.yaml"))
            .ok_or_else(|| {
                Error::package(format!(
                    "{}: neither a Helm chart nor an operator bundle \
                     (no manifests/*.clusterserviceversion.yaml)",
                    opts.artifact
                ))
            })?;
        let csv = discover::read_csv(csv_text, csv_file)?;
        named.extend(csv.images.iter().cloned());
        let package = files
            .iter()
            .find(|(p, _)| p == "metadata/annotations.yaml")
            .and_then(|(_, t)| discover::bundle_package_name(t));
        let name =
            package.unwrap_or_else(|| csv.name.split(".v").next().unwrap_or(&csv.name).to_string());
        let version = csv
            .version
            .clone()
            .ok_or_else(|| Error::package(format!("{csv_file}: spec.version is missing")))?;
        (
            opts.kind.unwrap_or(PackageKind::Bundle),
            (name, csv.display_name, version, None),
        )
    };
    for r in &opts.images {
        named.push(Named {
            reference: r.clone(),
            from: "--image".into(),
            amd64_only: false,
        });
    }

    // the artifact itself is an image of plugin and bundle packages
    let artifact = lock_root(
        conns,
        &art,
        &opts.artifact,
        "artifact",
        &opts.platforms,
        &mut warnings,
    )
    .await?;
    let mut images = Vec::new();
    if kind != PackageKind::Chart {
        images.push(artifact.clone());
    }
    named.sort_by(|a, b| a.reference.cmp(&b.reference));
    let mut seen = std::collections::HashSet::new();
    seen.insert(opts.artifact.clone());
    let mut rest = Vec::new();
    for n in &named {
        if !seen.insert(n.reference.clone()) {
            continue;
        }
        let wanted: Vec<Platform> = opts
            .platforms
            .iter()
            .filter(|p| !n.amd64_only || p.arch == "amd64")
            .cloned()
            .collect();
        if wanted.is_empty() {
            warnings.push(format!(
                "{} ({}) is left out: support_arm: false, and no amd64 platform was asked for",
                n.reference, n.from
            ));
            continue;
        }
        let at = SourceRef::parse(&n.reference).map_err(|e| e.context(&n.from))?;
        let mut l = lock_root(conns, &at, &n.reference, &n.from, &wanted, &mut warnings).await?;
        if n.amd64_only && wanted.len() < opts.platforms.len() {
            l.note = Some(match l.note {
                Some(more) => format!("support_arm: false: linux/amd64 only; {more}"),
                None => "support_arm: false: linux/amd64 only".into(),
            });
        }
        rest.push(l);
    }
    images.extend(rest);

    let (name, display_name, version, lifecycle) = meta_bits;
    let meta = PackageMeta {
        api_version: "ferry/v1".into(),
        kind: "Package".into(),
        metadata: Metadata {
            name,
            display_name,
            version,
            arch: opts.platforms.iter().map(|p| p.to_string()).collect(),
        },
        spec: Spec {
            kind,
            lifecycle: lifecycle.unwrap_or_else(|| "aligned".into()),
            artifact: Some(opts.artifact.clone()),
            related_images: Vec::new(),
        },
    };
    meta.validate()?;
    let lock = Lock {
        api_version: "ferry/v1".into(),
        kind: "ImagesLock".into(),
        platforms: opts.platforms.iter().map(|p| p.to_string()).collect(),
        artifact,
        chart: chart_file,
        images,
    };
    write(&opts.dir, &meta, &lock)?;
    Ok(Created {
        meta,
        lock,
        warnings,
    })
}

fn write(dir: &Path, meta: &PackageMeta, lock: &Lock) -> Result<()> {
    let io = |e: std::io::Error| Error::internal(format!("writing {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let text =
        serde_yaml::to_string(meta).map_err(|e| Error::internal(format!("package.yaml: {e}")))?;
    std::fs::write(dir.join(META_FILE), text).map_err(io)?;
    lock.write(dir)
}

/// Resolves one reference: the document it points at and the platform manifests taken.
async fn lock_root(
    conns: &Connections,
    at: &SourceRef,
    reference: &str,
    from: &str,
    wanted: &[Platform],
    warnings: &mut Vec<String>,
) -> Result<Locked> {
    let reg = conns.get(&at.host).await?;
    let root = reg
        .get_manifest(&at.repository, &at.reference)
        .await
        .map_err(|e| e.context(format!("{reference} ({from})")))?;
    let mut locked = Locked {
        reference: reference.to_string(),
        from: from.to_string(),
        digest: root.digest.clone(),
        media_type: root.media_type.clone(),
        size: root.bytes.len() as u64,
        manifests: Vec::new(),
        index_rewritten: false,
        note: None,
    };
    match Document::parse(&root.bytes, &root.media_type)? {
        Document::Index(children) => {
            let mut missing = Vec::new();
            for p in wanted {
                let child = children
                    .iter()
                    .find(|c| c.platform.as_ref().is_some_and(|cp| p.matches(cp)));
                match child {
                    Some(c) if !locked.manifests.iter().any(|m| m.digest == c.digest) => {
                        locked.manifests.push(platform_manifest(p.to_string(), c))
                    }
                    Some(_) => {}
                    None => missing.push(p.to_string()),
                }
            }
            if locked.manifests.is_empty() {
                return Err(Error::package(format!(
                    "{reference} ({from}): its index has no manifest for {}",
                    missing.join(", ")
                )));
            }
            if !missing.is_empty() {
                let note = format!("no manifest for {}", missing.join(", "));
                warnings.push(format!("{reference}: {note}"));
                locked.note = Some(note);
            }
            locked.index_rewritten = locked.manifests.len() < children.len();
        }
        Document::Manifest { config, .. } => {
            if config.media_type == HELM_CONFIG || !is_image_config(&config.media_type) {
                return Ok(locked);
            }
            let bytes = blob_bytes(conns, at, &config.digest, config.size, MAX_CONFIG).await?;
            let cfg: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let platform = format!(
                "{}/{}",
                cfg.get("os").and_then(Value::as_str).unwrap_or("unknown"),
                cfg.get("architecture")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
            );
            if !wanted.iter().any(|p| p.matches(&cfg)) {
                let note = format!("a single-platform image ({platform}), kept as it is");
                warnings.push(format!("{reference}: {note}"));
                locked.note = Some(note);
            }
            let desc = Descriptor {
                media_type: root.media_type.clone(),
                digest: root.digest.clone(),
                size: root.bytes.len() as u64,
                annotations: None,
                platform: None,
            };
            locked.manifests.push(platform_manifest(platform, &desc));
        }
    }
    debug_assert!(!is_index_type(&locked.media_type) || !locked.manifests.is_empty());
    Ok(locked)
}

fn is_image_config(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.config.v1+json"
        || media_type == "application/vnd.docker.container.image.v1+json"
}

fn platform_manifest(platform: String, d: &Descriptor) -> PlatformManifest {
    PlatformManifest {
        platform,
        digest: d.digest.clone(),
        media_type: d.media_type.clone(),
        size: d.size,
    }
}
