//! `cargo xtask demo`: Keycloak (started here unless already running), a
//! fresh jitd with the demo policy, then the `jit-demo` timeline.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::keycloak::{self, Ports};
use crate::{signals, workspace_root};

/// Runs the demo; Keycloak and jitd are stopped at the end unless
/// `keep_running` (then they run until Ctrl-C).
pub fn run(ports: Ports, duration: &str, keep_running: bool, headless: bool) -> Result<ExitCode> {
    signals::install();
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("xtask: building jitd, jit and the demo…");
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "--workspace", "--bins"])
        .current_dir(&root)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("build failed ({status})");
    }
    let guard = keycloak::ensure_running(ports)?;
    let bin = crate::target_dir().join("debug");
    let demo_dir = crate::target_dir().join("demo");
    let _ = std::fs::remove_dir_all(&demo_dir);
    std::fs::create_dir_all(&demo_dir)?;
    let port = free_port(8787);
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
    let mut first = String::new();
    BufReader::new(jitd.stdout.take().expect("piped")).read_line(&mut first)?;
    if !first.contains("listening") {
        let _ = jitd.kill();
        bail!(
            "jitd did not start; see {}",
            demo_dir.join("jitd.log").display()
        );
    }
    let server = format!("http://127.0.0.1:{port}");
    eprintln!(
        "xtask: jitd on {server} (log: {})",
        demo_dir.join("jitd.log").display()
    );
    let status = Command::new(bin.join("jit-demo"))
        .args(["--server", &server, "--for", duration])
        .env("KEYCLOAK_URL", guard.url())
        .env("JIT_BACKEND_SECRET", keycloak::BACKEND_DEMO_SECRET)
        .status()
        .context("cannot run jit-demo")?;
    let display =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if status.success() && display && !headless {
        // SAFETY: plain syscall on our own child.
        unsafe {
            libc::kill(jitd.id() as i32, libc::SIGTERM);
        }
        let _ = jitd.wait();
        open_app(guard.url())?;
        guard.stop()?;
        return Ok(ExitCode::SUCCESS);
    }
    if keep_running && status.success() {
        println!(
            "\nKeycloak {} and jitd {server} keep running. Try:",
            guard.url()
        );
        println!("  export JIT_SERVER={server}");
        println!("  {} login", bin.join("jit").display());
        println!(
            "(log in as alice / alice-pass, bob / bob-pass …; demo passwords). Ctrl-C stops both."
        );
        while signals::received().is_none() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // SAFETY: plain syscall on our own child.
    unsafe {
        libc::kill(jitd.id() as i32, libc::SIGTERM);
    }
    let _ = jitd.wait();
    guard.stop()?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Opens the desktop app with its embedded jitd (demo policy) against this
/// Keycloak, and waits until it is closed (Quit in the tray menu).
fn open_app(keycloak_url: &str) -> Result<()> {
    let app = crate::desktop::build()?;
    println!("\nOpening the desktop app (embedded jitd). Log in as bob / bob-pass to approve,");
    println!("or alice / alice-pass to request (demo passwords). Close the window (or Quit in the tray) to end it.");
    let status = Command::new(app)
        .env("JIT_KEYCLOAK_URL", keycloak_url)
        .env("JIT_REALM", keycloak::REALM)
        .env("JIT_BACKEND_SECRET", keycloak::BACKEND_DEMO_SECRET)
        .env("JIT_POLICY", workspace_root().join("config/policy.toml"))
        .env_remove("JIT_SERVER")
        .status()
        .context("cannot start the desktop app")?;
    if !status.success() {
        bail!("the desktop app exited with {status}");
    }
    Ok(())
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
