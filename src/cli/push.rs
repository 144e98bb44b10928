//! `ferry push`: every image of every package into the destination registry.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use super::destination::{CredentialFlags, RegistryFrom, Role, Side, Trust};
use super::platform_flags::{PlatformFlags, StandbyPlatformFlags, StdinSecret};
use super::standby_flags::StandbyRegistryFlags;
use super::transfer_flags::TransferFlags;
use super::Output;
use crate::error::{Error, ErrorKind};
use crate::pipeline::{Mode, Publisher, Run, Target};
use crate::platform::{Cluster, Platform};
use crate::report::estimate_line;
use crate::source;

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Package files (.tgz), package directories, or directories of packages.
    #[arg(required = true)]
    pub packages: Vec<PathBuf>,
    /// Destination registry, host[:port] (IPv6: [fd00::20]:11443). Images keep their path and
    /// tag. With --platform-address and no --dest-repo: the platform's own registry.
    #[arg(long = "dest-repo", env = "FERRY_DEST_REPO")]
    pub dest_repo: Option<String>,
    #[command(flatten)]
    pub platform: PlatformFlags,
    #[command(flatten)]
    pub transfer: TransferFlags,
    /// Clusters that get an operator's resources, comma-separated [default: global].
    /// Cluster plugins and charts always go to global.
    #[arg(long, value_delimiter = ',', requires = "platform_address", value_parser = super::cluster_name)]
    pub clusters: Vec<String>,
    /// CatalogSource operators are offered in: platform, system, or a custom one.
    #[arg(long, default_value = "platform")]
    pub target_catalog_source: String,
    /// Chart repository for Helm charts.
    #[arg(long, default_value = "public-charts")]
    pub target_chartrepo: String,
    /// Push images only; write no platform resources.
    #[arg(long, requires = "platform_address", conflicts_with = "skip_push")]
    pub skip_crs: bool,
    /// Write platform resources only, after checking the images are in the registry.
    #[arg(long, requires = "platform_address")]
    pub skip_push: bool,
    /// Registry user [with --platform-address: default from ProductBase base, else Secret
    /// cpaas-system/registry-admin; without: a docker/podman login for the registry].
    #[arg(long, env = "FERRY_USERNAME")]
    pub username: Option<String>,
    /// Prefer --password-stdin or FERRY_PASSWORD: argv is visible to other users.
    #[arg(long, env = "FERRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Read the registry password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Send no credentials, even if a login is stored.
    #[arg(long, conflicts_with_all = ["username", "password", "password_stdin"])]
    pub no_auth: bool,
    #[command(flatten)]
    pub standby: StandbyRegistryFlags,
    /// DR in one run: the standby global cluster's platform (`--standby-platform-address`
    /// and the twin of every platform flag). Its images go to --standby-registry, else to the
    /// registry its own ProductBase names; its resources are written there once its images
    /// are in. A failure on one side does not stop the other.
    #[command(flatten)]
    pub standby_platform: StandbyPlatformFlags,
    /// Verify every package (signature, checksum) before anything is uploaded.
    #[arg(long)]
    pub verify: bool,
    /// Trusted public keys for --verify [default: $FERRY_KEYRING, else /etc/ferry/trusted-keys.asc].
    #[arg(long, requires = "verify")]
    pub keyring: Option<PathBuf>,
    /// With --verify: every package needs a valid signature (a checksum is not enough).
    #[arg(long, requires = "verify")]
    pub require_signature: bool,
    /// With --verify: every package needs a valid signature or a matching checksum.
    #[arg(long, requires = "verify", conflicts_with = "require_signature")]
    pub require_verification: bool,
    /// Speak plain HTTP to the registry.
    #[arg(long)]
    pub plain: bool,
    /// Do not verify the registry's TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Trust this CA certificate (PEM) for the registry.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Packages pushed at the same time (a directory of many packages).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub packages_at_once: u16,
    /// Result format: text (for people) or json (on stdout, for scripts; logs stay on stderr).
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    /// Also upload foreign / non-distributable layers.
    #[arg(long)]
    pub allow_nondistributable_artifacts: bool,
    /// Blobs larger than this (MiB) are sent in chunks of this size, resumable.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub chunk_size_mb: u32,
}

