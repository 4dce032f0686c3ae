//! The app's shared state ([`Desktop`]), what the UI sees of the session
//! ([`SessionInfo`]), and the narrow interface to the Tauri app
//! ([`UiSink`]) so the logic stays independent of the runtime type.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::backend::Backend;
use crate::error::CommandError;
use crate::notifications::Notifier;
use crate::session::Session;
use crate::settings::SettingsStore;
use crate::tray_view::TrayView;

/// State of the connection to jitd's event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Connection {
    Connecting,
    Live,
    Polling,
    Offline,
}

pub use crate::backend::BackendKind;

pub use crate::session::TokenStorage;

/// `SessionInfo` of the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    pub logged_in: bool,
    pub username: Option<String>,
    pub server_url: String,
    pub backend: BackendKind,
    pub connection: Connection,
    pub token_storage: TokenStorage,
    pub notice: Option<String>,
    /// Which part is down and what still works; `None` when all is well.
    pub outage: Option<Outage>,
    /// Why the last login was lost (Keycloak session ended, ...), shown on
    /// the login screen; `None` after a normal logout.
    pub lost_reason: Option<String>,
    /// Increases with every `SessionInfo` computed: a command's answer and
    /// the `jit:session` events may arrive in any order; the UI keeps the
    /// newest.
    pub version: u64,
}

/// A part the app cannot reach, in words (`SessionInfo.outage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outage {
    /// `jitd` or `keycloak`.
    pub part: &'static str,
    pub message: String,
}

/// How the app was asked to run. [`Options::from_env`] reads the contract's
/// environment variables; tests build one by hand.
#[derive(Debug, Clone)]
pub struct Options {
    /// `JIT_SERVER`: a remote jitd; `None` embeds one.
    pub server: Option<String>,
    /// `JIT_DESKTOP_DATA_DIR`, else Tauri's app data dir (with
    /// `profiles/{profile}` below it for a named profile).
    pub data_dir: Option<PathBuf>,
    /// `JIT_PROFILE`: a named profile (its own data dir, login and app
    /// instance), e.g. one per user sharing a desktop account.
    pub profile: Option<String>,
    /// Use the OS keyring (Secret Service) for tokens.
    pub keyring: bool,
    /// Create the tray icon and hide the window to it on close.
    pub tray: bool,
    /// Subscribe to events, refresh tokens and raise notifications.
    pub background: bool,
}

impl Options {
    /// The options from `JIT_SERVER`, `JIT_DESKTOP_DATA_DIR` and `JIT_PROFILE`.
    pub fn from_env() -> Options {
        let nonempty = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Options {
            server: nonempty("JIT_SERVER").map(|s| s.trim().trim_end_matches('/').to_string()),
            data_dir: nonempty("JIT_DESKTOP_DATA_DIR").map(PathBuf::from),
            profile: crate::instance::profile_name(),
            keyring: true,
            tray: true,
            background: true,
        }
    }

    /// No keyring, tray or background tasks: for tests on the mock runtime.
    pub fn headless(server: &str, data_dir: Option<PathBuf>) -> Options {
        Options {
            server: Some(server.to_string()),
            data_dir,
            profile: None,
            keyring: false,
            tray: false,
            background: false,
        }
    }
}

/// What the Rust side needs from the Tauri app: emit events, update the
/// tray, bring the window forward.
pub trait UiSink: Send + Sync {
    fn emit(&self, event: &str, payload: serde_json::Value);
    fn tray(&self, view: &TrayView);
    fn show_window(&self);
    fn hide_window(&self);
    /// Ends the app (exit code 0).
    fn exit(&self);
}

/// Everything the commands and background tasks share.
pub struct Desktop {
    pub opts: Options,
    pub settings: SettingsStore,
    pub session: Arc<Session>,
    pub notifier: Notifier,
    backend: watch::Sender<Option<Result<Arc<Backend>, String>>>,
    connection: RwLock<Connection>,
    /// A notice about the backend (e.g. the embedded jitd failed to start).
    backend_notice: RwLock<Option<String>>,
    sink: OnceLock<Arc<dyn UiSink>>,
    /// Serialises `jit:session` emits so the last one is the current state.
    emit_lock: tokio::sync::Mutex<()>,
    pub(crate) live: std::sync::Mutex<Option<tauri::async_runtime::JoinHandle<()>>>,
    /// The latest deep link not yet taken by the UI.
    deep_link: std::sync::Mutex<Option<crate::instance::DeepLink>>,
    /// Source of `SessionInfo.version`.
    info_version: std::sync::atomic::AtomicU64,
}

impl Desktop {
    /// The app's state for `opts` (settings and session read from its data dir).
    pub fn new(opts: Options) -> Arc<Desktop> {
        let settings = SettingsStore::open(opts.data_dir.as_deref());
        let session = Session::with_data_dir(opts.keyring, opts.data_dir.as_deref());
        Arc::new(Desktop {
            settings,
            session,
            notifier: Notifier::new(),
            backend: watch::channel(None).0,
            connection: RwLock::new(Connection::Connecting),
            backend_notice: RwLock::new(None),
            sink: OnceLock::new(),
            emit_lock: tokio::sync::Mutex::new(()),
            live: std::sync::Mutex::new(None),
            deep_link: std::sync::Mutex::new(None),
            info_version: std::sync::atomic::AtomicU64::new(0),
            opts,
        })
    }

    /// Keeps `link` until the UI takes it ([`Self::take_deep_link`]).
    pub fn set_deep_link(&self, link: crate::instance::DeepLink) {
        *self.deep_link.lock().unwrap_or_else(|p| p.into_inner()) = Some(link);
    }

