//! A source registry for `ferry package`, filled by the tests' own code (ferry's sink API,
//! blob by blob): a plugin chart pushed as a Helm OCI artifact (module-plugin.yaml, values.yaml
//! naming three images, one `support_arm: false`), those images as amd64+arm64 indexes, and
//! an operator bundle image whose CSV names two related images.
#![allow(dead_code)]

use std::collections::BTreeMap;

use bytes::Bytes;
use ferry::oci::Digest;
use ferry::sink::{Registry, RegistryApi, RegistryOptions};
use serde_json::json;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CHART_REPO: &str = "acp/chart-demo-plugin";
pub const CHART_TAG: &str = "v1.2.0";
pub const BUNDLE_REPO: &str = "acp/demo-operator-bundle";

/// What was pushed: per image repository, its index digest and per arch its manifest and
/// layers.
#[derive(Default, Debug, Clone)]
pub struct Filled {
    pub indexes: BTreeMap<String, Digest>,
    pub manifests: BTreeMap<(String, String), Digest>,
    pub layers: BTreeMap<(String, String), Vec<Digest>>,
    /// Every layer digest with its size.
    pub sizes: BTreeMap<Digest, u64>,
}

pub struct Pusher {
    rt: tokio::runtime::Runtime,
    reg: Registry,
    /// The host images are named with (a proxy's, when the tests put one in front).
    pub host: String,
    pub filled: Filled,
}

impl Pusher {
    /// Pushes to the registry at `port` (plain HTTP); references name `host`.
    pub fn new(port: u16, host: &str) -> Pusher {
        let reg = Registry::new(RegistryOptions {
            host: format!("127.0.0.1:{port}"),
            prefix: String::new(),
            plain_http: true,
            insecure: false,
            ca_file: None,
            extra_roots: Vec::new(),
            credentials: None,
            credential_origin: None,
            token_realms: Vec::new(),
            retry: Default::default(),
            timeout: std::time::Duration::from_secs(30),
        })
        .unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(reg.check()).unwrap();
        Pusher {
            rt,
            reg,
            host: host.to_string(),
            filled: Filled::default(),
        }
    }

    pub fn blob(&mut self, repo: &str, bytes: &[u8]) -> (Digest, u64) {
        let d = Digest::of(bytes);
        let v = ferry::oci::verify(&d, bytes.len() as u64, bytes).unwrap();
        let b = Bytes::copy_from_slice(bytes);
        self.rt
            .block_on(self.reg.upload_whole(repo, &v, b))
            .unwrap();
        (d, bytes.len() as u64)
    }

    pub fn manifest(&mut self, repo: &str, tag: &str, media: &str, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        let b = Bytes::copy_from_slice(bytes);
        self.rt
            .block_on(self.reg.put_manifest(repo, tag, media, b))
            .unwrap();
        d
    }

