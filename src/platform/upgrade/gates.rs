//! The gates before any write: a pure function of the ClusterVersionShadows read. Each
//! refusal names the gate, the cluster and what to do.

use std::cmp::Ordering;

use serde::Serialize;

use super::Shadow;
use crate::platform::gc::version_cmp;

/// What was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Version(String),
    /// The highest of the cluster's `availableUpdates`.
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    Order,
    TargetOffered,
    Preflight,
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Gate::Order => "order",
            Gate::TargetOffered => "target offered",
            Gate::Preflight => "preflight",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// At (or past) the target: nothing to do.
    AlreadyAtTarget,
    /// `desiredUpdate` already names the target: not written again, only followed.
    AlreadyRequested,
    /// Every gate passed: write `desiredUpdate`.
    Request,
    /// Refused by `gate`; `why` says what to do.
    Gated { gate: Gate, why: String },
}

/// One cluster's plan.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub cluster: String,
    pub from: String,
    /// Empty when no target could be resolved (`--to-latest` with nothing offered).
    pub to: String,
    #[serde(flatten)]
    pub decision: Decision,
    /// Preflight checks that pass with a warning (or were skipped).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn or_unknown(v: &str) -> &str {
    if v.is_empty() {
        "an unknown version"
    } else {
        v
    }
}

/// Why a layer at the target is not settled yet (`Ready` not True, or `Reconciling` True),
/// or `None` when it is.
fn unsettled(layer: &Shadow) -> Option<String> {
    let said = |kind: &str| match layer.condition(kind) {
        Some(c) => {
            let why = [c.reason.as_str(), c.message.as_str()]
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            format!(
                "{kind}={}{}",
                c.status,
                if why.is_empty() {
                    String::new()
                } else {
                    format!(", {why}")
                }
            )
        }
        None => format!("no {kind} condition"),
    };
    if !layer.is("Ready") {
        Some(said("Ready"))
    } else if layer.is("Reconciling") {
        Some(said("Reconciling"))
    } else {
        None
    }
}

/// A layer that must be at the target before `s` may go: ("global", its shadow), and with a
/// DR standby ("the standby's global", its shadow).
pub type Layer<'a> = (&'a str, &'a Shadow);

pub fn decide(s: &Shadow, target: &Target, allow_explicit: bool, layers: &[Layer]) -> Planned {
    let mut plan = Planned {
        cluster: s.cluster.clone(),
        from: s.current.clone(),
        to: String::new(),
        decision: Decision::Request,
        warnings: Vec::new(),
    };
    let name = &s.cluster;
    let gated = |plan: &mut Planned, gate, why: String| {
        plan.decision = Decision::Gated { gate, why };
    };
    let offered = |v: &str| {
        s.available_updates
            .iter()
            .find(|u| version_cmp(u, v) == Ordering::Equal)
            .cloned()
    };
    plan.to = match target {
        Target::Version(v) => offered(v).unwrap_or_else(|| v.clone()),
        Target::Latest => match s.available_updates.iter().max_by(|a, b| version_cmp(a, b)) {
            Some(v) => v.clone(),
            // an upgrade already requested and not reached: follow it
            None if !s.desired.is_empty()
                && (s.current.is_empty()
                    || version_cmp(&s.desired, &s.current) == Ordering::Greater) =>
            {
                plan.to = s.desired.clone();
                plan.decision = Decision::AlreadyRequested;
                return plan;
            }
            // a workload cluster at its global's version: nothing newer can be offered to it
            // before global moves on
            None if !layers.is_empty()
                && !s.current.is_empty()
                && layers.iter().all(|(_, l)| {
                    !l.current.is_empty() && version_cmp(&s.current, &l.current) != Ordering::Less
                }) =>
            {
                plan.to = s.current.clone();
                plan.decision = Decision::AlreadyAtTarget;
                return plan;
            }
            // Nothing offered. From the cluster alone "at the newest version there is" and "the
            // newer version was never uploaded" look the same; the second is the mistake to
            // catch (an "already at target" would read as done), so it is refused
            None => {
                plan.to = String::new();
                gated(
                    &mut plan,
                    Gate::TargetOffered,
                    format!(
                        "cluster {name} offers no update (status.availableUpdates is empty) and \
                         is at {}: most likely no ProductManifest of a newer version is on the \
                         platform yet: run `ferry sync` with the new core package first (then \
                         `ferry sync --preflight`); if {} is already the newest version you \
                         have, there is nothing to do",
                        or_unknown(&s.current),
                        or_unknown(&s.current),
                    ),
                );
                return plan;
            }
        },
    };
    let to = plan.to.clone();
    if !s.current.is_empty() && version_cmp(&s.current, &to) != Ordering::Less {
        plan.decision = Decision::AlreadyAtTarget;
        return plan;
    }
    if !s.desired.is_empty() && version_cmp(&s.desired, &to) == Ordering::Equal {
        plan.decision = Decision::AlreadyRequested;
        return plan;
    }
    for (label, layer) in layers {
        if layer.current.is_empty() || version_cmp(&layer.current, &to) == Ordering::Less {
            gated(
                &mut plan,
                Gate::Order,
                format!(
                    "cluster {name} is a workload cluster and {label} is at {}, not yet at \
                     {to}: upgrade {label} first (ferry upgrade --cluster global --to {to} --wait)",
                    or_unknown(&layer.current)
                ),
            );
            return plan;
        }
        // at the version is not enough: global still reconciling (its upgrade's last stages,
        // or a new one under way) is not the settled layer the workload clusters may follow
        if let Some(why) = unsettled(layer) {
            gated(
                &mut plan,
                Gate::Order,
                format!(
                    "cluster {name} is a workload cluster and {label} is at {} but not Ready \
                     ({why}): wait until {label} is Ready (ferry upgrade status --cluster \
                     global), then run again",
                    layer.current
                ),
            );
            return plan;
        }
    }
    if !allow_explicit && offered(&to).is_none() {
        gated(
            &mut plan,
            Gate::TargetOffered,
            format!(
                "cluster {name} does not offer {to} (its availableUpdates: {}): the \
                 ProductManifest of {to} is likely not created yet; or request it anyway with \
                 --allow-explicit-upgrade",
                if s.available_updates.is_empty() {
                    "none".to_string()
                } else {
                    s.available_updates.join(", ")
                }
            ),
        );
        return plan;
    }
    let p = &s.preflight;
    if !p.passed() {
        let failing: Vec<String> = p
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| {
                format!(
                    "{} {}{}",
                    c.name,
                    if c.state.is_empty() {
                        "no result"
                    } else {
                        &c.state
                    },
                    if c.message.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", c.message)
                    }
                )
            })
            .collect();
        let what = if p.stale {
            "the checks are stale (they ran for an earlier desired update)".to_string()
        } else if !failing.is_empty() {
            format!("check {}", failing.join(", "))
        } else if p.checks.is_empty() {
            "no preflight result yet".to_string()
        } else {
            format!("PreflightReady is {}", p.result)
        };
        gated(
            &mut plan,
            Gate::Preflight,
            format!(
                "cluster {name}: preflight did not pass: {what}; fix it and look again with \
                 `ferry upgrade status --cluster {name}`"
            ),
        );
        return plan;
    }
    plan.warnings = p
        .checks
        .iter()
        .filter(|c| !c.state.eq_ignore_ascii_case("passed"))
        .filter(|c| !c.state.eq_ignore_ascii_case("succeeded"))
        .map(|c| format!("preflight check {} {}: {}", c.name, c.state, c.message))
        .collect();
    plan
}

#[cfg(test)]
mod tests;
