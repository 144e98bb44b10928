use super::*;
use crate::platform::upgrade::Condition;
use serde_json::json;

fn shadow(name: &str, current: &str, available: &[&str], check: &str) -> Shadow {
    let ups: Vec<_> = available.iter().map(|v| json!({"version": v})).collect();
    Shadow::parse(
        name,
        &json!({"metadata": {"generation": 2},
            "status": {"current": {"version": current}, "availableUpdates": ups,
                "observedGeneration": 2,
                "conditions": [{"type": "PreflightReady", "status": if check == "Failed" {"False"} else {"True"}, "observedGeneration": 2}],
                "preflight": {"checks": [
                    {"name": "etcd-health", "state": "Passed"},
                    {"name": "registry-images", "state": check, "message": "3 images missing"}]}}}),
    )
}

fn v(s: &str) -> Target {
    Target::Version(s.into())
}

#[test]
fn the_gates_in_order() {
    let g = shadow("global", "v4.1.3", &["v4.2.0", "v4.10.0"], "Passed");
    assert_eq!(
        decide(&g, &v("v4.2.0"), false, &[]).decision,
        Decision::Request
    );
    let latest = decide(&g, &Target::Latest, false, &[]);
    assert_eq!(
        (latest.to.as_str(), latest.decision),
        ("v4.10.0", Decision::Request)
    );
    // not offered, unless explicitly allowed
    let p = decide(&g, &v("v4.3.0"), false, &[]);
    assert!(matches!(
        p.decision,
        Decision::Gated {
            gate: Gate::TargetOffered,
            ..
        }
    ));
    assert_eq!(
        decide(&g, &v("v4.3.0"), true, &[]).decision,
        Decision::Request
    );
    // a workload cluster before global
    let w = shadow("region1", "v4.1.3", &[], "Passed");
    let p = decide(&w, &v("v4.2.0"), false, &[("global", &g)]);
    let Decision::Gated {
        gate: Gate::Order,
        why,
    } = p.decision
    else {
        panic!("{p:?}")
    };
    assert!(
        why.contains("region1") && why.contains("global is at v4.1.3"),
        "{why}"
    );
    // failed preflight names the check
    let f = shadow("global", "v4.1.3", &["v4.2.0"], "Failed");
    let Decision::Gated {
        gate: Gate::Preflight,
        why,
    } = decide(&f, &v("v4.2.0"), true, &[]).decision
    else {
        panic!()
    };
    assert!(
        why.contains("registry-images Failed (3 images missing)"),
        "{why}"
    );
    let r = shadow("global", "v4.1.3", &["v4.2.0"], "Retry");
    assert!(matches!(
        decide(&r, &v("v4.2.0"), false, &[]).decision,
        Decision::Gated {
            gate: Gate::Preflight,
            ..
        }
    ));
    let w = shadow("global", "v4.1.3", &["v4.2.0"], "Warning");
    assert_eq!(decide(&w, &v("v4.2.0"), false, &[]).warnings.len(), 1);
    // idempotent
    let at = shadow("global", "v4.2.0", &[], "Passed");
    assert_eq!(
        decide(&at, &v("v4.2.0"), false, &[]).decision,
        Decision::AlreadyAtTarget
    );
    let mut asked = g.clone();
    asked.desired = "v4.2.0".into();
    assert_eq!(
        decide(&asked, &v("v4.2.0"), false, &[]).decision,
        Decision::AlreadyRequested
    );
}

#[test]
fn to_latest_with_nothing_offered_is_refused_unless_there_is_nothing_newer_to_offer() {
    // global alone: "newest" and "newer never uploaded" look alike; refused, naming sync
    let at = shadow("global", "v4.2.0", &[], "Passed");
    let p = decide(&at, &Target::Latest, false, &[]);
    let Decision::Gated {
        gate: Gate::TargetOffered,
        why,
    } = p.decision
    else {
        panic!("{p:?}")
    };
    assert!(
        why.contains("no ProductManifest of a newer version") && why.contains("ferry sync"),
        "{why}"
    );
    // a workload cluster behind its global with nothing offered: refused too
    let mut g = shadow("global", "v4.3.0", &[], "Passed");
    g.conditions.push(ready(true));
    let w = shadow("region1", "v4.2.0", &[], "Passed");
    assert!(matches!(
        decide(&w, &Target::Latest, false, &[("global", &g)]).decision,
        Decision::Gated {
            gate: Gate::TargetOffered,
            ..
        }
    ));
    // ... but at its global's version it is as far as it can go
    let w = shadow("region1", "v4.3.0", &[], "Passed");
    assert_eq!(
        decide(&w, &Target::Latest, false, &[("global", &g)]).decision,
        Decision::AlreadyAtTarget
    );
    // an upgrade already requested (nothing offered while it runs): followed
    let mut asked = shadow("global", "v4.2.0", &[], "Passed");
    asked.desired = "v4.3.0".into();
    let p = decide(&asked, &Target::Latest, false, &[]);
    assert_eq!(
        (p.to.as_str(), p.decision),
        ("v4.3.0", Decision::AlreadyRequested)
    );
}

fn ready(yes: bool) -> Condition {
    Condition {
        kind: "Ready".into(),
        status: if yes { "True" } else { "False" }.into(),
        reason: if yes { "AsExpected" } else { "Progressing" }.into(),
        message: String::new(),
    }
}

#[test]
fn the_order_gate_wants_global_ready_not_only_at_the_version() {
    let w = shadow("region1", "v4.1.3", &["v4.2.0"], "Passed");
    let mut g = shadow("global", "v4.2.0", &[], "Passed");
    g.conditions.push(ready(false));
    let p = decide(&w, &v("v4.2.0"), false, &[("global", &g)]);
    let Decision::Gated {
        gate: Gate::Order,
        why,
    } = p.decision
    else {
        panic!("{p:?}")
    };
    assert!(
        why.contains("global is at v4.2.0 but not Ready (Ready=False, Progressing)"),
        "{why}"
    );
    // no Ready condition at all: not settled either
    g.conditions.clear();
    assert!(matches!(
        decide(&w, &v("v4.2.0"), false, &[("global", &g)]).decision,
        Decision::Gated {
            gate: Gate::Order,
            ..
        }
    ));
    // Ready but still reconciling
    g.conditions = vec![
        ready(true),
        Condition {
            kind: "Reconciling".into(),
            status: "True".into(),
            reason: "Progressing".into(),
            message: "upgrading addons".into(),
        },
    ];
    let p = decide(&w, &v("v4.2.0"), false, &[("global", &g)]);
    let Decision::Gated { why, .. } = p.decision else {
        panic!("{p:?}")
    };
    assert!(
        why.contains("Reconciling=True, Progressing: upgrading addons"),
        "{why}"
    );
    // Ready and settled, past the target too: requested; the standby's global counts alike
    g.conditions = vec![ready(true)];
    g.current = "v4.3.0".into();
    assert_eq!(
        decide(&w, &v("v4.2.0"), false, &[("global", &g)]).decision,
        Decision::Request
    );
    let mut sg = g.clone();
    sg.conditions = vec![ready(false)];
    let p = decide(
        &w,
        &v("v4.2.0"),
        false,
        &[("global", &g), ("the standby's global", &sg)],
    );
    let Decision::Gated { why, .. } = p.decision else {
        panic!("{p:?}")
    };
    assert!(
        why.contains("the standby's global is at v4.3.0 but not Ready"),
        "{why}"
    );
}
