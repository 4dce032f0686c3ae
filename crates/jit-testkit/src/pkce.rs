//! Authorization Code + PKCE (S256) with a loopback redirect, driven by
//! [`browser_login`], and refresh.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

use crate::{browser_login, decode_jwt_claims, http_client, snippet, KeycloakEnv};

/// Tokens from the token endpoint. `Debug` never shows the tokens.
#[derive(Clone, Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    #[serde(default)]
    pub id_token: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl TokenSet {
    /// Claims of the access token (decoded, not validated).
    pub fn access_claims(&self) -> Result<serde_json::Value> {
        decode_jwt_claims(&self.access_token)
    }
}

/// Log `username` in to the public client `client_id` through the login
/// page, with PKCE S256, a fresh `state` and `nonce`, and a loopback
/// redirect `http://127.0.0.1:<random port>/callback` (nothing listens
/// there: the code is read from the redirect).
pub async fn pkce_login(
    env: &KeycloakEnv,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<TokenSet> {
    let port = 49152 + (uuid::Uuid::new_v4().as_u128() % (65536 - 49152)) as u16;
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    pkce_login_with_redirect(env, client_id, &redirect_uri, username, password).await
}

/// [`pkce_login`] with a chosen `redirect_uri` (e.g. to check which ones
/// Keycloak accepts).
pub async fn pkce_login_with_redirect(
    env: &KeycloakEnv,
    client_id: &str,
    redirect_uri: &str,
    username: &str,
    password: &str,
) -> Result<TokenSet> {
    pkce_login_scoped(env, client_id, redirect_uri, username, password, "openid").await
}

/// [`pkce_login_with_redirect`] asking for `scope` (e.g.
/// `openid offline_access` for an offline session).
pub async fn pkce_login_scoped(
    env: &KeycloakEnv,
    client_id: &str,
    redirect_uri: &str,
    username: &str,
    password: &str,
    scope: &str,
) -> Result<TokenSet> {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let state = uuid::Uuid::new_v4().simple().to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();

    let mut authorize =
        Url::parse(&env.authorization_endpoint()).context("invalid KEYCLOAK_URL")?;
    authorize
        .query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("response_type", "code")
        .append_pair("scope", scope)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");

    let callback = browser_login(authorize.as_str(), username, password).await?;
    let param = |name: &str| {
        callback
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if param("state").as_deref() != Some(state.as_str()) {
        bail!("state mismatch in the redirect to {redirect_uri}");
    }
    if let Some(iss) = param("iss") {
        if iss != env.issuer() {
            bail!(
                "iss in the redirect is {iss:?}, expected {:?}",
                env.issuer()
            );
        }
    }
    let code = param("code").ok_or_else(|| anyhow!("no code in the redirect"))?;

    let tokens = token_request(
        env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("client_id", client_id),
            ("code_verifier", &verifier),
        ],
        None,
    )
    .await
    .context("exchanging the authorization code")?;
    if let Some(id_token) = &tokens.id_token {
        let claims = decode_jwt_claims(id_token)?;
        if claims.get("nonce").and_then(|n| n.as_str()) != Some(nonce.as_str()) {
            bail!("nonce mismatch in the ID token");
        }
    }
    Ok(tokens)
}

/// Refresh with `refresh_token` for the public client `client_id`.
///
/// After a session logout (`POST /users/{id}/logout`) this fails with an
/// error containing `invalid_grant`.
pub async fn refresh(env: &KeycloakEnv, client_id: &str, refresh_token: &str) -> Result<TokenSet> {
    token_request(
        env,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ],
        Some(refresh_token),
    )
    .await
    .context("refreshing the tokens")
}

#[derive(Deserialize)]
struct RawTokens {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    expires_in: u64,
    #[serde(default)]
    id_token: Option<String>,
}

async fn token_request(
    env: &KeycloakEnv,
    form: &[(&str, &str)],
    previous_refresh: Option<&str>,
) -> Result<TokenSet> {
    let resp = http_client()?
        .post(env.token_endpoint())
        .form(form)
        .send()
        .await
        .context("POST to the token endpoint")?;
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .map(|v| {
                format!(
                    "{}: {}",
                    v.get("error").and_then(|e| e.as_str()).unwrap_or("?"),
                    v.get("error_description")
                        .and_then(|e| e.as_str())
                        .unwrap_or("")
                )
            })
            .unwrap_or_else(|| snippet(&body));
        bail!("token endpoint answered HTTP {status}: {detail}");
    }
    let raw: RawTokens =
        serde_json::from_str(&body).context("unexpected token endpoint response")?;
    let refresh_token = raw
        .refresh_token
        .or_else(|| previous_refresh.map(str::to_string))
        .ok_or_else(|| anyhow!("token endpoint gave no refresh_token"))?;
    Ok(TokenSet {
        access_token: raw.access_token,
        refresh_token,
        expires_in: raw.expires_in,
        id_token: raw.id_token,
    })
}
