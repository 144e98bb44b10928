//! One run over packages: the registries checked, each package through the engine (to every
//! destination at once), then the steps after the transfer, and the report:
//!
//! ```text
//! cli ──► pipeline::Run ──► engine (transfer) ──► PackageOutcome
//!                               ──► charts step (Helm OCI artifacts, added as images)
//!                               ──► publish step, per platform side ──► Publication
//!                           ──► report::PackageReport::build(outcome, publications)
//! ```
//!
//! Contract: a step reads the [`PackageOutcome`] the engine produced (its images' states per
//! destination and the package metadata). The chart step adds its artifacts to it as images;
//! the publishing step returns a
//! [`Publication`](crate::platform::artifacts::Publication). The report is built from both at the end.
//! No step reaches into the engine, the sink or the source.

mod charts;
mod publish;

pub use publish::Publisher;

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use crate::engine::{Engine, EngineOptions, ImageState, PackageOutcome};
use crate::error::Error;
use crate::report::progress::Progress;
use crate::report::{ErrorReport, PackageReport, RunReport, Totals};
use crate::sink::{Registry, RegistryApi};
use crate::source::Package;

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
    /// Why a DR side was left out before the run started (its platform failed): reported,
    /// and in the exit code, while the other side goes on.
    pub left_out: Option<Error>,
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
            error: self.left_out.as_ref().map(ErrorReport::from),
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
                        charts::push_charts(
                            pkg,
                            &mut outcome,
                            live_ref,
                            repo,
                            dry_run || skip_push,
                        )
                        .await;
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
