//! `ferry list` and `ferry gc` against the fake platform (two clusters), checked with kubectl.

mod common;

use common::platform::{FakePlatform, PlatformOpts};
use common::*;
use serde_json::{json, Value};

/// A platform with three clusters and a history of uploads:
/// * plugins (global): log-center (aligned, installed on region1), old-plugin (agnostic,
///   installed nowhere, one ModuleConfig), core-plugin (core: never listed or touched);
/// * global: topolvm-operator 2.1.0–2.4.0 uploaded, 2.3.0 installed (and an OLM copy of its
///   CSV in another namespace); nginx-chart installed by a HelmRequest;
/// * region1: opensearch-operator 2.8.0 uploaded, not installed;
/// * region2: nothing.
///
/// Everything was created long ago (well past `--min-age`) unless a test says otherwise.
fn platform() -> FakePlatform {
    let p = FakePlatform::start(PlatformOpts {
        clusters: vec!["global", "region1", "region2"],
        ..Default::default()
    });
    let p = Aged(p);
    for c in ["global", "region1", "region2"] {
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
    p.0
}

const LONG_AGO: &str = "2025-01-01T00:00:00Z";

/// Puts objects with a creationTimestamp of [`LONG_AGO`] unless they carry one.
struct Aged(FakePlatform);

impl Aged {
    fn put(&self, cluster: &str, plural: &str, obj: Value) {
        self.0.put(cluster, plural, aged(obj));
    }
}

fn aged(mut obj: Value) -> Value {
    if obj["metadata"].get("creationTimestamp").is_none() {
        obj["metadata"]["creationTimestamp"] = json!(LONG_AGO);
    }
    obj
}

fn ferry_on(p: &FakePlatform, args: &[&str]) -> Run {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(p.token_flags());
    ferry(&all)
}

/// `ferry list --output json` (its apps.yaml goes to a temp dir).
fn list_json(p: &FakePlatform) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.yaml");
    ferry_on(
        p,
        &[
            "list",
            "--output",
            "json",
            "--output-file",
            file.to_str().unwrap(),
        ],
    )
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

/// topolvm-operator 2.2.0 stays: the one rollback version `--keep 1` keeps below the
/// installed 2.3.0 (2.4.0, newer than the installed one, does not take that slot).
const PLANNED: &[(&str, &str, &str)] = &[
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
        ])
    );
    let text = ferry_on(&p, &["gc", "--dry-run"]);
    assert!(
        text.stdout
            .contains("GC plan (dry run, nothing is deleted): 5 resources"),
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
            "topolvm-operator.v2.2.0",
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

// Issue 20: gc never deletes what is installed or what the README promises to keep.

/// An operator Artifact on `cluster` created at `created`, with versions (version, created;
/// "" for no creationTimestamp) owned by it (its real uid, so that a cascade would reach them).
fn upload(p: &FakePlatform, cluster: &str, name: &str, created: &str, versions: &[(&str, &str)]) {
    p.put(
        cluster,
        "artifacts",
        json!({"apiVersion": "app.alauda.io/v1alpha1", "kind": "Artifact",
        "metadata": {"name": name, "namespace": "cpaas-system", "creationTimestamp": created,
            "labels": {"cpaas.io/artifact-type": "bundle"}},
        "spec": {"type": "bundle", "displayName": name, "registry": "10.0.0.5:11443",
            "repository": format!("acp/{name}-bundle"), "present": true}}),
    );
    let uid = p.get(cluster, "artifacts", "cpaas-system", name).unwrap()["metadata"]["uid"].clone();
    for (v, created) in versions {
        let mut meta = json!({"name": format!("{name}.v{v}"), "namespace": "cpaas-system",
            "labels": {"cpaas.io/artifact": name, "cpaas.io/artifact-version": v},
            "ownerReferences": [{"apiVersion": "app.alauda.io/v1alpha1", "kind": "Artifact",
                "name": name, "uid": uid}]});
        if !created.is_empty() {
            meta["creationTimestamp"] = json!(created);
        }
        p.put(
            cluster,
            "artifactversions",
            json!({"apiVersion": "app.alauda.io/v1alpha1",
            "kind": "ArtifactVersion", "metadata": meta,
            "spec": {"tag": format!("v{v}"), "present": true}}),
        );
    }
}

fn install_operator(p: &FakePlatform, cluster: &str, name: &str, version: &str) {
    p.put(
        cluster,
        "clusterserviceversions",
        json!({"apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {"name": format!("{name}.v{version}"), "namespace": format!("{name}-system"),
            "creationTimestamp": LONG_AGO},
        "spec": {"version": version}}),
    );
}

