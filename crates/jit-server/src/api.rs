//! HTTP handlers: extract, call the domain through the store, map the
//! result. Status codes are decided in one place, [`crate::error`].

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{header, request::Parts, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use chrono::Utc;
use jit_core::api::{
    CreateRequestBody, DecisionBody, EntitlementView, ExtendBody, RequestView, SERVER_TIME_HEADER,
};
use jit_core::{
    parse_duration, AccessRequest, Decision, DomainError, NewRequest, Principal, RequestKind,
    Status,
};
use jit_keycloak::AuthError;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::ApiError;
use crate::scheduler::end_grant;
use crate::store::{Entry, Stored};
use crate::AppState;

type St = State<Arc<AppState>>;

/// The authenticated caller, from a validated bearer access token.
pub struct Caller {
    pub principal: Principal,
    /// Token expiry, seconds since the epoch (long-lived streams end then).
    pub exp: i64,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::Missing)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Missing)?;
        let v = state.validator.validate(token.trim()).await?;
        Ok(Caller {
            principal: v.principal,
            exp: v.exp,
        })
    }
}

/// `Json<T>` whose rejection is problem+json.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Body(v))
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            })
    }
}

/// `Query<T>` whose rejection is problem+json.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// All routes of jitd.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/config", get(public_config))
        .route("/v1/me", get(me))
        .route("/v1/entitlements", get(entitlements))
        .route("/v1/requests", get(list).post(create))
        .route("/v1/requests/{id}", get(show))
        .route("/v1/requests/{id}/approve", post(approve))
        .route("/v1/requests/{id}/deny", post(deny))
        .route("/v1/requests/{id}/cancel", post(cancel))
        .route("/v1/requests/{id}/extend", post(extend))
        .route("/v1/requests/{id}/review", post(review))
        .route("/v1/grants/{id}/drop", post(drop_grant))
        .route("/v1/grants/{id}/revoke", post(revoke))
        .route("/v1/events", get(crate::events::stream))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/verify", get(audit_verify))
        .fallback(|| async { ApiError::NoRoute })
        .layer(middleware::map_response(server_time))
        .with_state(state)
}

