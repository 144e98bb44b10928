//! `ferry verify`: checksums and signatures of package files, like `violet verify`.

use std::path::{Path, PathBuf};

use super::Output;
use crate::error::{Error, ErrorKind};
use crate::source;
use crate::verify::{self, Keyring};

pub fn run(
    paths: &[PathBuf],
    keyring: Option<&Path>,
    require: verify::Requirement,
    output: Output,
) -> Result<i32, Error> {
    let files: Vec<PathBuf> = source::find_packages(paths)?
        .into_iter()
        .map(|p| p.path)
        .collect();
    let keyring = Keyring::load(keyring)?;
    let entries = verify::verify_all(&files, keyring.as_ref());
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&entries).expect("plain data")
        ),
        Output::Text if super::invoked_as_violet() => {
            print!("{}", verify::render_violet(paths, &entries))
        }
        Output::Text => print!("{}", verify::render(&entries)),
    }
    if require == verify::Requirement::Signature && !verify::passed(&entries, require) {
        eprintln!("--require-signature: every package needs a valid signature (.sig) by a trusted key; a checksum alone is not enough");
    }
    Ok(if verify::passed(&entries, require) {
        0
    } else {
        ErrorKind::Integrity.exit_code()
    })
}

/// `push --verify`: every package is checked before anything is uploaded.
pub fn before_push(
    packages: &[crate::source::Package],
    keyring: Option<&Path>,
    require: verify::Requirement,
) -> Result<(), Error> {
    let keyring = Keyring::load(keyring)?;
    let entries = verify::verify_packages(packages, keyring.as_ref());
    eprint!("{}", verify::render(&entries));
    if verify::passed(&entries, require) {
        Ok(())
    } else {
        Err(Error::integrity(
            "package verification failed (see above): nothing was pushed. Replace the package, or push without --verify at your own risk",
        ))
    }
}
