//! Live progress. On a terminal: an overall bar (bytes, rate, ETA) and one line per package
//! (indicatif). Otherwise: a plain log line every few seconds (`FERRY_PROGRESS_INTERVAL`,
//! seconds, default 10), so that logs of unattended runs show movement.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::{Observer, PackageObserver};
use crate::sink::Counters;

pub struct Progress {
    total: Arc<AtomicU64>,
    counters: Vec<Arc<Counters>>,
    bars: Option<(MultiProgress, ProgressBar)>,
    current: Arc<Mutex<String>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    quiet: bool,
}

fn sent(counters: &[Arc<Counters>]) -> u64 {
    counters
        .iter()
        .map(|c| c.bytes_sent.load(Ordering::Relaxed))
        .sum()
}

impl Progress {
    /// `quiet`: no progress at all (JSON output, or `--quiet`).
    pub fn start(counters: Vec<Arc<Counters>>, quiet: bool) -> Self {
        let total = Arc::new(AtomicU64::new(0));
        let current = Arc::new(Mutex::new(String::new()));
        let tty = std::io::stderr().is_terminal() && !quiet;
        let bars = tty.then(|| {
            let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bar = mp.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("static template"),
            );
            (mp, bar)
        });
        let ticker = if let Some((_, bar)) = &bars {
            let (bar, counters, total) = (bar.clone(), counters.clone(), total.clone());
            Some(tokio::spawn(async move {
                loop {
                    // uploads start while the surveys still run: the total may lag behind
                    let s = sent(&counters);
                    bar.set_length(total.load(Ordering::Relaxed).max(s));
                    bar.set_position(s);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }))
        } else if !quiet {
            let every = std::env::var("FERRY_PROGRESS_INTERVAL")
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(10.0)
                .max(0.1);
            let (counters, total, current) = (counters.clone(), total.clone(), current.clone());
            Some(tokio::spawn(async move {
                let started = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_secs_f64(every)).await;
                    let s = sent(&counters);
                    let rate = s as f64 / started.elapsed().as_secs_f64().max(0.001) / 1e6;
                    let pkg = current.lock().map(|c| c.clone()).unwrap_or_default();
                    eprintln!(
                        "progress: {} of {} sent, {rate:.1} MB/s, {pkg}",
                        super::human_bytes(s),
                        super::human_bytes(total.load(Ordering::Relaxed).max(s)),
                    );
                }
            }))
        } else {
            None
        };
        Progress {
            total,
            counters,
            bars,
            current,
            ticker,
            quiet,
        }
    }

    pub fn finish(self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
        if let Some((_, bar)) = &self.bars {
            bar.set_position(sent(&self.counters));
            bar.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    /// A line for one package; returns a handle to update it.
    fn package(&self, label: &str) -> Box<dyn PackageObserver> {
        if let Ok(mut c) = self.current.lock() {
            *c = label.to_string();
        }
        let bar = self.bars.as_ref().map(|(mp, _)| {
            let b = mp.add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template("  {spinner} {msg}").expect("static template"),
            );
            b.enable_steady_tick(Duration::from_millis(150));
            b
        });
        Box::new(PackageLine {
            label: label.to_string(),
            bar,
            quiet: self.quiet,
        })
    }

    fn planned_bytes(&self, bytes: u64) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }
}

struct PackageLine {
    label: String,
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl PackageObserver for PackageLine {
    fn note(&self, status: &str) {
        match &self.bar {
            Some(b) => b.set_message(format!("{}: {status}", self.label)),
            None if !self.quiet => tracing::info!("{}: {status}", self.label),
            None => {}
        }
    }

    fn step(&self, status: &str) {
        match &self.bar {
            Some(b) => b.set_message(format!("{}: {status}", self.label)),
            None => tracing::debug!("{}: {status}", self.label),
        }
    }

    fn done(&self, status: &str) {
        match &self.bar {
            Some(b) => b.finish_with_message(format!("{}: {status}", self.label)),
            None if !self.quiet => tracing::info!("{}: {status}", self.label),
            None => {}
        }
    }
}
