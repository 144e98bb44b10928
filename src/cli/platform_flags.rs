//! The platform connection flags, spelled as violet spells them; shared by every command that
//! talks to the platform.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::error::{Error, ErrorKind, Result};
use crate::platform::{PasswordLogin, PlatformAuth, PlatformOptions};
use crate::sink::Secret;

#[derive(Args, Debug, Clone, Default)]
pub struct PlatformFlags {
    /// The platform's access URL, e.g. https://example.com (IPv6: https://[fd00::10]).
    #[arg(long, env = "FERRY_PLATFORM_ADDRESS")]
    pub platform_address: Option<String>,
    /// Platform user (logs in with the platform's password flow).
    #[arg(long, env = "FERRY_PLATFORM_USERNAME", requires = "platform_address")]
    pub platform_username: Option<String>,
    /// Prefer --platform-password-stdin or FERRY_PLATFORM_PASSWORD: argv is visible to others.
    #[arg(
        long,
        env = "FERRY_PLATFORM_PASSWORD",
        hide_env_values = true,
        requires = "platform_username"
    )]
    pub platform_password: Option<String>,
    /// Read the platform password from the first line of standard input.
    #[arg(
        long,
        requires = "platform_username",
        conflicts_with = "platform_password"
    )]
    pub platform_password_stdin: bool,
    /// Platform API token (Profile > API Tokens); instead of username and password.
    #[arg(
        long,
        env = "FERRY_PLATFORM_TOKEN",
        hide_env_values = true,
        conflicts_with_all = ["platform_username", "platform_password", "platform_password_stdin"]
    )]
    pub platform_token: Option<String>,
    /// OAuth client id for the password login.
    #[arg(long, default_value = "alauda-auth")]
    pub client_id: String,
    /// Identity provider of the account: local, ldap, or the id of another connector.
    #[arg(long, default_value = "local")]
    pub idp: String,
    /// CA certificate (PEM) that issued the platform's certificate.
    #[arg(long)]
    pub platform_ca_file: Option<PathBuf>,
    /// Do not verify the platform's TLS certificate.
    #[arg(long)]
    pub platform_insecure: bool,
}

impl PlatformFlags {
    /// The options to connect with, or None when no platform was given.
    pub fn options(&self, timeout: Duration) -> Result<Option<PlatformOptions>> {
        let Some(address) = &self.platform_address else {
            return Ok(None);
        };
        let auth = if let Some(t) = &self.platform_token {
            PlatformAuth::Token(Secret::new(t.trim()))
        } else if let Some(user) = &self.platform_username {
            let password = if self.platform_password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).map_err(|e| {
                    Error::new(
                        ErrorKind::Internal,
                        format!("--platform-password-stdin: {e}"),
                    )
                })?;
                line.trim_end_matches(['\r', '\n']).to_string()
            } else {
                self.platform_password.clone().ok_or_else(|| {
                    Error::new(
                        ErrorKind::Usage,
                        "--platform-username needs --platform-password, \
                         --platform-password-stdin or FERRY_PLATFORM_PASSWORD",
                    )
                })?
            };
            PlatformAuth::Password(PasswordLogin {
                username: user.clone(),
                password: Secret::new(password),
                idp: self.idp.clone(),
                client_id: self.client_id.clone(),
            })
        } else {
            return Err(Error::new(
                ErrorKind::Usage,
                "--platform-address needs --platform-token, or --platform-username with a password",
            ));
        };
        Ok(Some(PlatformOptions {
            address: address.clone(),
            auth,
            ca_file: self.platform_ca_file.clone(),
            insecure: self.platform_insecure,
            timeout,
        }))
    }
}
