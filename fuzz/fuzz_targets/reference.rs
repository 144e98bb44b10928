//! Fuzzes the image reference parser: whatever a package's index.json names an image, the
//! parser either refuses it or yields a repository and a tag/digest that are safe in a URL.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferry::fuzzing::exercise_reference(data);
});
