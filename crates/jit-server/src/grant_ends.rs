//! Grant ends in Keycloak, for the JIT extension (`keycloak-extension/`).
//!
//! jitd writes, on each user holding JIT grants, the user attribute
//! `keycloak.grants_attribute` (default `jit.grants`): one value per grant
//! that has (or is about to have) its role or group in Keycloak, as JSON
//! `{"grant": request id, "entitlement": id, "target": {"kind": ...},
//! "expires_at": RFC 3339 UTC}`. The extension's protocol mapper bounds token
//! lifetimes by it and leaves out roles whose grant has ended; its login gate
//! reads it too. Keycloak never calls jitd.
//!
//! The values are always derived from the store (the only truth), never
//! patched: [`sync_user`] computes the whole set for a user and writes it
//! when it differs. Every store change marks its requester (from
//! [`crate::AppState::published`]); the [`run`] worker syncs marked users,
//! retrying transient Keycloak failures with backoff (1 s doubling to 30 s,
//! about 10 min in all).
//! The scheduler also syncs right before it assigns a role, so no token can
//! carry a JIT role that Keycloak does not yet know the end of.
//!
//! Order that keeps tokens right: a grant's value appears before its role
//! is assigned (with a provisional end, `assigning_since + duration`, or
//! `now + duration` before that is set, never later than
//! the real one), shows the real end once active, shows the end of an early
//! drop or revoke at once, and disappears only after the role has left
//! Keycloak — so an ended role is never shown as standing.
//!
//! Without the extension the attribute is harmless; writing it needs the
//! realm's user profile to allow it (see the README in `keycloak-extension/`).
//! A failure here never blocks a grant or a revoke; it is logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use jit_core::{RequestKind, Status};
use jit_keycloak::KeycloakError;
use tokio::time::Instant;

use crate::store::{AuditRecord, Stored};
use crate::AppState;

/// Default user attribute (the extension's default too).
pub const DEFAULT_ATTRIBUTE: &str = "jit.grants";

/// Transient failures retried per user before giving up (about 10 min).
const MAX_ATTEMPTS: u32 = 25;

/// Longest wait between retries of one user's sync.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The users whose grant ends must be (re)written, and how.
pub struct GrantEnds {
    attribute: Option<String>,
    /// User id → (retry not before, failed attempts).
    dirty: Mutex<BTreeMap<String, (Instant, u32)>>,
    wake: tokio::sync::Notify,
    /// One sync at a time per user: each reads the user's grants from the
    /// store then writes Keycloak, so the last write for a user is always
    /// of their latest store state. Different users never wait for each
    /// other (a burst of grants stays parallel). Entries are dropped when
    /// no sync holds them.
    writing: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl GrantEnds {
    /// `attribute`: the user attribute to write, or `None` to write nothing
    /// (no extension in this Keycloak).
    pub fn new(attribute: Option<String>) -> GrantEnds {
        GrantEnds {
            attribute: attribute.filter(|a| !a.is_empty()),
            dirty: Mutex::new(BTreeMap::new()),
            wake: tokio::sync::Notify::new(),
            writing: Mutex::new(BTreeMap::new()),
        }
    }

    /// Wakes the writer (Keycloak answers again).
    pub fn wake_up(&self) {
        self.wake.notify_one();
    }

    /// The attribute written, if any.
    pub fn attribute(&self) -> Option<&str> {
        self.attribute.as_deref()
    }

    /// Marks the requesters of `recs` for a sync now.
    pub fn mark_records(&self, recs: &[AuditRecord]) {
        if self.attribute.is_none() || recs.is_empty() {
            return;
        }
        let now = Instant::now();
        {
            let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
            for r in recs {
                d.insert(r.requester_id.clone(), (now, 0));
            }
        }
        self.wake.notify_one();
    }

    fn retry_later(&self, user_id: &str, attempts: u32) {
        let secs = 1u64 << attempts.min(5);
        let wait = Duration::from_secs(secs).min(MAX_BACKOFF);
        let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        // A newer mark (attempts 0) wins over the retry.
        d.entry(user_id.to_string())
            .or_insert((Instant::now() + wait, attempts + 1));
    }

    /// Marks `user_id` for a sync in 1 s with its failed attempts as they
    /// were (Keycloak as a whole was out of reach: not this user's failure).
    fn retry_uncounted(&self, user_id: &str, attempts: u32) {
        let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        d.entry(user_id.to_string())
            .or_insert((Instant::now() + Duration::from_secs(1), attempts));
    }

    /// The sync lock of `user_id` (created on first use).
    fn user_lock(&self, user_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.writing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(user_id.to_string())
            .or_default()
            .clone()
    }

    /// Drops `user_id`'s sync lock once nobody holds or waits for it.
    fn release_user_lock(&self, user_id: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        drop(lock);
        let mut w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if w.get(user_id).is_some_and(|l| Arc::strong_count(l) == 1) {
            w.remove(user_id);
        }
    }

    /// Takes the users due now; returns them and when the next one is due.
    fn take_due(&self) -> (Vec<(String, u32)>, Option<Instant>) {
        let now = Instant::now();
        let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        let due: Vec<(String, u32)> = d
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(u, (_, n))| (u.clone(), *n))
            .collect();
        for (u, _) in &due {
            d.remove(u);
        }
        (due, d.values().map(|(at, _)| *at).min())
    }
}

