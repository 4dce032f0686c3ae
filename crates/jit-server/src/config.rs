//! jitd's configuration file (TOML). Secrets are never in it: the
//! `jit-backend` client secret comes from the environment or a file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `jitd --config FILE`. Relative paths are relative to the file's folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on, e.g. `127.0.0.1:8787` (port 0 picks a free one).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// SQLite database file (created if missing; the default shape: one
    /// jitd), or a PostgreSQL URL `postgres://user[:password]@host[:port]/db`
    /// (several jitd replicas may share it).
    pub database: PathBuf,
    /// Policy file (see `config/policy.toml`); reloaded when it changes.
    pub policy: PathBuf,
    /// How long a client may take to send a request's head (request line
    /// and headers, from when it starts one) and, separately, its body,
    /// in seconds (default 30; 1 to 300). A connection slower than that is
    /// closed, or its request answered 400, so connections that trickle a
    /// request or never finish one (slowloris) cannot pile up.
    #[serde(default = "default_request_read_timeout")]
    pub request_read_timeout_secs: u64,
    /// `text` (default) or `json`: one JSON object per log line.
    #[serde(default)]
    pub log_format: crate::tracing_setup::LogFormat,
    pub keycloak: KeycloakConfig,
    /// Outgoing webhooks, `[[webhook]]` tables (see `docs/webhooks.md`);
    /// none by default. Checked at load: a malformed URL is refused.
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    /// Keycloak work: concurrency and per-call time limit.
    #[serde(default)]
    pub scheduler: crate::scheduler::SchedulerConfig,
}

/// Where Keycloak is and how jitd talks to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeycloakConfig {
    /// Base URL, e.g. `http://127.0.0.1:18080` (no `/realms/...`).
    pub url: String,
    pub realm: String,
    /// The issuer tokens carry (`iss`), when jitd reaches Keycloak by another
    /// URL than users do (e.g. an internal address). Default:
    /// `{url}/realms/{realm}`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The `aud` jitd requires in access tokens.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Confidential client whose service account grants and revokes.
    #[serde(default = "default_backend")]
    pub backend_client_id: String,
    /// Public client the `jit` CLI logs in with.
    #[serde(default = "default_cli")]
    pub cli_client_id: String,
    /// Public client the desktop app logs in with.
    #[serde(default = "default_desktop")]
    pub desktop_client_id: String,
    /// File holding the backend client's secret. When absent, the secret is
    /// read from the environment variable `JIT_BACKEND_SECRET`.
    pub backend_client_secret_file: Option<PathBuf>,
    /// User attribute jitd writes each grant's end to, for the Keycloak
    /// extension (`keycloak-extension/`): its token mapper and login gate
    /// read it. Default `jit.grants`; an empty string writes nothing.
    #[serde(default = "default_grants_attribute")]
    pub grants_attribute: Option<String>,
}

fn default_request_read_timeout() -> u64 {
    30
}
fn default_listen() -> String {
    "127.0.0.1:8787".into()
}
fn default_audience() -> String {
    "jit-api".into()
}
fn default_cli() -> String {
    "jit-cli".into()
}
fn default_desktop() -> String {
    "jit-desktop".into()
}
fn default_grants_attribute() -> Option<String> {
    Some(crate::grant_ends::DEFAULT_ATTRIBUTE.into())
}
fn default_backend() -> String {
    "jit-backend".into()
}

impl Config {
    /// Reads and parses `path`, resolving relative paths against its folder.
    ///
    /// Errors: unreadable file, TOML error (with line), unknown field, an
    /// invalid `[[webhook]]` (malformed URL, bad filter, no secret source).
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        let mut c: Config =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if !c.is_postgres() {
            // A libpq key=value string is not a SQLite file name (it would
            // be created under that name, password included).
            let spec = c.database.to_string_lossy();
            if looks_like_conninfo(&spec) {
                anyhow::bail!(
                    "config {}: database looks like a libpq key=value string; jitd takes a PostgreSQL URL (`database = \"postgres://user@host:5432/db?sslmode=verify-full&sslrootcert=…\"`) or a SQLite file path",
                    path.display()
                );
            }
            c.database = base.join(&c.database);
        }
        c.policy = base.join(&c.policy);
        if let Some(f) = &c.keycloak.backend_client_secret_file {
            c.keycloak.backend_client_secret_file = Some(base.join(f));
        }
        for w in &mut c.webhooks {
            w.resolve_paths(base);
        }
        crate::webhooks::validate_all(&c.webhooks)
            .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        let t = c.request_read_timeout_secs;
        if !(1..=300).contains(&t) {
            anyhow::bail!(
                "config {}: request_read_timeout_secs = {t}: it must be 1 to 300 (seconds)",
                path.display()
            );
        }
        let d = c.scheduler.disabled_check_secs;
        if !(1..=3600).contains(&d) {
            anyhow::bail!(
                "config {}: [scheduler] disabled_check_secs = {d}: it must be 1 to 3600 (seconds); the check of active grants against Keycloak's disabled users cannot be turned off",
                path.display()
            );
        }
        Ok(c)
    }

    /// Whether `database` is a PostgreSQL URL.
    pub fn is_postgres(&self) -> bool {
        crate::store::postgres::is_url(&self.database.to_string_lossy())
    }

    /// `database` for messages: a URL without its password.
    pub fn database_display(&self) -> String {
        let s = self.database.to_string_lossy().to_string();
        if !self.is_postgres() {
            return self.database.display().to_string();
        }
        match url::Url::parse(&s) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                // libpq also takes the password as a query parameter.
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let hide = matches!(k.as_ref(), "password" | "sslpassword");
                        (
                            k.into_owned(),
                            if hide { "***".into() } else { v.into_owned() },
                        )
                    })
                    .collect();
                if !pairs.is_empty() {
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                }
                u.to_string()
            }
            Err(_) => "postgres://…".into(),
        }
    }

    /// The issuer tokens must carry: `keycloak.issuer`, else
    /// `{keycloak.url}/realms/{realm}`.
    pub fn issuer(&self) -> String {
        self.keycloak
            .issuer
            .clone()
            .unwrap_or_else(|| jit_keycloak::issuer_url(&self.keycloak.url, &self.keycloak.realm))
    }

    /// The backend client secret, from the file or `JIT_BACKEND_SECRET`.
    pub fn backend_secret(&self) -> anyhow::Result<String> {
        if let Some(f) = &self.keycloak.backend_client_secret_file {
            let s = std::fs::read_to_string(f).map_err(|e| {
                anyhow::anyhow!("cannot read backend secret file {}: {e}", f.display())
            })?;
            return Ok(s.trim().to_string());
        }
        std::env::var("JIT_BACKEND_SECRET").map_err(|_| {
            anyhow::anyhow!("no backend client secret: set JIT_BACKEND_SECRET or keycloak.backend_client_secret_file")
        })
    }
}

