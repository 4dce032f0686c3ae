//! `/v1/requests`: create, list (paged), show, and the decisions on one request (approve, deny, cancel, extend, review).

use super::*;

pub(super) fn duration_of(human: Option<&str>, secs: Option<i64>) -> Result<Option<i64>, ApiError> {
    match (human, secs) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give either duration or duration_secs, not both".into(),
        )),
        (Some(h), None) => Ok(Some(parse_duration(h)?)),
        (None, s) => Ok(s),
    }
}

/// Refuses a request for an entitlement whose Keycloak target does not
/// exist or that the service account may not assign. The last known
/// status decides; one that says "unavailable" or was never checked is
/// asked of Keycloak again first, so a fixed realm is seen at once.
pub(super) async fn check_available(state: &AppState, r: &AccessRequest) -> Result<(), ApiError> {
    let known = state.target_status(r.entitlement_id(), r.target());
    let status = match known {
        Some(TargetStatus::Available) => return Ok(()),
        _ => {
            let s = crate::scheduler::call(state, state.admin.target_status(r.target())).await?;
            state.set_target_status(r.entitlement_id(), r.target(), s.clone());
            s
        }
    };
    match status.unavailable_reason() {
        None => Ok(()),
        Some(why) => Err(DomainError::EntitlementUnavailable {
            entitlement: r.entitlement_id().to_string(),
            reason: why.to_string(),
        }
        .into()),
    }
}

/// Whether the user holds `target` in Keycloak now, effective (directly,
/// through composites or groups): the Admin API answer the standing check
/// ([`check_not_standing`]) starts from. Never cached.
async fn holds_now(
    state: &AppState,
    user_id: &str,
    target: &EntitlementKind,
) -> Result<bool, ApiError> {
    Ok(crate::scheduler::call(state, state.admin.holds(user_id, target, true)).await?)
}

/// Refuses a request for something the user already holds in Keycloak
/// without JIT (standing assignment, directly or through a group), or only
/// through another active JIT grant (e.g. a granted group that carries the
/// role: the answer names that grant and its end). Holding it through an
/// active JIT grant of the same target is fine: grants may overlap.
///
/// `held` is whether the user holds `r`'s target in Keycloak, effective,
/// asked of Keycloak during this call: [`holds_now`], or the same answer
/// from the caller's fresh rights read ([`crate::rights::current_holding`]).
pub(super) async fn check_not_standing(
    state: &AppState,
    p: &Principal,
    r: &AccessRequest,
    held: bool,
) -> Result<(), ApiError> {
    if !held
        || state
            .store
            .active_ownership(&p.id, r.target(), "")
            .await?
            .is_some()
    {
        return Ok(());
    }
    for g in state.store.active_grants_of(&p.id).await? {
        if g.grant.owns_assignment == Some(false) || g.request.target() == r.target() {
            continue;
        }
        if state.admin.carries(g.request.target(), r.target()).await? {
            return Err(DomainError::AlreadyHeldThroughGrant {
                entitlement: r.entitlement_id().to_string(),
                user: p.username.clone(),
                grant_id: g.request.id().to_string(),
                grant_entitlement: g.request.entitlement_id().to_string(),
                until: g
                    .request
                    .expires_at()
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "its end".into()),
            }
            .into());
        }
    }
    // Held because a grant of it just ended and its removal is under way:
    // not standing; say so (asking again in a moment will work).
    if let Some(g) = state
        .store
        .user_grants_in_keycloak(&p.id)
        .await?
        .into_iter()
        .find(|g| g.grant.removal_pending && g.request.target() == r.target())
    {
        return Err(DomainError::RemovalInProgress {
            entitlement: r.entitlement_id().to_string(),
            user: p.username.clone(),
            grant_id: g.request.id().to_string(),
        }
        .into());
    }
    // `held` was read before the store: a grant's removal may have landed
    // in between (the store then shows no removal pending). Keycloak is
    // asked again before the request is refused as standing.
    if !holds_now(state, &p.id, r.target()).await? {
        return Ok(());
    }
    Err(DomainError::AlreadyHeld {
        entitlement: r.entitlement_id().to_string(),
        user: p.username.clone(),
    }
    .into())
}

