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
        None => {
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
            u
        }
    };
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
