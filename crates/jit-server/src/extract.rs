//! The request extractors of the API: [`Caller`] (a validated bearer
//! token), [`Body`] (JSON), [`Q`] (query string) and [`Path`] (path
//! segments), each rejecting with problem+json. Used by `api` and `events`.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::{header, request::Parts};
use axum::Json;
use jit_core::Principal;
use jit_keycloak::AuthError;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

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
///
/// With a [`BodyDeadline`] in the request's extensions (jitd's server adds
/// one), the whole body must arrive within it, or the answer is 400: the
/// body timeout between frames alone would let a client trickle up to the
/// 64 KiB limit a byte at a time.
pub struct Body<T>(pub T);

/// The longest a request body may take to arrive in full.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub std::time::Duration);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let deadline = req.extensions().get::<BodyDeadline>().copied();
        let read = Json::<T>::from_request(req, state);
        let read = match deadline {
            Some(BodyDeadline(d)) => tokio::time::timeout(d, read).await.map_err(|_| {
                ApiError::BadRequest(format!(
                    "the request body did not arrive within {} s",
                    d.as_secs()
                ))
            })?,
            None => read.await,
        };
        read.map(|Json(v)| Body(v)).map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::BadRequest(e.body_text())
            }
        })
    }
}

/// `axum::extract::Path<T>` whose rejection is problem+json: a segment
/// that is not UTF-8 once percent-decoded (`/v1/requests/%ff`) is a 400
/// `bad_request` like any other bad input, not axum's plain text.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
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
