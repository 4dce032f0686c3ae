use super::*;
use crate::Policy;

const POLICY: &str = r#"
[[entitlement]]
id = "db"
realm_role = "prod-db-admin"
max_duration = "1h"
default_duration = "15m"
approver_roles = ["db-approver"]
pending_ttl = "30m"
justification_min = 5
justification_max = 50

[[entitlement]]
id = "two"
group = "incident"
max_duration = "2h"
approvals_required = 2
approver_roles = ["ops"]
ticket_pattern = "INC-[0-9]+"
break_glass = true

[[entitlement]]
id = "auto"
client_role = { client = "app", role = "admin" }
max_duration = "1h"
approver_roles = ["ops"]
[[entitlement.auto_approve]]
requester_role = "oncall"
"#;

fn policy() -> Policy {
    Policy::from_toml(POLICY).unwrap()
}

fn t0() -> DateTime<Utc> {
    "2026-11-30T10:00:00Z".parse().unwrap()
}

fn user(id: &str, roles: &[&str]) -> Principal {
    let mut p = Principal::new(id, id);
    p.roles = roles.iter().map(|r| r.to_string()).collect();
    p
}

fn req(entitlement: &str, secs: Option<i64>) -> NewRequest {
    NewRequest {
        entitlement: entitlement.into(),
        duration_secs: secs,
        justification: "fix the replica lag".into(),
        ..NewRequest::default()
    }
}

fn create(input: &NewRequest, who: &Principal) -> Result<AccessRequest, DomainError> {
    AccessRequest::create("r1".into(), input, who, &policy(), t0()).map(|(r, _)| r)
}

fn approved_db() -> AccessRequest {
    let p = policy();
    let mut r = create(&req("db", Some(600)), &user("alice", &[])).unwrap();
    r.vote(
        p.entitlement("db").unwrap(),
        &user("bob", &["db-approver"]),
        Decision::Approve,
        None,
        None,
        t0(),
    )
    .unwrap()
    .unwrap();
    r
}

#[test]
fn create_uses_default_duration_and_ttl() {
    let (r, t) = AccessRequest::create(
        "r1".into(),
        &req("db", None),
        &user("alice", &[]),
        &policy(),
        t0(),
    )
    .unwrap();
    assert_eq!(r.status, Status::Pending);
    assert_eq!(r.duration_secs, 900);
    assert_eq!(r.pending_until, t0() + Duration::minutes(30));
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].action, Action::Create);
    assert_eq!(t[0].actor, "alice");
}

#[test]
fn unknown_entitlement_is_refused() {
    let e = create(&req("root", None), &user("alice", &[])).unwrap_err();
    assert_eq!(e, DomainError::UnknownEntitlement("root".into()));
    assert_eq!(e.code(), "unknown_entitlement");
}

#[test]
fn duration_over_max_names_the_max() {
    let e = create(&req("db", Some(7200)), &user("alice", &[])).unwrap_err();
    assert_eq!(e.code(), "duration_exceeds_max");
    assert!(e.to_string().contains("maximum of 1h"), "{e}");
    assert!(create(&req("db", Some(3600)), &user("alice", &[])).is_ok());
    assert_eq!(
        create(&req("db", Some(0)), &user("alice", &[]))
            .unwrap_err()
            .code(),
        "invalid_duration"
    );
}

#[test]
fn justification_bounds() {
    let mut r = req("db", None);
    r.justification = "  abc  ".into();
    assert_eq!(
        create(&r, &user("a", &[])).unwrap_err(),
        DomainError::JustificationTooShort { min: 5 }
    );
    r.justification = "x".repeat(51);
    assert_eq!(
        create(&r, &user("a", &[])).unwrap_err(),
        DomainError::JustificationTooLong { max: 50 }
    );
}

