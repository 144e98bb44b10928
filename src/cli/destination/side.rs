//! One side (primary or DR standby, of push or of sync) resolved into its `Destination`:
//! the registry from the flags or from the platform, with the credentials in one order.

use std::sync::Arc;

use super::{CredentialFlags, Destination, Role, Trust};
use crate::error::{Error, ErrorKind};
use crate::platform::registry::{self as platform_registry, CredentialSource, ProductRegistry};
use crate::platform::{Cluster, Platform};
use crate::sink::Credentials;

/// Where a side's registry is when its flag names none: nowhere, or read from `ProductBase`
/// `base` of the global cluster.
#[derive(Clone, Debug)]
pub enum RegistryFrom {
    /// Nothing is looked up: only the flag names the registry (sync's standby; push without
    /// a platform).
    Flag,
    /// `spec.registry.address` as written (push: the platform's address for its registry).
    /// `platform` names the platform in the printed reason.
    ProductBase { platform: String },
    /// The built-in registry at the global VIP, on the port of `spec.registry.address` (sync,
    /// on a control-plane node, which may not reach the address the ProductBase holds). An
    /// external registry (`spec.registry.external`) is then not synced, as upgrade.sh does.
    /// `named_by` says where the VIP came from.
    Vip { vip: String, named_by: String },
}

/// A side resolved: the registry to write to, or (sync only) the platform's external registry,
/// which is left alone.
pub enum Resolved {
    To(Box<Destination>),
    External { address: Option<String> },
}

/// One side's flags (primary: `--dest-repo` or `--registry`, `--username`...; DR standby:
/// `--standby-registry`, `--standby-username`...) and the global cluster to read the registry
/// and its credentials from, if any. Push and sync, primary and standby, all resolve here:
/// the flags, else ProductBase `base`, for the address; the flags, else the platform's own
/// credentials (ProductBase, else Secret `cpaas-system/registry-admin`), for the login.
pub struct Side<'a> {
    pub role: Role,
    pub dest_repo: Option<&'a String>,
    pub creds: CredentialFlags<'a>,
    pub trust: Trust,
    /// The flag naming the registry, for messages.
    pub dest_flag: &'a str,
    /// Cluster `global`, where ProductBase and the Secret are read (push: through the
    /// platform; sync: through the node's kubeconfig). None: the flags are all there is.
    pub global: Option<Cluster>,
    pub from: RegistryFrom,
    /// The platform whose Marketplace gets this side's resources (push only).
    pub publisher: Option<Arc<Platform>>,
}

impl<'a> Side<'a> {
    /// The DR standby as its flags give it (`--standby-registry`, its credentials and trust),
    /// nothing looked up; push adds its platform.
    pub fn standby(
        dest_repo: Option<&'a String>,
        creds: CredentialFlags<'a>,
        trust: Trust,
    ) -> Self {
        Side {
            role: Role::Standby,
            dest_repo,
            creds,
            trust,
            dest_flag: "--standby-registry",
            global: None,
            from: RegistryFrom::Flag,
            publisher: None,
        }
    }

    /// The registry given by the flags, else the platform's registry, with its credentials.
    pub async fn resolve(self) -> Result<Destination, Error> {
        match self.resolve_any().await? {
            Resolved::To(d) => Ok(*d),
            // only RegistryFrom::Vip leaves an external registry alone
            Resolved::External { .. } => Err(Error::internal(
                "an external registry was left alone where one is needed",
            )),
        }
    }

    /// As `resolve`, and an external registry found through the VIP is `Resolved::External`.
    pub async fn resolve_any(self) -> Result<Resolved, Error> {
        let r = self.resolve_inner().await;
        match self.role {
            Role::Primary => r,
            Role::Standby => r.map_err(|e| e.context("DR standby")),
        }
    }

