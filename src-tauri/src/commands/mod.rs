//! The commands of the UI (docs/desktop-contract.md). Every error is one
//! readable line (`String`).

pub mod audit;
pub mod requests;
pub mod session;
pub mod settings;

use std::sync::Arc;

use crate::state::Desktop;

/// The managed state commands receive.
pub type AppState<'a> = tauri::State<'a, Arc<Desktop>>;

/// Turns any error into the one-line text the UI shows.
pub(crate) fn text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}
