//! `ferry upgrade` against the fake platform and its simulated cluster-version operator
//! (tests/common/cvo.rs): status, the gates (nothing written when one refuses: checked with
//! kubectl), the request and the watch, many clusters at once, the DR order.

mod common;

use std::time::{Duration, Instant};

use common::cvo;
use common::platform::*;
use common::*;

/// A platform of these (cluster, current version), offering `offered`, stages of `ms`.
fn setup(clusters: &[(&'static str, &str)], offered: &[&str], ms: u64) -> FakePlatform {
    let p = FakePlatform::start(PlatformOpts {
        clusters: clusters.iter().map(|(c, _)| *c).collect(),
        ..Default::default()
    });
    cvo::install(&p, clusters, offered, ms);
    p
}

/// The flags that name `s` as the DR standby.
fn standby_flags(s: &FakePlatform) -> Vec<String> {
    s.token_flags()
        .into_iter()
        .map(|f| f.replace("--platform", "--standby-platform"))
        .collect()
}

fn up<S: AsRef<str>>(p: &FakePlatform, args: &[S]) -> Run {
    let mut v: Vec<String> = vec!["upgrade".into()];
    v.extend(args.iter().map(|s| s.as_ref().to_string()));
    v.extend(p.token_flags());
    let run = ferry(&v);
    assert!(!run.all().contains(TOKEN), "the token was printed");
    run
}

/// `spec.desiredUpdate.version` and `status.current.version`, read with kubectl.
fn versions(p: &FakePlatform, cluster: &str) -> (String, String) {
    let out = p.kubectl(
        "global",
        &[
            "get",
            "clusterversionshadows.config.alauda.io",
            cluster,
            "-n",
            "cpaas-system",
            "-o",
            "jsonpath={.spec.desiredUpdate.version}|{.status.current.version}",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let (d, c) = s.split_once('|').unwrap();
    (d.to_string(), c.to_string())
}

fn patches(p: &FakePlatform) -> usize {
    p.log().iter().filter(|l| l.starts_with("PATCH")).count()
}

/// `run` ended with `code` and says every one of `words`.
fn says(run: &Run, code: i32, words: &[&str]) {
    assert_eq!(run.code, code, "{}", run.all());
    for w in words {
        assert!(run.all().contains(w), "{w}: {}", run.all());
    }
}

const FAST: &[&str] = &["--poll-interval", "0.05", "--yes"];

#[test]
fn status_in_text_and_json() {
    let p = setup(
        &[("global", "v4.1.3"), ("region1", "v4.1.3")],
        &["v4.2.0", "v4.10.0"],
        200,
    );
    let run = up(&p, &["status"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for want in [
        "Cluster global",
        "v4.1.3",
        "v4.2.0, v4.10.0",
        "PreflightReady",
        "etcd-health",
        "Stages",
    ] {
        assert!(run.stdout.contains(want), "{want}: {}", run.stdout);
    }
    let run = up(
        &p,
        &["status", "--clusters", "global,region1", "--output", "json"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let v = run.json();
    assert_eq!(v["clusters"][0]["availableUpdates"][1], "v4.10.0");
    assert_eq!(v["clusters"][0]["preflight"]["result"], "Passed");
    assert_eq!(v["clusters"][1]["cluster"], "region1");
    // a workload cluster is offered nothing before global is there
    assert_eq!(v["clusters"][1]["availableUpdates"], serde_json::json!([]));
    let run = up(&p, &["status", "--cluster", "nosuch"]);
    assert_eq!(run.code, 2, "{}", run.all());
    // on a control-plane node of global: its kubeconfig
    let kc = p.kubeconfig("global");
    let run = ferry(&["upgrade", "status", "--kubeconfig", kc.to_str().unwrap()]);
    says(&run, 0, &["Cluster global", "v4.2.0, v4.10.0"]);
}

#[test]
fn gates_refuse_and_write_nothing() {
    let p = setup(
        &[("global", "v4.1.3"), ("region1", "v4.1.3")],
        &["v4.2.0"],
        200,
    );
    // a workload cluster before global
    let run = up(&p, &["--cluster", "region1", "--to", "v4.2.0", "--yes"]);
    says(&run, 8, &["order", "region1", "global is at v4.1.3"]);
    // not offered
    let run = up(&p, &["--to", "v4.9.0", "--yes"]);
    says(&run, 8, &["target offered", "ProductManifest"]);
    // dry run and no terminal without --yes
    says(&up(&p, &["--to", "v4.2.0", "--dry-run"]), 0, &["dry run"]);
    says(&up(&p, &["--to", "v4.2.0"]), 2, &["--yes"]);
    // failed preflight names the check
    let failing = ("AdminAckRequired".into(), "acknowledge ack-4.4".into());
    let mut s = p.state.lock().unwrap();
    s.cvo.fail_preflight.insert("global".into(), failing);
    drop(s);
    let run = up(&p, &["--to", "v4.2.0", "--yes"]);
    says(
        &run,
        8,
        &["preflight", "AdminAckRequired Failed (acknowledge ack-4.4)"],
    );
    assert_eq!(patches(&p), 0);
    assert_eq!(versions(&p, "global"), ("".into(), "v4.1.3".into()));
    assert_eq!(versions(&p, "region1"), ("".into(), "v4.1.3".into()));
}

#[test]
fn a_concurrent_change_is_not_overwritten() {
    let p = setup(&[("global", "v4.1.3")], &["v4.2.0"], 200);
    p.state.lock().unwrap().inject_conflicts = 1;
    let run = up(&p, &["--to", "v4.2.0", "--yes"]);
    says(&run, 7, &["someone changed it since it was read"]);
    assert_eq!(versions(&p, "global").0, "");
}

#[test]
fn explicit_version_is_requested_without_waiting() {
    let p = setup(&[("global", "v4.1.3")], &["v4.2.0"], 200);
    let run = up(&p, &["--to", "v4.9.0", "--allow-explicit-upgrade", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("requested"), "{}", run.all());
    assert_eq!(versions(&p, "global").0, "v4.9.0");
}

#[test]
fn to_latest_waits_for_ready_and_a_rerun_writes_nothing() {
    let p = setup(&[("global", "v4.1.3")], &["v4.2.0", "v4.3.0"], 200);
    let mut args = vec!["--to-latest", "--wait"];
    args.extend_from_slice(FAST);
    let run = up(&p, &args);
    assert_eq!(run.code, 0, "{}", run.all());
    for want in ["PreUpgrade", "ControlPlane", "Addons", "Ready at v4.3.0"] {
        assert!(run.stderr.contains(want), "{want}: {}", run.all());
    }
    assert!(run.stdout.contains("Ready"), "{}", run.all());
    assert_eq!(versions(&p, "global"), ("v4.3.0".into(), "v4.3.0".into()));
    let before = patches(&p);
    let mut args = vec!["--to", "v4.3.0", "--wait", "--output", "json"];
    args.extend_from_slice(FAST);
    let run = up(&p, &args);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.json()["clusters"][0]["result"], "already-at-target");
    assert_eq!(patches(&p), before);
}

#[test]
fn degraded_exits_9_naming_the_operation() {
    let p = setup(&[("global", "v4.1.3")], &["v4.2.0"], 200);
    p.state
        .lock()
        .unwrap()
        .cvo
        .degrade
        .insert("global".into(), "kube-apiserver".into());
    let mut args = vec!["--to", "v4.2.0", "--wait"];
    args.extend_from_slice(FAST);
    let run = up(&p, &args);
    assert_eq!(run.code, 9, "{}", run.all());
    assert!(
        run.stdout.contains("operation kube-apiserver"),
        "{}",
        run.all()
    );
    assert!(run.stdout.contains("rollout failed"), "{}", run.all());
}

#[test]
fn workload_clusters_go_together() {
    let p = setup(
        &[
            ("global", "v4.2.0"),
            ("region1", "v4.1.3"),
            ("region2", "v4.1.3"),
        ],
        &["v4.2.0"],
        500,
    );
    let start = Instant::now();
    let mut args = vec!["--clusters", "region1,region2", "--to", "v4.2.0", "--wait"];
    args.extend_from_slice(FAST);
    let run = up(&p, &args);
    let took = start.elapsed();
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(versions(&p, "region1").1, "v4.2.0");
    assert_eq!(versions(&p, "region2").1, "v4.2.0");
    // each takes 1.5 s; together well under the 3 s of one after the other
    assert!(took < Duration::from_millis(2800), "{took:?}");
    let s = p.state.lock().unwrap();
    let (a, b) = (s.cvo.requested_at["region1"], s.cvo.requested_at["region2"]);
    let gap = if a > b { a - b } else { b - a };
    assert!(gap < Duration::from_millis(500), "{gap:?}");
}

#[test]
fn global_then_its_workload_clusters_in_one_run() {
    let p = setup(
        &[("global", "v4.1.3"), ("region1", "v4.1.3")],
        &["v4.2.0"],
        150,
    );
    let mut args = vec!["--clusters", "global,region1", "--to-latest"];
    args.extend_from_slice(FAST);
    let run = up(&p, &args);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(versions(&p, "global").1, "v4.2.0");
    assert_eq!(versions(&p, "region1").0, "v4.2.0");
    let s = p.state.lock().unwrap();
    assert!(s.cvo.requested_at["region1"] >= s.cvo.ready_at["global"]);
}

#[test]
fn dr_the_standby_first() {
    let primary = setup(&[("global", "v4.1.3")], &["v4.2.0"], 150);
    let standby = setup(&[("global", "v4.1.3")], &["v4.2.0"], 150);
    let mut args = standby_flags(&standby);
    args.extend(["--to", "v4.2.0", "--wait"].map(String::from));
    args.extend(FAST.iter().map(|f| f.to_string()));
    let run = up(&primary, &args);
    says(&run, 0, &["global (standby)"]);
    assert_eq!(versions(&standby, "global").1, "v4.2.0");
    assert_eq!(versions(&primary, "global").1, "v4.2.0");
    let standby_ready = standby.state.lock().unwrap().cvo.ready_at["global"];
    let primary_asked = primary.state.lock().unwrap().cvo.requested_at["global"];
    assert!(primary_asked >= standby_ready);
}

#[test]
fn dr_a_refused_primary_leaves_the_standby_alone_and_a_deadline_exits_9() {
    let primary = setup(&[("global", "v4.1.3")], &["v4.2.0"], 150);
    let standby = setup(&[("global", "v4.1.3")], &["v4.2.0"], 1000);
    let failing = ("etcd-health".into(), "2/3 members healthy".into());
    let mut s = primary.state.lock().unwrap();
    s.cvo.fail_preflight.insert("global".into(), failing);
    drop(s);
    let mut args = standby_flags(&standby);
    args.extend(["--to", "v4.2.0", "--yes"].map(String::from));
    let run = up(&primary, &args);
    says(&run, 8, &["etcd-health Failed", "nothing is requested"]);
    assert_eq!(patches(&standby), 0);
    assert_eq!(versions(&standby, "global").0, "");
    // the standby alone, past its deadline
    let mut args = vec!["--to", "v4.2.0", "--wait", "--timeout", "1"];
    args.extend_from_slice(FAST);
    says(&up(&standby, &args), 9, &["timeout", "--timeout passed"]);
}

#[test]
fn a_workload_cluster_waits_for_global_to_be_ready_not_only_at_the_version() {
    let p = setup(
        &[("global", "v4.2.0"), ("region1", "v4.1.3")],
        &["v4.2.0"],
        200,
    );
    p.state.lock().unwrap().cvo.not_ready.push("global".into());
    let run = up(&p, &["--cluster", "region1", "--to", "v4.2.0", "--yes"]);
    says(
        &run,
        8,
        &[
            "order",
            "region1",
            "global is at v4.2.0 but not Ready (Ready=False, Reconciling",
        ],
    );
    assert_eq!(patches(&p), 0);
    assert_eq!(versions(&p, "region1"), ("".into(), "v4.1.3".into()));
    // once global is Ready, the same command goes through
    p.state.lock().unwrap().cvo.not_ready.clear();
    let run = up(&p, &["--cluster", "region1", "--to", "v4.2.0", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(versions(&p, "region1").0, "v4.2.0");
}

#[test]
fn to_latest_with_nothing_offered_is_refused_naming_sync_not_already_at_target() {
    let p = setup(&[("global", "v4.1.3")], &[], 200);
    let run = up(&p, &["--to-latest", "--yes"]);
    says(
        &run,
        8,
        &[
            "target offered",
            "no ProductManifest of a newer version",
            "ferry sync",
        ],
    );
    assert!(!run.all().contains("already at target"), "{}", run.all());
    assert_eq!(patches(&p), 0);
    assert_eq!(versions(&p, "global"), ("".into(), "v4.1.3".into()));
}

#[test]
fn without_a_terminal_one_line_per_change() {
    let p = setup(&[("global", "v4.1.3")], &["v4.2.0"], 150);
    let mut args = vec!["--to", "v4.2.0", "--wait"];
    args.extend_from_slice(FAST);
    let run = up(&p, &args);
    assert_eq!(run.code, 0, "{}", run.all());
    // each state once, however many polls saw it (a poll every 50 ms, stages of 150 ms)
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("global: stage "))
        .collect();
    assert!(lines.len() >= 3, "{}", run.stderr);
    let states: Vec<&str> = lines
        .iter()
        .map(|l| l.rsplit_once(" [").map_or(*l, |(s, _)| s))
        .collect();
    let mut unique = states.clone();
    unique.dedup();
    assert_eq!(states, unique, "{}", run.stderr);
    // no terminal: no live-line control sequences
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
}
