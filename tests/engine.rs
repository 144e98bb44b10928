//! The engine in-process, through its public API, against the fake registry behind
//! `RegistryApi` (tests/common/fake_registry.rs): its rules checked without a server.
//! Real registries are the other test files' business.

mod common;
#[path = "common/fake_registry.rs"]
mod fake_registry;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fake_registry::{Behaviour, Event, FakeRegistry};
use ferry::devtools::LayoutWriter;
use ferry::engine::{Engine, EngineOptions, ImageState, Observer, PackageObserver, PackageOutcome};
use ferry::oci::Digest;
use ferry::sink::RegistryApi;
use ferry::source::{Descriptor, Package};

struct Quiet;

impl Observer for Quiet {
    fn package(&self, _label: &str) -> Box<dyn PackageObserver> {
        Box::new(Quiet)
    }
    fn planned_bytes(&self, _bytes: u64) {}
}

impl PackageObserver for Quiet {
    fn step(&self, _status: &str) {}
    fn note(&self, _status: &str) {}
    fn done(&self, _status: &str) {}
}

/// A directory package: `acp/a:v1` (a two-arch index) and `acp/b:v1`, sharing a 300 kB layer
/// (several chunks at the 64 KiB used here), each with small layers of its own.
fn package(dir: &Path) -> (PathBuf, Digest) {
    let pkg = dir.join("pkg");
    let mut w = LayoutWriter::create(&pkg.join("images")).unwrap();
    let shared = w.layer(1, 300_000, false).unwrap();
    let amd = w.layer(2, 5_000, false).unwrap();
    let arm = w.layer(3, 5_000, false).unwrap();
    let m1 = w
        .image("a", "amd64", &[shared.clone(), amd], false)
        .unwrap();
    let m2 = w
        .image("a", "arm64", &[shared.clone(), arm], false)
        .unwrap();
    let index = w.index(&[m1, m2], false).unwrap();
    w.tag(&index, "registry.alauda.cn:60080/acp/a:v1");
    let own = w.layer(4, 70_000, false).unwrap();
    let b = w
        .image("b", "amd64", &[shared.clone(), own], false)
        .unwrap();
    w.tag(&b, "registry.alauda.cn:60080/acp/b:v1");
    w.finish().unwrap();
    common::write_package_yaml(&pkg, "pkg");
    (pkg, shared.digest)
}

/// A directory package of `count` images `acp/img<i>:v1`, each of 4 small layers of its own
/// (seeded from `seed` on); gives each image's layers too.
fn many_images(dir: &Path, count: u64, seed: u64) -> (PathBuf, Vec<Vec<Descriptor>>) {
    let pkg = dir.join("many");
    let mut w = LayoutWriter::create(&pkg.join("images")).unwrap();
    let mut all = Vec::new();
    for i in 0..count {
        let layers: Vec<_> = (0..4)
            .map(|j| w.layer(seed + i * 4 + j, 1_000, false).unwrap())
            .collect();
        let m = w
            .image(&format!("img{i}"), "amd64", &layers, false)
            .unwrap();
        w.tag(&m, &format!("registry.alauda.cn:60080/acp/img{i}:v1"));
        all.push(layers);
    }
    w.finish().unwrap();
    common::write_package_yaml(&pkg, "many");
    (pkg, all)
}

fn push(pkg: &Path, registry: &Arc<FakeRegistry>) -> PackageOutcome {
    push_to(pkg, &[registry])
}

fn push_to(pkg: &Path, registries: &[&Arc<FakeRegistry>]) -> PackageOutcome {
    let opts = EngineOptions {
        chunk_size: 64 << 10,
        state_dir: None,
        ..Default::default()
    };
    let apis = registries
        .iter()
        .map(|r| Arc::clone(*r) as Arc<dyn RegistryApi>)
        .collect();
    let engine = Engine::new(opts, apis);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let package = Package::open(pkg).unwrap();
    rt.block_on(engine.push_package(&package, &Quiet))
}

/// Every image of the first destination ended in `state`.
fn assert_all(outcome: &PackageOutcome, state: &str) {
    let states = states(outcome);
    assert!(states.iter().all(|(_, s)| s == state), "{states:?}");
}

fn states(outcome: &PackageOutcome) -> Vec<(String, String)> {
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    outcome.destinations[0]
        .images
        .iter()
        .map(|i| {
            let state = match &i.state {
                ImageState::Failed(e) => format!("failed: {}", e.message),
                other => format!("{other:?}").to_lowercase(),
            };
            (i.source.clone(), state)
        })
        .collect()
}

