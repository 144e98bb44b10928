//! An OCI archive: a tar (plain, gzip'd or zstd) of an OCI image layout — `oci-layout`,
//! `index.json`, `blobs/sha256/*` — as `skopeo copy ... oci-archive:`, `podman save
//! --format oci-archive`, `hauler store save` and the `docker save` of Docker 25 and later
//! write it. Images are named by their `index.json` annotations (see [`super::image_names`]).
//!
//! Head: one pass that holds small blobs until `index.json` says which are documents; the
//! writers that list the directory in order (skopeo) put `index.json` after `blobs/`, so
//! that pass reads to the end, but it decompresses layers only to skip them. It reads to the
//! end also when `index.json` comes first and every document is found early: a second
//! `index.json` further on (which `tar -x`, and so other tools, would take instead) must be
//! seen and refused before anything is pushed. Blobs: one more pass, each wanted blob handed
//! over as it passes by.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::foreign::{named, stand_in_meta, ForeignFormat};
use super::image_tar::{self, Member};
use super::layout::{ImageGraph, Index, MAX_DOCUMENT_BYTES};
use super::{read_limited, ArchiveBytes, BlobSink, DocBudget, DocWanted, Flow, PackageHead};
use super::{Source, Wanted};
use crate::error::{Error, Result};
use crate::oci::Digest;

/// Small blobs held while `index.json` is not read yet; past this, another pass reads the
/// documents still missing.
const MAX_HELD_BYTES: u64 = 64 << 20;
/// What one held blob costs besides its bytes (its digest, the map's slot): thousands of
/// empty blobs cost that much memory, not nothing.
const HELD_OVERHEAD: u64 = 256;
/// Passes over the archive spent looking for documents.
const MAX_HEAD_PASSES: usize = 4;

#[derive(Debug)]
pub struct OciArchiveSource {
    label: String,
    bytes: Box<dyn ArchiveBytes>,
}

impl OciArchiveSource {
    pub fn new(label: String, bytes: Box<dyn ArchiveBytes>) -> Self {
        OciArchiveSource { label, bytes }
    }
}

/// The digest of a `blobs/sha256/<hex>` path.
fn blob_digest(path: &str) -> Result<Option<Digest>> {
    match path.strip_prefix("blobs/sha256/") {
        Some(hex) if !hex.contains('/') => Digest::from_hex(hex).map(Some).map_err(|e| {
            Error::package(format!(
                "entry {path:?}: blob name is not a valid digest ({e})"
            ))
        }),
        _ => Ok(None),
    }
}

/// `tar -x` (and so anything reading the layout it leaves) keeps the last `index.json` of
/// two, ferry would read the first: refused, so what is pushed is what others see.
fn second_index(seen: usize) -> Result<()> {
    if seen > 1 {
        return Err(Error::package(
            "entry \"index.json\" appears twice: refusing an archive that other tools would read \
             otherwise (an OCI layout has one); write the archive again",
        ));
    }
    Ok(())
}

fn read_head(bytes: &dyn ArchiveBytes) -> Result<(Index, HashMap<Digest, Bytes>)> {
    let mut index: Option<Index> = None;
    let mut wanted = DocWanted::default();
    let mut docs: HashMap<Digest, Bytes> = HashMap::new();
    let mut budget = DocBudget::default();
    for _pass in 0..MAX_HEAD_PASSES {
        let mut held: HashMap<Digest, Bytes> = HashMap::new();
        let mut held_bytes = 0u64;
        let mut dropped = false;
        let mut indexes_seen = 0;
        image_tar::walk(bytes, &mut |m, r| {
            let Member::File { path, size } = m else {
                return Ok(Flow::More);
            };
            let size = *size;
            if path == "index.json" {
                indexes_seen += 1;
                second_index(indexes_seen)?;
            }
            if index.is_some() && wanted.missing(&docs).next().is_none() {
                // every document is in: the rest is only looked over for a second index.json
                return Ok(Flow::More);
            }
            if path == "index.json" && index.is_none() {
                let text = read_limited(r, size, MAX_DOCUMENT_BYTES, "index.json")?;
                let parsed = Index::parse(&text, "index.json")?;
                wanted.add_index(&parsed);
                index = Some(parsed);
            } else if let Some(d) = blob_digest(path)? {
                let is_doc = wanted.want.contains_key(&d);
                if is_doc && wanted.is_manifest(&d).is_some() && size > MAX_DOCUMENT_BYTES {
                    return Err(Error::package(format!(
                        "{path}: manifest is {size} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit"
                    )));
                }
                if size <= MAX_DOCUMENT_BYTES && !docs.contains_key(&d) {
                    if is_doc {
                        budget.take(size)?;
                        let b = read_limited(r, size, MAX_DOCUMENT_BYTES, path)?;
                        docs.insert(d, Bytes::from(b));
                    } else if held_bytes + size + HELD_OVERHEAD <= MAX_HELD_BYTES {
                        held.insert(d, Bytes::from(read_limited(r, size, size, path)?));
                        held_bytes += size + HELD_OVERHEAD;
                    } else {
                        dropped = true;
                    }
                }
            }
            adopt(&mut wanted, &mut docs, &mut held, &mut budget)?;
            Ok(Flow::More)
        })?;
        adopt(&mut wanted, &mut docs, &mut held, &mut budget)?;
        if index.is_none() {
            return Err(Error::package(
                "index.json is missing: not an OCI image layout (an OCI archive holds \
                 oci-layout, index.json and blobs/)",
            ));
        }
        if wanted.missing(&docs).next().is_none() || !dropped {
            break;
        }
    }
    Ok((index.expect("checked above"), docs))
}

