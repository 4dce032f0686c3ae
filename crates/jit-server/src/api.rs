//! HTTP handlers: extract, call the domain through the store, map the
//! result. Status codes are decided in one place, [`crate::error`].

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, RawQuery, Request, State};
use axum::http::{header, request::Parts, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{middleware, Json, Router};
use chrono::Utc;
use jit_core::api::{
    AuditRecord, CreateRequestBody, DecisionBody, EntitlementView, ExtendBody, MeView, Problem,
    RequestView, ServerConfigView, SERVER_TIME_HEADER,
};
use jit_core::{
    parse_duration, AccessRequest, Decision, DomainError, NewRequest, Principal, RequestKind,
    Status,
};
use jit_keycloak::{AuthError, TargetStatus};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::error::ApiError;
use crate::scheduler::end_grant;
use crate::store::{AuditVerification, Cursor, Entry, ListQuery, Stored, Viewer};

/// Response header with the cursor of the next page of a list.
pub const NEXT_AFTER_HEADER: &str = "x-next-after";
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

/// All routes of jitd, each with its OpenAPI description (`#[utoipa::path]`
/// on the handler; `routes!` refuses a handler without one, so the
/// document served at `/openapi.json` covers every route).
fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(public_config))
        .routes(routes!(me))
        .routes(routes!(entitlements))
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(approve))
        .routes(routes!(deny))
        .routes(routes!(cancel))
        .routes(routes!(extend))
        .routes(routes!(review))
        .routes(routes!(drop_grant))
        .routes(routes!(revoke))
        .routes(routes!(crate::events::stream))
        .routes(routes!(audit))
        .routes(routes!(audit_verify))
}

/// The OpenAPI 3.1 description of the API, as served at `GET /openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = routes().split_for_parts();
    crate::openapi::finish(&mut doc);
    doc
}

/// All routes of jitd.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, mut doc) = routes().split_for_parts();
    crate::openapi::finish(&mut doc);
    let doc = Arc::new(doc.to_json().expect("the OpenAPI document serialises"));
    let metrics = state.metrics.clone();
    let router = router
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::Extension(OpenApiJson(doc)))
        .layer(middleware::from_fn_with_state(
            metrics,
            crate::metrics::track_http,
        ))
        .layer(middleware::map_response(server_time))
        .with_state(state);
    crate::tracing_setup::layers(router)
}

/// The serialised OpenAPI document, made once at start.
#[derive(Clone)]
struct OpenApiJson(Arc<String>);

/// This document: the OpenAPI 3.1 description of every route.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn openapi_json(axum::Extension(OpenApiJson(doc)): axum::Extension<OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.as_str().to_owned(),
    )
        .into_response()
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
    RequestView {
        entitlement_name: policy
            .entitlement(&r.entitlement_id)
            .map(|e| e.display_name.clone())
            .unwrap_or_else(|| r.entitlement_id.clone()),
        remaining_secs: r.remaining_secs(now),
        total_secs: r.total_secs(),
        keycloak: s.grant.clone(),
        revoke_late: jit_core::lateness::revoke_late(r, &s.grant, now),
        request: r.clone(),
    }
}

fn not_visible() -> ApiError {
    ApiError::Domain(DomainError::NotFound)
}

/// Loads a request the caller may see; otherwise 404, the same answer as for
/// a request that does not exist (nobody learns of others' requests).
async fn load_visible(state: &AppState, id: &str, p: &Principal) -> Result<Stored, ApiError> {
    let s = state.store.get(id).await?.ok_or_else(not_visible)?;
    if !s.request.visible_to(p, &state.policy()) {
        return Err(not_visible());
    }
    Ok(s)
}

/// `GET /healthz` body.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the database cannot be read.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Whether the database answered.
    pub database: bool,
    /// Entitlements in the policy in force.
    pub entitlements: usize,
    /// The server's clock (UTC).
    pub time: chrono::DateTime<Utc>,
}

/// Liveness and database health (no authentication).
#[utoipa::path(get, path = "/healthz", tag = "meta", responses(
    (status = 200, description = "Healthy", body = Health),
    (status = 503, description = "The database cannot be read", body = Health),
))]
async fn healthz(State(state): St) -> Response {
    // On the blocking pool with its own connection: a long list or a write
    // in progress does not hold it up.
    let db_ok = state.store.ping().await.is_ok();
    let body = Health {
        status: if db_ok { "ok" } else { "degraded" },
        database: db_ok,
        entitlements: state.policy().entitlements.len(),
        time: Utc::now(),
    };
    let code = if db_ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Prometheus metrics, text exposition format (no authentication).
#[utoipa::path(get, path = "/metrics", tag = "meta", responses(
    (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
))]
async fn metrics(State(state): St) -> Response {
    // The store gauges read the database: off the async threads.
    let st = state.clone();
    let text = tokio::task::spawn_blocking(move || st.metrics.encode())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Where clients log in: issuer, audience, client ids (no authentication).
#[utoipa::path(get, path = "/v1/config", tag = "meta", responses(
    (status = 200, description = "Login parameters", body = ServerConfigView),
))]
async fn public_config(State(state): St) -> Json<ServerConfigView> {
    Json(state.public.clone())
}