/// The attribute values for one user's stored requests at `now`, sorted by
/// grant id: grants JIT owns that are active, being activated (provisional
/// end `assigning_since + duration`, or `now + duration`), or ended with the removal from Keycloak still
/// pending (end = when they ended). Standing assignments (JIT does not own
/// them) are left out: the user keeps those after the grant.
pub fn values(grants: &[Stored], now: DateTime<Utc>) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for s in grants {
        let r = &s.request;
        if !matches!(r.kind(), RequestKind::Access) || s.grant.owns_assignment != Some(true) {
            continue;
        }
        let end = match r.status() {
            Status::Active => r.expires_at(),
            Status::Approved
                if s.grant.granted_at.is_none() && r.start_at().is_none_or(|t| t <= now) =>
            {
                // From when jitd set out to assign it (see
                // `GrantState::assigning_since`): never later than the end
                // it gets when active.
                let from = s.grant.assigning_since.map_or(now, |t| t.min(now));
                Some(from + chrono::Duration::seconds(r.duration_secs().max(0)))
            }
            st if st.is_terminal() && s.grant.removal_pending => {
                match (r.expires_at(), r.ended_at()) {
                    (Some(e), Some(x)) => Some(e.min(x)),
                    (e, x) => e.or(x).or(Some(now)),
                }
            }
            _ => None,
        };
        let Some(end) = end else { continue };
        let v = serde_json::json!({
            "grant": r.id(),
            "entitlement": r.entitlement_id(),
            "target": r.target(),
            "expires_at": end.to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        out.push((r.id().to_string(), v.to_string()));
    }
    out.sort();
    out.into_iter().map(|(_, v)| v).collect()
}

/// Writes the user's grant ends as the store has them now (nothing when
/// unchanged or when no attribute is configured).
///
/// Errors: the store's, as [`KeycloakError::Unavailable`]; Keycloak's
/// (transient ones are worth retrying, see [`KeycloakError::is_transient`]);
/// [`KeycloakError::NotKept`] when the realm's user profile drops the
/// attribute.
pub async fn sync_user(state: &AppState, user_id: &str) -> Result<(), KeycloakError> {
    let Some(attribute) = state.grant_ends.attribute() else {
        return Ok(());
    };
    let lock = state.grant_ends.user_lock(user_id);
    let r = {
        let _this_user = lock.lock().await;
        write_user(state, user_id, attribute).await
    };
    state.grant_ends.release_user_lock(user_id, lock);
    r
}

/// Writes of one sync before it gives up for now (and is retried later).
const WRITE_ROUNDS: usize = 3;

/// The user's grants as far as the attribute depends on them: two reads
/// with the same fingerprint give the same values (but for provisional
/// ends, which move with the clock).
fn fingerprint(grants: &[Stored]) -> String {
    let parts: Vec<_> = grants
        .iter()
        .map(|s| {
            let r = &s.request;
            serde_json::json!([
                r.id(),
                r.status().as_str(),
                r.start_at(),
                r.expires_at(),
                r.ended_at(),
                &s.grant
            ])
        })
        .collect();
    serde_json::Value::Array(parts).to_string()
}

async fn user_grants(state: &AppState, user_id: &str) -> Result<Vec<Stored>, KeycloakError> {
    state
        .store
        .user_grants_in_keycloak(user_id)
        .await
        .map_err(|e| KeycloakError::Unavailable(format!("{STORE_FAILED}{e}")))
}

/// One sync of `user_id`. The per-user lock ([`GrantEnds::user_lock`])
/// serialises this process's syncs only: on a shared database another
/// replica may read the user's grants and write the attribute at the same
/// time (Keycloak's user update replaces the whole attribute). So after a
/// write the grants are read again, and the write is done again if they
/// changed since they were read (another replica's change: its own write
/// may have come first, with what it read then), or if the re-read of the
/// attribute showed another writer's values ([`KeycloakError::Overwritten`]),
/// at most [`WRITE_ROUNDS`] times; an attribute found gone after the
/// write is taken for the realm dropping it ([`KeycloakError::NotKept`])
/// only alone on the database or when every round found it gone. The last
/// writer of a user thus always
/// checks its values against the latest store state after writing; an
/// older state written by another replica is rewritten by that replica's
/// own check.
async fn write_user(state: &AppState, user_id: &str, attribute: &str) -> Result<(), KeycloakError> {
    let shared = state.store.shared();
    let mut grants = user_grants(state, user_id).await?;
    let mut last = None;
    // Rounds whose re-read found the attribute gone.
    let mut dropped = 0;
    for _ in 0..WRITE_ROUNDS {
        let seen = fingerprint(&grants);
        let values = values(&grants, Utc::now());
        let r = state
            .admin
            .set_user_attribute(user_id, attribute, &values)
            .await;
        match r {
            Ok(wrote) => {
                if wrote {
                    tracing::debug!(
                        user = user_id,
                        grants = values.len(),
                        "grant ends written to Keycloak"
                    );
                }
                if !shared {
                    return Ok(());
                }
            }
            // Another writer came in between (or removed the attribute
            // right after this write): decided below, from the store.
            Err(e @ KeycloakError::Overwritten { .. }) => last = Some(e),
            Err(e @ KeycloakError::NotKept(_)) => {
                dropped += 1;
                last = Some(e)
            }
            Err(e) => return Err(e),
        }
        let now = user_grants(state, user_id).await?;
        let changed = fingerprint(&now) != seen;
        match last.take() {
            // Nobody else's change: the realm really drops the attribute —
            // certain alone on the database; on a shared one only when
            // every round found it gone, because another replica writing
            // from an older read of the store (before this grant) removes
            // it just the same, right after this write.
            Some(e @ KeycloakError::NotKept(_))
                if !changed && (!shared || dropped == WRITE_ROUNDS) =>
            {
                return Err(e)
            }
            // The other writer wrote the same grants (its provisional ends
            // differ by the clock only): nothing to fix.
            Some(KeycloakError::Overwritten { ref found, .. })
                if !changed && same_grants(found, &values) =>
            {
                return Ok(())
            }
            Some(e) => last = Some(e),
            None if !changed => return Ok(()),
            None => {}
        }
        grants = now;
    }
    Err(match last {
        // Gone after some writes but not all: another writer's (transient,
        // retried later), not yet proof that the realm drops it.
        Some(KeycloakError::NotKept(_)) | None => KeycloakError::Overwritten {
            what: format!(
                "attribute {attribute} of user {user_id} (the user's grants or the attribute kept changing while it was written)"
            ),
            found: Vec::new(),
        },
        Some(e) => e,
    })
}

/// Whether two attribute value lists name the same grants (their ends may
/// differ: a provisional end is `now + duration` at the writer's `now`).
fn same_grants(a: &[String], b: &[String]) -> bool {
    let ids = |v: &[String]| -> Vec<Option<String>> {
        let mut ids: Vec<Option<String>> = v
            .iter()
            .map(|s| {
                serde_json::from_str::<serde_json::Value>(s)
                    .ok()
                    .and_then(|j| j.get("grant").and_then(|g| g.as_str()).map(str::to_string))
            })
            .collect();
        ids.sort();
        ids
    };
    let (x, y) = (ids(a), ids(b));
    x == y && x.iter().all(Option::is_some)
}

/// Called by the scheduler right before it assigns a role: writes the
/// grant's (provisional) end first. A failure is logged and retried by the
/// worker; it never stops the grant.
pub async fn before_assign(state: &AppState, user_id: &str) {
    if let Err(e) = sync_user(state, user_id).await {
        log_failure(user_id, &e, 0);
        state.grant_ends.retry_later(user_id, 0);
        state.grant_ends.wake.notify_one();
    }
}

/// Says a failed sync: the realm dropping the attribute at ERROR (it
/// stays so until an administrator acts); another replica's write in
/// between at debug (normal on several replicas, written again at once by
/// the retry) unless it keeps happening; anything else at WARN. `attempts`:
/// earlier failed attempts of this user's sync.
fn log_failure(user_id: &str, e: &KeycloakError, attempts: u32) {
    match e {
        KeycloakError::NotKept(_) => {
            tracing::error!(user = user_id, error = %e, "grant ends not written; tokens are not time-bound")
        }
        KeycloakError::Overwritten { .. } if attempts < 3 => {
            tracing::debug!(user = user_id, error = %e, "grant ends written again after another writer's write")
        }
        // The store (the database), not Keycloak, failed to answer.
        KeycloakError::Unavailable(m) if m.starts_with(STORE_FAILED) => {
            tracing::warn!(user = user_id, error = %m, "grant ends not written yet: the database did not answer")
        }
        // Not a passing failure: it stays so until an administrator gives
        // jitd's service account the right (realm-management manage-users).
        KeycloakError::Status { status: 403, .. } => {
            tracing::error!(user = user_id, error = %e, "grant ends not written: Keycloak forbids jitd's service account to change users (it needs manage-users); tokens are not time-bound until that is fixed")
        }
        _ => tracing::warn!(user = user_id, error = %e, "grant ends not written yet"),
    }
}

/// Start of the error text of a store read that failed during a sync.
const STORE_FAILED: &str = "store: ";

/// The worker: syncs marked users until `state.stopping` flips. At start it
/// marks every user with an open request, so a restart repairs what a crash
/// left half written.
pub async fn run(state: std::sync::Arc<AppState>) {
    if state.grant_ends.attribute().is_none() {
        return;
    }
    match state.store.open_requests().await {
        Ok(open) => {
            let now = Instant::now();
            let mut d = state
                .grant_ends
                .dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for s in open {
                d.insert(s.request.requester_id().to_string(), (now, 0));
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list open requests for the grant ends"),
    }
    let mut stop = state.stopping.subscribe();
    loop {
        if *stop.borrow() {
            return;
        }
        // Keycloak out of reach (or refusing jitd's login): nothing is sent
        // and no attempt is counted until the scheduler's probe sees it
        // answer again (it wakes this loop), so a wrong secret does not
        // make one login per user and retry.
        if state.scheduler.keycloak_down() {
            tokio::select! {
                _ = state.grant_ends.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let (due, next) = state.grant_ends.take_due();
        for (user, attempts) in due {
            if state.scheduler.keycloak_down() {
                // Found out of reach by this pass (or by another caller).
                state.grant_ends.retry_uncounted(&user, attempts);
                continue;
            }
            if let Err(e) = sync_user(&state, &user).await {
                let store_failed =
                    matches!(&e, KeycloakError::Unavailable(m) if m.starts_with(STORE_FAILED));
                if !store_failed && state.keycloak_failed(&e) {
                    // Not this user's failure: written when Keycloak is back.
                    state.grant_ends.retry_uncounted(&user, attempts);
                    continue;
                }
                log_failure(&user, &e, attempts);
                if e.is_transient() && attempts < MAX_ATTEMPTS {
                    state.grant_ends.retry_later(&user, attempts);
                } else if e.is_transient() {
                    tracing::error!(user = %user, "grant ends still not written after {MAX_ATTEMPTS} attempts; giving up until the user's next change or restart");
                }
            }
        }
        let sleep = next
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = state.grant_ends.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jit_core::api::GrantState;
    use jit_core::{AccessRequest, Decision, NewRequest, Policy, Principal};

    const POLICY: &str = r#"
[[entitlement]]
id = "db"
realm_role = "prod-db-admin"
max_duration = "1h"
approver_roles = ["db-approver"]
"#;

    fn t0() -> DateTime<Utc> {
        "2026-11-30T10:00:00Z".parse().unwrap()
    }

    /// An approved request of alice for 600 s, with the grant bookkeeping.
    fn approved(id: &str, owns: Option<bool>) -> Stored {
        let policy = Policy::from_toml(POLICY).unwrap();
        let alice = Principal::new("alice-id", "alice");
        let mut bob = Principal::new("bob-id", "bob");
        bob.roles = ["db-approver".to_string()].into();
        let input = NewRequest {
            entitlement: "db".into(),
            duration_secs: Some(600),
            justification: "fix the replica lag".into(),
            ..NewRequest::default()
        };
        let (mut r, _) = AccessRequest::create(id.into(), &input, &alice, &policy, t0()).unwrap();
        r.vote(
            policy.entitlement("db").unwrap(),
            &bob,
            Decision::Approve,
            None,
            None,
            t0(),
        )
        .unwrap();
        Stored {
            request: r,
            grant: GrantState {
                owns_assignment: owns,
                ..GrantState::default()
            },
        }
    }

    fn active(id: &str) -> Stored {
        let mut s = approved(id, Some(true));
        s.request.activate(t0()).unwrap();
        s.grant.granted_at = Some(t0());
        s
    }

    fn ends(v: &[String]) -> Vec<(String, String)> {
        v.iter()
            .map(|s| {
                let j: serde_json::Value = serde_json::from_str(s).unwrap();
                assert_eq!(j["entitlement"], "db");
                assert_eq!(
                    j["target"],
                    serde_json::json!({"kind": "realm_role", "role": "prod-db-admin"})
                );
                (
                    j["grant"].as_str().unwrap().to_string(),
                    j["expires_at"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn active_grants_carry_their_end() {
        let v = values(&[active("g1")], t0());
        assert_eq!(
            ends(&v),
            [("g1".to_string(), "2026-11-30T10:10:00.000Z".to_string())]
        );
    }

    #[test]
    fn a_grant_being_activated_gets_a_provisional_end_from_now() {
        let now = t0() + chrono::Duration::seconds(5);
        let v = values(&[approved("g1", Some(true))], now);
        assert_eq!(ends(&v)[0].1, "2026-11-30T10:10:05.000Z");
        // Not decided yet, or standing: nothing to bound.
        assert!(values(&[approved("g2", None)], now).is_empty());
        assert!(values(&[approved("g3", Some(false))], now).is_empty());
    }

    #[test]
    fn an_early_end_shows_until_the_role_is_removed() {
        let mut s = active("g1");
        let at = t0() + chrono::Duration::seconds(90);
        s.request
            .drop_grant(&Principal::new("alice-id", "alice"), at)
            .unwrap();
        s.grant.removal_pending = true;
        let v = values(std::slice::from_ref(&s), at);
        assert_eq!(ends(&v)[0].1, "2026-11-30T10:01:30.000Z");
        s.grant.removal_pending = false;
        assert!(values(&[s], at).is_empty(), "gone once removed");
    }

    #[test]
    fn values_are_sorted_by_grant() {
        let v = values(&[active("g2"), active("g1")], t0());
        let ids: Vec<String> = ends(&v).into_iter().map(|(g, _)| g).collect();
        assert_eq!(ids, ["g1", "g2"]);
    }

    #[test]
    fn another_writers_values_name_the_same_grants_whatever_their_ends() {
        let v = |g: &str, end: &str| format!(r#"{{"grant":"{g}","expires_at":"{end}"}}"#);
        let ours = [
            v("g1", "2026-11-30T10:10:00.000Z"),
            v("g2", "2026-11-30T11:00:00.000Z"),
        ];
        let theirs = [
            v("g2", "2026-11-30T11:00:00.000Z"),
            v("g1", "2026-11-30T10:10:00.120Z"),
        ];
        assert!(
            same_grants(&ours, &theirs),
            "provisional ends differ by the clock only"
        );
        assert!(!same_grants(&ours, &theirs[..1]), "a grant missing");
        assert!(
            !same_grants(&ours, &[v("g1", "x"), v("g3", "y")]),
            "another grant"
        );
        assert!(
            !same_grants(&["junk".to_string()], &["junk".to_string()]),
            "not ours to judge"
        );
    }
}
