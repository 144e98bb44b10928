//! Cluster plugins and where they are installed. Two records say so, written by different
//! controllers that lag each other: `ModulePlugin.status.installed` and the `ModuleInfo`s (one
//! per plugin and cluster, in `global`). A plugin is installed where either says it is: a
//! missing or late status must never make an installed plugin look removable.

use std::collections::BTreeMap;

use kube::api::DynamicObject;

use super::{english, label, list, Install, Plugin};
use crate::error::Error;
use crate::platform::Cluster;

const GROUP: &str = "cluster.alauda.io";

/// The non-core plugins with their configs and installs, and whatever could not be read (then
/// the installs shown are incomplete and no plugin may be deleted).
pub(super) async fn read(global: &Cluster) -> (Vec<Plugin>, Vec<Error>) {
    let (plugins, configs, infos) = futures::join!(
        list(global, GROUP, "ModulePlugin", None),
        list(global, GROUP, "ModuleConfig", None),
        list(global, GROUP, "ModuleInfo", None),
    );
    let mut errors = Vec::new();
    let mut ok = |r: crate::error::Result<Vec<DynamicObject>>| {
        r.unwrap_or_else(|e| {
            errors.push(e);
            Vec::new()
        })
    };
    let (plugins, configs, infos) = (ok(plugins), ok(configs), ok(infos));
    let mut out = Vec::new();
    for p in plugins {
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
        if let Some(e) = unreadable_record(&name, &p, &infos) {
            // an install record that names no cluster says "installed somewhere": unknown,
            // which must never read as "installed nowhere"
            errors.push(e);
        }
        let installed = installs(&name, &p, &infos);
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
    (out, errors)
}

/// An install record of the plugin that does not say on which cluster (a `status.installed`
/// entry without `cluster`, a ModuleInfo without the `cpaas.io/cluster-name` label).
fn unreadable_record(name: &str, plugin: &DynamicObject, infos: &[DynamicObject]) -> Option<Error> {
    let status_entries = plugin.data["status"]["installed"]
        .as_array()
        .into_iter()
        .flatten();
    let bad_status = status_entries
        .into_iter()
        .any(|i| i["cluster"].as_str().is_none_or(str::is_empty));
    let bad_info = infos
        .iter()
        .filter(|i| label(i, "cpaas.io/module-name") == Some(name))
        .find(|i| label(i, "cpaas.io/cluster-name").is_none_or(str::is_empty));
    let what = match (bad_status, bad_info) {
        (true, _) => "an entry of ModulePlugin status.installed names no cluster".to_string(),
        (false, Some(i)) => format!(
            "ModuleInfo {} has no cpaas.io/cluster-name label",
            i.metadata.name.as_deref().unwrap_or("?")
        ),
        (false, None) => return None,
    };
    Some(Error::new(
        crate::error::ErrorKind::Platform,
        format!("plugin {name}: {what}, so where it is installed is unknown"),
    ))
}

/// The union of `status.installed` and the plugin's ModuleInfos, one install per cluster:
/// the version from `status.installed`, else the ModuleInfo's `status.version`, else its
/// `spec.version`. Where the two disagree it is logged (--debug): a lagging controller.
fn installs(name: &str, plugin: &DynamicObject, infos: &[DynamicObject]) -> Vec<Install> {
    let from_status: BTreeMap<String, String> = plugin.data["status"]["installed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let cluster = i["cluster"].as_str().filter(|c| !c.is_empty())?;
            let version = i["version"].as_str().unwrap_or_default();
            Some((cluster.to_string(), version.to_string()))
        })
        .collect();
    let from_infos: BTreeMap<String, String> = infos
        .iter()
        .filter(|i| label(i, "cpaas.io/module-name") == Some(name))
        .filter_map(|i| {
            let cluster = label(i, "cpaas.io/cluster-name").filter(|c| !c.is_empty())?;
            let version = [&i.data["status"]["version"], &i.data["spec"]["version"]]
                .into_iter()
                .find_map(|v| v.as_str().filter(|v| !v.is_empty()))
                .unwrap_or_default();
            Some((cluster.to_string(), version.to_string()))
        })
        .collect();
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (cluster, version) in &from_infos {
        match from_status.get(cluster) {
            None => tracing::debug!(
                plugin = name,
                cluster = cluster.as_str(),
                version = version.as_str(),
                "a ModuleInfo shows the plugin installed, ModulePlugin.status.installed does not"
            ),
            Some(v) if v != version => tracing::debug!(
                plugin = name,
                cluster = cluster.as_str(),
                status = v.as_str(),
                module_info = version.as_str(),
                "ModulePlugin.status.installed and the ModuleInfo name different versions"
            ),
            Some(_) => {}
        }
        out.insert(cluster.clone(), version.clone());
    }
    for (cluster, version) in from_status {
        if !from_infos.contains_key(&cluster) {
            tracing::debug!(
                plugin = name,
                cluster = cluster.as_str(),
                "ModulePlugin.status.installed shows the plugin installed, no ModuleInfo does"
            );
        }
        out.insert(cluster, version);
    }
    out.into_iter()
        .map(|(cluster, version)| Install { cluster, version })
        .collect()
}
