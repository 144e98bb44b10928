//! What an artifact says about itself: a Helm chart's `Chart.yaml`, `values.yaml` images
//! (`global.images.<key>: {repository, tag, support_arm, thirdparty}`) and, for a plugin,
//! `module-plugin.yaml`; an OLM bundle's CSV (`spec.relatedImages`, the deployments'
//! containers). Pure functions over bytes, so they are unit-tested without a registry.

use std::collections::BTreeMap;
use std::io::Read;

use serde_yaml::Value;

use crate::error::{Error, Result};

/// A file larger than this inside a chart or bundle layer is not read.
const MAX_FILE: u64 = 4 << 20;

/// One image an artifact names.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    /// Full reference `host[:port]/path:tag` (or `@sha256:...`).
    pub reference: String,
    /// Where it was named: `values.yaml global.images.<key>`, `CSV relatedImages`, ...
    pub from: String,
    /// `support_arm: false`: taken for amd64 only.
    pub amd64_only: bool,
}

/// The chart inside a chart artifact.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
    pub description: Option<String>,
    pub values: Option<Vec<u8>>,
    pub module_plugin: Option<Vec<u8>>,
}

/// Reads `<chart>/Chart.yaml`, `values.yaml` and `module-plugin.yaml` from a chart `.tgz`.
pub fn read_chart(tgz: &[u8]) -> Result<Chart> {
    let bad = |e: &dyn std::fmt::Display| Error::package(format!("chart archive: {e}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut chart = Chart::default();
    let mut chart_yaml = None;
    for entry in archive.entries().map_err(|e| bad(&e))? {
        let mut entry = entry.map_err(|e| bad(&e))?;
        let path = entry.path().map_err(|e| bad(&e))?.into_owned();
        let parts: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        // `<chart>/<file>` at the top, as `helm package` writes it (not sub-charts' files)
        let [_, file] = parts.as_slice() else {
            continue;
        };
        let slot = match file.as_str() {
            "Chart.yaml" => &mut chart_yaml,
            "values.yaml" => &mut chart.values,
            "module-plugin.yaml" => &mut chart.module_plugin,
            _ => continue,
        };
        let mut bytes = Vec::new();
        entry
            .by_ref()
            .take(MAX_FILE)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(&e))?;
        *slot = Some(bytes);
    }
    let chart_yaml =
        chart_yaml.ok_or_else(|| Error::package("chart archive has no <chart>/Chart.yaml"))?;
    let v: Value = serde_yaml::from_slice(&chart_yaml)
        .map_err(|e| Error::package(format!("Chart.yaml: {e}")))?;
    let text = |k: &str| v.get(k).and_then(scalar);
    chart.name = text("name").ok_or_else(|| Error::package("Chart.yaml has no name"))?;
    chart.version = text("version").ok_or_else(|| Error::package("Chart.yaml has no version"))?;
    chart.app_version = text("appVersion");
    chart.description = text("description");
    Ok(chart)
}

/// A YAML scalar as text (`tag: 1.10` is a number to YAML, a tag to us).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `repository` relative to the chart's registry unless its first part names a host.
pub fn full_reference(registry: &str, repository: &str, tag: &str) -> String {
    let repository = repository.trim_matches('/');
    let first = repository.split('/').next().unwrap_or("");
    let named_host = repository.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    let base = if named_host {
        repository.to_string()
    } else {
        format!("{registry}/{repository}")
    };
    if tag.starts_with("sha256:") {
        format!("{base}@{tag}")
    } else {
        format!("{base}:{tag}")
    }
}

/// `global.images` of `values.yaml`, in key order.
pub fn chart_images(values: &[u8], registry: &str) -> Result<Vec<Named>> {
    let v: Value =
        serde_yaml::from_slice(values).map_err(|e| Error::package(format!("values.yaml: {e}")))?;
    let Some(images) = v.get("global").and_then(|g| g.get("images")) else {
        return Ok(Vec::new());
    };
    let images: BTreeMap<String, Value> = serde_yaml::from_value(images.clone())
        .map_err(|e| Error::package(format!("values.yaml global.images: {e}")))?;
    let mut out = Vec::new();
    for (key, image) in images {
        let field = |k: &str| image.get(k).and_then(scalar);
        let where_ = format!("values.yaml global.images.{key}");
        let repository = field("repository")
            .ok_or_else(|| Error::package(format!("{where_} has no repository")))?;
        let tag = field("tag").ok_or_else(|| Error::package(format!("{where_} has no tag")))?;
        let amd64_only = image.get("support_arm").and_then(Value::as_bool) == Some(false);
        out.push(Named {
            reference: full_reference(registry, &repository, &tag),
            from: where_,
            amd64_only,
        });
    }
    Ok(out)
}

/// What `module-plugin.yaml` (a `ModulePlugin`) says of the package.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginInfo {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub lifecycle: Option<String>,
}

