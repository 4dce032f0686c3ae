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

/// A grant of the profile's user that `jit` saw (in a list, a wait, a
/// watch): when Keycloak later refuses to refresh the login, `jit` can
/// say which grant's end ended the session (jitd ends the Keycloak
/// sessions of its user when a grant of an entitlement with
/// `end_sessions_on_revoke` ends, e.g. a break-glass one).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeenGrant {
    pub id: String,
    pub entitlement: String,
    /// When it ended or will end (UTC): `ended_at`, else `expires_at`.
    pub ends_at: chrono::DateTime<chrono::Utc>,
}

/// Grants kept this long after their end (then forgotten).
const SEEN_GRANTS_KEPT_SECS: i64 = 24 * 3600;

fn seen_path(d: &Path, name: &str) -> PathBuf {
    d.join(format!(".{name}.grants.json"))
}

fn read_seen(d: &Path, name: &str) -> Vec<SeenGrant> {
    std::fs::read_to_string(seen_path(d, name))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Remembers the grants among `rows` of user `username` whose end ends
/// the user's Keycloak sessions (`ends_sessions`, see [`SeenGrant`]), in `.NAME.grants.json` next to the profile. Best
/// effort: a failure to write is ignored (it only loses a better word).
pub fn note_grants(name: &str, username: &str, rows: &[jit_core::api::RequestView]) {
    let Ok(d) = dir() else { return };
    note_grants_in(&d, name, username, rows, chrono::Utc::now());
}

fn note_grants_in(
    d: &Path,
    name: &str,
    username: &str,
    rows: &[jit_core::api::RequestView],
    now: chrono::DateTime<chrono::Utc>,
) {
    // Only grants whose end ends the user's sessions can explain an ended
    // login (a grant of another entitlement ending meanwhile cannot).
    let fresh: Vec<SeenGrant> = rows
        .iter()
        .filter(|r| r.ends_sessions)
        .map(|r| &r.request)
        .filter(|q| q.requester_username() == username && q.activated_at().is_some())
        .filter_map(|q| {
            Some(SeenGrant {
                id: q.id().to_string(),
                entitlement: q.entitlement_id().to_string(),
                ends_at: q.ended_at().or(q.expires_at())?,
            })
        })
        .collect();
    if fresh.is_empty() {
        return;
    }
    let mut all = read_seen(d, name);
    all.retain(|g| {
        !fresh.iter().any(|f| f.id == g.id)
            && (now - g.ends_at).num_seconds() < SEEN_GRANTS_KEPT_SECS
    });
    all.extend(fresh);
    if all == read_seen(d, name) {
        return;
    }
    if let Ok(text) = serde_json::to_string(&all) {
        let _ = std::fs::create_dir_all(d);
        if let Ok(mut tmp) = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".grants.tmp")
            .tempfile_in(d)
        {
            if tmp.write_all(text.as_bytes()).is_ok() {
                let _ = tmp.persist(seen_path(d, name));
            }
        }
    }
}

