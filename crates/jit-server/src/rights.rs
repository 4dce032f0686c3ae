//! Rights as Keycloak says they are now, not as the caller's token said
//! when it was issued (a token lives ~5 min; a removed approver role or a
//! disabled account must count at once).
//!
//! Every vote (approve, deny), review and revoke, and every request or
//! extension, reads the caller's enabled flag, effective realm roles
//! (direct, composite, through groups) and groups from the Admin API
//! ([`jit_keycloak::AdminClient::current_user`]) and decides with that
//! principal. The answer is cached per user for [`RIGHTS_CACHE_TTL`], so a
//! burst of decisions by one approver costs one lookup; a change in
//! Keycloak counts at most that long later.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jit_core::EntitlementKind;
use jit_core::Principal;
use jit_keycloak::{CurrentUser, KeycloakError};

use crate::error::ApiError;
use crate::AppState;

/// How long one Admin API answer about a user is reused: 2 seconds.
pub const RIGHTS_CACHE_TTL: Duration = Duration::from_secs(2);

/// Recent Admin API answers per user id.
#[derive(Default)]
pub struct RightsCache {
    by_user: Mutex<HashMap<String, (Instant, CurrentUser)>>,
}

impl RightsCache {
    fn get(&self, user_id: &str) -> Option<CurrentUser> {
        let mut m = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, (at, _)| at.elapsed() < RIGHTS_CACHE_TTL);
        m.get(user_id).map(|(_, u)| u.clone())
    }

    fn put(&self, user_id: &str, u: CurrentUser) {
        self.by_user
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user_id.to_string(), (Instant::now(), u));
    }
}

/// The caller as Keycloak knows them now: the token's subject with the
/// current username, realm roles and groups.
///
/// Errors: [`ApiError::AccountDisabled`] when the account is disabled or no
/// longer exists in Keycloak; [`ApiError::Keycloak`] (503) when Keycloak
/// cannot be asked — rights are never assumed.
pub async fn current(state: &AppState, token: &Principal) -> Result<Principal, ApiError> {
    let user = match state.rights.get(&token.id) {
        Some(u) => u,
        None => fetch(state, token).await?,
    };
    principal(token, user)
}

/// Reads the caller from Keycloak now and caches the answer.
async fn fetch(state: &AppState, token: &Principal) -> Result<CurrentUser, ApiError> {
    let u = match state.admin.current_user(&token.id).await {
        Ok(u) => u,
        Err(KeycloakError::NotFound(_)) => {
            return Err(ApiError::AccountDisabled(
                "your account no longer exists in Keycloak".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    state.rights.put(&token.id, u.clone());
    Ok(u)
}

/// [`current`], and whether the caller holds `target` in Keycloak now,
/// effective (directly, through composites or groups), as
/// [`jit_keycloak::KeycloakAdmin::holds`] says it — never from the cache.
/// When the caller's rights are not cached and `target` is a realm role,
/// the one read of their effective realm roles answers both (three Admin
/// API calls, not four); otherwise the two are asked together.
///
/// Errors: the outer one as [`current`] (the rights decide first); the
/// inner one is the holding look-up's own (`Keycloak`, 503).
pub async fn current_holding(
    state: &AppState,
    token: &Principal,
    target: &EntitlementKind,
) -> Result<(Principal, Result<bool, ApiError>), ApiError> {
    let holds = || async {
        crate::scheduler::call(state, state.admin.holds(&token.id, target, true))
            .await
            .map_err(ApiError::from)
    };
    if let Some(u) = state.rights.get(&token.id) {
        let p = principal(token, u)?;
        return Ok((p, holds().await));
    }
    match target {
        EntitlementKind::RealmRole { role } => {
            let u = fetch(state, token).await?;
            let held = u.realm_roles.contains(role);
            Ok((principal(token, u)?, Ok(held)))
        }
        _ => {
            let (p, held) = tokio::join!(current(state, token), holds());
            Ok((p?, held))
        }
    }
}

fn principal(token: &Principal, user: CurrentUser) -> Result<Principal, ApiError> {
    if !user.enabled {
        return Err(ApiError::AccountDisabled(
            "your Keycloak account is disabled".into(),
        ));
    }
    Ok(Principal {
        id: token.id.clone(),
        username: user.username,
        roles: user.realm_roles,
        groups: user.groups,
        // What kind of caller this is comes from the token (a service
        // account's client-credentials token), not from the user record.
        client_id: token.client_id.clone(),
    })
}
