//! `ferry sync`: what `upgrade.sh --only-sync-image` does, and the steps around it, from the
//! extracted core package on a global-cluster control-plane node. Flags keep upgrade.sh's
//! spelling (`--only-sync-image[=true|false]`, `--skip-sync-image`, `--registry`, ...).
//!
//! Order: checksums (unless `--skip-check-artifacts`) → registry decision (printed) → images
//! of the core package and of `plugins/*.tgz` through one engine (to the standby registry too,
//! from the same read) → `manifests/*.yaml` applied server-side with their images pointed at
//! that registry. `--preflight` only reads the upgrade checks.
//!
//! The registries (primary and standby) are resolved by `destination::Side`, as push's are;
//! what is sync's own is where the registry is without `--registry` (`RegistryFrom::Vip`),
//! the printed decision and the report.

use std::time::Instant;

use serde::Serialize;

mod flags;

pub use flags::SyncArgs;

use super::destination::{
    split_host, CredentialFlags, Destination, RegistryFrom, Resolved, Role, Side, Trust,
};
use super::platform_flags::StdinSecret;
use super::Output;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Mode, Target};
use crate::platform::artifacts::ResourceOutcome;
use crate::platform::kubeconfig::{self, Kubeconfig};
use crate::platform::registry::CredentialSource;
use crate::platform::{apply, preflight};
use crate::report::{ErrorReport, ResourceAction, ResourceReport, RunReport};
use crate::sink::{auth, Registry};
use crate::source::core::{ChecksumScope, CorePackage};

/// The registry decision, printed before anything is uploaded.
#[derive(Debug, Serialize)]
struct Decision {
    registry: Option<String>,
    why: String,
    credentials: String,
    /// The registry is external: images are not synced (as upgrade.sh does).
    skip_sync: bool,
}

#[derive(Debug, Serialize)]
struct SyncReport {
    ok: bool,
    exit_code: i32,
    package: String,
    version: String,
    decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    checksums_verified: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transfer: Option<RunReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    manifests: Vec<ResourceReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorReport>,
}

