//! Requests, votes and grants, and the state machine that moves them.
//!
//! ```text
//! pending ──approve (threshold met)──▶ approved ──start reached, granted──▶ active
//!    │  └─deny──▶ denied                 │  │                               │
//!    │  └─cancel──▶ cancelled ◀──────────┘  └─Keycloak refuses──▶ failed    ├─expire──▶ expired
//!    └─pending TTL passes──▶ lapsed                                         ├─drop────▶ revoked
//!                                                                           └─revoke──▶ revoked
//! ```
//!
//! A *grant* is the active phase of a request: its id is the request's id.
//! An *extension* is a separate request whose `kind` names an active grant;
//! when approved, in the same step the grant's `expires_at` moves, the grant
//! records it in [`AccessRequest::extensions`], and the extension becomes
//! `applied` — a terminal state: it never becomes a grant of its own and is
//! never an open request.
//!
//! Every method that changes a request returns the [`Transition`]s it made;
//! callers persist them as audit rows. Nothing else may change `status`.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::policy::{Entitlement, EntitlementKind, Policy};
pub use crate::principal::Principal;
use crate::{format_duration, DomainError};

/// Where a request is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Active,
    Denied,
    Cancelled,
    Lapsed,
    Expired,
    Revoked,
    /// An extension whose time was added to its grant (terminal).
    Applied,
    /// Keycloak refused the grant for good (404 user or target, 403, 400).
    Failed,
}

impl Status {
    /// Every status once: the open ones (pending, approved, active), then the
    /// terminal ones. For parsing (`FromStr`) and for listing every status
    /// (metrics).
    pub const ALL: [Status; 10] = [
        Status::Pending,
        Status::Approved,
        Status::Active,
        Status::Denied,
        Status::Cancelled,
        Status::Lapsed,
        Status::Expired,
        Status::Revoked,
        Status::Applied,
        Status::Failed,
    ];

    /// snake_case name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Active => "active",
            Status::Denied => "denied",
            Status::Cancelled => "cancelled",
            Status::Lapsed => "lapsed",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
            Status::Applied => "applied",
            Status::Failed => "failed",
        }
    }

    /// No transition leaves a terminal status.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Pending | Status::Approved | Status::Active)
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown status '{s}' (one of {})", all.join(", "))
            })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was done to a request; the audit log's event names are
/// `request.<action in past tense>` (see [`Action::event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Approve,
    Deny,
    Cancel,
    Lapse,
    Activate,
    Expire,
    Drop,
    Revoke,
    Extend,
    Review,
    /// An approved extension's time is added to its grant.
    Apply,
    Fail,
}

impl Action {
    /// The event written to the audit log and the event stream.
    pub fn event(self) -> EventKind {
        match self {
            Action::Create => EventKind::RequestCreated,
            Action::Approve => EventKind::RequestApproved,
            Action::Deny => EventKind::RequestDenied,
            Action::Cancel => EventKind::RequestCancelled,
            Action::Lapse => EventKind::RequestLapsed,
            Action::Activate => EventKind::GrantGranted,
            Action::Expire => EventKind::GrantExpired,
            Action::Drop => EventKind::GrantDropped,
            Action::Revoke => EventKind::GrantRevoked,
            Action::Extend => EventKind::GrantExtended,
            Action::Review => EventKind::RequestReviewed,
            Action::Apply => EventKind::ExtensionApplied,
            Action::Fail => EventKind::GrantFailed,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Action::Create => "create",
            Action::Approve => "approve",
            Action::Deny => "deny",
            Action::Cancel => "cancel",
            Action::Lapse => "lapse",
            Action::Activate => "activate",
            Action::Expire => "expire",
            Action::Drop => "drop",
            Action::Revoke => "revoke",
            Action::Extend => "extend",
            Action::Review => "review",
            Action::Apply => "apply",
            Action::Fail => "fail",
        };
        f.write_str(s)
    }
}

/// An approver's decision.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS,
)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
}

/// One approver's vote. One per approver per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
pub struct Vote {
    pub approver_id: String,
    pub approver_username: String,
    pub decision: Decision,
    #[schema(required = true)]
    pub comment: Option<String>,
    /// Duration the approver allows, seconds, if they shortened it.
    #[schema(required = true)]
    pub duration_secs: Option<i64>,
    pub at: DateTime<Utc>,
}

/// Whether a request asks for new access or more time on an existing grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequestKind {
    Access,
    Extension { grant_id: String },
}

/// What a requester submits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRequest {
    pub entitlement: String,
    /// Seconds; the entitlement's default when absent.
    pub duration_secs: Option<i64>,
    pub justification: String,
    pub ticket: Option<String>,
    /// Scheduled start (UTC); now when absent.
    pub start_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub urgent: bool,
    /// Self-activation in an emergency, for entitlements that allow it.
    #[serde(default)]
    pub break_glass: bool,
}

/// One state change, to be written to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub action: Action,
    pub from: Option<Status>,
    pub to: Status,
    /// Username of who did it, or `jitd` for the scheduler and policy.
    pub actor: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// The actor name used for transitions made by the backend itself.
pub const SYSTEM_ACTOR: &str = "jitd";

/// An extension that moved a grant's end, as the grant keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, ts_rs::TS)]
pub struct AppliedExtension {
    /// The extension request's id.
    pub id: String,
    /// Username of who asked for it (the grant's requester).
    pub requested_by: String,
    /// Usernames of the approvers whose votes approved it, or
    /// `["jitd"]` when a policy rule approved it.
    pub approved_by: Vec<String>,
    /// Seconds added to the grant.
    pub added_secs: i64,
    pub justification: String,
    /// When it was applied (UTC).
    pub applied_at: DateTime<Utc>,
    /// The grant's end right after it (UTC).
    pub expires_at: DateTime<Utc>,
}

