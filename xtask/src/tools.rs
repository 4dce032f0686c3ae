//! Test tools from outside Rust, fetched on first use into the target dir
//! and handed to `cargo test` by `cargo xtask test` through environment
//! variables:
//!
//! - `SCHEMATHESIS`: the OpenAPI fuzzer of `tests/tests/openapi.rs`, from
//!   PyPI (pinned version) into a venv made with Debian's Python 3
//!   (`python3-venv`, installed by `./dev bootstrap`);
//! - `PROMTOOL`: checks and unit-tests the alert rules in
//!   `deploy/prometheus` (`tests/tests/deploy.rs`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The pinned schemathesis release.
pub const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Debian's Python (another `python3` may come first on PATH).
const PYTHON: &str = "/usr/bin/python3";

/// Path of the `schemathesis` executable, installing it if missing or of
/// another version. Errors: no Python 3 with venv, PyPI unreachable.
pub fn ensure_schemathesis() -> Result<PathBuf> {
    let venv = crate::target_dir().join("tools").join("schemathesis");
    let exe = venv.join("bin").join("schemathesis");
    let stamp = venv.join("installed-version");
    if exe.exists()
        && std::fs::read_to_string(&stamp).is_ok_and(|v| v.trim() == SCHEMATHESIS_VERSION)
    {
        return Ok(exe);
    }
    let python = if std::path::Path::new(PYTHON).exists() {
        PYTHON
    } else {
        "python3"
    };
    eprintln!(
        "xtask: installing schemathesis {SCHEMATHESIS_VERSION} from PyPI into {}",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(&venv);
    let status = Command::new(python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .with_context(|| format!("cannot run {python} (install python3 and python3-venv)"))?;
    if !status.success() {
        bail!("{python} -m venv failed ({status}); install python3-venv (./dev bootstrap does)");
    }
    let status = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("schemathesis=={SCHEMATHESIS_VERSION}"))
        .status()
        .context("cannot run pip of the venv")?;
    if !status.success() || !exe.exists() {
        bail!("pip install schemathesis=={SCHEMATHESIS_VERSION} failed ({status})");
    }
    std::fs::write(&stamp, SCHEMATHESIS_VERSION)?;
    Ok(exe)
}

/// Path of `promtool` (checks the alert rules in `deploy/prometheus`): the
/// one on PATH, else extracted from Debian's `prometheus` package into the
/// target dir (`apt-get download`, no install, no service started).
/// Errors: no apt, package not downloadable.
pub fn ensure_promtool() -> Result<PathBuf> {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !p.is_empty() {
            return Ok(PathBuf::from(p));
        }
    }
    let dir = crate::target_dir().join("tools").join("prometheus");
    let exe = dir.join("usr").join("bin").join("promtool");
    if exe.exists() {
        return Ok(exe);
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "xtask: fetching promtool (Debian package prometheus) into {}",
        dir.display()
    );
    let download = |dir: &std::path::Path| {
        Command::new("apt-get")
            .args(["download", "-qq", "prometheus"])
            .current_dir(dir)
            .status()
    };
    let mut ok = download(&dir).is_ok_and(|s| s.success());
    if !ok {
        // The package lists may be missing on a fresh machine.
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        ok = download(&dir).is_ok_and(|s| s.success());
    }
    if !ok {
        bail!("apt-get download prometheus failed");
    }
    let deb = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("no prometheus .deb downloaded")?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&dir)
        .status()?;
    if !status.success() || !exe.exists() {
        bail!("dpkg-deb -x {} failed ({status})", deb.display());
    }
    let _ = std::fs::remove_file(&deb);
    Ok(exe)
}
