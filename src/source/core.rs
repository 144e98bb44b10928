//! The core package (`spec.type: core`), extracted into a directory as operators have it on a
//! control-plane node, or the `.tgz` itself (read without extracting): `package.yaml`, core images as an OCI layout in `images/` or as a
//! registry storage tree in `registry/` (see [`super::storage`]),
//! `plugins/*.tgz` (ordinary packages), `manifests/*.yaml` (applied after the sync) and
//! `checksums.sha256` (sha256sum format over the other files).

use std::collections::{BTreeMap, HashSet};
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
    /// `plugins/*.tgz`, in name order (in a `.tgz`: streamed from it, see `nested`).
    pub plugins: Vec<Package>,
    /// `manifests/*.yaml`, in name order: (name, text).
    pub manifests: Vec<(String, String)>,
    /// For a `.tgz`: every file's sha256 (when asked for) and `checksums.sha256`.
    archive: Option<ArchiveFiles>,
}

struct ArchiveFiles {
    hashes: BTreeMap<String, String>,
    checksums: Option<String>,
}

/// Manifests and checksum lists are small; anything larger is not one.
const MAX_TEXT_BYTES: u64 = 4 << 20;

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

fn core_meta(yaml: &[u8], root: &Path) -> Result<PackageMeta> {
    let meta = PackageMeta::parse(yaml)?;
    if meta.spec.kind != super::PackageKind::Core {
        return Err(Error::package(format!(
            "{}: package.yaml says type {:?}, not core: use `ferry push` for it",
            root.display(),
            meta.spec.kind.as_str()
        )));
    }
    Ok(meta)
}

impl CorePackage {
    /// Opens an extracted core package directory, or the `.tgz` itself. A `.tgz` is read once
    /// here to find its parts (and, with `hash_files`, to hash every file for
    /// `checksums.sha256`); its images and plugins are then streamed from it.
    pub fn open(root: &Path, hash_files: bool) -> Result<Self> {
        if root.is_file() {
            return Self::open_archive(root, hash_files);
        }
        if !root.is_dir() {
            return Err(Error::package(format!(
                "{}: not a core package directory or .tgz",
                root.display()
            )));
        }
        let yaml = std::fs::read(root.join("package.yaml")).map_err(|e| {
            Error::package(format!(
                "{}: no package.yaml ({e}): is this the core package directory?",
                root.display()
            ))
        })?;
        let meta = core_meta(&yaml, root)?;
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
        let mut manifests = Vec::new();
        for path in sorted_with_ext(&root.join("manifests"), &["yaml", "yml"])? {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let text = super::read_file_limited(&path, MAX_TEXT_BYTES, &name)?;
            manifests.push((name, String::from_utf8_lossy(&text).into_owned()));
        }
        Ok(CorePackage {
            root: root.to_path_buf(),
            meta,
            images,
            plugins,
            manifests,
            archive: None,
        })
    }

