//! Package sources: where bytes enter ferry.
//!
//! Every kind of package is a [`Source`]: a `.tgz` ([`archive::TgzSource`], read as a stream:
//! one sequential pass, never extracted to disk; the file itself, or an entry of another
//! package's archive, see [`nested`]), an extracted package directory ([`dir::DirSource`]), or
//! a directory whose images are a registry storage tree ([`storage::StorageSource`]), or
//! an archive another tool wrote, pushed without a package.yaml: a Docker archive
//! ([`docker_archive::DockerArchiveSource`]) or an OCI archive
//! ([`oci_archive::OciArchiveSource`]); [`image_tar::FileKind`] tells which a file is.
//! [`Package`] is one of them with its name, and adds the package's name to every error.
//!
//! Contract of a source:
//!
//! * `read_head`: package.yaml, index.json and every manifest, image index and (small)
//!   config, held in memory. For a package in canonical order this reads only the first
//!   entries of the archive; no layer is decompressed. [`PackageHead::resolve_images`] then
//!   names each image (`ref.name`) and resolves its graph.
//! * `stream_blobs`: hands the bytes of the wanted blobs, one at a time, to a callback, in
//!   the source's own order. The callback verifies and forwards them; the source does not
//!   check digests (it hands over exactly the bytes stored under each digest).
//! * `list_charts` / `read_chart`: the chart archives under `charts/`.
//! * `check_unchanged`: whether the bytes may have changed since first read (a `.tgz` is
//!   pinned: opened once, see [`pinned`]).
//!
//! Not here: what a registry has, planning, verification, uploads.

pub mod archive;
pub mod chart;
pub mod core;
pub mod dir;
pub mod docker_archive;
pub mod foreign;
pub mod image_names;
pub mod image_tar;
pub mod layout;
pub mod metadata;
pub mod nested;
pub mod oci_archive;
pub mod pack;
pub mod pinned;
pub mod storage;
mod tar_guard;

use nested::NestedEntry;
pub use pinned::{PinnedFile, PositionedReader};

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::oci::Digest;
pub use layout::{Descriptor, ImageGraph, Index, SourceRef};
pub use metadata::{PackageKind, PackageMeta};

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
    /// Images a source made itself, already named and resolved (a chart package's charts as
    /// Helm OCI artifacts, see [`chart::ChartImages`]); pushed after those of index.json.
    pub extra_images: Vec<Image>,
    /// Warnings found while reading (file name disagreeing with package.yaml, unknown media types).
    pub warnings: Vec<String>,
}

/// One image of a package, named by its `ref.name`: where it goes (the same repository and
/// tag on every destination) and everything it is made of.
#[derive(Debug, Clone)]
pub struct Image {
    /// The name in the package (`ref.name`).
    pub source: String,
    pub repo: String,
    /// Tag, or digest for an image pinned by digest.
    pub reference: String,
    pub graph: ImageGraph,
}

/// An entry of index.json that cannot be pushed (no or a bad name, a broken graph).
#[derive(Debug, Clone)]
pub struct BrokenImage {
    /// Its name, or empty when it has none.
    pub source: String,
    pub digest: Digest,
    pub error: Error,
}

impl PackageHead {
    /// Names and resolves every entry of index.json.
    ///
    /// Every resolved image holds its own graph, so what its manifests weigh counts once per
    /// entry against [`MAX_DOCS_TOTAL_BYTES`]: else one index.json could list one big
    /// manifest thousands of times (a small file, gigabytes held). Past the bound the
    /// remaining entries are not resolved and every image is reported broken.
    pub fn resolve_images(&self) -> (Vec<Image>, Vec<BrokenImage>) {
        let mut ok = Vec::new();
        let mut broken = Vec::new();
        let mut budget = DocBudget::default();
        let mut over = None;
        for (i, desc) in self.images.iter().enumerate() {
            let resolved = match &over {
                Some(e) => Err(Error::package(format!("not resolved: {e}"))),
                None => self.resolve_image(desc).and_then(|img| {
                    budget
                        .take(img.graph.manifest_bytes())
                        .map(|()| img)
                        .map_err(|e| {
                            let e =
                                e.context(format!("index.json entry {} ({})", i + 1, desc.digest));
                            over = Some(e.to_string());
                            e
                        })
                }),
            };
            match resolved {
                Ok(img) => ok.push(img),
                Err(error) => broken.push(BrokenImage {
                    source: desc.ref_name().unwrap_or("").to_string(),
                    digest: desc.digest.clone(),
                    error,
                }),
            }
        }
        if let Some(e) = over {
            // a package over the bound is refused whole: no image of it is pushed
            broken.splice(
                0..0,
                ok.drain(..).map(|img: Image| BrokenImage {
                    source: img.source,
                    digest: img.graph.root.digest,
                    error: Error::package(format!("not pushed: {e}")),
                }),
            );
            return (ok, broken);
        }
        ok.extend(self.extra_images.iter().cloned());
        (ok, broken)
    }

