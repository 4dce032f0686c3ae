//! The caller (`/v1/me`) and what they may request (`/v1/entitlements`).

use super::*;

/// Who the token says the caller is, and what they may do.
#[utoipa::path(get, path = "/v1/me", tag = "requests", security(("bearer" = [])), responses(
    (status = 200, description = "The caller", body = MeView),
))]
pub(super) async fn me(State(state): St, caller: Caller) -> Json<MeView> {
    let policy = state.policy();
    let p = caller.principal;
    Json(MeView {
        auditor: policy.is_auditor(&p),
        approves: policy
            .entitlements
            .values()
            .filter(|e| e.is_approver(&p))
            .map(|e| e.id.clone())
            .collect(),
        id: p.id,
        username: p.username,
        roles: p.roles.into_iter().collect(),
        groups: p.groups.into_iter().collect(),
        token_exp: caller.exp,
    })
}

/// The entitlements the caller may request.
#[utoipa::path(get, path = "/v1/entitlements", tag = "requests", security(("bearer" = [])), responses(
    (status = 200, description = "Requestable entitlements", body = Vec<EntitlementView>),
))]
pub(super) async fn entitlements(State(state): St, caller: Caller) -> Json<Vec<EntitlementView>> {
    let p = caller.principal;
    let policy = state.policy();
    let reason = |e: &jit_core::Entitlement| {
        state
            .target_status(&e.id, &e.kind)
            .and_then(|s| s.unavailable_reason().map(str::to_string))
    };
    Json(
        policy
            .entitlements
            .values()
            .filter(|e| e.may_request(&p))
            .map(|e| EntitlementView {
                id: e.id.clone(),
                display_name: e.display_name.clone(),
                description: e.description.clone(),
                target: e.kind.to_string(),
                max_duration_secs: e.max_duration,
                default_duration_secs: e.default_duration,
                max_total_duration_secs: e.max_total_duration,
                approvals_required: e.approvals_required,
                ticket_pattern: e.ticket_pattern_str().map(str::to_string),
                justification_min: e.justification_min,
                justification_max: e.justification_max,
                break_glass: e.break_glass,
                you_approve: e.is_approver(&p),
                available: reason(e).is_none(),
                unavailable_reason: reason(e),
            })
            .collect(),
    )
}