    fn open_archive(path: &Path, hash_files: bool) -> Result<Self> {
        let outer = Package::open(path)?;
        let mut meta = None;
        let mut checksums = None;
        let mut manifests = Vec::new();
        let mut plugins = Vec::new();
        let mut has_images = false;
        let mut has_tree = false;
        let mut hashes = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut visit = |name: &str, size: u64, r: &mut dyn Read| -> Result<()> {
            // one name, one entry: with two copies of a file, the copy whose hash is checked
            // and the copy that is applied could differ (names arrive normalised, so
            // `./manifests/a.yaml` and `manifests/a.yaml` are the same name here)
            if !seen.insert(name.to_string()) {
                return Err(Error::package(format!(
                    "{name} appears twice in the archive: refused (which copy would be checked \
                     and which used?); rebuild the package"
                )));
            }
            let parts: Vec<&str> = name.split('/').collect();
            let small = match parts.as_slice() {
                ["package.yaml"] | ["checksums.sha256"] => true,
                ["manifests", m] => m.ends_with(".yaml") || m.ends_with(".yml"),
                _ => false,
            };
            match parts.as_slice() {
                ["plugins", p] if p.ends_with(".tgz") => plugins.push(name.to_string()),
                ["images", "index.json"] => has_images = true,
                ["registry", ..] => has_tree = true,
                _ => {}
            }
            let mut hasher = Sha256::new();
            if small {
                let bytes = super::read_limited(&mut *r, size, MAX_TEXT_BYTES, name)?;
                hasher.update(&bytes);
                match parts.as_slice() {
                    ["package.yaml"] => meta = Some(core_meta(&bytes, path)?),
                    ["checksums.sha256"] => {
                        checksums = Some(String::from_utf8_lossy(&bytes).into_owned())
                    }
                    _ => manifests.push((
                        name.to_string(),
                        String::from_utf8_lossy(&bytes).into_owned(),
                    )),
                }
            } else if hash_files {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = r
                        .read(&mut buf)
                        .map_err(|e| Error::package(format!("{name}: read failed: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
            }
            // the small files (package.yaml, manifests) are hashed always: what is applied
            // is checked even when the images are not read (`sync --skip-sync-image`)
            if hash_files || small {
                hashes.insert(name.to_string(), hex::encode(hasher.finalize()));
            }
            Ok(())
        };
        super::archive::for_each_file(outer.archive()?, &mut visit)
            .map_err(|e| e.context(format!("core package {}", path.display())))?;
        let meta = meta.ok_or_else(|| {
            Error::package(format!(
                "{}: no package.yaml in the archive",
                path.display()
            ))
        })?;
        plugins.sort();
        manifests.sort();
        Ok(CorePackage {
            root: path.to_path_buf(),
            meta,
            images: (has_images || has_tree).then(|| outer.clone()),
            plugins: plugins.iter().map(|e| Package::nested(&outer, e)).collect(),
            manifests,
            archive: Some(ArchiveFiles { hashes, checksums }),
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

    /// Checks the files listed in `checksums.sha256` (all of them, or with
    /// [`ChecksumScope::Manifests`] those under `manifests/` and `package.yaml`). A mismatch
    /// or a listed file that is missing fails, naming the file; so does a manifest the list
    /// does not name, since manifests are applied to the cluster. Other files present but not
    /// listed are returned as warnings. Manifests are hashed as held in memory: the bytes
    /// checked are the bytes applied.
    pub fn verify_checksums(&self, scope: ChecksumScope) -> Result<(usize, Vec<String>)> {
        let list_path = self.root.join("checksums.sha256");
        let no_list = |e: String| {
            Error::integrity(format!(
                "{}: cannot read ({e}); give --skip-check-artifacts to sync without it",
                list_path.display()
            ))
        };
        let wanted = |name: &str| match scope {
            ChecksumScope::Everything => true,
            ChecksumScope::Manifests => name == "package.yaml" || name.starts_with("manifests/"),
        };
        let required: Vec<&str> = self.manifests.iter().map(|(n, _)| n.as_str()).collect();
        let held = |name: &str| {
            self.manifests
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, text)| hex::encode(Sha256::digest(text.as_bytes())))
        };
        match &self.archive {
            None => {
                let list =
                    std::fs::read_to_string(&list_path).map_err(|e| no_list(e.to_string()))?;
                let mut all = Vec::new();
                walk_files(&self.root, &self.root, &mut |rel| all.push(rel.to_string()));
                check_list(&list, &all, &wanted, &required, &|name| match held(name) {
                    Some(h) => Ok(h),
                    None => sha256_file(&self.root.join(name)),
                })
            }
            Some(files) => {
                let list = files
                    .checksums
                    .as_deref()
                    .ok_or_else(|| no_list("not in the archive".into()))?;
                let all: Vec<String> = files.hashes.keys().cloned().collect();
                check_list(list, &all, &wanted, &required, &|name| {
                    files
                        .hashes
                        .get(name)
                        .cloned()
                        .ok_or_else(|| "is not in the archive".to_string())
                })
            }
        }
    }
}

/// Which files of `checksums.sha256` a run checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumScope {
    /// Every listed file: images are read and uploaded.
    Everything,
    /// `package.yaml` and `manifests/`: only the manifests are used (`--skip-sync-image`).
    Manifests,
}

/// Compares `list` (sha256sum format) with `hash_of` each named file; `all` files present,
/// for the warning about files the list does not cover.
/// Only names `wanted` are checked; every name in `required` must be listed.
fn check_list(
    list: &str,
    all: &[String],
    wanted: &dyn Fn(&str) -> bool,
    required: &[&str],
    hash_of: &dyn Fn(&str) -> std::result::Result<String, String>,
) -> Result<(usize, Vec<String>)> {
    let mut listed = HashSet::new();
    for (n, line) in list.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let (want, name) = line.split_once(char::is_whitespace).ok_or_else(|| {
            Error::integrity(format!(
                "checksums.sha256:{}: not `<sha256>  <file>`",
                n + 1
            ))
        })?;
        let name = name
            .trim_start()
            .trim_start_matches('*')
            .trim_start_matches("./");
        if name.split('/').any(|c| c == "..") || name.starts_with('/') {
            return Err(Error::integrity(format!(
                "checksums.sha256:{}: {name:?} points outside the package",
                n + 1
            )));
        }
        if !wanted(name) {
            continue;
        }
        let got = hash_of(name)
            .map_err(|e| Error::integrity(format!("{name}: listed in checksums.sha256 but {e}")))?;
        if !got.eq_ignore_ascii_case(want) {
            return Err(Error::integrity(format!(
                "{name}: checksum mismatch (checksums.sha256 says {want}, the file is {got}): \
                 the package is damaged; copy it again. Nothing was uploaded"
            )));
        }
        listed.insert(name.to_string());
    }
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|r| !listed.contains(*r))
        .collect();
    if !missing.is_empty() {
        return Err(Error::integrity(format!(
            "{}: not listed in checksums.sha256. Manifests are applied to the cluster only \
             when the package's checksum list covers them: the package is incomplete or was \
             changed after it was made; get it again (or give --skip-check-artifacts to apply \
             it unchecked). Nothing was uploaded or applied",
            missing.join(", ")
        )));
    }
    let unlisted = all
        .iter()
        .filter(|rel| {
            rel.as_str() != "checksums.sha256" && wanted(rel) && !listed.contains(rel.as_str())
        })
        .map(|rel| format!("{rel} is not covered by checksums.sha256"))
        .collect();
    Ok((listed.len(), unlisted))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    #[test]
    fn a_name_twice_in_the_archive_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let core = dir.path().join("core");
        crate::devtools::core_package(&core, "v4.2.0", &[]).unwrap();
        let tgz = dir.path().join("core.tgz");
        let f = std::fs::File::create(&tgz).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        b.append_dir_all(".", &core).unwrap();
        // a second copy of a manifest, as `tar -r` appends one
        let manifest = std::fs::read_dir(core.join("manifests"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let name = format!(
            "manifests/{}",
            manifest.file_name().unwrap().to_string_lossy()
        );
        b.append_path_with_name(&manifest, name).unwrap();
        b.into_inner().unwrap().finish().unwrap();
        let e = CorePackage::open(&tgz, true).err().expect("refused");
        assert!(e.message.contains("appears twice"), "{}", e.message);
    }

    #[test]
    fn manifests_must_be_listed_and_match() {
        let files = [
            ("package.yaml", "p"),
            ("manifests/a.yaml", "a"),
            ("images/x", "x"),
        ];
        let hash_of = |name: &str| {
            files
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| sha(t))
                .ok_or_else(|| "is missing".to_string())
        };
        let all: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
        let every = |_: &str| true;
        let list = format!(
            "{}  package.yaml\n{}  ./manifests/a.yaml\n",
            sha("p"),
            sha("a")
        );
        let (n, warnings) =
            check_list(&list, &all, &every, &["manifests/a.yaml"], &hash_of).unwrap();
        assert_eq!(n, 2);
        assert_eq!(warnings, ["images/x is not covered by checksums.sha256"]);
        // a manifest the list does not name: refused, naming it
        let e = check_list(
            &list,
            &all,
            &every,
            &["manifests/a.yaml", "manifests/b.yaml"],
            &hash_of,
        )
        .unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Integrity);
        assert!(
            e.message.starts_with("manifests/b.yaml: not listed"),
            "{}",
            e.message
        );
        // only the wanted names are hashed (a listed image file that is missing is not read)
        let list = format!("{list}{}  images/gone\n", sha("gone"));
        assert!(check_list(&list, &all, &every, &[], &hash_of).is_err());
        let manifests_only = |n: &str| n == "package.yaml" || n.starts_with("manifests/");
        let (n, warnings) = check_list(
            &list,
            &all,
            &manifests_only,
            &["manifests/a.yaml"],
            &hash_of,
        )
        .unwrap();
        assert_eq!((n, warnings.len()), (2, 0));
    }
}
