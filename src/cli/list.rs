//! `ferry list`: every uploaded extension and where it is installed, in the shape of
//! `violet list` (`apps.yaml`, imported into the Customer Portal).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::platform_flags::PlatformFlags;
use crate::error::{Error, ErrorKind, Result};
use crate::platform::inventory::{self, Install, InstallState, Inventory, UploadKind};

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub platform: PlatformFlags,
    /// Clusters to report, comma-separated [default: every cluster of the platform].
    #[arg(long, value_delimiter = ',')]
    pub clusters: Vec<String>,
    /// Where the YAML list is written.
    #[arg(long, default_value = "apps.yaml")]
    pub output_file: PathBuf,
    /// What is printed: the YAML list, JSON of the same shape, or an aligned table.
    #[arg(long, value_enum, default_value = "yaml")]
    pub output: ListOutput,
    /// Seconds to wait for the platform to answer.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListOutput {
    Yaml,
    Json,
    Table,
}

#[derive(Serialize)]
struct Apps {
    applications: BTreeMap<String, App>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct App {
    display_name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    installed: Vec<Installed>,
    /// Clusters where whether (and which version) it is installed could not be read: then
    /// `installed` is what is known, not the whole truth. Absent when everything was read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unknown: Vec<Unknown>,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
struct Unknown {
    cluster_name: String,
    reason: String,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
struct Installed {
    cluster_name: String,
    version: String,
}

pub fn run(args: ListArgs) -> Result<i32> {
    let rt = super::runtime()?;
    let platform = args.platform.connect(&rt, args.timeout, "ferry list")?;
    let inv = rt.block_on(inventory::read(&platform, &args.clusters))?;
    let apps = applications(&inv);
    let yaml = serde_yaml::to_string(&apps).map_err(|e| Error::internal(format!("YAML: {e}")))?;
    std::fs::write(&args.output_file, &yaml).map_err(|e| {
        Error::new(
            ErrorKind::Usage,
            format!("cannot write {}: {e}", args.output_file.display()),
        )
    })?;
    match args.output {
        ListOutput::Yaml => print!("{yaml}"),
        ListOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&apps).expect("serializable")
        ),
        ListOutput::Table => print!("{}", table(&apps)),
    }
    // count what was read; name what was not (a cluster that failed is not "on" the list)
    let unread: Vec<&str> = inv.failures.iter().map(|(c, _)| c.as_str()).collect();
    eprintln!(
        "{} on {} read{}; written to {}",
        crate::report::count(apps.applications.len() as u64, "application"),
        crate::report::count((inv.clusters.len() - unread.len()) as u64, "cluster"),
        if unread.is_empty() {
            String::new()
        } else {
            format!(
                " ({} could not be read: {})",
                unread.len(),
                unread.join(", ")
            )
        },
        args.output_file.display()
    );
    for w in &inv.warnings {
        eprintln!("warning: {w}");
    }
    for (cluster, e) in &inv.failures {
        eprintln!(
            "error: cluster {cluster} could not be read, its uploads are left out: {}",
            e.message
        );
    }
    for (cluster, e) in &inv.unknown {
        eprintln!(
            "error: cluster {cluster}: install state unknown (marked unknown in the list): {}",
            e.message
        );
    }
    for e in &inv.plugin_errors {
        eprintln!(
            "error: plugin installs unknown (marked unknown in the list): {}",
            e.message
        );
    }
    Ok(inv.errors().first().map_or(0, |e| e.kind.exit_code()))
}

fn applications(inv: &Inventory) -> Apps {
    let mut applications = BTreeMap::new();
    let wanted = |i: &Install| inv.clusters.contains(&i.cluster);
    let plugin_why = inv
        .plugin_errors
        .iter()
        .map(|e| e.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    for p in &inv.plugins {
        let installed: Vec<Installed> = p
            .installed
            .iter()
            .filter(|i| wanted(i))
            .map(|i| Installed {
                cluster_name: i.cluster.clone(),
                version: i.version.clone(),
            })
            .collect();
        // a record that could not be read may show it installed on any other cluster
        let unknown = if inv.plugin_errors.is_empty() {
            Vec::new()
        } else {
            inv.clusters
                .iter()
                .filter(|c| !installed.iter().any(|i| &i.cluster_name == *c))
                .map(|c| Unknown {
                    cluster_name: c.clone(),
                    reason: plugin_why.clone(),
                })
                .collect()
        };
        applications.insert(
            p.name.clone(),
            App {
                display_name: p.display_name.clone(),
                kind: "ModulePlugin",
                installed,
                unknown,
            },
        );
    }
    for u in &inv.uploads {
        let kind = match u.kind {
            UploadKind::Operator => "OperatorBundle",
            UploadKind::Chart => "Chart",
            UploadKind::Other => continue,
        };
        let app = applications.entry(u.name.clone()).or_insert_with(|| App {
            display_name: u.display_name.clone(),
            kind,
            installed: Vec::new(),
            unknown: Vec::new(),
        });
        match &u.installed {
            // two versions while OLM replaces one by the next: both are listed
            InstallState::Installed(versions) => {
                app.installed.extend(versions.iter().map(|v| Installed {
                    cluster_name: u.cluster.clone(),
                    version: v.clone(),
                }));
                app.installed.sort();
            }
            InstallState::Unknown(why) => app.unknown.push(Unknown {
                cluster_name: u.cluster.clone(),
                reason: why.clone(),
            }),
            InstallState::NotInstalled => {}
        }
    }
    // A cluster that could not be read may have any operator or chart installed.
    for app in applications
        .values_mut()
        .filter(|a| a.kind != "ModulePlugin")
    {
        for (cluster, e) in &inv.failures {
            app.unknown.push(Unknown {
                cluster_name: cluster.clone(),
                reason: e.message.clone(),
            });
        }
        app.unknown.sort();
    }
    Apps { applications }
}

fn table(apps: &Apps) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "TYPE".into(),
        "INSTALLED(CLUSTER:VERSION)".into(),
        "DISPLAY NAME".into(),
    ]];
    for (name, app) in &apps.applications {
        let installed: Vec<String> = app
            .installed
            .iter()
            .map(|i| format!("{}:{}", i.cluster_name, i.version))
            .chain(app.unknown.iter().map(|u| format!("{}:?", u.cluster_name)))
            .collect();
        rows.push([
            name.clone(),
            app.kind.to_string(),
            if installed.is_empty() {
                "-".into()
            } else {
                installed.join(", ")
            },
            app.display_name.clone(),
        ]);
    }
    crate::report::aligned(&rows)
}