pub fn run(args: SyncArgs) -> Result<i32> {
    args.standby.require_registry()?;
    // (--kubeconfig is read, when it is needed at all, before the first call it serves)
    super::check_readable(&[
        ("--ca-file", args.ca_file.as_deref()),
        ("--standby-ca-file", args.standby.standby_ca_file.as_deref()),
    ])?;
    let rt = super::runtime()?;
    if args.preflight {
        return rt.block_on(run_preflight(&args));
    }
    let started = Instant::now();
    let uploads = !args.skip_sync_image;
    let core = CorePackage::open(&args.package, !args.skip_check_artifacts && uploads)?;
    let only_sync = args.only_sync_image.unwrap_or(false);
    let mut warnings = Vec::new();
    let mut checksums_verified = None;
    // Whatever is uploaded or applied is checked first: the images and everything else when
    // they are synced; with --skip-sync-image the manifests (applied with forced ownership)
    // and package.yaml. A manifest the list does not name is refused.
    let applies = !only_sync && !core.manifests.is_empty();
    if !args.skip_check_artifacts && (uploads || applies) {
        let scope = if uploads {
            ChecksumScope::Everything
        } else {
            ChecksumScope::Manifests
        };
        let (n, unlisted) = core.verify_checksums(scope)?;
        eprintln!(
            "checksums.sha256: {n} files verified{}",
            if uploads {
                ""
            } else {
                " (package.yaml and manifests/: --skip-sync-image)"
            }
        );
        warnings.extend(unlisted);
        checksums_verified = Some(n);
    }
    let stdin = StdinSecret::claimed_by(&[("--password-stdin", args.password_stdin)])?;
    let creds = CredentialFlags {
        no_auth: false,
        username: args.username.as_ref(),
        password: args.password.as_ref(),
        password_stdin: args.password_stdin,
        stdin: &stdin,
        prefix: "",
    };
    // The cluster is needed to find the registry or its credentials, and for the manifests.
    let needs_cluster = args.registry.is_none()
        || (!creds.given() && !has_login(args.registry.as_deref()))
        || (!only_sync && !core.manifests.is_empty());
    let kube = if needs_cluster {
        Some(rt.block_on(kubeconfig::load(args.kubeconfig.as_deref(), &args.cluster))?)
    } else {
        None
    };
    // the registry's certificate is usually issued by the cluster CA
    let extra_roots = match (&kube, &args.ca_file) {
        (Some(k), None) => k.cluster_ca.clone(),
        _ => Vec::new(),
    };
    let primary = Side {
        role: Role::Primary,
        dest_repo: args.registry.as_ref(),
        creds,
        trust: Trust {
            plain: args.plain,
            insecure: args.insecure,
            ca_file: args.ca_file.clone(),
            token_realms: args.transfer.allow_token_realm.clone(),
        },
        dest_flag: "--registry",
        global: kube.as_ref().map(|k| k.cluster.clone()),
        from: vip(&args, kube.as_ref()),
        publisher: None,
    };
    let (decision, dest) = match rt.block_on(primary.resolve_any())? {
        Resolved::External { address } => (
            Decision {
                registry: address,
                why: "ProductBase base says spec.registry.external: the platform uses an \
                      external registry; image synchronization is skipped"
                    .into(),
                credentials: CredentialSource::None.to_string(),
                skip_sync: true,
            },
            None,
        ),
        Resolved::To(mut d) => {
            d.extra_roots = extra_roots.clone();
            let decision = Decision {
                registry: Some(d.label()),
                why: d.why.clone(),
                credentials: d.credential_origin.to_string(),
                skip_sync: false,
            };
            (decision, Some(*d))
        }
    };
    eprintln!(
        "registry {} ({}); credentials {}",
        decision.registry.as_deref().unwrap_or("-"),
        decision.why,
        decision.credentials
    );
    let mut report = SyncReport {
        ok: true,
        exit_code: 0,
        package: core.meta.metadata.name.clone(),
        version: core.meta.metadata.version.clone(),
        decision,
        checksums_verified,
        transfer: None,
        manifests: Vec::new(),
        warnings,
        error: None,
    };

    let timeout = args.transfer.timeout();
    let retry = args.transfer.retry_policy();
    if let (Some(dest), false) = (&dest, args.skip_sync_image) {
        let mut targets = vec![Target::registry(
            Role::Primary,
            dest.registry(&retry, timeout)?,
        )];
        if args.standby.standby_registry.is_some() {
            // the standby is given by its flags only: sync reaches one cluster
            let standby = args.standby.side(
                &stdin,
                args.ca_file.as_ref(),
                &args.transfer.allow_token_realm,
            );
            let mut d = rt.block_on(standby.resolve())?;
            d.extra_roots = extra_roots.clone();
            eprintln!("{}", d.describe());
            targets.push(Target::registry(
                Role::Standby,
                d.registry(&retry, timeout)?,
            ));
        }
        let packages = core.packages();
        let run = crate::pipeline::Run {
            packages: &packages,
            targets: &targets,
            engine: args.transfer.engine_options(8 << 20, false),
            chart_repo: Some("public-charts"),
            mode: Mode::from_flags(args.transfer.dry_run, false),
            quiet: args.transfer.quiet || args.output == Output::Json,
            packages_at_once: 4,
            left_out: None,
        };
        let mut transfer = rt.block_on(run.execute(started));
        if args.transfer.dry_run {
            transfer.estimate = Some(crate::report::estimate_line(
                transfer.totals.blobs.bytes,
                transfer.totals.blobs.uploaded,
                args.transfer.link_speed,
            ));
        }
        report.exit_code = transfer.exit_code;
        report.transfer = Some(transfer);
    }

    let apply_manifests = !only_sync && report.exit_code == 0 && !core.manifests.is_empty();
    if apply_manifests {
        let kube = kube.as_ref().expect("loaded when there are manifests");
        let checked = dest.as_ref().filter(|_| args.skip_sync_image);
        let registry = dest.as_ref().map(Destination::label);
        let checked = checked.map(|d| d.registry(&retry, timeout)).transpose();
        match rt.block_on(async {
            manifests(&args, &core, kube, registry.as_deref(), checked?.as_deref()).await
        }) {
            Ok(outcomes) => {
                report.manifests = outcomes.iter().map(ResourceReport::from).collect();
                if let Some(worst) = outcomes
                    .iter()
                    .filter_map(|o| o.result.as_ref().err())
                    .map(|e| e.kind)
                    .max_by_key(|k| k.severity())
                {
                    report.exit_code = report.exit_code.max(worst.exit_code());
                }
            }
            Err(e) => {
                report.exit_code = e.kind.exit_code();
                report.error = Some(ErrorReport::from(&e));
            }
        }
    }
    report.ok = report.exit_code == 0;
    // a package reader left waiting by a refused registry check is not waited for
    rt.shutdown_background();
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("plain data")
        ),
        Output::Text => {
            // the result on stdout, what went wrong on stderr
            print!("{}", render(&report));
            let run_error = report.transfer.as_ref().and_then(|t| t.error.as_ref());
            for e in run_error.into_iter().chain(report.error.as_ref()) {
                eprintln!("error: {}", e.message);
            }
        }
    }
    Ok(report.exit_code)
}

