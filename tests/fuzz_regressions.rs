//! Replays every input the fuzzer (scripts/fuzz.sh) ever found troublesome, plus the
//! fixtures, through the package reader: none may panic.

use std::io::Write;
use std::path::Path;

#[test]
fn fuzz_findings_and_fixtures_read_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut replayed = 0;
    for entry in std::fs::read_dir(root.join("fuzz/regressions")).unwrap() {
        let input = std::fs::read(entry.unwrap().path()).unwrap();
        // the fuzz target's input is a tar stream; it gzips it the same way
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        gz.write_all(&input).unwrap();
        let p = dir.path().join(format!("r{replayed}.tgz"));
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        ferry::fuzzing::exercise(&p);
        replayed += 1;
    }
    for entry in std::fs::read_dir(root.join("fixtures")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|x| x == "tgz") {
            ferry::fuzzing::exercise(&p);
            replayed += 1;
        }
    }
    assert!(replayed >= 4, "nothing replayed");
}
