//! The scheduler: reads what is due from the store and does it.
//!
//! It holds no state of its own, so a restart, a crash or a Keycloak outage
//! loses nothing: on every tick it asks the store what is due — pending
//! requests past their TTL, approved requests whose start has come, active
//! grants past `expires_at`, ended grants whose role is still in Keycloak —
//! and works through it. Keycloak failures are retried with exponential
//! backoff (1 s doubling to 10 s: a late revoke must not wait long once Keycloak is back) and shown on the grant (`last_error`,
//! `revoke_late`).
//!
//! Order of a grant: decide and persist whether JIT owns the assignment,
//! assign in Keycloak (idempotent), then mark the request active. Order of a
//! revoke: mark the request ended with `removal_pending`, remove in Keycloak
//! (exactly the one role or membership; idempotent), optionally end the
//! user's sessions, then clear `removal_pending`. A crash between any two
//! steps is finished on the next tick.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_core::{DomainError, Status, Transition};

use crate::store::{Entry, Note, StoreError, Stored};
use crate::AppState;

/// Marks `s` ended with transition `t`; if JIT may have assigned something
/// in Keycloak, the removal becomes due.
pub fn end_grant(s: &mut Stored, t: Transition) -> Vec<Entry> {
    if s.grant.owns_assignment.is_some() || s.grant.granted_at.is_some() {
        s.grant.removal_pending = true;
        s.grant.attempts = 0;
        s.grant.next_attempt_at = None;
        s.grant.last_error = None;
    }
    vec![t.into()]
}

