//! What has been uploaded to the platform and what of it is installed where: the input of
//! `ferry list` and `ferry gc`. Read-only.
//!
//! Sources (see docs/platform-api.md, "Inventory"):
//! * clusters: `platform.tkestack.io` `Cluster` objects in `global`, or `--clusters`;
//! * cluster plugins: `cluster.alauda.io` `ModulePlugin` (cluster-scoped, in `global`):
//!   lifecycle from label `cpaas.io/lifecycle-type` (missing means agnostic; `core` plugins
//!   follow the platform and are left out), display name from annotation
//!   `cpaas.io/display-name` (`{"en": ..., "zh": ...}`), installs from `status.installed`;
//!   their `ModuleConfig`s carry label `cpaas.io/module-name`;
//! * operators and charts: `Artifact`s (`spec.type` bundle / chart) and their
//!   `ArtifactVersion`s in `cpaas-system` of each cluster; an operator is installed on a
//!   cluster when a `ClusterServiceVersion` (`operators.coreos.com`) named `<artifact>.v…`
//!   exists there (copies OLM makes into other namespaces are ignored); a chart is installed
//!   where a `HelmRequest` (`app.alauda.io`) names it in `spec.chart` (`<repo>/<chart>`).

use std::collections::BTreeMap;

use kube::api::{DynamicObject, ListParams};
use serde_json::Value;

use super::artifacts::NAMESPACE;
use super::{Cluster, Platform};
use crate::error::Result;

pub const GLOBAL: &str = "global";

/// One installation of an extension.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Install {
    pub cluster: String,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct Plugin {
    pub name: String,
    pub display_name: String,
    pub lifecycle: String,
    pub installed: Vec<Install>,
    pub object: DynamicObject,
    pub configs: Vec<DynamicObject>,
}

/// An Artifact on one cluster, with its versions and what is installed from it there.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub cluster: String,
    pub name: String,
    /// `spec.type` as written: bundle, chart (violet writes `OperatorBundle`-style names too).
    pub kind: UploadKind,
    pub display_name: String,
    pub object: DynamicObject,
    pub versions: Vec<DynamicObject>,
    /// The installed version on this cluster, if any.
    pub installed: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    Operator,
    Chart,
    Other,
}

pub struct Inventory {
    pub clusters: Vec<String>,
    pub plugins: Vec<Plugin>,
    pub uploads: Vec<Uploaded>,
    /// Clusters that could not be read, with why (the others are still reported).
    pub failures: Vec<(String, crate::error::Error)>,
}

/// Every cluster the platform lists (`global` first), or the given ones.
pub async fn clusters(platform: &Platform, only: &[String]) -> Result<Vec<String>> {
    if !only.is_empty() {
        return Ok(only.to_vec());
    }
    let global = platform.cluster(GLOBAL)?;
    let mut names: Vec<String> = list(&global, "platform.tkestack.io", "Cluster", None)
        .await?
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    names.sort_by_key(|n| (n != GLOBAL, n.clone()));
    if !names.iter().any(|n| n == GLOBAL) {
        names.insert(0, GLOBAL.to_string());
    }
    Ok(names)
}

pub async fn read(platform: &Platform, clusters: Vec<String>) -> Result<Inventory> {
    let global = platform.cluster(GLOBAL)?;
    let plugins = plugins(&global).await?;
    let mut uploads = Vec::new();
    let mut failures = Vec::new();
    let reads = clusters.iter().map(|name| async move {
        let c = platform.cluster(name)?;
        uploaded(&c).await
    });
    for (name, r) in clusters.iter().zip(futures::future::join_all(reads).await) {
        match r {
            Ok(u) => uploads.extend(u),
            Err(e) => failures.push((name.clone(), e)),
        }
    }
    Ok(Inventory {
        clusters,
        plugins,
        uploads,
        failures,
    })
}

async fn list(
    c: &Cluster,
    group: &str,
    kind: &str,
    ns: Option<&str>,
) -> Result<Vec<DynamicObject>> {
    let (ar, _) = c.discover(group, kind).await?;
    let api = match ns {
        Some(ns) => c.namespaced(&ar, ns),
        None => c.all(&ar),
    };
    // page by page, so that each answer stays well below the client's cap on one answer
    // (cluster.rs, MAX_API_ANSWER) however many objects there are; a page of 250 operators'
    // CSVs (icons included) is a few MiB
    const PAGE: u32 = 250;
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|e| c.error(e, &format!("listing {kind}s")))?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
}

fn label<'a>(o: &'a DynamicObject, key: &str) -> Option<&'a str> {
    o.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// The English name of a `{"en": ..., "zh": ...}` display name, or the text as it is.
fn english(raw: &str) -> String {
    serde_json::from_str::<Value>(raw)
        .ok()
        .and_then(|v| v["en"].as_str().map(str::to_string))
        .unwrap_or_else(|| raw.to_string())
}

