//! One user's desktop: the real `jit-desktop` binary started by
//! `tauri-driver` (which starts WebKitWebDriver, which starts the app), a
//! WebDriver session on it, and the user's D-Bus session ([`Bus`]).
//!
//! The app inherits its environment from tauri-driver, so each desktop has
//! its own tauri-driver process with the user's environment: `BROWSER` (the
//! scripted browser `kc-form-login` that signs in on Keycloak's real login
//! page), `JIT_TEST_USERNAME`/`JIT_TEST_PASSWORD`, `JIT_SERVER`,
//! `JIT_DESKTOP_DATA_DIR`, the bus address, and its own XDG folders.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

use crate::bus::Bus;
use crate::procs::{self, MemoryReport};

/// The most one WebDriver command may take. WebKitWebDriver can stop
/// answering (seen once right after a window-close request); a test then
/// fails with this message instead of hanging the whole run.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// Runs one WebDriver command within [`COMMAND_LIMIT`]; panics (fails the
/// test) naming `what` when it does not answer in time.
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(COMMAND_LIMIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("WebDriver did not answer within {COMMAND_LIMIT:?}: {what}"),
    }
}

/// Where the binaries and tools are. Each can be overridden by env.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `JIT_DESKTOP_APP`, else `target/<profile>/jit-desktop`.
    pub app: PathBuf,
    /// `TAURI_DRIVER`, else `tauri-driver` on PATH, else `~/.cargo/bin/tauri-driver`.
    pub tauri_driver: PathBuf,
    /// `WEBKIT_WEBDRIVER`, else `WebKitWebDriver` on PATH.
    pub webkit_driver: PathBuf,
    /// `target/<profile>/kc-form-login`.
    pub kc_form_login: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

/// `target/<profile>` of the running test binary (`target/<profile>/deps/x`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// This crate's directory: `CARGO_MANIFEST_DIR` as `cargo test` sets it
/// for this run, the path built in only without it (a test binary shared
/// by two checkouts through one `CARGO_TARGET_DIR` has the other's built
/// in).
pub fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    crate_dir()
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// Where screenshots go: `docs/screenshots/` when `JIT_UPDATE_SCREENSHOTS=1`
/// (to refresh the committed ones), else `target/desktop-e2e/screenshots/`
/// so that ordinary runs (CI) leave the work tree clean.
pub fn screenshots_dir() -> PathBuf {
    if std::env::var("JIT_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        workspace_root().join("docs/screenshots")
    } else {
        artifacts_dir().join("screenshots")
    }
}

/// `target/desktop-e2e/`: screenshots of ordinary runs and of failures.
pub fn artifacts_dir() -> PathBuf {
    profile_dir()
        .parent()
        .map(|t| t.join("desktop-e2e"))
        .expect("target dir")
}

impl Tools {
    /// Finds everything; the error says what is missing and how to get it.
    pub fn find() -> Result<Tools> {
        let app = std::env::var_os("JIT_DESKTOP_APP")
            .map(PathBuf::from)
            .unwrap_or_else(|| profile_dir().join("jit-desktop"));
        if !app.is_file() {
            bail!(
                "the desktop app {} is missing: build it with the UI bundled \
                 (`npm ci && npm run build` in ui/, then `cargo build -p jit-desktop --features custom-protocol`), \
                 or run `cargo xtask desktop-test`, which does both",
                app.display()
            );
        }
        let (tauri_driver, webkit_driver) = Tools::drivers()?;
        let kc_form_login = profile_dir().join("kc-form-login");
        if !kc_form_login.is_file() {
            bail!(
                "{} is missing: `cargo build --workspace --bins`",
                kc_form_login.display()
            );
        }
        Ok(Tools {
            app,
            tauri_driver,
            webkit_driver,
            kc_form_login,
        })
    }

    /// `(tauri-driver, WebKitWebDriver)`.
    pub fn drivers() -> Result<(PathBuf, PathBuf)> {
        let tauri_driver = std::env::var_os("TAURI_DRIVER")
            .map(PathBuf::from)
            .or_else(|| on_path("tauri-driver"))
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cargo/bin/tauri-driver"))
                    .filter(|p| p.is_file())
            })
            .context(
                "tauri-driver is missing: `cargo install tauri-driver --version ^2 --locked` \
                 (cargo xtask desktop-test installs it)",
            )?;
        let webkit_driver = std::env::var_os("WEBKIT_WEBDRIVER")
            .map(PathBuf::from)
            .or_else(|| on_path("WebKitWebDriver"))
            .context("WebKitWebDriver is missing: `apt-get install webkit2gtk-driver`")?;
        Ok((tauri_driver, webkit_driver))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A running `tauri-driver` and the WebKitWebDriver it started.
