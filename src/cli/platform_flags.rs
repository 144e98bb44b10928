//! The platform connection flags, spelled as violet spells them; shared by every command that
//! talks to the platform. The DR standby's flags (`--standby-platform-...`) are generated
//! from the same definition, so a primary flag cannot exist without its standby twin, and
//! the twin never inherits the primary's value: each side's trust is the user's word for
//! that side (a `--platform-insecure` meant for a lab primary must not switch off the
//! verification of the standby, which then would hand its token to whoever answers).

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::error::{Error, ErrorKind, Result};
use crate::platform::{PasswordLogin, Platform, PlatformAuth, PlatformOptions};
use crate::sink::Secret;

/// One definition, two structs: `$flag` and `$env` prefix the flag names and environment
/// variables, `$id` prefixes clap's argument ids (both structs are flattened into `push`).
macro_rules! platform_flags {
    ($(#[$meta:meta])* $name:ident, side = $side:literal, flag = $flag:literal, env = $env:literal, id = $id:literal) => {
        $(#[$meta])*
        #[derive(Args, Debug, Clone, Default)]
        pub struct $name {
            #[arg(
                long = concat!($flag, "platform-address"),
                id = concat!($id, "platform_address"),
                env = concat!($env, "PLATFORM_ADDRESS"),
                help = concat!("The ", $side, "platform's access URL, e.g. https://example.com (IPv6: https://[fd00::10])")
            )]
            pub platform_address: Option<String>,
            #[arg(
                long = concat!($flag, "platform-username"),
                id = concat!($id, "platform_username"),
                env = concat!($env, "PLATFORM_USERNAME"),
                requires = concat!($id, "platform_address"),
                help = concat!("User of the ", $side, "platform (logs in with the platform's password flow)")
            )]
            pub platform_username: Option<String>,
            #[arg(
                long = concat!($flag, "platform-password"),
                id = concat!($id, "platform_password"),
                env = concat!($env, "PLATFORM_PASSWORD"),
                hide_env_values = true,
                requires = concat!($id, "platform_username"),
                help = concat!("Password of the ", $side, "platform user; prefer --", $flag,
                    "platform-password-stdin or ", $env, "PLATFORM_PASSWORD: argv is visible to others")
            )]
            pub platform_password: Option<String>,
            #[arg(
                long = concat!($flag, "platform-password-stdin"),
                id = concat!($id, "platform_password_stdin"),
                requires = concat!($id, "platform_username"),
                conflicts_with = concat!($id, "platform_password"),
                help = concat!("Read the ", $side, "platform password from the first line of standard input")
            )]
            pub platform_password_stdin: bool,
            #[arg(
                long = concat!($flag, "platform-token"),
                id = concat!($id, "platform_token"),
                env = concat!($env, "PLATFORM_TOKEN"),
                hide_env_values = true,
                requires = concat!($id, "platform_address"),
                conflicts_with_all = [concat!($id, "platform_username"), concat!($id, "platform_password"), concat!($id, "platform_password_stdin")],
                help = concat!("API token of the ", $side, "platform (Profile > API Tokens); instead of username and password")
            )]
            pub platform_token: Option<String>,
            #[arg(
                long = concat!($flag, "client-id"),
                id = concat!($id, "client_id"),
                env = concat!($env, "CLIENT_ID"),
                default_value = "alauda-auth",
                help = concat!("OAuth client id for the ", $side, "platform's password login")
            )]
            pub client_id: String,
            #[arg(
                long = concat!($flag, "idp"),
                id = concat!($id, "idp"),
                env = concat!($env, "IDP"),
                default_value = "local",
                help = concat!("Identity provider of the ", $side, "platform account: local, ldap, or the id of another connector")
            )]
            pub idp: String,
            #[arg(
                long = concat!($flag, "platform-ca-file"),
                id = concat!($id, "platform_ca_file"),
                env = concat!($env, "PLATFORM_CA_FILE"),
                help = concat!("CA certificate (PEM) that issued the ", $side, "platform's certificate")
            )]
            pub platform_ca_file: Option<PathBuf>,
            #[arg(
                long = concat!($flag, "platform-insecure"),
                id = concat!($id, "platform_insecure"),
                help = concat!("Do not verify the ", $side, "platform's TLS certificate (a man in the middle then gets the token or password)")
            )]
            pub platform_insecure: bool,
            #[arg(
                long = concat!($flag, "platform-plain-http"),
                id = concat!($id, "platform_plain_http"),
                help = concat!("Allow an http:// ", $side, "platform address: its token, password and registry credentials then travel in clear")
            )]
            pub platform_plain_http: bool,
        }

        impl $name {
            /// The options to connect with, or None when no platform was given. A password
            /// from standard input is taken from `stdin`, which hands out one claim only.
            pub fn options(&self, timeout: Duration, stdin: &StdinSecret) -> Result<Option<PlatformOptions>> {
                let view = FlagValues {
                    flag: $flag,
                    env: $env,
                    address: self.platform_address.as_deref(),
                    username: self.platform_username.as_deref(),
                    password: self.platform_password.as_deref(),
                    password_stdin: self.platform_password_stdin,
                    token: self.platform_token.as_deref(),
                    client_id: &self.client_id,
                    idp: &self.idp,
                    ca_file: self.platform_ca_file.as_ref(),
                    insecure: self.platform_insecure,
                    plain_http: self.platform_plain_http,
                };
                view.options(timeout, stdin)
            }
        }
    };
}

