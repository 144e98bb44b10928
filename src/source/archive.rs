//! Reading a `.tgz` package as one sequential stream: gzip → tar → entries. Nothing is
//! extracted to disk. Every entry is checked before it is trusted (path, type, size).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufReader, Read};
use std::path::Component;

use bytes::Bytes;
use flate2::bufread::MultiGzDecoder;

use super::layout::{Index, MAX_DOCUMENT_BYTES};
use super::metadata::{PackageMeta, MAX_METADATA_BYTES};
use super::tar_guard::{Counting, GuardedTar};
use super::Wanted;
use super::{read_limited, BlobSink, DocBudget, DocWanted, Flow, PackageHead};
use super::{storage, ArchiveBytes};
use crate::error::{Error, Result};
use crate::oci::Digest;

/// Unknown small entries held while looking for manifests in a package that is not in
/// canonical order; past this, further passes over the archive are made instead.
const MAX_HELD_BYTES: u64 = 64 << 20;
/// How many passes over the archive may be spent looking for nested manifests.
const MAX_HEAD_PASSES: usize = 4;

type TarStream = GuardedTar<MultiGzDecoder<Counting<BufReader<Box<dyn Read + Send>>>>>;

/// Each reading of the archive starts from a fresh reader over the same bytes.
///
/// The decoder is flate2's `bufread` one, reading straight out of our 1 MiB buffer: the
/// `read` one would wrap it in a 32 KiB buffer of its own and copy every compressed byte once
/// more (for a level-0 package, every byte of the package).
fn open(file: &dyn ArchiveBytes) -> Result<TarStream> {
    let (counting, compressed) = Counting::new(BufReader::with_capacity(1 << 20, file.open()?));
    Ok(GuardedTar::new(
        MultiGzDecoder::new(counting),
        Some(compressed),
    ))
}

/// What one archive entry is, after the safety checks.
enum Entry {
    Metadata,
    Index,
    Blob(Digest),
    Chart(String),
    /// A tag of a registry storage tree: (repository, tag).
    TagLink(String, String),
    /// Something else under a storage tree's `repositories/`.
    Repository,
    Other,
}

fn classify<R: Read>(entry: &tar::Entry<R>) -> Result<Entry> {
    let path = entry
        .path()
        .map_err(|e| Error::package(format!("entry with a bad path: {e}")))?;
    let shown = path.display().to_string();
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(Error::package(format!(
                    "entry {shown:?}: absolute paths and '..' are not allowed in a package"
                )))
            }
        }
    }
    let kind = entry.header().entry_type();
    if kind.is_dir() {
        return Ok(Entry::Other);
    }
    if !(kind.is_file() || kind == tar::EntryType::Continuous) {
        return Err(Error::package(format!(
            "entry {shown:?}: {kind:?} entries (links, devices, fifos) are not allowed in a package"
        )));
    }
    let rel: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    Ok(
        match rel
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["package.yaml"] => Entry::Metadata,
            ["images", "index.json"] => Entry::Index,
            ["images", "blobs", "sha256", hex] => {
                Entry::Blob(Digest::from_hex(hex).map_err(|e| {
                    Error::package(format!(
                        "entry {shown:?}: blob name is not a valid digest ({e})"
                    ))
                })?)
            }
            ["charts", name] if name.ends_with(".tgz") => Entry::Chart(format!("charts/{name}")),
            ["registry", "docker", "registry", "v2", "blobs", "sha256", _, hex, "data"] => {
                Entry::Blob(Digest::from_hex(hex).map_err(|e| {
                    Error::package(format!(
                        "entry {shown:?}: blob name is not a valid digest ({e})"
                    ))
                })?)
            }
            ["registry", "docker", "registry", "v2", "repositories", rest @ ..] => match rest {
                [repo @ .., "_manifests", "tags", tag, "current", "link"] if !repo.is_empty() => {
                    Entry::TagLink(repo.join("/"), tag.to_string())
                }
                _ => Entry::Repository,
            },
            _ => Entry::Other,
        },
    )
}