/// An [`AccessRequest`] as a store keeps it: every field, public, in the
/// same order and with the same JSON names as the request's wire form.
///
/// For stores only (and tests that set up a stored state): a store writes
/// [`AccessRequest::to_stored`] (or the request's JSON) and reads it back
/// with [`AccessRequest::restore`]. Everything else builds requests with
/// [`AccessRequest::create`] / [`AccessRequest::create_extension`] and
/// changes them only through the transition methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    /// The request's id (a UUID); a grant's id is its request's id.
    pub id: String,
    /// New access, or more time on an existing grant.
    pub kind: RequestKind,
    /// The policy entitlement asked for.
    pub entitlement_id: String,
    /// What is granted in Keycloak, copied from the policy at creation.
    pub target: EntitlementKind,
    /// Keycloak user id (`sub`) of the requester.
    pub requester_id: String,
    /// Keycloak username of the requester.
    pub requester_username: String,
    /// Set when the requester is a client's service account (a pipeline):
    /// that client's id (see [`Principal::client_id`]). `None` for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_client: Option<String>,
    /// Why the requester needs it (checked against the entitlement's length limits).
    pub justification: String,
    /// Ticket reference, when given or required by the entitlement's pattern.
    pub ticket: Option<String>,
    /// Asked as urgent (a break-glass request always is).
    pub urgent: bool,
    /// Self-activated in an emergency; an approver reviews it afterwards.
    pub break_glass: bool,
    /// Duration asked for, seconds.
    pub requested_secs: i64,
    /// Duration that will be granted (the shortest any approver allowed), seconds.
    pub duration_secs: i64,
    /// Approve votes needed, from the entitlement at creation.
    pub approvals_required: u32,
    /// Votes so far, in the order they were cast.
    pub votes: Vec<Vote>,
    /// Where the request is in its life; only the transition methods change it.
    pub status: Status,
    /// When it was created (UTC).
    pub created_at: DateTime<Utc>,
    /// After this instant (UTC) a pending request lapses.
    pub pending_until: DateTime<Utc>,
    /// Scheduled start (UTC); `None` for "as soon as approved".
    pub start_at: Option<DateTime<Utc>>,
    /// When it was approved or denied (UTC).
    pub decided_at: Option<DateTime<Utc>>,
    /// When the grant became active (UTC); durations count from here.
    pub activated_at: Option<DateTime<Utc>>,
    /// `activated_at + duration` plus any extensions (UTC).
    pub expires_at: Option<DateTime<Utc>>,
    /// When it ended (UTC): cancelled, lapsed, expired, revoked, failed or applied.
    pub ended_at: Option<DateTime<Utc>>,
    /// Username of who ended it (`jitd` for the backend).
    pub ended_by: Option<String>,
    /// Why it ended (e.g. `expired`, the revoker's comment, Keycloak's refusal).
    pub end_reason: Option<String>,
    /// Set when a policy rule approved the request (its description).
    pub auto_approved: Option<String>,
    /// Break-glass activations stay "review open" until an approver reviews.
    pub review_required: bool,
    /// Username of the approver who reviewed a break-glass activation.
    pub reviewed_by: Option<String>,
    /// When the break-glass review was done (UTC).
    pub reviewed_at: Option<DateTime<Utc>>,
    /// Extensions applied to this grant, oldest first.
    #[serde(default)]
    pub extensions: Vec<AppliedExtension>,
}

/// An access request and, once active, the grant it became.
// (This doc line is also the type's description in the OpenAPI document and
// the UI's TypeScript types; what its private fields mean for callers is
// said on the `impl` below.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, ts_rs::TS)]
pub struct AccessRequest {
    id: String,
    kind: RequestKind,
    entitlement_id: String,
    /// What is granted in Keycloak, copied from the policy at creation.
    target: EntitlementKind,
    requester_id: String,
    requester_username: String,
    /// Set when the requester is a client's service account (a pipeline):
    /// that client's id (see [`Principal::client_id`]). `None` for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    requester_client: Option<String>,
    justification: String,
    #[schema(required = true)]
    ticket: Option<String>,
    urgent: bool,
    break_glass: bool,
    /// Duration asked for, seconds.
    requested_secs: i64,
    /// Duration that will be granted (the shortest any approver allowed), seconds.
    duration_secs: i64,
    approvals_required: u32,
    votes: Vec<Vote>,
    status: Status,
    created_at: DateTime<Utc>,
    /// After this instant (UTC) a pending request lapses.
    pending_until: DateTime<Utc>,
    #[schema(required = true)]
    start_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    decided_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    activated_at: Option<DateTime<Utc>>,
    /// `activated_at + duration` plus any extensions (UTC).
    #[schema(required = true)]
    expires_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    ended_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    ended_by: Option<String>,
    #[schema(required = true)]
    end_reason: Option<String>,
    /// Set when a policy rule approved the request (its description).
    #[schema(required = true)]
    auto_approved: Option<String>,
    /// Break-glass activations stay "review open" until an approver reviews.
    review_required: bool,
    #[schema(required = true)]
    reviewed_by: Option<String>,
    #[schema(required = true)]
    reviewed_at: Option<DateTime<Utc>>,
    /// Extensions applied to this grant, oldest first.
    #[serde(default)]
    #[schema(required = true)]
    extensions: Vec<AppliedExtension>,
}

/// JSON (the API's, a store's) is read as a [`StoredRequest`] and rebuilt
/// with [`AccessRequest::restore`]: the one way in besides `create`.
impl<'de> Deserialize<'de> for AccessRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AccessRequest, D::Error> {
        StoredRequest::deserialize(d).map(AccessRequest::restore)
    }
}