/// Every manifest in the log comes after every blob and child manifest it names, in its own
/// repository.
fn assert_manifests_after_their_parts(registry: &FakeRegistry) {
    let store = registry.store.lock().unwrap();
    for (i, event) in store.log.iter().enumerate() {
        let Event::Manifest { repo, reference } = event else {
            continue;
        };
        let bytes = &store.manifests[&(repo.clone(), reference.clone())];
        for digest in fake_registry::references(bytes) {
            let before = store.log[..i].iter().any(|e| match e {
                Event::Blob { repo: r, digest: d } => r == repo && *d == digest,
                Event::Manifest { repo: r, reference } => r == repo && reference == digest.as_str(),
            });
            assert!(
                before,
                "manifest {repo}:{reference} went up before {digest}"
            );
        }
    }
}

#[test]
fn manifests_go_up_only_after_their_parts_and_a_second_push_finds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, shared) = package(dir.path());
    let registry = FakeRegistry::new(Behaviour::default());

    let outcome = push(&pkg, &registry);
    let pushed = vec![
        (
            "registry.alauda.cn:60080/acp/a:v1".to_string(),
            "pushed".to_string(),
        ),
        (
            "registry.alauda.cn:60080/acp/b:v1".to_string(),
            "pushed".to_string(),
        ),
    ];
    assert_eq!(states(&outcome), pushed);
    assert_manifests_after_their_parts(&registry);
    {
        let store = registry.store.lock().unwrap();
        // the shared layer went up once, in chunks, and was mounted into the other repository
        let uploads_of_shared = store
            .log
            .iter()
            .filter(|e| matches!(e, Event::Blob { digest, .. } if *digest == shared))
            .count();
        assert_eq!(uploads_of_shared, 2, "{:?}", store.log);
        assert_eq!(store.mounts, 1);
        assert!(
            store.chunks >= 5,
            "300 kB in 64 KiB chunks: {}",
            store.chunks
        );
        assert!(store.manifests.contains_key(&("acp/a".into(), "v1".into())));
    }
    let blobs = outcome.destinations[0].blobs.clone();
    assert_eq!((blobs.mounted, blobs.failed), (1, 0));

    let log_len = registry.store.lock().unwrap().log.len();
    let again = push(&pkg, &registry);
    let present: Vec<_> = pushed
        .iter()
        .map(|(s, _)| (s.clone(), "present".to_string()))
        .collect();
    assert_eq!(states(&again), present);
    assert_eq!(registry.store.lock().unwrap().log.len(), log_len);
}

#[test]
fn declined_mounts_and_refused_chunks_fall_back_to_whole_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, shared) = package(dir.path());
    let registry = FakeRegistry::new(Behaviour {
        refuse_chunks: true,
        decline_mounts: true,
        ..Default::default()
    });

    let outcome = push(&pkg, &registry);
    assert_all(&outcome, "pushed");
    assert_manifests_after_their_parts(&registry);
    let store = registry.store.lock().unwrap();
    assert_eq!(store.mounts, 0);
    assert_eq!(store.chunks, 0, "no chunk is taken by this registry");
    for repo in ["acp/a", "acp/b"] {
        let bytes = &store.blobs[&(repo.to_string(), shared.clone())];
        assert_eq!(Digest::of(bytes), shared);
    }
}

#[test]
fn a_corrupt_layer_is_never_committed_and_only_its_images_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _) = package(dir.path());
    // b's own layer: same size, other bytes
    let layout = pkg.join("images");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let b = index["manifests"][1]["digest"].as_str().unwrap();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(b)).unwrap()).unwrap();
    let own = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bytes = std::fs::read(blob(&own)).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(blob(&own), bytes).unwrap();

    let registry = FakeRegistry::new(Behaviour::default());
    let outcome = push(&pkg, &registry);
    let states = states(&outcome);
    assert_eq!(states[0].1, "pushed");
    assert!(states[1].1.contains("digest mismatch"), "{states:?}");
    let store = registry.store.lock().unwrap();
    let own = Digest::parse(&own).unwrap();
    assert!(
        !store.blobs.keys().any(|(_, d)| *d == own),
        "the corrupt blob was committed"
    );
    assert!(!store.manifests.contains_key(&("acp/b".into(), "v1".into())));
}

