//! `ferry pack`: writes a package `.tgz` in canonical order — package.yaml, images/oci-layout,
//! images/index.json, every manifest/index/config, then layers, then charts — so that readers
//! can plan a push from the first few entries without decompressing a layer. Every blob is
//! verified against its digest while it is copied. Output is reproducible (fixed mtimes and
//! owners) and accompanied by `<file>.sha256` in sha256sum format.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::layout::{ImageGraph, Index, MAX_DOCUMENT_BYTES};
use super::metadata::PackageMeta;
use super::{blob_path, collect_docs, read_limited};
use crate::error::{Error, Result};
use crate::oci::{CheckingReader, Digest};

#[derive(Debug)]
pub struct PackSummary {
    pub output: PathBuf,
    pub sha256: String,
    pub images: usize,
    pub blobs: usize,
    pub bytes: u64,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::internal(format!("{what}: {e}"))
}

/// Packs the OCI layout `from` with `metadata` (and charts from `charts`) into `output`.
///
/// `level` is the gzip level. Layers are already compressed, so the default 0 (stored blocks)
/// costs nothing in size and is the fastest to write and to read back; zlib-rs' level 1 is
/// worse than useless here (its "quick" strategy expands incompressible data by ~5% and
/// triples the time to inflate it). Use 6 or 9 for packages with uncompressed content.
pub fn pack(
    from: &Path,
    metadata: &Path,
    charts: Option<&Path>,
    output: &Path,
    level: u32,
) -> Result<PackSummary> {
    let meta_text = std::fs::read(metadata).map_err(io("reading --metadata"))?;
    let is_core = PackageMeta::parse(&meta_text)?.spec.kind == super::PackageKind::Core;
    let index_text =
        std::fs::read(from.join("index.json")).map_err(io("reading index.json of --from"))?;
    let index = Index::parse(&index_text, "index.json")?;
    let read_doc = |d: &Digest| {
        let p = from.join("blobs/sha256").join(d.hex());
        let f = File::open(&p).ok()?;
        let len = f.metadata().ok()?.len();
        read_limited(f, len, MAX_DOCUMENT_BYTES, d.as_str()).ok()
    };
    let docs = collect_docs(&index, read_doc)?;

    // Documents in the order the graphs list them (children first), then every layer once.
    let mut doc_order: Vec<Digest> = Vec::new();
    let mut layers: Vec<(Digest, u64)> = Vec::new();
    let mut seen = HashSet::new();
    for desc in &index.manifests {
        let name = desc.ref_name().unwrap_or("(unnamed)");
        let graph =
            ImageGraph::resolve(desc, &docs).map_err(|e| e.context(format!("image {name}")))?;
        for (d, _) in &graph.manifests {
            if seen.insert(d.digest.clone()) {
                doc_order.push(d.digest.clone());
            }
        }
        for b in &graph.blobs {
            if docs.contains_key(&b.digest) {
                if seen.insert(b.digest.clone()) {
                    doc_order.push(b.digest.clone());
                }
            } else if seen.insert(b.digest.clone()) {
                layers.push((b.digest.clone(), b.size));
            }
        }
    }

    let mut w = TgzWriter::create(output, level)?;
    w.append("package.yaml", meta_text.len() as u64, meta_text.as_slice())?;
    if is_core {
        // the wrapper operators run, as `bash upgrade.sh ...` (see docs/package-format.md)
        let script = include_str!("../../scripts/upgrade.sh").as_bytes();
        w.append_mode("upgrade.sh", script.len() as u64, script, 0o755)?;
    }
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    w.append("images/oci-layout", layout.len() as u64, &layout[..])?;
    w.append(
        "images/index.json",
        index_text.len() as u64,
        index_text.as_slice(),
    )?;
    let mut bytes = 0u64;
    for d in &doc_order {
        let b = &docs[d];
        // manifests, indexes and configs are checked like layers: a package must never carry
        // a blob whose name is not its digest
        crate::oci::verify(d, b.len() as u64, b)
            .map_err(|e| e.context(format!("layout {} is damaged", from.display())))?;
        bytes += b.len() as u64;
        w.append(&blob_path(d), b.len() as u64, &b[..])?;
    }
    for (d, size) in &layers {
        let p = from.join("blobs/sha256").join(d.hex());
        let f = File::open(&p).map_err(|e| {
            Error::integrity(format!("layer {d} is missing from {}: {e}", from.display()))
        })?;
        let actual = f.metadata().map_err(io("layer"))?.len();
        if actual != *size {
            return Err(Error::integrity(format!(
                "layer {d}: size mismatch: manifest says {size}, file has {actual}"
            )));
        }
        let mut verifying = CheckingReader::new(f, d, *size);
        w.append(&blob_path(d), *size, &mut verifying)?;
        if let Err(e) = verifying.finish() {
            w.abandon();
            return Err(e.context(format!("layout {}", from.display())));
        }
        bytes += size;
    }
    if let Some(dir) = charts {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io("reading --charts"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tgz"))
            .collect();
        names.sort();
        for p in names {
            let f = File::open(&p).map_err(io("chart"))?;
            let len = f.metadata().map_err(io("chart"))?.len();
            let name = format!(
                "charts/{}",
                p.file_name().expect("listed file").to_string_lossy()
            );
            w.append(&name, len, f)?;
        }
    }
    let sha256 = w.finish()?;
    Ok(PackSummary {
        output: output.to_path_buf(),
        sha256,
        images: index.manifests.len(),
        blobs: doc_order.len() + layers.len(),
        bytes,
    })
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
) -> Result<()> {
    append_mode(tar, path, size, data, 0o644)
}

fn append_mode<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
    mode: u32,
) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)
        .map_err(|e| Error::internal(format!("writing {path}: {e}")))
}