/// Who the token says the caller is, and what they may do.
#[utoipa::path(get, path = "/v1/me", tag = "requests", security(("bearer" = [])), responses(
    (status = 200, description = "The caller", body = MeView),
))]
async fn me(State(state): St, caller: Caller) -> Json<MeView> {
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
async fn entitlements(State(state): St, caller: Caller) -> Json<Vec<EntitlementView>> {
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

fn duration_of(human: Option<&str>, secs: Option<i64>) -> Result<Option<i64>, ApiError> {
    match (human, secs) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give either duration or duration_secs, not both".into(),
        )),
        (Some(h), None) => Ok(Some(parse_duration(h)?)),
        (None, s) => Ok(s),
    }
}

/// Refuses a request for an entitlement whose Keycloak target does not
/// exist or that the service account may not assign. The last known
/// status decides; one that says "unavailable" or was never checked is
/// asked of Keycloak again first, so a fixed realm is seen at once.
async fn check_available(state: &AppState, r: &AccessRequest) -> Result<(), ApiError> {
    let known = state.target_status(&r.entitlement_id, &r.target);
    let status = match known {
        Some(TargetStatus::Available) => return Ok(()),
        _ => {
            let s = crate::scheduler::call(state, state.admin.target_status(&r.target)).await?;
            state.set_target_status(&r.entitlement_id, &r.target, s.clone());
            s
        }
    };
    match status.unavailable_reason() {
        None => Ok(()),
        Some(why) => Err(DomainError::EntitlementUnavailable {
            entitlement: r.entitlement_id.clone(),
            reason: why.to_string(),
        }
        .into()),
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
    let held = crate::scheduler::call(state, state.admin.holds(&p.id, &r.target, true)).await?;
    if !held
        || state
            .store
            .active_ownership(&p.id, &r.target, "")
            .await?
            .is_some()
    {
        return Ok(());
    }
    for g in state.store.active_grants_of(&p.id).await? {
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

/// Asks for an entitlement. `201` with the request; it may already be
/// `approved` (auto-approval, break-glass).
#[utoipa::path(post, path = "/v1/requests", tag = "requests", security(("bearer" = [])),
    request_body = CreateRequestBody,
    responses(
        (status = 201, description = "Created", body = RequestView),
        (status = 403, description = "The caller may not request it (`not_a_requester`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already held (`already_held`) or already pending (`duplicate_pending`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Breaks a policy rule (duration, justification, ticket, start time, unknown entitlement)", body = Problem, content_type = "application/problem+json"),
    ))]
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
    check_available(&state, &r).await?;
    check_not_standing(&state, &p, &r).await?;
    // One pending request per requester and entitlement: enforced by the
    // store (a unique index), so parallel requests cannot both pass.
    let recs = state.store.insert(&r, transitions).await?;
    state.published(&recs);
    let s = state.store.get(&r.id).await?.ok_or_else(not_visible)?;
    Ok((axum::http::StatusCode::CREATED, Json(view(&state, &s))).into_response())
}

/// Query of `GET /v1/requests`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only requests in this status.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Only the caller's own requests.
    #[serde(default)]
    mine: bool,
    #[serde(default)]
    /// Only requests waiting for the caller's vote or review.
    to_review: bool,
    /// Break-glass activations whose after-the-fact review is still open.
    #[serde(default)]
    review_open: bool,
    /// Only requests whose id starts with this (CLI short ids).
    id_prefix: Option<String>,
    /// Page size: 1 to 5000, default 500.
    #[param(minimum = 1, maximum = 5000)]
    limit: Option<usize>,
    /// Continue after this cursor (from the previous page's `Link: rel="next"`).
    after: Option<String>,
}

/// Largest page of `GET /v1/requests`.
pub const MAX_PAGE: usize = 5000;

/// Requests the caller may see, newest first: one page, filtered and
/// paginated in the store. When more follow, the response carries
/// `Link: </v1/requests?…&after=CURSOR>; rel="next"` (and the bare cursor in
/// `x-next-after`); follow it until it is absent. Exact for any store size.
#[utoipa::path(get, path = "/v1/requests", tag = "requests", security(("bearer" = [])),
    params(ListParams),
    responses((status = 200, description = "Requests (one page)", body = Vec<RequestView>,
        headers(("link" = String, description = "rel=\"next\": the next page, when more follow"),
                ("x-next-after" = String, description = "cursor of the next page, when more follow")))))]
