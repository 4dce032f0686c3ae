//! Login, tokens and logout.
//!
//! Login is Authorization Code + PKCE through the system browser with a
//! loopback redirect (`jit_login::browser_login`, the CLI's sequence), with
//! the client id jitd names in `/v1/config` (`desktop_client_id`). The
//! browser is `$BROWSER` if set (same convention as the CLI), else the
//! desktop's default. Refresh near expiry is jit-login's
//! `RefreshingTokens` (the CLI's too) over the keyring ([`Keyring`]).
//!
//! Tokens live in the OS keyring (Secret Service on Linux): service
//! `jit-access`, one entry per server and user, `{server}#{username}`
//! (`{server}` is the jitd URL, or `embedded+{issuer}` for the embedded
//! jitd, whose port changes). Which user to restore at start is the one
//! last logged in *in this data dir* (`session.json`, no secrets), so two
//! profiles (data dirs, `JIT_PROFILE`) on one machine never share a login;
//! switching user is an explicit log out + log in. Without a keyring tokens
//! are kept in memory only and the UI shows a notice — never written to a
//! file.
//! A background task refreshes them before they expire; logout ends the
//! Keycloak session and deletes the entry.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use jit_client::{Client, ClientError, TokenSource};
use jit_login::refresh::REFRESH_MARGIN_SECS;
use jit_login::{Login, OidcError, RefreshError, RefreshingTokens, TokenStore};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use crate::error::{CommandError, KEYCLOAK_DOWN, NOT_LOGGED_IN};

/// Where the tokens are kept (`SessionInfo.token_storage` of the contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenStorage {
    /// The OS keyring (Secret Service).
    Keyring,
    /// Memory only: lost when the app ends.
    Memory,
}

/// The keyring service name of every entry.
pub const KEYRING_SERVICE: &str = "jit-access";

/// How long the browser login may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// Notice shown when tokens cannot be kept in the OS keyring.
pub fn memory_notice(why: &str) -> String {
    format!(
        "No usable OS keyring: you will have to log in again after restarting the app (tokens are kept in memory only, never written to a file). Reason: {why}"
    )
}

/// What is kept in the keyring entry: jit-login's [`Login`] (issuer,
/// client id, username, tokens), the same shape as before it was shared.
pub type StoredSession = Login;

/// A failed login in words, with its code.
fn login_error(e: OidcError) -> CommandError {
    match e {
        OidcError::Unreachable { url, .. } => CommandError::new(
            "keycloak_unreachable",
            format!("Keycloak ({url}) cannot be reached, so you cannot log in right now. Try again when it is back."),
        ),
        OidcError::Discovery(url, why) => CommandError::new(
            "keycloak_unreachable",
            format!("Keycloak's login settings at {url} could not be read ({why}). Try again when it is back."),
        ),
        OidcError::Timeout => CommandError::new(
            "login_timeout",
            "The login timed out: nobody finished signing in within 5 minutes. Log in again.",
        ),
        other => CommandError::new("login_failed", format!("The login failed: {other}")),
    }
}

/// Which user this data dir logged in as last, per server (`session.json`;
/// usernames only, never tokens).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct LastUsers {
    #[serde(default)]
    last_user: std::collections::BTreeMap<String, String>,
}

/// The keyring entry (user) name of `username` on `server`.
pub fn keyring_user(server: &str, username: &str) -> String {
    format!("{server}#{username}")
}

/// The keyring side of a session: the storage in use, its notice, and
/// the entry's server part. jit-login's [`TokenStore`] of the app.
pub struct Keyring {
    storage: RwLock<TokenStorage>,
    notice: RwLock<Option<String>>,
    /// Keyring entry (user) name's server part; set when the backend is known.
    key: RwLock<Option<String>>,
}

