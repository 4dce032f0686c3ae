//! `get_settings` / `set_settings`.

use super::{AppState, CmdResult, CommandError};
use crate::settings::Settings;

/// `get_settings`: the app's settings.
#[tauri::command]
pub async fn get_settings(state: AppState<'_>) -> CmdResult<Settings> {
    Ok(state.settings.get())
}

/// `set_settings`: saves the settings and returns them as kept.
#[tauri::command]
pub async fn set_settings(state: AppState<'_>, settings: Settings) -> CmdResult<Settings> {
    let s = state
        .settings
        .set(settings)
        .map_err(|e| CommandError::new("internal", e))?;
    crate::live::refresh_tray(state.inner().clone());
    Ok(s)
}
