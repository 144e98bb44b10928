//! Test harness: a real Distribution registry (Debian's `docker-registry`) on 127.0.0.1 with
//! a random port and temp storage, optionally with TLS and htpasswd; the ferry binary; and
//! skopeo as the independent client that checks what landed.
#![allow(dead_code)]

pub mod core_sync;
pub mod cvo;
pub mod discard;
pub mod platform;
pub mod proxy;
pub mod serve;
pub use serve::serve_in_background;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry::source::Package;

pub const USER: &str = "ferryadmin";
pub const PASSWORD: &str = "S3cr3t-Pa55word-do-not-log";

fn require(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{tool} is not installed: run scripts/test.sh, which installs docker-registry and skopeo"
    );
}

#[derive(Default, Clone)]
pub struct RegistryOpts {
    pub tls: bool,
    pub auth: bool,
    /// With `tls`: a certificate made by `openssl req -x509` (self-signed, `CA:TRUE`), as
    /// docker's registry docs tell users to make, instead of rcgen's.
    pub openssl_cert: bool,
    /// Listen on [::1] instead of 127.0.0.1.
    pub ipv6: bool,
    /// With `tls`: a self-signed `CA:TRUE` certificate (rcgen) that expired in 2021.
    pub expired_cert: bool,
}

pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
    pub opts: RegistryOpts,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start(opts: RegistryOpts) -> Registry {
        require("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\nhttp:\n  addr: \"{}:{port}\"\n",
            dir.path().display(),
            if opts.ipv6 { "[::1]" } else { "127.0.0.1" }
        );
        if opts.tls && opts.openssl_cert {
            let out = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .arg("-keyout")
                .arg(dir.path().join("key.pem"))
                .arg("-out")
                .arg(dir.path().join("ca.pem"))
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            cfg.push_str(&format!(
                "  tls:\n    certificate: {0}/ca.pem\n    key: {0}/key.pem\n",
                dir.path().display()
            ));
        } else if opts.tls {
            let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            if opts.expired_cert {
                params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            let cert = params.self_signed(&key).unwrap();
            std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
            std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
            cfg.push_str(&format!(
                "  tls:\n    certificate: {0}/ca.pem\n    key: {0}/key.pem\n",
                dir.path().display()
            ));
        }
        if opts.auth {
            let hash = bcrypt::hash(PASSWORD, 4).unwrap();
            std::fs::write(dir.path().join("htpasswd"), format!("{USER}:{hash}\n")).unwrap();
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}/htpasswd\n",
                dir.path().display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let started = Instant::now();
        let ip = if opts.ipv6 { "::1" } else { "127.0.0.1" };
        let mut child = child;
        // free_port's port is free only until someone else binds it: another test's server
        // may take it first, and then our connect reaches *that* server while ours exits
        // with "address already in use" (seen as a flake: the other test ended and our
        // "registry" vanished). A registry that exits at start is started again on another port.
        let lost_port = |child: &mut Child| {
            child.try_wait().ok().flatten().is_some()
                && std::fs::read_to_string(dir.path().join("registry.log"))
                    .unwrap_or_default()
                    .contains("address already in use")
        };
        loop {
            if lost_port(&mut child) {
                return Registry::start(opts);
            }
            if TcpStream::connect((ip, port)).is_ok() {
                std::thread::sleep(Duration::from_millis(150));
                if lost_port(&mut child) {
                    return Registry::start(opts);
                }
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "registry did not start: {}",
                std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            port,
            dir,
            child,
            opts,
        }
    }

    pub fn host(&self) -> String {
        if self.opts.ipv6 {
            format!("[::1]:{}", self.port)
        } else {
            format!("127.0.0.1:{}", self.port)
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Flags that let ferry reach this registry.
    pub fn push_flags(&self) -> Vec<String> {
        let mut v = vec!["--dest-repo".to_string(), self.host()];
        if self.opts.tls {
            v.push("--ca-file".into());
            v.push(self.ca().display().to_string());
        } else {
            v.push("--plain".into());
        }
        if self.opts.auth {
            v.extend([
                "--username".to_string(),
                USER.to_string(),
                "--password".to_string(),
                PASSWORD.to_string(),
            ]);
        }
        v
    }

    fn skopeo_auth(&self) -> Vec<String> {
        let mut v = vec!["--tls-verify=false".to_string()];
        if self.opts.auth {
            v.push(format!("--creds={USER}:{PASSWORD}"));
        }
        v
    }

    /// `skopeo inspect --raw`: the manifest bytes as the registry serves them, or None.
    pub fn skopeo_raw(&self, reference: &str) -> Option<Vec<u8>> {
        require("skopeo");
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg("--raw")
            .args(self.skopeo_auth())
            .arg(format!("docker://{}/{reference}", self.host()))
            .output()
            .unwrap();
        out.status.success().then_some(out.stdout)
    }

    /// `skopeo copy --all` of an image back to an OCI directory; panics with skopeo's output
    /// on failure.
    pub fn skopeo_copy_back(&self, reference: &str, into: &Path) {
        let mut args = vec![
            "copy".to_string(),
            "--all".to_string(),
            "--src-tls-verify=false".to_string(),
        ];
        if self.opts.auth {
            args.push(format!("--src-creds={USER}:{PASSWORD}"));
        }
        args.push(format!("docker://{}/{reference}", self.host()));
        args.push(format!("oci:{}:copy", into.display()));
        let out = Command::new("skopeo").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "skopeo copy {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn fixture(prefix: &str) -> PathBuf {
    let dir = fixtures();
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with(prefix)
                && p.extension().is_some_and(|x| x == "tgz")
        })
        .unwrap_or_else(|| panic!("no fixture {prefix}*.tgz"))
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the ferry binary with a clean environment (own HOME and state dir, no FERRY_*).
pub fn ferry<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    ferry_with(args, &[], None)
}

pub fn ferry_with<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Run {
    let out = ferry_command(args, env, stdin);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ferry_command<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    let home = scratch_home();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .env("HOME", &home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("FERRY_PROGRESS_INTERVAL", "0.2");
    for (k, _) in std::env::vars() {
        if k.starts_with("FERRY_") && k != "FERRY_PROGRESS_INTERVAL" || k == "REGISTRY_AUTH_FILE" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(s) = stdin {
        // a run that refuses before reading standard input closes the pipe first: its exit
        // code and message are the answer, a broken pipe here is not the harness failing
        if let Err(e) = child.stdin.take().unwrap().write_all(s.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// A HOME of its own per process of tests, so that no real docker login leaks in. Under
/// cargo's scratch directory for tests (target/tmp), not /tmp, where one left per test
/// process would pile up run after run.
pub fn scratch_home() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ferry-test-home-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// (reference, manifest bytes) of every image in a package, read with ferry's public API.
pub fn package_images(pkg: &Path) -> Vec<(String, Vec<u8>)> {
    let head = Package::open(pkg).unwrap().read_head().unwrap();
    head.images
        .iter()
        .map(|d| {
            (
                d.ref_name().unwrap().to_string(),
                head.docs[&d.digest].to_vec(),
            )
        })
        .collect()
}

/// `registry.alauda.cn:60080/acp/x:v1` → `acp/x:v1`
pub fn path_of(reference: &str) -> String {
    reference.split_once('/').unwrap().1.to_string()
}

/// Rewrites a .tgz, letting `edit` change or drop entries (path, bytes) → Some(new bytes) / None.
pub fn rewrite_tgz(src: &Path, dst: &Path, mut edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>) {
    let f = std::fs::File::open(src).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let out = std::fs::File::create(dst).unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        out,
        flate2::Compression::fast(),
    ));
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if let Some(new) = edit(&path, data) {
            let mut h = tar::Header::new_gnu();
            h.set_size(new.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, &path, new.as_slice()).unwrap();
        }
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// Starts the ferry binary without waiting (for kill and signal tests).
pub fn ferry_spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Child {
    let home = scratch_home();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .env("HOME", &home)
        .env("XDG_STATE_HOME", home.join("state"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sizes of the blobs the registry has committed (its storage tree), by hex digest.
pub fn stored_blobs(reg: &Registry) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    let root = reg.dir.path().join("data/docker/registry/v2/blobs/sha256");
    for prefix in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for blob in std::fs::read_dir(prefix.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(m) = std::fs::metadata(blob.path().join("data")) {
                out.insert(blob.file_name().to_string_lossy().into_owned(), m.len());
            }
        }
    }
    out
}

/// Writes package.yaml for a generated test package.
pub fn write_package_yaml(dir: &Path, name: &str) {
    std::fs::write(
        dir.join("package.yaml"),
        format!("apiVersion: ferry/v1\nkind: Package\nmetadata:\n  name: {name}\n  version: 1.0.0\nspec:\n  type: plugin\n"),
    )
    .unwrap();
}

/// Packs a layout with ferry itself.
pub fn pack(layout: &Path, meta_dir: &Path, out: &Path) {
    let run = pack_with(layout, meta_dir, out, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
}

/// `ferry pack` of a layout with `meta_dir/package.yaml` and extra flags; the run.
pub fn pack_with(layout: &Path, meta_dir: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["pack", "--from", layout.to_str().unwrap(), "--metadata"];
    let meta = meta_dir.join("package.yaml");
    args.push(meta.to_str().unwrap());
    args.extend(["-o", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    ferry(&args)
}

/// A directory package `acp/big:v1` with one 3.5 MB layer (several chunks at 1 MiB) and one
/// small layer.
pub fn big_package(dir: &Path) -> PathBuf {
    let pkg = dir.join("big");
    let mut w = ferry::devtools::LayoutWriter::create(&pkg.join("images")).unwrap();
    let big = w.layer(7, 3_500_000, false).unwrap();
    let small = w.layer(8, 20_000, false).unwrap();
    let m = w.image("big", "amd64", &[big, small], false).unwrap();
    w.tag(&m, "registry.alauda.cn:60080/acp/big:v1");
    w.finish().unwrap();
    write_package_yaml(&pkg, "big");
    pkg
}
