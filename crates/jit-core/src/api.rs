//! Wire types of the jitd API, shared by the server and its clients. Pure
//! data (serde), no I/O. Times are UTC (RFC 3339), durations seconds.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::event::EventKind;
use crate::model::AccessRequest;

/// Keycloak-side bookkeeping of a grant, kept next to the request.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS,
)]
pub struct GrantState {
    /// Whether JIT made the assignment (and so may remove it). `None` until
    /// decided at activation; `false` when the user already held it
    /// directly (a standing assignment JIT must never remove).
    #[schema(required = true)]
    pub owns_assignment: Option<bool>,
    /// When the assignment was confirmed in Keycloak (UTC).
    #[schema(required = true)]
    pub granted_at: Option<DateTime<Utc>>,
    /// When jitd set out to assign the grant in Keycloak (UTC), written
    /// to the store before the assignment is sent; `None` before that. If
    /// jitd stopped, or Keycloak's answer never came, after an assignment
    /// landed but before it was recorded, the next attempt finds the role
    /// held and the grant counts from here (`activated_at`), not from when
    /// a later attempt confirmed it: a crash never lengthens a grant.
    #[serde(default)]
    #[schema(required = true)]
    pub assigning_since: Option<DateTime<Utc>>,
    /// The grant ended and the Keycloak side still has to be cleaned up.
    pub removal_pending: bool,
    /// When the assignment was removed in Keycloak (UTC).
    #[schema(required = true)]
    pub removed_at: Option<DateTime<Utc>>,
    /// Failed Keycloak attempts for the current step.
    pub attempts: u32,
    /// Do not retry before this instant (UTC).
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Last Keycloak error for the current step, for the API and the UI
    /// (in API views, work waiting while Keycloak is out of reach for jitd
    /// says so here).
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// Keycloak refused the removal for good (e.g. 403: the service account
    /// may no longer remove it): not retried; the assignment may still be
    /// in Keycloak and needs an administrator (`last_error` says why).
    #[serde(default)]
    pub removal_failed: bool,
}

/// One audit row. `hash = sha256(prev_hash ‖ canonical content)`, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
pub struct AuditRecord {
    /// Sequence number, also the event id of `/v1/events`.
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// Event type: an [`EventKind`], as its name (e.g. `request.created`).
    /// A name this version does not know reads as `EventKind::Other`. In
    /// the OpenAPI document a string (a newer jitd may write new names).
    #[schema(value_type = String)]
    #[ts(type = "EventKind")]
    pub event: EventKind,
    pub request_id: String,
    pub entitlement_id: String,
    pub requester_id: String,
    pub actor: String,
    /// Set when the actor is a client's service account (a pipeline): the
    /// client's id. Hashed only when present, so older rows verify as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub actor_client: Option<String>,
    #[schema(required = true)]
    pub reason: Option<String>,
    #[schema(required = true)]
    pub from_status: Option<String>,
    #[schema(required = true)]
    pub to_status: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// Result of checking the audit chain (`GET /v1/audit/verify`): each
/// row's hash recomputed with [`AuditRecord::compute_hash`] and its link
/// to the previous row checked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AuditVerification {
    /// Whether every row's hash and link match.
    pub ok: bool,
    /// Rows checked.
    pub rows: i64,
    /// First sequence number whose hash or link does not match.
    #[schema(required = true)]
    pub first_bad_seq: Option<i64>,
    /// Hash of the last row (`null` when the log is empty).
    #[schema(required = true)]
    pub last_hash: Option<String>,
}

/// `prev_hash` of the first audit row (64 hex zeros).
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditRecord {
    /// The row's hash: SHA-256 over `prev_hash`, a newline and the JSON
    /// array of the row's content fields (seq, at with microseconds, event,
    /// request_id, entitlement_id, requester_id, actor, reason, from, to,
    /// and `actor_client` when set).
    pub fn compute_hash(&self) -> String {
        let mut content = serde_json::json!([
            self.seq,
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            self.event,
            self.request_id,
            self.entitlement_id,
            self.requester_id,
            self.actor,
            self.reason,
            self.from_status,
            self.to_status,
        ]);
        if let (Some(c), serde_json::Value::Array(a)) = (&self.actor_client, &mut content) {
            a.push(serde_json::Value::String(c.clone()));
        }
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(b"\n");
        h.update(content.to_string().as_bytes());
        hex::encode(h.finalize())
    }
}

