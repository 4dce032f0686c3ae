//! The API at its edges, against the real Keycloak: rights read from
//! Keycloak at each decision (not from an old token), a realm key rotation,
//! the duration grammar, `Last-Event-ID`, `already_held` through another
//! JIT grant, a token of another issuer.

use std::time::Duration;

use jit_core::api::CreateRequestBody;
use jit_core::Status;
use jit_e2e::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn create(
    c: &jit_client::Client,
    entitlement: &str,
    duration: &str,
) -> Result<String, jit_client::ClientError> {
    c.create(&CreateRequestBody {
        entitlement: entitlement.into(),
        duration: Some(duration.into()),
        justification: "edges end-to-end test".into(),
        ..Default::default()
    })
    .await
    .map(|r| r.request.id().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_are_read_from_keycloak_at_each_decision() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let kc = RealmAdmin::new(&ctx).await;
    // The scheduler's debug lines say which way a requester's enabled
    // state was read (checked for frank below).
    let jitd = Jitd::start_observed(
        r#"
[[entitlement]]
id = "billing-admin"
client_role = { client = "billing-app", role = "billing-admin" }
max_duration = "1h"
approver_roles = ["jit-approver-ops"]

[[entitlement]]
id = "prod-db-admin"
realm_role = "prod-db-admin"
max_duration = "1h"
approver_groups = ["/db-approvers"]

[[entitlement]]
id = "incident-responder"
group = "/incident-responders"
max_duration = "1h"
approver_roles = ["support-agent"]
"#,
        "",
        // The periodic check of the disabled users would cancel frank's
        // approved request before its start: this test is about the
        // pass's own read at the start (the check has its own test below).
        "\n[scheduler]\ndisabled_check_secs = 3600\n",
        "info,jit_server::scheduler=debug",
    );
    // Tokens issued while everyone still has their rights.
    let (alice, bob, carol, erin, frank) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("bob").await),
        jitd.client(&token("carol").await),
        jitd.client(&token("erin").await),
        jitd.client(&token("frank").await),
    );
    let carol_id = ctx.probe.user_id("carol").await.unwrap();
    let bob_id = ctx.probe.user_id("bob").await.unwrap();
    let erin_id = ctx.probe.user_id("erin").await.unwrap();
    let frank_id = ctx.probe.user_id("frank").await.unwrap();

    // Four requests that start together (one scheduler pass shares one
    // read of the realm's disabled users among them), frank's among them:
    // approved after he is disabled (step 4).
    let starts = chrono::Utc::now() + chrono::Duration::seconds(30);
    let dave = jitd.client(&token("dave").await);
    let mut together = Vec::new();
    for c in [&frank, &bob, &carol, &dave] {
        let id = c
            .create(&CreateRequestBody {
                entitlement: "incident-responder".into(),
                duration: Some("10m".into()),
                justification: "edges end-to-end test, starting together".into(),
                start_at: Some(starts),
                ..Default::default()
            })
            .await
            .unwrap()
            .request
            .id()
            .to_string();
        together.push(id);
    }
    let asked = together[0].clone();
    // jitd caches a user's rights for 2 s: the refusals below must not
    // meet what these requests cached.
    tokio::time::sleep(secs(3)).await;

    // 1. carol's approver role is removed: her old token cannot approve.
    let billing = create(&alice, "billing-admin", "10m").await.unwrap();
    kc.set_realm_role(&carol_id, "jit-approver-ops", false)
        .await;
    assert!(
        carol
            .me()
            .await
            .unwrap()
            .roles
            .contains(&"jit-approver-ops".to_string()),
        "the old token still carries the role"
    );
    let e = carol.approve(&billing, None, None).await.unwrap_err();
    assert_eq!(e.code(), Some("not_found"), "{e}");
    let e = carol.deny(&billing, "no").await.unwrap_err();
    assert_eq!(e.code(), Some("not_found"), "{e}");
    assert_eq!(
        alice.get(&billing).await.unwrap().request.status(),
        Status::Pending
    );

    // 2. bob leaves the approver group: his old token cannot approve.
    let db = create(&alice, "prod-db-admin", "10m").await.unwrap();
    kc.set_member(&bob_id, "/db-approvers", false).await;
    let e = bob.approve(&db, None, None).await.unwrap_err();
    assert_eq!(e.code(), Some("not_found"), "{e}");
    assert_eq!(
        alice.get(&db).await.unwrap().request.status(),
        Status::Pending
    );

    // 3. erin loses her direct support-agent role but still holds it through
    //    the support-team group: effective roles count, so she may approve.
    let inc = create(&alice, "incident-responder", "10m").await.unwrap();
    kc.set_realm_role(&erin_id, "support-agent", false).await;
    erin.approve(&inc, Some("via my group".into()), None)
        .await
        .unwrap();
    wait_active_then_drop(&alice, &inc).await;

    // 4. frank is disabled: his token cannot create requests any more, and
    //    what he asked for before is not granted when it is approved (an
    //    entitlement anyone may request: Keycloak's list of disabled users
    //    says so, with its real `enabled=false` search).
    //    (His request was made at the start, for the rights cache.)
    kc.set_enabled(&frank_id, false).await;
    let e = create(&frank, "billing-admin", "10m").await.unwrap_err();
    assert_eq!(e.code(), Some("account_disabled"), "{e}");
    for id in &together {
        erin.approve(id, Some("approved before anyone said".into()), None)
            .await
            .unwrap();
    }
    // By jitd's own timestamps: each approval came before the start (else
    // they start apart and the shared read below is not what ran).
    for id in &together {
        let r = erin.get(id).await.unwrap();
        let decided = r.request.decided_at().expect("approved");
        assert!(
            decided < starts,
            "approved at {decided}, after the start {starts}: {r:?}"
        );
    }
    eventually(secs(60), "frank's approved request ends", || async {
        erin.get(&asked)
            .await
            .unwrap()
            .request
            .status()
            .is_terminal()
    })
    .await;
    let r = erin.get(&asked).await.unwrap();
    assert_eq!(r.request.status(), Status::Cancelled, "{r:?}");
    assert!(
        r.request
            .end_reason()
            .unwrap_or_default()
            .contains("frank is disabled in Keycloak"),
        "{r:?}"
    );
    assert!(
        !ctx.probe
            .groups("frank")
            .await
            .unwrap()
            .iter()
            .any(|g| g.contains("incident-responders")),
        "frank was not made a member"
    );
    // The other three are granted; then given back.
    for (id, c) in together[1..].iter().zip([&bob, &carol, &dave]) {
        wait_active_then_drop(c, id).await;
    }
    // Said by Keycloak's list of disabled users, not by a fallback read of
    // frank's account.
    let log = std::fs::read_to_string(jitd.log_path()).unwrap();
    assert!(
        log.contains("read the realm's disabled users for the grants of a pass"),
        "no read of the disabled users in {}",
        jitd.log_path().display()
    );
    assert!(
        !log.contains("reading each requester's account"),
        "the read of the disabled users failed: {}",
        jitd.log_path().display()
    );

    // Rights back: the same old tokens work again (no stale refusal).
    ctx.restore_fixture_rights().await;
    eventually(
        secs(10),
        "carol approves again once her role is back",
        || async { carol.approve(&billing, None, None).await.is_ok() },
    )
    .await;
    wait_active_then_drop(&alice, &billing).await;
    alice.cancel(&db).await.unwrap();
    // Within the rights cache (2 s) frank may still read as disabled.
    let f = std::sync::Mutex::new(None);
    eventually(secs(10), "frank may request again once enabled", || async {
        match create(&frank, "billing-admin", "10m").await {
            Ok(id) => {
                *f.lock().unwrap() = Some(id);
                true
            }
            Err(_) => false,
        }
    })
    .await;
    let f = f.lock().unwrap().take().unwrap();
    frank.cancel(&f).await.unwrap();
}

