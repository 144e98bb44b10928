//! The streaming ceiling: ferry alone, pushing into a registry that throws the bytes away
//! (tests/common/discard.rs), so that neither a registry's disk nor its hashing is in the
//! way. Run by scripts/bench.sh (`cargo bench --bench ceiling`); prints a Markdown table of
//! MB/s and CPU seconds per GB for the same corpus packed with gzip -1 and with level 0.
//! Under `cargo test --all-targets` it runs once on a tiny corpus (every push must succeed;
//! nothing is timed against a limit there).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::discard::Discard;
use common::*;

fn cpu_children() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (images, scale) = if benching {
        ("12", "1.0")
    } else {
        ("2", "0.02")
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("corpus");
    let run = ferry(&[
        "dev",
        "corpus",
        src.to_str().unwrap(),
        "--images",
        images,
        "--scale",
        scale,
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let blob_bytes: u64 = run.stdout.trim().parse().unwrap();
    println!("| package | wall s | MB/s (blob bytes) | CPU s | CPU s per GB |");
    println!("|---|---:|---:|---:|---:|");
    for level in ["1", "0"] {
        let tgz = dir.path().join(format!("corpus-{level}.tgz"));
        let run = pack_with(
            &src.join("layout"),
            &src,
            &tgz,
            &["--compression-level", level],
        );
        assert_eq!(run.code, 0, "{}", run.all());
        let sink = Discard::start();
        let cpu0 = cpu_children();
        let t = Instant::now();
        let run = ferry(&[
            "push",
            tgz.to_str().unwrap(),
            "--dest-repo",
            &sink.host(),
            "--plain",
            "--quiet",
        ]);
        let wall = t.elapsed().as_secs_f64();
        let cpu = cpu_children() - cpu0;
        assert_eq!(run.code, 0, "{}", run.all());
        let got = sink
            .counts
            .body_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            got >= blob_bytes,
            "the registry received {got} of {blob_bytes} bytes"
        );
        println!(
            "| gzip -{level} ({:.0} MB) | {wall:.2} | {:.0} | {cpu:.2} | {:.2} |",
            std::fs::metadata(&tgz).unwrap().len() as f64 / 1e6,
            blob_bytes as f64 / 1e6 / wall,
            cpu / (blob_bytes as f64 / 1e9),
        );
    }
}
