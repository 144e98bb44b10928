//! `ferry package build`: the `.tgz` of a package, exactly from its `images.lock`.
//!
//! First every document (manifests, indexes, configs) is read by digest and checked; an
//! index whose lock dropped children is rewritten with the kept ones. Then the archive is
//! written in canonical order (docs/package-format.md): package.yaml, images/oci-layout,
//! images/index.json, documents (children before parents), layers (through [`super::fetch`]),
//! charts. Fixed tar metadata and a fixed order make two builds of one lock byte-identical.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::fetch::{Job, Pipeline, SlotReader, Stats};
use super::lock::{Lock, Locked, META_FILE};
use super::resolve::blob_bytes;
use super::Connections;
use crate::error::{Error, Result};
use crate::oci::media::{OCI_INDEX, REF_NAME_ANNOTATION};
use crate::oci::{Descriptor, Digest};
use crate::source::blob_path;
use crate::source::layout::{Document, SourceRef, MAX_DOCUMENT_BYTES};
use crate::source::pack::TgzWriter;
use crate::source::PackageMeta;

/// Set on the index.json entry of an index `build` rewrote: the digest it had in the registry.
pub const REWRITTEN_FROM: &str = "io.ferry.index.rewritten-from";
const MAX_CHART: u64 = 64 << 20;

pub struct BuildOptions {
    pub dir: PathBuf,
    pub out_dir: PathBuf,
    pub concurrency: usize,
    pub level: u32,
    pub cache: Option<PathBuf>,
    pub budget: usize,
    pub dry_run: bool,
}

/// One image as packed: what it weighs per platform, and whether its index was rewritten.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub reference: String,
    pub from: String,
    /// The digest in the package (a rewritten index's new digest).
    pub digest: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten_from: Option<Digest>,
    pub platforms: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Foreign / non-distributable layers left out (as `push` leaves them out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub foreign_layers: Vec<Digest>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub name: String,
    pub version: String,
    pub output: String,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    pub images: Vec<ImagePlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// Layers and their bytes (each once).
    pub layers: usize,
    pub layer_bytes: u64,
    pub downloaded_bytes: u64,
    pub cached_bytes: u64,
    /// Bytes that waited their turn in a temporary file (the memory budget was spent).
    pub spilled_bytes: u64,
}

/// Everything but the layers, in memory.
struct Plan {
    meta_text: Vec<u8>,
    meta: PackageMeta,
    index_json: Vec<u8>,
    docs: Vec<(Digest, Bytes)>,
    jobs: Vec<Job>,
    images: Vec<ImagePlan>,
    chart: Option<(String, Bytes)>,
}

