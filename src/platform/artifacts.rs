//! The Marketplace resources of a package: one `Artifact` (named after the package) and one
//! `ArtifactVersion` per version (`<name>.v<version>`), in namespace `cpaas-system`, shaped
//! as the public CRDs `app.alauda.io_artifacts.yaml` / `app.alauda.io_artifactversions.yaml`
//! say. Writing them is idempotent: create, and on 409 read the object and update the fields
//! we own with its current `resourceVersion` (bounded retries on conflicts), or leave it
//! alone when it already says what we would write.

use kube::api::{DynamicObject, ObjectMeta, PostParams};
use kube::discovery::ApiResource;
use serde::Serialize;
use serde_json::{json, Value};

use super::cluster::status_code;
use super::Cluster;
use crate::error::{Error, ErrorKind, Result};
use crate::source::PackageKind;

pub const NAMESPACE: &str = "cpaas-system";
const GROUP: &str = "app.alauda.io";
/// Updates that lose a race with another writer are retried this many times.
const CONFLICT_RETRIES: usize = 5;

/// What the resources of one package say.
#[derive(Debug, Clone)]
pub struct ArtifactSpec {
    /// Package name (becomes the Artifact's name).
    pub name: String,
    pub display_name: String,
    /// Package type: bundle, plugin, chart.
    pub kind: PackageKind,
    pub version: String,
    /// Destination registry `host[:port]`.
    pub registry: String,
    /// Main artifact's repository path, without host and tag.
    pub repository: String,
    /// Main artifact's tag.
    pub tag: String,
    /// For bundles: the CatalogSource the operator is offered in.
    pub catalog_source: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    /// Dry run: would be created.
    WouldCreate,
    /// Dry run: would be updated.
    WouldUpdate,
}

/// One resource written (or planned) on one cluster: what was done to it, or why nothing
/// was (never both).
#[derive(Debug, Clone)]
pub struct ResourceOutcome {
    pub kind: String,
    pub name: String,
    pub cluster: String,
    pub result: Result<Action>,
}

/// What the publishing step did for one package on one platform side (primary or DR
/// standby): the resources written per cluster, or why none were.
#[derive(Debug, Clone, Default)]
pub struct Publication {
    /// The platform (`host[:port]`) the clusters belong to.
    pub platform: String,
    pub resources: Vec<ResourceOutcome>,
    /// Why no resources were written (images missing from this side's registry, ...).
    pub skipped: Option<String>,
    /// Clusters that could not be spoken to at all (no client for them): nothing was written
    /// there.
    pub unreachable: Vec<(String, Error)>,
    pub warnings: Vec<String>,
    /// The resources could not even be described (package.yaml lacks what they need).
    pub error: Option<Error>,
}

