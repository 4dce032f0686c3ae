//! Who besides the requester could approve a request just made: the
//! `no_eligible_approver` warning of `POST /v1/requests`. Nobody approves
//! their own request (`AccessRequest::vote`), so a request whose only
//! possible approver is its requester — or that needs more approvals than
//! there are other approvers — can only lapse; the requester is told at
//! once instead of waiting for the lapse.
//!
//! The approvers come from Keycloak (`KeycloakAdmin::approver_ids`: the
//! entitlement's `approver_roles` and `approver_groups`, enabled users,
//! as Keycloak's listings show them; a role held only through a composite
//! is not seen). One answer per entitlement is reused for
//! [`APPROVERS_CACHE_TTL`]. A failed or slow look-up warns nobody: the
//! warning is advice, never a reason to refuse or delay a request.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jit_core::api::{RequestWarning, NO_ELIGIBLE_APPROVER};
use jit_core::{AccessRequest, Entitlement, Status};

use crate::AppState;

/// How long one entitlement's approvers are reused (seconds: 30).
pub const APPROVERS_CACHE_TTL: Duration = Duration::from_secs(30);

/// Longest the look-up may take before the request's answer goes out
/// without it (2 s).
const LOOKUP_LIMIT: Duration = Duration::from_secs(2);

/// Recent answers: entitlement id → (when, the approver roles and groups
/// and the approvals needed it was asked for, the ids found — at most
/// `approvals_required + 1`).
#[derive(Default)]
pub struct ApproversCache {
    seen: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    at: Instant,
    asked: (Vec<String>, Vec<String>, u32),
    ids: HashSet<String>,
}

impl ApproversCache {
    fn get(&self, e: &Entitlement) -> Option<HashSet<String>> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&e.id)
            .filter(|s| s.at.elapsed() < APPROVERS_CACHE_TTL && s.asked == asked_of(e))
            .map(|s| s.ids.clone())
    }

    fn put(&self, e: &Entitlement, ids: HashSet<String>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(
            e.id.clone(),
            Seen {
                at: Instant::now(),
                asked: asked_of(e),
                ids,
            },
        );
    }
}

/// What an answer was asked for: approver roles, groups, approvals needed.
fn asked_of(e: &Entitlement) -> (Vec<String>, Vec<String>, u32) {
    (
        e.approver_roles.clone(),
        e.approver_groups.clone(),
        e.approvals_required,
    )
}

/// The warnings for request `r`, just created: `no_eligible_approver` when
/// it is pending and fewer than `approvals_required` people other than its
/// requester may approve it now. None for a request already approved
/// (auto-approval, break-glass), while Keycloak is known to be down, or
/// when the look-up fails or takes longer than 2 s.
pub async fn warnings(state: &AppState, r: &AccessRequest) -> Vec<RequestWarning> {
    // Nothing to advise on a request already approved; and no extra
    // Admin API call while Keycloak is known to be down.
    if r.status() != Status::Pending || state.scheduler.keycloak_down() {
        return Vec::new();
    }
    let policy = state.policy();
    let Some(e) = policy.entitlement(r.entitlement_id()) else {
        return Vec::new();
    };
    let needed = r.approvals_required() as usize;
    let ids = match state.approvers.get(e) {
        Some(ids) => ids,
        None => {
            let asked = state
                .admin
                .approver_ids(&e.approver_roles, &e.approver_groups, needed + 1);
            match tokio::time::timeout(LOOKUP_LIMIT, asked).await {
                Ok(Ok(Some(ids))) => {
                    state.approvers.put(e, ids.clone());
                    ids
                }
                Ok(Ok(None)) => return Vec::new(),
                Ok(Err(err)) => {
                    tracing::debug!(entitlement = %e.id, error = %err, "approver look-up failed; no warning");
                    return Vec::new();
                }
                Err(_) => {
                    tracing::debug!(entitlement = %e.id, "approver look-up too slow; no warning");
                    return Vec::new();
                }
            }
        }
    };
    let others = ids.iter().filter(|id| *id != r.requester_id()).count();
    if others >= needed {
        return Vec::new();
    }
    let lapse = r
        .pending_until()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let who = if others == 0 {
        format!(
            "nobody besides you holds an approver role or group of '{}' in Keycloak now",
            e.id
        )
    } else {
        format!(
            "it needs {needed} approvals and only {others} person(s) besides you hold an approver role or group of '{}' in Keycloak now",
            e.id
        )
    };
    let glass = if e.break_glass {
        "; in an emergency this entitlement allows break-glass self-activation"
    } else {
        ""
    };
    vec![RequestWarning {
        code: NO_ELIGIBLE_APPROVER.into(),
        message: format!(
            "{who}, and nobody approves their own request: unless someone gets that right, it lapses at {lapse}; ask your administrator{glass}"
        ),
    }]
}
