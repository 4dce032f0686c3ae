//! `get_session`, `login`, `logout`, `get_me`, `server_clock`.

use serde::Serialize;

use super::{text, AppState};
use crate::state::SessionInfo;

#[tauri::command]
pub async fn get_session(state: AppState<'_>) -> Result<SessionInfo, String> {
    Ok(state.session_info().await)
}

/// Opens the system browser on Keycloak's login page; resolves when done.
#[tauri::command]
pub async fn login(state: AppState<'_>) -> Result<SessionInfo, String> {
    let d = state.inner().clone();
    let b = d.backend().await?;
    d.session.login(&b.client).await?;
    Ok(d.session_info().await)
}

/// Ends the Keycloak session and forgets the tokens (keyring entry too).
#[tauri::command]
pub async fn logout(state: AppState<'_>) -> Result<SessionInfo, String> {
    let d = state.inner().clone();
    let r = d.session.logout().await;
    let info = d.session_info().await;
    r.map(|_| info)
}

#[tauri::command]
pub async fn get_me(state: AppState<'_>) -> Result<jit_core::api::MeView, String> {
    state.client().await?.me().await.map_err(text)
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ServerClock {
    /// Server time minus local time, milliseconds.
    pub offset_ms: i64,
}

/// The server clock's offset, measured on the latest response.
#[tauri::command]
pub async fn server_clock(state: AppState<'_>) -> Result<ServerClock, String> {
    let b = state.backend().await?;
    // A cheap unauthenticated call refreshes the measurement.
    let _ = b.client.server_config().await;
    let offset = b.client.server_now() - chrono::Utc::now();
    Ok(ServerClock {
        offset_ms: offset.num_milliseconds(),
    })
}
