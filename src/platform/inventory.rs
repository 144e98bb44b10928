//! What has been uploaded to the platform and what of it is installed where: the input of
//! `ferry list` and `ferry gc`. Read-only.
//!
//! Sources (see docs/platform-api.md, "Inventory"):
//! * clusters: `platform.tkestack.io` `Cluster` objects in `global`, or `--clusters`;
//! * cluster plugins: `cluster.alauda.io` `ModulePlugin` (cluster-scoped, in `global`):
//!   lifecycle from label `cpaas.io/lifecycle-type` (missing means agnostic; `core` plugins
//!   follow the platform and are left out), display name from annotation
//!   `cpaas.io/display-name` (`{"en": ..., "zh": ...}`), installs from `status.installed`
//!   and from the `ModuleInfo`s (see `plugins`); their `ModuleConfig`s carry label
//!   `cpaas.io/module-name`;
//! * operators and charts: `Artifact`s (`spec.type` bundle / chart) and their
//!   `ArtifactVersion`s in `cpaas-system` of each cluster; an operator is installed on a
//!   cluster when a `ClusterServiceVersion` (`operators.coreos.com`) named `<artifact>.v…`
//!   exists there (copies OLM makes into other namespaces are ignored; during an OLM upgrade
//!   two exist, the old one replaced by the new, and both versions count as installed); a
//!   chart is installed where a `HelmRequest` (`app.alauda.io`) names it in `spec.chart`
//!   (`<repo>/<chart>`).
//!
//! What cannot be read is recorded as unknown, never as "not installed": a cluster whose
//! Artifacts cannot be read is a failure; one whose CSVs or HelmRequests cannot be read has
//! its operators or charts in [`InstallState::Unknown`]; plugins whose records cannot be read
//! are flagged in [`Inventory::plugin_errors`].
//!
//! One absence is an answer, not a failure: a cluster that does not serve
//! `operators.coreos.com` at all (no OLM; its `/apis` lists no such group) can hold no
//! ClusterServiceVersion, so no operator is installed there. Its operators are
//! [`InstallState::NotInstalled`] and the fact is a warning ([`Inventory::warnings`]), not an
//! error. Any other failure to read the CSVs (an error answer, a timeout) stays unknown.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde_json::Value;

use super::artifacts::NAMESPACE;
use super::{Cluster, Platform};
use crate::error::{Error, Result};

mod paging;
mod plugins;

use paging::{list, list_if_served};

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
    /// Where `status.installed` or a ModuleInfo shows it installed (any cluster).
    pub installed: Vec<Install>,
    pub object: DynamicObject,
    pub configs: Vec<DynamicObject>,
}

/// What a cluster says is installed from one upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallState {
    NotInstalled,
    /// The versions installed, lowest first: one, or two while OLM replaces one by the next.
    Installed(Vec<String>),
    /// The cluster could not tell (why, naming the call that failed).
    Unknown(String),
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
    pub installed: InstallState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    Operator,
    Chart,
    Other,
}

#[derive(Debug, Default)]
pub struct Inventory {
    /// The clusters asked about (`--clusters`, else every cluster of the platform).
    pub clusters: Vec<String>,
    pub plugins: Vec<Plugin>,
    /// Why the plugins' installs are not fully known (ModulePlugin, ModuleConfig, ModuleInfo
    /// or the platform's cluster list unreadable): then no plugin may be deleted.
    pub plugin_errors: Vec<Error>,
    pub uploads: Vec<Uploaded>,
    /// Clusters whose uploads could not be read at all, with why.
    pub failures: Vec<(String, Error)>,
    /// Clusters whose uploads were read but part of whose install state was not (CSVs,
    /// HelmRequests); the uploads concerned are [`InstallState::Unknown`].
    pub unknown: Vec<(String, Error)>,
    /// What was found absent where that is an answer, not a failure (a cluster without OLM):
    /// said as a warning, the exit code untouched.
    pub warnings: Vec<String>,
}

impl Inventory {
    /// Every error met, the one to fix first (by severity) first.
    pub fn errors(&self) -> Vec<&Error> {
        let mut all: Vec<&Error> = self
            .failures
            .iter()
            .chain(&self.unknown)
            .map(|(_, e)| e)
            .chain(&self.plugin_errors)
            .collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.kind.severity()));
        all
    }
}

/// Every cluster the platform lists, `global` first.
pub async fn platform_clusters(platform: &Platform) -> Result<Vec<String>> {
    clusters_listed_on(&platform.cluster(GLOBAL)?).await
}

