//! The OCI image layout inside a package: `index.json`, manifests, image indexes, descriptors.
//! Only what the pipeline needs is parsed; manifest bytes are always kept exactly as read.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::oci::{Digest, Verified};

/// index.json, manifests, image indexes and configs larger than this are refused.
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;
/// Image indexes nested deeper than this are refused (a cycle is refused at any depth).
pub const MAX_INDEX_DEPTH: usize = 8;

use crate::oci::media::is_index_type;
pub use crate::oci::Descriptor;

/// `index.json` at the top of the layout (and any image index).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

impl Index {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::package(format!("{what} is not a valid OCI index: {e}")))
    }
}

/// What a manifest-like document points at.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// An image index / manifest list: children are manifests.
    Index(Vec<Descriptor>),
    /// An image manifest: config and layers are blobs.
    Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
struct RawDoc {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    manifests: Option<Vec<Descriptor>>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
}

impl Document {
    /// Parses a manifest or image index. The descriptor's media type decides; when it is
    /// missing or unknown, the document's own shape does.
    pub fn parse(bytes: &[u8], desc_media_type: &str) -> Result<Self> {
        let raw: RawDoc = serde_json::from_slice(bytes)
            .map_err(|e| Error::package(format!("manifest is not valid JSON: {e}")))?;
        let media = if desc_media_type.is_empty() {
            raw.media_type.clone().unwrap_or_default()
        } else {
            desc_media_type.to_string()
        };
        if is_index_type(&media) || (raw.manifests.is_some() && raw.config.is_none()) {
            return Ok(Document::Index(raw.manifests.unwrap_or_default()));
        }
        match raw.config {
            Some(config) => Ok(Document::Manifest {
                config,
                layers: raw.layers.unwrap_or_default(),
            }),
            None => Err(Error::package(format!(
                "manifest of type {media:?} has neither \"manifests\" nor \"config\""
            ))),
        }
    }
}

/// One image of a package, resolved: the documents to push (children before parents, root
/// last) and the blobs they need.
#[derive(Debug, Clone)]
pub struct ImageGraph {
    pub root: Descriptor,
    /// Manifests and indexes in push order; the last one is the root.
    pub manifests: Vec<(Descriptor, Bytes)>,
    /// Configs and layers, each once.
    pub blobs: Vec<Descriptor>,
}

impl ImageGraph {
    /// What this image's manifests and indexes weigh: each resolved image holds its own
    /// graph, so a bound on what a package holds counts this once per image.
    pub fn manifest_bytes(&self) -> u64 {
        self.manifests.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// Walks from `root` through `docs` (the in-memory manifests/configs of the package).
    pub fn resolve(root: &Descriptor, docs: &HashMap<Digest, Bytes>) -> Result<Self> {
        let mut graph = ImageGraph {
            root: root.clone(),
            manifests: Vec::new(),
            blobs: Vec::new(),
        };
        let mut seen_blobs = HashSet::new();
        let mut path = Vec::new();
        graph.walk(root, docs, &mut path, &mut seen_blobs)?;
        Ok(graph)
    }

    fn walk(
        &mut self,
        desc: &Descriptor,
        docs: &HashMap<Digest, Bytes>,
        path: &mut Vec<Digest>,
        seen_blobs: &mut HashSet<Digest>,
    ) -> Result<()> {
        if path.contains(&desc.digest) {
            return Err(Error::package(format!(
                "image indexes form a cycle at {}",
                desc.digest
            )));
        }
        if path.len() > MAX_INDEX_DEPTH {
            return Err(Error::package(format!(
                "image indexes nested deeper than {MAX_INDEX_DEPTH} at {}",
                desc.digest
            )));
        }
        let bytes = docs.get(&desc.digest).ok_or_else(|| {
            Error::integrity(format!(
                "manifest {} is missing from the package",
                desc.digest
            ))
        })?;
        check_blob(desc, bytes)?;
        let doc = Document::parse(bytes, &desc.media_type)
            .map_err(|e| e.context(format!("manifest {}", desc.digest)))?;
        path.push(desc.digest.clone());
        match doc {
            Document::Index(children) => {
                for child in &children {
                    if self.manifests.iter().any(|(d, _)| d.digest == child.digest) {
                        continue;
                    }
                    self.walk(child, docs, path, seen_blobs)?;
                }
            }
            Document::Manifest { config, layers } => {
                for blob in std::iter::once(config).chain(layers) {
                    if seen_blobs.insert(blob.digest.clone()) {
                        self.blobs.push(blob);
                    }
                }
            }
        }
        path.pop();
        self.manifests.push((desc.clone(), bytes.clone()));
        Ok(())
    }
}

/// Checks in-memory bytes against their descriptor.
pub fn check_blob(desc: &Descriptor, bytes: &[u8]) -> Result<Verified> {
    crate::oci::verify(&desc.digest, desc.size, bytes)
}

/// `host[:port]/path/name:tag` (or `@sha256:...`) split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub host: String,
    pub repository: String,
    /// A tag, or a digest when the reference has no tag.
    pub reference: String,
}

