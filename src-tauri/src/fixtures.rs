//! Test fixtures: requests and events as the server sends them.

use chrono::{DateTime, Utc};
use jit_core::api::{EventData, RequestView};
use jit_core::{AccessRequest, StoredRequest};
use serde_json::json;

/// A request view: `id` by `requester` (id `u-{requester}`) for
/// prod-db-admin, in `status`.
pub fn request(id: &str, requester: &str, status: &str) -> RequestView {
    serde_json::from_value(json!({
        "id": id,
        "kind": {"type": "access"},
        "entitlement_id": "prod-db-admin",
        "target": {"kind": "realm_role", "role": "prod-db-admin"},
        "requester_id": format!("u-{requester}"),
        "requester_username": requester,
        "justification": "rotate the replica credentials",
        "ticket": "INC-42",
        "urgent": false,
        "break_glass": false,
        "requested_secs": 600,
        "duration_secs": 600,
        "approvals_required": 1,
        "votes": [],
        "status": status,
        "created_at": "2030-01-01T12:00:00Z",
        "pending_until": "2030-01-01T12:30:00Z",
        "start_at": null,
        "decided_at": null,
        "activated_at": null,
        "expires_at": null,
        "ended_at": null,
        "ended_by": null,
        "end_reason": null,
        "auto_approved": null,
        "review_required": false,
        "reviewed_by": null,
        "reviewed_at": null,
        "entitlement_name": "Production database admin",
        "remaining_secs": null,
        "keycloak": {"owns_assignment": null, "granted_at": null, "removal_pending": false, "removed_at": null, "attempts": 0, "next_attempt_at": null, "last_error": null},
        "revoke_late": false
    }))
    .expect("fixture request deserialises")
}

/// An event `event` (seq `seq`) about `r`, by `actor`.
pub fn event(seq: i64, event: &str, r: &RequestView, actor: &str) -> EventData {
    serde_json::from_value(json!({
        "seq": seq,
        "at": "2030-01-01T12:00:00Z",
        "event": event,
        "request_id": r.request.id(),
        "entitlement_id": r.request.entitlement_id(),
        "requester_id": r.request.requester_id(),
        "actor": actor,
        "reason": null,
        "from_status": null,
        "to_status": r.request.status().as_str(),
        "prev_hash": "",
        "hash": "",
        "request": r,
    }))
    .expect("fixture event deserialises")
}

/// An RFC 3339 time of a fixture.
pub fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("fixture time")
}

/// `r` with its request changed as a server could have sent it (through
/// the stored form: the request's own fields are read-only).
pub fn changed(mut r: RequestView, change: impl FnOnce(&mut StoredRequest)) -> RequestView {
    let mut s = r.request.to_stored();
    change(&mut s);
    r.request = AccessRequest::restore(s);
    r
}

/// [`request`] as an approver it awaits sees it: the server's
/// `awaits_your_review` is `true` (what `GET /v1/requests/{id}` says to
/// that approver).
pub fn to_review(id: &str, requester: &str, status: &str) -> RequestView {
    RequestView {
        awaits_your_review: Some(true),
        ..request(id, requester, status)
    }
}
