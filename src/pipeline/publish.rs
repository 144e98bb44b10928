//! The publishing step: a package's Marketplace resources (Artifact / ArtifactVersion) on one
//! platform side, written only once every image of the package is in that side's registry.

use std::sync::Arc;

use crate::engine::{DestinationOutcome, ImageState, PackageOutcome};
use crate::error::Error;
use crate::platform::artifacts::{self, ArtifactSpec, Publication};
use crate::platform::inventory::GLOBAL;
use crate::platform::{Platform, CLUSTERS_AT_ONCE};
use crate::source::{PackageKind, SourceRef};

/// Writes the Marketplace resources of pushed packages.
pub struct Publisher {
    pub platform: Arc<Platform>,
    /// Registry `host[:port]` the images went to (written into the Artifact).
    pub registry_host: String,
    /// Repository prefix in that registry (`--dest-repo host/prefix`), empty for none.
    pub registry_prefix: String,
    /// `--clusters`: operator bundles go to each. None: `global` only (and plugins and
    /// charts, which always go to `global`, need no warning).
    pub clusters: Option<Vec<String>>,
    pub catalog_source: String,
}

/// What the run knows of the publisher's own target when the package is through.
pub struct Side<'a> {
    /// The target's registry (`host[:port][/prefix]`), for messages.
    pub label: String,
    /// The engine's outcome for that registry; None when it was left out of the run.
    pub dest: Option<&'a DestinationOutcome>,
    /// Plan the resources, write nothing.
    pub dry_run: bool,
}

impl Publisher {
    /// Writes the package's resources on this side, or says why none were written. Only this
    /// side's registry matters: a failed standby image does not hold back the primary's
    /// resources, nor the other way round.
    pub async fn publish(&self, outcome: &PackageOutcome, side: Side<'_>) -> Publication {
        let mut publication = Publication {
            platform: self.platform.host(),
            ..Default::default()
        };
        let label = &side.label;
        let images = side.dest.map_or(&[][..], |d| &d.images[..]);
        let any_images = outcome.destinations.iter().any(|d| !d.images.is_empty());
        if any_images && images.is_empty() {
            publication.skipped = Some(format!("no image of the package reached registry {label}"));
            return publication;
        }
        let missing = images
            .iter()
            .filter(|i| matches!(i.state, ImageState::Failed(_)))
            .count();
        if missing > 0 {
            publication.skipped = Some(format!(
                "{missing} image(s) of the package are not in registry {label}"
            ));
            return publication;
        }
        if outcome.error.is_some() {
            publication.skipped = Some("the package failed before its images were pushed".into());
            return publication;
        }
        let Some(meta) = &outcome.meta else {
            return publication;
        };
        let chart_ref = images
            .iter()
            .filter(|i| i.source.starts_with("charts/"))
            .find_map(|i| Some(format!("{}:{}", i.repo.as_ref()?, i.reference)));
        let spec = match self.spec(meta, chart_ref.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                publication.error = Some(e);
                return publication;
            }
        };
        let global = || vec![GLOBAL.to_string()];
        let clusters = match meta.spec.kind {
            PackageKind::Bundle => self.clusters.clone().unwrap_or_else(global),
            other => {
                if self.clusters.as_ref().is_some_and(|c| c != &global()) {
                    publication.warnings.push(format!(
                        "--clusters is ignored for {} packages: their resources go to cluster \
                         global, and the platform distributes them",
                        if other == PackageKind::Plugin {
                            "cluster plugin"
                        } else {
                            other.as_str()
                        }
                    ));
                }
                global()
            }
        };
        let (spec, dry_run) = (&spec, side.dry_run);
        let written = self
            .platform
            .each_cluster(&clusters, CLUSTERS_AT_ONCE, |c| async move {
                Ok(artifacts::publish(&c, spec, dry_run).await)
            })
            .await;
        for (cluster, r) in written {
            match r {
                Ok(outcomes) => publication.resources.extend(outcomes),
                Err(e) => publication.unreachable.push((cluster, e)),
            }
        }
        publication
    }

    /// `chart`: for chart packages, the pushed chart's `repo:tag` in this registry, which the
    /// Artifact points at instead of `spec.artifact`.
    fn spec(
        &self,
        meta: &crate::source::PackageMeta,
        chart: Option<&str>,
    ) -> Result<ArtifactSpec, Error> {
        let name = &meta.metadata.name;
        let (repository, tag) = match chart.and_then(|c| c.rsplit_once(':')) {
            Some((repository, tag)) => (repository.to_string(), tag.to_string()),
            None => {
                let artifact = meta.spec.artifact.as_deref().ok_or_else(|| {
                    Error::package(format!(
                        "package {name}: package.yaml has no spec.artifact, so its Artifact \
                         cannot be written"
                    ))
                })?;
                let main = SourceRef::parse(artifact)
                    .map_err(|e| e.context(format!("package {name}: spec.artifact")))?;
                (main.repository, main.reference)
            }
        };
        Ok(ArtifactSpec {
            name: name.clone(),
            display_name: meta
                .metadata
                .display_name
                .clone()
                .unwrap_or_else(|| name.clone()),
            kind: meta.spec.kind,
            version: meta.metadata.version.clone(),
            registry: self.registry_host.clone(),
            repository: if self.registry_prefix.is_empty() {
                repository
            } else {
                format!("{}/{repository}", self.registry_prefix)
            },
            tag,
            catalog_source: (meta.spec.kind == PackageKind::Bundle)
                .then(|| self.catalog_source.clone()),
        })
    }
}
