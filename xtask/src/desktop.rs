//! `cargo xtask desktop-test`: the desktop app driven for real.
//!
//! 1. checks the tools (installs the missing Debian packages when run as
//!    root, like `./dev bootstrap`; otherwise says which to install);
//! 2. builds the UI (`npm ci` when `ui/node_modules` is missing, then
//!    `npm run build`), the workspace binaries the tests run (jitd, jit,
//!    kc-form-login) and, last, `jit-desktop` exactly as src-tauri/README.md
//!    documents it (`cargo build -p jit-desktop`: the UI is bundled by the
//!    default feature), copied to `target/desktop-e2e/bin/` so that no
//!    later build can swap it;
//! 3. installs tauri-driver 2 with `cargo install` if it is missing;
//! 4. makes sure Keycloak runs ([`keycloak::ensure_running`]);
//! 5. runs `cargo test -p jit-desktop-e2e -- --test-threads=1
//!    --nocapture` inside `xvfb-run` + `dbus-run-session`, where a
//!    script first starts gnome-keyring (Secret Service, unlocked) and the
//!    dbusmock notification daemon (log: `JIT_NOTIFY_LOG`).
//!
//! Everything started here is stopped at the end, also on Ctrl-C: the
//! session (its own process group), then any process of the run still
//! alive (found by the `JIT_DESKTOP_E2E_RUN` mark in its environment),
//! then Keycloak if it was started here.
//! Reports (timings, memory) are in `target/desktop-e2e/report.txt`,
//! screenshots in `target/desktop-e2e/screenshots/` (or `docs/screenshots/`
//! with `--update-screenshots`).

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::keycloak::{self, Ports};
use crate::{signals, target_dir, workspace_root};

/// Options of `desktop-test`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Rewrite `docs/screenshots/*.png` (sets `JIT_UPDATE_SCREENSHOTS=1`).
    pub update_screenshots: bool,
    /// Do not build the UI and the binaries (reuse the last build).
    pub no_build: bool,
    /// Never run apt-get; fail with the list of packages instead.
    pub no_install: bool,
    /// Only the harness self-tests (Xvfb, D-Bus, keyring, dbusmock,
    /// tauri-driver): no app needed, nothing built but the tests.
    pub harness_only: bool,
    /// Passed to the test binary (filters, `--exact`, …).
    pub test_args: Vec<String>,
}

/// The Python with dbusmock (Debian's; another `python3` may come first on PATH).
const PYTHON: &str = "/usr/bin/python3";

/// A command the run needs and the Debian package that has it.
struct Need {
    what: &'static str,
    package: &'static str,
    present: fn() -> bool,
}

/// Needed only to build the app (not for `--harness-only`).
const BUILD_ONLY: [&str; 5] = [
    "npm",
    "pkg-config",
    "libwebkit2gtk-4.1-dev",
    "libayatana-appindicator3-dev",
    "librsvg2-dev",
];

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