platform_flags!(
    /// How to reach the platform (the primary side).
    PlatformFlags, side = "", flag = "", env = "FERRY_", id = ""
);

platform_flags!(
    /// How to reach the DR standby global cluster's platform: every primary flag has its twin
    /// here, each defaulting to the safe value on its own.
    StandbyPlatformFlags, side = "DR standby ", flag = "standby-", env = "FERRY_STANDBY_", id = "standby_"
);

impl PlatformFlags {
    /// Logs in to the platform the flags name, for the commands that need one and read
    /// nothing else from standard input (list, gc). The standby's flags have no such
    /// command: only push reaches a standby platform, with its other secrets beside it.
    pub fn connect(
        &self,
        rt: &tokio::runtime::Runtime,
        timeout_secs: u64,
        command: &str,
    ) -> Result<Platform> {
        let stdin = StdinSecret::claimed_by(&[(
            "--platform-password-stdin",
            self.platform_password_stdin,
        )])?;
        let opts = self
            .options(Duration::from_secs(timeout_secs), &stdin)?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Usage,
                    format!(
                        "{command} needs --platform-address (and --platform-token or \
                         --platform-username)"
                    ),
                )
            })?;
        rt.block_on(Platform::connect(opts))
    }
}

/// Both structs' values, read the same way.
struct FlagValues<'a> {
    flag: &'static str,
    env: &'static str,
    address: Option<&'a str>,
    username: Option<&'a str>,
    password: Option<&'a str>,
    password_stdin: bool,
    token: Option<&'a str>,
    client_id: &'a str,
    idp: &'a str,
    ca_file: Option<&'a PathBuf>,
    insecure: bool,
    plain_http: bool,
}

impl FlagValues<'_> {
    fn options(&self, timeout: Duration, stdin: &StdinSecret) -> Result<Option<PlatformOptions>> {
        let Some(address) = self.address else {
            return Ok(None);
        };
        let f = self.flag;
        let auth = if let Some(t) = self.token {
            PlatformAuth::Token(Secret::new(t.trim()))
        } else if let Some(user) = self.username {
            let password = if self.password_stdin {
                stdin.read(&format!("--{f}platform-password-stdin"))?
            } else {
                self.password.map(str::to_string).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Usage,
                        format!(
                            "--{f}platform-username needs --{f}platform-password, \
                             --{f}platform-password-stdin or {}PLATFORM_PASSWORD",
                            self.env
                        ),
                    )
                })?
            };
            PlatformAuth::Password(PasswordLogin {
                username: user.to_string(),
                password: Secret::new(password),
                idp: self.idp.to_string(),
                client_id: self.client_id.to_string(),
            })
        } else {
            return Err(Error::new(
                ErrorKind::Usage,
                format!(
                    "--{f}platform-address needs --{f}platform-token, or --{f}platform-username \
                     with a password"
                ),
            ));
        };
        Ok(Some(PlatformOptions {
            address: address.to_string(),
            auth,
            ca_file: self.ca_file.cloned(),
            insecure: self.insecure,
            plain_http: self.plain_http,
            timeout,
        }))
    }
}

/// Standard input as the source of at most one secret. Several `--*-stdin` flags at once are
/// refused before anything is read (otherwise which secret got line 1 and which line 2 would
/// depend on the order of the code, silently).
#[derive(Default)]
pub struct StdinSecret {
    /// The one flag that may read it.
    owner: Option<String>,
}

impl StdinSecret {
    /// `claims`: every flag that could read standard input, and whether it was given.
    pub fn claimed_by(claims: &[(&str, bool)]) -> Result<Self> {
        let given: Vec<&str> = claims
            .iter()
            .filter(|(_, on)| *on)
            .map(|(f, _)| *f)
            .collect();
        if given.len() > 1 {
            return Err(Error::new(
                ErrorKind::Usage,
                format!(
                    "{} all read standard input, which holds one secret: give the others with \
                     their flag or environment variable",
                    given.join(" and ")
                ),
            ));
        }
        Ok(StdinSecret {
            owner: given.first().map(|f| f.to_string()),
        })
    }

    /// The first line of standard input, for `flag`; an empty line is refused (an empty
    /// password would only earn a 401 from the server, after a round trip).
    pub fn read(&self, flag: &str) -> Result<String> {
        if self.owner.as_deref() != Some(flag) {
            return Err(Error::internal(format!(
                "{flag} reads standard input without having claimed it"
            )));
        }
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::new(ErrorKind::Usage, format!("{flag}: {e}")))?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Err(Error::new(
                ErrorKind::Usage,
                format!("{flag}: standard input gave an empty line, not a password"),
            ));
        }
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Both {
        #[command(flatten)]
        primary: super::PlatformFlags,
        #[command(flatten)]
        standby: super::StandbyPlatformFlags,
    }

    #[test]
    fn every_platform_flag_has_a_standby_twin_that_inherits_nothing() {
        let cmd = Both::command();
        let longs: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        for l in longs.iter().filter(|l| !l.starts_with("standby-")) {
            assert!(
                longs.contains(&format!("standby-{l}")),
                "--{l} has no --standby-{l}"
            );
        }
        let b = Both::parse_from([
            "x",
            "--platform-address",
            "https://a",
            "--platform-insecure",
            "--idp",
            "ldap",
            "--standby-platform-address",
            "https://b",
        ]);
        assert!(b.primary.platform_insecure && !b.standby.platform_insecure);
        assert_eq!(b.standby.idp, "local");
        assert!(b.standby.platform_ca_file.is_none());
    }
}