pub fn parse_link_speed(s: &str) -> Result<u64, String> {
    let l = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = l.strip_suffix("gbit").or_else(|| l.strip_suffix('g')) {
        (n, 1e9)
    } else if let Some(n) = l.strip_suffix("mbit").or_else(|| l.strip_suffix('m')) {
        (n, 1e6)
    } else {
        (l.as_str(), 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a link speed like 1gbit or 100mbit"))?;
    if v <= 0.0 {
        return Err("link speed must be positive".into());
    }
    Ok((v * mult) as u64)
}

pub fn run(args: PushArgs) -> Result<i32, Error> {
    let started = Instant::now();
    let packages = source::find_packages(&args.packages)?;
    refuse_foreign_on_platform(&packages, &args)?;
    super::check_readable(&[
        ("--keyring", args.keyring.as_deref()),
        ("--ca-file", args.ca_file.as_deref()),
        ("--standby-ca-file", args.standby.standby_ca_file.as_deref()),
        (
            "--platform-ca-file",
            args.platform.platform_ca_file.as_deref(),
        ),
        (
            "--standby-platform-ca-file",
            args.standby_platform.platform_ca_file.as_deref(),
        ),
    ])?;
    if args.verify {
        super::verify::before_push(
            &packages,
            args.keyring.as_deref(),
            crate::verify::Requirement::from_flags(
                args.require_signature,
                args.require_verification,
            ),
        )?;
    }
    let retry = args.transfer.retry_policy();
    let timeout = args.transfer.timeout();
    if args.dest_repo.is_none() && args.platform.platform_address.is_none() {
        return Err(Error::new(
            ErrorKind::Usage,
            "where to? give --platform-address (push to the platform: its registry, then its \
             Marketplace) or --dest-repo (any registry, images only)",
        ));
    }
    let stdin = StdinSecret::claimed_by(&[
        ("--password-stdin", args.password_stdin),
        (
            "--platform-password-stdin",
            args.platform.platform_password_stdin,
        ),
        (
            "--standby-platform-password-stdin",
            args.standby_platform.platform_password_stdin,
        ),
    ])?;
    let primary_platform = args.platform.options(timeout, &stdin)?;
    let standby_platform = args.standby_platform.options(timeout, &stdin)?;
    let rt = super::runtime()?;
    let platform = match primary_platform {
        Some(opts) => {
            let p = rt.block_on(Platform::connect_checked(opts))?;
            // a mistyped cluster is found now, not after hours of upload
            rt.block_on(p.check_clusters(&args.clusters))?;
            Some(Arc::new(p))
        }
        None => None,
    };
    let primary = Side {
        role: Role::Primary,
        dest_repo: args.dest_repo.as_ref(),
        creds: CredentialFlags {
            no_auth: args.no_auth,
            username: args.username.as_ref(),
            password: args.password.as_ref(),
            password_stdin: args.password_stdin,
            stdin: &stdin,
            prefix: "",
        },
        trust: Trust {
            plain: args.plain,
            insecure: args.insecure,
            ca_file: args.ca_file.clone(),
            token_realms: args.transfer.allow_token_realm.clone(),
        },
        dest_flag: "--dest-repo",
        global: global_of(platform.as_deref())?,
        from: registry_from(platform.as_deref()),
        publisher: platform,
    };
    let mut dests = vec![rt.block_on(primary.resolve())?];
    // The standby side: whatever fails there (its platform unreachable, its login or token
    // refused, its ProductBase unreadable) leaves it out of this run, reported and in the
    // exit code; the primary still gets everything. A re-run completes the standby (what the
    // primary already holds is skipped there).
    let mut left_out = None;
    if args.standby.standby_registry.is_some() || standby_platform.is_some() {
        let standby = |platform: Option<Arc<Platform>>| -> Result<Side, Error> {
            let flags = args.standby.side(
                &stdin,
                args.ca_file.as_ref(),
                &args.transfer.allow_token_realm,
            );
            Ok(Side {
                global: global_of(platform.as_deref()).map_err(|e| e.context("DR standby"))?,
                from: registry_from(platform.as_deref()),
                publisher: platform,
                ..flags
            })
        };
        // The standby's preparation has one deadline in all (--timeout), so that a standby
        // that trickles its answers cannot hold the primary back indefinitely.
        let resolved = rt.block_on(async {
            let prepare = async {
                let platform = match standby_platform {
                    Some(opts) => Some(Arc::new(
                        Platform::connect_checked(opts)
                            .await
                            .map_err(|e| e.context("DR standby platform"))?,
                    )),
                    None => None,
                };
                let d = standby(platform)?.resolve().await?;
                d.registry(&retry, timeout)?;
                Ok::<_, Error>(d)
            };
            tokio::time::timeout(timeout, prepare)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorKind::Unreachable,
                        format!(
                            "DR standby: its platform and registry were not ready within \
                             --timeout ({} s)",
                            timeout.as_secs()
                        ),
                    ))
                })
        });
        match resolved {
            Ok(d) => dests.push(d),
            Err(e) => {
                let e = e.context("DR standby left out of this run");
                eprintln!("error: {}", e.message);
                // its registry, when given by flag, still gets the images; its resources wait
                // for a re-run with the platform back
                if args.standby.standby_registry.is_some() && e.kind != ErrorKind::Usage {
                    let registry_only = standby(None)
                        .and_then(|s| rt.block_on(s.resolve()))
                        .and_then(|d| d.registry(&retry, timeout).map(|_| d));
                    if let Ok(d) = registry_only {
                        eprintln!(
                            "DR standby: images still go to {} (resources on a re-run)",
                            d.label()
                        );
                        dests.push(d);
                    }
                }
                if e.kind == ErrorKind::Usage {
                    return Err(e);
                }
                left_out = Some(e);
            }
        }
    }
    if dests.len() > 1 || dests.iter().any(|d| d.platform.is_some()) {
        for d in &dests {
            eprintln!("{}", d.describe());
        }
    }
    // Each side's resources are written once its own images are in.
    let targets = dests
        .iter()
        .map(|d| {
            Ok(Target {
                role: d.role,
                registry: d.registry(&retry, timeout)?,
                publisher: match (&d.platform, args.skip_crs) {
                    (Some(p), false) => Some(Publisher {
                        platform: p.clone(),
                        registry_host: d.host.clone(),
                        registry_prefix: d.prefix.clone(),
                        clusters: (!args.clusters.is_empty()).then(|| args.clusters.clone()),
                        catalog_source: args.target_catalog_source.clone(),
                    }),
                    _ => None,
                },
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let opts = args.transfer.engine_options(
        (args.chunk_size_mb as usize) << 20,
        args.allow_nondistributable_artifacts,
    );
    let run = Run {
        packages: &packages,
        targets: &targets,
        engine: opts,
        chart_repo: Some(&args.target_chartrepo),
        mode: Mode::from_flags(args.transfer.dry_run, args.skip_push),
        quiet: args.transfer.quiet || args.output == Output::Json,
        packages_at_once: args.packages_at_once as usize,
        left_out,
    };
    let mut report = rt.block_on(run.execute(started));
    // Nothing of the run is left to wait for, except, after a refused registry check, the
    // package reader the push had started meanwhile (left waiting for decisions that will
    // not come): the exit does not wait for it.
    rt.shutdown_background();
    if args.transfer.dry_run {
        report.estimate = Some(estimate_line(
            report.totals.blobs.bytes,
            report.totals.blobs.uploaded,
            args.transfer.link_speed,
        ));
    }
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report is plain data")
        ),
        Output::Text => {
            // the result on stdout, what went wrong on stderr
            print!("{}", report.render_text());
            if let Some(e) = &report.error {
                eprintln!("error: {}", e.message);
            }
        }
    }
    Ok(report.exit_code)
}

/// A Docker or OCI archive has no package.yaml: nothing to make the platform's Artifact
/// from. Its images go to a registry only.
fn refuse_foreign_on_platform(packages: &[source::Package], args: &PushArgs) -> Result<(), Error> {
    let platform = args.platform.platform_address.is_some()
        || args.standby_platform.platform_address.is_some();
    match packages.iter().find(|p| p.foreign_format().is_some()) {
        Some(p) if platform => Err(Error::new(
            ErrorKind::Usage,
            format!(
                "{} is a {} (no package.yaml): its images can go to a registry only, and it \
                 has nothing to make a platform resource from; push it with --dest-repo and \
                 without --platform-address / --standby-platform-address",
                p.label(),
                p.foreign_format().expect("found above").as_str()
            ),
        )),
        _ => Ok(()),
    }
}

/// Cluster `global` of the platform, where its registry and credentials are read.
fn global_of(platform: Option<&Platform>) -> Result<Option<Cluster>, Error> {
    platform.map(|p| p.cluster("global")).transpose()
}

/// Without a platform, only `--dest-repo` (`--standby-registry`) names the registry.
fn registry_from(platform: Option<&Platform>) -> RegistryFrom {
    match platform {
        Some(p) => RegistryFrom::ProductBase { platform: p.host() },
        None => RegistryFrom::Flag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_speeds() {
        assert_eq!(parse_link_speed("1gbit").unwrap(), 1_000_000_000);
        assert_eq!(parse_link_speed("100mbit").unwrap(), 100_000_000);
        assert_eq!(parse_link_speed("2.5g").unwrap(), 2_500_000_000);
        assert!(parse_link_speed("fast").is_err());
    }
}