    /// One image manifest of `layers` for `arch`; its descriptor (with platform).
    pub fn image(&mut self, repo: &str, arch: &str, layers: &[(u64, usize)]) -> serde_json::Value {
        let mut descs = Vec::new();
        let mut digests = Vec::new();
        for (seed, size) in layers {
            let bytes = ferry::devtools::random_layer(*seed, *size);
            let (d, n) = self.blob(repo, &bytes);
            self.filled.sizes.insert(d.clone(), n);
            digests.push(d.clone());
            descs.push(json!({"mediaType": OCI_LAYER, "digest": d, "size": n}));
        }
        let config = json!({"architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": digests}});
        let config = serde_json::to_vec(&config).unwrap();
        let (cd, cn) = self.blob(repo, &config);
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
            "layers": descs});
        let m = serde_json::to_vec_pretty(&m).unwrap();
        let d = self.manifest(repo, Digest::of(&m).as_str(), OCI_MANIFEST, &m);
        self.filled
            .manifests
            .insert((repo.to_string(), arch.to_string()), d.clone());
        self.filled
            .layers
            .insert((repo.to_string(), arch.to_string()), digests);
        json!({"mediaType": OCI_MANIFEST, "digest": d, "size": m.len(),
            "platform": {"architecture": arch, "os": "linux"}})
    }

    /// An amd64+arm64 index at `repo:tag` over a shared base layer and one own layer each.
    pub fn multiarch(&mut self, repo: &str, tag: &str, seed: u64, own: usize) {
        let base = (1000, 150_000);
        let amd = self.image(repo, "amd64", &[base, (seed, own)]);
        let arm = self.image(repo, "arm64", &[base, (seed + 1, own + 1000)]);
        let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [amd, arm]});
        let idx = serde_json::to_vec_pretty(&idx).unwrap();
        let d = self.manifest(repo, tag, OCI_INDEX, &idx);
        self.filled.indexes.insert(repo.to_string(), d);
    }

    /// The plugin chart as a Helm OCI artifact at `acp/chart-demo-plugin:v1.2.0`, and its
    /// three images (`acp/legacy` with `support_arm: false`).
    pub fn plugin(&mut self) -> String {
        self.multiarch("acp/web", "v1", 10, 600_000);
        self.multiarch("acp/worker", "v1", 20, 1_500_000);
        self.multiarch("acp/legacy", "v1", 30, 300_000);
        let values = "global:\n  registry:\n    address: registry.example\n  images:\n    web:\n      repository: acp/web\n      tag: v1\n      support_arm: true\n    worker:\n      repository: acp/worker\n      tag: v1\n    legacy:\n      repository: acp/legacy\n      tag: v1\n      support_arm: false\n      thirdparty: true\n";
        let module_plugin = "apiVersion: cluster.alauda.io/v1alpha1\nkind: ModulePlugin\nmetadata:\n  name: demo-plugin\n  annotations:\n    cpaas.io/display-name: '{\"en\": \"Demo Plugin\"}'\nspec:\n  name: demo-plugin\n  mainChart: acp/chart-demo-plugin\n";
        let chart_yaml =
            "apiVersion: v2\nname: chart-demo-plugin\nversion: 1.2.0\nappVersion: v1.2.0\n";
        let tgz = tgz(&[
            ("chart-demo-plugin/Chart.yaml", chart_yaml),
            ("chart-demo-plugin/values.yaml", values),
            ("chart-demo-plugin/module-plugin.yaml", module_plugin),
            (
                "chart-demo-plugin/templates/deploy.yaml",
                "kind: Deployment\n",
            ),
        ]);
        self.helm(CHART_REPO, CHART_TAG, chart_yaml, &tgz);
        format!("{}/{CHART_REPO}:{CHART_TAG}", self.host)
    }

    /// A plain chart (no module-plugin.yaml) naming one image.
    pub fn chart(&mut self) -> String {
        if !self.filled.indexes.contains_key("acp/web") {
            self.multiarch("acp/web", "v1", 10, 600_000);
        }
        let chart_yaml = "apiVersion: v2\nname: plain-chart\nversion: 0.3.0\n";
        let values = "global:\n  images:\n    web:\n      repository: acp/web\n      tag: v1\n";
        let tgz = tgz(&[
            ("plain-chart/Chart.yaml", chart_yaml),
            ("plain-chart/values.yaml", values),
        ]);
        self.helm("acp/plain-chart", "0.3.0", chart_yaml, &tgz);
        format!("{}/acp/plain-chart:0.3.0", self.host)
    }

    fn helm(&mut self, repo: &str, tag: &str, chart_yaml: &str, tgz: &[u8]) {
        let v: serde_yaml::Value = serde_yaml::from_str(chart_yaml).unwrap();
        let config = serde_json::to_vec(&v).unwrap();
        let (cd, cn) = self.blob(repo, &config);
        let (ld, ln) = self.blob(repo, tgz);
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": cd, "size": cn},
            "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": ld, "size": ln}]});
        self.manifest(repo, tag, OCI_MANIFEST, &serde_json::to_vec(&m).unwrap());
    }

    /// An operator bundle image (one layer: manifests/ and metadata/) whose CSV names
    /// `acp/operator:v2` (relatedImages and the deployment) and `acp/operand:v2`.
    pub fn bundle(&mut self) -> String {
        self.multiarch("acp/operator", "v2", 40, 200_000);
        self.multiarch("acp/operand", "v2", 50, 250_000);
        let h = &self.host;
        let csv = format!("apiVersion: operators.coreos.com/v1alpha1\nkind: ClusterServiceVersion\nmetadata:\n  name: demo-operator.v2.0.0\nspec:\n  displayName: Demo Operator\n  version: 2.0.0\n  relatedImages:\n  - name: operator\n    image: {h}/acp/operator:v2\n  - name: operand\n    image: {h}/acp/operand:v2\n  install:\n    strategy: deployment\n    spec:\n      deployments:\n      - name: demo-operator\n        spec:\n          template:\n            spec:\n              containers:\n              - name: manager\n                image: {h}/acp/operator:v2\n");
        let annotations = "annotations:\n  operators.operatorframework.io.bundle.package.v1: demo-operator\n  operators.operatorframework.io.bundle.channels.v1: stable\n";
        let layer = tgz(&[
            ("manifests/demo-operator.clusterserviceversion.yaml", &csv),
            ("metadata/annotations.yaml", annotations),
        ]);
        let (ld, ln) = self.blob(BUNDLE_REPO, &layer);
        let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}});
        let (cd, cn) = self.blob(BUNDLE_REPO, &serde_json::to_vec(&config).unwrap());
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
            "layers": [{"mediaType": OCI_LAYER, "digest": ld, "size": ln}]});
        self.manifest(
            BUNDLE_REPO,
            "v2.0.0",
            OCI_MANIFEST,
            &serde_json::to_vec(&m).unwrap(),
        );
        format!("{}/{BUNDLE_REPO}:v2.0.0", self.host)
    }
}

/// A gzip'd tar of text files.
pub fn tgz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    {
        let mut tar = tar::Builder::new(&mut gz);
        for (path, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        tar.finish().unwrap();
    }
    gz.finish().unwrap()
}
