//! `ferry show` / `ferry push` of Docker and OCI archives written to hurt: a catalog of
//! entry names that would fill memory, a second `manifest.json` / `index.json` (another
//! reader would see other images than ferry), a path listed twice, names carrying terminal
//! escapes. Its own test binary, and no registry here: getrusage(RUSAGE_CHILDREN) then
//! reports the largest ferry run.

mod common;

// shared with tests/foreign_archives.rs, which uses all of it
#[allow(dead_code)]
#[path = "foreign_archives/writers.rs"]
mod writers;

use std::io::Write;

use common::*;
use serde_json::json;
use writers::*;

/// The tar entries of `tar` with the end-of-archive blocks cut off, so more can follow.
fn without_end(mut tar: Vec<u8>) -> Vec<u8> {
    while tar.len() >= 512 && tar[tar.len() - 512..].iter().all(|b| *b == 0) {
        tar.truncate(tar.len() - 512);
    }
    tar
}

fn shown_refused(file: &std::path::Path, want: &[&str]) -> String {
    let run = ferry(&["show", file.to_str().unwrap()]);
    assert_eq!(run.code, 3, "{}", run.all());
    for w in want {
        assert!(run.stderr.contains(w), "wanted {w:?} in: {}", run.all());
    }
    run.stderr
}

/// Every regular file and link of a docker archive is listed in its first pass (the
/// manifest comes last, so none can be passed over). Names may be a MiB each (GNU long
/// names): a few hundred distinct ones, zstd'd to a few kB, would be that many MiB held.
#[test]
fn a_docker_archive_listing_huge_names_is_refused_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let img = TestImage::new(&["example.com/acp/x:v1"], &[1]);
    let save = docker_save(std::slice::from_ref(&img));
    let f = tmp.path().join("names.tar.zst");
    let zst = zstd::Encoder::new(std::fs::File::create(&f).unwrap(), 3).unwrap();
    let mut b = tar::Builder::new(zst);
    // docker save's first entry (a layer's VERSION file, 2 blocks) leads: it tells the kind
    b.get_mut().write_all(&save[..1024]).unwrap();
    let long = "a".repeat(1_000_000);
    for i in 0..400 {
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("{i}/{long}"), &b"x"[..])
            .unwrap();
    }
    // the rest of the docker save, its end blocks included
    b.get_mut().write_all(&save[1024..]).unwrap();
    b.into_inner().unwrap().finish().unwrap();
    assert!(std::fs::metadata(&f).unwrap().len() < 4 << 20);

    let err = shown_refused(&f, &["names.tar.zst", "entries"]);
    assert!(err.contains("hostile or broken"), "{err}");

    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let peak = usage.ru_maxrss as u64 * 1024;
    assert!(peak < 200 << 20, "peak RSS {} MB", peak >> 20);
}

/// `tar -x` keeps the last of two entries of one name, ferry read the first (OCI) or the
/// last (docker): an operator checking the archive with other tools would see other images
/// than the ones pushed. Neither writer repeats a name; such an archive is refused.
#[test]
fn a_second_manifest_or_index_or_repeated_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = TestImage::new(&["example.com/acp/a:v1"], &[51]);
    let b = TestImage::new(&["example.com/acp/b:v1"], &[52]);

    // OCI: a second index.json naming the same manifest otherwise
    let (tar, manifests) = oci_archive(&[(&a, ref_name("example.com/acp/a:v1"))]);
    let mut t = without_end(tar);
    let mut extra = tar::Builder::new(Vec::new());
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha(&manifests[0]), "size": manifests[0].len(),
        "annotations": {"org.opencontainers.image.ref.name": "example.com/acp/other:v9"}}]});
    file(
        &mut extra,
        "index.json",
        &serde_json::to_vec(&index).unwrap(),
    );
    t.extend_from_slice(&extra.into_inner().unwrap());
    let f = write(tmp.path(), "two-index.tar", &t);
    shown_refused(&f, &["two-index.tar", "\"index.json\"", "twice"]);

    // docker: a second manifest.json listing another image
    let mut t = without_end(docker_save(&[a, b]));
    let mut extra = tar::Builder::new(Vec::new());
    let bogus =
        json!([{"Config": "nothing.json", "RepoTags": ["example.com/acp/c:v1"], "Layers": []}]);
    file(
        &mut extra,
        "manifest.json",
        &serde_json::to_vec(&bogus).unwrap(),
    );
    t.extend_from_slice(&extra.into_inner().unwrap());
    let f = write(tmp.path(), "two-manifests.tar", &t);
    shown_refused(&f, &["two-manifests.tar", "\"manifest.json\"", "twice"]);

    // docker: a layer file written twice
    let c = TestImage::new(&["example.com/acp/c:v1"], &[53]);
    let tar = docker_save(std::slice::from_ref(&c));
    let entries: Vec<(String, Vec<u8>)> = tar::Archive::new(tar.as_slice())
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            (p, v)
        })
        .collect();
    let mut b = tar::Builder::new(Vec::new());
    for (p, v) in &entries {
        file(&mut b, p, v);
        if p.ends_with("layer.tar") {
            file(&mut b, p, &layer_tar(54));
        }
    }
    let f = write(tmp.path(), "two-layers.tar", &b.into_inner().unwrap());
    shown_refused(&f, &["two-layers.tar", "layer.tar", "twice"]);
}