/// The `already_granted` warning for request `r`, just created: its
/// requester holds `r`'s target through an active JIT grant now (the one
/// that ends last is named, with its end in UTC). jitd handles overlapping
/// grants, so this is advice: more time on that grant (`jit extend ID`,
/// `POST /v1/grants/{id}/extend`) is usually what was meant. A store error
/// warns nobody.
async fn already_granted(
    state: &AppState,
    r: &AccessRequest,
) -> Option<jit_core::api::RequestWarning> {
    let grants = match state.store.active_grants_of(r.requester_id()).await {
        Ok(g) => g,
        Err(err) => {
            tracing::debug!(error = %err, "active grants look-up failed; no already_granted warning");
            return None;
        }
    };
    let g = grants
        .into_iter()
        .filter(|g| g.request.id() != r.id() && g.request.target() == r.target())
        .max_by_key(|g| g.request.expires_at())?;
    let until = g
        .request
        .expires_at()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "its end".into());
    Some(jit_core::api::RequestWarning {
        code: jit_core::api::ALREADY_GRANTED.into(),
        message: format!(
            "you already hold '{}' through active grant {} until {until}; this request makes a second, overlapping grant; for more time on that one use `jit extend {}` instead",
            r.entitlement_id(),
            g.request.id(),
            g.request.id()
        ),
    })
}

/// Asks for an entitlement. `201` with the request; it may already be
/// `approved` (auto-approval, break-glass). `warnings` (absent when none)
/// says what does not stop the request but the requester should know:
/// `no_eligible_approver` when nobody (or fewer people than the request
/// needs approvals) besides the requester holds an approver role or group
/// of the entitlement in Keycloak now — nobody approves their own request,
/// so it can only lapse unless that changes; `already_granted` when the
/// requester holds the same target through an active JIT grant now (named,
/// with its end in UTC: more time on it was probably meant).
#[utoipa::path(post, path = "/v1/requests", tag = "requests", security(("bearer" = [])),
    request_body = CreateRequestBody,
    responses(
        (status = 201, description = "Created; `warnings` lists what the requester should know (`no_eligible_approver`: nobody besides the requester may approve it now; `already_granted`: the requester holds it through an active JIT grant)", body = RequestView),
        (status = 403, description = "The caller may not request it (`not_a_requester`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already held (`already_held`), still being removed after a grant of it ended (`removal_in_progress`), or already pending (`duplicate_pending`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Breaks a policy rule (duration, justification, ticket, start time, unknown entitlement)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn create(
    State(state): St,
    caller: Caller,
    Body(b): Body<CreateRequestBody>,
) -> Result<Response, ApiError> {
    let policy = state.policy();
    let entitlement = b.entitlement.trim().to_string();
    // The standing look-up is asked of Keycloak with the caller's rights
    // (one read answers both when it can), but only when the token already
    // says the caller may request the entitlement: a caller refused by the
    // policy costs no look-up. Its answer counts only after the checks
    // that come first (rights, policy, availability), so the error a
    // caller gets does not depend on which look-up answers first.
    let early_target = policy
        .entitlement(&entitlement)
        .filter(|e| e.may_request(&caller.principal))
        .map(|e| e.kind.clone());
    let (p, early_held) = match &early_target {
        Some(t) => {
            let (p, held) = crate::rights::current_holding(&state, &caller.principal, t).await?;
            (p, Some(held))
        }
        None => (
            crate::rights::current(&state, &caller.principal).await?,
            None,
        ),
    };
    let input = NewRequest {
        entitlement,
        duration_secs: duration_of(b.duration.as_deref(), b.duration_secs)?,
        justification: b.justification,
        ticket: b.ticket,
        start_at: b.start_at,
        urgent: b.urgent,
        break_glass: b.break_glass,
    };
    let id = uuid::Uuid::new_v4().to_string();
    let (r, transitions) = AccessRequest::create(id, &input, &p, &policy, Utc::now())?;
    check_available(&state, &r).await?;
    let held = match early_held {
        Some(h) if early_target.as_ref() == Some(r.target()) => h?,
        // The token said "not a requester" but Keycloak says otherwise now.
        _ => holds_now(&state, &p.id, r.target()).await?,
    };
    check_not_standing(&state, &p, &r, held).await?;
    // One pending request per requester and entitlement: enforced by the
    // store (a unique index), so parallel requests cannot both pass.
    let recs = state.store.insert(&r, transitions).await?;
    // The answer and the events are what was inserted (a new request has
    // no grant state yet): no second read of the row.
    let s = Stored {
        request: r,
        grant: Default::default(),
    };
    state.published_with(&recs, &s);
    let mut answer = view(&state, &s, Some(&p));
    answer.warnings = crate::approvers::warnings(&state, &s.request).await;
    answer
        .warnings
        .extend(already_granted(&state, &s.request).await);
    Ok((axum::http::StatusCode::CREATED, Json(answer)).into_response())
}

/// Query of `GET /v1/requests`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Only requests in this status.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Only the caller's own requests.
    #[serde(default)]
    mine: bool,
    #[serde(default)]
    /// Only requests waiting for the caller's vote or review.
    to_review: bool,
    /// Break-glass activations whose after-the-fact review is still open.
    #[serde(default)]
    review_open: bool,
    /// Only requests whose id starts with this (CLI short ids); any case
    /// (ids are UUIDs, stored in lower case).
    id_prefix: Option<String>,
    /// Page size: 1 to 5000, default 500.
    #[param(minimum = 1, maximum = 5000)]
    limit: Option<usize>,
    /// Continue after this cursor (from the previous page's `Link: rel="next"`).
    after: Option<String>,
}

