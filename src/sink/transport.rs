//! The one way a request reaches the registry: authorization (basic, or a bearer token per
//! repository scope, fetched once and shared), sending with retries and backoff, and the
//! mapping of transport failures and HTTP statuses to our errors, naming registry, repository
//! and what was being done.
use super::*;

/// What a request needs access to: push (and pull) on its repository and, for a
/// cross-repository mount, pull on the source repository. Bearer tokens are asked for exactly
/// these scopes (so a mount's token covers both sides) and kept per scope set.
#[derive(Clone, Copy, Debug)]
pub(super) struct Access<'a> {
    pub repo: &'a str,
    pub pull_from: Option<&'a str>,
    /// Reading only (`ferry package`): the token asks for `pull` alone, which a source
    /// registry grants to accounts that may not push.
    pub pull_only: bool,
}

impl<'a> Access<'a> {
    pub fn push(repo: &'a str) -> Self {
        Access {
            repo,
            pull_from: None,
            pull_only: false,
        }
    }

    pub fn pull(repo: &'a str) -> Self {
        Access {
            repo,
            pull_from: None,
            pull_only: true,
        }
    }
}

impl Registry {
    /// The `Authorization` value for `repo` according to the registry's scheme.
    pub(super) async fn authorize(&self, repo: &str, refresh: bool) -> Result<Option<String>> {
        self.authorize_for(Access::push(repo), refresh).await
    }

    /// Every authorized request waits here for a registry check under way (see
    /// [`Registry::check`]).
    pub(super) async fn authorize_for(
        &self,
        access: Access<'_>,
        refresh: bool,
    ) -> Result<Option<String>> {
        self.after_check().await?;
        self.authorize_now(access, refresh).await
    }

    /// [`Registry::authorize_for`] without waiting for the check: for the check itself.
    pub(super) async fn authorize_now(
        &self,
        access: Access<'_>,
        refresh: bool,
    ) -> Result<Option<String>> {
        let scheme = self.scheme.lock().await.clone().unwrap_or(Scheme::None);
        let Some(creds) = &self.credentials else {
            return Ok(None);
        };
        let challenge = match scheme {
            Scheme::None => return Ok(None),
            Scheme::Basic => return Ok(Some(creds.basic_header())),
            Scheme::Bearer(c) => c,
        };
        if let Some(e) = self.token_refused.lock().await.clone() {
            // credentials the token server refused once are not tried again: every try could
            // count towards an account lockout
            return Err(e);
        }
        let actions = if access.pull_only {
            "pull"
        } else {
            "pull,push"
        };
        let mut scopes = vec![format!(
            "repository:{}:{actions}",
            self.full_repo(access.repo)
        )];
        if let Some(from) = access.pull_from {
            scopes.push(format!("repository:{}:pull", self.full_repo(from)));
        }
        let key = scopes.join(" ");
        if !refresh {
            if let Some(t) = self.tokens.lock().await.get(&key) {
                return Ok(Some(format!("Bearer {t}")));
            }
        }
        // no lock is held while the token server is asked
        let token = self
            .fetch_token(&challenge, &scopes, creds, access.repo)
            .await?;
        self.tokens.lock().await.insert(key, token.clone());
        Ok(Some(format!("Bearer {token}")))
    }

    /// The Docker token protocol: `GET <realm>?service=..&scope=..` with basic credentials.
    async fn fetch_token(
        &self,
        challenge: &Challenge,
        scopes: &[String],
        creds: &Credentials,
        repo: &str,
    ) -> Result<String> {
        let failed = |kind: ErrorKind, detail: String| {
            let refused = kind == ErrorKind::Auth;
            Error::new(
                kind,
                format!(
                    "registry {}: getting a push token for {repo} from {} failed: {detail}{}",
                    self.host,
                    strip_queries(&challenge.realm),
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
            )
            .retryable(!refused)
        };
        let mut url = Url::parse(&challenge.realm)
            .map_err(|e| failed(ErrorKind::Registry, format!("bad realm: {e}")))?;
        if let Some(refusal) = auth::realm_refusal(&url, &self.base, &self.token_realms) {
            return Err(self.realm_refused(&url, refusal));
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &challenge.service {
                query.append_pair("service", service);
            }
            // as docker sends it; some token servers log or check it
            query.append_pair("account", &creds.username);
            for scope in scopes {
                query.append_pair("scope", scope);
            }
        }
        let basic = creds.basic_header();
        let resp = self
            .request(&self.http, Method::GET, url, Some(&basic))?
            .send()
            .await
            .map_err(|e| self.transport_error(e, repo))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let err = failed(ErrorKind::Auth, format!("HTTP {}", status.as_u16()));
            *self.token_refused.lock().await = Some(err.clone());
            return Err(err);
        }
        if !status.is_success() {
            return Err(failed(
                ErrorKind::Unreachable,
                format!("HTTP {}", status.as_u16()),
            ));
        }
        // a token answer is small; a hostile server must not fill our memory
        let (body, cut) = read_capped(resp, MAX_TOKEN_ANSWER).await;
        if cut {
            return Err(failed(ErrorKind::Registry, "answer too large".into()));
        }
        serde_json::from_slice::<auth::TokenAnswer>(&body)
            .ok()
            .and_then(auth::TokenAnswer::into_token)
            .ok_or_else(|| failed(ErrorKind::Registry, "the answer holds no token".into()))
    }

