//! The steps after the transfer: what happens to a package once the engine has reported on
//! its images. Today one step exists, [`Publisher`]: the package's platform resources, written
//! only when every image of the package is in the registry.
//!
//! Contract: a step reads the [`PackageReport`] the engine produced (its images' states and
//! the package metadata) and adds to it; it never reaches into the engine, the sink or the
//! source.

use std::sync::Arc;

use crate::error::Error;
use crate::platform::artifacts::{self, ArtifactSpec};
use crate::platform::Platform;
use crate::report::{ImageStatus, PackageReport, ResourceReport};
use crate::source::SourceRef;

/// Writes the Marketplace resources of pushed packages.
pub struct Publisher {
    pub platform: Arc<Platform>,
    /// Registry host[:port] the images went to (written into the Artifact).
    pub registry_host: String,
    /// `--clusters` (operator bundles go to each; default `global`).
    pub clusters: Vec<String>,
    /// Whether `--clusters` was given (plugins and charts ignore it, with a warning).
    pub clusters_given: bool,
    pub catalog_source: String,
    pub dry_run: bool,
}

impl Publisher {
    /// Adds the package's resources (or why none were written) to `report`.
    pub async fn publish(&self, report: &mut PackageReport) {
        if !report.images_complete() {
            let missing = report
                .images
                .iter()
                .filter(|i| i.status == ImageStatus::Failed)
                .count();
            report.resources_skipped = Some(if missing > 0 {
                format!("{missing} image(s) of the package are not in the registry")
            } else {
                "the package failed before its images were pushed".to_string()
            });
            return;
        }
        let Some(meta) = report.meta.clone() else {
            return;
        };
        let spec = match self.spec(&meta) {
            Ok(s) => s,
            Err(e) => {
                report.error = Some((&e).into());
                return;
            }
        };
        let clusters = match meta.spec.kind.as_str() {
            "bundle" => self.clusters.clone(),
            other => {
                if self.clusters_given && self.clusters != ["global"] {
                    report.warnings.push(format!(
                        "--clusters is ignored for {} packages: their resources go to cluster \
                         global, and the platform distributes them",
                        if other == "plugin" {
                            "cluster plugin"
                        } else {
                            other
                        }
                    ));
                }
                vec!["global".to_string()]
            }
        };
        let writes = clusters.iter().map(|name| {
            let spec = &spec;
            async move {
                match self.platform.cluster(name) {
                    Ok(c) => artifacts::publish(&c, spec, self.dry_run).await,
                    Err(e) => vec![artifacts::ResourceOutcome {
                        kind: "Artifact".into(),
                        name: spec.artifact_name(),
                        cluster: name.clone(),
                        action: artifacts::Action::Failed,
                        error: Some(e),
                    }],
                }
            }
        });
        for outcomes in futures::future::join_all(writes).await {
            report
                .resources
                .extend(outcomes.iter().map(ResourceReport::from));
        }
    }

    fn spec(&self, meta: &crate::source::PackageMeta) -> Result<ArtifactSpec, Error> {
        let artifact = meta.spec.artifact.as_deref().ok_or_else(|| {
            Error::package(format!(
                "package {}: package.yaml has no spec.artifact, so its Artifact cannot be written",
                meta.metadata.name
            ))
        })?;
        let main = SourceRef::parse(artifact)
            .map_err(|e| e.context(format!("package {}: spec.artifact", meta.metadata.name)))?;
        Ok(ArtifactSpec {
            name: meta.metadata.name.clone(),
            display_name: meta
                .metadata
                .display_name
                .clone()
                .unwrap_or_else(|| meta.metadata.name.clone()),
            kind: meta.spec.kind.clone(),
            version: meta.metadata.version.clone(),
            registry: self.registry_host.clone(),
            repository: main.repository,
            tag: main.reference,
            catalog_source: (meta.spec.kind == "bundle").then(|| self.catalog_source.clone()),
        })
    }
}

/// `--skip-push`: the engine ran as a dry run; an image it would push is missing from the
/// registry, which makes the package fail (its resources would point at nothing).
pub fn require_present(report: &mut PackageReport) {
    for i in &mut report.images {
        if i.status == ImageStatus::Planned {
            i.status = ImageStatus::Failed;
            i.error = Some(
                (&Error::new(
                    crate::error::ErrorKind::Registry,
                    format!(
                        "image {} is not in the registry: --skip-push writes resources only for \
                         packages whose images are all present; push without --skip-push first",
                        i.destination
                    ),
                ))
                    .into(),
            );
        }
    }
    report.plan.clear();
    report.blobs = Default::default();
}