/// Runs until `state.stopping` flips.
pub async fn run(state: Arc<AppState>) {
    let mut stop = state.stopping.subscribe();
    let mut checked_generation = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        state.reload_policy_if_changed();
        let generation = state
            .policy_generation
            .load(std::sync::atomic::Ordering::SeqCst);
        if generation != checked_generation {
            match withdraw_outside_policy(&state).await {
                Ok(()) => checked_generation = generation,
                Err(e) => tracing::error!(error = %e, "policy re-check failed"),
            }
        }
        if let Err(e) = close_orphaned_extensions(&state).await {
            tracing::error!(error = %e, "closing extensions of ended grants failed");
        }
        let next = match tick(&state, Utc::now()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "scheduler tick failed");
                None
            }
        };
        // Sleep until the next due instant, at most 1 s (policy reload check).
        let max = Duration::from_secs(1);
        let sleep = next
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(max)
            .min(max);
        tokio::select! {
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Ends every open request whose entitlement is no longer in the policy in
/// force, or now names another Keycloak target: only policy entitlements may
/// be held through JIT. Runs at start and after each policy change.
pub async fn withdraw_outside_policy(state: &AppState) -> Result<(), StoreError> {
    let policy = state.policy();
    for s in state.store.open_requests().await? {
        let r = &s.request;
        let in_policy = policy
            .entitlement(&r.entitlement_id)
            .is_some_and(|e| e.kind == r.target);
        if in_policy
            || (r.status == Status::Approved && !matches!(r.kind, jit_core::RequestKind::Access))
        {
            continue;
        }
        let reason = format!(
            "'{}' is no longer in the policy (as {})",
            r.entitlement_id, r.target
        );
        tracing::warn!(request = %r.id, %reason, "withdrawing");
        ignore_race(
            state
                .store
                .update(&r.id, move |s| {
                    let t = s.request.withdraw(&reason, Utc::now())?;
                    Ok(end_grant(s, t))
                })
                .await
                .map(|(_, recs)| state.published(&recs)),
        )?;
    }
    Ok(())
}

/// Cancels pending extensions whose grant has ended, so no approver is
/// offered a decision the server would refuse (`not_an_active_grant`).
pub async fn close_orphaned_extensions(state: &AppState) -> Result<(), StoreError> {
    for id in state.store.orphaned_extensions().await? {
        ignore_race(
            state
                .store
                .update(&id, |s| {
                    let grant = match &s.request.kind {
                        jit_core::RequestKind::Extension { grant_id } => grant_id.clone(),
                        jit_core::RequestKind::Access => String::new(),
                    };
                    let reason = format!("its grant {grant} has ended");
                    Ok(vec![s.request.withdraw(&reason, Utc::now())?.into()])
                })
                .await
                .map(|(_, recs)| state.published(&recs)),
        )?;
    }
    Ok(())
}

fn ignore_race(r: Result<(), StoreError>) -> Result<(), StoreError> {
    // Another path (an API call) changed the request first: fine.
    match r {
        Err(StoreError::Domain(DomainError::IllegalTransition { .. })) => Ok(()),
        other => other,
    }
}

/// One pass over due work at `now`. Returns when the next thing is due.
pub async fn tick(
    state: &AppState,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let due = state.store.due(now).await?;
    for id in &due.lapse {
        ignore_race(
            state
                .store
                .update(id, move |s| Ok(vec![s.request.lapse(now)?.into()]))
                .await
                .map(|(_, recs)| state.published(&recs)),
        )?;
    }
    for id in &due.expire {
        ignore_race(
            state
                .store
                .update(id, move |s| {
                    let t = s.request.expire(now)?;
                    Ok(end_grant(s, t))
                })
                .await
                .map(|(_, recs)| state.published(&recs)),
        )?;
    }
    // Keycloak work is claimed first: with several replicas on one
    // database each grant and removal is done by one of them; a dead
    // replica's claims lapse after CLAIM_LEASE.
    let mut remove_ids: Vec<String> = due.remove.clone();
    remove_ids.extend(due.expire.iter().cloned());
    let remove_ids = state
        .store
        .claim(remove_ids, &state.replica, Utc::now(), CLAIM_LEASE)
        .await?;
    let activate_ids = state
        .store
        .claim(
            due.activate.clone(),
            &state.replica,
            Utc::now(),
            CLAIM_LEASE,
        )
        .await?;
    // Removals before activations, so an expiring grant and a new one for
    // the same role see a consistent picture. The grants just expired are
    // due for removal too (`remove` skips those with nothing to remove).
    for id in &remove_ids {
        let r = remove(state, id).await;
        state.store.release(id, &state.replica).await?;
        r?;
    }
    for id in &activate_ids {
        let r = activate(state, id).await;
        state.store.release(id, &state.replica).await?;
        r?;
    }
    Ok(due.next_due)
}

/// How long a replica's claim on due Keycloak work lasts: the longest
/// another replica waits to take over the work of one that died.
pub const CLAIM_LEASE: chrono::Duration = chrono::Duration::seconds(10);

fn backoff(s: &mut Stored, err: String) {
    s.grant.attempts = s.grant.attempts.saturating_add(1);
    let secs = 1i64 << s.grant.attempts.min(6).saturating_sub(1);
    s.grant.next_attempt_at = Some(Utc::now() + chrono::Duration::seconds(secs.min(10)));
    s.grant.last_error = Some(err);
}

async fn record_failure(state: &AppState, id: &str, err: String) -> Result<(), StoreError> {
    tracing::warn!(request = id, error = %err, "Keycloak step failed; will retry");
    state
        .store
        .update(id, move |s| {
            backoff(s, err);
            Ok(vec![])
        })
        .await?;
    Ok(())
}

async fn activate(state: &AppState, id: &str) -> Result<(), StoreError> {
    let Some(s) = state.store.get(id).await? else {
        return Ok(());
    };
    let now = Utc::now();
    if !s.request.is_due_for_activation(now) {
        return Ok(());
    }
    let r = &s.request;
    let started = std::time::Instant::now();
    // Only entitlements in the policy in force are ever granted, and only
    // with the Keycloak target the policy names.
    let policy = state.policy();
    match policy.entitlement(&r.entitlement_id) {
        Some(e) if e.kind == r.target => {}
        _ => {
            return record_failure(
                state,
                id,
                format!(
                    "'{}' is no longer in the policy with this target; not granted",
                    r.entitlement_id
                ),
            )
            .await
        }
    }
    let owns = match s.grant.owns_assignment {
        Some(o) => o,
        None => {
            let decided = match state
                .store
                .active_ownership(&r.requester_id, &r.target, id)
                .await?
            {
                Some(inherited) => inherited,
                None => match state.admin.holds(&r.requester_id, &r.target, false).await {
                    Ok(held) => !held,
                    Err(e) => return record_failure(state, id, e.to_string()).await,
                },
            };
            state
                .store
                .update(id, move |s| {
                    s.grant.owns_assignment = Some(decided);
                    Ok(vec![])
                })
                .await?;
            decided
        }
    };
    if owns {
        // The extension must know the grant's end before any token carries the role.
        crate::grant_ends::before_assign(state, &r.requester_id).await;
        if let Err(e) = state.admin.assign(&r.requester_id, &r.target).await {
            return record_failure(state, id, e.to_string()).await;
        }
    }
    let result = state.store.update(id, move |s| {
        let t = s.request.activate(Utc::now())?;
        s.grant.granted_at = Some(Utc::now());
        s.grant.attempts = 0;
        s.grant.next_attempt_at = None;
        s.grant.last_error = None;
        let mut entries = vec![Entry::from(t)];
        if !owns {
            entries.push(Entry::Note(Note {
                event: "grant.standing",
                actor: jit_core::model::SYSTEM_ACTOR.into(),
                reason: Some("already held before this grant (standing or overlapping); JIT will not remove it".into()),
                at: Utc::now(),
            }));
        }
        Ok(entries)
    }).await;
    match result {
        Ok((_, recs)) => {
            // Due at the later of the decision and the scheduled start.
            let due = r.decided_at.max(r.start_at).unwrap_or(r.created_at);
            let late = (Utc::now() - due).num_milliseconds() as f64 / 1000.0;
            state.metrics.granted(started.elapsed(), late);
            tracing::info!(request = id, target = %r.target, user = %r.requester_username, "granted");
            state.published(&recs);
            Ok(())
        }
        // Cancelled or revoked while we were granting: the removal path
        // (set by end_grant, since owns_assignment is decided) cleans up.
        Err(StoreError::Domain(DomainError::IllegalTransition { .. })) => {
            state
                .store
                .update(id, |s| {
                    if s.request.status.is_terminal() && s.grant.removed_at.is_none() {
                        s.grant.removal_pending = true;
                    }
                    Ok(vec![])
                })
                .await?;
            state.wake.notify_one();
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn remove(state: &AppState, id: &str) -> Result<(), StoreError> {
    let Some(s) = state.store.get(id).await? else {
        return Ok(());
    };
    if !s.grant.removal_pending {
        return Ok(());
    }
    let r = &s.request;
    let others = state
        .store
        .active_ownership(&r.requester_id, &r.target, id)
        .await?;
    let (note_event, reason) = if others.is_some() {
        (
            "grant.kept",
            "another active grant of the same entitlement remains; role kept".to_string(),
        )
    } else if s.grant.owns_assignment == Some(true) {
        let started = std::time::Instant::now();
        if let Err(e) = state.admin.unassign(&r.requester_id, &r.target).await {
            return record_failure(state, id, e.to_string()).await;
        }
        let end_sessions = state
            .policy()
            .entitlement(&r.entitlement_id)
            .is_some_and(|e| e.end_sessions_on_revoke);
        if end_sessions {
            if let Err(e) = state.admin.logout_user(&r.requester_id).await {
                return record_failure(
                    state,
                    id,
                    format!("role removed, ending sessions failed: {e}"),
                )
                .await;
            }
        }
        // Late relative to when access should have ended (one definition:
        // jit_core::lateness).
        let late = jit_core::lateness::access_end(r)
            .map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0)
            .unwrap_or(0.0);
        state.metrics.removed(started.elapsed(), late);
        let mut why = format!("{} removed from Keycloak", r.target);
        if end_sessions {
            why.push_str("; user sessions ended");
        }
        if late > jit_core::lateness::REVOKE_LATE_GRACE_SECS as f64 {
            why.push_str(&format!("; {late:.0} s late"));
        }
        ("grant.removed", why)
    } else {
        (
            "grant.kept",
            "standing assignment held before the grant; JIT never removes it".to_string(),
        )
    };
    let (_, recs) = state
        .store
        .update(id, move |s| {
            if !s.grant.removal_pending {
                // Done meanwhile (another replica took over a lapsed
                // claim): record nothing twice.
                return Ok(vec![]);
            }
            s.grant.removal_pending = false;
            if note_event == "grant.removed" {
                s.grant.removed_at = Some(Utc::now());
            }
            s.grant.attempts = 0;
            s.grant.next_attempt_at = None;
            s.grant.last_error = None;
            debug_assert!(s.request.status.is_terminal() || s.request.status == Status::Approved);
            Ok(vec![Entry::Note(Note {
                event: note_event,
                actor: jit_core::model::SYSTEM_ACTOR.into(),
                reason: Some(reason),
                at: Utc::now(),
            })])
        })
        .await?;
    tracing::info!(request = id, target = %r.target, user = %r.requester_username, event = note_event, "grant ended in Keycloak");
    state.published(&recs);
    Ok(())
}
