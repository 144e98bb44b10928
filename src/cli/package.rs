//! `ferry package create` / `ferry package build` (see `crate::package`).

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::platform_flags::StdinSecret;
use super::Output;
use crate::error::{Error, ErrorKind};
use crate::package::build::{BuildOptions, BuildReport};
use crate::package::resolve::CreateOptions;
use crate::package::{Access, Connections, Platform};
use crate::report::human_bytes;
use crate::sink::{Credentials, Secret};
use crate::source::PackageKind;

const EXAMPLES: &str = "Examples:
  ferry package create logcenter --artifact registry.example.com/acp/chart-logcenter:v4.2.1 --platforms linux/amd64,linux/arm64
  ferry package build logcenter -o ./out --sign-key ./release-key.asc
  ferry package build logcenter --dry-run";

#[derive(Subcommand, Debug)]
pub enum PackageCommand {
    /// Resolve an artifact (plugin chart, operator bundle, chart) and its images to digests:
    /// writes <name>/package.yaml and <name>/images.lock.
    #[command(after_help = EXAMPLES)]
    Create(Box<CreateArgs>),
    /// Write <name>.<arch>.v<version>.tgz (and .sha256) exactly from <name>/images.lock,
    /// streaming every blob from the registry into the archive.
    #[command(after_help = EXAMPLES)]
    Build(Box<BuildArgs>),
}

/// How to reach the source registries.
#[derive(Args, Debug, Clone)]
pub struct SourceFlags {
    /// Speak plain HTTP to the source registries.
    #[arg(long)]
    pub plain: bool,
    /// Skip TLS certificate verification.
    #[arg(long)]
    pub insecure: bool,
    /// CA certificate (PEM) to trust for the source registries.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// User for the artifact's registry [default: the login in ~/.docker/config.json].
    #[arg(long)]
    pub username: Option<String>,
    /// Password for --username (visible to `ps`: prefer --password-stdin).
    #[arg(long, requires = "username", conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password for --username from the first line of standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Result format: text, or json on stdout for scripts.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Directory to write (package.yaml, images.lock); created if missing.
    pub name: PathBuf,
    /// The artifact: a Helm chart stored as an OCI artifact (a plugin when module-plugin.yaml
    /// is at its root), or an OLM bundle image: host[:port]/path:tag.
    #[arg(long)]
    pub artifact: String,
    /// Package type [default: found from the artifact].
    #[arg(long = "type", value_parser = ["plugin", "bundle", "chart"])]
    pub kind: Option<String>,
    /// Platforms to take from multi-arch images, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "linux/amd64")]
    pub platforms: Vec<String>,
    /// One more image to carry (repeatable).
    #[arg(long = "image")]
    pub images: Vec<String>,
    /// A file of more images, one reference per line (# comments).
    #[arg(long = "images")]
    pub images_file: Option<PathBuf>,
    /// module-plugin.yaml to use instead of the chart's own.
    #[arg(long)]
    pub module_plugin: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceFlags,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The directory `ferry package create` wrote.
    pub name: PathBuf,
    /// Directory for the .tgz (and .sha256, .sig).
    #[arg(short = 'o', long = "output-dir", default_value = ".")]
    pub out_dir: PathBuf,
    /// Blobs fetched at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Memory for blobs fetched ahead of the writer, in MiB; beyond it they wait in a
    /// temporary file beside the output.
    #[arg(long, default_value_t = 256)]
    pub memory_mib: usize,
    /// gzip level 0-9 (0: stored; right for already-compressed layers).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compression_level: u32,
    /// OpenPGP secret key: writes <file>.tgz.sig (passphrase from $FERRY_SIGN_PASSPHRASE).
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
    /// Content-addressed cache of downloaded blobs [default: <state dir>/package-cache].
    #[arg(long, conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Keep no cache (an interrupted build downloads everything again).
    #[arg(long)]
    pub no_cache: bool,
    /// Print the plan (images, bytes per platform) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub source: SourceFlags,
}

pub fn run(cmd: PackageCommand) -> Result<i32, Error> {
    match cmd {
        PackageCommand::Create(a) => create(*a),
        PackageCommand::Build(a) => build(*a),
    }
}

fn usage(m: String) -> Error {
    Error::new(ErrorKind::Usage, m)
}

fn access(flags: &SourceFlags, credentials_host: String) -> Result<Access, Error> {
    super::check_readable(&[("--ca-file", flags.ca_file.as_deref())])?;
    let stdin = StdinSecret::claimed_by(&[("--password-stdin", flags.password_stdin)])?;
    let credentials = match (&flags.username, &flags.password) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u.clone(),
            password: Secret::new(p.clone()),
        }),
        (Some(u), None) if flags.password_stdin => Some(Credentials {
            username: u.clone(),
            password: Secret::new(stdin.read("--password-stdin")?),
        }),
        (Some(_), None) => {
            return Err(usage(
                "--username needs --password or --password-stdin".into(),
            ))
        }
        _ => None,
    };
    Ok(Access {
        plain: flags.plain,
        insecure: flags.insecure,
        ca_file: flags.ca_file.clone(),
        credentials,
        credentials_host,
    })
}

