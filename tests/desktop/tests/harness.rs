//! Self-tests of the desktop harness that do not need the app: the D-Bus
//! session of `cargo xtask desktop-test` (Xvfb display, gnome-keyring,
//! dbusmock), a private bus, the notification log read back, and
//! tauri-driver + WebKitWebDriver starting and stopping cleanly.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use jit_desktop_e2e::{procs, Bus, TauriDriver, Tools};

/// A Notify through the bus comes back from the log exactly, with the id
/// the server returned; ActionInvoked can be emitted.
fn notify_roundtrip(bus: &Bus) {
    let summary = "URGENT access request: alice → prod-db-admin";
    let body = "rotate the \"replica\" credentials\nticket OPS-1";
    let id = bus
        .send_test_notification(
            summary,
            body,
            &["default", "Open", "approve", "Approve", "deny", "Deny"],
            2,
        )
        .expect("Notify through gdbus");
    let seen = bus.notifications();
    let n = seen
        .iter()
        .find(|n| n.id == id)
        .unwrap_or_else(|| panic!("notification #{id} not in the log: {seen:#?}"));
    assert_eq!(n.app_name, "JIT Access");
    assert_eq!(n.summary, summary);
    assert_eq!(n.body, body);
    assert_eq!(n.urgency(), Some(2));
    assert_eq!(n.action_keys(), ["default", "approve", "deny"]);
    bus.invoke_action(id, "approve")
        .expect("ActionInvoked emitted");
}

/// The Secret Service on the bus stores and returns a secret.
fn secret_roundtrip(bus: &Bus) {
    let mut store = Command::new("secret-tool")
        .args([
            "store",
            "--label=jit-e2e",
            "service",
            "jit-desktop-e2e",
            "user",
            "t",
        ])
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("secret-tool (Debian package libsecret-tools)");
    store.stdin.take().unwrap().write_all(b"s3cret").unwrap();
    assert!(store.wait().unwrap().success(), "secret-tool store");
    let out = Command::new("secret-tool")
        .args(["lookup", "service", "jit-desktop-e2e", "user", "t"])
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s3cret");
    let _ = Command::new("secret-tool")
        .args(["clear", "service", "jit-desktop-e2e", "user", "t"])
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .status();
}

#[test]
fn private_bus_keyring_and_notifications() {
    let bus = Bus::private().expect("private bus");
    assert!(!bus.is_ambient());
    assert!(bus.notifications().is_empty());
    notify_roundtrip(&bus);
    secret_roundtrip(&bus);
}

#[test]
fn session_of_xtask_desktop_test() {
    assert!(
        std::env::var_os("DISPLAY").is_some(),
        "DISPLAY is not set: run under `cargo xtask desktop-test` (xvfb-run)"
    );
    assert_eq!(std::env::var("NO_AT_BRIDGE").as_deref(), Ok("1"));
    assert_eq!(
        std::env::var("TAURI_WEBVIEW_AUTOMATION").as_deref(),
        Ok("true")
    );
    assert!(
        std::env::var_os("WEBKIT_DISABLE_COMPOSITING_MODE").is_none(),
        "WEBKIT_DISABLE_COMPOSITING_MODE makes WebDriver calls hang"
    );
    let bus = Bus::ambient()
        .expect("DBUS_SESSION_BUS_ADDRESS and JIT_NOTIFY_LOG (set by cargo xtask desktop-test)");
    assert!(
        bus.name_has_owner("org.freedesktop.secrets"),
        "gnome-keyring"
    );
    assert!(
        bus.name_has_owner("org.freedesktop.Notifications"),
        "dbusmock"
    );
    notify_roundtrip(&bus);
    secret_roundtrip(&bus);
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn tauri_driver_starts_and_stops_cleanly() {
    let (td, wk) = Tools::drivers().expect("tauri-driver and WebKitWebDriver");
    let mut driver = TauriDriver::start(&td, &wk, &[]).expect("tauri-driver starts");
    let status = http_get(driver.port, "/status");
    assert!(
        status.starts_with("HTTP/1.1 200") && status.contains("\"ready\""),
        "GET /status through tauri-driver: {status}"
    );
    let below = procs::descendants(driver.pid());
    assert!(
        below.iter().any(|p| p.comm.starts_with("WebKitWebDriver")),
        "WebKitWebDriver under tauri-driver: {below:?}"
    );
    let root = driver.pid();
    driver.stop();
    assert!(!procs::alive(root), "tauri-driver still running");
    for p in below {
        assert!(!procs::alive(p.pid), "{} ({}) left running", p.comm, p.pid);
    }
}

/// Set only in the child run of [`a_hung_test_prints_its_log_and_ends`].
const HANG_PROBE: &str = "JIT_E2E_HANG_PROBE";

/// Passes at once in a normal run; in the child run of the test below it
/// writes a line to its app log and hangs (a blocking sleep, which no async
/// timeout could interrupt).
#[test]
fn hang_probe() {
    if std::env::var_os(HANG_PROBE).is_none() {
        return;
    }
    let log = jit_desktop_e2e::desktop::driver_log_path();
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "the app said: hang-probe-marker\n").unwrap();
    std::thread::sleep(Duration::from_secs(3600));
}

/// A test that hangs is ended by the harness's watchdog after
/// `JIT_E2E_TEST_LIMIT_SECS`, and prints its per-test log first.
#[test]
fn a_hung_test_prints_its_log_and_ends() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["hang_probe", "--exact", "--nocapture", "--test-threads=1"])
        .env(HANG_PROBE, "1")
        .env("JIT_E2E_TEST_LIMIT_SECS", "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    // The watchdog ends the child after 2 s; bounded here in case it does not.
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the hung test still runs after 120 s: no watchdog");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = reader.join().unwrap();
    assert_eq!(
        status.code(),
        Some(101),
        "the hung test's run: {status}, stderr:\n{err}"
    );
    assert!(
        err.contains("hang-probe-marker"),
        "its log not printed:\n{err}"
    );
    assert!(err.contains("still runs after"), "no word why:\n{err}");
}