/// Largest page of `GET /v1/requests`.
pub const MAX_PAGE: usize = 5000;

/// Requests the caller may see, newest first: one page, filtered and
/// paginated in the store. When more follow, the response carries
/// `Link: </v1/requests?…&after=CURSOR>; rel="next"` (and the bare cursor in
/// `x-next-after`); follow it until it is absent. Exact for any store size.
#[utoipa::path(get, path = "/v1/requests", tag = "requests", security(("bearer" = [])),
    params(ListParams),
    responses((status = 200, description = "Requests (one page)", body = Vec<RequestView>,
        headers(("link" = String, description = "rel=\"next\": the next page, when more follow"),
                ("x-next-after" = String, description = "cursor of the next page, when more follow")))))]
pub(super) async fn list(
    State(state): St,
    caller: Caller,
    RawQuery(raw): RawQuery,
    Q(q): Q<ListParams>,
) -> Result<Response, ApiError> {
    let p = caller.principal;
    let status = q
        .status
        .as_deref()
        .map(|s| s.parse::<Status>().map_err(ApiError::BadRequest))
        .transpose()?;
    let after = q
        .after
        .as_deref()
        .map(|a| {
            Cursor::decode(a).ok_or_else(|| {
                ApiError::BadRequest("after must be a cursor from a previous page".into())
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(500);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let page = state
        .store
        .list(ListQuery {
            viewer: Viewer::of(&p, &state.policy()),
            status,
            mine: q.mine,
            to_review: q.to_review,
            review_open: q.review_open,
            id_prefix: q.id_prefix.map(|p| p.to_ascii_lowercase()),
            after,
            limit,
        })
        .await?;
    let out: Vec<RequestView> = page
        .items
        .iter()
        .map(|s| view(&state, s, Some(&p)))
        .collect();
    let mut resp = Json(out).into_response();
    if let Some(next) = page.next {
        let cursor = next.encode();
        let mut pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .filter(|(k, _)| k != "after")
                .collect();
        pairs.push(("after".into(), cursor.clone()));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        if let Ok(v) = HeaderValue::from_str(&format!("</v1/requests?{query}>; rel=\"next\"")) {
            resp.headers_mut().insert(header::LINK, v);
        }
        if let Ok(v) = HeaderValue::from_str(&cursor) {
            resp.headers_mut().insert(NEXT_AFTER_HEADER, v);
        }
    }
    Ok(resp)
}

/// One request the caller may see.
#[utoipa::path(get, path = "/v1/requests/{id}", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")),
    responses((status = 200, description = "The request", body = RequestView), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"),))]
pub(super) async fn show(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let s = load_visible(&state, &id, &caller.principal).await?;
    Ok(Json(view(&state, &s, Some(&caller.principal))))
}

pub(super) async fn vote(
    state: Arc<AppState>,
    p: Principal,
    id: String,
    decision: Decision,
    b: DecisionBody,
) -> Result<Json<RequestView>, ApiError> {
    // Rights as Keycloak says they are now, not as the token said.
    let p = crate::rights::current(&state, &p).await?;
    let viewer = p.clone(); // the view is made for the caller
    let current = load_visible(&state, &id, &p).await?;
    let policy = state.policy();
    let e = policy
        .entitlement(current.request.entitlement_id())
        .ok_or_else(|| {
            DomainError::UnknownEntitlement(current.request.entitlement_id().to_string())
        })?
        .clone();
    // Rights before state (the extension path below checks its state
    // first): a caller who may not decide gets 403 whatever the state.
    current.request.check_reviewer(&e, &p)?;
    let shorten = match (decision, b.duration.as_deref()) {
        (Decision::Approve, Some(d)) => Some(parse_duration(d)?),
        (Decision::Deny, Some(_)) => {
            return Err(ApiError::BadRequest(
                "duration is for approvals only".into(),
            ))
        }
        _ => None,
    };
    let now = Utc::now();
    let comment = b.comment.clone();
    let apply_vote = move |s: &mut Stored| -> Result<Vec<Entry>, DomainError> {
        Ok(
            match s
                .request
                .vote(&e, &p, decision, comment.clone(), shorten, now)?
            {
                Some(t) => vec![Entry::from(t)],
                // A vote that does not decide yet is still on the record.
                None => vec![Entry::Note(crate::store::Note {
                    event: jit_core::api::EventKind::RequestVoted,
                    actor: p.username.clone(),
                    reason: comment.clone(),
                    at: now,
                })],
            },
        )
    };
    let (stored, recs) = match current.request.kind().clone() {
        RequestKind::Extension { grant_id } => {
            // The vote and, if it completes the approval, the move of the
            // grant's end happen in one transaction.
            let (ext, _grant, recs) = state
                .store
                .update_pair(&id, &grant_id, move |ext, grant| {
                    let x = &ext.request;
                    if x.status() == Status::Cancelled
                        && x.ended_by() == Some(jit_core::model::SYSTEM_ACTOR)
                    {
                        return Err(DomainError::ExtensionWithdrawn {
                            id: x.id().to_string(),
                            reason: x.end_reason().unwrap_or("its grant has ended").to_string(),
                            at: x
                                .ended_at()
                                .map(|t| {
                                    format!(
                                        " at {}",
                                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                                    )
                                })
                                .unwrap_or_default(),
                        });
                    }
                    if x.status() == Status::Pending && grant.request.status() != Status::Active {
                        return Err(grant.request.not_extendable());
                    }
                    let mut ext_entries = apply_vote(ext)?;
                    let mut grant_entries = Vec::new();
                    if ext.request.status() == Status::Approved {
                        let (g, x) = grant.request.apply_extension(&mut ext.request, now)?;
                        grant_entries.push(g.into());
                        ext_entries.push(x.into());
                    }
                    Ok((ext_entries, grant_entries))
                })
                .await?;
            (ext, recs)
        }
        RequestKind::Access => state.store.update(&id, apply_vote).await?,
    };
    state.published(&recs);
    Ok(Json(view(&state, &stored, Some(&viewer))))
}

/// Approves (one vote); `duration` may shorten the grant, never lengthen it.
#[utoipa::path(post, path = "/v1/requests/{id}/approve", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), request_body = DecisionBody,
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`, `grant_ended`, `extension_withdrawn`, `nothing_to_review`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, `text_too_long`, ...)", body = Problem, content_type = "application/problem+json"),))]
pub(super) async fn approve(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    vote(state, caller.principal, id, Decision::Approve, b).await
}

/// Denies; one deny ends the request.
#[utoipa::path(post, path = "/v1/requests/{id}/deny", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), request_body = DecisionBody,
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`, `grant_ended`, `extension_withdrawn`, `nothing_to_review`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, `text_too_long`, ...)", body = Problem, content_type = "application/problem+json"),))]
pub(super) async fn deny(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    vote(state, caller.principal, id, Decision::Deny, b).await
}

/// The requester withdraws a pending or approved request.
#[utoipa::path(post, path = "/v1/requests/{id}/cancel", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), 
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`, `grant_ended`, `extension_withdrawn`, `nothing_to_review`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, `text_too_long`, ...)", body = Problem, content_type = "application/problem+json"),))]
pub(super) async fn cancel(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let p = caller.principal;
    let viewer = p.clone(); // the view is made for the caller
    load_visible(&state, &id, &p).await?;
    let (s, recs) = state
        .store
        .update(&id, move |s| {
            let t = s.request.cancel(&p, Utc::now())?;
            Ok(end_grant(s, t))
        })
        .await?;
    state.published(&recs);
    Ok(Json(view(&state, &s, Some(&viewer))))
}

/// Asks for more time on an active grant: a new extension request (`201`).
#[utoipa::path(post, path = "/v1/requests/{id}/extend", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), request_body = ExtendBody,
    responses((status = 201, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`not_an_active_grant`: not active yet or never granted; `grant_ended`: the grant has ended; `duplicate_pending`: the grant already has a pending extension)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `not_a_grant`: the id is an extension's, `invalid_text`, `text_too_long`, ...)", body = Problem, content_type = "application/problem+json"),))]
pub(super) async fn extend(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<ExtendBody>,
) -> Result<Response, ApiError> {
    let p = crate::rights::current(&state, &caller.principal).await?;
    let grant = load_visible(&state, &id, &p).await?;
    let secs = parse_duration(&b.duration)?;
    let (r, t) = AccessRequest::create_extension(
        uuid::Uuid::new_v4().to_string(),
        &grant.request,
        Some(secs),
        &b.justification,
        &p,
        &state.policy(),
        Utc::now(),
    )?;
    let recs = if r.status() == Status::Approved {
        // Auto-approved: the extension and the move of the grant's end in
        // one transaction, so a crash cannot leave an approved extension
        // that nothing applies.
        let now = Utc::now();
        let (_, _, recs) = state
            .store
            .insert_then_update(&r, t, &id, move |ext, g| {
                let (gt, xt) = g.request.apply_extension(&mut ext.request, now)?;
                Ok((vec![xt.into()], vec![gt.into()]))
            })
            .await?;
        recs
    } else {
        state.store.insert(&r, t).await?
    };
    state.published(&recs);
    let stored = state.store.get(r.id()).await?.ok_or_else(not_visible)?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(view(&state, &stored, Some(&p))),
    )
        .into_response())
}

/// An approver reviews a break-glass activation after the fact.
#[utoipa::path(post, path = "/v1/requests/{id}/review", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (a grant's id is its request's id)")), request_body = DecisionBody,
    responses((status = 200, description = "The request after the action", body = RequestView), (status = 403, description = "The caller may not do this (`not_an_approver`, `self_approval`, `not_requester`)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such request the caller may see (`not_found`)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The request's state does not allow it (`illegal_transition`, `already_voted`, `lapsed`, `not_an_active_grant`, `grant_ended`, `extension_withdrawn`, `nothing_to_review`)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid input (`invalid_duration`, `cannot_lengthen`, `comment_required`, `invalid_text`, `text_too_long`, ...)", body = Problem, content_type = "application/problem+json"),))]
pub(super) async fn review(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    let p = crate::rights::current(&state, &caller.principal).await?;
    let viewer = p.clone(); // the view is made for the caller
    let current = load_visible(&state, &id, &p).await?;
    let policy = state.policy();
    let e = policy
        .entitlement(current.request.entitlement_id())
        .ok_or_else(|| DomainError::NotAnApprover(current.request.entitlement_id().to_string()))?
        .clone();
    let (s, recs) = state
        .store
        .update(&id, move |s| {
            Ok(vec![s
                .request
                .review(&e, &p, b.comment.clone(), Utc::now())?
                .into()])
        })
        .await?;
    state.published(&recs);
    Ok(Json(view(&state, &s, Some(&viewer))))
}
