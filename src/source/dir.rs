//! An extracted package directory: the same layout as a `.tgz` (`package.yaml`,
//! `images/index.json`, `images/blobs/sha256/<hex>`, `charts/*.tgz`), read file by file.
//! Files are opened without following symbolic links where it matters (documents, blobs).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::layout::{self, Index};
use super::Wanted;
use super::{
    blob_path, chart, collect_docs, metadata, read_file_limited, read_limited, stream_files,
    BlobSink, PackageHead, PackageMeta, Source,
};
use crate::error::{Error, Result};
use crate::oci::Digest;

#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: &Path) -> Self {
        DirSource {
            root: root.to_path_buf(),
        }
    }
}

impl Source for DirSource {
    fn read_head(&self) -> Result<PackageHead> {
        let root = &self.root;
        let file = |rel: &str, limit: u64| read_file_limited(&root.join(rel), limit, rel);
        let meta = PackageMeta::parse(&file("package.yaml", metadata::MAX_METADATA_BYTES)?)?;
        let index = Index::parse(
            &file("images/index.json", layout::MAX_DOCUMENT_BYTES)?,
            "images/index.json",
        )?;
        let docs = collect_docs(&index, |d| {
            file(&blob_path(d), layout::MAX_DOCUMENT_BYTES).ok()
        })?;
        Ok(PackageHead {
            meta,
            images: index.manifests,
            docs,
            charts: list_charts(root),
            extra_images: Vec::new(),
            warnings: Vec::new(),
        })
    }

    fn stream_blobs(&self, wanted: &Wanted, sink: &mut BlobSink<'_>) -> Result<HashSet<Digest>> {
        stream_files(wanted, sink, |d| self.root.join(blob_path(d)))
    }

    fn list_charts(&self) -> Result<Vec<String>> {
        Ok(list_charts(&self.root))
    }

    fn read_chart(&self, name: &str) -> Result<Vec<u8>> {
        read_chart(&self.root, name)
    }
}

/// `charts/*.tgz` of a package directory, sorted.
pub(crate) fn list_charts(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("charts"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| format!("charts/{}", e.file_name().to_string_lossy()))
                .filter(|n| n.ends_with(".tgz"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// One chart archive of a package directory, up to [`chart::MAX_CHART_BYTES`].
pub(crate) fn read_chart(root: &Path, name: &str) -> Result<Vec<u8>> {
    let f =
        std::fs::File::open(root.join(name)).map_err(|e| Error::package(format!("{name}: {e}")))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    read_limited(f, size, chart::MAX_CHART_BYTES, name)
}
