//! How a transfer runs, for every command that moves images (`push`, `sync`).

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct TransferFlags {
    /// Blobs in flight at once (per package).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Print the plan (what would be sent, how long it would take) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Link speed for the dry-run estimate, e.g. 1gbit, 100mbit, 10gbit.
    #[arg(long, default_value = "1gbit", value_parser = super::push::parse_link_speed)]
    pub link_speed: u64,
    /// Where open upload sessions are remembered for resume [default: $XDG_STATE_HOME/ferry].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Seconds to wait for the registry to answer before the request counts as failed.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Base of the retry backoff in milliseconds (tests shorten it).
    #[arg(long, default_value_t = 500, hide = true)]
    pub retry_base_ms: u64,
}
