//! `ferry gc`: what old uploads left behind, planned from an [`Inventory`] and deleted with
//! preconditions, so that an object changed since the plan is skipped, never deleted blindly.
//!
//! The rules (README "ferry list and ferry gc", docs/platform-api.md "Cleanup"):
//! * an operator's `ArtifactVersion`s on a cluster where that operator is not installed go;
//!   its `Artifact` goes only with all of them (never leaving versions without their owner);
//! * of an installed operator, the `keep` newest versions older than the installed one stay,
//!   older ones go; the installed version and newer ones (an upgrade uploaded ahead) stay;
//!   while OLM replaces one version by the next, both are installed and "older" means older
//!   than the lower of the two;
//! * a cluster that does not serve OLM's API group at all has no operator installed (no
//!   ClusterServiceVersion can exist there): its operators' versions go as for any operator
//!   not installed. A cluster whose CSVs cannot be read is unknown, as below;
//! * an object the server answered without `metadata.uid` or `metadata.resourceVersion` is
//!   never planned (kept, with the reason): its delete could carry no precondition, so a
//!   change made since the plan would go unnoticed;
//! * a `ModulePlugin` (aligned or agnostic) that neither its status nor a `ModuleInfo` shows
//!   installed on any cluster goes, with its `ModuleConfig`s; only when `global` is among the
//!   clusters considered;
//! * nothing younger than `--min-age` goes, nor anything whose install state is unknown (a
//!   cluster, CSVs, ModuleInfos that could not be read): those are listed as not planned;
//! * charts are never touched; images are never deleted from the registry (those the deleted
//!   versions referenced are reported).

use std::cmp::Ordering;

use jiff::{SignedDuration, Timestamp};
use kube::api::DynamicObject;
use serde::Serialize;

use super::inventory::{InstallState, Inventory, UploadKind, GLOBAL};

pub mod age;
mod exec;
#[cfg(test)]
mod tests;

pub use exec::{delete, delete_in_order, execute, restorable};

/// One object to delete, as it was when planned.
#[derive(Debug, Clone)]
pub struct Planned {
    pub kind: &'static str,
    pub group: &'static str,
    pub name: String,
    pub namespace: Option<String>,
    pub cluster: String,
    pub why: String,
    pub object: DynamicObject,
}

/// What gc left out although the rules might have taken it, and why: too young, or its
/// install state unknown. `kind`/`name` are empty when it concerns a whole cluster or kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotPlanned {
    pub cluster: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub why: String,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// In deletion order: versions and configs before what owns them.
    pub items: Vec<Planned>,
    /// Images only the deleted versions referenced (never deleted by ferry).
    pub unreferenced_images: Vec<String>,
    pub not_planned: Vec<NotPlanned>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Deleted,
    /// Changed since the plan (uid or resourceVersion differ): left alone.
    Skipped,
    /// Already gone when its turn came.
    Gone,
    /// An Artifact or ModulePlugin left alone because a planned version or config of it was
    /// not deleted.
    Kept,
}

/// The kind and name of what owns a planned version or config (gc deletes it after them).
pub fn owner_of(p: &Planned) -> Option<(&'static str, String)> {
    let (owner, key) = match p.kind {
        "ArtifactVersion" => ("Artifact", "cpaas.io/artifact"),
        "ModuleConfig" => ("ModulePlugin", "cpaas.io/module-name"),
        _ => return None,
    };
    let name = p.object.metadata.labels.as_ref()?.get(key)?;
    Some((owner, name.clone()))
}

/// What the user asked to keep.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Of an installed operator, how many of the versions older than the installed one stay.
    pub keep: usize,
    /// Nothing younger is planned; zero switches the rule off.
    pub min_age: SignedDuration,
    pub now: Timestamp,
}

impl Plan {
    fn skip(&mut self, cluster: &str, kind: &str, name: &str, why: impl Into<String>) {
        self.not_planned.push(NotPlanned {
            cluster: cluster.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            why: why.into(),
        });
    }