/// Read access to every field, and the one way back from a store.
///
/// The fields of [`AccessRequest`] are private: read them with the getters
/// of the same name (strings as `&str`, lists as slices, times and numbers
/// by value). Only the state machine's methods (`create`, `vote`,
/// `activate`, `expire`, `apply_extension`, …) change a request, so "only
/// the state machine changes `status`" is held by the compiler. A store
/// rebuilds a request it wrote with [`AccessRequest::restore`]; reading
/// the JSON (API or store) goes through the same constructor.
impl AccessRequest {
    /// Rebuilds a request exactly as a store wrote it. For stores (and
    /// JSON deserialisation) only: it takes the stored state as it is and
    /// checks no rule, so code that decides anything must not build
    /// requests with it: new requests come from [`create`](Self::create),
    /// changes from the transition methods.
    pub fn restore(s: StoredRequest) -> AccessRequest {
        AccessRequest {
            id: s.id,
            kind: s.kind,
            entitlement_id: s.entitlement_id,
            target: s.target,
            requester_id: s.requester_id,
            requester_username: s.requester_username,
            requester_client: s.requester_client,
            justification: s.justification,
            ticket: s.ticket,
            urgent: s.urgent,
            break_glass: s.break_glass,
            requested_secs: s.requested_secs,
            duration_secs: s.duration_secs,
            approvals_required: s.approvals_required,
            votes: s.votes,
            status: s.status,
            created_at: s.created_at,
            pending_until: s.pending_until,
            start_at: s.start_at,
            decided_at: s.decided_at,
            activated_at: s.activated_at,
            expires_at: s.expires_at,
            ended_at: s.ended_at,
            ended_by: s.ended_by,
            end_reason: s.end_reason,
            auto_approved: s.auto_approved,
            review_required: s.review_required,
            reviewed_by: s.reviewed_by,
            reviewed_at: s.reviewed_at,
            extensions: s.extensions,
        }
    }

    /// The stored form of this request, for a store to write (and for
    /// tests that set up a stored state before [`restore`](Self::restore)).
    pub fn to_stored(&self) -> StoredRequest {
        let r = self.clone();
        StoredRequest {
            id: r.id,
            kind: r.kind,
            entitlement_id: r.entitlement_id,
            target: r.target,
            requester_id: r.requester_id,
            requester_username: r.requester_username,
            requester_client: r.requester_client,
            justification: r.justification,
            ticket: r.ticket,
            urgent: r.urgent,
            break_glass: r.break_glass,
            requested_secs: r.requested_secs,
            duration_secs: r.duration_secs,
            approvals_required: r.approvals_required,
            votes: r.votes,
            status: r.status,
            created_at: r.created_at,
            pending_until: r.pending_until,
            start_at: r.start_at,
            decided_at: r.decided_at,
            activated_at: r.activated_at,
            expires_at: r.expires_at,
            ended_at: r.ended_at,
            ended_by: r.ended_by,
            end_reason: r.end_reason,
            auto_approved: r.auto_approved,
            review_required: r.review_required,
            reviewed_by: r.reviewed_by,
            reviewed_at: r.reviewed_at,
            extensions: r.extensions,
        }
    }

    /// The request's id (a UUID); a grant's id is its request's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// New access, or more time on an existing grant.
    pub fn kind(&self) -> &RequestKind {
        &self.kind
    }

    /// The policy entitlement asked for.
    pub fn entitlement_id(&self) -> &str {
        &self.entitlement_id
    }

    /// What is granted in Keycloak, copied from the policy at creation.
    pub fn target(&self) -> &EntitlementKind {
        &self.target
    }

    /// Keycloak user id (`sub`) of the requester.
    pub fn requester_id(&self) -> &str {
        &self.requester_id
    }

    /// Keycloak username of the requester.
    pub fn requester_username(&self) -> &str {
        &self.requester_username
    }

    /// Set when the requester is a client's service account (a pipeline):
    /// that client's id (see [`Principal::client_id`]). `None` for people.
    pub fn requester_client(&self) -> Option<&str> {
        self.requester_client.as_deref()
    }

    /// Why the requester needs it (checked against the entitlement's length limits).
    pub fn justification(&self) -> &str {
        &self.justification
    }

    /// Ticket reference, when given or required by the entitlement's pattern.
    pub fn ticket(&self) -> Option<&str> {
        self.ticket.as_deref()
    }

    /// Asked as urgent (a break-glass request always is).
    pub fn urgent(&self) -> bool {
        self.urgent
    }

    /// Self-activated in an emergency; an approver reviews it afterwards.
    pub fn break_glass(&self) -> bool {
        self.break_glass
    }

    /// Duration asked for, seconds.
    pub fn requested_secs(&self) -> i64 {
        self.requested_secs
    }

    /// Duration that will be granted (the shortest any approver allowed), seconds.
    pub fn duration_secs(&self) -> i64 {
        self.duration_secs
    }

    /// Approve votes needed, from the entitlement at creation.
    pub fn approvals_required(&self) -> u32 {
        self.approvals_required
    }

    /// Votes so far, in the order they were cast.
    pub fn votes(&self) -> &[Vote] {
        &self.votes
    }

    /// Where the request is in its life; only the transition methods change it.
    pub fn status(&self) -> Status {
        self.status
    }

    /// When it was created (UTC).
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// After this instant (UTC) a pending request lapses.
    pub fn pending_until(&self) -> DateTime<Utc> {
        self.pending_until
    }

    /// Scheduled start (UTC); `None` for "as soon as approved".
    pub fn start_at(&self) -> Option<DateTime<Utc>> {
        self.start_at
    }

    /// When it was approved or denied (UTC).
    pub fn decided_at(&self) -> Option<DateTime<Utc>> {
        self.decided_at
    }

    /// When the grant became active (UTC); durations count from here.
    pub fn activated_at(&self) -> Option<DateTime<Utc>> {
        self.activated_at
    }