impl Keyring {
    fn storage(&self) -> TokenStorage {
        *self.storage.read().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self) -> Option<String> {
        self.key.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// From now on tokens stay in memory; the UI shows why.
    fn use_memory(&self, why: &str) {
        *self.storage.write().unwrap_or_else(|p| p.into_inner()) = TokenStorage::Memory;
        *self.notice.write().unwrap_or_else(|p| p.into_inner()) = Some(memory_notice(why));
    }

    /// Saves `s` in its keyring entry; a keyring that fails switches the
    /// app to memory-only storage (with the notice), never to a file.
    async fn persist(&self, s: &StoredSession) {
        if self.storage() != TokenStorage::Keyring {
            return;
        }
        let Some(server) = self.key() else { return };
        let key = keyring_user(&server, &s.username);
        let text = serde_json::to_string(s).expect("session serialises");
        if let Err(e) = keyring_set(&key, &text).await {
            tracing::warn!(error = %e, "cannot save tokens in the keyring");
            self.use_memory(&e);
        }
    }
}

impl TokenStore for Keyring {
    fn save<'a>(&'a self, login: &'a Login) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.persist(login).await;
            Ok(())
        })
    }
}

/// The logged-in user's session.
pub struct Session {
    tokens: RefreshingTokens,
    keyring: Arc<Keyring>,
    login_lock: Mutex<()>,
    /// Bumped on login, logout and session end.
    changed: watch::Sender<u64>,
    /// `session.json` (which user to restore); `None`: remember nothing.
    last_users: Option<std::path::PathBuf>,
    /// Why the last login was lost (shown on the login screen).
    lost: RwLock<Option<String>>,
    /// Keycloak could not be reached on the last refresh (cleared on success).
    keycloak_down: RwLock<Option<String>>,
}

impl Session {
    /// A session without a data dir (remembers no user to restore).
    pub fn new(keyring: bool) -> Arc<Session> {
        Session::with_data_dir(keyring, None)
    }

    /// A session that remembers the last user per server in
    /// `data_dir/session.json`.
    pub fn with_data_dir(keyring: bool, data_dir: Option<&std::path::Path>) -> Arc<Session> {
        let store = Arc::new(Keyring {
            storage: RwLock::new(if keyring {
                TokenStorage::Keyring
            } else {
                TokenStorage::Memory
            }),
            notice: RwLock::new(None),
            key: RwLock::new(None),
        });
        Arc::new(Session {
            tokens: RefreshingTokens::new(store.clone(), None),
            keyring: store,
            last_users: data_dir.map(|d| d.join("session.json")),
            lost: RwLock::new(None),
            keycloak_down: RwLock::new(None),
            login_lock: Mutex::new(()),
            changed: watch::channel(0).0,
        })
    }

    /// Logged in, and as whom.
    pub async fn who(&self) -> (bool, Option<String>) {
        match self.tokens.login().await {
            Some(s) => (true, Some(s.username)),
            None => (false, None),
        }
    }

    /// Whether someone is logged in.
    pub async fn logged_in(&self) -> bool {
        self.tokens.login().await.is_some()
    }

    /// Where tokens are kept now (keyring, or memory after the keyring failed).
    pub fn storage(&self) -> TokenStorage {
        self.keyring.storage()
    }

