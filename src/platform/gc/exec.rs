//! Carrying out a plan: the backup form of an object and its delete.

use std::collections::BTreeMap;

use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::discovery::ApiResource;
use serde_json::Value;

use super::{Outcome, Plan, Planned};
use crate::error::Result;
use crate::platform::{Cluster, Platform, CLUSTERS_AT_ONCE};

/// Deletes what `plan` holds: clusters in parallel, each cluster's objects in plan order
/// (owned before owner). Returns each item's result, in the plan's order; a cluster that
/// cannot be spoken to fails each of its items with that error.
pub async fn execute(platform: &Platform, plan: &Plan) -> Vec<Result<Outcome>> {
    let mut by_cluster: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, p) in plan.items.iter().enumerate() {
        by_cluster.entry(p.cluster.clone()).or_default().push(i);
    }
    let names: Vec<String> = by_cluster.keys().cloned().collect();
    let by_cluster = &by_cluster;
    let done = platform
        .each_cluster(&names, CLUSTERS_AT_ONCE, |c| async move {
            let items: Vec<&Planned> = by_cluster[&c.name]
                .iter()
                .map(|i| &plan.items[*i])
                .collect();
            Ok(delete_in_order(&c, &items).await)
        })
        .await;
    let mut results: Vec<Option<Result<Outcome>>> = plan.items.iter().map(|_| None).collect();
    for (name, r) in done {
        let idx = &by_cluster[&name];
        match r {
            Ok(outcomes) => {
                for (i, o) in idx.iter().zip(outcomes) {
                    results[*i] = Some(o);
                }
            }
            Err(e) => {
                for i in idx {
                    results[*i] = Some(Err(e.clone()));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every item belongs to a cluster"))
        .collect()
}

/// Deletes one cluster's share of the plan, in plan order (versions and configs before their
/// owner). An owner some of whose planned dependants were not deleted (changed since the
/// plan, or failed) is kept: deleting it would leave them without their owner, out of gc's
/// sight from then on.
pub async fn delete_in_order(cluster: &Cluster, items: &[&Planned]) -> Vec<Result<Outcome>> {
    let mut held: Vec<(&str, String)> = Vec::new();
    let mut out = Vec::new();
    for p in items {
        let r = if held.iter().any(|(k, n)| *k == p.kind && *n == p.name) {
            Ok(Outcome::Kept)
        } else {
            delete(cluster, p).await
        };
        if !matches!(r, Ok(Outcome::Deleted | Outcome::Gone)) {
            if let Some(owner) = super::owner_of(p) {
                held.push(owner);
            }
        }
        out.push(r);
    }
    out
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

/// Deletes one planned object (of `cluster`) with the uid and resourceVersion it had when
/// planned.
pub async fn delete(cluster: &Cluster, p: &Planned) -> Result<Outcome> {
    let meta = &p.object.metadata;
    if meta.uid.as_deref().is_none_or(str::is_empty)
        || meta.resource_version.as_deref().is_none_or(str::is_empty)
    {
        // never planned (gc.rs `take`); kept rather than deleted without preconditions
        return Ok(Outcome::Kept);
    }
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
        // Only what was planned goes: the default (background) propagation would let the
        // garbage collector take every object this one owns, planned and backed up or not
        // (an ArtifactVersion that was skipped, or uploaded after the plan).
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    match api.delete(&p.name, &params).await {
        Ok(_) => Ok(Outcome::Deleted),
        Err(e) => match crate::platform::cluster::status_code(&e) {
            Some(409) => Ok(Outcome::Skipped),
            Some(404) => Ok(Outcome::Gone),
            _ => Err(cluster.error(e, &format!("deleting {} {}", p.kind, p.name))),
        },
    }
}
