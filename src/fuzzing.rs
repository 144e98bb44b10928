//! Shared by the fuzz target (fuzz/) and the regression test that replays what it found
//! (tests/fuzz_regressions.rs): read a package the way `push` does, minus the network.

use std::path::Path;

use crate::source::{ImageGraph, Package};

/// Parses a reference as packages carry them; must never panic (fuzzed on its own too).
pub fn exercise_reference(bytes: &[u8]) {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if let Ok(r) = crate::source::SourceRef::parse(s) {
            assert!(
                crate::source::layout::valid_tag(&r.reference) || r.reference.starts_with("sha")
            );
            assert!(!r.repository.contains(".."));
        }
    }
}

/// Reads the head, resolves every image, and streams every blob through verification-free
/// sinks. Must never panic and never use more than the documented memory, whatever the input.
pub fn exercise(path: &Path) {
    let Ok(pkg) = Package::open(path) else { return };
    let Ok(head) = pkg.read_head() else { return };
    let mut wanted = crate::source::Wanted::new();
    for d in &head.images {
        // the reference parser sees every name a package carries
        if let Some(name) = d.ref_name() {
            let _ = crate::source::SourceRef::parse(name);
        }
        if let Ok(g) = ImageGraph::resolve(d, &head.docs) {
            for b in g.blobs {
                wanted.insert(b.digest, b.size);
            }
        }
    }
    let _ = pkg.stream_blobs(&wanted, &mut |_, _, r| {
        let _ = std::io::copy(r, &mut std::io::sink());
        Ok(crate::source::Flow::More)
    });
}