    fn resolve_image(&self, desc: &Descriptor) -> Result<Image> {
        let name = desc.ref_name().ok_or_else(|| {
            Error::package(format!(
                "index.json entry {} has no {} annotation",
                desc.digest,
                crate::oci::media::REF_NAME_ANNOTATION
            ))
        })?;
        let sref = SourceRef::parse(name)?;
        Ok(Image {
            source: name.to_string(),
            repo: sref.repository,
            reference: sref.reference,
            graph: ImageGraph::resolve(desc, &self.docs)?,
        })
    }
}

/// The blobs wanted from a package (digest → expected size), in the order a source that can
/// read them in any order (a directory, a storage tree) hands them out: the order the engine
/// asks the registry about them, so the stream meets blobs whose fate is already known. An
/// archive goes in its own order.
pub type Wanted = indexmap::IndexMap<Digest, u64>;

/// What every kind of package offers (see the module documentation for the contract).
pub trait Source: Send + Sync + std::fmt::Debug {
    fn read_head(&self) -> Result<PackageHead>;
    /// Streams the wanted blobs (digest → expected size) to `sink`. Returns the digests that
    /// were not found. A blob whose size in the package differs from the expected one is still
    /// handed over: the sink reports the mismatch for that blob.
    fn stream_blobs(&self, wanted: &Wanted, sink: &mut BlobSink<'_>) -> Result<HashSet<Digest>>;
    /// Every chart archive of the package (`charts/*.tgz`).
    fn list_charts(&self) -> Result<Vec<String>>;
    /// The bytes of a chart archive (`charts/<file>.tgz`).
    fn read_chart(&self, name: &str) -> Result<Vec<u8>>;
    /// Fails when the bytes may have changed since they were first read.
    fn check_unchanged(&self) -> Result<()> {
        Ok(())
    }
    /// The archive, for sources that are one (`verify` reads it whole; a nested package
    /// reads its entry from it).
    fn archive(&self) -> Option<&dyn ArchiveBytes> {
        None
    }
    /// For an archive another tool wrote (no package.yaml, a stand-in identity): which kind.
    fn foreign_format(&self) -> Option<foreign::ForeignFormat> {
        None
    }
}

/// One package: a [`Source`] and the path it was named by.
#[derive(Debug, Clone)]
pub struct Package {
    pub path: PathBuf,
    source: Arc<dyn Source>,
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
    /// The same bytes, able to skip ahead, when they are a file of their own: an
    /// uncompressed image archive then skips the entries it does not want instead of reading
    /// them (see [`image_tar`]).
    fn open_seekable(&self) -> Result<Option<PositionedReader>> {
        Ok(None)
    }
    /// Fails when the bytes may have changed since they were first read.
    fn check_unchanged(&self) -> Result<()>;
}

/// Called with (digest, size in the package, reader over exactly those bytes); says whether
/// more blobs are wanted.
pub type BlobSink<'a> = dyn FnMut(&Digest, u64, &mut dyn Read) -> Result<Flow> + 'a;

/// After a blob: go on, or stop reading the package (nothing further is wanted: the blobs
/// not reached yet turned out to be in the registry already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    More,
    Enough,
}

