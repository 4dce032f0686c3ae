//! The scheduler against a fault-injecting Keycloak, in-process: every
//! kind of Keycloak answer reaches a defined end. Waits are bounded and on
//! conditions; time is judged by jitd's own timestamps only.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use jit_core::api::EventKind;
use jit_core::{EntitlementKind, Principal, Status};
use jit_keycloak::TargetStatus;
use jit_server::scheduler::end_grant;
use support::*;

const POLICY: &str = r#"
auditor_roles = ["auditor"]

[[entitlement]]
id = "open"
realm_role = "open-role"
max_duration = "1h"
approver_roles = ["approver"]
[[entitlement.auto_approve]]
requester_role = "auto"

[[entitlement]]
id = "db"
realm_role = "db-admin"
max_duration = "1h"
approver_roles = ["approver"]
requester_roles = ["requester"]
end_sessions_on_revoke = true
[[entitlement.auto_approve]]
requester_role = "auto"
"#;

const SECS: Duration = Duration::from_secs(10);

fn open_role() -> EntitlementKind {
    EntitlementKind::RealmRole {
        role: "open-role".into(),
    }
}

fn db_role() -> EntitlementKind {
    EntitlementKind::RealmRole {
        role: "db-admin".into(),
    }
}

fn kc_with_users(users: &[&str]) -> Arc<FakeKeycloak> {
    let kc = Arc::new(FakeKeycloak::default());
    for u in users {
        kc.add_user(u, &["requester"], &[]);
    }
    kc
}

fn has_event(j: &TestJitd, id: &str, event: EventKind, reason_part: &str) -> bool {
    j.events(id)
        .iter()
        .any(|(e, r)| *e == event && r.as_deref().unwrap_or("").contains(reason_part))
}

/// Nothing will pick the request up again: not in any due list, however
/// late it gets.
fn never_due_again(j: &TestJitd, id: &str) -> bool {
    let far = Utc::now() + chrono::Duration::days(365);
    let due = j.state().store.sync().due(far).unwrap();
    ![due.activate, due.remove, due.expire, due.lapse]
        .iter()
        .any(|v| v.iter().any(|x| x == id))
}

#[tokio::test]
async fn grants_keycloak_refuses_for_good_end_failed_with_the_reason() {
    let kc = kc_with_users(&["u-403", "u-400", "u-gone", "u-ok"]);
    let j = start(POLICY, kc.clone(), "").await;
    kc.fail(Some(Op::Assign), Some("u-403"), Fault::Forbidden, None);
    kc.fail(Some(Op::Assign), Some("u-400"), Fault::BadRequest, None);
    kc.delete_user("u-gone");
    let cases = [
        ("u-403", "does not let jitd's service account assign"),
        ("u-400", "400"),
        ("u-gone", "user no longer exists"),
    ];
    let ok = j.request("u-ok", "open", 600);
    let mut ids = Vec::new();
    for (user, _) in cases {
        ids.push(j.request(user, "open", 600));
    }
    for (id, (user, why)) in ids.iter().zip(cases) {
        let s = j
            .wait(id, "the grant to fail", SECS, |s| {
                s.request.status() == Status::Failed
            })
            .await;
        let reason = s
            .request
            .end_reason()
            .map(str::to_string)
            .unwrap_or_default();
        assert!(reason.contains(why), "{user}: {reason}");
        assert!(
            has_event(&j, id, EventKind::GrantFailed, why),
            "{user}: audited"
        );
        assert!(s.grant.granted_at.is_none() && !kc.has(user, &open_role()));
        assert!(never_due_again(&j, id), "{user}: no retries");
    }
    // The 403 taught jitd that the target cannot be assigned... by this
    // user's failure only; the healthy user was granted all the same.
    j.wait(&ok, "the healthy grant", SECS, |s| {
        s.request.status() == Status::Active
    })
    .await;
    j.stop().await;
}

#[tokio::test]
async fn a_missing_target_fails_the_grant_and_marks_the_entitlement_unavailable() {
    let kc = kc_with_users(&["alice"]);
    let j = start(POLICY, kc.clone(), "").await;
    kc.set_target(
        open_role(),
        TargetStatus::Missing("realm role 'open-role' does not exist in realm 'test'".into()),
    );
    let id = j.request("alice", "open", 600);
    let s = j
        .wait(&id, "the grant to fail", SECS, |s| {
            s.request.status() == Status::Failed
        })
        .await;
    assert!(s
        .request
        .end_reason()
        .unwrap()
        .contains("realm role 'open-role' does not exist"));
    assert!(never_due_again(&j, &id));
    let st = j.state().target_status("open", &open_role());
    assert!(matches!(st, Some(TargetStatus::Missing(_))), "{st:?}");
    j.stop().await;
}

#[tokio::test]
async fn transient_errors_are_retried_until_keycloak_answers() {
    let users = ["u-503", "u-500", "u-429", "u-refused"];
    let kc = kc_with_users(&users);
    let j = start(POLICY, kc.clone(), "").await;
    kc.fail(Some(Op::Assign), Some("u-503"), Fault::Server(503), Some(2));
    kc.fail(Some(Op::Assign), Some("u-500"), Fault::Server(500), Some(2));
    kc.fail(Some(Op::Assign), Some("u-429"), Fault::TooMany, Some(2));
    kc.fail(Some(Op::Assign), Some("u-refused"), Fault::Refused, Some(2));
    let ids: Vec<String> = users.iter().map(|u| j.request(u, "open", 600)).collect();
    for (id, user) in ids.iter().zip(users) {
        let s = j
            .wait(
                id,
                "the grant after retries",
                Duration::from_secs(20),
                |s| s.request.status() == Status::Active,
            )
            .await;
        assert!(kc.has(user, &open_role()), "{user}");
        assert!(s.grant.last_error.is_none(), "cleared once granted");
        let tries = kc
            .calls()
            .iter()
            .filter(|c| c.op == Op::Assign && c.user == user)
            .count();
        assert_eq!(tries, 3, "{user}: two failures, then success");
    }
    j.stop().await;
}

#[tokio::test]
async fn a_removal_whose_user_or_target_is_gone_is_complete_and_not_late() {
    let kc = kc_with_users(&["u-deleted", "u-role-deleted"]);
    let j = start(POLICY, kc.clone(), "").await;
    let a = j.request("u-deleted", "open", 3600);
    let b = j.request("u-role-deleted", "db", 3600);
    for id in [&a, &b] {
        j.wait(id, "active", SECS, |s| s.request.status() == Status::Active)
            .await;
    }
    kc.delete_user("u-deleted");
    kc.delete_target(&db_role());
    for id in [&a, &b] {
        j.state()
            .store
            .sync()
            .update(id, |s| {
                let t = s.request.withdraw("test: end it now", Utc::now())?;
                Ok(end_grant(s, t))
            })
            .unwrap();
    }
    j.state().wake.notify_one();
    for id in [&a, &b] {
        let s = j
            .wait(id, "the removal to complete", SECS, |s| {
                !s.grant.removal_pending
            })
            .await;
        assert!(!s.grant.removal_failed && s.grant.last_error.is_none());
        assert!(
            has_event(
                &j,
                id,
                EventKind::GrantRemoved,
                "no longer exists in Keycloak"
            ),
            "{:?}",
            j.events(id)
        );
        let view = jit_server::api::view(j.state(), &s, None);
        assert!(!view.revoke_late, "not late: nothing is left to remove");
        assert!(never_due_again(&j, id));
    }
    j.stop().await;
}

#[tokio::test]
async fn nothing_granted_means_nothing_to_remove() {
    let kc = kc_with_users(&["frank"]);
    let j = start(POLICY, kc.clone(), "").await;
    // Keycloak keeps failing the assignment: ownership is decided, nothing
    // is granted.
    kc.fail(Some(Op::Assign), Some("frank"), Fault::Server(500), None);
    let id = j.request("frank", "open", 600);
    j.wait(&id, "a failed attempt", SECS, |s| {
        s.grant.owns_assignment == Some(true) && s.grant.last_error.is_some()
    })
    .await;
    let frank = Principal::new("frank", "frank");
    j.state()
        .store
        .sync()
        .update(&id, |s| {
            let t = s.request.cancel(&frank, Utc::now())?;
            Ok(end_grant(s, t))
        })
        .unwrap();
    j.state().wake.notify_one();
    let s = j
        .wait(&id, "the removal check", SECS, |s| !s.grant.removal_pending)
        .await;
    assert_eq!(s.request.status(), Status::Cancelled);
    assert!(has_event(
        &j,
        &id,
        EventKind::GrantNothingToRemove,
        "never granted"
    ));
    assert_eq!(
        kc.count(Op::Unassign),
        0,
        "no removal of something never granted"
    );
    assert!(never_due_again(&j, &id));
    j.stop().await;
}

