//! Refresh near expiry, once for the CLI and the app: [`RefreshingTokens`]
//! holds one [`Login`], hands out its access token, and when less than a
//! margin is left uses the refresh token (Keycloak rotates it: the new set
//! is saved through the [`TokenStore`] before the token is handed out).
//!
//! Rules kept here: refreshes are serialised (a rotated refresh token
//! must not be used twice); the login lock is never held across the
//! network (a slow Keycloak does not block readers or logout); a refresh
//! that comes back after the login was replaced (logout, another login)
//! is thrown away; a refused refresh ends the login it was made for.

use std::sync::Arc;

use chrono::Utc;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::oidc::{OidcClient, OidcError, TokenSet};

/// Refresh when less than this many seconds are left on the access token
/// (the CLI and the app's calls).
pub const REFRESH_MARGIN_SECS: i64 = 30;

/// One user's login at one realm: what a [`TokenStore`] keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    /// The realm's issuer URL, `{keycloak}/realms/{realm}`.
    pub issuer: String,
    /// The public client logged in with (`jit-cli`, `jit-desktop`).
    pub client_id: String,
    /// The user's name as jitd reports it (display only).
    pub username: String,
    /// The tokens (`Debug` hides them).
    pub tokens: TokenSet,
}

impl Login {
    /// Whether `other` is the same login (the same refresh token), not a
    /// newer one.
    fn same(&self, other: &Login) -> bool {
        self.tokens.refresh_token == other.tokens.refresh_token
            && self.tokens.access_token == other.tokens.access_token
    }
}

/// Where refreshed tokens are kept: a profile file (CLI), the OS keyring
/// (app). Called after every refresh, with the whole login.
pub trait TokenStore: Send + Sync {
    /// Saves `login`. Errors: a one-line reason (the CLI reports it; the
    /// app switches to memory-only storage itself and returns `Ok`).
    fn save<'a>(&'a self, login: &'a Login) -> BoxFuture<'a, Result<(), String>>;
}

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Nobody is logged in (or the login was replaced during a refresh).
    #[error("not logged in")]
    NotLoggedIn,
    /// The access token expired and Keycloak gave no refresh token. The
    /// login is dropped; `dropped` is it (`None`: a newer login had
    /// already replaced it).
    #[error("the login expired (Keycloak gave no refresh token)")]
    NoRefreshToken {
        /// The login this ended.
        dropped: Option<Login>,
    },
    /// Keycloak refused the refresh (session ended, logged out, revoked).
    /// The login is dropped, as for `NoRefreshToken`.
    #[error("the Keycloak session has ended")]
    SessionEnded {
        /// The login this ended.
        dropped: Option<Login>,
    },
    /// Keycloak could not be asked (`OidcError::Unreachable` is an outage
    /// that may pass) or answered something unusable.
    #[error("{0}")]
    Keycloak(OidcError),
    /// The refreshed login could not be saved.
    #[error("cannot save the refreshed login: {0}")]
    Store(String),
}

/// A login whose access token is refreshed near its expiry. Cheap to
/// share behind an `Arc`; the CLI and the app wrap it in their
/// `jit_client::TokenSource`, which words the errors for their users.
pub struct RefreshingTokens {
    login: Mutex<Option<Login>>,
    oidc: Mutex<Option<OidcClient>>,
    refresh_lock: Mutex<()>,
    store: Arc<dyn TokenStore>,
    http: reqwest::Client,
}

impl RefreshingTokens {
    /// Holds `login` (or nobody) and saves refreshes to `store`.
    pub fn new(store: Arc<dyn TokenStore>, login: Option<Login>) -> RefreshingTokens {
        RefreshingTokens::with_http(store, login, crate::http_client())
    }

    /// As [`RefreshingTokens::new`], with the HTTP client for Keycloak.
    pub fn with_http(
        store: Arc<dyn TokenStore>,
        login: Option<Login>,
        http: reqwest::Client,
    ) -> RefreshingTokens {
        RefreshingTokens {
            login: Mutex::new(login),
            oidc: Mutex::new(None),
            refresh_lock: Mutex::new(()),
            store,
            http,
        }
    }

    /// The login held now (a copy).
    pub async fn login(&self) -> Option<Login> {
        self.login.lock().await.clone()
    }

    /// Replaces the login (a new login, or `None` at logout); returns the
    /// one it replaced. Does not save: the caller decides where a new
    /// login goes.
    pub async fn set(&self, login: Option<Login>) -> Option<Login> {
        std::mem::replace(&mut *self.login.lock().await, login)
    }

