//! `cargo xtask package-app`: the desktop app as a Debian package through
//! Tauri's own bundler (`@tauri-apps/cli`, a dev dependency of `ui/`, run
//! with npx: no download at build time), then a check of what is inside.
//!
//! Only `.deb` is built: AppImage (and the other Linux bundles) make the
//! bundler download tools (linuxdeploy, …) at build time, which this
//! machine cannot; they are not faked.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{desktop, target_dir, workspace_root};

/// What the package must hold, checked by [`check_deb`].
pub const MUST_CONTAIN: &[&str] = &[
    "usr/bin/jit-desktop",
    // The web process extension, where the app looks for it from
    // /usr/bin (src-tauri/src/webext.rs, `PACKAGE_DIR`).
    "usr/lib/jit-desktop/webext/libjit_desktop_webext.so",
    "usr/share/icons/hicolor/32x32/apps/jit-desktop.png",
    "usr/share/icons/hicolor/128x128/apps/jit-desktop.png",
];

/// Builds `target/{debug,release}/bundle/deb/*.deb` and checks it.
/// `release`: an optimised binary (slow to build); else the debug build
/// (a development package, same contents).
pub fn desktop_deb(release: bool) -> Result<PathBuf> {
    desktop::build_ui()?;
    let root = workspace_root();
    let profile = if release { "release" } else { "debug" };
    let out = target_dir().join(profile).join("bundle/deb");
    let _ = std::fs::remove_dir_all(&out);
    // The app's web process extension, shipped through the deb bundler's
    // `files` (its path depends on the target dir, so it is passed here
    // rather than written into tauri.conf.json).
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.args(["build", "-p", "jit-desktop-webext"]);
    if release {
        build.arg("--release");
    }
    eprintln!("xtask: cargo build -p jit-desktop-webext ({profile})");
    let st = build
        .current_dir(&root)
        .status()
        .context("cannot run cargo")?;
    if !st.success() {
        bail!("cargo build -p jit-desktop-webext failed ({st})");
    }
    let so = target_dir().join(profile).join(desktop::WEBEXT_FILE);
    let files = serde_json::json!({"bundle": {"linux": {"deb": {"files": {
        format!("/usr/lib/jit-desktop/{}/{}", desktop::WEBEXT_DIR, desktop::WEBEXT_FILE):
            so.to_string_lossy()
    }}}}});
    let mut cmd = Command::new("npx");
    cmd.args(["--no-install", "tauri", "build", "--bundles", "deb", "--ci"]);
    if !release {
        cmd.arg("--debug");
    }
    cmd.arg("--config").arg(files.to_string());
    eprintln!("xtask: tauri build --bundles deb ({profile})");
    let status = cmd
        .current_dir(root.join("ui"))
        .env("TAURI_APP_PATH", root.join("src-tauri"))
        .env("TAURI_FRONTEND_PATH", root.join("ui"))
        .status()
        .context("cannot run npx (install Node.js 20+, then `cd ui && npm ci`)")?;
    if !status.success() {
        bail!("tauri build --bundles deb failed ({status})");
    }
    let deb = std::fs::read_dir(&out)
        .with_context(|| format!("no {}", out.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("no .deb in {}", out.display()))?;
    check_deb(&deb)?;
    eprintln!("xtask: {} checked", deb.display());
    Ok(deb)
}

fn dpkg_deb(args: &[&str], deb: &Path) -> Result<String> {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .context("cannot run dpkg-deb")?;
    if !out.status.success() {
        bail!(
            "dpkg-deb {args:?} {}: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks a desktop `.deb` with `dpkg-deb -I` / `-c` and its desktop
/// entry: the binary, the icons, the runtime dependencies, and the entry
/// that registers the `jit://` scheme (`MimeType=x-scheme-handler/jit`,
/// `Exec=jit-desktop %u`). Errors list what is missing.
pub fn check_deb(deb: &Path) -> Result<()> {
    let info = dpkg_deb(&["-I"], deb)?;
    let files = dpkg_deb(&["-c"], deb)?;
    let mut missing: Vec<String> = Vec::new();
    for want in [
        "Package: jit-access",
        "Architecture: amd64",
        "libwebkit2gtk-4.1-0",
    ] {
        if !info.contains(want) {
            missing.push(format!("control: {want}"));
        }
    }
    // `perm owner size date time path` (the path may hold spaces and may
    // start with `./`): (path as archived, path without `./`).
    let paths: Vec<(String, String)> = files
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            (t.len() > 5).then(|| {
                let p = t[5..].join(" ");
                let p = p.split(" -> ").next().unwrap_or(&p).to_string();
                let bare = p.trim_start_matches("./").to_string();
                (p, bare)
            })
        })
        .collect();
    for want in MUST_CONTAIN {
        if !paths.iter().any(|(_, p)| p == want) {
            missing.push((*want).to_string());
        }
    }
    let desktop = paths
        .iter()
        .find(|(_, p)| p.starts_with("usr/share/applications/") && p.ends_with(".desktop"))
        .map(|(archived, _)| archived.clone());
    match desktop {
        None => missing.push("usr/share/applications/*.desktop".into()),
        Some(path) => {
            let text = desktop_entry(deb, &path)?;
            for want in [
                "MimeType=x-scheme-handler/jit;",
                "Exec=jit-desktop %u",
                "Icon=jit-desktop",
            ] {
                if !text.lines().any(|l| l.trim() == want) {
                    missing.push(format!("{path}: {want}"));
                }
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} lacks: {}\n-- dpkg-deb -I --\n{info}\n-- dpkg-deb -c --\n{files}",
            deb.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

fn desktop_entry(deb: &Path, path: &str) -> Result<String> {
    let tar = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .output()
        .context("dpkg-deb --fsys-tarfile")?;
    let mut child = Command::new("tar")
        .args(["-xO", path])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("tar")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("tar stdin")?;
        // A closed pipe after tar found the file is fine.
        let _ = stdin.write_all(&tar.stdout);
    }
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
