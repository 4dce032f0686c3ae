//! OIDC for the clients (CLI and desktop app): discovery, Authorization Code
//! with PKCE S256 (RFC 7636) and a loopback redirect on 127.0.0.1 with a
//! random port (RFC 8252 §7.3), device login (RFC 8628), refresh, and
//! logout. `finish_login` waits; `parse_callback` decides what one request
//! to the loopback listener is (a table, unit-tested).

use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, DeviceAuthorizationUrl, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, Scope, StandardDeviceAuthorizationResponse,
    TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Errors of the login flow. Never contains a token or a code.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("cannot reach Keycloak at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Keycloak discovery at {0} failed: {1}")]
    Discovery(String, String),
    #[error("login was refused by Keycloak: {0}")]
    Refused(String),
    #[error("the device login is not available: {0}")]
    DeviceUnsupported(String),
    #[error(
        "login timed out: it was not completed in the browser (or on the device page) in time"
    )]
    Timeout,
    #[error("token request failed: {0}")]
    Token(String),
    #[error("the session has ended; log in again")]
    SessionEnded,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The endpoints read from `/.well-known/openid-configuration`.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// RFC 8628 §4 (Keycloak serves it at
    /// `{issuer}/protocol/openid-connect/auth/device`).
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
}

impl Discovery {
    /// Fetches discovery for `issuer` (`{keycloak}/realms/{realm}`) and checks
    /// that the document names the same issuer (OIDC Discovery §4.3).
    pub async fn fetch(http: &reqwest::Client, issuer: &str) -> Result<Discovery, OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let resp = http
            .get(&url)
            .send()
            .await
            .map_err(|e| OidcError::Unreachable {
                url: url.clone(),
                source: e.without_url(),
            })?;
        if !resp.status().is_success() {
            return Err(OidcError::Discovery(url, format!("HTTP {}", resp.status())));
        }
        let d: Discovery = resp
            .json()
            .await
            .map_err(|e| OidcError::Discovery(url.clone(), e.to_string()))?;
        if d.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(OidcError::Discovery(
                url,
                format!("issuer is {}, expected {issuer}", d.issuer),
            ));
        }
        Ok(d)
    }
}

/// Tokens of one logged-in user. `expires_at` is UTC.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, even in debug output.
        f.debug_struct("TokenSet")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl TokenSet {
    /// Whether the access token has less than `margin_secs` left at `now`.
    pub fn needs_refresh(&self, now: DateTime<Utc>, margin_secs: i64) -> bool {
        self.expires_at - chrono::Duration::seconds(margin_secs) <= now
    }
}

/// A login in progress: open `authorize_url` in a browser, then call
/// [`OidcClient::finish_login`].
pub struct LoginSession {
    pub authorize_url: url::Url,
    pub redirect_uri: String,
    listener: TcpListener,
    verifier: PkceCodeVerifier,
    state: CsrfToken,
}

/// A device login in progress (RFC 8628): show the user
/// `verification_uri` and `user_code` (or `verification_uri_complete`),
/// then call [`OidcClient::finish_device_login`].
pub struct DeviceLogin {
    /// Where to go on any device with a browser.
    pub verification_uri: String,
    /// The same URL with the code filled in, when Keycloak gives one.
    pub verification_uri_complete: Option<String>,
    /// The code to enter there, e.g. `WDJB-MJHT`.
    pub user_code: String,
    /// How long the code stays valid.
    pub expires_in: Duration,
    details: StandardDeviceAuthorizationResponse,
    verifier: PkceCodeVerifier,
}

/// An OIDC public client (`jit-cli`, `jit-desktop`) of one realm.
#[derive(Clone)]
pub struct OidcClient {
    pub discovery: Discovery,
    pub client_id: String,
    http: reqwest::Client,
}

impl OidcClient {
    /// Discovers `issuer` and prepares a client with id `client_id`.
    pub async fn discover(
        http: reqwest::Client,
        issuer: &str,
        client_id: &str,
    ) -> Result<OidcClient, OidcError> {
        let discovery = Discovery::fetch(&http, issuer).await?;
        Ok(OidcClient {
            discovery,
            client_id: client_id.to_string(),
            http,
        })
    }