    async fn resolve_inner(&self) -> Result<Resolved, Error> {
        let c = self.creds;
        let p = c.prefix;
        if let Some(address) = self.dest_repo {
            let by_vip = matches!(self.from, RegistryFrom::Vip { .. });
            // Push's --dest-repo names another registry than the platform's: the platform's
            // credentials are not sent there. Sync's --registry is the platform's own registry
            // by another address (upgrade.sh's meaning): they are, after a login file.
            if self.global.is_some() && !by_vip && !c.given() && !c.no_auth {
                return Err(Error::new(
                    ErrorKind::Usage,
                    format!(
                        "{} with --{p}platform-address needs the registry's credentials \
                         (--{p}username with --{p}password) or --{p}no-auth",
                        self.dest_flag
                    ),
                ));
            }
            let mut d = Destination::from_address(self.role, address, self.trust.clone())?;
            let credentials = c.resolve(&d.host)?;
            let source = match (&credentials, c.given()) {
                (None, _) => CredentialSource::None,
                (Some(_), true) => CredentialSource::Flags,
                (Some(_), false) => CredentialSource::AuthFile,
            };
            let (credentials, source) = match (&self.global, source) {
                (Some(global), CredentialSource::None) if by_vip && !c.no_auth => {
                    let product = platform_registry::product_registry(global).await?;
                    platform_credentials(global, &product).await?
                }
                _ => (credentials, source),
            };
            d.credentials = credentials;
            d.credential_origin = source;
            d.why = format!("from {}", self.dest_flag);
            d.platform = self.publisher.clone();
            return Ok(Resolved::To(Box::new(d)));
        }
        let (Some(global), false) = (&self.global, matches!(self.from, RegistryFrom::Flag)) else {
            return Err(Error::new(
                ErrorKind::Usage,
                format!(
                    "give {} or a platform to find the registry on",
                    self.dest_flag
                ),
            ));
        };
        let product = platform_registry::product_registry(global).await?;
        let mut d = match &self.from {
            RegistryFrom::Flag => unreachable!("refused above"),
            RegistryFrom::ProductBase { platform } => {
                let address = product.address.clone().ok_or_else(|| {
                    Error::new(
                        ErrorKind::Platform,
                        format!(
                            "cluster global: ProductBase base has no spec.registry.address; \
                             give the registry with {}",
                            self.dest_flag
                        ),
                    )
                })?;
                let mut d = Destination::from_server(self.role, &address, self.trust.clone(), p)?;
                // on ACP the platform's certificate and its registry's are usually issued by
                // one CA: with no CA given for the registry, the platform's is trusted for it
                // too (in addition to the system roots), and the registry line says so
                let platform_ca = self
                    .publisher
                    .as_ref()
                    .and_then(|pl| pl.ca_der())
                    .filter(|_| self.trust.ca_file.is_none() && !self.trust.insecure);
                let also = match platform_ca {
                    Some(cas) => {
                        d.extra_roots.extend(cas.iter().cloned());
                        format!("; trusting --{p}platform-ca-file for it too")
                    }
                    None => String::new(),
                };
                d.why = format!(
                    "from ProductBase base in cluster global of {platform}{}{also}",
                    if product.external {
                        ", an external registry"
                    } else {
                        ""
                    }
                );
                d
            }
            RegistryFrom::Vip { vip, named_by } => {
                if product.external {
                    return Ok(Resolved::External {
                        address: product.address.clone(),
                    });
                }
                let address = platform_registry::rebuild_from_vip(vip, product.address.as_deref());
                let mut d = Destination::from_address(self.role, &address, self.trust.clone())?;
                d.why = format!(
                    "built-in registry at the global VIP {vip} ({named_by}), port from \
                     ProductBase base"
                );
                d
            }
        };
        let (credentials, source) = if c.no_auth {
            (None, CredentialSource::None)
        } else if c.given() {
            (c.resolve(&d.host)?, CredentialSource::Flags)
        } else {
            platform_credentials(global, &product).await?
        };
        d.credentials = credentials;
        d.credential_origin = source;
        d.platform = self.publisher.clone();
        Ok(Resolved::To(Box::new(d)))
    }
}

/// The credentials the platform itself uses for its registry: the ProductBase's, else Secret
/// `cpaas-system/registry-admin`, else none.
async fn platform_credentials(
    global: &Cluster,
    product: &ProductRegistry,
) -> Result<(Option<Credentials>, CredentialSource), Error> {
    let (c, source) = if let Some(c) = product.credentials.clone() {
        (Some(c), CredentialSource::ProductBase)
    } else if let Some(c) = platform_registry::registry_admin_secret(global).await? {
        (Some(c), CredentialSource::Secret)
    } else {
        (None, CredentialSource::None)
    };
    Ok((c, source))
}
