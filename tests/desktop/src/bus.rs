//! A user's D-Bus session for one app: a bus, the Secret Service
//! (gnome-keyring) on it, and the dbusmock notification daemon recording
//! every `Notify` call to a log file.
//!
//! Two kinds:
//! - **ambient**: the session that `cargo xtask desktop-test` set up around
//!   the test binary (`DBUS_SESSION_BUS_ADDRESS` and `JIT_NOTIFY_LOG`), used
//!   by at most one app at a time;
//! - **private**: started here (`dbus-daemon`, `gnome-keyring-daemon`,
//!   `python3 -m dbusmock`), one per app, so that two apps (two users) each
//!   have their own keyring and their own notification log — as two people
//!   at two desktops do.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::notify::{self, Notification};

/// The Python that has `dbusmock` (Debian's; the first `python3` on PATH
/// may be another one). Override with `JIT_DBUSMOCK_PYTHON`.
pub fn dbusmock_python() -> String {
    std::env::var("JIT_DBUSMOCK_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_string())
}

/// Capabilities the mock notification server announces: bodies and actions
/// (so the app offers Approve / Deny).
pub const CAPABILITIES: &str = r#"{"capabilities": "body actions"}"#;

static AMBIENT_TAKEN: AtomicBool = AtomicBool::new(false);

/// A D-Bus session with a Secret Service and a recording notification server.
pub struct Bus {
    /// `DBUS_SESSION_BUS_ADDRESS` for the app.
    pub address: String,
    /// dbusmock's log.
    pub notify_log: PathBuf,
    /// Notifications already in the log when this bus was taken (an ambient
    /// log holds those of earlier apps).
    mark: usize,
    ambient: bool,
    /// Private bus processes, in start order (stopped in reverse).
    children: Vec<(&'static str, Child)>,
    _dir: Option<tempfile::TempDir>,
}

impl Bus {
    /// The ambient session if there is one and it is free, else a private one.
    pub fn acquire() -> Result<Bus> {
        match Bus::ambient() {
            Some(b) => Ok(b),
            None => Bus::private(),
        }
    }

    /// The session set up by `cargo xtask desktop-test`, if any and not in
    /// use by another app of this test process.
    pub fn ambient() -> Option<Bus> {
        let address = std::env::var("DBUS_SESSION_BUS_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty())?;
        let log = std::env::var_os("JIT_NOTIFY_LOG").filter(|l| !l.is_empty())?;
        if AMBIENT_TAKEN.swap(true, Ordering::SeqCst) {
            return None;
        }
        let notify_log = PathBuf::from(log);
        let mark = notify::read(&notify_log).map(|n| n.len()).unwrap_or(0);
        Some(Bus {
            address,
            notify_log,
            mark,
            ambient: true,
            children: Vec::new(),
            _dir: None,
        })
    }

    /// Starts a new session bus with gnome-keyring (secrets, unlocked) and
    /// the dbusmock notification daemon, all in a fresh temporary folder.
    pub fn private() -> Result<Bus> {
        let dir = tempfile::Builder::new().prefix("jit-bus-").tempdir()?;
        let run = dir.path().join("run");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&run)?;
        std::fs::create_dir_all(&data)?;
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;

        let mut bus = Bus {
            address: String::new(),
            notify_log: dir.path().join("notifications.log"),
            mark: 0,
            ambient: false,
            children: Vec::new(),
            _dir: None,
        };

        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run dbus-daemon (Debian package dbus-daemon / dbus)")?;
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut line)
            .context("reading the bus address from dbus-daemon")?;
        bus.children.push(("dbus-daemon", daemon));
        bus.address = line.trim().to_string();
        if bus.address.is_empty() {
            bail!("dbus-daemon printed no address");
        }

        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .env("XDG_RUNTIME_DIR", &run)
            .env("XDG_DATA_HOME", &data)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run gnome-keyring-daemon (Debian package gnome-keyring)")?;
        // The password of the new login keyring, then EOF.
        keyring
            .stdin
            .take()
            .unwrap()
            .write_all(b"jit-desktop-e2e")?;
        bus.children.push(("gnome-keyring-daemon", keyring));

        let mock = Command::new(dbusmock_python())
            .args(["-m", "dbusmock", "--session", "-t", "notification_daemon"])
            .arg("-p")
            .arg(CAPABILITIES)
            .arg("-l")
            .arg(&bus.notify_log)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {} -m dbusmock (Debian package python3-dbusmock)",
                    dbusmock_python()
                )
            })?;
        bus.children.push(("dbusmock", mock));
        bus._dir = Some(dir);

        bus.wait_for_name("org.freedesktop.secrets", Duration::from_secs(15))?;
        bus.wait_for_name("org.freedesktop.Notifications", Duration::from_secs(15))?;
        Ok(bus)
    }

    /// Whether this is the session of `cargo xtask desktop-test`.
    pub fn is_ambient(&self) -> bool {
        self.ambient
    }

    fn gdbus(&self) -> Command {
        let mut c = Command::new("gdbus");
        c.arg("call").arg("--address").arg(&self.address);
        c
    }

    /// Whether `name` has an owner on the bus.
    pub fn name_has_owner(&self, name: &str) -> bool {
        self.gdbus()
            .args([
                "--dest",
                "org.freedesktop.DBus",
                "--object-path",
                "/org/freedesktop/DBus",
                "--method",
                "org.freedesktop.DBus.NameHasOwner",
                name,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("true"))
            .unwrap_or(false)
    }

    /// Waits until `name` is owned (a service came up), or fails after `timeout`.
    pub fn wait_for_name(&mut self, name: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.name_has_owner(name) {
                return Ok(());
            }
            for (what, child) in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    bail!("{what} exited ({status}) before {name} appeared on the bus");
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "{name} did not appear on the bus {} within {timeout:?}",
                    self.address
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The notifications sent on this bus since it was taken.
    pub fn notifications(&self) -> Vec<Notification> {
        let all = notify::read(&self.notify_log).unwrap_or_else(|e| {
            panic!(
                "cannot read the notification log {}: {e}",
                self.notify_log.display()
            )
        });
        all.into_iter().skip(self.mark).collect()
    }

    /// Waits for a notification matching `pred`; panics after `timeout`
    /// listing what was seen.
    pub async fn wait_notification(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Notification) -> bool,
    ) -> Notification {
        let start = Instant::now();
        loop {
            let seen = self.notifications();
            if let Some(n) = seen.iter().find(|n| pred(n)) {
                return n.clone();
            }
            if start.elapsed() > timeout {
                let list: Vec<String> = seen.iter().map(|n| format!("    {n}")).collect();
                panic!(
                    "no notification {what} within {timeout:?}; {} seen in {}:\n{}",
                    seen.len(),
                    self.notify_log.display(),
                    list.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes the notification server say that the user clicked action
    /// `key` of notification `id` (the `ActionInvoked` signal), as a real
    /// notification server would.
    pub fn invoke_action(&self, id: u32, key: &str) -> Result<()> {
        if key.contains('\'') {
            bail!("action key with a quote: {key:?}");
        }
        let out = self
            .gdbus()
            .args([
                "--dest",
                "org.freedesktop.Notifications",
                "--object-path",
                "/org/freedesktop/Notifications",
                "--method",
                "org.freedesktop.DBus.Mock.EmitSignal",
                "org.freedesktop.Notifications",
                "ActionInvoked",
                "us",
                &format!("[<uint32 {id}>, <'{key}'>]"),
            ])
            .output()
            .context("cannot run gdbus (Debian package libglib2.0-bin)")?;
        if !out.status.success() {
            return Err(anyhow!(
                "EmitSignal ActionInvoked failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Sends a notification through the bus with `gdbus` (a self-test of the
    /// recording path, independent of the app).
    pub fn send_test_notification(
        &self,
        summary: &str,
        body: &str,
        actions: &[&str],
        urgency: u8,
    ) -> Result<u32> {
        let actions = format!(
            "[{}]",
            actions
                .iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let out = self
            .gdbus()
            .args([
                "--dest",
                "org.freedesktop.Notifications",
                "--object-path",
                "/org/freedesktop/Notifications",
                "--method",
                "org.freedesktop.Notifications.Notify",
                "--",
                "JIT Access",
                "0",
                "",
                summary,
                body,
                &actions,
                &format!("{{'urgency': <byte {urgency}>}}"),
                "-1",
            ])
            .output()
            .context("cannot run gdbus (Debian package libglib2.0-bin)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "Notify through gdbus failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // "(uint32 3,)"
        text.trim()
            .trim_start_matches("(uint32 ")
            .trim_end_matches(",)")
            .parse()
            .with_context(|| format!("unexpected Notify reply {text:?}"))
    }

    /// How many Secret Service items have all these attributes (e.g.
    /// `service` = `jit-access`, `username` = the server URL: the app's
    /// entry for one server). Reads no secret into the test's output.
    pub fn secret_count(&self, attributes: &[(&str, &str)]) -> Result<usize> {
        let mut cmd = Command::new("secret-tool");
        cmd.args(["search", "--all", "--unlock"]);
        for (k, v) in attributes {
            cmd.arg(k).arg(v);
        }
        let out = cmd
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .output()
            .context("cannot run secret-tool (Debian package libsecret-tools)")?;
        // Each item starts with a `[/…]` line on stdout (its secret follows;
        // attributes go to stderr). Only those lines are counted.
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("[/"))
            .count())
    }

    /// Deletes the Secret Service items with all these attributes.
    pub fn clear_secrets(&self, attributes: &[(&str, &str)]) -> Result<()> {
        let mut cmd = Command::new("secret-tool");
        cmd.arg("clear");
        for (k, v) in attributes {
            cmd.arg(k).arg(v);
        }
        let out = cmd
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .output()
            .context("cannot run secret-tool (Debian package libsecret-tools)")?;
        // Exit 1 with nothing on stderr: there was nothing to clear.
        if !out.status.success() && !out.stderr.is_empty() {
            bail!(
                "secret-tool clear: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Log file path (for messages).
    pub fn log_path(&self) -> &Path {
        &self.notify_log
    }

    /// Ids the app closed with `CloseNotification` since the bus was taken
    /// (from dbusmock's log of method calls).
    pub fn closed_notifications(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(&self.notify_log).unwrap_or_default();
        notify::records(&text)
            .into_iter()
            .filter(|r| r.method == "CloseNotification")
            .filter_map(|r| {
                r.args
                    .trim()
                    .trim_start_matches("dbus.UInt32(")
                    .trim_end_matches(')')
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// Waits until notification `id` was closed by the app; panics after
    /// `timeout`.
    pub async fn wait_closed(&self, what: &str, id: u32, timeout: Duration) {
        let start = Instant::now();
        loop {
            if self.closed_notifications().contains(&id) {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "notification #{id} ({what}) not closed within {timeout:?}; closed: {:?} (log {})",
                    self.closed_notifications(),
                    self.notify_log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a tray host stand-in on this bus (`tests/desktop/sni_host.py
    /// watcher`: org.kde.StatusNotifierWatcher with a registered host) and
    /// waits for its name.
    pub fn start_tray_host(&mut self) -> Result<()> {
        let log = self.tray_log();
        let _ = std::fs::remove_file(&log);
        let child = Command::new(dbusmock_python())
            .arg(sni_script())
            .arg("watcher")
            .arg(&log)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot run sni_host.py (python3-dbus, python3-gi)")?;
        self.children.push(("sni-watcher", child));
        self.wait_for_name("org.kde.StatusNotifierWatcher", Duration::from_secs(15))
    }

    /// Stops the tray host stand-in (the tray disappears, as when a panel
    /// is removed).
    pub fn stop_tray_host(&mut self) {
        if let Some(i) = self.children.iter().position(|(w, _)| *w == "sni-watcher") {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn tray_log(&self) -> PathBuf {
        self.notify_log.with_extension("tray.jsonl")
    }

    /// Items registered with the tray host stand-in: `(bus name, object path)`.
    pub fn tray_items(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.tray_log())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| {
                Some((
                    v["sender"].as_str()?.to_string(),
                    v["path"].as_str()?.to_string(),
                ))
            })
            .collect()
    }

    /// The menu of tray item `item` as a tray host reads it (dbusmenu
    /// GetLayout).
    pub fn tray_menu(&self, item: &(String, String)) -> Result<Vec<MenuEntry>> {
        let out = Command::new(dbusmock_python())
            .arg(sni_script())
            .args(["menu", &item.0, &item.1])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .output()
            .context("cannot run sni_host.py menu")?;
        if !out.status.success() {
            bail!(
                "reading the tray menu failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("tray menu JSON")
    }

    /// Clicks menu entry `id` of tray item `item` (dbusmenu Event "clicked").
    pub fn tray_click(&self, item: &(String, String), id: i32) -> Result<()> {
        let out = Command::new(dbusmock_python())
            .arg(sni_script())
            .args(["click", &item.0, &item.1, &id.to_string()])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .output()
            .context("cannot run sni_host.py click")?;
        if !out.status.success() {
            bail!(
                "clicking tray menu entry {id} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// `tests/desktop/sni_host.py`.
fn sni_script() -> PathBuf {
    crate::desktop::crate_dir().join("sni_host.py")
}

/// One entry of a tray menu (com.canonical.dbusmenu).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct MenuEntry {
    pub id: i32,
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub enabled: bool,
    pub visible: bool,
    /// 1 checked, 0 unchecked, -1 not a toggle.
    pub toggle_state: i32,
}

impl Drop for Bus {
    fn drop(&mut self) {
        if self.ambient {
            AMBIENT_TAKEN.store(false, Ordering::SeqCst);
        }
        for (_, child) in self.children.iter_mut().rev() {
            // SAFETY: plain syscall on our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (_, child) in self.children.iter_mut().rev() {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}
