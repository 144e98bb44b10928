//! Peak memory of a push stays under the stated budget for a package several times larger,
//! and for a package of a thousand images. Each ferry's own peak RSS comes from GNU time
//! (`/usr/bin/time -f %M`, which scripts/test.sh installs): the rusage of a child of this test
//! process would not do, as Linux carries the forking process's high-water mark into the
//! child's at exec, and this process holds the generated layers (it read 97 MB for a push
//! whose own peak is 65 MB); getrusage(RUSAGE_CHILDREN) also counts the registries of tests
//! running beside it.

mod common;

use common::*;
use ferry::devtools::LayoutWriter;

/// README "Bounds": at most 110 MiB for a push to one registry with the defaults.
const BUDGET_BYTES: u64 = 110 << 20;
/// README "Bounds": at most 130 MiB with a DR standby.
const DR_BUDGET_BYTES: u64 = 130 << 20;

/// Runs ferry with `args` under GNU time; the run and ferry's own peak RSS in bytes.
fn ferry_peak(args: &[&str]) -> (Run, u64) {
    let dir = tempfile::tempdir().unwrap();
    let rss = dir.path().join("maxrss");
    let mut timed = vec![
        "-f",
        "%M",
        "-o",
        rss.to_str().unwrap(),
        env!("CARGO_BIN_EXE_ferry"),
    ];
    timed.extend_from_slice(args);
    let home = scratch_home();
    let out = std::process::Command::new("/usr/bin/time")
        .args(&timed)
        .env("HOME", &home)
        .env("XDG_STATE_HOME", home.join("state"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("GNU time (/usr/bin/time; scripts/test.sh installs it)");
    let kib: u64 = std::fs::read_to_string(&rss)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("GNU time wrote the peak RSS");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, kib * 1024)
}

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
    let (run, peak) = ferry_peak(&[
        "push",
        tgz.to_str().unwrap(),
        "--dest-repo",
        &host,
        "--plain",
        "--quiet",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
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

/// What grows with the number of images (per-image graphs, configs and manifests held, the
/// survey's and the plan's per-blob state, one request per blob) must not carry the peak
/// past the budget: 1,000 images of ~5 blobs each (small blobs: the count is what matters;
/// the test above fills the chunk buffers), pushed to one registry, then to a primary and a
/// DR standby.
#[test]
fn peak_rss_stays_under_the_budget_for_a_thousand_images() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    ferry::devtools::scale_corpus(&src, 1000, 4, 7).unwrap();
    let tgz = dir.path().join("thousand.amd64.v1.0.0.tgz");
    pack(&src.join("layout"), &src, &tgz);
    std::fs::remove_dir_all(&src).unwrap();

    let one = Registry::start(RegistryOpts::default());
    let (run, peak) = ferry_peak(&[
        "push",
        tgz.to_str().unwrap(),
        "--dest-repo",
        &one.host(),
        "--plain",
        "--quiet",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("scale-0999"), "{}", run.all());
    println!(
        "1,000 images to one registry: peak RSS {} MB",
        peak / 1_000_000
    );
    assert!(
        peak < BUDGET_BYTES,
        "peak RSS {peak} over the budget {BUDGET_BYTES}"
    );

    let primary = Registry::start(RegistryOpts::default());
    let standby = Registry::start(RegistryOpts::default());
    let (run, peak) = ferry_peak(&[
        "push",
        tgz.to_str().unwrap(),
        "--dest-repo",
        &primary.host(),
        "--plain",
        "--standby-registry",
        &standby.host(),
        "--standby-plain",
        "--quiet",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let manifest = standby
        .skopeo_raw("bench/scale49/scale-0999:v1")
        .expect("the last image is on the standby");
    assert!(String::from_utf8_lossy(&manifest).contains("layers"));
    println!(
        "1,000 images to a primary and a standby: peak RSS {} MB",
        peak / 1_000_000
    );
    assert!(
        peak < DR_BUDGET_BYTES,
        "peak RSS {peak} over the DR budget {DR_BUDGET_BYTES}"
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
        let (run, peak) = ferry_peak(&["show", pkg.to_str().unwrap()]);
        assert_eq!(run.code, 3, "{}", run.all());
        assert!(
            run.all().contains(
                "tar headers and extensions (PAX records, GNU long names) before one entry exceed 1048576 bytes"
            ),
            "{}",
            run.all()
        );
        assert!(
            peak < BUDGET_BYTES,
            "peak RSS {peak} over the budget {BUDGET_BYTES}"
        );
        std::fs::remove_file(&pkg).unwrap();
    }
}
