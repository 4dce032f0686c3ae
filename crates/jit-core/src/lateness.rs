//! When a revoke is late: the one definition, used by the API's
//! `revoke_late` flag on a request and by the `jit_revocations_late` metric
//! (both count a removal that failed for good, `removal_failed`)
//! (and, for "when access should have ended", by the removal-lateness
//! histogram), so the flag and the gauge always count the same grants.

use chrono::{DateTime, Duration, Utc};

use crate::api::GrantState;
use crate::model::{AccessRequest, Status};

/// Grace, in seconds, after a grant's end before a role still in Keycloak
/// counts as a late revoke. The scheduler works on a tick of at most 1 s and
/// a Keycloak call takes a moment: an ordinary removal is done well within
/// it, so only a removal that is really held up (Keycloak unreachable,
/// retrying; jitd down) shows.
pub const REVOKE_LATE_GRACE_SECS: i64 = 5;

/// When access through `r` should have ended (UTC): `expires_at` for a grant
/// that is active or expired (even if jitd processed the expiry later, e.g.
/// after being down), otherwise when it was ended (`ended_at`: drop, revoke,
/// a failed or cancelled grant). `None` when neither is known.
pub fn access_end(r: &AccessRequest) -> Option<DateTime<Utc>> {
    match r.status() {
        Status::Active | Status::Expired => r.expires_at().or(r.ended_at()),
        _ => r.ended_at(),
    }
}

/// Whether the revoke of `r` (with its Keycloak bookkeeping `g`) is late at
/// `now`: either the removal failed for good (`removal_failed`: the role
/// may still be in Keycloak and nothing will remove it without an
/// administrator — the latest of all, counted at once), or its role may
/// still be in Keycloak (the grant is still `active`, or it ended and
/// `removal_pending` — the removal is not yet confirmed) more than
/// [`REVOKE_LATE_GRACE_SECS`] after [`access_end`].
pub fn revoke_late(r: &AccessRequest, g: &GrantState, now: DateTime<Utc>) -> bool {
    if g.removal_failed {
        return true;
    }
    let maybe_in_keycloak = g.removal_pending || r.status() == Status::Active;
    maybe_in_keycloak
        && access_end(r).is_some_and(|end| end + Duration::seconds(REVOKE_LATE_GRACE_SECS) < now)
}