    /// The registry named a token service its credentials must not go to: nothing was sent.
    fn realm_refused(&self, realm: &Url, refusal: auth::RealmRefusal) -> Error {
        let realm_text = auth::realm_label(realm);
        let why = match refusal {
            auth::RealmRefusal::PlainHttp => format!(
                "its token service {realm_text} speaks plain HTTP while the registry is reached \
                 over HTTPS: the credentials would travel in the clear (docker clients send them \
                 anyway; ferry does not). Have the registry announce an https:// token realm \
                 (Distribution: auth.token.realm; Harbor: external_url)"
            ),
            auth::RealmRefusal::NotHttp => format!(
                "its token service {realm_text} is not an http(s) address with a host. Check \
                 the registry's token realm setting"
            ),
            auth::RealmRefusal::OtherHost(host) => format!(
                "its token service {realm_text} is on another host ({host}) than the registry: \
                 ferry sends the registry's credentials only to the registry's own host. If \
                 {host} is this registry's token service, add --allow-token-realm {host}"
            ),
        };
        Error::new(
            ErrorKind::Auth,
            format!("registry {}: credentials not sent: {why}", self.host),
        )
    }

    /// The start of every request to the registry: counted, and authorized when `auth` is
    /// given (the header is marked sensitive, so it never shows in debug output).
    pub(super) fn request(
        &self,
        client: &reqwest::Client,
        method: Method,
        url: Url,
        auth: Option<&str>,
    ) -> Result<reqwest::RequestBuilder> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let rb = client.request(method, url);
        Ok(match auth {
            Some(a) => rb.header(reqwest::header::AUTHORIZATION, sensitive(a)?),
            None => rb,
        })
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
        let mut rb = self.request(&self.http, method.clone(), url, auth)?;
        if let Some(a) = accept {
            rb = rb.header(ACCEPT, a);
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
        if lower.contains("certificate expired") || lower.contains("certificate not valid yet") {
            return Error::new(
                ErrorKind::Unreachable,
                format!(
                    "registry {}: TLS certificate refused{chain}. A certificate outside its validity period is refused even when it is the one given with --ca-file (or found in certs.d): renew the registry's certificate (or check this machine's clock), or skip verification with --insecure",
                    self.host
                ),
            );
        }
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
        self.send_full(method, url, body, None, Access::push(repo), what)
            .await
    }

    /// [`Registry::send`] with an `Accept` header and the access the request needs.
    pub(super) async fn send_full(
        &self,
        method: Method,
        url: Url,
        body: Option<Body>,
        accept: Option<&str>,
        access: Access<'_>,
        what: &str,
    ) -> Result<reqwest::Response> {
        let repo = access.repo;
        if method == Method::HEAD {
            if let Some(resp) = self.ahead_of_check(url.clone(), accept, repo).await {
                return Ok(resp);
            }
        }
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            let auth = self.authorize_for(access, false).await?;
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
                        self.authorize_for(access, true).await?;
                        continue;
                    }
                    let _ = resp.bytes().await;
                    return Err(if self.credentials.is_some() {
                        self.auth_refused()
                    } else {
                        Error::new(ErrorKind::Auth, format!("registry {}: {what}: authentication required (HTTP 401): give --username/--password", self.host))
                    });
                }
                Ok(resp) if transient(resp.status()) => {
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

    /// A HEAD asked while the registry check is still on the wire goes at once, without
    /// credentials (the scheme is not known yet), instead of a round trip later: on a
    /// distant link the first tag and blob HEADs then cost no round trip of their own. Its
    /// answer stands only when the check finds a registry that wants no authentication,
    /// where it is exactly the request that would have been sent; otherwise (a 401, a
    /// transient status, a failed check) `None`, and the request goes the usual way (after
    /// the check, with credentials). Nothing secret leaves: names and digests the push sends
    /// anyway, and no credentials.
    async fn ahead_of_check(
        &self,
        url: Url,
        accept: Option<&str>,
        repo: &str,
    ) -> Option<reqwest::Response> {
        if !self.check_in_flight() {
            return None;
        }
        let head = self.send_once(Method::HEAD, url, None, None, accept, repo);
        tokio::pin!(head);
        // The check's answer decides whether this HEAD's answer is wanted at all: a registry
        // that wants credentials gets the HEAD again with them at once, not once this one is
        // answered (a front may never answer requests without credentials).
        let early = tokio::select! {
            resp = &mut head => Some(resp),
            _ = self.after_check() => None,
        };
        self.after_check().await.ok()?;
        if !matches!(*self.scheme.lock().await, Some(Scheme::None)) {
            return None;
        }
        let resp = match early {
            Some(resp) => resp,
            None => head.await,
        }
        .ok()?;
        let status = resp.status();
        if transient(status) {
            // asked again the usual way: that is a retry
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        (status != StatusCode::UNAUTHORIZED).then_some(resp)
    }

    /// Error for an unexpected status, with the registry's own error code when it gave one.
    pub(super) async fn status_error(
        &self,
        status: StatusCode,
        what: &str,
        resp: reqwest::Response,
    ) -> Error {
        // the registry's error document, read up to a cap
        let (body, _) = read_capped(resp, MAX_ERROR_BODY).await;
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

/// Statuses that say "try again later": the registry is overloaded or failing for now.
/// Token answers are a few kB (a JWT with a certificate chain at most).
const MAX_TOKEN_ANSWER: usize = 1 << 20;

pub(super) fn transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// An answer's body, read up to `cap` bytes (a hostile or broken server could otherwise send
/// gigabytes into our memory); `true` when there was more.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = cap - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() > room {
            return (body, true);
        }
    }
    (body, false)
}