/// A request as the API shows it: the request (and grant) plus derived facts.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
pub struct RequestView {
    #[serde(flatten)]
    pub request: AccessRequest,
    /// The entitlement's display name (its id if no longer in the policy).
    pub entitlement_name: String,
    /// Seconds left on an active grant (`expires_at − server now`).
    #[schema(required = true)]
    pub remaining_secs: Option<i64>,
    /// The grant's whole length, seconds: `duration_secs` plus the time of
    /// every applied extension (listed in `extensions`).
    #[serde(default)]
    #[schema(required = true)]
    pub total_secs: i64,
    /// Approve votes so far (`AccessRequest::approvals`, the count the
    /// state machine compares with `approvals_required`): clients show
    /// this number instead of counting votes themselves.
    #[serde(default)]
    #[schema(required = true)]
    pub approvals: u32,
    /// Keycloak-side state of the grant.
    pub keycloak: GrantState,
    /// The grant is over but the role is still (or may still be) in
    /// Keycloak more than 5 s after the grant's end: a revoke is late
    /// (Keycloak unreachable, retrying). Rule: `jit_core::lateness`, the
    /// same as the metric `jit_revocations_late`.
    pub revoke_late: bool,
    /// Whether the end of this grant also ends the requester's Keycloak
    /// sessions (the entitlement's `end_sessions_on_revoke` in the policy
    /// in force; `false` once it is no longer in the policy): jitd logs the
    /// user out everywhere when it removes the role, so a refresh token
    /// cannot mint a token that still carries it. Clients say so before
    /// and after a drop, and `jit` names this grant when its login ended.
    #[serde(default)]
    #[schema(required = true)]
    pub ends_sessions: bool,
    /// Whether the request awaits the caller's decision or break-glass
    /// review — "awaits my review", the rule of
    /// `AccessRequest::awaits_review_by` (the `to_review` list holds
    /// exactly these). Clients use this instead of a rule of their own.
    /// `null` where the view is not made for one caller: in the event
    /// stream's `request` (rendered once for every subscriber) — ask
    /// `GET /v1/requests/{id}` for the caller's answer.
    #[serde(default)]
    #[schema(required = true)]
    pub awaits_your_review: Option<bool>,
    /// What the requester should know about a request just made that does
    /// not stop it (only in the answer of `POST /v1/requests`; absent
    /// elsewhere and when there is none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[ts(as = "Option<Vec<RequestWarning>>", optional)]
    pub warnings: Vec<RequestWarning>,
}

/// A warning about a request just created (`RequestView::warnings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
pub struct RequestWarning {
    /// Stable snake_case code for programs. `no_eligible_approver`: fewer
    /// people than the request needs approvals (`approvals_required`),
    /// other than the requester, hold an approver role or group of its
    /// entitlement in Keycloak now — nobody approves their own request, so
    /// unless someone gets that right it can only lapse (at
    /// `pending_until`). `already_granted`: the requester holds the same
    /// target through an active JIT grant now (the message names it and its
    /// end, UTC); grants may overlap, but more time on that grant is
    /// usually what was meant (`POST /v1/grants/{id}/extend`).
    pub code: String,
    /// A sentence for the person who asked.
    pub message: String,
}

/// [`RequestWarning::code`]: nobody (or too few) besides the requester may
/// approve the request.
pub const NO_ELIGIBLE_APPROVER: &str = "no_eligible_approver";

/// [`RequestWarning::code`]: the requester already holds the target
/// through an active JIT grant (an extension of it was probably meant).
pub const ALREADY_GRANTED: &str = "already_granted";

