//! Image names as other tools write them into their archives, made into the full
//! `host/path:tag` references a package's `ref.name` holds.
//!
//! `docker save` writes `RepoTags` the way docker shows names (`busybox:latest` means
//! `docker.io/library/busybox:latest`); containerd and nerdctl write
//! `io.containerd.image.name` fully qualified; skopeo and hauler write
//! `org.opencontainers.image.ref.name`, which the OCI spec means as a bare tag but which
//! most tools fill with a whole reference. A bare tag names no repository: such an entry
//! cannot be pushed under a name of its own and is reported.

/// The annotation containerd (`ctr export`, nerdctl, Docker 25+) names an image with.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// Docker's normalisation of a reference: a first component with a `.` or `:`, or
/// `localhost`, is a registry; otherwise the registry is `docker.io`, and a one-component
/// path is under `library/`. A missing tag is `latest`. `None` when nothing is left.
pub fn normalize(name: &str) -> Option<String> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let (host, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            let host = if first == "index.docker.io" {
                "docker.io"
            } else {
                first
            };
            (host.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if rest.is_empty() {
        return None;
    }
    let (path, reference) = match rest.split_once('@') {
        Some((path, digest)) => (path.to_string(), format!("@{digest}")),
        None => match rest.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') => (path.to_string(), format!(":{tag}")),
            _ => (rest.clone(), ":latest".to_string()),
        },
    };
    // `name:tag@digest`: the digest pins it, the tag is dropped as docker does for a pull
    let path = path.split(':').next().unwrap_or(&path).to_string();
    if path.is_empty() {
        return None;
    }
    let path = if host == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    Some(format!("{host}/{path}{reference}"))
}

/// The name of an OCI archive's `index.json` entry, from its annotations: containerd's
/// full name first, then `ref.name` when it is more than a bare tag. `Err` carries what
/// was found, for the report.
pub fn of_annotations(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<String, String> {
    let get = |k: &str| annotations.and_then(|a| a.get(k)).map(|s| s.trim());
    if let Some(full) = get(CONTAINERD_NAME_ANNOTATION).and_then(normalize) {
        return Ok(full);
    }
    match get(crate::oci::media::REF_NAME_ANNOTATION) {
        Some(r) if r.contains('/') || r.contains(':') => normalize(r).ok_or_else(|| r.into()),
        Some(tag) => Err(tag.to_string()),
        None => Err(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_style_names_are_normalized() {
        let n = |s: &str| normalize(s).unwrap();
        assert_eq!(n("busybox:latest"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("grafana/loki:2.9"), "docker.io/grafana/loki:2.9");
        assert_eq!(
            n("registry.alauda.cn:60080/acp/topolvm:v3.11.0"),
            "registry.alauda.cn:60080/acp/topolvm:v3.11.0"
        );
        assert_eq!(n("localhost/x:1"), "localhost/x:1");
        assert_eq!(n("index.docker.io/library/x:1"), "docker.io/library/x:1");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(n(&format!("q.io/a/b:v1@{d}")), format!("q.io/a/b@{d}"));
        assert_eq!(normalize(""), None);
    }

    #[test]
    fn names_from_annotations() {
        let mut a = std::collections::BTreeMap::new();
        a.insert(
            crate::oci::media::REF_NAME_ANNOTATION.to_string(),
            "latest".to_string(),
        );
        assert_eq!(of_annotations(Some(&a)), Err("latest".to_string()));
        a.insert(
            CONTAINERD_NAME_ANNOTATION.to_string(),
            "docker.io/library/busybox:latest".to_string(),
        );
        assert_eq!(
            of_annotations(Some(&a)).unwrap(),
            "docker.io/library/busybox:latest"
        );
        let mut b = std::collections::BTreeMap::new();
        b.insert(
            crate::oci::media::REF_NAME_ANNOTATION.to_string(),
            "q.io/acp/x:v1".to_string(),
        );
        assert_eq!(of_annotations(Some(&b)).unwrap(), "q.io/acp/x:v1");
        assert_eq!(of_annotations(None), Err(String::new()));
    }
}
