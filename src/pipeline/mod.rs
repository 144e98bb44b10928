//! One run over packages: the registries checked, each package through the engine (to every
//! destination at once), then the steps after the transfer, and the report:
//!
//! ```text
//! cli ──► pipeline::Run { targets } ──► engine (transfer, charts included) ──► PackageOutcome
//!                               ──► publish step, per target with a platform ──► Publication
//!                           ──► report::PackageReport::build(outcome, publications)
//! ```
//!
//! Contract: a step reads the [`PackageOutcome`] the engine produced (its images' states per
//! destination and the package metadata); the publishing step returns a
//! [`Publication`](crate::platform::artifacts::Publication). The report is built from both at
//! the end. No step reaches into the engine, the sink or the source: a chart package's
//! charts are images of the package (`source::chart::ChartImages`, a source addition), so
//! they travel the engine's one transfer path to every target.

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

/// Which side of a DR pair a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    /// The DR standby: when its registry does not answer it is left out, and the primary
    /// still gets everything.
    Standby,
}

/// One place a run writes to: a registry, and the platform whose Marketplace gets the
/// resources of what reached that registry, if any.
pub struct Target {
    pub role: Role,
    pub registry: Arc<Registry>,
    pub publisher: Option<Publisher>,
}

impl Target {
    /// A registry only (no platform resources).
    pub fn registry(role: Role, registry: Arc<Registry>) -> Self {
        Target {
            role,
            registry,
            publisher: None,
        }
    }
}

/// What a run does with the packages (`--dry-run`, `--skip-push`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Push the images, write the resources.
    Push,
    /// Change nothing: plan the pushes and the resources.
    DryRun,
    /// Check that the images are in the registries (pushing none), then write the resources
    /// (or, with `dry_run`, plan them).
    SkipPush { dry_run: bool },
}

impl Mode {
    pub fn from_flags(dry_run: bool, skip_push: bool) -> Self {
        match (dry_run, skip_push) {
            (_, true) => Mode::SkipPush { dry_run },
            (true, false) => Mode::DryRun,
            (false, false) => Mode::Push,
        }
    }

    /// Whether the engine sends anything.
    pub fn transfers(self) -> bool {
        self == Mode::Push
    }

    /// Whether nothing is written anywhere (registries nor platforms).
    pub fn is_dry_run(self) -> bool {
        matches!(self, Mode::DryRun | Mode::SkipPush { dry_run: true })
    }
}

