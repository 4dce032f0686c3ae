//! Logs and request tracing: the log subscriber (`text` or `json`, filter
//! from `JITD_LOG`), and the tower-http layers that give every HTTP request
//! a request id and a span.
//!
//! The request id is taken from the caller's `x-request-id` header when it
//! is a plain token (1–128 of `A–Z a–z 0–9 . _ : -`), else a new UUID; it is
//! returned in the response's `x-request-id` and is a field (`request_id`) of
//! every log line written while the request is handled. Spans carry the
//! method and path only: never headers (the bearer token) nor the query.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::Router;
use serde::Deserialize;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, DefaultOnRequest, DefaultOnResponse, TraceLayer};
use tracing::Level;

/// The request-id header, accepted and returned.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// `log_format` in jitd.toml.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line (for log shippers), with the span fields
    /// (`request_id`, `method`, `path`) under `span`.
    Json,
}

/// Installs the global log subscriber on stderr. The filter is `JITD_LOG`
/// (`tracing_subscriber::EnvFilter` syntax), default `info,tower_http=warn`;
/// `JITD_LOG=info,tower_http=debug` adds one line per HTTP request.
/// A second call does nothing.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JITD_LOG")
        .unwrap_or_else(|_| "info,tower_http=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

fn plain_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

/// Drops a caller's request id that is not a plain token, so a new one is
/// made (log lines never carry what a caller smuggled in).
async fn sanitise_request_id(mut req: Request) -> Request {
    if req
        .headers()
        .get(REQUEST_ID_HEADER)
        .is_some_and(|v| !plain_id(v))
    {
        req.headers_mut().remove(REQUEST_ID_HEADER);
    }
    req
}

fn make_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %id,
    )
}

/// Wraps `router` in the request-id and trace layers (outermost last).
pub fn layers(router: Router) -> Router {
    let header = axum::http::HeaderName::from_static(REQUEST_ID_HEADER);
    router
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                // A 5xx is said where it arises, once: an internal error by
                // the error handler (ERROR), an outage by the part that
                // saw it (the database pool, the Keycloak client: WARN, once
                // a minute). Not again per response: a load balancer's
                // health probe during an outage made an ERROR line a second.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid))
        .layer(axum::middleware::map_request(sanitise_request_id))
}
