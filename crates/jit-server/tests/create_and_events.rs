//! The create call's Keycloak look-ups (run together, errors in the order
//! of the checks) and the event stream's frames and timers, through the
//! router (axum `oneshot`, no socket) against the fault-injecting Keycloak.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use futures::StreamExt;
use support::*;
use tower::ServiceExt;

const POLICY: &str = r#"
[[entitlement]]
id = "open"
realm_role = "open-role"
max_duration = "1h"
approver_roles = ["approver"]

[[entitlement]]
id = "guarded"
realm_role = "guarded-role"
max_duration = "1h"
approver_roles = ["approver"]
requester_roles = ["requester"]

[[entitlement]]
id = "capped"
realm_role = "capped-role"
max_duration = "1h"
max_total_duration = "1h30m"
approver_roles = ["approver"]
[[entitlement.auto_approve]]
requester_role = "auto"

[[entitlement]]
id = "ghost"
realm_role = "no-such-role"
max_duration = "1h"
approver_roles = ["approver"]

[[entitlement]]
id = "team"
group = "/ops-team"
max_duration = "1h"
approver_roles = ["approver"]
"#;

fn kc() -> Arc<FakeKeycloak> {
    let kc = Arc::new(FakeKeycloak::default());
    kc.add_user("alice", &[], &[]);
    kc.add_user("carol", &[], &[]);
    kc.set_target(
        jit_core::EntitlementKind::RealmRole {
            role: "no-such-role".into(),
        },
        jit_keycloak::TargetStatus::Missing("realm role 'no-such-role' does not exist".into()),
    );
    kc
}

fn body(entitlement: &str) -> serde_json::Value {
    serde_json::json!({
        "entitlement": entitlement,
        "duration": "10m",
        "justification": "router test of the create call",
    })
}

