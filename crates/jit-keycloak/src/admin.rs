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
/// scheduler whether to retry (outage, 5xx, 429) or give up (4xx).
#[derive(Debug, thiserror::Error)]
pub enum KeycloakError {
    #[error("Keycloak unreachable: {0}")]
    Unavailable(String),
    #[error("Keycloak answered {status} to {what}: {body}")]
    Status {
        status: u16,
        what: String,
        body: String,
    },
    #[error("not found in Keycloak: {0}")]
    NotFound(String),
    #[error("refusing to send an empty role list (Keycloak would remove every role)")]
    EmptyRoleList,
    /// Keycloak accepted a write but did not keep it (e.g. a user attribute
    /// its user profile drops).
    #[error("Keycloak did not keep {0}")]
    NotKept(String),
}

impl KeycloakError {
    /// Kind of failure for metrics (see [`crate::KeycloakCall::error_kind`]).
    pub fn kind(&self) -> &'static str {
        match self {
            KeycloakError::Unavailable(_) => "unreachable",
            KeycloakError::Status { status, .. } => crate::observe::status_kind(*status),
            KeycloakError::NotFound(_) => "not_found",
            KeycloakError::EmptyRoleList => "refused",
            KeycloakError::NotKept(_) => "not_kept",
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            KeycloakError::Unavailable(_) => true,
            KeycloakError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 401
            }
            _ => false,
        }
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

/// Admin REST client for one realm, authenticated as a confidential client's
/// service account. The token is cached until 30 s before it expires.
pub struct AdminClient {
    base: String,
    realm: String,
    client_id: String,
    client_secret: String,
    http: reqwest::Client,
    token: Mutex<Option<CachedToken>>,
    observer: crate::observe::Observer,
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

    fn url(&self, path: &str) -> String {
        format!("{}/admin/realms/{}{}", self.base, self.realm, path)
    }