fn pkg_config(module: &str) -> bool {
    Command::new("pkg-config")
        .args(["--exists", module])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn needs() -> Vec<Need> {
    vec![
        Need {
            what: "xvfb-run",
            package: "xvfb",
            present: || on_path("xvfb-run").is_some(),
        },
        Need {
            what: "xauth",
            package: "xauth",
            present: || on_path("xauth").is_some(),
        },
        Need {
            what: "dbus-run-session",
            package: "dbus-daemon",
            present: || on_path("dbus-run-session").is_some() && on_path("dbus-daemon").is_some(),
        },
        Need {
            what: "gdbus",
            package: "libglib2.0-bin",
            present: || on_path("gdbus").is_some(),
        },
        Need {
            what: "gnome-keyring-daemon",
            package: "gnome-keyring",
            present: || on_path("gnome-keyring-daemon").is_some(),
        },
        Need {
            what: "secret-tool",
            package: "libsecret-tools",
            present: || on_path("secret-tool").is_some(),
        },
        Need {
            what: "WebKitWebDriver",
            package: "webkit2gtk-driver",
            present: || on_path("WebKitWebDriver").is_some(),
        },
        Need {
            what: "python3-dbusmock (for /usr/bin/python3)",
            package: "python3-dbusmock",
            present: || {
                Command::new(PYTHON)
                    .args(["-c", "import dbusmock"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            },
        },
        Need {
            what: "npm",
            package: "npm",
            present: || on_path("npm").is_some(),
        },
        Need {
            what: "pkg-config",
            package: "pkg-config",
            present: || on_path("pkg-config").is_some(),
        },
        Need {
            what: "webkit2gtk-4.1 (headers)",
            package: "libwebkit2gtk-4.1-dev",
            present: || pkg_config("webkit2gtk-4.1"),
        },
        Need {
            what: "ayatana-appindicator3 (headers, tray)",
            package: "libayatana-appindicator3-dev",
            present: || pkg_config("ayatana-appindicator3-0.1"),
        },
        Need {
            what: "librsvg (headers)",
            package: "librsvg2-dev",
            present: || pkg_config("librsvg-2.0"),
        },
    ]
}

fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

/// Checks the tools; installs what is missing with apt-get when root.
fn ensure_tools(no_install: bool, building: bool) -> Result<()> {
    let wanted = || {
        needs()
            .into_iter()
            .filter(move |n| building || !BUILD_ONLY.contains(&n.package))
    };
    let missing: Vec<Need> = wanted().filter(|n| !(n.present)()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = missing.iter().map(|n| n.package).collect();
    pkgs.dedup();
    let list: Vec<String> = missing
        .iter()
        .map(|n| format!("{} ({})", n.what, n.package))
        .collect();
    if no_install || !is_root() {
        bail!(
            "missing: {}\ninstall with: sudo apt-get install -y {}",
            list.join(", "),
            pkgs.join(" ")
        );
    }
    eprintln!("xtask: installing Debian packages: {}", pkgs.join(" "));
    let ok = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    let still: Vec<&str> = wanted()
        .filter(|n| !(n.present)())
        .map(|n| n.what)
        .collect();
    if !ok || !still.is_empty() {
        bail!(
            "apt-get could not provide: {} (packages {})",
            still.join(", "),
            pkgs.join(" ")
        );
    }
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// `target/desktop-e2e`.
pub fn artifacts_dir() -> PathBuf {
    target_dir().join("desktop-e2e")
}

/// Builds the UI, the binaries the tests need, and the app (last, with the
/// documented command, so the E2E proves that it shows the app); returns
/// the path of the app copy the tests run.
pub fn build() -> Result<PathBuf> {
    build_ui()?;
    eprintln!("xtask: building jitd, jit, kc-form-login");
    run(
        Command::new(cargo())
            .args([
                "build",
                "--quiet",
                "-p",
                "jit-server",
                "-p",
                "jit-cli",
                "-p",
                "jit-testkit",
                "--bins",
            ])
            .current_dir(workspace_root()),
        "cargo build (jitd, jit, kc-form-login)",
    )?;
    let built = build_app()?;
    let dir = artifacts_dir().join("bin");
    std::fs::create_dir_all(&dir)?;
    let app = dir.join("jit-desktop");
    // Copy (not link): a later `cargo build --no-default-features` (the
    // dev-server build) would replace target/debug/jit-desktop.
    let tmp = dir.join(".jit-desktop.tmp");
    std::fs::copy(&built, &tmp)
        .with_context(|| format!("copy {} to {}", built.display(), tmp.display()))?;
    std::fs::rename(&tmp, &app)?;
    let built_dir = built.parent().context("the app binary has no directory")?;
    copy_webext(&built_dir.join(WEBEXT_DIR), &dir.join(WEBEXT_DIR))?;
    Ok(app)
}

/// The app's web process extension (crate `jit-desktop-webext`) as the app
/// looks for it: this file in [`WEBEXT_DIR`] beside its binary
/// (src-tauri/src/webext.rs, `FILE` and `DEV_DIR`).
pub const WEBEXT_FILE: &str = "libjit_desktop_webext.so";

/// See [`WEBEXT_FILE`]. WebKit loads every library in it: nothing else
/// goes there.
pub const WEBEXT_DIR: &str = "webext";

/// Copies `from/`[`WEBEXT_FILE`] into `to/` (created), through a temporary
/// name, so a running web process never maps a half-written file.
pub fn copy_webext(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    let src = from.join(WEBEXT_FILE);
    let tmp = to.join(format!(".{WEBEXT_FILE}.tmp"));
    std::fs::copy(&src, &tmp)
        .with_context(|| format!("copy {} to {}", src.display(), tmp.display()))?;
    std::fs::rename(&tmp, to.join(WEBEXT_FILE))?;
    Ok(())
}

/// `cargo build -p jit-desktop -p jit-desktop-webext` (the app as
/// src-tauri/README.md builds it — the default feature bundles ui/dist —
/// and its web process extension, which is then put in
/// `target/debug/`[`WEBEXT_DIR`]); returns `target/debug/jit-desktop`.
pub fn build_app() -> Result<PathBuf> {
    eprintln!("xtask: cargo build -p jit-desktop -p jit-desktop-webext");
    run(
        Command::new(cargo())
            .args(["build", "-p", "jit-desktop", "-p", "jit-desktop-webext"])
            .current_dir(workspace_root()),
        "cargo build -p jit-desktop -p jit-desktop-webext",
    )?;
    let debug = target_dir().join("debug");
    copy_webext(&debug, &debug.join(WEBEXT_DIR))?;
    Ok(debug.join("jit-desktop"))
}

/// `npm ci` when `ui/node_modules` is missing, then `npm run build`
/// (writes ui/dist, which the app embeds at compile time).
pub fn build_ui() -> Result<()> {
    let root = workspace_root();
    let ui = root.join("ui");
    if !ui.join("package.json").is_file() || !root.join("src-tauri/Cargo.toml").is_file() {
        bail!(
            "the desktop app is not in this tree (ui/package.json, src-tauri/Cargo.toml): nothing to test"
        );
    }
    if !ui.join("node_modules").is_dir() {
        let sub = if ui.join("package-lock.json").is_file() {
            "ci"
        } else {
            "install"
        };
        eprintln!("xtask: npm {sub} in ui/");
        run(
            Command::new("npm")
                .args([sub, "--no-audit", "--no-fund"])
                .current_dir(&ui),
            &format!("npm {sub}"),
        )?;
    }
    eprintln!("xtask: npm run build in ui/");
    run(
        Command::new("npm").args(["run", "build"]).current_dir(&ui),
        "npm run build",
    )?;
    Ok(())
}

/// `cargo xtask app`: builds the UI and the app, then runs it until it
/// quits. Remote mode with `server`; else the embedded jitd against the
/// xtask's Keycloak (started here if needed, stopped when the app ends).
pub fn run_app(ports: Ports, server: Option<&str>, args: &[String]) -> Result<ExitCode> {
    build_ui()?;
    let app = build_app()?;
    let mut cmd = Command::new(&app);
    cmd.args(args);
    let guard = match server {
        Some(url) => {
            cmd.env("JIT_SERVER", url);
            None
        }
        None => {
            let g = keycloak::ensure_running(ports)?;
            cmd.env_remove("JIT_SERVER")
                .env("JIT_KEYCLOAK_URL", g.url())
                .env("JIT_REALM", keycloak::REALM);
            if std::env::var_os("JIT_BACKEND_SECRET").is_none() {
                cmd.env("JIT_BACKEND_SECRET", keycloak::BACKEND_DEMO_SECRET);
            }
            Some(g)
        }
    };
    eprintln!(
        "xtask: running {} ({})",
        app.display(),
        server.map_or("embedded jitd".to_string(), |s| format!("jitd at {s}"))
    );
    let status = cmd.status().context("cannot start the desktop app");
    if let Some(g) = guard {
        if let Err(e) = g.stop() {
            eprintln!("xtask: could not stop Keycloak: {e:#}");
        }
    }
    let status = status?;
    Ok(ExitCode::from(
        u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
    ))
}

/// `tauri-driver` on PATH or in `~/.cargo/bin`, installed if missing.
fn ensure_tauri_driver() -> Result<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin/tauri-driver"));
    let find = || on_path("tauri-driver").or_else(|| cargo_bin.clone().filter(|p| p.is_file()));
    if let Some(p) = find() {
        return Ok(p);
    }
    eprintln!("xtask: installing tauri-driver 2 (cargo install, takes a few minutes)");
    run(
        Command::new(cargo()).args(["install", "tauri-driver", "--version", "^2", "--locked"]),
        "cargo install tauri-driver",
    )?;
    find().context("tauri-driver installed but not found on PATH nor in ~/.cargo/bin")
}

/// Started by `xvfb-run`: keeps the console's stderr as fd 3 and stdout as
/// fd 4 and sends both (those of the session's dbus-daemon and of the
/// services it activates: fd limits, a11y bus, AT-SPI registry) to
/// `$JIT_SESSION_LOG`, then runs `dbus-run-session -- bash SCRIPT ARGS`.
const OUTER: &str =
    r#"exec 3>&2 4>&1 2>>"$JIT_SESSION_LOG" 1>&2; exec dbus-run-session -- bash "$@""#;

/// The script run inside `xvfb-run … dbus-run-session -- bash SCRIPT ARGS`:
/// keyring and notification server on the new session bus, then the tests
/// (their stdout and stderr are the console again: fds 4 and 3, see
/// [`OUTER`]).
const SESSION_SCRIPT: &str = r#"#!/usr/bin/env bash
# Written by `cargo xtask desktop-test`; runs inside xvfb-run + dbus-run-session,
# stdout and stderr to the session log, the console's as fds 4 and 3.
set -uo pipefail
export NO_AT_BRIDGE=1 TAURI_WEBVIEW_AUTOMATION=true
# Makes WebDriver calls hang with WebKitGTK 2.50.
unset WEBKIT_DISABLE_COMPOSITING_MODE
work=$(mktemp -d /tmp/jit-desktop-session.XXXXXX)
mkdir -m 700 "$work/run" && mkdir "$work/data"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

has_owner() {
    gdbus call --session --dest org.freedesktop.DBus --object-path /org/freedesktop/DBus \
        --method org.freedesktop.DBus.NameHasOwner "$1" 2>/dev/null | grep -q true
}
wait_name() {
    for _ in $(seq 150); do has_owner "$1" && return 0; sleep 0.1; done
    echo "desktop-test: $1 did not appear on the session bus ($2)" >&3
    exit 1
}

# Secret Service: a fresh login keyring, unlocked, in a throw-away folder.
printf '%s' "jit-desktop-e2e" | XDG_RUNTIME_DIR="$work/run" XDG_DATA_HOME="$work/data" \
    gnome-keyring-daemon --foreground --unlock --components=secrets >"$work/keyring.log" 2>&1 &
pids+=($!)
# Notification server that records every Notify call.
rm -f "$JIT_NOTIFY_LOG"
/usr/bin/python3 -m dbusmock --session -t notification_daemon \
    -p '{"capabilities": "body actions"}' -l "$JIT_NOTIFY_LOG" >"$work/dbusmock.log" 2>&1 &
pids+=($!)
wait_name org.freedesktop.secrets "gnome-keyring: $(cat "$work/keyring.log" 2>/dev/null)"
wait_name org.freedesktop.Notifications "dbusmock: $(cat "$work/dbusmock.log" 2>/dev/null)"
echo "desktop-test: DISPLAY=$DISPLAY, session bus with gnome-keyring and dbusmock ready" >&3

# The test command, from xtask, on the console.
"$@" 1>&4 2>&3 3>&- 4>&-
"#;

/// Runs `desktop-test`; the exit code is that of the tests.
pub fn run_tests(ports: Ports, opts: Options) -> Result<ExitCode> {
    signals::install();
    let started = Instant::now();
    ensure_tools(opts.no_install, !opts.harness_only)?;
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir)?;
    let _ = std::fs::remove_file(dir.join("report.txt"));
    let _ = std::fs::remove_dir_all(dir.join("logs"));
    let app = if opts.harness_only {
        None
    } else if opts.no_build {
        let app = dir.join("bin/jit-desktop");
        if !app.is_file() {
            bail!("--no-build, but {} does not exist yet", app.display());
        }
        Some(app)
    } else {
        Some(build()?)
    };
    let tauri_driver = ensure_tauri_driver()?;
    let build_time = started.elapsed();

    // The harness self-tests need no Keycloak.
    let guard = if opts.harness_only {
        None
    } else {
        Some(keycloak::ensure_running(ports)?)
    };
    let script = dir.join("session.sh");
    std::fs::write(&script, SESSION_SCRIPT)?;
    let notify_log = dir.join("notifications.log");
    let session_log = dir.join("session.log");
    std::fs::write(&session_log, "")?;

    eprintln!(
        "xtask: desktop tests under Xvfb + dbus-run-session (app {}, tauri-driver {})",
        app.as_ref()
            .map_or("not needed".to_string(), |a| a.display().to_string()),
        tauri_driver.display()
    );
    let mut cmd = Command::new("xvfb-run");
    cmd.args(["-a", "-s", "-screen 0 1280x800x24"])
        .args(["bash", "-c", OUTER, "bash"])
        .arg(&script)
        .arg(cargo())
        .args(["test", "-p", "jit-desktop-e2e"]);
    if opts.harness_only {
        cmd.args(["--lib", "--test", "harness"]);
    }
    cmd.args(["--", "--test-threads=1", "--nocapture"])
        .args(&opts.test_args)
        .current_dir(workspace_root())
        .env("JIT_NOTIFY_LOG", &notify_log)
        .env("JIT_SESSION_LOG", &session_log)
        .env("TAURI_DRIVER", &tauri_driver)
        .env("JIT_BACKEND_SECRET", keycloak::BACKEND_DEMO_SECRET)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("WEBKIT_DISABLE_COMPOSITING_MODE");
    if let Some(g) = &guard {
        cmd.env("KEYCLOAK_URL", g.url());
        // The Keycloak-outage test stops this checkout's Keycloak and
        // starts it again on these ports.
        cmd.env("JIT_E2E_KC_PORT", ports.http.to_string())
            .env("JIT_E2E_KC_MANAGEMENT_PORT", ports.management.to_string());
    }
    if let Some(app) = &app {
        cmd.env("JIT_DESKTOP_APP", app);
    }
    if opts.update_screenshots {
        cmd.env("JIT_UPDATE_SCREENSHOTS", "1");
    }
    // Every process of the run inherits this mark, so that whatever
    // outlives the session (an orphan after a crash or Ctrl-C) is found
    // and stopped below.
    let mark = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    cmd.env(RUN_MARK, &mark);
    let code = run_in_own_group(&mut cmd);
    let left = kill_marked(&mark);
    if left > 0 {
        eprintln!("xtask: stopped {left} process(es) of the run left behind");
    }
    if let Some(g) = guard {
        if let Err(e) = g.stop() {
            eprintln!("xtask: could not stop Keycloak: {e:#}");
        }
    }
    let code = code?;
    if code != 0 {
        eprintln!(
            "xtask: the D-Bus session's own log (dbus-daemon, activated services): {}\n\
             xtask: the log of each app run: {}",
            session_log.display(),
            dir.join("logs").display()
        );
    }
    if let Ok(report) = std::fs::read_to_string(dir.join("report.txt")) {
        eprintln!("\n== desktop-test report (target/desktop-e2e/report.txt)\n{report}");
    }
    eprintln!(
        "xtask: desktop-test {} in {:.0?} (build and tools {:.0?}); screenshots in {}",
        if code == 0 { "passed" } else { "FAILED" },
        started.elapsed(),
        build_time,
        if opts.update_screenshots {
            workspace_root().join("docs/screenshots")
        } else {
            dir.join("screenshots")
        }
        .display()
    );
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Environment variable that marks the processes of one run.
const RUN_MARK: &str = "JIT_DESKTOP_E2E_RUN";

/// SIGKILLs every process whose environment holds `RUN_MARK=mark` (they
/// inherit it whatever their process group or parent); returns how many.
fn kill_marked(mark: &str) -> usize {
    let needle = format!("{RUN_MARK}={mark}");
    let me = std::process::id();
    let mut killed = 0;
    // Twice: a process may start another while the first sweep runs.
    for _ in 0..2 {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return killed;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
                // SAFETY: plain syscall on a process of our own run.
                if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                    killed += 1;
                }
            }
        }
        sleep(Duration::from_millis(200));
    }
    killed
}

/// Runs `cmd` in a process group of its own, forwards Ctrl-C / SIGTERM to
/// it, and kills whatever is left of the group when it ends. Returns the
/// exit code (128 + signal when killed).
fn run_in_own_group(cmd: &mut Command) -> Result<i32> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    cmd.process_group(0);
    let mut child = cmd.spawn().context("cannot run xvfb-run")?;
    let pgid = child.id() as i32;
    let mut forwarded_at: Option<Instant> = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        match (signals::received(), forwarded_at) {
            (Some(sig), None) => {
                eprintln!("xtask: stopping the desktop session");
                // SAFETY: plain syscall on our own process group.
                unsafe {
                    libc::kill(-pgid, sig);
                }
                forwarded_at = Some(Instant::now());
            }
            (_, Some(at)) if at.elapsed() > Duration::from_secs(15) => {
                // SAFETY: as above.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            _ => {}
        }
        sleep(Duration::from_millis(100));
    };
    // Anything of the session still in its group (nothing, normally).
    // SAFETY: as above; ESRCH when the group is empty.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
