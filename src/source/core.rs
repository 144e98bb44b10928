//! The core package (`spec.type: core`), extracted into a directory as operators have it on a
//! control-plane node: `package.yaml`, core images as an OCI layout in `images/` or as a
//! registry storage tree in `registry/` (see [`super::storage`]),
//! `plugins/*.tgz` (ordinary packages), `manifests/*.yaml` (applied after the sync) and
//! `checksums.sha256` (sha256sum format over the other files).

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{Package, PackageMeta};
use crate::error::{Error, Result};

pub struct CorePackage {
    pub root: PathBuf,
    pub meta: PackageMeta,
    /// The core images (`images/` or `registry/`), when the package has any.
    pub images: Option<Package>,
    /// `plugins/*.tgz`, in name order.
    pub plugins: Vec<Package>,
    /// `manifests/*.yaml`, in name order.
    pub manifests: Vec<PathBuf>,
}

fn sorted_with_ext(dir: &Path, ext: &[&str]) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::package(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| ext.iter().any(|e| x == *e)))
        .collect();
    v.sort();
    Ok(v)
}

impl CorePackage {
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::package(format!(
                "{}: a core package is read from its extracted directory (tar xzf the .tgz \
                 first, as for upgrade.sh)",
                root.display()
            )));
        }
        let yaml = std::fs::read(root.join("package.yaml")).map_err(|e| {
            Error::package(format!(
                "{}: no package.yaml ({e}): is this the core package directory?",
                root.display()
            ))
        })?;
        let meta = PackageMeta::parse(&yaml)?;
        if meta.spec.kind != "core" {
            return Err(Error::package(format!(
                "{}: package.yaml says type {:?}, not core: use `ferry push` for it",
                root.display(),
                meta.spec.kind
            )));
        }
        let images = if root.join("images/index.json").is_file()
            || super::storage::is_storage_package(root)
        {
            Some(Package::open(root)?)
        } else {
            None
        };
        let plugins = sorted_with_ext(&root.join("plugins"), &["tgz"])?
            .iter()
            .map(|p| Package::open(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(CorePackage {
            root: root.to_path_buf(),
            meta,
            images,
            plugins,
            manifests: sorted_with_ext(&root.join("manifests"), &["yaml", "yml"])?,
        })
    }

    /// Every package to sync: the core images first, then the plugins.
    pub fn packages(&self) -> Vec<Package> {
        self.images
            .iter()
            .cloned()
            .chain(self.plugins.iter().cloned())
            .collect()
    }

    /// Checks every file listed in `checksums.sha256`. A mismatch or a listed file that is
    /// missing fails, naming the file; files present but not listed are returned as warnings.
    pub fn verify_checksums(&self) -> Result<(usize, Vec<String>)> {
        let list_path = self.root.join("checksums.sha256");
        let list = std::fs::read_to_string(&list_path).map_err(|e| {
            Error::integrity(format!(
                "{}: cannot read ({e}); give --skip-check-artifacts to sync without it",
                list_path.display()
            ))
        })?;
        let mut listed = HashSet::new();
        for (n, line) in list.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            let (want, name) = line.split_once(char::is_whitespace).ok_or_else(|| {
                Error::integrity(format!(
                    "{}:{}: not `<sha256>  <file>`",
                    list_path.display(),
                    n + 1
                ))
            })?;
            let name = name
                .trim_start()
                .trim_start_matches('*')
                .trim_start_matches("./");
            if name.split('/').any(|c| c == "..") || name.starts_with('/') {
                return Err(Error::integrity(format!(
                    "{}:{}: {name:?} points outside the package",
                    list_path.display(),
                    n + 1
                )));
            }
            let got = sha256_file(&self.root.join(name)).map_err(|e| {
                Error::integrity(format!("{name}: listed in checksums.sha256 but {e}"))
            })?;
            if !got.eq_ignore_ascii_case(want) {
                return Err(Error::integrity(format!(
                    "{name}: checksum mismatch (checksums.sha256 says {want}, the file is {got}): \
                     the package is damaged; copy it again. Nothing was uploaded"
                )));
            }
            listed.insert(name.to_string());
        }
        let mut unlisted = Vec::new();
        walk_files(&self.root, &self.root, &mut |rel| {
            if rel != "checksums.sha256" && !listed.contains(rel) {
                unlisted.push(format!("{rel} is not covered by checksums.sha256"));
            }
        });
        Ok((listed.len(), unlisted))
    }
}

fn sha256_file(path: &Path) -> std::result::Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("cannot be read: {e}"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn walk_files(root: &Path, dir: &Path, f: &mut dyn FnMut(&str)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk_files(root, &p, f);
        } else if let Ok(rel) = p.strip_prefix(root) {
            f(&rel.to_string_lossy());
        }
    }
}