/// One run over packages: check every registry, push each package through one engine (to
/// every target at once), then the after-push steps; the report of it all.
pub struct Run<'a> {
    pub packages: &'a [Package],
    /// Primary first.
    pub targets: &'a [Target],
    pub engine: EngineOptions,
    /// Charts of chart packages go to this repository of every registry as Helm OCI
    /// artifacts (`--target-chartrepo`); None: charts are not pushed.
    pub chart_repo: Option<&'a str>,
    pub mode: Mode,
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
            dry_run: self.mode.is_dry_run(),
            destinations: self
                .targets
                .iter()
                .map(|t| t.registry.host.clone())
                .collect(),
            packages: Vec::new(),
            totals: Totals::default(),
            seconds: 0.0,
            throughput_mb_s: 0.0,
            estimate: None,
            error: self.left_out.as_ref().map(ErrorReport::from),
        };
        let packages: Vec<Package> = self
            .packages
            .iter()
            .map(|pkg| match self.chart_repo {
                Some(repo) => pkg.with_charts(repo),
                None => pkg.clone(),
            })
            .collect();
        tokio::spawn(watch_signals(stop.clone()));
        if self.targets.len() == 1 {
            // One registry: its check and the packages' reading and surveys go at once. The
            // sink holds every request until the check has answered, but HEADs, sent at once
            // without credentials and taken only from a registry that wants none
            // (`Registry::ahead_of_check`); a refused check ends the run with its error, the
            // work prepared meanwhile dropped.
            let progress = self.progress(&[0]);
            let pushed = {
                let check = checked(&self.targets[0].registry, &stop);
                let push = self.push_packages(&packages, &[0], &progress);
                tokio::pin!(check, push);
                tokio::select! {
                    // the check first: on the wire before the packages are read
                    biased;
                    checked = &mut check => match checked {
                        Ok(()) => Ok(push.await),
                        Err(e) => Err(e),
                    },
                    // only a push that needed no request ends first; its check still decides
                    pushed = &mut push => check.await.map(|()| pushed),
                }
            };
            progress.finish();
            match pushed {
                Ok(packages) => report.packages = packages,
                Err(e) => report.error = Some(ErrorReport::from(&refused(&self.targets[0], e))),
            }
        } else {
            // The primary registry must answer; a DR standby that does not is reported and
            // left out, so that the primary still gets everything. All are asked at once.
            let checks =
                futures::future::join_all(self.targets.iter().map(|t| checked(&t.registry, &stop)))
                    .await;
            // indices into `targets` of those that answered: the engine's destinations
            let mut live: Vec<usize> = Vec::new();
            for ((i, target), check) in self.targets.iter().enumerate().zip(checks) {
                match check {
                    Ok(()) => live.push(i),
                    Err(e) => {
                        report.error = Some(ErrorReport::from(&refused(target, e)));
                        if target.role == Role::Primary {
                            live.clear();
                            break;
                        }
                    }
                }
            }
            if !live.is_empty() {
                let progress = self.progress(&live);
                report.packages = self.push_packages(&packages, &live, &progress).await;
                progress.finish();
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        let sum = |f: fn(&crate::sink::Counters) -> u64| {
            self.targets.iter().map(|t| f(&t.registry.counters)).sum()
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

    fn progress(&self, live: &[usize]) -> Progress {
        let counters = live
            .iter()
            .map(|&i| self.targets[i].registry.counters.clone());
        Progress::start(counters.collect(), self.quiet)
    }

    /// Every package through one engine to the `live` targets (indices into `targets`, in
    /// order: the engine's destinations), then each target's publishing step.
    async fn push_packages(
        &self,
        packages: &[Package],
        live: &[usize],
        progress: &Progress,
    ) -> Vec<PackageReport> {
        let mut opts = self.engine.clone();
        opts.dry_run = !self.mode.transfers();
        let apis = live
            .iter()
            .map(|&i| self.targets[i].registry.clone() as Arc<dyn RegistryApi>);
        let engine = Engine::new(opts, apis.collect());
        // Several packages at once through the one engine: a directory of many small
        // packages is otherwise bound by per-package round trips, not by the link. The
        // report keeps the packages' order.
        let (engine, targets, mode) = (&engine, self.targets, self.mode);
        futures::stream::iter(packages)
            .map(|pkg| async move {
                let mut outcome = engine.push_package(pkg, progress).await;
                if let Mode::SkipPush { .. } = mode {
                    require_present(&mut outcome);
                }
                let mut publications = Vec::new();
                for (i, target) in targets.iter().enumerate() {
                    let Some(publisher) = &target.publisher else {
                        continue;
                    };
                    // the engine's destinations are the live targets, in order
                    let dest = live
                        .iter()
                        .position(|&l| l == i)
                        .and_then(|d| outcome.destinations.get(d));
                    // resources only once the registry's check has answered (a push to one
                    // registry starts before); a refused check is the run's error
                    if dest.is_some() && target.registry.check().await.is_err() {
                        continue;
                    }
                    let side = publish::Side {
                        label: target.registry.label(),
                        dest,
                        dry_run: mode.is_dry_run(),
                    };
                    publications.push(publisher.publish(&outcome, side).await);
                }
                PackageReport::build(&outcome, &publications)
            })
            .buffered(self.packages_at_once.max(1))
            .collect()
            .await
    }
}

/// The registry's check, given up at a Ctrl-C: a check held by a stalled registry would
/// otherwise hold the signal for --timeout (nothing has been sent yet, so nothing is left
/// half-done). The registry then answers every waiting request with "interrupted".
async fn checked(registry: &Registry, stop: &crate::engine::Stop) -> crate::error::Result<()> {
    tokio::select! {
        biased;
        r = registry.check() => r,
        _ = stop.requested_wait() => Err(Error::new(
            crate::error::ErrorKind::Interrupted,
            format!(
                "interrupted while checking registry {}; nothing was sent: run the same \
                 command again",
                registry.host
            ),
        )),
    }
}

/// A target whose registry check failed: a DR standby is left out of the run (and said so),
/// the primary ends it.
fn refused(target: &Target, e: Error) -> Error {
    if target.role == Role::Primary {
        return e;
    }
    let e = e.context("DR standby left out of this run");
    tracing::error!("{}", e.message);
    e
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

#[cfg(test)]
mod tests {
    use super::Mode;

    #[test]
    fn modes_from_the_flags() {
        assert_eq!(Mode::from_flags(false, false), Mode::Push);
        assert!(Mode::Push.transfers() && !Mode::Push.is_dry_run());
        assert_eq!(Mode::from_flags(true, false), Mode::DryRun);
        let skip = Mode::from_flags(false, true);
        assert!(!skip.transfers() && !skip.is_dry_run());
        let both = Mode::from_flags(true, true);
        assert_eq!(both, Mode::SkipPush { dry_run: true });
        assert!(!both.transfers() && both.is_dry_run());
    }
}