/// An attempt whose assignment reached Keycloak although jitd never saw
/// it succeed (its answer lost: a timeout after Keycloak applied it), then
/// the request ended: the role is removed, and since the audit trail has
/// no `grant.granted` for it, the removal says how the role got there.
#[tokio::test]
async fn a_role_an_unrecorded_attempt_assigned_is_removed_and_said_so() {
    let kc = kc_with_users(&["grace"]);
    let j = start(POLICY, kc.clone(), "").await;
    kc.fail(Some(Op::Assign), Some("grace"), Fault::Server(500), None);
    let id = j.request("grace", "open", 600);
    j.wait(&id, "a failed attempt", SECS, |s| {
        s.grant.owns_assignment == Some(true) && s.grant.last_error.is_some()
    })
    .await;
    // What Keycloak applied of an attempt whose answer jitd never got.
    kc.edit_user("grace", |u| {
        u.assigned.insert(open_role());
    });
    let grace = Principal::new("grace", "grace");
    j.state()
        .store
        .sync()
        .update(&id, |s| {
            let t = s.request.cancel(&grace, Utc::now())?;
            Ok(end_grant(s, t))
        })
        .unwrap();
    j.state().wake.notify_one();
    let s = j
        .wait(&id, "the removal", SECS, |s| s.grant.removed_at.is_some())
        .await;
    assert!(s.grant.granted_at.is_none(), "{s:?}");
    assert!(!kc.has("grace", &open_role()), "the role is gone");
    assert!(
        has_event(&j, &id, EventKind::GrantRemoved, "no grant was recorded"),
        "{:?}",
        j.events(&id)
    );
    assert!(!j
        .events(&id)
        .iter()
        .any(|(e, _)| *e == EventKind::GrantGranted));
    j.stop().await;
}

