//! Requests and grants: list, create, approve, deny, cancel, drop, revoke,
//! extend, review.

use jit_client::ListQuery;
use jit_core::api::{CreateRequestBody, EntitlementView, RequestView};
use serde::Deserialize;

use super::{AppState, CmdResult, CommandError};

/// `query` of `list_requests`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestQuery {
    pub mine: Option<bool>,
    pub to_review: Option<bool>,
    pub status: Option<String>,
}

impl From<RequestQuery> for ListQuery {
    fn from(q: RequestQuery) -> ListQuery {
        ListQuery {
            status: q.status.filter(|s| !s.is_empty()),
            mine: q.mine.unwrap_or(false),
            to_review: q.to_review.unwrap_or(false),
            review_open: false,
        }
    }
}

/// `list_entitlements`: what the user may request.
#[tauri::command]
pub async fn list_entitlements(state: AppState<'_>) -> CmdResult<Vec<EntitlementView>> {
    state
        .client()
        .await?
        .entitlements()
        .await
        .map_err(CommandError::from)
}

/// `list_requests`: requests the user may see, filtered by `query`.
#[tauri::command]
pub async fn list_requests(
    state: AppState<'_>,
    query: Option<RequestQuery>,
) -> CmdResult<Vec<RequestView>> {
    let q: ListQuery = query.unwrap_or_default().into();
    state
        .client()
        .await?
        .list(&q)
        .await
        .map_err(CommandError::from)
}

/// `create_request`: asks for an entitlement.
#[tauri::command]
pub async fn create_request(
    state: AppState<'_>,
    body: CreateRequestBody,
) -> CmdResult<RequestView> {
    state
        .client()
        .await?
        .create(&body)
        .await
        .map_err(CommandError::from)
}

/// `approve_request`: an approve vote, optionally shortening the grant.
#[tauri::command]
pub async fn approve_request(
    state: AppState<'_>,
    id: String,
    comment: Option<String>,
    duration: Option<String>,
) -> CmdResult<RequestView> {
    let comment = comment.filter(|c| !c.trim().is_empty());
    let duration = duration.filter(|d| !d.trim().is_empty());
    state
        .client()
        .await?
        .approve(&id, comment, duration)
        .await
        .map_err(CommandError::from)
}

/// `deny_request`: a deny vote (a comment is required).
#[tauri::command]
pub async fn deny_request(
    state: AppState<'_>,
    id: String,
    comment: String,
) -> CmdResult<RequestView> {
    if comment.trim().is_empty() {
        return Err(CommandError::invalid("A deny needs a comment."));
    }
    state
        .client()
        .await?
        .deny(&id, &comment)
        .await
        .map_err(CommandError::from)
}

/// `cancel_request`: the requester withdraws a request not yet active.
#[tauri::command]
pub async fn cancel_request(state: AppState<'_>, id: String) -> CmdResult<RequestView> {
    state
        .client()
        .await?
        .cancel(&id)
        .await
        .map_err(CommandError::from)
}

/// `drop_grant`: the requester gives up an active grant now.
#[tauri::command]
pub async fn drop_grant(state: AppState<'_>, id: String) -> CmdResult<RequestView> {
    state
        .client()
        .await?
        .drop_grant(&id)
        .await
        .map_err(CommandError::from)
}

/// `revoke_grant`: an approver ends someone's grant (a comment is required).
#[tauri::command]
pub async fn revoke_grant(
    state: AppState<'_>,
    id: String,
    comment: String,
) -> CmdResult<RequestView> {
    state
        .client()
        .await?
        .revoke(&id, &comment)
        .await
        .map_err(CommandError::from)
}

/// `extend_grant`: asks for more time (`duration` in the duration grammar) on an active grant.
#[tauri::command]
pub async fn extend_grant(
    state: AppState<'_>,
    id: String,
    duration: String,
    justification: String,
) -> CmdResult<RequestView> {
    state
        .client()
        .await?
        .extend(&id, &duration, &justification)
        .await
        .map_err(CommandError::from)
}

/// `review_request`: closes the after-the-fact review of a break-glass activation.
#[tauri::command]
pub async fn review_request(
    state: AppState<'_>,
    id: String,
    comment: String,
) -> CmdResult<RequestView> {
    state
        .client()
        .await?
        .review(&id, &comment)
        .await
        .map_err(CommandError::from)
}
