//! The JIT Access desktop app (Tauri 2).
//!
//! - [`session`]: login through the system browser (PKCE, loopback),
//!   tokens in the OS keyring, background refresh, logout.
//! - [`backend`]: a remote jitd (`JIT_SERVER`) or an embedded one.
//! - [`live`]: the event stream (with resume and backoff) or polling;
//!   `jit:event` / `jit:session` to the UI.
//! - [`notifications`]: what to notify (pure) and notify-rust.
//! - [`tray`]: the tray icon and menu; [`bus`]: whether a tray host is
//!   really there, closing notifications.
//! - [`quit`]: quitting while the embedded jitd holds grants.
//! - [`instance`]: one app per profile, deep links (`jit://request/…`).
//! - [`commands`]: what the UI may call (docs/desktop-contract.md).
//!
//! [`run_app`] configures a `tauri::Builder` of any runtime, so tests build
//! the same app on `tauri::test::mock_builder()`.

pub mod backend;
pub mod bus;
pub mod commands;
pub mod error;
pub mod instance;
pub mod live;
pub mod memory;
pub mod notifications;
pub mod quit;
pub mod session;
pub mod settings;
pub mod state;
pub mod tray;
pub mod tray_view;
pub mod webext;

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
            commands::app::quit_choice,
            commands::app::take_deep_link,
        ])
        .setup(move |app| {
            setup(app.handle(), opts)?;
            Ok(())
        })
        .on_window_event(move |window, event| {
            // Closing the window hides it to the tray only when a tray is
            // really shown; otherwise it quits (through the quit checks).
            if let WindowEvent::CloseRequested { api, .. } = event {
                if tray_enabled {
                    api.prevent_close();
                    let app = window.app_handle().clone();
                    tauri::async_runtime::spawn(async move {
                        on_close_requested(app).await;
                    });
                }
            }
        })
}

/// Whether the tray icon exists and a tray host shows it.
async fn tray_shown<R: Runtime>(app: &AppHandle<R>) -> bool {
    let created = app
        .try_state::<Arc<AppSink<R>>>()
        .is_some_and(|s| s.has_tray());
    created && bus::tray_host_present().await
}

async fn on_close_requested<R: Runtime>(app: AppHandle<R>) {
    if tray_shown(&app).await {
        if let Some(w) = app.get_webview_window("main") {
            let _ = w.hide();
        }
        return;
    }
    tracing::info!("no tray host: closing the window quits");
    request_quit(app).await;
}

/// Quit (tray menu, or closing the window without a tray): at once,
/// unless the embedded jitd holds grants — then the window shows what
/// will happen and the choices (`jit:quit-requested`, answered with the
/// `quit_choice` command).
pub async fn request_quit<R: Runtime>(app: AppHandle<R>) {
    let Some(d) = app.try_state::<Arc<Desktop>>().map(|s| s.inner().clone()) else {
        app.exit(0);
        return;
    };
    let holding = d
        .backend_now()
        .and_then(|b| b.server.as_ref().map(|s| s.state.clone()))
        .map(|state| quit::holding(&state));
    match holding {
        Some(Ok(mut h)) if !h.is_empty() => {
            h.tray = tray_shown(&app).await;
            tracing::info!(
                active = h.active.len(),
                removing = h.removing,
                "quit asked while the embedded jitd holds grants"
            );
            tray::show_main(&app);
            let _ = app.emit(
                "jit:quit-requested",
                serde_json::to_value(&h).expect("serialises"),
            );
        }
        Some(Err(e)) => {
            // Cannot tell: do not risk leaving roles behind silently.
            tracing::error!(error = %e, "cannot check the embedded jitd's grants at quit");
            tray::show_main(&app);
            let _ = app.emit(
                "jit:quit-requested",
                serde_json::json!({"active": [], "removing": 0, "tray": false, "error": e}),
            );
        }
        _ => app.exit(0),
    }
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
        crate::memory::trim_soon();
    }

    fn tray(&self, view: &TrayView) {
        if let Some(t) = self.tray.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            t.show(view);
        }
    }

    fn show_window(&self) {
        tray::show_main(&self.app);
    }

    fn hide_window(&self) {
        if let Some(w) = self.app.get_webview_window("main") {
            let _ = w.hide();
        }
    }

    fn exit(&self) {
        self.app.exit(0);
    }
}

/// The main window of tauri.conf.json (`"create": false` there): created
/// here so that its web view gets the web process extension
/// ([`webext::dir`]), which must be set before WebKit starts the web
/// process. The mock runtime of the tests has no such window in its config.
fn create_main_window<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<()> {
    let Some(cfg) = app
        .config()
        .app
        .windows
        .iter()
        .find(|w| w.label == "main" && !w.create)
        .cloned()
    else {
        return Ok(());
    };
    if app.get_webview_window("main").is_some() {
        return Ok(());
    }
    let mut b = tauri::WebviewWindowBuilder::from_config(app, &cfg)?;
    if let Some(dir) = webext::dir() {
        b = b.extensions_path(dir);
    }
    b.build()?;
    Ok(())
}

