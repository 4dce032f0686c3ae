//! The domain's errors. Each has a stable machine-readable [`code`](DomainError::code)
//! that the API puts in its problem+json body and clients may match on.

use crate::model::{Action, Status};

/// Why the domain refused something. The `Display` text is a full sentence
/// meant for the person who asked; [`DomainError::code`] is for programs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("unknown entitlement '{0}': it is not in the policy")]
    UnknownEntitlement(String),
    #[error("you may not request '{0}' (the policy limits who may request it)")]
    NotARequester(String),
    #[error("invalid duration '{input}': {reason}")]
    InvalidDuration { input: String, reason: String },
    #[error("requested duration {requested} exceeds the maximum of {max} for '{entitlement}'")]
    DurationExceedsMax {
        entitlement: String,
        requested: String,
        max: String,
    },
    /// An extension would make the grant run longer in total (its
    /// duration plus every extension) than the entitlement's
    /// `max_total_duration`.
    /// Durations in seconds.
    #[error(
        "{} more would make this grant of '{entitlement}' run {} in all, beyond its limit of {} (room left: {}); request access again instead",
        crate::format_duration(*requested_secs),
        crate::format_duration(*total_secs),
        crate::format_duration(*max_secs),
        if *left_secs > 0 { crate::format_duration(*left_secs) } else { "none".into() }
    )]
    TotalDurationExceedsMax {
        entitlement: String,
        requested_secs: i64,
        total_secs: i64,
        max_secs: i64,
        left_secs: i64,
    },
    #[error("justification is too short: at least {min} characters are required, not counting spaces at its start and end")]
    JustificationTooShort { min: usize },
    #[error("justification is too long: at most {max} characters are allowed")]
    JustificationTooLong { max: usize },
    #[error("a ticket reference is required for '{entitlement}' (pattern {pattern})")]
    TicketRequired {
        entitlement: String,
        pattern: String,
    },
    #[error("ticket reference '{ticket}' does not match the required pattern {pattern}")]
    TicketInvalid { ticket: String, pattern: String },
    /// `--start`/`start_at` more than a minute before jitd's clock; both
    /// times RFC 3339, UTC.
    #[error("the start time {start} is in the past (jitd's time is {now}): give a time in the future, or leave the start out to begin as soon as the request is approved")]
    StartInPast { start: String, now: String },
    #[error("start time is too far ahead: at most {max} from now")]
    StartTooFar { max: String },
    #[error("break-glass is not allowed for '{0}'")]
    BreakGlassNotAllowed(String),
    #[error("nobody may approve, deny or review their own request")]
    SelfApproval,
    #[error("you are not an approver for '{0}'")]
    NotAnApprover(String),
    #[error("you have already voted on this request")]
    AlreadyVoted,
    #[error("only the requester may {0} this request")]
    NotRequester(Action),
    #[error("cannot {action} this request: it is {}", status_phrase(*.from))]
    IllegalTransition { from: Status, action: Action },
    /// `review` of a request with no after-the-fact review open: it is no
    /// break-glass activation, or its review is done.
    #[error("{}", match .reviewed_by {
        Some(who) => format!("this break-glass activation was already reviewed by {who}"),
        None => format!("nothing to review: only break-glass activations get an after-the-fact review, and this request was not one (it is {})", status_phrase(*.status)),
    })]
    NothingToReview {
        status: Status,
        reviewed_by: Option<String>,
    },
    #[error("the request lapsed: nobody reviewed it before its pending time ran out")]
    Lapsed,
    #[error("an approver may shorten the duration but not lengthen it (requested {requested})")]
    CannotLengthen { requested: String },
    #[error("a comment is required to {0}")]
    CommentRequired(Action),
    #[error("'{entitlement}' is already held by {user} as a standing assignment; JIT access is not needed")]
    AlreadyHeld { entitlement: String, user: String },
    /// Held only through another active JIT grant (e.g. a group that
    /// carries the role); `until` is that grant's end (RFC 3339, UTC).
    #[error("'{entitlement}' is already held by {user} through JIT grant {grant_id} ({grant_entitlement}), until {until}; ask for more time on that grant instead")]
    AlreadyHeldThroughGrant {
        entitlement: String,
        user: String,
        grant_id: String,
        grant_entitlement: String,
        until: String,
    },
    /// Still held because a JIT grant of it ended and jitd is removing
    /// it from Keycloak right now (not a standing assignment).
    #[error("'{entitlement}' is still being removed from {user} after grant {grant_id} ended; request it again once jitd has removed it (usually within seconds)")]
    RemovalInProgress {
        entitlement: String,
        user: String,
        grant_id: String,
    },
    /// Extending request `id`, which is not (yet) an active grant: still
    /// pending, approved but not granted yet, or never granted (denied,
    /// cancelled, lapsed, failed). An ended grant is [`GrantEnded`](Self::GrantEnded).
    #[error("{}", not_active_text(.id, *.status))]
    NotAnActiveGrant { id: String, status: Status },
    /// Extending a grant that has ended; `how` says how and when, e.g.
    /// `expired at 2026-11-30T04:00:00Z` (times RFC 3339, UTC).
    #[error("grant {id} ({entitlement}) has already ended: it {how}; an ended grant cannot be extended: request '{entitlement}' again")]
    GrantEnded {
        id: String,
        entitlement: String,
        how: String,
    },
    /// Extending by the id of an extension request instead of its grant's.
    #[error("{id} is an extension request of grant {grant_id}, not a grant: to ask for more time, extend grant {grant_id}")]
    NotAGrant { id: String, grant_id: String },
    /// Deciding an extension that jitd cancelled (its grant ended before
    /// anyone decided): nothing is left to decide. `reason` is jitd's, e.g.
    /// `its grant … has ended`.
    #[error("extension {id} was cancelled by jitd{at}: {reason}; there is nothing left to decide (the requester may ask for access again)")]
    ExtensionWithdrawn {
        id: String,
        reason: String,
        /// ` at 2026-11-30T04:00:00Z`, or empty.
        at: String,
    },
    #[error("{field} contains control or invisible formatting characters; use plain text")]
    InvalidText { field: &'static str },
    /// A free-text field is longer than its limit (characters, not bytes;
    /// [`crate::model::MAX_FREE_TEXT_CHARS`]).
    #[error("{field} is too long: at most {max} characters are allowed")]
    TextTooLong { field: &'static str, max: usize },
    #[error(
        "you already have a pending request for '{0}' ({1}); cancel it or wait for the decision"
    )]
    DuplicatePending(String, String),
    /// A grant has at most one pending extension (`existing`).
    #[error("grant {grant_id} already has a pending extension ({existing}); wait for its decision or cancel it with `jit cancel`")]
    DuplicatePendingExtension { grant_id: String, existing: String },
    #[error("'{entitlement}' cannot be granted now: {reason}")]
    EntitlementUnavailable { entitlement: String, reason: String },
    /// Only a grant whose removal jitd gave up (`removal_failed`) can have
    /// its removal retried; `why` says what request `id` is instead, e.g.
    /// `request … was never granted (it is pending): nothing to remove`.
    #[error("{why}")]
    RemovalNotFailed { id: String, why: String },
    #[error("no request with this id that you may see (it does not exist, or you are neither its requester nor an approver of its entitlement)")]
    NotFound,
}

