//! `ferry sync`: what `upgrade.sh --only-sync-image` does, and the steps around it, from the
//! extracted core package on a global-cluster control-plane node. Flags keep upgrade.sh's
//! spelling (`--only-sync-image[=true|false]`, `--skip-sync-image`, `--registry`, ...).
//!
//! Order: checksums (unless `--skip-check-artifacts`) → registry decision (printed) → images
//! of the core package and of `plugins/*.tgz` through one engine (to the standby registry too,
//! from the same read) → `manifests/*.yaml` applied server-side with their images pointed at
//! that registry. `--preflight` only reads the upgrade checks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use super::destination::{Destination, Role, Trust};
use super::transfer_flags::TransferFlags;
use super::Output;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Mode, Target};
use crate::platform::artifacts::ResourceOutcome;
use crate::platform::kubeconfig::{self, Kubeconfig};
use crate::platform::registry::{self as platform_registry, CredentialSource};
use crate::platform::{apply, preflight};
use crate::report::{ErrorReport, ResourceAction, ResourceReport, RunReport};
use crate::sink::{Credentials, Registry, Secret};
use crate::source::core::{ChecksumScope, CorePackage};

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The core package: its extracted directory, or the packed core .tgz itself (streamed,
    /// nothing extracted).
    #[arg(long, default_value = ".")]
    pub package: PathBuf,
    /// Verify and upload images only (`--only-sync-image=true`); no manifests are applied.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub only_sync_image: Option<bool>,
    /// Apply the manifests only, after checking that every image they use is in the registry.
    #[arg(long, conflicts_with = "only_sync_image")]
    pub skip_sync_image: bool,
    /// Registry to sync to, host[:port] [default: from ProductBase base].
    #[arg(long)]
    pub registry: Option<String>,
    /// Registry user [default: from ProductBase base, else Secret cpaas-system/registry-admin].
    #[arg(long)]
    pub username: Option<String>,
    /// Prefer FERRY_PASSWORD: argv is visible to other users.
    #[arg(long, env = "FERRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Do not verify checksums.sha256 before uploading images or applying manifests.
    #[arg(long)]
    pub skip_check_artifacts: bool,
    /// Print the upgrade checks (ClusterVersionShadow) and exit; changes nothing.
    #[arg(long)]
    pub preflight: bool,
    /// Cluster name (the ClusterVersionShadow to read).
    #[arg(long, default_value = "global")]
    pub cluster: String,
    /// [default: $KUBECONFIG, ~/.kube/config, /etc/kubernetes/admin.conf]
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The global VIP, to reach the built-in registry [default: the kubeconfig's API host].
    #[arg(long)]
    pub vip: Option<String>,
    /// DR: also sync to the standby global cluster's registry, from the same read.
    #[arg(long)]
    pub standby_registry: Option<String>,
    /// User of the standby registry.
    #[arg(long, requires = "standby_registry")]
    pub standby_username: Option<String>,
    /// Password of the standby registry (prefer FERRY_STANDBY_PASSWORD: argv is visible).
    #[arg(
        long,
        env = "FERRY_STANDBY_PASSWORD",
        hide_env_values = true,
        requires = "standby_registry"
    )]
    pub standby_password: Option<String>,
    /// Send no credentials to the standby registry.
    #[arg(long, requires = "standby_registry", conflicts_with_all = ["standby_username", "standby_password"])]
    pub standby_no_auth: bool,
    /// Speak plain HTTP to the standby registry (--plain is for the primary only, as in push).
    #[arg(long, requires = "standby_registry")]
    pub standby_plain: bool,
    /// Do not verify the standby registry's TLS certificate.
    #[arg(long, requires = "standby_registry")]
    pub standby_insecure: bool,
    /// Trust this CA (PEM) for the registries [default: system roots + the kubeconfig's CA].
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Do not verify the registry's TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Speak plain HTTP to the registries.
    #[arg(long)]
    pub plain: bool,
    /// Result format: text (for people) or json (on stdout, for scripts; logs stay on stderr).
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub transfer: TransferFlags,
}

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
    // The cluster is needed to find the registry or its credentials, and for the manifests.
    let needs_cluster = args.registry.is_none()
        || args.username.is_none()
        || (!only_sync && !core.manifests.is_empty());
    let kube = if needs_cluster {
        Some(rt.block_on(kubeconfig::load(args.kubeconfig.as_deref(), &args.cluster))?)
    } else {
        None
    };
    let (decision, dest) = rt.block_on(decide(&args, kube.as_ref()))?;
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
    let extra_roots = kube
        .as_ref()
        .map(|k| k.cluster_ca.clone())
        .unwrap_or_default();
    // the same address rules as push (`host[:port][/prefix]`, scheme, no credentials)
    let destination = |role: Role,
                       address: &str,
                       credentials: Option<Credentials>,
                       origin: String|
     -> Result<Arc<Registry>> {
        let trust = match role {
            Role::Primary => Trust {
                plain: args.plain,
                insecure: args.insecure,
                ca_file: args.ca_file.clone(),
                token_realms: args.transfer.allow_token_realm.clone(),
            },
            Role::Standby => Trust {
                plain: args.standby_plain,
                insecure: args.standby_insecure,
                ca_file: args.ca_file.clone(),
                token_realms: args.transfer.allow_token_realm.clone(),
            },
        };
        let mut d = Destination::from_address(role, address, trust)?;
        if args.ca_file.is_none() {
            d.extra_roots = extra_roots.clone();
        }
        d.credentials = credentials;
        d.credential_origin = origin;
        d.registry(&retry, timeout)
    };

    if let (Some(dest), false) = (&dest, args.skip_sync_image || report.decision.skip_sync) {
        let mut targets = vec![Target::registry(
            Role::Primary,
            destination(
                Role::Primary,
                &dest.0,
                dest.1.clone(),
                report.decision.credentials.clone(),
            )?,
        )];
        if let Some(standby) = &args.standby_registry {
            targets.push(Target::registry(
                Role::Standby,
                destination(
                    Role::Standby,
                    standby,
                    standby_credentials(&args)?,
                    "from --standby-username/--standby-password".into(),
                )?,
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
        let registry = dest.as_ref().map(|d| d.0.clone());
        let origin = report.decision.credentials.clone();
        match rt.block_on(manifests(
            &args,
            &core,
            kube,
            registry.as_deref(),
            dest.as_ref(),
            &|a, c| destination(Role::Primary, a, c, origin.clone()),
        )) {
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

fn standby_credentials(args: &SyncArgs) -> Result<Option<Credentials>> {
    if args.standby_no_auth {
        return Ok(None);
    }
    match (&args.standby_username, &args.standby_password) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.clone(),
            password: Secret::new(p.clone()),
        })),
        (None, None) => Err(Error::new(
            ErrorKind::Usage,
            "--standby-registry needs --standby-username with --standby-password, or --standby-no-auth",
        )),
        _ => Err(Error::new(
            ErrorKind::Usage,
            "--standby-username and --standby-password go together",
        )),
    }
}

/// The registry address chosen, and its credentials.
type Chosen = (String, Option<Credentials>);

/// A client for the chosen registry (address, credentials), trusted as for the sync.
type Connect<'a> = dyn Fn(&str, Option<Credentials>) -> Result<Arc<Registry>> + 'a;

/// Which registry, why, and with which credentials (the order upgrade.sh follows).
async fn decide(args: &SyncArgs, kube: Option<&Kubeconfig>) -> Result<(Decision, Option<Chosen>)> {
    let flag_creds = match (&args.username, &args.password) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u.clone(),
            password: Secret::new(p.clone()),
        }),
        (None, None) => None,
        _ => {
            return Err(Error::new(
                ErrorKind::Usage,
                "--username and --password go together (or FERRY_PASSWORD for the password)",
            ))
        }
    };
    let product = match (kube, &args.registry, &flag_creds) {
        (Some(k), _, _) => Some(platform_registry::product_registry(&k.cluster).await?),
        _ => None,
    };
    let (address, why, skip) = if let Some(r) = &args.registry {
        (r.clone(), "from --registry".to_string(), false)
    } else {
        let k = kube.expect("loaded without --registry");
        let p = product.as_ref().expect("read with a cluster");
        if p.external {
            let decision = Decision {
                registry: p.address.clone(),
                why: "ProductBase base says spec.registry.external: the platform uses an \
                      external registry; image synchronization is skipped"
                    .into(),
                credentials: CredentialSource::None.to_string(),
                skip_sync: true,
            };
            return Ok((decision, None));
        }
        let vip = args.vip.clone().unwrap_or_else(|| k.server_host.clone());
        let address = platform_registry::rebuild_from_vip(&vip, p.address.as_deref());
        let why = format!(
            "built-in registry at the global VIP {} ({}), port from ProductBase base",
            vip,
            if args.vip.is_some() {
                "--vip".to_string()
            } else {
                format!("API server of {}", k.path.display())
            }
        );
        (address, why, false)
    };
    let (creds, source) = if let Some(c) = flag_creds {
        (Some(c), CredentialSource::Flags)
    } else if let Some(c) = product.as_ref().and_then(|p| p.credentials.clone()) {
        (Some(c), CredentialSource::ProductBase)
    } else if let Some(k) = kube {
        match platform_registry::registry_admin_secret(&k.cluster).await? {
            Some(c) => (Some(c), CredentialSource::Secret),
            None => (None, CredentialSource::None),
        }
    } else {
        (None, CredentialSource::None)
    };
    let decision = Decision {
        registry: Some(address.clone()),
        why,
        credentials: source.to_string(),
        skip_sync: skip,
    };
    Ok((decision, Some((address, creds))))
}

/// Applies the manifests, images pointed at `registry`. With `--skip-sync-image` it first
/// checks (HEAD) that every image they use is there, and refuses with the list otherwise.
async fn manifests(
    args: &SyncArgs,
    core: &CorePackage,
    kube: &Kubeconfig,
    registry: Option<&str>,
    dest: Option<&Chosen>,
    connect: &Connect<'_>,
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
    if args.skip_sync_image {
        if let Some(dest) = dest {
            let reg = connect(&dest.0, dest.1.clone())?;
            reg.check().await?;
            let mut missing = Vec::new();
            for r in &refs {
                let rest = r.split_once('/').map(|x| x.1).unwrap_or(r);
                let (repo, reference) = match rest.split_once('@') {
                    Some((repo, d)) => (repo, d),
                    None => rest.rsplit_once(':').unwrap_or((rest, "latest")),
                };
                if reg.manifest_digest(repo, reference).await?.is_none() {
                    missing.push(r.clone());
                }
            }
            if !missing.is_empty() {
                return Err(Error::new(
                    ErrorKind::Registry,
                    format!(
                        "--skip-sync-image: the manifests use images that are not in the registry: {}; \
                         sync them first (without --skip-sync-image)",
                        missing.join(", ")
                    ),
                ));
            }
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
