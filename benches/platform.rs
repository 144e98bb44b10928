//! Platform-side benchmarks, run by scripts/bench.sh (`cargo bench --bench platform`). They
//! reuse the tests' fake platform (tests/common/platform.rs) and real Distribution registries,
//! and print a Markdown table:
//!
//! 1. 40 packages of a few MB each vs the same images in one package: is a directory of many
//!    packages bound by per-package costs? (`--packages-at-once` 1 and the default 4)
//! 2. Resources for 20 clusters with 5 ms added to every API call by the fake platform:
//!    one run with `--clusters c1..c20` vs 20 runs of one cluster each.
//!
//! `cargo test --all-targets` runs it once too (every push must succeed; nothing is timed
//! against a limit there), which keeps the benchmark working.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::platform::*;
use common::*;

fn package(dir: &Path, name: &str, images: &[(String, u64)]) -> PathBuf {
    let src = dir.join(format!("src-{name}"));
    let mut w = ferry::devtools::LayoutWriter::create(&src.join("images")).unwrap();
    for (reference, seed) in images {
        let a = w.layer(*seed, 1_500_000, false).unwrap();
        let b = w.layer(seed + 1_000_000, 500_000, false).unwrap();
        let m = w.image(reference, "amd64", &[a, b], false).unwrap();
        w.tag(&m, &format!("registry.alauda.cn:60080/{reference}"));
    }
    w.finish().unwrap();
    std::fs::write(
        src.join("package.yaml"),
        format!("apiVersion: ferry/v1\nkind: Package\nmetadata:\n  name: {name}\n  version: 1.0.0\n  arch: [linux/amd64]\nspec:\n  type: bundle\n  lifecycle: aligned\n  artifact: registry.alauda.cn:60080/{}\n", images[0].0),
    )
    .unwrap();
    let out = dir.join(format!("{name}.amd64.v1.0.0.tgz"));
    pack(&src.join("images"), &src, &out);
    out
}

fn timed(args: &[String]) -> f64 {
    let t = Instant::now();
    let run = ferry(args);
    assert_eq!(run.code, 0, "{}", run.all());
    t.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let many = dir.path().join("many");
    std::fs::create_dir_all(&many).unwrap();
    let mut all = Vec::new();
    for i in 0..40u64 {
        let imgs = vec![(format!("acp/pkg{i}:v1"), 100 + i)];
        all.extend(imgs.clone());
        package(&many, &format!("pkg{i}"), &imgs);
    }
    let one_dir = dir.path().join("one");
    std::fs::create_dir_all(&one_dir).unwrap();
    let one = package(&one_dir, "all-in-one", &all);
    let bytes: u64 = std::fs::read_dir(&many)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "tgz"))
        .map(|e| e.metadata().unwrap().len())
        .sum();

    let mut rows = Vec::new();
    let push = |what: &Path, extra: &[&str]| {
        let p = FakePlatform::start(PlatformOpts::default());
        let reg = Registry::start(RegistryOpts::default());
        p.set_product_base(&reg.host(), None, false);
        let mut args: Vec<String> = vec!["push".into(), what.display().to_string()];
        args.extend(p.token_flags());
        args.extend(["--plain".into(), "-q".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        timed(&args)
    };
    let one_s = push(&one, &[]);
    let many_1 = push(&many, &["--packages-at-once", "1"]);
    let many_4 = push(&many, &[]);
    rows.push(format!(
        "| 40 packages, {:.0} MB, one at a time | {many_1:.2} | {:.2}× one package |",
        bytes as f64 / 1e6,
        many_1 / one_s
    ));
    rows.push(format!(
        "| 40 packages, 4 at once (default) | {many_4:.2} | {:.2}× one package |",
        many_4 / one_s
    ));
    rows.push(format!(
        "| the same images in one package | {one_s:.2} | 1.00× |"
    ));

    // 20 clusters, 5 ms per API call
    let clusters: Vec<String> = (1..=20).map(|i| format!("c{i}")).collect();
    let names: Vec<&'static str> = clusters
        .iter()
        .map(|c| &*Box::leak(c.clone().into_boxed_str()))
        .chain(["global"])
        .collect();
    let p = FakePlatform::start(PlatformOpts {
        clusters: names,
        ..Default::default()
    });
    let reg = Registry::start(RegistryOpts::default());
    p.set_product_base(&reg.host(), None, false);
    let pkg = many.join("pkg0.amd64.v1.0.0.tgz");
    let base = |extra: &[String]| {
        let mut args: Vec<String> = vec!["push".into(), pkg.display().to_string()];
        args.extend(p.token_flags());
        args.extend(["--plain".into(), "-q".into()]);
        args.extend(extra.iter().cloned());
        args
    };
    timed(&base(&["--skip-crs".into()])); // images in once
    p.state.lock().unwrap().api_delay = Duration::from_millis(5);
    let all_at_once = timed(&base(&[
        "--skip-push".into(),
        "--clusters".into(),
        clusters.join(","),
    ]));
    // 20 separate runs against a second platform, so that each creates its resources
    let p2 = FakePlatform::start(PlatformOpts {
        clusters: clusters
            .iter()
            .map(|c| &*Box::leak(c.clone().into_boxed_str()))
            .chain(["global"])
            .collect(),
        ..Default::default()
    });
    p2.set_product_base(&reg.host(), None, false);
    p2.state.lock().unwrap().api_delay = Duration::from_millis(5);
    let mut one_by_one = 0.0;
    for c in &clusters {
        let mut args: Vec<String> = vec!["push".into(), pkg.display().to_string()];
        args.extend(p2.token_flags());
        args.extend([
            "--plain".into(),
            "-q".into(),
            "--skip-push".into(),
            "--clusters".into(),
            c.clone(),
        ]);
        one_by_one += timed(&args);
    }
    rows.push(format!("| resources for 20 clusters in one run (5 ms per API call) | {all_at_once:.2} | {:.2}× 20 one-cluster runs |", all_at_once / one_by_one));
    rows.push(format!(
        "| 20 runs of one cluster each | {one_by_one:.2} | 1.00× |"
    ));

    println!("| platform scenario | wall s | ratio |");
    println!("| --- | --- | --- |");
    for r in rows {
        println!("{r}");
    }
}
