//! A Distribution registry's storage tree, read straight from disk as a package source, with
//! no registry process: what core packages carry in `registry/` (a copy of the registry
//! that built them).
//!
//! Layout (`registry/docker/registry/v2/`, the filesystem driver's):
//! * `repositories/<repo>/_manifests/tags/<tag>/current/link`: `sha256:<hex>` of the tag's
//!   manifest or index; `<repo>` may have several path components;
//! * `blobs/sha256/<xx>/<hex>/data`: every blob, manifests and configs included.
//!
//! Each tag becomes an image named `localhost/<repo>:<tag>` (the host part of a source name
//! is never used); its manifest's media type comes from the manifest itself. Everything after
//! that (graph, docs, verification while streaming) is the same as for an OCI layout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::layout::{self, Descriptor, Index};
use super::Wanted;
use super::{
    collect_docs, metadata, read_file_limited, stream_files, BlobSink, PackageHead, PackageMeta,
};
use crate::error::{Error, Result};
use crate::oci::Digest;

/// Where the tree sits inside a package directory.
pub const TREE: &str = "registry/docker/registry/v2";
/// Tags and repositories more than this deep are not looked for (a loop guard).
const MAX_REPO_DEPTH: usize = 16;

pub fn is_storage_package(dir: &Path) -> bool {
    dir.join(TREE).join("repositories").is_dir()
}

fn blob_file(tree: &Path, d: &Digest) -> PathBuf {
    let hex = d.hex();
    tree.join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

pub(super) fn read_head(dir: &Path) -> Result<PackageHead> {
    let meta = PackageMeta::parse(&read_file_limited(
        &dir.join("package.yaml"),
        metadata::MAX_METADATA_BYTES,
        "package.yaml",
    )?)?;
    let tree = dir.join(TREE);
    let mut tags = BTreeMap::new();
    find_tags(&tree.join("repositories"), "", 0, &mut tags)?;
    let mut manifests = Vec::new();
    for ((repo, tag), digest) in tags {
        let what = format!("{TREE}/repositories/{repo}/_manifests/tags/{tag}");
        let path = blob_file(&tree, &digest);
        let bytes = read_file_limited(&path, layout::MAX_DOCUMENT_BYTES, &what)?;
        manifests.push(descriptor(&repo, &tag, digest, &bytes));
    }
    if manifests.is_empty() {
        return Err(Error::package(format!(
            "{TREE}: no tagged image in the registry storage tree"
        )));
    }
    let index = Index {
        schema_version: 2,
        media_type: None,
        manifests,
    };
    let docs = collect_docs(&index, |d| {
        read_file_limited(&blob_file(&tree, d), layout::MAX_DOCUMENT_BYTES, d.as_str()).ok()
    })?;
    Ok(PackageHead {
        meta,
        images: index.manifests,
        docs,
        charts: Vec::new(),
        extra_images: Vec::new(),
        warnings: Vec::new(),
    })
}

/// The index entry of one tag: type and size from the manifest's bytes.
fn descriptor(repo: &str, tag: &str, digest: Digest, manifest: &[u8]) -> Descriptor {
    let mut annotations = BTreeMap::new();
    annotations.insert(
        crate::oci::media::REF_NAME_ANNOTATION.to_string(),
        format!("localhost/{repo}:{tag}"),
    );
    Descriptor {
        media_type: crate::oci::media::sniff_media_type(manifest),
        digest,
        size: manifest.len() as u64,
        annotations: Some(annotations),
        platform: None,
    }
}

/// The index of a storage tree read from an archive: its tags (`links`) and the manifests
/// read by then (`docs`). A tag whose manifest is missing gets an empty one: its image then
/// fails, naming the missing blob, when its graph is resolved.
pub(super) fn index_of(
    links: &BTreeMap<(String, String), Digest>,
    docs: &HashMap<Digest, bytes::Bytes>,
) -> Index {
    let manifests = links
        .iter()
        .map(|((repo, tag), d)| {
            let bytes = docs.get(d).map(|b| b.as_ref()).unwrap_or_default();
            descriptor(repo, tag, d.clone(), bytes)
        })
        .collect();
    Index {
        schema_version: 2,
        media_type: None,
        manifests,
    }
}

/// Collects `(repository, tag) → digest` under `dir`, the `repositories/` tree.
fn find_tags(
    dir: &Path,
    repo: &str,
    depth: usize,
    out: &mut BTreeMap<(String, String), Digest>,
) -> Result<()> {
    if depth > MAX_REPO_DEPTH {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::package(format!("{}: cannot list: {e}", dir.display())))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        if name == "_manifests" {
            let tags = e.path().join("tags");
            for t in std::fs::read_dir(&tags).into_iter().flatten().flatten() {
                let tag = t.file_name().to_string_lossy().into_owned();
                let link = t.path().join("current/link");
                let what = format!("{TREE}/repositories/{repo}/_manifests/tags/{tag}/current/link");
                let text = read_file_limited(&link, 1024, &what)?;
                let digest = Digest::parse(String::from_utf8_lossy(&text).trim())
                    .map_err(|e| Error::package(format!("{what}: {e}")))?;
                out.insert((repo.to_string(), tag), digest);
            }
        } else if !name.starts_with('_') {
            let sub = if repo.is_empty() {
                name
            } else {
                format!("{repo}/{name}")
            };
            find_tags(&e.path(), &sub, depth + 1, out)?;
        }
    }
    Ok(())
}

pub(super) fn stream_blobs(
    dir: &Path,
    wanted: &Wanted,
    sink: &mut BlobSink<'_>,
) -> Result<HashSet<Digest>> {
    let tree = dir.join(TREE);
    stream_files(wanted, sink, |d| blob_file(&tree, d))
}

/// A package directory whose images are a registry storage tree (`registry/docker/...`).
#[derive(Debug)]
pub struct StorageSource {
    root: PathBuf,
}

impl StorageSource {
    pub fn new(root: &Path) -> Self {
        StorageSource {
            root: root.to_path_buf(),
        }
    }
}

impl super::Source for StorageSource {
    fn read_head(&self) -> Result<PackageHead> {
        read_head(&self.root)
    }

    fn stream_blobs(&self, wanted: &Wanted, sink: &mut BlobSink<'_>) -> Result<HashSet<Digest>> {
        stream_blobs(&self.root, wanted, sink)
    }

    fn list_charts(&self) -> Result<Vec<String>> {
        Ok(super::dir::list_charts(&self.root))
    }

    fn read_chart(&self, name: &str) -> Result<Vec<u8>> {
        super::dir::read_chart(&self.root, name)
    }
}
