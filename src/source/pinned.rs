//! A package file held open from verification to the last byte pushed.
//!
//! `push --verify` checks a file, then reads it again for the head and for each streaming
//! pass. Reopening the path would read whatever is there by then: a file swapped in after
//! the check would be pushed unverified. So the verified file stays open and every read goes
//! through that descriptor (positioned reads, so passes do not share an offset), and its
//! size and modification time are compared with what was verified before each pass and
//! before manifests go up: a file written in place is refused, never half-pushed.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

/// What identifies the bytes of a file without reading them again. Not the change time:
/// renaming another file over the path changes it on the open file, whose bytes stay as
/// they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(file: &File) -> std::io::Result<Stamp> {
        let m = file.metadata()?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

#[derive(Debug)]
pub struct PinnedFile {
    file: Arc<File>,
    stamp: Stamp,
}

impl PinnedFile {
    pub fn open(path: &Path) -> Result<PinnedFile> {
        let file = File::open(path)
            .map_err(|e| Error::package(format!("{}: cannot open: {e}", path.display())))?;
        let stamp = Stamp::of(&file)
            .map_err(|e| Error::package(format!("{}: cannot stat: {e}", path.display())))?;
        Ok(PinnedFile {
            file: Arc::new(file),
            stamp,
        })
    }

    /// A reader from the start of the file, after checking it is unchanged.
    pub fn reader(&self) -> Result<PositionedReader> {
        self.check_unchanged()?;
        Ok(PositionedReader {
            file: self.file.clone(),
            pos: 0,
        })
    }

    pub fn check_unchanged(&self) -> Result<()> {
        match Stamp::of(&self.file) {
            Ok(now) if now == self.stamp => Ok(()),
            Ok(_) => Err(Error::integrity(
                "the file was modified after it was verified: nothing more is pushed from it; copy the package again, verify it and re-run",
            )),
            Err(e) => Err(Error::package(format!("cannot stat the open file: {e}"))),
        }
    }
}

/// Reads a shared open file from its own offset.
pub struct PositionedReader {
    file: Arc<File>,
    pos: u64,
}

impl Read for PositionedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        super::count_read(n);
        Ok(n)
    }
}

/// Skipping ahead (what an uncompressed tar needs to pass over entries unread). Positions
/// are the file's; seeking past its end is allowed, as for a file, and reads nothing there.
impl std::io::Seek for PositionedReader {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let (base, delta) = match pos {
            std::io::SeekFrom::Start(n) => (0, n as i128),
            std::io::SeekFrom::Current(d) => (self.pos as i128, d as i128),
            std::io::SeekFrom::End(d) => (self.file.metadata()?.len() as i128, d as i128),
        };
        let to = u64::try_from(base + delta).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        self.pos = to;
        Ok(to)
    }
}

impl super::ArchiveBytes for PinnedFile {
    fn open(&self) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.reader()?))
    }

    fn open_seekable(&self) -> Result<Option<PositionedReader>> {
        self.reader().map(Some)
    }

    fn check_unchanged(&self) -> Result<()> {
        PinnedFile::check_unchanged(self)
    }
}

/// A package file opened on first use (verification, or the head) and held open from then on:
/// every later read goes through that one descriptor.
#[derive(Debug)]
pub struct LazyPinned {
    path: std::path::PathBuf,
    file: std::sync::OnceLock<PinnedFile>,
}

impl LazyPinned {
    pub fn new(path: &Path) -> Self {
        LazyPinned {
            path: path.to_path_buf(),
            file: std::sync::OnceLock::new(),
        }
    }

    fn pinned(&self) -> Result<&PinnedFile> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        let opened = PinnedFile::open(&self.path)?;
        Ok(self.file.get_or_init(|| opened))
    }
}

impl super::ArchiveBytes for LazyPinned {
    fn open(&self) -> Result<Box<dyn Read + Send>> {
        self.pinned()?.open()
    }

    fn open_seekable(&self) -> Result<Option<PositionedReader>> {
        self.pinned()?.open_seekable()
    }

    /// Never opened: nothing was read, so nothing can have changed under us.
    fn check_unchanged(&self) -> Result<()> {
        match self.file.get() {
            Some(f) => f.check_unchanged(),
            None => Ok(()),
        }
    }
}