    async fn bearer(&self) -> Result<String, KeycloakError> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref() {
            if Instant::now() < t.valid_until {
                return Ok(t.token.clone());
            }
        }
        let url = format!(
            "{}/realms/{}/protocol/openid-connect/token",
            self.base, self.realm
        );
        let started = Instant::now();
        let result = self.token_request(&url).await;
        self.observed("token".into(), started, result.as_ref().err());
        let r = result?;
        let valid = Duration::from_secs(r.expires_in.saturating_sub(30).max(5));
        *guard = Some(CachedToken {
            token: r.access_token.clone(),
            valid_until: Instant::now() + valid,
        });
        Ok(r.access_token)
    }

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
            return Err(KeycloakError::Status {
                status: status.as_u16(),
                what: "the service-account token request".into(),
                body: body.chars().take(300).collect(),
            });
        }
        resp.json().await.map_err(unavailable)
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, KeycloakError> {
        let token = self.bearer().await?;
        let req = req.bearer_auth(token).build().map_err(unavailable)?;
        let operation = format!(
            "{} {}",
            req.method().as_str().to_ascii_lowercase(),
            crate::observe::admin_resource(req.url().path())
        );
        let started = Instant::now();
        let result = self.send_built(req, what).await;
        self.observed(operation, started, result.as_ref().err());
        result
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
            // Token revoked or realm keys rotated: drop it so the next call fetches a new one.
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

    /// Looks a user up by exact username.
    pub async fn user_by_username(&self, username: &str) -> Result<Option<UserRep>, KeycloakError> {
        let users: Vec<UserRep> = self
            .get_json(
                &format!(
                    "/users?exact=true&briefRepresentation=true&username={}",
                    enc(username)
                ),
                &format!("user {username}"),
            )
            .await?;
        Ok(users.into_iter().find(|u| u.username == username))
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
    /// turns into [`KeycloakError::NotKept`]. Errors: also
    /// [`KeycloakError::NotFound`] for a missing user.
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
        self.send(
            self.http.put(self.url(&path)).json(&user),
            &format!("update attribute {name} of user {user_id}"),
        )
        .await?;
        if !values.is_empty() {
            let stored: serde_json::Value = self.get_json(&path, &what).await?;
            if attribute_values(&stored, name) != values {
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

    /// Whether the user holds `target`. `effective = false` looks at direct
    /// assignments only (what a revoke would remove); `true` also counts
    /// composites and roles inherited from groups (for "already held").
    pub async fn holds(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        effective: bool,
    ) -> Result<bool, KeycloakError> {
        Ok(match target {
            EntitlementKind::RealmRole { role } => self
                .user_realm_roles(user_id, effective)
                .await?
                .iter()
                .any(|r| &r.name == role),
            EntitlementKind::ClientRole { client, role } => {
                let c = self.client_uuid(client).await?;
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
    /// Idempotent.
    pub async fn assign(
        &self,
        user_id: &str,
        target: &EntitlementKind,
    ) -> Result<(), KeycloakError> {
        match target {
            EntitlementKind::RealmRole { role } => {
                let r = self.realm_role(role).await?;
                self.add_realm_role(user_id, &r).await
            }
            EntitlementKind::ClientRole { client, role } => {
                let c = self.client_uuid(client).await?;
                let r = self.client_role(&c, role).await?;
                self.add_client_role(user_id, &c, &r).await
            }
            EntitlementKind::Group { path } => {
                let g = self.group_by_path(path).await?;
                self.join_group(user_id, &g.id).await
            }
        }
    }

    /// Takes `target` away from the user: exactly that one role or group
    /// membership, nothing else. Idempotent.
    pub async fn unassign(
        &self,
        user_id: &str,
        target: &EntitlementKind,
    ) -> Result<(), KeycloakError> {
        match target {
            EntitlementKind::RealmRole { role } => {
                let r = self.realm_role(role).await?;
                self.remove_realm_role(user_id, &r).await
            }
            EntitlementKind::ClientRole { client, role } => {
                let c = self.client_uuid(client).await?;
                let r = self.client_role(&c, role).await?;
                self.remove_client_role(user_id, &c, &r).await
            }
            EntitlementKind::Group { path } => {
                let g = self.group_by_path(path).await?;
                match self.leave_group(user_id, &g.id).await {
                    // Not a member any more: the goal is met.
                    Err(KeycloakError::NotFound(_)) => Ok(()),
                    other => other,
                }
            }
        }
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

    /// Checks that `target` exists in Keycloak (for policy checks).
    pub async fn target_exists(&self, target: &EntitlementKind) -> Result<(), KeycloakError> {
        match target {
            EntitlementKind::RealmRole { role } => self.realm_role(role).await.map(|_| ()),
            EntitlementKind::ClientRole { client, role } => {
                let c = self.client_uuid(client).await?;
                self.client_role(&c, role).await.map(|_| ())
            }
            EntitlementKind::Group { path } => self.group_by_path(path).await.map(|_| ()),
        }
    }
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
    /// inherited from groups (`/role-mappings/realm/composite`).
    pub realm_roles: std::collections::BTreeSet<String>,
    /// The groups the user is a direct member of, each as its full path
    /// without the leading `/` (`ops/dba`) and as its name (`dba`): the two
    /// forms a token's `groups` claim carries (mapper `full.path` on/off).
    pub groups: std::collections::BTreeSet<String>,
}

impl AdminClient {
    /// The user's enabled flag, effective realm roles and groups, read from
    /// Keycloak now (three calls, run together).
    ///
    /// Errors: [`KeycloakError::NotFound`] when the user no longer exists;
    /// otherwise transport or status errors.
    pub async fn current_user(&self, user_id: &str) -> Result<CurrentUser, KeycloakError> {
        let (user, roles, groups) = tokio::try_join!(
            self.user(user_id),
            self.user_realm_roles(user_id, true),
            self.user_groups(user_id),
        )?;
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
