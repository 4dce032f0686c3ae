//! Login profiles: one file per profile under `$XDG_CONFIG_HOME/jit/profiles/`
//! (mode 0600, folder 0700), so several users can be logged in side by side
//! (`jit --profile bob ...`). Holds the server URL and the token set.

use std::io::Write;
use std::path::{Path, PathBuf};
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

/// The longest profile name, in characters: the file name `NAME.json`
/// (and its temporary sibling) stays well under the 255-byte limit of
/// common file systems.
pub const MAX_NAME_CHARS: usize = 64;

/// `--profile` / `JIT_PROFILE`: 1 to [`MAX_NAME_CHARS`] ASCII letters,
/// digits, `-` and `_` (it names a file, so no `/`, `.` or empty name).
/// Checked by clap before any command runs (exit 2, one line), so a bad
/// name never gets as far as a browser login. Errors: what is allowed.
pub fn parse_name(name: &str) -> Result<String, String> {
    valid_name(name).map_err(|e| e.to_string())?;
    Ok(name.to_string())
}

fn valid_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > MAX_NAME_CHARS
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(anyhow!(
            "a profile name is 1 to {MAX_NAME_CHARS} letters, digits, - and _"
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

/// Saves atomically with owner-only permissions (see [`save_in`]).
pub fn save(name: &str, profile: &Profile) -> anyhow::Result<()> {
    valid_name(name)?;
    save_in(&dir()?, name, profile)
}

/// Saves profile `name` in folder `d`: written to a temporary file of its
/// own (a unique name, mode 0600) in `d`, synced, then renamed over
/// `NAME.json`. Several `jit` processes refreshing one profile at once
/// (parallel commands just after the access token expired) each rename
/// a whole file of their own, so a reader always finds a whole profile
/// and no writer loses its file to another (a fixed temporary name let
/// one process rename the other's file away: "No such file").
fn save_in(d: &Path, name: &str, profile: &Profile) -> anyhow::Result<()> {
    std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".json.tmp")
        .tempfile_in(d)
        .with_context(|| format!("cannot write a profile in {}", d.display()))?;
    tmp.write_all(serde_json::to_string_pretty(profile)?.as_bytes())?;
    tmp.as_file().sync_all()?;
    let p = d.join(format!("{name}.json"));
    tmp.persist(&p)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", p.display()))?;
    Ok(())
}

/// An exclusive advisory lock (`flock`) on the profile's lock file
/// `.NAME.lock` in folder `d`, held until dropped (closing the file ends
/// it, also when the process dies). Taken around a refresh, so parallel
/// `jit` commands under one profile refresh once: the others wait, then
/// read the refreshed tokens from the file instead of using the same
/// (rotated) refresh token again. Blocks until the lock is free.
/// Elsewhere than Unix: no lock (saves stay atomic).
pub struct RefreshLock(#[allow(dead_code)] std::fs::File);

fn lock_in(d: &Path, name: &str) -> anyhow::Result<RefreshLock> {
    std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    let p = d.join(format!(".{name}.lock"));
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let f = opts
        .open(&p)
        .with_context(|| format!("cannot open {}", p.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        loop {
            // SAFETY: flock on a file descriptor this function owns.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(anyhow!("cannot lock {}: {e}", p.display()));
            }
        }
    }
    Ok(RefreshLock(f))
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
        // Near expiry: refresh under the profile's lock, after taking the
        // tokens another `jit` may have refreshed while this one waited.
        let due = |l: &Login| {
            l.tokens
                .needs_refresh(chrono::Utc::now(), REFRESH_MARGIN_SECS)
        };
        let _lock = match self.tokens.login().await {
            Some(held) if due(&held) => self.lock_and_reload(&held).await,
            _ => None,
        };
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

impl ProfileTokens {
    /// Takes the profile's [`RefreshLock`] (without it, on an error: the
    /// refresh still works, only not once for all), then adopts the
    /// file's login if it is the same user's and needs no refresh.
    async fn lock_and_reload(&self, held: &Login) -> Option<RefreshLock> {
        let name = self.name.clone();
        let lock = tokio::task::spawn_blocking(move || lock_in(&dir()?, &name))
            .await
            .ok()?
            .ok()?;
        if let Ok(Some(p)) = load(&self.name) {
            let l = p.login;
            if l.issuer == held.issuer
                && l.client_id == held.client_id
                && l.username == held.username
                && !l
                    .tokens
                    .needs_refresh(chrono::Utc::now(), REFRESH_MARGIN_SECS)
            {
                self.tokens.set(Some(l)).await;
            }
        }
        Some(lock)
    }
}

impl TokenSource for ProfileTokens {
    fn token(&self) -> BoxFuture<'_, Result<String, ClientError>> {
        Box::pin(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(n: usize) -> Profile {
        serde_json::from_value(serde_json::json!({
            "server": "http://127.0.0.1:8787",
            "issuer": "http://127.0.0.1:8080/realms/r",
            "client_id": "jit-cli",
            "username": format!("user{n}"),
            "tokens": {
                "access_token": format!("a{n}"),
                "refresh_token": format!("r{n}"),
                "expires_at": "2030-01-01T00:00:00Z"
            }
        }))
        .unwrap()
    }

    /// Many writers (parallel refreshes) and readers of one profile at
    /// once: every save succeeds, every read finds a whole profile, and
    /// no temporary file is left behind.
    #[test]
    fn parallel_saves_and_reads_of_one_profile_never_fail() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        save_in(&dir, "p", &profile(0)).unwrap();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        if t % 2 == 0 {
                            save_in(&dir, "p", &profile(t * 100 + i)).unwrap();
                        } else {
                            let text = std::fs::read_to_string(dir.join("p.json")).unwrap();
                            let p: Profile = serde_json::from_str(&text).unwrap();
                            assert!(p.login.username.starts_with("user"));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["p.json"]);
    }

    /// The refresh lock admits one holder at a time, across separate
    /// opens of the lock file (as separate `jit` processes do).
    #[test]
    fn the_refresh_lock_admits_one_holder_at_a_time() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let d = tempfile::tempdir().unwrap();
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (dir, inside, most) = (d.path().to_path_buf(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _l = lock_in(&dir, "p").unwrap();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }
}