async fn plugins(global: &Cluster) -> Result<Vec<Plugin>> {
    let configs = list(global, "cluster.alauda.io", "ModuleConfig", None).await?;
    let mut out = Vec::new();
    for p in list(global, "cluster.alauda.io", "ModulePlugin", None).await? {
        let name = p.metadata.name.clone().unwrap_or_default();
        let lifecycle = label(&p, "cpaas.io/lifecycle-type")
            .filter(|l| !l.is_empty())
            .unwrap_or("agnostic")
            .to_string();
        if lifecycle == "core" {
            continue;
        }
        let display_name = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("cpaas.io/display-name"))
            .map(|d| english(d))
            .unwrap_or_else(|| name.clone());
        let mut installed: Vec<Install> = p.data["status"]["installed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                Some(Install {
                    cluster: i["cluster"].as_str()?.to_string(),
                    version: i["version"].as_str().unwrap_or_default().to_string(),
                })
            })
            .collect();
        installed.sort();
        let configs = configs
            .iter()
            .filter(|c| label(c, "cpaas.io/module-name") == Some(name.as_str()))
            .cloned()
            .collect();
        out.push(Plugin {
            name,
            display_name,
            lifecycle,
            installed,
            object: p,
            configs,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The Artifacts of one cluster with their versions and what is installed from them.
async fn uploaded(c: &Cluster) -> Result<Vec<Uploaded>> {
    let artifacts = list(c, "app.alauda.io", "Artifact", Some(NAMESPACE)).await?;
    let versions = list(c, "app.alauda.io", "ArtifactVersion", Some(NAMESPACE)).await?;
    let kinds: Vec<UploadKind> = artifacts.iter().map(upload_kind).collect();
    let csvs = if kinds.contains(&UploadKind::Operator) {
        installed_csvs(c).await?
    } else {
        Vec::new()
    };
    let charts = if kinds.contains(&UploadKind::Chart) {
        installed_charts(c).await?
    } else {
        BTreeMap::new()
    };
    let mut out = Vec::new();
    for (a, kind) in artifacts.into_iter().zip(kinds) {
        let name = a.metadata.name.clone().unwrap_or_default();
        let display_name = a.data["spec"]["displayName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(english)
            .unwrap_or_else(|| name.clone());
        let mine: Vec<DynamicObject> = versions
            .iter()
            .filter(|v| label(v, "cpaas.io/artifact") == Some(name.as_str()))
            .cloned()
            .collect();
        let installed = match kind {
            UploadKind::Operator => {
                let prefix = format!("{name}.v");
                csvs.iter()
                    .find(|(csv, _)| csv.starts_with(&prefix))
                    .map(|(_, version)| version.clone())
            }
            UploadKind::Chart => charts.get(&name).cloned(),
            UploadKind::Other => None,
        };
        out.push(Uploaded {
            cluster: c.name.clone(),
            name,
            kind,
            display_name,
            object: a,
            versions: mine,
            installed,
        });
    }
    Ok(out)
}

fn upload_kind(a: &DynamicObject) -> UploadKind {
    let t = a.data["spec"]["type"].as_str().unwrap_or_default();
    let t = t.to_ascii_lowercase();
    if t == "bundle" || t == "operatorbundle" || t == "operator" {
        UploadKind::Operator
    } else if t == "chart" {
        UploadKind::Chart
    } else {
        UploadKind::Other
    }
}

/// (CSV name, version) of every operator installed on the cluster, copies left out.
async fn installed_csvs(c: &Cluster) -> Result<Vec<(String, String)>> {
    let items = list(c, "operators.coreos.com", "ClusterServiceVersion", None).await?;
    Ok(items
        .into_iter()
        .filter(|csv| label(csv, "olm.copiedFrom").is_none())
        .filter(|csv| csv.data["status"]["reason"].as_str() != Some("Copied"))
        .filter_map(|csv| {
            let name = csv.metadata.name.clone()?;
            let version = csv.data["spec"]["version"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| {
                    name.split_once(".v")
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_default()
                });
            Some((name, version))
        })
        .collect())
}

/// Chart name → installed version, from the cluster's HelmRequests (`spec.chart` is
/// `<repository>/<chart>`).
async fn installed_charts(c: &Cluster) -> Result<BTreeMap<String, String>> {
    let items = list(c, "app.alauda.io", "HelmRequest", None).await?;
    Ok(items
        .into_iter()
        .filter_map(|hr| {
            let chart = hr.data["spec"]["chart"].as_str()?;
            let name = chart.rsplit('/').next()?.to_string();
            let version = hr.data["spec"]["version"].as_str().unwrap_or_default();
            Some((name, version.to_string()))
        })
        .collect())
}
