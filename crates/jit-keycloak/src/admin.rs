//! The Keycloak Admin REST API, as the `jit-backend` service account
//! (client credentials grant). Only what JIT needs: users, role mappings,
//! group membership, session logout.
//!
//! Keycloak facts this module is built around (Admin REST API docs, 26.x):
//! - `DELETE /users/{id}/role-mappings/realm` with an empty or missing body
//!   removes **all** the user's realm roles. Every delete here sends exactly
//!   the one role to remove, and refuses to send an empty list.
//! - Adding a role the user already has, or removing one they lack, is a 204
//!   no-op, so grant and revoke can be retried safely.

use std::time::{Duration, Instant};

use jit_core::EntitlementKind;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// A failed Keycloak call. [`KeycloakError::is_transient`] tells the
/// scheduler whether to retry (outage, timeout, 5xx, 429, the service
/// account's own login) or give up (404, 403, 400: Keycloak's answer about
/// this user or target will not change by asking again).
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeycloakError {
    /// Connection refused or cut, DNS, TLS: nothing was answered.
    #[error("Keycloak unreachable: {0}")]
    Unavailable(String),
    /// No answer within the per-call limit (seconds).
    #[error("Keycloak did not answer within {0} s")]
    Timeout(u64),
    /// The service account could not log in (token endpoint): a
    /// configuration or Keycloak problem, not a fact about one grant.
    #[error("the service account cannot log in to Keycloak: {0}")]
    Login(String),
    #[error("Keycloak answered {status} to {what}: {body}")]
    Status {
        status: u16,
        what: String,
        body: String,
    },
    /// 404: the user, role, client or group does not exist.
    #[error("not found in Keycloak: {0}")]
    NotFound(String),
    #[error("refusing to send an empty role list (Keycloak would remove every role)")]
    EmptyRoleList,
    /// Keycloak accepted a write but did not keep it (e.g. a user attribute
    /// its user profile drops).
    #[error("Keycloak did not keep {0}")]
    NotKept(String),
    /// Another writer (another jitd replica, an admin) changed what was
    /// just written before it could be read back: worth writing again from
    /// the current truth.
    #[error("{what} was changed by another writer right after this write")]
    Overwritten {
        /// What was written (e.g. `attribute jit.grants of user <id>`).
        what: String,
        /// The values the re-read found instead.
        found: Vec<String>,
    },
}

impl KeycloakError {
    /// Kind of failure for metrics (see [`crate::KeycloakCall::error_kind`]).
    pub fn kind(&self) -> &'static str {
        match self {
            KeycloakError::Unavailable(_) => "unreachable",
            KeycloakError::Timeout(_) => "timeout",
            KeycloakError::Login(_) => "login",
            KeycloakError::Status { status, .. } => crate::observe::status_kind(*status),
            KeycloakError::NotFound(_) => "not_found",
            KeycloakError::EmptyRoleList => "refused",
            KeycloakError::NotKept(_) => "not_kept",
            KeycloakError::Overwritten { .. } => "conflict",
        }
    }

    /// Whether trying again later may succeed: refused connections,
    /// timeouts, 5xx, 429, 401 (token expired or realm keys rotated) and the
    /// service account's own login. 404, 403 and 400 are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            KeycloakError::Unavailable(_)
            | KeycloakError::Timeout(_)
            | KeycloakError::Login(_)
            | KeycloakError::Overwritten { .. } => true,
            KeycloakError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 401 || *status == 408
            }
            KeycloakError::NotFound(_)
            | KeycloakError::EmptyRoleList
            | KeycloakError::NotKept(_) => false,
        }
    }

    /// 404: what was asked about does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(self, KeycloakError::NotFound(_))
    }

    /// 403: the service account may not do this.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, KeycloakError::Status { status: 403, .. })
    }
}

/// Whether an entitlement's Keycloak target can be granted by jitd's
/// service account, as Keycloak answers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum TargetStatus {
    /// It exists and the service account may assign it.
    Available,
    /// The role, client or group does not exist in the realm.
    Missing(String),
    /// It exists, but Keycloak would refuse the service account's
    /// assignment (e.g. an admin role of `realm-management` the service
    /// account does not hold itself).
    NotAssignable(String),
}

impl TargetStatus {
    /// The reason it cannot be granted, if it cannot.
    pub fn unavailable_reason(&self) -> Option<&str> {
        match self {
            TargetStatus::Available => None,
            TargetStatus::Missing(r) | TargetStatus::NotAssignable(r) => Some(r),
        }
    }
}

/// What ending a user's sessions did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionsEnded {
    /// Offline sessions (offline tokens) ended one by one.
    pub offline: usize,
}

