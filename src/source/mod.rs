//! Package sources: where bytes enter ferry.
//!
//! A package is a `.tgz` (read as a stream: one sequential pass, never extracted to disk) or a
//! directory with the same layout. A source offers two operations:
//!
//! * [`Package::read_head`]: package.yaml, index.json and every manifest, image index and
//!   (small) config, held in memory. For a package in canonical order this reads only the
//!   first entries of the archive; no layer is decompressed.
//! * [`Package::stream_blobs`]: hands the bytes of the wanted blobs, one at a time, to a
//!   callback, in archive order. The callback verifies and forwards them.

mod archive;
pub mod chart;
pub mod core;
pub mod layout;
pub mod metadata;
mod nested;
pub mod pack;
mod pinned;
pub mod storage;
mod tar_guard;

use nested::NestedEntry;
pub use pinned::{PinnedFile, PositionedReader};

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::oci::Digest;
pub use layout::{Descriptor, ImageGraph, Index, SourceRef};
pub use metadata::PackageMeta;

/// Everything but the layers: enough to plan a push and to `show` a package.
#[derive(Debug, Clone)]
pub struct PackageHead {
    pub meta: PackageMeta,
    /// The entries of `images/index.json`: one per image (a manifest or an image index).
    pub images: Vec<Descriptor>,
    /// Manifests, image indexes and configs up to [`layout::MAX_DOCUMENT_BYTES`], by digest.
    pub docs: HashMap<Digest, Bytes>,
    /// Chart archives found under `charts/`.
    pub charts: Vec<String>,
    /// Warnings found while reading (file name disagreeing with package.yaml, unknown media types).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Tgz,
    Dir,
    /// A directory whose images are a registry storage tree (`registry/`), see [`storage`].
    Storage,
}

/// One package on disk.
#[derive(Debug, Clone)]
pub struct Package {
    pub path: PathBuf,
    form: Form,
    /// A `.tgz` is opened once, on first use, and every later read (verification, head,
    /// passes, charts) goes through that open file: see [`pinned`].
    file: Arc<OnceLock<PinnedFile>>,
    /// Set for a `.tgz` that is an entry of another package's archive: see [`nested`].
    within: Option<Arc<NestedEntry>>,
}

/// Bytes read from package files (archives, layout and storage-tree files) in this process:
/// how often a run read its packages (once, even when two registries are fed).
static BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn bytes_read() -> u64 {
    BYTES_READ.load(std::sync::atomic::Ordering::Relaxed)
}

fn count_read(n: usize) {
    BYTES_READ.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
}

/// A file read that counts into [`bytes_read`].
struct Counted<R>(R);

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        count_read(n);
        Ok(n)
    }
}

/// The bytes of a `.tgz` package, readable from the start as often as a reading needs.
pub trait ArchiveBytes: Send + Sync + std::fmt::Debug {
    fn open(&self) -> Result<Box<dyn Read + Send>>;
    /// Fails when the bytes may have changed since they were first read.
    fn check_unchanged(&self) -> Result<()>;
}

/// Called with (digest, size in the package, reader over exactly those bytes).
pub type BlobSink<'a> = dyn FnMut(&Digest, u64, &mut dyn Read) -> Result<()> + 'a;