    /// Plans `o` if it is old enough (WHY gets its age), else records why not; says which.
    fn take(
        &mut self,
        policy: &Policy,
        kind: &'static str,
        group: &'static str,
        cluster: &str,
        o: &DynamicObject,
        why: &str,
    ) -> bool {
        let name = o.metadata.name.clone().unwrap_or_default();
        let missing: Vec<&str> = [
            ("metadata.uid", &o.metadata.uid),
            ("metadata.resourceVersion", &o.metadata.resource_version),
        ]
        .into_iter()
        .filter(|(_, v)| v.as_deref().is_none_or(str::is_empty))
        .map(|(field, _)| field)
        .collect();
        if !missing.is_empty() {
            // a delete without both preconditions could take an object changed (or replaced)
            // since the plan: a hostile or odd answer must not make gc delete blindly
            self.skip(
                cluster,
                kind,
                &name,
                format!(
                    "kept: the server's answer has no {}, so it cannot be deleted with \
                     preconditions",
                    missing.join(" and ")
                ),
            );
            return false;
        }
        match age::old_enough(o, policy.now, policy.min_age) {
            Ok(a) => {
                let why = match a {
                    Some(a) => format!("{why}; uploaded {} ago", age::show(a)),
                    None => why.to_string(),
                };
                self.items.push(item(kind, group, cluster, o, why));
                true
            }
            Err(young) => {
                self.skip(cluster, kind, &name, young);
                false
            }
        }
    }
}

pub fn plan(inv: &Inventory, policy: &Policy) -> Plan {
    let mut plan = Plan::default();
    for (cluster, e) in &inv.failures {
        plan.skip(
            cluster,
            "",
            "",
            format!("could not be read, nothing is deleted there: {}", e.message),
        );
    }
    for u in inv
        .uploads
        .iter()
        .filter(|u| u.kind == UploadKind::Operator)
    {
        operator(&mut plan, policy, u);
    }
    if inv.clusters.iter().any(|c| c == GLOBAL) {
        plugins(&mut plan, policy, inv);
    }
    plan.unreferenced_images.sort();
    plan.unreferenced_images.dedup();
    plan
}

fn operator(plan: &mut Plan, policy: &Policy, u: &super::inventory::Uploaded) {
    let mut versions: Vec<(&DynamicObject, String)> = u
        .versions
        .iter()
        .map(|v| (v, version_of(&u.name, v)))
        .collect();
    versions.sort_by(|a, b| version_cmp(&b.1, &a.1));
    let image = |v: &DynamicObject| {
        let spec = &u.object.data["spec"];
        let tag = v.data["spec"]["tag"].as_str()?;
        Some(format!(
            "{}/{}:{tag}",
            spec["registry"].as_str()?,
            spec["repository"].as_str()?
        ))
    };
    let (candidates, why): (Vec<&DynamicObject>, String) = match &u.installed {
        InstallState::Unknown(why) => {
            plan.skip(
                &u.cluster,
                "Artifact",
                &u.name,
                format!("install state unknown, nothing of it is deleted: {why}"),
            );
            return;
        }
        InstallState::NotInstalled => (
            versions.iter().map(|(v, _)| *v).collect(),
            format!("operator {} is not installed on this cluster", u.name),
        ),
        // Older than every installed one (two while OLM replaces one by the next: both are
        // protected), newest first; the first `keep` of them stay.
        InstallState::Installed(installed) => {
            let lowest = installed
                .iter()
                .min_by(|a, b| version_cmp(a, b))
                .map_or("", String::as_str);
            (
                versions
                    .iter()
                    .filter(|(_, version)| version_cmp(version, lowest) == Ordering::Less)
                    .skip(policy.keep)
                    .map(|(v, _)| *v)
                    .collect(),
                format!(
                    "older than the installed {}, not among the {} kept (--keep)",
                    installed.join(" and "),
                    policy.keep
                ),
            )
        }
    };
    let mut all_taken = true;
    for v in candidates {
        if plan.take(
            policy,
            "ArtifactVersion",
            "app.alauda.io",
            &u.cluster,
            v,
            &why,
        ) {
            plan.unreferenced_images.extend(image(v));
        } else {
            all_taken = false;
        }
    }
    if u.installed == InstallState::NotInstalled {
        if all_taken {
            plan.take(
                policy,
                "Artifact",
                "app.alauda.io",
                &u.cluster,
                &u.object,
                &why,
            );
        } else {
            plan.skip(
                &u.cluster,
                "Artifact",
                &u.name,
                "some of its versions are not planned (it would leave them without an owner)",
            );
        }
    }
}

