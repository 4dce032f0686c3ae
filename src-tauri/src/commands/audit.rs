//! `list_audit`: the audit rows the user may see.

use jit_core::api::AuditRecord;

use super::{text, AppState};

#[tauri::command]
pub async fn list_audit(
    state: AppState<'_>,
    since: Option<i64>,
) -> Result<Vec<AuditRecord>, String> {
    state
        .client()
        .await?
        .audit(since.unwrap_or(0))
        .await
        .map_err(text)
}
