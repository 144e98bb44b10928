//! `ferry show` and `ferry pack` through the binary.

mod common;

use common::*;

#[test]
fn show_prints_identity_and_with_all_every_image() {
    let pkg = fixture("oam-application");
    let run = ferry(&["show", pkg.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.all());
    for want in [
        "Name:      oam-application",
        "Type:      plugin",
        "Arch:      linux/amd64",
        "Version:   4.2.1",
    ] {
        assert!(run.stdout.contains(want), "{}", run.stdout);
    }
    assert!(!run.stdout.contains("oam-webhook"));
    let run = ferry(&["show", pkg.to_str().unwrap(), "--all", "--output", "json"]);
    let v = run.json();
    assert_eq!(v["images"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["artifact"],
        "registry.alauda.cn:60080/acp/oam-controller:v4.2.1"
    );
}

#[test]
fn show_warns_when_file_name_disagrees_and_fails_on_bad_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("something-else.amd64.v9.9.9.tgz");
    std::fs::copy(fixture("topolvm-operator"), &renamed).unwrap();
    let run = ferry(&["show", renamed.to_str().unwrap()]);
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("warning") && run.stderr.contains("package.yaml"),
        "{}",
        run.stderr
    );

    let bad = dir.path().join("bad.tgz");
    rewrite_tgz(&fixture("topolvm-operator"), &bad, |path, data| {
        if path == "package.yaml" {
            Some(
                String::from_utf8(data)
                    .unwrap()
                    .replace("  version: 2.3.0\n", "")
                    .into_bytes(),
            )
        } else {
            Some(data)
        }
    });
    let run = ferry(&["show", bad.to_str().unwrap()]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("metadata.version is required") && run.stderr.contains("bad.tgz"),
        "{}",
        run.stderr
    );
}

#[test]
fn pack_is_reproducible_canonical_and_writes_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let run = ferry(&["dev", "fixtures", dir.path().to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.all());
    let src = dir.path().join("oam-application");
    let out = |n: &str| dir.path().join(n);
    for n in ["a.tgz", "b.tgz"] {
        let run = ferry(&[
            "pack",
            "--from",
            src.join("layout").to_str().unwrap(),
            "--metadata",
            src.join("package.yaml").to_str().unwrap(),
            "-o",
            out(n).to_str().unwrap(),
        ]);
        assert_eq!(run.code, 0, "{}", run.all());
    }
    assert_eq!(
        std::fs::read(out("a.tgz")).unwrap(),
        std::fs::read(out("b.tgz")).unwrap()
    );
    // the checked-in fixture is what the generator makes today
    assert_eq!(
        std::fs::read(out("a.tgz")).unwrap(),
        std::fs::read(fixture("oam-application")).unwrap()
    );
    let sums = std::fs::read_to_string(dir.path().join("a.tgz.sha256")).unwrap();
    assert!(sums.ends_with("  a.tgz\n"), "{sums}");
    // canonical order: metadata first, every document before the first layer
    let f = std::fs::File::open(out("a.tgz")).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        &names[..3],
        ["package.yaml", "images/oci-layout", "images/index.json"]
    );
}

#[test]
fn credentials_in_the_registry_address_are_refused_and_never_echoed() {
    let pkg = fixture("oam-application");
    for dest in [
        "admin:Hunter2-secret@127.0.0.1:5000",
        "https://admin:Hunter2-secret@127.0.0.1:5000",
    ] {
        let run = ferry(&[
            "push",
            pkg.to_str().unwrap(),
            "--dest-repo",
            dest,
            "--output",
            "json",
        ]);
        assert_eq!(run.code, 2, "{}", run.all());
        assert!(run.stderr.contains("--username"), "{}", run.stderr);
        assert!(!run.all().contains("Hunter2-secret"), "{}", run.all());
    }
}