    /// `activated_at + duration` plus any extensions (UTC).
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// When it ended (UTC): cancelled, lapsed, expired, revoked, failed or applied.
    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.ended_at
    }

    /// Username of who ended it (`jitd` for the backend).
    pub fn ended_by(&self) -> Option<&str> {
        self.ended_by.as_deref()
    }

    /// Why it ended (e.g. `expired`, the revoker's comment, Keycloak's refusal).
    pub fn end_reason(&self) -> Option<&str> {
        self.end_reason.as_deref()
    }

    /// Set when a policy rule approved the request (its description).
    pub fn auto_approved(&self) -> Option<&str> {
        self.auto_approved.as_deref()
    }

    /// Break-glass activations stay "review open" until an approver reviews.
    pub fn review_required(&self) -> bool {
        self.review_required
    }

    /// Username of the approver who reviewed a break-glass activation.
    pub fn reviewed_by(&self) -> Option<&str> {
        self.reviewed_by.as_deref()
    }

    /// When the break-glass review was done (UTC).
    pub fn reviewed_at(&self) -> Option<DateTime<Utc>> {
        self.reviewed_at
    }

    /// Extensions applied to this grant, oldest first.
    pub fn extensions(&self) -> &[AppliedExtension] {
        &self.extensions
    }
}

/// Refuses control characters (they would reach approvers' terminals and
/// notifications) and Unicode format characters such as zero-width spaces;
/// returns the trimmed text.
pub fn clean_text(field: &'static str, text: &str) -> Result<String, DomainError> {
    let bad = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}')
    };
    if text.chars().any(bad) {
        return Err(DomainError::InvalidText { field });
    }
    Ok(text.trim().to_string())
}

/// Most characters (Unicode scalar values, not bytes) jitd accepts in a
/// free-text field a caller sends, other than a justification: decision,
/// revoke and review comments and the ticket reference. The justification
/// has its own bounds, `justification_min`/`justification_max` of the
/// entitlement (policy, default 10..=1000). The OpenAPI schema states the
/// same `maxLength` (`jit_core::api`).
pub const MAX_FREE_TEXT_CHARS: usize = 500;

/// Most characters any entitlement may allow in a justification (kept
/// with the policy rules: [`crate::policy::MAX_JUSTIFICATION_CHARS`]).
pub use crate::policy::MAX_JUSTIFICATION_CHARS;

/// The one check of a free-text field other than a justification:
/// [`clean_text`] (no control or invisible formatting characters), then at
/// most [`MAX_FREE_TEXT_CHARS`] characters (as sent); returns it trimmed.
///
/// # Errors
/// [`DomainError::InvalidText`] or [`DomainError::TextTooLong`] naming `field`.
pub fn check_free_text(field: &'static str, text: &str) -> Result<String, DomainError> {
    let t = clean_text(field, text)?;
    // Counted before trimming, so the rule and the schema's `maxLength` agree.
    if text.chars().count() > MAX_FREE_TEXT_CHARS {
        return Err(DomainError::TextTooLong {
            field,
            max: MAX_FREE_TEXT_CHARS,
        });
    }
    Ok(t)
}

/// A decision's optional comment, checked like every free text (plain
/// text, at most [`MAX_FREE_TEXT_CHARS`] characters); empty reads as none.
///
/// Errors: `invalid_text`, `text_too_long`.
pub fn clean_comment(c: Option<String>) -> Result<Option<String>, DomainError> {
    match c {
        Some(c) => Ok(Some(check_free_text("comment", &c)?).filter(|c| !c.is_empty())),
        None => Ok(None),
    }
}

fn check_justification(e: &Entitlement, text: &str) -> Result<String, DomainError> {
    let t = clean_text("justification", text)?;
    let n = t.chars().count();
    if n < e.justification_min {
        return Err(DomainError::JustificationTooShort {
            min: e.justification_min,
        });
    }
    if n > e.justification_max {
        return Err(DomainError::JustificationTooLong {
            max: e.justification_max,
        });
    }
    Ok(t.to_string())
}

fn check_duration(e: &Entitlement, secs: i64) -> Result<i64, DomainError> {
    if secs <= 0 {
        return Err(DomainError::InvalidDuration {
            input: secs.to_string(),
            reason: "must be greater than zero".into(),
        });
    }
    if secs > e.max_duration {
        return Err(DomainError::DurationExceedsMax {
            entitlement: e.id.clone(),
            requested: format_duration(secs),
            max: format_duration(e.max_duration),
        });
    }
    Ok(secs)
}

fn check_ticket(e: &Entitlement, ticket: Option<&str>) -> Result<Option<String>, DomainError> {
    if let Some(t) = ticket {
        check_free_text("ticket", t)?;
    }
    let ticket = ticket.map(str::trim).filter(|t| !t.is_empty());
    match (&e.ticket_pattern, ticket) {
        (Some(p), None) => Err(DomainError::TicketRequired {
            entitlement: e.id.clone(),
            pattern: p.as_str().to_string(),
        }),
        (Some(p), Some(t)) if !p.is_match(t) => Err(DomainError::TicketInvalid {
            ticket: t.to_string(),
            pattern: p.as_str().to_string(),
        }),
        (_, t) => Ok(t.map(str::to_string)),
    }
}

