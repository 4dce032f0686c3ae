//! `cargo xtask demo`: Keycloak (started here unless already running), a
//! fresh jitd with the demo policy, then the `jit-demo` timeline.
//!
//! Every run starts from a known state: a jitd that an earlier
//! `--keep-running` left up is stopped before its folder is reused, and
//! `jit-demo` takes leftover demo roles off the demo users.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::keycloak::{self, Ports};
use crate::{signals, workspace_root};

/// What `cargo xtask demo` was asked for.
pub struct Options {
    /// How long alice's grant lasts (a human duration).
    pub duration: String,
    /// Keep Keycloak and jitd running after the timeline (until Ctrl-C).
    pub keep_running: bool,
    /// Only the terminal timeline; never build or open the desktop app.
    pub headless: bool,
    /// jitd's port; when taken, a free one is used instead.
    pub jitd_port: u16,
}

/// Runs the demo; Keycloak and jitd are stopped at the end unless
/// `keep_running` (then they run until Ctrl-C).
pub fn run(ports: Ports, opts: Options) -> Result<ExitCode> {
    signals::install();
    // One demo at a time per target folder: a second one would delete the
    // first one's CLI logins and its jitd's database under it.
    let _lock = demo_lock(&crate::target_dir().join("demo.lock"))?;
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    // Only what the timeline runs (the desktop app is built by `open_app`
    // when it opens); cargo shows its own progress, a first build is long.
    eprintln!("xtask: building jitd, jit and the demo (cargo's progress follows)…");
    let status = Command::new(&cargo)
        .args([
            "build",
            "-p",
            "jit-server",
            "-p",
            "jit-cli",
            "-p",
            "jit-testkit",
            "-p",
            "jit-e2e",
            "--bins",
        ])
        .current_dir(&root)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("build failed ({status})");
    }
    let guard = keycloak::ensure_running(ports)?;
    let bin = crate::target_dir().join("debug");
    let demo_dir = crate::target_dir().join("demo");
    stop_leftover_jitd(&demo_dir);
    let db = demo_dir.join("jitd.sqlite");
    let users = processes_using(&db, std::process::id() as i32);
    if !users.is_empty() {
        bail!(
            "process {} has the demo's database {} open (a jitd started by hand?): stop it first; the demo starts from a fresh database and would delete it under that process",
            users
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            db.display()
        );
    }
    let _ = std::fs::remove_dir_all(&demo_dir);
    std::fs::create_dir_all(&demo_dir)?;
    let port = free_port(opts.jitd_port);
    let config = demo_dir.join("jitd.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase = \"jitd.sqlite\"\npolicy = {:?}\n\n[keycloak]\nurl = \"{}\"\nrealm = \"{}\"\n",
            root.join("config/policy.toml"),
            guard.url(),
            keycloak::REALM
        ),
    )?;
    let log = std::fs::File::create(demo_dir.join("jitd.log"))?;
    let mut jitd = Command::new(bin.join("jitd"))
        .arg("--config")
        .arg(&config)
        .env("JIT_BACKEND_SECRET", keycloak::BACKEND_DEMO_SECRET)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start jitd")?;
    std::fs::write(demo_dir.join(PID_FILE), jitd.id().to_string())?;
    let mut first = String::new();
    BufReader::new(jitd.stdout.take().expect("piped")).read_line(&mut first)?;
    if !first.contains("listening") {
        let _ = jitd.kill();
        let _ = jitd.wait();
        let log = std::fs::read_to_string(demo_dir.join("jitd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
        bail!(
            "jitd did not start (its log: {})",
            demo_dir.join("jitd.log").display()
        );
    }
    let server = format!("http://127.0.0.1:{port}");
    eprintln!(
        "xtask: jitd on {server} (log: {})",
        demo_dir.join("jitd.log").display()
    );
    // With `--keep-running`, the demo users' CLI logins (alice, bob, dave)
    // are kept here, for a plain `jit --profile alice` afterwards.
    let cli_dir = demo_dir.join("cli");
    let mut demo = Command::new(bin.join("jit-demo"));
    demo.args(["--server", &server, "--for", &opts.duration]);
    if opts.keep_running {
        demo.arg("--config-dir").arg(&cli_dir);
    }
    let stop_jitd = |jitd: &mut std::process::Child| {
        // SAFETY: plain syscall on our own child.
        unsafe {
            libc::kill(jitd.id() as i32, libc::SIGTERM);
        }
        let _ = jitd.wait();
    };
    let status = match demo
        .env("KEYCLOAK_URL", guard.url())
        .env("JIT_BACKEND_SECRET", keycloak::BACKEND_DEMO_SECRET)
        .status()
        .context("cannot run jit-demo")
    {
        Ok(s) => s,
        Err(e) => {
            stop_jitd(&mut jitd);
            return Err(e);
        }
    };
    let display =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if !status.success() {
        stop_jitd(&mut jitd);
        guard.stop()?;
        return Ok(ExitCode::FAILURE);
    }
    if !opts.headless && !display {
        println!(
            "\nThe desktop app is not opened: there is no display here (neither DISPLAY nor \
             WAYLAND_DISPLAY is set, e.g. over SSH).\nTo see it, run `./dev demo` (or `./dev app`) \
             in a desktop session; its screenshots are in docs/screenshots/."
        );
    }
    if opts.keep_running {
        let app = if !opts.headless && display {
            // The app joins this jitd, so the CLI and the app see the same
            // requests; it runs while the terminal keeps Keycloak and jitd up.
            let started = crate::desktop::build().and_then(|app| {
                println!("\nOpening the desktop app against jitd {server}. Log in as bob / bob-pass to approve,");
                println!("or alice / alice-pass to request (demo passwords).");
                app_command(&app, guard.url())
                    .env("JIT_SERVER", &server)
                    .spawn()
                    .context("cannot start the desktop app")
            });
            match started {
                Ok(app) => Some(app),
                Err(e) => {
                    // No jitd left behind (Keycloak's guard stops Keycloak).
                    stop_jitd(&mut jitd);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let root_s = root.display();
        println!(
            "\nKeycloak {} and jitd {server} keep running in this terminal until Ctrl-C (or until jitd ends).",
            guard.url()
        );
        println!(
            "In another terminal, as the demo's users (their logins are kept in {}):",
            cli_dir.display()
        );
        println!("  cd {root_s}");
        println!(
            "  export PATH=\"{}:$PATH\" JIT_CONFIG_DIR=\"{}\" JIT_SERVER={server}",
            bin.display(),
            cli_dir.display()
        );
        println!("  jit --profile alice list");
        println!("  jit --profile bob list --to-review");
        println!("  jit --profile erin login      # any other demo user: <name> / <name>-pass");
        // Until Ctrl-C — or until jitd ends on its own (killed, crashed):
        // then there is nothing left to keep running for.
        let mut ended = None;
        while signals::received().is_none() {
            if let Ok(Some(status)) = jitd.try_wait() {
                ended = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(status) = ended {
            eprintln!(
                "\njitd ended on its own ({status}); its log: {}. Stopping the demo.",
                demo_dir.join("jitd.log").display()
            );
            if let Some(mut app) = app {
                // SAFETY: plain syscall on our own child.
                unsafe {
                    libc::kill(app.id() as i32, libc::SIGTERM);
                }
                let _ = app.wait();
            }
            let kc = stopped_keycloak(&guard);
            guard.stop()?;
            println!("{kc}");
            return Ok(ExitCode::FAILURE);
        }
        if let Some(mut app) = app {
            // The app ends on SIGTERM (it holds no grants of its own here).
            // SAFETY: plain syscall on our own child.
            unsafe {
                libc::kill(app.id() as i32, libc::SIGTERM);
            }
            let _ = app.wait();
        }
        stop_jitd(&mut jitd);
        // jitd says on stopping whether grants are active (their roles stay
        // in Keycloak until a jitd runs on this database again).
        let log = std::fs::read_to_string(demo_dir.join("jitd.log")).unwrap_or_default();
        if let Some(line) = log.lines().rev().find(|l| l.contains("stopping with")) {
            let what = line
                .split_once("stopping with")
                .map(|(_, rest)| format!("stopping with{rest}"))
                .unwrap_or_default();
            println!("jitd: {what}");
            println!(
                "(the next `./dev demo` starts from a known state: it removes leftover demo roles)"
            );
        }
        let kc = stopped_keycloak(&guard);
        guard.stop()?;
        println!("Stopped jitd. {kc}");
        return Ok(ExitCode::SUCCESS);
    }
    stop_jitd(&mut jitd);
    if !opts.headless && display {
        open_app(guard.url())?;
    }
    guard.stop()?;
    Ok(ExitCode::SUCCESS)
}

/// What stopping the demo does to Keycloak: stops the one it started,
/// leaves one it found running.
fn stopped_keycloak(guard: &keycloak::KeycloakGuard) -> String {
    if guard.started_here() {
        "Stopped Keycloak.".to_string()
    } else {
        format!(
            "Keycloak at {} was already running before the demo and keeps running.",
            guard.url()
        )
    }
}

/// The desktop app with the demo's Keycloak, realm, secret and policy.
fn app_command(app: &std::path::Path, keycloak_url: &str) -> Command {
    let mut c = Command::new(app);
    c.env("JIT_KEYCLOAK_URL", keycloak_url)
        .env("JIT_REALM", keycloak::REALM)
        .env("JIT_BACKEND_SECRET", keycloak::BACKEND_DEMO_SECRET)
        .env("JIT_POLICY", workspace_root().join("config/policy.toml"));
    c
}

/// Opens the desktop app with its embedded jitd (demo policy) against this
/// Keycloak, and waits until it is closed (Quit in the tray menu).
fn open_app(keycloak_url: &str) -> Result<()> {
    let app = crate::desktop::build()?;
    println!("\nOpening the desktop app (embedded jitd). Log in as bob / bob-pass to approve,");
    println!("or alice / alice-pass to request (demo passwords). Close the window (or Quit in the tray) to end it.");
    let status = app_command(&app, keycloak_url)
        .env_remove("JIT_SERVER")
        .status()
        .context("cannot start the desktop app")?;
    if !status.success() {
        bail!("the desktop app exited with {status}");
    }
    Ok(())
}

/// Where the demo's jitd writes its pid (for the next run to stop it).
const PID_FILE: &str = "jitd.pid";

/// Stops a jitd that an earlier demo left running in `demo_dir` (e.g. a
/// `--keep-running` whose terminal was closed), so its database is never
/// deleted under it: SIGTERM, then SIGKILL after 10 s.
fn stop_leftover_jitd(demo_dir: &std::path::Path) {
    let Some(pid) = std::fs::read_to_string(demo_dir.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    // Only the jitd of this folder (pids are reused, and other jitds may run).
    let config = demo_dir.join("jitd.toml");
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .any(|arg| arg == config.as_os_str().as_encoded_bytes())
        })
        .unwrap_or(false);
    if !ours {
        return;
    }
    eprintln!("xtask: stopping the jitd (pid {pid}) that an earlier demo left running");
    // SAFETY: plain syscalls on a pid checked above.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Takes the demo's lock (`flock` on `path`, held until the returned file
/// is dropped, i.e. until this demo ends; the kernel releases it if the
/// process dies). Errors when another demo holds it, naming its pid.
fn demo_lock(path: &std::path::Path) -> Result<std::fs::File> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(path).unwrap_or_default();
        bail!(
            "another demo is running (pid {}): stop it first (Ctrl-C in its terminal); two demos would share and delete each other's jitd database and CLI logins",
            pid.trim()
        );
    }
    f.set_len(0)?;
    write!(f, "{}", std::process::id())?;
    Ok(f)
}

/// Pids (other than `except`) with `db` or its SQLite `-wal`/`-shm`
/// files open, from `/proc/PID/fd`.
fn processes_using(db: &std::path::Path, except: i32) -> Vec<i32> {
    let names: Vec<std::ffi::OsString> = ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut n = db.as_os_str().to_owned();
            n.push(suffix);
            n
        })
        .collect();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == except {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|target| names.iter().any(|n| target.as_os_str() == n))
        {
            out.push(pid);
        }
    }
    out
}

fn free_port(preferred: u16) -> u16 {
    if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return preferred;
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(preferred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_demo_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.lock");
        let first = demo_lock(&path).unwrap();
        let e = demo_lock(&path).unwrap_err().to_string();
        assert!(e.contains("another demo is running"), "{e}");
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        drop(first);
        demo_lock(&path).expect("free again once the first demo ends");
    }

    #[test]
    fn a_process_with_the_database_open_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jitd.sqlite");
        let me = std::process::id() as i32;
        assert!(processes_using(&db, 0).is_empty());
        let _open = std::fs::File::create(&db).unwrap();
        assert_eq!(processes_using(&db, 0), vec![me]);
        assert!(
            processes_using(&db, me).is_empty(),
            "the demo itself is not counted"
        );
    }
}