fn plugins(plan: &mut Plan, policy: &Policy, inv: &Inventory) {
    if !inv.plugin_errors.is_empty() {
        for e in &inv.plugin_errors {
            plan.skip(
                GLOBAL,
                "ModulePlugin",
                "",
                format!(
                    "plugin installs unknown, no plugin is deleted: {}",
                    e.message
                ),
            );
        }
        return;
    }
    for p in inv.plugins.iter().filter(|p| p.installed.is_empty()) {
        let why = format!("{} plugin installed nowhere", p.lifecycle);
        let mut all_taken = true;
        for c in &p.configs {
            all_taken &= plan.take(policy, "ModuleConfig", "cluster.alauda.io", GLOBAL, c, &why);
        }
        if all_taken {
            plan.take(
                policy,
                "ModulePlugin",
                "cluster.alauda.io",
                GLOBAL,
                &p.object,
                &why,
            );
        } else {
            plan.skip(
                GLOBAL,
                "ModulePlugin",
                &p.name,
                "some of its ModuleConfigs are not planned",
            );
        }
    }
}

fn item(
    kind: &'static str,
    group: &'static str,
    cluster: &str,
    o: &DynamicObject,
    why: String,
) -> Planned {
    Planned {
        kind,
        group,
        name: o.metadata.name.clone().unwrap_or_default(),
        namespace: o.metadata.namespace.clone(),
        cluster: cluster.to_string(),
        why,
        object: o.clone(),
    }
}

/// The version an ArtifactVersion stands for: its name after `<artifact>.v`, else its tag.
fn version_of(artifact: &str, v: &DynamicObject) -> String {
    let name = v.metadata.name.clone().unwrap_or_default();
    match name.strip_prefix(&format!("{artifact}.v")) {
        Some(rest) => rest.to_string(),
        None => v.data["spec"]["tag"]
            .as_str()
            .unwrap_or(&name)
            .trim_start_matches('v')
            .to_string(),
    }
}

/// Orders versions like semver: numeric dot-separated parts compared as numbers, a
/// pre-release (`-rc.1`) before its release, build metadata (`+…`) ignored.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (Vec<&str>, Option<&str>) {
        let v = v.trim_start_matches('v');
        let v = v.split('+').next().unwrap_or(v);
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (v, None),
        };
        (core.split('.').collect(), pre)
    }
    fn part(x: &str, y: &str) -> Ordering {
        match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        }
    }
    let ((ca, pa), (cb, pb)) = (split(a), split(b));
    for i in 0..ca.len().max(cb.len()) {
        let o = part(ca.get(i).unwrap_or(&"0"), cb.get(i).unwrap_or(&"0"));
        if o != Ordering::Equal {
            return o;
        }
    }
    match (pa, pb) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => {
            let (xs, ys): (Vec<&str>, Vec<&str>) = (x.split('.').collect(), y.split('.').collect());
            for (x, y) in xs.iter().zip(&ys) {
                let o = part(x, y);
                if o != Ordering::Equal {
                    return o;
                }
            }
            xs.len().cmp(&ys.len())
        }
    }
}
