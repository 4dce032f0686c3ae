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
    #[error("justification is too short: at least {min} characters are required")]
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
    #[error("start time must not be in the past")]
    StartInPast,
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
    #[error("cannot {action} a request that is {from}")]
    IllegalTransition { from: Status, action: Action },
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
    #[error(
        "request {0} is not an active grant (a request just approved becomes active once Keycloak has the role: try again in a moment)"
    )]
    NotAnActiveGrant(String),
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
    #[error("'{entitlement}' cannot be granted now: {reason}")]
    EntitlementUnavailable { entitlement: String, reason: String },
    /// Only a grant whose removal jitd gave up (`removal_failed`) can have
    /// its removal retried.
    #[error("request {0}'s removal has not failed, so there is nothing to retry (only a grant shown as removal_failed can be retried)")]
    RemovalNotFailed(String),
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
            JustificationTooShort { .. } => "justification_too_short",
            JustificationTooLong { .. } => "justification_too_long",
            TicketRequired { .. } => "ticket_required",
            TicketInvalid { .. } => "ticket_invalid",
            StartInPast => "start_in_past",
            StartTooFar { .. } => "start_too_far",
            BreakGlassNotAllowed(_) => "break_glass_not_allowed",
            SelfApproval => "self_approval",
            NotAnApprover(_) => "not_an_approver",
            AlreadyVoted => "already_voted",
            NotRequester(_) => "not_requester",
            IllegalTransition { .. } => "illegal_transition",
            Lapsed => "lapsed",
            CannotLengthen { .. } => "cannot_lengthen",
            CommentRequired(_) => "comment_required",
            AlreadyHeld { .. } | AlreadyHeldThroughGrant { .. } => "already_held",
            NotAnActiveGrant(_) => "not_an_active_grant",
            InvalidText { .. } => "invalid_text",
            TextTooLong { .. } => "text_too_long",
            DuplicatePending(..) => "duplicate_pending",
            EntitlementUnavailable { .. } => "entitlement_unavailable",
            RemovalNotFailed(_) => "removal_not_failed",
            NotFound => "not_found",
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
            | AlreadyVoted
            | Lapsed
            | AlreadyHeld { .. }
            | AlreadyHeldThroughGrant { .. }
            | DuplicatePending(..)
            | EntitlementUnavailable { .. }
            | NotAnActiveGrant(_)
            | RemovalNotFailed(_) => ErrorKind::Conflict,
            _ => ErrorKind::Invalid,
        }
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
