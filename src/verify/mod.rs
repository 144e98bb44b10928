//! Trust, before anything is read for pushing: `ferry verify` and `ferry push --verify`.
//!
//! A package `<pkg>.tgz` may come with `<pkg>.tgz.sig` (a detached OpenPGP signature, binary or
//! ASCII-armored) and/or `<pkg>.tgz.sha256` (sha256sum format). Signatures are checked with
//! rPGP (`pgp` crate) against the trusted keys of `--keyring FILE`, else `$FERRY_KEYRING`, else
//! `/etc/ferry/trusted-keys.asc` (armored or binary, several keys allowed). The file is read
//! once: the signature hash and the sha256 are computed from the same pass.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::types::KeyDetails;
use serde::Serialize;
use sha2::Digest as _;

use crate::error::{Error, Result};
use crate::oci::HashingReader;

mod key_policy;

pub const DEFAULT_KEYRING: &str = "/etc/ferry/trusted-keys.asc";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Verdict {
    /// Good signature by a trusted key (and the checksum, when present, matched too).
    Gpg {
        signer: String,
    },
    /// No signature, but the sha256 file matched.
    Checksum,
    Failed {
        reason: String,
    },
    NoFile,
}

pub struct Keyring {
    keys: Vec<SignedPublicKey>,
    pub source: PathBuf,
}

impl Keyring {
    /// `--keyring`, else `$FERRY_KEYRING`, else the default file when it exists.
    pub fn load(explicit: Option<&Path>) -> Result<Option<Keyring>> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("FERRY_KEYRING").filter(|v| !v.is_empty()) {
                Some(p) => PathBuf::from(p),
                None if Path::new(DEFAULT_KEYRING).exists() => PathBuf::from(DEFAULT_KEYRING),
                None => return Ok(None),
            },
        };
        let bad =
            |e: &dyn std::fmt::Display| Error::package(format!("keyring {}: {e}", path.display()));
        let file = File::open(&path).map_err(|e| bad(&e))?;
        let (keys, _) =
            SignedPublicKey::from_reader_many(BufReader::new(file)).map_err(|e| bad(&e))?;
        let mut good = Vec::new();
        for k in keys {
            let k = k.map_err(|e| bad(&e))?;
            match k.verify_bindings() {
                Ok(()) => good.push(k),
                Err(e) => tracing::warn!(
                    "keyring {}: skipping key {}: {e}",
                    path.display(),
                    k.fingerprint()
                ),
            }
        }
        if good.is_empty() {
            return Err(bad(&"no usable public key in it"));
        }
        Ok(Some(Keyring {
            keys: good,
            source: path,
        }))
    }

    /// The trusted key (primary or subkey) that issued `sig`, if any.
    fn find(&self, sig: &DetachedSignature) -> Option<(&SignedPublicKey, Option<usize>)> {
        let ids = sig.signature.issuer_key_id();
        let fps = sig.signature.issuer_fingerprint();
        let matches = |id: pgp::types::KeyId, fp: pgp::types::Fingerprint| {
            ids.contains(&&id) || fps.contains(&&fp)
        };
        for k in &self.keys {
            if matches(k.legacy_key_id(), k.fingerprint()) {
                return Some((k, None));
            }
            for (i, sub) in k.public_subkeys.iter().enumerate() {
                if matches(sub.key.legacy_key_id(), sub.key.fingerprint()) {
                    return Some((k, Some(i)));
                }
            }
        }
        None
    }
}

fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// The expected hash from a sha256sum-format file (first field of the first line).
fn expected_sha256(path: &Path) -> std::result::Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let hash = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{}: not in sha256sum format", path.display()));
    }
    Ok(hash)
}

/// Verifies one package file.
pub fn verify_package(path: &Path, keyring: Option<&Keyring>) -> Verdict {
    if path.is_dir() {
        return Verdict::NoFile;
    }
    verify_contents(path, || File::open(path), keyring)
}

/// Verifies a package through its open file, the one the push then reads from.
pub fn verify_pinned(pkg: &crate::source::Package, keyring: Option<&Keyring>) -> Verdict {
    if pkg.path.is_dir() {
        return Verdict::NoFile;
    }
    let open = || {
        pkg.archive()
            .and_then(|a| a.open())
            .map_err(|e| std::io::Error::other(e.message))
    };
    verify_contents(&pkg.path, open, keyring)
}

