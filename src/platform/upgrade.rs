//! `ferry upgrade`: the cluster upgrade through the `ClusterVersionShadow` of each cluster
//! (`config.alauda.io`, namespace `cpaas-system` of the global cluster, named after the
//! cluster): read it ([`read`]), decide whether it may be requested ([`gates`], a pure
//! function of what was read), request it ([`request`]: `spec.desiredUpdate.version` only)
//! and follow it ([`progress`]). The preflight verdict is [`super::preflight`]'s, the one
//! `sync --preflight` prints. Fields relied upon: docs/platform-api.md.

pub mod gates;
mod render;
pub mod watch;

pub(crate) use render::or_dash;

use kube::api::{Patch, PatchParams};
use serde::Serialize;
use serde_json::{json, Value};

use super::preflight::{self, Preflight};
use super::Cluster;
use crate::error::{Error, ErrorKind, Result};

pub const NAMESPACE: &str = "cpaas-system";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub name: String,
    pub action: String,
    pub current_version: String,
    pub target_version: String,
    pub phase: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    pub priority: i64,
    pub phase: String,
    pub operations: Vec<Operation>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub version: String,
    pub state: String,
    pub started_time: String,
    pub completion_time: String,
}

/// What ferry reads of one cluster's ClusterVersionShadow.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shadow {
    pub cluster: String,
    /// `status.current.version`
    pub current: String,
    /// `spec.desiredUpdate.version`: what was requested (empty: nothing).
    pub desired: String,
    /// `status.availableUpdates[].version`
    pub available_updates: Vec<String>,
    pub conditions: Vec<Condition>,
    /// By priority, ascending (the order they run in).
    pub stages: Vec<Stage>,
    /// Newest first, as the controller keeps it.
    pub history: Vec<History>,
    pub preflight: Preflight,
    pub generation: i64,
    pub observed_generation: i64,
    #[serde(skip)]
    pub resource_version: String,
}

fn text(x: &Value) -> String {
    match x {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn items(x: &Value) -> &[Value] {
    x.as_array().map(Vec::as_slice).unwrap_or_default()
}

impl Shadow {
    /// `v`: the object as the API returns it (metadata included).
    pub fn parse(cluster: &str, v: &Value) -> Shadow {
        let st = &v["status"];
        let mut stages: Vec<Stage> = items(&st["stages"])
            .iter()
            .map(|s| Stage {
                name: text(&s["name"]),
                priority: s["priority"].as_i64().unwrap_or(0),
                phase: text(&s["phase"]),
                operations: items(&s["operations"])
                    .iter()
                    .map(|o| Operation {
                        name: text(&o["name"]),
                        action: text(&o["action"]),
                        current_version: text(&o["currentVersion"]),
                        target_version: text(&o["targetVersion"]),
                        phase: text(&o["phase"]),
                    })
                    .collect(),
            })
            .collect();
        stages.sort_by_key(|s| s.priority);
        Shadow {
            cluster: cluster.to_string(),
            current: text(&st["current"]["version"]),
            desired: text(&v["spec"]["desiredUpdate"]["version"]),
            available_updates: items(&st["availableUpdates"])
                .iter()
                .map(|u| text(&u["version"]))
                .filter(|u| !u.is_empty())
                .collect(),
            conditions: items(&st["conditions"])
                .iter()
                .map(|c| Condition {
                    kind: text(&c["type"]),
                    status: text(&c["status"]),
                    reason: text(&c["reason"]),
                    message: text(&c["message"]),
                })
                .collect(),
            stages,
            history: items(&st["history"])
                .iter()
                .map(|h| History {
                    version: text(&h["version"]),
                    state: text(&h["state"]),
                    started_time: text(&h["startedTime"]),
                    completion_time: text(&h["completionTime"]),
                })
                .collect(),
            preflight: preflight::summarize(cluster, v),
            generation: v["metadata"]["generation"].as_i64().unwrap_or(0),
            observed_generation: st["observedGeneration"].as_i64().unwrap_or(0),
            resource_version: text(&v["metadata"]["resourceVersion"]),
        }
    }

    /// Whether condition `kind` is `True`.
    pub fn is(&self, kind: &str) -> bool {
        self.condition(kind).is_some_and(|c| c.status == "True")
    }

    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}

/// Reads the ClusterVersionShadow of `name` from the global cluster `global`.
pub async fn read(global: &Cluster, name: &str) -> Result<Shadow> {
    Ok(Shadow::parse(name, &preflight::get(global, name).await?))
}

/// Requests `version`: a merge patch of `spec.desiredUpdate.version` only, carrying the
/// `resourceVersion` that was read, so that a change made since is not overwritten (409);
/// `force` is never set. Returns the generation written.
pub async fn request(global: &Cluster, shadow: &Shadow, version: &str) -> Result<i64> {
    let (ar, _) = global
        .discover("config.alauda.io", "ClusterVersionShadow")
        .await?;
    let name = &shadow.cluster;
    let patch = json!({
        "metadata": {"resourceVersion": shadow.resource_version},
        "spec": {"desiredUpdate": {"version": version}},
    });
    let done = global
        .namespaced(&ar, NAMESPACE)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| {
            let conflict = super::cluster::status_code(&e) == Some(409);
            let err = global.error(
                e,
                &format!("requesting {version} in ClusterVersionShadow {NAMESPACE}/{name}"),
            );
            if conflict {
                Error::new(
                    ErrorKind::Platform,
                    format!(
                        "{}: someone changed it since it was read; nothing was overwritten: \
                         check `ferry upgrade status --cluster {name}` and run again",
                        err.message
                    ),
                )
            } else {
                err
            }
        })?;
    Ok(done.metadata.generation.unwrap_or(shadow.generation + 1))
}

/// Where a requested upgrade stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// `Ready=True` at the target, for the generation written (or a later one).
    Ready,
    /// `Degraded=True` or `Stalled=True`: why, naming the stage and the failed operation.
    Failed(String),
    /// Still going: one line saying where.
    Running(String),
}

