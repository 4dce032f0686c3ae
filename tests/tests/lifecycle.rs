//! The whole access lifecycle and policy against the real Keycloak: N
//! approvals, deny, concurrency, pending TTL, scheduled start, shortening,
//! extension, overlaps, standing access, all three entitlement kinds,
//! session logout at revoke, auto-approval, break-glass, policy reload.
//! Each test checks the effect in Keycloak itself.

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use jit_client::Client;
use jit_core::api::CreateRequestBody;
use jit_core::{EntitlementKind, Status};
use jit_e2e::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A test policy: every entitlement approvable by bob (jit-approver-db) and
/// carol (jit-approver-ops); `extra` is appended per entitlement as needed.
fn policy(db_extra: &str, billing_extra: &str, incident_extra: &str) -> String {
    format!(
        r#"
auditor_roles = ["jit-auditor"]

[[entitlement]]
id = "prod-db-admin"
realm_role = "prod-db-admin"
max_duration = "1h"
approver_roles = ["jit-approver-db", "jit-approver-ops"]
{db_extra}

[[entitlement]]
id = "billing-admin"
client_role = {{ client = "billing-app", role = "billing-admin" }}
max_duration = "1h"
approver_roles = ["jit-approver-db", "jit-approver-ops"]
{billing_extra}

[[entitlement]]
id = "incident-responder"
group = "/incident-responders"
max_duration = "1h"
approver_roles = ["jit-approver-ops"]
{incident_extra}
"#
    )
}

async fn create(
    c: &Client,
    entitlement: &str,
    duration: &str,
) -> Result<String, jit_client::ClientError> {
    c.create(&CreateRequestBody {
        entitlement: entitlement.into(),
        duration: Some(duration.into()),
        justification: "lifecycle end-to-end test".into(),
        ..Default::default()
    })
    .await
    .map(|r| r.request.id().to_string())
}

async fn wait_status(c: &Client, id: &str, want: Status, within: Duration) {
    eventually(within, &format!("request {id} to be {want}"), || async {
        c.get(id).await.unwrap().request.status() == want
    })
    .await;
}

