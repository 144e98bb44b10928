//! Media types and annotations of the OCI image and distribution specs that we act on.

pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The media type a manifest says it has; for an OCI manifest or index that leaves
/// `mediaType` out (allowed), the one its shape gives.
pub fn sniff_media_type(bytes: &[u8]) -> String {
    let doc: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match doc["mediaType"].as_str() {
        Some(m) => m.to_string(),
        None if doc["manifests"].is_array() => OCI_INDEX.to_string(),
        None => OCI_MANIFEST.to_string(),
    }
}

/// Config and layer media types we know; others are pushed as they are, with a warning.
pub fn is_known_blob_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
        || [
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.oci.empty.v1+json",
            "application/vnd.cncf.helm.config.v1+json",
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
        ]
        .contains(&media_type)
}

pub fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}