/// Whether `spec` reads as a libpq connection string (`host=… dbname=…`)
/// rather than a file path.
fn looks_like_conninfo(spec: &str) -> bool {
    const KEYS: [&str; 6] = ["host", "hostaddr", "port", "dbname", "user", "password"];
    spec.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .any(|(k, _)| KEYS.contains(&k.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(database: &str) -> anyhow::Result<Config> {
        load_with(database, "")
    }

    fn load_with(database: &str, extra: &str) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jitd.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\ndatabase = \"{database}\"\npolicy = \"policy.toml\"\n\n[keycloak]\nurl = \"http://127.0.0.1:9\"\nrealm = \"r\"\n{extra}"
            ),
        )
        .unwrap();
        Config::load(&path)
    }

    /// The check of active grants against Keycloak's disabled users runs
    /// every 1 to 3600 s; 0 (read as "off") and larger values are refused
    /// with the range, not quietly changed.
    #[test]
    fn disabled_check_secs_is_refused_outside_its_range() {
        for bad in ["0", "3601", "9223372036854775807"] {
            let e = load_with(
                "data/jitd.sqlite",
                &format!("\n[scheduler]\ndisabled_check_secs = {bad}\n"),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("must be 1 to 3600"), "{bad}: {e}");
        }
        for good in ["1", "30", "3600"] {
            let c = load_with(
                "data/jitd.sqlite",
                &format!("\n[scheduler]\ndisabled_check_secs = {good}\n"),
            )
            .unwrap();
            assert_eq!(c.scheduler.disabled_check_secs.to_string(), good);
        }
        assert_eq!(
            load("data/jitd.sqlite")
                .unwrap()
                .scheduler
                .disabled_check_secs,
            30
        );
    }

    /// The time a client has to send a request's head and body is 1 to
    /// 300 s (default 30); 0 (no limit: slowloris) and more are refused.
    #[test]
    fn request_read_timeout_secs_is_refused_outside_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jitd.toml");
        let with = |line: &str| {
            std::fs::write(
                &path,
                format!(
                    "listen = \"127.0.0.1:0\"\ndatabase = \"j.sqlite\"\npolicy = \"policy.toml\"\n{line}\n\n[keycloak]\nurl = \"http://127.0.0.1:9\"\nrealm = \"r\"\n"
                ),
            )
            .unwrap();
            Config::load(&path)
        };
        for bad in ["0", "301"] {
            let e = with(&format!("request_read_timeout_secs = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("must be 1 to 300"), "{bad}: {e}");
        }
        assert_eq!(
            with("request_read_timeout_secs = 5")
                .unwrap()
                .request_read_timeout_secs,
            5
        );
        assert_eq!(with("").unwrap().request_read_timeout_secs, 30);
    }

    /// A password never shows in messages, whether in the URL's user
    /// part or as libpq's `password` parameter.
    #[test]
    fn a_database_password_is_never_shown() {
        for url in [
            "postgres://jit:S3cret@db/jit",
            "postgresql://jit@db/jit?password=S3cret&dbname=x",
            "postgres://jit@db/jit?sslmode=verify-full&sslpassword=S3cret",
        ] {
            let shown = load(url).unwrap().database_display();
            assert!(!shown.contains("S3cret"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }

    /// A libpq key=value string is refused, not taken for a SQLite file
    /// name.
    #[test]
    fn a_libpq_connection_string_is_refused() {
        let e = load("host=127.0.0.1 port=5432 user=jit password=S3cret dbname=jit")
            .unwrap_err()
            .to_string();
        assert!(e.contains("libpq key=value string"), "{e}");
        assert!(!e.contains("S3cret"), "{e}");
        assert!(load("data/jitd.sqlite").is_ok());
    }
}
