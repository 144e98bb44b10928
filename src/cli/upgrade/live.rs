//! How `ferry upgrade --wait` shows progress: on a terminal one live line per cluster
//! (indicatif, as push's progress: stage, operations finished / total, elapsed), redrawn at
//! every poll; otherwise (a log, a pipe) one plain line per change.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The run's progress display: live lines on a terminal, plain lines otherwise.
pub(super) struct Live {
    bars: Option<MultiProgress>,
}

impl Live {
    /// `quiet`: JSON output (plain lines on stderr only, never a live display).
    pub(super) fn new(quiet: bool) -> Live {
        let tty = std::io::stderr().is_terminal() && !quiet;
        Live {
            bars: tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// A message line (above the live lines, which stay at the bottom).
    pub(super) fn say(&self, text: &str) {
        match &self.bars {
            Some(mp) => {
                let _ = mp.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    /// The line of one cluster being followed.
    pub(super) fn cluster(&self, label: &str) -> ClusterLine<'_> {
        let bar = self.bars.as_ref().map(|mp| {
            let b = mp.add(ProgressBar::new_spinner());
            b.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        ClusterLine {
            live: self,
            label: label.to_string(),
            bar,
            begun: Instant::now(),
            last: String::new(),
        }
    }
}

pub(super) struct ClusterLine<'a> {
    live: &'a Live,
    label: String,
    bar: Option<ProgressBar>,
    begun: Instant,
    last: String,
}

impl ClusterLine<'_> {
    /// Where the cluster stands now (`state`: one line of
    /// [`crate::platform::upgrade::progress`]); `run_secs`: seconds since the run started,
    /// for the plain lines.
    pub(super) fn update(&mut self, state: &str, run_secs: u64) {
        match &self.bar {
            Some(b) => b.set_message(live_line(&self.label, state, self.begun.elapsed())),
            None if state != self.last => eprintln!("{}: {state} [{run_secs}s]", self.label),
            None => {}
        }
        self.last = state.to_string();
    }

    /// The end: the live line gives way to `text` (printed once either way).
    pub(super) fn finish(self, text: &str) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        self.live.say(text);
    }
}

/// One cluster's live line: `<cluster>  <where it stands>  <elapsed>`, the elapsed time as
/// `42s`, `3m07s` or `1h05m`.
pub(super) fn live_line(label: &str, state: &str, elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    let took = match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    };
    format!("{label}: {state}, {took}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_line_names_the_cluster_the_stage_the_operations_and_the_time() {
        let state = "stage 2/3 ControlPlane Running (1/2 operations finished)";
        assert_eq!(
            live_line("region1", state, Duration::from_secs(187)),
            "region1: stage 2/3 ControlPlane Running (1/2 operations finished), 3m07s"
        );
        assert!(live_line("global (standby)", state, Duration::from_secs(9)).ends_with(", 9s"));
        assert!(live_line("g", state, Duration::from_secs(3900)).ends_with(", 1h05m"));
    }
}
