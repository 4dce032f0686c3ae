//! Where the app finds its WebKitGTK web process extension
//! (crates/jit-desktop-webext: a malloc trim in each web process).
//!
//! WebKitGTK loads *every* shared library in the web-extensions directory
//! into the web process, so the app only ever uses a directory that holds
//! this one library and sits next to its own binary (never a path from
//! the environment):
//!
//! - [`DEV_DIR`] beside the binary: `target/{debug,release}/webext/`,
//!   `target/desktop-e2e/bin/webext/` (placed by `cargo xtask app`,
//!   `desktop-test`, `demo`);
//! - [`PACKAGE_DIR`] relative to the binary: the Debian package's
//!   `/usr/bin/jit-desktop` → `/usr/lib/jit-desktop/webext/`
//!   (`cargo xtask package-app`).
//!
//! Without it (e.g. a plain `cargo build -p jit-desktop`) the app runs as
//! before, without the trim; it says so in one info line.

use std::path::{Path, PathBuf};

/// The extension's file name (the cdylib of crate `jit-desktop-webext`).
pub const FILE: &str = "libjit_desktop_webext.so";

/// The directory beside the binary of a development build.
pub const DEV_DIR: &str = "webext";

/// The directory relative to the binary's directory in the package.
pub const PACKAGE_DIR: &str = "../lib/jit-desktop/webext";

/// The first of [`DEV_DIR`], [`PACKAGE_DIR`] under `exe_dir` that holds
/// [`FILE`].
pub fn dir_for(exe_dir: &Path) -> Option<PathBuf> {
    [DEV_DIR, PACKAGE_DIR]
        .iter()
        .map(|d| exe_dir.join(d))
        .find(|d| d.join(FILE).is_file())
}

/// The extensions directory of the running binary, or `None` (logged).
pub fn dir() -> Option<PathBuf> {
    let found = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(dir_for));
    match &found {
        Some(d) => tracing::debug!(dir = %d.display(), "web process extension"),
        None => tracing::info!(
            "no web process extension ({FILE}) next to the binary: the web process runs without its malloc trim"
        ),
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_dev_dir_then_the_package_dir_and_only_with_the_file() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        assert_eq!(dir_for(&bin), None);
        // A directory without the library is not used.
        std::fs::create_dir_all(bin.join(DEV_DIR)).unwrap();
        assert_eq!(dir_for(&bin), None);
        let pkg = root.path().join("usr/lib/jit-desktop/webext");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(pkg.join(FILE), b"").unwrap();
        assert_eq!(dir_for(&bin), Some(bin.join(PACKAGE_DIR)));
        std::fs::write(bin.join(DEV_DIR).join(FILE), b"").unwrap();
        assert_eq!(dir_for(&bin), Some(bin.join(DEV_DIR)));
    }
}