#[test]
fn a_standby_that_refuses_chunks_does_not_change_how_the_primary_is_fed() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, shared) = package(dir.path());
    let primary = FakeRegistry::new(Behaviour::default());
    let standby = FakeRegistry::new(Behaviour {
        refuse_chunks: true,
        ..Default::default()
    });

    let outcome = push_to(&pkg, &[&primary, &standby]);
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(outcome.destinations.len(), 2);
    for d in &outcome.destinations {
        for i in &d.images {
            assert!(
                matches!(i.state, ImageState::Pushed),
                "{}: {:?}",
                i.source,
                i.state
            );
        }
    }
    for registry in [&primary, &standby] {
        assert_manifests_after_their_parts(registry);
        let store = registry.store.lock().unwrap();
        assert_eq!(
            Digest::of(&store.blobs[&("acp/a".to_string(), shared.clone())]),
            shared
        );
    }
    // the refusal is remembered for the standby only: the primary still gets chunks
    assert!(primary.store.lock().unwrap().chunks >= 5);
    assert_eq!(standby.store.lock().unwrap().chunks, 0);
}

/// On a distant link the blob HEADs of a large package take many round trips: the first
/// uploads go while later HEADs are still out, and what the registry already holds is still
/// never sent again.
#[test]
fn uploads_start_while_the_survey_is_still_asking_and_skip_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, layers) = many_images(dir.path(), 40, 100);
    let held: Vec<_> = (9..40)
        .step_by(10)
        .map(|i| (format!("acp/img{i}"), layers[i][0].clone()))
        .collect();

    // 200 blobs, 32 HEADs in flight (--concurrency 1), each answered after 50 ms: about
    // 7 round trips of survey
    let registry = FakeRegistry::new(Behaviour {
        head_delay: Some(std::time::Duration::from_millis(50)),
        ..Default::default()
    });
    for (repo, layer) in &held {
        let bytes =
            std::fs::read(pkg.join("images/blobs/sha256").join(layer.digest.hex())).unwrap();
        let mut store = registry.store.lock().unwrap();
        store
            .blobs
            .insert((repo.clone(), layer.digest.clone()), bytes.into());
        store.log.push(Event::Blob {
            repo: repo.clone(),
            digest: layer.digest.clone(),
        });
    }
    let before = held.len();
    let opts = EngineOptions {
        concurrency: 1,
        ..Default::default()
    };
    let engine = Engine::new(opts, vec![registry.clone() as Arc<dyn RegistryApi>]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let package = Package::open(&pkg).unwrap();
    let outcome = rt.block_on(engine.push_package(&package, &Quiet));

    assert_all(&outcome, "pushed");
    assert_eq!(outcome.destinations[0].blobs.present, held.len() as u64);
    assert_manifests_after_their_parts(&registry);
    let store = registry.store.lock().unwrap();
    for (repo, layer) in &held {
        let sent = store.log[before..].iter().any(|e| {
            matches!(e, Event::Blob { repo: r, digest } if r == repo && *digest == layer.digest)
        });
        assert!(
            !sent,
            "{repo} already held {} and it was sent again",
            layer.digest
        );
    }
    let first = store
        .heads_before_first_upload
        .expect("something was uploaded");
    assert!(
        first < store.heads_answered / 2,
        "the first upload waited for {first} of {} HEADs",
        store.heads_answered
    );
}

/// Mounts and manifests do not wait for the end of the pass: an image whose blobs are all in
/// goes up while another image's slow blob is still on its way, and a blob uploaded for one
/// repository is mounted into the next one as soon as it is in (issue 25: on a distant link
/// each is a round trip of nothing on the wire after the last upload). The rules stay: each
/// manifest only after every one of its parts, in its repository.
#[test]
fn an_image_whose_blobs_are_in_goes_up_while_another_is_still_uploading() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg");
    let mut w = LayoutWriter::create(&pkg.join("images")).unwrap();
    let shared = w.layer(1, 20_000, false).unwrap();
    let fast_own = w.layer(2, 5_000, false).unwrap();
    let slow_own = w.layer(3, 5_000, false).unwrap();
    let fast = w
        .image("fast", "amd64", &[shared.clone(), fast_own], false)
        .unwrap();
    w.tag(&fast, "registry.alauda.cn:60080/acp/fast:v1");
    let slow = w
        .image("slow", "amd64", &[shared.clone(), slow_own.clone()], false)
        .unwrap();
    w.tag(&slow, "registry.alauda.cn:60080/acp/slow:v1");
    w.finish().unwrap();
    common::write_package_yaml(&pkg, "early");

    let registry = FakeRegistry::new(Behaviour {
        slow_commits: Some(("acp/slow", std::time::Duration::from_millis(400))),
        ..Default::default()
    });
    let outcome = push(&pkg, &registry);
    assert_all(&outcome, "pushed");
    assert_manifests_after_their_parts(&registry);
    let store = registry.store.lock().unwrap();
    let at = |wanted: &Event| {
        store
            .log
            .iter()
            .position(|e| e == wanted)
            .unwrap_or_else(|| panic!("{wanted:?} not in {:?}", store.log))
    };
    let slow_layer = at(&Event::Blob {
        repo: "acp/slow".into(),
        digest: slow_own.digest.clone(),
    });
    let fast_manifest = at(&Event::Manifest {
        repo: "acp/fast".into(),
        reference: "v1".into(),
    });
    let shared_mounted = at(&Event::Blob {
        repo: "acp/slow".into(),
        digest: shared.digest.clone(),
    });
    assert_eq!(store.mounts, 1, "the shared layer is uploaded once");
    assert!(
        fast_manifest < slow_layer,
        "acp/fast:v1 waited for the slow blob of another image: {:?}",
        store.log
    );
    assert!(
        shared_mounted < slow_layer,
        "the mount waited for the end of the pass: {:?}",
        store.log
    );
}

