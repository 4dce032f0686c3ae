//! Quitting while the embedded jitd holds grants.
//!
//! The embedded jitd lives in the app's process: once the app is gone,
//! nothing removes a role whose grant runs out (until the app is started
//! again, when the scheduler catches up). So the app never just quits
//! while it holds active grants or removals Keycloak has not confirmed
//! yet: it says so and offers the safe choices — keep running in the
//! background, or end the grants now ([`end_all`]: each is revoked by the
//! system with a reason, and the app waits until Keycloak confirmed every
//! removal). A remote jitd needs none of this: it runs on its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use jit_core::{DomainError, RequestKind, Status};
use jit_server::store::StoreError;
use jit_server::AppState;
use serde::Serialize;

/// The reason written to the audit trail for grants ended at quit.
pub const END_REASON: &str = "ended because the desktop app running the embedded jitd was quit";

/// How long [`end_all`] waits for Keycloak to confirm the removals.
pub const CONFIRM_LIMIT: Duration = Duration::from_secs(60);

/// One grant the embedded jitd holds (for the quit dialog).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldGrant {
    pub id: String,
    pub requester: String,
    pub entitlement: String,
    /// UTC, RFC 3339.
    pub expires_at: Option<String>,
}

/// What the embedded jitd holds in Keycloak right now
/// (`jit:quit-requested` payload, with `tray`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holding {
    /// Active grants.
    pub active: Vec<HeldGrant>,
    /// Ended grants whose removal Keycloak has not confirmed yet.
    pub removing: usize,
    /// Whether a tray icon is really shown (then "keep running" also hides
    /// to it; without one, launching the app again shows the window).
    pub tray: bool,
}

impl Holding {
    /// Nothing held: no active grant and no removal in progress.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty() && self.removing == 0
    }
}

/// A time far enough ahead that every pending removal counts as due.
fn far_future() -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::days(365 * 100)
}

/// What `state`'s store holds now (`tray` left false).
pub fn holding(state: &AppState) -> Result<Holding, String> {
    let words = |e: StoreError| format!("cannot read the embedded jitd's store: {e}");
    let policy = state.policy();
    let active = state
        .store
        .sync()
        .open_requests()
        .map_err(words)?
        .into_iter()
        .filter(|s| s.request.status() == Status::Active)
        .filter(|s| matches!(s.request.kind(), RequestKind::Access))
        .map(|s| {
            let r = s.request;
            HeldGrant {
                entitlement: policy
                    .entitlement(r.entitlement_id())
                    .map(|e| e.display_name.clone())
                    .unwrap_or_else(|| r.entitlement_id().to_string()),
                id: r.id().to_string(),
                requester: r.requester_username().to_string(),
                expires_at: r.expires_at().map(|t| t.to_rfc3339()),
            }
        })
        .collect::<Vec<_>>();
    let removing = state
        .store
        .sync()
        .due(far_future())
        .map_err(words)?
        .remove
        .len();
    Ok(Holding {
        active,
        removing,
        tray: false,
    })
}

/// Ends every active grant of the embedded jitd (system revoke with
/// [`END_REASON`]) and waits until Keycloak confirmed every removal, at
/// most `limit`. `progress` gets the number of removals still open.
///
/// Errors: the store cannot be written, or Keycloak did not confirm in
/// time (the message names the last Keycloak error); the grants are ended
/// in jitd either way and their removal is retried while the app runs.
pub async fn end_all(
    state: &Arc<AppState>,
    limit: Duration,
    progress: impl Fn(usize),
) -> Result<(), String> {
    let now = Utc::now();
    let open = state
        .store
        .open_requests()
        .await
        .map_err(|e| e.to_string())?;
    for s in open
        .into_iter()
        .filter(|s| s.request.status() == Status::Active)
    {
        let r = state.store.sync().update(s.request.id(), |s| {
            let t = s.request.withdraw(END_REASON, now)?;
            Ok(jit_server::scheduler::end_grant(s, t))
        });
        match r {
            Ok((_, recs)) => state.published(&recs),
            // Ended meanwhile by another path: fine.
            Err(StoreError::Domain(DomainError::IllegalTransition { .. })) => {}
            Err(e) => return Err(format!("cannot end grant {}: {e}", s.request.id())),
        }
    }
    let started = Instant::now();
    loop {
        let open = state
            .store
            .due(far_future())
            .await
            .map_err(|e| e.to_string())?
            .remove;
        progress(open.len());
        if open.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= limit {
            let last = open
                .iter()
                .filter_map(|id| state.store.sync().get(id).ok().flatten())
                .find_map(|s| s.grant.last_error);
            return Err(format!(
                "Keycloak has not confirmed the removal of {} grant(s) in {} s{}. They are ended in jitd; their removal is retried while the app runs (and when it starts again).",
                open.len(),
                limit.as_secs(),
                last.map(|e| format!(" (last error: {e})")).unwrap_or_default()
            ));
        }
        state.wake.notify_one();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
