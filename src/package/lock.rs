//! `images.lock`: what `create` resolved and `build` packs, exactly. YAML, meant to be read
//! in review and diffed between versions: every image with the digest its tag pointed at and,
//! per platform, the manifest taken.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::oci::Digest;

pub const LOCK_FILE: &str = "images.lock";
pub const META_FILE: &str = "package.yaml";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Lock {
    pub api_version: String,
    pub kind: String,
    /// `--platforms` of `create`.
    pub platforms: Vec<String>,
    /// The artifact `create` was given.
    pub artifact: Locked,
    /// For `chart` packages: the chart archive's digest and its file under `charts/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartFile>,
    /// Every image of the package, sorted by reference (the artifact first for plugins and
    /// bundles, whose artifact is an image of the package).
    pub images: Vec<Locked>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChartFile {
    pub file: String,
    pub digest: Digest,
    pub size: u64,
}

/// One image: what its reference resolved to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Locked {
    pub reference: String,
    /// Where the image was named (`values.yaml global.images.web`, `--image`, ...).
    pub from: String,
    /// The manifest or index the reference pointed at.
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The platform manifests taken (for an index: its children kept; for a single manifest:
    /// itself, with the platform of its config; none for a non-image artifact).
    #[serde(default)]
    pub manifests: Vec<PlatformManifest>,
    /// Children of the index were dropped: `build` writes a new index with the kept ones
    /// (another digest, same tag).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub index_rewritten: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlatformManifest {
    pub platform: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

impl Lock {
    pub fn read(dir: &Path) -> Result<Lock> {
        let path = dir.join(LOCK_FILE);
        let text = std::fs::read(&path).map_err(|e| {
            Error::package(format!(
                "{}: cannot read: {e}; run `ferry package create` first",
                path.display()
            ))
        })?;
        let lock: Lock = serde_yaml::from_slice(&text)
            .map_err(|e| Error::package(format!("{}: {e}", path.display())))?;
        if lock.api_version != "ferry/v1" || lock.kind != "ImagesLock" {
            return Err(Error::package(format!(
                "{}: not a ferry/v1 ImagesLock",
                path.display()
            )));
        }
        Ok(lock)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_yaml::to_string(self)
            .map_err(|e| Error::internal(format!("writing {LOCK_FILE}: {e}")))?;
        let header =
            "# Written by `ferry package create`; `ferry package build` packs exactly this.\n";
        std::fs::write(dir.join(LOCK_FILE), format!("{header}{text}"))
            .map_err(|e| Error::internal(format!("writing {}: {e}", dir.join(LOCK_FILE).display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_round_trips() {
        let d = Digest::of(b"x");
        let locked = Locked {
            reference: "r:5000/acp/a:v1".into(),
            from: "--image".into(),
            digest: d.clone(),
            media_type: crate::oci::media::OCI_INDEX.into(),
            size: 10,
            manifests: vec![PlatformManifest {
                platform: "linux/amd64".into(),
                digest: d.clone(),
                media_type: crate::oci::media::OCI_MANIFEST.into(),
                size: 5,
            }],
            index_rewritten: true,
            note: Some("support_arm: false".into()),
        };
        let lock = Lock {
            api_version: "ferry/v1".into(),
            kind: "ImagesLock".into(),
            platforms: vec!["linux/amd64".into()],
            artifact: locked.clone(),
            chart: None,
            images: vec![locked],
        };
        let dir = tempfile::tempdir().unwrap();
        lock.write(dir.path()).unwrap();
        assert_eq!(Lock::read(dir.path()).unwrap(), lock);
    }
}
