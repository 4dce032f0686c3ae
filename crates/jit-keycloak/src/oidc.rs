//! OIDC for the clients (CLI and desktop app): discovery, Authorization Code
//! with PKCE S256 (RFC 7636) and a loopback redirect on 127.0.0.1 with a
//! random port (RFC 8252 §7.3), refresh, and logout.

use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, Scope, TokenResponse, TokenUrl,
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
    #[error("login state mismatch: the redirect did not come from this login attempt")]
    StateMismatch,
    #[error("login timed out waiting for the browser")]
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
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
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
        let wait = async {
            loop {
                let (mut sock, _) = listener.accept().await?;
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while n < buf.len() {
                    let r = sock.read(&mut buf[n..]).await?;
                    if r == 0 {
                        break;
                    }
                    n += r;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let url = url::Url::parse(&format!("http://127.0.0.1{target}")).ok();
                let Some(url) = url.filter(|u| u.path() == "/callback") else {
                    let _ = sock.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                    continue;
                };
                let q: std::collections::HashMap<String, String> =
                    url.query_pairs().into_owned().collect();
                let (status, body, result) = if let Some(err) = q.get("error") {
                    let why = q
                        .get("error_description")
                        .cloned()
                        .unwrap_or_else(|| err.clone());
                    (
                        "400 Bad Request",
                        format!(
                            "Login failed: {}. You can close this tab.",
                            html_escape(&why)
                        ),
                        Err(OidcError::Refused(why)),
                    )
                } else if q.get("state").map(String::as_str) != Some(state.secret().as_str()) {
                    (
                        "400 Bad Request",
                        "Login failed: state mismatch. You can close this tab.".to_string(),
                        Err(OidcError::StateMismatch),
                    )
                } else if let Some(code) = q.get("code") {
                    (
                        "200 OK",
                        "Logged in to JIT Access. You can close this tab.".to_string(),
                        Ok(code.clone()),
                    )
                } else {
                    (
                        "400 Bad Request",
                        "Login failed: no code. You can close this tab.".to_string(),
                        Err(OidcError::Refused("no authorization code".into())),
                    )
                };
                let page = format!(
                    "<!doctype html><meta charset=utf-8><title>JIT Access</title><p>{body}</p>"
                );
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\ncache-control: no-store\r\n\r\n{page}",
                    page.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
                return result;
            }
        };
        let code = tokio::time::timeout(timeout, wait)
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

/// Opens `url` for an interactive login (RFC 8252 "external user-agent"):
/// with `$BROWSER` when set — a command line in which `%s` is replaced by
/// the URL, else the URL is appended — otherwise the desktop's default
/// browser. A `$BROWSER` child is reaped when it exits.
///
/// Errors: a one-line message (empty `$BROWSER`, command not startable,
/// no default browser).
pub fn open_in_browser(url: &str) -> Result<(), String> {
    if let Ok(cmd) = std::env::var("BROWSER") {
        let mut parts = cmd.split_whitespace();
        let prog = parts.next().ok_or("BROWSER is empty")?;
        let mut args: Vec<String> = parts.map(str::to_string).collect();
        if args.iter().any(|a| a.contains("%s")) {
            args = args.into_iter().map(|a| a.replace("%s", url)).collect();
        } else {
            args.push(url.to_string());
        }
        let mut child = std::process::Command::new(prog)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start BROWSER ({prog}): {e}"))?;
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        return Ok(());
    }
    webbrowser::open(url).map_err(|e| format!("cannot open a browser: {e}"))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
