//! Shared by the fuzz target (fuzz/) and the regression test that replays what it found
//! (tests/fuzz_regressions.rs): read a package the way `push` does, minus the network.

use std::collections::HashMap;
use std::path::Path;

use crate::source::{ImageGraph, Package};

/// Reads the head, resolves every image, and streams every blob through verification-free
/// sinks. Must never panic and never use more than the documented memory, whatever the input.
pub fn exercise(path: &Path) {
    let Ok(pkg) = Package::open(path) else { return };
    let Ok(head) = pkg.read_head() else { return };
    let mut wanted = HashMap::new();
    for d in &head.images {
        if let Ok(g) = ImageGraph::resolve(d, &head.docs) {
            for b in g.blobs {
                wanted.insert(b.digest, b.size);
            }
        }
    }
    let _ = pkg.stream_blobs(&wanted, &mut |_, _, r| {
        let _ = std::io::copy(r, &mut std::io::sink());
        Ok(())
    });
}