    /// The `jit://` link the app was started with, once.
    pub fn take_deep_link(&self) -> Option<crate::instance::DeepLink> {
        self.deep_link
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Where events for the UI go (set once, when the window exists).
    pub fn set_sink(&self, sink: Arc<dyn UiSink>) {
        let _ = self.sink.set(sink);
    }

    /// The UI's event sink, once set.
    pub fn sink(&self) -> Option<&Arc<dyn UiSink>> {
        self.sink.get()
    }

    /// Remote when `JIT_SERVER` is set, else embedded.
    pub fn backend_kind(&self) -> BackendKind {
        if self.opts.server.is_some() {
            BackendKind::Remote
        } else {
            BackendKind::Embedded
        }
    }

    /// Records the backend once it is up (or why it is not).
    pub fn set_backend(self: &Arc<Self>, b: Result<Arc<Backend>, String>) {
        if let Err(e) = &b {
            *self
                .backend_notice
                .write()
                .unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            self.set_connection(Connection::Offline);
        }
        self.backend.send_replace(Some(b));
        self.emit_session();
    }

    /// The backend, waiting (up to 30 s) while the embedded jitd starts.
    pub async fn backend(&self) -> Result<Arc<Backend>, String> {
        let mut rx = self.backend.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            rx.wait_for(|v| v.is_some()).await.map(|v| v.clone())
        })
        .await;
        match waited {
            Ok(Ok(v)) => v.expect("checked by wait_for"),
            Ok(Err(_)) => Err("the app is shutting down".into()),
            Err(_) => Err("the embedded jitd is still starting; try again in a moment".into()),
        }
    }

    /// The backend if it is ready now.
    pub fn backend_now(&self) -> Option<Arc<Backend>> {
        self.backend
            .borrow()
            .as_ref()
            .and_then(|r| r.as_ref().ok().cloned())
    }

    /// The backend for commands (errors as `{code, message}`).
    pub async fn backend_cmd(&self) -> Result<Arc<Backend>, CommandError> {
        self.backend().await.map_err(|e| {
            let code = if e.contains("still starting") {
                "starting"
            } else {
                "backend_failed"
            };
            CommandError::new(code, e)
        })
    }

    /// A client of jitd for commands; `login_required` when not logged in.
    pub async fn client(&self) -> Result<jit_client::Client, CommandError> {
        let b = self.backend_cmd().await?;
        if !self.session.logged_in().await {
            return Err(CommandError::new(
                "login_required",
                "You are not logged in: log in first.",
            ));
        }
        Ok(b.client.clone())
    }

    /// The connection to jitd as last seen (connecting, live, polling, offline).
    pub fn connection(&self) -> Connection {
        *self.connection.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the connection state; tells the UI when it changed.
    pub fn set_connection(self: &Arc<Self>, c: Connection) {
        let changed = {
            let mut cur = self.connection.write().unwrap_or_else(|p| p.into_inner());
            let changed = *cur != c;
            *cur = c;
            changed
        };
        if changed {
            tracing::debug!(connection = ?c, "connection state");
            self.emit_session();
        }
    }

    /// The session as the UI shows it; each answer has a higher `version`.
    pub async fn session_info(&self) -> SessionInfo {
        let version = self
            .info_version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let backend = self.backend_now();
        let (logged_in, username) = self.session.who().await;
        let notice = {
            let b = self
                .backend_notice
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let k = self.session.notice();
            match (b, k) {
                (Some(b), Some(k)) => Some(format!("{b} — {k}")),
                (b, k) => b.or(k),
            }
        };
        let connection = if logged_in {
            self.connection()
        } else {
            // Nothing is connected while logged out (login screen, after
            // logout alike).
            Connection::Offline
        };
        let outage = if !logged_in {
            None
        } else if let Some(k) = self.session.keycloak_down() {
            Some(Outage {
                part: "keycloak",
                message: format!(
                    "{k}. Your login cannot be renewed until it is back; jitd still grants and removes roles on time. Lists may be out of date."
                ),
            })
        } else if connection == Connection::Offline {
            Some(Outage {
                part: "jitd",
                message: format!(
                    "jitd ({}) cannot be reached. Lists show what was last loaded; nothing can be requested or decided until it is back. Grants still end on time on the server. Reconnecting…",
                    backend
                        .as_ref()
                        .map(|b| b.url.clone())
                        .or_else(|| self.opts.server.clone())
                        .unwrap_or_default()
                ),
            })
        } else {
            None
        };
        SessionInfo {
            version,
            outage,
            lost_reason: if logged_in {
                None
            } else {
                self.session.lost_reason()
            },
            logged_in,
            username,
            server_url: backend
                .as_ref()
                .map(|b| b.url.clone())
                .or_else(|| self.opts.server.clone())
                .unwrap_or_default(),
            backend: self.backend_kind(),
            connection,
            token_storage: self.session.storage(),
            notice,
        }
    }

    /// Emits `jit:session` with the current [`SessionInfo`].
    pub fn emit_session(self: &Arc<Self>) {
        let Some(sink) = self.sink.get().cloned() else {
            return;
        };
        let me = self.clone();
        tauri::async_runtime::spawn(async move {
            // Fair lock: emits go out in order, each with the state of its turn.
            let _turn = me.emit_lock.lock().await;
            let info = me.session_info().await;
            sink.emit(
                "jit:session",
                serde_json::to_value(info).expect("SessionInfo serialises"),
            );
        });
    }
}
