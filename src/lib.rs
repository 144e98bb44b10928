//! ferry: carry offline packages (OCI images inside `.tgz` files) into registries.
//!
//! The pipeline, one module per stage (see docs/architecture.md):
//!
//! * [`source`]  — reads packages (`.tgz` streamed, or a directory): metadata, manifests, blob bytes.
//! * [`plan`]    — decides, per destination, which blobs to upload, mount or skip.
//! * [`engine`]  — moves bytes: verifies every blob while it streams, feeds the sinks, retries.
//! * [`sink`]    — talks to one registry (OCI distribution API): HEAD, mount, chunked upload, manifests.
//! * [`report`]  — progress display and the end-of-run summary (text or JSON).
//! * [`package`] — `ferry package create/build`: packages made straight from a registry.
//! * [`cli`]     — the command line (`pack`, `show`, `push`).

pub mod cli;
pub mod devtools;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod oci;
pub mod package;
pub mod pipeline;
pub mod plan;
pub mod platform;
pub mod report;
pub mod sink;
pub mod source;
pub mod verify;
