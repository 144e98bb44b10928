//! `ferry list` and `ferry gc` against the fake platform (two clusters), checked with kubectl.

mod common;

use common::platform::{FakePlatform, PlatformOpts};
use common::*;
use serde_json::{json, Value};

/// A platform with two clusters and a history of uploads:
/// * plugins (global): log-center (aligned, installed on region1), old-plugin (agnostic,
///   installed nowhere, one ModuleConfig), core-plugin (core: never listed or touched);
/// * global: topolvm-operator 2.1.0–2.4.0 uploaded, 2.3.0 installed (and an OLM copy of its
///   CSV in another namespace); nginx-chart installed by a HelmRequest;
/// * region1: opensearch-operator 2.8.0 uploaded, not installed.
fn platform() -> FakePlatform {
    let p = FakePlatform::start(PlatformOpts {
        clusters: vec!["global", "region1"],
        ..Default::default()
    });
    for c in ["global", "region1"] {
        p.put("global", "clusters", json!({"apiVersion": "platform.tkestack.io/v1", "kind": "Cluster", "metadata": {"name": c}}));
    }
    let plugin = |name: &str, lifecycle: Option<&str>, display: &str, installed: Value| {
        let mut labels = json!({"cpaas.io/module-name": name, "cpaas.io/module-type": "plugin"});
        if let Some(l) = lifecycle {
            labels["cpaas.io/lifecycle-type"] = json!(l);
        }
        json!({"apiVersion": "cluster.alauda.io/v1alpha1", "kind": "ModulePlugin",
            "metadata": {"name": name, "labels": labels,
                "annotations": {"cpaas.io/display-name": format!(r#"{{"en": "{display}", "zh": "{display}"}}"#)}},
            "spec": {"name": name, "deleteable": true, "logo": "", "description": {"en": display}},
            "status": {"installed": installed}})
    };
    p.put("global", "moduleplugins", plugin("log-center", Some("aligned"), "Log Center",
        json!([{"cluster": "region1", "name": "log-center", "phase": "Running", "version": "v1.2.0"}])));
    p.put(
        "global",
        "moduleplugins",
        plugin("old-plugin", None, "Old Plugin", json!([])),
    );
    p.put(
        "global",
        "moduleplugins",
        plugin("core-plugin", Some("core"), "Core", json!([])),
    );
    for (name, module) in [
        ("log-center-v1.2.0", "log-center"),
        ("old-plugin-v1.0.0", "old-plugin"),
    ] {
        p.put("global", "moduleconfigs", json!({"apiVersion": "cluster.alauda.io/v1alpha1", "kind": "ModuleConfig",
            "metadata": {"name": name, "labels": {"cpaas.io/module-name": module}}, "spec": {"version": "v1"}}));
    }
    let artifact = |cluster: &str, name: &str, kind: &str, display: &str, versions: &[&str]| {
        p.put(cluster, "artifacts", json!({"apiVersion": "app.alauda.io/v1alpha1", "kind": "Artifact",
            "metadata": {"name": name, "namespace": "cpaas-system", "labels": {"cpaas.io/artifact-type": kind}},
            "spec": {"type": kind, "displayName": display, "registry": "10.0.0.5:11443",
                "repository": format!("acp/{name}-bundle"), "present": true}}));
        for v in versions {
            p.put(cluster, "artifactversions", json!({"apiVersion": "app.alauda.io/v1alpha1", "kind": "ArtifactVersion",
                "metadata": {"name": format!("{name}.v{v}"), "namespace": "cpaas-system",
                    "labels": {"cpaas.io/artifact": name, "cpaas.io/artifact-version": v},
                    "ownerReferences": [{"apiVersion": "app.alauda.io/v1alpha1", "kind": "Artifact", "name": name, "uid": "uid-owner"}]},
                "spec": {"tag": format!("v{v}"), "present": true}}));
        }
    };
    artifact(
        "global",
        "topolvm-operator",
        "bundle",
        "NativeStor",
        &["2.1.0", "2.2.0", "2.3.0", "2.4.0"],
    );
    artifact("global", "nginx-chart", "chart", "NGINX", &["1.2.3"]);
    artifact(
        "region1",
        "opensearch-operator",
        "bundle",
        "OpenSearch",
        &["2.8.0"],
    );
    let csv = |ns: &str, copied: bool| {
        let mut labels = json!({});
        if copied {
            labels["olm.copiedFrom"] = json!("topolvm-system");
        }
        json!({"apiVersion": "operators.coreos.com/v1alpha1", "kind": "ClusterServiceVersion",
            "metadata": {"name": "topolvm-operator.v2.3.0", "namespace": ns, "labels": labels},
            "spec": {"version": "2.3.0", "displayName": "NativeStor"}})
    };
    p.put(
        "global",
        "clusterserviceversions",
        csv("topolvm-system", false),
    );
    p.put("global", "clusterserviceversions", csv("default", true));
    p.put(
        "global",
        "helmrequests",
        json!({"apiVersion": "app.alauda.io/v1alpha1", "kind": "HelmRequest",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"chart": "public-charts/nginx-chart", "version": "1.2.3"}}),
    );
    p
}

fn ferry_on(p: &FakePlatform, args: &[&str]) -> Run {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(p.token_flags());
    ferry(&all)
}

fn names(p: &FakePlatform, cluster: &str, resource: &str, all_namespaces: bool) -> Vec<String> {
    let mut args = vec!["get", resource, "-o", "json"];
    if all_namespaces {
        args.push("-A");
    }
    let out = p.kubectl(cluster, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut n: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[test]
fn list_reports_every_upload_and_where_it_is_installed_in_violets_shape() {
    let p = platform();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.yaml");
    let run = ferry_on(&p, &["list", "--output-file", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.all());
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(run.stdout, written, "printed and written differ");
    let yaml: Value = serde_yaml::from_str(&written).unwrap();
    assert_eq!(
        yaml,
        json!({"applications": {
            "log-center": {"displayName": "Log Center", "type": "ModulePlugin",
                "installed": [{"clusterName": "region1", "version": "v1.2.0"}]},
            "nginx-chart": {"displayName": "NGINX", "type": "Chart",
                "installed": [{"clusterName": "global", "version": "1.2.3"}]},
            "old-plugin": {"displayName": "Old Plugin", "type": "ModulePlugin", "installed": []},
            "opensearch-operator": {"displayName": "OpenSearch", "type": "OperatorBundle", "installed": []},
            "topolvm-operator": {"displayName": "NativeStor", "type": "OperatorBundle",
                "installed": [{"clusterName": "global", "version": "2.3.0"}]},
        }})
    );

    // --clusters narrows what is installed where; --output table aligns it
    let run = ferry_on(
        &p,
        &[
            "list",
            "--clusters",
            "region1",
            "--output",
            "table",
            "--output-file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "TYPE", "INSTALLED(CLUSTER:VERSION)", "DISPLAY NAME"]
    );
    assert!(
        rows.contains(&vec![
            "log-center",
            "ModulePlugin",
            "region1:v1.2.0",
            "Log Center"
        ]),
        "{}",
        run.stdout
    );
    assert!(
        rows.contains(&vec![
            "opensearch-operator",
            "OperatorBundle",
            "-",
            "OpenSearch"
        ]),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("topolvm-operator"), "{}", run.stdout);
}

const PLANNED: &[(&str, &str, &str)] = &[
    ("ArtifactVersion", "topolvm-operator.v2.2.0", "global"),
    ("ArtifactVersion", "topolvm-operator.v2.1.0", "global"),
    ("ArtifactVersion", "opensearch-operator.v2.8.0", "region1"),
    ("Artifact", "opensearch-operator", "region1"),
    ("ModuleConfig", "old-plugin-v1.0.0", "global"),
    ("ModulePlugin", "old-plugin", "global"),
];

fn planned(report: &Value) -> Vec<(String, String, String)> {
    report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("type"), s("name"), s("cluster"))
        })
        .collect()
}

fn expected() -> Vec<(String, String, String)> {
    PLANNED
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

#[test]
fn gc_dry_run_plans_and_changes_nothing_and_gc_without_yes_or_terminal_refuses() {
    let p = platform();
    let run = ferry_on(&p, &["gc", "--dry-run", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let report = run.json();
    assert_eq!(planned(&report), expected());
    assert_eq!(
        report["unreferenced_images"],
        json!([
            "10.0.0.5:11443/acp/opensearch-operator-bundle:v2.8.0",
            "10.0.0.5:11443/acp/topolvm-operator-bundle:v2.1.0",
            "10.0.0.5:11443/acp/topolvm-operator-bundle:v2.2.0",
        ])
    );
    let text = ferry_on(&p, &["gc", "--dry-run"]);
    assert!(
        text.stdout
            .contains("GC plan (dry run, nothing is deleted): 6 resources"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("older than the installed 2.3.0"),
        "{}",
        text.stdout
    );

    // no terminal, no --yes: refused, exit 2
    let refused = ferry_on(&p, &["gc"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(
        refused.stderr.contains("re-run with --yes"),
        "{}",
        refused.stderr
    );

    // kubectl sees everything still there
    assert_eq!(names(&p, "global", "artifactversions", true).len(), 5);
    assert_eq!(
        names(&p, "region1", "artifacts", true),
        ["opensearch-operator"]
    );
    assert_eq!(
        names(&p, "global", "moduleplugins", false),
        ["core-plugin", "log-center", "old-plugin"]
    );
    assert_eq!(names(&p, "global", "moduleconfigs", false).len(), 2);
    assert!(
        !p.log().iter().any(|l| l.starts_with("DELETE")),
        "{:?}",
        p.log()
    );
}

#[test]
fn gc_deletes_exactly_the_plan_writes_a_backup_that_restores_and_skips_what_changed() {
    let p = platform();
    // someone edits one of the planned versions between the plan and its deletion
    p.state
        .lock()
        .unwrap()
        .changed_before_delete
        .push("topolvm-operator.v2.1.0".into());
    let backups = tempfile::tempdir().unwrap();
    let run = ferry_on(
        &p,
        &[
            "gc",
            "--yes",
            "--backup-dir",
            backups.path().to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("GC summary:"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("topolvm-operator.v2.1.0")
                && l.contains("skipped: changed since the plan")),
        "{}",
        run.stdout
    );
    for (_, name, _) in PLANNED
        .iter()
        .filter(|(_, n, _)| *n != "topolvm-operator.v2.1.0")
    {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.contains(name) && l.trim_end().ends_with("deleted")),
            "{name}: {}",
            run.stdout
        );
    }
    // exactly the plan is gone (kubectl), the changed object stays
    assert_eq!(
        names(&p, "global", "artifactversions", true),
        [
            "nginx-chart.v1.2.3",
            "topolvm-operator.v2.1.0",
            "topolvm-operator.v2.3.0",
            "topolvm-operator.v2.4.0"
        ]
    );
    assert!(names(&p, "region1", "artifacts", true).is_empty());
    assert!(names(&p, "region1", "artifactversions", true).is_empty());
    assert_eq!(
        names(&p, "global", "moduleplugins", false),
        ["core-plugin", "log-center"]
    );
    assert_eq!(
        names(&p, "global", "moduleconfigs", false),
        ["log-center-v1.2.0"]
    );

    // one backup per cluster, private, restored by kubectl apply
    let mut files: Vec<_> = std::fs::read_dir(backups.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    for (f, cluster) in files.iter().zip(["global", "region1"]) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("ferry-gc-") && name.ends_with(&format!(".{cluster}.yaml")),
            "{name}"
        );
        assert!(
            run.stdout.contains(&format!("backup: {}", f.display())),
            "{}",
            run.stdout
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let out = p.kubectl(
            cluster,
            &[
                "apply",
                "--server-side",
                "--validate=false",
                "-f",
                f.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "kubectl apply {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(names(&p, "global", "artifactversions", true).len(), 5);
    assert_eq!(
        names(&p, "region1", "artifacts", true),
        ["opensearch-operator"]
    );
    assert_eq!(
        names(&p, "region1", "artifactversions", true),
        ["opensearch-operator.v2.8.0"]
    );
    assert_eq!(
        names(&p, "global", "moduleplugins", false),
        ["core-plugin", "log-center", "old-plugin"]
    );
    assert_eq!(
        names(&p, "global", "moduleconfigs", false),
        ["log-center-v1.2.0", "old-plugin-v1.0.0"]
    );
    let restored = p.get("global", "moduleplugins", "", "old-plugin").unwrap();
    assert_eq!(
        restored["metadata"]["labels"]["cpaas.io/module-name"],
        "old-plugin"
    );

    // a second run finds nothing left to do... but the restored objects again
    let again = ferry_on(&p, &["gc", "--dry-run", "--clusters", "region1"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.stdout.contains("opensearch-operator"),
        "{}",
        again.stdout
    );
    assert!(
        !again.stdout.contains("old-plugin"),
        "plugins are global: {}",
        again.stdout
    );
}

#[test]
fn a_cluster_that_cannot_be_read_is_named_and_the_others_are_still_cleaned() {
    let p = platform();
    let run = ferry_on(
        &p,
        &[
            "gc",
            "--dry-run",
            "--clusters",
            "global,ghost",
            "--output",
            "json",
        ],
    );
    assert_eq!(run.code, 7, "{}", run.all());
    assert!(
        run.stderr
            .contains("cluster ghost could not be read, nothing is deleted there"),
        "{}",
        run.stderr
    );
    let report = run.json();
    let planned: Vec<String> = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        planned.contains(&"topolvm-operator.v2.1.0".to_string()),
        "{planned:?}"
    );
    assert!(planned.contains(&"old-plugin".to_string()), "{planned:?}");
}