    fn oauth(&self, redirect: Option<&str>) -> Result<OauthClient, OidcError> {
        let bad =
            |e: url::ParseError| OidcError::Discovery(self.discovery.issuer.clone(), e.to_string());
        let c = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(AuthUrl::new(self.discovery.authorization_endpoint.clone()).map_err(bad)?)
            .set_token_uri(TokenUrl::new(self.discovery.token_endpoint.clone()).map_err(bad)?);
        let redirect =
            RedirectUrl::new(redirect.unwrap_or("http://127.0.0.1/callback").to_string())
                .map_err(bad)?;
        Ok(c.set_redirect_uri(redirect))
    }

    /// Binds a loopback listener on 127.0.0.1 with a random port and builds
    /// the authorization URL (PKCE S256 challenge, random `state`, scope
    /// `openid`).
    pub async fn start_login(&self) -> Result<LoginSession, OidcError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let redirect_uri = format!("http://127.0.0.1:{port}/callback");
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (authorize_url, state) = self
            .oauth(Some(&redirect_uri))?
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new("openid".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(LoginSession {
            authorize_url,
            redirect_uri,
            listener,
            verifier,
            state,
        })
    }

    /// Waits (up to `timeout`) for the browser to come back to the loopback
    /// redirect, checks `state`, tells the browser tab it can close, and
    /// exchanges the code (with the PKCE verifier) for tokens.
    ///
    /// Connections to the listener are served concurrently, each with a
    /// [`CALLBACK_READ_LIMIT`] to send its request: a silent connection or a
    /// TLS handshake cannot hold the login up. A request that is not the
    /// callback of this login (wrong path, wrong or missing `state`) gets an
    /// error page and the wait goes on (RFC 6749 §10.12: `state` binds the
    /// redirect to this attempt).
    ///
    /// Errors: [`OidcError::Timeout`], [`OidcError::Refused`] (Keycloak sent
    /// `error=` for this login, or no code), [`OidcError::Token`].
    pub async fn finish_login(
        &self,
        session: LoginSession,
        timeout: Duration,
    ) -> Result<TokenSet, OidcError> {
        let LoginSession {
            listener,
            verifier,
            state,
            redirect_uri,
            ..
        } = session;
        let code = tokio::time::timeout(timeout, wait_for_callback(&listener, state.secret()))
            .await
            .map_err(|_| OidcError::Timeout)??;
        let resp = self
            .oauth(Some(&redirect_uri))?
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Token(describe_token_error(e)))?;
        Ok(token_set(&resp, None))
    }

    /// Starts an OAuth 2.0 Device Authorization Grant (RFC 8628 §3.1) for
    /// a machine without a browser: the user opens
    /// [`DeviceLogin::verification_uri`] on any device and enters
    /// [`DeviceLogin::user_code`]; then call
    /// [`OidcClient::finish_device_login`].
    ///
    /// Errors: [`OidcError::DeviceUnsupported`] when the realm does not
    /// announce a device endpoint or the client may not use the grant
    /// (Keycloak: "OAuth 2.0 Device Authorization Grant" on the client),
    /// [`OidcError::Token`] for other refusals.
    pub async fn start_device_login(&self) -> Result<DeviceLogin, OidcError> {
        let endpoint = self
            .discovery
            .device_authorization_endpoint
            .clone()
            .ok_or_else(|| {
                OidcError::DeviceUnsupported(format!(
                    "{} announces no device_authorization_endpoint",
                    self.discovery.issuer
                ))
            })?;
        let bad =
            |e: url::ParseError| OidcError::Discovery(self.discovery.issuer.clone(), e.to_string());
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_token_uri(TokenUrl::new(self.discovery.token_endpoint.clone()).map_err(bad)?)
            .set_device_authorization_url(DeviceAuthorizationUrl::new(endpoint).map_err(bad)?);
        // PKCE S256 here too (RFC 7636 with RFC 8628, as Keycloak accepts
        // and, for clients that require PKCE, demands).
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let details: StandardDeviceAuthorizationResponse = client
            .exchange_device_code()
            .add_scope(Scope::new("openid".into()))
            .add_extra_param("code_challenge", challenge.as_str().to_string())
            .add_extra_param(
                "code_challenge_method",
                challenge.method().as_str().to_string(),
            )
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                oauth2::RequestTokenError::ServerResponse(r)
                    if matches!(
                        r.error(),
                        oauth2::basic::BasicErrorResponseType::UnauthorizedClient
                            | oauth2::basic::BasicErrorResponseType::UnsupportedGrantType
                    ) =>
                {
                    OidcError::DeviceUnsupported(format!(
                        "Keycloak does not allow it for client {}: {}",
                        self.client_id,
                        r.error_description()
                            .cloned()
                            .unwrap_or_else(|| r.error().to_string())
                    ))
                }
                other => OidcError::Token(describe_token_error(other)),
            })?;
        Ok(DeviceLogin {
            verification_uri: details.verification_uri().to_string(),
            verification_uri_complete: details
                .verification_uri_complete()
                .map(|u| u.secret().to_string()),
            user_code: details.user_code().secret().to_string(),
            expires_in: details.expires_in(),
            details,
            verifier,
        })
    }

    /// Polls the token endpoint (at the interval Keycloak asks for, slower on
    /// `slow_down`; RFC 8628 §3.4–3.5) until the user approves on the other
    /// device, for at most `timeout` and never past the code's expiry.
    ///
    /// Errors: [`OidcError::Timeout`] (code expired or `timeout` passed),
    /// [`OidcError::Refused`] (the user denied it), [`OidcError::Token`].
    pub async fn finish_device_login(
        &self,
        login: DeviceLogin,
        timeout: Duration,
    ) -> Result<TokenSet, OidcError> {
        let bad =
            |e: url::ParseError| OidcError::Discovery(self.discovery.issuer.clone(), e.to_string());
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_token_uri(TokenUrl::new(self.discovery.token_endpoint.clone()).map_err(bad)?);
        let resp = client
            .exchange_device_access_token(&login.details)
            .add_extra_param("code_verifier", login.verifier.secret().to_string())
            .request_async(&self.http, tokio::time::sleep, Some(timeout))
            .await
            .map_err(|e| match e {
                oauth2::RequestTokenError::ServerResponse(r) => match r.error() {
                    oauth2::DeviceCodeErrorResponseType::ExpiredToken => OidcError::Timeout,
                    oauth2::DeviceCodeErrorResponseType::AccessDenied => OidcError::Refused(
                        r.error_description()
                            .cloned()
                            .unwrap_or_else(|| "the login was denied".into()),
                    ),
                    other => OidcError::Token(format!(
                        "{other}{}",
                        r.error_description()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    )),
                },
                oauth2::RequestTokenError::Request(e) => {
                    OidcError::Token(format!("request failed: {e}"))
                }
                oauth2::RequestTokenError::Parse(e, _) => {
                    OidcError::Token(format!("unreadable response: {e}"))
                }
                oauth2::RequestTokenError::Other(s) => OidcError::Token(s),
            })?;
        Ok(token_set(&resp, None))
    }

    /// Uses `refresh_token` for a new token set (refresh tokens rotate in
    /// Keycloak; the new one is returned). A refused refresh (session ended,
    /// logged out, revoked) is [`OidcError::SessionEnded`].
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, OidcError> {
        let resp = self
            .oauth(None)?
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                oauth2::RequestTokenError::ServerResponse(_) => OidcError::SessionEnded,
                // No answer at all (connection refused or cut, timeout): an
                // outage, which keeps the login (not "client error").
                oauth2::RequestTokenError::Request(oauth2::HttpClientError::Reqwest(e)) => {
                    OidcError::Unreachable {
                        url: self.discovery.token_endpoint.clone(),
                        source: e.without_url(),
                    }
                }
                other => OidcError::Token(describe_token_error(other)),
            })?;
        Ok(token_set(&resp, Some(refresh_token)))
    }

    /// Ends the Keycloak session behind `refresh_token` (the end-session
    /// endpoint, which Keycloak lets a public client call with its refresh
    /// token), so neither token can be refreshed again.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), OidcError> {
        let Some(url) = &self.discovery.end_session_endpoint else {
            return Ok(());
        };
        let resp = self
            .http
            .post(url)
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .map_err(|e| OidcError::Unreachable {
                url: url.clone(),
                source: e.without_url(),
            })?;
        if resp.status().is_success() || resp.status() == reqwest::StatusCode::BAD_REQUEST {
            // 400 means the session was already gone: the goal is met.
            Ok(())
        } else {
            Err(OidcError::Token(format!(
                "logout returned HTTP {}",
                resp.status()
            )))
        }
    }
}

