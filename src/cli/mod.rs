//! The command line. Flags keep the spelling of `violet push` and `upgrade.sh` where those
//! tools have them (`--dest-repo`, `--username`, `--password`, `--no-auth`, `--plain`, ...).

mod destination;
mod gc;
mod list;
mod package;
mod platform_flags;
mod push;
mod show;
mod standby_flags;
mod sync;
mod transfer_flags;
mod upgrade;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::{Error, ErrorKind};

#[derive(Parser, Debug)]
#[command(
    name = "ferry",
    version,
    about = "Carry offline packages (images) into air-gapped registries"
)]
pub struct Cli {
    /// Debug logging (secrets are never logged).
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

const PUSH_EXAMPLES: &str = "Examples:
  # every package of a directory to the platform (registry and credentials found on the platform)
  ferry push ./packages --platform-address https://example.com --platform-username admin --platform-password-stdin
  # an operator to workload clusters, with an API token
  ferry push opensearch-operator.v3.14.2.tgz --platform-address https://example.com --platform-token \"$TOKEN\" --clusters region1,region2
  # DR: the standby global cluster, its own platform address and registry VIP
  ferry push ./packages --platform-address https://standby.example.com --platform-token \"$TOKEN\" --dest-repo 192.168.2.10:11443 --username admin --password-stdin
  # images only, into any registry (no platform)
  ferry push ./packages --dest-repo harbor.example.com/mirror --username robot --password-stdin";

const SYNC_EXAMPLES: &str = "Examples (inside the extracted core package; `bash upgrade.sh ...` takes the same flags):
  ferry sync --only-sync-image=true
  ferry sync --only-sync-image=true --registry 10.0.0.5:11443 --username admin --password \"$PW\"
  ferry sync --only-sync-image --standby-registry 192.168.2.10:11443 --standby-username admin --standby-password \"$PW2\"
  ferry sync --skip-sync-image
  ferry sync --preflight";

const LIST_EXAMPLES: &str = "Examples:
  ferry list --platform-address https://example.com --platform-token \"$TOKEN\"
  ferry list --platform-address https://example.com --platform-token \"$TOKEN\" --clusters global,region1 --output-file ./apps.yaml --output table";

const GC_EXAMPLES: &str = "Examples:
  ferry gc --platform-address https://example.com --platform-token \"$TOKEN\" --dry-run
  ferry gc --platform-address https://example.com --platform-token \"$TOKEN\" --clusters region1 --yes";

const UPGRADE_EXAMPLES: &str = "Examples:
  ferry upgrade status --platform-address https://example.com --platform-token \"$TOKEN\"
  ferry upgrade --to-latest --wait --platform-address https://example.com --platform-token \"$TOKEN\"
  ferry upgrade --to v4.2.0 --clusters region1,region2 --wait --yes --platform-address https://example.com --platform-token \"$TOKEN\"
  # DR: the standby's global first, then the primary's
  ferry upgrade --to v4.2.0 --wait --platform-address https://example.com --platform-token \"$TOKEN\" --standby-platform-address https://standby.example.com --standby-platform-token \"$TOKEN2\"
Exit codes: 0 all Ready (without --wait: requested), 8 a gate refused, 9 Degraded, Stalled or --timeout passed.";

const VERIFY_EXAMPLES: &str = "Examples:
  ferry verify ./packages --keyring /etc/ferry/trusted-keys.asc
  ferry verify topolvm-operator.v2.3.0.tgz --require-signature";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a package .tgz (canonical order) and its .sha256 from an OCI layout.
    Pack {
        /// OCI image layout directory (oci-layout, index.json, blobs/).
        #[arg(long)]
        from: PathBuf,
        /// package.yaml to embed.
        #[arg(long)]
        metadata: PathBuf,
        /// Directory whose *.tgz charts go under charts/.
        #[arg(long)]
        charts: Option<PathBuf>,
        /// Output file.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// gzip level 0-9 (0: stored; right for already-compressed layers).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=9))]
        compression_level: u32,
    },
    /// Show what a package is: name, type, arch, version (and with --all its images).
    #[command(
        after_help = "Examples:\n  ferry show topolvm-operator.v2.3.0.tgz\n  ferry show topolvm-operator.v2.3.0.tgz --all --output json"
    )]
    Show {
        /// The package (.tgz) or package directory.
        package: PathBuf,
        /// Also the main artifact and every image reference.
        #[arg(long)]
        all: bool,
        /// Result format: text (for people) or json (on stdout, for scripts; logs stay on stderr).
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Check packages' signatures (.sig) and checksums (.sha256).
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify {
        /// Package files, or directories of packages.
        #[arg(required = true)]
        packages: Vec<PathBuf>,
        /// Trusted public keys [default: $FERRY_KEYRING, else /etc/ferry/trusted-keys.asc].
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// Every package needs a valid signature by a trusted key (a checksum is not enough).
        #[arg(long)]
        require_signature: bool,
        /// Every package needs a valid signature or a matching checksum.
        #[arg(long, conflicts_with = "require_signature")]
        require_verification: bool,
        /// Result format: text (for people) or json (on stdout, for scripts; logs stay on stderr).
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Push every image of the given packages to a registry (and, with a platform, make them
    /// show up in the Marketplace).
    #[command(after_help = PUSH_EXAMPLES)]
    Push(Box<push::PushArgs>),
    /// Sync the core package's images (and plugins/*.tgz) to the global cluster's registry,
    /// then apply its manifests: `upgrade.sh --only-sync-image` and friends.
    #[command(after_help = SYNC_EXAMPLES)]
    Sync(Box<sync::SyncArgs>),
    /// List every uploaded extension and where it is installed (violet list's apps.yaml).
    #[command(after_help = LIST_EXAMPLES)]
    List(Box<list::ListArgs>),
    /// Delete what old uploads left behind: uninstalled operators' Artifacts, old
    /// ArtifactVersions, uninstalled cluster plugins (dry run, confirmation, backup).
    #[command(after_help = GC_EXAMPLES)]
    Gc(Box<gc::GcArgs>),
    /// Request, gate and follow the cluster upgrade (ClusterVersionShadow desiredUpdate): the
    /// DR standby's global first, then global, then the workload clusters at once.
    #[command(after_help = UPGRADE_EXAMPLES)]
    Upgrade(Box<upgrade::UpgradeArgs>),
    /// Make packages straight from a registry: `create` resolves an artifact and its images
    /// into a lock, `build` streams them into the .tgz.
    #[command(subcommand)]
    Package(package::PackageCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to write the script for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of ferry.
    #[command(hide = true)]
    Man,
    /// Developer helpers (fixtures, benchmark corpus).
    #[command(hide = true)]
    Dev {
        #[command(subcommand)]
        what: DevCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Write the fixture packages' layouts and package.yaml files.
    Fixtures { out: PathBuf },
    /// Write a small core package directory (images, plugins, manifests, checksums).
    Core {
        out: PathBuf,
        #[arg(long, default_value = "v4.2.0")]
        version: String,
        /// Plugin packages to put under plugins/.
        #[arg(long)]
        plugin: Vec<PathBuf>,
    },
    /// Write the latency corpus: many small blobs, a few large (layout + package.yaml).
    SmallBlobs {
        out: PathBuf,
        #[arg(long, default_value_t = 2000)]
        blobs: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Write the field-scale corpus: many images of ~4 blobs each (layout + package.yaml).
    Scale {
        out: PathBuf,
        #[arg(long, default_value_t = 1000)]
        images: usize,
        /// Mean size of an image's own layers, in kB.
        #[arg(long, default_value_t = 1)]
        mean_kb: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Write the benchmark corpus (layout + package.yaml).
    Corpus {
        out: PathBuf,
        #[arg(long, default_value_t = 24)]
        images: usize,
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn init_logging(debug: bool) {
    // Dependencies log errors only, unless --debug: a warning of theirs is rarely the
    // operator's business, and some carry answers (see below).
    let filter = if debug {
        "ferry=debug,reqwest=info,hyper=info,warn"
    } else {
        "ferry=info,error"
    };
    let filter = std::env::var("FERRY_LOG").unwrap_or_else(|_| filter.to_string());
    // Whatever the filter says (--debug, FERRY_LOG, even a directive for a narrower target
    // such as `kube_client::client=warn`), these targets are capped by a filter of their
    // own in front of it, so that no answer body, token or Secret data can reach the log:
    // kube-client logs whole answers at warn when they do not parse (a Secret's or a
    // ProductBase's credentials among them) and error answers at debug; oci-client logged
    // token answers at debug.
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let caps = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::TRACE)
        .with_target("kube", tracing::Level::ERROR)
        .with_target("kube_client", tracing::Level::ERROR)
        .with_target("kube_core", tracing::Level::ERROR)
        .with_target("oci_client", tracing::Level::INFO);
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(tracing_subscriber::EnvFilter::new(filter));
    tracing_subscriber::registry()
        .with(caps)
        .with(output)
        .init();
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = if invoked_as_violet() {
        // `ln -s ferry violet`: the same commands and flags, violet's name in help and usage
        let matches = <Cli as clap::CommandFactory>::command()
            .name("violet")
            .bin_name("violet")
            .get_matches();
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    } else {
        Cli::parse()
    };
    init_logging(cli.debug);
    let result = match cli.command {
        Command::Pack {
            from,
            metadata,
            charts,
            output,
            compression_level,
        } => match crate::source::pack::pack(
            &from,
            &metadata,
            charts.as_deref(),
            &output,
            compression_level,
        ) {
            Ok(s) => {
                println!(
                    "wrote {} ({} images, {} blobs, {}), sha256 {}",
                    s.output.display(),
                    s.images,
                    s.blobs,
                    crate::report::human_bytes(s.bytes),
                    s.sha256
                );
                Ok(0)
            }
            Err(e) => Err(e),
        },
        Command::Show {
            package,
            all,
            output,
        } => show::run(&package, all, output, invoked_as_violet()),
        Command::Verify {
            packages,
            keyring,
            require_signature,
            require_verification,
            output,
        } => verify::run(
            &packages,
            keyring.as_deref(),
            crate::verify::Requirement::from_flags(require_signature, require_verification),
            output,
        ),
        Command::Push(args) => push::run(*args),
        Command::Sync(args) => sync::run(*args),
        Command::List(args) => list::run(*args),
        Command::Gc(args) => gc::run(*args),
        Command::Upgrade(args) => upgrade::run(*args),
        Command::Package(cmd) => package::run(cmd),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ferry", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map(|_| 0)
                .map_err(|e| Error::internal(format!("man page: {e}")))
        }
        Command::Dev { what } => dev(what),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            e.kind.exit_code()
        }
    }
}

fn dev(what: DevCommand) -> Result<i32, Error> {
    match what {
        DevCommand::Fixtures { out } => {
            for n in crate::devtools::fixtures(&out)? {
                println!("{n}");
            }
        }
        DevCommand::Core {
            out,
            version,
            plugin,
        } => crate::devtools::core_package(&out, &version, &plugin)?,
        DevCommand::Corpus {
            out,
            images,
            scale,
            seed,
        } => {
            let bytes = crate::devtools::corpus(&out, images, scale, seed)?;
            println!("{}", bytes);
        }
        DevCommand::Scale {
            out,
            images,
            mean_kb,
            seed,
        } => {
            let bytes = crate::devtools::scale_corpus(&out, images, mean_kb, seed)?;
            println!("{}", bytes);
        }
        DevCommand::SmallBlobs { out, blobs, seed } => {
            let bytes = crate::devtools::small_blob_corpus(&out, blobs, seed)?;
            println!("{}", bytes);
        }
    }
    Ok(0)
}

/// Whether the binary was started under the name `violet` (a symlink or a copy), in which
/// case it prints violet's formats where they differ from ferry's (`show`).
pub fn invoked_as_violet() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| n == "violet" || n == "violet.exe")
}

/// A tokio runtime for commands that talk to the network.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot start the runtime: {e}"),
            )
        })
}

