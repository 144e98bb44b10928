//! A Helm chart archive as an OCI artifact, the way `helm push` stores it: a config blob
//! (`application/vnd.cncf.helm.config.v1+json`, the chart's Chart.yaml as JSON), one layer
//! (the chart `.tgz` itself, `application/vnd.cncf.helm.chart.content.v1.tar+gzip`) and an OCI
//! image manifest over both. Built in memory: charts are small (capped at
//! [`MAX_CHART_BYTES`]).
//!
//! [`ChartImages`] makes a chart package's charts images of the package, so that they travel
//! the one transfer path (the engine: progress, stop, retries, every DR destination) and
//! the engine needs no notion of a chart.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{ArchiveBytes, BlobSink, Flow, Image, ImageGraph, PackageHead, PackageKind, Wanted};
use super::{Descriptor, Source};
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

/// A source with the charts of a chart package (`charts/*.tgz`) added as images
/// (`<repo>/<chart>:<version>`, `+` written `_`), whose source name is the chart file. Other
/// packages pass through unchanged.
#[derive(Debug)]
pub struct ChartImages {
    inner: Arc<dyn Source>,
    /// Repository prefix of the charts (`--target-chartrepo`).
    repo: String,
    /// The chart archives (the artifacts' layers) read for the head: the stream hands them
    /// out from memory rather than reading the package again (charts are small, capped).
    layers: Mutex<HashMap<Digest, Bytes>>,
}

impl ChartImages {
    pub fn new(inner: Arc<dyn Source>, repo: &str) -> Self {
        ChartImages {
            inner,
            repo: repo.trim_matches('/').to_string(),
            layers: Mutex::new(HashMap::new()),
        }
    }

    fn add_chart(&self, head: &mut PackageHead, file: &str) -> Result<()> {
        let chart = helm_artifact(file, self.inner.read_chart(file)?)?;
        let root = Descriptor {
            media_type: HelmArtifact::MANIFEST_MEDIA_TYPE.to_string(),
            digest: chart.manifest.0.clone(),
            size: chart.manifest.1.len() as u64,
            annotations: None,
            platform: None,
        };
        // the manifest and config as documents, as a package's own are: the engine pushes
        // configs from memory and manifests after their blobs
        head.docs.insert(chart.config.0.clone(), chart.config.1);
        head.docs.insert(chart.manifest.0, chart.manifest.1);
        let graph = ImageGraph::resolve(&root, &head.docs)?;
        head.extra_images.push(Image {
            source: file.to_string(),
            repo: format!("{}/{}", self.repo, chart.name),
            reference: chart.version.replace('+', "_"),
            graph,
        });
        self.layers
            .lock()
            .expect("not poisoned")
            .insert(chart.layer.0, chart.layer.1);
        Ok(())
    }
}

impl Source for ChartImages {
    fn read_head(&self) -> Result<PackageHead> {
        let mut head = self.inner.read_head()?;
        if head.meta.spec.kind != PackageKind::Chart {
            return Ok(head);
        }
        let files = if head.charts.is_empty() {
            self.inner.list_charts()?
        } else {
            head.charts.clone()
        };
        for file in files {
            self.add_chart(&mut head, &file)?;
        }
        Ok(head)
    }

    fn stream_blobs(&self, wanted: &Wanted, sink: &mut BlobSink<'_>) -> Result<HashSet<Digest>> {
        let held = self.layers.lock().expect("not poisoned").clone();
        let mut rest = wanted.clone();
        for d in wanted.keys() {
            if let Some(bytes) = held.get(d) {
                rest.shift_remove(d);
                if sink(d, bytes.len() as u64, &mut &bytes[..])? == Flow::Enough {
                    return Ok(HashSet::new());
                }
            }
        }
        if rest.is_empty() {
            return Ok(HashSet::new());
        }
        self.inner.stream_blobs(&rest, sink)
    }

    fn list_charts(&self) -> Result<Vec<String>> {
        self.inner.list_charts()
    }

    fn read_chart(&self, name: &str) -> Result<Vec<u8>> {
        self.inner.read_chart(name)
    }

    fn check_unchanged(&self) -> Result<()> {
        self.inner.check_unchanged()
    }

    fn archive(&self) -> Option<&dyn ArchiveBytes> {
        self.inner.archive()
    }
}
