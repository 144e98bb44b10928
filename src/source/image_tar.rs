//! The tar archives other tools write (`docker save`, `podman save`, `skopeo copy
//! oci-archive:`, `hauler store save`): plain, gzip'd or zstd-compressed, told apart by their
//! magic bytes, never by the file name. Read as a stream through the same guards as a
//! package (tar extension cap, decompression bomb check); nothing is extracted to disk.
//!
//! Also the one place that tells what kind of file a command line names ([`FileKind`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Component;

use flate2::bufread::MultiGzDecoder;

use super::tar_guard::{archive_error, Counting, GuardedTar};
use super::{ArchiveBytes, Flow};
use crate::error::{Error, Result};

/// How the tar stream is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::Plain
        }
    }
}

/// What a file given to `push` / `show` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A ferry package (`package.yaml`, `images/`, `charts/`, a storage tree): also anything
    /// not recognised below, so that a damaged package keeps its own error messages.
    Package,
    /// `docker save` / `podman save` / `nerdctl save` in the legacy format: `manifest.json`
    /// and a tar per layer.
    DockerArchive,
    /// A tar of an OCI image layout (`oci-layout`, `index.json`, `blobs/`): `skopeo copy
    /// oci-archive:`, `hauler store save`, and the `docker save` of Docker 25 and later.
    OciArchive,
}

impl FileKind {
    /// Decided by the first entry of the archive (a directory entry counts): every writer
    /// we know starts with something only its format has. A layout-bearing docker save
    /// (Docker 25+) starts with `blobs/` and is read as the OCI layout it carries.
    pub fn of(bytes: &dyn ArchiveBytes) -> FileKind {
        let Ok((mut tar, _)) = open(bytes) else {
            return FileKind::Package;
        };
        let Ok(entries) = tar.entries() else {
            return FileKind::Package;
        };
        for entry in entries.take(16) {
            let Ok(entry) = entry else {
                return FileKind::Package;
            };
            let Ok(path) = entry.path() else {
                return FileKind::Package;
            };
            let first = path.components().find_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                Component::CurDir => None,
                _ => Some(String::new()),
            });
            let Some(first) = first else { continue };
            return kind_of_top_level(&first);
        }
        FileKind::Package
    }
}

fn kind_of_top_level(name: &str) -> FileKind {
    let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    match name {
        "blobs" | "index.json" | "oci-layout" => FileKind::OciArchive,
        "manifest.json" | "repositories" => FileKind::DockerArchive,
        n if hex(n) => FileKind::DockerArchive,
        n if n
            .strip_suffix(".json")
            .or(n.strip_suffix(".tar"))
            .is_some_and(hex) =>
        {
            FileKind::DockerArchive
        }
        _ => FileKind::Package,
    }
}

pub(super) type Tar = GuardedTar<Box<dyn Read + Send>>;

/// A fresh tar stream over the archive, decompressed as its magic bytes say.
pub(super) fn open(bytes: &dyn ArchiveBytes) -> Result<(Tar, Compression)> {
    let (mut counting, compressed) =
        Counting::new(BufReader::with_capacity(1 << 20, bytes.open()?));
    let head = counting.fill_buf().map_err(archive_error)?;
    let compression = Compression::sniff(head);
    let stream: Box<dyn Read + Send> = match compression {
        Compression::Plain => Box::new(counting),
        Compression::Gzip => Box::new(MultiGzDecoder::new(counting)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(counting)
                .map_err(|e| Error::package(format!("zstd stream: {e}")))?,
        ),
    };
    let guard = (compression != Compression::Plain).then_some(compressed);
    Ok((GuardedTar::new(stream, guard), compression))
}

/// One entry of an image archive, after the safety checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Member {
    /// A regular file: its path (`a/b`, no `./`) and size.
    File { path: String, size: u64 },
    /// A symbolic or hard link, its target as an archive path. `docker save` links a layer
    /// shared by two images; the containers/image writer links every `<id>/layer.tar`.
    Link { path: String, target: String },
    /// A directory, a PAX global header: nothing to read.
    Skip,
}