    /// Changes the held login in place (e.g. the username jitd reports);
    /// returns the result, `None` when nobody is logged in.
    pub async fn update(&self, f: impl FnOnce(&mut Login)) -> Option<Login> {
        let mut held = self.login.lock().await;
        held.as_mut().map(|l| {
            f(l);
            l.clone()
        })
    }

    /// The OIDC client of `issuer` and `client_id`, discovered once and
    /// reused. Errors: as [`OidcClient::discover`].
    pub async fn oidc(&self, issuer: &str, client_id: &str) -> Result<OidcClient, OidcError> {
        let mut o = self.oidc.lock().await;
        if let Some(c) = o.as_ref() {
            if c.discovery.issuer.trim_end_matches('/') == issuer.trim_end_matches('/')
                && c.client_id == client_id
            {
                return Ok(c.clone());
            }
        }
        let c = OidcClient::discover(self.http.clone(), issuer, client_id).await?;
        *o = Some(c.clone());
        Ok(c)
    }

    /// A valid access token: the held one when more than `margin_secs`
    /// are left on it, else a refreshed one (saved first).
    ///
    /// Errors: [`RefreshError`]; `NoRefreshToken` and `SessionEnded` drop
    /// the login they were about.
    pub async fn access_token(&self, margin_secs: i64) -> Result<String, RefreshError> {
        let fresh = |l: &Login| !l.tokens.needs_refresh(Utc::now(), margin_secs);
        match &*self.login.lock().await {
            None => return Err(RefreshError::NotLoggedIn),
            Some(l) if fresh(l) => return Ok(l.tokens.access_token.clone()),
            Some(_) => {}
        }
        let _one = self.refresh_lock.lock().await;
        // Someone else may have refreshed (or logged out) meanwhile.
        let held = match self.login.lock().await.clone() {
            None => return Err(RefreshError::NotLoggedIn),
            Some(l) if fresh(&l) => return Ok(l.tokens.access_token),
            Some(l) => l,
        };
        let Some(refresh_token) = held.tokens.refresh_token.clone() else {
            let dropped = self.drop_if_same(&held).await;
            return Err(RefreshError::NoRefreshToken { dropped });
        };
        let oidc = self
            .oidc(&held.issuer, &held.client_id)
            .await
            .map_err(RefreshError::Keycloak)?;
        match oidc.refresh(&refresh_token).await {
            Ok(tokens) => {
                let updated = {
                    let mut cur = self.login.lock().await;
                    match cur.as_mut() {
                        Some(c) if c.same(&held) => {
                            c.tokens = tokens;
                            Some(c.clone())
                        }
                        _ => None,
                    }
                };
                let updated = updated.ok_or(RefreshError::NotLoggedIn)?;
                self.store
                    .save(&updated)
                    .await
                    .map_err(RefreshError::Store)?;
                Ok(updated.tokens.access_token)
            }
            Err(OidcError::SessionEnded) => {
                let dropped = self.drop_if_same(&held).await;
                Err(RefreshError::SessionEnded { dropped })
            }
            Err(e) => Err(RefreshError::Keycloak(e)),
        }
    }

