//! `quit_choice` (the answer to `jit:quit-requested`) and `take_deep_link`.

use serde::Deserialize;

use super::{AppState, CmdResult, CommandError};
use crate::instance::DeepLink;
use crate::quit;

/// The choices of the quit dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuitChoice {
    /// Hide the window; the app (and its embedded jitd) keeps running.
    Background,
    /// End every grant of the embedded jitd, wait until Keycloak confirmed
    /// their removal, then quit.
    EndGrants,
}

/// Carries out the quit dialog's choice. `end_grants` sends
/// `jit:quit-progress` `{left}` while it waits and quits when Keycloak
/// confirmed every removal; if it did not within 60 s the error
/// (`keycloak_unreachable`) says so and the app keeps running.
#[tauri::command]
pub async fn quit_choice(state: AppState<'_>, choice: QuitChoice) -> CmdResult<()> {
    let d = state.inner().clone();
    let sink = d.sink().cloned();
    match choice {
        QuitChoice::Background => {
            if let Some(s) = &sink {
                s.hide_window();
            }
            Ok(())
        }
        QuitChoice::EndGrants => {
            let server = d
                .backend_now()
                .and_then(|b| b.server.as_ref().map(|s| s.state.clone()));
            if let Some(state) = server {
                let progress_sink = sink.clone();
                quit::end_all(&state, quit::CONFIRM_LIMIT, move |left| {
                    if let Some(s) = &progress_sink {
                        s.emit("jit:quit-progress", serde_json::json!({ "left": left }));
                    }
                })
                .await
                .map_err(|e| CommandError::new("keycloak_unreachable", e))?;
            }
            tracing::info!("grants of the embedded jitd ended and confirmed; quitting");
            if let Some(s) = &sink {
                s.exit();
            }
            Ok(())
        }
    }
}

/// The deep link the app was started with (or handed by a later launch)
/// that the UI has not opened yet.
#[tauri::command]
pub async fn take_deep_link(state: AppState<'_>) -> CmdResult<Option<DeepLink>> {
    Ok(state.take_deep_link())
}