/// The Keycloak Admin API calls jitd's scheduler and handlers make, as one
/// seam: [`AdminClient`] talks to Keycloak; tests put a fault-injecting
/// fake behind it so every error kind is reachable in-process.
///
/// Every method is idempotent. Errors are [`KeycloakError`]s; the caller
/// asks [`KeycloakError::is_transient`] whether to retry.
#[async_trait::async_trait]
pub trait KeycloakAdmin: Send + Sync + 'static {
    /// Whether the user holds `target`: direct assignment only
    /// (`effective = false`, what a removal would take away) or also through
    /// composites and groups (`true`). Errors: `NotFound` if the user or
    /// target is gone.
    async fn holds(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        effective: bool,
    ) -> Result<bool, KeycloakError>;

    /// Grants exactly `target` (one role or one membership); a no-op if held.
    async fn assign(&self, user_id: &str, target: &EntitlementKind) -> Result<(), KeycloakError>;

    /// Removes exactly `target`; a no-op if not held. `NotFound` means the
    /// user or the target no longer exists (nothing is left to remove).
    async fn unassign(&self, user_id: &str, target: &EntitlementKind) -> Result<(), KeycloakError>;

    /// Ends all of the user's sessions, offline sessions included, so no
    /// refresh token of theirs works any more.
    async fn end_sessions(&self, user_id: &str) -> Result<SessionsEnded, KeycloakError>;

    /// The user's current enabled state, effective realm roles and groups
    /// (rights at a vote, eligibility at activation). `NotFound` if deleted.
    async fn current_user(&self, user_id: &str) -> Result<CurrentUser, KeycloakError>;

    /// [`KeycloakAdmin::current_user`] reading only the `parts` asked for
    /// besides the account itself (enabled, username): a part not asked
    /// for is an empty set in the answer, never a guess. Eligibility at
    /// activation asks for what the entitlement's requester rule names.
    /// The default reads everything (a superset is always correct).
    async fn current_user_parts(
        &self,
        user_id: &str,
        parts: UserParts,
    ) -> Result<CurrentUser, KeycloakError> {
        let _ = parts;
        self.current_user(user_id).await
    }

    /// Whether holding `holder` gives the user `target` too (a group that
    /// carries the role, a composite role, a subgroup).
    async fn carries(
        &self,
        holder: &EntitlementKind,
        target: &EntitlementKind,
    ) -> Result<bool, KeycloakError>;

    /// Sets the user's attribute `name` to exactly `values`; returns
    /// whether it wrote (see [`AdminClient::set_user_attribute`]).
    async fn set_user_attribute(
        &self,
        user_id: &str,
        name: &str,
        values: &[String],
    ) -> Result<bool, KeycloakError>;

    /// Whether `target` exists and the service account may assign it.
    async fn target_status(&self, target: &EntitlementKind) -> Result<TargetStatus, KeycloakError>;

    /// Usernames holding `target` outside JIT (for `check-policy`).
    async fn holders(&self, target: &EntitlementKind) -> Result<Vec<String>, KeycloakError>;

    /// A cheap call that succeeds when Keycloak serves the realm's Admin API
    /// to the service account again (readiness probe after an outage).
    async fn ready(&self) -> Result<(), KeycloakError>;

    /// Ids of enabled users who may approve through the realm roles
    /// `roles` or the groups `groups` (paths), as far as Keycloak's
    /// listings show them; at most `max` ids (the search stops there).
    /// `None` when the implementation cannot tell (then nobody is warned).
    /// For the `no_eligible_approver` warning at creation; see
    /// [`AdminClient::approver_ids`] for what is and is not seen.
    async fn approver_ids(
        &self,
        roles: &[String],
        groups: &[String],
        max: usize,
    ) -> Result<Option<std::collections::HashSet<String>>, KeycloakError> {
        let _ = (roles, groups, max);
        Ok(None)
    }

    /// Ids of the users holding `target` directly — what [`holds`] with
    /// `effective = false` answers for each of them — in one read, or
    /// `None` when more than `max` users do (or the implementation cannot
    /// list them): then ask [`holds`] per user. For a burst of grants of
    /// one target. Errors: `NotFound` if the target is gone.
    ///
    /// [`holds`]: KeycloakAdmin::holds
    async fn direct_holders(
        &self,
        target: &EntitlementKind,
        max: usize,
    ) -> Result<Option<std::collections::HashSet<String>>, KeycloakError> {
        let _ = (target, max);
        Ok(None)
    }

    /// Ids of the realm's disabled users (people and service accounts) in
    /// one read, or `None` when more than `max` are disabled (or the
    /// implementation cannot list them): then read each requester's
    /// account. For a burst of grants, which a disabled requester must not
    /// get.
    async fn disabled_users(
        &self,
        max: usize,
    ) -> Result<Option<std::collections::HashSet<String>>, KeycloakError> {
        let _ = max;
        Ok(None)
    }
}

/// A role as Keycloak represents it (the subset JIT sends back).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RoleRep {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default)]
    pub client_role: bool,
    #[serde(default)]
    pub composite: bool,
}

/// A user (subset).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserRep {
    pub id: String,
    pub username: String,
    /// A user without the field is treated as disabled (fail closed).
    #[serde(default)]
    pub enabled: bool,
}

/// A group (subset).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct GroupRep {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Deserialize)]
struct ClientRep {
    id: String,
}

#[derive(Deserialize)]
struct TokenResp {
    access_token: String,
    expires_in: u64,
}

struct CachedToken {
    token: String,
    valid_until: Instant,
}

/// How long a looked-up role, client or group id is trusted without a
/// sign of change (a 404 on a call that used it refreshes it at once).
const ID_TTL: Duration = Duration::from_secs(600);

/// Admin REST client for one realm, authenticated as a confidential client's
/// service account. The token is cached until 30 s before it expires; the
/// ids of roles, clients and groups are cached (see [`ID_TTL`]) and looked
/// up again when Keycloak answers 404 to a call that used them.
pub struct AdminClient {
    base: String,
    realm: String,
    client_id: String,
    client_secret: String,
    http: reqwest::Client,
    token: Mutex<Option<CachedToken>>,
    observer: crate::observe::Observer,
    /// Serialises token fetches without holding `token` across them.
    token_fetch: Mutex<()>,
    ids: std::sync::Mutex<std::collections::HashMap<String, (Instant, CachedId)>>,
    service_account: Mutex<Option<String>>,
}

#[derive(Clone)]
enum CachedId {
    Role(RoleRep),
    Client(String),
    Group(String),
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .field("realm", &self.realm)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: reqwest::Error) -> KeycloakError {
    KeycloakError::Unavailable(e.without_url().to_string())
}