/// A valid Kubernetes object name (RFC 1123 subdomain) made from free text: lower case,
/// anything else than `[a-z0-9.-]` becomes `-`, trimmed to alphanumerics at both ends.
pub fn object_name(raw: &str) -> String {
    let mut s: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(253);
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// A valid label value (≤ 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends).
fn label_value(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(63);
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

impl ArtifactSpec {
    pub fn artifact_name(&self) -> String {
        object_name(&self.name)
    }

    pub fn version_name(&self) -> String {
        let v = self.version.trim_start_matches('v');
        object_name(&format!("{}.v{v}", self.name))
    }

    fn artifact_labels(&self) -> Value {
        let mut labels = json!({ "cpaas.io/artifact-type": label_value(self.kind.as_str()) });
        if let Some(cs) = &self.catalog_source {
            labels["cpaas.io/catalog-source"] = json!(label_value(cs));
        }
        labels
    }

    fn artifact_spec(&self) -> Value {
        json!({
            "type": self.kind.as_str(),
            "displayName": self.display_name,
            "registry": self.registry,
            "repository": self.repository,
            "present": true,
            "artifactVersionSelector": {
                "matchLabels": { "cpaas.io/artifact": self.artifact_name() }
            },
        })
    }

    fn version_labels(&self) -> Value {
        json!({
            "cpaas.io/artifact": self.artifact_name(),
            "cpaas.io/artifact-version": label_value(&self.version),
        })
    }

    fn version_spec(&self) -> Value {
        json!({ "tag": self.tag, "present": true })
    }
}

/// Writes (or, with `dry_run`, plans) the package's Artifact and ArtifactVersion on one
/// cluster. The ArtifactVersion is written after the Artifact, owned by it (its uid read back).
pub async fn publish(
    cluster: &Cluster,
    spec: &ArtifactSpec,
    dry_run: bool,
) -> Vec<ResourceOutcome> {
    let mut out = Vec::new();
    let outcome = |kind: &str, name: String, r: &Result<Action>| ResourceOutcome {
        kind: kind.to_string(),
        name,
        cluster: cluster.name.clone(),
        result: r.clone(),
    };
    let artifact = async {
        let (ar, _) = cluster.discover(GROUP, "Artifact").await?;
        let desired = Desired {
            name: spec.artifact_name(),
            labels: spec.artifact_labels(),
            spec: spec.artifact_spec(),
            owner: None,
        };
        let (action, uid) = apply(cluster, &ar, &desired, dry_run).await?;
        Ok((action, uid, ar.api_version))
    }
    .await;
    let (a_action, uid, owner_api) = match artifact {
        Ok((a, uid, api)) => (Ok(a), uid, api),
        Err(e) => (Err(e), None, String::new()),
    };
    out.push(outcome("Artifact", spec.artifact_name(), &a_action));
    if a_action.is_err() {
        return out;
    }
    let version = async {
        let (ar, _) = cluster.discover(GROUP, "ArtifactVersion").await?;
        // the owner's apiVersion as discovery found it: the version the cluster serves
        // Artifacts in, which is what the garbage collector resolves the reference by
        let owner = uid.map(|uid| {
            json!([{
                "apiVersion": owner_api,
                "kind": "Artifact",
                "name": spec.artifact_name(),
                "uid": uid,
            }])
        });
        let desired = Desired {
            name: spec.version_name(),
            labels: spec.version_labels(),
            spec: spec.version_spec(),
            owner,
        };
        apply(cluster, &ar, &desired, dry_run).await.map(|(a, _)| a)
    }
    .await;
    out.push(outcome("ArtifactVersion", spec.version_name(), &version));
    out
}

struct Desired {
    name: String,
    labels: Value,
    spec: Value,
    owner: Option<Value>,
}

impl Desired {
    fn object(&self, ar: &ApiResource) -> Result<DynamicObject> {
        let mut obj = DynamicObject::new(&self.name, ar).within(NAMESPACE);
        obj.metadata = ObjectMeta {
            name: Some(self.name.clone()),
            namespace: Some(NAMESPACE.into()),
            labels: Some(serde_json::from_value(self.labels.clone()).map_err(internal)?),
            owner_references: match &self.owner {
                Some(o) => Some(serde_json::from_value(o.clone()).map_err(internal)?),
                None => None,
            },
            ..Default::default()
        };
        obj.data = json!({ "spec": self.spec });
        Ok(obj)
    }

    /// Does `current` already carry our labels, spec fields and owner?
    fn satisfied_by(&self, current: &DynamicObject) -> bool {
        let labels = current.metadata.labels.clone().unwrap_or_default();
        let labels_ok = self.labels.as_object().is_some_and(|want| {
            want.iter()
                .all(|(k, v)| labels.get(k).map(|s| s.as_str()) == v.as_str())
        });
        let spec_ok = self.spec.as_object().is_some_and(|want| {
            want.iter()
                .all(|(k, v)| current.data["spec"].get(k) == Some(v))
        });
        let owner_ok = match &self.owner {
            None => true,
            Some(o) => {
                let uid = o[0]["uid"].as_str();
                current
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| Some(r.uid.as_str()) == uid)
            }
        };
        labels_ok && spec_ok && owner_ok
    }

    /// `current` with our fields written over it (other labels and spec fields are kept).
    fn merged_into(&self, mut current: DynamicObject) -> DynamicObject {
        let labels = current.metadata.labels.get_or_insert_with(Default::default);
        for (k, v) in self.labels.as_object().into_iter().flatten() {
            labels.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
        }
        if let Some(Value::Array(owners)) = &self.owner {
            let refs = current
                .metadata
                .owner_references
                .get_or_insert_with(Vec::new);
            for o in owners {
                if let Ok(r) = serde_json::from_value::<
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
                >(o.clone())
                {
                    refs.retain(|x| !(x.kind == r.kind && x.name == r.name));
                    refs.push(r);
                }
            }
        }
        if !current.data["spec"].is_object() {
            current.data["spec"] = json!({});
        }
        for (k, v) in self.spec.as_object().into_iter().flatten() {
            current.data["spec"][k] = v.clone();
        }
        current
    }
}

fn internal(e: serde_json::Error) -> Error {
    Error::internal(format!("building a resource: {e}"))
}

/// Create, or update what differs. Returns the action and the object's uid.
async fn apply(
    cluster: &Cluster,
    ar: &ApiResource,
    desired: &Desired,
    dry_run: bool,
) -> Result<(Action, Option<String>)> {
    let api = cluster.namespaced(ar, NAMESPACE);
    let what = |verb: &str| format!("{verb} {} {NAMESPACE}/{}", ar.kind, desired.name);
    if dry_run {
        return match api.get_opt(&desired.name).await {
            Ok(None) => Ok((Action::WouldCreate, None)),
            Ok(Some(cur)) if desired.satisfied_by(&cur) => {
                Ok((Action::Unchanged, cur.metadata.uid))
            }
            Ok(Some(cur)) => Ok((Action::WouldUpdate, cur.metadata.uid)),
            Err(e) => Err(cluster.error(e, &what("reading"))),
        };
    }
    match api
        .create(&PostParams::default(), &desired.object(ar)?)
        .await
    {
        Ok(created) => return Ok((Action::Created, created.metadata.uid)),
        Err(e) if status_code(&e) == Some(409) => {}
        Err(e) => return Err(cluster.error(e, &what("creating"))),
    }
    for _ in 0..=CONFLICT_RETRIES {
        let current = api
            .get(&desired.name)
            .await
            .map_err(|e| cluster.error(e, &what("reading")))?;
        if desired.satisfied_by(&current) {
            return Ok((Action::Unchanged, current.metadata.uid));
        }
        // `current` carries its resourceVersion: the update fails with 409 if someone wrote
        // in between, and we read again.
        match api
            .replace(
                &desired.name,
                &PostParams::default(),
                &desired.merged_into(current),
            )
            .await
        {
            Ok(updated) => return Ok((Action::Updated, updated.metadata.uid)),
            Err(e) if status_code(&e) == Some(409) => continue,
            Err(e) => return Err(cluster.error(e, &what("updating"))),
        }
    }
    Err(Error::new(
        ErrorKind::Platform,
        format!(
            "cluster {}: {}: still conflicting after {CONFLICT_RETRIES} retries (another writer \
             keeps changing it); run again",
            cluster.name,
            what("updating")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ArtifactSpec {
        ArtifactSpec {
            name: "topolvm-operator".into(),
            display_name: "NativeStor".into(),
            kind: PackageKind::Bundle,
            version: "2.3.0".into(),
            registry: "10.0.0.1:11443".into(),
            repository: "acp/topolvm-operator-bundle".into(),
            tag: "v3.11.0".into(),
            catalog_source: Some("platform".into()),
        }
    }

    #[test]
    fn names() {
        assert_eq!(spec().version_name(), "topolvm-operator.v2.3.0");
        assert_eq!(object_name("My_Chart+v1"), "my-chart-v1");
        assert_eq!(object_name("-x-"), "x");
        assert_eq!(label_value("1.0.0+build.5"), "1.0.0-build.5");
    }

    #[test]
    fn satisfied_and_merge() {
        let s = spec();
        let ar = ApiResource {
            group: GROUP.into(),
            version: "v1alpha1".into(),
            api_version: "app.alauda.io/v1alpha1".into(),
            kind: "Artifact".into(),
            plural: "artifacts".into(),
        };
        let d = Desired {
            name: s.artifact_name(),
            labels: s.artifact_labels(),
            spec: s.artifact_spec(),
            owner: None,
        };
        let obj = d.object(&ar).unwrap();
        assert!(d.satisfied_by(&obj));
        let mut other = obj.clone();
        other.data["spec"]["registry"] = json!("old:5000");
        other.data["spec"]["description"] = json!("kept");
        assert!(!d.satisfied_by(&other));
        let merged = d.merged_into(other);
        assert!(d.satisfied_by(&merged));
        assert_eq!(merged.data["spec"]["description"], "kept");
    }
}