/// A cluster name as given in `--clusters a, b` / `--cluster a`: spaces around it dropped
/// (a runbook's `"region1, region2"` is two names, not ` region2`), empty entries refused.
pub(crate) fn cluster_name(s: &str) -> Result<String, String> {
    let name = s.trim();
    if name.is_empty() {
        return Err("an empty cluster name (check the commas in the list)".into());
    }
    if name.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!("{name:?} is not a cluster name"));
    }
    Ok(name.to_string())
}

/// Every file argument checked before the first network call: a typo in `--ca-file` found
/// after the login, the discovery and a survey of the registry wastes the operator's
/// window. `files`: (flag, path) for the flags that were given.
pub(crate) fn check_readable(files: &[(&str, Option<&std::path::Path>)]) -> Result<(), Error> {
    for (flag, path) in files {
        let Some(path) = path else { continue };
        if let Err(e) = std::fs::File::open(path).and_then(|f| {
            if f.metadata()?.is_dir() {
                Err(std::io::Error::other("it is a directory"))
            } else {
                Ok(())
            }
        }) {
            return Err(Error::new(
                ErrorKind::Usage,
                format!("{flag} {}: cannot read: {e}", path.display()),
            ));
        }
    }
    Ok(())
}

/// Asks `question` on the terminal before a plan of `plan_len` changes is carried out, unless
/// `yes` (`--yes`). Without a terminal to ask on it refuses: a script that forgot `--yes`
/// must not change anything, nor hang on a read.
pub(crate) fn confirm(plan_len: usize, yes: bool, question: &str) -> Result<(), Error> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::new(
            ErrorKind::Usage,
            format!(
                "refusing to make {plan_len} changes without confirmation: no terminal to ask \
                 on. Check the plan with --dry-run, then re-run with --yes"
            ),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::internal(format!("reading the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Usage,
            "not confirmed: nothing was changed",
        ))
    }
}

#[cfg(test)]
mod tests {
    /// Every flag of every command says what it does in `--help` (the help is the manual on
    /// a node without internet).
    #[test]
    fn every_flag_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} --{}", a.get_long().unwrap_or(id)));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(
            &<super::Cli as clap::CommandFactory>::command(),
            "ferry",
            &mut missing,
        );
        assert!(missing.is_empty(), "flags without help: {missing:#?}");
    }

    #[test]
    fn cluster_names_are_trimmed_and_empty_ones_refused() {
        assert_eq!(super::cluster_name(" region2 ").unwrap(), "region2");
        assert!(super::cluster_name(" ").is_err());
        assert!(super::cluster_name("a b").is_err());
    }
}