pub struct TauriDriver {
    child: Child,
    pub port: u16,
    pub native_port: u16,
    /// Where the stderr of tauri-driver and everything below it (the app's
    /// log, WebKit's warnings) goes: printed when the test fails (a panic
    /// on the thread that started it).
    pub log: PathBuf,
}

thread_local! {
    /// The driver logs of the test running on this thread.
    static LOGS: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Installs (once per process) a panic hook that prints, before the usual
/// panic message, every driver log of the panicking test's thread: a
/// failing test shows what the app said, also after the app was closed.
fn print_logs_on_panic() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let logs = LOGS
                .try_with(|l| std::mem::take(&mut *l.borrow_mut()))
                .unwrap_or_default();
            for log in logs {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                eprintln!(
                    "---- log of the app and its drivers ({}) ----\n{text}---- end of that log ----",
                    log.display()
                );
            }
            default(info);
        }));
    });
}

/// How long one test may run from its first app (or driver) start:
/// `JIT_E2E_TEST_LIMIT_SECS`, else 15 minutes (the slowest test takes
/// about 3 on a loaded 2-core machine).
fn test_limit() -> Duration {
    std::env::var("JIT_E2E_TEST_LIMIT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(15 * 60), Duration::from_secs)
}

thread_local! {
    /// Ends this test's watchdog when the test's thread ends (dropped with
    /// the thread's other locals).
    static WATCHDOG: std::cell::RefCell<Option<std::sync::mpsc::Sender<()>>> =
        const { std::cell::RefCell::new(None) };
}

/// Starts (once per test thread) a watchdog: if the test still runs after
/// [`test_limit`] — hung anywhere, also in a blocking call no async timeout
/// can interrupt — it prints the logs of the test's apps and drivers and
/// ends the test process with exit code 101, so that a hung run shows why
/// instead of being killed from outside without a word.
fn arm_watchdog() {
    if WATCHDOG.with(|w| w.borrow().is_some()) {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::<PathBuf>::new()));
    WATCHDOG_LOGS.with(|l| *l.borrow_mut() = Some(logs.clone()));
    WATCHDOG.with(|w| *w.borrow_mut() = Some(tx));
    let test = std::thread::current().name().unwrap_or("test").to_string();
    let limit = test_limit();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            let logs = logs.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for log in logs {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                eprintln!(
                    "---- log of the app and its drivers ({}) ----\n{text}---- end of that log ----",
                    log.display()
                );
            }
            eprintln!(
                "desktop-e2e: test {test} still runs after {limit:?} (JIT_E2E_TEST_LIMIT_SECS): \
                 hung; its logs are above; ending the test run"
            );
            std::process::exit(101);
        }
    });
}

thread_local! {
    /// The logs the watchdog of this thread prints.
    static WATCHDOG_LOGS: std::cell::RefCell<Option<std::sync::Arc<std::sync::Mutex<Vec<PathBuf>>>>> =
        const { std::cell::RefCell::new(None) };
}

/// A fresh file for the stderr of one tauri-driver (and the app below it):
/// `target/desktop-e2e/logs/<test thread>-<n>.log`. A green run keeps the
/// app's debug lines and WebKit's a11y warnings out of the console; a
/// failing test prints the file (see [`TauriDriver::stop`]), and so does a
/// test that hangs (see [`arm_watchdog`]).
pub fn driver_log_path() -> PathBuf {
    print_logs_on_panic();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let test = std::thread::current()
        .name()
        .unwrap_or("test")
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_");
    let path = artifacts_dir()
        .join("logs")
        .join(format!("{test}-{}-{n}.log", std::process::id()));
    LOGS.with(|l| l.borrow_mut().push(path.clone()));
    arm_watchdog();
    WATCHDOG_LOGS.with(|l| {
        if let Some(l) = l.borrow().as_ref() {
            l.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(path.clone());
        }
    });
    path
}

