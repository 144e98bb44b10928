//! `ferry show`: what a package is, like `violet show`. Reads only the package head.

use std::path::Path;

use super::Output;
use crate::error::Error;
use crate::package::build::REWRITTEN_FROM;
use crate::source::{Package, PackageHead};

pub fn run(path: &Path, all: bool, output: Output, violet_style: bool) -> Result<i32, Error> {
    let pkg = Package::open(path)?;
    let head = pkg.read_head()?;
    if let Some(format) = pkg.foreign_format() {
        return show_foreign(&pkg, &head, format.as_str(), output);
    }
    let m = &head.meta;
    let images: Vec<&str> = head.images.iter().filter_map(|d| d.ref_name()).collect();
    // indexes `ferry package build` reduced to the asked platforms: reference → old digest
    let rewritten: std::collections::BTreeMap<&str, &str> = head
        .images
        .iter()
        .filter_map(|d| {
            let from = d.annotations.as_ref()?.get(REWRITTEN_FROM)?;
            Some((d.ref_name()?, from.as_str()))
        })
        .collect();
    if output == Output::Json {
        let mut v = serde_json::json!({
            "name": m.metadata.name,
            "displayName": m.metadata.display_name,
            "type": m.spec.kind,
            "lifecycle": m.spec.lifecycle,
            "arch": m.metadata.arch,
            "version": m.metadata.version,
        });
        if all {
            v["artifact"] = serde_json::json!(m.spec.artifact);
            v["images"] = serde_json::json!(images);
            v["charts"] = serde_json::json!(head.charts);
            if !rewritten.is_empty() {
                v["rewrittenIndexes"] = serde_json::json!(rewritten);
            }
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else if violet_style {
        // violet's layout: display name, bracketed lists
        println!(
            "Name: {}",
            m.metadata
                .display_name
                .as_deref()
                .unwrap_or(&m.metadata.name)
        );
        println!("Type: {}", m.spec.kind);
        println!("Arch: [{}]", m.metadata.arch.join(" "));
        println!("Version: {}", m.metadata.version);
        if all {
            println!("Artifact: {}", m.spec.artifact.as_deref().unwrap_or(""));
            println!("RelateImages: [{}]", images.join(" "));
        }
    } else {
        println!("Name:      {}", m.metadata.name);
        if let Some(d) = &m.metadata.display_name {
            println!("Display:   {d}");
        }
        println!("Type:      {}", m.spec.kind);
        println!("Arch:      {}", m.metadata.arch.join(","));
        println!("Version:   {}", m.metadata.version);
        if all {
            println!("Lifecycle: {}", m.spec.lifecycle);
            println!("Artifact:  {}", m.spec.artifact.as_deref().unwrap_or("-"));
            println!("Images:");
            for i in &images {
                match rewritten.get(i) {
                    Some(from) => println!(
                        "  {i} (index rewritten to the package's platforms; the registry's was {from})"
                    ),
                    None => println!("  {i}"),
                }
            }
            for c in &head.charts {
                println!("Chart:     {c}");
            }
        }
    }
    for w in &head.warnings {
        eprintln!("warning: {w}");
    }
    Ok(0)
}

/// A Docker or OCI archive: no package.yaml to show, only the images it holds (always,
/// `--all` or not: they are all it has), by the names they are pushed under, and the entries
/// that cannot be pushed, with why.
fn show_foreign(
    pkg: &Package,
    head: &PackageHead,
    format: &str,
    output: Output,
) -> Result<i32, Error> {
    let (images, broken) = head.resolve_images();
    if output == Output::Json {
        let v = serde_json::json!({
            "file": pkg.label(),
            "format": format,
            "images": images.iter().map(|i| serde_json::json!({
                "name": i.source,
                "digest": i.graph.root.digest.to_string(),
                "mediaType": i.graph.root.media_type,
                "blobs": i.graph.blobs.len(),
                "bytes": i.graph.blobs.iter().map(|b| b.size).sum::<u64>(),
            })).collect::<Vec<_>>(),
            "unpushable": broken.iter().map(|b| serde_json::json!({
                "name": b.source,
                "digest": b.digest.to_string(),
                "error": b.error.message,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        println!("File:      {}", pkg.label());
        println!("Format:    {format} (no package.yaml: push it with --dest-repo)");
        println!("Images:");
        for i in &images {
            let bytes: u64 = i.graph.blobs.iter().map(|b| b.size).sum();
            println!("  {}  {}  {bytes} bytes", i.source, i.graph.root.digest);
        }
        for b in &broken {
            println!("  (not pushable) {}: {}", b.digest, b.error.message);
        }
    }
    for w in &head.warnings {
        eprintln!("warning: {w}");
    }
    Ok(0)
}