async fn server_time(mut resp: Response) -> Response {
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if let Ok(v) = HeaderValue::from_str(&now) {
        resp.headers_mut().insert(SERVER_TIME_HEADER, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Builds the API view of a stored request at the server's `now`.
pub fn view(state: &AppState, s: &Stored) -> RequestView {
    let now = Utc::now();
    let policy = state.policy();
    let r = &s.request;
    let ended_in_keycloak_pending = s.grant.removal_pending;
    let overdue = r.status == Status::Active
        && r.expires_at
            .is_some_and(|x| x + chrono::Duration::seconds(5) < now);
    RequestView {
        entitlement_name: policy
            .entitlement(&r.entitlement_id)
            .map(|e| e.display_name.clone())
            .unwrap_or_else(|| r.entitlement_id.clone()),
        remaining_secs: r.remaining_secs(now),
        total_secs: r.total_secs(),
        keycloak: s.grant.clone(),
        revoke_late: ended_in_keycloak_pending
            && r.ended_at
                .is_some_and(|t| t + chrono::Duration::seconds(5) < now)
            || overdue,
        request: r.clone(),
    }
}

fn not_visible() -> ApiError {
    ApiError::Domain(DomainError::NotFound)
}

/// Loads a request the caller may see; otherwise 404, the same answer as for
/// a request that does not exist (nobody learns of others' requests).
fn load_visible(state: &AppState, id: &str, p: &Principal) -> Result<Stored, ApiError> {
    let s = state.store.get(id)?.ok_or_else(not_visible)?;
    if !s.request.visible_to(p, &state.policy()) {
        return Err(not_visible());
    }
    Ok(s)
}

async fn healthz(State(state): St) -> Response {
    let db_ok = state.store.last_seq().is_ok();
    let body = serde_json::json!({
        "status": if db_ok { "ok" } else { "degraded" },
        "database": db_ok,
        "entitlements": state.policy().entitlements.len(),
        "time": Utc::now(),
    });
    let code = if db_ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(state): St) -> Result<Response, ApiError> {
    let (by_status, late) = state.store.stats(Utc::now())?;
    let mut out =
        String::from("# HELP jit_requests Requests by status.\n# TYPE jit_requests gauge\n");
    for s in Status::ALL {
        let n = by_status
            .iter()
            .find(|(k, _)| k == s.as_str())
            .map(|(_, n)| *n)
            .unwrap_or(0);
        out.push_str(&format!("jit_requests{{status=\"{}\"}} {n}\n", s.as_str()));
    }
    out.push_str("# HELP jit_revocations_late Grants past their end whose role is not yet confirmed removed from Keycloak.\n# TYPE jit_revocations_late gauge\n");
    out.push_str(&format!("jit_revocations_late {late}\n"));
    out.push_str("# HELP jit_audit_last_seq Highest audit sequence number.\n# TYPE jit_audit_last_seq counter\n");
    out.push_str(&format!("jit_audit_last_seq {}\n", state.store.last_seq()?));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

async fn public_config(State(state): St) -> Json<jit_core::api::ServerConfigView> {
    Json(state.public.clone())
}

async fn me(State(state): St, caller: Caller) -> Json<jit_core::api::MeView> {
    let policy = state.policy();
    let p = caller.principal;
    Json(jit_core::api::MeView {
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

async fn entitlements(State(state): St, caller: Caller) -> Json<Vec<EntitlementView>> {
    let p = caller.principal;
    let policy = state.policy();
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
                approvals_required: e.approvals_required,
                ticket_pattern: e.ticket_pattern_str().map(str::to_string),
                justification_min: e.justification_min,
                justification_max: e.justification_max,
                break_glass: e.break_glass,
                you_approve: e.is_approver(&p),
            })
            .collect(),
    )
}

fn duration_of(human: Option<&str>, secs: Option<i64>) -> Result<Option<i64>, ApiError> {
    match (human, secs) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give either duration or duration_secs, not both".into(),
        )),
        (Some(h), None) => Ok(Some(parse_duration(h)?)),
        (None, s) => Ok(s),
    }
}

/// Refuses a request for something the user already holds in Keycloak
/// without JIT (standing assignment, directly or through a group), or only
/// through another active JIT grant (e.g. a granted group that carries the
/// role: the answer names that grant and its end). Holding it through an
/// active JIT grant of the same target is fine: grants may overlap.
async fn check_not_standing(
    state: &AppState,
    p: &Principal,
    r: &AccessRequest,
) -> Result<(), ApiError> {
    let held = state.admin.holds(&p.id, &r.target, true).await?;
    if !held
        || state
            .store
            .active_ownership(&p.id, &r.target, "")?
            .is_some()
    {
        return Ok(());
    }
    for g in state.store.active_grants_of(&p.id)? {
        if g.grant.owns_assignment == Some(false) || g.request.target == r.target {
            continue;
        }
        if state.admin.carries(&g.request.target, &r.target).await? {
            return Err(DomainError::AlreadyHeldThroughGrant {
                entitlement: r.entitlement_id.clone(),
                user: p.username.clone(),
                grant_id: g.request.id.clone(),
                grant_entitlement: g.request.entitlement_id.clone(),
                until: g
                    .request
                    .expires_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "its end".into()),
            }
            .into());
        }
    }
    Err(DomainError::AlreadyHeld {
        entitlement: r.entitlement_id.clone(),
        user: p.username.clone(),
    }
    .into())
}