type OauthClient = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    oauth2::basic::BasicTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

fn token_set(resp: &oauth2::basic::BasicTokenResponse, old_refresh: Option<&str>) -> TokenSet {
    let expires_in = resp.expires_in().unwrap_or(Duration::from_secs(60));
    TokenSet {
        access_token: resp.access_token().secret().clone(),
        refresh_token: resp
            .refresh_token()
            .map(|r| r.secret().clone())
            .or_else(|| old_refresh.map(str::to_string)),
        expires_at: Utc::now() + chrono::Duration::seconds(expires_in.as_secs() as i64),
    }
}

fn describe_token_error<E: std::error::Error>(
    e: oauth2::RequestTokenError<E, oauth2::basic::BasicErrorResponse>,
) -> String {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => {
            format!(
                "{}{}",
                r.error(),
                r.error_description()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )
        }
        oauth2::RequestTokenError::Request(e) => format!("request failed: {e}"),
        oauth2::RequestTokenError::Parse(e, _) => format!("unreadable response: {e}"),
        oauth2::RequestTokenError::Other(s) => s,
    }
}

/// How long one connection to the loopback login listener may take to send
/// its request head; a silent client or a TLS handshake is then dropped.
pub const CALLBACK_READ_LIMIT: Duration = Duration::from_secs(5);

