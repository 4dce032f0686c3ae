//! `get_session`, `login`, `logout`, `get_me`, `server_clock`.

use serde::Serialize;

use super::{AppState, CmdResult, CommandError};
use crate::state::SessionInfo;

/// `get_session`: the `SessionInfo` of the contract (login, backend, connection, notices).
#[tauri::command]
pub async fn get_session(state: AppState<'_>) -> CmdResult<SessionInfo> {
    Ok(state.session_info().await)
}

/// `jit:login-url` payload: Keycloak's login page for this login, and why
/// no browser could be opened (then the UI asks to open it by hand).
#[derive(Debug, Clone, Serialize)]
pub struct LoginUrl {
    pub url: String,
    pub browser_error: Option<String>,
}

/// Opens the system browser on Keycloak's login page; resolves when done.
/// The URL is also sent to the UI (`jit:login-url`) so that it can be
/// copied when no browser opens.
#[tauri::command]
pub async fn login(state: AppState<'_>) -> CmdResult<SessionInfo> {
    let d = state.inner().clone();
    let b = d.backend_cmd().await?;
    let sink = d.sink().cloned();
    d.session
        .login(&b.client, move |url, browser_error| {
            if let Some(s) = sink {
                let payload = LoginUrl {
                    url: url.to_string(),
                    browser_error,
                };
                s.emit(
                    "jit:login-url",
                    serde_json::to_value(payload).expect("serialises"),
                );
            }
        })
        .await?;
    Ok(d.session_info().await)
}

/// Ends the Keycloak session and forgets the tokens (keyring entry too).
#[tauri::command]
pub async fn logout(state: AppState<'_>) -> CmdResult<SessionInfo> {
    let d = state.inner().clone();
    let r = d.session.logout().await;
    let info = d.session_info().await;
    r.map(|_| info)
        .map_err(|e| CommandError::new("keycloak_unreachable", e))
}

/// `get_me`: who the user is and what they approve, as jitd sees it.
#[tauri::command]
pub async fn get_me(state: AppState<'_>) -> CmdResult<jit_core::api::MeView> {
    state.client().await?.me().await.map_err(CommandError::from)
}

/// The server's clock relative to this machine's (for countdowns).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ServerClock {
    /// Server time minus local time, milliseconds.
    pub offset_ms: i64,
}

/// The server clock's offset, measured on the latest response.
#[tauri::command]
pub async fn server_clock(state: AppState<'_>) -> CmdResult<ServerClock> {
    let b = state.backend_cmd().await?;
    // A cheap unauthenticated call refreshes the measurement.
    let _ = b.client.server_config().await;
    let offset = b.client.server_now() - chrono::Utc::now();
    Ok(ServerClock {
        offset_ms: offset.num_milliseconds(),
    })
}
