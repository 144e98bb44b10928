//! The shared vocabulary of the OCI specs: digests, descriptors, media types, and the one
//! check of bytes against a digest and size ([`Check`] / [`verify`], producing [`Verified`]).
//! Used by the sources (reading packages), the engine, the sink and `pack`; it depends on
//! none of them.

pub mod digest;
pub mod media;
mod verified;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use digest::{Digest, HashingReader};
pub use verified::{verify, Check, CheckingReader, Verified};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

impl Descriptor {
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .as_ref()?
            .get(media::REF_NAME_ANNOTATION)
            .map(|s| s.as_str())
    }

    /// Foreign / non-distributable layers are, by convention, not copied between registries.
    pub fn is_nondistributable(&self) -> bool {
        self.media_type.contains("foreign") || self.media_type.contains("nondistributable")
    }
}
