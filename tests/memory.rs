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

/// A level-0 .tgz whose first member is an extension entry (`kind`: GNU long name or PAX
/// records) of `size` bytes, followed by a small package.yaml.
fn huge_extension(out: &std::path::Path, kind: tar::EntryType, size: u64) {
    use std::io::Write;
    let f = std::fs::File::create(out).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::none());
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    gz.write_all(h.as_bytes()).unwrap();
    let block = vec![b'a'; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        gz.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    gz.write_all(&vec![0u8; ((512 - size % 512) % 512) as usize])
        .unwrap();
    let yaml = b"apiVersion: ferry/v1\nkind: Package\nmetadata:\n  name: x\n  version: 1.0.0\nspec:\n  type: plugin\n";
    let mut h = tar::Header::new_gnu();
    h.set_path("package.yaml").unwrap();
    h.set_mode(0o644);
    h.set_size(yaml.len() as u64);
    h.set_cksum();
    gz.write_all(h.as_bytes()).unwrap();
    gz.write_all(yaml).unwrap();
    gz.write_all(&vec![0u8; 512 - yaml.len() % 512 + 1024])
        .unwrap();
    gz.finish().unwrap();
}

#[test]
fn huge_long_names_and_pax_records_are_refused_before_they_are_held() {
    let dir = tempfile::tempdir().unwrap();
    for (name, kind) in [
        ("longname.tgz", tar::EntryType::GNULongName),
        ("pax.tgz", tar::EntryType::XHeader),
    ] {
        let pkg = dir.path().join(name);
        huge_extension(&pkg, kind, 2 * BUDGET_BYTES);
        let run = ferry(&["show", pkg.to_str().unwrap()]);
        assert_eq!(run.code, 3, "{}", run.all());
        assert!(
            run.all().contains(
                "tar headers and extensions (PAX records, GNU long names) before one entry exceed 1048576 bytes"
            ),
            "{}",
            run.all()
        );
        std::fs::remove_file(&pkg).unwrap();
    }
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let peak = usage.ru_maxrss as u64 * 1024;
    assert!(
        peak < BUDGET_BYTES,
        "peak RSS {peak} over the budget {BUDGET_BYTES}"
    );
}
