//! Following a requested upgrade until it is Ready, failed, or the deadline passed.

use std::time::{Duration, Instant};

use super::{progress, read, Progress};
use crate::error::Error;
use crate::platform::Cluster;

/// How following a cluster ended.
#[derive(Debug)]
pub enum Watched {
    Ready,
    /// Degraded or Stalled: why (stage, failed operation, the condition's message).
    Failed(String),
    /// The deadline passed: where it was last seen.
    TimedOut(String),
    /// A read failed for good (not a transient error: those are reported and waited out).
    Error(Error),
}

/// Reads `name`'s ClusterVersionShadow every `poll` until the upgrade to `to` (written as
/// `generation`) is Ready or failed, or `deadline` passed; `report` gets where it stands at
/// every poll (the caller shows a live line, or prints the changes).
pub async fn follow(
    global: &Cluster,
    name: &str,
    to: &str,
    generation: i64,
    (deadline, poll): (Instant, Duration),
    mut report: impl FnMut(&str),
) -> Watched {
    let mut last = String::new();
    loop {
        match read(global, name).await {
            Ok(now) => match progress(&now, to, generation) {
                Progress::Ready => return Watched::Ready,
                Progress::Failed(why) => return Watched::Failed(why),
                Progress::Running(line) => {
                    report(&line);
                    last = line;
                }
            },
            Err(e) if e.retryable => report(&format!("{} (still waiting)", e.message)),
            Err(e) => return Watched::Error(e),
        }
        let now = Instant::now();
        if now >= deadline {
            return Watched::TimedOut(format!("--timeout passed; last seen: {last}"));
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}
