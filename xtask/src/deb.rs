//! `cargo xtask deb`: the Debian package of jitd and the `jit` CLI, built
//! with cargo-deb (installed from crates.io when missing), and a check of
//! what is inside: binaries, the hardened systemd unit (which must pass
//! `systemd-analyze verify`), conffiles in /etc/jitd, maintainer scripts
//! that create the service user and keep the secret root-only.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::{target_dir, workspace_root};

/// cargo-deb release installed when `cargo deb` is missing.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Which build goes into the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Optimised binaries: what you ship.
    Release,
    /// The debug build the tests already made: a fast package for checks.
    Dev,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Dev => "dev",
        }
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed ({status})");
    Ok(())
}

/// Installs cargo-deb when `cargo deb` is not available.
pub fn ensure_cargo_deb() -> Result<()> {
    let ok = Command::new(cargo())
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-deb {CARGO_DEB_VERSION} from crates.io (once)");
    run(Command::new(cargo()).args([
        "install",
        "--locked",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
    ]))
}

/// Builds jitd and jit with `profile` and packages them; returns the
/// `.deb` path (under `target/debian/`).
pub fn build(profile: Profile) -> Result<PathBuf> {
    ensure_cargo_deb()?;
    eprintln!("xtask: building jitd and jit ({} profile)", profile.name());
    run(Command::new(cargo()).args([
        "build",
        "--quiet",
        "--profile",
        profile.name(),
        "-p",
        "jit-server",
        "-p",
        "jit-cli",
        "--bins",
    ]))?;
    let out = target_dir().join("debian");
    std::fs::create_dir_all(&out)?;
    eprintln!("xtask: cargo deb -p jit-server");
    let output = Command::new(cargo())
        .current_dir(workspace_root())
        .args([
            "deb",
            "--no-build",
            "--profile",
            profile.name(),
            "-p",
            "jit-server",
            "-o",
        ])
        .arg(&out)
        .output()
        .context("cannot run cargo deb")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "cargo deb failed ({}):\n{}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // cargo-deb prints the path of the package it wrote.
    let path = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb did not print the package path")?;
    Ok(path)
}

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    ensure!(
        o.status.success(),
        "{cmd:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Checks the package's contents; prints one line per check.
pub fn check(deb: &Path) -> Result<()> {
    let mut checks = 0;
    let mut ok = |what: &str| {
        checks += 1;
        eprintln!("  ✔ {what}");
    };
    eprintln!("xtask: checking {}", deb.display());
    let info = output(Command::new("dpkg-deb").arg("--field").arg(deb))?;
    ensure!(info.contains("Package: jitd"), "package name:\n{info}");
    ensure!(
        info.contains("adduser"),
        "Depends must name adduser:\n{info}"
    );
    ok("control: Package jitd, Depends adduser");

    // Files with their modes.
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let entry = |path: &str| -> Option<&str> {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(".{path}")))
            .and_then(|l| l.split_whitespace().next())
    };
    for (path, mode) in [
        ("/usr/bin/jitd", "-rwxr-xr-x"),
        ("/usr/bin/jit", "-rwxr-xr-x"),
        ("/lib/systemd/system/jitd.service", "-rw-r--r--"),
        ("/etc/jitd/jitd.toml", "-rw-r-----"),
        ("/etc/jitd/policy.toml", "-rw-r-----"),
    ] {
        match entry(path) {
            Some(m) if m == mode => {}
            Some(m) => bail!("{path} has mode {m}, expected {mode}"),
            None => bail!("{path} is missing from the package:\n{listing}"),
        }
    }
    ensure!(
        entry("/etc/jitd/backend-secret").is_none(),
        "the package must not ship a secret"
    );
    ok("binaries jitd and jit, unit, config in /etc/jitd (0640), no secret shipped");

    let dir = tempfile_dir()?;
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(deb)
        .arg(dir.join("DEBIAN")))?;
    let conffiles = std::fs::read_to_string(dir.join("DEBIAN/conffiles")).unwrap_or_default();
    for f in ["/etc/jitd/jitd.toml", "/etc/jitd/policy.toml"] {
        ensure!(
            conffiles.lines().any(|l| l.trim() == f),
            "{f} is not a conffile:\n{conffiles}"
        );
    }
    ok("conffiles: /etc/jitd/jitd.toml, /etc/jitd/policy.toml");
    let postinst = std::fs::read_to_string(dir.join("DEBIAN/postinst"))
        .context("the package has no postinst")?;
    for needle in [
        "adduser --system",
        "install -d -o jitd -g jitd -m 0750 /var/lib/jitd",
        "-m 0600 /dev/null /etc/jitd/backend-secret",
    ] {
        ensure!(postinst.contains(needle), "postinst lacks `{needle}`");
    }
    ok("postinst: system user jitd, /var/lib/jitd 0750, secret file root-only 0600");

    run(Command::new("dpkg-deb").arg("--extract").arg(deb).arg(&dir))?;
    let unit_path = dir.join("lib/systemd/system/jitd.service");
    let unit = std::fs::read_to_string(&unit_path)?;
    for line in [
        "User=jitd",
        "ExecStart=/usr/bin/jitd --config /etc/jitd/jitd.toml",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=jitd",
        "LoadCredential=backend-secret:/etc/jitd/backend-secret",
        "CapabilityBoundingSet=",
    ] {
        ensure!(
            unit.lines().any(|l| l.trim() == line),
            "the unit lacks `{line}`"
        );
    }
    let config = std::fs::read_to_string(dir.join("etc/jitd/jitd.toml"))?;
    ensure!(
        config.contains(
            "backend_client_secret_file = \"/run/credentials/jitd.service/backend-secret\""
        ),
        "jitd.toml must read the secret from the systemd credential"
    );
    ok("unit: dedicated user, hardening, state in /var/lib/jitd, secret as a credential");

    // The packaged jitd accepts the packaged config and policy.
    let jitd = dir.join("usr/bin/jitd");
    let policy_check = output(
        Command::new(&jitd)
            .arg("check-policy")
            .arg(dir.join("etc/jitd/policy.toml")),
    )?;
    ensure!(policy_check.contains("OK"), "{policy_check}");
    ok("packaged jitd accepts the packaged policy");

    // `systemd-analyze verify` on the unit, in a root made of the unpacked
    // package plus this machine's systemd units and `kill` (it checks that
    // the targets named exist and that ExecStart/ExecReload's binaries do).
    std::fs::create_dir_all(dir.join("usr/lib/systemd/system"))?;
    std::fs::create_dir_all(dir.join("bin"))?;
    run(Command::new("cp")
        .arg("-a")
        .arg("/lib/systemd/system/.")
        .arg(dir.join("usr/lib/systemd/system")))?;
    std::fs::copy("/usr/bin/kill", dir.join("bin/kill")).context("copy /usr/bin/kill")?;
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", dir.display()))
        .arg(&unit_path)
        .output()
        .context("cannot run systemd-analyze (Debian package systemd)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    ensure!(
        verify.status.success() && !text.contains("jitd.service"),
        "systemd-analyze verify failed ({}):\n{text}",
        verify.status
    );
    ok("systemd-analyze verify jitd.service: no findings");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("xtask: package OK ({checks} checks)");
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = target_dir()
        .join("debian")
        .join(format!("check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
