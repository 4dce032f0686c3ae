//! `list_audit`: the audit rows the user may see.

use jit_core::api::AuditRecord;

use super::{AppState, CmdResult, CommandError};

/// `list_audit`: the audit rows the user may see after `since` (sequence number).
#[tauri::command]
pub async fn list_audit(state: AppState<'_>, since: Option<i64>) -> CmdResult<Vec<AuditRecord>> {
    state
        .client()
        .await?
        .audit(since.unwrap_or(0))
        .await
        .map_err(CommandError::from)
}
