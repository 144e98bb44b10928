//! What the engine hands back for one package, and how it tells the outside world what it is
//! doing while it works.
//!
//! Contract: a [`PackageOutcome`] is typed data (package metadata; per destination, per image:
//! repository, reference, digest, state; blob counts), never text. The steps after the
//! transfer (platform resources) read it and `report` turns it into text or JSON;
//! none of them reaches into the engine, the sink or the source. While it runs, the engine
//! only talks to an [`Observer`]; it never prints.

use serde::Serialize;

use crate::error::Error;
use crate::source::PackageMeta;

/// One package after the transfer.
#[derive(Debug, Clone)]
pub struct PackageOutcome {
    /// The package as the user named it (file name, or `core.tgz!plugins/x.tgz`).
    pub file: String,
    /// `package.yaml`, when the head could be read.
    pub meta: Option<PackageMeta>,
    pub warnings: Vec<String>,
    /// The package failed as a whole (unreadable, inconsistent, interrupted before start).
    pub error: Option<Error>,
    /// One entry per destination of the run, in the run's order (primary first).
    pub destinations: Vec<DestinationOutcome>,
}

impl PackageOutcome {
    pub fn new(file: String) -> Self {
        PackageOutcome {
            file,
            meta: None,
            warnings: Vec::new(),
            error: None,
            destinations: Vec::new(),
        }
    }

    /// `package.yaml`'s `spec.type`; unspecified when the package could not be read.
    pub fn kind(&self) -> crate::source::PackageKind {
        self.meta
            .as_ref()
            .map_or(Default::default(), |m| m.spec.kind)
    }

    /// Whether every image reached every destination (pushed or already present).
    pub fn all_images_in(&self) -> bool {
        self.destinations
            .iter()
            .flat_map(|d| &d.images)
            .all(|i| !matches!(i.state, ImageState::Failed(_)))
    }

    /// The outcome for one destination, by its label (`host[:port][/prefix]`).
    pub fn destination(&self, label: &str) -> Option<&DestinationOutcome> {
        self.destinations.iter().find(|d| d.label == label)
    }
}

/// One package on one destination registry.
#[derive(Debug, Clone)]
pub struct DestinationOutcome {
    /// `host[:port][/prefix]`: what identifies the destination in reports and steps.
    pub label: String,
    pub images: Vec<ImageOutcome>,
    pub blobs: BlobCounts,
    /// Dry run: what would be done.
    pub plan: Option<PlanSummary>,
}

/// One image of a package on one destination.
#[derive(Debug, Clone)]
pub struct ImageOutcome {
    /// Its name in the package (`ref.name`), or the chart file for a chart artifact.
    pub source: String,
    /// Repository in the destination (prefix included); `None` when the name did not parse.
    pub repo: Option<String>,
    /// Tag, or digest when the image is pinned by digest.
    pub reference: String,
    /// Digest of the image's root manifest (or index).
    pub digest: String,
    pub state: ImageState,
}

impl ImageOutcome {
    /// `label/repo:tag` or `label/repo@sha256:…`; `label/?` when the name did not parse.
    pub fn destination(&self, label: &str) -> String {
        match &self.repo {
            None => format!("{label}/?"),
            Some(repo) if self.reference.starts_with("sha256:") => {
                format!("{label}/{repo}@{}", self.reference)
            }
            Some(repo) => format!("{label}/{repo}:{}", self.reference),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ImageState {
    /// Not pushed yet: in a dry run, what would be pushed.
    Planned,
    /// The destination tag already pointed at this exact digest.
    Present,
    /// Manifests pushed by this run.
    Pushed,
    Failed(Error),
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BlobCounts {
    pub uploaded: u64,
    /// Already in the destination repository (HEAD said so).
    pub present: u64,
    pub mounted: u64,
    pub failed: u64,
    /// Foreign / non-distributable layers left out.
    pub nondistributable: u64,
    /// Blob bytes uploaded (or, in a dry run, to upload).
    pub bytes: u64,
}

impl BlobCounts {
    pub fn add(&mut self, o: &BlobCounts) {
        self.uploaded += o.uploaded;
        self.present += o.present;
        self.mounted += o.mounted;
        self.failed += o.failed;
        self.nondistributable += o.nondistributable;
        self.bytes += o.bytes;
    }
}

/// A dry run's plan for one package and destination.
#[derive(Debug, Clone, Serialize)]
pub struct PlanSummary {
    pub destination: String,
    pub images_to_push: u64,
    pub images_present: u64,
    pub blobs_to_upload: u64,
    pub bytes_to_upload: u64,
    pub blobs_to_mount: u64,
    pub blobs_present: u64,
    pub nondistributable: u64,
}

/// Told what the engine is doing. Implemented by `report::progress` (bars on a terminal,
/// log lines otherwise); the engine itself never prints.
pub trait Observer: Send + Sync {
    /// A package starts; the returned handle follows it to the end.
    fn package(&self, label: &str) -> Box<dyn PackageObserver>;
    /// More bytes are planned to be sent (once a package's plan is known).
    fn planned_bytes(&self, bytes: u64);
}

pub trait PackageObserver: Send + Sync {
    /// A minor step (shown on a terminal, logged only with `--debug`).
    fn step(&self, status: &str);
    /// A step worth a log line when not on a terminal.
    fn note(&self, status: &str);
    /// The package is finished.
    fn done(&self, status: &str);
}
