//! The commands of the UI (docs/desktop-contract.md). Every error is a
//! [`CommandError`] `{code, message}`: a stable code the UI can act on and
//! one human sentence that says what is wrong and what still works —
//! never a raw transport error.

pub mod app;
pub mod audit;
pub mod requests;
pub mod session;
pub mod settings;

use std::sync::Arc;

pub use crate::error::{CmdResult, CommandError};
use crate::state::Desktop;

/// The managed state commands receive.
pub type AppState<'a> = tauri::State<'a, Arc<Desktop>>;