#[test]
fn ticket_pattern_is_enforced() {
    let mut r = req("two", None);
    assert_eq!(
        create(&r, &user("a", &[])).unwrap_err().code(),
        "ticket_required"
    );
    r.ticket = Some("JIRA-1".into());
    assert_eq!(
        create(&r, &user("a", &[])).unwrap_err().code(),
        "ticket_invalid"
    );
    r.ticket = Some("INC-7".into());
    assert_eq!(
        create(&r, &user("a", &[])).unwrap().ticket.as_deref(),
        Some("INC-7")
    );
}

#[test]
fn start_time_rules() {
    let mut r = req("db", None);
    r.start_at = Some(t0() - Duration::minutes(5));
    let e = create(&r, &user("a", &[])).unwrap_err();
    assert_eq!(e.code(), "start_in_past");
    // Says both times, and what to do instead.
    let text = e.to_string();
    assert!(text.contains("in the past"), "{text}");
    assert!(text.contains("jitd's time is"), "{text}");
    assert!(text.contains("leave the start out"), "{text}");
    r.start_at = Some(t0() + Duration::days(8));
    assert_eq!(
        create(&r, &user("a", &[])).unwrap_err().code(),
        "start_too_far"
    );
    r.start_at = Some(t0() + Duration::hours(1));
    let c = create(&r, &user("a", &[])).unwrap();
    assert_eq!(c.start_at, r.start_at);
}

#[test]
fn nobody_approves_their_own_request() {
    let p = policy();
    let alice = user("alice", &["db-approver"]);
    let mut r = create(&req("db", None), &alice).unwrap();
    let e = r
        .vote(
            p.entitlement("db").unwrap(),
            &alice,
            Decision::Approve,
            None,
            None,
            t0(),
        )
        .unwrap_err();
    assert_eq!(e, DomainError::SelfApproval);
    assert_eq!(r.status, Status::Pending);
    assert!(r.votes.is_empty());
}

