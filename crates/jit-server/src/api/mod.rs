//! HTTP handlers: extract, call the domain through the store, map the
//! result. Status codes are decided in one place, [`crate::error`]. One
//! module per resource: `meta` (health, metrics, login settings),
//! `me` (the caller and what they may request), `requests`, `grants`,
//! `audit`; the event stream is `crate::events`. Extractors are
//! `crate::extract`, views and visibility `crate::views`.

mod audit;
mod grants;
mod me;
mod meta;
mod requests;

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{middleware, Json, Router};
use chrono::Utc;
use jit_core::api::{
    AuditRecord, CreateRequestBody, DecisionBody, EntitlementView, ExtendBody, MeView, Problem,
    RequestView, ServerConfigView, SERVER_TIME_HEADER,
};
use jit_core::{
    parse_duration, AccessRequest, Decision, DomainError, EntitlementKind, NewRequest, Principal,
    RequestKind, Status,
};
use jit_keycloak::TargetStatus;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::error::ApiError;
use crate::scheduler::end_grant;
use crate::store::{AuditVerification, Cursor, Entry, ListQuery, Stored, Viewer};

pub use crate::extract::{Body, Caller, Path, Q};
pub use crate::views::view;
use crate::views::{load_visible, not_visible};
use crate::AppState;
pub use meta::Health;
pub use requests::MAX_PAGE;

/// Largest request body jitd reads, in bytes (64 KiB; axum's default is
/// 2 MiB). Every body is a small JSON object whose free text is capped at
/// a few hundred characters (`jit_core::MAX_FREE_TEXT_CHARS`, justification
/// per policy); a larger one is answered 413 `too_large` (problem+json).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Response header with the cursor of the next page of a list.
pub const NEXT_AFTER_HEADER: &str = "x-next-after";

type St = State<Arc<AppState>>;

/// All routes of jitd, each with its OpenAPI description (`#[utoipa::path]`
/// on the handler; `routes!` refuses a handler without one, so the
/// document served at `/openapi.json` covers every route).
fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(meta::public_config))
        .routes(routes!(me::me))
        .routes(routes!(me::entitlements))
        .routes(routes!(requests::list, requests::create))
        .routes(routes!(requests::show))
        .routes(routes!(requests::approve))
        .routes(routes!(requests::deny))
        .routes(routes!(requests::cancel))
        .routes(routes!(requests::extend))
        .routes(routes!(requests::review))
        .routes(routes!(grants::drop_grant))
        .routes(routes!(grants::revoke))
        .routes(routes!(grants::retry_removal))
        .routes(routes!(crate::events::stream))
        .routes(routes!(audit::audit))
        .routes(routes!(audit::audit_verify))
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
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
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