async fn create(
    State(state): St,
    caller: Caller,
    Body(b): Body<CreateRequestBody>,
) -> Result<Response, ApiError> {
    let p = crate::rights::current(&state, &caller.principal).await?;
    let input = NewRequest {
        entitlement: b.entitlement.trim().to_string(),
        duration_secs: duration_of(b.duration.as_deref(), b.duration_secs)?,
        justification: b.justification,
        ticket: b.ticket,
        start_at: b.start_at,
        urgent: b.urgent,
        break_glass: b.break_glass,
    };
    let id = uuid::Uuid::new_v4().to_string();
    let (r, transitions) = AccessRequest::create(id, &input, &p, &state.policy(), Utc::now())?;
    if let Some(dup) = state
        .store
        .list(Some(Status::Pending), 10_000)?
        .iter()
        .find(|s| {
            s.request.requester_id == p.id
                && s.request.entitlement_id == r.entitlement_id
                && matches!(s.request.kind, RequestKind::Access)
        })
    {
        return Err(DomainError::DuplicatePending(
            r.entitlement_id.clone(),
            dup.request.id.clone(),
        )
        .into());
    }
    check_not_standing(&state, &p, &r).await?;
    let recs = state.store.insert(&r, transitions)?;
    state.published(&recs);
    let s = state.store.get(&r.id)?.ok_or_else(not_visible)?;
    Ok((axum::http::StatusCode::CREATED, Json(view(&state, &s))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    #[serde(default)]
    mine: bool,
    #[serde(default)]
    to_review: bool,
    /// Break-glass activations whose after-the-fact review is still open.
    #[serde(default)]
    review_open: bool,
    /// Only requests whose id starts with this (CLI short ids).
    id_prefix: Option<String>,
    /// At most this many (default 500, max 5000), newest first.
    limit: Option<usize>,
}

async fn list(
    State(state): St,
    caller: Caller,
    Q(q): Q<ListParams>,
) -> Result<Json<Vec<RequestView>>, ApiError> {
    let p = caller.principal;
    let status = q
        .status
        .as_deref()
        .map(|s| s.parse::<Status>().map_err(ApiError::BadRequest))
        .transpose()?;
    let policy = state.policy();
    let limit = q.limit.unwrap_or(500).min(5000);
    let rows = state.store.list(status, 10_000)?;
    let out = rows
        .iter()
        .filter(|s| s.request.visible_to(&p, &policy))
        .filter(|s| !q.mine || s.request.requester_id == p.id)
        .filter(|s| {
            q.id_prefix
                .as_deref()
                .is_none_or(|pre| s.request.id.starts_with(pre))
        })
        .filter(|s| {
            let r = &s.request;
            let approver = r.requester_id != p.id
                && policy
                    .entitlement(&r.entitlement_id)
                    .is_some_and(|e| e.is_approver(&p));
            // Waiting for my vote, or a break-glass activation waiting for
            // its after-the-fact review.
            let my_vote =
                r.status == Status::Pending && !r.votes.iter().any(|v| v.approver_id == p.id);
            let review = r.review_required && r.reviewed_at.is_none();
            !q.to_review || (approver && (my_vote || review))
        })
        .filter(|s| {
            !q.review_open || (s.request.review_required && s.request.reviewed_at.is_none())
        })
        .take(limit)
        .map(|s| view(&state, s))
        .collect();
    Ok(Json(out))
}

async fn show(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let s = load_visible(&state, &id, &caller.principal)?;
    Ok(Json(view(&state, &s)))
}

async fn vote(
    state: Arc<AppState>,
    p: Principal,
    id: String,
    decision: Decision,
    b: DecisionBody,
) -> Result<Json<RequestView>, ApiError> {
    // Rights as Keycloak says they are now, not as the token said.
    let p = crate::rights::current(&state, &p).await?;
    let current = load_visible(&state, &id, &p)?;
    let policy = state.policy();
    let e = policy
        .entitlement(&current.request.entitlement_id)
        .ok_or_else(|| DomainError::UnknownEntitlement(current.request.entitlement_id.clone()))?
        .clone();
    let shorten = match (decision, b.duration.as_deref()) {
        (Decision::Approve, Some(d)) => Some(parse_duration(d)?),
        (Decision::Deny, Some(_)) => {
            return Err(ApiError::BadRequest(
                "duration is for approvals only".into(),
            ))
        }
        _ => None,
    };
    let now = Utc::now();
    let comment = b.comment.clone();
    let apply_vote = |s: &mut Stored| -> Result<Vec<Entry>, DomainError> {
        Ok(
            match s
                .request
                .vote(&e, &p, decision, comment.clone(), shorten, now)?
            {
                Some(t) => vec![Entry::from(t)],
                // A vote that does not decide yet is still on the record.
                None => vec![Entry::Note(crate::store::Note {
                    event: "request.voted",
                    actor: p.username.clone(),
                    reason: comment.clone(),
                    at: now,
                })],
            },
        )
    };
    let (stored, recs) = match current.request.kind.clone() {
        RequestKind::Extension { grant_id } => {
            // The vote and, if it completes the approval, the move of the
            // grant's end happen in one transaction.
            let (ext, _grant, recs) = state.store.update_pair(&id, &grant_id, |ext, grant| {
                if grant.request.status != Status::Active {
                    return Err(DomainError::NotAnActiveGrant(grant.request.id.clone()));
                }
                let mut ext_entries = apply_vote(ext)?;
                let mut grant_entries = Vec::new();
                if ext.request.status == Status::Approved {
                    let (g, x) = grant.request.apply_extension(&mut ext.request, now)?;
                    grant_entries.push(g.into());
                    ext_entries.push(x.into());
                }
                Ok((ext_entries, grant_entries))
            })?;
            (ext, recs)
        }
        RequestKind::Access => state.store.update(&id, apply_vote)?,
    };
    state.published(&recs);
    Ok(Json(view(&state, &stored)))
}

async fn approve(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    vote(state, caller.principal, id, Decision::Approve, b).await
}

async fn deny(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    vote(state, caller.principal, id, Decision::Deny, b).await
}

async fn cancel(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let p = caller.principal;
    load_visible(&state, &id, &p)?;
    let (s, recs) = state.store.update(&id, |s| {
        let t = s.request.cancel(&p, Utc::now())?;
        Ok(end_grant(s, t))
    })?;
    state.published(&recs);
    Ok(Json(view(&state, &s)))
}

async fn drop_grant(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let p = caller.principal;
    load_visible(&state, &id, &p)?;
    let (s, recs) = state.store.update(&id, |s| {
        let t = s.request.drop_grant(&p, Utc::now())?;
        Ok(end_grant(s, t))
    })?;
    state.published(&recs);
    Ok(Json(view(&state, &s)))
}

async fn revoke(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    let p = crate::rights::current(&state, &caller.principal).await?;
    let current = load_visible(&state, &id, &p)?;
    let policy = state.policy();
    let e = policy
        .entitlement(&current.request.entitlement_id)
        .ok_or_else(|| DomainError::NotAnApprover(current.request.entitlement_id.clone()))?
        .clone();
    let (s, recs) = state.store.update(&id, |s| {
        let t = s.request.revoke(&e, &p, b.comment.clone(), Utc::now())?;
        Ok(end_grant(s, t))
    })?;
    state.published(&recs);
    Ok(Json(view(&state, &s)))
}

async fn extend(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<ExtendBody>,
) -> Result<Response, ApiError> {
    let p = crate::rights::current(&state, &caller.principal).await?;
    let grant = load_visible(&state, &id, &p)?;
    let secs = parse_duration(&b.duration)?;
    let (r, t) = AccessRequest::create_extension(
        uuid::Uuid::new_v4().to_string(),
        &grant.request,
        Some(secs),
        &b.justification,
        &p,
        &state.policy(),
        Utc::now(),
    )?;
    let recs = state.store.insert(&r, t)?;
    state.published(&recs);
    let mut stored = state.store.get(&r.id)?.ok_or_else(not_visible)?;
    if r.status == Status::Approved {
        // Auto-approved: move the grant's end at once.
        let now = Utc::now();
        let (ext, _, recs) = state.store.update_pair(&r.id, &id, |ext, g| {
            let (gt, xt) = g.request.apply_extension(&mut ext.request, now)?;
            Ok((vec![xt.into()], vec![gt.into()]))
        })?;
        state.published(&recs);
        stored = ext;
    }
    Ok((axum::http::StatusCode::CREATED, Json(view(&state, &stored))).into_response())
}

async fn review(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    let p = crate::rights::current(&state, &caller.principal).await?;
    let current = load_visible(&state, &id, &p)?;
    let policy = state.policy();
    let e = policy
        .entitlement(&current.request.entitlement_id)
        .ok_or_else(|| DomainError::NotAnApprover(current.request.entitlement_id.clone()))?
        .clone();
    let (s, recs) = state.store.update(&id, |s| {
        Ok(vec![s
            .request
            .review(&e, &p, b.comment.clone(), Utc::now())?
            .into()])
    })?;
    state.published(&recs);
    Ok(Json(view(&state, &s)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    #[serde(default)]
    since: i64,
    limit: Option<usize>,
    /// `json` (default), `jsonl` or `csv`.
    format: Option<String>,
}

/// Audit rows the caller may see: all for auditors, otherwise the rows of
/// requests visible to them.
pub fn visible_audit(
    state: &AppState,
    p: &Principal,
    since: i64,
    limit: usize,
) -> Result<(Vec<crate::store::AuditRecord>, i64), ApiError> {
    let policy = state.policy();
    let auditor = policy.is_auditor(p);
    let mut out = Vec::new();
    let mut cursor = since;
    let mut cache = std::collections::HashMap::<String, bool>::new();
    loop {
        let batch = state.store.audit_after(cursor, 500)?;
        if batch.is_empty() {
            break;
        }
        for rec in batch {
            cursor = rec.seq;
            let visible = auditor
                || rec.requester_id == p.id
                || match cache.get(&rec.request_id) {
                    Some(v) => *v,
                    None => {
                        let v = state
                            .store
                            .get(&rec.request_id)?
                            .is_some_and(|s| s.request.visible_to(p, &policy));
                        cache.insert(rec.request_id.clone(), v);
                        v
                    }
                };
            if visible {
                out.push(rec);
                if out.len() >= limit {
                    return Ok((out, cursor));
                }
            }
        }
    }
    Ok((out, cursor))
}

async fn audit(
    State(state): St,
    caller: Caller,
    Q(q): Q<AuditParams>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(10_000).min(100_000);
    let (rows, _) = visible_audit(&state, &caller.principal, q.since, limit)?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(rows).into_response()),
        "jsonl" => {
            let mut s = String::new();
            for r in &rows {
                s.push_str(&serde_json::to_string(r).expect("audit row serialises"));
                s.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "application/jsonl")], s).into_response())
        }
        "csv" => {
            let mut s = String::from("seq,at,event,request_id,entitlement_id,requester_id,actor,reason,from_status,to_status,prev_hash,hash\n");
            for r in &rows {
                // Quote every cell; neutralise spreadsheet formulas (=, +, -, @).
                let f = |v: &str| {
                    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                        format!("'{v}")
                    } else {
                        v.to_string()
                    };
                    format!("\"{}\"", v.replace('"', "\"\""))
                };
                s.push_str(
                    &[
                        r.seq.to_string(),
                        r.at.to_rfc3339(),
                        f(&r.event),
                        f(&r.request_id),
                        f(&r.entitlement_id),
                        f(&r.requester_id),
                        f(&r.actor),
                        f(r.reason.as_deref().unwrap_or("")),
                        f(r.from_status.as_deref().unwrap_or("")),
                        f(r.to_status.as_deref().unwrap_or("")),
                        r.prev_hash.clone(),
                        r.hash.clone(),
                    ]
                    .join(","),
                );
                s.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "text/csv")], s).into_response())
        }
        other => Err(ApiError::BadRequest(format!(
            "unknown format '{other}' (json, jsonl or csv)"
        ))),
    }
}

async fn audit_verify(State(state): St, caller: Caller) -> Result<Response, ApiError> {
    if !state.policy().is_auditor(&caller.principal) {
        return Err(ApiError::Forbidden(
            "verifying the whole audit chain is for auditors".into(),
        ));
    }
    Ok(Json(state.store.verify_audit()?).into_response())
}
