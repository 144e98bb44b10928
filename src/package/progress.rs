//! Progress of `build`: a bar (bytes, rate, ETA) on a terminal, a line every
//! `$FERRY_PROGRESS_INTERVAL` seconds (default 10) otherwise; on stderr either way.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Progress {
    written: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn start(total: u64) -> Progress {
        let written = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (w, d) = (written.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let terminal = std::io::stderr().is_terminal();
            let bar = terminal.then(|| {
                let b = indicatif::ProgressBar::new(total);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                    )
                    .expect("template"),
                );
                b
            });
            let every = std::env::var("FERRY_PROGRESS_INTERVAL")
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(Duration::from_secs(10), Duration::from_secs_f64);
            let start = Instant::now();
            let mut last = Instant::now();
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let n = w.load(Ordering::Relaxed);
                if let Some(b) = &bar {
                    b.set_position(n);
                } else if last.elapsed() >= every {
                    last = Instant::now();
                    let rate = n as f64 / start.elapsed().as_secs_f64().max(0.001);
                    eprintln!(
                        "written {} of {} layers ({}/s)",
                        crate::report::human_bytes(n),
                        crate::report::human_bytes(total),
                        crate::report::human_bytes(rate as u64)
                    );
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        Progress {
            written,
            done,
            thread: Some(thread),
        }
    }

    pub fn counter(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    pub fn stop(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