fn normal_path(path: &std::path::Path, shown: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => {
                return Err(Error::package(format!(
                    "entry {shown:?}: absolute paths and '..' are not allowed in an image archive"
                )))
            }
        }
    }
    Ok(out)
}

/// Resolves `..` in a link target lexically; `None` when it leaves the archive.
fn join_lexically(base: &[String], target: &std::path::Path) -> Option<String> {
    let mut parts: Vec<String> = base.to_vec();
    for c in target.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

pub(super) fn member<R: Read>(entry: &tar::Entry<R>) -> Result<Member> {
    let path = entry
        .path()
        .map_err(|e| Error::package(format!("entry with a bad path: {e}")))?;
    let shown = path.display().to_string();
    let parts = normal_path(&path, &shown)?;
    let kind = entry.header().entry_type();
    if kind.is_dir() || kind == tar::EntryType::XGlobalHeader || parts.is_empty() {
        return Ok(Member::Skip);
    }
    let joined = parts.join("/");
    if kind.is_symlink() || kind.is_hard_link() {
        let target = entry
            .link_name()
            .ok()
            .flatten()
            .ok_or_else(|| Error::package(format!("link {shown:?} has no target")))?;
        // a symlink is relative to its directory, a hard link names an archive path
        let base = if kind.is_symlink() {
            &parts[..parts.len() - 1]
        } else {
            &[][..]
        };
        return Ok(match join_lexically(base, &target) {
            Some(target) => Member::Link {
                path: joined,
                target,
            },
            None => Member::Skip, // points outside the archive: never followed
        });
    }
    if !(kind.is_file() || kind == tar::EntryType::Continuous) {
        return Err(Error::package(format!(
            "entry {shown:?}: {kind:?} entries (devices, fifos) are not allowed in an image archive"
        )));
    }
    Ok(Member::File {
        path: joined,
        size: entry.size(),
    })
}

/// Visits every entry of the archive in order, until `f` says [`Flow::Enough`]. An
/// uncompressed archive on disk (what `docker save` writes) skips the data `f` does not
/// read by seeking: a pass that wants only the small entries reads little more than them.
pub(super) fn walk(
    bytes: &dyn ArchiveBytes,
    f: &mut dyn FnMut(&Member, &mut dyn Read) -> Result<Flow>,
) -> Result<Compression> {
    if let Some(mut file) = bytes.open_seekable()? {
        let mut magic = Vec::new();
        (&mut file)
            .take(4)
            .read_to_end(&mut magic)
            .map_err(archive_error)?;
        if Compression::sniff(&magic) == Compression::Plain {
            file.seek(SeekFrom::Start(0)).map_err(archive_error)?;
            let skipping = Skipping {
                inner: BufReader::with_capacity(256 << 10, file),
                pos: 0,
            };
            let mut tar = GuardedTar::new(skipping, None);
            visit(tar.entries_seeking()?, f)?;
            return Ok(Compression::Plain);
        }
    }
    let (mut tar, compression) = open(bytes)?;
    visit(tar.entries()?, f)?;
    Ok(compression)
}

/// A buffered file that keeps its buffer on a short skip forward (std's `BufReader::seek`
/// always drops it: every small entry skipped would cost a refill).
struct Skipping<R> {
    inner: BufReader<R>,
    pos: u64,
}

impl<R: Read> Read for Skipping<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Skipping<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match to {
            SeekFrom::Current(d) => {
                self.inner.seek_relative(d)?;
                self.pos = self.pos.checked_add_signed(d).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek out of range")
                })?;
            }
            other => self.pos = self.inner.seek(other)?,
        }
        Ok(self.pos)
    }
}

fn visit<R: Read>(
    entries: super::tar_guard::Entries<'_, R>,
    f: &mut dyn FnMut(&Member, &mut dyn Read) -> Result<Flow>,
) -> Result<()> {
    for entry in entries {
        let mut entry = entry?;
        let m = member(&entry)?;
        if m == Member::Skip {
            continue;
        }
        if f(&m, &mut entry)? == Flow::Enough {
            break;
        }
    }
    Ok(())
}

