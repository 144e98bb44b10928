//! Errors from the platform say what failed, where, and what to do next.

mod common;

use common::platform::*;
use common::*;

/// `ferry list` against the fake (its apps.yaml goes to a temp dir).
fn list(p: &FakePlatform) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec![
        "list".into(),
        "--output-file".into(),
        dir.path().join("apps.yaml").display().to_string(),
    ];
    args.extend(p.token_flags());
    ferry(&args)
}

#[test]
fn a_missing_api_group_names_the_group_and_the_cluster_not_cannot_reach() {
    let p = FakePlatform::start(PlatformOpts::default());
    p.state
        .lock()
        .unwrap()
        .missing_groups
        .push("global|cluster.alauda.io".into());
    let run = list(&p);
    assert_eq!(run.code, 7, "{}", run.all());
    assert!(
        run.stderr
            .contains("cluster global: the API group cluster.alauda.io is not served there")
            && run
                .stderr
                .contains("is this the global cluster's platform address"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("cannot reach"), "{}", run.stderr);
}

#[test]
fn list_counts_the_clusters_it_read_and_names_the_rest() {
    let p = FakePlatform::start(PlatformOpts {
        clusters: vec!["global", "region1"],
        ..Default::default()
    });
    p.state
        .lock()
        .unwrap()
        .failing_reads
        .push("region1|artifacts".into());
    let run = list(&p);
    assert_eq!(run.code, 7, "{}", run.all());
    assert!(
        run.stderr
            .contains("0 applications on 1 cluster read (1 could not be read: region1)"),
        "{}",
        run.stderr
    );
}

#[test]
fn gc_checks_its_backup_dir_before_the_first_network_call() {
    let p = FakePlatform::start(PlatformOpts::default());
    let mut args: Vec<String> = vec![
        "gc".into(),
        "--yes".into(),
        "--backup-dir".into(),
        "/nonexistent/backups".into(),
    ];
    args.extend(p.token_flags());
    let run = ferry(&args);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("--backup-dir /nonexistent/backups: cannot write there"),
        "{}",
        run.stderr
    );
    assert!(p.log().is_empty(), "the platform was called: {:?}", p.log());
}
