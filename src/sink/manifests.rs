//! Manifests: which digest a tag points at (HEAD), and putting one, children before the
//! index that lists them (the engine's order).
use super::transport::Access;
use super::*;

impl Registry {
    /// The digest a tag (or digest) currently points at, if any.
    pub async fn manifest_digest(&self, repo: &str, reference: &str) -> Result<Option<String>> {
        let what = format!("checking manifest {repo}:{reference}");
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let resp = self
            .send_full(
                Method::HEAD,
                url,
                None,
                Some(MANIFEST_ACCEPT),
                Access::push(repo),
                &what,
            )
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.status_error(s, &what, resp).await),
        }
    }

    /// Pushes manifest bytes exactly as given, under `reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<()> {
        let what = format!("pushing manifest {repo}:{reference}");
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let content_type = if media_type.is_empty() {
            crate::oci::media::sniff_media_type(&bytes)
        } else {
            media_type.to_string()
        };
        let body = Body {
            bytes,
            content_type: HeaderValue::from_str(&content_type)
                .map_err(|_| Error::package(format!("bad media type {content_type:?}")))?,
        };
        let resp = self.send(Method::PUT, url, Some(body), repo, &what).await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED => Ok(()),
            s => Err(self.status_error(s, &what, resp).await),
        }
    }
}
