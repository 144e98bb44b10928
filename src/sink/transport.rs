//! The one way a request reaches the registry: authorization (basic, or a bearer token per
//! repository scope, fetched once and shared), sending with retries and backoff, and the
//! mapping of transport failures and HTTP statuses to our errors, naming registry, repository
//! and what was being done.
use super::*;

impl Registry {
    /// Adds `Authorization` for `repo` according to the registry's scheme.
    pub(super) async fn authorize(&self, repo: &str, refresh: bool) -> Result<Option<String>> {
        let scheme = self.scheme.lock().await.clone().unwrap_or(Scheme::None);
        let Some(creds) = &self.credentials else {
            return Ok(None);
        };
        match scheme {
            Scheme::None => Ok(None),
            Scheme::Basic => Ok(Some(creds.basic_header())),
            Scheme::Bearer => {
                if let Some(e) = self.token_refused.lock().await.clone() {
                    // credentials the token server refused once are not tried again: every
                    // try could count towards an account lockout
                    return Err(e);
                }
                if !refresh {
                    if let Some(t) = self.tokens.lock().await.get(repo) {
                        return Ok(Some(format!("Bearer {t}")));
                    }
                }
                // no lock is held while the token server is asked
                let reference = oci_client::Reference::with_tag(
                    self.host.clone(),
                    self.full_repo(repo),
                    "latest".into(),
                );
                let auth = oci_client::secrets::RegistryAuth::Basic(
                    creds.username.clone(),
                    creds.password.expose().to_string(),
                );
                let token = match self
                    .oci
                    .auth(&reference, &auth, oci_client::RegistryOperation::Push)
                    .await
                {
                    Ok(t) => t,
                    Err(e) => {
                        // The error text of a failed token request is the token server's body;
                        // it cannot contain our password, but keep it short.
                        let text: String = e.to_string().chars().take(200).collect();
                        let lower = text.to_lowercase();
                        // oci-client says "Authentication failure" for a 401/403 of the token
                        // server; anything else (no answer, 5xx) is worth another try
                        // (a 403 can be about the scope, not the credentials: not remembered)
                        let refused = lower.contains("authentication failure")
                            || lower.contains("401")
                            || lower.contains("unauthorized");
                        let err = Error::new(
                            if refused {
                                ErrorKind::Auth
                            } else {
                                ErrorKind::Unreachable
                            },
                            format!(
                                "registry {}: getting a push token for {repo} failed: {text}{}",
                                self.host,
                                if refused {
                                    format!(
                                        " (user {:?}, credentials {}): check them",
                                        creds.username,
                                        self.credential_origin
                                            .as_deref()
                                            .unwrap_or("from the command line")
                                    )
                                } else {
                                    String::new()
                                }
                            ),
                        );
                        if refused {
                            *self.token_refused.lock().await = Some(err.clone());
                        }
                        return Err(err.retryable(!refused));
                    }
                };
                match token {
                    Some(t) => {
                        self.tokens.lock().await.insert(repo.to_string(), t.clone());
                        Ok(Some(format!("Bearer {t}")))
                    }
                    None => Ok(Some(creds.basic_header())),
                }
            }
        }
    }

