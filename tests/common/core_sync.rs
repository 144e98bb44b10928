//! `ferry sync`'s fixtures: a small core package (`ferry dev core`), the command with fast
//! retries, and a ClusterVersionShadow on the fake platform.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::platform::FakePlatform;
use super::{ferry, ferry_with, fixture, Run};

/// A core package (`ferry dev core`) with one plugin, extracted under `dir`.
pub fn core(dir: &Path) -> PathBuf {
    let out = dir.join("core");
    let plugin = fixture("oam-application");
    let run = ferry(&[
        "dev",
        "core",
        out.to_str().unwrap(),
        "--plugin",
        plugin.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    out
}

/// `ferry sync`, retrying fast.
pub fn sync(args: &[&str]) -> Run {
    sync_with(args, &[], None)
}

/// `sync` with environment variables and standard input.
pub fn sync_with(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut v = vec!["sync", "--retry-base-ms", "20"];
    v.extend_from_slice(args);
    ferry_with(&v, env, stdin)
}

/// ClusterVersionShadow `global`: checks in `state`, for `generation`, evaluated at `observed`.
pub fn shadow(p: &FakePlatform, state: &str, generation: i64, observed: i64) {
    p.put(
        "global",
        "clusterversionshadows",
        json!({
            "apiVersion": "config.alauda.io/v1",
            "kind": "ClusterVersionShadow",
            "metadata": {"name": "global", "namespace": "cpaas-system", "generation": generation},
            "spec": {"desiredUpdate": {"version": "v4.2.0"}},
            "status": {
                "current": {"version": "v4.1.3", "image": "registry.alauda.cn:60080/acp/release:v4.1.3"},
                "desired": {"version": "v4.2.0", "image": "registry.alauda.cn:60080/acp/release:v4.2.0"},
                "conditions": [{"type": "PreflightReady", "status": if state == "Passed" { "True" } else { "False" },
                                "observedGeneration": observed, "reason": "Checked", "message": "",
                                "lastTransitionTime": "2026-11-25T10:00:00Z"}],
                "preflight": {"observedAt": "2026-11-25T10:00:00Z", "checks": [
                    {"name": "etcd-health", "policy": "Block", "state": "Passed", "reason": "Healthy", "message": "3/3 members healthy"},
                    {"name": "registry-images", "policy": "Block", "state": state, "reason": "Checked", "message": "core images present"}
                ]}
            }
        }),
    );
}
