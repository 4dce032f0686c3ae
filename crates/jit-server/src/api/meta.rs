//! Unauthenticated meta routes: `/healthz`, `/metrics`, `/v1/config`.

use super::*;

/// `GET /healthz` body.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the database cannot be read.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Whether the database answered.
    pub database: bool,
    /// Keycloak as jitd's scheduler sees it: `ok`, `unreachable`, or
    /// `login_refused` (its service account's client id or secret is
    /// wrong). Grants and removals wait while it is not `ok`; it does not
    /// change the status code (the API still answers what needs no
    /// Keycloak), the `JitKeycloakErrors` alert and the log say it.
    #[schema(example = "ok")]
    pub keycloak: &'static str,
    /// When Keycloak last answered a call of jitd's scheduler (UTC; `null` before
    /// the first). While `keycloak` is `ok`, an idle jitd asks Keycloak at
    /// least every 10 s, so an instant older than that plus
    /// `keycloak_call_timeout_secs` means that question has no answer yet
    /// (or the scheduler is held up by the database: see `database`).
    #[schema(required = true)]
    pub keycloak_answered_at: Option<chrono::DateTime<Utc>>,
    /// Entitlements in the policy in force.
    pub entitlements: usize,
    /// The server's clock (UTC).
    pub time: chrono::DateTime<Utc>,
}

/// Liveness and database health (no authentication).
/// Longest wait of `/healthz` for the database before it says `degraded`.
const HEALTH_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

#[utoipa::path(get, path = "/healthz", tag = "meta", responses(
    (status = 200, description = "Healthy", body = Health),
    (status = 503, description = "The database cannot be read", body = Health),
))]
pub(super) async fn healthz(State(state): St) -> Response {
    // On the blocking pool with its own connection: a long list or a write
    // in progress does not hold it up. A load balancer's probe gets its
    // answer within HEALTH_WAIT even while the database does not answer.
    let db_ok = tokio::time::timeout(HEALTH_WAIT, state.store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let body = Health {
        status: if db_ok { "ok" } else { "degraded" },
        database: db_ok,
        keycloak: state.scheduler.keycloak_state(),
        keycloak_answered_at: state.scheduler.keycloak_answered_at(),
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
pub(super) async fn metrics(State(state): St) -> Response {
    // The store gauges read the database: off the async threads, and at
    // most HEALTH_WAIT. A database that does not answer must not make the
    // scrape time out (Prometheus would take jitd for down): then the
    // in-memory metrics and `jit_database_up 0`.
    let st = state.clone();
    let full = tokio::task::spawn_blocking(move || st.metrics.encode());
    let text = match tokio::time::timeout(HEALTH_WAIT, full).await {
        Ok(Ok(text)) => text,
        _ => state.metrics.encode_without_store(),
    };
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
pub(super) async fn public_config(State(state): St) -> Json<ServerConfigView> {
    Json(state.public.clone())
}