    /// One request, no retry. Connection-level failures become errors here.
    pub(super) async fn send_once(
        &self,
        method: Method,
        url: Url,
        auth: Option<&str>,
        body: Option<&Body>,
        accept: Option<&str>,
        repo: &str,
    ) -> Result<reqwest::Response> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let mut rb = self.http.request(method.clone(), url);
        if let Some(a) = accept {
            rb = rb.header(ACCEPT, a);
        }
        if let Some(a) = auth {
            rb = rb.header(reqwest::header::AUTHORIZATION, sensitive(a)?);
        }
        if let Some(b) = body {
            rb = rb
                .header(CONTENT_TYPE, b.content_type.clone())
                .header(CONTENT_LENGTH, b.bytes.len())
                .body(b.bytes.clone());
        } else if method == Method::PUT || method == Method::POST {
            rb = rb.header(CONTENT_LENGTH, 0);
        }
        let resp = rb.send().await.map_err(|e| self.transport_error(e, repo))?;
        if let Some(b) = body {
            self.counters
                .bytes_sent
                .fetch_add(b.bytes.len() as u64, Ordering::Relaxed);
        }
        Ok(resp)
    }

    pub(super) fn transport_error(&self, e: reqwest::Error, repo: &str) -> Error {
        let mut chain = String::new();
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = src {
            chain.push_str(&format!(": {s}"));
            src = s.source();
        }
        // reqwest's messages include the URL; strip any query (upload state tokens).
        let chain = strip_queries(&chain);
        let lower = chain.to_lowercase();
        let place = if repo.is_empty() {
            String::new()
        } else {
            format!(" ({repo})")
        };
        if lower.contains("certificate")
            || lower.contains("unknownissuer")
            || lower.contains("tls") && e.is_connect()
        {
            return Error::new(
                ErrorKind::Unreachable,
                format!(
                    "registry {}: TLS certificate not trusted{chain}. Give the registry's CA with --ca-file FILE (or put it where docker/containerd look: /etc/docker/certs.d/<host:port>/ca.crt, /etc/containers/certs.d/..., /etc/containerd/certs.d/...), or skip verification with --insecure",
                    self.host
                ),
            );
        }
        if e.is_connect() {
            let hint = if self.plain_http {
                ""
            } else {
                " (if it speaks plain HTTP, add --plain)"
            };
            return Error::new(
                ErrorKind::Unreachable,
                format!("registry {} is not reachable{chain}: check --dest-repo and that the registry is up{hint}", self.host),
            )
            .retryable(true);
        }
        Error::new(
            ErrorKind::Registry,
            format!("registry {}{place}: request failed{chain}", self.host),
        )
        .retryable(true)
    }

    /// A request with auth and retries. Returns the response of any status the caller must
    /// interpret; 401 after a fresh token becomes an auth error, 429/5xx are retried and, once
    /// the budget is spent, become an error with the last status.
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Body>,
        repo: &str,
        what: &str,
    ) -> Result<reqwest::Response> {
        self.send_full(method, url, body, None, repo, what).await
    }

    pub(super) async fn send_accept(
        &self,
        method: Method,
        url: Url,
        accept: &str,
        repo: &str,
        what: &str,
    ) -> Result<reqwest::Response> {
        self.send_full(method, url, None, Some(accept), repo, what)
            .await
    }

    pub(super) async fn send_full(
        &self,
        method: Method,
        url: Url,
        body: Option<Body>,
        accept: Option<&str>,
        repo: &str,
        what: &str,
    ) -> Result<reqwest::Response> {
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            let auth = self.authorize(repo, false).await?;
            let result = self
                .send_once(
                    method.clone(),
                    url.clone(),
                    auth.as_deref(),
                    body.as_ref(),
                    accept,
                    repo,
                )
                .await;
            let (err, retry_after) = match result {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    if !refreshed && self.credentials.is_some() {
                        refreshed = true;
                        self.authorize(repo, true).await?;
                        continue;
                    }
                    let _ = resp.bytes().await;
                    return Err(if self.credentials.is_some() {
                        self.auth_refused()
                    } else {
                        Error::new(ErrorKind::Auth, format!("registry {}: {what}: authentication required (HTTP 401): give --username/--password", self.host))
                    });
                }
                Ok(resp)
                    if resp.status() == StatusCode::TOO_MANY_REQUESTS
                        || resp.status().is_server_error() =>
                {
                    let ra = retry::parse_retry_after(resp.headers().get("retry-after"));
                    let e = self
                        .status_error(resp.status(), what, resp)
                        .await
                        .retryable(true);
                    (e, ra)
                }
                Ok(resp) => return Ok(resp),
                Err(e) if e.retryable => (e, None),
                Err(e) => return Err(e),
            };
            attempt += 1;
            if attempt >= self.retry.attempts {
                return Err(err.context(format!("after {attempt} tries")));
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            let wait = self.retry.backoff(attempt - 1, retry_after);
            tracing::debug!(registry = %self.host, %what, error = %err, ?wait, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Error for an unexpected status, with the registry's own error code when it gave one.
    pub(super) async fn status_error(
        &self,
        status: StatusCode,
        what: &str,
        mut resp: reqwest::Response,
    ) -> Error {
        // the registry's error document, read up to a cap: a hostile or broken server could
        // otherwise send gigabytes into our memory
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk[..chunk.len().min(MAX_ERROR_BODY - body.len())]);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
        let detail = registry_error_text(&body);
        let kind = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Auth,
            _ => ErrorKind::Registry,
        };
        Error::new(
            kind,
            format!(
                "registry {}: {what}: HTTP {}{detail}",
                self.host,
                status.as_u16()
            ),
        )
    }
}
