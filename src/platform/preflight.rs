//! `sync --preflight`: what the upgrade checks say, read from the `ClusterVersionShadow` named
//! after the cluster (`config.alauda.io`, namespace `cpaas-system`). Read-only.

use serde::Serialize;
use serde_json::Value;

use super::artifacts::NAMESPACE;
use super::cluster::status_code;
use super::inventory::clusters_listed_on;
use super::Cluster;
use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub policy: String,
    pub state: String,
    pub reason: String,
    pub message: String,
    /// Whether this state lets the upgrade go on.
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    pub cluster: String,
    /// From the `PreflightReady` condition: Passed, Failed or Unknown.
    pub result: String,
    pub current_version: String,
    pub current_image: String,
    pub desired_version: String,
    pub desired_image: String,
    pub observed_at: String,
    /// The checks were evaluated for an older desired update than the current one.
    pub stale: bool,
    pub checks: Vec<Check>,
}

/// Check states that let the upgrade proceed; anything else (Failed, Error, Pending, Running,
/// unknown) does not.
const PASSING: &[&str] = &["passed", "succeeded", "success", "skipped", "warning"];

impl Preflight {
    pub fn passed(&self) -> bool {
        self.result == "Passed" && !self.stale && self.checks.iter().all(|c| c.passed)
    }

    pub fn render(&self) -> String {
        let mut s = String::from("Summary\n");
        let rows = [
            ("Cluster", self.cluster.as_str()),
            ("Result", self.result.as_str()),
            ("Current version", self.current_version.as_str()),
            ("Current image", self.current_image.as_str()),
            ("Desired version", self.desired_version.as_str()),
            ("Desired image", self.desired_image.as_str()),
            ("Observed at", self.observed_at.as_str()),
        ];
        for (k, v) in rows {
            s.push_str(&format!(
                "  {k:<16} {}\n",
                if v.is_empty() { "-" } else { v }
            ));
        }
        if self.stale {
            s.push_str("  (stale: these checks ran for an earlier desired update; run the preflight again)\n");
        }
        s.push_str("\nChecks\n");
        let mut rows = vec![["NAME", "POLICY", "STATE", "REASON", "MESSAGE"].map(String::from)];
        rows.extend(
            self.checks
                .iter()
                .map(|c| [&c.name, &c.policy, &c.state, &c.reason, &c.message].map(|x| x.clone())),
        );
        for line in crate::report::aligned(&rows).lines() {
            s.push_str(&format!("  {line}\n"));
        }
        if self.checks.is_empty() {
            s.push_str("  (no checks recorded)\n");
        }
        s
    }
}

/// Reads and summarizes the ClusterVersionShadow named `name` in `cpaas-system`. None by that
/// name: the error lists the clusters `cluster` knows (a mistyped `--cluster` is the usual
/// cause, and the names are not otherwise at hand on the node).
pub async fn read(cluster: &Cluster, name: &str) -> Result<Preflight> {
    Ok(summarize(name, &get(cluster, name).await?))
}

/// The ClusterVersionShadow named `name` in `cpaas-system`, metadata included (`sync
/// --preflight` and `ferry upgrade` read the same object).
pub async fn get(cluster: &Cluster, name: &str) -> Result<Value> {
    let (ar, _) = cluster
        .discover("config.alauda.io", "ClusterVersionShadow")
        .await?;
    let what = format!("ClusterVersionShadow {NAMESPACE}/{name}");
    let obj = match cluster.namespaced(&ar, NAMESPACE).get(name).await {
        Ok(obj) => obj,
        Err(e) if status_code(&e) == Some(404) => {
            let known = match clusters_listed_on(cluster).await {
                Ok(names) => format!("the clusters are: {}", names.join(", ")),
                Err(e) => format!("the clusters could not be listed: {}", e.message),
            };
            return Err(Error::new(
                ErrorKind::Platform,
                format!(
                    "there is no {what}: no cluster {name:?} to read the upgrade checks of; \
                     {known} (give one with --cluster)"
                ),
            ));
        }
        Err(e) => return Err(cluster.error(e, &format!("reading {what}"))),
    };
    let mut v = obj.data.clone();
    v["metadata"] = serde_json::to_value(&obj.metadata).unwrap_or_default();
    Ok(v)
}

pub fn summarize(cluster: &str, v: &Value) -> Preflight {
    let text = |x: &Value| x.as_str().unwrap_or_default().to_string();
    let status = &v["status"];
    let condition = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "PreflightReady"));
    let result = match condition.map(|c| text(&c["status"])).as_deref() {
        Some("True") => "Passed",
        Some("False") => "Failed",
        _ => "Unknown",
    }
    .to_string();
    let generation = v["metadata"]["generation"].as_i64().unwrap_or(0);
    let observed = condition
        .and_then(|c| c["observedGeneration"].as_i64())
        .or_else(|| status["observedGeneration"].as_i64())
        .unwrap_or(generation);
    let spec_version = text(&v["spec"]["desiredUpdate"]["version"]);
    let desired_version = text(&status["desired"]["version"]);
    let stale = observed < generation
        || (!spec_version.is_empty()
            && !desired_version.is_empty()
            && spec_version != desired_version);
    let checks = status["preflight"]["checks"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let state = text(&c["state"]);
                    Check {
                        name: text(&c["name"]),
                        policy: text(&c["policy"]),
                        passed: PASSING.contains(&state.to_ascii_lowercase().as_str()),
                        state,
                        reason: text(&c["reason"]),
                        message: text(&c["message"]),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Preflight {
        cluster: cluster.to_string(),
        result,
        current_version: text(&status["current"]["version"]),
        current_image: text(&status["current"]["image"]),
        desired_version: if desired_version.is_empty() {
            spec_version
        } else {
            desired_version
        },
        desired_image: text(&status["desired"]["image"]),
        observed_at: text(&status["preflight"]["observedAt"]),
        stale,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_verdict() {
        let v = serde_json::json!({
            "metadata": {"generation": 3},
            "spec": {"desiredUpdate": {"version": "v4.2.0"}},
            "status": {
                "current": {"version": "v4.1.2", "image": "r/acp/release:v4.1.2"},
                "desired": {"version": "v4.2.0", "image": "r/acp/release:v4.2.0"},
                "conditions": [{"type": "PreflightReady", "status": "True", "observedGeneration": 3}],
                "preflight": {"observedAt": "2026-11-25T10:00:00Z", "checks": [
                    {"name": "etcd-health", "policy": "Block", "state": "Passed", "reason": "Healthy", "message": "ok"},
                    {"name": "disk-space", "policy": "Warn", "state": "Warning", "reason": "Low", "message": "82% used"}
                ]}
            }
        });
        let p = summarize("global", &v);
        assert!(p.passed(), "{p:?}");
        assert!(p.render().contains("etcd-health"));
        assert!(p.render().contains("Current image    r/acp/release:v4.1.2"));
        let mut failing = v.clone();
        failing["status"]["preflight"]["checks"][0]["state"] = "Failed".into();
        assert!(!summarize("global", &failing).passed());
        let mut stale = v.clone();
        stale["metadata"]["generation"] = 4.into();
        assert!(summarize("global", &stale).stale);
    }
}
