//! Carrying out a plan: the backup form of an object and its delete.

use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::discovery::ApiResource;
use serde_json::Value;

use super::{Outcome, Planned};
use crate::error::Error;
use crate::platform::Platform;

/// Deletes one cluster's share of the plan, in plan order (versions and configs before their
/// owner). An owner some of whose planned dependants were not deleted (changed since the
/// plan, or failed) is kept: deleting it would leave them without their owner, out of gc's
/// sight from then on.
pub async fn delete_in_order(
    platform: &Platform,
    items: &[&Planned],
) -> Vec<(Outcome, Option<Error>)> {
    let mut held: Vec<(&str, String)> = Vec::new();
    let mut out = Vec::new();
    for p in items {
        let r = if held.iter().any(|(k, n)| *k == p.kind && *n == p.name) {
            (Outcome::Kept, None)
        } else {
            delete(platform, p).await
        };
        if !matches!(r.0, Outcome::Deleted | Outcome::Gone) {
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
            // Only what was planned goes: the default (background) propagation would let the
            // garbage collector take every object this one owns, planned and backed up or not
            // (an ArtifactVersion that was skipped, or uploaded after the plan).
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..DeleteParams::default()
        };
        Ok::<_, Error>(match api.delete(&p.name, &params).await {
            Ok(_) => (Outcome::Deleted, None),
            Err(e) => match crate::platform::cluster::status_code(&e) {
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
