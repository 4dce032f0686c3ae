//! The app's shared state ([`Desktop`]), what the UI sees of the session
//! ([`SessionInfo`]), and the narrow interface to the Tauri app
//! ([`UiSink`]) so the logic stays independent of the runtime type.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::backend::Backend;
use crate::notifications::Notifier;
use crate::session::Session;
use crate::settings::SettingsStore;
use crate::tray::TrayView;

/// State of the connection to jitd's event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Connection {
    Connecting,
    Live,
    Polling,
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Embedded,
    Remote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenStorage {
    Keyring,
    Memory,
}

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
}

/// How the app was asked to run. [`Options::from_env`] reads the contract's
/// environment variables; tests build one by hand.
#[derive(Debug, Clone)]
pub struct Options {
    /// `JIT_SERVER`: a remote jitd; `None` embeds one.
    pub server: Option<String>,
    /// `JIT_DESKTOP_DATA_DIR`, else Tauri's app data dir.
    pub data_dir: Option<PathBuf>,
    /// Use the OS keyring (Secret Service) for tokens.
    pub keyring: bool,
    /// Create the tray icon and hide the window to it on close.
    pub tray: bool,
    /// Subscribe to events, refresh tokens and raise notifications.
    pub background: bool,
}

impl Options {
    pub fn from_env() -> Options {
        let nonempty = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Options {
            server: nonempty("JIT_SERVER").map(|s| s.trim().trim_end_matches('/').to_string()),
            data_dir: nonempty("JIT_DESKTOP_DATA_DIR").map(PathBuf::from),
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
}

impl Desktop {
    pub fn new(opts: Options) -> Arc<Desktop> {
        let settings = SettingsStore::open(opts.data_dir.as_deref());
        let session = Session::new(opts.keyring);
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
            opts,
        })
    }

    pub fn set_sink(&self, sink: Arc<dyn UiSink>) {
        let _ = self.sink.set(sink);
    }

    pub fn sink(&self) -> Option<&Arc<dyn UiSink>> {
        self.sink.get()
    }

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

    /// A client of jitd for commands; a readable error when not logged in.
    pub async fn client(&self) -> Result<jit_client::Client, String> {
        let b = self.backend().await?;
        if !self.session.logged_in().await {
            return Err("not logged in: log in first".into());
        }
        Ok(b.client.clone())
    }

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
            self.emit_session();
        }
    }

    pub async fn session_info(&self) -> SessionInfo {
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
        SessionInfo {
            logged_in,
            username,
            server_url: backend
                .as_ref()
                .map(|b| b.url.clone())
                .or_else(|| self.opts.server.clone())
                .unwrap_or_default(),
            backend: self.backend_kind(),
            connection: self.connection(),
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