/// At most this many connections to the listener are read at once; more
/// are closed at once (a local flood cannot exhaust memory).
const CALLBACK_MAX_CONNECTIONS: usize = 64;

/// Serves connections to the loopback listener until one is the callback of
/// the login whose `state` is given; returns its code (or the refusal).
async fn wait_for_callback(listener: &TcpListener, state: &str) -> Result<String, OidcError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<String, OidcError>>(1);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((sock, _)) = accepted else {
                    // e.g. out of file descriptors: back off a little.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if tasks.len() >= CALLBACK_MAX_CONNECTIONS {
                    drop(sock);
                    continue;
                }
                let (tx, state) = (tx.clone(), state.to_string());
                tasks.spawn(async move {
                    if let Some(outcome) = serve_callback(sock, &state).await {
                        let _ = tx.send(outcome).await;
                    }
                });
            }
            Some(outcome) = rx.recv() => return outcome,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Reads one request (within [`CALLBACK_READ_LIMIT`]) and answers it.
/// `Some` when it is this login's callback (a code, or Keycloak's refusal);
/// `None` for anything else, which gets an error answer or is dropped.
async fn serve_callback(
    mut sock: tokio::net::TcpStream,
    state: &str,
) -> Option<Result<String, OidcError>> {
    let head = tokio::time::timeout(CALLBACK_READ_LIMIT, read_head(&mut sock))
        .await
        .ok()??;
    let callback = parse_callback(&head, state);
    let (status, body) = callback.answer()?;
    let page = format!("<!doctype html><meta charset=utf-8><title>JIT Access</title><p>{body}</p>");
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\ncache-control: no-store\r\n\r\n{page}",
        page.len()
    );
    let _ = tokio::time::timeout(CALLBACK_READ_LIMIT, async {
        let _ = sock.write_all(resp.as_bytes()).await;
        let _ = sock.shutdown().await;
    })
    .await;
    callback.outcome()
}

/// What one request to the loopback listener is, for the login in progress.
#[derive(Debug, PartialEq, Eq)]
enum Callback {
    /// Not an HTTP request (e.g. a TLS ClientHello): closed unanswered.
    NotHttp,
    /// Another path (`/favicon.ico`): 404, the wait goes on.
    NotFound,
    /// `/callback` with another method: 405, the wait goes on.
    WrongMethod,
    /// `/callback` of another login (wrong or missing `state`): 400, the
    /// wait goes on (RFC 6749 §10.12).
    OtherLogin,
    /// Keycloak's `error=` (with `error_description` when given) for this
    /// login: it ends.
    Refused(String),
    /// This login's callback without a code: it ends.
    NoCode,
    /// This login's authorization code.
    Code(String),
}

/// Reads the request head `head` (request line and headers) as a callback
/// of the login whose `state` is given.
fn parse_callback(head: &str, state: &str) -> Callback {
    let mut words = head.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Callback::NotHttp;
    };
    if !target.starts_with('/') || !version.starts_with("HTTP/") {
        return Callback::NotHttp;
    }
    let Some(url) = url::Url::parse(&format!("http://127.0.0.1{target}"))
        .ok()
        .filter(|u| u.path() == "/callback")
    else {
        return Callback::NotFound;
    };
    if method != "GET" {
        return Callback::WrongMethod;
    }
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    if q.get("state").map(String::as_str) != Some(state) {
        Callback::OtherLogin
    } else if let Some(err) = q.get("error") {
        Callback::Refused(q.get("error_description").unwrap_or(err).clone())
    } else if let Some(code) = q.get("code") {
        Callback::Code(code.clone())
    } else {
        Callback::NoCode
    }
}

