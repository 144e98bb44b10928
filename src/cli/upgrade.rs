//! `ferry upgrade`: request the cluster upgrade (ClusterVersionShadow `desiredUpdate`) with
//! the gates enforced, in the order of the runbook (the DR standby's global, the primary's
//! global, then every workload cluster at once), and follow it until Ready.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::platform_flags::{PlatformFlags, StandbyPlatformFlags, StdinSecret};
use super::Output;
use crate::error::{Error, ErrorKind, Result};
use crate::platform::upgrade::gates::{self, Decision, Planned, Target};
use crate::platform::upgrade::{self, Shadow};
use crate::platform::{inventory::GLOBAL, kubeconfig, Cluster, Platform};
use render::{render_plan, render_summary};

mod cluster;
mod live;
mod render;

use cluster::{one, skipped, Ctx, Outcome};

/// Exit code: a gate refused (preflight, target not offered, order).
pub const GATED: i32 = 8;
/// Exit code: an upgrade ended Degraded or Stalled, or `--timeout` passed.
pub const FAILED: i32 = 9;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UpgradeArgs {
    #[command(subcommand)]
    pub command: Option<UpgradeCommand>,
    #[command(flatten)]
    pub request: RequestArgs,
}

#[derive(Subcommand, Debug)]
pub enum UpgradeCommand {
    /// Print each cluster's versions, available updates, conditions, preflight checks, stages
    /// and history (read-only).
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct Which {
    /// The cluster to act on [default: global].
    #[arg(long, value_parser = super::cluster_name, conflicts_with = "clusters")]
    pub cluster: Option<String>,
    /// Several clusters, comma-separated (global first, then the workload clusters at once).
    #[arg(long, value_delimiter = ',', value_parser = super::cluster_name)]
    pub clusters: Vec<String>,
    /// Result format: text (for people) or json (on stdout, for scripts; logs stay on stderr).
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    /// Seconds to wait for the platform to answer one call.
    #[arg(long, default_value_t = 60)]
    pub api_timeout: u64,
    #[command(flatten)]
    pub platform: PlatformFlags,
    /// Without --platform-address: reach global through this kubeconfig (on a control-plane
    /// node of global) [default: $KUBECONFIG, ~/.kube/config, /etc/kubernetes/admin.conf].
    #[arg(long, conflicts_with = "platform_address")]
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl Which {
    fn names(&self) -> Vec<String> {
        let mut v = if self.clusters.is_empty() {
            vec![self.cluster.clone().unwrap_or_else(|| GLOBAL.to_string())]
        } else {
            self.clusters.clone()
        };
        v.dedup();
        v
    }
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub which: Which,
}

#[derive(Args, Debug)]
pub struct RequestArgs {
    /// The version to upgrade to; it must be in the cluster's availableUpdates.
    #[arg(long, conflicts_with = "to_latest")]
    pub to: Option<String>,
    /// Upgrade to the highest version of the cluster's availableUpdates.
    #[arg(long)]
    pub to_latest: bool,
    /// Request --to even if the cluster does not offer it (lifts only that client-side check).
    #[arg(long, requires = "to")]
    pub allow_explicit_upgrade: bool,
    /// Follow each upgrade until Ready (exit 0), Degraded or Stalled (exit 9). Implied for
    /// the DR standby's global and for global when workload clusters follow it.
    #[arg(long)]
    pub wait: bool,
    /// Deadline in seconds for the whole wait (not an idle timeout): past it, exit 9.
    #[arg(long, default_value_t = 4 * 3600)]
    pub timeout: u64,
    /// Seconds between two reads of each cluster's status while waiting.
    #[arg(long, default_value_t = 5.0)]
    pub poll_interval: f64,
    /// Print the plan and the gates' results; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Request without asking (needed when there is no terminal to ask on).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub which: Which,
    #[command(flatten)]
    pub standby: StandbyPlatformFlags,
}

pub fn run(args: UpgradeArgs) -> Result<i32> {
    match args.command {
        Some(UpgradeCommand::Status(s)) => status(s.which),
        None => request(args.request),
    }
}

fn connect(
    rt: &tokio::runtime::Runtime,
    which: &Which,
    standby: Option<&StandbyPlatformFlags>,
) -> Result<(Cluster, Option<Cluster>)> {
    let stdin = StdinSecret::claimed_by(&[
        (
            "--platform-password-stdin",
            which.platform.platform_password_stdin,
        ),
        (
            "--standby-platform-password-stdin",
            standby.is_some_and(|s| s.platform_password_stdin),
        ),
    ])?;
    let timeout = Duration::from_secs(which.api_timeout);
    let opts = which.platform.options(timeout, &stdin)?;
    let standby = match standby {
        Some(s) => s.options(timeout, &stdin)?,
        None => None,
    };
    let global = match opts {
        Some(opts) => {
            let primary = rt.block_on(Platform::connect_checked(opts))?;
            rt.block_on(primary.check_clusters(&which.names()))?;
            primary.cluster(GLOBAL)?
        }
        // on a control-plane node of global, as `sync` (an unknown cluster's object is a 404)
        None => {
            rt.block_on(kubeconfig::load(which.kubeconfig.as_deref(), GLOBAL))
                .map_err(|e| e.context("no --platform-address given"))?
                .cluster
        }
    };
    let standby = match standby {
        Some(o) => Some(rt.block_on(Platform::connect_checked(o))?.cluster(GLOBAL)?),
        None => None,
    };
    Ok((global, standby))
}

fn status(which: Which) -> Result<i32> {
    let rt = super::runtime()?;
    let (global, _) = connect(&rt, &which, None)?;
    let names = which.names();
    let read = rt.block_on(futures::future::join_all(
        names.iter().map(|n| upgrade::read(&global, n)),
    ));
    let mut code = 0;
    let mut shadows = Vec::new();
    for r in read {
        match r {
            Ok(s) => shadows.push(s),
            Err(e) => {
                eprintln!("error: {}", e.message);
                code = code.max(e.kind.exit_code());
            }
        }
    }
    match which.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "clusters": shadows }))
                .expect("plain data")
        ),
        Output::Text => {
            let texts: Vec<String> = shadows.iter().map(Shadow::render).collect();
            print!("{}", texts.join("\n"));
        }
    }
    Ok(code)
}

