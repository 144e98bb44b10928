//! `ferry verify` and `push --verify`, with keys and signatures made by GnuPG (an independent
//! OpenPGP implementation).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new(name: &str) -> Gpg {
        let g = Gpg {
            home: tempfile::tempdir().unwrap(),
        };
        g.run(&[
            "--quick-gen-key",
            &format!("{name} <{name}@ferry.test>"),
            "ed25519",
            "sign",
            "never",
        ]);
        g
    }
    /// A key made with `gpg --quick-gen-key name algo usage expire`, optionally at a faked
    /// time (`--faked-system-time`, e.g. to make a key that expired long ago).
    fn with(name: &str, algo: &str, usage: &str, expire: &str, at: Option<&str>) -> Gpg {
        let g = Gpg {
            home: tempfile::tempdir().unwrap(),
        };
        let uid = format!("{name} <{name}@ferry.test>");
        let mut args = vec!["--quick-gen-key", &uid, algo, usage, expire];
        if let Some(t) = at {
            args.splice(0..0, ["--faked-system-time", t]);
        }
        g.run(&args);
        g
    }
    fn fingerprint(&self) -> String {
        let out = String::from_utf8(self.run(&["--list-keys", "--with-colons"])).unwrap();
        out.lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string()
    }
    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
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
    }
    fn export(&self, armor: bool, to: &Path) {
        let mut args = vec!["--export"];
        if armor {
            args.insert(0, "--armor");
        }
        std::fs::write(to, self.run(&args)).unwrap();
    }
    fn sign(&self, file: &Path, armor: bool) {
        let sig = format!("{}.sig", file.display());
        let mut args = vec!["--detach-sign", "-o", &sig];
        if armor {
            args.insert(0, "--armor");
        }
        let f = file.to_str().unwrap();
        args.push(f);
        self.run(&args);
    }
}

fn copy_fixture(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(fixture("topolvm-operator"), &p).unwrap();
    p
}

fn sha256_file(p: &Path) {
    let digest = ferry::oci::Digest::of(&std::fs::read(p).unwrap());
    std::fs::write(
        format!("{}.sha256", p.display()),
        format!(
            "{}  {}\n",
            digest.hex(),
            p.file_name().unwrap().to_string_lossy()
        ),
    )
    .unwrap();
}

