//! A simulated cluster-version operator for the fake platform: the ClusterVersionShadows
//! (`config.alauda.io/v1`, `cpaas-system` of `global`, one per cluster) move as ACP's
//! upgrade controller moves them. It is advanced lazily, on every API call the fake answers
//! (so a test's timing is the wall clock, with no thread of its own):
//!
//! * `status.availableUpdates`: the platform's offered versions newer than the cluster's; for
//!   a workload cluster only those `global` already reached;
//! * preflight: every check Passed, except one a test makes fail ([`Cvo::fail_preflight`]);
//! * a `spec.desiredUpdate.version` other than the current one starts a run: three stages,
//!   each Pending → Running → Finished over `stage_time`, then `current`, `history`,
//!   `Ready=True` and `observedGeneration`; or, for a cluster in [`Cvo::degrade`], the named
//!   operation Failed in the second stage and `Degraded=True`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::platform::FakePlatform;

const PREFIX: &str = "global|clusterversionshadows|cpaas-system|";
const STAGES: &[(&str, i64, &[&str])] = &[
    ("PreUpgrade", 1, &["etcd-backup"]),
    ("ControlPlane", 2, &["kube-apiserver", "etcd"]),
    ("Addons", 3, &["cpaas-operators"]),
];

#[derive(Default)]
pub struct Cvo {
    pub enabled: bool,
    pub stage_time: Duration,
    /// Versions with a ProductManifest on the platform.
    pub offered: Vec<String>,
    /// cluster → (check, message): that preflight check Failed.
    pub fail_preflight: HashMap<String, (String, String)>,
    /// cluster → operation (of the ControlPlane stage) that fails: the run ends Degraded.
    pub degrade: HashMap<String, String>,
    /// Clusters that, with no run going, are still reconciling: `Ready=False` and
    /// `Reconciling=True` at their current version.
    pub not_ready: Vec<String>,
    /// cluster → when a run was started (a desiredUpdate write seen).
    pub requested_at: HashMap<String, Instant>,
    /// cluster → when its run reached Ready.
    pub ready_at: HashMap<String, Instant>,
    runs: HashMap<String, Run>,
}

struct Run {
    target: String,
    from: String,
    generation: i64,
    started: Instant,
    done: bool,
}

fn ver(v: &str) -> Vec<u64> {
    v.trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

fn cond(kind: &str, status: bool, reason: &str, message: &str, generation: i64) -> Value {
    json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason,
           "message": message, "observedGeneration": generation,
           "lastTransitionTime": "2026-12-01T00:00:00Z"})
}

fn ready(current: &str, generation: i64) -> Value {
    cond(
        "Ready",
        true,
        "AsExpected",
        &format!("Cluster version is {current}"),
        generation,
    )
}