/// `metadata.name` (else `spec.name`); the display name from `spec.displayName` or the
/// `cpaas.io/display-name` annotation (its `en` text when it is a JSON object); the
/// lifecycle from `spec.lifecycle` or the `cpaas.io/lifecycle` annotation.
pub fn plugin_info(module_plugin: &[u8]) -> Result<PluginInfo> {
    let v: Value = serde_yaml::from_slice(module_plugin)
        .map_err(|e| Error::package(format!("module-plugin.yaml: {e}")))?;
    if let Some(kind) = v.get("kind").and_then(Value::as_str) {
        if kind != "ModulePlugin" {
            return Err(Error::package(format!(
                "module-plugin.yaml is a {kind}, not a ModulePlugin"
            )));
        }
    }
    let at = |path: &[&str]| {
        let mut cur = &v;
        for p in path {
            cur = cur.get(*p)?;
        }
        scalar(cur)
    };
    let display = at(&["spec", "displayName"])
        .or_else(|| at(&["metadata", "annotations", "cpaas.io/display-name"]))
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(&d)
                .ok()
                .and_then(|j| j.get("en").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or(d)
        });
    Ok(PluginInfo {
        name: at(&["metadata", "name"]).or_else(|| at(&["spec", "name"])),
        display_name: display,
        lifecycle: at(&["spec", "lifecycle"])
            .or_else(|| at(&["metadata", "annotations", "cpaas.io/lifecycle"])),
    })
}

/// What a bundle's ClusterServiceVersion says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Csv {
    pub name: String,
    pub display_name: Option<String>,
    pub version: Option<String>,
    pub images: Vec<Named>,
}

/// `spec.relatedImages[].image` and the containers (and init containers) of
/// `spec.install.spec.deployments`, each once, in that order.
pub fn read_csv(text: &[u8], file: &str) -> Result<Csv> {
    let v: Value =
        serde_yaml::from_slice(text).map_err(|e| Error::package(format!("{file}: {e}")))?;
    let mut csv = Csv {
        name: v
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(scalar)
            .unwrap_or_default(),
        display_name: v
            .get("spec")
            .and_then(|s| s.get("displayName"))
            .and_then(scalar),
        version: v
            .get("spec")
            .and_then(|s| s.get("version"))
            .and_then(scalar),
        images: Vec::new(),
    };
    let mut add = |reference: Option<String>, from: String| {
        if let Some(r) = reference {
            if !csv.images.iter().any(|n| n.reference == r) {
                csv.images.push(Named {
                    reference: r,
                    from,
                    amd64_only: false,
                });
            }
        }
    };
    let spec = v.get("spec");
    for r in spec
        .and_then(|s| s.get("relatedImages"))
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let name = r.get("name").and_then(scalar).unwrap_or_default();
        add(
            r.get("image").and_then(scalar),
            format!("{file} relatedImages {name}"),
        );
    }
    let deployments = spec
        .and_then(|s| s.get("install"))
        .and_then(|i| i.get("spec"))
        .and_then(|s| s.get("deployments"))
        .and_then(Value::as_sequence);
    for d in deployments.into_iter().flatten() {
        let dname = d.get("name").and_then(scalar).unwrap_or_default();
        let pod = d
            .get("spec")
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec"));
        for list in ["initContainers", "containers"] {
            for c in pod
                .and_then(|p| p.get(list))
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                add(
                    c.get("image").and_then(scalar),
                    format!("{file} deployment {dname}"),
                );
            }
        }
    }
    Ok(csv)
}

