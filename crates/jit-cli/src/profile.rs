//! Login profiles: one file per profile under `$XDG_CONFIG_HOME/jit/profiles/`
//! (mode 0600, folder 0700), so several users can be logged in side by side
//! (`jit --profile bob ...`). Holds the server URL and the token set.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use futures::future::BoxFuture;
use jit_client::{ClientError, TokenSource};
use jit_keycloak::oidc::OidcError;
use jit_keycloak::{OidcClient, TokenSet};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// What `jit login` stores.
#[derive(Clone, Serialize, Deserialize)]
pub struct Profile {
    pub server: String,
    pub issuer: String,
    pub client_id: String,
    pub username: String,
    pub tokens: TokenSet,
}

/// The profiles folder.
pub fn dir() -> anyhow::Result<PathBuf> {
    if let Ok(d) = std::env::var("JIT_CONFIG_DIR") {
        return Ok(PathBuf::from(d).join("profiles"));
    }
    let base = dirs::config_dir()
        .ok_or_else(|| anyhow!("cannot find a config folder (set HOME or JIT_CONFIG_DIR)"))?;
    Ok(base.join("jit").join("profiles"))
}

fn valid_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(anyhow!(
            "invalid profile name '{name}': use letters, digits, - and _"
        ));
    }
    Ok(())
}

/// Path of profile `name`.
pub fn path(name: &str) -> anyhow::Result<PathBuf> {
    valid_name(name)?;
    Ok(dir()?.join(format!("{name}.json")))
}

/// Loads profile `name`, or `None` if not logged in.
pub fn load(name: &str) -> anyhow::Result<Option<Profile>> {
    let p = path(name)?;
    match std::fs::read_to_string(&p) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("corrupt profile {}", p.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("cannot read {}: {e}", p.display())),
    }
}

/// Saves atomically with owner-only permissions.
pub fn save(name: &str, profile: &Profile) -> anyhow::Result<()> {
    let p = path(name)?;
    let d = p.parent().expect("profile has a folder");
    std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = d.join(format!(".{name}.json.tmp"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(profile)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p)?;
    Ok(())
}

/// Deletes profile `name` (no error if absent).
pub fn remove(name: &str) -> anyhow::Result<()> {
    match std::fs::remove_file(path(name)?) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Tokens of a profile, refreshed (and saved) when less than 30 s are left.
pub struct ProfileTokens {
    name: String,
    profile: Mutex<Profile>,
    oidc: Mutex<Option<OidcClient>>,
}

impl ProfileTokens {
    pub fn new(name: &str, profile: Profile) -> Arc<ProfileTokens> {
        Arc::new(ProfileTokens {
            name: name.to_string(),
            profile: Mutex::new(profile),
            oidc: Mutex::new(None),
        })
    }

    async fn current(&self) -> Result<String, ClientError> {
        let mut p = self.profile.lock().await;
        if !p.tokens.needs_refresh(chrono::Utc::now(), 30) {
            return Ok(p.tokens.access_token.clone());
        }
        let relogin = |why: &str| {
            ClientError::Token(format!("{why}; run `jit --profile {} login`", self.name))
        };
        let refresh = p
            .tokens
            .refresh_token
            .clone()
            .ok_or_else(|| relogin("the session expired"))?;
        let mut oidc = self.oidc.lock().await;
        if oidc.is_none() {
            *oidc = Some(
                OidcClient::discover(jit_keycloak::http_client(), &p.issuer, &p.client_id)
                    .await
                    .map_err(keycloak_down)?,
            );
        }
        let fresh = oidc
            .as_ref()
            .expect("set above")
            .refresh(&refresh)
            .await
            .map_err(|e| match e {
                OidcError::SessionEnded => relogin("the Keycloak session has ended"),
                e @ OidcError::Unreachable { .. } => keycloak_down(e),
                other => relogin(&other.to_string()),
            })?;
        p.tokens = fresh;
        save(&self.name, &p).map_err(|e| ClientError::Token(e.to_string()))?;
        Ok(p.tokens.access_token.clone())
    }
}

/// Keycloak could not be reached to refresh the token: an outage (retried
/// by waiting commands), not a reason to log in again.
fn keycloak_down(e: OidcError) -> ClientError {
    match e {
        e @ OidcError::Unreachable { .. } => ClientError::KeycloakUnreachable(e.to_string()),
        other => ClientError::Token(other.to_string()),
    }
}

impl TokenSource for ProfileTokens {
    fn token(&self) -> BoxFuture<'_, Result<String, ClientError>> {
        Box::pin(self.current())
    }
}