fn create(a: CreateArgs) -> Result<i32, Error> {
    let platforms = a
        .platforms
        .iter()
        .map(|p| Platform::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut images = a.images.clone();
    if let Some(f) = &a.images_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| usage(format!("--images {}: {e}", f.display())))?;
        images.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    let host = a.artifact.split('/').next().unwrap_or("").to_string();
    let access = access(&a.source, host)?;
    let opts = CreateOptions {
        dir: a.name.clone(),
        artifact: a.artifact.clone(),
        kind: a
            .kind
            .map(|k| PackageKind::try_from(k).map_err(usage))
            .transpose()?,
        platforms,
        images,
        module_plugin: a.module_plugin.clone(),
    };
    let conns = Connections::new(access);
    let created = super::runtime()?.block_on(crate::package::resolve::create(&opts, &conns))?;
    for w in &created.warnings {
        tracing::warn!("{w}");
    }
    if a.source.output == Output::Json {
        let v = serde_json::json!({
            "dir": a.name.display().to_string(),
            "package": created.meta,
            "lock": created.lock,
            "warnings": created.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        let m = &created.meta;
        println!(
            "{} {} ({}, {}): {} images locked in {}",
            m.metadata.name,
            m.metadata.version,
            m.spec.kind,
            m.metadata.arch.join(", "),
            created.lock.images.len(),
            a.name.join(crate::package::lock::LOCK_FILE).display()
        );
        for i in &created.lock.images {
            let rewritten = if i.index_rewritten {
                " (index rewritten: platforms dropped)"
            } else {
                ""
            };
            let note = i
                .note
                .as_deref()
                .map(|n| format!(" — {n}"))
                .unwrap_or_default();
            println!("  {} @ {}{rewritten}{note}", i.reference, i.digest.short());
        }
    }
    Ok(0)
}

fn build(a: BuildArgs) -> Result<i32, Error> {
    let key = match &a.sign_key {
        Some(p) => Some(crate::package::sign::load_key(p)?),
        None => None,
    };
    let lock = crate::package::lock::Lock::read(&a.name)?;
    let host = lock
        .artifact
        .reference
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let access = access(&a.source, host)?;
    let cache = if a.no_cache {
        None
    } else {
        a.cache
            .clone()
            .or_else(|| crate::engine::StateStore::default_dir().map(|d| d.join("package-cache")))
    };
    let opts = BuildOptions {
        dir: a.name.clone(),
        out_dir: a.out_dir.clone(),
        concurrency: a.concurrency as usize,
        level: a.compression_level,
        cache,
        budget: a.memory_mib.saturating_mul(1 << 20),
        dry_run: a.dry_run,
    };
    let conns = Arc::new(Connections::new(access));
    let rt = super::runtime()?;
    let mut report = rt.block_on(async {
        tokio::select! {
            r = crate::package::build::build(&opts, conns) => r,
            _ = tokio::signal::ctrl_c() => Err(Error::new(
                ErrorKind::Interrupted,
                "interrupted: no package written (blobs already downloaded are in the cache; run again to go on)",
            )),
        }
    })?;
    if let (Some(key), false) = (&key, a.dry_run) {
        let (sig, signer) = crate::package::sign::sign(std::path::Path::new(&report.output), key)?;
        report.signature = Some(format!("{} (key {signer})", sig.display()));
    }
    if a.source.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        print!("{}", render(&report));
    }
    Ok(0)
}

fn render(r: &BuildReport) -> String {
    let mut s = String::new();
    let verb = if r.dry_run { "would write" } else { "wrote" };
    s.push_str(&format!("{} {}: {verb} {}\n", r.name, r.version, r.output));
    for i in &r.images {
        s.push_str(&format!("  {} ({})\n", i.reference, i.from));
        for (p, b) in &i.platforms {
            s.push_str(&format!("    {p}: {}\n", human_bytes(*b)));
        }
        if let Some(from) = &i.rewritten_from {
            s.push_str(&format!(
                "    index rewritten with the asked platforms: {} (was {})\n",
                i.digest.short(),
                from.short()
            ));
        }
        if let Some(n) = &i.note {
            s.push_str(&format!("    note: {n}\n"));
        }
        for f in &i.foreign_layers {
            s.push_str(&format!("    foreign layer left out: {f}\n"));
        }
    }
    if let Some(c) = &r.chart {
        s.push_str(&format!("  chart {c}\n"));
    }
    s.push_str(&format!(
        "  {} layers, {}",
        r.layers,
        human_bytes(r.layer_bytes)
    ));
    if !r.dry_run {
        s.push_str(&format!(
            "; downloaded {}, from cache {}, waited on disk {}",
            human_bytes(r.downloaded_bytes),
            human_bytes(r.cached_bytes),
            human_bytes(r.spilled_bytes)
        ));
    }
    s.push('\n');
    if let Some(h) = &r.sha256 {
        s.push_str(&format!("  sha256 {h}\n"));
    }
    if let Some(sig) = &r.signature {
        s.push_str(&format!("  signature {sig}\n"));
    }
    s
}