async fn events_of(dave: &Client, id: &str) -> Vec<String> {
    dave.audit(0)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.request_id == id)
        .map(|a| a.event.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_approvals_client_role_and_one_deny() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(&policy("", "approvals_required = 2", ""));
    let (alice, bob, carol) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("bob").await),
        jitd.client(&token("carol").await),
    );
    let has_billing = || async {
        ctx.probe
            .client_roles("alice", "billing-app")
            .await
            .unwrap()
            .contains(&"billing-admin".to_string())
    };

    let id = create(&alice, "billing-admin", "10m").await.unwrap();
    let r = bob.approve(&id, Some("one".into()), None).await.unwrap();
    assert_eq!(r.request.status(), Status::Pending, "1 of 2 approvals");
    assert_eq!(r.request.votes().len(), 1);
    assert_eq!(
        alice.get(&id).await.unwrap().request.votes()[0].approver_username,
        "bob",
        "votes are visible"
    );
    let again = bob.approve(&id, None, None).await.unwrap_err();
    assert_eq!(again.code(), Some("already_voted"));
    assert!(!has_billing().await);
    carol.approve(&id, Some("two".into()), None).await.unwrap();
    wait_status(&alice, &id, Status::Active, secs(5)).await;
    assert!(has_billing().await, "client role granted in Keycloak");
    alice.drop_grant(&id).await.unwrap();
    eventually(secs(5), "client role removed", || async {
        !has_billing().await
    })
    .await;

    // One deny ends it, whatever the approvals so far.
    let id = create(&alice, "billing-admin", "10m").await.unwrap();
    bob.approve(&id, None, None).await.unwrap();
    let e = carol.deny(&id, "  ").await.unwrap_err();
    assert_eq!(e.code(), Some("comment_required"));
    let r = carol.deny(&id, "not during the freeze").await.unwrap();
    assert_eq!(r.request.status(), Status::Denied);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!has_billing().await, "nothing granted after a deny");
    let dave = jitd.client(&token("dave").await);
    assert_eq!(
        events_of(&dave, &id).await,
        ["request.created", "request.voted", "request.denied"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_approvals_make_one_grant() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(&policy("", "approvals_required = 2", ""));
    let (alice, bob, carol, dave) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("bob").await),
        jitd.client(&token("carol").await),
        jitd.client(&token("dave").await),
    );
    for round in 0..5 {
        // One approval needed, two arrive at once: one wins, one is told.
        let id = create(&alice, "prod-db-admin", "10m").await.unwrap();
        let (a, b) = tokio::join!(bob.approve(&id, None, None), carol.approve(&id, None, None));
        let oks = [a.is_ok(), b.is_ok()].iter().filter(|x| **x).count();
        assert_eq!(oks, 1, "round {round}: exactly one approval decides");
        let loser = a.err().or(b.err()).unwrap();
        assert_eq!(loser.code(), Some("illegal_transition"), "{loser}");
        wait_status(&alice, &id, Status::Active, secs(5)).await;
        let ev = events_of(&dave, &id).await;
        assert_eq!(
            ev,
            ["request.created", "request.approved", "grant.granted"],
            "round {round}"
        );
        alice.drop_grant(&id).await.unwrap();
        wait_status(&alice, &id, Status::Revoked, secs(5)).await;
        eventually(secs(5), "removed", || async {
            !ctx.has_realm_role("alice", "prod-db-admin").await
        })
        .await;
    }
    // Two approvals needed, both at once: both count, one grant.
    let id = create(&alice, "billing-admin", "10m").await.unwrap();
    let (a, b) = tokio::join!(bob.approve(&id, None, None), carol.approve(&id, None, None));
    assert!(a.is_ok() && b.is_ok());
    wait_status(&alice, &id, Status::Active, secs(5)).await;
    assert_eq!(
        events_of(&dave, &id).await,
        [
            "request.created",
            "request.voted",
            "request.approved",
            "grant.granted"
        ]
    );
    alice.drop_grant(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_ttl_lapses_and_the_requester_is_told() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(&policy("pending_ttl = \"2s\"", "", ""));
    let (alice, bob) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("bob").await),
    );
    let mut alice_events = Box::pin(alice.events(None).await.unwrap());
    let id = create(&alice, "prod-db-admin", "10m").await.unwrap();
    wait_status(&alice, &id, Status::Lapsed, secs(6)).await;
    let e = bob.approve(&id, None, None).await.unwrap_err();
    assert_eq!(e.code(), Some("illegal_transition"), "{e}");
    let mut names = Vec::new();
    while let Ok(Some(Ok(ev))) = tokio::time::timeout(secs(2), alice_events.next()).await {
        names.push(ev.event.to_string());
    }
    assert_eq!(names, ["request.created", "request.lapsed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_start_and_shortening() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(&policy("", "", ""));
    let (alice, bob) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("bob").await),
    );
    let start = Utc::now() + chrono::Duration::seconds(4);
    let r = alice
        .create(&CreateRequestBody {
            entitlement: "prod-db-admin".into(),
            duration: Some("10m".into()),
            justification: "maintenance window later".into(),
            start_at: Some(start),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = r.request.id();
    // An approver may shorten, never lengthen.
    let e = bob.approve(id, None, Some("11m".into())).await.unwrap_err();
    assert_eq!(e.code(), Some("cannot_lengthen"));
    let r = bob.approve(id, None, Some("5s".into())).await.unwrap();
    assert_eq!(r.request.status(), Status::Approved);
    assert_eq!(r.request.duration_secs(), 5);
    tokio::time::sleep(secs(2)).await;
    assert!(
        !ctx.has_realm_role("alice", "prod-db-admin").await,
        "not before the start time"
    );
    assert_eq!(
        alice.get(id).await.unwrap().request.status(),
        Status::Approved
    );
    wait_status(&alice, id, Status::Active, secs(5)).await;
    assert!(ctx.has_realm_role("alice", "prod-db-admin").await);
    let r = alice.get(id).await.unwrap().request;
    let activated = r.activated_at().unwrap();
    assert!(activated >= start, "granted at the start time, not before");
    assert_eq!(
        (r.expires_at().unwrap() - activated).num_seconds(),
        5,
        "counts from activation"
    );
    wait_status(&alice, id, Status::Expired, secs(8)).await;
    eventually(secs(3), "removed", || async {
        !ctx.has_realm_role("alice", "prod-db-admin").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_moves_the_end_without_a_gap() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(&policy("", "", ""));
    let (alice, bob) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("bob").await),
    );
    let id = create(&alice, "prod-db-admin", "5s").await.unwrap();
    bob.approve(&id, None, None).await.unwrap();
    wait_status(&alice, &id, Status::Active, secs(5)).await;
    let old_end = alice.get(&id).await.unwrap().request.expires_at().unwrap();
    let ext = alice
        .extend(&id, "8s", "need a few more seconds")
        .await
        .unwrap();
    assert_eq!(ext.request.status(), Status::Pending);
    let e = alice
        .approve(ext.request.id(), None, None)
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some("self_approval"),
        "extensions follow the same rules"
    );
    let applied = bob.approve(ext.request.id(), None, None).await.unwrap();
    // An applied extension is over, as part of its grant: never an open
    // request, and the grant shows it with its whole length.
    assert_eq!(applied.request.status(), Status::Applied);
    let g = alice.get(&id).await.unwrap();
    assert_eq!(g.total_secs, 5 + 8);
    assert_eq!(g.request.duration_secs(), 5);
    let x = &g.request.extensions();
    assert_eq!(x.len(), 1, "{x:?}");
    assert_eq!(
        (
            x[0].id.as_str(),
            x[0].requested_by.as_str(),
            x[0].added_secs
        ),
        (ext.request.id(), "alice", 8)
    );
    assert_eq!(x[0].approved_by, vec!["bob".to_string()]);
    assert!(
        !alice
            .list(&jit_client::ListQuery {
                mine: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .any(|r| !r.request.status().is_terminal() && r.request.id() == ext.request.id()),
        "the applied extension is not an open request"
    );
    // An applied extension is done: it cannot be revoked or cancelled on its own.
    let e = bob
        .revoke(ext.request.id(), "take it back")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("illegal_transition"), "{e}");
    let e = alice.cancel(ext.request.id()).await.unwrap_err();
    assert_eq!(e.code(), Some("illegal_transition"), "{e}");
    let g = alice.get(&id).await.unwrap().request;
    assert_eq!(g.status(), Status::Active);
    assert_eq!(
        g.expires_at().unwrap(),
        old_end + chrono::Duration::seconds(8)
    );
    // The role never leaves Keycloak around the old end.
    while Utc::now() < old_end + chrono::Duration::seconds(2) {
        assert!(
            ctx.has_realm_role("alice", "prod-db-admin").await,
            "gap at the old end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_status(&alice, &id, Status::Expired, secs(10)).await;
    eventually(secs(3), "removed at the new end", || async {
        !ctx.has_realm_role("alice", "prod-db-admin").await
    })
    .await;
    let dave = jitd.client(&token("dave").await);
    let ev = events_of(&dave, &id).await;
    assert!(ev.contains(&"grant.extended".to_string()), "{ev:?}");
    assert!(
        events_of(&dave, ext.request.id())
            .await
            .contains(&"extension.applied".to_string()),
        "the extension's end is audited"
    );
    assert_eq!(
        ev.iter().filter(|e| *e == "grant.granted").count(),
        1,
        "no re-grant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_of_a_group_ends_the_sessions() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(&policy("", "", "end_sessions_on_revoke = true"));
    let session =
        jit_testkit::pkce_login(&ctx.env, jit_testkit::CLI_CLIENT_ID, "alice", "alice-pass")
            .await
            .unwrap();
    let alice = jitd.client(&session.access_token);
    let carol = jitd.client(&token("carol").await);
    let bob = jitd.client(&token("bob").await);
    let id = create(&alice, "incident-responder", "10m").await.unwrap();
    let e = bob.approve(&id, None, None).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some("not_found"),
        "bob does not approve incident-responder"
    );
    carol.approve(&id, None, None).await.unwrap();
    wait_status(&alice, &id, Status::Active, secs(5)).await;
    assert!(ctx
        .probe
        .groups("alice")
        .await
        .unwrap()
        .contains(&"incident-responders".to_string()));
    let refreshed =
        jit_testkit::refresh(&ctx.env, jit_testkit::CLI_CLIENT_ID, &session.refresh_token)
            .await
            .unwrap();
    let groups = refreshed.access_claims().unwrap()["groups"].clone();
    assert!(
        groups.to_string().contains("incident-responders"),
        "{groups}"
    );

    let e = bob.revoke(&id, "no").await.unwrap_err();
    assert_eq!(e.code(), Some("not_found"));
    carol.revoke(&id, "incident closed").await.unwrap();
    eventually(secs(5), "membership removed", || async {
        !ctx.probe
            .groups("alice")
            .await
            .unwrap()
            .contains(&"incident-responders".to_string())
    })
    .await;
    let dave = jitd.client(&token("dave").await);
    let removal = || async {
        dave.audit(0)
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.request_id == id && a.event == jit_core::api::EventKind::GrantRemoved)
            .and_then(|a| a.reason)
    };
    eventually(secs(5), "the removal audited", || async {
        removal().await.is_some()
    })
    .await;
    let removed = removal().await.unwrap_or_default();
    assert!(removed.contains("sessions ended"), "{removed}");
    eventually(secs(5), "no Keycloak session left", || async {
        ctx.probe.session_count("alice").await.unwrap() == 0
    })
    .await;
    eventually(secs(15), "the refresh token refused", || async {
        jit_testkit::refresh(
            &ctx.env,
            jit_testkit::CLI_CLIENT_ID,
            &refreshed.refresh_token,
        )
        .await
        .is_err()
    })
    .await;
    // Tokens already issued keep the group until they expire (120 s for
    // jit-cli); ending the sessions stops any new one from being minted.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_grants_keep_the_role_until_the_last_ends() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(&policy("", "", ""));
    let (alice, bob) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("bob").await),
    );
    let first = create(&alice, "prod-db-admin", "3s").await.unwrap();
    bob.approve(&first, None, None).await.unwrap();
    wait_status(&alice, &first, Status::Active, secs(5)).await;
    let second = create(&alice, "prod-db-admin", "8s").await.unwrap();
    bob.approve(&second, None, None).await.unwrap();
    wait_status(&alice, &second, Status::Active, secs(5)).await;
    wait_status(&alice, &first, Status::Expired, secs(6)).await;
    tokio::time::sleep(secs(1)).await;
    assert!(
        ctx.has_realm_role("alice", "prod-db-admin").await,
        "the second grant keeps it"
    );
    wait_status(&alice, &second, Status::Expired, secs(10)).await;
    eventually(secs(3), "removed after the last", || async {
        !ctx.has_realm_role("alice", "prod-db-admin").await
    })
    .await;
    let dave = jitd.client(&token("dave").await);
    assert!(events_of(&dave, &first)
        .await
        .contains(&"grant.kept".to_string()));
    assert!(events_of(&dave, &second)
        .await
        .contains(&"grant.removed".to_string()));
}