impl AdminClient {
    /// `base` is Keycloak's URL (`http://127.0.0.1:18080`), `realm` the realm
    /// both the users and the service-account client live in.
    pub fn new(
        base: &str,
        realm: &str,
        client_id: &str,
        client_secret: &str,
        http: reqwest::Client,
    ) -> AdminClient {
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            realm: realm.to_string(),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            http,
            token: Mutex::new(None),
            observer: None,
            token_fetch: Mutex::new(()),
            ids: std::sync::Mutex::new(std::collections::HashMap::new()),
            service_account: Mutex::new(None),
        }
    }

    /// Reports every call to Keycloak to `observer` (metrics).
    pub fn with_observer(mut self, observer: std::sync::Arc<dyn crate::CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn observed(&self, operation: String, started: Instant, error: Option<&KeycloakError>) {
        if let Some(o) = &self.observer {
            o.observe(&crate::KeycloakCall {
                operation,
                elapsed: started.elapsed(),
                error_kind: error.map(KeycloakError::kind),
            });
        }
    }

    fn cached(&self, key: &str) -> Option<CachedId> {
        let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.get(key)
            .filter(|(at, _)| at.elapsed() < ID_TTL)
            .map(|(_, v)| v.clone())
    }

    fn remember(&self, key: String, v: CachedId) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (Instant::now(), v));
    }

    fn url(&self, path: &str) -> String {
        format!("{}/admin/realms/{}{}", self.base, self.realm, path)
    }

    async fn cached_token(&self) -> Option<String> {
        let guard = self.token.lock().await;
        guard
            .as_ref()
            .filter(|t| Instant::now() < t.valid_until)
            .map(|t| t.token.clone())
    }

    async fn bearer(&self) -> Result<String, KeycloakError> {
        if let Some(t) = self.cached_token().await {
            return Ok(t);
        }
        // One fetch at a time; those who waited use its result.
        let _fetching = self.token_fetch.lock().await;
        if let Some(t) = self.cached_token().await {
            return Ok(t);
        }
        let url = format!(
            "{}/realms/{}/protocol/openid-connect/token",
            self.base, self.realm
        );
        let started = Instant::now();
        let result = self.token_request(&url).await;
        self.observed("token".into(), started, result.as_ref().err());
        tracing::debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            ok = result.is_ok(),
            "service-account token fetched"
        );
        let r = result?;
        let valid = Duration::from_secs(r.expires_in.saturating_sub(30).max(5));
        *self.token.lock().await = Some(CachedToken {
            token: r.access_token.clone(),
            valid_until: Instant::now() + valid,
        });
        Ok(r.access_token)
    }

    /// The client-credentials grant. Any refusal is a [`KeycloakError::Login`]
    /// (transient: it says nothing about the user or target at hand).
    async fn token_request(&self, url: &str) -> Result<TokenResp, KeycloakError> {
        let resp = self
            .http
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
            ])
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(KeycloakError::Login(format!("HTTP {status}: {body}")));
        }
        resp.json().await.map_err(unavailable)
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, KeycloakError> {
        let mut retry = req.try_clone();
        let mut req = req;
        loop {
            let token = self.bearer().await?;
            let built = req.bearer_auth(token).build().map_err(unavailable)?;
            let operation = format!(
                "{} {}",
                built.method().as_str().to_ascii_lowercase(),
                crate::observe::admin_resource(built.url().path())
            );
            let started = Instant::now();
            let result = self.send_built(built, what).await;
            self.observed(operation, started, result.as_ref().err());
            match result {
                // Token revoked or realm keys rotated (e.g. Keycloak restarted
                // with a new database): a new token, and one more try.
                Err(KeycloakError::Status { status: 401, .. }) if retry.is_some() => {
                    req = retry.take().expect("checked");
                }
                other => return other,
            }
        }
    }

    async fn send_built(
        &self,
        req: reqwest::Request,
        what: &str,
    ) -> Result<reqwest::Response, KeycloakError> {
        let resp = self.http.execute(req).await.map_err(unavailable)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // Drop the token so the next call fetches a new one.
            tracing::debug!(what, "Keycloak refused the service-account token (401)");
            *self.token.lock().await = None;
        }
        let body = resp.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(KeycloakError::NotFound(what.to_string()));
        }
        Err(KeycloakError::Status {
            status: status.as_u16(),
            what: what.to_string(),
            body: body.chars().take(300).collect(),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<T, KeycloakError> {
        let resp = self.send(self.http.get(self.url(path)), what).await?;
        resp.json().await.map_err(unavailable)
    }

    /// Looks a user up by id. Errors: [`KeycloakError::NotFound`].
    pub async fn user(&self, user_id: &str) -> Result<UserRep, KeycloakError> {
        self.get_json(
            &format!("/users/{}", enc(user_id)),
            &format!("user {user_id}"),
        )
        .await
    }

    /// A realm role by name.
    pub async fn realm_role(&self, name: &str) -> Result<RoleRep, KeycloakError> {
        self.get_json(
            &format!("/roles/{}", enc(name)),
            &format!("realm role {name}"),
        )
        .await
    }

    /// The internal id of the client whose `clientId` is `client_id`.
    pub async fn client_uuid(&self, client_id: &str) -> Result<String, KeycloakError> {
        let cs: Vec<ClientRep> = self
            .get_json(
                &format!("/clients?clientId={}", enc(client_id)),
                &format!("client {client_id}"),
            )
            .await?;
        cs.into_iter()
            .next()
            .map(|c| c.id)
            .ok_or_else(|| KeycloakError::NotFound(format!("client {client_id}")))
    }

    /// A client role by client uuid and role name.
    pub async fn client_role(
        &self,
        client_uuid: &str,
        name: &str,
    ) -> Result<RoleRep, KeycloakError> {
        self.get_json(
            &format!("/clients/{}/roles/{}", enc(client_uuid), enc(name)),
            &format!("client role {name}"),
        )
        .await
    }

    /// A group by full path (`/incident-responders`).
    pub async fn group_by_path(&self, path: &str) -> Result<GroupRep, KeycloakError> {
        let p: Vec<String> = path.trim_start_matches('/').split('/').map(enc).collect();
        self.get_json(
            &format!("/group-by-path/{}", p.join("/")),
            &format!("group {path}"),
        )
        .await
    }

    /// The user's realm roles: direct assignments only (`effective = false`),
    /// or everything they hold incl. composites and group roles (`true`).
    pub async fn user_realm_roles(
        &self,
        user_id: &str,
        effective: bool,
    ) -> Result<Vec<RoleRep>, KeycloakError> {
        let suffix = if effective { "/composite" } else { "" };
        self.get_json(
            &format!("/users/{}/role-mappings/realm{suffix}", enc(user_id)),
            "realm role mappings",
        )
        .await
    }

    /// The user's roles of one client, direct or effective.
    pub async fn user_client_roles(
        &self,
        user_id: &str,
        client_uuid: &str,
        effective: bool,
    ) -> Result<Vec<RoleRep>, KeycloakError> {
        let suffix = if effective { "/composite" } else { "" };
        self.get_json(
            &format!(
                "/users/{}/role-mappings/clients/{}{suffix}",
                enc(user_id),
                enc(client_uuid)
            ),
            "client role mappings",
        )
        .await
    }

    /// The groups the user is a direct member of.
    pub async fn user_groups(&self, user_id: &str) -> Result<Vec<GroupRep>, KeycloakError> {
        self.get_json(
            &format!("/users/{}/groups?briefRepresentation=true", enc(user_id)),
            "group membership",
        )
        .await
    }

    async fn role_mapping(
        &self,
        method: reqwest::Method,
        path: String,
        roles: &[RoleRep],
        what: &str,
    ) -> Result<(), KeycloakError> {
        if roles.is_empty() {
            return Err(KeycloakError::EmptyRoleList);
        }
        self.send(self.http.request(method, self.url(&path)).json(roles), what)
            .await?;
        Ok(())
    }

    /// POSTs or DELETEs exactly `role` on the user's realm mappings
    /// (`client_uuid` = None) or on one client's mappings.
    async fn map_role(
        &self,
        method: reqwest::Method,
        user_id: &str,
        client_uuid: Option<&str>,
        role: &RoleRep,
        what: &str,
    ) -> Result<(), KeycloakError> {
        let path = match client_uuid {
            None => format!("/users/{}/role-mappings/realm", enc(user_id)),
            Some(c) => format!("/users/{}/role-mappings/clients/{}", enc(user_id), enc(c)),
        };
        self.role_mapping(method, path, std::slice::from_ref(role), what)
            .await
    }

    /// Adds exactly `role` to the user's realm role mappings (204 no-op if held).
    pub async fn add_realm_role(&self, user_id: &str, role: &RoleRep) -> Result<(), KeycloakError> {
        self.map_role(reqwest::Method::POST, user_id, None, role, "add realm role")
            .await
    }

    /// Removes exactly `role` from the user's realm role mappings. Never sends
    /// an empty body (which would remove every realm role).
    pub async fn remove_realm_role(
        &self,
        user_id: &str,
        role: &RoleRep,
    ) -> Result<(), KeycloakError> {
        self.map_role(
            reqwest::Method::DELETE,
            user_id,
            None,
            role,
            "remove realm role",
        )
        .await
    }

    /// Adds exactly `role` of client `client_uuid` to the user.
    pub async fn add_client_role(
        &self,
        user_id: &str,
        client_uuid: &str,
        role: &RoleRep,
    ) -> Result<(), KeycloakError> {
        self.map_role(
            reqwest::Method::POST,
            user_id,
            Some(client_uuid),
            role,
            "add client role",
        )
        .await
    }

    /// Removes exactly `role` of client `client_uuid` from the user.
    pub async fn remove_client_role(
        &self,
        user_id: &str,
        client_uuid: &str,
        role: &RoleRep,
    ) -> Result<(), KeycloakError> {
        self.map_role(
            reqwest::Method::DELETE,
            user_id,
            Some(client_uuid),
            role,
            "remove client role",
        )
        .await
    }

    /// Makes the user a member of group `group_id`.
    pub async fn join_group(&self, user_id: &str, group_id: &str) -> Result<(), KeycloakError> {
        let url = self.url(&format!("/users/{}/groups/{}", enc(user_id), enc(group_id)));
        self.send(self.http.put(url), "join group").await?;
        Ok(())
    }

    /// Removes the user from group `group_id` (and only that group).
    pub async fn leave_group(&self, user_id: &str, group_id: &str) -> Result<(), KeycloakError> {
        let url = self.url(&format!("/users/{}/groups/{}", enc(user_id), enc(group_id)));
        self.send(self.http.delete(url), "leave group").await?;
        Ok(())
    }

    /// The values of the user's attribute `name` (empty when absent).
    /// Errors: [`KeycloakError::NotFound`] when the user does not exist.
    pub async fn user_attribute(
        &self,
        user_id: &str,
        name: &str,
    ) -> Result<Vec<String>, KeycloakError> {
        let user: serde_json::Value = self
            .get_json(
                &format!("/users/{}", enc(user_id)),
                &format!("user {user_id}"),
            )
            .await?;
        Ok(attribute_values(&user, name))
    }

    /// Sets the user's attribute `name` to exactly `values` (removes it when
    /// empty), leaving every other field and attribute as it is: reads the
    /// whole user representation and writes it back (`PUT /users/{id}`), and
    /// writes nothing when the values are already those. Returns whether it
    /// wrote.
    ///
    /// Keycloak's declarative user profile (26.x) keeps an attribute written
    /// this way only if the realm declares it (admin view/edit) or allows
    /// unmanaged attributes for admins (`unmanagedAttributePolicy` `ADMIN_EDIT`
    /// or `ENABLED`); otherwise it drops it, which the re-read after the write
    /// turns into [`KeycloakError::NotKept`]. A re-read that shows the
    /// attribute with other values means another writer (another jitd
    /// replica writing the same user) came in between:
    /// [`KeycloakError::Overwritten`] (transient; write again from the
    /// current truth). Errors: also [`KeycloakError::NotFound`] for a
    /// missing user.
    pub async fn set_user_attribute(
        &self,
        user_id: &str,
        name: &str,
        values: &[String],
    ) -> Result<bool, KeycloakError> {
        let what = format!("user {user_id}");
        let path = format!("/users/{}", enc(user_id));
        let mut user: serde_json::Value = self.get_json(&path, &what).await?;
        if attribute_values(&user, name) == values {
            return Ok(false);
        }
        let obj = user.as_object_mut().ok_or_else(|| {
            KeycloakError::Unavailable("user representation is not an object".into())
        })?;
        let attrs = obj
            .entry("attributes")
            .or_insert_with(|| serde_json::json!({}));
        if !attrs.is_object() {
            *attrs = serde_json::json!({});
        }
        let map = attrs.as_object_mut().expect("object");
        if values.is_empty() {
            map.remove(name);
        } else {
            map.insert(name.to_string(), serde_json::json!(values));
        }
        // Send back the user-profile fields only (Keycloak's user API drops
        // profile attributes missing from the body), never `enabled`,
        // `emailVerified`, `requiredActions` and the like: an admin who
        // disables the user between our read and this write must not be
        // undone by it.
        let body: serde_json::Map<String, serde_json::Value> =
            ["username", "email", "firstName", "lastName", "attributes"]
                .iter()
                .filter_map(|k| obj.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect();
        self.send(
            self.http.put(self.url(&path)).json(&body),
            &format!("update attribute {name} of user {user_id}"),
        )
        .await?;
        if !values.is_empty() {
            let stored: serde_json::Value = self.get_json(&path, &what).await?;
            let kept = attribute_values(&stored, name);
            if !kept.is_empty() && kept != values {
                return Err(KeycloakError::Overwritten {
                    what: format!("attribute {name} of user {user_id}"),
                    found: kept,
                });
            }
            if kept != values {
                return Err(KeycloakError::NotKept(format!(
                    "attribute {name} of user {user_id}: declare it in the realm's user profile \
                     (admin view and edit) or set unmanaged attributes to ADMIN_EDIT"
                )));
            }
        }
        Ok(true)
    }

    /// Ends all of the user's sessions (`POST /users/{id}/logout`), so their
    /// refresh tokens stop working.
    pub async fn logout_user(&self, user_id: &str) -> Result<(), KeycloakError> {
        let url = self.url(&format!("/users/{}/logout", enc(user_id)));
        self.send(self.http.post(url), "end user sessions").await?;
        Ok(())
    }

    /// A realm role by name, from the id cache unless `fresh`.
    async fn realm_role_id(&self, name: &str, fresh: bool) -> Result<RoleRep, KeycloakError> {
        let key = format!("realm-role\0{name}");
        if !fresh {
            if let Some(CachedId::Role(r)) = self.cached(&key) {
                return Ok(r);
            }
        }
        let r = self.realm_role(name).await?;
        self.remember(key, CachedId::Role(r.clone()));
        Ok(r)
    }

    /// The uuid of client `client_id`, from the id cache unless `fresh`.
    async fn client_id_cached(
        &self,
        client_id: &str,
        fresh: bool,
    ) -> Result<String, KeycloakError> {
        let key = format!("client\0{client_id}");
        if !fresh {
            if let Some(CachedId::Client(c)) = self.cached(&key) {
                return Ok(c);
            }
        }
        let c = self.client_uuid(client_id).await?;
        self.remember(key, CachedId::Client(c.clone()));
        Ok(c)
    }

    /// A client role, from the id cache unless `fresh`.
    async fn client_role_id(
        &self,
        client_uuid: &str,
        name: &str,
        fresh: bool,
    ) -> Result<RoleRep, KeycloakError> {
        let key = format!("client-role\0{client_uuid}\0{name}");
        if !fresh {
            if let Some(CachedId::Role(r)) = self.cached(&key) {
                return Ok(r);
            }
        }
        let r = self.client_role(client_uuid, name).await?;
        self.remember(key, CachedId::Role(r.clone()));
        Ok(r)
    }

    /// A group's id by path, from the id cache unless `fresh`.
    async fn group_id(&self, path: &str, fresh: bool) -> Result<String, KeycloakError> {
        let key = format!("group\0{path}");
        if !fresh {
            if let Some(CachedId::Group(g)) = self.cached(&key) {
                return Ok(g);
            }
        }
        let g = self.group_by_path(path).await?.id;
        self.remember(key, CachedId::Group(g.clone()));
        Ok(g)
    }

    /// Whether the user holds `target`. `effective = false` looks at direct
    /// assignments only (what a revoke would remove); `true` also counts
    /// composites and roles inherited from groups (for "already held").
    pub async fn holds(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        effective: bool,
    ) -> Result<bool, KeycloakError> {
        match self.holds_once(user_id, target, effective, false).await {
            // A cached client id may be stale (client re-created).
            Err(KeycloakError::NotFound(_))
                if matches!(target, EntitlementKind::ClientRole { .. }) =>
            {
                self.holds_once(user_id, target, effective, true).await
            }
            other => other,
        }
    }

    async fn holds_once(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        effective: bool,
        fresh: bool,
    ) -> Result<bool, KeycloakError> {
        Ok(match target {
            EntitlementKind::RealmRole { role } => self
                .user_realm_roles(user_id, effective)
                .await?
                .iter()
                .any(|r| &r.name == role),
            EntitlementKind::ClientRole { client, role } => {
                let c = self.client_id_cached(client, fresh).await?;
                self.user_client_roles(user_id, &c, effective)
                    .await?
                    .iter()
                    .any(|r| &r.name == role)
            }
            EntitlementKind::Group { path } => {
                let groups = self.user_groups(user_id).await?;
                let want = path.trim_end_matches('/');
                groups.iter().any(|g| {
                    let p = g.path.as_deref().unwrap_or("");
                    // A subgroup member inherits the parent's roles but is not a
                    // member of the parent; count it only for the effective view.
                    p == want || (effective && p.starts_with(&format!("{want}/")))
                })
            }
        })
    }

    /// Grants `target` to the user: exactly one role or one group membership.
    /// Idempotent. A 404 is retried once with freshly looked-up ids (the
    /// role, client or group may have been re-created); a second 404 means
    /// the user or the target does not exist.
    pub async fn assign(
        &self,
        user_id: &str,
        target: &EntitlementKind,
    ) -> Result<(), KeycloakError> {
        match self.assign_once(user_id, target, false).await {
            Err(KeycloakError::NotFound(_)) => self.assign_once(user_id, target, true).await,
            other => other,
        }
    }

    async fn assign_once(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        fresh: bool,
    ) -> Result<(), KeycloakError> {
        match target {
            EntitlementKind::RealmRole { role } => {
                let r = self.realm_role_id(role, fresh).await?;
                self.add_realm_role(user_id, &r).await
            }
            EntitlementKind::ClientRole { client, role } => {
                let c = self.client_id_cached(client, fresh).await?;
                let r = self.client_role_id(&c, role, fresh).await?;
                self.add_client_role(user_id, &c, &r).await
            }
            EntitlementKind::Group { path } => {
                let g = self.group_id(path, fresh).await?;
                self.join_group(user_id, &g).await
            }
        }
    }

    /// Takes `target` away from the user: exactly that one role or group
    /// membership, nothing else. Idempotent. `NotFound` (after one retry
    /// with fresh ids) means the user or the target no longer exists.
    pub async fn unassign(
        &self,
        user_id: &str,
        target: &EntitlementKind,
    ) -> Result<(), KeycloakError> {
        match self.unassign_once(user_id, target, false).await {
            Err(KeycloakError::NotFound(_)) => self.unassign_once(user_id, target, true).await,
            other => other,
        }
    }

    async fn unassign_once(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        fresh: bool,
    ) -> Result<(), KeycloakError> {
        match target {
            EntitlementKind::RealmRole { role } => {
                let r = self.realm_role_id(role, fresh).await?;
                self.remove_realm_role(user_id, &r).await
            }
            EntitlementKind::ClientRole { client, role } => {
                let c = self.client_id_cached(client, fresh).await?;
                let r = self.client_role_id(&c, role, fresh).await?;
                self.remove_client_role(user_id, &c, &r).await
            }
            EntitlementKind::Group { path } => {
                let g = self.group_id(path, fresh).await?;
                match self.leave_group(user_id, &g).await {
                    // Not a member any more (on a fresh id): the goal is met.
                    Err(KeycloakError::NotFound(_)) if fresh => Ok(()),
                    other => other,
                }
            }
        }
    }

    /// Ids of the users holding `target` directly (the realm or client role
    /// assigned to them, or direct members of the group: Keycloak's
    /// `…/roles/{role}/users` and `/groups/{id}/members`, which list direct
    /// assignments only), or `None` if more than `max` do. One request.
    /// Errors: `NotFound` if the target is gone.
    pub async fn direct_holders(
        &self,
        target: &EntitlementKind,
        max: usize,
    ) -> Result<Option<std::collections::HashSet<String>>, KeycloakError> {
        #[derive(Deserialize)]
        struct U {
            id: String,
        }
        let page = format!("first=0&max={}&briefRepresentation=true", max + 1);
        let path = match target {
            EntitlementKind::RealmRole { role } => format!("/roles/{}/users?{page}", enc(role)),
            EntitlementKind::ClientRole { client, role } => {
                let c = self.client_id_cached(client, false).await?;
                format!("/clients/{}/roles/{}/users?{page}", enc(&c), enc(role))
            }
            EntitlementKind::Group { path } => {
                let g = self.group_id(path, false).await?;
                format!("/groups/{}/members?{page}", enc(&g))
            }
        };
        let users: Vec<U> = self.get_json(&path, "direct holders").await?;
        if users.len() > max {
            return Ok(None);
        }
        Ok(Some(users.into_iter().map(|u| u.id).collect()))
    }

    /// Ids of the realm's disabled users, or `None` if more than `max`
    /// are: one `GET /users?enabled=false&briefRepresentation=true`
    /// (Keycloak's user search by attribute, which lists service-account
    /// users too). Not listed: a user locked out for a while by brute-force
    /// detection (the account stays enabled), users of a federation
    /// provider (LDAP) as far as it does not answer that search, and users
    /// the service account may not view.
    pub async fn disabled_users(
        &self,
        max: usize,
    ) -> Result<Option<std::collections::HashSet<String>>, KeycloakError> {
        let path = format!(
            "/users?enabled=false&briefRepresentation=true&first=0&max={}",
            max + 1
        );
        let users: Vec<ListedUser> = self.get_json(&path, "disabled users").await?;
        if users.len() > max {
            return Ok(None);
        }
        // Only what Keycloak itself says is disabled: a search that
        // ignored the filter (an older server) must not stop anyone.
        Ok(Some(
            users
                .into_iter()
                .filter(|u| !u.enabled)
                .map(|u| u.id)
                .collect(),
        ))
    }

    /// Ids of enabled users who may approve through the realm roles
    /// `roles` or the groups `groups` (paths, as the policy's
    /// `approver_roles` / `approver_groups`), at most `max` (the search
    /// stops once it has them). Seen: direct holders of each role
    /// (`/roles/{role}/users`), members of the groups that carry the role
    /// and of their subgroups, which inherit it (`/roles/{role}/groups`,
    /// `/groups/{id}/children`, up to 5 levels and 100 groups), and direct
    /// members of each approver group. Not seen: a role held only through
    /// a composite role (Keycloak lists no reverse of composites), so the
    /// answer can be short of the truth, never beyond it. Each listing
    /// reads at most 200 users; a role or group that does not exist adds
    /// nobody.
    pub async fn approver_ids(
        &self,
        roles: &[String],
        groups: &[String],
        max: usize,
    ) -> Result<std::collections::HashSet<String>, KeycloakError> {
        const PAGE: &str = "first=0&max=200&briefRepresentation=true";
        let mut ids = std::collections::HashSet::new();
        let add = |ids: &mut std::collections::HashSet<String>, users: Vec<ListedUser>| {
            ids.extend(users.into_iter().filter(|u| u.enabled).map(|u| u.id));
        };
        let gone_is_empty = |r: Result<Vec<ListedUser>, KeycloakError>| match r {
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            other => other,
        };
        for role in roles {
            if ids.len() >= max {
                return Ok(ids);
            }
            let users = self
                .get_json(&format!("/roles/{}/users?{PAGE}", enc(role)), "approvers")
                .await;
            add(&mut ids, gone_is_empty(users)?);
            let carriers: Vec<GroupRep> = match self
                .get_json(
                    &format!(
                        "/roles/{}/groups?first=0&max=100&briefRepresentation=true",
                        enc(role)
                    ),
                    "approver groups",
                )
                .await
            {
                Err(e) if e.is_not_found() => Vec::new(),
                other => other?,
            };
            // Breadth first through the subgroups, bounded.
            let mut level: Vec<String> = carriers.into_iter().map(|g| g.id).collect();
            let mut seen = 0;
            for _ in 0..5 {
                let mut next = Vec::new();
                for g in level {
                    if ids.len() >= max || seen >= 100 {
                        return Ok(ids);
                    }
                    seen += 1;
                    let members = self
                        .get_json(
                            &format!("/groups/{}/members?{PAGE}", enc(&g)),
                            "approver group members",
                        )
                        .await;
                    add(&mut ids, gone_is_empty(members)?);
                    let children: Vec<GroupRep> = match self
                        .get_json(
                            &format!(
                                "/groups/{}/children?first=0&max=100&briefRepresentation=true",
                                enc(&g)
                            ),
                            "approver subgroups",
                        )
                        .await
                    {
                        Err(e) if e.is_not_found() => Vec::new(),
                        other => other?,
                    };
                    next.extend(children.into_iter().map(|c| c.id));
                }
                if next.is_empty() {
                    break;
                }
                level = next;
            }
        }
        for path in groups {
            if ids.len() >= max {
                return Ok(ids);
            }
            let g = match self.group_by_path(path).await {
                Err(e) if e.is_not_found() => continue,
                other => other?,
            };
            let members = self
                .get_json(
                    &format!("/groups/{}/members?{PAGE}", enc(&g.id)),
                    "approver group members",
                )
                .await;
            add(&mut ids, gone_is_empty(members)?);
        }
        Ok(ids)
    }

    /// Usernames that hold `target` outside JIT's knowledge, for policy
    /// checks: direct holders of a realm or client role plus members of
    /// groups that carry it (one level), or the members of a group.
    /// At most 1000 of each listing are read.
    pub async fn holders(&self, target: &EntitlementKind) -> Result<Vec<String>, KeycloakError> {
        #[derive(Deserialize)]
        struct U {
            username: String,
        }
        let mut names = std::collections::BTreeSet::new();
        let (users_path, groups_path) = match target {
            EntitlementKind::RealmRole { role } => (
                format!("/roles/{}/users?max=1000", enc(role)),
                Some(format!("/roles/{}/groups?max=1000", enc(role))),
            ),
            EntitlementKind::ClientRole { client, role } => {
                let c = self.client_uuid(client).await?;
                (
                    format!("/clients/{}/roles/{}/users?max=1000", enc(&c), enc(role)),
                    Some(format!(
                        "/clients/{}/roles/{}/groups?max=1000",
                        enc(&c),
                        enc(role)
                    )),
                )
            }
            EntitlementKind::Group { path } => {
                let g = self.group_by_path(path).await?;
                (format!("/groups/{}/members?max=1000", enc(&g.id)), None)
            }
        };
        let users: Vec<U> = self.get_json(&users_path, "holders").await?;
        names.extend(users.into_iter().map(|u| u.username));
        if let Some(gp) = groups_path {
            let groups: Vec<GroupRep> = self.get_json(&gp, "groups holding the role").await?;
            for g in groups {
                let members: Vec<U> = self
                    .get_json(
                        &format!("/groups/{}/members?max=1000", enc(&g.id)),
                        "group members",
                    )
                    .await?;
                names.extend(
                    members
                        .into_iter()
                        .map(|u| format!("{} (via group {})", u.username, g.name)),
                );
            }
        }
        Ok(names.into_iter().collect())
    }

    /// The user id of the service account itself: the `sub` of its own
    /// access token (no extra permission needed to learn it).
    pub async fn service_account_id(&self) -> Result<String, KeycloakError> {
        if let Some(id) = self.service_account.lock().await.clone() {
            return Ok(id);
        }
        let token = self.bearer().await?;
        let payload = token
            .split('.')
            .nth(1)
            .ok_or_else(|| KeycloakError::Login("service-account token is not a JWT".into()))?;
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|e| KeycloakError::Login(format!("service-account token: {e}")))?;
        #[derive(Deserialize)]
        struct Sub {
            sub: String,
        }
        let sub: Sub = serde_json::from_slice(&bytes)
            .map_err(|e| KeycloakError::Login(format!("service-account token: {e}")))?;
        *self.service_account.lock().await = Some(sub.sub.clone());
        Ok(sub.sub)
    }

    /// Whether Keycloak lets the service account map `role`: Keycloak
    /// itself answers through the service account's own "available role
    /// mappings" listing, which applies its mapping permission rules (an
    /// admin role of `realm-management` only for admins who hold it, and
    /// fine-grained permissions); roles it already holds directly are
    /// mappable by it too.
    async fn may_map(&self, client_uuid: Option<&str>, role: &str) -> Result<bool, KeycloakError> {
        let sa = self.service_account_id().await?;
        let base = match client_uuid {
            None => format!("/users/{}/role-mappings/realm", enc(&sa)),
            Some(c) => format!("/users/{}/role-mappings/clients/{}", enc(&sa), enc(c)),
        };
        let available: Vec<RoleRep> = self
            .get_json(
                &format!("{base}/available"),
                "roles the service account may map",
            )
            .await?;
        if available.iter().any(|r| r.name == role) {
            return Ok(true);
        }
        let held: Vec<RoleRep> = self
            .get_json(&base, "the service account's own role mappings")
            .await?;
        Ok(held.iter().any(|r| r.name == role))
    }

    /// Offline sessions of the user, by client: `(client id, session ids)`.
    pub async fn offline_sessions(
        &self,
        user_id: &str,
    ) -> Result<Vec<(String, Vec<String>)>, KeycloakError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Consent {
            client_id: String,
        }
        #[derive(Deserialize)]
        struct Session {
            id: String,
        }
        // Every client the user holds an offline token of is listed among
        // the user's consents (with the additional grant "Offline Token").
        let consents: Vec<Consent> = self
            .get_json(
                &format!("/users/{}/consents", enc(user_id)),
                &format!("consents of user {user_id}"),
            )
            .await?;
        let mut out = Vec::new();
        for c in consents {
            let uuid = match self.client_id_cached(&c.client_id, false).await {
                Ok(u) => u,
                Err(KeycloakError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let sessions: Vec<Session> = self
                .get_json(
                    &format!("/users/{}/offline-sessions/{}", enc(user_id), enc(&uuid)),
                    "offline sessions",
                )
                .await?;
            if !sessions.is_empty() {
                out.push((c.client_id, sessions.into_iter().map(|s| s.id).collect()));
            }
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl KeycloakAdmin for AdminClient {
    async fn holds(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        effective: bool,
    ) -> Result<bool, KeycloakError> {
        AdminClient::holds(self, user_id, target, effective).await
    }

    async fn assign(&self, user_id: &str, target: &EntitlementKind) -> Result<(), KeycloakError> {
        AdminClient::assign(self, user_id, target).await
    }

    async fn unassign(&self, user_id: &str, target: &EntitlementKind) -> Result<(), KeycloakError> {
        AdminClient::unassign(self, user_id, target).await
    }

    /// `POST /users/{id}/logout` ends the online sessions; offline sessions
    /// survive it, so each is ended with
    /// `DELETE /sessions/{id}?isOffline=true` (Keycloak 22+).
    async fn end_sessions(&self, user_id: &str) -> Result<SessionsEnded, KeycloakError> {
        self.logout_user(user_id).await?;
        let mut ended = SessionsEnded::default();
        for (_, ids) in self.offline_sessions(user_id).await? {
            for id in ids {
                let url = self.url(&format!("/sessions/{}?isOffline=true", enc(&id)));
                match self
                    .send(self.http.delete(url), "end offline session")
                    .await
                {
                    Ok(_) => ended.offline += 1,
                    // Ended meanwhile (expired, or another path): fine.
                    Err(KeycloakError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(ended)
    }

    async fn current_user(&self, user_id: &str) -> Result<CurrentUser, KeycloakError> {
        AdminClient::current_user(self, user_id).await
    }

    async fn current_user_parts(
        &self,
        user_id: &str,
        parts: UserParts,
    ) -> Result<CurrentUser, KeycloakError> {
        AdminClient::current_user_parts(self, user_id, parts).await
    }

    async fn carries(
        &self,
        holder: &EntitlementKind,
        target: &EntitlementKind,
    ) -> Result<bool, KeycloakError> {
        AdminClient::carries(self, holder, target).await
    }

    async fn set_user_attribute(
        &self,
        user_id: &str,
        name: &str,
        values: &[String],
    ) -> Result<bool, KeycloakError> {
        AdminClient::set_user_attribute(self, user_id, name, values).await
    }

    async fn target_status(&self, target: &EntitlementKind) -> Result<TargetStatus, KeycloakError> {
        let missing = |what: String| {
            Ok(TargetStatus::Missing(format!(
                "{what} does not exist in realm '{}'",
                self.realm
            )))
        };
        let not_permitted = |what: String| {
            Ok(TargetStatus::NotAssignable(format!(
                "Keycloak does not let jitd's service account ({}) assign {what}",
                self.client_id
            )))
        };
        match target {
            EntitlementKind::RealmRole { role } => {
                match self.realm_role(role).await {
                    Err(KeycloakError::NotFound(_)) => {
                        return missing(format!("realm role '{role}'"))
                    }
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
                if self.may_map(None, role).await? {
                    Ok(TargetStatus::Available)
                } else {
                    not_permitted(format!("realm role '{role}'"))
                }
            }
            EntitlementKind::ClientRole { client, role } => {
                let c = match self.client_uuid(client).await {
                    Err(KeycloakError::NotFound(_)) => {
                        return missing(format!("client '{client}'"))
                    }
                    other => other?,
                };
                match self.client_role(&c, role).await {
                    Err(KeycloakError::NotFound(_)) => {
                        return missing(format!("client role '{client}/{role}'"))
                    }
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
                if self.may_map(Some(&c), role).await? {
                    Ok(TargetStatus::Available)
                } else {
                    not_permitted(format!("client role '{client}/{role}'"))
                }
            }
            EntitlementKind::Group { path } => match self.group_by_path(path).await {
                Err(KeycloakError::NotFound(_)) => missing(format!("group '{path}'")),
                Err(e) => Err(e),
                Ok(_) => Ok(TargetStatus::Available),
            },
        }
    }

    async fn holders(&self, target: &EntitlementKind) -> Result<Vec<String>, KeycloakError> {
        AdminClient::holders(self, target).await
    }

    async fn direct_holders(
        &self,
        target: &EntitlementKind,
        max: usize,
    ) -> Result<Option<std::collections::HashSet<String>>, KeycloakError> {
        AdminClient::direct_holders(self, target, max).await
    }

    async fn disabled_users(
        &self,
        max: usize,
    ) -> Result<Option<std::collections::HashSet<String>>, KeycloakError> {
        AdminClient::disabled_users(self, max).await
    }

    async fn approver_ids(
        &self,
        roles: &[String],
        groups: &[String],
        max: usize,
    ) -> Result<Option<std::collections::HashSet<String>>, KeycloakError> {
        AdminClient::approver_ids(self, roles, groups, max)
            .await
            .map(Some)
    }

    async fn ready(&self) -> Result<(), KeycloakError> {
        self.send(self.http.get(self.url("/users/count")), "readiness probe")
            .await
            .map(|_| ())
    }
}

/// A user as Keycloak's listings give it (brief representation): the id
/// and the enabled flag (taken as enabled when absent).
#[derive(Deserialize)]
struct ListedUser {
    id: String,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// The string values of attribute `name` in a user representation.
fn attribute_values(user: &serde_json::Value, name: &str) -> Vec<String> {
    user.get("attributes")
        .and_then(|a| a.get(name))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What Keycloak says about a user *now*, for rights checks at the moment
/// they are used (a token's roles are as old as the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    pub username: String,
    pub enabled: bool,
    /// Effective realm roles: direct, through composite roles, and
    /// inherited from groups (`/role-mappings/realm/composite`); empty
    /// when not read ([`UserParts::realm_roles`]).
    pub realm_roles: std::collections::BTreeSet<String>,
    /// The groups the user is a direct member of, each as its full path
    /// without the leading `/` (`ops/dba`) and as its name (`dba`): the two
    /// forms a token's `groups` claim carries (mapper `full.path` on/off);
    /// empty when not read ([`UserParts::groups`]).
    pub groups: std::collections::BTreeSet<String>,
}

/// Which parts of a user [`AdminClient::current_user_parts`] reads besides
/// the account itself (`GET /users/{id}`: enabled, username). Each part is
/// one more Admin API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserParts {
    /// Effective realm roles (`/role-mappings/realm/composite`).
    pub realm_roles: bool,
    /// Direct group memberships (`/users/{id}/groups`).
    pub groups: bool,
}

impl UserParts {
    /// Everything: what rights at a vote or a request need.
    pub const ALL: UserParts = UserParts {
        realm_roles: true,
        groups: true,
    };
    /// The account alone (enabled, username): one call.
    pub const ACCOUNT: UserParts = UserParts {
        realm_roles: false,
        groups: false,
    };
}

impl AdminClient {
    /// The user's enabled flag, effective realm roles and groups, read from
    /// Keycloak now (three calls, run together).
    ///
    /// Errors: [`KeycloakError::NotFound`] when the user no longer exists;
    /// otherwise transport or status errors.
    pub async fn current_user(&self, user_id: &str) -> Result<CurrentUser, KeycloakError> {
        self.current_user_parts(user_id, UserParts::ALL).await
    }

    /// The account (enabled, username) and the `parts` asked for, read
    /// from Keycloak now (one to three calls, run together). A part not
    /// asked for is an empty set in the answer.
    ///
    /// Errors: as [`AdminClient::current_user`].
    pub async fn current_user_parts(
        &self,
        user_id: &str,
        parts: UserParts,
    ) -> Result<CurrentUser, KeycloakError> {
        let roles = async {
            if parts.realm_roles {
                self.user_realm_roles(user_id, true).await
            } else {
                Ok(Vec::new())
            }
        };
        let groups = async {
            if parts.groups {
                self.user_groups(user_id).await
            } else {
                Ok(Vec::new())
            }
        };
        let (user, roles, groups) = tokio::try_join!(self.user(user_id), roles, groups)?;
        let mut names = std::collections::BTreeSet::new();
        for g in groups {
            if let Some(p) = g.path.as_deref() {
                names.insert(p.trim_start_matches('/').to_string());
            }
            names.insert(g.name);
        }
        Ok(CurrentUser {
            username: user.username,
            enabled: user.enabled,
            realm_roles: roles.into_iter().map(|r| r.name).collect(),
            groups: names,
        })
    }
}

impl AdminClient {
    /// Whether holding `holder` gives the user `target` too — a group that
    /// carries the role (itself or through a parent group, directly or via
    /// composites), a composite role that contains it, or a subgroup of the
    /// target group. `holder == target` is true.
    ///
    /// Errors: transport or status errors; a holder that no longer exists
    /// carries nothing (`Ok(false)`).
    pub async fn carries(
        &self,
        holder: &EntitlementKind,
        target: &EntitlementKind,
    ) -> Result<bool, KeycloakError> {
        use EntitlementKind as K;
        if holder == target {
            return Ok(true);
        }
        let missing_is_false = |r: Result<bool, KeycloakError>| match r {
            Err(KeycloakError::NotFound(_)) => Ok(false),
            other => other,
        };
        match (holder, target) {
            (K::Group { path: held }, K::Group { path: want }) => {
                let (held, want) = (held.trim_end_matches('/'), want.trim_end_matches('/'));
                Ok(held == want || held.starts_with(&format!("{want}/")))
            }
            (K::Group { path }, role_target) => {
                // The group and each of its parents (members inherit them).
                let mut p = path.trim_end_matches('/').to_string();
                while !p.is_empty() {
                    if missing_is_false(self.group_carries(&p, role_target).await)? {
                        return Ok(true);
                    }
                    p.truncate(p.rfind('/').unwrap_or(0));
                }
                Ok(false)
            }
            (_, K::Group { .. }) => Ok(false),
            (role_holder, role_target) => {
                missing_is_false(self.composite_contains(role_holder, role_target).await)
            }
        }
    }

    async fn group_carries(
        &self,
        path: &str,
        target: &EntitlementKind,
    ) -> Result<bool, KeycloakError> {
        let g = self.group_by_path(path).await?;
        let path = match target {
            EntitlementKind::RealmRole { .. } => {
                format!("/groups/{}/role-mappings/realm/composite", enc(&g.id))
            }
            EntitlementKind::ClientRole { client, .. } => {
                let c = self.client_uuid(client).await?;
                format!(
                    "/groups/{}/role-mappings/clients/{}/composite",
                    enc(&g.id),
                    enc(&c)
                )
            }
            EntitlementKind::Group { .. } => return Ok(false),
        };
        let roles: Vec<RoleRep> = self.get_json(&path, "group role mappings").await?;
        Ok(roles.iter().any(|r| target_is(target, r)))
    }

    /// Walks the composite closure of a role (at most 200 roles).
    async fn composite_contains(
        &self,
        holder: &EntitlementKind,
        target: &EntitlementKind,
    ) -> Result<bool, KeycloakError> {
        let root = match holder {
            EntitlementKind::RealmRole { role } => self.realm_role(role).await?,
            EntitlementKind::ClientRole { client, role } => {
                let c = self.client_uuid(client).await?;
                self.client_role(&c, role).await?
            }
            EntitlementKind::Group { .. } => return Ok(false),
        };
        let target_client = match target {
            EntitlementKind::ClientRole { client, .. } => Some(self.client_uuid(client).await?),
            _ => None,
        };
        let matches = |r: &RoleRep| match target {
            EntitlementKind::RealmRole { role } => !r.client_role && &r.name == role,
            EntitlementKind::ClientRole { role, .. } => {
                r.client_role && &r.name == role && r.container_id == target_client
            }
            EntitlementKind::Group { .. } => false,
        };
        let mut seen = std::collections::HashSet::new();
        let mut todo = vec![root];
        while let Some(r) = todo.pop() {
            if !r.composite || !seen.insert(r.id.clone()) || seen.len() > 200 {
                continue;
            }
            let children: Vec<RoleRep> = self
                .get_json(
                    &format!("/roles-by-id/{}/composites", enc(&r.id)),
                    "composite roles",
                )
                .await?;
            if children.iter().any(matches) {
                return Ok(true);
            }
            todo.extend(children);
        }
        Ok(false)
    }
}

/// Whether a role listed for a group is `target` (by name; client roles
/// were listed for the target's client already).
fn target_is(target: &EntitlementKind, r: &RoleRep) -> bool {
    match target {
        EntitlementKind::RealmRole { role } | EntitlementKind::ClientRole { role, .. } => {
            &r.name == role
        }
        EntitlementKind::Group { .. } => false,
    }
}

/// Percent-encodes one path segment or query value.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn empty_role_lists_are_never_sent() {
        let c = AdminClient::new("http://127.0.0.1:1", "jit", "x", "y", crate::http_client());
        let e = c
            .role_mapping(
                reqwest::Method::DELETE,
                "/users/u/role-mappings/realm".into(),
                &[],
                "remove",
            )
            .await
            .unwrap_err();
        assert!(matches!(e, KeycloakError::EmptyRoleList));
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }
}