/// For a realm role, with the caller's rights not cached, the one read of
/// their effective realm roles (`current_user`) answers the standing
/// look-up too: no `holds` call, and a role held is still `already_held`.
/// For a group the standing look-up (`holds`) is asked beside the rights
/// (`current_user`), not after it: with each Admin API call taking 300 ms,
/// the two calls overlap.
#[tokio::test]
async fn create_asks_the_standing_lookup_with_the_rights_lookup() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    kc.set_latency(Duration::from_millis(300));
    let alice = j.issuer.token("alice", &[]);
    let (status, created) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let calls = kc.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.op == Op::UserAccess && c.user == "alice")
            .count(),
        1,
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.op == Op::Holds),
        "one read answers both: {calls:?}"
    );
    kc.edit_user("carol", |u| {
        u.assigned.insert(jit_core::EntitlementKind::RealmRole {
            role: "open-role".into(),
        });
    });
    let carol = j.issuer.token("carol", &[]);
    let (status, b) = send(&j, "POST", "/v1/requests", &carol, Some(body("open"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], "already_held", "{b}");
    j.stop().await;

    // A group: a fresh jitd (nothing cached).
    let kc = self::kc();
    let j = start(POLICY, kc.clone(), "").await;
    kc.set_latency(Duration::from_millis(300));
    let alice = j.issuer.token("alice", &[]);
    let (status, created) = send(&j, "POST", "/v1/requests", &alice, Some(body("team"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let calls = kc.calls();
    let rights = calls
        .iter()
        .find(|c| c.op == Op::UserAccess && c.user == "alice")
        .expect("a rights look-up");
    let holds = calls
        .iter()
        .find(|c| c.op == Op::Holds && c.user == "alice")
        .expect("a standing look-up");
    assert!(
        holds.start < rights.end.unwrap() && rights.start < holds.end.unwrap(),
        "the look-ups ran one after the other: {calls:?}"
    );
    j.stop().await;
}

/// Running the look-ups together keeps the answers of the checks in their
/// order: rights and policy (403) before availability (409 unavailable)
/// before the standing check (409 already held, or its Keycloak error).
#[tokio::test]
async fn create_answers_in_the_order_of_its_checks_whichever_lookup_fails() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    // carol's token says `requester`, Keycloak says otherwise now; the
    // standing look-up (started because of the token) fails.
    let carol = j.issuer.token("carol", &["requester"]);
    kc.fail(Some(Op::Holds), None, Fault::Server(503), None);
    let (status, b) = send(&j, "POST", "/v1/requests", &carol, Some(body("guarded"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["code"], "not_a_requester", "{b}");
    // A disabled account: 403 too, not the look-up's 503.
    kc.edit_user("alice", |u| u.enabled = false);
    let alice = j.issuer.token("alice", &[]);
    let (status, b) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{b}");
    kc.edit_user("alice", |u| u.enabled = true);
    // Wait out the rights cache (2 s) on Keycloak's answers, not a clock:
    // the enabled flag counts once the cache has let go of it. A group,
    // whose standing look-up is a call of its own (for a realm role the
    // rights read answers it).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, b) = send(&j, "POST", "/v1/requests", &alice, Some(body("team"))).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(b["code"], "keycloak_unavailable", "{b}");
            break;
        }
        assert_eq!(status, StatusCode::FORBIDDEN, "{b}");
        assert!(std::time::Instant::now() < deadline, "still refused: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kc.clear_faults();
    // Unavailable target and already held: availability answers first.
    kc.edit_user("alice", |u| {
        u.assigned.insert(jit_core::EntitlementKind::RealmRole {
            role: "no-such-role".into(),
        });
    });
    let (status, b) = send(&j, "POST", "/v1/requests", &alice, Some(body("ghost"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], "entitlement_unavailable", "{b}");
    // Held, available: the standing check's answer.
    kc.edit_user("alice", |u| {
        u.assigned.insert(jit_core::EntitlementKind::RealmRole {
            role: "open-role".into(),
        });
    });
    let (status, b) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], "already_held", "{b}");
    j.stop().await;
}

/// With the caller's rights cached, a realm role's standing look-up is a
/// call of its own (never cached): when it fails, the create answers 503,
/// never a request made without knowing whether the role is held.
#[tokio::test]
async fn with_cached_rights_a_failed_standing_lookup_is_503() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    let alice = j.issuer.token("alice", &[]);
    kc.fail(Some(Op::Holds), None, Fault::Server(503), None);
    // Each try first fills the rights cache (a "team" request, refused by
    // the failing look-up), then asks for the realm role; a try whose
    // rights were read again (the 2 s cache let go on a slow machine)
    // proves nothing and is made again, a bounded number of times.
    for _ in 0..20 {
        let (status, _) = send(&j, "POST", "/v1/requests", &alice, Some(body("team"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let reads = kc.count(Op::UserAccess);
        let (status, b) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
        if kc.count(Op::UserAccess) != reads {
            continue;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert_eq!(b["code"], "keycloak_unavailable", "{b}");
        j.stop().await;
        return;
    }
    panic!("the rights cache never answered the second of two calls in a row");
}

/// A negative sequence number is refused alike by the audit and the event
/// stream (the audit used to answer every row).
#[tokio::test]
async fn a_negative_since_is_400_for_audit_and_events() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    let alice = j.issuer.token("alice", &[]);
    for path in ["/v1/audit?since=-1", "/v1/events?since=-1"] {
        let (status, b) = send(&j, "GET", path, &alice, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {b}");
        assert!(b["detail"].as_str().unwrap().contains("≥ 0"), "{path}: {b}");
    }
    let (status, _) = send(&j, "GET", "/v1/audit?since=0", &alice, None).await;
    assert_eq!(status, StatusCode::OK);
    j.stop().await;
}

/// The role Keycloak showed held is removed (a grant's removal landing)
/// between that answer and the store's reads: the create goes through
/// (Keycloak is asked again before a standing refusal), not a false
/// `already_held`.
#[tokio::test]
async fn a_role_removed_during_the_standing_check_is_not_called_standing() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    let open = jit_core::EntitlementKind::RealmRole {
        role: "open-role".into(),
    };
    kc.edit_user("alice", |u| {
        u.assigned.insert(open.clone());
    });
    // The first read (the rights, which answer the standing look-up for a
    // realm role) shows it held; it is gone right after.
    kc.after_next(Op::UserAccess, move |kc| {
        kc.edit_user("alice", |u| {
            u.assigned.remove(&open);
        })
    });
    let alice = j.issuer.token("alice", &[]);
    let (status, b) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert_eq!(kc.count(Op::Holds), 1, "asked again: {:?}", kc.calls());
    j.stop().await;
}

/// A caller whose token does not make them a requester costs no standing
/// look-up when Keycloak agrees; when Keycloak says they are one now, the
/// look-up is still made (after the rights) and the request goes through.
#[tokio::test]
async fn the_standing_lookup_follows_the_rights_keycloak_gives() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    let carol = j.issuer.token("carol", &[]);
    let (status, b) = send(&j, "POST", "/v1/requests", &carol, Some(body("guarded"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(kc.count(Op::Holds), 0, "{:?}", kc.calls());
    kc.edit_user("carol", |u| {
        u.roles.insert("requester".into());
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, b) = send(&j, "POST", "/v1/requests", &carol, Some(body("guarded"))).await;
        if status == StatusCode::CREATED {
            break;
        }
        assert_eq!(status, StatusCode::FORBIDDEN, "{b}");
        assert!(std::time::Instant::now() < deadline, "still refused: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kc.count(Op::Holds), 1, "{:?}", kc.calls());
    j.stop().await;
}

/// The create call answers from what it inserted: the same view a read of
/// the request gives right after.
#[tokio::test]
async fn the_create_answer_is_the_stored_request() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    let alice = j.issuer.token("alice", &[]);
    let (status, mut created) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (status, shown) = send(&j, "GET", &format!("/v1/requests/{id}"), &alice, None).await;
    assert_eq!(status, StatusCode::OK);
    // Only the create answer carries `warnings` (here: nobody in this
    // fake Keycloak may approve); the rest is the stored request.
    created.as_object_mut().unwrap().remove("warnings");
    assert_eq!(created, shown);
    j.stop().await;
}

/// Opens `/v1/events` and returns its frames as they come.
async fn events(
    j: &TestJitd,
    token: &str,
) -> futures::stream::BoxStream<'static, Result<Bytes, axum::Error>> {
    let app = jit_server::api::router(j.state().clone());
    let resp = app
        .oneshot(request("GET", "/v1/events", token, None))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/event-stream",
        "{:?}",
        resp.headers()
    );
    resp.into_body().into_data_stream().boxed()
}

async fn next(
    s: &mut futures::stream::BoxStream<'static, Result<Bytes, axum::Error>>,
) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(20), s.next())
        .await
        .expect("a frame or the end within 20 s")
        .map(|f| String::from_utf8(f.unwrap().to_vec()).unwrap())
}

/// The first event frame of the stream `resp` (keep-alive comments
/// skipped), within 20 s a frame.
async fn next_event(resp: axum::response::Response) -> String {
    let mut s = resp.into_body().into_data_stream().boxed();
    loop {
        let f = next(&mut s).await.expect("the stream goes on");
        if f != ":\n\n" {
            return f;
        }
    }
}

/// Each event is one whole SSE frame (`id`, `event`, one `data` line of
/// `EventData`); an idle stream gets keep-alive comments; the create
/// call's event reaches the stream from its hand-over to the hub.
#[tokio::test]
async fn events_are_whole_frames_and_idle_streams_get_keep_alives() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    j.state().events.set_keep_alive(Duration::from_millis(100));
    let alice = j.issuer.token("alice", &[]);
    let mut s = events(&j, &alice).await;
    assert_eq!(next(&mut s).await.as_deref(), Some(":\n\n"), "keep-alive");
    let (status, created) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let frame = loop {
        let f = next(&mut s).await.expect("the stream goes on");
        if f != ":\n\n" {
            break f;
        }
    };
    let lines: Vec<&str> = frame.split('\n').collect();
    assert_eq!(lines.len(), 5, "{frame:?}");
    let seq: i64 = lines[0].strip_prefix("id: ").unwrap().parse().unwrap();
    assert_eq!(lines[1], "event: request.created");
    let data: jit_core::api::EventData =
        serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(data.record.seq, seq);
    assert_eq!(data.record.request_id, created["id"].as_str().unwrap());
    assert_eq!(data.request.unwrap().request.id(), created["id"]);
    assert_eq!((lines[3], lines[4]), ("", ""));
    // The create call handed its row and request to the hub: broadcast
    // without reading them back.
    assert!(j.state().events.handed_broadcast() >= 1);
    j.stop().await;
}

/// Rows this jitd writes reach the hub from their writers: the hub reads
/// none of them back from the audit log, not even to find there is nothing
/// more (that read was a round trip to the database for every write). (A
/// cancel hands its rows over without the request, which the hub then
/// reads for the event's view; `store_reads` does not count that.)
#[tokio::test]
async fn the_hub_reads_nothing_back_for_this_jitd_s_own_writes() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    let alice = j.issuer.token("alice", &[]);
    let mut s = events(&j, &alice).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, created) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        let (status, out) = send(
            &j,
            "POST",
            &format!("/v1/requests/{id}/cancel"),
            &alice,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{out}");
        ids.push(id);
    }
    // Every row written reaches the stream (the last one: the third
    // cancel), so the hub has dealt with all of them.
    let last = *j.state().last_seq.borrow();
    loop {
        let f = next(&mut s).await.expect("the stream goes on");
        if f.starts_with(&format!("id: {last}\n")) {
            break;
        }
    }
    assert_eq!(j.state().events.store_reads(), 0);
    assert!(j.state().events.handed_broadcast() >= 6);
    j.stop().await;
}

/// Two writes of one request that reach the hub together: each event
/// carries the request as its own write left it (the approval says
/// `approved`, the cancel right after it `cancelled`). The hub rendered
/// both with the first write's request.
#[tokio::test]
async fn each_event_carries_the_request_as_its_own_write_left_it() {
    let kc = kc();
    kc.add_user("bob", &["approver"], &[]);
    let j = start(POLICY, kc.clone(), "").await;
    let alice = j.issuer.token("alice", &[]);
    let mut s = events(&j, &alice).await;
    let (status, created) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let f = next(&mut s).await.expect("the created event");
    assert!(f.contains("event: request.created\n"), "{f}");

    // Two writes through the store, handed to the hub one after the other
    // with no await between them (this test's runtime has one thread):
    // the hub takes both at once.
    let state = j.state().clone();
    let e = state.policy().entitlement("open").unwrap().clone();
    // As the test tokens say them: the subject is the user name.
    let person = |name: &str, roles: &[&str]| jit_core::Principal {
        id: name.into(),
        username: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        groups: Default::default(),
        client_id: None,
    };
    let bob = person("bob", &["approver"]);
    let alice_p = person("alice", &[]);
    let approved = state
        .store
        .update(&id, move |s| {
            let t = s.request.vote(
                &e,
                &bob,
                jit_core::model::Decision::Approve,
                None,
                None,
                chrono::Utc::now(),
            )?;
            Ok(t.into_iter().map(Into::into).collect())
        })
        .await
        .unwrap();
    let cancelled = state
        .store
        .update(&id, move |s| {
            Ok(vec![s.request.cancel(&alice_p, chrono::Utc::now())?.into()])
        })
        .await
        .unwrap();
    state.published_with(&approved.1, &approved.0);
    state.published_with(&cancelled.1, &cancelled.0);

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let f = next(&mut s).await.expect("the stream goes on");
        if f.starts_with(':') {
            continue;
        }
        let data: jit_core::api::EventData = serde_json::from_str(
            f.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("a data line"),
        )
        .unwrap();
        seen.push((
            data.record.event.to_string(),
            data.request.expect("the request").request.status(),
        ));
    }
    assert_eq!(
        seen,
        vec![
            (
                "request.approved".to_string(),
                jit_core::model::Status::Approved
            ),
            (
                "request.cancelled".to_string(),
                jit_core::model::Status::Cancelled
            ),
        ]
    );
    assert_eq!(
        j.state().events.store_reads(),
        0,
        "both came from the writes"
    );
    j.stop().await;
}