impl Package {
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::package(format!("{}: cannot open: {e}", path.display())))?;
        let form = if !meta.is_dir() {
            Form::Tgz
        } else if !path.join("images/index.json").exists() && storage::is_storage_package(path) {
            Form::Storage
        } else {
            Form::Dir
        };
        Ok(Package {
            path: path.to_path_buf(),
            form,
            file: Arc::default(),
            within: None,
        })
    }

    /// The package stored as `entry` (e.g. `plugins/x.tgz`) in `outer`'s archive.
    pub fn nested(outer: &Package, entry: &str) -> Package {
        Package {
            path: outer.path.join(entry),
            form: Form::Tgz,
            file: Arc::default(),
            within: Some(Arc::new(NestedEntry {
                outer: outer.clone(),
                entry: entry.to_string(),
            })),
        }
    }

    /// Where the bytes of a `.tgz` package come from.
    pub fn bytes(&self) -> Result<&dyn ArchiveBytes> {
        match &self.within {
            Some(n) => Ok(n.as_ref()),
            None => Ok(self.pinned()?),
        }
    }

    /// The package file, opened on first use and held open from then on.
    pub fn pinned(&self) -> Result<&PinnedFile> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        let opened = PinnedFile::open(&self.path)?;
        Ok(self.file.get_or_init(|| opened))
    }

    /// Fails when the `.tgz` changed since it was first opened (a directory: never).
    pub fn check_unchanged(&self) -> Result<()> {
        let r = match (&self.within, self.form, self.file.get()) {
            (Some(n), _, _) => n.check_unchanged(),
            (None, Form::Tgz, Some(f)) => f.check_unchanged(),
            _ => Ok(()),
        };
        r.map_err(|e| e.context(format!("package {}", self.label())))
    }

    /// File name (or directory name), for messages.
    pub fn label(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    pub fn read_head(&self) -> Result<PackageHead> {
        let mut head = match self.form {
            Form::Tgz => self.bytes().and_then(archive::read_head),
            Form::Dir => read_dir_head(&self.path),
            Form::Storage => storage::read_head(&self.path),
        }
        .map_err(|e| e.context(format!("package {}", self.label())))?;
        if self.form == Form::Tgz {
            if let Some(w) = metadata::file_name_warning(&self.label(), &head.meta) {
                head.warnings.push(w);
            }
        }
        Ok(head)
    }

    /// Every chart archive of the package (`charts/*.tgz`), wherever it sits in the archive.
    pub fn list_charts(&self) -> Result<Vec<String>> {
        match self.form {
            Form::Tgz => self.bytes().and_then(archive::list_charts),
            Form::Dir | Form::Storage => Ok(list_charts(&self.path.join("charts"))),
        }
        .map_err(|e| e.context(format!("package {}", self.label())))
    }

    /// The bytes of a chart archive (`charts/<file>.tgz`).
    pub fn read_chart(&self, name: &str) -> Result<Vec<u8>> {
        match self.form {
            Form::Tgz => self
                .bytes()
                .and_then(|r| archive::read_chart(r, name, chart::MAX_CHART_BYTES)),
            Form::Dir | Form::Storage => {
                let f = std::fs::File::open(self.path.join(name))
                    .map_err(|e| Error::package(format!("{name}: {e}")))?;
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                read_limited(f, size, chart::MAX_CHART_BYTES, name)
            }
        }
        .map_err(|e| e.context(format!("package {}", self.label())))
    }

    /// Streams the wanted blobs (digest → expected size) to `sink`. Returns the digests that
    /// were not found in the package. A blob whose size in the package differs from the
    /// expected one is still handed over: the sink reports the mismatch for that blob.
    pub fn stream_blobs(
        &self,
        wanted: &HashMap<Digest, u64>,
        sink: &mut BlobSink<'_>,
    ) -> Result<HashSet<Digest>> {
        match self.form {
            Form::Tgz => self
                .bytes()
                .and_then(|r| archive::stream_blobs(r, wanted, sink)),
            Form::Dir => stream_dir_blobs(&self.path, wanted, sink),
            Form::Storage => storage::stream_blobs(&self.path, wanted, sink),
        }
        .map_err(|e| e.context(format!("package {}", self.label())))
    }
}

/// Expands the command line's paths: a `.tgz`, a package directory (has package.yaml), or a
/// directory of packages (every `*.tgz` in it, sorted by name).
pub fn find_packages(paths: &[PathBuf]) -> Result<Vec<Package>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() && !p.join("package.yaml").exists() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::package(format!("{}: cannot list: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "tgz") && f.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Error::package(format!(
                    "{}: no package.yaml and no *.tgz packages in this directory",
                    p.display()
                )));
            }
            for f in found {
                out.push(Package::open(&f)?);
            }
        } else {
            out.push(Package::open(p)?);
        }
    }
    Ok(out)
}

/// Where a blob lives inside a package.
pub fn blob_path(digest: &Digest) -> String {
    format!("images/blobs/sha256/{}", digest.hex())
}

/// Reads a file no larger than `limit`, with a clear error otherwise.
fn read_limited(mut r: impl Read, size: u64, limit: u64, what: &str) -> Result<Vec<u8>> {
    if size > limit {
        return Err(Error::package(format!(
            "{what} is {size} bytes, over the {limit}-byte limit for metadata"
        )));
    }
    let mut buf = Vec::with_capacity(size as usize);
    r.by_ref()
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::package(format!("{what}: read failed: {e}")))?;
    if buf.len() as u64 > limit {
        return Err(Error::package(format!(
            "{what} is over the {limit}-byte limit for metadata"
        )));
    }
    Ok(buf)
}

/// Stands for "a manifest or index, type taken from its content" in [`DocWanted`].
const SNIFF_MEDIA_TYPE: &str = "?";

/// Collects manifests and small configs: which digests are documents we must hold in memory.
/// Fed with each new document, it answers which further digests become wanted.
#[derive(Default)]
struct DocWanted {
    want: HashMap<Digest, (String, u64)>,
}

impl DocWanted {
    fn add_index(&mut self, index: &Index) {
        for d in &index.manifests {
            self.want
                .entry(d.digest.clone())
                .or_insert((d.media_type.clone(), d.size));
        }
    }

    /// Registers what a newly read document points at (children manifests, small configs).
    fn add_document(&mut self, media_type: &str, bytes: &[u8]) {
        let sniffed;
        let media_type = if media_type == SNIFF_MEDIA_TYPE {
            sniffed = crate::oci::media::sniff_media_type(bytes);
            sniffed.as_str()
        } else {
            media_type
        };
        match layout::Document::parse(bytes, media_type) {
            Ok(layout::Document::Index(children)) => {
                for c in children {
                    self.want
                        .entry(c.digest.clone())
                        .or_insert((c.media_type, c.size));
                }
            }
            Ok(layout::Document::Manifest { config, .. }) => {
                if config.size <= layout::MAX_DOCUMENT_BYTES {
                    self.want
                        .entry(config.digest.clone())
                        .or_insert((String::new(), config.size));
                }
            }
            Err(_) => {} // reported when the image graph is resolved
        }
    }