const STANDING_POLICY: &str = r#"
[[entitlement]]
id = "support-agent"
realm_role = "support-agent"
max_duration = "1h"
approver_roles = ["jit-approver-db"]

[[entitlement]]
id = "reporting-reader"
realm_role = "reporting-reader"
max_duration = "1h"
approver_roles = ["jit-approver-db"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standing_access_is_refused_and_never_removed() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(STANDING_POLICY);
    let erin = jitd.client(&token("erin").await);
    let frank = jitd.client(&token("frank").await);
    let bob = jitd.client(&token("bob").await);
    let erin_before = snapshot(&ctx.probe, "erin").await;
    // erin holds both standing (support-agent directly and through her group).
    for ent in ["support-agent", "reporting-reader"] {
        let e = create(&erin, ent, "10m").await.unwrap_err();
        assert_eq!(e.code(), Some("already_held"), "{ent}: {e}");
        assert!(e.to_string().contains("standing"), "{e}");
    }
    // frank asks; before the approval an admin gives him the role directly:
    // the grant finds it held, and JIT never removes what it did not add.
    let frank_id = ctx.probe.user_id("frank").await.unwrap();
    let target = EntitlementKind::RealmRole {
        role: "reporting-reader".into(),
    };
    ctx.admin.unassign(&frank_id, &target).await.unwrap();
    let id = create(&frank, "reporting-reader", "3s").await.unwrap();
    ctx.admin.assign(&frank_id, &target).await.unwrap();
    bob.approve(&id, None, None).await.unwrap();
    wait_status(&frank, &id, Status::Active, secs(5)).await;
    wait_status(&frank, &id, Status::Expired, secs(6)).await;
    tokio::time::sleep(secs(2)).await;
    assert!(
        ctx.has_realm_role("frank", "reporting-reader").await,
        "standing assignment kept"
    );
    let dave = jitd.client(&token("dave").await);
    let ev = events_of(&dave, &id).await;
    assert!(
        ev.contains(&"grant.standing".to_string()) && ev.contains(&"grant.kept".to_string()),
        "{ev:?}"
    );
    ctx.admin.unassign(&frank_id, &target).await.unwrap();
    assert_eq!(snapshot(&ctx.probe, "erin").await, erin_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_justification_and_auto_approval() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(&policy(
        "ticket_pattern = \"INC-[0-9]+\"\njustification_min = 20\njustification_max = 80",
        "[[entitlement.auto_approve]]\nrequester_role = \"jit-approver-db\"",
        "",
    ));
    let (alice, bob) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("bob").await),
    );
    let body = |just: &str, ticket: Option<&str>| CreateRequestBody {
        entitlement: "prod-db-admin".into(),
        justification: just.into(),
        ticket: ticket.map(str::to_string),
        ..Default::default()
    };
    let long_enough = "restore yesterday's backup of orders";
    assert_eq!(
        alice
            .create(&body(long_enough, None))
            .await
            .unwrap_err()
            .code(),
        Some("ticket_required")
    );
    assert_eq!(
        alice
            .create(&body(long_enough, Some("JIRA-1")))
            .await
            .unwrap_err()
            .code(),
        Some("ticket_invalid")
    );
    assert_eq!(
        alice
            .create(&body("too short", Some("INC-1")))
            .await
            .unwrap_err()
            .code(),
        Some("justification_too_short")
    );
    assert_eq!(
        alice
            .create(&body(&"x".repeat(81), Some("INC-1")))
            .await
            .unwrap_err()
            .code(),
        Some("justification_too_long")
    );
    assert!(alice
        .create(&body(long_enough, Some("INC-12")))
        .await
        .is_ok());

    // bob holds jit-approver-db: his billing-admin request is approved by policy.
    let r = create(&bob, "billing-admin", "5s").await.unwrap();
    let bob_has = || async {
        ctx.probe
            .client_roles("bob", "billing-app")
            .await
            .unwrap()
            .contains(&"billing-admin".to_string())
    };
    wait_status(&bob, &r, Status::Active, secs(5)).await;
    assert!(bob_has().await);
    let dave = jitd.client(&token("dave").await);
    let audit = dave.audit(0).await.unwrap();
    let approved = audit
        .iter()
        .find(|a| a.request_id == r && a.event == jit_core::api::EventKind::RequestApproved)
        .unwrap();
    assert_eq!(approved.actor, "jitd");
    assert!(
        approved
            .reason
            .as_deref()
            .unwrap()
            .contains("auto-approved"),
        "{approved:?}"
    );
    wait_status(&bob, &r, Status::Expired, secs(8)).await;
    eventually(secs(3), "auto-approved grant removed", || async {
        !bob_has().await
    })
    .await;
    // alice does not match the rule: pending.
    assert_eq!(
        alice
            .get(&create(&alice, "billing-admin", "5s").await.unwrap())
            .await
            .unwrap()
            .request
            .status(),
        Status::Pending
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_self_activates_and_leaves_a_review_open() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(&policy(
        "",
        "",
        "break_glass = true\njustification_min = 15",
    ));
    let (alice, carol, bob) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("carol").await),
        jitd.client(&token("bob").await),
    );
    let mut carols = Box::pin(carol.events(None).await.unwrap());
    let mut bobs = Box::pin(bob.events(None).await.unwrap());
    let no_glass = alice
        .create(&CreateRequestBody {
            entitlement: "prod-db-admin".into(),
            justification: "production is down, need db".into(),
            break_glass: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(no_glass.code(), Some("break_glass_not_allowed"));
    let r = alice
        .create(&CreateRequestBody {
            entitlement: "incident-responder".into(),
            duration: Some("10m".into()),
            justification: "pager: checkout is down".into(),
            break_glass: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.request.urgent() && r.request.review_required());
    let id = r.request.id();
    wait_status(&alice, id, Status::Active, secs(5)).await;
    assert!(ctx
        .probe
        .groups("alice")
        .await
        .unwrap()
        .contains(&"incident-responders".to_string()));
    // Every approver of the entitlement hears of it at once, flagged urgent.
    let ev = tokio::time::timeout(secs(5), carols.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.event, jit_core::api::EventKind::RequestCreated);
    assert!(ev.data.request.as_ref().unwrap().request.urgent());
    assert!(
        tokio::time::timeout(secs(1), bobs.next()).await.is_err(),
        "bob approves something else"
    );
    // The review stays open until an approver (not alice) closes it.
    let open = carol
        .list(&jit_client::ListQuery {
            review_open: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        alice.review(id, "fine").await.unwrap_err().code(),
        Some("self_approval")
    );
    carol.review(id, "justified: outage INC-9").await.unwrap();
    let open = carol
        .list(&jit_client::ListQuery {
            review_open: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(open.is_empty());
    alice.drop_grant(id).await.unwrap();
    eventually(secs(5), "membership removed", || async {
        !ctx.probe
            .groups("alice")
            .await
            .unwrap()
            .contains(&"incident-responders".to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_keeps_the_old_policy_on_error() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(&policy("", "", ""));
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);
    let active = create(&alice, "prod-db-admin", "10m").await.unwrap();
    bob.approve(&active, None, None).await.unwrap();
    wait_status(&alice, &active, Status::Active, secs(5)).await;
    let ids =
        |es: Vec<jit_core::api::EntitlementView>| es.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(alice.entitlements().await.unwrap()).len(), 3);
    jitd.write_policy("[[entitlement]]\nid = \"broken\"\nmax_duration = 5\n");
    tokio::time::sleep(secs(3)).await;
    assert_eq!(
        ids(alice.entitlements().await.unwrap()).len(),
        3,
        "invalid file refused, old policy in force"
    );
    jitd.write_policy(STANDING_POLICY);
    eventually(secs(5), "new policy in force", || async {
        ids(alice.entitlements().await.unwrap()) == ["reporting-reader", "support-agent"]
    })
    .await;
    let e = create(&alice, "prod-db-admin", "5m").await.unwrap_err();
    assert_eq!(e.code(), Some("unknown_entitlement"));
    // What left the policy may no longer be held through JIT.
    wait_status(&alice, &active, Status::Revoked, secs(5)).await;
    let r = alice.get(&active).await.unwrap().request;
    assert_eq!(r.ended_by(), Some("jitd"));
    assert!(r.end_reason().unwrap().contains("no longer in the policy"));
    eventually(secs(5), "role removed", || async {
        !ctx.has_realm_role("alice", "prod-db-admin").await
    })
    .await;
    // An empty file (an editor truncating it) is refused, not applied.
    jitd.write_policy("");
    tokio::time::sleep(secs(3)).await;
    assert_eq!(ids(alice.entitlements().await.unwrap()).len(), 2);

    // check-policy names the line and field of a broken file …
    let broken = jitd.dir.path().join("broken.toml");
    std::fs::write(&broken, "[[entitlement]]\nid = \"x\"\nrealm_role = \"r\"\nmax_duration = \"1h\"\ndefault_duration = \"2h\"\napprover_roles = [\"a\"]\n").unwrap();
    let o = std::process::Command::new(bin("jitd"))
        .arg("check-policy")
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("line 5") && err.contains("default_duration"),
        "{err}"
    );
    // … and, with Keycloak, warns about standing holders (erin).
    let standing = jitd.dir.path().join("standing.toml");
    std::fs::write(&standing, STANDING_POLICY).unwrap();
    let o = std::process::Command::new(bin("jitd"))
        .args(["check-policy"])
        .arg(&standing)
        .arg("--config")
        .arg(jitd.dir.path().join("jitd.toml"))
        .env(
            "JIT_BACKEND_SECRET",
            jit_testkit::keycloak_env().backend_secret,
        )
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("warning: 'support-agent'") && out.contains("erin"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_racing_a_drop_ends_once() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(&policy("", "", ""));
    let (alice, bob, dave) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("bob").await),
        jitd.client(&token("dave").await),
    );
    for _ in 0..3 {
        let id = create(&alice, "prod-db-admin", "2s").await.unwrap();
        bob.approve(&id, None, None).await.unwrap();
        wait_status(&alice, &id, Status::Active, secs(5)).await;
        let end = alice.get(&id).await.unwrap().request.expires_at().unwrap();
        while Utc::now() < end - chrono::Duration::milliseconds(30) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Drop right at the expiry instant, a few times over.
        let (a, b) = tokio::join!(alice.drop_grant(&id), alice.drop_grant(&id));
        assert!(
            a.is_ok() as u8 + b.is_ok() as u8 <= 1,
            "at most one drop wins"
        );
        eventually(secs(5), "removed", || async {
            !ctx.has_realm_role("alice", "prod-db-admin").await
        })
        .await;
        tokio::time::sleep(secs(1)).await;
        let ev = events_of(&dave, &id).await;
        let ends = ev
            .iter()
            .filter(|e| *e == "grant.expired" || *e == "grant.dropped")
            .count();
        assert_eq!(ends, 1, "exactly one end: {ev:?}");
        assert_eq!(
            ev.iter().filter(|e| *e == "grant.removed").count(),
            1,
            "{ev:?}"
        );
        assert!(dave.audit_verify().await.unwrap().ok);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_scoped_by_group_membership() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    // Only members of the db-approvers group (bob) approve billing-admin.
    let jitd = Jitd::start(
        r#"
[[entitlement]]
id = "billing-admin"
client_role = { client = "billing-app", role = "billing-admin" }
max_duration = "1h"
approver_groups = ["/db-approvers"]
"#,
    );
    let (alice, bob, carol) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("bob").await),
        jitd.client(&token("carol").await),
    );
    let id = create(&alice, "billing-admin", "10m").await.unwrap();
    assert!(
        carol.list(&Default::default()).await.unwrap().is_empty(),
        "carol sees nothing"
    );
    let e = carol.approve(&id, None, None).await.unwrap_err();
    assert_eq!(e.code(), Some("not_found"), "{e}");
    assert_eq!(
        bob.list(&jit_client::ListQuery {
            to_review: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );
    bob.approve(&id, None, None).await.unwrap();
    wait_status(&alice, &id, Status::Active, secs(5)).await;
    assert!(ctx
        .probe
        .client_roles("alice", "billing-app")
        .await
        .unwrap()
        .contains(&"billing-admin".to_string()));
    alice.drop_grant(&id).await.unwrap();
    eventually(secs(5), "client role removed", || async {
        !ctx.probe
            .client_roles("alice", "billing-app")
            .await
            .unwrap()
            .contains(&"billing-admin".to_string())
    })
    .await;
}
