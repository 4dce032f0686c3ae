//! `cargo xtask chaos [--kills N]`: the `jit-chaos` workload (in the
//! `jit-e2e` crate) against this checkout's Keycloak, which it restarts
//! once (keeping the database) through `cargo xtask keycloak restart`.

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::keycloak::{self, Ports};
use crate::{signals, target_dir, workspace_root};

/// Builds the binaries (unless `build` is false), makes sure Keycloak runs,
/// runs `jit-chaos` and returns its verdict.
pub fn run(ports: Ports, kills: usize, seed: Option<u64>, build: bool) -> Result<ExitCode> {
    signals::install();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    if build {
        eprintln!("xtask: building jitd and jit-chaos…");
        let status = Command::new(&cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "jit-server",
                "-p",
                "jit-e2e",
                "--bins",
            ])
            .current_dir(workspace_root())
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            bail!("build failed ({status})");
        }
    }
    let guard = keycloak::ensure_running(ports)?;
    // The chaos restarts Keycloak: it must be this checkout's.
    let info = keycloak::read_pid().context(
        "chaos restarts Keycloak, so it needs this checkout's Keycloak (`cargo xtask keycloak start`), not one reached only through KEYCLOAK_URL",
    )?;
    let kc_ports = info.ports.unwrap_or(ports);
    if kc_ports.url() != guard.url() {
        bail!(
            "KEYCLOAK_URL={} is not this checkout's Keycloak ({}); unset it for the chaos run",
            guard.url(),
            kc_ports.url()
        );
    }
    let log_dir = target_dir().join("chaos");
    let mut cmd = Command::new(target_dir().join("debug/jit-chaos"));
    cmd.arg("--kills")
        .arg(kills.to_string())
        .arg("--log-dir")
        .arg(&log_dir)
        .env("KEYCLOAK_URL", guard.url())
        .env("JIT_BACKEND_SECRET", keycloak::BACKEND_DEMO_SECRET)
        .env("JIT_CHAOS_XTASK", own_binary()?)
        .env(
            "JIT_CHAOS_KC_PORTS",
            format!("{} {}", kc_ports.http, kc_ports.management),
        );
    if let Some(s) = seed {
        cmd.arg("--seed").arg(s.to_string());
    }
    eprintln!(
        "xtask: jit-chaos --kills {kills} (logs in {})",
        log_dir.display()
    );
    let status = cmd.status().context("cannot run jit-chaos")?;
    if let Err(e) = guard.stop() {
        eprintln!("xtask: could not stop Keycloak: {e:#}");
    }
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// This xtask's own binary, run again by `jit-chaos` to restart Keycloak.
/// `cargo xtask test` runs `cargo test --workspace` first, which re-links
/// it, so Linux names the running one "PATH (deleted)"; the file now at
/// PATH is the same xtask, rebuilt.
fn own_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(
        match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(p) => std::path::PathBuf::from(p),
            None => exe,
        },
    )
}