impl SourceRef {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::package(format!("image reference {s:?} is not host[:port]/path:tag"));
        let (host, rest) = s.split_once('/').ok_or_else(bad)?;
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(bad());
        }
        // `repo@digest` (a digest, parsed), else `repo:tag` with the OCI tag grammar
        // `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`: a reference becomes part of a URL path, so
        // nothing else may pass (a tag like `..\..\x\manifests\v1` would point elsewhere).
        let (repository, reference) = if let Some((repo, digest)) = rest.split_once('@') {
            let repo = repo.split(':').next().unwrap_or(repo);
            let d = Digest::parse(digest)
                .map_err(|e| Error::package(format!("image reference {s:?}: bad digest: {e}")))?;
            (repo.to_string(), d.to_string())
        } else {
            let (repo, tag) = rest.rsplit_once(':').ok_or_else(bad)?;
            if repo.is_empty() || !valid_tag(tag) {
                return Err(Error::package(format!(
                    "image reference {s:?}: tag {tag:?} is not a valid tag \
                     ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
                )));
            }
            (repo.to_string(), tag.to_string())
        };
        let valid_repo = repository.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c != ".."
                && c != "."
        });
        if !valid_repo {
            return Err(bad());
        }
        Ok(SourceRef {
            host: host.to_string(),
            repository,
            reference,
        })
    }
}

/// The OCI distribution tag grammar: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media::{OCI_INDEX, OCI_MANIFEST};

    #[test]
    fn hostile_references_are_refused() {
        for bad in [
            r"r.io/acp/x:..\..\acp\victim\manifests\v1",
            "r.io/acp/x:.hidden",
            "r.io/acp/x:-dash",
            "r.io/acp/x:v1?x=y",
            "r.io/acp/x:v1#f",
            "r.io/acp/x:v1 ",
            "r.io/acp/x@sha256:../../etc",
            "r.io/acp/x@md5:abc",
            "r.io/acp/x@sha256:ABCDEF",
            &format!("r.io/acp/x:{}", "a".repeat(129)),
            "r.io/ACP/x:v1",
            "r.io/acp//x:v1",
        ] {
            assert!(SourceRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(SourceRef::parse(&format!("r.io/acp/x:{}", "a".repeat(128))).is_ok());
        assert!(SourceRef::parse("r.io/acp/x:_v1.2-rc_3").is_ok());
    }

    fn desc(media: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media.into(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            annotations: None,
            platform: None,
        }
    }

    #[test]
    fn parses_references() {
        let r = SourceRef::parse("registry.alauda.cn:60080/acp/topolvm:v3.11.0").unwrap();
        assert_eq!(r.host, "registry.alauda.cn:60080");
        assert_eq!(r.repository, "acp/topolvm");
        assert_eq!(r.reference, "v3.11.0");
        assert!(SourceRef::parse("acp/topolvm:v1").is_err());
        assert!(SourceRef::parse("r.io/acp/../x:v1").is_err());
        let d = SourceRef::parse(&format!("r.io/a/b@{}", Digest::of(b"x"))).unwrap();
        assert!(d.reference.starts_with("sha256:"));
    }

    #[test]
    fn resolves_index_children_first_and_detects_cycles() {
        let config = b"{}".to_vec();
        let layer = b"layer".to_vec();
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": desc("application/vnd.oci.image.config.v1+json", &config),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", &layer)]
        }))
        .unwrap();
        let md = desc(OCI_MANIFEST, &m);
        let idx = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [md.clone()]
        }))
        .unwrap();
        let id = desc(OCI_INDEX, &idx);
        let mut docs = HashMap::new();
        docs.insert(md.digest.clone(), Bytes::from(m));
        docs.insert(id.digest.clone(), Bytes::from(idx));
        let g = ImageGraph::resolve(&id, &docs).unwrap();
        assert_eq!(g.manifests.len(), 2);
        assert_eq!(g.manifests[1].0.digest, id.digest);
        assert_eq!(g.blobs.len(), 2);

        // an index that lists itself cannot be written (its digest would change), so build a
        // two-index cycle by lying about a digest in the map instead
        let a = desc(OCI_INDEX, b"a");
        let looping = serde_json::to_vec(&serde_json::json!({"manifests": [a.clone()]})).unwrap();
        let mut docs = HashMap::new();
        docs.insert(a.digest.clone(), Bytes::from(looping));
        let err = ImageGraph::resolve(&a, &docs).unwrap_err();
        assert!(err.message.contains("mismatch"), "{}", err.message);
    }

    #[test]
    fn missing_manifest_is_an_integrity_error() {
        let d = desc(OCI_MANIFEST, b"nothing");
        let err = ImageGraph::resolve(&d, &HashMap::new()).unwrap_err();
        assert!(err.message.contains("missing"));
    }
}