/// Names and paths from the archive reach the operator's terminal only escaped.
#[test]
fn terminal_escapes_in_names_are_not_printed_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let manifest = json!([{"Config": "\u{1b}[2Jgone.json",
                           "RepoTags": ["\u{1b}]0;owned\u{7}example.com/a/b:v1"],
                           "Layers": ["\u{1b}[31mlayer.tar"]}]);
    file(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let f = write(tmp.path(), "escapes.tar", &b.into_inner().unwrap());
    let err = shown_refused(&f, &["escapes.tar", "gone.json"]);
    assert!(!err.contains('\u{1b}'), "raw escape printed: {err:?}");
    assert!(!err.contains('\u{7}'), "raw escape printed: {err:?}");
}

/// One `manifest.json` entry may carry any number of `RepoTags`, each an image of its own
/// (resolved, held, pushed): 20 000 names on one 300-layer image, a 0.6 MB file, took
/// 1.7 GB, and a 4 MiB manifest.json holds 400 000. Each name's manifest counts against the
/// documents' total, as each index.json entry of a package does.
#[test]
fn one_image_under_countless_names_is_refused_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let (mut paths, mut diff_ids) = (Vec::new(), Vec::new());
    for i in 0..300u32 {
        let data = format!("layer {i}");
        let path = format!("{}/layer.tar", hex_of(&sha(data.as_bytes())));
        file(&mut b, &path, data.as_bytes());
        paths.push(path);
        diff_ids.push(sha(data.as_bytes()));
    }
    let config =
        serde_json::to_vec(&json!({"rootfs": {"type": "layers", "diff_ids": diff_ids}})).unwrap();
    file(&mut b, "c.json", &config);
    let tags: Vec<String> = (0..20_000).map(|i| format!("a:{i}")).collect();
    let manifest = json!([{"Config": "c.json", "RepoTags": tags, "Layers": paths}]);
    file(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let f = write(tmp.path(), "tags.tar", &b.into_inner().unwrap());

    shown_refused(&f, &["tags.tar", "20000 names", "MiB"]);
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let peak = usage.ru_maxrss as u64 * 1024;
    assert!(peak < 200 << 20, "peak RSS {} MB", peak >> 20);
}

/// The OCI side of the same: `index.json` may list one big manifest under thousands of
/// names; each entry counts that manifest against the documents' total.
#[test]
fn one_oci_manifest_under_countless_index_entries_is_refused_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let config = br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let layers: Vec<serde_json::Value> = (0..3000u32)
        .map(|i| {
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                   "digest": sha(&i.to_be_bytes()), "size": 1000})
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(&config), "size": config.len()},
        "layers": layers}))
    .unwrap();
    let entries: Vec<serde_json::Value> = (0..2000)
        .map(|i| {
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": sha(&manifest), "size": manifest.len(),
                   "annotations": {"org.opencontainers.image.ref.name": format!("example.com/a/b:v{i}")}})
        })
        .collect();
    let mut b = tar::Builder::new(Vec::new());
    file(
        &mut b,
        &format!("blobs/sha256/{}", hex_of(&sha(&config))),
        &config,
    );
    file(
        &mut b,
        &format!("blobs/sha256/{}", hex_of(&sha(&manifest))),
        &manifest,
    );
    let index = json!({"schemaVersion": 2, "manifests": entries});
    file(&mut b, "index.json", &serde_json::to_vec(&index).unwrap());
    let f = write(tmp.path(), "entries.tar", &b.into_inner().unwrap());

    shown_refused(&f, &["entries.tar", "index.json entry", "MiB"]);
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let peak = usage.ru_maxrss as u64 * 1024;
    assert!(peak < 200 << 20, "peak RSS {} MB", peak >> 20);
}

/// A damaged header's error from the tar reader quotes the entry's name: escaped too.
#[test]
fn a_damaged_header_naming_escapes_is_reported_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "manifest.json", b"[]");
    file(&mut b, "\u{1b}]0;owned\u{7}x", b"data");
    let mut tar = b.into_inner().unwrap();
    // the second header (after manifest.json's header and data block): its size field
    // unreadable, its checksum recomputed so that the size is what fails
    let h = &mut tar[1024..1536];
    h[124..136].copy_from_slice(b"zzzzzzzzzzz\0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let f = write(tmp.path(), "damaged.tar", &tar);
    let err = shown_refused(&f, &["damaged.tar", "owned"]);
    assert!(!err.contains('\u{1b}'), "raw escape printed: {err:?}");
    assert!(!err.contains('\u{7}'), "raw escape printed: {err:?}");
}
