//! What a caller sees of a stored request: its API view ([`view`], with
//! the server's `now`) and the visibility check of single reads
//! ([`load_visible`]: a request the caller may not see is the same 404 as
//! one that does not exist). Used by `api` and `events`, so neither
//! depends on the other for it.

use chrono::Utc;
use jit_core::api::RequestView;
use jit_core::{DomainError, Principal};

use crate::error::ApiError;
use crate::store::Stored;
use crate::AppState;

/// Builds the API view of a stored request at the server's `now`, for
/// `caller` (`awaits_your_review`), or for no one in particular (`None`:
/// the event stream, whose rows are rendered once for every subscriber).
pub fn view(state: &AppState, s: &Stored, caller: Option<&Principal>) -> RequestView {
    let now = Utc::now();
    let policy = state.policy();
    let r = &s.request;
    let e = policy.entitlement(r.entitlement_id());
    RequestView {
        entitlement_name: e
            .map(|e| e.display_name.clone())
            .unwrap_or_else(|| r.entitlement_id().to_string()),
        ends_sessions: e.is_some_and(|e| e.end_sessions_on_revoke),
        remaining_secs: r.remaining_secs(now),
        total_secs: r.total_secs(),
        approvals: r.approvals(),
        keycloak: waiting_on_keycloak(state, s, now),
        revoke_late: jit_core::lateness::revoke_late(r, &s.grant, now),
        awaits_your_review: caller.map(|p| r.awaits_review_by(p, &policy)),
        warnings: Vec::new(),
        request: r.clone(),
    }
}

/// The grant's Keycloak state as stored; while Keycloak is out of reach
/// for jitd (the scheduler only probes it then), work that waits for it
/// and has no error of its own yet says why it waits: a removal pending or
/// a grant due is otherwise shown late with no reason.
fn waiting_on_keycloak(
    state: &AppState,
    s: &Stored,
    now: chrono::DateTime<Utc>,
) -> jit_core::api::GrantState {
    let mut g = s.grant.clone();
    let waiting = g.removal_pending || s.request.is_due_for_activation(now);
    if g.last_error.is_none() && waiting {
        g.last_error = match state.scheduler.keycloak_state() {
            "unreachable" => Some(
                "waiting: Keycloak is unreachable (jitd goes on as soon as it answers)".into(),
            ),
            "login_refused" => Some(
                "waiting: Keycloak refuses jitd's service account (its client id or secret must be fixed)"
                    .into(),
            ),
            _ => None,
        };
    }
    g
}

pub(crate) fn not_visible() -> ApiError {
    ApiError::Domain(DomainError::NotFound)
}

/// Loads a request the caller may see; otherwise 404, the same answer as for
/// a request that does not exist (nobody learns of others' requests).
pub async fn load_visible(state: &AppState, id: &str, p: &Principal) -> Result<Stored, ApiError> {
    let s = state.store.get(id).await?.ok_or_else(not_visible)?;
    if !s.request.visible_to(p, &state.policy()) {
        return Err(not_visible());
    }
    Ok(s)
}