    /// Drops the held login if it is still `held` (not a newer one).
    async fn drop_if_same(&self, held: &Login) -> Option<Login> {
        let mut cur = self.login.lock().await;
        if cur.as_ref().is_some_and(|c| c.same(held)) {
            cur.take()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Remembers every saved login.
    #[derive(Default)]
    struct Saved(StdMutex<Vec<Login>>);

    impl TokenStore for Saved {
        fn save<'a>(&'a self, login: &'a Login) -> BoxFuture<'a, Result<(), String>> {
            self.0.lock().unwrap().push(login.clone());
            Box::pin(async { Ok(()) })
        }
    }

    /// A loopback stand-in for one realm's discovery and token endpoints:
    /// the token endpoint answers `token_status` with `token_body`, and
    /// counts its calls.
    async fn realm(token_status: u16, token_body: &'static str) -> (String, Arc<StdMutex<u32>>) {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let base = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
        let issuer = format!("{base}/realms/r");
        let calls = Arc::new(StdMutex::new(0));
        let (iss, n) = (issuer.clone(), calls.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 16384];
                let mut len = 0;
                // The head, then the body (content-length), all read
                // before answering.
                let complete = |b: &[u8]| {
                    let text = String::from_utf8_lossy(b).to_lowercase();
                    let Some(end) = text.find("\r\n\r\n") else {
                        return false;
                    };
                    let body_len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    b.len() >= end + 4 + body_len
                };
                while !complete(&buf[..len]) {
                    let r = s.read(&mut buf[len..]).await.unwrap();
                    if r == 0 {
                        break;
                    }
                    len += r;
                }
                let head = String::from_utf8_lossy(&buf[..len]).to_string();
                let (status, body) = if head.starts_with("GET /realms/r/.well-known") {
                    (
                        200,
                        format!(
                            r#"{{"issuer":"{iss}","authorization_endpoint":"{iss}/auth","token_endpoint":"{iss}/token","jwks_uri":"{iss}/certs"}}"#
                        ),
                    )
                } else {
                    *n.lock().unwrap() += 1;
                    (token_status, token_body.to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        (issuer, calls)
    }

    fn login(issuer: &str, expires_in_secs: i64, refresh: Option<&str>) -> Login {
        Login {
            issuer: issuer.into(),
            client_id: "c".into(),
            username: "u".into(),
            tokens: TokenSet {
                access_token: "old".into(),
                refresh_token: refresh.map(str::to_string),
                expires_at: Utc::now() + chrono::Duration::seconds(expires_in_secs),
            },
        }
    }

    const FRESH: &str =
        r#"{"access_token":"new","token_type":"Bearer","expires_in":300,"refresh_token":"r2"}"#;

    #[tokio::test]
    async fn a_fresh_token_is_handed_out_without_asking_keycloak() {
        let (issuer, calls) = realm(200, FRESH).await;
        let saved = Arc::new(Saved::default());
        let t = RefreshingTokens::new(saved.clone(), Some(login(&issuer, 300, Some("r1"))));
        assert_eq!(t.access_token(30).await.unwrap(), "old");
        assert_eq!(*calls.lock().unwrap(), 0);
        assert!(saved.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn near_expiry_the_token_is_refreshed_and_saved_before_use() {
        let (issuer, calls) = realm(200, FRESH).await;
        let saved = Arc::new(Saved::default());
        let t = RefreshingTokens::new(saved.clone(), Some(login(&issuer, 10, Some("r1"))));
        assert_eq!(t.access_token(30).await.unwrap(), "new");
        assert_eq!(*calls.lock().unwrap(), 1);
        let saved = saved.0.lock().unwrap().clone();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].tokens.refresh_token.as_deref(), Some("r2"));
        // The rotated set is held: no second refresh.
        assert_eq!(t.access_token(30).await.unwrap(), "new");
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_refused_refresh_ends_the_login() {
        let (issuer, _) = realm(400, r#"{"error":"invalid_grant"}"#).await;
        let t = RefreshingTokens::new(
            Arc::new(Saved::default()),
            Some(login(&issuer, 10, Some("r1"))),
        );
        match t.access_token(30).await {
            Err(RefreshError::SessionEnded { dropped: Some(l) }) => assert_eq!(l.username, "u"),
            other => panic!("{other:?}"),
        }
        assert!(t.login().await.is_none());
        assert!(matches!(
            t.access_token(30).await,
            Err(RefreshError::NotLoggedIn)
        ));
    }

    #[tokio::test]
    async fn no_refresh_token_ends_the_login_and_nobody_is_not_logged_in() {
        let t = RefreshingTokens::new(
            Arc::new(Saved::default()),
            Some(login("http://127.0.0.1:9/realms/r", 10, None)),
        );
        assert!(matches!(
            t.access_token(30).await,
            Err(RefreshError::NoRefreshToken { dropped: Some(_) })
        ));
        assert!(matches!(
            t.access_token(30).await,
            Err(RefreshError::NotLoggedIn)
        ));
    }

    #[tokio::test]
    async fn an_unreachable_keycloak_keeps_the_login() {
        // A port nothing listens on (bound, then closed).
        let port = {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let issuer = format!("http://127.0.0.1:{port}/realms/r");
        let t = RefreshingTokens::new(
            Arc::new(Saved::default()),
            Some(login(&issuer, 10, Some("r1"))),
        );
        assert!(matches!(
            t.access_token(30).await,
            Err(RefreshError::Keycloak(OidcError::Unreachable { .. }))
        ));
        assert!(t.login().await.is_some());
    }
}