fn render(r: &SyncReport) -> String {
    let mut s = String::new();
    for w in &r.warnings {
        s.push_str(&format!("warning: {w}\n"));
    }
    if r.decision.skip_sync {
        s.push_str("images: not synced (external registry)\n");
    }
    if let Some(t) = &r.transfer {
        s.push_str(&t.render_text());
    }
    for m in &r.manifests {
        let action = match m.action {
            ResourceAction::Created => "created",
            ResourceAction::Updated => "applied",
            ResourceAction::WouldCreate => "would create",
            ResourceAction::WouldUpdate => "would apply",
            ResourceAction::Unchanged => "unchanged",
            ResourceAction::Failed => "FAILED",
        };
        s.push_str(&format!("manifest {action} {} {}\n", m.kind, m.name));
        if let Some(e) = &m.error {
            s.push_str(&format!("          {}\n", e.message));
        }
    }
    s.push_str(if r.ok { "sync: OK\n" } else { "sync: FAILED\n" });
    s
}

/// The login file holds credentials for the `--registry` host (then no cluster is needed
/// for them).
fn has_login(registry: Option<&str>) -> bool {
    registry
        .and_then(|r| split_host(r, false).ok())
        .is_some_and(|(host, _, _)| auth::from_auth_files(&host).is_some())
}

/// Sync's registry, when `--registry` names none: the built-in one at the global VIP.
fn vip(args: &SyncArgs, kube: Option<&Kubeconfig>) -> RegistryFrom {
    match (kube, &args.vip) {
        // without a cluster the registry is given by flag
        (None, _) => RegistryFrom::Flag,
        (Some(_), Some(v)) => RegistryFrom::Vip {
            vip: v.clone(),
            named_by: "--vip".into(),
        },
        (Some(k), None) => RegistryFrom::Vip {
            vip: k.server_host.clone(),
            named_by: format!("API server of {}", k.path.display()),
        },
    }
}

/// Applies the manifests, images pointed at `registry`. With `--skip-sync-image` (`checked`)
/// it first checks (HEAD) that every image they use is there, and refuses with the list
/// otherwise.
async fn manifests(
    args: &SyncArgs,
    core: &CorePackage,
    kube: &Kubeconfig,
    registry: Option<&str>,
    checked: Option<&Registry>,
) -> Result<Vec<ResourceOutcome>> {
    let mut objects = Vec::new();
    let mut refs = Vec::new();
    for (name, text) in &core.manifests {
        for mut obj in apply::parse_manifests(name, text)? {
            if let Some(r) = registry {
                refs.extend(apply::rewrite_images(&mut obj, r));
            }
            objects.push(obj);
        }
    }
    if let Some(reg) = checked {
        reg.check().await?;
        let missing = apply::missing_images(reg, &refs).await?;
        if !missing.is_empty() {
            return Err(Error::new(
                ErrorKind::Registry,
                format!(
                    "--skip-sync-image: the manifests use images that are not in the registry: \
                     {}; sync them first (without --skip-sync-image)",
                    missing.join(", ")
                ),
            ));
        }
    }
    let mut out = Vec::new();
    for obj in &objects {
        out.push(apply::apply(&kube.cluster, obj, args.transfer.dry_run).await);
    }
    Ok(out)
}

async fn run_preflight(args: &SyncArgs) -> Result<i32> {
    let kube = kubeconfig::load(args.kubeconfig.as_deref(), &args.cluster).await?;
    let p = preflight::read(&kube.cluster, &args.cluster).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&p).expect("plain data")),
        Output::Text => print!("{}", p.render()),
    }
    Ok(if p.passed() { 0 } else { PREFLIGHT_FAILED })
}

/// `--preflight`: a check failed or is not finished, or the checks are stale.
pub const PREFLIGHT_FAILED: i32 = 8;