/// A holder disabled in Keycloak while the grant is active loses it at
/// jitd's next check of the disabled users (`disabled_check_secs`, 2 s
/// here; Keycloak's real `enabled=false` search): revoked by jitd with the
/// reason, the membership removed from Keycloak; a request of the holder's
/// still waiting for an approver is cancelled in the same check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_ends_when_its_holder_is_disabled_in_keycloak() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let kc = RealmAdmin::new(&ctx).await;
    let jitd = Jitd::start_with(
        r#"
[[entitlement]]
id = "incident-responder"
group = "/incident-responders"
max_duration = "1h"
approver_roles = ["support-agent"]

[[entitlement]]
id = "prod-db-admin"
realm_role = "prod-db-admin"
max_duration = "1h"
approver_groups = ["/db-approvers"]
"#,
        &ctx.env.url,
        "\n[scheduler]\ndisabled_check_secs = 2\n",
        &[],
    );
    let frank = jitd.client(&token("frank").await);
    let erin = jitd.client(&token("erin").await);
    let frank_id = ctx.probe.user_id("frank").await.unwrap();
    let member = || async {
        ctx.probe
            .groups("frank")
            .await
            .unwrap()
            .iter()
            .any(|g| g.contains("incident-responders"))
    };
    let id = create(&frank, "incident-responder", "30m").await.unwrap();
    erin.approve(&id, Some("edges: disabled while active".into()), None)
        .await
        .unwrap();
    eventually(secs(30), "frank's grant active", || async {
        erin.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    assert!(member().await, "frank was made a member");
    // A request of frank's still waiting for an approver (bob, of
    // /db-approvers) ends with him.
    let waiting = create(&frank, "prod-db-admin", "30m").await.unwrap();
    let bob = jitd.client(&token("bob").await);
    kc.set_enabled(&frank_id, false).await;
    eventually(secs(60), "frank's grant revoked and removed", || async {
        erin.get(&id).await.unwrap().keycloak.removed_at.is_some()
    })
    .await;
    let r = erin.get(&id).await.unwrap();
    assert_eq!(r.request.status(), Status::Revoked, "{r:?}");
    assert!(
        r.request
            .end_reason()
            .unwrap_or_default()
            .contains("frank is disabled in Keycloak"),
        "{r:?}"
    );
    assert!(!member().await, "frank is still a member");
    eventually(secs(60), "frank's waiting request cancelled", || async {
        bob.get(&waiting).await.unwrap().request.status() == Status::Cancelled
    })
    .await;
    let w = bob.get(&waiting).await.unwrap();
    assert!(
        w.request
            .end_reason()
            .unwrap_or_default()
            .contains("frank is disabled in Keycloak"),
        "{w:?}"
    );
    ctx.restore_fixture_rights().await;
}

async fn wait_active_then_drop(c: &jit_client::Client, id: &str) {
    eventually(secs(10), "grant active", || async {
        c.get(id).await.unwrap().request.status() == Status::Active
    })
    .await;
    c.drop_grant(id).await.unwrap();
    eventually(secs(10), "removal confirmed", || async {
        c.get(id).await.unwrap().keycloak.removed_at.is_some()
    })
    .await;
}

/// The Keycloak admin user of the master realm (the xtask's bootstrap
/// admin), for realm settings the service account may not change.
async fn master_admin_token(ctx: &Ctx) -> String {
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/realms/master/protocol/openid-connect/token",
            ctx.env.url
        ))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", "admin"),
            ("password", "admin-pass"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("master admin login: {resp}"))
        .to_string()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_realm_key_is_accepted_at_once() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let old = token("alice").await;
    // jitd fetches the JWKS now.
    jitd.client(&old).me().await.unwrap();

    let admin = master_admin_token(&ctx).await;
    let http = reqwest::Client::new();
    let realm: serde_json::Value = http
        .get(format!("{}/admin/realms/{}", ctx.env.url, ctx.env.realm))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = http
        .post(format!(
            "{}/admin/realms/{}/components",
            ctx.env.url, ctx.env.realm
        ))
        .bearer_auth(&admin)
        .json(&serde_json::json!({
            "name": "e2e-rotated-key",
            "providerId": "rsa-generated",
            "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": realm["id"],
            "config": { "priority": ["100000"], "enabled": ["true"], "active": ["true"],
                        "keySize": ["2048"], "algorithm": ["RS256"] },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    let component = resp.headers()["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();

    let new = token("alice").await;
    let result = jitd.client(&new).me().await;
    // The realm goes back to its own key whatever happened.
    let del = http
        .delete(format!(
            "{}/admin/realms/{}/components/{component}",
            ctx.env.url, ctx.env.realm
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(
        del.status().is_success(),
        "remove the test key: {}",
        del.status()
    );
    assert_ne!(
        kid_of(&new),
        kid_of(&old),
        "Keycloak signs with the new key"
    );
    let me =
        result.unwrap_or_else(|e| panic!("a token signed with the rotated key is refused: {e}"));
    assert_eq!(me.username, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_grammar_and_messages() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let alice_token = token("alice").await;
    let alice = jitd.client(&alice_token);

    // One duration grammar: repeated units and upper-case units are refused.
    for bad in ["5m5m", "5M", "30m1h", "1.5h"] {
        let e = create(&alice, "prod-db-admin", bad).await.unwrap_err();
        assert_eq!(e.code(), Some("invalid_duration"), "{bad}: {e}");
    }

    // Last-Event-ID must be an event id.
    let http = reqwest::Client::new();
    for bad in ["-5", "abc", "1.5", "+3"] {
        let resp = http
            .get(format!("{}/v1/events", jitd.url))
            .bearer_auth(&alice_token)
            .header("last-event-id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "Last-Event-ID {bad}");
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
        let p: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(p["code"], "bad_request", "{p}");
    }
    let resp = http
        .get(format!("{}/v1/events?since=-5", jitd.url))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_issuer_is_told_the_expected_one() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let mut jitd = Jitd::start(POLICY);
    // The same Keycloak, but jitd pinned to another issuer.
    let other = format!("{}/realms/not-{}", ctx.env.url, ctx.env.realm);
    let cfg = jitd.dir.path().join("jitd.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        &format!("issuer = \"{}\"", ctx.env.issuer()),
        &format!("issuer = \"{other}\""),
    );
    assert!(text.contains(&other));
    std::fs::write(&cfg, text).unwrap();
    jitd.kill9();
    jitd.spawn();
    let e = jitd.client(&token("alice").await).me().await.unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains(&format!("accepts tokens issued by {other}")),
        "{s}"
    );
    assert!(!s.contains("alice"), "no token contents beyond iss: {s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_held_through_a_jit_grant_names_the_grant() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let kc = RealmAdmin::new(&ctx).await;
    let alice_id = ctx.probe.user_id("alice").await.unwrap();
    // The support-team group carries the realm role support-agent.
    if ctx
        .probe
        .groups("alice")
        .await
        .unwrap()
        .iter()
        .any(|g| g.contains("support-team"))
    {
        kc.set_member(&alice_id, "/support-team", false).await;
    }
    let jitd = Jitd::start(
        r#"
[[entitlement]]
id = "support-team"
group = "/support-team"
max_duration = "1h"
approver_roles = ["jit-approver-ops"]

[[entitlement]]
id = "support-agent"
realm_role = "support-agent"
max_duration = "1h"
approver_roles = ["jit-approver-ops"]
"#,
    );
    let (alice, carol) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("carol").await),
    );
    let g = create(&alice, "support-team", "10m").await.unwrap();
    carol.approve(&g, None, None).await.unwrap();
    eventually(secs(10), "group grant active", || async {
        alice.get(&g).await.unwrap().request.status() == Status::Active
    })
    .await;
    let until = alice.get(&g).await.unwrap().request.expires_at().unwrap();
    let e = create(&alice, "support-agent", "10m").await.unwrap_err();
    let text = e.to_string();
    alice.drop_grant(&g).await.unwrap();
    eventually(secs(10), "group membership removed", || async {
        !ctx.probe
            .groups("alice")
            .await
            .unwrap()
            .iter()
            .any(|x| x.contains("support-team"))
    })
    .await;
    assert_eq!(e.code(), Some("already_held"), "{e}");
    assert!(text.contains(&format!("through JIT grant {g}")), "{text}");
    assert!(
        text.contains(&until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "{text}"
    );
    assert!(!text.contains("standing"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_of_an_ended_grant_is_closed() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let (alice, bob) = (
        jitd.client(&token("alice").await),
        jitd.client(&token("bob").await),
    );
    let g = create(&alice, "prod-db-admin", "1h").await.unwrap();
    bob.approve(&g, None, None).await.unwrap();
    eventually(secs(10), "grant active", || async {
        alice.get(&g).await.unwrap().request.status() == Status::Active
    })
    .await;
    let x = alice
        .extend(&g, "10m", "more time, then not needed")
        .await
        .unwrap()
        .request
        .id()
        .to_string();
    alice.drop_grant(&g).await.unwrap();
    // The pending extension is closed by jitd, not left for an approver.
    eventually(secs(10), "extension closed", || async {
        alice.get(&x).await.unwrap().request.status() == Status::Cancelled
    })
    .await;
    let r = alice.get(&x).await.unwrap().request;
    assert_eq!(r.ended_by(), Some("jitd"));
    assert!(
        r.end_reason().unwrap_or("").contains(&g),
        "{:?}",
        r.end_reason()
    );
    let review = bob
        .list(&jit_client::ListQuery {
            to_review: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        !review.iter().any(|v| v.request.id() == x),
        "not offered to approvers"
    );
}