/// Checks the package's bytes, read from `open`, against the `.sig` / `.sha256` next to
/// `path`.
fn verify_contents<R: Read>(
    path: &Path,
    open: impl FnOnce() -> std::io::Result<R>,
    keyring: Option<&Keyring>,
) -> Verdict {
    let fail = |reason: String| Verdict::Failed { reason };
    let sig_path = sibling(path, ".sig");
    let sum_path = sibling(path, ".sha256");
    let has_sig = sig_path.exists();
    let has_sum = sum_path.exists();
    if !has_sig && !has_sum {
        return Verdict::NoFile;
    }
    let expected = if has_sum {
        match expected_sha256(&sum_path) {
            Ok(h) => Some(h),
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    let file = match open() {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot read: {e}")),
    };
    let mut tee = HashingReader::new(BufReader::with_capacity(1 << 20, file));
    let mut signer = None;
    if has_sig {
        let Some(keyring) = keyring else {
            return fail(format!(
                "signed, but no trusted keys: give --keyring FILE or set FERRY_KEYRING (default {DEFAULT_KEYRING})"
            ));
        };
        let sig = match File::open(&sig_path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                DetachedSignature::from_reader_single(BufReader::new(f)).map_err(|e| e.to_string())
            }) {
            Ok((s, _)) => s,
            Err(e) => {
                return fail(format!(
                    "{}: not an OpenPGP signature: {e}",
                    sig_path.display()
                ))
            }
        };
        let Some((key, sub)) = keyring.find(&sig) else {
            let ids: Vec<String> = sig
                .signature
                .issuer_key_id()
                .iter()
                .map(|k| hex::encode_upper(k.as_ref()))
                .collect();
            return fail(format!(
                "signed by a key not in {} (key id {})",
                keyring.source.display(),
                ids.join(", ")
            ));
        };
        if let Some(why) =
            key_policy::refusal(key, sub, &sig.signature, std::time::SystemTime::now())
        {
            return fail(format!("signature not accepted: {why}"));
        }
        let r = match sub {
            None => sig.signature.verify(key, &mut tee),
            Some(i) => sig.signature.verify(&key.public_subkeys[i], &mut tee),
        };
        if let Err(e) = r {
            return fail(format!("BAD signature ({e}): the package was changed after it was signed, or the signature belongs to another file"));
        }
        signer = Some(format!("{}", key.fingerprint()));
    } else if let Err(e) = std::io::copy(&mut tee, &mut std::io::sink()) {
        return fail(format!("cannot read: {e}"));
    }
    if let Some(want) = expected {
        let got = hex::encode(tee.hasher.finalize());
        if got != want {
            return fail(format!(
                "checksum mismatch: {} says {want}, file is {got}",
                sum_path.display()
            ));
        }
    }
    match signer {
        Some(signer) => Verdict::Gpg { signer },
        None => Verdict::Checksum,
    }
}

#[derive(Debug, Serialize)]
pub struct Entry {
    pub package: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Verifies every package; the result in the four groups `violet verify` prints.
pub fn verify_all(paths: &[PathBuf], keyring: Option<&Keyring>) -> Vec<Entry> {
    paths
        .iter()
        .map(|p| Entry {
            package: p.display().to_string(),
            verdict: verify_package(p, keyring),
        })
        .collect()
}

/// Verifies every package through the open file its push then reads.
pub fn verify_packages(pkgs: &[crate::source::Package], keyring: Option<&Keyring>) -> Vec<Entry> {
    pkgs.iter()
        .map(|p| Entry {
            package: p.path.display().to_string(),
            verdict: verify_pinned(p, keyring),
        })
        .collect()
}

/// What a package must carry to pass, beyond "nothing that fails".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Requirement {
    /// A package without a verification file passes (and is listed as such).
    #[default]
    Nothing,
    /// `--require-verification`: a valid signature or a matching checksum.
    Verification,
    /// `--require-signature`: a valid signature by a trusted key. A checksum proves the file
    /// is intact, not who made it, so it is not enough.
    Signature,
}

impl Requirement {
    pub fn from_flags(require_signature: bool, require_verification: bool) -> Self {
        if require_signature {
            Requirement::Signature
        } else if require_verification {
            Requirement::Verification
        } else {
            Requirement::Nothing
        }
    }
}

/// Did the check pass under `req`?
pub fn passed(entries: &[Entry], req: Requirement) -> bool {
    entries.iter().all(|e| match e.verdict {
        Verdict::Failed { .. } => false,
        Verdict::NoFile => req == Requirement::Nothing,
        Verdict::Checksum => req != Requirement::Signature,
        Verdict::Gpg { .. } => true,
    })
}

type VerdictFilter = dyn Fn(&Verdict) -> bool;

/// `violet verify`'s layout, for the binary invoked as `violet`.
pub fn render_violet(paths: &[PathBuf], entries: &[Entry]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let mut s = format!(
        "verify path: {}\n====== Verification Summary ======\n",
        shown.join(" ")
    );
    let groups: [(&str, &VerdictFilter); 4] = [
        ("Verified successfully with GPG", &|v| {
            matches!(v, Verdict::Gpg { .. })
        }),
        ("Verified successfully with checksum", &|v| {
            matches!(v, Verdict::Checksum)
        }),
        ("Verification failed", &|v| {
            matches!(v, Verdict::Failed { .. })
        }),
        ("No verification file found", &|v| {
            matches!(v, Verdict::NoFile)
        }),
    ];
    let mut first = true;
    for (title, pick) in groups {
        let items: Vec<&Entry> = entries.iter().filter(|e| pick(&e.verdict)).collect();
        if items.is_empty() {
            continue;
        }
        if !first {
            s.push('\n');
        }
        first = false;
        s.push_str(&format!("{title}: {} file(s)\n", items.len()));
        for e in items {
            s.push_str(&format!("  - {}\n", e.package));
        }
    }
    s
}

pub fn render(entries: &[Entry]) -> String {
    let mut s = String::new();
    let group = |title: &str, pick: &dyn Fn(&Verdict) -> Option<String>| {
        let items: Vec<String> = entries
            .iter()
            .filter_map(|e| pick(&e.verdict).map(|extra| format!("  {}{extra}\n", e.package)))
            .collect();
        format!("{title} ({}):\n{}", items.len(), items.concat())
    };
    s.push_str(&group("Verified with GPG", &|v| match v {
        Verdict::Gpg { signer } => Some(format!("  (key {signer})")),
        _ => None,
    }));
    s.push_str(&group("Verified with checksum", &|v| {
        matches!(v, Verdict::Checksum).then(String::new)
    }));
    s.push_str(&group("Verification failed", &|v| match v {
        Verdict::Failed { reason } => Some(format!(": {reason}")),
        _ => None,
    }));
    s.push_str(&group("No verification file found", &|v| {
        matches!(v, Verdict::NoFile).then(String::new)
    }));
    s
}