pub async fn build(opts: &BuildOptions, conns: Arc<Connections>) -> Result<BuildReport> {
    let meta_path = opts.dir.join(META_FILE);
    let meta_text = std::fs::read(&meta_path).map_err(|e| {
        Error::package(format!(
            "{}: cannot read: {e}; run `ferry package create` first",
            meta_path.display()
        ))
    })?;
    let meta = PackageMeta::parse(&meta_text).map_err(|e| e.context(meta_path.display()))?;
    let lock = Lock::read(&opts.dir)?;
    let plan = plan(&lock, meta, meta_text, &conns).await?;
    let output = opts.out_dir.join(super::file_name(&plan.meta));
    let mut report = BuildReport {
        name: plan.meta.metadata.name.clone(),
        version: plan.meta.metadata.version.clone(),
        output: output.display().to_string(),
        dry_run: opts.dry_run,
        sha256: None,
        signature: None,
        images: plan.images.clone(),
        chart: plan.chart.as_ref().map(|(f, _)| format!("charts/{f}")),
        layers: plan.jobs.len(),
        layer_bytes: plan.jobs.iter().map(|j| j.size).sum(),
        downloaded_bytes: 0,
        cached_bytes: 0,
        spilled_bytes: 0,
    };
    if opts.dry_run {
        return Ok(report);
    }
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| Error::internal(format!("-o {}: {e}", opts.out_dir.display())))?;
    let stats = Arc::new(Stats::default());
    let pipeline = Pipeline {
        conns,
        cache: opts.cache.clone(),
        spill_dir: opts.out_dir.clone(),
        concurrency: opts.concurrency,
        budget: opts.budget,
        stats: stats.clone(),
        head: Arc::new(AtomicUsize::new(0)),
    };
    let receivers = pipeline.start(plan.jobs.clone());
    let head = pipeline.head.clone();
    let level = opts.level;
    let out = output.clone();
    let progress = super::progress::Progress::start(report.layer_bytes);
    let bar = progress.counter();
    let written = tokio::task::spawn_blocking(move || -> Result<String> {
        let mut w = TgzWriter::create_rechunked(&out, level)?;
        w.append(
            "package.yaml",
            plan.meta_text.len() as u64,
            &plan.meta_text[..],
        )?;
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        w.append("images/oci-layout", layout.len() as u64, &layout[..])?;
        w.append(
            "images/index.json",
            plan.index_json.len() as u64,
            &plan.index_json[..],
        )?;
        for (d, b) in &plan.docs {
            w.append(&blob_path(d), b.len() as u64, &b[..])?;
        }
        for (i, (job, rx)) in plan.jobs.iter().zip(receivers).enumerate() {
            head.store(i, Ordering::Release);
            let mut reader = SlotReader::new(rx);
            if let Err(e) = w.append(&blob_path(&job.digest), job.size, &mut reader) {
                return Err(reader.failure.take().unwrap_or(e));
            }
            bar.fetch_add(job.size, Ordering::Relaxed);
        }
        if let Some((file, bytes)) = &plan.chart {
            w.append(&format!("charts/{file}"), bytes.len() as u64, &bytes[..])?;
        }
        w.finish()
    })
    .await
    .map_err(|e| Error::internal(format!("the writer: {e}")))?;
    progress.stop();
    report.sha256 = Some(written?);
    report.downloaded_bytes = stats.downloaded.load(Ordering::Relaxed);
    report.cached_bytes = stats.from_cache.load(Ordering::Relaxed);
    report.spilled_bytes = stats.spilled.load(Ordering::Relaxed);
    Ok(report)
}

async fn plan(
    lock: &Lock,
    meta: PackageMeta,
    meta_text: Vec<u8>,
    conns: &Connections,
) -> Result<Plan> {
    let mut p = Plan {
        meta_text,
        meta,
        index_json: Vec::new(),
        docs: Vec::new(),
        jobs: Vec::new(),
        images: Vec::new(),
        chart: None,
    };
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut entries = Vec::new();
    for l in &lock.images {
        let (desc, image) = plan_image(l, conns, &mut p, &mut seen)
            .await
            .map_err(|e| e.context(format!("image {}", l.reference)))?;
        entries.push(desc);
        p.images.push(image);
    }
    if let Some(chart) = &lock.chart {
        let at = SourceRef::parse(&lock.artifact.reference)?;
        let bytes = blob_bytes(conns, &at, &chart.digest, chart.size, MAX_CHART).await?;
        p.chart = Some((chart.file.clone(), bytes));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    });
    p.index_json = serde_json::to_vec_pretty(&index).expect("json");
    Ok(p)
}

