//! One cluster of `ferry upgrade`: its gates, its write, following it.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::platform::upgrade::gates::{self, Decision, Gate, Target};
use crate::platform::upgrade::watch::Watched;
use crate::platform::upgrade::{self, Shadow};
use crate::platform::Cluster;

/// One cluster's end.
#[derive(Serialize, Debug, Clone)]
pub(super) struct Outcome {
    pub(super) cluster: String,
    /// `primary` or `standby`.
    pub(super) platform: &'static str,
    pub(super) from: String,
    pub(super) to: String,
    /// ready, requested, already-at-target, gated, degraded, timeout, error
    pub(super) result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) gate: Option<Gate>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(super) detail: String,
    /// From the request (or the start of following it) to the end, in seconds.
    pub(super) seconds: f64,
}

/// What the run needs to follow and write.
pub(super) struct Ctx {
    pub(super) target: Target,
    pub(super) allow: bool,
    pub(super) wait: bool,
    pub(super) deadline: Instant,
    pub(super) poll: Duration,
    pub(super) started: Instant,
    /// Live lines on a terminal, plain lines otherwise.
    pub(super) live: super::live::Live,
}

pub(super) fn skipped(ctx: &Ctx, side: &'static str, s: &Shadow, why: &str) -> Outcome {
    Outcome {
        cluster: s.cluster.clone(),
        platform: side,
        from: s.current.clone(),
        to: match &ctx.target {
            Target::Version(v) => v.clone(),
            Target::Latest => String::new(),
        },
        result: "gated",
        gate: Some(Gate::Order),
        detail: format!("cluster {}: {why}; nothing was requested", s.cluster),
        seconds: 0.0,
    }
}

/// Gates, writes and (with `wait` or `--wait`) follows one cluster.
pub(super) async fn one(
    ctx: &Ctx,
    global: &Cluster,
    side: &'static str,
    s: &Shadow,
    layers: &[gates::Layer<'_>],
    wait: bool,
) -> Outcome {
    let p = gates::decide(s, &ctx.target, ctx.allow, layers);
    let label = if side == "standby" {
        format!("{} (standby)", s.cluster)
    } else {
        s.cluster.clone()
    };
    let mut o = Outcome {
        cluster: s.cluster.clone(),
        platform: side,
        from: p.from.clone(),
        to: p.to.clone(),
        result: "requested",
        gate: None,
        detail: String::new(),
        seconds: 0.0,
    };
    for w in &p.warnings {
        ctx.live.say(&format!("warning: {label}: {w}"));
    }
    let begun = Instant::now();
    let generation = match &p.decision {
        Decision::AlreadyAtTarget => {
            o.result = "already-at-target";
            return o;
        }
        Decision::Gated { gate, why } => {
            o.result = "gated";
            o.gate = Some(*gate);
            o.detail = why.clone();
            return o;
        }
        Decision::AlreadyRequested => {
            ctx.live.say(&format!(
                "{label}: {} already requested; not written again",
                p.to
            ));
            s.generation
        }
        Decision::Request => match upgrade::request(global, s, &p.to).await {
            Ok(g) => {
                ctx.live
                    .say(&format!("{label}: requested {} -> {}", p.from, p.to));
                g
            }
            Err(e) => {
                ctx.live.say(&format!("error: {}", e.message));
                o.result = "error";
                o.detail = e.message;
                return o;
            }
        },
    };
    if !(wait || ctx.wait) {
        return o;
    }
    let mut line = ctx.live.cluster(&label);
    let watched = upgrade::watch::follow(
        global,
        &s.cluster,
        &p.to,
        generation,
        (ctx.deadline, ctx.poll),
        |state| line.update(state, ctx.started.elapsed().as_secs()),
    )
    .await;
    let (end, (result, detail)) = match watched {
        Watched::Ready => (
            format!("{label}: Ready at {}", p.to),
            ("ready", String::new()),
        ),
        Watched::Failed(why) => (format!("{label}: {why}"), ("degraded", why)),
        Watched::TimedOut(why) => (format!("{label}: timeout: {why}"), ("timeout", why)),
        Watched::Error(e) => (format!("error: {}", e.message), ("error", e.message)),
    };
    line.finish(&end);
    (o.result, o.detail) = (result, detail);
    o.seconds = (begun.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    o
}