/// The blob HEADs go out with the tag HEADs (issue 25: on a distant link the first upload
/// used to wait for both, one after the other), but a re-push whose images are all there
/// asks about at most one window of blobs, not every blob of the package.
#[test]
fn a_re_push_of_many_images_asks_about_few_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _) = many_images(dir.path(), 60, 500);
    // blob HEADs take a while, as on any link (an instant answer would let the whole
    // package be asked before the first tag answer is read)
    let registry = FakeRegistry::new(Behaviour {
        head_delay: Some(std::time::Duration::from_millis(20)),
        ..Default::default()
    });
    let opts = || EngineOptions {
        concurrency: 1, // 32 small requests in flight
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let package = Package::open(&pkg).unwrap();
    let engine = Engine::new(opts(), vec![registry.clone() as Arc<dyn RegistryApi>]);
    let first = rt.block_on(engine.push_package(&package, &Quiet));
    assert_all(&first, "pushed");
    let heads_cold = registry.store.lock().unwrap().heads_answered;
    assert!(heads_cold >= 300, "300 blobs: {heads_cold} HEADs");

    let engine = Engine::new(opts(), vec![registry.clone() as Arc<dyn RegistryApi>]);
    let again = rt.block_on(engine.push_package(&package, &Quiet));
    assert_all(&again, "present");
    let heads_warm = registry.store.lock().unwrap().heads_answered - heads_cold;
    assert!(
        heads_warm <= 2 * 32,
        "a re-push of 60 present images asked {heads_warm} blob HEADs"
    );
}

/// A blob is planned from its own HEADs alone: the first uploads go while the tag HEADs of
/// a package are still out (issue 25: on a distant link that saves the round trips of the
/// tags before the first byte), and images are still pushed or left as the tags say.
#[test]
fn uploads_start_before_the_tag_answers_are_in() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _) = many_images(dir.path(), 40, 900);
    let registry = FakeRegistry::new(Behaviour {
        tag_delay: Some(std::time::Duration::from_millis(300)),
        ..Default::default()
    });
    let outcome = push(&pkg, &registry);
    assert_all(&outcome, "pushed");
    assert_manifests_after_their_parts(&registry);
    let store = registry.store.lock().unwrap();
    assert_eq!(store.tags_answered, 40);
    assert_eq!(
        store.tags_before_first_upload,
        Some(0),
        "the first upload waited for the tags"
    );
    let log_len = store.log.len();
    drop(store);

    // again: every blob is found before any tag answer, and still nothing goes up
    let again = push(&pkg, &registry);
    assert_all(&again, "present");
    assert_eq!(registry.store.lock().unwrap().log.len(), log_len);
}

/// The two-image package pushed once, then a registry (behaving as `behaviour`) holding
/// all of it but `acp/b` (its tag and its blobs): `acp/a:v1` is there, `acp/b:v1`, sharing
/// a layer with it, is not. Gives the package, the shared layer and that registry.
fn a_there_b_missing(dir: &Path, behaviour: Behaviour) -> (PathBuf, Digest, Arc<FakeRegistry>) {
    let (pkg, shared) = package(dir);
    let first = FakeRegistry::new(Behaviour::default());
    assert_all(&push(&pkg, &first), "pushed");
    let registry = FakeRegistry::new(behaviour);
    {
        let from = first.store.lock().unwrap();
        let mut to = registry.store.lock().unwrap();
        to.blobs = from.blobs.clone();
        to.manifests = from.manifests.clone();
        to.blobs.retain(|(repo, _), _| repo != "acp/b");
        to.manifests.retain(|(repo, _), _| repo != "acp/b");
    }
    (pkg, shared, registry)
}

