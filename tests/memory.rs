//! Peak memory of a push stays under the stated budget for a package several times larger.
//! Its own test binary: getrusage(RUSAGE_CHILDREN) reports the largest child waited for, and
//! here that is only ferry (the registry is waited for after the measurement).

mod common;

use common::*;
use ferry::devtools::LayoutWriter;

/// README "Bounds": about 100 MiB worst case with the defaults.
const BUDGET_BYTES: u64 = 128 << 20;

#[test]
fn peak_rss_stays_under_the_budget_for_a_package_larger_than_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut w = LayoutWriter::create(&src.join("layout")).unwrap();
    let mut total = 0;
    for i in 0..4u64 {
        let layers: Vec<_> = (0..2u64)
            .map(|j| w.layer(500 + i * 2 + j, 45_000_000, false).unwrap())
            .collect();
        total += layers.iter().map(|l| l.size).sum::<u64>();
        let m = w.image("mem", "amd64", &layers, false).unwrap();
        w.tag(&m, &format!("registry.alauda.cn:60080/acp/mem{i}:v1"));
    }
    w.finish().unwrap();
    write_package_yaml(&src, "mem");
    let tgz = dir.path().join("mem.amd64.v1.0.0.tgz");
    pack(&src.join("layout"), &src, &tgz);
    std::fs::remove_dir_all(&src).unwrap();
    assert!(
        total > 2 * BUDGET_BYTES,
        "package must be larger than the budget"
    );

    let reg = Registry::start(RegistryOpts::default());
    let host = reg.host();
    let run = ferry(&[
        "push",
        tgz.to_str().unwrap(),
        "--dest-repo",
        &host,
        "--plain",
        "--quiet",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let peak = usage.ru_maxrss as u64 * 1024;
    println!(
        "pushed {} MB; peak RSS {} MB (budget {} MB)",
        total / 1_000_000,
        peak / 1_000_000,
        BUDGET_BYTES / 1_000_000
    );
    assert!(
        peak < BUDGET_BYTES,
        "peak RSS {peak} over the budget {BUDGET_BYTES}"
    );
}
