//! The DR standby registry's flags, one definition for `push` and `sync` (flattened into
//! both), and the one way they become the standby's [`Side`].

use std::path::PathBuf;

use clap::Args;

use super::destination::{CredentialFlags, Side, Trust};
use super::platform_flags::StdinSecret;
use crate::error::{Error, ErrorKind};
use crate::sink::RealmHost;

#[derive(Args, Debug, Clone, Default)]
pub struct StandbyRegistryFlags {
    /// DR: also send every image to the standby global cluster's registry, from the same
    /// read of each package (every blob is decompressed and verified once, sent to both).
    #[arg(long, env = "FERRY_STANDBY_REGISTRY")]
    pub standby_registry: Option<String>,
    /// User of the standby registry.
    #[arg(long, env = "FERRY_STANDBY_USERNAME")]
    pub standby_username: Option<String>,
    /// Password of the standby registry (prefer FERRY_STANDBY_PASSWORD: argv is visible).
    #[arg(long, env = "FERRY_STANDBY_PASSWORD", hide_env_values = true)]
    pub standby_password: Option<String>,
    /// Send no credentials to the standby registry.
    #[arg(long, conflicts_with_all = ["standby_username", "standby_password"])]
    pub standby_no_auth: bool,
    /// CA certificate (PEM) for the standby registry [default: --ca-file].
    #[arg(long)]
    pub standby_ca_file: Option<PathBuf>,
    /// Speak plain HTTP to the standby registry (--plain is for the primary only).
    #[arg(long)]
    pub standby_plain: bool,
    /// Do not verify the standby registry's TLS certificate (--insecure is for the primary only).
    #[arg(long)]
    pub standby_insecure: bool,
}

impl StandbyRegistryFlags {
    /// The standby as these flags give it (nothing looked up yet). `ca_file`: the primary's
    /// `--ca-file`, the default of `--standby-ca-file`.
    pub fn side<'a>(
        &'a self,
        stdin: &'a StdinSecret,
        ca_file: Option<&PathBuf>,
        token_realms: &[RealmHost],
    ) -> Side<'a> {
        Side::standby(
            self.standby_registry.as_ref(),
            CredentialFlags::standby(
                self.standby_no_auth,
                self.standby_username.as_ref(),
                self.standby_password.as_ref(),
                stdin,
            ),
            Trust {
                plain: self.standby_plain,
                insecure: self.standby_insecure,
                ca_file: self.standby_ca_file.clone().or_else(|| ca_file.cloned()),
                token_realms: token_realms.to_vec(),
            },
        )
    }

    /// Where the standby has no platform to find its registry on (sync), its other flags
    /// mean nothing without --standby-registry: refused rather than silently ignored.
    pub fn require_registry(&self) -> Result<(), Error> {
        let any = self.standby_username.is_some()
            || self.standby_password.is_some()
            || self.standby_no_auth
            || self.standby_ca_file.is_some()
            || self.standby_plain
            || self.standby_insecure;
        if any && self.standby_registry.is_none() {
            return Err(Error::new(
                ErrorKind::Usage,
                "the --standby-* registry flags need --standby-registry",
            ));
        }
        Ok(())
    }
}
