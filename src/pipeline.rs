//! The steps after the transfer: what happens to a package once the engine has reported on
//! its images. Today one step exists, [`Publisher`]: the package's platform resources, written
//! only when every image of the package is in the registry.
//!
//! Contract: a step reads the [`PackageOutcome`] the engine produced (its images' states per
//! destination and the package metadata). The chart step adds its artifacts to it as images;
//! the publishing step returns a [`Publication`]. The report is built from both at the end.
//! No step reaches into the engine, the sink or the source.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use crate::engine::{Engine, EngineOptions, ImageOutcome, ImageState, PackageOutcome};
use crate::error::Error;
use crate::platform::artifacts::{self, ArtifactSpec, Publication};
use crate::platform::Platform;
use crate::report::progress::Progress;
use crate::report::{ErrorReport, PackageReport, RunReport, Totals};
use crate::sink::{Registry, RegistryApi};
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
            let apis = live.iter().map(|r| r.clone() as Arc<dyn RegistryApi>);
            let engine = Engine::new(opts, apis.collect());
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
                    let mut publications = Vec::new();
                    for publisher in publishers {
                        publications.push(publisher.publish(&outcome).await);
                    }
                    PackageReport::build(&outcome, &publications)
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
    /// `host[:port][/prefix]` of this side's registry, as the engine labels destinations.
    fn registry_label(&self) -> String {
        if self.registry_prefix.is_empty() {
            self.registry_host.clone()
        } else {
            format!("{}/{}", self.registry_host, self.registry_prefix)
        }
    }

    /// Writes the package's resources on this side, or says why none were written. Only this
    /// side's registry matters: a failed standby image does not hold back the primary's
    /// resources, nor the other way round.
    pub async fn publish(&self, outcome: &PackageOutcome) -> Publication {
        let mut publication = Publication {
            platform: self.platform.host(),
            ..Default::default()
        };
        let label = self.registry_label();
        let images = outcome
            .destination(&label)
            .map_or(&[][..], |d| &d.images[..]);
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
        let clusters = match meta.spec.kind.as_str() {
            "bundle" => self.clusters.clone(),
            other => {
                if self.clusters_given && self.clusters != ["global"] {
                    publication.warnings.push(format!(
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
            publication.resources.extend(outcomes);
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
pub fn require_present(outcome: &mut PackageOutcome) {
    for d in &mut outcome.destinations {
        for i in &mut d.images {
            if matches!(i.state, ImageState::Planned) {
                i.state = ImageState::Failed(Error::new(
                    crate::error::ErrorKind::Registry,
                    format!(
                        "image {} is not in the registry: --skip-push writes resources only for \
                         packages whose images are all present; push without --skip-push first",
                        i.destination(&d.label)
                    ),
                ));
            }
        }
        d.plan = None;
        d.blobs = Default::default();
    }
}
