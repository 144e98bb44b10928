//! `ferry gc`: `violet gc` with a dry run, a confirmation, a backup that restores, and
//! deletes that never hit an object changed since the plan.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::platform_flags::PlatformFlags;
use super::Output;
use crate::error::{Error, ErrorKind, Result};
use crate::platform::gc::{self, Outcome, Plan, Planned};
use crate::platform::inventory;

#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    pub platform: PlatformFlags,
    /// Clusters to clean, comma-separated [default: every cluster of the platform].
    #[arg(long, value_delimiter = ',')]
    pub clusters: Vec<String>,
    /// Print what would be deleted, and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete without asking (needed when there is no terminal to ask on).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Of an installed operator, keep this many of the versions older than the installed one
    /// (the newest of them); the installed version and newer ones always stay.
    #[arg(long, default_value_t = 1)]
    pub keep: usize,
    /// Plan nothing younger than this (by creationTimestamp): 30m, 24h, 7d; 0 for no limit.
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = gc::age::parse)]
    pub min_age: jiff::SignedDuration,
    /// Directory for the backup files (ferry-gc-<timestamp>.<cluster>.yaml).
    #[arg(long, default_value = ".")]
    pub backup_dir: PathBuf,
    /// Result format: text (for people) or json (on stdout, for scripts; logs stay on stderr).
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    /// Seconds to wait for the platform to answer.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

pub fn run(args: GcArgs) -> Result<i32> {
    if !args.dry_run {
        // the backup is written before any delete: a directory it cannot go to is found
        // now, not after the platform was read and the plan confirmed
        check_writable(&args.backup_dir)?;
    }
    let rt = super::runtime()?;
    let platform = args.platform.connect(&rt, args.timeout, "ferry gc")?;
    let inv = rt.block_on(inventory::read(&platform, &args.clusters))?;
    for w in &inv.warnings {
        eprintln!("warning: {w}");
    }
    for (cluster, e) in &inv.failures {
        eprintln!(
            "error: cluster {cluster} could not be read, nothing is deleted there: {}",
            e.message
        );
    }
    for (cluster, e) in &inv.unknown {
        eprintln!(
            "error: cluster {cluster}: install state unknown, what depends on it is not deleted: {}",
            e.message
        );
    }
    for e in &inv.plugin_errors {
        eprintln!(
            "error: plugin installs unknown, no plugin is deleted: {}",
            e.message
        );
    }
    let policy = gc::Policy {
        keep: args.keep,
        min_age: args.min_age,
        now: jiff::Timestamp::now(),
    };
    let plan = gc::plan(&inv, &policy);
    let json = args.output == Output::Json;
    if !json {
        print!("{}", render_plan(&plan, args.dry_run));
    }
    // Something could not be read: the plan is smaller than it could be; say so in the code.
    let read_failed = inv.errors().first().map(|e| e.kind.exit_code());
    if args.dry_run || plan.items.is_empty() {
        if json {
            println!("{}", to_json(&plan, None, &[], args.dry_run));
        } else if plan.items.is_empty() {
            println!("No resources were deleted.");
        }
        return Ok(read_failed.unwrap_or(0));
    }
    let n = plan.items.len();
    super::confirm(
        n,
        args.yes,
        &format!("Delete these {n} resources? A backup is written first."),
    )?;
    let backups = write_backups(&args.backup_dir, &plan)?;
    let results = rt.block_on(gc::execute(&platform, &plan));
    if json {
        println!("{}", to_json(&plan, Some(&results), &backups, false));
    } else {
        print!("{}", render_summary(&plan, &results, &backups));
    }
    let failed = results.iter().find_map(|r| r.as_ref().err());
    Ok(match (failed, read_failed) {
        (Some(e), _) => e.kind.exit_code(),
        (None, Some(code)) => code,
        (None, None) => 0,
    })
}

fn check_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".ferry-gc-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| {
            Error::new(
                ErrorKind::Usage,
                format!(
                    "--backup-dir {}: cannot write there ({e}); choose another --backup-dir",
                    dir.display()
                ),
            )
        })
}

