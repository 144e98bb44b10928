//! The steps after the transfer: what happens to a package once the engine has reported on
//! its images. Today one step exists, [`Publisher`]: the package's platform resources, written
//! only when every image of the package is in the registry.
//!
//! Contract: a step reads the [`PackageReport`] the engine produced (its images' states and
//! the package metadata) and adds to it; it never reaches into the engine, the sink or the
//! source.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use crate::engine::{Engine, EngineOptions};
use crate::error::Error;
use crate::platform::artifacts::{self, ArtifactSpec};
use crate::platform::Platform;
use crate::report::progress::Progress;
use crate::report::{ErrorReport, RunReport, Totals};
use crate::report::{ImageStatus, PackageReport, ResourceReport};
use crate::sink::Registry;
use crate::source::Package;
use crate::source::SourceRef;

/// One run over packages: check every registry, push each package through one engine (to
/// every destination at once), then the after-push steps; the report of it all.
pub struct Run<'a> {
    pub packages: &'a [Package],
    pub registries: &'a [Arc<Registry>],
    pub engine: EngineOptions,
    /// Charts of chart packages go to this repository of every registry as Helm OCI
    /// artifacts (`--target-chartrepo`); None: charts are not pushed.
    pub chart_repo: Option<&'a str>,
    /// After-push steps, one per platform side (primary, DR standby).
    pub publishers: &'a [Publisher],
    /// Only check that the images are there (the engine surveys), then publish.
    pub skip_push: bool,
    pub dry_run: bool,
    /// No progress output.
    pub quiet: bool,
    /// Packages pushed at the same time (each with the engine's own blob concurrency).
    pub packages_at_once: usize,
}

impl Run<'_> {
    /// Runs to the end (or to an interrupt) and returns the finished report (totals, exit code).
    pub async fn execute(self, started: Instant) -> RunReport {
        let stop = self.engine.stop.clone();
        let mut report = RunReport {
            ok: false,
            exit_code: 0,
            dry_run: self.dry_run,
            destinations: self.registries.iter().map(|r| r.host.clone()).collect(),
            packages: Vec::new(),
            totals: Totals::default(),
            seconds: 0.0,
            throughput_mb_s: 0.0,
            estimate: None,
            error: None,
        };
        // The primary registry must answer; a DR standby that does not is reported and left
        // out, so that the primary still gets everything.
        let mut live: Vec<Arc<Registry>> = Vec::new();
        for (i, registry) in self.registries.iter().enumerate() {
            match registry.check().await {
                Ok(()) => live.push(registry.clone()),
                Err(e) if i > 0 => {
                    let e = e.context("DR standby left out of this run");
                    tracing::error!("{}", e.message);
                    report.error = Some(ErrorReport::from(&e));
                }
                Err(e) => {
                    report.error = Some(ErrorReport::from(&e));
                    live.clear();
                    break;
                }
            }
        }
        if !live.is_empty() {
            tokio::spawn(watch_signals(stop.clone()));
            let progress = Progress::start(
                live.iter().map(|r| r.counters.clone()).collect(),
                self.quiet,
            );
            let mut opts = self.engine;
            opts.dry_run = opts.dry_run || self.skip_push;
            let engine = Engine::new(opts, live.clone());
            // Several packages at once through the one engine: a directory of many small
            // packages is otherwise bound by per-package round trips, not by the link. The
            // report keeps the packages' order.
            let (engine_ref, progress_ref) = (&engine, &progress);
            let skip_push = self.skip_push;
            let publishers = self.publishers;
            let chart_repo = self.chart_repo;
            let (live_ref, dry_run) = (&live, self.dry_run);
            report.packages = futures::stream::iter(self.packages)
                .map(|pkg| async move {
                    let mut outcome = engine_ref.push_package(pkg, progress_ref).await;
                    if skip_push {
                        require_present(&mut outcome);
                    }
                    if let Some(repo) = chart_repo {
                        push_charts(pkg, &mut outcome, live_ref, repo, dry_run || skip_push).await;
                    }
                    for publisher in publishers {
                        publisher.publish(&mut outcome).await;
                    }
                    outcome
                })
                .buffered(self.packages_at_once.max(1))
                .collect()
                .await;
            progress.finish();
        }
        report.seconds = started.elapsed().as_secs_f64();
        let sum = |f: fn(&crate::sink::Counters) -> u64| {
            self.registries.iter().map(|r| f(&r.counters)).sum()
        };
        use std::sync::atomic::Ordering::Relaxed;
        report.totals.bytes_sent = sum(|c| c.bytes_sent.load(Relaxed));
        report.totals.retries = sum(|c| c.retries.load(Relaxed));
        report.totals.requests = sum(|c| c.requests.load(Relaxed));
        report.finish();
        if report.exit_code == 130 && stop.signal() == Some(15) {
            report.exit_code = 143;
        }
        report
    }
}

/// First SIGINT/SIGTERM: stop starting uploads, finish those in flight, print the summary.
/// Second: exit at once.
pub async fn watch_signals(stop: crate::engine::Stop) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    loop {
        let sig = tokio::select! {
            _ = int.recv() => 2,
            _ = term.recv() => 15,
        };
        if stop.requested() {
            eprintln!("second signal: exiting now");
            std::process::exit(128 + sig);
        }
        stop.request(sig);
        eprintln!(
            "stopping: no new uploads; finishing those in flight (signal again to quit at once)"
        );
    }
}