impl Callback {
    /// The HTTP status line and the page's text; `None`: close unanswered.
    fn answer(&self) -> Option<(&'static str, String)> {
        Some(match self {
            Callback::NotHttp => return None,
            Callback::NotFound => ("404 Not Found", "Not found.".into()),
            Callback::WrongMethod => ("405 Method Not Allowed", "Only GET is served here.".into()),
            Callback::OtherLogin => (
                "400 Bad Request",
                "This is not the login in progress (state mismatch); it is ignored.".into(),
            ),
            Callback::Refused(why) => (
                "400 Bad Request",
                format!(
                    "Login failed: {}. You can close this tab.",
                    html_escape(why)
                ),
            ),
            Callback::NoCode => (
                "400 Bad Request",
                "Login failed: no code. You can close this tab.".into(),
            ),
            Callback::Code(_) => (
                "200 OK",
                "Logged in to JIT Access. You can close this tab.".into(),
            ),
        })
    }

    /// How the login ends with this request: `None` when it goes on.
    fn outcome(self) -> Option<Result<String, OidcError>> {
        match self {
            Callback::Code(code) => Some(Ok(code)),
            Callback::Refused(why) => Some(Err(OidcError::Refused(why))),
            Callback::NoCode => Some(Err(OidcError::Refused("no authorization code".into()))),
            Callback::NotHttp
            | Callback::NotFound
            | Callback::WrongMethod
            | Callback::OtherLogin => None,
        }
    }
}