fn request(a: RequestArgs) -> Result<i32> {
    let target = match (&a.to, a.to_latest) {
        (Some(v), _) => Target::Version(v.trim().to_string()),
        (None, true) => Target::Latest,
        (None, false) => {
            return Err(Error::new(
                ErrorKind::Usage,
                "ferry upgrade needs --to V or --to-latest (or `ferry upgrade status` to look)",
            ))
        }
    };
    if !(a.poll_interval > 0.0 && a.poll_interval.is_finite()) {
        return Err(Error::new(ErrorKind::Usage, "--poll-interval must be > 0"));
    }
    let rt = super::runtime()?;
    let standby_flags = a.standby.platform_address.is_some().then_some(&a.standby);
    let (global, standby_global) = connect(&rt, &a.which, standby_flags)?;
    let names = a.which.names();
    let with_global = names.iter().any(|n| n == GLOBAL);
    let workloads: Vec<String> = names.into_iter().filter(|n| n != GLOBAL).collect();
    let started = Instant::now();
    let json = a.which.output == Output::Json;
    let ctx = Ctx {
        target,
        allow: a.allow_explicit_upgrade,
        wait: a.wait,
        deadline: started + Duration::from_secs(a.timeout),
        poll: Duration::from_secs_f64(a.poll_interval),
        started,
        live: live::Live::new(json),
    };

    // the plan, from what is read now
    let g = rt.block_on(upgrade::read(&global, GLOBAL))?;
    let sg = match &standby_global {
        Some(c) => Some(rt.block_on(upgrade::read(c, GLOBAL))?),
        None => None,
    };
    let mut plan: Vec<(&'static str, Planned)> = Vec::new();
    if with_global {
        if let Some(sg) = &sg {
            plan.push(("standby", gates::decide(sg, &ctx.target, ctx.allow, &[])));
        }
        plan.push(("primary", gates::decide(&g, &ctx.target, ctx.allow, &[])));
    }
    let read_workloads = rt.block_on(futures::future::join_all(
        workloads.iter().map(|n| upgrade::read(&global, n)),
    ));
    let mut shadows = Vec::new();
    for r in read_workloads {
        shadows.push(r?);
    }
    let layers = |g: &Shadow, sg: &Option<Shadow>| -> Vec<(String, Shadow)> {
        let mut l = vec![("global".to_string(), g.clone())];
        if let Some(sg) = sg {
            l.push(("the standby's global".to_string(), sg.clone()));
        }
        l
    };
    for w in &shadows {
        let l = layers(&g, &sg);
        let refs: Vec<gates::Layer> = l.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let mut p = gates::decide(w, &ctx.target, ctx.allow, &refs);
        // global goes first in this run: these gates are checked again once it is there (and
        // what --to-latest means for a workload cluster is known only then)
        let deferred = match p.decision {
            Decision::Gated { .. } => true,
            Decision::AlreadyAtTarget => ctx.target == Target::Latest,
            _ => false,
        };
        if with_global && deferred {
            if ctx.target == Target::Latest {
                p.to = String::new();
            }
            p.decision = Decision::Request;
            p.warnings
                .push("after global reaches its target (gates checked then)".into());
        }
        plan.push(("primary", p));
    }
    if !json || a.dry_run {
        eprint!("{}", render_plan(&plan, a.dry_run));
    }
    let gated_now = plan
        .iter()
        .any(|(_, p)| matches!(p.decision, Decision::Gated { .. }));
    // the global layer refused: nothing at all (a DR pair is not left split, and the workload
    // clusters wait for it)
    let global_gated = plan
        .iter()
        .any(|(_, p)| p.cluster == GLOBAL && matches!(p.decision, Decision::Gated { .. }));
    if global_gated && !a.dry_run {
        eprintln!(
            "error: global is refused by a gate: nothing is requested (with it, the DR pair and \
             the workload clusters of this run wait)"
        );
    }
    if a.dry_run || global_gated {
        if json {
            let items: Vec<_> = plan
                .iter()
                .map(|(side, p)| serde_json::json!({"platform": side, "plan": p}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"dryRun": a.dry_run, "clusters": items})
                )
                .expect("plain data")
            );
        }
        return Ok(if gated_now { GATED } else { 0 });
    }
    let requests = plan
        .iter()
        .filter(|(_, p)| p.decision == Decision::Request)
        .count();
    if requests > 0 {
        super::confirm(requests, a.yes, "Request these upgrades?")?;
    }

    let mut outcomes: Vec<Outcome> = Vec::new();
    let run = async {
        let mut layer_ok = true;
        let mut g_now = g.clone();
        let mut sg_now = sg.clone();
        if with_global {
            if let (Some(c), Some(s)) = (&standby_global, &sg) {
                let o = one(&ctx, c, "standby", s, &[], true).await;
                layer_ok &= matches!(o.result, "ready" | "already-at-target");
                outcomes.push(o);
                sg_now = upgrade::read(c, GLOBAL).await.ok().or(sg_now);
            }
            let sgs = sg_now.clone();
            let refs: Vec<gates::Layer> = sgs.iter().map(|s| ("the standby's global", s)).collect();
            let g_fresh = upgrade::read(&global, GLOBAL)
                .await
                .unwrap_or_else(|_| g.clone());
            let o = if layer_ok {
                one(
                    &ctx,
                    &global,
                    "primary",
                    &g_fresh,
                    &refs,
                    !workloads.is_empty(),
                )
                .await
            } else {
                skipped(
                    &ctx,
                    "primary",
                    &g_fresh,
                    "the standby's global did not reach the target",
                )
            };
            outcomes.push(o);
            g_now = upgrade::read(&global, GLOBAL).await.unwrap_or(g_now);
        }
        let l = layers(&g_now, &sg_now);
        let refs: Vec<gates::Layer> = l.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let runs = shadows.iter().map(|w| {
            let (ctx, global, refs) = (&ctx, &global, &refs);
            async move {
                let w = if with_global {
                    upgrade::read(global, &w.cluster)
                        .await
                        .unwrap_or_else(|_| w.clone())
                } else {
                    w.clone()
                };
                one(ctx, global, "primary", &w, refs, false).await
            }
        });
        outcomes.extend(futures::future::join_all(runs).await);
    };
    rt.block_on(run);
    let code = if outcomes
        .iter()
        .any(|o| matches!(o.result, "degraded" | "timeout"))
    {
        FAILED
    } else if outcomes.iter().any(|o| o.result == "gated") {
        GATED
    } else if outcomes.iter().any(|o| o.result == "error") {
        ErrorKind::Platform.exit_code()
    } else {
        0
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"clusters": outcomes}))
                .expect("plain data")
        );
    } else {
        print!("{}", render_summary(&outcomes));
    }
    Ok(code)
}