    /// A manifest or index whose media type is known only from its content (a storage
    /// tree's tag): read as a document, typed when it arrives.
    fn add_root(&mut self, d: &Digest) {
        self.want
            .entry(d.clone())
            .or_insert((SNIFF_MEDIA_TYPE.to_string(), 0));
    }

    fn is_manifest(&self, d: &Digest) -> Option<&str> {
        self.want
            .get(d)
            .map(|(m, _)| m.as_str())
            .filter(|m| !m.is_empty())
    }

    fn missing<'a>(&'a self, docs: &'a HashMap<Digest, Bytes>) -> impl Iterator<Item = &'a Digest> {
        self.want.keys().filter(move |d| !docs.contains_key(*d))
    }
}

/// A regular file (never through a symlink) of at most `limit` bytes.
fn read_file_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| Error::package(format!("{what}: cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(Error::package(format!("{what}: not a regular file")));
    }
    let f = std::fs::File::open(path).map_err(|e| Error::package(format!("{what}: {e}")))?;
    read_limited(Counted(f), meta.len(), limit, what)
}

fn read_dir_head(root: &Path) -> Result<PackageHead> {
    let file = |rel: &str, limit: u64| read_file_limited(&root.join(rel), limit, rel);
    let meta = PackageMeta::parse(&file("package.yaml", metadata::MAX_METADATA_BYTES)?)?;
    let index = Index::parse(
        &file("images/index.json", layout::MAX_DOCUMENT_BYTES)?,
        "images/index.json",
    )?;
    let docs = collect_docs(&index, |d| {
        file(&blob_path(d), layout::MAX_DOCUMENT_BYTES).ok()
    })?;
    let charts = list_charts(&root.join("charts"));
    Ok(PackageHead {
        meta,
        images: index.manifests,
        docs,
        charts,
        warnings: Vec::new(),
    })
}

/// Manifests, indexes and configs of one package held in memory, in total. Real packages
/// hold a few MB (about 25 kB per multi-arch image); past this the package is refused.
pub const MAX_DOCS_TOTAL_BYTES: u64 = 64 << 20;

/// Counts the documents held for one package against [`MAX_DOCS_TOTAL_BYTES`].
#[derive(Default)]
pub(crate) struct DocBudget(u64);

impl DocBudget {
    pub fn take(&mut self, bytes: u64) -> Result<()> {
        self.0 += bytes;
        if self.0 > MAX_DOCS_TOTAL_BYTES {
            return Err(Error::package(format!(
                "its manifests and configs exceed {} MiB in total: refusing to hold more (a hostile or broken package)",
                MAX_DOCS_TOTAL_BYTES >> 20
            )));
        }
        Ok(())
    }
}

/// Reads every manifest, image index and small config reachable from `index` through
/// `read` (random access). Unreadable documents are left out: they are reported per image
/// when its graph is resolved.
pub(crate) fn collect_docs(
    index: &Index,
    read: impl Fn(&Digest) -> Option<Vec<u8>>,
) -> Result<HashMap<Digest, Bytes>> {
    let mut wanted = DocWanted::default();
    wanted.add_index(index);
    let mut docs = HashMap::new();
    let mut budget = DocBudget::default();
    loop {
        let next: Vec<Digest> = wanted.missing(&docs).cloned().collect();
        let mut progressed = false;
        for d in next {
            let Some(bytes) = read(&d) else { continue };
            budget.take(bytes.len() as u64)?;
            if let Some(m) = wanted.is_manifest(&d).map(str::to_string) {
                wanted.add_document(&m, &bytes);
            }
            docs.insert(d, Bytes::from(bytes));
            progressed = true;
        }
        if !progressed {
            return Ok(docs);
        }
    }
}

fn list_charts(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
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

fn stream_dir_blobs(
    root: &Path,
    wanted: &HashMap<Digest, u64>,
    sink: &mut BlobSink<'_>,
) -> Result<HashSet<Digest>> {
    stream_files(wanted, sink, |d| root.join(blob_path(d)))
}

/// Streams each wanted blob from its own file (`path_of`), in digest order; the ones with no
/// regular file are returned as missing.
fn stream_files(
    wanted: &HashMap<Digest, u64>,
    sink: &mut BlobSink<'_>,
    path_of: impl Fn(&Digest) -> PathBuf,
) -> Result<HashSet<Digest>> {
    let mut missing = HashSet::new();
    let mut order: Vec<&Digest> = wanted.keys().collect();
    order.sort();
    for d in order {
        let p = path_of(d);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => {
                let f = std::fs::File::open(&p)
                    .map_err(|e| Error::package(format!("{}: {e}", p.display())))?;
                let mut r = std::io::BufReader::with_capacity(1 << 20, Counted(f));
                sink(d, m.len(), &mut r)?;
            }
            _ => {
                missing.insert(d.clone());
            }
        }
    }
    Ok(missing)
}