impl Cvo {
    /// Moves every ClusterVersionShadow to where it is now; bumps the resourceVersion of the
    /// ones whose status changed.
    pub fn tick(&mut self, objects: &mut BTreeMap<String, Value>, rv: &mut u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let global_current = objects
            .get(&format!("{PREFIX}global"))
            .map(|g| {
                g["status"]["current"]["version"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
        let keys: Vec<String> = objects
            .keys()
            .filter(|k| k.starts_with(PREFIX))
            .cloned()
            .collect();
        for key in keys {
            let name = key.trim_start_matches(PREFIX).to_string();
            let obj = objects.get_mut(&key).unwrap();
            let before = obj["status"].clone();
            let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
            let desired = obj["spec"]["desiredUpdate"]["version"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let mut current = obj["status"]["current"]["version"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if !desired.is_empty()
                && desired != current
                && self.runs.get(&name).map(|r| r.generation) != Some(generation)
            {
                self.runs.insert(
                    name.clone(),
                    Run {
                        target: desired.clone(),
                        from: current.clone(),
                        generation,
                        started: now,
                        done: false,
                    },
                );
                self.requested_at.insert(name.clone(), now);
            }
            let st = &mut obj["status"];
            let failing = self.fail_preflight.get(&name);
            st["preflight"] = json!({"observedAt": "2026-12-01T00:00:00Z", "checks": [
                {"name": "etcd-health", "policy": "Block", "state": "Passed", "reason": "Healthy", "message": "3/3 members healthy"},
                match failing {
                    Some((check, msg)) => json!({"name": check, "policy": "Block", "state": "Failed", "reason": "Blocked", "message": msg}),
                    None => json!({"name": "registry-images", "policy": "Block", "state": "Passed", "reason": "Checked", "message": "core images present"}),
                }
            ]});
            let preflight = cond(
                "PreflightReady",
                failing.is_none(),
                if failing.is_none() {
                    "Passed"
                } else {
                    "Failed"
                },
                "",
                generation,
            );
            st["observedGeneration"] = json!(generation);
            let mut conditions = vec![preflight];
            match self.runs.get_mut(&name) {
                Some(run) if !run.done => {
                    let t = self.stage_time.as_secs_f64().max(0.001);
                    let e = now.duration_since(run.started).as_secs_f64() / t;
                    let fail_op = self.degrade.get(&name);
                    let failed = fail_op.is_some() && e >= 1.5;
                    let mut stages = Vec::new();
                    for (i, (sname, prio, ops)) in STAGES.iter().enumerate() {
                        let i = i as f64;
                        let mut phase = if e >= i + 1.0 {
                            "Finished"
                        } else if e >= i {
                            "Running"
                        } else {
                            "Pending"
                        };
                        if failed && i >= 1.0 {
                            phase = if i == 1.0 { "Running" } else { "Pending" };
                        }
                        let ops: Vec<Value> = ops
                            .iter()
                            .map(|op| {
                                let op_phase = match phase {
                                    "Finished" => "Succeeded",
                                    "Running" if failed && fail_op == Some(&op.to_string()) => {
                                        "Failed"
                                    }
                                    "Running" => "Running",
                                    _ => "Pending",
                                };
                                json!({"name": op, "action": "Upgrade", "currentVersion": run.from,
                                   "targetVersion": run.target, "phase": op_phase})
                            })
                            .collect();
                        stages.push(json!({"name": sname, "priority": prio, "phase": phase, "operations": ops}));
                    }
                    st["stages"] = json!(stages);
                    st["desired"] = json!({"version": run.target, "image": format!("registry.alauda.cn:60080/acp/release:{}", run.target)});
                    if failed {
                        let op = fail_op.unwrap();
                        conditions.push(cond("Ready", false, "UpgradeFailed", "", generation));
                        conditions.push(cond("Reconciling", false, "Blocked", "", generation));
                        conditions.push(cond(
                            "Degraded",
                            true,
                            "OperationFailed",
                            &format!("{op}: rollout failed: 1/3 replicas available"),
                            generation,
                        ));
                    } else if e >= STAGES.len() as f64 {
                        run.done = true;
                        current = run.target.clone();
                        st["current"] = json!({"version": current, "image": format!("registry.alauda.cn:60080/acp/release:{current}")});
                        let mut history = st["history"].as_array().cloned().unwrap_or_default();
                        history.insert(0, json!({"version": current, "state": "Completed",
                            "image": format!("registry.alauda.cn:60080/acp/release:{current}"),
                            "startedTime": "2026-12-01T00:00:00Z", "completionTime": "2026-12-01T00:00:03Z"}));
                        st["history"] = json!(history);
                        conditions.push(ready(&current, generation));
                        conditions.push(cond("Reconciling", false, "AsExpected", "", generation));
                        self.ready_at.insert(name.clone(), now);
                    } else {
                        conditions.push(cond(
                            "Ready",
                            false,
                            "Progressing",
                            &format!("Upgrading to {}", run.target),
                            generation,
                        ));
                        conditions.push(cond("Reconciling", true, "Progressing", "", generation));
                    }
                }
                _ if self.not_ready.contains(&name) => {
                    conditions.push(cond(
                        "Ready",
                        false,
                        "Reconciling",
                        "components still rolling out",
                        generation,
                    ));
                    conditions.push(cond("Reconciling", true, "Progressing", "", generation));
                }
                _ => {
                    conditions.push(ready(&current, generation));
                    if st["desired"].is_null() {
                        st["desired"] = json!({"version": current});
                    }
                }
            }
            st["conditions"] = json!(conditions);
            let reach = if name == "global" {
                None
            } else {
                Some(global_current.clone())
            };
            let ups: Vec<Value> = self
                .offered
                .iter()
                .filter(|v| ver(v) > ver(&current))
                .filter(|v| reach.as_ref().is_none_or(|g| ver(v) <= ver(g)))
                .map(|v| json!({"version": v, "image": format!("registry.alauda.cn:60080/acp/release:{v}")}))
                .collect();
            if ups.is_empty() {
                if let Some(m) = st.as_object_mut() {
                    m.remove("availableUpdates");
                }
            } else {
                st["availableUpdates"] = json!(ups);
            }
            if obj["status"] != before {
                *rv += 1;
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            }
        }
    }
}

/// Puts one ClusterVersionShadow per (cluster, current version) into `global` and switches
/// the operator on, stages lasting `stage_ms`.
pub fn install(p: &FakePlatform, clusters: &[(&str, &str)], offered: &[&str], stage_ms: u64) {
    for (name, current) in clusters {
        p.put(
            "global",
            "clusterversionshadows",
            json!({"apiVersion": "config.alauda.io/v1", "kind": "ClusterVersionShadow",
                "metadata": {"name": name, "namespace": "cpaas-system", "generation": 1},
                "spec": {},
                "status": {"current": {"version": current}}}),
        );
    }
    let mut s = p.state.lock().unwrap();
    s.cvo.enabled = true;
    s.cvo.stage_time = Duration::from_millis(stage_ms);
    s.cvo.offered = offered.iter().map(|v| v.to_string()).collect();
}