impl DomainError {
    /// Stable snake_case code, used as the `code` member of problem+json.
    pub fn code(&self) -> &'static str {
        use DomainError::*;
        match self {
            UnknownEntitlement(_) => "unknown_entitlement",
            NotARequester(_) => "not_a_requester",
            InvalidDuration { .. } => "invalid_duration",
            DurationExceedsMax { .. } => "duration_exceeds_max",
            TotalDurationExceedsMax { .. } => "total_duration_exceeds_max",
            JustificationTooShort { .. } => "justification_too_short",
            JustificationTooLong { .. } => "justification_too_long",
            TicketRequired { .. } => "ticket_required",
            TicketInvalid { .. } => "ticket_invalid",
            StartInPast { .. } => "start_in_past",
            StartTooFar { .. } => "start_too_far",
            BreakGlassNotAllowed(_) => "break_glass_not_allowed",
            SelfApproval => "self_approval",
            NotAnApprover(_) => "not_an_approver",
            AlreadyVoted => "already_voted",
            NotRequester(_) => "not_requester",
            IllegalTransition { .. } => "illegal_transition",
            NothingToReview { .. } => "nothing_to_review",
            Lapsed => "lapsed",
            CannotLengthen { .. } => "cannot_lengthen",
            CommentRequired(_) => "comment_required",
            AlreadyHeld { .. } | AlreadyHeldThroughGrant { .. } => "already_held",
            RemovalInProgress { .. } => "removal_in_progress",
            NotAnActiveGrant { .. } => "not_an_active_grant",
            GrantEnded { .. } => "grant_ended",
            NotAGrant { .. } => "not_a_grant",
            ExtensionWithdrawn { .. } => "extension_withdrawn",
            InvalidText { .. } => "invalid_text",
            TextTooLong { .. } => "text_too_long",
            DuplicatePending(..) | DuplicatePendingExtension { .. } => "duplicate_pending",
            EntitlementUnavailable { .. } => "entitlement_unavailable",
            RemovalNotFailed { .. } => "removal_not_failed",
            NotFound => "not_found",
        }
    }

    /// A short title of the class of problem (problem+json `title`, RFC
    /// 9457), one per [`code`](Self::code).
    pub fn title(&self) -> &'static str {
        use DomainError::*;
        match self {
            UnknownEntitlement(_) => "Unknown entitlement",
            NotARequester(_) => "Not a requester of this entitlement",
            InvalidDuration { .. } => "Invalid duration",
            DurationExceedsMax { .. } => "Duration above the maximum",
            TotalDurationExceedsMax { .. } => "Grant's total time above the maximum",
            JustificationTooShort { .. } => "Justification too short",
            JustificationTooLong { .. } => "Justification too long",
            TicketRequired { .. } => "Ticket required",
            TicketInvalid { .. } => "Invalid ticket reference",
            StartInPast { .. } => "Start time in the past",
            StartTooFar { .. } => "Start time too far ahead",
            BreakGlassNotAllowed(_) => "Break-glass not allowed",
            SelfApproval => "Own request",
            NotAnApprover(_) => "Not an approver",
            AlreadyVoted => "Already voted",
            NotRequester(_) => "Not the requester",
            IllegalTransition { .. } => "Not allowed in this state",
            NothingToReview { .. } => "Nothing to review",
            Lapsed => "Request lapsed",
            CannotLengthen { .. } => "Cannot lengthen",
            CommentRequired(_) => "Comment required",
            AlreadyHeld { .. } | AlreadyHeldThroughGrant { .. } => "Already held",
            RemovalInProgress { .. } => "Still being removed",
            NotAnActiveGrant { .. } => "Not an active grant yet",
            GrantEnded { .. } => "Grant already ended",
            NotAGrant { .. } => "An extension, not a grant",
            ExtensionWithdrawn { .. } => "Extension cancelled by jitd",
            InvalidText { .. } => "Invalid text",
            TextTooLong { .. } => "Text too long",
            DuplicatePending(..) | DuplicatePendingExtension { .. } => "Duplicate pending request",
            EntitlementUnavailable { .. } => "Entitlement unavailable",
            RemovalNotFailed { .. } => "No failed removal to retry",
            NotFound => "Not found",
        }
    }

    /// The kind of refusal, so a transport can pick its status code in one place.
    pub fn kind(&self) -> ErrorKind {
        use DomainError::*;
        match self {
            SelfApproval | NotAnApprover(_) | NotRequester(_) | NotARequester(_) => {
                ErrorKind::Forbidden
            }
            NotFound => ErrorKind::NotFound,
            IllegalTransition { .. }
            | NothingToReview { .. }
            | AlreadyVoted
            | Lapsed
            | AlreadyHeld { .. }
            | AlreadyHeldThroughGrant { .. }
            | RemovalInProgress { .. }
            | DuplicatePending(..)
            | DuplicatePendingExtension { .. }
            | EntitlementUnavailable { .. }
            | NotAnActiveGrant { .. }
            | GrantEnded { .. }
            | ExtensionWithdrawn { .. }
            | RemovalNotFailed { .. } => ErrorKind::Conflict,
            _ => ErrorKind::Invalid,
        }
    }
}