/// Pushes the chart archives of a chart package (`charts/*.tgz`) to every registry as Helm
/// OCI artifacts (`<registry>/<repo>/<chart>:<version>`) and reports each as an image whose
/// source is the chart file. Only after the package's images went up: a package that failed
/// gets no chart either. With `check_only` (dry run, `--skip-push`) nothing is written.
async fn push_charts(
    pkg: &Package,
    report: &mut PackageReport,
    registries: &[Arc<Registry>],
    repo_prefix: &str,
    check_only: bool,
) {
    if report.kind != "chart" || report.error.is_some() {
        return;
    }
    if report
        .images
        .iter()
        .any(|i| i.status == ImageStatus::Failed)
    {
        return;
    }
    let mut charts = report.charts.clone();
    if charts.is_empty() {
        let reader = pkg.clone();
        match tokio::task::spawn_blocking(move || reader.list_charts()).await {
            Ok(Ok(found)) => charts = found,
            Ok(Err(e)) => {
                report.error = Some((&e).into());
                return;
            }
            Err(e) => {
                report.error =
                    Some((&Error::internal(format!("chart reader crashed: {e}"))).into());
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
                report.error = Some((&e).into());
                return;
            }
        };
        let repo = format!("{}/{}", repo_prefix.trim_matches('/'), chart.name);
        let tag = chart.version.replace('+', "_");
        for registry in registries {
            let r = push_chart(registry, &repo, &tag, &chart, check_only).await;
            let (status, error) = match r {
                Ok(s) => (s, None),
                Err(e) => (
                    ImageStatus::Failed,
                    Some((&e.context(format!("package {}: chart {file}", report.file))).into()),
                ),
            };
            report.images.push(crate::report::ImageReport {
                source: file.clone(),
                destination: format!("{}/{repo}:{tag}", registry.label()),
                digest: chart.manifest.0.to_string(),
                status,
                error,
            });
        }
    }
}

async fn push_chart(
    registry: &Registry,
    repo: &str,
    tag: &str,
    chart: &crate::source::chart::HelmArtifact,
    check_only: bool,
) -> Result<ImageStatus, Error> {
    if registry.manifest_digest(repo, tag).await?.as_deref() == Some(chart.manifest.0.as_str()) {
        return Ok(ImageStatus::Present);
    }
    if check_only {
        return Ok(ImageStatus::Planned);
    }
    for (digest, bytes) in [&chart.config, &chart.layer] {
        if !registry.blob_exists(repo, digest).await? {
            registry.upload_whole(repo, digest, bytes.clone()).await?;
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
    Ok(ImageStatus::Pushed)
}

/// Writes the Marketplace resources of pushed packages.
pub struct Publisher {
    pub platform: Arc<Platform>,
    /// Registry host[:port] the images went to (written into the Artifact).
    pub registry_host: String,
    /// Repository prefix in that registry (`--dest-repo host/prefix`), empty for none.
    pub registry_prefix: String,
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
        // only this side's registry matters: a failed standby image does not hold back the
        // primary's resources, nor the other way round
        let label = if self.registry_prefix.is_empty() {
            format!("{}/", self.registry_host)
        } else {
            format!("{}/{}/", self.registry_host, self.registry_prefix)
        };
        let missing = report
            .images
            .iter()
            .filter(|i| i.destination.starts_with(&label))
            .filter(|i| i.status == ImageStatus::Failed || i.error.is_some())
            .count();
        let reached = report
            .images
            .iter()
            .filter(|i| i.destination.starts_with(&label))
            .count();
        if !report.images.is_empty() && reached == 0 {
            report.resources_skipped = Some(format!(
                "no image of the package reached registry {}",
                label.trim_end_matches('/')
            ));
            return;
        }
        if report.error.is_some() || missing > 0 {
            let why = if missing > 0 {
                format!(
                    "{missing} image(s) of the package are not in registry {}",
                    label.trim_end_matches('/')
                )
            } else {
                "the package failed before its images were pushed".to_string()
            };
            report.resources_skipped = Some(match report.resources_skipped.take() {
                Some(before) => format!("{before}; {why}"),
                None => why,
            });
            return;
        }
        let Some(meta) = report.meta.clone() else {
            return;
        };
        let chart_ref = report
            .images
            .iter()
            .filter(|i| i.source.starts_with("charts/"))
            .find_map(|i| i.destination.strip_prefix(&label).map(str::to_string));
        let spec = match self.spec(&meta, chart_ref.as_deref()) {
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
        let host = self.platform.host();
        for outcomes in futures::future::join_all(writes).await {
            report.resources.extend(outcomes.iter().map(|o| {
                let mut r = ResourceReport::from(o);
                r.platform = host.clone();
                r
            }));
        }
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
            kind: meta.spec.kind.clone(),
            version: meta.metadata.version.clone(),
            registry: self.registry_host.clone(),
            repository: if self.registry_prefix.is_empty() {
                repository
            } else {
                format!("{}/{repository}", self.registry_prefix)
            },
            tag,
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