/// A small UI needs no web caches: WebKit's "document viewer" cache model
/// (no page cache, small memory caches) keeps the web process's private
/// memory down; web features the UI never uses are off (docs/measurements.md
/// has what each of these saved).
#[cfg(target_os = "linux")]
fn lean_webview<R: Runtime>(app: &AppHandle<R>) {
    let Some(w) = app.get_webview_window("main") else {
        return;
    };
    let r = w.with_webview(|pv| {
        use webkit2gtk::{SettingsExt, WebContextExt, WebViewExt};
        let v = pv.inner();
        if let Some(ctx) = v.context() {
            ctx.set_cache_model(webkit2gtk::CacheModel::DocumentViewer);
            // No field needs a dictionary: no spell checker loaded.
            ctx.set_spell_checking_enabled(false);
        }
        if let Some(s) = WebViewExt::settings(&v) {
            s.set_enable_page_cache(false);
            // Web features this UI never uses (no canvas, media, storage or
            // WebRTC): off, so the web process never sets them up; also
            // less to attack. The web inspector only in debug builds.
            s.set_enable_webgl(false);
            s.set_enable_webaudio(false);
            s.set_enable_media(false);
            s.set_enable_media_stream(false);
            s.set_enable_mediasource(false);
            s.set_enable_encrypted_media(false);
            s.set_enable_media_capabilities(false);
            s.set_enable_webrtc(false);
            s.set_enable_html5_database(false);
            s.set_enable_html5_local_storage(false);
            s.set_enable_offline_web_application_cache(false);
            s.set_enable_dns_prefetching(false);
            s.set_enable_developer_extras(cfg!(debug_assertions));
        }
    });
    if let Err(e) = r {
        tracing::debug!(error = %e, "webview settings");
    }
}

#[cfg(not(target_os = "linux"))]
fn lean_webview<R: Runtime>(_app: &AppHandle<R>) {}

/// On SIGTERM, SIGINT or SIGHUP (desktop logout, `kill`, Ctrl-C) there is
/// nobody to ask: the embedded jitd's grants are ended and the app waits
/// (at most 20 s) for Keycloak to confirm, then exits. Grants of a remote
/// jitd are not touched.
fn end_grants_on_signal<R: Runtime>(app: AppHandle<R>, d: Arc<Desktop>) {
    tauri::async_runtime::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::warn!("cannot watch for SIGTERM/SIGINT/SIGHUP");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
        if let Some(state) = d
            .backend_now()
            .and_then(|b| b.server.as_ref().map(|s| s.state.clone()))
        {
            if quit::holding(&state).is_ok_and(|h| !h.is_empty()) {
                tracing::warn!("ended by a signal: ending the embedded jitd's grants first");
                if let Err(e) =
                    quit::end_all(&state, std::time::Duration::from_secs(20), |_| {}).await
                {
                    tracing::error!(error = %e, "grants ended, removal not confirmed");
                }
            }
        }
        app.exit(0);
    });
}

/// Whether a dev-server URL (`devUrl`) answers a TCP connect within 2 s
/// (a build without the bundled UI must not show a blank window).
pub fn dev_server_reachable(url: &tauri::Url) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let host = url.host_str().ok_or("no host in the URL")?;
    let port = url.port_or_known_default().ok_or("no port in the URL")?;
    let addrs = (host, port).to_socket_addrs().map_err(|e| e.to_string())?;
    let mut last = "no address".to_string();
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

fn data_dir<R: Runtime>(app: &AppHandle<R>, opts: &Options) -> Option<std::path::PathBuf> {
    opts.data_dir.clone().or_else(|| {
        let base = app.path().app_data_dir().ok()?;
        Some(match &opts.profile {
            Some(p) => base.join("profiles").join(p),
            None => base,
        })
    })
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
    create_main_window(app)?;
    if opts.tray {
        // Only on the real runtime (the mock runtime has no webview).
        lean_webview(app);
        match tray::create(app, d.clone()) {
            Ok(t) => *sink.tray.lock().unwrap_or_else(|p| p.into_inner()) = Some(t),
            Err(e) => tracing::warn!(error = %e, "no tray icon; closing the window quits"),
        }
    }

    // A deep link this app was started with; later launches of the same
    // profile hand theirs over (single instance).
    if let Some(link) = instance::link_in_args(&std::env::args().skip(1).collect::<Vec<_>>()) {
        d.set_deep_link(link);
    }
    {
        let d = d.clone();
        instance::serve(move |args| {
            if let Some(s) = d.sink() {
                s.show_window();
            }
            if let Some(link) = instance::link_in_args(&args) {
                d.set_deep_link(link.clone());
                if let Some(s) = d.sink() {
                    s.emit(
                        "jit:deep-link",
                        serde_json::to_value(&link).expect("serialises"),
                    );
                }
            }
        });
    }

    if opts.tray {
        // The real app (not the mock runtime): a desktop logout or `kill`
        // ends the app without a window to ask in.
        end_grants_on_signal(app.clone(), d.clone());
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
