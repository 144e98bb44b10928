//! The cluster as a control-plane node sees it: a kubeconfig, found where `kubectl` and
//! `upgrade.sh` look: `--kubeconfig`, `$KUBECONFIG` (its first file), `~/.kube/config`, then
//! `/etc/kubernetes/admin.conf` (what every control-plane node has).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Cluster;
use crate::error::{Error, ErrorKind, Result};

/// A cluster reached through a kubeconfig.
pub struct Kubeconfig {
    pub cluster: Cluster,
    /// The file it came from, for messages.
    pub path: PathBuf,
    /// Host of the API server URL (the global VIP on a control-plane node), without brackets.
    pub server_host: String,
    /// The cluster CA (DER), which usually issued the built-in registry's certificate.
    pub cluster_ca: Vec<Vec<u8>>,
}

fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let mut v = Vec::new();
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        if let Some(first) = std::env::split_paths(&k).next() {
            v.push(first);
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".kube/config"));
    }
    v.push(PathBuf::from("/etc/kubernetes/admin.conf"));
    v
}

/// Loads the first kubeconfig that exists and connects a client named `cluster_name`.
pub async fn load(explicit: Option<&Path>, cluster_name: &str) -> Result<Kubeconfig> {
    let tried = candidates(explicit);
    let path = tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        Error::new(
            ErrorKind::Usage,
            format!(
                "no kubeconfig found (tried {}): give one with --kubeconfig, or run on a \
                     control-plane node of the global cluster",
                list.join(", ")
            ),
        )
    })?;
    let bad = |e: String| {
        Error::new(
            ErrorKind::Usage,
            format!("kubeconfig {}: {e}", path.display()),
        )
    };
    let kc = kube::config::Kubeconfig::read_from(&path).map_err(|e| bad(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    let server_host = cfg
        .cluster_url
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let cluster_ca = cfg.root_cert.clone().unwrap_or_default();
    // kube's own idle read timeout for kubeconfig clients (295 s) is kept
    let idle = cfg.read_timeout.unwrap_or(Duration::from_secs(295));
    let trust = super::cluster::Trust::Kubeconfig { path: path.clone() };
    let cluster = Cluster::build(cluster_name, cfg, trust, idle)?;
    Ok(Kubeconfig {
        cluster,
        path,
        server_host,
        cluster_ca,
    })
}
