//! `sync`'s last step: the core package's `manifests/*.yaml` (e.g. the cluster-version-operator
//! Deployment) applied with server-side apply (field manager `ferry`), after their image
//! references were pointed at the registry the images were synced to.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use serde_json::Value;

use super::artifacts::{Action, ResourceOutcome};
use super::Cluster;
use crate::error::{Error, Result};

pub const FIELD_MANAGER: &str = "ferry";

/// Parses multi-document YAML into objects (empty documents are skipped).
pub fn parse_manifests(file: &str, text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| Error::package(format!("{file}: document {}: {e}", i + 1)))?;
        if v.is_null() {
            continue;
        }
        if v["apiVersion"].as_str().is_none()
            || v["kind"].as_str().is_none()
            || v["metadata"]["name"].as_str().is_none()
        {
            return Err(Error::package(format!(
                "{file}: document {} lacks apiVersion, kind or metadata.name",
                i + 1
            )));
        }
        out.push(v);
    }
    Ok(out)
}

/// Points every `image:` reference that names a registry host at `registry`, keeping path,
/// tag and digest. Returns the rewritten references (to check they are in the registry).
pub fn rewrite_images(v: &mut Value, registry: &str) -> Vec<String> {
    let mut refs = Vec::new();
    walk(v, registry, &mut refs);
    refs
}

fn walk(v: &mut Value, registry: &str, refs: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "image" {
                    if let Value::String(s) = child {
                        if let Some((host, rest)) = s.split_once('/') {
                            if host.contains('.') || host.contains(':') || host == "localhost" {
                                *s = format!("{registry}/{rest}");
                                refs.push(s.clone());
                            }
                        }
                        continue;
                    }
                }
                walk(child, registry, refs);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| walk(c, registry, refs)),
        _ => {}
    }
}

/// Server-side applies `obj` (forcing our field manager's ownership, as `kubectl apply
/// --server-side --force-conflicts` does). With `dry_run`, asks the server to validate only.
pub async fn apply(cluster: &Cluster, obj: &Value, dry_run: bool) -> ResourceOutcome {
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = apply_one(cluster, obj, dry_run).await;
    ResourceOutcome {
        kind,
        name,
        cluster: cluster.name.clone(),
        result: r.map(|a| match a {
            Action::Created if dry_run => Action::WouldCreate,
            _ if dry_run => Action::WouldUpdate,
            a => a,
        }),
    }
}

async fn apply_one(cluster: &Cluster, obj: &Value, dry_run: bool) -> Result<Action> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let what = format!("applying {kind} {name}");
    let (ar, caps) = kube::discovery::pinned_kind(&cluster.client, &gvk)
        .await
        .map_err(|e| cluster.error(e, &what))?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("cpaas-system");
            Api::namespaced_with(cluster.client.clone(), ns, &ar)
        }
        Scope::Cluster => Api::all_with(cluster.client.clone(), &ar),
    };
    let existed = api
        .get_opt(name)
        .await
        .map_err(|e| cluster.error(e, &what))?
        .is_some();
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = dry_run;
    api.patch(name, &params, &Patch::Apply(obj))
        .await
        .map_err(|e| cluster.error(e, &what))?;
    Ok(if existed {
        Action::Updated
    } else {
        Action::Created
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_pointed_at_the_registry() {
        let mut v = parse_manifests(
            "m.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cvo}\nspec:\n  template:\n    spec:\n      containers:\n      - name: a\n        image: build-harbor.alauda.cn/acp/cvo:v4.2.0\n      initContainers:\n      - name: b\n        image: busybox\n---\n",
        )
        .unwrap();
        assert_eq!(v.len(), 1);
        let refs = rewrite_images(&mut v[0], "[fd00::1]:11443");
        assert_eq!(refs, ["[fd00::1]:11443/acp/cvo:v4.2.0"]);
        assert_eq!(
            v[0]["spec"]["template"]["spec"]["initContainers"][0]["image"],
            "busybox"
        );
        assert!(parse_manifests("bad.yaml", "kind: X\n").is_err());
    }
}