/// A request's status in words for a sentence "it is …": `already
/// approved and active`, `still pending`, `already expired`.
pub fn status_phrase(s: Status) -> &'static str {
    match s {
        Status::Pending => "still pending",
        Status::Approved => "approved and not active yet",
        Status::Active => "already approved and active",
        Status::Denied => "already denied",
        Status::Cancelled => "already cancelled",
        Status::Lapsed => "lapsed (nobody decided in time)",
        Status::Expired => "already expired",
        Status::Revoked => "already ended (revoked or dropped)",
        Status::Applied => "an extension already added to its grant",
        Status::Failed => "failed (Keycloak refused the grant)",
    }
}

fn not_active_text(id: &str, status: Status) -> String {
    match status {
        Status::Pending => format!(
            "request {id} is still pending: a grant can be extended once it is approved and active"
        ),
        Status::Approved => format!(
            "request {id} is approved but not active yet (jitd is giving the role in Keycloak, or it starts later): extend it once it is active"
        ),
        s => format!("request {id} was never an active grant (it is {s}): there is nothing to extend"),
    }
}

/// Coarse class of a [`DomainError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is malformed or breaks a policy rule (HTTP 422).
    Invalid,
    /// The caller may not do this (HTTP 403).
    Forbidden,
    /// The request's current state does not allow it (HTTP 409).
    Conflict,
    /// Nothing there, or nothing the caller may see (HTTP 404).
    NotFound,
}
