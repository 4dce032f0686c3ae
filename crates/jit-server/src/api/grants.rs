//! `/v1/grants/{id}/drop|revoke`: ending an active grant early.

use super::*;

/// The requester ends their own grant early.
#[utoipa::path(post, path = "/v1/grants/{id}/drop", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), 
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, `text_too_long`, ...)", body = Problem, content_type = "application/problem+json"),))]
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
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, `text_too_long`, ...)", body = Problem, content_type = "application/problem+json"),))]
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