/// The request line and headers (up to 8 KiB), or `None` if the peer
/// closed first or sent more without ending the head.
async fn read_head(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    while n < buf.len() {
        let r = sock.read(&mut buf[n..]).await.ok()?;
        if r == 0 {
            return None;
        }
        n += r;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Keycloak gone after discovery (the client is cached): a refresh
    /// that gets no answer is an outage, not a "client error" token failure.
    #[tokio::test]
    async fn a_refresh_without_an_answer_is_unreachable() {
        let port = {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let issuer = format!("http://127.0.0.1:{port}/realms/r");
        let c = OidcClient {
            discovery: Discovery {
                issuer: issuer.clone(),
                authorization_endpoint: format!("{issuer}/protocol/openid-connect/auth"),
                token_endpoint: format!("{issuer}/protocol/openid-connect/token"),
                end_session_endpoint: None,
                device_authorization_endpoint: None,
            },
            client_id: "c".into(),
            http: reqwest::Client::new(),
        };
        let Err(e) = c.refresh("r1").await else {
            panic!("a refresh with no Keycloak succeeded");
        };
        assert!(
            matches!(&e, OidcError::Unreachable { url, .. } if url.ends_with("/token")),
            "{e:?}"
        );
    }

    #[test]
    fn callback_parsing_is_a_table() {
        use Callback::*;
        let cases: &[(&str, Callback)] = &[
            ("GET /callback?code=c&state=s HTTP/1.1\r\nhost: x\r\n\r\n", Code("c".into())),
            ("GET /callback?state=s&code=a%2Fb HTTP/1.1\r\n\r\n", Code("a/b".into())),
            ("GET /callback?code=c&state=other HTTP/1.1\r\n\r\n", OtherLogin),
            ("GET /callback?code=c HTTP/1.1\r\n\r\n", OtherLogin),
            ("GET /callback?code=c&state=S HTTP/1.1\r\n\r\n", OtherLogin),
            (
                "GET /callback?error=access_denied&error_description=no%20way&state=s HTTP/1.1\r\n\r\n",
                Refused("no way".into()),
            ),
            ("GET /callback?error=access_denied&state=s HTTP/1.1\r\n\r\n", Refused("access_denied".into())),
            // An error for another login does not end this one.
            ("GET /callback?error=access_denied&state=x HTTP/1.1\r\n\r\n", OtherLogin),
            ("GET /callback?state=s HTTP/1.1\r\n\r\n", NoCode),
            ("POST /callback?code=c&state=s HTTP/1.1\r\n\r\n", WrongMethod),
            ("GET /favicon.ico HTTP/1.1\r\n\r\n", NotFound),
            ("GET /callbackx?code=c&state=s HTTP/1.1\r\n\r\n", NotFound),
            ("GET http://evil/callback?code=c&state=s HTTP/1.1\r\n\r\n", NotHttp),
            ("GET /callback?code=c&state=s SPDY/3\r\n\r\n", NotHttp),
            ("GET /callback\r\n\r\n", NotHttp),
            ("\u{16}\u{3}\u{1}", NotHttp),
            ("", NotHttp),
        ];
        for (head, want) in cases {
            assert_eq!(&parse_callback(head, "s"), want, "{head:?}");
        }
    }

    #[test]
    fn only_a_code_or_a_refusal_ends_the_login() {
        assert_eq!(Callback::Code("c".into()).outcome().unwrap().unwrap(), "c");
        assert!(matches!(
            Callback::NoCode.outcome(),
            Some(Err(OidcError::Refused(_)))
        ));
        for goes_on in [
            Callback::NotHttp,
            Callback::NotFound,
            Callback::WrongMethod,
            Callback::OtherLogin,
        ] {
            assert!(goes_on.outcome().is_none());
        }
        assert!(Callback::NotHttp.answer().is_none());
        let (status, page) = Callback::Refused("<script>".into()).answer().unwrap();
        assert!(status.starts_with("400"));
        assert!(
            page.contains("&lt;script&gt;") && !page.contains("<script>"),
            "{page}"
        );
    }

    /// Sends `request` to the listener and returns the status line answered.
    async fn ask(port: u16, request: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.lines().next().unwrap_or_default().to_string()
    }

    async fn listener() -> (TcpListener, u16) {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    const BOUND: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn stray_requests_are_answered_and_the_wait_goes_on() {
        let (l, port) = listener().await;
        let wait = tokio::spawn(async move { wait_for_callback(&l, "the-state").await });
        let stray = ask(
            port,
            "GET /callback?code=x&state=y HTTP/1.1\r\nhost: a\r\n\r\n",
        )
        .await;
        assert!(stray.contains("400"), "{stray}");
        let no_state = ask(port, "GET /callback?code=x HTTP/1.1\r\n\r\n").await;
        assert!(no_state.contains("400"), "{no_state}");
        let other = ask(port, "GET /favicon.ico HTTP/1.1\r\n\r\n").await;
        assert!(other.contains("404"), "{other}");
        assert!(!wait.is_finished(), "a stray request ended the login");
        let ok = ask(
            port,
            "GET /callback?code=the-code&state=the-state HTTP/1.1\r\n\r\n",
        )
        .await;
        assert!(ok.contains("200"), "{ok}");
        let code = tokio::time::timeout(BOUND, wait).await.unwrap().unwrap();
        assert_eq!(code.unwrap(), "the-code");
    }

    #[tokio::test]
    async fn silent_and_tls_connections_do_not_block_the_callback() {
        let (l, port) = listener().await;
        let wait = tokio::spawn(async move { wait_for_callback(&l, "s1").await });
        // Held open for the whole test: sends nothing.
        let _silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        // A TLS ClientHello (record header + start of a handshake), kept open.
        let mut tls = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tls.write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .await
        .unwrap();
        let ok = ask(port, "GET /callback?code=c1&state=s1 HTTP/1.1\r\n\r\n").await;
        assert!(ok.contains("200"), "{ok}");
        let code = tokio::time::timeout(BOUND, wait)
            .await
            .expect("the callback was not served while other connections were open")
            .unwrap();
        assert_eq!(code.unwrap(), "c1");
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_read_limit() {
        let (l, port) = listener().await;
        let _wait = tokio::spawn(async move { wait_for_callback(&l, "s").await });
        let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 16];
        // The listener closes it (EOF) once CALLBACK_READ_LIMIT has passed.
        let n = tokio::time::timeout(BOUND, silent.read(&mut buf))
            .await
            .expect("the silent connection was never closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn keycloak_refusal_for_this_login_ends_it() {
        let (l, port) = listener().await;
        let wait = tokio::spawn(async move { wait_for_callback(&l, "s2").await });
        let answer = ask(
            port,
            "GET /callback?error=access_denied&error_description=no%20way&state=s2 HTTP/1.1\r\n\r\n",
        )
        .await;
        assert!(answer.contains("400"), "{answer}");
        let r = tokio::time::timeout(BOUND, wait).await.unwrap().unwrap();
        assert!(
            matches!(r, Err(OidcError::Refused(ref w)) if w == "no way"),
            "{r:?}"
        );
    }
}