/// Keycloak refusing jitd's service-account login (a wrong secret) is
/// said as such on `/healthz`, is not asked again 10 times a second, and
/// work goes on by itself once the login works again.
#[tokio::test]
async fn a_refused_service_account_login_is_said_and_not_hammered() {
    let kc = kc_with_users(&["judy"]);
    let j = start(POLICY, kc.clone(), "").await;
    kc.fail(None, None, Fault::LoginRefused, None);
    let health = || async {
        let (_, b) = send(&j, "GET", "/healthz", "none", None).await;
        b["keycloak"].as_str().unwrap_or_default().to_string()
    };
    let id = j.request("judy", "open", 600);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while health().await != "login_refused" {
        assert!(std::time::Instant::now() < deadline, "{}", health().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two probes while refused: 5 s apart, not 100 ms (the fake's clock).
    until("two readiness probes", Duration::from_secs(30), || {
        kc.count(Op::Ready) >= 2
    })
    .await;
    let probes: Vec<_> = kc
        .calls()
        .into_iter()
        .filter(|c| c.op == Op::Ready)
        .map(|c| c.start)
        .collect();
    assert!(
        probes[1] - probes[0] >= Duration::from_secs(4),
        "{:?}",
        probes[1] - probes[0]
    );
    kc.clear_faults();
    j.wait(
        &id,
        "active once the login works",
        Duration::from_secs(30),
        |s| s.request.status() == Status::Active,
    )
    .await;
    assert_eq!(health().await, "ok");
    j.stop().await;
}

/// An idle jitd (nothing due, nobody calling) notices a Keycloak that
/// stopped answering — it asks it after 10 s without an answer — and
/// `/healthz` says `unreachable`, with when Keycloak last answered; once
/// Keycloak answers again it says `ok` with a newer instant.
#[tokio::test]
async fn an_idle_jitd_notices_a_hung_keycloak_and_says_so() {
    let kc = kc_with_users(&["judy"]);
    let j = start(POLICY, kc.clone(), "keycloak_call_timeout_secs = 2").await;
    let health = || async {
        let (_, b) = send(&j, "GET", "/healthz", "none", None).await;
        b
    };
    let answered = |b: &serde_json::Value| {
        b["keycloak_answered_at"]
            .as_str()
            .map(|t| t.parse::<chrono::DateTime<Utc>>().unwrap())
    };
    // The start's target check is an answer; wait until no call is under
    // way (one would answer after the fault below).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let b = health().await;
        if answered(&b).is_some() && kc.calls().iter().all(|c| c.end.is_some()) {
            assert_eq!(b["keycloak"], "ok", "{b}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kc.fail(None, None, Fault::Hang, None);
    // jitd's clock is this process's: no answer can come after this.
    let hung_at = Utc::now();
    let asked = kc.count(Op::Ready);
    // 10 s quiet, then a 2 s call limit: well within 40 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let down = loop {
        let b = health().await;
        if b["keycloak"] == "unreachable" {
            break b;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(kc.count(Op::Ready) > asked, "the liveness check asked");
    assert!(answered(&down).is_some_and(|t| t <= hung_at), "{down}");
    kc.clear_faults();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let b = health().await;
        if b["keycloak"] == "ok" {
            assert!(answered(&b).is_some_and(|t| t > hung_at), "{b}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    j.stop().await;
}

/// A refused service-account login pauses the grant-ends writer too: it
/// does not try (and log in) once per user with a grant and retry each,
/// while the scheduler's probe asks every 5 s.
#[tokio::test]
async fn a_refused_login_pauses_the_grant_ends_writer() {
    let users = ["la", "lb", "lc", "ld", "le"];
    let kc = kc_with_users(&users);
    let j = start(POLICY, kc.clone(), "").await;
    let ids: Vec<String> = users.iter().map(|u| j.request(u, "open", 600)).collect();
    for id in &ids {
        j.wait(id, "active", SECS, |s| s.request.status() == Status::Active)
            .await;
    }
    until("the grant ends written", SECS, || {
        kc.count(Op::SetAttribute) >= users.len()
    })
    .await;
    let before = kc.count(Op::SetAttribute);
    kc.fail(None, None, Fault::LoginRefused, None);
    // Each user's grant ends to write again: the grants end.
    for id in &ids {
        let (_, recs) = j
            .state()
            .store
            .sync()
            .update(id, |s| {
                let t = s.request.withdraw("test: end it now", Utc::now())?;
                Ok(end_grant(s, t))
            })
            .unwrap();
        j.state().published(&recs);
    }
    j.state().wake.notify_one();
    // Two probes while refused (≥ 5 s): time enough for per-user retries.
    until("two readiness probes", Duration::from_secs(30), || {
        kc.count(Op::Ready) >= 2
    })
    .await;
    let tried = kc.count(Op::SetAttribute) - before;
    assert!(
        tried <= 1,
        "{tried} grant-ends writes while the login was refused"
    );
    kc.clear_faults();
    for id in &ids {
        j.wait(
            id,
            "removed once the login works",
            Duration::from_secs(30),
            |s| s.grant.removed_at.is_some(),
        )
        .await;
    }
    j.stop().await;
}

/// A SQLite store is for one jitd: a second jitd on the same file is
/// refused at start (it would grant and remove beside the first, with no
/// claims between them), and starts once the first has stopped.
#[tokio::test]
async fn a_second_jitd_on_one_sqlite_file_is_refused() {
    let kc = kc_with_users(&["kim"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.sqlite");
    let db = db.to_str().unwrap();
    let first = start_on(POLICY, kc.clone(), "", db).await;
    let err = match try_start_on(POLICY, kc.clone(), "", db).await {
        Ok(_) => panic!("a second jitd started on the same SQLite file"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("another jitd already serves the SQLite database"),
        "{err}"
    );
    assert!(err.contains("PostgreSQL"), "{err}");
    first.stop().await;
    let second = start_on(POLICY, kc.clone(), "", db).await;
    second.stop().await;
}

/// An assignment that landed in Keycloak but whose answer never came (the
/// call timed out): the retry finds the role held and the grant counts
/// from when the first attempt set out, not from the retry, so the role is
/// never held longer than the granted duration.
#[tokio::test]
async fn an_assignment_whose_answer_never_came_counts_from_its_first_attempt() {
    let kc = kc_with_users(&["heidi"]);
    let j = start(POLICY, kc.clone(), "keycloak_call_timeout_secs = 1").await;
    kc.fail(
        Some(Op::Assign),
        Some("heidi"),
        Fault::LandedThenHang,
        Some(1),
    );
    let id = j.request("heidi", "open", 600);
    let s = j
        .wait(&id, "active", SECS, |s| {
            s.request.status() == Status::Active
        })
        .await;
    let since = s.grant.assigning_since.expect("the first attempt's start");
    let granted = s.grant.granted_at.unwrap();
    // The first attempt waited out its 1 s call timeout, then a retry.
    assert!(granted - since >= chrono::Duration::seconds(1), "{s:?}");
    assert_eq!(s.request.activated_at(), Some(since), "{s:?}");
    assert_eq!(
        s.request.expires_at(),
        Some(since + chrono::Duration::seconds(600)),
        "{s:?}"
    );
    assert_eq!(kc.count(Op::Assign), 1, "the retry found it held");
    assert!(
        has_event(&j, &id, EventKind::GrantGranted, "counted from"),
        "{:?}",
        j.events(&id)
    );
    j.stop().await;
}

/// jitd stopped after its assignment landed and before it recorded it: the
/// next jitd on the same store finds the role held and counts the grant
/// from the stopped attempt.
#[tokio::test]
async fn a_grant_jitd_stopped_before_recording_counts_from_the_stopped_attempt() {
    let kc = kc_with_users(&["ivan"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jitd.sqlite");
    let db = db.to_str().unwrap();
    let first = start_on(POLICY, kc.clone(), "keycloak_call_timeout_secs = 120", db).await;
    kc.fail(Some(Op::Assign), Some("ivan"), Fault::LandedThenHang, None);
    let id = first.request("ivan", "open", 600);
    until("the assignment to land", SECS, || {
        kc.has("ivan", &open_role())
    })
    .await;
    let since = first.get(&id).grant.assigning_since;
    assert!(since.is_some());
    first.stop().await;
    kc.clear_faults();
    let second = start_on(POLICY, kc.clone(), "", db).await;
    second.state().wake.notify_one();
    let s = second
        .wait(&id, "active", SECS, |s| {
            s.request.status() == Status::Active
        })
        .await;
    assert_eq!(s.request.activated_at(), since, "{s:?}");
    assert!(s.grant.granted_at.unwrap() > since.unwrap());
    assert_eq!(kc.count(Op::Assign), 1, "{:?}", kc.calls());
    second.stop().await;
}

#[tokio::test]
async fn a_removal_keycloak_forbids_is_not_retried_and_stays_visible() {
    let kc = kc_with_users(&["erin"]);
    let j = start(POLICY, kc.clone(), "").await;
    let id = j.request("erin", "open", 3600);
    j.wait(&id, "active", SECS, |s| {
        s.request.status() == Status::Active
    })
    .await;
    kc.fail(Some(Op::Unassign), None, Fault::Forbidden, None);
    j.state()
        .store
        .sync()
        .update(&id, |s| {
            let t = s.request.withdraw("test: end it now", Utc::now())?;
            Ok(end_grant(s, t))
        })
        .unwrap();
    j.state().wake.notify_one();
    let s = j
        .wait(&id, "the removal to be refused", SECS, |s| {
            s.grant.removal_failed
        })
        .await;
    assert!(!s.grant.removal_pending && s.grant.last_error.is_some());
    assert!(
        jit_server::api::view(j.state(), &s, None).revoke_late,
        "visible"
    );
    // The gauge counts it too, at once (one rule: jit_core::lateness); the
    // counter right after the store says so.
    until("the removal counted as failed", SECS, || {
        j.state()
            .metrics
            .encode()
            .contains("jit_removals_failed_total 1")
    })
    .await;
    let metrics = j.state().metrics.encode();
    assert!(metrics.contains("jit_revocations_late 1"), "{metrics}");
    assert!(has_event(
        &j,
        &id,
        EventKind::GrantRemovalFailed,
        "administrator"
    ));
    assert!(never_due_again(&j, &id));
    assert!(kc.has("erin", &open_role()), "the fake really refused");
    j.stop().await;
}

#[tokio::test]
async fn one_hung_call_delays_nothing_else() {
    let users: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.push("stuck");
    let kc = kc_with_users(&all);
    let j = start(POLICY, kc.clone(), "keycloak_call_timeout_secs = 60").await;
    kc.fail(Some(Op::Holds), Some("stuck"), Fault::Hang, None);
    let stuck = j.request("stuck", "open", 600);
    until("the hung call", SECS, || kc.hanging() == 1).await;
    let ids: Vec<String> = users.iter().map(|u| j.request(u, "open", 600)).collect();
    for id in &ids {
        j.wait(id, "the others to be granted", SECS, |s| {
            s.request.status() == Status::Active
        })
        .await;
    }
    assert_eq!(kc.hanging(), 1, "granted while the hung call still hangs");
    assert_eq!(j.get(&stuck).request.status(), Status::Approved);
    j.stop().await;
}

/// A grant whose request is cancelled while it waits for a Keycloak slot
/// (ownership decided, role not assigned yet) is never assigned: the
/// worker reads the request again right before the assignment. Before,
/// it assigned the role after the cancel, and the removal took it away
/// moments later, with no `grant.granted` in the audit trail.
#[tokio::test]
async fn a_grant_cancelled_while_it_waits_for_a_slot_is_never_assigned() {
    let users = ["w0", "w1", "w2", "w3", "w4"];
    let kc = kc_with_users(&users);
    let j = start(POLICY, kc.clone(), "keycloak_concurrency = 1").await;
    // Every call takes a second: with one slot, the grants' assignments
    // wait for it one after another.
    kc.set_latency(Duration::from_secs(1));
    let at = Utc::now() + chrono::Duration::seconds(1);
    let ids: Vec<String> = users
        .iter()
        .map(|u| j.request_at(u, "open", 600, Some(at)))
        .collect();
    let long = Duration::from_secs(30);
    until("an assignment under way", long, || {
        kc.calls()
            .iter()
            .any(|c| c.op == Op::Assign && c.end.is_none())
    })
    .await;
    let assigned = |u: &str| kc.calls().iter().any(|c| c.op == Op::Assign && c.user == u);
    // One whose ownership is decided and whose assignment waits for the slot.
    let (id, user) = ids
        .iter()
        .zip(users)
        .find(|(id, u)| j.get(id).grant.owns_assignment == Some(true) && !assigned(u))
        .map(|(id, u)| (id.clone(), u))
        .expect("a grant waiting for the slot with its ownership decided");
    let who = Principal::new(user, user);
    j.state()
        .store
        .sync()
        .update(&id, |s| {
            let t = s.request.cancel(&who, Utc::now())?;
            Ok(end_grant(s, t))
        })
        .unwrap();
    j.state().wake.notify_one();
    let s = j
        .wait(&id, "its removal check", long, |s| !s.grant.removal_pending)
        .await;
    assert_eq!(s.request.status(), Status::Cancelled);
    for (other, u) in ids.iter().zip(users).filter(|(i, _)| **i != id) {
        j.wait(other, "the others granted", long, |s| {
            s.request.status() == Status::Active
        })
        .await;
        assert!(kc.has(u, &open_role()));
    }
    assert!(
        !assigned(user),
        "assigned after it was cancelled: {:?}",
        j.events(&id)
    );
    assert!(has_event(
        &j,
        &id,
        EventKind::GrantNothingToRemove,
        "never granted"
    ));
    j.stop().await;
}

#[tokio::test]
async fn a_hung_call_times_out_and_is_retried() {
    let kc = kc_with_users(&["stuck"]);
    let j = start(POLICY, kc.clone(), "keycloak_call_timeout_secs = 1").await;
    kc.fail(Some(Op::Assign), Some("stuck"), Fault::Hang, Some(1));
    let id = j.request("stuck", "open", 600);
    let s = j
        .wait(&id, "granted after the timeout", SECS, |s| {
            s.request.status() == Status::Active
        })
        .await;
    assert!(s.grant.granted_at.is_some());
    assert_eq!(
        kc.count(Op::Assign),
        2,
        "the hung call, then one that answered"
    );
    j.stop().await;
}

#[tokio::test]
async fn keycloak_work_is_bounded_and_ordered_per_assignment() {
    let users: Vec<String> = (0..12).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let kc = kc_with_users(&refs);
    kc.set_latency(Duration::from_millis(40));
    let j = start(POLICY, kc.clone(), "keycloak_concurrency = 4").await;
    // Three grants per user of the same role, each ending soon: grants
    // and removals of one assignment interleave. (3 s: 36 grants of three
    // 40 ms calls each through 4 slots must all be granted within their
    // window, which a 1 s grant's is not with the account read.)
    let mut ids = Vec::new();
    for _ in 0..3 {
        for u in &users {
            ids.push(j.request(u, "open", 3));
        }
    }
    for id in &ids {
        j.wait(id, "granted and removed", Duration::from_secs(60), |s| {
            s.request.status() == Status::Expired && !s.grant.removal_pending
        })
        .await;
    }
    for u in &users {
        assert!(!kc.has(u, &open_role()), "{u}: removed at the end");
    }
    let max = kc.max_in_flight();
    assert!(max <= 4, "at most 4 Keycloak calls in flight, saw {max}");
    assert!(max >= 2, "work ran in parallel (max {max})");
    // Per user and target, calls never overlap.
    let mut calls: Vec<_> = kc
        .calls()
        .into_iter()
        .filter(|c| c.target.is_some())
        .collect();
    calls.sort_by_key(|c| (c.user.clone(), c.start));
    for w in calls.windows(2) {
        if w[0].user == w[1].user && w[0].target == w[1].target {
            let end = w[0].end.expect("finished");
            assert!(
                end <= w[1].start,
                "overlapping calls for {}: {:?} then {:?}",
                w[0].user,
                w[0].op,
                w[1].op
            );
        }
    }
    j.stop().await;
}

#[tokio::test]
async fn after_an_outage_all_waiting_work_is_due_at_once() {
    let users: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let kc = kc_with_users(&refs);
    let j = start(POLICY, kc.clone(), "").await;
    let ids: Vec<String> = users.iter().map(|u| j.request(u, "open", 3600)).collect();
    for id in &ids {
        j.wait(id, "active", SECS, |s| s.request.status() == Status::Active)
            .await;
    }
    kc.fail(None, None, Fault::Refused, None);
    for id in &ids {
        j.state()
            .store
            .sync()
            .update(id, |s| {
                let t = s.request.withdraw("test: end it now", Utc::now())?;
                Ok(end_grant(s, t))
            })
            .unwrap();
    }
    j.state().wake.notify_one();
    until("Keycloak seen down and the probe failing", SECS, || {
        j.state().scheduler.keycloak_down() && kc.count(Op::Ready) >= 2
    })
    .await;
    // Each waiting removal holds a retry timer a minute out, as after a
    // long outage.
    let far = Utc::now() + chrono::Duration::seconds(60);
    for id in &ids {
        j.state()
            .store
            .sync()
            .update(id, |s| {
                s.grant.attempts = 6;
                s.grant.next_attempt_at = Some(far);
                Ok(vec![])
            })
            .unwrap();
    }
    kc.clear_faults();
    for id in &ids {
        let s = j
            .wait(id, "removed once Keycloak answers", SECS, |s| {
                !s.grant.removal_pending
            })
            .await;
        assert!(s.grant.removed_at.unwrap() < far);
    }
    for u in &users {
        assert!(!kc.has(u, &open_role()));
    }
    assert!(!j.state().scheduler.keycloak_down());
    j.stop().await;
}

/// An entitlement limited to some requesters is not granted to an account
/// disabled or deleted in Keycloak since the request (the activation reads
/// the account and the roles the rule names; an entitlement anyone may
/// request reads nothing: see ARCHITECTURE, eligibility).
#[tokio::test]
async fn a_disabled_or_deleted_requester_is_not_granted() {
    let kc = kc_with_users(&["alice", "bob", "carol"]);
    let j = start(POLICY, kc.clone(), "").await;
    kc.edit_user("alice", |u| u.enabled = false);
    kc.delete_user("carol");
    let a = j.request("alice", "db", 600);
    let b = j.request("bob", "db", 600);
    let c = j.request("carol", "db", 600);
    for (id, why) in [
        (&a, "is disabled in Keycloak"),
        (&c, "no longer exists in Keycloak"),
    ] {
        let s = j
            .wait(id, "the request to end", SECS, |s| {
                s.request.status().is_terminal()
            })
            .await;
        assert!(
            s.request.end_reason().unwrap_or_default().contains(why),
            "{s:?}"
        );
        assert!(s.grant.granted_at.is_none(), "{s:?}");
    }
    j.wait(&b, "bob granted", SECS, |s| {
        s.request.status() == Status::Active
    })
    .await;
    let db = EntitlementKind::RealmRole {
        role: "db-admin".into(),
    };
    assert!(!kc.has("alice", &db) && kc.has("bob", &db));
    j.stop().await;
}

#[tokio::test]
async fn a_disabled_requester_of_an_open_entitlement_is_not_granted() {
    let kc = kc_with_users(&[
        "alice", "bob", "carol", "dave", "erin", "frank", "g1", "g2", "g3", "g4",
    ]);
    kc.add_user("service-account-ci", &[], &[]);
    kc.edit_user("alice", |u| u.enabled = false);
    kc.edit_user("service-account-ci", |u| u.enabled = false);
    kc.delete_user("carol");
    // Calls that take a while, so the two reads' overlap shows.
    kc.set_latency(Duration::from_millis(50));
    let j = start(POLICY, kc.clone(), "").await;
    let before = kc.calls().len();
    // Scheduled, then all due at once: one pass hands them out.
    let later = Some(Utc::now() + chrono::Duration::hours(1));
    let people: Vec<(String, &str)> = ["alice", "bob", "carol", "dave", "erin"]
        .iter()
        .map(|u| (j.request_at(u, "open", 600, later), *u))
        .collect();
    let ci = j.request_by_client("service-account-ci", "ci", "open", 600, later);
    let mut all: Vec<String> = people.iter().map(|(i, _)| i.clone()).collect();
    all.push(ci.clone());
    j.make_due_now(&all);
    let mut ended = Vec::new();
    for (id, who) in people
        .iter()
        .map(|(i, w)| (i.as_str(), *w))
        .chain([(ci.as_str(), "ci")])
    {
        let s = j
            .wait(id, "the request to be granted or to end", SECS, |s| {
                s.request.status() == Status::Active || s.request.status().is_terminal()
            })
            .await;
        ended.push((
            who,
            s.request.status(),
            s.request.end_reason().unwrap_or_default().to_string(),
        ));
    }
    for (who, status, reason) in &ended {
        match *who {
            "alice" | "ci" => {
                assert_eq!(*status, Status::Cancelled, "{who}: {reason}");
                assert!(
                    reason.contains("is disabled in Keycloak"),
                    "{who}: {reason}"
                );
            }
            "carol" => assert!(reason.contains("no longer exists"), "{who}: {reason}"),
            _ => assert_eq!(*status, Status::Active, "{who}: {reason}"),
        }
    }
    assert!(!kc.has("alice", &open_role()) && !kc.has("service-account-ci", &open_role()));
    let calls = kc.calls()[before..].to_vec();
    // One read of the realm's disabled users shared by the pass (people
    // and the service account alike), no account read each.
    let shared = calls.iter().filter(|c| c.op == Op::Disabled).count();
    assert_eq!(
        shared, 1,
        "reads of the disabled users for one pass of 6 grants"
    );
    let accounts = calls.iter().filter(|c| c.op == Op::UserAccess).count();
    assert_eq!(accounts, 0, "account reads");
    // The read of the disabled users runs alongside the read of the
    // role's holders, not before it.
    let one = |op: Op| calls.iter().find(|c| c.op == op).cloned().unwrap();
    let (d, h) = (one(Op::Disabled), one(Op::Holders));
    assert!(
        d.start < h.end.unwrap() && h.start < d.end.unwrap(),
        "the two reads overlap: {d:?} {h:?}"
    );
    // A pass of one grant reads the requester's account, not the list.
    kc.edit_user("frank", |u| u.enabled = false);
    let f = j.request("frank", "open", 600);
    let s = j
        .wait(&f, "frank's request to end", SECS, |s| {
            s.request.status().is_terminal()
        })
        .await;
    assert_eq!(s.request.status(), Status::Cancelled, "{s:?}");
    assert!(!kc.has("frank", &open_role()));
    assert_eq!(kc.count(Op::Disabled), 1, "no list read for one grant");
    assert!(kc
        .calls()
        .iter()
        .any(|c| c.op == Op::UserAccess && c.user == "frank"));
    // Disabled since the first pass's read: a later pass of several
    // grants reads the list again.
    kc.edit_user("g1", |u| u.enabled = false);
    let ids: Vec<String> = ["g1", "g2", "g3", "g4"]
        .iter()
        .map(|u| j.request_at(u, "open", 600, later))
        .collect();
    j.make_due_now(&ids);
    let s = j
        .wait(&ids[0], "g1's request to end", SECS, |s| {
            s.request.status().is_terminal()
        })
        .await;
    assert_eq!(s.request.status(), Status::Cancelled, "{s:?}");
    for id in &ids[1..] {
        j.wait(id, "granted", SECS, |s| {
            s.request.status() == Status::Active
        })
        .await;
    }
    assert_eq!(kc.count(Op::Disabled), 2, "a new read for the later pass");
    j.stop().await;
}

/// A requester disabled in Keycloak while their grant is active loses it
/// at the next check of the disabled users (`disabled_check_secs`): the
/// grant is revoked by jitd with the reason and the role removed. People
/// and service accounts alike; the others keep theirs.
#[tokio::test]
async fn an_active_grant_ends_when_its_requester_is_disabled() {
    an_active_grant_ends_when_disabled_on("jitd.sqlite").await;
}

async fn an_active_grant_ends_when_disabled_on(database: &str) {
    let kc = kc_with_users(&["alice", "bob"]);
    kc.add_user("service-account-ci", &[], &[]);
    let j = start_on(POLICY, kc.clone(), "disabled_check_secs = 1", database).await;
    let a = j.request("alice", "open", 600);
    let b = j.request("bob", "open", 600);
    let ci = j.request_by_client("service-account-ci", "ci", "open", 600, None);
    for id in [&a, &b, &ci] {
        j.wait(id, "granted", SECS, |s| {
            s.request.status() == Status::Active
        })
        .await;
    }
    // Requests still waiting: for an approver, and approved for a later
    // start.
    let later = Some(Utc::now() + chrono::Duration::hours(1));
    let a_pending = j.request_pending("alice", "db", 600);
    let a_later = j.request_at("alice", "db", 600, later);
    let b_pending = j.request_pending("bob", "db", 600);
    assert_eq!(j.get(&a_pending).request.status(), Status::Pending);
    assert_eq!(j.get(&a_later).request.status(), Status::Approved);
    kc.edit_user("alice", |u| u.enabled = false);
    kc.edit_user("service-account-ci", |u| u.enabled = false);
    for (id, who) in [(&a, "alice"), (&ci, "service-account-ci")] {
        let s = j
            .wait(id, "the grant revoked and its role removed", SECS, |s| {
                s.grant.removed_at.is_some()
            })
            .await;
        assert_eq!(s.request.status(), Status::Revoked, "{who}: {s:?}");
        let why = format!("{who} is disabled in Keycloak");
        assert!(
            s.request.end_reason().unwrap_or_default().contains(&why),
            "{who}: {s:?}"
        );
        assert!(
            has_event(&j, id, EventKind::GrantRevoked, &why),
            "{who}: audited"
        );
        assert!(!kc.has(who, &open_role()), "{who} still holds the role");
    }
    // Alice's waiting requests end in the same check: no approver is asked
    // about them, and the scheduled one is never granted.
    for id in [&a_pending, &a_later] {
        let s = j
            .wait(id, "the waiting request cancelled", SECS, |s| {
                s.request.status().is_terminal()
            })
            .await;
        assert_eq!(s.request.status(), Status::Cancelled, "{s:?}");
        assert!(
            s.request
                .end_reason()
                .unwrap_or_default()
                .contains("alice is disabled in Keycloak"),
            "{s:?}"
        );
    }
    assert!(!kc.has("alice", &db_role()));
    // The same read found bob enabled: his grant and request stand.
    assert_eq!(j.get(&b).request.status(), Status::Active);
    assert_eq!(j.get(&b_pending).request.status(), Status::Pending);
    assert!(kc.has("bob", &open_role()));
    let metrics = j.state().metrics.encode();
    let last = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jit_disabled_check_last_success_timestamp_seconds "))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no time of the last check:\n{metrics}"));
    assert!(
        last >= (Utc::now() - chrono::Duration::minutes(10)).timestamp(),
        "the last check's time: {last}"
    );
    j.stop().await;
}

/// When the realm has more disabled users than jitd reads at once
/// (10,000), the check reads each active grant's holder's account instead:
/// the holder found disabled loses the grant, with the reason, and the
/// role; the others keep theirs.
#[tokio::test]
async fn the_check_of_active_grants_reads_each_holder_when_too_many_users_are_disabled() {
    let kc = kc_with_users(&["alice", "bob"]);
    for i in 0..10_001 {
        let id = format!("left{i:05}");
        kc.add_user(&id, &[], &[]);
        kc.edit_user(&id, |u| u.enabled = false);
    }
    let j = start(POLICY, kc.clone(), "disabled_check_secs = 1").await;
    let a = j.request("alice", "open", 600);
    let b = j.request("bob", "open", 600);
    for id in [&a, &b] {
        j.wait(id, "granted", SECS, |s| {
            s.request.status() == Status::Active
        })
        .await;
    }
    let before = kc.calls().len();
    kc.edit_user("alice", |u| u.enabled = false);
    let s = j
        .wait(&a, "the grant revoked and its role removed", SECS, |s| {
            s.grant.removed_at.is_some()
        })
        .await;
    assert_eq!(s.request.status(), Status::Revoked, "{s:?}");
    assert!(
        has_event(
            &j,
            &a,
            EventKind::GrantRevoked,
            "alice is disabled in Keycloak"
        ),
        "audited with the reason"
    );
    assert!(!kc.has("alice", &open_role()));
    // The list was asked for and refused as too long; alice's account was
    // read on its own.
    let calls = kc.calls()[before..].to_vec();
    assert!(calls.iter().any(|c| c.op == Op::Disabled), "{calls:?}");
    assert!(
        calls
            .iter()
            .any(|c| c.op == Op::UserAccess && c.user == "alice"),
        "{calls:?}"
    );
    assert_eq!(j.get(&b).request.status(), Status::Active);
    assert!(kc.has("bob", &open_role()));
    j.stop().await;
}

/// With no grant active anywhere, a request waiting for an approver is
/// still checked: its requester disabled, it is cancelled.
#[tokio::test]
async fn a_waiting_request_ends_when_its_requester_is_disabled() {
    let kc = kc_with_users(&["alice"]);
    let j = start(POLICY, kc.clone(), "disabled_check_secs = 1").await;
    let p = j.request_pending("alice", "db", 600);
    kc.edit_user("alice", |u| u.enabled = false);
    let s = j
        .wait(&p, "the request cancelled", SECS, |s| {
            s.request.status().is_terminal()
        })
        .await;
    assert_eq!(s.request.status(), Status::Cancelled, "{s:?}");
    assert!(
        has_event(
            &j,
            &p,
            EventKind::RequestCancelled,
            "alice is disabled in Keycloak"
        ),
        "audited"
    );
    j.stop().await;
}

/// A failed read of the disabled users ends nothing and is made again at
/// the next check; the grant then ends.
#[tokio::test]
async fn a_failed_check_of_the_disabled_users_is_made_again() {
    let kc = kc_with_users(&["alice"]);
    let j = start(POLICY, kc.clone(), "disabled_check_secs = 1").await;
    let a = j.request("alice", "open", 600);
    j.wait(&a, "granted", SECS, |s| {
        s.request.status() == Status::Active
    })
    .await;
    kc.fail(Some(Op::Disabled), None, Fault::Server(500), Some(2));
    kc.edit_user("alice", |u| u.enabled = false);
    let s = j
        .wait(&a, "the grant revoked", SECS, |s| {
            s.grant.removed_at.is_some()
        })
        .await;
    assert_eq!(s.request.status(), Status::Revoked, "{s:?}");
    assert!(
        kc.count(Op::Disabled) >= 3,
        "two failed reads, then one that found alice: {}",
        kc.count(Op::Disabled)
    );
    assert!(!kc.has("alice", &open_role()));
    assert!(
        j.state()
            .metrics
            .encode()
            .contains("jit_disabled_check_failures_total 2"),
        "both failed reads counted"
    );
    j.stop().await;
}

#[tokio::test]
async fn when_the_disabled_users_cannot_be_listed_each_account_is_read() {
    let kc = kc_with_users(&["alice", "bob", "carol", "dave", "erin", "f1", "f2", "f3"]);
    kc.edit_user("alice", |u| u.enabled = false);
    kc.fail(Some(Op::Disabled), None, Fault::Server(500), None);
    let j = start(POLICY, kc.clone(), "").await;
    // One pass of four grants: one failed read, then each account.
    let later = Some(Utc::now() + chrono::Duration::hours(1));
    let a = j.request_at("alice", "open", 600, later);
    let b = j.request_at("bob", "open", 600, later);
    let more: Vec<String> = ["dave", "erin"]
        .iter()
        .map(|u| j.request_at(u, "open", 600, later))
        .collect();
    j.make_due_now(&[vec![a.clone(), b.clone()], more].concat());
    let s = j
        .wait(&a, "the request to end", SECS, |s| {
            s.request.status().is_terminal()
        })
        .await;
    assert_eq!(s.request.status(), Status::Cancelled, "{s:?}");
    assert!(
        s.request
            .end_reason()
            .unwrap_or_default()
            .contains("is disabled in Keycloak"),
        "{s:?}"
    );
    j.wait(&b, "bob granted", SECS, |s| {
        s.request.status() == Status::Active
    })
    .await;
    assert!(!kc.has("alice", &open_role()) && kc.has("bob", &open_role()));
    for u in ["alice", "bob"] {
        assert!(
            kc.calls()
                .iter()
                .any(|c| c.op == Op::UserAccess && c.user == u),
            "{u}'s account read"
        );
    }
    // A later pass of four, soon after: the failed read stands (it is not
    // asked again at once); carol's account is read instead.
    kc.edit_user("carol", |u| u.enabled = false);
    let ids: Vec<String> = ["carol", "f1", "f2", "f3"]
        .iter()
        .map(|u| j.request_at(u, "open", 600, later))
        .collect();
    j.make_due_now(&ids);
    let c = ids[0].clone();
    let s = j
        .wait(&c, "carol's request to end", SECS, |s| {
            s.request.status().is_terminal()
        })
        .await;
    assert_eq!(s.request.status(), Status::Cancelled, "{s:?}");
    assert_eq!(kc.count(Op::Disabled), 1, "reads of the disabled users");
    j.stop().await;
}

#[tokio::test]
async fn a_hung_read_of_the_disabled_users_does_not_hold_grants_for_a_call_timeout() {
    let kc = kc_with_users(&["alice", "bob", "dave", "erin"]);
    kc.edit_user("alice", |u| u.enabled = false);
    kc.fail(Some(Op::Disabled), None, Fault::Hang, None);
    // A call timeout longer than the waits below: only the read's own
    // limit (3 s) lets the grants go on within them.
    let j = start(POLICY, kc.clone(), "keycloak_call_timeout_secs = 60").await;
    let later = Some(Utc::now() + chrono::Duration::hours(1));
    let a = j.request_at("alice", "open", 600, later);
    let b = j.request_at("bob", "open", 600, later);
    let more: Vec<String> = ["dave", "erin"]
        .iter()
        .map(|u| j.request_at(u, "open", 600, later))
        .collect();
    j.make_due_now(&[vec![a.clone(), b.clone()], more].concat());
    let s = j
        .wait(&a, "alice's request to end", Duration::from_secs(20), |s| {
            s.request.status().is_terminal()
        })
        .await;
    assert_eq!(s.request.status(), Status::Cancelled, "{s:?}");
    j.wait(&b, "bob granted", Duration::from_secs(20), |s| {
        s.request.status() == Status::Active
    })
    .await;
    assert_eq!(kc.count(Op::Disabled), 1);
    j.stop().await;
}

/// The grants of a pass hold no Keycloak slot while the pass's shared
/// reads (the disabled users, the target's holders) are under way: a
/// removal due meanwhile is made at once. Before, the pass's first grant
/// kept the only slot (taken for it when the pass handed it out) idle
/// until the read gave up, and the removal came after its fallback read.
#[tokio::test]
async fn a_pass_s_grants_hold_no_slot_while_its_shared_reads_are_under_way() {
    let kc = kc_with_users(&["holder", "g0", "g1", "g2", "g3"]);
    let j = start(
        POLICY,
        kc.clone(),
        "keycloak_concurrency = 1\nkeycloak_call_timeout_secs = 60",
    )
    .await;
    let held = j.request("holder", "open", 600);
    j.wait(&held, "granted", SECS, |s| {
        s.request.status() == Status::Active
    })
    .await;
    // The pass's read of the disabled users hangs (until its own limit).
    kc.fail(Some(Op::Disabled), None, Fault::Hang, Some(1));
    let later = Some(Utc::now() + chrono::Duration::hours(1));
    let users = ["g0", "g1", "g2", "g3"];
    let ids: Vec<String> = users
        .iter()
        .map(|u| j.request_at(u, "open", 600, later))
        .collect();
    j.make_due_now(&ids);
    until("the pass's read under way", SECS, || {
        kc.calls()
            .iter()
            .any(|c| c.op == Op::Disabled && c.end.is_none())
    })
    .await;
    // The holder gives the grant up: its removal is due now.
    let who = Principal::new("holder", "holder");
    j.state()
        .store
        .sync()
        .update(&held, |s| {
            let t = s.request.drop_grant(&who, Utc::now())?;
            Ok(end_grant(s, t))
        })
        .unwrap();
    j.state().wake.notify_one();
    j.wait(&held, "the removal", SECS, |s| s.grant.removed_at.is_some())
        .await;
    for id in &ids {
        j.wait(id, "the pass's grants", SECS, |s| {
            s.request.status() == Status::Active
        })
        .await;
    }
    let calls = kc.calls();
    let removal = calls
        .iter()
        .find(|c| c.op == Op::Unassign && c.user == "holder")
        .and_then(|c| c.end)
        .expect("the removal's call");
    // Every call of the pass's grants that takes a slot (the fallback
    // account reads after the hung read, the assignments) came after it
    // (the grant-ends writes at their approval do not count).
    let first_of_pass = calls
        .iter()
        .filter(|c| {
            users.contains(&c.user.as_str())
                && matches!(c.op, Op::UserAccess | Op::Holds | Op::Assign)
        })
        .map(|c| c.start)
        .min()
        .expect("the pass's calls");
    assert!(
        removal < first_of_pass,
        "the removal waited for the pass's read: {calls:?}"
    );
    j.stop().await;
}

#[tokio::test]
async fn a_pass_during_an_earlier_pass_s_read_of_disabled_users_waits_and_reads_again() {
    let names: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let kc = kc_with_users(&refs);
    // Slow calls: the second pass starts while the first pass's read of
    // the disabled users is still under way.
    kc.set_latency(Duration::from_millis(300));
    let j = start(POLICY, kc.clone(), "").await;
    let later = Some(Utc::now() + chrono::Duration::hours(1));
    let ids: Vec<String> = refs
        .iter()
        .map(|u| j.request_at(u, "open", 600, later))
        .collect();
    j.make_due_now(&ids[..4]);
    until("the first pass's read under way", SECS, || {
        kc.calls().iter().any(|c| c.op == Op::Disabled)
    })
    .await;
    // Disabled after the first pass began: the second pass must see it.
    kc.edit_user("u4", |u| u.enabled = false);
    j.make_due_now(&ids[4..]);
    let s = j
        .wait(&ids[4], "u4's request to end", SECS, |s| {
            s.request.status().is_terminal()
        })
        .await;
    assert_eq!(s.request.status(), Status::Cancelled, "{s:?}");
    for id in ids[..4].iter().chain(&ids[5..]) {
        j.wait(id, "granted", SECS, |s| {
            s.request.status() == Status::Active
        })
        .await;
    }
    let reads: Vec<_> = kc
        .calls()
        .into_iter()
        .filter(|c| c.op == Op::Disabled)
        .collect();
    assert_eq!(reads.len(), 2, "one read per pass: {reads:?}");
    assert!(
        reads[0].end.unwrap() <= reads[1].start,
        "never two reads at once: {reads:?}"
    );
    j.stop().await;
}

#[tokio::test]
async fn lost_eligibility_before_the_start_ends_the_request() {
    let kc = kc_with_users(&["alice", "bob"]);
    let j = start(POLICY, kc.clone(), "").await;
    // alice's token said "requester" when she asked; Keycloak no longer does.
    kc.edit_user("alice", |u| {
        u.roles.remove("requester");
    });
    let a = j.request("alice", "db", 600);
    let b = j.request("bob", "db", 600);
    let s = j
        .wait(&a, "the request to end", SECS, |s| {
            s.request.status().is_terminal()
        })
        .await;
    assert_eq!(s.request.status(), Status::Cancelled);
    assert!(s
        .request
        .end_reason()
        .unwrap()
        .contains("no longer eligible"));
    assert!(has_event(
        &j,
        &a,
        EventKind::RequestCancelled,
        "no longer eligible"
    ));
    assert!(!kc.has("alice", &db_role()));
    assert_eq!(
        kc.calls()
            .iter()
            .filter(|c| c.op == Op::Assign && c.user == "alice")
            .count(),
        0
    );
    j.wait(&b, "bob, still eligible, is granted", SECS, |s| {
        s.request.status() == Status::Active
    })
    .await;
    // A disabled user is not eligible either.
    kc.edit_user("bob", |u| u.enabled = false);
    let c = j.request("bob", "db", 600);
    let s = j
        .wait(&c, "the request to end", SECS, |s| {
            s.request.status().is_terminal()
        })
        .await;
    assert!(s.request.end_reason().unwrap().contains("disabled"));
    j.stop().await;
}

#[tokio::test]
async fn ending_sessions_ends_offline_sessions_too() {
    let kc = kc_with_users(&["carol"]);
    let j = start(POLICY, kc.clone(), "").await;
    kc.edit_user("carol", |u| u.offline_sessions = 2);
    let id = j.request("carol", "db", 1);
    let s = j
        .wait(&id, "expired and removed", SECS, |s| {
            s.request.status() == Status::Expired && !s.grant.removal_pending
        })
        .await;
    assert!(s.grant.removed_at.is_some());
    assert_eq!(kc.user("carol").unwrap().offline_sessions, 0);
    assert!(has_event(
        &j,
        &id,
        EventKind::GrantRemoved,
        "2 offline sessions"
    ));
    j.stop().await;
}

/// Ends active grant `id` now (as a revoke would) and wakes the scheduler.
/// A removal jitd gave up (`removal_failed`) is tried again when someone
/// who may asks (the requester, an approver of the entitlement), through
/// the API: the removal is pending again, audited with who asked and why,
/// and ends only when Keycloak confirms; while Keycloak still refuses it
/// fails again. Nobody else may, and a removal that has not failed has
/// nothing to retry.
#[tokio::test]
async fn a_given_up_removal_is_retried_on_request_and_ends_only_when_keycloak_confirms() {
    use axum::http::StatusCode;
    let kc = kc_with_users(&["erin", "mallory"]);
    kc.add_user("appr", &["approver"], &[]);
    let j = start(POLICY, kc.clone(), "").await;
    let id = j.request("erin", "open", 3600);
    j.wait(&id, "active", SECS, |s| {
        s.request.status() == Status::Active
    })
    .await;
    let path = format!("/v1/grants/{id}/retry-removal");
    let erin = j.issuer.token("erin", &["requester"]);
    let appr = j.issuer.token("appr", &["approver"]);
    let mallory = j.issuer.token("mallory", &["requester"]);
    let empty = || Some(serde_json::json!({}));

    // Active, its removal never failed: nothing to retry.
    let (status, b) = send(&j, "POST", &path, &erin, empty()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], "removal_not_failed", "{b}");

    kc.fail(Some(Op::Unassign), None, Fault::Forbidden, None);
    end_now(&j, &id);
    j.wait(&id, "the removal to be refused", SECS, |s| {
        s.grant.removal_failed
    })
    .await;
    let failed = |j: &TestJitd| {
        j.events(&id)
            .iter()
            .filter(|(e, _)| *e == EventKind::GrantRemovalFailed)
            .count()
    };
    assert_eq!(failed(&j), 1);

    // Someone who may not see the grant: not found, and nothing changes.
    let (status, b) = send(&j, "POST", &path, &mallory, empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{b}");
    assert!(j.get(&id).grant.removal_failed);

    // The requester retries while Keycloak still refuses: pending again at
    // once, then given up again (a second `grant.removal_failed`).
    let (status, b) = send(
        &j,
        "POST",
        &path,
        &erin,
        Some(serde_json::json!({"comment": "asked the admins"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["keycloak"]["removal_failed"], false, "{b}");
    until("the retried removal to be refused again", SECS, || {
        failed(&j) == 2
    })
    .await;
    let s = j.get(&id);
    assert!(s.grant.removal_failed && !s.grant.removal_pending);
    assert!(kc.has("erin", &open_role()), "the fake really refused");

    // Fixed in Keycloak; an approver retries: removed, confirmed, not late.
    kc.clear_faults();
    let (status, b) = send(
        &j,
        "POST",
        &path,
        &appr,
        Some(serde_json::json!({"comment": "service account rights fixed"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let s = j
        .wait(&id, "the removal confirmed", SECS, |s| {
            s.grant.removed_at.is_some()
        })
        .await;
    assert!(!s.grant.removal_pending && !s.grant.removal_failed);
    assert!(!kc.has("erin", &open_role()), "removed in Keycloak");
    assert!(!jit_server::api::view(j.state(), &s, None).revoke_late);
    assert!(has_event(
        &j,
        &id,
        EventKind::GrantRemovalRetried,
        "service account rights fixed"
    ));
    let retried: Vec<_> = j
        .events(&id)
        .into_iter()
        .filter(|(e, _)| *e == EventKind::GrantRemovalRetried)
        .collect();
    assert_eq!(retried.len(), 2, "{retried:?}");
    assert!(has_event(&j, &id, EventKind::GrantRemoved, ""));
    until("the late gauge back to zero", SECS, || {
        j.state()
            .metrics
            .encode()
            .contains("jit_revocations_late 0")
    })
    .await;

    // Done: nothing to retry any more.
    let (status, b) = send(&j, "POST", &path, &appr, empty()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], "removal_not_failed", "{b}");
    j.stop().await;
}

fn end_now(j: &TestJitd, id: &str) {
    j.state()
        .store
        .sync()
        .update(id, |s| {
            let t = s.request.withdraw("test: end it now", Utc::now())?;
            Ok(end_grant(s, t))
        })
        .unwrap();
    j.state().wake.notify_one();
}

#[tokio::test]
async fn a_grant_keycloak_keeps_failing_ends_failed_at_the_retry_limit() {
    let kc = kc_with_users(&["u-500"]);
    let j = start(POLICY, kc.clone(), "grant_retry_limit_secs = 3").await;
    kc.fail(Some(Op::Assign), Some("u-500"), Fault::Server(500), None);
    let id = j.request("u-500", "open", 3600);
    let s = j
        .wait(
            &id,
            "the grant to be given up",
            Duration::from_secs(30),
            |s| s.request.status() == Status::Failed && !s.grant.removal_pending,
        )
        .await;
    let reason = s
        .request
        .end_reason()
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        reason.contains("gave up") && reason.contains("500"),
        "{reason}"
    );
    assert!(
        kc.count(Op::Assign) >= 2,
        "retried before giving up ({} attempts)",
        kc.count(Op::Assign)
    );
    assert!(
        has_event(&j, &id, EventKind::GrantFailed, "gave up"),
        "audited"
    );
    assert!(!kc.has("u-500", &open_role()));
    assert!(never_due_again(&j, &id), "no more retries");
    j.stop().await;
}

#[tokio::test]
async fn a_grant_that_cannot_be_applied_within_its_window_ends_failed() {
    let kc = kc_with_users(&["u-500"]);
    // A retry limit far away: the window (2 s from approval) decides.
    let j = start(POLICY, kc.clone(), "grant_retry_limit_secs = 3600").await;
    kc.fail(Some(Op::Assign), Some("u-500"), Fault::Server(500), None);
    let id = j.request("u-500", "open", 2);
    let s = j
        .wait(
            &id,
            "the grant to be given up",
            Duration::from_secs(30),
            |s| s.request.status() == Status::Failed && !s.grant.removal_pending,
        )
        .await;
    let reason = s
        .request
        .end_reason()
        .map(str::to_string)
        .unwrap_or_default();
    assert!(reason.contains("window"), "{reason}");
    // Given up no later than the window's end plus one retry wait: jitd's
    // own timestamps.
    let window_end = s.request.decided_at().unwrap() + chrono::Duration::seconds(2);
    assert!(s.request.ended_at().unwrap() <= window_end + chrono::Duration::seconds(2));
    assert!(s.grant.granted_at.is_none() && !kc.has("u-500", &open_role()));
    assert!(has_event(&j, &id, EventKind::GrantFailed, "window"));
    assert!(never_due_again(&j, &id));
    j.stop().await;
}

#[tokio::test]
async fn a_removal_that_keeps_failing_is_retried_then_removal_failed_at_the_limit() {
    let kc = kc_with_users(&["erin"]);
    let j = start(POLICY, kc.clone(), "removal_retry_limit_secs = 3").await;
    let id = j.request("erin", "open", 3600);
    j.wait(&id, "active", SECS, |s| {
        s.request.status() == Status::Active
    })
    .await;
    kc.fail(Some(Op::Unassign), None, Fault::Server(500), None);
    end_now(&j, &id);
    // Retried meanwhile, the error shown on the grant.
    j.wait(&id, "a failed removal attempt", SECS, |s| {
        s.grant.removal_pending && s.grant.last_error.is_some()
    })
    .await;
    let s = j
        .wait(
            &id,
            "the removal to be given up",
            Duration::from_secs(30),
            |s| s.grant.removal_failed,
        )
        .await;
    assert!(!s.grant.removal_pending);
    let why = s.grant.last_error.clone().unwrap_or_default();
    assert!(
        why.contains("500") && why.contains("administrator"),
        "{why}"
    );
    assert!(kc.count(Op::Unassign) >= 2, "retried before giving up");
    assert!(has_event(
        &j,
        &id,
        EventKind::GrantRemovalFailed,
        "administrator"
    ));
    assert!(
        jit_server::api::view(j.state(), &s, None).revoke_late,
        "visible"
    );
    until("the removal counted as failed", SECS, || {
        j.state()
            .metrics
            .encode()
            .contains("jit_removals_failed_total 1")
    })
    .await;
    let metrics = j.state().metrics.encode();
    assert!(metrics.contains("jit_revocations_late 1"), "{metrics}");
    assert!(never_due_again(&j, &id));
    assert!(kc.has("erin", &open_role()), "the fake really refused");
    j.stop().await;
}

#[tokio::test]
async fn a_due_removal_goes_before_grants_already_waiting() {
    let users: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.push("erin");
    let kc = kc_with_users(&all);
    let j = start(POLICY, kc.clone(), "keycloak_concurrency = 1").await;
    let erin = j.request("erin", "open", 3600);
    j.wait(&erin, "active", SECS, |s| {
        s.request.status() == Status::Active
    })
    .await;
    // Each grant takes two calls of 50 ms: 30 of them queue for the one
    // slot for about 3 s.
    kc.set_latency(Duration::from_millis(50));
    let ids: Vec<String> = users.iter().map(|u| j.request(u, "open", 3600)).collect();
    until("the grants to be queued", SECS, || {
        j.state().scheduler.in_flight() >= 20
    })
    .await;
    end_now(&j, &erin);
    let removed = j
        .wait(&erin, "removed", Duration::from_secs(30), |s| {
            s.grant.removed_at.is_some()
        })
        .await
        .grant
        .removed_at
        .unwrap();
    let mut after = 0;
    for id in &ids {
        let s = j
            .wait(id, "granted", Duration::from_secs(60), |s| {
                s.request.status() == Status::Active
            })
            .await;
        if s.grant.granted_at.unwrap() > removed {
            after += 1;
        }
    }
    // jitd's own timestamps: the removal took the next free slot, ahead of
    // the grants that were already waiting.
    assert!(
        after >= ids.len() - 5,
        "only {after} of {} grants came after the removal",
        ids.len()
    );
    j.stop().await;
}

#[tokio::test]
async fn removals_due_in_the_same_tick_as_grants_get_the_first_keycloak_slots() {
    // Users whose removals are due sort after those whose grants are due,
    // so the tick hands out the grants' assignments first.
    let grantees: Vec<String> = (0..30).map(|i| format!("a{i:02}")).collect();
    let leavers: Vec<String> = (0..4).map(|i| format!("z{i}")).collect();
    let all: Vec<&str> = grantees
        .iter()
        .chain(&leavers)
        .map(String::as_str)
        .collect();
    let kc = kc_with_users(&all);
    let j = start(POLICY, kc.clone(), "keycloak_concurrency = 2").await;
    let active: Vec<String> = leavers.iter().map(|u| j.request(u, "open", 3600)).collect();
    for id in &active {
        j.wait(id, "active", SECS, |s| s.request.status() == Status::Active)
            .await;
    }
    kc.set_latency(Duration::from_millis(50));
    let before = kc.calls().len();
    let later = Utc::now() + chrono::Duration::hours(1);
    let starting: Vec<String> = grantees
        .iter()
        .map(|u| j.request_at(u, "open", 3600, Some(later)))
        .collect();
    // One transaction: the 4 grants end and the 30 start at one instant,
    // so one tick sees them all.
    let now = Utc::now();
    let all_ids: Vec<String> = active.iter().chain(&starting).cloned().collect();
    j.state()
        .store
        .sync()
        .update_each(&all_ids, move |s| {
            let mut st = s.request.to_stored();
            if s.request.status() == Status::Active {
                st.expires_at = Some(now);
            } else {
                st.start_at = Some(now);
            }
            s.request = jit_core::AccessRequest::restore(st);
            Ok(vec![])
        })
        .unwrap();
    j.state().wake.notify_one();
    for id in &active {
        j.wait(id, "removed", Duration::from_secs(30), |s| {
            s.grant.removed_at.is_some()
        })
        .await;
    }
    for id in &starting {
        j.wait(id, "active", Duration::from_secs(60), |s| {
            s.request.status() == Status::Active
        })
        .await;
    }
    let mut calls: Vec<_> = kc.calls()[before..]
        .iter()
        .filter(|c| matches!(c.op, Op::Holds | Op::Assign | Op::Unassign))
        .cloned()
        .collect();
    calls.sort_by_key(|c| c.start);
    let first: Vec<(Op, String)> = calls
        .iter()
        .take(leavers.len())
        .map(|c| (c.op, c.user.clone()))
        .collect();
    assert!(
        first.iter().all(|(op, _)| *op == Op::Unassign),
        "the first Keycloak calls of the tick were {first:?}, not the 4 removals"
    );
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_grants_of_one_target_decides_ownership_from_one_read_and_keeps_standing_holders(
) {
    let users: Vec<String> = (0..40).map(|i| format!("b{i:02}")).collect();
    let all: Vec<&str> = users.iter().map(String::as_str).collect();
    let kc = kc_with_users(&all);
    // b05 holds the role outside JIT (standing).
    kc.edit_user("b05", |u| {
        u.assigned.insert(open_role());
    });
    // One slot: the grants waiting for the shared read must not hold it.
    let j = start(POLICY, kc.clone(), "keycloak_concurrency = 1").await;
    let before = kc.calls().len();
    let later = Utc::now() + chrono::Duration::hours(1);
    let ids: Vec<String> = users
        .iter()
        .map(|u| j.request_at(u, "open", 3600, Some(later)))
        .collect();
    // All due at once, in one transaction: one tick hands them all out.
    j.make_due_now(&ids);
    let mut owns = Vec::new();
    for id in &ids {
        let s = j
            .wait(id, "active", Duration::from_secs(30), |s| {
                s.request.status() == Status::Active
            })
            .await;
        owns.push((
            s.request.requester_id().to_string(),
            s.grant.owns_assignment,
        ));
    }
    let calls = kc.calls()[before..].to_vec();
    let reads = calls.iter().filter(|c| c.op == Op::Holders).count();
    let per_user = calls.iter().filter(|c| c.op == Op::Holds).count();
    assert_eq!(
        (reads, per_user),
        (1, 0),
        "one read of the role's holders for the whole burst, none per user"
    );
    for (user, owned) in &owns {
        let want = user != "b05";
        assert_eq!(*owned, Some(want), "ownership of {user}'s grant");
    }
    // The standing holder keeps the role when the grants end; the others
    // lose it.
    for id in &ids {
        end_now(&j, id);
    }
    for id in &ids {
        j.wait(id, "removal finished", Duration::from_secs(30), |s| {
            !s.grant.removal_pending
        })
        .await;
    }
    for u in &users {
        assert_eq!(kc.has(u, &open_role()), u == "b05", "{u} in Keycloak");
    }
    j.stop().await;
}

/// The rows of the scheduler's group commits reach the event hub from
/// the commit itself: however the workers of one batch are woken, the hub
/// never finds a row missing and reads nothing back from the store (it
/// read about one batch in two before, with the requests of the rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_s_rows_reach_the_event_hub_without_store_reads() {
    let users: Vec<String> = (0..30).map(|i| format!("h{i:02}")).collect();
    let all: Vec<&str> = users.iter().map(String::as_str).collect();
    let kc = kc_with_users(&all);
    kc.set_latency(Duration::from_millis(5));
    let j = start(POLICY, kc.clone(), "").await;
    let later = Utc::now() + chrono::Duration::hours(1);
    let ids: Vec<String> = users
        .iter()
        .map(|u| j.request_at(u, "open", 3600, Some(later)))
        .collect();
    let reads_before = j.state().events.store_reads();
    j.make_due_now(&ids);
    for id in &ids {
        j.wait(id, "active", Duration::from_secs(30), |s| {
            s.request.status() == Status::Active
        })
        .await;
    }
    assert_hub_read_nothing_since(&j, reads_before).await;
    j.stop().await;
}

/// The same on PostgreSQL, where this jitd's own writes also come back
/// on the database's channel, often before their writer has handed the
/// rows to the hub: they do not send the hub to the store either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_burst_s_rows_reach_the_event_hub_without_store_reads() {
    // The store's PostgreSQL driver blocks: its calls run off the runtime.
    let url = tokio::task::spawn_blocking(jit_testkit::postgres::test_database)
        .await
        .unwrap()
        .expect("a real PostgreSQL for this test");
    let users: Vec<String> = (0..30).map(|i| format!("p{i:02}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let kc = kc_with_users(&refs);
    kc.set_latency(Duration::from_millis(5));
    let j = start_on(POLICY, kc.clone(), "", &url).await;
    let later = Utc::now() + chrono::Duration::hours(1);
    let (ids, reads_before) = std::thread::scope(|t| {
        t.spawn(|| {
            let ids: Vec<String> = users
                .iter()
                .map(|u| j.request_at(u, "open", 3600, Some(later)))
                .collect();
            let before = j.state().events.store_reads();
            j.make_due_now(&ids);
            (ids, before)
        })
        .join()
        .unwrap()
    });
    let store = j.state().store.clone();
    for id in &ids {
        let mut granted = false;
        for _ in 0..1500 {
            let s = store.get(id).await.unwrap().expect("stored");
            if s.request.status() == Status::Active {
                granted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(granted, "{id} granted within 30 s");
    }
    assert_hub_read_nothing_since(&j, reads_before).await;
    j.stop().await;
}

/// Waits (at most 20 s) until `j`'s hub has broadcast every row announced
/// so far, then asserts it read none of them back from the audit log since
/// its count was `before`.
async fn assert_hub_read_nothing_since(j: &TestJitd, before: u64) {
    let last = *j.state().last_seq.borrow();
    let mut published = j.state().events.published();
    tokio::time::timeout(Duration::from_secs(20), published.wait_for(|p| *p >= last))
        .await
        .expect("the hub broadcast every row within 20 s")
        .unwrap();
    assert_eq!(
        j.state().events.store_reads() - before,
        0,
        "the hub read rows back from the store"
    );
}

/// Most Keycloak calls of `op` that overlapped in time.
fn most_at_once(kc: &FakeKeycloak, op: Op) -> usize {
    let calls: Vec<_> = kc.calls().into_iter().filter(|c| c.op == op).collect();
    calls
        .iter()
        .map(|c| {
            calls
                .iter()
                .filter(|o| o.start <= c.start && o.end.is_none_or(|e| e > c.start))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Two jitd on one PostgreSQL share a burst: each claims only what it can
/// start soon (5 × `keycloak_concurrency`) and more as its slots free up,
/// so both replicas' Keycloak slots work on it. Before, the first tick to
/// see the burst claimed all of it and the other replica found nothing:
/// never more than one replica's `keycloak_concurrency` (2) grants in
/// flight. Every grant still happens exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_postgres_share_a_burst() {
    // The store's PostgreSQL driver blocks: its calls run off the runtime.
    let url = tokio::task::spawn_blocking(jit_testkit::postgres::test_database)
        .await
        .unwrap()
        .expect("a real PostgreSQL for this test");
    let users: Vec<String> = (0..16).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let kc = kc_with_users(&refs);
    kc.set_latency(Duration::from_millis(150));
    let a = start_on(POLICY, kc.clone(), "keycloak_concurrency = 2", &url).await;
    let b = start_on(POLICY, kc.clone(), "keycloak_concurrency = 2", &url).await;
    // All due at one instant, a little ahead: both replicas sleep until it.
    let at = Utc::now() + chrono::Duration::seconds(2);
    let ids: Vec<String> = std::thread::scope(|t| {
        t.spawn(|| {
            users
                .iter()
                .map(|u| a.request_at(u, "open", 3600, Some(at)))
                .collect()
        })
        .join()
        .unwrap()
    });
    b.state().wake.notify_one();
    let store = a.state().store.clone();
    for id in &ids {
        let mut granted = false;
        for _ in 0..3000 {
            let s = store.get(id).await.unwrap().expect("stored");
            if s.request.status() == Status::Active {
                granted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(granted, "{id} granted within 60 s");
    }
    for u in &users {
        assert!(kc.has(u, &open_role()), "{u} holds the role");
    }
    assert_eq!(kc.count(Op::Assign), 16, "each grant assigned exactly once");
    let most = most_at_once(&kc, Op::Assign);
    assert!(
        most > 2,
        "both replicas worked on the burst: at most {most} assignments were in flight at once (one replica's concurrency is 2)"
    );
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok, "one audit chain: {v:?}");
    // A replica stopping cleanly says so: the others do not take it for
    // one that died.
    let b_owner = b.state().replica.clone();
    b.stop().await;
    let (st, owner) = (store.clone(), b_owner.clone());
    let gone = tokio::task::spawn_blocking(move || {
        st.sync()
            .raw_writer()
            .unwrap()
            .query(
                "SELECT COUNT(*) FROM jit_replicas WHERE owner = ? AND gone_at IS NOT NULL",
                &[jit_server::store::db::P::from(owner.as_str())],
            )
            .unwrap()[0][0]
            .int()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(gone, 1, "{b_owner} marked gone when it stopped");
    a.stop().await;
}

/// A read of a target's holders made for a burst is shared by the grants
/// of later ticks for a few seconds, but a user it shows as a holder is
/// asked again per user: the assignment may have changed since (here a
/// standing one was taken away; in the same way a JIT grant of the same
/// assignment removed meanwhile, by this replica or another, must not
/// make a new grant look standing — JIT would then never remove it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holders_read_from_an_earlier_tick_is_not_trusted_for_who_holds() {
    let users: Vec<String> = (0..6).map(|i| format!("h{i}")).collect();
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.push("c");
    let kc = kc_with_users(&all);
    kc.edit_user("c", |u| {
        u.assigned.insert(open_role());
    });
    let j = start(POLICY, kc.clone(), "keycloak_concurrency = 4").await;
    let later = Utc::now() + chrono::Duration::hours(1);
    let ids: Vec<String> = users
        .iter()
        .map(|u| j.request_at(u, "open", 3600, Some(later)))
        .collect();
    // All due at once: one tick reads the role's holders (c among them).
    j.make_due_now(&ids);
    for id in &ids {
        j.wait(id, "active", SECS, |s| s.request.status() == Status::Active)
            .await;
    }
    assert_eq!(kc.count(Op::Holders), 1, "one read for the burst");
    // c's standing assignment is taken away; then c's own grant comes, in
    // a later tick, while that read is still fresh.
    kc.edit_user("c", |u| {
        u.assigned.remove(&open_role());
    });
    let holds_before = kc.count(Op::Holds);
    let id = j.request("c", "open", 3600);
    let s = j
        .wait(&id, "active", SECS, |s| {
            s.request.status() == Status::Active
        })
        .await;
    assert_eq!(
        s.grant.owns_assignment,
        Some(true),
        "c's grant is JIT's (the older read showed c as a holder)"
    );
    assert!(kc.has("c", &open_role()));
    assert_eq!(kc.count(Op::Holders), 1, "the burst's read was shared");
    assert!(kc.count(Op::Holds) > holds_before, "c was asked per user");
    j.stop().await;
}
