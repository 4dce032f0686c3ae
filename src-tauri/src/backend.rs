//! Which jitd the app talks to: a remote one (`JIT_SERVER`) or one embedded
//! in the app (the jit-server library) with its SQLite store and a config
//! written under the app data dir.
//!
//! Embedded settings (env): `JIT_KEYCLOAK_URL` (default
//! `http://127.0.0.1:18080`), `JIT_REALM` (default `jit`),
//! `JIT_BACKEND_SECRET` (the jit-backend client secret, read by jitd from the
//! environment, never written), `JIT_POLICY` (default: the bundled demo
//! policy, copied to `policy.toml` in the data dir on first start).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jit_client::{Client, TokenSource};
use serde::Serialize;

/// The demo policy shipped with the app (`config/policy.toml`).
pub const BUNDLED_POLICY: &str = include_str!("../../config/policy.toml");

/// Which jitd the app talks to: one it runs itself, or a remote one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Embedded,
    Remote,
}

/// A jitd the app is connected to.
pub struct Backend {
    pub kind: BackendKind,
    /// jitd's base URL.
    pub url: String,
    pub client: Client,
    /// Keeps the embedded server running.
    pub server: Option<jit_server::Server>,
}

impl Backend {
    /// A jitd at `url` (`JIT_SERVER`), called with `tokens`.
    pub fn remote(url: &str, tokens: Arc<dyn TokenSource>) -> Backend {
        Backend {
            kind: BackendKind::Remote,
            url: url.to_string(),
            client: Client::new(url, Some(tokens)),
            server: None,
        }
    }

    /// The keyring entry for this backend: its URL, or for the embedded jitd
    /// (random port) its Keycloak issuer.
    pub fn keyring_entry(&self) -> String {
        match &self.server {
            Some(s) => format!("embedded+{}", s.state.public.issuer),
            None => self.url.clone(),
        }
    }
}

/// Settings of the embedded jitd, from the environment.
#[derive(Debug, Clone)]
pub struct EmbeddedSettings {
    pub keycloak_url: String,
    pub realm: String,
    pub policy: Option<PathBuf>,
}

impl EmbeddedSettings {
    /// Reads the embedded jitd's settings from `JIT_KEYCLOAK_URL`, `JIT_REALM` and `JIT_POLICY` (empty counts as unset).
    pub fn from_env() -> EmbeddedSettings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        EmbeddedSettings {
            keycloak_url: var("JIT_KEYCLOAK_URL")
                .unwrap_or_else(|| "http://127.0.0.1:18080".into())
                .trim_end_matches('/')
                .to_string(),
            realm: var("JIT_REALM").unwrap_or_else(|| "jit".into()),
            policy: var("JIT_POLICY").map(PathBuf::from),
        }
    }
}

fn toml_str(s: &str) -> String {
    // A TOML basic string: JSON string escaping is a subset that TOML reads.
    serde_json::to_string(s).expect("string serialises")
}

/// Writes `jitd.toml` (and the bundled policy if none is given) into
/// `data_dir`; returns the config path. Secrets are never written.
pub fn write_embedded_config(data_dir: &Path, s: &EmbeddedSettings) -> Result<PathBuf, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let policy = match &s.policy {
        Some(p) => {
            std::fs::canonicalize(p).map_err(|e| format!("JIT_POLICY {}: {e}", p.display()))?
        }
        None => {
            let p = data_dir.join("policy.toml");
            if !p.exists() {
                std::fs::write(&p, BUNDLED_POLICY)
                    .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            }
            p
        }
    };
    let text = format!(
        "# Written by the JIT Access desktop app for its embedded jitd.\n\
         # The jit-backend client secret comes from JIT_BACKEND_SECRET.\n\
         listen = \"127.0.0.1:0\"\n\
         database = {}\n\
         policy = {}\n\n\
         [keycloak]\n\
         url = {}\n\
         realm = {}\n",
        toml_str(&data_dir.join("jitd.sqlite").to_string_lossy()),
        toml_str(&policy.to_string_lossy()),
        toml_str(&s.keycloak_url),
        toml_str(&s.realm),
    );
    let path = data_dir.join("jitd.toml");
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Starts the embedded jitd on a free loopback port.
pub async fn start_embedded(
    data_dir: &Path,
    settings: &EmbeddedSettings,
    tokens: Arc<dyn TokenSource>,
) -> Result<Backend, String> {
    let path = write_embedded_config(data_dir, settings)?;
    let config = jit_server::Config::load(&path).map_err(|e| e.to_string())?;
    let server = jit_server::start(&config)
        .await
        .map_err(|e| format!("the embedded jitd could not start: {e}"))?;
    let url = server.url();
    Ok(Backend {
        kind: BackendKind::Embedded,
        client: Client::new(&url, Some(tokens)),
        url,
        server: Some(server),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_config_jitd_can_load_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedSettings {
            keycloak_url: "http://127.0.0.1:18080".into(),
            realm: "jit".into(),
            policy: None,
        };
        let path = write_embedded_config(dir.path(), &s).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.to_lowercase().contains("secret ="), "{text}");
        let c = jit_server::Config::load(&path).unwrap();
        assert_eq!(c.listen, "127.0.0.1:0");
        assert_eq!(c.keycloak.realm, "jit");
        assert_eq!(c.keycloak.desktop_client_id, "jit-desktop");
        assert!(c.policy.exists());
        jit_server::load_policy(&c.policy).unwrap();
    }
}
