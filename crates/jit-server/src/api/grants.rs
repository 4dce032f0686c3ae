//! `/v1/grants/{id}/drop|revoke`: ending an active grant early;
//! `/v1/grants/{id}/retry-removal`: trying a given-up removal again.

use super::*;

/// The requester ends their own grant early.
#[utoipa::path(post, path = "/v1/grants/{id}/drop", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), 
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`, `grant_ended`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, `text_too_long`, ...)", body = Problem, content_type = "application/problem+json"),))]
pub(super) async fn drop_grant(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let p = caller.principal;
    let viewer = p.clone(); // the view is made for the caller
    load_visible(&state, &id, &p).await?;
    let (s, recs) = state
        .store
        .update(&id, move |s| {
            let t = s.request.drop_grant(&p, Utc::now())?;
            Ok(end_grant(s, t))
        })
        .await?;
    state.published(&recs);
    Ok(Json(view(&state, &s, Some(&viewer))))
}

/// An approver ends a grant early (comment required).
#[utoipa::path(post, path = "/v1/grants/{id}/revoke", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), request_body = DecisionBody,
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`, `grant_ended`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, `text_too_long`, ...)", body = Problem, content_type = "application/problem+json"),))]
pub(super) async fn revoke(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    let p = crate::rights::current(&state, &caller.principal).await?;
    let viewer = p.clone(); // the view is made for the caller
    let current = load_visible(&state, &id, &p).await?;
    let policy = state.policy();
    let e = policy
        .entitlement(current.request.entitlement_id())
        .ok_or_else(|| DomainError::NotAnApprover(current.request.entitlement_id().to_string()))?
        .clone();
    let (s, recs) = state
        .store
        .update(&id, move |s| {
            let t = s.request.revoke(&e, &p, b.comment.clone(), Utc::now())?;
            Ok(end_grant(s, t))
        })
        .await?;
    state.published(&recs);
    Ok(Json(view(&state, &s, Some(&viewer))))
}

/// Tries again a removal jitd gave up (`removal_failed`: Keycloak refused
/// it, or kept failing past `removal_retry_limit_secs`), typically after an
/// administrator fixed the cause (gave jitd's service account its rights
/// back) or removed the assignment by hand. jitd then removes it or finds
/// it gone, and the grant's removal ends the usual way (`grant.removed`;
/// `removal_failed` again if Keycloak still refuses). Audited as
/// `grant.removal_retried` with the caller and the optional comment.
///
/// Who: an approver of the grant's entitlement (per the current policy and
/// the caller's current Keycloak roles), or the grant's requester (taking
/// one's own access away is always allowed). Nothing is ever marked
/// removed without Keycloak confirming it.
#[utoipa::path(post, path = "/v1/grants/{id}/retry-removal", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), request_body = DecisionBody,
    responses((status = 200, description = "The request after the action: the removal pending again", body = RequestView), (status = 403, description = "The caller is neither an approver of the entitlement nor the requester (`not_an_approver`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "No failed removal to retry (`removal_not_failed`); the detail says what the request is instead: never granted (with its status), still active, its removal under way, or its role already removed", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid comment (`invalid_text`, `text_too_long`)", body = Problem, content_type = "application/problem+json"),))]
pub(super) async fn retry_removal(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    let p = crate::rights::current(&state, &caller.principal).await?;
    let viewer = p.clone(); // the view is made for the caller
    let current = load_visible(&state, &id, &p).await?;
    let policy = state.policy();
    let approver = policy
        .entitlement(current.request.entitlement_id())
        .is_some_and(|e| e.is_approver(&p));
    if !approver && current.request.requester_id() != p.id {
        return Err(
            DomainError::NotAnApprover(current.request.entitlement_id().to_string()).into(),
        );
    }
    let comment = jit_core::model::clean_comment(b.comment)?;
    let actor = p.username.clone();
    let (s, recs) = state
        .store
        .update(&id, move |s| {
            crate::scheduler::retry_removal_in(s, &actor, comment.clone(), Utc::now())
        })
        .await?;
    tracing::info!(request = %id, actor = %viewer.username, "removal retried");
    state.published(&recs);
    Ok(Json(view(&state, &s, Some(&viewer))))
}
