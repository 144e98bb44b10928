//! `ferry gc`: what old uploads left behind, planned from an [`Inventory`] and deleted with
//! preconditions, so that an object changed since the plan is skipped, never deleted blindly.
//!
//! The rules (docs/platform-api.md, "Cleanup"):
//! * an operator's `Artifact` on a cluster where that operator is not installed goes, with
//!   its `ArtifactVersion`s;
//! * of an installed operator, `ArtifactVersion`s older than the installed version go, except
//!   the newest `keep` ones; the installed version and newer ones always stay;
//! * a `ModulePlugin` (aligned or agnostic) installed on no cluster goes, with its
//!   `ModuleConfig`s; only when `global` is among the clusters considered;
//! * charts are never touched; images are never deleted from the registry (those the deleted
//!   versions referenced are reported).

use std::cmp::Ordering;

use kube::api::{DeleteParams, DynamicObject, Preconditions};
use kube::discovery::ApiResource;
use serde::Serialize;
use serde_json::Value;

use super::inventory::{Inventory, UploadKind, GLOBAL};
use super::Platform;
use crate::error::Error;

/// One object to delete, as it was when planned.
#[derive(Debug, Clone)]
pub struct Planned {
    pub kind: &'static str,
    pub group: &'static str,
    pub name: String,
    pub namespace: Option<String>,
    pub cluster: String,
    pub why: String,
    pub object: DynamicObject,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// In deletion order: versions and configs before what owns them.
    pub items: Vec<Planned>,
    /// Images only the deleted versions referenced (never deleted by ferry).
    pub unreferenced_images: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Deleted,
    /// Changed since the plan (uid or resourceVersion differ): left alone.
    Skipped,
    /// Already gone when its turn came.
    Gone,
    Failed,
}

pub fn plan(inv: &Inventory, keep: usize) -> Plan {
    let mut plan = Plan::default();
    for u in inv
        .uploads
        .iter()
        .filter(|u| u.kind == UploadKind::Operator)
    {
        let mut versions: Vec<(&DynamicObject, String)> = u
            .versions
            .iter()
            .map(|v| (v, version_of(&u.name, v)))
            .collect();
        versions.sort_by(|a, b| version_cmp(&b.1, &a.1));
        let image = |v: &DynamicObject| {
            let spec = &u.object.data["spec"];
            let tag = v.data["spec"]["tag"].as_str()?;
            Some(format!(
                "{}/{}:{tag}",
                spec["registry"].as_str()?,
                spec["repository"].as_str()?
            ))
        };
        let mut doomed: Vec<(&DynamicObject, String)> = Vec::new();
        match &u.installed {
            None => {
                for (v, _) in &versions {
                    doomed.push((
                        v,
                        format!("operator {} is not installed on this cluster", u.name),
                    ));
                }
            }
            Some(installed) => {
                for (i, (v, version)) in versions.iter().enumerate() {
                    if i >= keep && version_cmp(version, installed) == Ordering::Less {
                        doomed.push((
                            v,
                            format!(
                                "older than the installed {installed} (the newest {keep} kept)"
                            ),
                        ));
                    }
                }
            }
        }
        for (v, why) in doomed {
            plan.unreferenced_images.extend(image(v));
            plan.items
                .push(item("ArtifactVersion", "app.alauda.io", &u.cluster, v, why));
        }
        if u.installed.is_none() {
            let why = format!("operator {} is not installed on this cluster", u.name);
            plan.items.push(item(
                "Artifact",
                "app.alauda.io",
                &u.cluster,
                &u.object,
                why,
            ));
        }
    }
    if inv.clusters.iter().any(|c| c == GLOBAL) {
        for p in inv.plugins.iter().filter(|p| p.installed.is_empty()) {
            let why = format!("{} plugin installed on no cluster", p.lifecycle);
            for c in &p.configs {
                plan.items.push(item(
                    "ModuleConfig",
                    "cluster.alauda.io",
                    GLOBAL,
                    c,
                    why.clone(),
                ));
            }
            plan.items.push(item(
                "ModulePlugin",
                "cluster.alauda.io",
                GLOBAL,
                &p.object,
                why,
            ));
        }
    }
    plan.unreferenced_images.sort();
    plan.unreferenced_images.dedup();
    plan
}

fn item(
    kind: &'static str,
    group: &'static str,
    cluster: &str,
    o: &DynamicObject,
    why: String,
) -> Planned {
    Planned {
        kind,
        group,
        name: o.metadata.name.clone().unwrap_or_default(),
        namespace: o.metadata.namespace.clone(),
        cluster: cluster.to_string(),
        why,
        object: o.clone(),
    }
}

