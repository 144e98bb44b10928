//! Kill and resume, signals. Bytes "on the wire" are counted by the proxy in front of the
//! registry (common/proxy.rs); what landed is checked with skopeo.

mod common;

use common::proxy::{Fault, Proxy, Rule};
use common::*;
use ferry::devtools::LayoutWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

const MB: u64 = 1_000_000;

/// One image with one large layer, packed as a .tgz.
fn one_big_blob(dir: &Path, size: usize) -> (PathBuf, u64) {
    let src = dir.join("src");
    let mut w = LayoutWriter::create(&src.join("layout")).unwrap();
    let layer = w.layer(4242, size, false).unwrap();
    let m = w
        .image("huge", "amd64", std::slice::from_ref(&layer), false)
        .unwrap();
    w.tag(&m, "registry.alauda.cn:60080/acp/huge:v1");
    w.finish().unwrap();
    write_package_yaml(&src, "huge");
    let tgz = dir.join("huge.amd64.v1.0.0.tgz");
    pack(&src.join("layout"), &src, &tgz);
    (tgz, layer.size)
}

/// Several images with several layers each, packed as a .tgz.
fn many_blobs(dir: &Path) -> (PathBuf, u64) {
    let src = dir.join("src");
    let mut w = LayoutWriter::create(&src.join("layout")).unwrap();
    let mut total = 0;
    for i in 0..6u64 {
        let mut layers = Vec::new();
        for j in 0..3u64 {
            let l = w
                .layer(
                    100 + i * 10 + j,
                    (1 + (i + j) % 4) as usize * 1_500_000,
                    false,
                )
                .unwrap();
            total += l.size;
            layers.push(l);
        }
        let m = w.image("many", "amd64", &layers, false).unwrap();
        w.tag(&m, &format!("registry.alauda.cn:60080/acp/many{i}:v1"));
    }
    w.finish().unwrap();
    write_package_yaml(&src, "many");
    let tgz = dir.join("many.amd64.v1.0.0.tgz");
    pack(&src.join("layout"), &src, &tgz);
    (tgz, total)
}

fn push_args(pkg: &Path, proxy: &Proxy, state: &Path, chunk_mb: &str) -> Vec<String> {
    [
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &proxy.host(),
        "--plain",
        "--chunk-size-mb",
        chunk_mb,
        "--retry-base-ms",
        "20",
        "--state-dir",
        state.to_str().unwrap(),
        "--output",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn a_killed_push_resumes_inside_a_large_blob() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, size) = one_big_blob(dir.path(), 240_000_000);
    let reg = Registry::start(RegistryOpts::default());
    // 8 MiB chunks: hold the 18th chunk (~63% of the blob) and kill ferry while it waits
    let proxy = Proxy::start(
        reg.port,
        vec![Rule::new("PATCH", "/blobs/uploads/", Fault::Hold).skip(17)],
    );
    let state = dir.path().join("state");
    let mut child = ferry_spawn(&push_args(&pkg, &proxy, &state, "8"));
    wait_for(120, "the push to reach ~60%", || {
        proxy.stats.holding.load(Ordering::SeqCst)
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let first = proxy.bytes();
    assert!(
        std::fs::read_dir(&state).unwrap().count() >= 1,
        "no upload session was recorded"
    );

    proxy.set_rules(vec![]);
    proxy.reset_bytes();
    let run = ferry(&push_args(&pkg, &proxy, &state, "8"));
    assert_eq!(run.code, 0, "{}", run.all());
    let resent = proxy.bytes();
    println!(
        "blob {} MB: first run sent {} MB before the kill; the re-run sent {} MB",
        size / MB,
        first / MB,
        resent / MB
    );
    assert!(
        first > size / 2,
        "the kill came too early: {first} of {size}"
    );
    assert!(
        resent < size / 2,
        "re-run sent {resent} bytes of a {size}-byte blob: it did not resume"
    );
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "finished sessions must be forgotten"
    );
    reg.skopeo_copy_back("acp/huge:v1", &dir.path().join("copy"));
}

#[test]
fn sigkill_at_several_points_then_rerun_completes_and_resends_only_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, total) = many_blobs(dir.path());
    let images: Vec<(String, Vec<u8>)> = package_images(&pkg);
    for (k, fraction) in [0.2, 0.5, 0.8].into_iter().enumerate() {
        let reg = Registry::start(RegistryOpts::default());
        let proxy = Proxy::start(reg.port, vec![]);
        let state = dir.path().join(format!("state{k}"));
        let mut child = ferry_spawn(&push_args(&pkg, &proxy, &state, "1"));
        let target = (total as f64 * fraction) as u64;
        wait_for(120, "progress", || proxy.bytes() >= target);
        child.kill().unwrap();
        child.wait().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let present: u64 = stored_blobs(&reg).values().sum();
        proxy.reset_bytes();
        let run = ferry(&push_args(&pkg, &proxy, &state, "1"));
        assert_eq!(run.code, 0, "{}", run.all());
        let resent = proxy.bytes();
        let missing = total.saturating_sub(present);
        println!(
            "kill at {:.0}%: registry held {} of {} blob bytes; re-run sent {} (missing {})",
            fraction * 100.0,
            present,
            total,
            resent,
            missing
        );
        // at most the blobs not committed at the kill, plus manifests and configs (< 64 kB)
        assert!(
            resent <= missing + 64_000,
            "re-run re-sent {resent} bytes, but only {missing} were missing"
        );
        for (r, manifest) in &images {
            assert_eq!(&reg.skopeo_raw(&path_of(r)).unwrap(), manifest);
        }
    }
}

#[test]
fn sigint_finishes_in_flight_prints_a_summary_and_a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, total) = many_blobs(dir.path());
    let reg = Registry::start(RegistryOpts::default());
    let proxy = Proxy::start(reg.port, vec![]);
    let state = dir.path().join("state");
    let signal = |child: &std::process::Child, sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };

    let child = ferry_spawn(&push_args(&pkg, &proxy, &state, "1"));
    wait_for(120, "progress", || proxy.bytes() >= total / 3);
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert!(report.to_string().contains("interrupted"), "{report}");
    // whatever it pushed is complete and correct
    for img in report["packages"][0]["images"].as_array().unwrap() {
        if img["status"] == "pushed" {
            let dest = img["destination"]
                .as_str()
                .unwrap()
                .split_once('/')
                .unwrap()
                .1
                .to_string();
            assert!(reg.skopeo_raw(&dest).is_some());
        }
    }

    // SIGTERM: exit 143
    proxy.set_rules(vec![Rule::new("PATCH", "/blobs/uploads/", Fault::Hold)]);
    let child = ferry_spawn(&push_args(&pkg, &proxy, &state, "1"));
    wait_for(120, "a held upload", || {
        proxy.stats.holding.load(Ordering::SeqCst)
    });
    signal(&child, "-TERM");
    std::thread::sleep(std::time::Duration::from_millis(300));
    // the held upload cannot finish: a second signal must end it at once
    let started = std::time::Instant::now();
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    assert!(
        started.elapsed().as_secs() < 5,
        "second signal did not exit at once"
    );

    proxy.set_rules(vec![]);
    let run = ferry(&push_args(&pkg, &proxy, &state, "1"));
    assert_eq!(run.code, 0, "{}", run.all());
}
