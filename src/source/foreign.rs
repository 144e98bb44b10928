//! What the sources of other tools' archives ([`super::docker_archive`],
//! [`super::oci_archive`]) share: they have no `package.yaml`, so their head carries a
//! stand-in identity (the file name) and their images are named from the archive.

use std::collections::BTreeMap;

use super::metadata::{Metadata, PackageMeta, Spec};
use crate::oci::media::REF_NAME_ANNOTATION;
use crate::oci::Descriptor;

/// The formats of other tools that `push` and `show` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignFormat {
    DockerArchive,
    OciArchive,
}

impl ForeignFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ForeignFormat::DockerArchive => "docker-archive",
            ForeignFormat::OciArchive => "oci-archive",
        }
    }
}

/// The identity of an archive that has no package.yaml: its file name, no version, no
/// type. Enough for reports; not enough for platform resources (push refuses
/// `--platform-address` for these files).
pub fn stand_in_meta(label: &str) -> PackageMeta {
    PackageMeta {
        api_version: "ferry/v1".into(),
        kind: "Package".into(),
        metadata: Metadata {
            name: label.to_string(),
            ..Default::default()
        },
        spec: Spec::default(),
    }
}

/// `desc` as an entry of the head's image list: `ref.name` set to the full reference found
/// for it. Without one, `ref.name` keeps what was found (or is left out), so the image is
/// reported as unpushable by name, and a warning says why and what to do.
pub fn named(
    mut desc: Descriptor,
    name: Result<String, String>,
    what: &str,
    warnings: &mut Vec<String>,
) -> Descriptor {
    let mut annotations = BTreeMap::new();
    match name {
        Ok(full) => {
            annotations.insert(REF_NAME_ANNOTATION.to_string(), full);
        }
        Err(found) => {
            warnings.push(format!(
                "{what} ({}) has no image name{}: it is not pushed; save it again with a name \
                 (e.g. `docker save NAME:TAG`, `skopeo copy ... oci-archive:FILE:HOST/PATH:TAG`)",
                desc.digest,
                if found.is_empty() {
                    String::new()
                } else {
                    format!(" (only {found:?}, a tag without a repository)")
                }
            ));
            if !found.is_empty() {
                annotations.insert(REF_NAME_ANNOTATION.to_string(), found);
            }
        }
    }
    desc.annotations = (!annotations.is_empty()).then_some(annotations);
    desc
}