async fn plan_image(
    l: &Locked,
    conns: &Connections,
    p: &mut Plan,
    seen: &mut HashSet<Digest>,
) -> Result<(Descriptor, ImagePlan)> {
    let at = SourceRef::parse(&l.reference)?;
    let reg = conns.get(&at.host).await?;
    let root = reg.get_manifest(&at.repository, l.digest.as_str()).await?;
    let mut image = ImagePlan {
        reference: l.reference.clone(),
        from: l.from.clone(),
        digest: l.digest.clone(),
        rewritten_from: None,
        platforms: BTreeMap::new(),
        note: l.note.clone(),
        foreign_layers: Vec::new(),
    };
    let mut annotations = BTreeMap::from([(REF_NAME_ANNOTATION.to_string(), l.reference.clone())]);
    let root_bytes = match Document::parse(&root.bytes, &l.media_type)? {
        Document::Index(children) => {
            for m in &l.manifests {
                if !children.iter().any(|c| c.digest == m.digest) {
                    return Err(Error::package(format!(
                        "the lock names {} for {}, which its index does not list",
                        m.digest, m.platform
                    )));
                }
                let child = reg.get_manifest(&at.repository, m.digest.as_str()).await?;
                let bytes =
                    add_manifest(&at, &child.bytes, &m.media_type, conns, p, seen, &mut image)
                        .await?;
                image.platforms.insert(m.platform.clone(), bytes);
                push_doc(p, seen, &child.digest, child.bytes);
            }
            if l.index_rewritten {
                let kept: Vec<&Digest> = l.manifests.iter().map(|m| &m.digest).collect();
                let new = rewrite_index(&root.bytes, &kept)?;
                let digest = Digest::of(&new);
                image.rewritten_from = Some(l.digest.clone());
                image.digest = digest;
                annotations.insert(REWRITTEN_FROM.to_string(), l.digest.to_string());
                Bytes::from(new)
            } else {
                root.bytes
            }
        }
        Document::Manifest { .. } => {
            let bytes =
                add_manifest(&at, &root.bytes, &l.media_type, conns, p, seen, &mut image).await?;
            let platform = l
                .manifests
                .first()
                .map_or("artifact".to_string(), |m| m.platform.clone());
            image.platforms.insert(platform, bytes);
            root.bytes
        }
    };
    let digest = Digest::of(&root_bytes);
    let desc = Descriptor {
        media_type: l.media_type.clone(),
        digest: digest.clone(),
        size: root_bytes.len() as u64,
        annotations: Some(annotations),
        platform: None,
    };
    push_doc(p, seen, &digest, root_bytes);
    Ok((desc, image))
}

fn push_doc(p: &mut Plan, seen: &mut HashSet<Digest>, digest: &Digest, bytes: Bytes) {
    if seen.insert(digest.clone()) {
        p.docs.push((digest.clone(), bytes));
    }
}

/// Adds an image manifest's config (a document) and layers (jobs); its bytes.
async fn add_manifest(
    at: &SourceRef,
    bytes: &[u8],
    media_type: &str,
    conns: &Connections,
    p: &mut Plan,
    seen: &mut HashSet<Digest>,
    image: &mut ImagePlan,
) -> Result<u64> {
    let Document::Manifest { config, layers } = Document::parse(bytes, media_type)? else {
        return Err(Error::package(
            "an index inside an index: not supported by ferry package".to_string(),
        ));
    };
    let mut total = config.size;
    if !seen.contains(&config.digest) {
        let b = blob_bytes(conns, at, &config.digest, config.size, MAX_DOCUMENT_BYTES).await?;
        push_doc(p, seen, &config.digest, b);
    }
    for layer in layers {
        if layer.is_nondistributable() {
            image.foreign_layers.push(layer.digest.clone());
            continue;
        }
        total += layer.size;
        if seen.insert(layer.digest.clone()) {
            p.jobs.push(Job {
                host: at.host.clone(),
                repo: at.repository.clone(),
                digest: layer.digest,
                size: layer.size,
                image: image.reference.clone(),
            });
        }
    }
    Ok(total)
}

/// The index with only the `kept` children, every other field as it was. serde_json's map
/// is ordered by key, so the same input always gives the same bytes.
pub fn rewrite_index(original: &[u8], kept: &[&Digest]) -> Result<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(original)
        .map_err(|e| Error::package(format!("image index: {e}")))?;
    let list = v
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .ok_or_else(|| Error::package("image index without manifests"))?;
    list.retain(|c| {
        c.get("digest")
            .and_then(|d| d.as_str())
            .is_some_and(|d| kept.iter().any(|k| k.as_str() == d))
    });
    Ok(serde_json::to_vec_pretty(&v).expect("json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewritten_index_keeps_only_the_kept_children() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"{a}","size":1}},{{"digest":"{b}","size":1}}],"annotations":{{"x":"y"}}}}"#
        );
        let out = rewrite_index(index.as_bytes(), &[&b]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(v["manifests"][0]["digest"], b.as_str());
        assert_eq!(v["annotations"]["x"], "y");
        assert_eq!(out, rewrite_index(index.as_bytes(), &[&b]).unwrap());
    }
}