/// Follows links from `path` to the regular file it names (a few hops at most).
pub(super) fn resolve(links: &HashMap<String, String>, path: &str) -> String {
    let mut p = path.trim_start_matches("./").to_string();
    for _ in 0..8 {
        match links.get(&p) {
            Some(t) => p = t.clone(),
            None => break,
        }
    }
    p
}

/// The compression a blob's first bytes show, for refusing compressed layers where the
/// format wants them plain.
pub(super) fn compressed_magic(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if head.starts_with(b"BZh") {
        Some("bzip2")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_names_decide_the_kind() {
        let id = "a".repeat(64);
        assert_eq!(kind_of_top_level("package.yaml"), FileKind::Package);
        assert_eq!(kind_of_top_level("images"), FileKind::Package);
        assert_eq!(kind_of_top_level("blobs"), FileKind::OciArchive);
        assert_eq!(kind_of_top_level("oci-layout"), FileKind::OciArchive);
        assert_eq!(kind_of_top_level(&id), FileKind::DockerArchive);
        assert_eq!(
            kind_of_top_level(&format!("{id}.json")),
            FileKind::DockerArchive
        );
        assert_eq!(
            kind_of_top_level(&format!("{id}.tar")),
            FileKind::DockerArchive
        );
        assert_eq!(kind_of_top_level("manifest.json"), FileKind::DockerArchive);
        assert_eq!(kind_of_top_level("../evil"), FileKind::Package);
        assert_eq!(kind_of_top_level("xyz.json"), FileKind::Package);
    }

    #[test]
    fn link_targets_stay_inside() {
        let base = vec!["abc".to_string()];
        assert_eq!(
            join_lexically(&base, std::path::Path::new("../x.tar")).as_deref(),
            Some("x.tar")
        );
        assert_eq!(
            join_lexically(&base, std::path::Path::new("../../etc/passwd")),
            None
        );
        assert_eq!(join_lexically(&base, std::path::Path::new("/etc")), None);
    }

    /// The seeking walk (a plain tar file) and the streaming one (the same, gzip'd) see the
    /// same entries and contents, whatever `f` leaves unread.
    #[test]
    fn seeking_and_streaming_walks_agree() {
        let mut b = tar::Builder::new(Vec::new());
        let big: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for (name, data) in [
            ("a.json", b"{}".to_vec()),
            ("big/layer.tar", big.clone()),
            ("c.json", b"[1]".to_vec()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("x.tar");
        std::fs::write(&plain, &tar).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gzipped = dir.path().join("x.tar.gz");
        std::fs::write(&gzipped, gz.finish().unwrap()).unwrap();
        let mut seen = Vec::new();
        for path in [&plain, &gzipped] {
            let file = crate::source::PinnedFile::open(path).unwrap();
            let mut got = Vec::new();
            let c = walk(&file, &mut |m, r| {
                if let Member::File { path, size } = m {
                    let mut data = Vec::new();
                    if *size < 100 {
                        r.read_to_end(&mut data).unwrap();
                    } else {
                        r.take(3).read_to_end(&mut data).unwrap();
                    }
                    got.push((path.clone(), data));
                }
                Ok(Flow::More)
            })
            .unwrap();
            seen.push((c, got));
        }
        assert_eq!(seen[0].0, Compression::Plain);
        assert_eq!(seen[1].0, Compression::Gzip);
        assert_eq!(seen[0].1, seen[1].1);
        assert_eq!(seen[0].1[1].1, big[..3].to_vec());
        assert_eq!(seen[0].1[2], ("c.json".to_string(), b"[1]".to_vec()));
    }

    #[test]
    fn magic_bytes() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"manifest.json"), Compression::Plain);
        assert_eq!(compressed_magic(b"BZh9"), Some("bzip2"));
        assert_eq!(compressed_magic(b"ustar"), None);
    }
}