impl TauriDriver {
    /// Starts tauri-driver on free ports with `env` (which the app will
    /// inherit) and waits until both it and WebKitWebDriver listen.
    pub fn start(
        tauri_driver: &Path,
        webkit_driver: &Path,
        env: &[(String, String)],
    ) -> Result<TauriDriver> {
        let port = free_port();
        let mut native_port = free_port();
        while native_port == port {
            native_port = free_port();
        }
        let log = driver_log_path();
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(tauri_driver);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--native-port")
            .arg(native_port.to_string())
            .arg("--native-driver")
            .arg(webkit_driver)
            // Makes WebDriver calls hang with WebKitGTK 2.50: never inherit it.
            .env_remove("WEBKIT_DISABLE_COMPOSITING_MODE")
            .env_remove("JIT_TOKEN")
            .env_remove("JIT_PROFILE")
            .env("NO_AT_BRIDGE", "1")
            .env("TAURI_WEBVIEW_AUTOMATION", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Same process group as the test: a Ctrl-C that ends the test
            // run ends tauri-driver, WebKitWebDriver and the app too.
            .stderr(Stdio::from(log_file));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", tauri_driver.display()))?;
        let mut d = TauriDriver {
            child,
            port,
            native_port,
            log,
        };
        let start = Instant::now();
        while !(port_open(port) && port_open(native_port)) {
            if let Some(status) = d.child.try_wait()? {
                bail!(
                    "tauri-driver exited at start ({status}); log: {}",
                    d.log.display()
                );
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("tauri-driver (port {port}) / WebKitWebDriver (port {native_port}) did not listen within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Stops tauri-driver and everything below it (WebKitWebDriver, the app
    /// and its WebKit processes): SIGTERM, then SIGKILL after a grace time.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let root = self.pid();
        // Taken before anything dies: orphans get re-parented and would be
        // lost from the tree.
        let mut below: Vec<i32> = procs::descendants(root).iter().map(|p| p.pid).collect();
        below.reverse();
        procs::signal_all(&below, libc::SIGTERM);
        // SAFETY: plain syscall on our own child.
        unsafe {
            libc::kill(root, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline
            && (below.iter().any(|&p| procs::alive(p))
                || self.child.try_wait().ok().flatten().is_none())
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        procs::signal_all(&below, libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TauriDriver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a desktop is started.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Keycloak user who signs in when `login-button` is clicked.
    pub user: String,
    /// `JIT_SERVER`: the remote jitd the app connects to.
    pub server: String,
    /// `JIT_DESKTOP_DATA_DIR`; a fresh temporary one when `None`.
    pub data_dir: Option<PathBuf>,
    /// More environment for the app.
    pub env: Vec<(String, String)>,
    /// Command-line arguments of the app (e.g. a deep link).
    pub args: Vec<String>,
    /// The app's home for `XDG_CONFIG_HOME`, `XDG_CACHE_HOME`,
    /// `XDG_DATA_HOME` and `XDG_RUNTIME_DIR`; a fresh temporary one when
    /// `None`. A restart passes the closed app's ([`Kept::home`]), so that
    /// WebKit's and Mesa's caches stay, as on a real user's restart.
    pub home: Option<PathBuf>,
}

/// What a closed app leaves for its restart: its data folder and its home
/// (each deleted when this is dropped, if it was made here).
pub struct Kept {
    _data: Option<tempfile::TempDir>,
    _home: Option<tempfile::TempDir>,
    home: PathBuf,
}

impl Kept {
    /// The closed app's home (for [`Launch::home`]).
    pub fn home(&self) -> PathBuf {
        self.home.clone()
    }
}

impl Launch {
    pub fn new(user: &str, server: &str) -> Launch {
        Launch {
            user: user.to_string(),
            server: server.to_string(),
            data_dir: None,
            env: Vec::new(),
            args: Vec::new(),
            home: None,
        }
    }
}

/// Startup timings of a desktop, from the moment the WebDriver session was
/// requested (which launches the process).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// New-session answered (process up, webview under automation).
    pub session: Duration,
    /// The shell is rendered (`login-button` or `session-user` displayed).
    pub shell: Duration,
}

/// A user's running app under WebDriver.
pub struct Desktop {
    pub user: String,
    pub tools: Tools,
    /// `None` only once closed.
    bus: Option<Bus>,
    pub data_dir: PathBuf,
    pub timings: Timings,
    /// When the new-session request was sent.
    pub launched_at: Instant,
    client: Option<Client>,
    driver: TauriDriver,
    /// The app's environment (to start it again by hand, e.g. a second launch).
    pub env: Vec<(String, String)>,
    home: PathBuf,
    _home: Option<tempfile::TempDir>,
    _data: Option<tempfile::TempDir>,
}

/// The Secret Service attribute `service` of the app's keyring entries.
pub const KEYRING_SERVICE: &str = "jit-access";

/// `[data-testid="ID"]`.
pub fn testid(id: &str) -> String {
    format!("[data-testid=\"{id}\"]")
}

impl Desktop {
    /// Starts the app for `launch.user` on a bus of its own (the ambient
    /// one if free) and waits until its shell is shown.
    pub async fn launch(launch: Launch) -> Desktop {
        let bus = Bus::acquire().unwrap_or_else(|e| panic!("D-Bus session: {e:#}"));
        // A first start: no tokens of an earlier test in the keyring (the
        // ambient one is shared by the tests, and a jitd port may come
        // again, which would log the app in from the old entry).
        bus.clear_secrets(&[("service", KEYRING_SERVICE)])
            .unwrap_or_else(|e| panic!("clearing the keyring: {e:#}"));
        Desktop::launch_on(launch, bus).await
    }

    /// Same, on `bus` (e.g. the one of an earlier run of the same user, to
    /// find its keyring again: see [`Desktop::close`]).
    pub async fn launch_on(launch: Launch, bus: Bus) -> Desktop {
        let tools = Tools::find().unwrap_or_else(|e| panic!("{e:#}"));
        let (home, home_tmp) = match &launch.home {
            Some(h) => (h.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix(&format!("jit-desktop-{}-", launch.user))
                    .tempdir()
                    .unwrap();
                (t.path().to_path_buf(), Some(t))
            }
        };
        for d in ["config", "cache", "data", "run"] {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        std::fs::set_permissions(
            home.join("run"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let (data_dir, data_tmp) = match &launch.data_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("jit-desktop-data-")
                    .tempdir()
                    .unwrap();
                (t.path().to_path_buf(), Some(t))
            }
        };
        let h = |d: &str| home.join(d).display().to_string();
        let mut env: Vec<(String, String)> = vec![
            ("DBUS_SESSION_BUS_ADDRESS".into(), bus.address.clone()),
            ("BROWSER".into(), tools.kc_form_login.display().to_string()),
            ("JIT_TEST_USERNAME".into(), launch.user.clone()),
            (
                "JIT_TEST_PASSWORD".into(),
                jit_testkit::demo_password(&launch.user),
            ),
            ("JIT_SERVER".into(), launch.server.clone()),
            (
                "JIT_DESKTOP_DATA_DIR".into(),
                data_dir.display().to_string(),
            ),
            // Each user's own WebKit caches and settings.
            ("XDG_CONFIG_HOME".into(), h("config")),
            ("XDG_CACHE_HOME".into(), h("cache")),
            ("XDG_DATA_HOME".into(), h("data")),
            ("XDG_RUNTIME_DIR".into(), h("run")),
        ];
        // The app's log (in the driver's log file, printed when the test
        // fails): warnings, and its own debug lines, unless RUST_LOG says
        // otherwise.
        if std::env::var_os("RUST_LOG").is_none() {
            env.push(("RUST_LOG".into(), "warn,jit_desktop=debug".into()));
        }
        env.extend(launch.env.iter().cloned());
        let driver = TauriDriver::start(&tools.tauri_driver, &tools.webkit_driver, &env)
            .unwrap_or_else(|e| panic!("{e:#}"));

        let mut caps = serde_json::Map::new();
        caps.insert(
            "tauri:options".into(),
            serde_json::json!({ "application": tools.app, "args": launch.args }),
        );
        let launched_at = Instant::now();
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "WebDriver session for {} ({}) through tauri-driver failed: {e}",
                    launch.user,
                    tools.app.display()
                )
            });
        let session = launched_at.elapsed();
        let mut d = Desktop {
            user: launch.user,
            tools,
            bus: Some(bus),
            data_dir,
            timings: Timings {
                session,
                shell: Duration::ZERO,
            },
            launched_at,
            client: Some(client),
            driver,
            env,
            home,
            _home: home_tmp,
            _data: data_tmp,
        };
        d.wait_any(
            &["login-button", "session-user"],
            Duration::from_secs(30),
            "the app shell",
        )
        .await;
        d.timings.shell = launched_at.elapsed();
        d
    }

    /// The user's D-Bus session (keyring, notifications).
    pub fn bus(&self) -> &Bus {
        self.bus.as_ref().expect("bus")
    }

    /// The bus, to change it (start or stop the tray host).
    pub fn bus_mut(&mut self) -> &mut Bus {
        self.bus.as_mut().expect("bus")
    }

    fn x11(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(crate::bus::dbusmock_python())
            .arg(crate_dir().join("x11_window.py"))
            .args(args)
            .output()
            .expect("run x11_window.py");
        assert!(
            out.status.success(),
            "x11_window.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The app's top-level X11 window.
    pub fn x11_window(&self) -> String {
        let pid = self.app_pid().expect("the app is running");
        let ids = self.x11(&["find", &pid.to_string()]);
        ids.split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no top-level window of pid {pid}"))
            .to_string()
    }

    /// `viewable` or `hidden`.
    pub fn window_state(&self, xid: &str) -> String {
        self.x11(&["state", xid])
    }

    /// Closes the window the way a window manager's close button does
    /// (WM_DELETE_WINDOW).
    pub fn close_window(&self, xid: &str) {
        self.x11(&["close", xid]);
    }

    /// Waits until the window is `state` (`viewable` / `hidden`).
    pub async fn wait_window(&self, xid: &str, state: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let s = self.window_state(xid);
            if s == state {
                return;
            }
            if start.elapsed() > timeout {
                self.fail(&format!(
                    "the window is {s}, not {state}, after {timeout:?}"
                ))
                .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until process `pid` has ended; panics after `timeout`.
    pub async fn wait_exit(pid: i32, what: &str, timeout: Duration) {
        let start = Instant::now();
        while procs::alive(pid) {
            if start.elapsed() > timeout {
                panic!("{what}: the app (pid {pid}) still runs after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The WebDriver client.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    /// Pid of the `jit-desktop` process (a child of WebKitWebDriver).
    pub fn app_pid(&self) -> Option<i32> {
        let name = self.tools.app.file_name();
        procs::descendants(self.driver.pid())
            .into_iter()
            .find(|p| {
                p.exe.as_deref().and_then(Path::file_name) == name
                    || Some(std::ffi::OsStr::new(&p.comm)) == name
            })
            .map(|p| p.pid)
    }

    /// RSS of the app and its WebKit processes now.
    pub fn memory(&self) -> MemoryReport {
        let pid = self
            .app_pid()
            .expect("jit-desktop process under tauri-driver");
        MemoryReport::of(pid).expect("jit-desktop process")
    }

    /// Private memory of the app and its WebKit processes once idle: sampled
    /// every 2 s until two samples in a row agree within 0.25 MiB (at most
    /// 40 s; then the last one). Returns it with every sample's total
    /// private MiB, so the report shows how it settled.
    pub async fn memory_settled(&self) -> (MemoryReport, Vec<f64>) {
        let mib = |r: &MemoryReport| r.private_kib() as f64 / 1024.0;
        let start = Instant::now();
        let mut last = self.memory();
        let mut seen = vec![mib(&last)];
        while start.elapsed() < Duration::from_secs(40) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = self.memory();
            seen.push(mib(&now));
            let agree = (mib(&now) - mib(&last)).abs() <= 0.25;
            last = now;
            if agree {
                break;
            }
        }
        (last, seen)
    }

    /// Finds `[data-testid=ID]` now, if present.
    pub async fn find(&self, id: &str) -> Option<Element> {
        bounded(
            &format!("find {id}"),
            self.client().find(Locator::Css(&testid(id))),
        )
        .await
        .ok()
    }

    /// Waits until a displayed element matches `css`.
    pub async fn wait_css(&self, css: &str, timeout: Duration, what: &str) -> Element {
        let start = Instant::now();
        loop {
            if let Ok(els) = bounded(what, self.client().find_all(Locator::Css(css))).await {
                for e in els {
                    if bounded(what, e.is_displayed()).await.unwrap_or(false) {
                        return e;
                    }
                }
            }
            if start.elapsed() > timeout {
                self.fail(&format!(
                    "timed out after {timeout:?} waiting for {what} (`{css}`)"
                ))
                .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `[data-testid=ID]` is displayed.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Element {
        self.wait_css(&testid(id), timeout, id).await
    }

    /// Waits until one of `ids` is displayed; returns which.
    pub async fn wait_any(&self, ids: &[&str], timeout: Duration, what: &str) -> String {
        let css: Vec<String> = ids.iter().map(|i| testid(i)).collect();
        let e = self.wait_css(&css.join(", "), timeout, what).await;
        e.attr("data-testid")
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Clicks `[data-testid=ID]` from the page's own event loop, for a
    /// button that hides or closes the window: WebKitWebDriver's element
    /// click waits for the window to render again and never answers once it
    /// is hidden (seen with "keep running in the background"). The command
    /// returns at once; wait on the click's effect afterwards.
    pub async fn click_detached(&self, id: &str) {
        self.wait(id, Duration::from_secs(10)).await;
        let script = format!(
            "setTimeout(() => document.querySelector('{}').click(), 0); return true;",
            testid(id)
        );
        if let Err(err) = bounded(
            &format!("click on {id} (detached)"),
            self.client().execute(&script, vec![]),
        )
        .await
        {
            self.fail(&format!("click on {id}: {err}")).await;
        }
    }

    /// Clicks `[data-testid=ID]` once it is displayed.
    pub async fn click(&self, id: &str) {
        let e = self.wait(id, Duration::from_secs(10)).await;
        if let Err(err) = bounded(&format!("click on {id}"), e.click()).await {
            self.fail(&format!("click on {id}: {err}")).await;
        }
    }

    /// Text of `[data-testid=ID]` once displayed.
    pub async fn text(&self, id: &str) -> String {
        let e = self.wait(id, Duration::from_secs(10)).await;
        bounded(&format!("text of {id}"), e.text())
            .await
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Waits until the text of `[data-testid=ID]` satisfies `pred`.
    pub async fn wait_text(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            if let Some(e) = self.find(id).await {
                if let Ok(t) = bounded(what, e.text()).await {
                    last = t.trim().to_string();
                    if pred(&last) {
                        return last;
                    }
                }
            }
            if start.elapsed() > timeout {
                self.fail(&format!(
                    "timed out after {timeout:?} waiting for {id} to be {what} (last text {last:?})"
                ))
                .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until property `prop` of `[data-testid=ID]` satisfies `pred`.
    pub async fn wait_prop(
        &self,
        id: &str,
        prop: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        let mut last = None;
        loop {
            if let Some(e) = self.find(id).await {
                if let Ok(Some(v)) = e.prop(prop).await {
                    if pred(&v) {
                        return v;
                    }
                    last = Some(v);
                }
            }
            if start.elapsed() > timeout {
                self.fail(&format!(
                    "timed out after {timeout:?} waiting for {id}.{prop} (last {last:?})"
                ))
                .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the text of an input as a user does (click, Ctrl+A, type)
    /// and checks the result. WebDriver's Element Clear is of no use here:
    /// with WebKitWebDriver it fires no `input` event, so a controlled
    /// (Preact) field keeps its state and the next keystrokes append to it.
    pub async fn replace_text(&self, field: &Element, text: &str) {
        use fantoccini::key::Key;
        if let Err(e) = field.click().await {
            self.fail(&format!("focus the field: {e}")).await;
        }
        // Two calls: WebKitWebDriver drops what follows the NULL key that
        // releases Ctrl within one call.
        let select_all = format!("{}a{}", Key::Control, Key::Null);
        for keys in [select_all.as_str(), text] {
            if let Err(e) = field.send_keys(keys).await {
                self.fail(&format!("type {keys:?}: {e}")).await;
            }
        }
        let now = field.prop("value").await.ok().flatten().unwrap_or_default();
        if now != text {
            self.fail(&format!("field holds {now:?} after typing {text:?}"))
                .await;
        }
    }

    /// Clicks `login-button` (the app opens `$BROWSER` = kc-form-login,
    /// which signs in on Keycloak's page) and waits for `session-user`.
    /// Returns how long the login took.
    pub async fn login(&self) -> Duration {
        let start = Instant::now();
        self.click("login-button").await;
        let user = self.user.clone();
        self.wait_text("session-user", Duration::from_secs(60), &user, |t| {
            t.split_whitespace().any(|w| w == user)
        })
        .await;
        start.elapsed()
    }

    /// Waits until the page has painted what the DOM holds now (two
    /// animation frames, then a little more): WebKit's screenshots are of
    /// the last painted frame, which can be older than the DOM.
    pub async fn settle(&self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.client().execute_async(
                "const done = arguments[arguments.length - 1];\n\
                 requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
                vec![],
            ),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// Saves a PNG of the window as `NAME.png` in [`screenshots_dir`].
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        self.settle().await;
        let png = self
            .client()
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        assert!(
            png.starts_with(b"\x89PNG"),
            "screenshot {name} is not a PNG"
        );
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap();
        eprintln!("desktop-e2e: screenshot {}", path.display());
        path
    }

    /// Text of the whole page (for failure messages).
    pub async fn page_text(&self) -> String {
        match self
            .client()
            .execute(
                "return document.body ? document.body.innerText : '(no body)';",
                vec![],
            )
            .await
        {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(e) => format!("(page text unavailable: {e})"),
        }
    }

    /// Panics with `msg`, after saving a screenshot and the page text of
    /// the moment to `target/desktop-e2e/failures/`.
    pub async fn fail(&self, msg: &str) -> ! {
        let dir = artifacts_dir().join("failures");
        let _ = std::fs::create_dir_all(&dir);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let shot = dir.join(format!("{}-{stamp}.png", self.user));
        let shot_note = match tokio::time::timeout(COMMAND_LIMIT, self.client().screenshot()).await
        {
            Ok(Ok(png)) if std::fs::write(&shot, &png).is_ok() => {
                format!("screenshot: {}", shot.display())
            }
            Ok(Ok(_)) => "screenshot not written".to_string(),
            Ok(Err(e)) => format!("no screenshot: {e}"),
            Err(_) => format!("no screenshot: WebDriver silent for {COMMAND_LIMIT:?}"),
        };
        let text = tokio::time::timeout(COMMAND_LIMIT, self.page_text())
            .await
            .unwrap_or_else(|_| "(page text: WebDriver did not answer)".to_string());
        let text: String = text.chars().take(3000).collect();
        panic!(
            "[{} desktop] {msg}\n  {shot_note}\n  page text:\n{}",
            self.user,
            text.lines()
                .map(|l| format!("    | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// Ends the WebDriver session (the app is closed), then stops
    /// tauri-driver and anything left below it. Returns the user's bus
    /// (keyring, notification log), which stops when dropped.
    pub async fn close(self) -> Bus {
        self.close_for_restart().await.0
    }

    /// Closes the app but keeps what a restart of the same user needs: the
    /// bus (with the keyring), the data folder and the home ([`Kept`]).
    /// Restart with `Desktop::launch_on(Launch { data_dir: Some(dir),
    /// home: Some(kept.home()), .. }, bus)`.
    pub async fn close_for_restart(mut self) -> (Bus, PathBuf, Kept) {
        if let Some(c) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.close()).await;
        }
        self.driver.stop();
        let bus = self.bus.take().expect("bus");
        let kept = Kept {
            _data: self._data.take(),
            _home: self._home.take(),
            home: self.home.clone(),
        };
        (bus, self.data_dir.clone(), kept)
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        // On a panic the session is not closed politely: the process tree
        // is killed (TauriDriver's Drop), then the bus is stopped.
        self.driver.stop();
    }
}

/// Parses a countdown such as `4m 59s`, `1h 02m 03s`, `59s` or `0:04:59`
/// into seconds.
pub fn countdown_secs(text: &str) -> Option<i64> {
    let t = text.trim();
    if t.contains(':') {
        let parts: Vec<i64> = t
            .split(':')
            .map(|p| p.trim().parse().ok())
            .collect::<Option<_>>()?;
        return Some(parts.iter().fold(0, |acc, p| acc * 60 + p));
    }
    let mut total = 0;
    let mut seen = false;
    for tok in t.split_whitespace() {
        let unit = tok.chars().last()?;
        let n: i64 = tok[..tok.len() - unit.len_utf8()].parse().ok()?;
        total += n * match unit {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        seen = true;
    }
    seen.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::countdown_secs;

    #[test]
    fn countdowns() {
        assert_eq!(countdown_secs("4m 59s"), Some(299));
        assert_eq!(countdown_secs("1h 02m 03s"), Some(3723));
        assert_eq!(countdown_secs("59s"), Some(59));
        assert_eq!(countdown_secs("0:04:59"), Some(299));
        assert_eq!(countdown_secs("expired"), None);
        assert_eq!(countdown_secs(""), None);
    }
}