#[test]
fn invoked_as_violet_it_takes_violets_commands_and_prints_violets_show() {
    let dir = tempfile::tempdir().unwrap();
    let violet = dir.path().join("violet");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ferry"), &violet).unwrap();
    let pkg = fixture("topolvm-operator");
    let out = std::process::Command::new(&violet)
        .args(["show", pkg.to_str().unwrap(), "--all"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "Name: topolvm-operator\nType: bundle\nArch: [linux/amd64]\nVersion: 2.3.0\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "RelateImages: [registry.alauda.cn:60080/acp/topolvm-operator-bundle:v3.11.0"
        ),
        "{text}"
    );
    // violet verify's summary layout
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&pkg, dir.path().join("a.tgz")).unwrap();
    // the fixture's .sha256 (sha256sum format) verifies the copy
    std::fs::copy(
        format!("{}.sha256", pkg.display()),
        dir.path().join("a.tgz.sha256"),
    )
    .unwrap();
    std::fs::copy(&pkg, dir.path().join("b.tgz")).unwrap();
    let out = std::process::Command::new(&violet)
        .args(["verify", dir.path().to_str().unwrap()])
        .env_remove("FERRY_KEYRING")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("====== Verification Summary ======\nVerified successfully with checksum: 1 file(s)\n  - "), "{text}");
    assert!(
        text.contains("No verification file found: 1 file(s)\n  - "),
        "{text}"
    );
    let help = std::process::Command::new(&violet)
        .args(["push", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "Usage: violet push",
        "--platform-address",
        "--platform-username",
        "--platform-password",
        "--platform-token",
        "--client-id",
        "--clusters",
        "--target-catalog-source",
        "--target-chartrepo",
        "--skip-crs",
        "--skip-push",
        "--dest-repo",
        "--no-auth",
        "--plain",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from violet push --help"
        );
    }
}

#[test]
fn help_ends_with_runbook_examples_and_completions_are_generated() {
    for cmd in ["push", "sync", "verify", "show"] {
        let run = ferry(&[cmd, "--help"]);
        assert_eq!(run.code, 0, "{}", run.all());
        assert!(
            run.stdout.contains("Examples"),
            "{cmd} --help: {}",
            run.stdout
        );
        assert!(
            run.stdout.contains(&format!("ferry {cmd} ")),
            "{}",
            run.stdout
        );
    }
    for (shell, marker) in [
        ("bash", "_ferry()"),
        ("zsh", "#compdef ferry"),
        ("fish", "complete -c ferry"),
    ] {
        let run = ferry(&["completions", shell]);
        assert_eq!(run.code, 0, "{}", run.all());
        assert!(
            run.stdout.contains(marker),
            "{shell}: {}",
            &run.stdout[..200.min(run.stdout.len())]
        );
        assert!(run.stdout.contains("platform-address"), "{shell}");
    }
}

#[test]
fn pack_refuses_a_config_whose_content_is_not_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut w = ferry::devtools::LayoutWriter::create(&src.join("images")).unwrap();
    let layer = w.layer(77, 10_000, false).unwrap();
    let m = w.image("x", "amd64", &[layer], false).unwrap();
    w.tag(&m, "registry.alauda.cn:60080/acp/x:v1");
    w.finish().unwrap();
    write_package_yaml(&src, "x");
    // damage the config (still valid JSON, same size): its file no longer matches its name
    let blobs = src.join("images/blobs/sha256");
    let mut damaged = 0;
    for e in std::fs::read_dir(&blobs).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read(&p).unwrap();
        if let Ok(t) = String::from_utf8(text) {
            if t.contains("\"rootfs\"") {
                std::fs::write(&p, t.replace("linux", "linuz")).unwrap();
                damaged += 1;
            }
        }
    }
    assert_eq!(damaged, 1);
    let out = dir.path().join("x.tgz");
    let run = ferry(&[
        "pack",
        "--from",
        src.join("images").to_str().unwrap(),
        "--metadata",
        src.join("package.yaml").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(run.stderr.contains("digest mismatch"), "{}", run.stderr);
    assert!(!out.exists(), "a damaged package was written");
}
