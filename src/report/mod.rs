//! What a run tells its user: live progress ([`progress`]) and the end-of-run report,
//! printed as text or as JSON (`--output json`). The report never holds a secret: it is
//! built from package contents, registry host names and our own error messages.

pub mod progress;
mod resources;

pub use resources::{ResourceAction, ResourceReport};

use serde::Serialize;

use crate::engine::{ImageState, PackageOutcome};
use crate::error::{Error, ErrorKind};
use crate::platform::artifacts::Publication;

#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<&Error> for ErrorReport {
    fn from(e: &Error) -> Self {
        ErrorReport {
            kind: e.kind,
            message: e.message.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    /// Manifests pushed by this run.
    Pushed,
    /// The destination tag already pointed at this exact digest.
    Present,
    /// Dry run: would be pushed.
    Planned,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub source: String,
    pub destination: String,
    pub digest: String,
    pub status: ImageStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
}

pub use crate::engine::{BlobCounts, PlanSummary};

#[derive(Debug, Clone, Serialize)]
pub struct PackageReport {
    pub file: String,
    pub name: String,
    pub version: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub images: Vec<ImageReport>,
    pub blobs: BlobCounts,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlanSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
    /// Platform resources written (or planned) for this package, per cluster.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceReport>,
    /// Why no resources were written although a platform was given (images missing, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources_skipped: Option<String>,
}

impl PackageReport {
    /// The report of one package: the engine's outcome (charts included, as images) and
    /// what each platform side's publishing step did.
    pub fn build(outcome: &PackageOutcome, publications: &[Publication]) -> Self {
        let meta = outcome.meta.as_ref();
        let mut report = PackageReport {
            file: outcome.file.clone(),
            name: meta.map(|m| m.metadata.name.clone()).unwrap_or_default(),
            version: meta.map(|m| m.metadata.version.clone()).unwrap_or_default(),
            kind: outcome.kind().as_str().to_string(),
            images: Vec::new(),
            blobs: BlobCounts::default(),
            plan: Vec::new(),
            warnings: outcome.warnings.clone(),
            error: outcome.error.as_ref().map(ErrorReport::from),
            resources: Vec::new(),
            resources_skipped: None,
        };
        for d in &outcome.destinations {
            report.blobs.add(&d.blobs);
            report.plan.extend(d.plan.clone());
            report.images.extend(d.images.iter().map(|i| {
                let (status, error) = match &i.state {
                    ImageState::Planned => (ImageStatus::Planned, None),
                    ImageState::Present => (ImageStatus::Present, None),
                    ImageState::Pushed => (ImageStatus::Pushed, None),
                    ImageState::Failed(e) => (ImageStatus::Failed, Some(ErrorReport::from(e))),
                };
                ImageReport {
                    source: i.source.clone(),
                    destination: i.destination(&d.label),
                    digest: i.digest.clone(),
                    status,
                    error,
                }
            }));
        }
        let mut skipped = Vec::new();
        for p in publications {
            report.warnings.extend(p.warnings.iter().cloned());
            if report.error.is_none() {
                report.error = p.error.as_ref().map(ErrorReport::from);
            }
            for (cluster, e) in &p.unreachable {
                let e = e.clone().context(format!(
                    "cluster {cluster} of {}: no resources written there",
                    p.platform
                ));
                match report.error {
                    None => report.error = Some(ErrorReport::from(&e)),
                    Some(_) => report.warnings.push(e.message),
                }
            }
            skipped.extend(p.skipped.clone());
            report.resources.extend(p.resources.iter().map(|o| {
                let mut r = ResourceReport::from(o);
                r.platform = p.platform.clone();
                r
            }));
        }
        if !skipped.is_empty() {
            report.resources_skipped = Some(skipped.join("; "));
        }
        report
    }

    pub fn errors(&self) -> impl Iterator<Item = &ErrorReport> {
        self.error
            .iter()
            .chain(self.images.iter().filter_map(|i| i.error.as_ref()))
            .chain(self.resources.iter().filter_map(|r| r.error.as_ref()))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub images_pushed: u64,
    pub images_present: u64,
    pub images_failed: u64,
    pub images_planned: u64,
    pub blobs: BlobCounts,
    /// Every byte of request bodies sent, retries included.
    pub bytes_sent: u64,
    pub retries: u64,
    /// HTTP requests made to the registries (what round trips cost on a distant link).
    pub requests: u64,
    /// Bytes read from the package files (compressed, as on disk): about their size when
    /// every package was read once, whatever the number of registries fed.
    pub package_bytes_read: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub ok: bool,
    pub exit_code: i32,
    pub dry_run: bool,
    pub destinations: Vec<String>,
    pub packages: Vec<PackageReport>,
    pub totals: Totals,
    pub seconds: f64,
    /// Blob bytes uploaded per second, in MB/s (10^6).
    pub throughput_mb_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
}

impl RunReport {
    /// Fills totals, `ok` and the exit code from the packages.
    pub fn finish(&mut self) {
        let mut t = Totals {
            bytes_sent: self.totals.bytes_sent,
            retries: self.totals.retries,
            requests: self.totals.requests,
            package_bytes_read: crate::source::bytes_read(),
            ..Default::default()
        };
        let mut worst: Option<ErrorKind> = self.error.as_ref().map(|e| e.kind);
        for p in &self.packages {
            t.blobs.add(&p.blobs);
            for i in &p.images {
                match i.status {
                    ImageStatus::Pushed => t.images_pushed += 1,
                    ImageStatus::Present => t.images_present += 1,
                    ImageStatus::Planned => t.images_planned += 1,
                    ImageStatus::Failed => t.images_failed += 1,
                }
            }
            for e in p.errors() {
                if worst.is_none_or(|w| e.kind.severity() > w.severity()) {
                    worst = Some(e.kind);
                }
            }
        }
        self.throughput_mb_s = if self.seconds > 0.0 {
            t.blobs.bytes as f64 / 1e6 / self.seconds
        } else {
            0.0
        };
        self.totals = t;
        self.exit_code = worst.map_or(0, |k| k.exit_code());
        self.ok = self.exit_code == 0;
    }

    pub fn render_text(&self) -> String {
        let mut s = String::new();
        for p in &self.packages {
            let title = if p.name.is_empty() {
                p.file.clone()
            } else {
                format!("{} {} ({})", p.name, p.version, p.file)
            };
            s.push_str(&format!("package {title}\n"));
            if let Some(e) = &p.error {
                s.push_str(&format!("  FAILED: {}\n", e.message));
            }
            for w in &p.warnings {
                s.push_str(&format!("  warning: {w}\n"));
            }
            for plan in &p.plan {
                s.push_str(&format!(
                    "  plan for {}: {} to push ({} present), {} to upload ({}), {} to mount, {} present{}\n",
                    plan.destination,
                    count(plan.images_to_push, "image"),
                    plan.images_present,
                    count(plan.blobs_to_upload, "blob"),
                    human_bytes(plan.bytes_to_upload),
                    plan.blobs_to_mount,
                    plan.blobs_present,
                    if plan.nondistributable > 0 { format!(", {} non-distributable left out", plan.nondistributable) } else { String::new() }
                ));
            }
            for i in &p.images {
                let status = match i.status {
                    ImageStatus::Pushed => "pushed ",
                    ImageStatus::Present => "present",
                    ImageStatus::Planned => "planned",
                    ImageStatus::Failed => "FAILED ",
                };
                s.push_str(&format!("  {status} {}\n", i.destination));
                if let Some(e) = &i.error {
                    s.push_str(&format!("          {}\n", e.message));
                }
            }
            if let Some(why) = &p.resources_skipped {
                s.push_str(&format!("  resources not written: {why}\n"));
            }
            for r in &p.resources {
                let action = match r.action {
                    ResourceAction::Created => "created       ",
                    ResourceAction::Updated => "updated       ",
                    ResourceAction::Unchanged => "unchanged     ",
                    ResourceAction::WouldCreate => "would create  ",
                    ResourceAction::WouldUpdate => "would update  ",
                    ResourceAction::Failed => "FAILED        ",
                };
                s.push_str(&format!(
                    "  {action}{} {} (cluster {}{})\n",
                    r.kind,
                    r.name,
                    r.cluster,
                    if r.platform.is_empty() {
                        String::new()
                    } else {
                        format!(" of {}", r.platform)
                    }
                ));
                if let Some(e) = &r.error {
                    s.push_str(&format!("          {}\n", e.message));
                }
            }
        }
        let t = &self.totals;
        if self.dry_run && self.error.is_some() && self.packages.is_empty() {
            // nothing was asked of the registry: zeros here would read as "nothing to do"
            s.push_str("dry run: no plan could be made (see the error)\n");
        } else if self.dry_run {
            s.push_str(&format!(
                "dry run: would push {}; {} already present\n",
                count(t.images_planned, "image"),
                t.images_present
            ));
            if let Some(est) = &self.estimate {
                s.push_str(&format!("{est}\n"));
            }
        } else {
            s.push_str(&format!(
                "images: {} pushed, {} already present, {} failed\nblobs: {} uploaded, {} already present, {} mounted, {} failed{}\nsent {} in {:.1}s ({:.1} MB/s){}\n",
                t.images_pushed,
                t.images_present,
                t.images_failed,
                t.blobs.uploaded,
                t.blobs.present,
                t.blobs.mounted,
                t.blobs.failed,
                if t.blobs.nondistributable > 0 { format!(", {} non-distributable left out", t.blobs.nondistributable) } else { String::new() },
                human_bytes(t.bytes_sent),
                self.seconds,
                self.throughput_mb_s,
                if t.retries > 0 { format!(", {} retries", t.retries) } else { String::new() },
            ));
        }
        s.push_str(if self.ok {
            "result: OK\n"
        } else {
            "result: FAILED\n"
        });
        s
    }
}

/// `1 image`, `2 images`: counts that read as a person writes them.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", group_thousands(n))
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// "would send 83.2 GB in 11,480 blobs, about 11 min at 1 Gbit/s"
pub fn estimate_line(bytes: u64, blobs: u64, link_bits_per_s: u64) -> String {
    let secs = bytes as f64 * 8.0 / link_bits_per_s.max(1) as f64;
    let time = if secs < 60.0 {
        format!("{secs:.0} s")
    } else if secs < 3600.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    };
    format!(
        "would send {} in {}, about {time} at {}",
        human_bytes(bytes),
        count(blobs, "blob"),
        human_rate(link_bits_per_s)
    )
}

fn human_rate(bits: u64) -> String {
    if bits >= 1_000_000_000 && bits.is_multiple_of(1_000_000_000) {
        format!("{} Gbit/s", bits / 1_000_000_000)
    } else if bits >= 1_000_000 {
        format!("{} Mbit/s", bits / 1_000_000)
    } else {
        format!("{bits} bit/s")
    }
}

fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Rows as columns padded to their widest cell (two spaces apart), header first, like
/// kubectl's tables.
pub fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_read_well() {
        assert_eq!(
            estimate_line(83_200_000_000, 11480, 1_000_000_000),
            "would send 83.2 GB in 11,480 blobs, about 11 min at 1 Gbit/s"
        );
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(group_thousands(1234567), "1,234,567");
    }
}
