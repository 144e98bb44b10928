//! A Helm chart archive as an OCI artifact, the way `helm push` stores it: a config blob
//! (`application/vnd.cncf.helm.config.v1+json`, the chart's Chart.yaml as JSON), one layer
//! (the chart `.tgz` itself, `application/vnd.cncf.helm.chart.content.v1.tar+gzip`) and an OCI
//! image manifest over both. Built in memory: charts are small (capped at
//! [`MAX_CHART_BYTES`]).

use std::io::Read;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::oci::Digest;

pub const MAX_CHART_BYTES: u64 = 64 << 20;
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
use crate::oci::media::OCI_MANIFEST;

pub struct HelmArtifact {
    pub name: String,
    pub version: String,
    pub config: (Digest, Bytes),
    pub layer: (Digest, Bytes),
    pub manifest: (Digest, Bytes),
}

impl HelmArtifact {
    pub const MANIFEST_MEDIA_TYPE: &'static str = OCI_MANIFEST;
}

/// Reads `Chart.yaml` from the chart archive and builds the artifact.
pub fn helm_artifact(file: &str, chart: Vec<u8>) -> Result<HelmArtifact> {
    let bad = |m: String| Error::package(format!("{file}: {m}"));
    let (compressed, count) = super::tar_guard::Counting::new(chart.as_slice());
    let mut archive =
        super::tar_guard::GuardedTar::new(flate2::read::GzDecoder::new(compressed), Some(count));
    let mut meta: Option<serde_json::Value> = None;
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a chart archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("not a chart archive: {e}")))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let parts: Vec<_> = path.components().collect();
        // `<chart>/Chart.yaml` at the top, as helm packages it
        if parts.len() == 2 && path.ends_with("Chart.yaml") {
            let mut text = String::new();
            entry
                .by_ref()
                .take(1 << 20)
                .read_to_string(&mut text)
                .map_err(|e| bad(format!("Chart.yaml: {e}")))?;
            let yaml: serde_yaml::Value =
                serde_yaml::from_str(&text).map_err(|e| bad(format!("Chart.yaml: {e}")))?;
            meta = Some(serde_json::to_value(yaml).map_err(|e| bad(format!("Chart.yaml: {e}")))?);
            break;
        }
    }
    let meta = meta.ok_or_else(|| bad("no <chart>/Chart.yaml in it".into()))?;
    let field = |k: &str| {
        meta[k]
            .as_str()
            .map(str::to_string)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad(format!("Chart.yaml has no {k}")))
    };
    let (name, version) = (field("name")?, field("version")?);
    if !crate::source::layout::valid_tag(&version.replace('+', "_")) {
        return Err(bad(format!("chart version {version:?} cannot be a tag")));
    }
    let config = Bytes::from(serde_json::to_vec(&meta).expect("json"));
    let layer = Bytes::from(chart);
    let config_d = Digest::of(&config);
    let layer_d = Digest::of(&layer);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": HELM_CONFIG, "digest": config_d.to_string(), "size": config.len()},
        "layers": [{"mediaType": HELM_CHART, "digest": layer_d.to_string(), "size": layer.len()}],
    });
    let manifest = Bytes::from(serde_json::to_vec(&manifest).expect("json"));
    Ok(HelmArtifact {
        name,
        version,
        config: (config_d, config),
        layer: (layer_d, layer),
        manifest: (Digest::of(&manifest), manifest),
    })
}