#[test]
fn verify_sorts_packages_into_the_four_groups() {
    let trusted = Gpg::new("trusted");
    let stranger = Gpg::new("stranger");
    let keys = tempfile::tempdir().unwrap();
    let armored = keys.path().join("trusted.asc");
    trusted.export(true, &armored);
    let binary = keys.path().join("trusted.gpg");
    trusted.export(false, &binary);

    let dir = tempfile::tempdir().unwrap();
    let good = copy_fixture(dir.path(), "a-good.amd64.v1.0.0.tgz");
    trusted.sign(&good, false);
    sha256_file(&good);
    let good_armored = copy_fixture(dir.path(), "b-armored.amd64.v1.0.0.tgz");
    trusted.sign(&good_armored, true);
    let unknown = copy_fixture(dir.path(), "c-unknown-key.amd64.v1.0.0.tgz");
    stranger.sign(&unknown, false);
    let tampered = copy_fixture(dir.path(), "d-tampered.amd64.v1.0.0.tgz");
    trusted.sign(&tampered, false);
    let mut bytes = std::fs::read(&tampered).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&tampered, bytes).unwrap();
    let wrong_sum = copy_fixture(dir.path(), "e-wrong-sum.amd64.v1.0.0.tgz");
    std::fs::write(
        format!("{}.sha256", wrong_sum.display()),
        format!("{}  e.tgz\n", "0".repeat(64)),
    )
    .unwrap();
    let checksum_only = copy_fixture(dir.path(), "f-checksum.amd64.v1.0.0.tgz");
    sha256_file(&checksum_only);
    copy_fixture(dir.path(), "g-nothing.amd64.v1.0.0.tgz");

    for keyring in [&armored, &binary] {
        let run = ferry(&[
            "verify",
            dir.path().to_str().unwrap(),
            "--keyring",
            keyring.to_str().unwrap(),
            "--output",
            "json",
        ]);
        assert_eq!(run.code, 3, "{}", run.all());
        let v = run.json();
        let result = |prefix: &str| -> serde_json::Value {
            v.as_array()
                .unwrap()
                .iter()
                .find(|e| e["package"].as_str().unwrap().contains(prefix))
                .unwrap()
                .clone()
        };
        assert_eq!(result("a-good")["result"], "gpg");
        assert_eq!(result("b-armored")["result"], "gpg");
        assert_eq!(result("c-unknown-key")["result"], "failed");
        assert!(result("c-unknown-key")["reason"]
            .as_str()
            .unwrap()
            .contains("not in"));
        assert_eq!(result("d-tampered")["result"], "failed");
        assert!(result("d-tampered")["reason"]
            .as_str()
            .unwrap()
            .contains("BAD signature"));
        assert_eq!(result("e-wrong-sum")["result"], "failed");
        assert!(result("e-wrong-sum")["reason"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"));
        assert_eq!(result("f-checksum")["result"], "checksum");
        assert_eq!(result("g-nothing")["result"], "no_file");
    }

    // the text summary has violet's four groups
    let run = ferry_with(
        &["verify", dir.path().to_str().unwrap()],
        &[("FERRY_KEYRING", armored.to_str().unwrap())],
        None,
    );
    for group in [
        "Verified with GPG (2)",
        "Verified with checksum (1)",
        "Verification failed (3)",
        "No verification file found (1)",
    ] {
        assert!(run.stdout.contains(group), "{group}: {}", run.stdout);
    }

    // only good ones: 0; --require-signature fails the one without files
    let ok = tempfile::tempdir().unwrap();
    for p in [&good, &checksum_only] {
        for ext in ["", ".sig", ".sha256"] {
            let src = PathBuf::from(format!("{}{ext}", p.display()));
            if src.exists() {
                std::fs::copy(&src, ok.path().join(src.file_name().unwrap())).unwrap();
            }
        }
    }
    let k = armored.to_str().unwrap();
    let okdir = ok.path().to_str().unwrap();
    assert_eq!(ferry(&["verify", okdir, "--keyring", k]).code, 0);
    // a checksum proves integrity, not origin: --require-signature refuses the checksum-only
    // package; --require-verification takes signature or checksum
    let run = ferry(&["verify", okdir, "--keyring", k, "--require-signature"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("a checksum alone is not enough"),
        "{}",
        run.stderr
    );
    assert_eq!(
        ferry(&["verify", okdir, "--keyring", k, "--require-verification"]).code,
        0
    );
    copy_fixture(ok.path(), "z-nothing.amd64.v1.0.0.tgz");
    assert_eq!(
        ferry(&["verify", okdir, "--keyring", k, "--require-verification"]).code,
        3
    );
    assert_eq!(
        ferry(&["verify", ok.path().to_str().unwrap(), "--keyring", k]).code,
        0
    );
    assert_eq!(
        ferry(&[
            "verify",
            ok.path().to_str().unwrap(),
            "--keyring",
            k,
            "--require-signature"
        ])
        .code,
        3
    );
}

#[test]
fn push_verify_refuses_before_any_upload() {
    let trusted = Gpg::new("trusted");
    let keys = tempfile::tempdir().unwrap();
    let keyring = keys.path().join("trusted.asc");
    trusted.export(true, &keyring);
    let dir = tempfile::tempdir().unwrap();
    let good = copy_fixture(dir.path(), "good.amd64.v2.3.0.tgz");
    trusted.sign(&good, false);
    let bad = dir.path().join("oam-application.amd64.v4.2.1.tgz");
    std::fs::copy(fixture("oam-application"), &bad).unwrap();
    trusted.sign(&bad, false);
    let mut bytes = std::fs::read(&bad).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    std::fs::write(&bad, bytes).unwrap();

    let reg = Registry::start(RegistryOpts::default());
    let host = reg.host();
    let run = ferry(&[
        "push",
        dir.path().to_str().unwrap(),
        "--dest-repo",
        &host,
        "--plain",
        "--verify",
        "--keyring",
        keyring.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(run.stderr.contains("nothing was pushed"), "{}", run.stderr);
    for m in ["\"POST ", "\"PUT ", "\"PATCH "] {
        assert!(
            !reg.log().contains(m),
            "something was uploaded despite failed verification"
        );
    }
    std::fs::remove_file(&bad).unwrap();
    let run = ferry(&[
        "push",
        dir.path().to_str().unwrap(),
        "--dest-repo",
        &host,
        "--plain",
        "--verify",
        "--keyring",
        keyring.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
}

/// Starts `push --verify` of `pkg` through a proxy that stalls the first manifest HEAD (the
/// package's head has been read, no blob yet), and calls `meddle` while it waits.
fn push_verified_then_meddle(pkg: &Path, meddle: impl FnOnce()) -> (Registry, Run) {
    use common::proxy::{Fault, Proxy, Rule};
    let reg = Registry::start(RegistryOpts::default());
    let proxy = Proxy::start(
        reg.port,
        vec![Rule::new(
            "HEAD",
            "/manifests/",
            Fault::Stall(std::time::Duration::from_secs(2)),
        )],
    );
    let child = ferry_spawn(&[
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &proxy.host(),
        "--plain",
        "--verify",
        "--require-verification",
        "--retry-base-ms",
        "10",
    ]);
    wait_for(60, "the first manifest HEAD", || {
        proxy.stats.faults.load(std::sync::atomic::Ordering::SeqCst) >= 1
    });
    meddle();
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (reg, run)
}

#[test]
fn push_verify_pushes_the_file_it_verified_even_when_the_path_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = copy_fixture(dir.path(), "topolvm-operator.amd64.v2.3.0.tgz");
    sha256_file(&pkg);
    let swap = dir.path().join("swap.tmp");
    std::fs::copy(fixture("oam-application"), &swap).unwrap();
    let (reg, run) = push_verified_then_meddle(&pkg, || std::fs::rename(&swap, &pkg).unwrap());
    assert_eq!(run.code, 0, "{}", run.all());
    for (reference, _) in package_images(&fixture("topolvm-operator")) {
        assert!(
            reg.skopeo_raw(&path_of(&reference)).is_some(),
            "{reference}"
        );
    }
    for (reference, _) in package_images(&fixture("oam-application")) {
        assert!(
            reg.skopeo_raw(&path_of(&reference)).is_none(),
            "{reference}"
        );
    }
}

#[test]
fn push_verify_refuses_a_file_written_in_place_after_verification() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = copy_fixture(dir.path(), "topolvm-operator.amd64.v2.3.0.tgz");
    sha256_file(&pkg);
    let (reg, run) = push_verified_then_meddle(&pkg, || {
        use std::io::Write;
        let bytes = std::fs::read(&pkg).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&pkg).unwrap();
        f.write_all(&bytes).unwrap();
    });
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.all()
            .contains("the file was modified after it was verified"),
        "{}",
        run.all()
    );
    assert!(
        !reg.log()
            .contains("\"PUT /v2/acp/topolvm-operator-bundle/manifests/"),
        "a manifest went up"
    );
}

/// Signs a fresh copy of the fixture with `sign` and checks `ferry verify` refuses it with
/// `why`, using the keyring `gpg` exports after `after_signing`.
fn refused_with(gpg: &Gpg, extra_sign_args: &[&str], after_signing: impl FnOnce(&Gpg), why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pkg = copy_fixture(dir.path(), "pkg.amd64.v2.3.0.tgz");
    let sig = format!("{}.sig", pkg.display());
    let mut args: Vec<&str> = extra_sign_args.to_vec();
    args.extend(["--detach-sign", "-o", &sig, pkg.to_str().unwrap()]);
    gpg.run(&args);
    after_signing(gpg);
    let keyring = dir.path().join("keys.asc");
    gpg.export(true, &keyring);
    let run = ferry(&[
        "verify",
        pkg.to_str().unwrap(),
        "--keyring",
        keyring.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 3, "{}", run.all());
    let reason = run.json()[0]["reason"].as_str().unwrap_or("").to_string();
    assert!(reason.contains(why), "{why:?} not in {reason:?}");
}

#[test]
fn good_signatures_by_unusable_keys_or_over_sha1_are_refused() {
    // Expired: a one-day key made and used in 2020.
    let old = Gpg::with("old", "ed25519", "sign", "1d", Some("20200101T000000"));
    refused_with(
        &old,
        &["--faked-system-time", "20200101T120000"],
        |_| {},
        "expired on 2020-01-02",
    );

    // Revoked after signing: GnuPG's own revocation certificate, imported.
    let revoked = Gpg::new("revoked");
    refused_with(
        &revoked,
        &[],
        |g| {
            let fpr = g.fingerprint();
            let cert = g.home.path().join(format!("openpgp-revocs.d/{fpr}.rev"));
            // GnuPG guards the stored certificate against accidental import with a ':'.
            let text = std::fs::read_to_string(&cert)
                .unwrap()
                .replace(":-----BEGIN", "-----BEGIN");
            std::fs::write(&cert, text).unwrap();
            g.run(&["--import", cert.to_str().unwrap()]);
        },
        "is revoked",
    );

    // No signing capability: the key signed, then its owner took the capability away.
    let certify_only = Gpg::new("certify-only");
    refused_with(
        &certify_only,
        &[],
        |g| {
            let fpr = g.fingerprint();
            let edit = Command::new("gpg")
                .env("GNUPGHOME", g.home.path())
                .args([
                    "--batch",
                    "--expert",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    "",
                ])
                .args(["--command-fd", "0", "--edit-key", &fpr])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin
                        .take()
                        .unwrap()
                        .write_all(b"change-usage\nS\nQ\nsave\n")?;
                    c.wait()
                })
                .unwrap();
            assert!(edit.success());
        },
        "is not allowed to sign",
    );

    // SHA-1, with an RSA key (EdDSA keys are not used with SHA-1 by GnuPG).
    let rsa = Gpg::with("rsa", "rsa2048", "sign", "never", None);
    refused_with(&rsa, &["--digest-algo", "SHA1"], |_| {}, "uses SHA1");
    // ...while the same key with SHA-256 is accepted.
    let dir = tempfile::tempdir().unwrap();
    let pkg = copy_fixture(dir.path(), "pkg.amd64.v2.3.0.tgz");
    rsa.sign(&pkg, false);
    let keyring = dir.path().join("keys.asc");
    rsa.export(true, &keyring);
    let run = ferry(&[
        "verify",
        pkg.to_str().unwrap(),
        "--keyring",
        keyring.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
}
