//! `package.yaml`: the package's identity. Authoritative over the file name.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// package.yaml larger than this is refused (it is a few hundred bytes in practice).
pub const MAX_METADATA_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PackageMeta {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: Spec,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub arch: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default, rename = "type")]
    pub kind: PackageKind,
    #[serde(default)]
    pub lifecycle: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default)]
    pub related_images: Vec<String>,
}

const TYPES: &[&str] = &["bundle", "plugin", "chart", "core"];

/// `spec.type`, parsed once when package.yaml is read: every later decision (where the
/// resources go, whether the package has charts, whether `push` or `core` takes it) matches
/// on this, never on the text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PackageKind {
    /// No `spec.type` given.
    #[default]
    Unspecified,
    /// An operator bundle (OLM).
    Bundle,
    /// A cluster plugin.
    Plugin,
    Chart,
    /// The platform's own core package (`ferry sync`).
    Core,
}

impl PackageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::Unspecified => "",
            PackageKind::Bundle => "bundle",
            PackageKind::Plugin => "plugin",
            PackageKind::Chart => "chart",
            PackageKind::Core => "core",
        }
    }
}

impl TryFrom<String> for PackageKind {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        Ok(match s.as_str() {
            "" => PackageKind::Unspecified,
            "bundle" => PackageKind::Bundle,
            "plugin" => PackageKind::Plugin,
            "chart" => PackageKind::Chart,
            "core" => PackageKind::Core,
            _ => return Err(format!("spec.type must be one of {TYPES:?}, found {s:?}")),
        })
    }
}

impl From<PackageKind> for String {
    fn from(k: PackageKind) -> String {
        k.as_str().to_string()
    }
}

impl std::fmt::Display for PackageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
const LIFECYCLES: &[&str] = &["aligned", "agnostic", "core"];

impl PackageMeta {
    pub fn parse(text: &[u8]) -> Result<Self> {
        let meta: PackageMeta = serde_yaml::from_slice(text)
            .map_err(|e| Error::package(format!("package.yaml is not valid: {e}")))?;
        meta.validate()?;
        Ok(meta)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::package(format!("package.yaml: {m}")));
        if self.api_version != "ferry/v1" {
            return bad(format!(
                "apiVersion must be ferry/v1, found {:?}",
                self.api_version
            ));
        }
        if self.kind != "Package" {
            return bad(format!("kind must be Package, found {:?}", self.kind));
        }
        if self.metadata.name.trim().is_empty() {
            return bad("metadata.name is required".into());
        }
        if self.metadata.version.trim().is_empty() {
            return bad("metadata.version is required".into());
        }
        if !self.spec.lifecycle.is_empty() && !LIFECYCLES.contains(&self.spec.lifecycle.as_str()) {
            return bad(format!(
                "spec.lifecycle must be one of {LIFECYCLES:?}, found {:?}",
                self.spec.lifecycle
            ));
        }
        Ok(())
    }

    /// The arch as written in file names: `amd64`, `arm64`, or `ALL` for several.
    pub fn file_arch(&self) -> String {
        match self.metadata.arch.as_slice() {
            [one] => one.rsplit('/').next().unwrap_or(one).to_string(),
            _ => "ALL".to_string(),
        }
    }
}

/// Compares a package file name with package.yaml. Accepts `<name>.<arch>.v<version>.tgz`
/// and the older `<name>.v<version>.tgz`; returns a warning when they disagree.
pub fn file_name_warning(file_name: &str, meta: &PackageMeta) -> Option<String> {
    let stem = file_name.strip_suffix(".tgz").unwrap_or(file_name);
    let (head, version) = stem.rsplit_once(".v")?;
    let name = match head.rsplit_once('.') {
        Some((n, arch)) if ["amd64", "arm64", "ALL"].contains(&arch) => n,
        _ => head,
    };
    if name != meta.metadata.name || version != meta.metadata.version.trim_start_matches('v') {
        Some(format!(
            "file name {file_name:?} suggests {name} {version}, but package.yaml says {} {}; using package.yaml",
            meta.metadata.name, meta.metadata.version
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: ferry/v1\nkind: Package\nmetadata:\n  name: topolvm-operator\n  version: 2.3.0\n  arch: [linux/amd64]\nspec:\n  type: bundle\n  lifecycle: aligned\n  artifact: registry.alauda.cn:60080/acp/topolvm-operator-bundle:v3.11.0\n";

    #[test]
    fn parses_good_metadata() {
        let m = PackageMeta::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(m.metadata.name, "topolvm-operator");
        assert_eq!(m.spec.kind, PackageKind::Bundle);
        assert_eq!(m.file_arch(), "amd64");
    }

    #[test]
    fn rejects_missing_fields_and_bad_values() {
        let no_version = GOOD.replace("  version: 2.3.0\n", "");
        assert!(PackageMeta::parse(no_version.as_bytes())
            .unwrap_err()
            .message
            .contains("version"));
        let bad_type = GOOD.replace("type: bundle", "type: rocket");
        assert!(PackageMeta::parse(bad_type.as_bytes())
            .unwrap_err()
            .message
            .contains("spec.type"));
        assert!(PackageMeta::parse(b"{{{").is_err());
    }

    #[test]
    fn file_name_checks() {
        let m = PackageMeta::parse(GOOD.as_bytes()).unwrap();
        assert!(file_name_warning("topolvm-operator.amd64.v2.3.0.tgz", &m).is_none());
        assert!(file_name_warning("topolvm-operator.v2.3.0.tgz", &m).is_none());
        assert!(file_name_warning("other.ALL.v1.0.0.tgz", &m).is_some());
        assert!(file_name_warning("random.tgz", &m).is_none());
    }
}