/// `acp/a:v1` is in the registry, `acp/b:v1` (sharing a layer with it) is not, and the blob
/// HEADs are answered before the tag HEADs: the shared layer is mounted into acp/b from
/// acp/a (early). The registry declines the mount: the layer is uploaded to acp/b instead.
#[test]
fn a_mount_declined_early_for_a_blob_held_by_a_present_image_becomes_an_upload() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _, registry) = a_there_b_missing(
        dir.path(),
        Behaviour {
            decline_mounts: true,
            tag_delay: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        },
    );
    let outcome = push(&pkg, &registry);
    assert_eq!(
        states(&outcome),
        vec![
            (
                "registry.alauda.cn:60080/acp/a:v1".to_string(),
                "present".to_string()
            ),
            (
                "registry.alauda.cn:60080/acp/b:v1".to_string(),
                "pushed".to_string()
            ),
        ]
    );
    assert_manifests_after_their_parts(&registry);
}

/// As above with mounts allowed: acp/b is pushed, and the report counts the shared layer
/// mounted into acp/b.
#[test]
fn a_blob_mounted_early_from_a_present_image_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _, registry) = a_there_b_missing(
        dir.path(),
        Behaviour {
            tag_delay: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        },
    );
    let outcome = push(&pkg, &registry);
    assert_eq!(states(&outcome)[1].1, "pushed");
    let blobs = outcome.destinations[0].blobs.clone();
    assert_eq!((blobs.mounted, blobs.failed), (1, 0), "{blobs:?}");
}

/// `acp/a:v1`'s tag is there but its shared layer is not (and commits into acp/a are
/// refused); `acp/b:v1` is missing. The per-blob plan, made before the tags are in, uploads
/// the shared layer to acp/a (first in line) and mounts it into acp/b. acp/a is present: no
/// failure may be counted for it, and acp/b must still get its layer and be pushed.
#[test]
fn a_blob_sent_only_for_a_present_image_neither_fails_the_report_nor_starves_another() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, shared, registry) = a_there_b_missing(
        dir.path(),
        Behaviour {
            refuse_commits: Some("acp/a"),
            tag_delay: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        },
    );
    registry
        .store
        .lock()
        .unwrap()
        .blobs
        .remove(&("acp/a".to_string(), shared.clone()));
    let outcome = push(&pkg, &registry);
    let states = states(&outcome);
    let blobs = outcome.destinations[0].blobs.clone();
    assert_eq!(
        (states[0].1.as_str(), states[1].1.as_str(), blobs.failed),
        ("present", "pushed", 0),
        "{blobs:?}"
    );
}

/// As in the mount test above, but a blob of acp/b fails once transiently, so acp/b
/// is not complete before the end of the first pass. The shared layer was mounted into acp/b
/// early; acp/b's manifests must still go up at the end.
#[test]
fn an_image_completed_by_a_later_pass_keeps_its_early_mount() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _, registry) = a_there_b_missing(
        dir.path(),
        Behaviour {
            tag_delay: Some(std::time::Duration::from_millis(300)),
            flaky_commits: Some(("acp/b", 1)),
            ..Default::default()
        },
    );
    let outcome = push(&pkg, &registry);
    assert_eq!(registry.store.lock().unwrap().flaky_failed, 1);
    let states = states(&outcome);
    assert_eq!(states[1].1, "pushed", "{states:?}");
    assert_manifests_after_their_parts(&registry);
}

/// a standby whose tag HEADs all fail (after its blob HEADs went out) neither holds
/// the primary back nor gets a manifest; the push ends.
#[test]
fn a_standby_whose_tag_heads_fail_gets_no_manifest_and_does_not_stop_the_primary() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _) = package(dir.path());
    let primary = FakeRegistry::new(Behaviour::default());
    let standby = FakeRegistry::new(Behaviour {
        fail_tags: true,
        tag_delay: Some(std::time::Duration::from_millis(200)),
        ..Default::default()
    });
    let outcome = push_to(&pkg, &[&primary, &standby]);
    assert_all(&outcome, "pushed");
    assert_manifests_after_their_parts(&primary);
    assert!(outcome.destinations[1]
        .images
        .iter()
        .all(|i| matches!(i.state, ImageState::Failed(_))));
    assert!(standby.store.lock().unwrap().manifests.is_empty());
    assert_eq!(outcome.destinations[1].blobs.failed, 0);
}