#[test]
fn only_policy_approvers_may_vote() {
    let p = policy();
    let mut r = create(&req("db", None), &user("alice", &[])).unwrap();
    let carol = user("carol", &["ops"]);
    let e = r
        .vote(
            p.entitlement("db").unwrap(),
            &carol,
            Decision::Approve,
            None,
            None,
            t0(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "not_an_approver");
}

#[test]
fn single_approval_approves() {
    let r = approved_db();
    assert_eq!(r.status, Status::Approved);
    assert_eq!(r.decided_at, Some(t0()));
}

#[test]
fn n_approvals_and_one_vote_each() {
    let p = policy();
    let e = p.entitlement("two").unwrap();
    let mut input = req("two", None);
    input.ticket = Some("INC-1".into());
    let mut r = create(&input, &user("alice", &[])).unwrap();
    let bob = user("bob", &["ops"]);
    assert_eq!(
        r.vote(e, &bob, Decision::Approve, None, None, t0())
            .unwrap(),
        None
    );
    assert_eq!(r.status, Status::Pending);
    assert_eq!(
        r.vote(e, &bob, Decision::Approve, None, None, t0())
            .unwrap_err(),
        DomainError::AlreadyVoted
    );
    let t = r
        .vote(
            e,
            &user("carol", &["ops"]),
            Decision::Approve,
            None,
            None,
            t0(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(t.to, Status::Approved);
    assert_eq!(r.votes.len(), 2);
}

#[test]
fn one_deny_ends_it_and_needs_a_comment() {
    let p = policy();
    let e = p.entitlement("two").unwrap();
    let mut input = req("two", None);
    input.ticket = Some("INC-1".into());
    let mut r = create(&input, &user("alice", &[])).unwrap();
    r.vote(
        e,
        &user("bob", &["ops"]),
        Decision::Approve,
        None,
        None,
        t0(),
    )
    .unwrap();
    let carol = user("carol", &["ops"]);
    assert_eq!(
        r.vote(e, &carol, Decision::Deny, None, None, t0())
            .unwrap_err()
            .code(),
        "comment_required"
    );
    let t = r
        .vote(
            e,
            &carol,
            Decision::Deny,
            Some("not now".into()),
            None,
            t0(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(t.to, Status::Denied);
    let e2 = r
        .vote(
            e,
            &user("dan", &["ops"]),
            Decision::Approve,
            None,
            None,
            t0(),
        )
        .unwrap_err();
    assert_eq!(e2.code(), "illegal_transition");
}

#[test]
fn approver_may_shorten_not_lengthen() {
    let p = policy();
    let e = p.entitlement("db").unwrap();
    let mut r = create(&req("db", Some(600)), &user("alice", &[])).unwrap();
    let bob = user("bob", &["db-approver"]);
    assert_eq!(
        r.vote(e, &bob, Decision::Approve, None, Some(601), t0())
            .unwrap_err()
            .code(),
        "cannot_lengthen"
    );
    r.vote(e, &bob, Decision::Approve, None, Some(300), t0())
        .unwrap();
    assert_eq!(r.duration_secs, 300);
    assert_eq!(r.requested_secs, 600);
}

#[test]
fn pending_ttl_lapses() {
    let p = policy();
    let mut r = create(&req("db", None), &user("alice", &[])).unwrap();
    let later = t0() + Duration::minutes(31);
    assert_eq!(
        r.vote(
            p.entitlement("db").unwrap(),
            &user("bob", &["db-approver"]),
            Decision::Approve,
            None,
            None,
            later
        )
        .unwrap_err(),
        DomainError::Lapsed
    );
    assert!(r.lapse(t0() + Duration::minutes(29)).is_err());
    let t = r.lapse(later).unwrap();
    assert_eq!((t.to, t.actor.as_str()), (Status::Lapsed, SYSTEM_ACTOR));
}

#[test]
fn duration_counts_from_activation() {
    let mut r = approved_db();
    let act = t0() + Duration::seconds(42);
    r.activate(act).unwrap();
    assert_eq!(r.activated_at, Some(act));
    assert_eq!(r.expires_at, Some(act + Duration::seconds(600)));
    assert_eq!(r.remaining_secs(act + Duration::seconds(100)), Some(500));
    assert!(r.expire(act + Duration::seconds(599)).is_err());
    let t = r.expire(act + Duration::seconds(600)).unwrap();
    assert_eq!(t.to, Status::Expired);
    assert_eq!(r.remaining_secs(act + Duration::seconds(601)), None);
}

#[test]
fn scheduled_start_waits() {
    let p = policy();
    let mut input = req("db", Some(600));
    input.start_at = Some(t0() + Duration::hours(1));
    let mut r = create(&input, &user("alice", &[])).unwrap();
    r.vote(
        p.entitlement("db").unwrap(),
        &user("bob", &["db-approver"]),
        Decision::Approve,
        None,
        None,
        t0(),
    )
    .unwrap();
    assert!(!r.is_due_for_activation(t0()));
    assert!(r.activate(t0()).is_err());
    assert!(r.is_due_for_activation(t0() + Duration::hours(1)));
    r.activate(t0() + Duration::hours(1)).unwrap();
    assert_eq!(
        r.expires_at,
        Some(t0() + Duration::hours(1) + Duration::seconds(600))
    );
}

#[test]
fn drop_is_for_the_requester_only() {
    let mut r = approved_db();
    r.activate(t0()).unwrap();
    assert_eq!(
        r.drop_grant(&user("bob", &[]), t0()).unwrap_err().code(),
        "not_requester"
    );
    let t = r.drop_grant(&user("alice", &[]), t0()).unwrap();
    assert_eq!((t.action, t.to), (Action::Drop, Status::Revoked));
}

#[test]
fn revoke_needs_an_approver_and_a_reason() {
    let p = policy();
    let e = p.entitlement("db").unwrap();
    let mut r = approved_db();
    r.activate(t0()).unwrap();
    assert_eq!(
        r.revoke(e, &user("carol", &["ops"]), Some("x".into()), t0())
            .unwrap_err()
            .code(),
        "not_an_approver"
    );
    assert_eq!(
        r.revoke(e, &user("bob", &["db-approver"]), None, t0())
            .unwrap_err()
            .code(),
        "comment_required"
    );
    let t = r
        .revoke(
            e,
            &user("bob", &["db-approver"]),
            Some("incident over".into()),
            t0(),
        )
        .unwrap();
    assert_eq!(t.to, Status::Revoked);
    assert_eq!(r.end_reason.as_deref(), Some("incident over"));
}

#[test]
fn cancel_rules() {
    let mut r = approved_db();
    assert_eq!(
        r.cancel(&user("bob", &[]), t0()).unwrap_err().code(),
        "not_requester"
    );
    r.cancel(&user("alice", &[]), t0()).unwrap();
    assert_eq!(r.status, Status::Cancelled);
    assert_eq!(
        r.cancel(&user("alice", &[]), t0()).unwrap_err().code(),
        "illegal_transition"
    );
}

#[test]
fn illegal_transitions_are_errors() {
    let mut r = create(&req("db", None), &user("alice", &[])).unwrap();
    assert!(matches!(
        r.activate(t0()),
        Err(DomainError::IllegalTransition { .. })
    ));
    assert!(matches!(
        r.expire(t0()),
        Err(DomainError::IllegalTransition { .. })
    ));
    assert!(matches!(
        r.drop_grant(&user("alice", &[]), t0()),
        Err(DomainError::IllegalTransition { .. })
    ));
    assert_eq!(r.status, Status::Pending);
    for s in Status::ALL {
        assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
    }
}

#[test]
fn extension_moves_expiry_without_gap() {
    let p = policy();
    let e = p.entitlement("db").unwrap();
    let mut g = approved_db();
    g.activate(t0()).unwrap();
    let alice = user("alice", &[]);
    assert_eq!(
        AccessRequest::create_extension(
            "x".into(),
            &g,
            Some(600),
            "need more time",
            &user("bob", &[]),
            &p,
            t0()
        )
        .unwrap_err()
        .code(),
        "not_requester"
    );
    assert_eq!(
        AccessRequest::create_extension(
            "x".into(),
            &g,
            Some(7200),
            "need more time",
            &alice,
            &p,
            t0()
        )
        .unwrap_err()
        .code(),
        "duration_exceeds_max"
    );
    let (mut x, _) = AccessRequest::create_extension(
        "x".into(),
        &g,
        Some(300),
        "need more time",
        &alice,
        &p,
        t0(),
    )
    .unwrap();
    assert!(g.apply_extension(&mut x, t0()).is_err(), "not approved yet");
    x.vote(
        e,
        &user("bob", &["db-approver"]),
        Decision::Approve,
        None,
        None,
        t0(),
    )
    .unwrap();
    assert!(
        !x.is_due_for_activation(t0()),
        "an extension is never a grant of its own"
    );
    let (t, xt) = g.apply_extension(&mut x, t0()).unwrap();
    assert_eq!(t.action, Action::Extend);
    assert_eq!(g.expires_at, Some(t0() + Duration::seconds(900)));
    assert_eq!(g.status, Status::Active);
    // The extension is over, as part of its grant; the grant remembers it.
    assert_eq!(
        (xt.action, xt.from, xt.to),
        (Action::Apply, Some(Status::Approved), Status::Applied)
    );
    assert_eq!(x.status, Status::Applied);
    assert!(x.status.is_terminal());
    assert_eq!(g.total_secs(), 600 + 300);
    assert_eq!(g.extensions.len(), 1);
    let a = &g.extensions[0];
    assert_eq!(
        (a.id.as_str(), a.requested_by.as_str(), a.added_secs),
        ("x", "alice", 300)
    );
    assert_eq!(a.approved_by, vec!["bob".to_string()]);
    assert_eq!(a.expires_at, t0() + Duration::seconds(900));
    assert!(
        g.apply_extension(&mut x, t0()).is_err(),
        "applied only once"
    );
    assert_eq!(g.total_secs(), 900);
}

#[test]
fn break_glass_self_activates_and_needs_review() {
    let p = policy();
    let e = p.entitlement("two").unwrap();
    let mut input = req("two", None);
    input.ticket = Some("INC-9".into());
    input.break_glass = true;
    let alice = user("alice", &[]);
    let (mut r, t) = AccessRequest::create("r".into(), &input, &alice, &p, t0()).unwrap();
    assert_eq!(r.status, Status::Approved);
    assert!(r.urgent && r.review_required);
    assert_eq!(t.len(), 2);
    assert_eq!(
        r.review(e, &alice, Some("ok".into()), t0()).unwrap_err(),
        DomainError::SelfApproval
    );
    r.review(e, &user("bob", &["ops"]), Some("justified".into()), t0())
        .unwrap();
    assert_eq!(r.reviewed_by.as_deref(), Some("bob"));
    assert!(r
        .review(e, &user("carol", &["ops"]), Some("again".into()), t0())
        .is_err());
    let mut not_allowed = req("db", None);
    not_allowed.break_glass = true;
    assert_eq!(
        create(&not_allowed, &alice).unwrap_err().code(),
        "break_glass_not_allowed"
    );
}

#[test]
fn auto_approval_is_recorded() {
    let (r, t) = AccessRequest::create(
        "r".into(),
        &req("auto", None),
        &user("alice", &["oncall"]),
        &policy(),
        t0(),
    )
    .unwrap();
    assert_eq!(r.status, Status::Approved);
    assert_eq!(t[1].actor, SYSTEM_ACTOR);
    assert!(t[1].reason.as_deref().unwrap().contains("auto-approved"));
    let (r, _) = AccessRequest::create(
        "r".into(),
        &req("auto", None),
        &user("alice", &[]),
        &policy(),
        t0(),
    )
    .unwrap();
    assert_eq!(r.status, Status::Pending);
}

#[test]
fn visibility() {
    let p = policy();
    let r = create(&req("db", None), &user("alice", &[])).unwrap();
    assert!(r.visible_to(&user("alice", &[]), &p));
    assert!(r.visible_to(&user("bob", &["db-approver"]), &p));
    assert!(!r.visible_to(&user("carol", &["ops"]), &p));
    assert!(r.visible_to(&user("dave", &["jit-auditor"]), &p));
}

#[test]
fn control_and_invisible_characters_are_refused() {
    let mut r = req("db", None);
    r.justification = "line1\nAPPROVED \u{1b}[31m".into();
    assert_eq!(
        create(&r, &user("a", &[])).unwrap_err().code(),
        "invalid_text"
    );
    r.justification = "\u{200b}".repeat(11);
    assert_eq!(
        create(&r, &user("a", &[])).unwrap_err().code(),
        "invalid_text"
    );
    r.justification = "\0".repeat(10);
    assert_eq!(
        create(&r, &user("a", &[])).unwrap_err().code(),
        "invalid_text"
    );
    let p = policy();
    let mut q = create(&req("db", None), &user("alice", &[])).unwrap();
    let e = q
        .vote(
            p.entitlement("db").unwrap(),
            &user("bob", &["db-approver"]),
            Decision::Deny,
            Some("no\u{7}".into()),
            None,
            t0(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "invalid_text");
    assert_eq!(q.status, Status::Pending);
}

#[test]
fn an_applied_extension_cannot_be_cancelled_or_revoked() {
    let p = policy();
    let e = p.entitlement("db").unwrap();
    let mut g = approved_db();
    g.activate(t0()).unwrap();
    let alice = user("alice", &[]);
    let (mut x, _) = AccessRequest::create_extension(
        "x".into(),
        &g,
        Some(300),
        "need more time",
        &alice,
        &p,
        t0(),
    )
    .unwrap();
    x.vote(
        e,
        &user("bob", &["db-approver"]),
        Decision::Approve,
        None,
        None,
        t0(),
    )
    .unwrap();
    g.apply_extension(&mut x, t0()).unwrap();
    assert_eq!(
        x.cancel(&alice, t0()).unwrap_err().code(),
        "illegal_transition"
    );
    assert_eq!(
        x.revoke(e, &user("bob", &["db-approver"]), Some("x".into()), t0())
            .unwrap_err()
            .code(),
        "illegal_transition"
    );
    assert_eq!(
        x.withdraw("gone", t0()).unwrap_err().code(),
        "illegal_transition"
    );
}

#[test]
fn withdrawal_when_the_entitlement_leaves_the_policy() {
    let mut pending = create(&req("db", None), &user("alice", &[])).unwrap();
    let t = pending.withdraw("removed from policy", t0()).unwrap();
    assert_eq!(
        (t.action, t.to, t.actor.as_str()),
        (Action::Cancel, Status::Cancelled, SYSTEM_ACTOR)
    );
    let mut active = approved_db();
    active.activate(t0()).unwrap();
    let t = active.withdraw("removed from policy", t0()).unwrap();
    assert_eq!((t.action, t.to), (Action::Revoke, Status::Revoked));
    assert!(active.withdraw("again", t0()).is_err());
}

#[test]
fn late_expiry_is_noted() {
    let mut r = approved_db();
    r.activate(t0()).unwrap();
    let t = r.expire(t0() + Duration::seconds(600 + 75)).unwrap();
    assert_eq!(
        t.reason.as_deref(),
        Some("processed 1m15s after expires_at")
    );
}

#[test]
fn revoke_late_counts_from_when_access_should_have_ended() {
    use crate::api::GrantState;
    use crate::lateness::{access_end, REVOKE_LATE_GRACE_SECS};
    let revoke_late = |r: &AccessRequest, pending: bool, now: DateTime<Utc>| {
        let g = GrantState {
            removal_pending: pending,
            ..GrantState::default()
        };
        crate::lateness::revoke_late(r, &g, now)
    };
    let grace = Duration::seconds(REVOKE_LATE_GRACE_SECS);
    let mut r = approved_db();
    r.activate(t0()).unwrap();
    let end = t0() + Duration::seconds(600);
    assert_eq!(access_end(&r), Some(end));
    // Active: late only once past expires_at plus the grace.
    assert!(!revoke_late(&r, false, end));
    assert!(!revoke_late(&r, false, end + grace));
    assert!(revoke_late(&r, false, end + grace + Duration::seconds(1)));
    // Expired late (jitd was down): still counted from expires_at, not from
    // when jitd got to it; once removed, never late.
    let processed = end + Duration::seconds(60);
    r.expire(processed).unwrap();
    assert_eq!(access_end(&r), Some(end));
    assert!(revoke_late(&r, true, processed));
    assert!(!revoke_late(&r, false, processed));
    // Dropped early: counted from the drop.
    let mut d = approved_db();
    d.activate(t0()).unwrap();
    let dropped = t0() + Duration::seconds(30);
    d.drop_grant(&user("alice", &[]), dropped).unwrap();
    assert_eq!(access_end(&d), Some(dropped));
    assert!(!revoke_late(&d, true, dropped + grace));
    assert!(revoke_late(
        &d,
        true,
        dropped + grace + Duration::seconds(1)
    ));
    // A removal that failed for good is late at once, whatever the grace:
    // nothing will remove the role without an administrator.
    let failed = GrantState {
        removal_failed: true,
        ..GrantState::default()
    };
    assert!(crate::lateness::revoke_late(&d, &failed, dropped));
    assert!(crate::lateness::revoke_late(&r, &failed, processed));
    // Never granted: nothing to be late about.
    assert!(!revoke_late(
        &approved_db(),
        false,
        end + Duration::hours(1)
    ));
}

#[test]
fn keycloak_refusal_ends_an_approved_request_as_failed() {
    let mut r = approved_db();
    let t = r.fail("realm role 'x' does not exist", t0()).unwrap();
    assert_eq!((t.from, t.to), (Some(Status::Approved), Status::Failed));
    assert_eq!(t.action.event(), crate::api::EventKind::GrantFailed);
    assert!(r.status.is_terminal());
    assert_eq!(
        r.end_reason.as_deref(),
        Some("realm role 'x' does not exist")
    );
    // Only an approved request can fail; a failed one cannot be activated.
    assert!(r.fail("again", t0()).is_err());
    assert!(r.activate(t0()).is_err());
    let mut active = approved_db();
    active.activate(t0()).unwrap();
    assert!(active.fail("late", t0()).is_err());
}

/// The wire form (the API's JSON, the store's body) of a grant with a vote,
/// a ticket and an applied extension, and of a pending request of a
/// service account, pinned byte for byte; and read back through
/// `restore` unchanged.
#[test]
fn wire_form_is_pinned_and_reads_back() {
    let p = policy();
    let mut g = approved_db();
    g.activate(t0()).unwrap();
    let alice = user("alice", &[]);
    let (mut x, _) =
        AccessRequest::create_extension("x".into(), &g, Some(300), "need more", &alice, &p, t0())
            .unwrap();
    let bob = user("bob", &["db-approver"]);
    let e = p.entitlement("db").unwrap();
    x.vote(e, &bob, Decision::Approve, Some("ok".into()), None, t0())
        .unwrap();
    g.apply_extension(&mut x, t0()).unwrap();
    let mut bot = user("u-bot", &[]);
    bot.client_id = Some("pipeline".into());
    let mut input = req("two", None);
    input.ticket = Some("INC-1".into());
    let pending = create(&input, &bot).unwrap();
    let grant_json = r#"{"id":"r1","kind":{"type":"access"},"entitlement_id":"db","target":{"kind":"realm_role","role":"prod-db-admin"},"requester_id":"alice","requester_username":"alice","justification":"fix the replica lag","ticket":null,"urgent":false,"break_glass":false,"requested_secs":600,"duration_secs":600,"approvals_required":1,"votes":[{"approver_id":"bob","approver_username":"bob","decision":"approve","comment":null,"duration_secs":null,"at":"2026-11-30T10:00:00Z"}],"status":"active","created_at":"2026-11-30T10:00:00Z","pending_until":"2026-11-30T10:30:00Z","start_at":null,"decided_at":"2026-11-30T10:00:00Z","activated_at":"2026-11-30T10:00:00Z","expires_at":"2026-11-30T10:15:00Z","ended_at":null,"ended_by":null,"end_reason":null,"auto_approved":null,"review_required":false,"reviewed_by":null,"reviewed_at":null,"extensions":[{"id":"x","requested_by":"alice","approved_by":["bob"],"added_secs":300,"justification":"need more","applied_at":"2026-11-30T10:00:00Z","expires_at":"2026-11-30T10:15:00Z"}]}"#;
    let ext_json = r#"{"id":"x","kind":{"type":"extension","grant_id":"r1"},"entitlement_id":"db","target":{"kind":"realm_role","role":"prod-db-admin"},"requester_id":"alice","requester_username":"alice","justification":"need more","ticket":null,"urgent":false,"break_glass":false,"requested_secs":300,"duration_secs":300,"approvals_required":1,"votes":[{"approver_id":"bob","approver_username":"bob","decision":"approve","comment":"ok","duration_secs":null,"at":"2026-11-30T10:00:00Z"}],"status":"applied","created_at":"2026-11-30T10:00:00Z","pending_until":"2026-11-30T10:30:00Z","start_at":null,"decided_at":"2026-11-30T10:00:00Z","activated_at":null,"expires_at":null,"ended_at":"2026-11-30T10:00:00Z","ended_by":null,"end_reason":null,"auto_approved":null,"review_required":false,"reviewed_by":null,"reviewed_at":null,"extensions":[]}"#;
    let pending_json = r#"{"id":"r1","kind":{"type":"access"},"entitlement_id":"two","target":{"kind":"group","path":"/incident"},"requester_id":"u-bot","requester_username":"u-bot","requester_client":"pipeline","justification":"fix the replica lag","ticket":"INC-1","urgent":false,"break_glass":false,"requested_secs":7200,"duration_secs":7200,"approvals_required":2,"votes":[],"status":"pending","created_at":"2026-11-30T10:00:00Z","pending_until":"2026-12-01T10:00:00Z","start_at":null,"decided_at":null,"activated_at":null,"expires_at":null,"ended_at":null,"ended_by":null,"end_reason":null,"auto_approved":null,"review_required":false,"reviewed_by":null,"reviewed_at":null,"extensions":[]}"#;
    for (r, want) in [(&g, grant_json), (&x, ext_json), (&pending, pending_json)] {
        assert_eq!(serde_json::to_string(r).unwrap(), want);
        let back: AccessRequest = serde_json::from_str(want).unwrap();
        assert_eq!(&back, r);
    }
}

#[test]
fn free_text_fields_are_limited_in_characters_not_bytes() {
    let p = policy();
    let e = p.entitlement("db").unwrap();
    let bob = user("bob", &["db-approver"]);
    // 500 three-byte characters (1500 bytes) pass; 501 do not.
    let at_limit = "é".repeat(MAX_FREE_TEXT_CHARS);
    assert_eq!(check_free_text("comment", &at_limit).unwrap(), at_limit);
    let over = "x".repeat(MAX_FREE_TEXT_CHARS + 1);
    let err = check_free_text("comment", &over).unwrap_err();
    assert_eq!(err.code(), "text_too_long");
    assert!(err.to_string().contains("comment") && err.to_string().contains("500"));

    let mut q = create(&req("db", None), &user("alice", &[])).unwrap();
    for d in [Decision::Deny, Decision::Approve] {
        let e2 = q
            .vote(e, &bob, d, Some("n".repeat(120_000)), None, t0())
            .unwrap_err();
        assert_eq!(e2.code(), "text_too_long");
    }
    assert_eq!(q.status, Status::Pending);
    assert!(q.votes.is_empty());
    q.vote(e, &bob, Decision::Deny, Some(at_limit.clone()), None, t0())
        .unwrap();

    let mut g = approved_db();
    g.activate(t0()).unwrap();
    let e3 = g.revoke(e, &bob, Some(over.clone()), t0()).unwrap_err();
    assert_eq!(e3.code(), "text_too_long");
    assert_eq!(g.status, Status::Active);

    let mut r = req("two", None);
    r.ticket = Some(format!("INC-{}", "1".repeat(MAX_FREE_TEXT_CHARS)));
    let e4 = create(&r, &user("a", &[])).unwrap_err();
    assert_eq!(e4.code(), "text_too_long");
}

/// Extensions add up to the entitlement's `max_total_duration` (default 4
/// × `max_duration`: 4h for `db`), never beyond: the one that would go
/// past it is refused, saying how much can still be added.
#[test]
fn extensions_stop_at_the_total_limit() {
    let p = policy();
    let e = p.entitlement("db").unwrap();
    assert_eq!(e.max_total_duration, 4 * 3600);
    let mut g = approved_db();
    g.activate(t0()).unwrap();
    let alice = user("alice", &[]);
    let extend = |g: &mut AccessRequest, secs: i64| -> Result<(), DomainError> {
        let (mut x, _) = AccessRequest::create_extension(
            format!("x{}", g.extensions.len()),
            g,
            Some(secs),
            "need more time",
            &alice,
            &p,
            t0(),
        )?;
        x.vote(
            e,
            &user("bob", &["db-approver"]),
            Decision::Approve,
            None,
            None,
            t0(),
        )
        .unwrap();
        g.apply_extension(&mut x, t0()).unwrap();
        Ok(())
    };
    for _ in 0..3 {
        extend(&mut g, 3600).unwrap();
    }
    assert_eq!(g.total_secs(), 600 + 3 * 3600);
    let err = extend(&mut g, 3600).unwrap_err();
    assert_eq!(err.code(), "total_duration_exceeds_max");
    let text = err.to_string();
    assert!(
        text.contains("4h") && text.contains("room left: 50m"),
        "{text}"
    );
    assert_eq!(g.total_secs(), 600 + 3 * 3600, "nothing added");
    extend(&mut g, 3000).unwrap();
    assert_eq!(g.total_secs(), 4 * 3600);
    let err = extend(&mut g, 60).unwrap_err();
    assert!(err.to_string().contains("room left: none"), "{err}");
}
