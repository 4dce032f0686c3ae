//! `get_settings` / `set_settings`.

use super::AppState;
use crate::settings::Settings;

#[tauri::command]
pub async fn get_settings(state: AppState<'_>) -> Result<Settings, String> {
    Ok(state.settings.get())
}

#[tauri::command]
pub async fn set_settings(state: AppState<'_>, settings: Settings) -> Result<Settings, String> {
    let s = state.settings.set(settings)?;
    crate::live::refresh_tray(state.inner().clone());
    Ok(s)
}
