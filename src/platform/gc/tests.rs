use std::cmp::Ordering::*;

use jiff::{SignedDuration, Timestamp};
use kube::api::DynamicObject;
use serde_json::json;

use super::{age, plan, version_cmp, Policy};
use crate::platform::inventory::{Install, InstallState, Inventory, Plugin, UploadKind, Uploaded};

#[test]
fn versions_order_like_semver() {
    assert_eq!(version_cmp("2.3.0", "2.10.0"), Less);
    assert_eq!(version_cmp("v4.2.1", "4.2.1"), Equal);
    assert_eq!(version_cmp("4.2.0-rc.1", "4.2.0"), Less);
    assert_eq!(version_cmp("4.2.0-rc.2", "4.2.0-rc.10"), Less);
    assert_eq!(version_cmp("1.5.0-build.20251226", "1.4.9"), Greater);
    assert_eq!(version_cmp("4.2", "4.2.0"), Equal);
    assert_eq!(version_cmp("4.2.0+abc", "4.2.0"), Equal);
}

const OLD: &str = "2025-01-01T00:00:00Z";

fn now() -> Timestamp {
    "2026-12-01T12:00:00Z".parse().unwrap()
}

fn object(kind: &str, name: &str, created: Option<&str>) -> DynamicObject {
    let mut o = json!({"apiVersion": "app.alauda.io/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": "cpaas-system", "uid": format!("uid-{name}"),
            "resourceVersion": "1"}});
    if let Some(c) = created {
        o["metadata"]["creationTimestamp"] = json!(c);
    }
    serde_json::from_value(o).unwrap()
}

/// es-operator on region1 with these versions (all old).
fn operator(versions: &[&str], installed: InstallState) -> Uploaded {
    Uploaded {
        cluster: "region1".into(),
        name: "es-operator".into(),
        kind: UploadKind::Operator,
        display_name: "ES".into(),
        object: object("Artifact", "es-operator", Some(OLD)),
        versions: versions
            .iter()
            .map(|v| object("ArtifactVersion", &format!("es-operator.v{v}"), Some(OLD)))
            .collect(),
        installed,
    }
}

fn inventory(uploads: Vec<Uploaded>) -> Inventory {
    Inventory {
        clusters: vec!["global".into(), "region1".into()],
        uploads,
        ..Inventory::default()
    }
}

fn policy(keep: usize) -> Policy {
    Policy {
        keep,
        min_age: SignedDuration::from_hours(24),
        now: now(),
    }
}

fn names(inv: &Inventory, p: &Policy) -> Vec<String> {
    plan(inv, p).items.into_iter().map(|i| i.name).collect()
}

#[test]
fn keep_counts_only_versions_older_than_the_installed_one() {
    let inv = inventory(vec![operator(
        &["2.7.0", "2.10.0", "2.8.0", "2.9.0"],
        InstallState::Installed(vec!["2.9.0".into()]),
    )]);
    assert_eq!(
        names(&inv, &policy(0)),
        ["es-operator.v2.8.0", "es-operator.v2.7.0"]
    );
    assert_eq!(names(&inv, &policy(1)), ["es-operator.v2.7.0"]);
    assert!(names(&inv, &policy(3)).is_empty());
    let why = &plan(&inv, &policy(1)).items[0].why;
    assert!(why.starts_with("older than the installed 2.9.0"), "{why}");
}

#[test]
fn while_olm_replaces_a_version_both_installed_versions_are_protected() {
    let inv = inventory(vec![operator(
        &["2.7.0", "2.8.0", "2.9.0", "2.10.0"],
        InstallState::Installed(vec!["2.9.0".into(), "2.10.0".into()]),
    )]);
    assert_eq!(
        names(&inv, &policy(0)),
        ["es-operator.v2.8.0", "es-operator.v2.7.0"]
    );
    let why = &plan(&inv, &policy(0)).items[0].why;
    assert!(
        why.starts_with("older than the installed 2.9.0 and 2.10.0"),
        "{why}"
    );
}