/// An entitlement the caller may request.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
pub struct EntitlementView {
    pub id: String,
    pub display_name: String,
    pub description: String,
    /// `realm role prod-db-admin`, `client role app/admin`, `group /ops`.
    pub target: String,
    pub max_duration_secs: i64,
    pub default_duration_secs: i64,
    /// Longest a grant may run in all, its duration plus every extension
    /// (seconds; the policy's `max_total_duration`). 0 from a jitd that
    /// does not say.
    #[serde(default)]
    pub max_total_duration_secs: i64,
    pub approvals_required: u32,
    #[schema(required = true)]
    pub ticket_pattern: Option<String>,
    pub justification_min: usize,
    pub justification_max: usize,
    pub break_glass: bool,
    /// Whether the caller is an approver of it.
    pub you_approve: bool,
    /// `false` when jitd cannot grant it now: its Keycloak target does not
    /// exist or the service account may not assign it (`unavailable_reason`
    /// says which). Requests for it are refused (`entitlement_unavailable`).
    #[serde(default = "yes")]
    pub available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /v1/requests` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
#[serde(deny_unknown_fields)]
pub struct CreateRequestBody {
    pub entitlement: String,
    /// Human duration (`"15m"`); or give `duration_secs`.
    #[serde(default)]
    #[ts(optional)]
    pub duration: Option<String>,
    #[serde(default)]
    #[ts(optional)]
    pub duration_secs: Option<i64>,
    /// Bounds per entitlement (`justification_min`..=`justification_max`
    /// characters, policy; default 10..=1000).
    pub justification: String,
    /// Ticket reference, at most 500 characters
    /// ([`crate::model::MAX_FREE_TEXT_CHARS`]; `text_too_long`).
    #[serde(default)]
    #[ts(optional)]
    #[schema(max_length = 500)]
    pub ticket: Option<String>,
    #[serde(default)]
    #[ts(optional)]
    pub start_at: Option<DateTime<Utc>>,
    #[serde(default)]
    #[ts(as = "Option<bool>", optional)]
    pub urgent: bool,
    #[serde(default)]
    #[ts(as = "Option<bool>", optional)]
    pub break_glass: bool,
}

/// Body of approve / deny / revoke / review.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// At most 500 characters ([`crate::model::MAX_FREE_TEXT_CHARS`];
    /// `text_too_long`), no control characters (`invalid_text`). Required
    /// to deny, revoke and review.
    #[serde(default)]
    #[ts(optional)]
    #[schema(max_length = 500)]
    pub comment: Option<String>,
    /// Approve only: shorten the grant to this human duration.
    #[serde(default)]
    #[ts(optional)]
    pub duration: Option<String>,
}

/// `POST /v1/requests/{id}/extend` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    pub duration: String,
    pub justification: String,
}

/// One server-sent event's data (`id` = `seq`, `event` = `record.event`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
pub struct EventData {
    #[serde(flatten)]
    pub record: AuditRecord,
    /// The request the event is about (the caller may see it): as it was
    /// when the event was sent on a live stream, as it is when read on a
    /// resume (`Last-Event-ID`, `since`) or a catch-up — so one event id
    /// may carry a later state on replay.
    #[schema(required = true)]
    pub request: Option<RequestView>,
}

/// `problem+json` body (RFC 9457) with jitd's stable `code`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
pub struct Problem {
    /// `urn:jit-access:problem:{code}`.
    #[serde(rename = "type", default)]
    #[schema(required = true)]
    pub kind: String,
    /// Short summary of the class of problem.
    #[serde(default)]
    #[schema(required = true)]
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// A sentence for the person who asked.
    #[serde(default)]
    #[schema(required = true)]
    pub detail: String,
    /// Stable snake_case code for programs (`DomainError::code`, `ApiError`).
    pub code: String,
}

/// Header carrying the server's clock on every response (RFC 3339, UTC),
/// so clients can correct countdowns for skew.
pub const SERVER_TIME_HEADER: &str = "x-server-time";

/// `GET /v1/config` (no authentication): where to log in.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
pub struct ServerConfigView {
    /// `{keycloak}/realms/{realm}`.
    pub issuer: String,
    /// The `aud` jitd requires.
    pub audience: String,
    pub cli_client_id: String,
    pub desktop_client_id: String,
}

/// `GET /v1/me`: who the token says the caller is, and what they may do.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
pub struct MeView {
    pub id: String,
    pub username: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub auditor: bool,
    /// Entitlement ids the caller may approve.
    pub approves: Vec<String>,
    /// Token expiry, seconds since the epoch.
    pub token_exp: i64,
}

#[cfg(test)]
mod schema_tests {
    use utoipa::PartialSchema;

    /// The OpenAPI schema states the limit the domain enforces.
    #[test]
    fn free_text_max_length_in_the_schema_is_the_rule() {
        let max = serde_json::json!(crate::model::MAX_FREE_TEXT_CHARS);
        let d = serde_json::to_value(super::DecisionBody::schema()).unwrap();
        assert_eq!(d["properties"]["comment"]["maxLength"], max, "{d}");
        let c = serde_json::to_value(super::CreateRequestBody::schema()).unwrap();
        assert_eq!(c["properties"]["ticket"]["maxLength"], max, "{c}");
    }
}
