// Generated from the Rust types of crates/jit-core (ts-rs) — do not edit.
// Regenerate: UPDATE_TS_TYPES=1 cargo test -p jit-core --test ts_types

export type Status = "pending" | "approved" | "active" | "denied" | "cancelled" | "lapsed" | "expired" | "revoked" | "applied" | "failed";

export type Decision = "approve" | "deny";

export type Vote = { approver_id: string, approver_username: string, decision: Decision, comment: string | null, 
/**
 * Duration the approver allows, seconds, if they shortened it.
 */
duration_secs: number | null, at: string, };

export type RequestKind = { "type": "access" } | { "type": "extension", grant_id: string, };

export type EntitlementKind = { "kind": "realm_role", role: string, } | { "kind": "client_role", client: string, role: string, } | { "kind": "group", path: string, };

export type AppliedExtension = { 
/**
 * The extension request's id.
 */
id: string, 
/**
 * Username of who asked for it (the grant's requester).
 */
requested_by: string, 
/**
 * Usernames of the approvers whose votes approved it, or
 * `["jitd"]` when a policy rule approved it.
 */
approved_by: Array<string>, 
/**
 * Seconds added to the grant.
 */
added_secs: number, justification: string, 
/**
 * When it was applied (UTC).
 */
applied_at: string, 
/**
 * The grant's end right after it (UTC).
 */
expires_at: string, };

export type GrantState = { 
/**
 * Whether JIT made the assignment (and so may remove it). `None` until
 * decided at activation; `false` when the user already held it
 * directly (a standing assignment JIT must never remove).
 */
owns_assignment: boolean | null, 
/**
 * When the assignment was confirmed in Keycloak (UTC).
 */
granted_at: string | null, 
/**
 * When jitd set out to assign the grant in Keycloak (UTC), written
 * to the store before the assignment is sent; `None` before that. If
 * jitd stopped, or Keycloak's answer never came, after an assignment
 * landed but before it was recorded, the next attempt finds the role
 * held and the grant counts from here (`activated_at`), not from when
 * a later attempt confirmed it: a crash never lengthens a grant.
 */
assigning_since: string | null, 
/**
 * The grant ended and the Keycloak side still has to be cleaned up.
 */
removal_pending: boolean, 
/**
 * When the assignment was removed in Keycloak (UTC).
 */
removed_at: string | null, 
/**
 * Failed Keycloak attempts for the current step.
 */
attempts: number, 
/**
 * Do not retry before this instant (UTC).
 */
next_attempt_at: string | null, 
/**
 * Last Keycloak error for the current step, for the API and the UI
 * (in API views, work waiting while Keycloak is out of reach for jitd
 * says so here).
 */
last_error: string | null, 
/**
 * Keycloak refused the removal for good (e.g. 403: the service account
 * may no longer remove it): not retried; the assignment may still be
 * in Keycloak and needs an administrator (`last_error` says why).
 */
removal_failed: boolean, };

export type KnownEventKind = "request.created" | "request.voted" | "request.approved" | "request.denied" | "request.cancelled" | "request.lapsed" | "request.reviewed" | "grant.granted" | "grant.standing" | "grant.extended" | "grant.expired" | "grant.dropped" | "grant.revoked" | "grant.failed" | "grant.removed" | "grant.kept" | "grant.removal_failed" | "grant.removal_retried" | "grant.nothing_to_remove" | "extension.applied";

// jit_core::api::EventKind: a known name, or a newer server's.
export type EventKind = KnownEventKind | (string & {});

export type AccessRequest = { id: string, kind: RequestKind, entitlement_id: string, 
/**
 * What is granted in Keycloak, copied from the policy at creation.
 */
target: EntitlementKind, requester_id: string, requester_username: string, 
/**
 * Set when the requester is a client's service account (a pipeline):
 * that client's id (see [`Principal::client_id`]). `None` for people.
 */
requester_client?: string, justification: string, ticket: string | null, urgent: boolean, break_glass: boolean, 
/**
 * Duration asked for, seconds.
 */
requested_secs: number, 
/**
 * Duration that will be granted (the shortest any approver allowed), seconds.
 */
duration_secs: number, approvals_required: number, votes: Array<Vote>, status: Status, created_at: string, 
/**
 * After this instant (UTC) a pending request lapses.
 */
pending_until: string, start_at: string | null, decided_at: string | null, activated_at: string | null, 
/**
 * `activated_at + duration` plus any extensions (UTC).
 */
expires_at: string | null, ended_at: string | null, ended_by: string | null, end_reason: string | null, 
/**
 * Set when a policy rule approved the request (its description).
 */
auto_approved: string | null, 
/**
 * Break-glass activations stay "review open" until an approver reviews.
 */
review_required: boolean, reviewed_by: string | null, reviewed_at: string | null, 
/**
 * Extensions applied to this grant, oldest first.
 */
extensions: Array<AppliedExtension>, };

