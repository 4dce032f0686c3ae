//! Developer tasks for Keycloak JIT Access, run as `cargo xtask ...`.
//!
//! What it is for: fetching the pinned Keycloak distribution from Maven
//! Central (checked against a pinned SHA-256), starting it on loopback with
//! the `jit` demo realm imported, stopping it, and running the workspace tests
//! against it (`cargo xtask test`), and building and checking the Debian
//! package of jitd (`cargo xtask deb`).
//!
//! What it is not for: it is never shipped, never used by the product at run
//! time, and it is not a way to run Keycloak in production (`start-dev`, H2,
//! demo credentials).
//!
//! The library part exists so that every subcommand (and later ones such as
//! `demo`) shares one implementation: see [`keycloak::ensure_running`].

pub mod chaos;
pub mod deb;
pub mod demo;
pub mod desktop;
pub mod extension;
pub mod keycloak;
pub mod package;
pub mod probe;
pub mod signals;
pub mod tools;

use std::path::PathBuf;

/// Root of the Cargo workspace (the folder holding `xtask/`).
///
/// Found from `CARGO_MANIFEST_DIR` as cargo sets it for this run (`cargo
/// run` of xtask, or `cargo test` of a package that uses xtask as a
/// library: then it is that package's folder, inside the workspace), the
/// path built in only without it: two checkouts sharing one
/// `CARGO_TARGET_DIR` share this code's build when their sources match,
/// and the path built in is then the other checkout's (which may be gone).
pub fn workspace_root() -> PathBuf {
    let built_in = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let at_run = std::env::var_os("CARGO_MANIFEST_DIR").filter(|d| !d.is_empty());
    if let Some(dir) = at_run.map(PathBuf::from) {
        if let Some(root) = dir
            .ancestors()
            .find(|a| a.join("xtask/Cargo.toml").is_file() && a.join("Cargo.toml").is_file())
        {
            return root.to_path_buf();
        }
    }
    built_in.parent().map(PathBuf::from).unwrap_or(built_in)
}

/// The `target` directory of the workspace (where Keycloak is unpacked and run).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => workspace_root().join(d),
        _ => workspace_root().join("target"),
    }
}
