//! Username/password login to the platform: the five calls of the platform's documented
//! OAuth2 authorization-code flow (docs: "Obtain an API Access Token"), sharing one cookie
//! jar, ending with a bearer token. The password leaves this machine only RSA-encrypted
//! (PKCS#1 v1.5 with the key from `/dex/pubkey`, together with a one-time `ts`).
//!
//! Errors name the step that failed and never the password. A wrong password is
//! [`ErrorKind::Auth`] (exit 5) and is tried once: no retry, so no account lockout.

use base64::Engine as _;
use rsa::pkcs8::DecodePublicKey;
use serde::Deserialize;
use url::Url;

use crate::error::{Error, ErrorKind, Result};
use crate::sink::Secret;

/// What the user gave to log in with.
#[derive(Clone, Debug)]
pub struct PasswordLogin {
    pub username: String,
    pub password: Secret,
    /// Identity provider id: `local`, `ldap`, ...
    pub idp: String,
    pub client_id: String,
}

const SCOPE: &str = "openid profile offline_access email groups ext";

#[derive(Deserialize)]
struct LoginMeta {
    auth_url: String,
}

#[derive(Deserialize)]
struct AuthorizeReq {
    req: String,
}

#[derive(Deserialize)]
struct PubKey {
    ts: String,
    pubkey: String,
}

#[derive(Deserialize)]
struct Authorized {
    redirect_url: String,
}

#[derive(Deserialize)]
struct Tokens {
    access_token: String,
    #[serde(default)]
    expire_at: Option<String>,
}

/// A bearer token and when it expires (as the platform said, for messages).
pub struct LoggedIn {
    pub token: Secret,
    pub expire_at: Option<String>,
}

/// Runs the five-call flow against `base` with `http` (which must have a cookie store).
pub async fn login(http: &reqwest::Client, base: &Url, who: &PasswordLogin) -> Result<LoggedIn> {
    let origin = base.as_str().trim_end_matches('/');
    let redirect_uri = format!("{origin}/dex/callback");

    // 1. login metadata: where the flow starts
    let mut url = join(base, "console-platform/api/v1/token/login");
    url.query_pairs_mut()
        .append_pair("client_id", &who.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", SCOPE);
    let meta: LoginMeta = call(http.get(url), 1, "login metadata").await?;

    // 2. the dex request id; sets the cpaas_oidc_auth_flow cookie that step 5 needs
    let auth_url = Url::parse(&meta.auth_url)
        .map_err(|e| step_error(2, "authorize", format!("auth_url is not a URL: {e}")))?;
    let mut url = join(base, "dex/api/v1/authorize");
    url.set_query(auth_url.query());
    let req: AuthorizeReq = call(http.get(url), 2, "authorize").await?;

    // 3. the RSA key and a one-time timestamp
    let key: PubKey = call(http.get(join(base, "dex/pubkey")), 3, "public key").await?;
    let public = rsa::RsaPublicKey::from_public_key_pem(&key.pubkey)
        .map_err(|e| step_error(3, "public key", format!("not an RSA public key: {e}")))?;
    let payload = serde_json::json!({"ts": key.ts, "password": who.password.expose()});
    let encrypted = public
        .encrypt(
            &mut rand_core::OsRng,
            rsa::Pkcs1v15Encrypt,
            payload.to_string().as_bytes(),
        )
        .map_err(|e| step_error(3, "public key", format!("cannot encrypt: {e}")))?;

    // 4. credentials → authorization code
    let mut url = join(base, &format!("dex/api/v1/authorize/{}", who.idp));
    url.query_pairs_mut().append_pair("req", &req.req);
    let body = serde_json::json!({
        "account": who.username,
        "password": base64::engine::general_purpose::STANDARD.encode(encrypted),
    });
    let done: Authorized = call(http.post(url).json(&body), 4, "credentials")
        .await
        .map_err(|e| {
            if e.kind == ErrorKind::Auth {
                Error::new(
                    ErrorKind::Auth,
                    format!(
                        "{} (user {:?}, identity provider {:?}): check the username and password, \
                         and --idp for LDAP/OIDC accounts",
                        e.message, who.username, who.idp
                    ),
                )
            } else {
                e
            }
        })?;
    let redirect = Url::parse(&done.redirect_url)
        .map_err(|e| step_error(4, "credentials", format!("redirect_url is not a URL: {e}")))?;
    let param = |k: &str| {
        redirect
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| step_error(4, "credentials", format!("redirect_url has no {k}")))
    };
    let (code, state) = (param("code")?, param("state")?);

    // 5. code → token
    let mut url = join(base, "console-platform/api/v1/token/callback");
    url.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state);
    let tokens: Tokens = call(http.get(url), 5, "token").await?;
    Ok(LoggedIn {
        token: Secret::new(tokens.access_token),
        expire_at: tokens.expire_at,
    })
}

fn join(base: &Url, path: &str) -> Url {
    base.join(path).expect("relative path joins a base URL")
}

fn step_error(step: u8, what: &str, msg: String) -> Error {
    Error::new(
        ErrorKind::Auth,
        format!("platform login failed at step {step}/5 ({what}): {msg}"),
    )
}

/// One call of the flow: a JSON answer, or an error naming the step. The body of an error
/// answer is quoted (capped) because it carries the platform's reason; it never holds our
/// password, which is only ever sent encrypted.
async fn call<T: for<'de> Deserialize<'de>>(
    req: reqwest::RequestBuilder,
    step: u8,
    what: &str,
) -> Result<T> {
    let unreachable = |e: reqwest::Error| {
        let plain_http = e.url().is_some_and(|u| u.scheme() == "http");
        Error::new(
            ErrorKind::Unreachable,
            format!(
                "platform login failed at step {step}/5 ({what}): {}",
                super::describe_transport_error(
                    &e.without_url(),
                    super::cluster::PLATFORM_TLS_HINT,
                    plain_http
                )
            ),
        )
    };
    let resp = req.send().await.map_err(unreachable)?;
    let status = resp.status();
    let (body, cut) = read_capped(resp, MAX_LOGIN_ANSWER)
        .await
        .map_err(unreachable)?;
    if cut && status.is_success() {
        return Err(Error::new(
            ErrorKind::Platform,
            format!(
                "platform login failed at step {step}/5 ({what}): the answer is larger than {} \
                 MiB, ferry's cap on a login answer (is --platform-address the platform's \
                 address?)",
                MAX_LOGIN_ANSWER >> 20
            ),
        ));
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let kind = match status.as_u16() {
            400 | 401 | 403 => ErrorKind::Auth,
            404 => ErrorKind::Platform,
            _ => ErrorKind::Platform,
        };
        let hint = if status.as_u16() == 404 {
            ": is --platform-address the platform's console address?"
        } else {
            ""
        };
        return Err(Error::new(
            kind,
            format!(
                "platform login failed at step {step}/5 ({what}): HTTP {status}: {}{hint}",
                text.trim()
            ),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        step_error(
            step,
            what,
            format!("the answer is not the expected JSON: {e}"),
        )
    })
}

/// The most one answer of the login flow may hold: they are a few kB (a URL, an RSA key, a
/// token). Without a cap, a broken or hostile server could send gigabytes into our memory.
const MAX_LOGIN_ANSWER: usize = 1 << 20;

/// An answer's body, read up to `cap` bytes; `true` when there was more (the rest is not
/// read).
async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> std::result::Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() > room {
            return Ok((body, true));
        }
    }
    Ok((body, false))
}