/// Every `charts/*.tgz` in the archive (a full pass: the head of a canonical package ends
/// before them, and only chart packages are asked).
pub(super) fn list_charts(file: &dyn ArchiveBytes) -> Result<Vec<String>> {
    let mut archive = open(file)?;
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        if let Entry::Chart(name) = classify(&entry)? {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// The bytes of one chart archive (`charts/<name>.tgz`), read with the same entry checks as
/// everything else, up to `limit` bytes.
pub(super) fn read_chart(file: &dyn ArchiveBytes, name: &str, limit: u64) -> Result<Vec<u8>> {
    let mut archive = open(file)?;
    for entry in archive.entries()? {
        let entry = entry?;
        let size = entry.size();
        if let Entry::Chart(found) = classify(&entry)? {
            if found == name {
                return super::read_limited(entry, size, limit, name);
            }
        }
    }
    Err(Error::package(format!("{name} is not in the package")))
}

pub(super) fn read_head(file: &dyn ArchiveBytes) -> Result<PackageHead> {
    let mut meta: Option<PackageMeta> = None;
    let mut index: Option<Index> = None;
    let mut wanted = DocWanted::default();
    let mut docs: HashMap<Digest, Bytes> = HashMap::new();
    let mut charts = Vec::new();
    let mut budget = DocBudget::default();
    // A registry storage tree instead of images/index.json: its tags, and whether the
    // `repositories/` part (contiguous in a tar of a directory) is behind us.
    let mut links: BTreeMap<(String, String), Digest> = BTreeMap::new();
    let mut in_repositories = false;
    let mut links_done = false;

    for pass in 0..MAX_HEAD_PASSES {
        let mut held: HashMap<Digest, Bytes> = HashMap::new();
        let mut held_bytes = 0u64;
        let mut dropped = false;
        let mut archive = open(file)?;
        for entry in archive.entries()? {
            let mut entry = entry?;
            let size = entry.size();
            let kind = classify(&entry)?;
            let under_repositories = matches!(kind, Entry::TagLink(..) | Entry::Repository);
            if in_repositories && !under_repositories {
                links_done = true;
            }
            in_repositories = under_repositories;
            match kind {
                Entry::TagLink(repo, tag) if pass == 0 => {
                    let text = read_limited(&mut entry, size, 1024, "a tag link")?;
                    let digest =
                        Digest::parse(String::from_utf8_lossy(&text).trim()).map_err(|e| {
                            Error::package(format!("tag {repo}:{tag} of the storage tree: {e}"))
                        })?;
                    wanted.add_root(&digest);
                    links.insert((repo, tag), digest);
                    adopt_held(&mut wanted, &mut docs, &mut held);
                }
                Entry::Metadata if pass == 0 => {
                    if meta.is_some() {
                        return Err(Error::package("entry \"package.yaml\" appears twice"));
                    }
                    let text = read_limited(&mut entry, size, MAX_METADATA_BYTES, "package.yaml")?;
                    meta = Some(PackageMeta::parse(&text)?);
                }
                Entry::Index if pass == 0 => {
                    if index.is_some() {
                        return Err(Error::package("entry \"images/index.json\" appears twice"));
                    }
                    let text =
                        read_limited(&mut entry, size, MAX_DOCUMENT_BYTES, "images/index.json")?;
                    let parsed = Index::parse(&text, "images/index.json")?;
                    wanted.add_index(&parsed);
                    index = Some(parsed);
                    // Documents read before the index are held: look at them now.
                    adopt_held(&mut wanted, &mut docs, &mut held);
                }
                Entry::Chart(name) if pass == 0 => charts.push(name),
                Entry::Blob(d) if wanted.is_manifest(&d).is_some() && size > MAX_DOCUMENT_BYTES => {
                    return Err(Error::package(format!(
                        "entry \"images/blobs/sha256/{}\": manifest is {size} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit",
                        d.hex()
                    )));
                }
                Entry::Blob(d) if !docs.contains_key(&d) && size <= MAX_DOCUMENT_BYTES => {
                    if wanted.want.contains_key(&d) {
                        budget.take(size)?;
                        let bytes = read_limited(&mut entry, size, MAX_DOCUMENT_BYTES, d.as_str())?;
                        if let Some(m) = wanted.is_manifest(&d).map(str::to_string) {
                            wanted.add_document(&m, &bytes);
                        }
                        docs.insert(d, Bytes::from(bytes));
                        adopt_held(&mut wanted, &mut docs, &mut held);
                    } else if held_bytes + size <= MAX_HELD_BYTES {
                        let bytes = read_limited(&mut entry, size, MAX_DOCUMENT_BYTES, d.as_str())?;
                        held_bytes += size;
                        held.insert(d, Bytes::from(bytes));
                    } else {
                        dropped = true;
                    }
                }
                _ => {}
            }
            // Canonical order puts every document before the first layer: stop reading as
            // soon as nothing is missing, so no layer is decompressed.
            let roots_known = index.is_some() || links_done;
            if meta.is_some() && roots_known && wanted.missing(&docs).next().is_none() {
                break;
            }
        }
        adopt_held(&mut wanted, &mut docs, &mut held);
        let meta_missing = meta.is_none();
        if meta_missing {
            return Err(Error::package("package.yaml is missing"));
        }
        if index.is_none() && links.is_empty() {
            return Err(Error::package(
                "images/index.json is missing (and no registry storage tree either)",
            ));
        }
        if wanted.missing(&docs).next().is_none() || !dropped {
            break;
        }
    }
    // A storage tree's index: made once every manifest is read (their types come from them).
    let index = index.unwrap_or_else(|| storage::index_of(&links, &docs));
    charts.sort();
    Ok(PackageHead {
        meta: meta.expect("checked above"),
        images: index.manifests,
        docs,
        charts,
        extra_images: Vec::new(),
        warnings: Vec::new(),
    })
}

/// Moves held entries that turned out to be wanted documents into `docs`, repeatedly, since
/// each adopted manifest can make further held entries wanted.
fn adopt_held(
    wanted: &mut DocWanted,
    docs: &mut HashMap<Digest, Bytes>,
    held: &mut HashMap<Digest, Bytes>,
) {
    loop {
        let ready: Vec<Digest> = held
            .keys()
            .filter(|d| wanted.want.contains_key(*d))
            .cloned()
            .collect();
        if ready.is_empty() {
            return;
        }
        for d in ready {
            let bytes = held.remove(&d).expect("key listed above");
            if let Some(m) = wanted.is_manifest(&d).map(str::to_string) {
                wanted.add_document(&m, &bytes);
            }
            docs.insert(d, bytes);
        }
    }
}

pub(super) fn stream_blobs(
    file: &dyn ArchiveBytes,
    wanted: &Wanted,
    sink: &mut BlobSink<'_>,
) -> Result<HashSet<Digest>> {
    let mut remaining: HashSet<Digest> = wanted.keys().cloned().collect();
    if remaining.is_empty() {
        return Ok(remaining);
    }
    let mut archive = open(file)?;
    for entry in archive.entries()? {
        let mut entry = entry?;
        if let Entry::Blob(d) = classify(&entry)? {
            if remaining.remove(&d) {
                let size = entry.size();
                if sink(&d, size, &mut entry)? == Flow::Enough || remaining.is_empty() {
                    break;
                }
            }
        }
    }
    Ok(remaining)
}

/// Hands the bytes of the regular-file entry `name` to `f` (for a package nested in this
/// one). The entry passes the same checks as every other.
pub(super) fn with_entry(
    file: &dyn ArchiveBytes,
    name: &str,
    f: &mut dyn FnMut(&mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut archive = open(file)?;
    for entry in archive.entries()? {
        let mut entry = entry?;
        classify(&entry)?;
        if entry_name(&entry)? == name {
            return f(&mut entry);
        }
    }
    Err(Error::package(format!("{name} is not in the archive")))
}

/// Visits every regular file of the archive, in order, with its name (`./` removed), size
/// and contents; directories are skipped, anything else refused as everywhere.
pub(super) fn for_each_file(
    file: &dyn ArchiveBytes,
    f: &mut dyn FnMut(&str, u64, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut archive = open(file)?;
    for entry in archive.entries()? {
        let mut entry = entry?;
        classify(&entry)?;
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let name = entry_name(&entry)?;
        let size = entry.size();
        f(&name, size, &mut entry)?;
    }
    Ok(())
}

/// The entry's path as `a/b/c`, without `./` components.
fn entry_name<R: Read>(entry: &tar::Entry<R>) -> Result<String> {
    let path = entry
        .path()
        .map_err(|e| Error::package(format!("entry with a bad path: {e}")))?;
    Ok(path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/"))
}

/// A `.tgz` package: its own file, or an entry of another package's archive.
#[derive(Debug)]
pub struct TgzSource {
    /// The file name, compared with package.yaml's name and version.
    label: String,
    bytes: Box<dyn ArchiveBytes>,
}

impl TgzSource {
    pub fn new(label: String, bytes: Box<dyn ArchiveBytes>) -> Self {
        TgzSource { label, bytes }
    }

    /// A `.tgz` file, opened on first use and held open from then on (see `pinned`).
    pub fn file(path: &std::path::Path) -> Self {
        let label = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        TgzSource::new(label, Box::new(super::pinned::LazyPinned::new(path)))
    }
}

impl super::Source for TgzSource {
    fn read_head(&self) -> Result<PackageHead> {
        let mut head = read_head(self.bytes.as_ref())?;
        if let Some(w) = super::metadata::file_name_warning(&self.label, &head.meta) {
            head.warnings.push(w);
        }
        Ok(head)
    }

    fn stream_blobs(&self, wanted: &Wanted, sink: &mut BlobSink<'_>) -> Result<HashSet<Digest>> {
        stream_blobs(self.bytes.as_ref(), wanted, sink)
    }

    fn list_charts(&self) -> Result<Vec<String>> {
        list_charts(self.bytes.as_ref())
    }

    fn read_chart(&self, name: &str) -> Result<Vec<u8>> {
        read_chart(self.bytes.as_ref(), name, super::chart::MAX_CHART_BYTES)
    }

    fn check_unchanged(&self) -> Result<()> {
        self.bytes.check_unchanged()
    }

    fn archive(&self) -> Option<&dyn ArchiveBytes> {
        Some(self.bytes.as_ref())
    }
}