export type RequestWarning = { 
/**
 * Stable snake_case code for programs. `no_eligible_approver`: fewer
 * people than the request needs approvals (`approvals_required`),
 * other than the requester, hold an approver role or group of its
 * entitlement in Keycloak now — nobody approves their own request, so
 * unless someone gets that right it can only lapse (at
 * `pending_until`). `already_granted`: the requester holds the same
 * target through an active JIT grant now (the message names it and its
 * end, UTC); grants may overlap, but more time on that grant is
 * usually what was meant (`POST /v1/grants/{id}/extend`).
 */
code: string, 
/**
 * A sentence for the person who asked.
 */
message: string, };

export type RequestView = { 
/**
 * The entitlement's display name (its id if no longer in the policy).
 */
entitlement_name: string, 
/**
 * Seconds left on an active grant (`expires_at − server now`).
 */
remaining_secs: number | null, 
/**
 * The grant's whole length, seconds: `duration_secs` plus the time of
 * every applied extension (listed in `extensions`).
 */
total_secs: number, 
/**
 * Approve votes so far (`AccessRequest::approvals`, the count the
 * state machine compares with `approvals_required`): clients show
 * this number instead of counting votes themselves.
 */
approvals: number, 
/**
 * Keycloak-side state of the grant.
 */
keycloak: GrantState, 
/**
 * The grant is over but the role is still (or may still be) in
 * Keycloak more than 5 s after the grant's end: a revoke is late
 * (Keycloak unreachable, retrying). Rule: `jit_core::lateness`, the
 * same as the metric `jit_revocations_late`.
 */
revoke_late: boolean, 
/**
 * Whether the end of this grant also ends the requester's Keycloak
 * sessions (the entitlement's `end_sessions_on_revoke` in the policy
 * in force; `false` once it is no longer in the policy): jitd logs the
 * user out everywhere when it removes the role, so a refresh token
 * cannot mint a token that still carries it. Clients say so before
 * and after a drop, and `jit` names this grant when its login ended.
 */
ends_sessions: boolean, 
/**
 * Whether the request awaits the caller's decision or break-glass
 * review — "awaits my review", the rule of
 * `AccessRequest::awaits_review_by` (the `to_review` list holds
 * exactly these). Clients use this instead of a rule of their own.
 * `null` where the view is not made for one caller: in the event
 * stream's `request` (rendered once for every subscriber) — ask
 * `GET /v1/requests/{id}` for the caller's answer.
 */
awaits_your_review: boolean | null, 
/**
 * What the requester should know about a request just made that does
 * not stop it (only in the answer of `POST /v1/requests`; absent
 * elsewhere and when there is none).
 */
warnings?: Array<RequestWarning>, id: string, kind: RequestKind, entitlement_id: string, 
/**
 * What is granted in Keycloak, copied from the policy at creation.
 */
target: EntitlementKind, requester_id: string, requester_username: string, 
/**
 * Set when the requester is a client's service account (a pipeline):
 * that client's id (see [`Principal::client_id`]). `None` for people.
 */
requester_client?: string, justification: string, ticket: string | null, urgent: boolean, break_glass: boolean, 
/**
 * Duration asked for, seconds.
 */
requested_secs: number, 
/**
 * Duration that will be granted (the shortest any approver allowed), seconds.
 */
duration_secs: number, approvals_required: number, votes: Array<Vote>, status: Status, created_at: string, 
/**
 * After this instant (UTC) a pending request lapses.
 */
pending_until: string, start_at: string | null, decided_at: string | null, activated_at: string | null, 
/**
 * `activated_at + duration` plus any extensions (UTC).
 */
expires_at: string | null, ended_at: string | null, ended_by: string | null, end_reason: string | null, 
/**
 * Set when a policy rule approved the request (its description).
 */
auto_approved: string | null, 
/**
 * Break-glass activations stay "review open" until an approver reviews.
 */
review_required: boolean, reviewed_by: string | null, reviewed_at: string | null, 
/**
 * Extensions applied to this grant, oldest first.
 */
extensions: Array<AppliedExtension>, };