/// `now` minus `seconds`, as the API server writes timestamps.
fn ago(seconds: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn planned_names(report: &Value) -> Vec<String> {
    report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_plugin_a_module_info_shows_installed_is_listed_and_never_deleted() {
    let p = platform();
    // the controller has not written status.installed yet; the ModuleInfos say it is installed
    p.put(
        "global",
        "moduleplugins",
        aged(json!({"apiVersion": "cluster.alauda.io/v1alpha1",
        "kind": "ModulePlugin", "metadata": {"name": "lagging-plugin",
            "labels": {"cpaas.io/module-name": "lagging-plugin", "cpaas.io/module-type": "plugin"}},
        "spec": {"name": "lagging-plugin"}, "status": {"installed": []}})),
    );
    p.put(
        "global",
        "moduleconfigs",
        aged(json!({"apiVersion": "cluster.alauda.io/v1alpha1",
        "kind": "ModuleConfig", "metadata": {"name": "lagging-plugin-v3.1.0",
            "labels": {"cpaas.io/module-name": "lagging-plugin"}}, "spec": {"version": "v3.1.0"}})),
    );
    let info = |name: &str, cluster: &str, module: &str, spec: &str, status: Option<&str>| {
        let mut o = json!({"apiVersion": "cluster.alauda.io/v1alpha1", "kind": "ModuleInfo",
            "metadata": {"name": name, "labels": {"cpaas.io/cluster-name": cluster,
                "cpaas.io/module-name": module}},
            "spec": {"version": spec}});
        if let Some(s) = status {
            o["status"] = json!({"version": s});
        }
        p.put("global", "moduleinfoes", aged(o));
    };
    info(
        "region2-lagging",
        "region2",
        "lagging-plugin",
        "v3.1.0",
        Some("v3.1.0"),
    );
    // being installed on global: only spec.version so far
    info("global-lagging", "global", "lagging-plugin", "v3.1.0", None);
    // both sources: status.installed's version wins
    info(
        "region1-log-center",
        "region1",
        "log-center",
        "v1.1.0",
        Some("v1.1.0"),
    );

    let run = list_json(&p);
    assert_eq!(run.code, 0, "{}", run.all());
    let apps = run.json();
    assert_eq!(
        apps["applications"]["lagging-plugin"]["installed"],
        json!([{"clusterName": "global", "version": "v3.1.0"},
               {"clusterName": "region2", "version": "v3.1.0"}])
    );
    assert_eq!(
        apps["applications"]["log-center"]["installed"],
        json!([{"clusterName": "region1", "version": "v1.2.0"}])
    );

    let run = ferry_on(&p, &["gc", "--dry-run", "--output", "json", "--debug"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let plan = planned_names(&run.json());
    // where the two records disagree, --debug says so
    assert!(
        run.stderr.lines().any(|l| l.contains("lagging-plugin")
            && l.contains("region2")
            && l.contains("ModulePlugin.status.installed does not")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("log-center") && l.contains("name different versions")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(common::platform::TOKEN),
        "{}",
        run.stderr
    );
    assert!(
        !plan.iter().any(|n| n.starts_with("lagging-plugin")),
        "{plan:?}"
    );
    assert!(plan.contains(&"old-plugin".to_string()), "{plan:?}");

    // whatever --clusters says: region2's install keeps it
    let backups = tempfile::tempdir().unwrap();
    let run = ferry_on(
        &p,
        &[
            "gc",
            "--yes",
            "--clusters",
            "global",
            "--backup-dir",
            backups.path().to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        names(&p, "global", "moduleplugins", false),
        ["core-plugin", "lagging-plugin", "log-center"]
    );
    assert_eq!(
        names(&p, "global", "moduleconfigs", false),
        ["lagging-plugin-v3.1.0", "log-center-v1.2.0"]
    );
}

#[test]
fn keep_counts_only_versions_older_than_the_installed_one() {
    let p = platform();
    let old = LONG_AGO;
    upload(
        &p,
        "region2",
        "es-operator",
        old,
        &[
            ("2.7.0", old),
            ("2.8.0", old),
            ("2.9.0", old),
            ("2.10.0", old),
        ],
    );
    install_operator(&p, "region2", "es-operator", "2.9.0");
    for (keep, expect) in [
        (None, vec!["es-operator.v2.7.0"]),
        (Some("0"), vec!["es-operator.v2.8.0", "es-operator.v2.7.0"]),
        (Some("3"), vec![]),
    ] {
        let mut args = vec![
            "gc",
            "--dry-run",
            "--output",
            "json",
            "--clusters",
            "region2",
        ];
        if let Some(k) = keep {
            args.extend(["--keep", k]);
        }
        let run = ferry_on(&p, &args);
        assert_eq!(run.code, 0, "{}", run.all());
        assert_eq!(planned_names(&run.json()), expect, "--keep {keep:?}");
    }
}

#[test]
fn an_install_state_that_cannot_be_read_is_unknown_never_not_installed() {
    let p = platform();
    {
        let mut s = p.state.lock().unwrap();
        s.failing_reads
            .push("region1|clusterserviceversions".into());
        s.failing_reads.push("global|moduleinfoes".into());
        s.failing_reads.push("global|helmrequests".into());
    }
    let run = ferry_on(&p, &["gc", "--dry-run", "--output", "json"]);
    assert_eq!(run.code, 7, "{}", run.all());
    let report = run.json();
    // global's operators are known: their old versions are still planned; nothing else is
    assert_eq!(planned_names(&report), ["topolvm-operator.v2.1.0"]);
    let unknown = report["not_planned"].as_array().unwrap();
    assert!(
        unknown.iter().any(|u| u["cluster"] == "region1"
            && u["why"]
                .as_str()
                .unwrap()
                .contains("ClusterServiceVersions")),
        "{unknown:?}"
    );
    assert!(
        unknown.iter().any(|u| u["cluster"] == "global"
            && u["why"].as_str().unwrap().contains("ModuleInfo")
            && u["why"].as_str().unwrap().contains("503")),
        "{unknown:?}"
    );
    let text = ferry_on(&p, &["gc", "--dry-run"]);
    assert_eq!(text.code, 7, "{}", text.all());
    assert!(text.stdout.contains("Not planned"), "{}", text.stdout);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.contains("region1") && l.contains("ClusterServiceVersions")),
        "{}",
        text.stdout
    );

    // list still lists region1's uploads, with the install state marked unknown
    let run = list_json(&p);
    assert_eq!(run.code, 7, "{}", run.all());
    let apps = &run.json()["applications"];
    let unknown_on = |app: &str| -> Vec<String> {
        apps[app]["unknown"]
            .as_array()
            .unwrap_or(&vec![])
            .iter()
            .map(|u| u["clusterName"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        apps["opensearch-operator"]["installed"],
        json!([]),
        "{apps}"
    );
    assert_eq!(unknown_on("opensearch-operator"), ["region1"], "{apps}");
    assert_eq!(unknown_on("nginx-chart"), ["global"], "{apps}");
    assert_eq!(
        unknown_on("topolvm-operator"),
        Vec::<String>::new(),
        "{apps}"
    );
    assert_eq!(
        apps["log-center"]["installed"],
        json!([{"clusterName": "region1", "version": "v1.2.0"}]),
        "{apps}"
    );
    assert_eq!(
        unknown_on("old-plugin"),
        ["global", "region1", "region2"],
        "{apps}"
    );
    assert!(run.stderr.contains("ModuleInfo"), "{}", run.stderr);
}

#[test]
fn nothing_younger_than_min_age_is_planned() {
    let p = platform();
    let (old, hour_ago, now) = (LONG_AGO, ago(3600), ago(0));
    upload(
        &p,
        "region2",
        "fresh-operator",
        &hour_ago,
        &[("1.0.0", &hour_ago)],
    );
    upload(
        &p,
        "region2",
        "half-operator",
        old,
        &[("1.0.0", old), ("1.1.0", &now)],
    );
    upload(&p, "region2", "untimed-operator", old, &[("1.0.0", "")]);
    let dry = |extra: &[&str]| {
        let mut args = vec![
            "gc",
            "--dry-run",
            "--output",
            "json",
            "--clusters",
            "region2",
        ];
        args.extend(extra);
        let run = ferry_on(&p, &args);
        assert_eq!(run.code, 0, "{}", run.all());
        run.json()
    };
    let report = dry(&[]);
    // the Artifact stays while one of its versions does
    assert_eq!(planned_names(&report), ["half-operator.v1.0.0"]);
    let why = report["resources"][0]["why"].as_str().unwrap();
    assert!(
        why.contains("not installed") && why.contains("uploaded ") && why.ends_with("d ago"),
        "{why}"
    );
    let skipped = report["not_planned"].to_string();
    for young in [
        "fresh-operator",
        "half-operator.v1.1.0",
        "untimed-operator.v1.0.0",
    ] {
        assert!(skipped.contains(young), "{young}: {skipped}");
    }
    assert_eq!(
        planned_names(&dry(&["--min-age", "30m"])),
        [
            "fresh-operator.v1.0.0",
            "fresh-operator",
            "half-operator.v1.0.0"
        ]
    );
    assert_eq!(
        planned_names(&dry(&["--min-age", "7d"])),
        ["half-operator.v1.0.0"]
    );
    assert_eq!(planned_names(&dry(&["--min-age", "0"])).len(), 7);
    let bad = ferry_on(&p, &["gc", "--dry-run", "--min-age", "3x"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("--min-age"), "{}", bad.stderr);
}

#[test]
fn deletes_orphan_dependants_so_what_was_not_planned_survives() {
    let p = platform();
    // the fake's garbage collector is faithful: a default (background) delete cascades
    upload(
        &p,
        "region2",
        "probe-operator",
        LONG_AGO,
        &[("1.0.0", LONG_AGO)],
    );
    let out = p.kubectl(
        "region2",
        &["delete", "artifact", "probe-operator", "-n", "cpaas-system"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(names(&p, "region2", "artifactversions", true).is_empty());

    // a version of gone-operator is uploaded between the plan and its Artifact's delete: not
    // planned, not backed up, so it must not go with its owner
    upload(
        &p,
        "region2",
        "gone-operator",
        LONG_AGO,
        &[("1.0.0", LONG_AGO)],
    );
    let uid = p
        .get("region2", "artifacts", "cpaas-system", "gone-operator")
        .unwrap()["metadata"]["uid"]
        .clone();
    p.state.lock().unwrap().created_before_delete.push((
        "gone-operator".into(),
        "region2|artifactversions".into(),
        json!({"apiVersion": "app.alauda.io/v1alpha1", "kind": "ArtifactVersion",
            "metadata": {"name": "gone-operator.v1.1.0", "namespace": "cpaas-system",
                "creationTimestamp": ago(0),
                "labels": {"cpaas.io/artifact": "gone-operator"},
                "ownerReferences": [{"apiVersion": "app.alauda.io/v1alpha1", "kind": "Artifact",
                    "name": "gone-operator", "uid": uid}]},
            "spec": {"tag": "v1.1.0"}}),
    ));
    // someone touches kept-operator's only version between the plan and its delete: ferry
    // skips it, and then keeps its Artifact rather than leave the version without an owner
    upload(
        &p,
        "region2",
        "kept-operator",
        LONG_AGO,
        &[("1.0.0", LONG_AGO)],
    );
    p.state
        .lock()
        .unwrap()
        .changed_before_delete
        .push("kept-operator.v1.0.0".into());
    let backups = tempfile::tempdir().unwrap();
    let run = ferry_on(
        &p,
        &[
            "gc",
            "--yes",
            "--clusters",
            "region2",
            "--backup-dir",
            backups.path().to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let line = |name: &str, result: &str| {
        run.stdout
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(name) && l.contains(result))
    };
    assert!(line("gone-operator", "deleted"), "{}", run.stdout);
    assert!(line("kept-operator.v1.0.0", "skipped"), "{}", run.stdout);
    assert!(line("kept-operator", "kept: a version"), "{}", run.stdout);
    assert_eq!(names(&p, "region2", "artifacts", true), ["kept-operator"]);
    assert_eq!(
        names(&p, "region2", "artifactversions", true),
        ["gone-operator.v1.1.0", "kept-operator.v1.0.0"]
    );
    let v = p
        .get(
            "region2",
            "artifactversions",
            "cpaas-system",
            "gone-operator.v1.1.0",
        )
        .unwrap();
    assert_eq!(v["metadata"]["ownerReferences"], json!([]), "{v}");
}

/// Issue 20's "done when": a lagging ModulePlugin status and an upgrade uploaded ahead of time;
/// the dry run plans nothing installed and nothing the README promises to keep.
#[test]
fn dry_run_plans_nothing_installed_or_promised_to_be_kept() {
    let p = platform();
    p.put(
        "global",
        "moduleplugins",
        aged(json!({"apiVersion": "cluster.alauda.io/v1alpha1",
        "kind": "ModulePlugin", "metadata": {"name": "lagging-plugin",
            "labels": {"cpaas.io/module-name": "lagging-plugin"}},
        "spec": {"name": "lagging-plugin"}})),
    );
    p.put("global", "moduleinfoes", aged(json!({"apiVersion": "cluster.alauda.io/v1alpha1",
        "kind": "ModuleInfo", "metadata": {"name": "region2-lagging-plugin",
            "labels": {"cpaas.io/cluster-name": "region2", "cpaas.io/module-name": "lagging-plugin"}},
        "spec": {"version": "v1.0.0"}})));
    let old = LONG_AGO;
    upload(
        &p,
        "region1",
        "es-operator",
        old,
        &[
            ("2.7.0", old),
            ("2.8.0", old),
            ("2.9.0", old),
            ("2.10.0", &ago(600)),
        ],
    );
    install_operator(&p, "region1", "es-operator", "2.9.0");
    let run = ferry_on(&p, &["gc", "--dry-run", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let plan = planned_names(&run.json());
    for kept in [
        "lagging-plugin",
        "es-operator.v2.8.0",
        "es-operator.v2.9.0",
        "es-operator.v2.10.0",
        "es-operator",
        "topolvm-operator.v2.2.0",
        "topolvm-operator.v2.3.0",
        "topolvm-operator.v2.4.0",
        "log-center",
        "nginx-chart",
    ] {
        assert!(!plan.iter().any(|n| n == kept), "{kept} planned: {plan:?}");
    }
    assert!(plan.contains(&"es-operator.v2.7.0".to_string()), "{plan:?}");
}

#[test]
fn a_cluster_without_olm_has_no_operator_installed_a_warning_not_an_error() {
    let p = platform();
    p.state
        .lock()
        .unwrap()
        .missing_groups
        .push("region1|operators.coreos.com".into());
    // list: region1's operator is not installed (not unknown), said as a warning; exit 0
    let run = list_json(&p);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains(
            "warning: cluster region1: the API group operators.coreos.com (OLM) is not served \
             there, so no operator can be installed there"
        ),
        "{}",
        run.stderr
    );
    let apps = &run.json()["applications"];
    assert_eq!(
        apps["opensearch-operator"]["installed"],
        json!([]),
        "{apps}"
    );
    assert!(
        apps["opensearch-operator"].get("unknown").is_none(),
        "{apps}"
    );
    // gc: no CSV can exist there, so its versions are planned as those of any operator not
    // installed (the cluster itself was read; nothing unknown)
    let run = ferry_on(
        &p,
        &[
            "gc",
            "--dry-run",
            "--clusters",
            "region1",
            "--output",
            "json",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("operators.coreos.com (OLM)"),
        "{}",
        run.stderr
    );
    assert_eq!(
        planned_names(&run.json()),
        ["opensearch-operator.v2.8.0", "opensearch-operator"]
    );
    // a group the command needs stays an error: exit 7, naming the group and the cluster
    p.state
        .lock()
        .unwrap()
        .missing_groups
        .push("region1|app.alauda.io".into());
    let run = list_json(&p);
    assert_eq!(run.code, 7, "{}", run.all());
    assert!(
        run.stderr
            .contains("cluster region1: the API group app.alauda.io is not served there"),
        "{}",
        run.stderr
    );
}

#[test]
fn gc_keeps_what_the_server_answers_without_uid_or_resource_version() {
    let p = platform();
    upload(
        &p,
        "region2",
        "bare-operator",
        LONG_AGO,
        &[("1.0.0", LONG_AGO), ("1.1.0", LONG_AGO)],
    );
    p.state
        .lock()
        .unwrap()
        .bare_metadata
        .push("bare-operator.v1.0.0".into());
    let backups = tempfile::tempdir().unwrap();
    let run = ferry_on(
        &p,
        &[
            "gc",
            "--yes",
            "--clusters",
            "region2",
            "--output",
            "json",
            "--backup-dir",
            backups.path().to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let report = run.json();
    assert_eq!(planned_names(&report), ["bare-operator.v1.1.0"]);
    let kept = report["not_planned"].as_array().unwrap();
    assert!(
        kept.iter().any(|k| k["name"] == "bare-operator.v1.0.0"
            && k["why"]
                .as_str()
                .unwrap()
                .contains("no metadata.uid and metadata.resourceVersion")),
        "{kept:?}"
    );
    // checked with kubectl: the version without identity and its Artifact are still there
    assert_eq!(
        names(&p, "region2", "artifactversions.app.alauda.io", true),
        ["bare-operator.v1.0.0"]
    );
    assert_eq!(
        names(&p, "region2", "artifacts.app.alauda.io", true),
        ["bare-operator"]
    );
}
