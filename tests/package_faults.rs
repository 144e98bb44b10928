//! `ferry package build` when things go wrong or get interrupted: a corrupt blob from a faulty
//! proxy stops the build naming image and blob and leaves no output; a killed build run again
//! downloads only what it did not have (the registry's access log counts the requests); and
//! `--sign-key` makes a signature `ferry verify --require-signature` accepts (GnuPG's key).

mod common;
#[path = "common/package_source.rs"]
mod package_source;

use std::path::Path;
use std::process::Command;

use common::proxy::{Fault, Proxy, Rule};
use common::*;
use package_source::*;

/// A source registry behind a proxy: images are named with the proxy's address.
fn source_behind_proxy() -> (Registry, Proxy, Pusher) {
    let reg = Registry::start(RegistryOpts::default());
    let proxy = Proxy::start(reg.port, vec![]);
    let pusher = Pusher::new(reg.port, &proxy.host());
    (reg, proxy, pusher)
}

fn create(dir: &Path, artifact: &str) {
    let run = ferry(&[
        "package",
        "create",
        dir.to_str().unwrap(),
        "--artifact",
        artifact,
        "--platforms",
        "linux/amd64",
        "--plain",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
}

fn build_args<'a>(dir: &'a Path, out: &'a Path, cache: &'a Path) -> Vec<&'a str> {
    vec![
        "package",
        "build",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--plain",
        "--cache",
        cache.to_str().unwrap(),
        "--concurrency",
        "1",
    ]
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_corrupt_blob_stops_the_build_naming_image_and_blob_and_leaves_nothing() {
    let (_reg, proxy, mut p) = source_behind_proxy();
    let artifact = p.plugin();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("demo");
    create(&dir, &artifact);
    let bad = p.filled.layers[&("acp/worker".to_string(), "amd64".to_string())][1].clone();
    proxy.set_rules(vec![
        Rule::new("GET", bad.as_str(), Fault::CorruptBody).times(usize::MAX)
    ]);
    let out = work.path().join("out");
    let cache = work.path().join("cache");
    let run = ferry(&build_args(&dir, &out, &cache));
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("acp/worker:v1")
            && run.stderr.contains(bad.as_str())
            && run.stderr.contains("digest mismatch"),
        "{}",
        run.stderr
    );
    assert!(
        files_in(&out).is_empty(),
        "left behind: {:?}",
        files_in(&out)
    );
    assert!(!files_in(&cache.join("sha256"))
        .iter()
        .any(|f| f.starts_with(bad.hex())));
}

/// GET requests for blob `d` in the registry's access log, from byte `from` of the log on.
fn blob_gets(reg: &Registry, from: usize, d: &ferry::oci::Digest) -> usize {
    reg.log()[from..]
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{d}")))
        .count()
}

#[test]
fn a_killed_build_run_again_downloads_only_what_was_missing() {
    let (reg, proxy, mut p) = source_behind_proxy();
    let artifact = p.plugin();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("demo");
    create(&dir, &artifact);
    // the worker's own amd64 layer is the last layer written; hold its download
    let held = p.filled.layers[&("acp/worker".to_string(), "amd64".to_string())][1].clone();
    proxy.set_rules(vec![
        Rule::new("GET", held.as_str(), Fault::Hold).times(usize::MAX)
    ]);
    let out = work.path().join("out");
    let cache = work.path().join("cache");
    let mut layers: Vec<ferry::oci::Digest> = Vec::new();
    for ((_, arch), ls) in &p.filled.layers {
        for l in ls {
            if arch == "amd64" && !layers.contains(l) {
                layers.push(l.clone());
            }
        }
    }
    let mut child = ferry_spawn(&build_args(&dir, &out, &cache));
    let cached = || {
        layers
            .iter()
            .filter(|l| cache.join("sha256").join(l.hex()).exists())
            .count()
    };
    wait_for(60, "every other layer in the cache", || {
        cached() == layers.len() - 1
    });
    wait_for(20, "the held download", || {
        proxy
            .stats
            .holding
            .load(std::sync::atomic::Ordering::SeqCst)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("demo-plugin.amd64.v1.2.0.tgz").exists());

    proxy.set_rules(vec![]);
    let mark = reg.log().len();
    let run = ferry(&build_args(&dir, &out, &cache));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(out.join("demo-plugin.amd64.v1.2.0.tgz").exists());
    for l in &layers {
        let want = usize::from(l == &held);
        assert_eq!(
            blob_gets(&reg, mark, l),
            want,
            "GETs of {l} on the second run"
        );
    }
    // a damaged cache entry is noticed and fetched again
    let victim = layers.iter().find(|l| *l != &held).unwrap();
    let path = cache.join("sha256").join(victim.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let mark = reg.log().len();
    let run = ferry(&build_args(&dir, &out, &cache));
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(blob_gets(&reg, mark, victim), 1);
}

#[test]
fn ctrl_c_stops_the_build_with_exit_130_and_no_partial_file() {
    let (_reg, proxy, mut p) = source_behind_proxy();
    let artifact = p.plugin();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("demo");
    create(&dir, &artifact);
    let held = p.filled.layers[&("acp/worker".to_string(), "amd64".to_string())][1].clone();
    proxy.set_rules(vec![
        Rule::new("GET", held.as_str(), Fault::Hold).times(usize::MAX)
    ]);
    let out = work.path().join("out");
    let cache = work.path().join("cache");
    let child = ferry_spawn(&build_args(&dir, &out, &cache));
    wait_for(60, "the held download", || {
        proxy
            .stats
            .holding
            .load(std::sync::atomic::Ordering::SeqCst)
    });
    assert!(files_in(&out).iter().any(|f| f.ends_with(".partial")));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        files_in(&out).is_empty(),
        "left behind: {:?}",
        files_in(&out)
    );
}

#[test]
fn a_signed_build_passes_verify_require_signature() {
    let (_reg, _proxy, mut p) = source_behind_proxy();
    let artifact = p.plugin();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("demo");
    create(&dir, &artifact);
    let gnupg = tempfile::tempdir().unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .env("GNUPGHOME", gnupg.path())
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .expect("gpg is installed by scripts/test.sh");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    gpg(&[
        "--quick-gen-key",
        "Release <release@ferry.test>",
        "ed25519",
        "sign",
        "never",
    ]);
    let secret = work.path().join("release.key");
    std::fs::write(&secret, gpg(&["--armor", "--export-secret-keys"])).unwrap();
    let public = work.path().join("release.pub");
    std::fs::write(&public, gpg(&["--armor", "--export"])).unwrap();
    let out = work.path().join("out");
    let cache = work.path().join("cache");
    let mut args = build_args(&dir, &out, &cache);
    args.extend(["--sign-key", secret.to_str().unwrap()]);
    let run = ferry(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    let pkg = out.join("demo-plugin.amd64.v1.2.0.tgz");
    assert!(Path::new(&format!("{}.sig", pkg.display())).exists());
    let verify = ferry(&[
        "verify",
        pkg.to_str().unwrap(),
        "--require-signature",
        "--keyring",
        public.to_str().unwrap(),
    ]);
    assert_eq!(verify.code, 0, "{}", verify.all());
    // and GnuPG agrees
    let sig = format!("{}.sig", pkg.display());
    gpg(&["--verify", &sig, pkg.to_str().unwrap()]);
}