/// One file per cluster (a `kubectl apply -f` restores it on that cluster), owner-only.
fn write_backups(dir: &Path, plan: &Plan) -> Result<Vec<PathBuf>> {
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut by_cluster: BTreeMap<&str, Vec<&Planned>> = BTreeMap::new();
    for p in &plan.items {
        by_cluster.entry(p.cluster.as_str()).or_default().push(p);
    }
    let mut files = Vec::new();
    for (cluster, items) in by_cluster {
        let path = dir.join(format!("ferry-gc-{stamp}.{cluster}.yaml"));
        let mut text = format!(
            "# ferry gc backup of cluster {cluster}, {stamp}: restore with\n#   kubectl --context <{cluster}> apply -f {}\n",
            path.display()
        );
        // Owners first, so that a restore creates what others refer to before them.
        for p in items.iter().rev() {
            text.push_str("---\n");
            text.push_str(
                &serde_yaml::to_string(&gc::restorable(p))
                    .map_err(|e| Error::internal(format!("YAML: {e}")))?,
            );
        }
        write_private(&path, &text).map_err(|e| {
            Error::new(
                ErrorKind::Usage,
                format!(
                    "cannot write the backup {} ({e}): nothing was deleted; choose another --backup-dir",
                    path.display()
                ),
            )
        })?;
        files.push(path);
    }
    Ok(files)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn render_plan(plan: &Plan, dry_run: bool) -> String {
    let mut out = render_not_planned(plan);
    if plan.items.is_empty() {
        return out;
    }
    let mut rows = vec![[
        "TYPE".to_string(),
        "NAME".into(),
        "CLUSTER".into(),
        "WHY".into(),
    ]];
    for p in &plan.items {
        rows.push([
            p.kind.into(),
            p.name.clone(),
            p.cluster.clone(),
            p.why.clone(),
        ]);
    }
    out.push_str(&format!(
        "GC plan{}: {} resources\n",
        if dry_run {
            " (dry run, nothing is deleted)"
        } else {
            ""
        },
        plan.items.len()
    ));
    out.push_str(&crate::report::aligned(&rows));
    if !plan.unreferenced_images.is_empty() {
        out.push_str(&format!(
            "Images only these versions referenced (not deleted from the registry): {}\n",
            plan.unreferenced_images.len()
        ));
        for i in &plan.unreferenced_images {
            out.push_str(&format!("  {i}\n"));
        }
    }
    out
}

/// What the rules would consider but gc leaves alone (too young, install state unknown).
fn render_not_planned(plan: &Plan) -> String {
    if plan.not_planned.is_empty() {
        return String::new();
    }
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut rows = vec![[
        "TYPE".to_string(),
        "NAME".into(),
        "CLUSTER".into(),
        "WHY".into(),
    ]];
    for n in &plan.not_planned {
        rows.push([
            dash(&n.kind),
            dash(&n.name),
            n.cluster.clone(),
            n.why.clone(),
        ]);
    }
    format!(
        "Not planned (kept): {}\n{}",
        plan.not_planned.len(),
        crate::report::aligned(&rows)
    )
}

fn result_word(r: &Result<Outcome>) -> &'static str {
    match r {
        Ok(Outcome::Deleted) => "deleted",
        Ok(Outcome::Skipped) => "skipped: changed since the plan",
        Ok(Outcome::Gone) => "already gone",
        Ok(Outcome::Kept) => "kept: a version or config of it was not deleted",
        Err(_) => "FAILED",
    }
}

fn render_summary(plan: &Plan, results: &[Result<Outcome>], backups: &[PathBuf]) -> String {
    let mut rows = vec![[
        "TYPE".to_string(),
        "NAME".into(),
        "CLUSTER".into(),
        "RESULT".into(),
    ]];
    for (p, r) in plan.items.iter().zip(results) {
        rows.push([
            p.kind.into(),
            p.name.clone(),
            p.cluster.clone(),
            result_word(r).into(),
        ]);
    }
    let mut out = String::from("GC summary:\n");
    out.push_str(&crate::report::aligned(&rows));
    for (p, r) in plan.items.iter().zip(results) {
        if let Err(e) = r {
            out.push_str(&format!(
                "error: {} {} on {}: {}\n",
                p.kind, p.name, p.cluster, e.message
            ));
        }
    }
    if !results.iter().any(|r| matches!(r, Ok(Outcome::Deleted))) {
        out.push_str("No resources were deleted.\n");
    }
    for b in backups {
        out.push_str(&format!("backup: {}\n", b.display()));
    }
    out
}

fn to_json(
    plan: &Plan,
    results: Option<&[Result<Outcome>]>,
    backups: &[PathBuf],
    dry_run: bool,
) -> String {
    let items: Vec<serde_json::Value> = plan
        .items
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v = json!({
                "type": p.kind, "name": p.name, "namespace": p.namespace,
                "cluster": p.cluster, "why": p.why,
            });
            match results.and_then(|r| r.get(i)) {
                Some(Ok(o)) => v["result"] = json!(o),
                // the JSON keeps its shape: a failure is `result: failed` with the error
                Some(Err(e)) => {
                    v["result"] = json!("failed");
                    v["error"] = json!(e.message);
                }
                None => {}
            }
            v
        })
        .collect();
    serde_json::to_string_pretty(&json!({
        "dry_run": dry_run,
        "resources": items,
        "unreferenced_images": plan.unreferenced_images,
        "not_planned": plan.not_planned,
        "backups": backups,
    }))
    .expect("serializable")
}
