//! `ferry push` against a real registry, checked with skopeo.

mod common;

use common::*;
use serde_json::Value;

fn push_json(reg: &Registry, what: &[&str], extra: &[&str]) -> (Run, Value) {
    let mut args: Vec<String> = vec!["push".into()];
    args.extend(what.iter().map(|s| s.to_string()));
    args.extend(reg.push_flags());
    args.extend(["--output".to_string(), "json".to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let run = ferry(&args);
    let json = run.json();
    (run, json)
}

#[test]
fn fixtures_land_byte_for_byte_and_a_second_push_uploads_nothing() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = fixtures();
    let (run, report) = push_json(&reg, &[dir.to_str().unwrap()], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(report["ok"], true);
    assert_eq!(report["packages"].as_array().unwrap().len(), 4);
    assert_eq!(report["totals"]["images_failed"], 0);
    assert!(report["totals"]["blobs"]["uploaded"].as_u64().unwrap() > 10);
    // the plugin's shared base layer goes up once and is mounted into the other repositories
    assert!(
        report["totals"]["blobs"]["mounted"].as_u64().unwrap() >= 2,
        "{report}"
    );

    let copies = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let pkg = entry.unwrap().path();
        if pkg.extension().is_none_or(|x| x != "tgz") {
            continue;
        }
        for (reference, manifest) in package_images(&pkg) {
            let dest = path_of(&reference);
            let raw = reg
                .skopeo_raw(&dest)
                .unwrap_or_else(|| panic!("{dest} not in the registry"));
            assert_eq!(
                raw, manifest,
                "{dest}: manifest bytes differ from the package"
            );
            reg.skopeo_copy_back(&dest, &copies.path().join(format!("c{checked}")));
            checked += 1;
        }
    }
    assert_eq!(checked, 7);

    let (run, again) = push_json(&reg, &[dir.to_str().unwrap()], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(again["totals"]["blobs"]["uploaded"], 0, "{again}");
    assert_eq!(again["totals"]["blobs"]["mounted"], 0);
    assert_eq!(again["totals"]["images_present"], 7);
    assert_eq!(again["totals"]["bytes_sent"], 0);
    // the report counts round trips: a re-push only asks (HEAD), far fewer than the first push
    let (first, second) = (
        report["totals"]["requests"].as_u64().unwrap(),
        again["totals"]["requests"].as_u64().unwrap(),
    );
    assert!(
        second > 0 && second * 2 < first,
        "requests: first {first}, again {second}"
    );
}

#[test]
fn tls_with_htpasswd_and_password_from_stdin() {
    let reg = Registry::start(RegistryOpts {
        tls: true,
        auth: true,
        ..Default::default()
    });
    let pkg = fixture("topolvm-operator");
    let pkg = pkg.to_str().unwrap();
    let host = reg.host();
    let ca = reg.ca();
    let ca = ca.to_str().unwrap();
    let run = ferry_with(
        &[
            "push",
            pkg,
            "--dest-repo",
            &host,
            "--ca-file",
            ca,
            "--username",
            USER,
            "--password-stdin",
            "--debug",
        ],
        &[],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(!run.all().contains(PASSWORD), "password leaked into output");
    for (reference, manifest) in package_images(std::path::Path::new(pkg)) {
        assert_eq!(reg.skopeo_raw(&path_of(&reference)).unwrap(), manifest);
    }

    // Password from the environment works too.
    let run = ferry_with(
        &[
            "push",
            pkg,
            "--dest-repo",
            &host,
            "--ca-file",
            ca,
            "--username",
            USER,
        ],
        &[("FERRY_PASSWORD", PASSWORD)],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.all());

    // Wrong password: exit 5, says 401 and what to check, never prints the password.
    let wrong = "Wr0ng-Secret-Value";
    let run = ferry(&[
        "push",
        pkg,
        "--dest-repo",
        &host,
        "--ca-file",
        ca,
        "--username",
        USER,
        "--password",
        wrong,
        "--debug",
    ]);
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(run.all().contains("401"), "{}", run.all());
    assert!(run.all().contains("--username"), "{}", run.all());
    assert!(!run.all().contains(wrong));
    // the same as JSON, and a successful push with --output json and --debug: no secret anywhere
    let run = ferry(&[
        "push",
        pkg,
        "--dest-repo",
        &host,
        "--ca-file",
        ca,
        "--username",
        USER,
        "--password",
        wrong,
        "--debug",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 5);
    assert_eq!(run.json()["error"]["kind"], "auth");
    assert!(!run.all().contains(wrong));
    let run = ferry_with(
        &[
            "push",
            pkg,
            "--dest-repo",
            &host,
            "--ca-file",
            ca,
            "--username",
            USER,
            "--debug",
            "--output",
            "json",
        ],
        &[("FERRY_PASSWORD", PASSWORD)],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(!run.all().contains(PASSWORD));

    // Untrusted certificate: exit 6 and the two ways out are named.
    let run = ferry(&[
        "push",
        pkg,
        "--dest-repo",
        &host,
        "--username",
        USER,
        "--password",
        PASSWORD,
    ]);
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(
        run.all().contains("--ca-file") && run.all().contains("--insecure"),
        "{}",
        run.all()
    );
    assert!(!run.all().contains(PASSWORD));

    // --insecure skips verification.
    let run = ferry(&[
        "push",
        pkg,
        "--dest-repo",
        &host,
        "--insecure",
        "--username",
        USER,
        "--password",
        PASSWORD,
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
}

#[test]
fn registry_not_listening_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pkg = fixture("topolvm-operator");
    let run = ferry(&[
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &format!("127.0.0.1:{port}"),
        "--plain",
        "--retry-base-ms",
        "10",
    ]);
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(run.all().contains("not reachable"), "{}", run.all());
    assert!(run.all().contains(&format!("127.0.0.1:{port}")));
}

#[test]
fn corrupted_blob_fails_only_its_image_and_pushes_no_manifest_for_it() {
    let reg = Registry::start(RegistryOpts::default());
    let src = fixture("oam-application");
    let images = package_images(&src);
    // the webhook's own layer (second layer of its manifest)
    let (webhook_ref, webhook_manifest) = images
        .iter()
        .find(|(r, _)| r.contains("oam-webhook"))
        .unwrap()
        .clone();
    let m: Value = serde_json::from_slice(&webhook_manifest).unwrap();
    let bad = m["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("oam-application.amd64.v4.2.1.tgz");
    rewrite_tgz(&src, &broken, |path, mut data| {
        if path.ends_with(&bad) {
            let mid = data.len() / 2;
            data[mid] ^= 0xff;
        }
        Some(data)
    });
    let (run, report) = push_json(&reg, &[broken.to_str().unwrap()], &[]);
    assert_eq!(run.code, 3, "{}", run.all());
    let imgs = report["packages"][0]["images"].as_array().unwrap();
    let failed: Vec<&Value> = imgs.iter().filter(|i| i["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{report}");
    let msg = failed[0]["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("digest mismatch") && msg.contains(&bad),
        "{msg}"
    );
    assert!(
        msg.contains("oam-application") && msg.contains("oam-webhook"),
        "{msg}"
    );
    assert!(msg.contains("expected") && msg.contains("actual"), "{msg}");
    assert!(
        reg.skopeo_raw(&path_of(&webhook_ref)).is_none(),
        "manifest of the broken image was pushed"
    );
    for (r, manifest) in images.iter().filter(|(r, _)| !r.contains("oam-webhook")) {
        assert_eq!(&reg.skopeo_raw(&path_of(r)).unwrap(), manifest);
    }
    // nothing was committed under the bad digest: the registry's own storage has no such blob
    let stored = reg.dir.path().join(format!(
        "data/docker/registry/v2/blobs/sha256/{}/{bad}",
        &bad[..2]
    ));
    assert!(
        !stored.exists(),
        "a blob with the corrupted digest was committed"
    );
    assert!(reg
        .dir
        .path()
        .join("data/docker/registry/v2/blobs/sha256")
        .exists());
}

#[test]
fn missing_blob_and_truncated_archive_fail_clearly() {
    let reg = Registry::start(RegistryOpts::default());
    let src = fixture("topolvm-operator");
    let images = package_images(&src);
    let m: Value = serde_json::from_slice(&images[0].1).unwrap();
    let layer = m["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.tgz");
    rewrite_tgz(&src, &missing, |path, data| {
        (!path.ends_with(&layer)).then_some(data)
    });
    let (run, report) = push_json(&reg, &[missing.to_str().unwrap()], &[]);
    assert_eq!(run.code, 3, "{}", run.all());
    let msg = report["packages"][0]["images"][0]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("missing from the package") && msg.contains(&layer),
        "{msg}"
    );
    assert!(reg.skopeo_raw(&path_of(&images[0].0)).is_none());

    let truncated = dir.path().join("truncated.tgz");
    let bytes = std::fs::read(&src).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let (run, report) = push_json(&reg, &[truncated.to_str().unwrap()], &[]);
    assert_eq!(run.code, 3, "{}", run.all());
    let text = report.to_string();
    assert!(text.contains("truncated or corrupt"), "{text}");
    assert!(reg.skopeo_raw(&path_of(&images[0].0)).is_none());
}

#[test]
fn package_directories_and_chunked_uploads() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let pkg = big_package(dir.path());
    // a directory package, 1 MiB chunks: the 3.5 MB layer goes up in 4 PATCHes
    let (run, report) = push_json(&reg, &[pkg.to_str().unwrap()], &["--chunk-size-mb", "1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(report["totals"]["blobs"]["uploaded"], 3);
    let patches = reg
        .log()
        .matches("\"PATCH /v2/acp/big/blobs/uploads/")
        .count();
    assert!(
        patches >= 4,
        "expected chunked PATCH uploads, saw {patches}"
    );
    let packed = dir.path().join("big.tgz");
    pack(&pkg.join("images"), &pkg, &packed);
    for (r, manifest) in package_images(&packed) {
        assert_eq!(reg.skopeo_raw(&path_of(&r)).unwrap(), manifest);
    }
    reg.skopeo_copy_back("acp/big:v1", &dir.path().join("copy"));
}

#[test]
fn dry_run_plans_without_writing() {
    let reg = Registry::start(RegistryOpts::default());
    let all = fixtures();
    let (run, plan) = push_json(&reg, &[all.to_str().unwrap()], &["--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(plan["dry_run"], true);
    let planned = plan["totals"]["blobs"]["bytes"].as_u64().unwrap();
    assert!(plan["estimate"].as_str().unwrap().contains("at 1 Gbit/s"));
    for m in ["\"POST ", "\"PUT ", "\"PATCH "] {
        assert!(
            !reg.log().contains(m),
            "dry run wrote to the registry ({m})"
        );
    }
    // the plan's bytes are what a real push then uploads
    let (run, done) = push_json(&reg, &[fixture("oam-application").to_str().unwrap()], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let oam_bytes = done["totals"]["blobs"]["bytes"].as_u64().unwrap();
    let (_, half) = push_json(
        &reg,
        &[all.to_str().unwrap()],
        &["--dry-run", "--link-speed", "100mbit"],
    );
    assert_eq!(
        half["totals"]["blobs"]["bytes"].as_u64().unwrap(),
        planned - oam_bytes,
        "{half}"
    );
    assert!(half["estimate"].as_str().unwrap().contains("100 Mbit/s"));
    let (_, rest) = push_json(&reg, &[all.to_str().unwrap()], &[]);
    assert_eq!(
        rest["totals"]["blobs"]["bytes"].as_u64().unwrap(),
        planned - oam_bytes
    );
}

#[test]
fn dr_standby_registry_gets_everything_from_the_same_read() {
    let primary = Registry::start(RegistryOpts::default());
    let standby = Registry::start(RegistryOpts::default());
    let dir = fixtures();
    let standby_host = standby.host();
    // --plain is the primary's: the standby is spoken to with TLS unless --standby-plain, so
    // this plain-HTTP standby is left out (and said so), while the primary gets everything
    let (run, report) = push_json(
        &primary,
        &[fixture("oam-application").to_str().unwrap()],
        &["--standby-registry", &standby_host, "--standby-no-auth"],
    );
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "standby registry {standby_host} (from --standby-registry); TLS;"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("DR standby left out of this run"),
        "{report}"
    );
    assert_eq!(report["totals"]["images_failed"], 0, "{report}");
    assert!(primary.skopeo_raw("acp/oam-controller:v4.2.1").is_some());

    let (run, report) = push_json(
        &primary,
        &[dir.to_str().unwrap()],
        &[
            "--standby-registry",
            &standby_host,
            "--standby-no-auth",
            "--standby-plain",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(report["destinations"].as_array().unwrap().len(), 2);
    assert!(run.stderr.contains("; plain HTTP;"), "{}", run.stderr);
    assert_eq!(report["totals"]["images_pushed"], 11, "{report}");
    assert_eq!(
        report["totals"]["images_present"], 3,
        "oam-application went to the primary before"
    );
    for entry in std::fs::read_dir(&dir).unwrap() {
        let pkg = entry.unwrap().path();
        if pkg.extension().is_none_or(|x| x != "tgz") {
            continue;
        }
        for (reference, manifest) in package_images(&pkg) {
            for reg in [&primary, &standby] {
                assert_eq!(
                    reg.skopeo_raw(&path_of(&reference)).unwrap(),
                    manifest,
                    "{reference} on {}",
                    reg.host()
                );
            }
        }
    }
    let (run, again) = push_json(
        &primary,
        &[dir.to_str().unwrap()],
        &["--standby-registry", &standby_host, "--standby-plain"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(again["totals"]["blobs"]["uploaded"], 0);
    assert_eq!(again["totals"]["images_present"], 14);
}

#[test]
fn dest_repo_with_a_path_puts_every_image_under_that_prefix() {
    let reg = Registry::start(RegistryOpts::default());
    let pkg = fixture("oam-application");
    let dest = format!("{}/mirror/team-a", reg.host());
    let run = ferry(&[
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &dest,
        "--plain",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let report = run.json();
    let images = package_images(&pkg);
    assert!(!images.is_empty());
    for (reference, manifest) in images {
        let path = format!("mirror/team-a/{}", path_of(&reference));
        assert_eq!(
            reg.skopeo_raw(&path)
                .unwrap_or_else(|| panic!("{path} not in the registry")),
            manifest
        );
        assert!(
            report
                .to_string()
                .contains(&format!("{dest}/{}", path_of(&reference))),
            "{report}"
        );
        assert!(
            reg.skopeo_raw(&path_of(&reference)).is_none(),
            "also pushed without the prefix"
        );
    }
    // twice: nothing to send, found under the prefix
    let again = ferry(&[
        "push",
        pkg.to_str().unwrap(),
        "--dest-repo",
        &dest,
        "--plain",
        "--output",
        "json",
    ]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(again.json()["totals"]["bytes_sent"], 0);
}

/// A package whose blobs the registry already holds under other tags (the same images
/// re-tagged, or a push interrupted before its manifests): nothing is sent, the new tags land,
/// and the package is not read to its end once every blob is known to be there.
#[test]
fn blobs_already_there_under_other_tags_are_neither_sent_nor_read_through() {
    let reg = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let mut tgzs = Vec::new();
    for tag in ["v1", "v2"] {
        let pkg = dir.path().join(tag);
        let mut w = ferry::devtools::LayoutWriter::create(&pkg.join("images")).unwrap();
        let layers: Vec<_> = (0..10)
            .map(|i| w.layer(500 + i, 1_000_000, false).unwrap())
            .collect();
        let m = w.image("retag", "amd64", &layers, false).unwrap();
        w.tag(&m, &format!("registry.alauda.cn:60080/acp/retag:{tag}"));
        w.finish().unwrap();
        write_package_yaml(&pkg, "retag");
        let tgz = dir.path().join(format!("{tag}.tgz"));
        pack(&pkg.join("images"), &pkg, &tgz);
        tgzs.push(tgz);
    }
    let (run, first) = push_json(&reg, &[tgzs[0].to_str().unwrap()], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(first["totals"]["blobs"]["uploaded"], 11);

    let (run, second) = push_json(&reg, &[tgzs[1].to_str().unwrap()], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(second["totals"]["images_pushed"], 1);
    assert_eq!(second["totals"]["blobs"]["uploaded"], 0);
    assert_eq!(second["totals"]["blobs"]["present"], 11);
    let size = std::fs::metadata(&tgzs[1]).unwrap().len();
    let read = second["totals"]["package_bytes_read"].as_u64().unwrap();
    assert!(
        read < size / 2,
        "read {read} bytes of a {size}-byte package whose blobs were all there"
    );
    assert!(reg.skopeo_raw("acp/retag:v2").is_some());
}
