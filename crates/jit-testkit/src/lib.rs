//! Test-only helpers for Keycloak JIT Access, against a **real** Keycloak
//! serving the `jit` demo realm (`tests/fixtures/realm-jit.json`).
//!
//! What it is for:
//! - [`keycloak_env`]: where the test Keycloak is (`KEYCLOAK_URL`, set by
//!   `cargo xtask test`);
//! - [`browser_login`]: a scripted "browser" that signs in through
//!   Keycloak's own login page (no password grant: direct access grants are
//!   off in the realm), and the binary `kc-form-login`, usable as `$BROWSER`
//!   for the `jit` CLI or the desktop app (see [`kc_form_login_path`]);
//! - [`pkce_login`] / [`refresh`]: Authorization Code + PKCE S256 with a
//!   loopback redirect, giving real tokens of real users;
//! - [`AdminProbe`]: what Keycloak really holds (roles, groups, sessions of a
//!   user), read with the `jit-backend` service account;
//! - [`decode_jwt_claims`]: read a token's payload (no signature check).
//!
//! What it is not for: production code. Nothing here validates tokens,
//! and the secrets and passwords are the demo values of the realm fixture.
//! Never depend on this crate outside `[dev-dependencies]`.

mod admin;
mod browser;
mod pkce;
pub mod postgres;

pub use admin::AdminProbe;
pub use browser::{browser_login, device_login, page_text};
pub use pkce::{pkce_login, pkce_login_scoped, pkce_login_with_redirect, refresh, TokenSet};

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use base64::Engine as _;

/// The demo realm.
pub const REALM: &str = "jit";
/// Demo secret of the confidential `jit-backend` client (realm fixture).
pub const DEMO_BACKEND_SECRET: &str = "jit-backend-demo-secret";
/// Public client of the CLI.
pub const CLI_CLIENT_ID: &str = "jit-cli";
/// Public client of the desktop app.
pub const DESKTOP_CLIENT_ID: &str = "jit-desktop";
/// Audience (client) of the tokens jitd accepts.
pub const API_AUDIENCE: &str = "jit-api";
/// Confidential client with the service account jitd uses.
pub const BACKEND_CLIENT_ID: &str = "jit-backend";
/// Client whose client role `billing-admin` is requestable.
pub const BILLING_CLIENT_ID: &str = "billing-app";
/// Confidential client of the example CI pipeline (client credentials,
/// audience `jit-api`).
pub const PIPELINE_CLIENT_ID: &str = "jit-pipeline";
/// Demo secret of [`PIPELINE_CLIENT_ID`] (realm fixture).
pub const DEMO_PIPELINE_SECRET: &str = "jit-pipeline-demo-secret";

/// An access token for `client_id`'s own service account, by the
/// client-credentials grant (RFC 6749 §4.4) — what a pipeline does.
pub async fn client_credentials_token(
    env: &KeycloakEnv,
    client_id: &str,
    secret: &str,
) -> Result<String> {
    let resp = reqwest::Client::new()
        .post(env.token_endpoint())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .context("token endpoint")?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("token response")?;
    if !status.is_success() {
        return Err(anyhow!(
            "client credentials of {client_id}: HTTP {status}: {}",
            body["error"]
        ));
    }
    body["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no access_token in the token response"))
}

/// Demo password of a fixture user: `<username>-pass`.
pub fn demo_password(username: &str) -> String {
    format!("{username}-pass")
}

/// Where the test Keycloak is.
#[derive(Clone, PartialEq, Eq)]
pub struct KeycloakEnv {
    /// Base URL without trailing slash, e.g. `http://127.0.0.1:18080`.
    pub url: String,
    /// Realm name (`jit`).
    pub realm: String,
    /// Secret of the `jit-backend` client.
    pub backend_secret: String,
}

impl std::fmt::Debug for KeycloakEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeycloakEnv")
            .field("url", &self.url)
            .field("realm", &self.realm)
            .field("backend_secret", &"<redacted>")
            .finish()
    }
}

impl KeycloakEnv {
    /// `{url}/realms/{realm}` — the `iss` of the realm's tokens.
    pub fn issuer(&self) -> String {
        format!("{}/realms/{}", self.url, self.realm)
    }

    /// `{issuer}/protocol/openid-connect/auth`.
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/protocol/openid-connect/auth", self.issuer())
    }

    /// `{issuer}/protocol/openid-connect/token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }

    /// `{url}/admin/realms/{realm}` — base of the Admin REST API.
    pub fn admin_base(&self) -> String {
        format!("{}/admin/realms/{}", self.url, self.realm)
    }
}

/// Read the environment: `KEYCLOAK_URL` (required), realm `jit`, and the
/// backend secret from `JIT_BACKEND_SECRET` (default: the demo secret).
///
/// # Panics
/// When `KEYCLOAK_URL` is not set, with a message saying how to run tests.
pub fn keycloak_env() -> KeycloakEnv {
    let url = std::env::var("KEYCLOAK_URL")
        .ok()
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "KEYCLOAK_URL is not set: run the tests with `cargo xtask test` (starts Keycloak) \
                 or point KEYCLOAK_URL at a running Keycloak with the jit realm"
            )
        });
    let backend_secret = std::env::var("JIT_BACKEND_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEMO_BACKEND_SECRET.to_string());
    KeycloakEnv {
        url,
        realm: REALM.to_string(),
        backend_secret,
    }
}

/// Decode the payload (claims) of a JWT **without** checking anything.
pub fn decode_jwt_claims(token: &str) -> Result<serde_json::Value> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("not a JWT (no payload segment)"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .context("JWT payload is not base64url")?;
    serde_json::from_slice(&bytes).context("JWT payload is not JSON")
}

/// Path of the `kc-form-login` binary built next to the running test
/// executable (`target/<profile>/kc-form-login`).
///
/// `cargo xtask test` builds it before running tests; otherwise run
/// `cargo build -p jit-testkit --bin kc-form-login` first.
pub fn kc_form_login_path() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent().map(PathBuf::from);
    // Test executables live in target/<profile>/deps; binaries in target/<profile>.
    while let Some(d) = dir {
        let candidate = d.join("kc-form-login");
        if candidate.is_file() {
            return Ok(candidate);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent().map(PathBuf::from);
    }
    Err(anyhow!(
        "kc-form-login binary not found near {}: run `cargo build -p jit-testkit --bin kc-form-login` \
         (cargo xtask test does it)",
        exe.display()
    ))
}

pub(crate) fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

/// Shorten a response body for an error message.
pub(crate) fn snippet(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s: String = one_line.chars().take(300).collect();
    if one_line.chars().count() > 300 {
        s.push('…');
    }
    s
}
