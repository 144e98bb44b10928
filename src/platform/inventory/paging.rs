//! Lists read page by page, bounded in pages and in what is held (see [`list_of`]).

use kube::api::{DynamicObject, ListParams};
use kube::discovery::ApiResource;

use crate::error::Result;
use crate::platform::Cluster;

/// Every `kind` of `group` on the cluster (in namespace `ns`, else in all), the group being
/// one the command needs (not served: an error naming it).
pub(super) async fn list(
    c: &Cluster,
    group: &str,
    kind: &str,
    ns: Option<&str>,
) -> Result<Vec<DynamicObject>> {
    let (ar, _) = c.discover(group, kind).await?;
    list_of(c, &ar, kind, ns).await
}

/// As [`list`], for a group optional to the command: `None` when the cluster does not serve
/// it at all.
pub(super) async fn list_if_served(
    c: &Cluster,
    group: &str,
    kind: &str,
    ns: Option<&str>,
) -> Result<Option<Vec<DynamicObject>>> {
    match c.discover_if_served(group, kind).await? {
        Some((ar, _)) => list_of(c, &ar, kind, ns).await.map(Some),
        None => Ok(None),
    }
}

async fn list_of(
    c: &Cluster,
    ar: &ApiResource,
    kind: &str,
    ns: Option<&str>,
) -> Result<Vec<DynamicObject>> {
    let api = match ns {
        Some(ns) => c.namespaced(ar, ns),
        None => c.all(ar),
    };
    // page by page, so that each answer stays well below the client's cap on one answer
    // (cluster.rs, MAX_API_ANSWER) however many objects there are; a page of 250 operators'
    // CSVs (icons included) is a few MiB
    const PAGE: u32 = 250;
    // a server that hands back the same continue token forever, or pages without end, must
    // not keep ferry (and its memory) going: 4,000 pages are a million objects
    const MAX_PAGES: usize = 4_000;
    // and what is held across pages is bounded too (each answer alone is capped in cluster.rs)
    const MAX_HELD: usize = 256 << 20;
    let mut held = 0usize;
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    let mut seen_tokens = std::collections::HashSet::new();
    for _ in 0..MAX_PAGES {
        let page = api
            .list(&params)
            .await
            .map_err(|e| c.error(e, &format!("listing {kind}s")))?;
        held += serde_json::to_vec(&page.items).map_or(0, |v| v.len());
        if held > MAX_HELD {
            return Err(crate::error::Error::new(
                crate::error::ErrorKind::Platform,
                format!(
                    "cluster {}: listing {kind}s: the objects exceed {} MiB in all; stopped",
                    c.name,
                    MAX_HELD >> 20
                ),
            ));
        }
        items.extend(page.items);
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(token) if !seen_tokens.insert(token.clone()) => {
                return Err(crate::error::Error::new(
                    crate::error::ErrorKind::Platform,
                    format!(
                        "cluster {}: listing {kind}s: the server sent the same continue token \
                         twice (a broken or hostile API server); stopped",
                        c.name
                    ),
                ))
            }
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
    Err(crate::error::Error::new(
        crate::error::ErrorKind::Platform,
        format!(
            "cluster {}: listing {kind}s: more than {MAX_PAGES} pages of {PAGE}; stopped",
            c.name
        ),
    ))
}