const DONE_PHASES: &[&str] = &["succeeded", "finished", "completed", "done", "ready"];

fn op_done(o: &Operation) -> bool {
    DONE_PHASES.contains(&o.phase.to_ascii_lowercase().as_str())
}

/// Pure: where the upgrade of `s` to `to`, written as `generation`, stands.
pub fn progress(s: &Shadow, to: &str, generation: i64) -> Progress {
    let fresh = s.observed_generation >= generation;
    for kind in ["Degraded", "Stalled"] {
        if fresh && s.is(kind) {
            let c = s.condition(kind).expect("is() found it");
            let failed = s.stages.iter().find_map(|st| {
                st.operations
                    .iter()
                    .find(|o| o.phase.to_ascii_lowercase().contains("fail"))
                    .map(|o| (st, o))
            });
            let at = match failed {
                Some((st, o)) => format!(
                    "stage {}, operation {} ({} {} -> {}) {}",
                    st.name,
                    o.name,
                    if o.action.is_empty() { "-" } else { &o.action },
                    o.current_version,
                    o.target_version,
                    o.phase
                ),
                None => match s.stages.iter().find(|st| st.phase != "Finished") {
                    Some(st) => format!("stage {} {}", st.name, st.phase),
                    None => "no stage reported".into(),
                },
            };
            return Progress::Failed(format!(
                "{kind}: {at}: {}{}",
                c.reason,
                if c.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.message)
                }
            ));
        }
    }
    if fresh && s.is("Ready") && gc_eq(&s.current, to) {
        return Progress::Ready;
    }
    let total = s.stages.len();
    let finished = s.stages.iter().filter(|st| st.phase == "Finished").count();
    Progress::Running(match s.stages.iter().find(|st| st.phase != "Finished") {
        Some(st) => {
            let done = st.operations.iter().filter(|o| op_done(o)).count();
            format!(
                "stage {}/{total} {} {} ({done}/{} operations finished)",
                finished + 1,
                st.name,
                st.phase,
                st.operations.len()
            )
        }
        None if total > 0 => format!("all {total} stages finished, waiting for Ready"),
        None => "waiting for the upgrade controller".into(),
    })
}

fn gc_eq(a: &str, b: &str) -> bool {
    !a.is_empty() && super::gc::version_cmp(a, b) == std::cmp::Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shadow(stages: Value, conditions: Value, observed: i64) -> Shadow {
        Shadow::parse(
            "region1",
            &json!({"metadata": {"generation": 4, "resourceVersion": "7"},
                "spec": {"desiredUpdate": {"version": "v4.2.0"}},
                "status": {"current": {"version": "v4.1.3"}, "observedGeneration": observed,
                    "conditions": conditions, "stages": stages}}),
        )
    }

    #[test]
    fn progress_running_failed_ready() {
        let stages = json!([
            {"name": "Addons", "priority": 3, "phase": "Pending", "operations": []},
            {"name": "PreUpgrade", "priority": 1, "phase": "Finished", "operations": [
                {"name": "etcd-backup", "phase": "Succeeded"}]},
            {"name": "ControlPlane", "priority": 2, "phase": "Running", "operations": [
                {"name": "kube-apiserver", "action": "Upgrade", "currentVersion": "v1.30",
                 "targetVersion": "v1.31", "phase": "Failed"},
                {"name": "etcd", "phase": "Succeeded"}]}
        ]);
        let s = shadow(stages.clone(), json!([]), 4);
        assert_eq!(s.stages[0].name, "PreUpgrade");
        assert_eq!(
            progress(&s, "v4.2.0", 4),
            Progress::Running("stage 2/3 ControlPlane Running (1/2 operations finished)".into())
        );
        let degraded = json!([{"type": "Degraded", "status": "True", "reason": "OperationFailed",
            "message": "apiserver crashloop"}]);
        let Progress::Failed(why) =
            progress(&shadow(stages.clone(), degraded.clone(), 4), "v4.2.0", 4)
        else {
            panic!()
        };
        assert!(
            why.contains("stage ControlPlane, operation kube-apiserver"),
            "{why}"
        );
        assert!(why.contains("apiserver crashloop"), "{why}");
        let stalled = json!([{"type": "Stalled", "status": "True", "reason": "NoProgress"}]);
        let Progress::Failed(why) = progress(&shadow(stages.clone(), stalled, 4), "v4.2.0", 4)
        else {
            panic!()
        };
        assert!(why.starts_with("Stalled: stage ControlPlane"), "{why}");
        // a Degraded of an older generation is not this run's
        assert!(matches!(
            progress(&shadow(stages, degraded, 3), "v4.2.0", 4),
            Progress::Running(_)
        ));
        let mut ready = shadow(json!([]), json!([{"type": "Ready", "status": "True"}]), 4);
        assert!(matches!(
            progress(&ready, "v4.2.0", 4),
            Progress::Running(_)
        ));
        ready.current = "v4.2.0".into();
        assert_eq!(progress(&ready, "v4.2.0", 4), Progress::Ready);
        assert!(matches!(
            progress(&ready, "v4.2.0", 5),
            Progress::Running(_)
        ));
    }
}