impl AccessRequest {
    /// Creates a request for `input.entitlement` by `requester` at `now`.
    ///
    /// Checks, in order: the entitlement is in `policy` and `requester` may
    /// request it; the duration (default if absent) is positive and at most
    /// the maximum; justification length; ticket pattern; start time (not in
    /// the past, at most `policy.max_start_ahead` ahead); break-glass allowed.
    /// Whether the user already holds the entitlement is a Keycloak question
    /// the caller answers before calling this.
    ///
    /// Returns the request and its transitions: `create`, and `approve` too
    /// when a break-glass or auto-approval rule applies.
    pub fn create(
        id: String,
        input: &NewRequest,
        requester: &Principal,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<(AccessRequest, Vec<Transition>), DomainError> {
        let e = policy
            .entitlement(&input.entitlement)
            .ok_or_else(|| DomainError::UnknownEntitlement(input.entitlement.clone()))?;
        if !e.may_request(requester) {
            return Err(DomainError::NotARequester(e.id.clone()));
        }
        let duration = check_duration(e, input.duration_secs.unwrap_or(e.default_duration))?;
        let justification = check_justification(e, &input.justification)?;
        let ticket = check_ticket(e, input.ticket.as_deref())?;
        let start_at = match input.start_at {
            // A minute of slack for clock skew between client and server.
            Some(s) if s < now - Duration::seconds(60) => {
                return Err(DomainError::StartInPast {
                    start: s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    now: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                })
            }
            Some(s) if s > now + Duration::seconds(policy.max_start_ahead) => {
                return Err(DomainError::StartTooFar {
                    max: format_duration(policy.max_start_ahead),
                })
            }
            Some(s) if s <= now => None,
            other => other,
        };
        if input.break_glass && !e.break_glass {
            return Err(DomainError::BreakGlassNotAllowed(e.id.clone()));
        }
        let mut r = AccessRequest {
            id,
            kind: RequestKind::Access,
            entitlement_id: e.id.clone(),
            target: e.kind.clone(),
            requester_id: requester.id.clone(),
            requester_username: requester.username.clone(),
            requester_client: requester.client_id.clone(),
            justification,
            ticket,
            urgent: input.urgent || input.break_glass,
            break_glass: input.break_glass,
            requested_secs: duration,
            duration_secs: duration,
            approvals_required: e.approvals_required,
            votes: Vec::new(),
            status: Status::Pending,
            created_at: now,
            pending_until: now + Duration::seconds(e.pending_ttl),
            start_at,
            decided_at: None,
            activated_at: None,
            expires_at: None,
            ended_at: None,
            ended_by: None,
            end_reason: None,
            auto_approved: None,
            review_required: false,
            reviewed_by: None,
            reviewed_at: None,
            extensions: Vec::new(),
        };
        let mut transitions = vec![Transition {
            action: Action::Create,
            from: None,
            to: Status::Pending,
            actor: requester.username.clone(),
            reason: Some(r.justification.clone()),
            at: now,
        }];
        if input.break_glass {
            r.review_required = true;
            transitions.push(r.approve_by_rule(
                requester.username.clone(),
                "break-glass self-activation; review required".into(),
                now,
            ));
        } else if let Some(rule) = e.auto_approve.iter().find(|a| a.matches(requester, now)) {
            let why = format!("auto-approved: {}", rule.describe());
            r.auto_approved = Some(rule.describe());
            transitions.push(r.approve_by_rule(SYSTEM_ACTOR.into(), why, now));
        }
        Ok((r, transitions))
    }

    /// Creates an extension request: more time on `grant`, which must be an
    /// active grant of `requester`. It follows the entitlement's rules (max
    /// duration per extension, justification, approvers) like any request;
    /// the ticket defaults to the grant's.
    pub fn create_extension(
        id: String,
        grant: &AccessRequest,
        duration_secs: Option<i64>,
        justification: &str,
        requester: &Principal,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<(AccessRequest, Vec<Transition>), DomainError> {
        if grant.requester_id != requester.id {
            return Err(DomainError::NotRequester(Action::Extend));
        }
        if let RequestKind::Extension { grant_id } = &grant.kind {
            return Err(DomainError::NotAGrant {
                id: grant.id.clone(),
                grant_id: grant_id.clone(),
            });
        }
        if grant.status != Status::Active {
            return Err(grant.not_extendable());
        }
        let input = NewRequest {
            entitlement: grant.entitlement_id.clone(),
            duration_secs,
            justification: justification.to_string(),
            ticket: grant.ticket.clone(),
            start_at: None,
            urgent: false,
            break_glass: false,
        };
        let (mut r, t) = AccessRequest::create(id, &input, requester, policy, now)?;
        if let Some(e) = policy.entitlement(&grant.entitlement_id) {
            let total = grant.total_secs().saturating_add(r.duration_secs);
            if total > e.max_total_duration {
                return Err(DomainError::TotalDurationExceedsMax {
                    entitlement: e.id.clone(),
                    requested_secs: r.duration_secs,
                    total_secs: total,
                    max_secs: e.max_total_duration,
                    left_secs: e.max_total_duration - grant.total_secs(),
                });
            }
        }
        r.kind = RequestKind::Extension {
            grant_id: grant.id.clone(),
        };
        Ok((r, t))
    }

    /// Why this access request, not active, cannot be extended (or an
    /// extension of it decided): [`DomainError::GrantEnded`] once it was a
    /// grant (expired, revoked, dropped), else
    /// [`DomainError::NotAnActiveGrant`].
    pub fn not_extendable(&self) -> DomainError {
        match (self.status, self.activated_at) {
            (Status::Expired | Status::Revoked, Some(_)) => DomainError::GrantEnded {
                id: self.id.clone(),
                entitlement: self.entitlement_id.clone(),
                how: self.end_phrase(),
            },
            (status, _) => DomainError::NotAnActiveGrant {
                id: self.id.clone(),
                status,
            },
        }
    }

    /// How an ended request ended, to follow "it": `expired at T`, `was
    /// dropped by its requester alice at T`, `was revoked by bob at T`, `was
    /// ended by jitd at T (reason)`; times RFC 3339, UTC.
    pub fn end_phrase(&self) -> String {
        let at = |t: Option<DateTime<Utc>>| {
            t.map(|t| {
                format!(
                    " at {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default()
        };
        let by = self.ended_by.as_deref().unwrap_or(SYSTEM_ACTOR);
        match self.status {
            Status::Expired => format!("expired{}", at(self.expires_at.or(self.ended_at))),
            Status::Revoked if by == self.requester_username => {
                format!("was dropped by its requester {by}{}", at(self.ended_at))
            }
            Status::Revoked if by == SYSTEM_ACTOR => format!(
                "was ended by jitd{}{}",
                at(self.ended_at),
                self.end_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            Status::Revoked => format!("was revoked by {by}{}", at(self.ended_at)),
            s => format!("is {s}"),
        }
    }

    fn approve_by_rule(&mut self, actor: String, reason: String, now: DateTime<Utc>) -> Transition {
        self.status = Status::Approved;
        self.decided_at = Some(now);
        Transition {
            action: Action::Approve,
            from: Some(Status::Pending),
            to: Status::Approved,
            actor,
            reason: Some(reason),
            at: now,
        }
    }

    fn transition(
        &mut self,
        action: Action,
        to: Status,
        actor: &str,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Transition {
        let from = self.status;
        self.status = to;
        Transition {
            action,
            from: Some(from),
            to,
            actor: actor.to_string(),
            reason,
            at: now,
        }
    }

    fn require(&self, allowed: &[Status], action: Action) -> Result<(), DomainError> {
        if allowed.contains(&self.status) {
            Ok(())
        } else {
            Err(DomainError::IllegalTransition {
                from: self.status,
                action,
            })
        }
    }

    /// An approved extension has already moved its grant's end: it is done,
    /// and only the grant itself can be dropped or revoked.
    fn require_not_applied_extension(&self, action: Action) -> Result<(), DomainError> {
        if self.status == Status::Approved && matches!(self.kind, RequestKind::Extension { .. }) {
            return Err(DomainError::IllegalTransition {
                from: self.status,
                action,
            });
        }
        Ok(())
    }

    /// Ends the request because its entitlement left the policy (or now
    /// grants something else): pending or approved requests are cancelled,
    /// an active grant is revoked. Only entitlements in the policy in force
    /// may be held through JIT.
    pub fn withdraw(
        &mut self,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition, DomainError> {
        self.require(
            &[Status::Pending, Status::Approved, Status::Active],
            Action::Revoke,
        )?;
        self.require_not_applied_extension(Action::Revoke)?;
        self.ended_at = Some(now);
        self.ended_by = Some(SYSTEM_ACTOR.into());
        self.end_reason = Some(reason.to_string());
        let (action, to) = match self.status {
            Status::Active => (Action::Revoke, Status::Revoked),
            _ => (Action::Cancel, Status::Cancelled),
        };
        Ok(self.transition(action, to, SYSTEM_ACTOR, Some(reason.to_string()), now))
    }

    /// Whether `approver` may decide (vote on, review) this request at
    /// all, whatever its state: not its requester (`self_approval`) and an
    /// approver of `e` (`not_an_approver`). Every decision checks this
    /// before the request's state, so a caller without the right gets 403
    /// and learns nothing of the state.
    pub fn check_reviewer(&self, e: &Entitlement, approver: &Principal) -> Result<(), DomainError> {
        if approver.id == self.requester_id {
            return Err(DomainError::SelfApproval);
        }
        if !e.is_approver(approver) {
            return Err(DomainError::NotAnApprover(e.id.clone()));
        }
        Ok(())
    }

    /// Records `approver`'s vote. `e` is the request's entitlement from the
    /// current policy. Rules: the request is pending and has not outlived its
    /// pending TTL; the approver is not the requester (by any path) and is an
    /// approver of `e`; one vote per approver; a deny needs a comment and ends
    /// the request; `duration_secs` may only shorten. When the approvals reach
    /// `approvals_required`, the request becomes `approved`.
    ///
    /// Returns the transition if the status changed, `None` if the vote was
    /// recorded and more approvals are needed.
    pub fn vote(
        &mut self,
        e: &Entitlement,
        approver: &Principal,
        decision: Decision,
        comment: Option<String>,
        duration_secs: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>, DomainError> {
        let action = match decision {
            Decision::Approve => Action::Approve,
            Decision::Deny => Action::Deny,
        };
        // Rights before state: someone who may not decide learns nothing
        // of where the request stands (403 whatever its status).
        self.check_reviewer(e, approver)?;
        self.require(&[Status::Pending], action)?;
        if now >= self.pending_until {
            return Err(DomainError::Lapsed);
        }
        if self.votes.iter().any(|v| v.approver_id == approver.id) {
            return Err(DomainError::AlreadyVoted);
        }
        let comment = clean_comment(comment)?;
        if decision == Decision::Deny && comment.is_none() {
            return Err(DomainError::CommentRequired(Action::Deny));
        }
        if let Some(d) = duration_secs {
            if d > self.duration_secs {
                return Err(DomainError::CannotLengthen {
                    requested: format_duration(self.duration_secs),
                });
            }
            if d <= 0 {
                return Err(DomainError::InvalidDuration {
                    input: d.to_string(),
                    reason: "must be greater than zero".into(),
                });
            }
            self.duration_secs = d;
        }
        self.votes.push(Vote {
            approver_id: approver.id.clone(),
            approver_username: approver.username.clone(),
            decision,
            comment: comment.clone(),
            duration_secs,
            at: now,
        });
        match decision {
            Decision::Deny => {
                self.decided_at = Some(now);
                Ok(Some(self.transition(
                    Action::Deny,
                    Status::Denied,
                    &approver.username,
                    comment,
                    now,
                )))
            }
            Decision::Approve => {
                if self.approvals() >= self.approvals_required {
                    self.decided_at = Some(now);
                    Ok(Some(self.transition(
                        Action::Approve,
                        Status::Approved,
                        &approver.username,
                        comment,
                        now,
                    )))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// The requester withdraws a pending or approved-but-not-yet-active request.
    pub fn cancel(
        &mut self,
        actor: &Principal,
        now: DateTime<Utc>,
    ) -> Result<Transition, DomainError> {
        if actor.id != self.requester_id {
            return Err(DomainError::NotRequester(Action::Cancel));
        }
        self.require(&[Status::Pending, Status::Approved], Action::Cancel)?;
        self.require_not_applied_extension(Action::Cancel)?;
        self.ended_at = Some(now);
        self.ended_by = Some(actor.username.clone());
        Ok(self.transition(
            Action::Cancel,
            Status::Cancelled,
            &actor.username,
            None,
            now,
        ))
    }

    /// A pending request whose TTL has passed lapses (scheduler).
    pub fn lapse(&mut self, now: DateTime<Utc>) -> Result<Transition, DomainError> {
        self.require(&[Status::Pending], Action::Lapse)?;
        if now < self.pending_until {
            return Err(DomainError::IllegalTransition {
                from: self.status,
                action: Action::Lapse,
            });
        }
        self.ended_at = Some(now);
        Ok(self.transition(
            Action::Lapse,
            Status::Lapsed,
            SYSTEM_ACTOR,
            Some("nobody reviewed it in time".into()),
            now,
        ))
    }

    /// Whether an approved access request is due for activation at `now`.
    pub fn is_due_for_activation(&self, now: DateTime<Utc>) -> bool {
        self.status == Status::Approved
            && matches!(self.kind, RequestKind::Access)
            && self.start_at.is_none_or(|s| s <= now)
    }

    /// The role was really granted in Keycloak at `now`: the request becomes
    /// an active grant and the duration starts counting from here.
    pub fn activate(&mut self, now: DateTime<Utc>) -> Result<Transition, DomainError> {
        self.activate_since(now, now)
    }

    /// Like [`activate`](Self::activate) at `now`, for a role that has been
    /// in Keycloak since `since` (UTC, not after `now`; an earlier attempt
    /// assigned it and was not recorded): the duration counts from `since`,
    /// so `expires_at` may already have passed (the grant then ends at
    /// once). The transition is dated `now`.
    pub fn activate_since(
        &mut self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Transition, DomainError> {
        self.require(&[Status::Approved], Action::Activate)?;
        let since = since.min(now);
        if !self.is_due_for_activation(now) {
            return Err(DomainError::IllegalTransition {
                from: self.status,
                action: Action::Activate,
            });
        }
        self.activated_at = Some(since);
        let expires = since + Duration::seconds(self.duration_secs);
        self.expires_at = Some(expires);
        let mut reason = format!(
            "for {} until {}",
            format_duration(self.duration_secs),
            expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if since < now {
            reason.push_str(&format!(
                ", counted from {}: an earlier attempt assigned it then and was not recorded",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        Ok(self.transition(
            Action::Activate,
            Status::Active,
            SYSTEM_ACTOR,
            Some(reason),
            now,
        ))
    }

    /// Keycloak refused the grant of an approved access request for good
    /// (the user, role, client or group does not exist, the service
    /// account may not assign it, or the request is invalid): the request
    /// ends `failed` with Keycloak's `reason`. Scheduler only; nothing was
    /// granted, so nothing is left to remove.
    pub fn fail(&mut self, reason: &str, now: DateTime<Utc>) -> Result<Transition, DomainError> {
        self.require(&[Status::Approved], Action::Fail)?;
        if !matches!(self.kind, RequestKind::Access) {
            return Err(DomainError::IllegalTransition {
                from: self.status,
                action: Action::Fail,
            });
        }
        self.ended_at = Some(now);
        self.ended_by = Some(SYSTEM_ACTOR.into());
        self.end_reason = Some(reason.to_string());
        Ok(self.transition(
            Action::Fail,
            Status::Failed,
            SYSTEM_ACTOR,
            Some(reason.to_string()),
            now,
        ))
    }

    /// An active grant whose `expires_at` has passed expires (scheduler).
    pub fn expire(&mut self, now: DateTime<Utc>) -> Result<Transition, DomainError> {
        self.require(&[Status::Active], Action::Expire)?;
        if self.expires_at.is_some_and(|x| now < x) {
            return Err(DomainError::IllegalTransition {
                from: self.status,
                action: Action::Expire,
            });
        }
        self.ended_at = Some(now);
        self.ended_by = Some(SYSTEM_ACTOR.into());
        self.end_reason = Some("expired".into());
        // Processed late (jitd was down, or busy): say so in the audit.
        let late = self
            .expires_at
            .map(|x| (now - x).num_seconds())
            .unwrap_or(0);
        let reason =
            (late >= 2).then(|| format!("processed {} after expires_at", format_duration(late)));
        Ok(self.transition(Action::Expire, Status::Expired, SYSTEM_ACTOR, reason, now))
    }

    /// The requester gives up an active grant early.
    pub fn drop_grant(
        &mut self,
        actor: &Principal,
        now: DateTime<Utc>,
    ) -> Result<Transition, DomainError> {
        if actor.id != self.requester_id {
            return Err(DomainError::NotRequester(Action::Drop));
        }
        self.require(&[Status::Active], Action::Drop)?;
        self.ended_at = Some(now);
        self.ended_by = Some(actor.username.clone());
        self.end_reason = Some("dropped by requester".into());
        Ok(self.transition(Action::Drop, Status::Revoked, &actor.username, None, now))
    }

    /// An approver of the entitlement ends an active (or approved, not yet
    /// started) grant, with a mandatory reason. Requesters use
    /// [`drop_grant`](Self::drop_grant) instead.
    pub fn revoke(
        &mut self,
        e: &Entitlement,
        approver: &Principal,
        comment: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Transition, DomainError> {
        if !e.is_approver(approver) {
            return Err(DomainError::NotAnApprover(e.id.clone()));
        }
        self.require(&[Status::Active, Status::Approved], Action::Revoke)?;
        self.require_not_applied_extension(Action::Revoke)?;
        let comment =
            clean_comment(comment)?.ok_or(DomainError::CommentRequired(Action::Revoke))?;
        self.ended_at = Some(now);
        self.ended_by = Some(approver.username.clone());
        self.end_reason = Some(comment.clone());
        Ok(self.transition(
            Action::Revoke,
            Status::Revoked,
            &approver.username,
            Some(comment),
            now,
        ))
    }

    /// Applies the approved extension `ext` to this active grant, in one
    /// step: `expires_at` moves by the extension's duration (the role is
    /// never removed between), the grant records it in
    /// [`extensions`](Self::extensions), and `ext` becomes `applied`.
    ///
    /// Returns the grant's transition (`grant.extended`) and the
    /// extension's (`extension.applied`). Errors: `illegal_transition` when
    /// `ext` is not an approved extension of this grant or the grant is not
    /// active.
    pub fn apply_extension(
        &mut self,
        ext: &mut AccessRequest,
        now: DateTime<Utc>,
    ) -> Result<(Transition, Transition), DomainError> {
        let linked =
            matches!(&ext.kind, RequestKind::Extension { grant_id } if *grant_id == self.id);
        if !linked || ext.status != Status::Approved {
            return Err(DomainError::IllegalTransition {
                from: ext.status,
                action: Action::Extend,
            });
        }
        self.require(&[Status::Active], Action::Extend)?;
        let old = self.expires_at.unwrap_or(now);
        let new = old + Duration::seconds(ext.duration_secs);
        self.expires_at = Some(new);
        let approved_by: Vec<String> = match ext.auto_approved {
            Some(_) => vec![SYSTEM_ACTOR.into()],
            None => ext
                .votes
                .iter()
                .filter(|v| v.decision == Decision::Approve)
                .map(|v| v.approver_username.clone())
                .collect(),
        };
        self.extensions.push(AppliedExtension {
            id: ext.id.clone(),
            requested_by: ext.requester_username.clone(),
            approved_by: approved_by.clone(),
            added_secs: ext.duration_secs,
            justification: ext.justification.clone(),
            applied_at: now,
            expires_at: new,
        });
        let until = new.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let grant_t = Transition {
            action: Action::Extend,
            from: Some(Status::Active),
            to: Status::Active,
            actor: approved_by
                .last()
                .cloned()
                .unwrap_or_else(|| SYSTEM_ACTOR.into()),
            reason: Some(format!(
                "extended by {} (request {}) until {until}",
                format_duration(ext.duration_secs),
                ext.id,
            )),
            at: now,
        };
        ext.ended_at = Some(now);
        let ext_t = ext.transition(
            Action::Apply,
            Status::Applied,
            SYSTEM_ACTOR,
            Some(format!(
                "added {} to grant {}; it now ends {until}",
                format_duration(ext.duration_secs),
                self.id
            )),
            now,
        );
        Ok((grant_t, ext_t))
    }

    /// How many approve votes the request has: the count that
    /// `approvals_required` is compared with (one rule for jitd, the CLI
    /// and, through `RequestView::approvals`, the app).
    pub fn approvals(&self) -> u32 {
        self.votes
            .iter()
            .filter(|v| v.decision == Decision::Approve)
            .count() as u32
    }

    /// The grant's whole length in seconds: the granted duration plus every
    /// applied extension.
    pub fn total_secs(&self) -> i64 {
        self.duration_secs + self.extensions.iter().map(|x| x.added_secs).sum::<i64>()
    }

    /// An approver closes the mandatory after-the-fact review of a
    /// break-glass activation. The requester cannot review their own.
    pub fn review(
        &mut self,
        e: &Entitlement,
        reviewer: &Principal,
        comment: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Transition, DomainError> {
        self.check_reviewer(e, reviewer)?;
        if !self.review_required || self.reviewed_at.is_some() {
            return Err(DomainError::NothingToReview {
                status: self.status,
                reviewed_by: self.reviewed_by.clone(),
            });
        }
        let comment =
            clean_comment(comment)?.ok_or(DomainError::CommentRequired(Action::Review))?;
        self.reviewed_by = Some(reviewer.username.clone());
        self.reviewed_at = Some(now);
        Ok(Transition {
            action: Action::Review,
            from: Some(self.status),
            to: self.status,
            actor: reviewer.username.clone(),
            reason: Some(comment),
            at: now,
        })
    }

    /// Seconds left on an active grant at `now` (never negative), else `None`.
    pub fn remaining_secs(&self, now: DateTime<Utc>) -> Option<i64> {
        match (self.status, self.expires_at) {
            (Status::Active, Some(x)) => Some((x - now).num_seconds().max(0)),
            _ => None,
        }
    }

    /// Whether the request awaits `approver`'s decision — "awaits my
    /// review": `approver` approves its entitlement under `policy`, is not
    /// its requester, and either it is `pending` without their vote, or it
    /// is a break-glass activation whose after-the-fact review is still
    /// open. jitd's `to_review` list computes the same in SQL (for speed);
    /// a store test holds the two equal.
    pub fn awaits_review_by(&self, approver: &Principal, policy: &Policy) -> bool {
        let Some(e) = policy.entitlement(&self.entitlement_id) else {
            return false;
        };
        if self.requester_id == approver.id || !e.is_approver(approver) {
            return false;
        }
        if self.status == Status::Pending {
            !self.votes.iter().any(|v| v.approver_id == approver.id)
        } else {
            self.review_required && self.reviewed_at.is_none()
        }
    }

    /// Whether the request takes a pending slot: any `pending` request. The
    /// slot of an access request is "one pending request per requester and
    /// entitlement"; the slot of an extension is "one pending extension per
    /// grant" (two approved at once would stack past what anyone looked
    /// at). A second request for a taken slot is refused with
    /// `duplicate_pending` (409); jitd's store holds the rules with unique
    /// indexes on the slots, so parallel requests cannot both take one.
    pub fn takes_pending_slot(&self) -> bool {
        self.status == Status::Pending
    }

    /// Who may see this request: the requester, approvers of its entitlement
    /// (per the current policy), and auditors.
    pub fn visible_to(&self, p: &Principal, policy: &Policy) -> bool {
        p.id == self.requester_id
            || policy.is_auditor(p)
            || policy
                .entitlement(&self.entitlement_id)
                .is_some_and(|e| e.is_approver(p))
    }
}

#[cfg(test)]
mod tests;
