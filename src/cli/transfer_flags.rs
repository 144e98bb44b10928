//! How a transfer runs, for every command that moves images (`push`, `sync`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::engine::{EngineOptions, StateStore};
use crate::sink::{RealmHost, RetryPolicy};

#[derive(Args, Debug, Clone)]
pub struct TransferFlags {
    /// Large blobs in flight at once (per package); small blobs and small requests go up to
    /// 32 times as many, within the same memory (see the README, "Bounds").
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Print the plan (what would be sent, how long it would take) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Link speed for the dry-run estimate, e.g. 1gbit, 100mbit, 10gbit.
    #[arg(long, default_value = "1gbit", value_parser = super::push::parse_link_speed)]
    pub link_speed: u64,
    /// Where open upload sessions are remembered for resume [default: $XDG_STATE_HOME/ferry,
    /// else ~/.local/state/ferry].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Idle seconds: a request that gets no byte and no answer for this long fails (never a
    /// deadline for a whole transfer: a slow link that keeps moving does not time out).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// A host other than the registry's whose token service (the realm of the registry's
    /// bearer challenge) may receive the registry's credentials. Repeatable or
    /// comma-separated; host name or IP, no port. Applies to the standby registry too.
    #[arg(
        long = "allow-token-realm",
        value_name = "HOST",
        value_delimiter = ',',
        value_parser = crate::sink::auth::parse_realm_host
    )]
    pub allow_token_realm: Vec<RealmHost>,
    /// Base of the retry backoff in milliseconds (tests shorten it).
    #[arg(long, default_value_t = 500, hide = true)]
    pub retry_base_ms: u64,
}

impl TransferFlags {
    /// The engine's options; the chunk size and foreign-layer policy are the command's.
    pub fn engine_options(&self, chunk_size: usize, allow_nondistributable: bool) -> EngineOptions {
        EngineOptions {
            concurrency: self.concurrency as usize,
            chunk_size,
            allow_nondistributable,
            dry_run: self.dry_run,
            state_dir: self.state_dir.clone().or_else(StateStore::default_dir),
            passes: 3,
            stall: self.timeout(),
            stop: Default::default(),
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(self.retry_base_ms),
            ..Default::default()
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}
