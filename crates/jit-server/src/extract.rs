//! The request extractors of the API: [`Caller`] (a validated bearer
//! token), [`Body`] (JSON) and [`Q`] (query string), each rejecting with
//! problem+json. Used by `api` and `events`.

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