export type EntitlementView = { id: string, display_name: string, description: string, 
/**
 * `realm role prod-db-admin`, `client role app/admin`, `group /ops`.
 */
target: string, max_duration_secs: number, default_duration_secs: number, 
/**
 * Longest a grant may run in all, its duration plus every extension
 * (seconds; the policy's `max_total_duration`). 0 from a jitd that
 * does not say.
 */
max_total_duration_secs: number, approvals_required: number, ticket_pattern: string | null, justification_min: number, justification_max: number, break_glass: boolean, 
/**
 * Whether the caller is an approver of it.
 */
you_approve: boolean, 
/**
 * `false` when jitd cannot grant it now: its Keycloak target does not
 * exist or the service account may not assign it (`unavailable_reason`
 * says which). Requests for it are refused (`entitlement_unavailable`).
 */
available: boolean, unavailable_reason?: string | null, };

export type CreateRequestBody = { entitlement: string, 
/**
 * Human duration (`"15m"`); or give `duration_secs`.
 */
duration?: string, duration_secs?: number, 
/**
 * Bounds per entitlement (`justification_min`..=`justification_max`
 * characters, policy; default 10..=1000).
 */
justification: string, 
/**
 * Ticket reference, at most 500 characters
 * ([`crate::model::MAX_FREE_TEXT_CHARS`]; `text_too_long`).
 */
ticket?: string, start_at?: string, urgent?: boolean, break_glass?: boolean, };

export type DecisionBody = { 
/**
 * At most 500 characters ([`crate::model::MAX_FREE_TEXT_CHARS`];
 * `text_too_long`), no control characters (`invalid_text`). Required
 * to deny, revoke and review.
 */
comment?: string, 
/**
 * Approve only: shorten the grant to this human duration.
 */
duration?: string, };

export type ExtendBody = { duration: string, justification: string, };

export type AuditRecord = { 
/**
 * Sequence number, also the event id of `/v1/events`.
 */
seq: number, at: string, 
/**
 * Event type: an [`EventKind`], as its name (e.g. `request.created`).
 * A name this version does not know reads as `EventKind::Other`. In
 * the OpenAPI document a string (a newer jitd may write new names).
 */
event: EventKind, request_id: string, entitlement_id: string, requester_id: string, actor: string, 
/**
 * Set when the actor is a client's service account (a pipeline): the
 * client's id. Hashed only when present, so older rows verify as before.
 */
actor_client?: string, reason: string | null, from_status: string | null, to_status: string | null, prev_hash: string, hash: string, };

export type EventData = { 
/**
 * The request the event is about (the caller may see it): as it was
 * when the event was sent on a live stream, as it is when read on a
 * resume (`Last-Event-ID`, `since`) or a catch-up — so one event id
 * may carry a later state on replay.
 */
request: RequestView | null, 
/**
 * Sequence number, also the event id of `/v1/events`.
 */
seq: number, at: string, 
/**
 * Event type: an [`EventKind`], as its name (e.g. `request.created`).
 * A name this version does not know reads as `EventKind::Other`. In
 * the OpenAPI document a string (a newer jitd may write new names).
 */
event: EventKind, request_id: string, entitlement_id: string, requester_id: string, actor: string, 
/**
 * Set when the actor is a client's service account (a pipeline): the
 * client's id. Hashed only when present, so older rows verify as before.
 */
actor_client?: string, reason: string | null, from_status: string | null, to_status: string | null, prev_hash: string, hash: string, };

export type MeView = { id: string, username: string, roles: Array<string>, groups: Array<string>, auditor: boolean, 
/**
 * Entitlement ids the caller may approve.
 */
approves: Array<string>, 
/**
 * Token expiry, seconds since the epoch.
 */
token_exp: number, };

export type ServerConfigView = { 
/**
 * `{keycloak}/realms/{realm}`.
 */
issuer: string, 
/**
 * The `aud` jitd requires.
 */
audience: string, cli_client_id: string, desktop_client_id: string, };

export type Problem = { 
/**
 * `urn:jit-access:problem:{code}`.
 */
type: string, 
/**
 * Short summary of the class of problem.
 */
title: string, 
/**
 * The HTTP status code.
 */
status: number, 
/**
 * A sentence for the person who asked.
 */
detail: string, 
/**
 * Stable snake_case code for programs (`DomainError::code`, `ApiError`).
 */
code: string, };
