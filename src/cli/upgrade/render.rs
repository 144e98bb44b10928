//! The plan and the summary of `ferry upgrade`, as text.

use super::cluster::Outcome;
use crate::platform::upgrade::gates::{Decision, Planned};
use crate::platform::upgrade::or_dash as dash;

pub(super) fn render_plan(plan: &[(&str, Planned)], dry_run: bool) -> String {
    let mut rows = vec![[
        "CLUSTER".to_string(),
        "FROM".into(),
        "TO".into(),
        "PLAN".into(),
    ]];
    for (side, p) in plan {
        let what = match &p.decision {
            Decision::AlreadyAtTarget => "already at target: skipped".to_string(),
            Decision::AlreadyRequested => "already requested: followed, not written".into(),
            Decision::Request => format!("request (gates passed){}", notes(&p.warnings)),
            Decision::Gated { gate, why } => format!("refused by the {gate} gate: {why}"),
        };
        let name = if *side == "standby" {
            format!("{} (standby)", p.cluster)
        } else {
            p.cluster.clone()
        };
        rows.push([name, dash(&p.from), dash(&p.to), what]);
    }
    format!(
        "Upgrade plan{}\n{}",
        if dry_run {
            " (dry run: nothing is written)"
        } else {
            ""
        },
        crate::report::aligned(&rows)
    )
}

fn notes(w: &[String]) -> String {
    if w.is_empty() {
        String::new()
    } else {
        format!("; {}", w.join("; "))
    }
}

fn duration(secs: f64) -> String {
    match secs {
        s if s < 60.0 => format!("{s:.1}s"),
        s if s < 3600.0 => format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
        s => format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        ),
    }
}

pub(super) fn render_summary(outcomes: &[Outcome]) -> String {
    let mut rows = vec![[
        "CLUSTER".to_string(),
        "FROM".into(),
        "TO".into(),
        "RESULT".into(),
        "DURATION".into(),
    ]];
    for o in outcomes {
        let result = match (o.result, o.gate) {
            ("ready", _) => "Ready".to_string(),
            ("requested", _) => "requested (not waited for)".into(),
            ("already-at-target", _) => "already at target".into(),
            ("gated", Some(g)) => format!("gated ({g}): {}", o.detail),
            ("degraded", _) => o.detail.clone(),
            ("timeout", _) => format!("timeout: {}", o.detail),
            (_, _) => format!("error: {}", o.detail),
        };
        let name = if o.platform == "standby" {
            format!("{} (standby)", o.cluster)
        } else {
            o.cluster.clone()
        };
        rows.push([
            name,
            dash(&o.from),
            dash(&o.to),
            result,
            duration(o.seconds),
        ]);
    }
    crate::report::aligned(&rows)
}
