//! The Keycloak extension (`keycloak-extension/`, Java 17, Maven): built with
//! `mvn package` into `target/keycloak-extension/` and copied into the
//! distribution's `providers/` before Keycloak starts (`start-dev` then
//! re-augments on its own).
//!
//! The build is skipped when the jar is newer than `pom.xml` and every file
//! under `src/`; Maven's progress (one line per plugin step) is shown.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};

use crate::{target_dir, workspace_root};

/// File name of the built jar (`<finalName>` in the pom).
pub const JAR_NAME: &str = "keycloak-jit-extension.jar";

/// `keycloak-extension/` in the workspace.
pub fn source_dir() -> PathBuf {
    workspace_root().join("keycloak-extension")
}

/// Maven's build directory: `target/keycloak-extension`.
pub fn build_dir() -> PathBuf {
    target_dir().join("keycloak-extension")
}

/// The built jar.
pub fn jar() -> PathBuf {
    build_dir().join(JAR_NAME)
}

fn newest_mtime(dir: &Path, newest: &mut SystemTime) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            newest_mtime(&entry.path(), newest)?;
        } else if let Ok(m) = meta.modified() {
            *newest = (*newest).max(m);
        }
    }
    Ok(())
}

fn up_to_date(jar: &Path) -> Result<bool> {
    let Ok(built) = fs::metadata(jar).and_then(|m| m.modified()) else {
        return Ok(false);
    };
    let src = source_dir();
    let mut newest = fs::metadata(src.join("pom.xml"))?.modified()?;
    newest_mtime(&src.join("src"), &mut newest)?;
    Ok(built >= newest)
}

/// Builds the extension jar with `mvn package` unless it is up to date;
/// returns its path. Errors: `mvn` missing, or the build failing (with
/// Maven's last lines).
pub fn build() -> Result<PathBuf> {
    let jar = jar();
    if up_to_date(&jar)? {
        return Ok(jar);
    }
    eprintln!(
        "xtask: building the Keycloak extension (mvn package, {})",
        source_dir().display()
    );
    let started = Instant::now();
    let mut child = Command::new("mvn")
        .args([
            "-B",
            "--no-transfer-progress",
            "-Dstyle.color=never",
            "package",
        ])
        .arg(format!("-Djit.build.dir={}", build_dir().display()))
        .current_dir(source_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Maven's console library writes bare ANSI resets there even in
        // batch mode without colour: kept, shown only when the build fails.
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `mvn` (install Maven and a JDK 17+: ./dev bootstrap)")?;
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
            text
        })
    });
    let mut tail: Vec<String> = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            // One line per plugin step ("--- compiler:3.13.0:compile ... ---"), plus problems.
            if let Some(step) = line.strip_prefix("[INFO] --- ") {
                eprintln!("xtask:   mvn {}", step.trim_end_matches(" ---"));
            } else if line.starts_with("[ERROR]") || line.starts_with("[WARNING]") {
                eprintln!("xtask:   {line}");
            }
            tail.push(line);
            if tail.len() > 60 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait()?;
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        bail!(
            "building the Keycloak extension failed ({status}); last Maven lines:\n{}\n{}",
            tail.join("\n"),
            stderr.trim()
        );
    }
    if !jar.is_file() {
        bail!("Maven succeeded but {} is missing", jar.display());
    }
    eprintln!(
        "xtask: Keycloak extension built in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        jar.display()
    );
    Ok(jar)
}

/// Builds the jar if needed and copies it into `<dist>/providers/`.
pub fn install(dist: &Path) -> Result<()> {
    let jar = build()?;
    let providers = dist.join("providers");
    fs::create_dir_all(&providers)?;
    let dest = providers.join(JAR_NAME);
    let same = fs::read(&dest).ok() == Some(fs::read(&jar)?);
    if !same {
        fs::copy(&jar, &dest)
            .with_context(|| format!("cannot copy {} to {}", jar.display(), dest.display()))?;
    }
    Ok(())
}