    /// Why tokens are kept in memory only, when they are.
    pub fn notice(&self) -> Option<String> {
        self.keyring
            .notice
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Wakes on every login, logout or session end.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn use_memory(&self, why: &str) {
        self.keyring.use_memory(why);
    }

    /// The server part of keyring entry names (jitd URL or
    /// `embedded+{issuer}`).
    pub fn set_key(&self, entry: String) {
        *self.keyring.key.write().unwrap_or_else(|p| p.into_inner()) = Some(entry);
    }

    fn key(&self) -> Option<String> {
        self.keyring.key()
    }

    /// Why the last login was lost, if it was (cleared by the next login).
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_lost(&self, why: Option<String>) {
        *self.lost.write().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Set while Keycloak cannot be reached to renew the login.
    pub fn keycloak_down(&self) -> Option<String> {
        self.keycloak_down
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_keycloak_down(&self, why: Option<String>) {
        let changed = {
            let mut k = self
                .keycloak_down
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let changed = k.is_some() != why.is_some();
            *k = why;
            changed
        };
        if changed {
            self.bump();
        }
    }

    fn read_last_users(&self) -> LastUsers {
        self.last_users
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Records (or with `None` forgets) the user to restore for `server`.
    fn write_last_user(&self, server: &str, user: Option<&str>) {
        let Some(path) = &self.last_users else { return };
        let mut l = self.read_last_users();
        match user {
            Some(u) => l.last_user.insert(server.to_string(), u.to_string()),
            None => l.last_user.remove(server),
        };
        let tmp = path.with_extension("json.tmp");
        let r = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&tmp, serde_json::to_vec_pretty(&l).unwrap_or_default()))
            .and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            tracing::warn!(error = %e, path = %path.display(), "cannot save which user to restore");
        }
    }

    /// The keyring entry of the user to restore for the current server.
    fn restore_entry(&self) -> Option<String> {
        let server = self.key()?;
        let user = self.read_last_users().last_user.get(&server)?.clone();
        Some(keyring_user(&server, &user))
    }

    /// Checks the keyring and restores a saved session (refreshing it if
    /// needed). Without a usable keyring, switches to memory with a notice.
    pub async fn restore(&self) {
        if self.storage() != TokenStorage::Keyring {
            if self.notice().is_none() {
                self.use_memory("disabled");
            }
            return;
        }
        let Some(key) = self.restore_entry() else {
            return;
        };
        match keyring_get(&key).await {
            Ok(None) => {}
            Ok(Some(text)) => match serde_json::from_str::<StoredSession>(&text) {
                Ok(stored) => {
                    self.tokens.set(Some(stored)).await;
                    match self.current_token().await {
                        Ok(_) => tracing::info!("session restored from the keyring"),
                        Err(e) => {
                            tracing::warn!(error = %e, "saved session could not be refreshed")
                        }
                    }
                    self.bump();
                }
                Err(_) => {
                    tracing::warn!("unreadable keyring entry; ignoring it");
                    let _ = keyring_delete(&key).await;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "no usable keyring");
                self.use_memory(&e);
            }
        }
    }

    /// Logs in through the system browser. `on_url` gets Keycloak's login
    /// URL and, if no browser could be opened, why — the login keeps
    /// waiting for that URL to be opened by hand (the UI shows it with a
    /// copy button). Resolves when the browser came back (or the login
    /// failed or timed out after 5 minutes).
    pub async fn login(
        &self,
        client: &Client,
        on_url: impl FnOnce(&str, Option<String>),
    ) -> Result<(), CommandError> {
        let _one = self.login_lock.try_lock().map_err(|_| {
            CommandError::new(
                "login_in_progress",
                "A login is already waiting for the browser.",
            )
        })?;
        let cfg = client
            .server_config()
            .await
            .map_err(CommandError::from_client)?;
        let oidc = self
            .tokens
            .oidc(&cfg.issuer, &cfg.desktop_client_id)
            .await
            .map_err(login_error)?;
        let tokens = jit_login::browser_login(&oidc, LOGIN_TIMEOUT, |url, no_browser| {
            if let Some(e) = &no_browser {
                tracing::warn!(error = %e, "no browser opened; waiting for the login URL to be opened by hand");
            }
            on_url(url, no_browser);
        })
        .await
        .map_err(login_error)?;
        let username = preferred_username(&tokens.access_token).unwrap_or_default();
        let stored = StoredSession {
            issuer: cfg.issuer,
            client_id: cfg.desktop_client_id,
            username,
            tokens,
        };
        self.tokens.set(Some(stored)).await;
        // The server's view of who we are wins over the token's claim.
        if let Ok(me) = client.me().await {
            self.tokens.update(|s| s.username = me.username).await;
        }
        if let Some(s) = self.tokens.login().await {
            self.keyring.persist(&s).await;
            if let Some(server) = self.key() {
                self.write_last_user(&server, Some(&s.username));
            }
        }
        self.set_lost(None);
        self.set_keycloak_down(None);
        self.bump();
        Ok(())
    }

    /// Ends the Keycloak session, forgets the tokens and deletes the
    /// keyring entry. Local state is cleared even when Keycloak cannot be
    /// reached (the error is returned then).
    pub async fn logout(&self) -> Result<(), String> {
        let held = self.tokens.login().await;
        let mut result = Ok(());
        if let Some(s) = &held {
            if let Some(rt) = &s.tokens.refresh_token {
                match self.tokens.oidc(&s.issuer, &s.client_id).await {
                    Ok(o) => {
                        if let Err(e) = o.logout(rt).await {
                            result = Err(format!("logged out here, but Keycloak said: {e}"));
                        }
                    }
                    Err(e) => result = Err(format!("logged out here, but Keycloak said: {e}")),
                }
            }
        }
        self.forget().await;
        result
    }

    /// Drops tokens and the user's keyring entry without calling Keycloak.
    async fn forget(&self) {
        let held = self.tokens.set(None).await;
        self.forget_entry(held).await;
    }

    /// Forgets `held`'s keyring entry and which user to restore.
    async fn forget_entry(&self, held: Option<StoredSession>) {
        if let (Some(server), Some(s)) = (self.key(), held) {
            self.write_last_user(&server, None);
            if self.storage() == TokenStorage::Keyring {
                if let Err(e) = keyring_delete(&keyring_user(&server, &s.username)).await {
                    tracing::warn!(error = %e, "cannot delete the keyring entry");
                }
            }
        }
        self.set_keycloak_down(None);
        self.bump();
    }

    /// A valid access token, refreshed when less than 30 s are left.
    pub async fn current_token(&self) -> Result<String, ClientError> {
        self.token_with_margin(REFRESH_MARGIN_SECS).await
    }

    /// A valid access token, refreshed when less than `margin_secs` are
    /// left (jit-login's rules: refreshes serialised, no lock held across
    /// the network, a refused refresh ends the login). A login lost here
    /// gets its reason on the login screen; an unreachable Keycloak is
    /// recorded for the outage banner.
    async fn token_with_margin(&self, margin_secs: i64) -> Result<String, ClientError> {
        match self.tokens.access_token(margin_secs).await {
            Ok(t) => {
                self.set_keycloak_down(None);
                Ok(t)
            }
            Err(RefreshError::NotLoggedIn) => Err(ClientError::Token(NOT_LOGGED_IN.into())),
            Err(RefreshError::NoRefreshToken { dropped }) => Err(self
                .lost_login(
                    dropped,
                    "Your login expired (Keycloak gave no refresh token): log in again.",
                )
                .await),
            Err(RefreshError::SessionEnded { dropped }) => {
                self.set_keycloak_down(None);
                Err(self.lost_login(dropped, "Your Keycloak session ended (logged out elsewhere, timed out, or Keycloak was reset): log in again.").await)
            }
            Err(RefreshError::Keycloak(e)) => Err(self.keycloak_failed(&e)),
            Err(RefreshError::Store(e)) => Err(ClientError::Token(e)),
        }
    }

    /// Records that Keycloak could not renew the login; the error to return.
    fn keycloak_failed(&self, e: &OidcError) -> ClientError {
        tracing::warn!(error = %e, "cannot refresh the login");
        let text = match e {
            OidcError::Unreachable { url, .. } => {
                format!("{KEYCLOAK_DOWN} ({url})")
            }
            other => format!("{KEYCLOAK_DOWN} to renew the login ({other})"),
        };
        self.set_keycloak_down(Some(text.clone()));
        ClientError::Token(text)
    }

    /// A login ended by Keycloak (`dropped`, `None` when a newer login had
    /// replaced it): its entry is forgotten and `why` shown on the login
    /// screen. The error to return.
    async fn lost_login(&self, dropped: Option<StoredSession>, why: &str) -> ClientError {
        if dropped.is_some() {
            self.set_lost(Some(why.to_string()));
            self.forget_entry(dropped).await;
        }
        ClientError::Token(why.into())
    }

    /// Refreshes tokens in the background shortly before they expire, so
    /// the session (and the refresh token) stays alive while the app runs.
    pub async fn refresh_loop(self: Arc<Self>) {
        let mut changed = self.subscribe();
        loop {
            let expires = self.tokens.login().await.map(|s| s.tokens.expires_at);
            let Some(expires) = expires else {
                if changed.changed().await.is_err() {
                    return;
                }
                continue;
            };
            // Wake 20 s before expiry (at least 5 s from now) and refresh.
            let wait = (expires - Utc::now() - chrono::Duration::seconds(20))
                .to_std()
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_secs(5), Duration::from_secs(600));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = changed.changed() => { if r.is_err() { return; } continue; }
            }
            if let Err(e) = self.token_with_margin(25).await {
                tracing::warn!(error = %e, "background token refresh failed");
                if self.logged_in().await {
                    tokio::time::sleep(Duration::from_secs(15)).await;
                }
            }
        }
    }
}

