//! Reading from a registry (`ferry package`): manifests by tag or digest, blobs as streams.
//! The same transport as pushing (token auth, retries, backoff, error texts); tokens ask for
//! `pull` only. Blob answers that redirect to a storage backend (S3, a CDN) are followed
//! without our `Authorization` header, which belongs to the registry alone.
use super::transport::{transient, Access};
use super::*;

/// A manifest or image index as the registry served it.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub bytes: Bytes,
    /// The answer's `Content-Type`, else what the document says of itself.
    pub media_type: String,
    pub digest: Digest,
}

/// A blob's answer, to be read chunk by chunk.
pub struct BlobBody {
    pub response: reqwest::Response,
    /// Whether the answer starts at the offset asked for (206); a 200 starts at byte 0.
    pub partial: bool,
}

/// Manifests larger than this are refused (as in packages: `MAX_DOCUMENT_BYTES`).
const MAX_MANIFEST: usize = 4 << 20;
/// Redirects followed for one blob.
const MAX_REDIRECTS: usize = 5;

impl Registry {
    /// `GET /v2/<repo>/manifests/<reference>`; with a digest reference the bytes are checked
    /// against it, with a tag against the registry's `Docker-Content-Digest` when it sends one.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Pulled> {
        let what = format!("reading manifest {repo}:{reference}");
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let resp = self
            .send_full(
                Method::GET,
                url,
                None,
                Some(MANIFEST_ACCEPT),
                Access::pull(repo),
                &what,
            )
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(Error::new(
                    ErrorKind::Registry,
                    format!(
                        "registry {}: {repo}:{reference} not found: check the reference",
                        self.host
                    ),
                ))
            }
            s => return Err(self.status_error(s, &what, resp).await),
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(CONTENT_TYPE.as_str()).unwrap_or_default();
        let announced = header("docker-content-digest");
        let bytes = read_limited(resp, MAX_MANIFEST)
            .await
            .map_err(|e| e.context(format!("registry {}: {what}", self.host)))?;
        let digest = Digest::of(&bytes);
        let expected = Digest::parse(reference)
            .ok()
            .or_else(|| announced.and_then(|a| Digest::parse(&a).ok()));
        if let Some(expected) = expected.filter(|e| e != &digest) {
            return Err(Error::integrity(format!(
                "registry {}: manifest {repo}:{reference} should be {expected} but its bytes \
                 are {digest}",
                self.host
            )));
        }
        let media_type = match content_type.split(';').next().map(str::trim) {
            Some(t) if crate::oci::media::is_known_blob_type(t) || t.contains("manifest") => {
                t.to_string()
            }
            _ => crate::oci::media::sniff_media_type(&bytes),
        };
        Ok(Pulled {
            bytes,
            media_type,
            digest,
        })
    }

    /// `GET /v2/<repo>/blobs/<digest>` from byte `offset` on (a `Range` request when it is
    /// not 0; the registry may still answer from byte 0, which [`BlobBody::partial`] says).
    pub async fn get_blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobBody> {
        let what = format!("reading blob {digest} of {repo}");
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let mut resp = if offset == 0 {
            self.send_full(Method::GET, url, None, None, Access::pull(repo), &what)
                .await?
        } else {
            self.send_ranged(url, offset, repo, &what).await?
        };
        let mut hops = 0;
        while resp.status().is_redirection() {
            hops += 1;
            let next = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| resp.url().join(l).ok())
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Registry,
                        format!(
                            "registry {}: {what}: a redirect without a Location",
                            self.host
                        ),
                    )
                })?;
            if hops > MAX_REDIRECTS {
                return Err(Error::new(
                    ErrorKind::Registry,
                    format!(
                        "registry {}: {what}: more than {MAX_REDIRECTS} redirects",
                        self.host
                    ),
                ));
            }
            // the storage backend gets no credentials of ours
            let mut rb = self.request(&self.http, Method::GET, next, None)?;
            if offset > 0 {
                rb = rb.header(reqwest::header::RANGE, format!("bytes={offset}-"));
            }
            resp = rb.send().await.map_err(|e| self.transport_error(e, repo))?;
        }
        match resp.status() {
            StatusCode::OK => Ok(BlobBody {
                response: resp,
                partial: false,
            }),
            StatusCode::PARTIAL_CONTENT => Ok(BlobBody {
                response: resp,
                partial: true,
            }),
            StatusCode::NOT_FOUND => Err(Error::new(
                ErrorKind::Registry,
                format!(
                    "registry {}: blob {digest} is not in {repo} (HTTP 404): the image is \
                     incomplete in the source registry",
                    self.host
                ),
            )),
            s => {
                let e = self.status_error(s, &what, resp).await;
                Err(if transient(s) { e.retryable(true) } else { e })
            }
        }
    }

    /// A `Range` GET, with the transport's auth and retries.
    async fn send_ranged(
        &self,
        url: Url,
        offset: u64,
        repo: &str,
        what: &str,
    ) -> Result<reqwest::Response> {
        let mut attempt = 0;
        loop {
            let auth = self.authorize_for(Access::pull(repo), attempt > 0).await?;
            let sent = self
                .request(&self.http, Method::GET, url.clone(), auth.as_deref())?
                .header(reqwest::header::RANGE, format!("bytes={offset}-"))
                .send()
                .await
                .map_err(|e| self.transport_error(e, repo));
            match sent {
                Ok(r) if !transient(r.status()) && r.status() != StatusCode::UNAUTHORIZED => {
                    return Ok(r)
                }
                Ok(r) if attempt + 1 >= self.retry.attempts => {
                    return Err(self.status_error(r.status(), what, r).await)
                }
                Err(e) if !e.retryable || attempt + 1 >= self.retry.attempts => return Err(e),
                _ => {}
            }
            tokio::time::sleep(self.retry.backoff(attempt, None)).await;
            attempt += 1;
        }
    }
}

async fn read_limited(mut resp: reqwest::Response, cap: usize) -> Result<Bytes> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        Error::new(ErrorKind::Registry, format!("reading the answer: {e}")).retryable(true)
    })? {
        if body.len() + chunk.len() > cap {
            return Err(Error::new(
                ErrorKind::Registry,
                format!("the manifest is larger than {} MiB", cap >> 20),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}