/// gzip over the output file, hashed as written.
type Compressor = flate2::write::GzEncoder<HashingWriter<BufWriter<File>>>;

/// The `.tgz` of a package being written: to `<output>.partial`, renamed to `output` only
/// once complete, with `<output>.sha256` beside it. Dropped without [`TgzWriter::finish`], it
/// removes the partial file: a failed run leaves no output behind.
pub struct TgzWriter {
    tar: Option<tar::Builder<Rechunk<Compressor>>>,
    tmp: PathBuf,
    output: PathBuf,
    done: bool,
}

impl TgzWriter {
    /// For `pack`: the input's pieces are a function of the layout alone (files copied
    /// whole), so the archive is reproducible as it is (and the fixtures stay byte-identical).
    pub fn create(output: &Path, level: u32) -> Result<Self> {
        Self::create_with_pieces(output, level, 0)
    }

    /// For bytes that arrive in pieces of varying size (from the network, memory or a
    /// temporary file): the compressor gets them in fixed pieces (see [`Rechunk`]).
    pub fn create_rechunked(output: &Path, level: u32) -> Result<Self> {
        Self::create_with_pieces(output, level, RECHUNK)
    }

    fn create_with_pieces(output: &Path, level: u32, piece: usize) -> Result<Self> {
        let tmp = output.with_extension("tgz.partial");
        let file = File::create(&tmp).map_err(io("creating output"))?;
        let hashing = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
        };
        let gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::new(level));
        Ok(TgzWriter {
            tar: Some(tar::Builder::new(Rechunk::new(gz, piece))),
            tmp,
            output: output.to_path_buf(),
            done: false,
        })
    }

    /// One regular file (mode 0644, mtime 0, owner 0) of `size` bytes read from `data`.
    pub fn append(&mut self, path: &str, size: u64, data: impl Read) -> Result<()> {
        append(self.tar.as_mut().expect("not finished"), path, size, data)
    }

    pub fn append_mode(&mut self, path: &str, size: u64, data: impl Read, mode: u32) -> Result<()> {
        append_mode(
            self.tar.as_mut().expect("not finished"),
            path,
            size,
            data,
            mode,
        )
    }

    /// Removes the partial output now.
    pub fn abandon(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }

    /// Ends the archive, renames it into place and writes the `.sha256`; the file's sha256.
    pub fn finish(mut self) -> Result<String> {
        let tar = self.tar.take().expect("not finished");
        let gz = tar
            .into_inner()
            .and_then(Rechunk::finish)
            .map_err(io("writing output"))?;
        let mut hashing = gz.finish().map_err(io("writing output"))?;
        hashing.inner.flush().map_err(io("writing output"))?;
        hashing
            .inner
            .get_ref()
            .sync_all()
            .map_err(io("writing output"))?;
        let sha256 = hex::encode(hashing.hasher.finalize());
        std::fs::rename(&self.tmp, &self.output).map_err(io("renaming output"))?;
        self.done = true;
        let file_name = self
            .output
            .file_name()
            .expect("output is a file")
            .to_string_lossy();
        let mut sums = self.output.as_os_str().to_owned();
        sums.push(".sha256");
        std::fs::write(&sums, format!("{sha256}  {file_name}\n")).map_err(io("writing .sha256"))?;
        Ok(sha256)
    }
}

impl Drop for TgzWriter {
    fn drop(&mut self) {
        if !self.done {
            self.abandon();
        }
    }
}

/// Hands the compressor its input in fixed-size pieces whatever the sizes of the writes:
/// deflate's block boundaries (even stored blocks at level 0) follow the pieces it is given,
/// so without this the same bytes written in differently sized reads (a blob from memory, or
/// from a temporary file) would give a different `.tgz`.
pub struct Rechunk<W: Write> {
    inner: W,
    buf: Vec<u8>,
    /// 0: writes go through as they come.
    piece: usize,
}

const RECHUNK: usize = 1 << 20;

impl<W: Write> Rechunk<W> {
    fn new(inner: W, piece: usize) -> Self {
        Rechunk {
            inner,
            buf: Vec::with_capacity(piece),
            piece,
        }
    }

    /// Writes what is left; the inner writer.
    fn finish(mut self) -> std::io::Result<W> {
        self.inner.write_all(&self.buf)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Rechunk<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.piece == 0 {
            return self.inner.write(data);
        }
        let n = data.len().min(self.piece - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.piece {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(n)
    }

    /// A flush does not cut a piece short (that would move a block boundary again).
    fn flush(&mut self) -> std::io::Result<()> {
        if self.piece == 0 {
            return self.inner.flush();
        }
        Ok(())
    }
}

pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
