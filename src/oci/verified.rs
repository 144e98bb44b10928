//! The one check of bytes against a digest and a size. Its only product is [`Verified`], and
//! committing a blob to a registry (`Registry::finish_upload`, `upload_whole`) takes a
//! `&Verified`: "commit only after the check" is enforced by the types, not by convention.

use sha2::{Digest as _, Sha256};

use super::Digest;
use crate::error::{Error, Result};

/// Proof that some bytes had this digest and this size. Made only by [`Check::finish`] and
/// [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    digest: Digest,
    size: u64,
}

impl Verified {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

/// An incremental check: feed the bytes as they stream, then [`Check::finish`].
pub struct Check {
    expected: Digest,
    size: u64,
    seen: u64,
    hasher: Sha256,
}

impl Check {
    pub fn new(expected: &Digest, size: u64) -> Self {
        Check {
            expected: expected.clone(),
            size,
            seen: 0,
            hasher: Sha256::new(),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        self.hasher.update(bytes);
    }

    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// The verdict. A short or long blob is reported as such (before the digest, which would
    /// then differ too and say less).
    pub fn finish(self) -> Result<Verified> {
        let Check {
            expected,
            size,
            seen,
            hasher,
        } = self;
        if seen != size {
            let what = if seen < size { "truncated" } else { "too long" };
            return Err(Error::integrity(format!(
                "blob {expected}: size mismatch ({what}): expected {size} bytes, read {seen}"
            )));
        }
        let actual = Digest::from_hasher(hasher);
        if actual != expected {
            return Err(Error::integrity(format!(
                "blob {expected}: digest mismatch: expected {expected}, actual {actual}"
            )));
        }
        Ok(Verified {
            digest: expected,
            size,
        })
    }
}

/// A reader that checks the bytes passing through it (`pack` copying layers from disk).
pub struct CheckingReader<R> {
    inner: R,
    check: Check,
}

impl<R> CheckingReader<R> {
    pub fn new(inner: R, expected: &Digest, size: u64) -> Self {
        CheckingReader {
            inner,
            check: Check::new(expected, size),
        }
    }

    pub fn finish(self) -> Result<Verified> {
        self.check.finish()
    }
}

impl<R: std::io::Read> std::io::Read for CheckingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.check.update(&buf[..n]);
        Ok(n)
    }
}

/// Checks bytes held whole in memory (manifests, configs, chart artifacts).
pub fn verify(expected: &Digest, size: u64, bytes: &[u8]) -> Result<Verified> {
    let mut check = Check::new(expected, size);
    check.update(bytes);
    check.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_matching_bytes_are_verified() {
        let d = Digest::of(b"hello");
        assert_eq!(verify(&d, 5, b"hello").unwrap().digest(), &d);
        let short = verify(&d, 6, b"hello").unwrap_err();
        assert!(short.message.contains("truncated"), "{}", short.message);
        let long = verify(&d, 4, b"hello").unwrap_err();
        assert!(long.message.contains("too long"), "{}", long.message);
        let wrong = verify(&d, 5, b"hellO").unwrap_err();
        assert!(
            wrong.message.contains("digest mismatch"),
            "{}",
            wrong.message
        );
    }
}