#[test]
fn an_object_without_uid_or_resource_version_is_kept_not_deleted_blindly() {
    let mut u = operator(&["1.0.0", "1.1.0"], InstallState::NotInstalled);
    u.versions[0].metadata.uid = None;
    u.versions[1].metadata.resource_version = Some(String::new());
    let p = plan(&inventory(vec![u]), &policy(0));
    assert!(p.items.is_empty(), "{:?}", p.items);
    let why: Vec<&str> = p.not_planned.iter().map(|n| n.why.as_str()).collect();
    assert!(
        why.iter()
            .any(|w| w.starts_with("kept: the server's answer has no metadata.uid,")),
        "{why:?}"
    );
    assert!(
        why.iter()
            .any(|w| w.contains("no metadata.resourceVersion,")),
        "{why:?}"
    );
    // and the Artifact stays with them
    assert!(
        why.iter().any(|w| w.contains("without an owner")),
        "{why:?}"
    );
}

#[test]
fn an_unknown_install_state_plans_nothing_and_says_why() {
    let inv = inventory(vec![operator(
        &["1.0.0"],
        InstallState::Unknown("cluster region1: listing ClusterServiceVersions: HTTP 503".into()),
    )]);
    let p = plan(&inv, &policy(0));
    assert!(p.items.is_empty());
    assert_eq!(p.not_planned.len(), 1);
    assert_eq!(p.not_planned[0].cluster, "region1");
    assert!(
        p.not_planned[0].why.contains("HTTP 503"),
        "{:?}",
        p.not_planned
    );
}

#[test]
fn plugins_are_not_planned_when_any_install_record_is_unreadable() {
    let plugin = Plugin {
        name: "old".into(),
        display_name: "Old".into(),
        lifecycle: "agnostic".into(),
        installed: vec![],
        object: object("ModulePlugin", "old", Some(OLD)),
        configs: vec![object("ModuleConfig", "old-v1", Some(OLD))],
    };
    let mut inv = inventory(vec![]);
    inv.plugins = vec![plugin.clone()];
    assert_eq!(names(&inv, &policy(1)), ["old-v1", "old"]);
    inv.plugin_errors = vec![crate::error::Error::new(
        crate::error::ErrorKind::Platform,
        "cluster global: listing ModuleInfos: HTTP 503",
    )];
    let p = plan(&inv, &policy(1));
    assert!(p.items.is_empty());
    assert!(
        p.not_planned[0].why.contains("ModuleInfos"),
        "{:?}",
        p.not_planned
    );
    // installed somewhere (by either record): never planned
    inv.plugin_errors.clear();
    inv.plugins[0].installed = vec![Install {
        cluster: "region2".into(),
        version: "v1".into(),
    }];
    assert!(names(&inv, &policy(1)).is_empty());
}

#[test]
fn min_age_spares_the_young_and_an_artifact_goes_only_with_all_its_versions() {
    let mut u = operator(&["1.0.0"], InstallState::NotInstalled);
    u.versions.push(object(
        "ArtifactVersion",
        "es-operator.v1.1.0",
        Some("2026-12-01T11:00:00Z"),
    ));
    u.versions
        .push(object("ArtifactVersion", "es-operator.v0.9.0", None));
    let inv = inventory(vec![u]);
    let p = plan(&inv, &policy(1));
    assert_eq!(
        p.items.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["es-operator.v1.0.0"]
    );
    assert!(
        p.items[0].why.ends_with("uploaded 699d ago"),
        "{}",
        p.items[0].why
    );
    let skipped: Vec<&str> = p.not_planned.iter().map(|n| n.why.as_str()).collect();
    assert!(
        skipped.contains(&"uploaded 1h ago, younger than --min-age 1d"),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|w| w.contains("no creationTimestamp")),
        "{skipped:?}"
    );
    // --min-age 0: no age rule
    let p = plan(
        &inv,
        &Policy {
            min_age: SignedDuration::ZERO,
            ..policy(1)
        },
    );
    assert_eq!(p.items.len(), 4);
}

#[test]
fn min_age_parses_the_usual_forms() {
    assert_eq!(age::parse("0"), Ok(SignedDuration::ZERO));
    assert_eq!(age::parse("30m"), Ok(SignedDuration::from_mins(30)));
    assert_eq!(age::parse("24h"), Ok(SignedDuration::from_hours(24)));
    assert_eq!(age::parse("7d"), Ok(SignedDuration::from_hours(168)));
    assert_eq!(age::parse("1d12h"), Ok(SignedDuration::from_hours(36)));
    for bad in ["", "3x", "24", "h", "-1d", "1.5h"] {
        assert!(age::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(age::show(SignedDuration::from_hours(72)), "3d");
}
