//! `ferry sync`'s flags, spelled as upgrade.sh spells them.

use std::path::PathBuf;

use clap::Args;

use super::super::standby_flags::StandbyRegistryFlags;
use super::super::transfer_flags::TransferFlags;
use super::super::Output;

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
    /// Registry user [default: a docker/podman login for --registry, else from ProductBase
    /// base, else Secret cpaas-system/registry-admin].
    #[arg(long)]
    pub username: Option<String>,
    /// Prefer --password-stdin or FERRY_PASSWORD: argv is visible to other users.
    #[arg(long, env = "FERRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Read the registry password from the first line of standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Do not verify checksums.sha256 before uploading images or applying manifests.
    #[arg(long)]
    pub skip_check_artifacts: bool,
    /// Print the upgrade checks (ClusterVersionShadow) and exit; changes nothing.
    #[arg(long)]
    pub preflight: bool,
    /// Cluster name (the ClusterVersionShadow to read).
    #[arg(long, default_value = "global", value_parser = super::super::cluster_name)]
    pub cluster: String,
    /// [default: $KUBECONFIG, ~/.kube/config, /etc/kubernetes/admin.conf]
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The global VIP, to reach the built-in registry [default: the kubeconfig's API host].
    #[arg(long)]
    pub vip: Option<String>,
    #[command(flatten)]
    pub standby: StandbyRegistryFlags,
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