/// The grant whose end most likely ended the Keycloak session of a login
/// whose access token was issued at `issued_at`: the last seen grant that
/// ended after `issued_at` and by `now` (a session still alive when the
/// token was issued, ended since, when that grant ended).
pub fn ended_session_by(
    name: &str,
    issued_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<SeenGrant> {
    let d = dir().ok()?;
    ended_by_in(&read_seen(&d, name), issued_at, now)
}

fn ended_by_in(
    seen: &[SeenGrant],
    issued_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<SeenGrant> {
    seen.iter()
        .filter(|g| g.ends_at >= issued_at && g.ends_at <= now)
        .max_by_key(|g| g.ends_at)
        .cloned()
}

/// Forgets the grants seen for profile `name` (login, logout).
pub fn forget_grants(name: &str) {
    if let Ok(d) = dir() {
        let _ = std::fs::remove_file(seen_path(&d, name));
    }
}

/// The `iat` (issued at, seconds since the epoch) of a JWT access token,
/// read without checking it (only to date the login); `None` if absent.
pub fn issued_at(access_token: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use base64::Engine;
    let payload = access_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    chrono::DateTime::from_timestamp(v.get("iat")?.as_i64()?, 0)
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
        let held = self.tokens.login().await;
        let _lock = match &held {
            Some(held) if due(held) => self.lock_and_reload(held).await,
            _ => None,
        };
        let relogin = |why: &str| {
            ClientError::Token(format!("{why}; run {}", crate::login_command(&self.name)))
        };
        // The session ended: when a grant seen ending since the login's
        // token was issued explains it, say so.
        let ended = |why: &str| {
            let cause = held
                .as_ref()
                .and_then(|l| issued_at(&l.tokens.access_token))
                .and_then(|iat| ended_session_by(&self.name, iat, chrono::Utc::now()));
            match cause {
                Some(g) => ClientError::Token(format!(
                    "your Keycloak session was ended when grant {} ({}) ended at {}; log in again: {}",
                    crate::render::short(&g.id),
                    g.entitlement,
                    crate::render::time(g.ends_at),
                    crate::login_command(&self.name)
                )),
                None => relogin(why),
            }
        };
        self.tokens
            .access_token(REFRESH_MARGIN_SECS)
            .await
            .map_err(|e| match e {
                RefreshError::NotLoggedIn | RefreshError::NoRefreshToken { .. } => {
                    relogin("the session expired")
                }
                RefreshError::SessionEnded { .. } => ended("the Keycloak session has ended"),
                // Keycloak could not be reached to refresh the token: an
                // outage (retried by waiting commands), not a reason to log
                // in again.
                RefreshError::Keycloak(e @ OidcError::Unreachable { .. }) => {
                    ClientError::KeycloakUnreachable(e.to_string())
                }
                // Its own text ends "log in again": say that once.
                RefreshError::Keycloak(OidcError::SessionEnded) => {
                    ended("the Keycloak session has ended")
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
    use jit_core::api::RequestView;

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

    #[test]
    fn the_grant_that_ended_the_session_is_the_last_one_ended_since_the_token() {
        let t = |s: &str| -> chrono::DateTime<chrono::Utc> { s.parse().unwrap() };
        let g = |id: &str, ends: &str| SeenGrant {
            id: id.into(),
            entitlement: "e".into(),
            ends_at: t(ends),
        };
        let seen = [
            g("before", "2026-11-30T09:00:00Z"),
            g("ended", "2026-11-30T10:05:00Z"),
            g("later", "2026-11-30T10:30:00Z"),
        ];
        let iat = t("2026-11-30T10:00:00Z");
        let now = t("2026-11-30T10:10:00Z");
        assert_eq!(ended_by_in(&seen, iat, now).unwrap().id, "ended");
        // Nothing ended since the token was issued: no cause.
        assert!(ended_by_in(&seen[..1], iat, now).is_none());
    }

    /// A grant of alice's as a list shows it: `id` of entitlement `e`,
    /// ended at `ended`, whose end ends her sessions or not.
    fn grant_view(id: &str, e: &str, ended: &str, ends_sessions: bool) -> RequestView {
        serde_json::from_value(serde_json::json!({
            "id": id, "kind": {"type": "access"}, "entitlement_id": e,
            "target": {"kind": "realm_role", "role": e},
            "requester_id": "u1", "requester_username": "alice",
            "justification": "why", "ticket": null, "urgent": false,
            "break_glass": false, "requested_secs": 600, "duration_secs": 600,
            "approvals_required": 1, "votes": [], "status": "expired",
            "created_at": "2026-11-30T09:50:00Z", "pending_until": "2026-11-30T10:50:00Z",
            "start_at": null, "decided_at": "2026-11-30T09:51:00Z",
            "activated_at": "2026-11-30T09:51:00Z", "expires_at": ended,
            "ended_at": ended, "ended_by": null, "end_reason": null,
            "auto_approved": null, "review_required": false,
            "reviewed_by": null, "reviewed_at": null, "extensions": [],
            "entitlement_name": e, "remaining_secs": null,
            "total_secs": 600, "approvals": 1,
            "keycloak": {"owns_assignment": true, "granted_at": "2026-11-30T09:51:00Z",
                "removal_pending": false, "removed_at": ended, "attempts": 0,
                "next_attempt_at": null, "last_error": null},
            "revoke_late": false, "ends_sessions": ends_sessions,
            "awaits_your_review": null
        }))
        .unwrap()
    }

    /// Only a grant whose end ends the user's sessions is remembered to
    /// explain an ended login: a later grant of another entitlement that
    /// ended meanwhile is not named instead.
    #[test]
    fn only_grants_that_end_sessions_are_remembered_as_a_cause() {
        let d = tempfile::tempdir().unwrap();
        let rows = [
            grant_view(
                "break-glass-grant",
                "break-glass",
                "2026-11-30T10:05:00Z",
                true,
            ),
            grant_view("plain-grant", "read-logs", "2026-11-30T10:08:00Z", false),
        ];
        let now: chrono::DateTime<chrono::Utc> = "2026-11-30T10:10:00Z".parse().unwrap();
        note_grants_in(d.path(), "p", "alice", &rows, now);
        let seen = read_seen(d.path(), "p");
        let iat = "2026-11-30T10:00:00Z".parse().unwrap();
        let cause = ended_by_in(&seen, iat, now).unwrap();
        assert_eq!(cause.id, "break-glass-grant", "{seen:?}");
        assert_eq!(seen.len(), 1, "{seen:?}");
    }
}
