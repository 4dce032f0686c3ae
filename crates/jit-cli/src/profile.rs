//! Login profiles: one file per profile under `$XDG_CONFIG_HOME/jit/profiles/`
//! (mode 0600, folder 0700), so several users can be logged in side by side
//! (`jit --profile bob ...`). Holds the server URL and the token set.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use futures::future::BoxFuture;
use jit_client::{ClientError, TokenSource};
use jit_login::refresh::REFRESH_MARGIN_SECS;
use jit_login::{Login, OidcError, RefreshError, RefreshingTokens, TokenStore};
use serde::{Deserialize, Serialize};

/// What `jit login` stores: the server and the login (issuer, client id,
/// username, tokens; flattened, so the file keeps its shape).
#[derive(Clone, Serialize, Deserialize)]
pub struct Profile {
    pub server: String,
    #[serde(flatten)]
    pub login: Login,
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

/// Tokens of a profile, refreshed (and saved to the profile file) when
/// less than 30 s are left: jit-login's [`RefreshingTokens`] over the file.
pub struct ProfileTokens {
    name: String,
    tokens: RefreshingTokens,
}

/// The profile file as jit-login's [`TokenStore`].
struct ProfileFile {
    name: String,
    server: String,
}

impl TokenStore for ProfileFile {
    fn save<'a>(&'a self, login: &'a Login) -> BoxFuture<'a, Result<(), String>> {
        let profile = Profile {
            server: self.server.clone(),
            login: login.clone(),
        };
        Box::pin(async move { save(&self.name, &profile).map_err(|e| format!("{e:#}")) })
    }
}

impl ProfileTokens {
    /// The token source of profile `name` (its file is where refreshes are saved).
    pub fn new(name: &str, profile: Profile) -> Arc<ProfileTokens> {
        let file = ProfileFile {
            name: name.to_string(),
            server: profile.server,
        };
        Arc::new(ProfileTokens {
            name: name.to_string(),
            tokens: RefreshingTokens::new(Arc::new(file), Some(profile.login)),
        })
    }

    async fn current(&self) -> Result<String, ClientError> {
        let relogin = |why: &str| {
            ClientError::Token(format!("{why}; run {}", crate::login_command(&self.name)))
        };
        self.tokens
            .access_token(REFRESH_MARGIN_SECS)
            .await
            .map_err(|e| match e {
                RefreshError::NotLoggedIn | RefreshError::NoRefreshToken { .. } => {
                    relogin("the session expired")
                }
                RefreshError::SessionEnded { .. } => relogin("the Keycloak session has ended"),
                // Keycloak could not be reached to refresh the token: an
                // outage (retried by waiting commands), not a reason to log
                // in again.
                RefreshError::Keycloak(e @ OidcError::Unreachable { .. }) => {
                    ClientError::KeycloakUnreachable(e.to_string())
                }
                // Its own text ends "log in again": say that once.
                RefreshError::Keycloak(OidcError::SessionEnded) => {
                    relogin("the Keycloak session has ended")
                }
                RefreshError::Keycloak(other) => relogin(&other.to_string()),
                RefreshError::Store(e) => ClientError::Token(e),
            })
    }
}

impl TokenSource for ProfileTokens {
    fn token(&self) -> BoxFuture<'_, Result<String, ClientError>> {
        Box::pin(self.current())
    }
}