/// A stream ends when its token does, keep-alives or not (the token's
/// timer is not re-armed by other frames).
#[tokio::test]
async fn a_stream_ends_with_its_token_while_keep_alives_flow() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    j.state().events.set_keep_alive(Duration::from_millis(50));
    let alice = j.issuer.token_lasting("alice", &[], 3);
    let mut s = events(&j, &alice).await;
    let mut keep_alives = 0;
    while let Some(f) = next(&mut s).await {
        assert_eq!(f, ":\n\n");
        keep_alives += 1;
    }
    assert!(keep_alives > 0, "no keep-alive before the end");
    j.stop().await;
}

/// Free text other than the justification is capped at 500 characters
/// (422 `text_too_long` naming the field, nothing recorded), and a body
/// over 64 KiB is refused 413 problem+json before it is parsed.
#[tokio::test]
async fn long_free_text_and_large_bodies_are_refused() {
    let kc = kc();
    kc.add_user("bob", &["approver"], &[]);
    let j = start(POLICY, kc.clone(), "").await;
    let alice = j.issuer.token("alice", &[]);
    let bob = j.issuer.token("bob", &["approver"]);
    let (status, created) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/v1/requests/{id}/deny");
    let long = serde_json::json!({ "comment": "x".repeat(5_000) });
    let (status, b) = send(&j, "POST", &path, &bob, Some(long)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["code"], "text_too_long", "{b}");
    assert!(b["detail"].as_str().unwrap().contains("comment"), "{b}");
    assert!(b["detail"].as_str().unwrap().contains("500"), "{b}");
    // 120,000 characters: over the body limit, 413 problem+json.
    let huge = serde_json::json!({ "comment": "x".repeat(120_000) });
    let app = jit_server::api::router(j.state().clone());
    let resp = app
        .oneshot(request("POST", &path, &bob, Some(huge)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let b: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(b["code"], "too_large", "{b}");
    // Nothing of it was recorded; a comment at the limit is taken.
    let (_, shown) = send(&j, "GET", &format!("/v1/requests/{id}"), &bob, None).await;
    assert_eq!(shown["status"], "pending", "{shown}");
    let ok = serde_json::json!({ "comment": "é".repeat(500) });
    let (status, b) = send(&j, "POST", &path, &bob, Some(ok)).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "denied", "{b}");
    j.stop().await;
}

/// A grant has at most one pending extension: a second one, sent alone or
/// beside another, is refused 409 `duplicate_pending` naming the pending
/// one (the store's unique index, so parallel calls cannot both pass).
#[tokio::test]
async fn a_grant_has_at_most_one_pending_extension() {
    let kc = kc();
    kc.add_user("bob", &["approver"], &[]);
    let j = start(POLICY, kc.clone(), "").await;
    let alice = j.issuer.token("alice", &[]);
    let bob = j.issuer.token("bob", &["approver"]);
    let (status, created) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (status, b) = send(
        &j,
        "POST",
        &format!("/v1/requests/{id}/approve"),
        &bob,
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    j.wait(&id, "the grant active", Duration::from_secs(30), |s| {
        s.request.status() == jit_core::Status::Active
    })
    .await;
    let ext = || {
        Some(serde_json::json!({
            "duration": "30m",
            "justification": "the migration runs longer",
        }))
    };
    let path = format!("/v1/requests/{id}/extend");
    // Two at once: exactly one is taken.
    let (a, b) = tokio::join!(
        send(&j, "POST", &path, &alice, ext()),
        send(&j, "POST", &path, &alice, ext())
    );
    let mut answers = [a, b];
    answers.sort_by_key(|(s, _)| s.as_u16());
    assert_eq!(answers[0].0, StatusCode::CREATED, "{:?}", answers);
    assert_eq!(answers[1].0, StatusCode::CONFLICT, "{:?}", answers);
    assert_eq!(answers[1].1["code"], "duplicate_pending", "{:?}", answers);
    let first = answers[0].1["id"].as_str().unwrap().to_string();
    let detail = answers[1].1["detail"].as_str().unwrap();
    assert!(
        detail.contains(&first) && detail.contains("pending extension"),
        "{:?}",
        answers
    );
    // And one after the other.
    let (status, b) = send(&j, "POST", &path, &alice, ext()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], "duplicate_pending", "{b}");
    // Once the first is decided, the slot is free again.
    let (status, b) = send(
        &j,
        "POST",
        &format!("/v1/requests/{first}/deny"),
        &bob,
        Some(serde_json::json!({ "comment": "not now" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let (status, b) = send(&j, "POST", &path, &alice, ext()).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    j.stop().await;
}

/// An extension that would make a grant run longer in all than the
/// entitlement's `max_total_duration` is refused at once (422
/// `total_duration_exceeds_max`, saying how much room is left); one that
/// fits is made.
#[tokio::test]
async fn an_extension_beyond_the_total_limit_is_refused_with_the_room_left() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    let id = j.request("alice", "capped", 40 * 60);
    j.wait(&id, "active", Duration::from_secs(10), |s| {
        s.request.status() == jit_core::Status::Active
    })
    .await;
    let alice = j.issuer.token("alice", &[]);
    let path = format!("/v1/requests/{id}/extend");
    let ext = |d: &str| {
        Some(serde_json::json!({"duration": d, "justification": "still on the incident"}))
    };
    let (status, b) = send(&j, "POST", &path, &alice, ext("1h")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["code"], "total_duration_exceeds_max", "{b}");
    let detail = b["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("1h30m") && detail.contains("room left: 50m"),
        "{b}"
    );
    let (status, b) = send(&j, "POST", &path, &alice, ext("50m")).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    j.stop().await;
}

/// Asking again for what a just-ended grant still holds while jitd is
/// removing it is not "a standing assignment": the refusal says the role
/// is being removed (409 `removal_in_progress`) and names the grant.
#[tokio::test]
async fn asking_again_while_the_ended_grant_is_being_removed_says_so() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    let id = j.request("alice", "capped", 40 * 60);
    j.wait(&id, "active", Duration::from_secs(10), |s| {
        s.request.status() == jit_core::Status::Active
    })
    .await;
    // Keycloak keeps failing the removal for now: it stays pending.
    kc.fail(Some(Op::Unassign), None, Fault::Server(503), None);
    j.state()
        .store
        .sync()
        .update(&id, |s| {
            let t = s.request.withdraw("test: end it now", chrono::Utc::now())?;
            Ok(jit_server::scheduler::end_grant(s, t))
        })
        .unwrap();
    j.state().wake.notify_one();
    j.wait(&id, "the removal pending", Duration::from_secs(10), |s| {
        s.grant.removal_pending && s.grant.last_error.is_some()
    })
    .await;
    let alice = j.issuer.token("alice", &[]);
    let (status, b) = send(&j, "POST", "/v1/requests", &alice, Some(body("capped"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], "removal_in_progress", "{b}");
    let detail = b["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&id) && !detail.contains("standing"), "{b}");
    j.stop().await;
}

/// A stream says where it starts (`JIT-Events-After`): a client that has
/// seen no event yet and loses the stream resumes from there, and gets
/// what was written meanwhile (`jit watch` reconnected without
/// `Last-Event-ID` and lost those events).
#[tokio::test]
async fn a_stream_says_where_it_starts_so_a_client_that_saw_nothing_resumes_exactly() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    let alice = j.issuer.token("alice", &[]);
    // One event before, so the position is not trivially 0.
    let (status, _) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
    assert_eq!(status, StatusCode::CREATED);
    // The hub broadcasts it on its own task: a stream opened before that
    // rightly starts after 0 (and gets it live).
    let mut position = j.state().events.published();
    tokio::time::timeout(Duration::from_secs(10), position.wait_for(|p| *p >= 1))
        .await
        .expect("the hub broadcasts the event within 10 s")
        .unwrap();
    let app = jit_server::api::router(j.state().clone());
    let first = app
        .oneshot(request("GET", "/v1/events", &alice, None))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let after: i64 = first.headers()[jit_server::events::EVENTS_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        after >= 1,
        "the stream starts after the event already written"
    );
    // The stream is lost before any event; one is written meanwhile.
    drop(first);
    let (status, created) = send(&j, "POST", "/v1/requests", &alice, Some(body("capped"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let mut req = request("GET", "/v1/events", &alice, None);
    req.headers_mut()
        .insert("last-event-id", after.to_string().parse().unwrap());
    let app = jit_server::api::router(j.state().clone());
    let resumed = app.oneshot(req).await.unwrap();
    assert_eq!(resumed.status(), StatusCode::OK);
    assert_eq!(
        resumed.headers()[jit_server::events::EVENTS_AFTER],
        after.to_string().as_str()
    );
    let frame = next_event(resumed).await;
    assert!(
        frame.contains(created["id"].as_str().unwrap()),
        "the event written while the stream was lost: {frame}"
    );
    j.stop().await;
}

/// A `Last-Event-ID` after the newest event (a client's bogus id, or the
/// database restored to an earlier point) starts the stream after the
/// newest event, which it says: new events arrive. Before, the stream
/// stayed silent until the log grew past the id.
#[tokio::test]
async fn an_event_id_past_the_newest_starts_after_the_newest() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    let alice = j.issuer.token("alice", &[]);
    let (status, _) = send(&j, "POST", "/v1/requests", &alice, Some(body("open"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let newest = j.state().store.last_seq().await.unwrap();
    let mut req = request("GET", "/v1/events", &alice, None);
    req.headers_mut()
        .insert("last-event-id", "99999999".parse().unwrap());
    let app = jit_server::api::router(j.state().clone());
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[jit_server::events::EVENTS_AFTER],
        newest.to_string().as_str()
    );
    let (status, created) = send(&j, "POST", "/v1/requests", &alice, Some(body("capped"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let frame = next_event(resp).await;
    assert!(
        frame.contains(created["id"].as_str().unwrap()),
        "the new event arrives: {frame}"
    );
    j.stop().await;
}

/// A request id that is not UTF-8 once percent-decoded is a 400 problem
/// like any other bad input, on every route that takes an id (it was
/// axum's plain-text rejection).
#[tokio::test]
async fn an_id_that_is_not_utf8_is_a_problem() {
    let j = start(POLICY, kc(), "").await;
    let t = j.issuer.token("alice", &[]);
    for (method, path, body) in [
        ("GET", "/v1/requests/%00%ff", None),
        (
            "POST",
            "/v1/requests/%ff/approve",
            Some(serde_json::json!({})),
        ),
        ("POST", "/v1/grants/%ff/drop", Some(serde_json::json!({}))),
    ] {
        let (status, problem) = send(&j, method, path, &t, body).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{method} {path}: {problem}"
        );
        assert_eq!(problem["code"], "bad_request", "{method} {path}: {problem}");
    }
    j.stop().await;
}
