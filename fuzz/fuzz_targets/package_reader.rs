//! Fuzzes the package reader. The input is the *tar* stream (gzip is applied here, stored
//! blocks), so that mutations hit the tar headers, package.yaml, index.json and manifests
//! rather than dying at the gzip header check.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("ferry-fuzz-{}.tgz", std::process::id()));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(data).unwrap();
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    ferry::fuzzing::exercise(&path);
});