impl Package {
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::package(format!("{}: cannot open: {e}", path.display())))?;
        let source: Arc<dyn Source> = if !meta.is_dir() {
            open_file(path)
        } else if !path.join("images/index.json").exists() && storage::is_storage_package(path) {
            Arc::new(storage::StorageSource::new(path))
        } else {
            Arc::new(dir::DirSource::new(path))
        };
        Ok(Package {
            path: path.to_path_buf(),
            source,
        })
    }

    /// For an archive another tool wrote: its format (see [`Source::foreign_format`]).
    pub fn foreign_format(&self) -> Option<foreign::ForeignFormat> {
        self.source.foreign_format()
    }

    /// The package stored as `entry` (e.g. `plugins/x.tgz`) in `outer`'s archive.
    pub fn nested(outer: &Package, entry: &str) -> Package {
        let path = outer.path.join(entry);
        let bytes = NestedEntry {
            outer: outer.clone(),
            entry: entry.to_string(),
        };
        Package {
            source: Arc::new(archive::TgzSource::new(label_of(&path), Box::new(bytes))),
            path,
        }
    }

    /// The same package with its charts (if it is a chart package) as images in repository
    /// prefix `repo`: see [`chart::ChartImages`].
    pub fn with_charts(&self, repo: &str) -> Package {
        Package {
            path: self.path.clone(),
            source: Arc::new(chart::ChartImages::new(self.source.clone(), repo)),
        }
    }

    /// The package's archive (a `.tgz`, on disk or inside another archive).
    pub fn archive(&self) -> Result<&dyn ArchiveBytes> {
        self.source
            .archive()
            .ok_or_else(|| Error::package(format!("{}: a directory, not an archive", self.label())))
    }

    /// Fails when the `.tgz` changed since it was first opened (a directory: never).
    pub fn check_unchanged(&self) -> Result<()> {
        self.in_context(self.source.check_unchanged())
    }

    /// File name (or directory name), for messages.
    pub fn label(&self) -> String {
        label_of(&self.path)
    }

    pub fn read_head(&self) -> Result<PackageHead> {
        self.in_context(self.source.read_head())
    }

    pub fn list_charts(&self) -> Result<Vec<String>> {
        self.in_context(self.source.list_charts())
    }

    pub fn read_chart(&self, name: &str) -> Result<Vec<u8>> {
        self.in_context(self.source.read_chart(name))
    }

    /// See [`Source::stream_blobs`].
    pub fn stream_blobs(
        &self,
        wanted: &Wanted,
        sink: &mut BlobSink<'_>,
    ) -> Result<HashSet<Digest>> {
        self.in_context(self.source.stream_blobs(wanted, sink))
    }

    fn in_context<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| e.context(format!("package {}", self.label())))
    }
}

/// A file: a `.tgz` package, or a Docker or OCI archive (the file's first entry decides,
/// see [`image_tar::FileKind`]). Every reading goes through the one descriptor opened here.
fn open_file(path: &Path) -> Arc<dyn Source> {
    let bytes = pinned::LazyPinned::new(path);
    let label = label_of(path);
    match image_tar::FileKind::of(&bytes) {
        image_tar::FileKind::Package => Arc::new(archive::TgzSource::new(label, Box::new(bytes))),
        image_tar::FileKind::DockerArchive => Arc::new(docker_archive::DockerArchiveSource::new(
            label,
            Box::new(bytes),
        )),
        image_tar::FileKind::OciArchive => {
            Arc::new(oci_archive::OciArchiveSource::new(label, Box::new(bytes)))
        }
    }
}

fn label_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
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
pub(crate) fn read_limited(mut r: impl Read, size: u64, limit: u64, what: &str) -> Result<Vec<u8>> {
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
pub(crate) fn read_file_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| Error::package(format!("{what}: cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(Error::package(format!("{what}: not a regular file")));
    }
    let f = std::fs::File::open(path).map_err(|e| Error::package(format!("{what}: {e}")))?;
    read_limited(Counted(f), meta.len(), limit, what)
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

/// Streams each wanted blob from its own file (`path_of`), in digest order; the ones with no
/// regular file are returned as missing.
pub(crate) fn stream_files(
    wanted: &Wanted,
    sink: &mut BlobSink<'_>,
    path_of: impl Fn(&Digest) -> PathBuf,
) -> Result<HashSet<Digest>> {
    let mut missing = HashSet::new();
    for d in wanted.keys() {
        let p = path_of(d);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => {
                let f = std::fs::File::open(&p)
                    .map_err(|e| Error::package(format!("{}: {e}", p.display())))?;
                let mut r = std::io::BufReader::with_capacity(1 << 20, Counted(f));
                if sink(d, m.len(), &mut r)? == Flow::Enough {
                    break;
                }
            }
            _ => {
                missing.insert(d.clone());
            }
        }
    }
    Ok(missing)
}
