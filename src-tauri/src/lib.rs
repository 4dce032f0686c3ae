//! The JIT Access desktop app (Tauri 2).
//!
//! - [`session`]: login through the system browser (PKCE, loopback),
//!   tokens in the OS keyring, background refresh, logout.
//! - [`backend`]: a remote jitd (`JIT_SERVER`) or an embedded one.
//! - [`live`]: the event stream (with resume and backoff) or polling;
//!   `jit:event` / `jit:session` to the UI.
//! - [`notifications`]: what to notify (pure) and notify-rust.
//! - [`tray`]: the tray icon and menu.
//! - [`commands`]: what the UI may call (docs/desktop-contract.md).
//!
//! [`run_app`] configures a `tauri::Builder` of any runtime, so tests build
//! the same app on `tauri::test::mock_builder()`.

pub mod backend;
pub mod commands;
pub mod live;
pub mod notifications;
pub mod session;
pub mod settings;
pub mod state;
pub mod tray;

#[cfg(test)]
pub(crate) mod fixtures;

use std::sync::{Arc, Mutex};

use tauri::{AppHandle, Emitter, Manager, Runtime, WindowEvent};

pub use state::{Desktop, Options, SessionInfo};

use crate::backend::{Backend, EmbeddedSettings};
use crate::state::UiSink;
use crate::tray::{Tray, TrayView};

/// The app with options from the environment (`JIT_SERVER`,
/// `JIT_DESKTOP_DATA_DIR`, ...): tray, keyring and background tasks on.
pub fn run_app<R: Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    run_app_with(builder, Options::from_env())
}

/// The app with explicit options (tests: [`Options::headless`]).
pub fn run_app_with<R: Runtime>(builder: tauri::Builder<R>, opts: Options) -> tauri::Builder<R> {
    let tray_enabled = opts.tray;
    builder
        .invoke_handler(tauri::generate_handler![
            commands::session::get_session,
            commands::session::login,
            commands::session::logout,
            commands::session::get_me,
            commands::session::server_clock,
            commands::requests::list_entitlements,
            commands::requests::list_requests,
            commands::requests::create_request,
            commands::requests::approve_request,
            commands::requests::deny_request,
            commands::requests::cancel_request,
            commands::requests::drop_grant,
            commands::requests::revoke_grant,
            commands::requests::extend_grant,
            commands::requests::review_request,
            commands::audit::list_audit,
            commands::settings::get_settings,
            commands::settings::set_settings,
        ])
        .setup(move |app| {
            setup(app.handle(), opts)?;
            Ok(())
        })
        .on_window_event(move |window, event| {
            // Closing the window hides it to the tray (the app keeps
            // notifying); Quit is in the tray menu.
            if let WindowEvent::CloseRequested { api, .. } = event {
                let has_tray = window
                    .app_handle()
                    .try_state::<Arc<AppSink<R>>>()
                    .is_some_and(|s| s.has_tray());
                if tray_enabled && has_tray {
                    api.prevent_close();
                    let _ = window.hide();
                }
            }
        })
}

/// Connects the logic to the Tauri app.
pub struct AppSink<R: Runtime> {
    app: AppHandle<R>,
    tray: Mutex<Option<Tray<R>>>,
}

impl<R: Runtime> AppSink<R> {
    fn has_tray(&self) -> bool {
        self.tray
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

impl<R: Runtime> UiSink for AppSink<R> {
    fn emit(&self, event: &str, payload: serde_json::Value) {
        if let Err(e) = self.app.emit(event, payload) {
            tracing::warn!(error = %e, event, "cannot emit to the UI");
        }
    }

    fn tray(&self, view: &TrayView) {
        if let Some(t) = self.tray.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            t.show(view);
        }
    }

    fn show_window(&self) {
        tray::show_main(&self.app);
    }
}

fn data_dir<R: Runtime>(app: &AppHandle<R>, opts: &Options) -> Option<std::path::PathBuf> {
    opts.data_dir
        .clone()
        .or_else(|| app.path().app_data_dir().ok())
}

fn setup<R: Runtime>(
    app: &AppHandle<R>,
    mut opts: Options,
) -> Result<(), Box<dyn std::error::Error>> {
    opts.data_dir = data_dir(app, &opts);
    let d = Desktop::new(opts.clone());
    app.manage(d.clone());

    let sink = Arc::new(AppSink {
        app: app.clone(),
        tray: Mutex::new(None),
    });
    app.manage(sink.clone());
    d.set_sink(sink.clone());
    if opts.tray {
        match tray::create(app, d.clone()) {
            Ok(t) => *sink.tray.lock().unwrap_or_else(|p| p.into_inner()) = Some(t),
            Err(e) => tracing::warn!(error = %e, "no tray icon; closing the window quits"),
        }
    }

    let tokens: Arc<dyn jit_client::TokenSource> = d.session.clone();
    if let Some(url) = &opts.server {
        let b = Backend::remote(url, tokens.clone());
        d.session.set_key(b.keyring_entry());
        d.set_backend(Ok(Arc::new(b)));
    }
    let d2 = d.clone();
    tauri::async_runtime::spawn(async move {
        if d2.opts.server.is_none() {
            let dir = d2
                .opts
                .data_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("jit-desktop"));
            match backend::start_embedded(&dir, &EmbeddedSettings::from_env(), tokens).await {
                Ok(b) => {
                    d2.session.set_key(b.keyring_entry());
                    d2.set_backend(Ok(Arc::new(b)));
                }
                Err(e) => {
                    tracing::error!(error = %e, "embedded jitd");
                    d2.set_backend(Err(e));
                }
            }
        }
        d2.session.restore().await;
        if d2.opts.background {
            tauri::async_runtime::spawn(d2.session.clone().refresh_loop());
            live::watch_session(d2.clone());
        } else {
            d2.set_connection(state::Connection::Offline);
        }
        d2.emit_session();
    });
    Ok(())
}
