//! `--sign-key FILE`: a detached OpenPGP signature `<file>.tgz.sig` (binary), made with rPGP,
//! that `ferry verify --keyring <public key>` accepts. The key is an exported secret key
//! (`gpg --export-secret-keys [--armor]`); a passphrase, if the key has one, comes from
//! `$FERRY_SIGN_PASSPHRASE` (never from the command line, where `ps` would show it).

use std::io::BufReader;
use std::path::{Path, PathBuf};

use pgp::composed::{Deserializable, DetachedSignature, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::ser::Serialize;
use pgp::types::{KeyDetails, Password};

use crate::error::{Error, ErrorKind, Result};

/// Reads the secret key (armored or binary); checked before any download.
pub fn load_key(path: &Path) -> Result<SignedSecretKey> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::new(
            ErrorKind::Usage,
            format!("--sign-key {}: {e}", path.display()),
        )
    };
    let file = std::fs::File::open(path).map_err(|e| bad(&e))?;
    let (key, _) =
        SignedSecretKey::from_reader_single(BufReader::new(file)).map_err(|e| bad(&e))?;
    key.verify_bindings().map_err(|e| bad(&e))?;
    Ok(key)
}

/// Signs `file`; the path of the signature written beside it.
pub fn sign(file: &Path, key: &SignedSecretKey) -> Result<(PathBuf, String)> {
    let password = std::env::var("FERRY_SIGN_PASSPHRASE")
        .map(Password::from)
        .unwrap_or_else(|_| Password::empty());
    let data = std::fs::File::open(file)
        .map_err(|e| Error::internal(format!("{}: {e}", file.display())))?;
    let sig = DetachedSignature::sign_binary_data(
        rand_core::OsRng,
        &key.primary_key,
        &password,
        HashAlgorithm::Sha256,
        BufReader::with_capacity(1 << 20, data),
    )
    .map_err(|e| {
        Error::new(
            ErrorKind::Usage,
            format!(
                "signing {} failed: {e} (a key with a passphrase needs $FERRY_SIGN_PASSPHRASE)",
                file.display()
            ),
        )
    })?;
    let bytes = sig
        .to_bytes()
        .map_err(|e| Error::internal(format!("signature: {e}")))?;
    let mut out = file.as_os_str().to_owned();
    out.push(".sig");
    let out = PathBuf::from(out);
    std::fs::write(&out, bytes)
        .map_err(|e| Error::internal(format!("writing {}: {e}", out.display())))?;
    Ok((out, hex::encode(key.fingerprint().as_bytes())))
}
