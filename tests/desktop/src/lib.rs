//! Harness for the end-to-end tests of the desktop app (`jit-desktop`).
//!
//! What it is for: driving the real app binary the way a user does —
//! under Xvfb, through `tauri-driver` and WebKitWebDriver (WebDriver), with
//! login through Keycloak's real login page (`BROWSER=kc-form-login`), the
//! tokens in a real Secret Service (gnome-keyring) and the notifications
//! sent to a real D-Bus notification server (dbusmock) whose log is read
//! back ([`notify`]). Elements are found only by the `data-testid`s of
//! `docs/desktop-contract.md`.
//!
//! - [`Desktop`]: one user's app (own tauri-driver, own env, own bus);
//! - [`Bus`]: a D-Bus session with keyring and recording notification server;
//! - [`notify`]: parser of dbusmock's log;
//! - [`procs`]: process tree, RSS, cleanup through `/proc`.
//!
//! What it is not for: running outside the prepared session. Use
//! `cargo xtask desktop-test`, which builds the UI and the app, installs
//! tauri-driver if needed, starts Keycloak, Xvfb, the D-Bus session,
//! gnome-keyring and dbusmock, then runs these tests (`cargo xtask test`
//! runs it after the rest of the workspace, which excludes this crate). Run
//! outside that session they fail loudly: they never skip.

pub mod bus;
pub mod desktop;
pub mod notify;
pub mod procs;

pub use bus::Bus;
pub use desktop::{countdown_secs, screenshots_dir, testid, Desktop, Launch, TauriDriver, Tools};
pub use notify::Notification;

/// Prints one line of the run's report (`desktop-e2e: …`) on stderr, where
/// `cargo test` shows it even for passing tests with `--nocapture`, and
/// appends it to `target/desktop-e2e/report.txt`.
pub fn report(line: &str) {
    eprintln!("desktop-e2e: {line}");
    let dir = desktop::artifacts_dir();
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("report.txt"))
    {
        use std::io::Write;
        let _ = writeln!(f, "{line}");
    }
}