/// The files of one bundle layer (a tar, gzip'd or not) under `manifests/` and `metadata/`.
pub fn bundle_files(layer: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let gz = layer.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read + '_> = if gz {
        Box::new(flate2::read::GzDecoder::new(layer))
    } else {
        Box::new(layer)
    };
    let bad = |e: &dyn std::fmt::Display| Error::package(format!("bundle layer: {e}"));
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(|e| bad(&e))? {
        let mut entry = entry.map_err(|e| bad(&e))?;
        let path = entry
            .path()
            .map_err(|e| bad(&e))?
            .to_string_lossy()
            .into_owned();
        let path = path.trim_start_matches("./").to_string();
        if !(path.starts_with("manifests/") || path.starts_with("metadata/"))
            || !entry.header().entry_type().is_file()
        {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .by_ref()
            .take(MAX_FILE)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(&e))?;
        out.push((path, bytes));
    }
    Ok(out)
}

/// `operators.operatorframework.io.bundle.package.v1` of `metadata/annotations.yaml`.
pub fn bundle_package_name(annotations: &[u8]) -> Option<String> {
    let v: Value = serde_yaml::from_slice(annotations).ok()?;
    v.get("annotations")?
        .get("operators.operatorframework.io.bundle.package.v1")
        .and_then(scalar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_images_are_made_full_references() {
        let values = b"global:\n  registry:\n    address: x\n  images:\n    web:\n      repository: acp/web\n      tag: v1.2\n    tool:\n      repository: docker.io/library/busybox\n      tag: 1.36\n      support_arm: false\n      thirdparty: true\n";
        let images = chart_images(values, "reg.example:5000").unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(images[0].reference, "docker.io/library/busybox:1.36");
        assert!(images[0].amd64_only);
        assert_eq!(images[1].reference, "reg.example:5000/acp/web:v1.2");
        assert_eq!(images[1].from, "values.yaml global.images.web");
        assert!(chart_images(b"a: 1\n", "r").unwrap().is_empty());
        assert!(chart_images(b"global:\n  images:\n    x: {tag: v1}\n", "r").is_err());
    }

    #[test]
    fn module_plugin_fields() {
        let text = br#"apiVersion: cluster.alauda.io/v1alpha1
kind: ModulePlugin
metadata:
  name: demo-plugin
  annotations:
    cpaas.io/display-name: '{"en": "Demo Plugin", "zh": "demo"}'
spec:
  lifecycle: agnostic
"#;
        let p = plugin_info(text).unwrap();
        assert_eq!(p.name.as_deref(), Some("demo-plugin"));
        assert_eq!(p.display_name.as_deref(), Some("Demo Plugin"));
        assert_eq!(p.lifecycle.as_deref(), Some("agnostic"));
        assert!(plugin_info(b"kind: Deployment\n").is_err());
    }

    #[test]
    fn csv_images_from_related_images_and_deployments() {
        let text = b"metadata:\n  name: demo-operator.v1.0.0\nspec:\n  version: 1.0.0\n  displayName: Demo\n  relatedImages:\n  - name: op\n    image: r/acp/op@sha256:aa\n  - name: operand\n    image: r/acp/operand:v1\n  install:\n    spec:\n      deployments:\n      - name: demo\n        spec:\n          template:\n            spec:\n              containers:\n              - image: r/acp/op@sha256:aa\n              - image: r/acp/sidecar:v2\n";
        let c = read_csv(text, "manifests/demo.clusterserviceversion.yaml").unwrap();
        let refs: Vec<_> = c.images.iter().map(|n| n.reference.as_str()).collect();
        assert_eq!(
            refs,
            ["r/acp/op@sha256:aa", "r/acp/operand:v1", "r/acp/sidecar:v2"]
        );
        assert_eq!(c.version.as_deref(), Some("1.0.0"));
        assert_eq!(c.name, "demo-operator.v1.0.0");
    }
}