/// Every cluster `global` lists (`platform.tkestack.io` `Cluster`), `global` first; for a
/// global cluster reached without the platform (sync, through the node's kubeconfig).
pub async fn clusters_listed_on(global: &Cluster) -> Result<Vec<String>> {
    let mut names: Vec<String> = list(global, "platform.tkestack.io", "Cluster", None)
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

/// Reads the clusters `only` names (every cluster of the platform when empty). The plugins
/// are read from `global` whatever `only` says: their installs span every cluster.
pub async fn read(platform: &Platform, only: &[String]) -> Result<Inventory> {
    let listed = platform_clusters(platform).await;
    let clusters = match (&listed, only.is_empty()) {
        (_, false) => only.to_vec(),
        (Ok(all), true) => all.clone(),
        (Err(e), true) => return Err(e.clone()),
    };
    let mut inv = Inventory {
        clusters,
        ..Inventory::default()
    };
    let reads = platform.each_cluster(&inv.clusters, super::CLUSTERS_AT_ONCE, |c| async move {
        uploaded(&c).await
    });
    let (plugins, reads) = futures::join!(
        async {
            match platform.cluster(GLOBAL) {
                Ok(global) => plugins::read(&global).await,
                Err(e) => (Vec::new(), vec![e]),
            }
        },
        reads
    );
    (inv.plugins, inv.plugin_errors) = plugins;
    for (name, r) in reads {
        match r {
            Ok((u, unknown, warnings)) => {
                inv.uploads.extend(u);
                inv.warnings.extend(warnings);
                inv.unknown
                    .extend(unknown.into_iter().map(|e| (name.clone(), e)));
            }
            Err(e) => inv.failures.push((name, e)),
        }
    }
    // A plugin is removable only if installed nowhere; a cluster of the platform that could
    // not be read leaves that open. (A name given with --clusters that the platform does not
    // list has no plugins to tell about.)
    match &listed {
        Ok(all) => {
            for (name, e) in &inv.failures {
                if all.contains(name) {
                    inv.plugin_errors.push(Error::new(
                        e.kind,
                        format!("cluster {name} could not be read: {}", e.message),
                    ));
                }
            }
        }
        Err(e) => inv.plugin_errors.push(Error::new(
            e.kind,
            format!("the platform's clusters could not be listed: {}", e.message),
        )),
    }
    Ok(inv)
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

/// The Artifacts of one cluster with their versions and what is installed from them, what of
/// the install state could not be read, and warnings. Fails only when the Artifacts cannot be.
async fn uploaded(c: &Cluster) -> Result<(Vec<Uploaded>, Vec<Error>, Vec<String>)> {
    let artifacts = list(c, "app.alauda.io", "Artifact", Some(NAMESPACE)).await?;
    let versions = list(c, "app.alauda.io", "ArtifactVersion", Some(NAMESPACE)).await?;
    let kinds: Vec<UploadKind> = artifacts.iter().map(upload_kind).collect();
    let mut unknown = Vec::new();
    let mut warnings = Vec::new();
    let csvs = if kinds.contains(&UploadKind::Operator) {
        match installed_csvs(c).await {
            Ok(Some(csvs)) => Ok(csvs),
            Ok(None) => {
                warnings.push(format!(
                    "cluster {}: the API group {OLM} (OLM) is not served there, so no operator \
                     can be installed there: its operators are shown as not installed",
                    c.name
                ));
                Ok(Vec::new())
            }
            Err(e) => {
                unknown.push(e.clone());
                Err(e.message)
            }
        }
    } else {
        Ok(Vec::new())
    };
    let charts = if kinds.contains(&UploadKind::Chart) {
        installed_charts(c).await.map_err(|e| {
            unknown.push(e.clone());
            e.message
        })
    } else {
        Ok(BTreeMap::new())
    };
    let state = |found: Vec<String>| match found.is_empty() {
        false => InstallState::Installed(found),
        true => InstallState::NotInstalled,
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
        let installed = match (kind, &csvs, &charts) {
            (UploadKind::Operator, Ok(csvs), _) => state(installed_versions(&name, csvs)),
            (UploadKind::Chart, _, Ok(charts)) => {
                state(charts.get(&name).cloned().into_iter().collect())
            }
            (UploadKind::Operator, Err(why), _) | (UploadKind::Chart, _, Err(why)) => {
                InstallState::Unknown(why.clone())
            }
            (UploadKind::Other, _, _) => InstallState::NotInstalled,
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
    Ok((out, unknown, warnings))
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

/// OLM's API group: optional for `list` and `gc` (a cluster may run without OLM).
const OLM: &str = "operators.coreos.com";

/// Every version of `artifact` its CSVs show installed, lowest first: each CSV named
/// `<artifact>.v…` counts, not only the first found. While OLM upgrades an operator the old
/// CSV (being replaced) and the new one both exist, and both versions must stay protected.
fn installed_versions(artifact: &str, csvs: &[(String, String)]) -> Vec<String> {
    let prefix = format!("{artifact}.v");
    let mut found: Vec<String> = csvs
        .iter()
        .filter(|(csv, _)| csv.starts_with(&prefix))
        .map(|(_, version)| version.clone())
        .collect();
    found.sort_by(|a, b| super::gc::version_cmp(a, b));
    found.dedup();
    found
}

/// (CSV name, version) of every operator installed on the cluster, copies left out; `None`
/// when the cluster does not serve OLM's API group at all.
async fn installed_csvs(c: &Cluster) -> Result<Option<Vec<(String, String)>>> {
    let Some(items) = list_if_served(c, OLM, "ClusterServiceVersion", None).await? else {
        return Ok(None);
    };
    Ok(Some(
        items
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
            .collect(),
    ))
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

#[cfg(test)]
mod tests {
    use super::installed_versions;

    #[test]
    fn every_matching_csv_counts_as_installed_not_only_the_first() {
        let csvs: Vec<(String, String)> = [
            ("es-operator.v2.10.0", "2.10.0"),
            ("other-operator.v1.0.0", "1.0.0"),
            // OLM upgrading: the old CSV (replaced) still exists beside the new one
            ("es-operator.v2.9.0", "2.9.0"),
            ("es-operator-extra.v9.0.0", "9.0.0"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            installed_versions("es-operator", &csvs),
            ["2.9.0", "2.10.0"]
        );
        assert_eq!(installed_versions("other-operator", &csvs), ["1.0.0"]);
        assert!(installed_versions("absent", &csvs).is_empty());
    }
}