async fn list(
    State(state): St,
    caller: Caller,
    RawQuery(raw): RawQuery,
    Q(q): Q<ListParams>,
) -> Result<Response, ApiError> {
    let p = caller.principal;
    let status = q
        .status
        .as_deref()
        .map(|s| s.parse::<Status>().map_err(ApiError::BadRequest))
        .transpose()?;
    let after = q
        .after
        .as_deref()
        .map(|a| {
            Cursor::decode(a).ok_or_else(|| {
                ApiError::BadRequest("after must be a cursor from a previous page".into())
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(500);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let page = state
        .store
        .list(ListQuery {
            viewer: Viewer::of(&p, &state.policy()),
            status,
            mine: q.mine,
            to_review: q.to_review,
            review_open: q.review_open,
            id_prefix: q.id_prefix,
            after,
            limit,
        })
        .await?;
    let out: Vec<RequestView> = page.items.iter().map(|s| view(&state, s)).collect();
    let mut resp = Json(out).into_response();
    if let Some(next) = page.next {
        let cursor = next.encode();
        let mut pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .filter(|(k, _)| k != "after")
                .collect();
        pairs.push(("after".into(), cursor.clone()));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        if let Ok(v) = HeaderValue::from_str(&format!("</v1/requests?{query}>; rel=\"next\"")) {
            resp.headers_mut().insert(header::LINK, v);
        }
        if let Ok(v) = HeaderValue::from_str(&cursor) {
            resp.headers_mut().insert(NEXT_AFTER_HEADER, v);
        }
    }
    Ok(resp)
}

/// One request the caller may see.
#[utoipa::path(get, path = "/v1/requests/{id}", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")),
    responses((status = 200, description = "The request", body = RequestView), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"),))]
async fn show(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let s = load_visible(&state, &id, &caller.principal).await?;
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
    let current = load_visible(&state, &id, &p).await?;
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
    let apply_vote = move |s: &mut Stored| -> Result<Vec<Entry>, DomainError> {
        Ok(
            match s
                .request
                .vote(&e, &p, decision, comment.clone(), shorten, now)?
            {
                Some(t) => vec![Entry::from(t)],
                // A vote that does not decide yet is still on the record.
                None => vec![Entry::Note(crate::store::Note {
                    event: jit_core::api::EventKind::RequestVoted,
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
            let (ext, _grant, recs) = state
                .store
                .update_pair(&id, &grant_id, move |ext, grant| {
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
                })
                .await?;
            (ext, recs)
        }
        RequestKind::Access => state.store.update(&id, apply_vote).await?,
    };
    state.published(&recs);
    Ok(Json(view(&state, &stored)))
}

/// Approves (one vote); `duration` may shorten the grant, never lengthen it.
#[utoipa::path(post, path = "/v1/requests/{id}/approve", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), request_body = DecisionBody,
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, ...)", body = Problem, content_type = "application/problem+json"),))]
async fn approve(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    vote(state, caller.principal, id, Decision::Approve, b).await
}

/// Denies; one deny ends the request.
#[utoipa::path(post, path = "/v1/requests/{id}/deny", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), request_body = DecisionBody,
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, ...)", body = Problem, content_type = "application/problem+json"),))]
async fn deny(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    vote(state, caller.principal, id, Decision::Deny, b).await
}

/// The requester withdraws a pending or approved request.
#[utoipa::path(post, path = "/v1/requests/{id}/cancel", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), 
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, ...)", body = Problem, content_type = "application/problem+json"),))]
async fn cancel(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let p = caller.principal;
    load_visible(&state, &id, &p).await?;
    let (s, recs) = state
        .store
        .update(&id, move |s| {
            let t = s.request.cancel(&p, Utc::now())?;
            Ok(end_grant(s, t))
        })
        .await?;
    state.published(&recs);
    Ok(Json(view(&state, &s)))
}

/// The requester ends their own grant early.
#[utoipa::path(post, path = "/v1/grants/{id}/drop", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), 
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, ...)", body = Problem, content_type = "application/problem+json"),))]
async fn drop_grant(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let p = caller.principal;
    load_visible(&state, &id, &p).await?;
    let (s, recs) = state
        .store
        .update(&id, move |s| {
            let t = s.request.drop_grant(&p, Utc::now())?;
            Ok(end_grant(s, t))
        })
        .await?;
    state.published(&recs);
    Ok(Json(view(&state, &s)))
}

/// An approver ends a grant early (comment required).
#[utoipa::path(post, path = "/v1/grants/{id}/revoke", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), request_body = DecisionBody,
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, ...)", body = Problem, content_type = "application/problem+json"),))]
async fn revoke(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    let p = crate::rights::current(&state, &caller.principal).await?;
    let current = load_visible(&state, &id, &p).await?;
    let policy = state.policy();
    let e = policy
        .entitlement(&current.request.entitlement_id)
        .ok_or_else(|| DomainError::NotAnApprover(current.request.entitlement_id.clone()))?
        .clone();
    let (s, recs) = state
        .store
        .update(&id, move |s| {
            let t = s.request.revoke(&e, &p, b.comment.clone(), Utc::now())?;
            Ok(end_grant(s, t))
        })
        .await?;
    state.published(&recs);
    Ok(Json(view(&state, &s)))
}

/// Asks for more time on an active grant: a new extension request (`201`).
#[utoipa::path(post, path = "/v1/requests/{id}/extend", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), request_body = ExtendBody,
    responses((status = 201, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, ...)", body = Problem, content_type = "application/problem+json"),))]
async fn extend(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<ExtendBody>,
) -> Result<Response, ApiError> {
    let p = crate::rights::current(&state, &caller.principal).await?;
    let grant = load_visible(&state, &id, &p).await?;
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
    let recs = if r.status == Status::Approved {
        // Auto-approved: the extension and the move of the grant's end in
        // one transaction, so a crash cannot leave an approved extension
        // that nothing applies.
        let now = Utc::now();
        let (_, _, recs) = state
            .store
            .insert_then_update(&r, t, &id, move |ext, g| {
                let (gt, xt) = g.request.apply_extension(&mut ext.request, now)?;
                Ok((vec![xt.into()], vec![gt.into()]))
            })
            .await?;
        recs
    } else {
        state.store.insert(&r, t).await?
    };
    state.published(&recs);
    let stored = state.store.get(&r.id).await?.ok_or_else(not_visible)?;
    Ok((axum::http::StatusCode::CREATED, Json(view(&state, &stored))).into_response())
}

/// An approver reviews a break-glass activation after the fact.
#[utoipa::path(post, path = "/v1/requests/{id}/review", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), request_body = DecisionBody,
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, ...)", body = Problem, content_type = "application/problem+json"),))]
async fn review(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    let p = crate::rights::current(&state, &caller.principal).await?;
    let current = load_visible(&state, &id, &p).await?;
    let policy = state.policy();
    let e = policy
        .entitlement(&current.request.entitlement_id)
        .ok_or_else(|| DomainError::NotAnApprover(current.request.entitlement_id.clone()))?
        .clone();
    let (s, recs) = state
        .store
        .update(&id, move |s| {
            Ok(vec![s
                .request
                .review(&e, &p, b.comment.clone(), Utc::now())?
                .into()])
        })
        .await?;
    state.published(&recs);
    Ok(Json(view(&state, &s)))
}

/// Query of `GET /v1/audit`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// Only rows after this sequence number.
    #[serde(default)]
    since: i64,
    /// At most this many rows (default 10000, max 100000).
    #[param(minimum = 0)]
    limit: Option<usize>,
    /// `json` (default), `jsonl` or `csv`.
    #[param(value_type = Option<AuditFormat>)]
    format: Option<String>,
}

/// Export format of `GET /v1/audit`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // only describes the `format` values
pub(crate) enum AuditFormat {
    Json,
    Jsonl,
    Csv,
}

/// Audit rows the caller may see, oldest first: auditors all, others the
/// rows of requests they may see.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])),
    params(AuditParams),
    responses((status = 200, description = "Audit rows", content(
        (Vec<AuditRecord> = "application/json"),
        (String = "application/jsonl"),
        (String = "text/csv"),
    ))))]
async fn audit(
    State(state): St,
    caller: Caller,
    Q(q): Q<AuditParams>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(10_000).min(100_000);
    let viewer = Viewer::of(&caller.principal, &state.policy());
    let (rows, _) = state
        .store
        .audit_visible(&viewer, q.since, None, limit)
        .await?;
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
            let mut s = String::from("seq,at,event,request_id,entitlement_id,requester_id,actor,reason,from_status,to_status,prev_hash,hash,actor_client\n");
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
                        f(r.actor_client.as_deref().unwrap_or("")),
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

/// Recomputes the whole hash chain (auditors only).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses(
        (status = 200, description = "Result of the check", body = AuditVerification),
        (status = 403, description = "Not an auditor (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn audit_verify(State(state): St, caller: Caller) -> Result<Response, ApiError> {
    if !state.policy().is_auditor(&caller.principal) {
        return Err(ApiError::Forbidden(
            "verifying the whole audit chain is for auditors".into(),
        ));
    }
    Ok(Json(state.store.verify_audit().await?).into_response())
}
