//! The one place that turns errors into HTTP: `application/problem+json`
//! (RFC 9457) with a stable `code` member.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jit_core::error::ErrorKind;
use jit_core::DomainError;
use jit_keycloak::{AuthError, KeycloakError};
use serde::Serialize;

use crate::store::StoreError;

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    BadRequest(String),
    #[error("no such route")]
    NoRoute,
    /// The path exists but does not take this method (405; axum keeps the
    /// `Allow` header, RFC 9110 §15.5.6).
    #[error("this path does not take that method; the Allow header lists the ones it takes")]
    MethodNotAllowed,
    #[error("request body too large: at most 64 KiB")]
    TooLarge,
    #[error("{0}")]
    Forbidden(String),
    /// The caller's Keycloak account is disabled or gone (checked live).
    #[error("{0}")]
    AccountDisabled(String),
    /// A call jitd made to Keycloak failed: 503 `keycloak_unavailable`
    /// when trying again may succeed ([`KeycloakError::is_transient`]),
    /// else 502 `keycloak_refused` (e.g. 403: jitd's service account lacks
    /// a right; an administrator must act).
    #[error("{}", keycloak_detail(.0))]
    Keycloak(#[from] KeycloakError),
    #[error("internal error")]
    Store(#[from] StoreError),
}

fn keycloak_detail(e: &KeycloakError) -> String {
    if e.is_transient() {
        format!("Keycloak is unavailable: {e}")
    } else {
        format!("Keycloak refused jitd's call: {e} (an administrator must give jitd's service account the right, or fix what Keycloak names)")
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: &'a str,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Domain(d) => {
                let status = match d.kind() {
                    ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorKind::Forbidden => StatusCode::FORBIDDEN,
                    ErrorKind::Conflict => StatusCode::CONFLICT,
                    ErrorKind::NotFound => StatusCode::NOT_FOUND,
                };
                (status, d.code(), d.title())
            }
            ApiError::Auth(AuthError::JwksUnavailable(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "jwks_unavailable",
                "Cannot validate tokens",
            ),
            ApiError::Auth(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", "Bad request"),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "no_route", "Not found"),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "Payload too large",
            ),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::AccountDisabled(_) => (
                StatusCode::FORBIDDEN,
                "account_disabled",
                "Account disabled",
            ),
            ApiError::Keycloak(e) if e.is_transient() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "keycloak_unavailable",
                "Keycloak unavailable",
            ),
            ApiError::Keycloak(_) => (
                StatusCode::BAD_GATEWAY,
                "keycloak_refused",
                "Keycloak refused jitd's call",
            ),
            ApiError::Store(StoreError::Domain(d)) => {
                // Rare path: a domain error raised inside a store transaction.
                ApiError::Domain(d.clone()).parts()
            }
            // The database is unreachable (PostgreSQL down or restarting):
            // an outage, not a fault of this request; try again.
            ApiError::Store(StoreError::Pool(_) | StoreError::TimedOut(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "Database unavailable",
            ),
            ApiError::Store(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let detail = match &self {
            ApiError::Store(StoreError::Domain(d)) => d.to_string(),
            // Said once a minute with its cause by the pool (WARN).
            ApiError::Store(e @ StoreError::Pool(_)) => {
                tracing::debug!(error = %e, "store unavailable");
                "jitd cannot reach its database right now; try again shortly".to_string()
            }
            // The database hangs: this call's change (if it makes one)
            // may still be saved when it answers.
            ApiError::Store(e @ StoreError::TimedOut(_)) => {
                tracing::warn!(error = %e, "store call given up");
                format!(
                    "{e}; if this call makes a change, it may or may not be saved: look before trying again"
                )
            }
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store error");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        let body = Problem {
            kind: format!("urn:jit-access:problem:{code}"),
            title,
            status: status.as_u16(),
            detail,
            code,
        };
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"jit-access\", error=\"invalid_token\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The database out of reach is an outage (503, retried by clients),
    /// not an internal error (500), and its answer names no internals.
    #[tokio::test]
    async fn an_unreachable_database_is_503_database_unavailable() {
        let resp = ApiError::Store(StoreError::Pool(
            "timed out waiting for connection: connection refused (127.0.0.1:5432)".into(),
        ))
        .into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "database_unavailable", "{v}");
        assert!(!v["detail"].as_str().unwrap().contains("5432"), "{v}");
        let hung = ApiError::Store(StoreError::TimedOut(10)).into_response();
        assert_eq!(hung.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(hung.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "database_unavailable", "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains("may or may not"),
            "{v}"
        );
        let other = ApiError::Store(StoreError::Corrupt("x".into())).into_response();
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// Keycloak refusing jitd's own call for good (403: its service account
    /// lacks a right) is not "Keycloak is unavailable": 502
    /// `keycloak_refused`; an outage stays 503.
    #[tokio::test]
    async fn keycloak_refusing_jitd_is_not_said_unavailable() {
        let refused = ApiError::Keycloak(KeycloakError::Status {
            status: 403,
            what: "group membership".into(),
            body: String::new(),
        });
        assert!(
            refused
                .to_string()
                .starts_with("Keycloak refused jitd's call"),
            "{refused}"
        );
        let resp = refused.into_response();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "keycloak_refused", "{v}");
        let down = ApiError::Keycloak(KeycloakError::Unavailable("connection refused".into()));
        assert_eq!(
            down.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