impl TokenSource for Session {
    fn token(&self) -> BoxFuture<'_, Result<String, ClientError>> {
        Box::pin(self.current_token())
    }
}

/// `preferred_username` of a JWT, unverified (display only; jitd checks
/// tokens).
fn preferred_username(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("preferred_username")?.as_str().map(str::to_string)
}

const KEYRING_TIMEOUT: Duration = Duration::from_secs(8);

/// Runs a blocking keyring call off the async runtime, with a timeout (a
/// Secret Service that waits on a prompt must not hang the app).
async fn keyring_call<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, keyring::Error> + Send + 'static,
) -> Result<T, String> {
    let task = tokio::task::spawn_blocking(f);
    match tokio::time::timeout(KEYRING_TIMEOUT, task).await {
        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(format!("keyring call failed: {e}")),
        Err(_) => Err("the keyring did not answer".into()),
    }
}

async fn keyring_get(user: &str) -> Result<Option<String>, String> {
    let user = user.to_string();
    keyring_call(move || {
        let e = keyring::Entry::new(KEYRING_SERVICE, &user)?;
        match e.get_password() {
            Ok(s) => Ok(Some(s)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(err) => Err(err),
        }
    })
    .await
}

async fn keyring_set(user: &str, secret: &str) -> Result<(), String> {
    let (user, secret) = (user.to_string(), secret.to_string());
    keyring_call(move || keyring::Entry::new(KEYRING_SERVICE, &user)?.set_password(&secret)).await
}

async fn keyring_delete(user: &str) -> Result<(), String> {
    let user = user.to_string();
    keyring_call(
        move || match keyring::Entry::new(KEYRING_SERVICE, &user)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(e),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_username_claim_for_display() {
        use base64::Engine;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"RS256"}"#),
            enc(r#"{"preferred_username":"alice"}"#)
        );
        assert_eq!(preferred_username(&jwt).as_deref(), Some("alice"));
        assert_eq!(preferred_username("garbage"), None);
    }

    #[tokio::test]
    async fn not_logged_in_is_a_readable_token_error() {
        let s = Session::new(false);
        let e = s.current_token().await.unwrap_err();
        assert_eq!(e.to_string(), "not logged in: log in first");
        let c = crate::error::CommandError::from_client(e);
        assert_eq!(c.code, "login_required");
    }

    #[test]
    fn sessions_are_keyed_by_server_and_user_and_restored_per_data_dir() {
        assert_eq!(
            keyring_user("http://127.0.0.1:8787", "alice"),
            "http://127.0.0.1:8787#alice"
        );
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let a = Session::with_data_dir(false, Some(one.path()));
        let b = Session::with_data_dir(false, Some(two.path()));
        for s in [&a, &b] {
            s.set_key("http://jitd".into());
        }
        a.write_last_user("http://jitd", Some("alice"));
        b.write_last_user("http://jitd", Some("bob"));
        // Same server, two data dirs (profiles): each restores its own user.
        assert_eq!(a.restore_entry().as_deref(), Some("http://jitd#alice"));
        assert_eq!(b.restore_entry().as_deref(), Some("http://jitd#bob"));
        // Reopened: still alice; after logout nothing is restored.
        let a2 = Session::with_data_dir(false, Some(one.path()));
        a2.set_key("http://jitd".into());
        assert_eq!(a2.restore_entry().as_deref(), Some("http://jitd#alice"));
        a2.write_last_user("http://jitd", None);
        assert_eq!(a2.restore_entry(), None);
        // Another server in the same data dir is another entry.
        b.set_key("embedded+http://kc/realms/jit".into());
        assert_eq!(b.restore_entry(), None);
    }
}
