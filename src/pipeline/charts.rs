//! The chart step: chart packages' `charts/*.tgz` go to every registry as Helm OCI artifacts,
//! once the package's images are in.

use std::sync::Arc;

use crate::engine::{ImageOutcome, ImageState, PackageOutcome};
use crate::error::Error;
use crate::sink::{Registry, RegistryApi};
use crate::source::Package;

/// Pushes the chart archives of a chart package (`charts/*.tgz`) to every registry as Helm
/// OCI artifacts (`<registry>/<repo>/<chart>:<version>`) and reports each as an image whose
/// source is the chart file. Only after the package's images went up: a package that failed
/// gets no chart either. With `check_only` (dry run, `--skip-push`) nothing is written.
pub(super) async fn push_charts(
    pkg: &Package,
    outcome: &mut PackageOutcome,
    registries: &[Arc<Registry>],
    repo_prefix: &str,
    check_only: bool,
) {
    if outcome.kind() != "chart" || outcome.error.is_some() || !outcome.all_images_in() {
        return;
    }
    let mut charts = outcome.charts.clone();
    if charts.is_empty() {
        let reader = pkg.clone();
        match tokio::task::spawn_blocking(move || reader.list_charts()).await {
            Ok(Ok(found)) => charts = found,
            Ok(Err(e)) => {
                outcome.error = Some(e);
                return;
            }
            Err(e) => {
                outcome.error = Some(Error::internal(format!("chart reader crashed: {e}")));
                return;
            }
        }
    }
    for file in charts {
        let reader = pkg.clone();
        let name = file.clone();
        let built = tokio::task::spawn_blocking(move || {
            reader
                .read_chart(&name)
                .and_then(|bytes| crate::source::chart::helm_artifact(&name, bytes))
        })
        .await
        .unwrap_or_else(|e| Err(Error::internal(format!("chart reader crashed: {e}"))));
        let chart = match built {
            Ok(c) => c,
            Err(e) => {
                outcome.error = Some(e);
                return;
            }
        };
        let repo = format!("{}/{}", repo_prefix.trim_matches('/'), chart.name);
        let tag = chart.version.replace('+', "_");
        for registry in registries {
            let state = match push_chart(registry, &repo, &tag, &chart, check_only).await {
                Ok(state) => state,
                Err(e) => {
                    ImageState::Failed(e.context(format!("package {}: chart {file}", outcome.file)))
                }
            };
            let image = ImageOutcome {
                source: file.clone(),
                repo: Some(repo.clone()),
                reference: tag.clone(),
                digest: chart.manifest.0.to_string(),
                state,
            };
            let label = registry.label();
            match outcome.destinations.iter_mut().find(|d| d.label == label) {
                Some(d) => d.images.push(image),
                None => {
                    outcome.error = Some(Error::internal(format!(
                        "chart step: registry {label} is not a destination of this run"
                    )));
                    return;
                }
            }
        }
    }
}

async fn push_chart(
    registry: &Registry,
    repo: &str,
    tag: &str,
    chart: &crate::source::chart::HelmArtifact,
    check_only: bool,
) -> Result<ImageState, Error> {
    if registry.manifest_digest(repo, tag).await?.as_deref() == Some(chart.manifest.0.as_str()) {
        return Ok(ImageState::Present);
    }
    if check_only {
        return Ok(ImageState::Planned);
    }
    for (digest, bytes) in [&chart.config, &chart.layer] {
        if !registry.blob_exists(repo, digest).await? {
            let verified = crate::oci::verify(digest, bytes.len() as u64, bytes)?;
            registry
                .upload_whole(repo, &verified, bytes.clone())
                .await?;
        }
    }
    registry
        .put_manifest(
            repo,
            tag,
            crate::source::chart::HelmArtifact::MANIFEST_MEDIA_TYPE,
            chart.manifest.1.clone(),
        )
        .await?;
    Ok(ImageState::Pushed)
}
