//! Read what Keycloak really holds, with the `jit-backend` service account.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::{http_client, snippet, KeycloakEnv, BACKEND_CLIENT_ID};

/// Admin REST reads for tests (client credentials of `jit-backend`).
///
/// Role and group lists are sorted names. Methods taking a `username` look
/// the user up by exact username first.
pub struct AdminProbe {
    env: KeycloakEnv,
    http: reqwest::Client,
    token: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for AdminProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminProbe")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct WithId {
    id: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

impl AdminProbe {
    /// Obtain a service-account token (fails early if the secret is wrong).
    pub async fn new(env: &KeycloakEnv) -> Result<AdminProbe> {
        let probe = AdminProbe {
            env: env.clone(),
            http: http_client()?,
            token: Mutex::new(None),
        };
        probe.token().await?;
        Ok(probe)
    }

    /// A valid service-account access token (cached until shortly before
    /// it expires), for raw Admin REST calls in tests.
    pub async fn access_token(&self) -> Result<String> {
        self.token().await
    }

    async fn token(&self) -> Result<String> {
        if let Some((token, valid_until)) = self.token.lock().expect("token lock").clone() {
            if Instant::now() < valid_until {
                return Ok(token);
            }
        }
        let resp = self
            .http
            .post(self.env.token_endpoint())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", BACKEND_CLIENT_ID),
                ("client_secret", self.env.backend_secret.as_str()),
            ])
            .send()
            .await
            .context("client-credentials token request")?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!(
                "jit-backend client-credentials login failed: HTTP {status}: {}",
                snippet(&body)
            );
        }
        let t: TokenResponse = serde_json::from_str(&body).context("token response")?;
        let valid_until =
            Instant::now() + Duration::from_secs(t.expires_in.saturating_sub(30).max(1));
        *self.token.lock().expect("token lock") = Some((t.access_token.clone(), valid_until));
        Ok(t.access_token)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{}", self.env.admin_base(), path);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(self.token().await?)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}: {}", snippet(&body));
        }
        serde_json::from_str(&body).with_context(|| format!("GET {url}: unexpected body"))
    }

    /// Id of the user with exactly this username.
    pub async fn user_id(&self, username: &str) -> Result<String> {
        let users: Vec<serde_json::Value> = self
            .get(&format!(
                "/users?username={}&exact=true",
                urlencode(username)
            ))
            .await?;
        users
            .iter()
            .find(|u| u.get("username").and_then(|n| n.as_str()) == Some(username))
            .and_then(|u| u.get("id").and_then(|i| i.as_str()))
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no user {username:?} in realm {}", self.env.realm))
    }

    async fn names(&self, path: &str) -> Result<Vec<String>> {
        let items: Vec<Named> = self.get(path).await?;
        let mut names: Vec<String> = items.into_iter().map(|n| n.name).collect();
        names.sort();
        Ok(names)
    }

    /// Realm roles mapped directly to the user.
    pub async fn realm_roles_direct(&self, username: &str) -> Result<Vec<String>> {
        let id = self.user_id(username).await?;
        self.names(&format!("/users/{id}/role-mappings/realm"))
            .await
    }

    /// Effective realm roles (direct, composite, via groups and defaults).
    pub async fn realm_roles_effective(&self, username: &str) -> Result<Vec<String>> {
        let id = self.user_id(username).await?;
        self.names(&format!("/users/{id}/role-mappings/realm/composite"))
            .await
    }

    /// Internal id of the client with this `clientId`.
    pub async fn client_uuid(&self, client_id: &str) -> Result<String> {
        let clients: Vec<WithId> = self
            .get(&format!("/clients?clientId={}", urlencode(client_id)))
            .await?;
        clients
            .into_iter()
            .next()
            .map(|c| c.id)
            .ok_or_else(|| anyhow!("no client {client_id:?} in realm {}", self.env.realm))
    }

    /// Client roles of `client_id` mapped directly to the user.
    pub async fn client_roles(&self, username: &str, client_id: &str) -> Result<Vec<String>> {
        let id = self.user_id(username).await?;
        let client = self.client_uuid(client_id).await?;
        self.names(&format!("/users/{id}/role-mappings/clients/{client}"))
            .await
    }

    /// Effective client roles of `client_id` (direct, composite, via groups).
    pub async fn client_roles_effective(
        &self,
        username: &str,
        client_id: &str,
    ) -> Result<Vec<String>> {
        let id = self.user_id(username).await?;
        let client = self.client_uuid(client_id).await?;
        self.names(&format!(
            "/users/{id}/role-mappings/clients/{client}/composite"
        ))
        .await
    }

    /// Id of the service-account user of client `client_id`.
    pub async fn service_account_id(&self, client_id: &str) -> Result<String> {
        let client = self.client_uuid(client_id).await?;
        let user: WithId = self
            .get(&format!("/clients/{client}/service-account-user"))
            .await?;
        Ok(user.id)
    }

    /// Realm roles mapped directly to the service account of `client_id`.
    pub async fn service_account_realm_roles(&self, client_id: &str) -> Result<Vec<String>> {
        let id = self.service_account_id(client_id).await?;
        self.names(&format!("/users/{id}/role-mappings/realm"))
            .await
    }

    /// Names of the groups the user is a direct member of.
    pub async fn groups(&self, username: &str) -> Result<Vec<String>> {
        let id = self.user_id(username).await?;
        self.names(&format!("/users/{id}/groups?max=1000")).await
    }

    /// Number of the user's active (online) sessions.
    pub async fn session_count(&self, username: &str) -> Result<usize> {
        let id = self.user_id(username).await?;
        let sessions: Vec<serde_json::Value> = self.get(&format!("/users/{id}/sessions")).await?;
        Ok(sessions.len())
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