/// Moves held blobs that became wanted documents into `docs` (each manifest adopted can
/// make further held blobs wanted, hence the loop). Documents found in `docs` that were not
/// yet looked at are registered too.
fn adopt(
    wanted: &mut DocWanted,
    docs: &mut HashMap<Digest, Bytes>,
    held: &mut HashMap<Digest, Bytes>,
    budget: &mut DocBudget,
) -> Result<()> {
    let mut looked: HashSet<Digest> = HashSet::new();
    loop {
        let mut progressed = false;
        let ready: Vec<Digest> = held
            .keys()
            .filter(|d| wanted.want.contains_key(*d))
            .cloned()
            .collect();
        for d in ready {
            let b = held.remove(&d).expect("listed above");
            budget.take(b.len() as u64)?;
            docs.insert(d, b);
            progressed = true;
        }
        let fresh: Vec<Digest> = docs
            .keys()
            .filter(|d| !looked.contains(*d))
            .cloned()
            .collect();
        for d in fresh {
            if let Some(m) = wanted.is_manifest(&d).map(str::to_string) {
                wanted.add_document(&m, &docs[&d]);
            }
            looked.insert(d);
            progressed = true;
        }
        if !progressed {
            return Ok(());
        }
    }
}

impl Source for OciArchiveSource {
    fn read_head(&self) -> Result<PackageHead> {
        let (index, docs) = read_head(self.bytes.as_ref())?;
        // Each entry is an image of its own (its graph resolved, held, pushed): what its
        // manifests weigh counts once per entry, else one index.json could list one big
        // manifest thousands of times (2000 entries of a 3000-layer manifest, a 1 MB file,
        // held 1.6 GB). An entry that does not resolve weighs nothing: it is reported broken.
        let mut weights: HashMap<Digest, u64> = HashMap::new();
        let mut budget = DocBudget::default();
        for (i, d) in index.manifests.iter().enumerate() {
            let w = *weights.entry(d.digest.clone()).or_insert_with(|| {
                ImageGraph::resolve(d, &docs)
                    .map(|g| g.manifest_bytes())
                    .unwrap_or(0)
            });
            budget
                .take(w)
                .map_err(|e| e.context(format!("index.json entry {} ({})", i + 1, d.digest)))?;
        }
        let mut warnings = Vec::new();
        let images = index
            .manifests
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let name = super::image_names::of_annotations(d.annotations.as_ref());
                named(
                    d,
                    name,
                    &format!("index.json entry {}", i + 1),
                    &mut warnings,
                )
            })
            .collect();
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
        let mut indexes_seen = 0;
        image_tar::walk(self.bytes.as_ref(), &mut |m, r| {
            let Member::File { path, size } = m else {
                return Ok(Flow::More);
            };
            if path == "index.json" {
                indexes_seen += 1;
                second_index(indexes_seen)?;
            }
            match blob_digest(path)? {
                Some(d) if remaining.remove(&d) => {
                    let flow = sink(&d, *size, r)?;
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
            "{name}: an OCI archive has no charts"
        )))
    }

    fn check_unchanged(&self) -> Result<()> {
        self.bytes.check_unchanged()
    }

    fn archive(&self) -> Option<&dyn ArchiveBytes> {
        Some(self.bytes.as_ref())
    }

    fn foreign_format(&self) -> Option<ForeignFormat> {
        Some(ForeignFormat::OciArchive)
    }
}