/// The version an ArtifactVersion stands for: its name after `<artifact>.v`, else its tag.
fn version_of(artifact: &str, v: &DynamicObject) -> String {
    let name = v.metadata.name.clone().unwrap_or_default();
    match name.strip_prefix(&format!("{artifact}.v")) {
        Some(rest) => rest.to_string(),
        None => v.data["spec"]["tag"]
            .as_str()
            .unwrap_or(&name)
            .trim_start_matches('v')
            .to_string(),
    }
}

/// Orders versions like semver: numeric dot-separated parts compared as numbers, a
/// pre-release (`-rc.1`) before its release, build metadata (`+…`) ignored.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (Vec<&str>, Option<&str>) {
        let v = v.trim_start_matches('v');
        let v = v.split('+').next().unwrap_or(v);
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (v, None),
        };
        (core.split('.').collect(), pre)
    }
    fn part(x: &str, y: &str) -> Ordering {
        match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        }
    }
    let ((ca, pa), (cb, pb)) = (split(a), split(b));
    for i in 0..ca.len().max(cb.len()) {
        let o = part(ca.get(i).unwrap_or(&"0"), cb.get(i).unwrap_or(&"0"));
        if o != Ordering::Equal {
            return o;
        }
    }
    match (pa, pb) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => {
            let (xs, ys): (Vec<&str>, Vec<&str>) = (x.split('.').collect(), y.split('.').collect());
            for (x, y) in xs.iter().zip(&ys) {
                let o = part(x, y);
                if o != Ordering::Equal {
                    return o;
                }
            }
            xs.len().cmp(&ys.len())
        }
    }
}

/// The object as `kubectl apply -f` restores it: identity, labels, annotations and content;
/// not the server's bookkeeping (uid, resourceVersion, managedFields, status) nor owner
/// references, whose uids would point at objects that no longer exist after a restore.
pub fn restorable(p: &Planned) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("apiVersion".into(), format!("{}/v1alpha1", p.group).into());
    if let Some(t) = &p.object.types {
        out.insert("apiVersion".into(), t.api_version.clone().into());
    }
    out.insert("kind".into(), p.kind.into());
    let mut meta = serde_json::Map::new();
    meta.insert("name".into(), p.name.clone().into());
    if let Some(ns) = &p.namespace {
        meta.insert("namespace".into(), ns.clone().into());
    }
    if let Some(l) = &p.object.metadata.labels {
        meta.insert("labels".into(), serde_json::to_value(l).unwrap_or_default());
    }
    if let Some(a) = &p.object.metadata.annotations {
        let kept: serde_json::Map<String, Value> = a
            .iter()
            .filter(|(k, _)| k.as_str() != "kubectl.kubernetes.io/last-applied-configuration")
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        if !kept.is_empty() {
            meta.insert("annotations".into(), kept.into());
        }
    }
    out.insert("metadata".into(), meta.into());
    if let Some(fields) = p.object.data.as_object() {
        for (k, v) in fields {
            if k != "status" && k != "metadata" && k != "apiVersion" && k != "kind" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out.into()
}

/// Deletes one planned object with the uid and resourceVersion it had when planned.
pub async fn delete(platform: &Platform, p: &Planned) -> (Outcome, Option<Error>) {
    let run = async {
        let cluster = platform.cluster(&p.cluster)?;
        let (ar, _): (ApiResource, _) = cluster.discover(p.group, p.kind).await?;
        let api = match &p.namespace {
            Some(ns) => cluster.namespaced(&ar, ns),
            None => cluster.all(&ar),
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: p.object.metadata.uid.clone(),
                resource_version: p.object.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        Ok::<_, Error>(match api.delete(&p.name, &params).await {
            Ok(_) => (Outcome::Deleted, None),
            Err(e) => match super::cluster::status_code(&e) {
                Some(409) => (Outcome::Skipped, None),
                Some(404) => (Outcome::Gone, None),
                _ => (
                    Outcome::Failed,
                    Some(cluster.error(e, &format!("deleting {} {}", p.kind, p.name))),
                ),
            },
        })
    };
    run.await.unwrap_or_else(|e| (Outcome::Failed, Some(e)))
}

#[cfg(test)]
mod tests {
    use super::version_cmp;
    use std::cmp::Ordering::*;

    #[test]
    fn versions_order_like_semver() {
        assert_eq!(version_cmp("2.3.0", "2.10.0"), Less);
        assert_eq!(version_cmp("v4.2.1", "4.2.1"), Equal);
        assert_eq!(version_cmp("4.2.0-rc.1", "4.2.0"), Less);
        assert_eq!(version_cmp("4.2.0-rc.2", "4.2.0-rc.10"), Less);
        assert_eq!(version_cmp("1.5.0-build.20251226", "1.4.9"), Greater);
        assert_eq!(version_cmp("4.2", "4.2.0"), Equal);
        assert_eq!(version_cmp("4.2.0+abc", "4.2.0"), Equal);
    }
}
