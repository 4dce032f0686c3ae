//! The JIT cycle against the real Keycloak: request → approve → grant →
//! expire, the refusals, a jitd crash, and the event stream.

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use jit_core::Status;
use jit_e2e::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_approve_grant_and_expire_in_keycloak() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let erin_before = snapshot(&ctx.probe, "erin").await;
    let jitd = Jitd::start(POLICY);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);

    let id = request(&alice, "prod-db-admin", "6s").await;
    assert_eq!(
        alice.get(&id).await.unwrap().request.status(),
        Status::Pending
    );
    assert!(!ctx.has_realm_role("alice", "prod-db-admin").await);

    bob.approve(&id, Some("go ahead".into()), None)
        .await
        .unwrap();
    eventually(secs(5), "the grant to become active", || async {
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    assert!(
        ctx.has_realm_role("alice", "prod-db-admin").await,
        "Keycloak shows the role on alice"
    );
    assert!(
        token_roles("alice")
            .await
            .contains(&"prod-db-admin".to_string()),
        "a token alice gets after the approval carries the role"
    );
    let r = alice.get(&id).await.unwrap();
    let activated = r.request.activated_at().unwrap();
    let expires = r.request.expires_at().unwrap();
    assert_eq!(
        (expires - activated).num_seconds(),
        6,
        "duration counts from activation"
    );
    assert!(r.remaining_secs.unwrap() <= 6);

    eventually(secs(15), "the role to leave Keycloak", || async {
        !ctx.has_realm_role("alice", "prod-db-admin").await
    })
    .await;
    let late = removal_late_ms(&alice, &id, expires).await;
    assert!(
        late <= 2000,
        "role removed {late} ms after expiry (limit 2000)"
    );
    assert_eq!(
        alice.get(&id).await.unwrap().request.status(),
        Status::Expired
    );
    assert!(
        !token_roles("alice")
            .await
            .contains(&"prod-db-admin".to_string()),
        "a new token lacks the role"
    );
    assert_eq!(
        snapshot(&ctx.probe, "erin").await,
        erin_before,
        "erin's standing access untouched"
    );

    let dave = jitd.client(&token("dave").await);
    let audit = dave.audit(0).await.unwrap();
    let events: Vec<&str> = audit
        .iter()
        .filter(|a| a.request_id == id)
        .map(|a| a.event.as_str())
        .collect();
    assert_eq!(
        events,
        [
            "request.created",
            "request.approved",
            "grant.granted",
            "grant.expired",
            "grant.removed"
        ]
    );
    assert_eq!(audit[1].actor, "bob");
    assert_eq!(audit[1].reason.as_deref(), Some("go ahead"));
    let v = dave.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_never_touches_standing_roles() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let before = snapshot(&ctx.probe, "erin").await;
    assert!(
        before.contains(&"direct:reporting-reader".to_string()),
        "{before:?}"
    );
    let jitd = Jitd::start(POLICY);
    let erin = jitd.client(&token("erin").await);
    let bob = jitd.client(&token("bob").await);
    let id = request(&erin, "prod-db-admin", "1h").await;
    bob.approve(&id, None, None).await.unwrap();
    eventually(secs(5), "erin's grant active", || async {
        ctx.has_realm_role("erin", "prod-db-admin").await
    })
    .await;
    erin.drop_grant(&id).await.unwrap();
    eventually(secs(5), "role gone after drop", || async {
        !ctx.has_realm_role("erin", "prod-db-admin").await
    })
    .await;
    assert_eq!(
        snapshot(&ctx.probe, "erin").await,
        before,
        "only prod-db-admin came and went"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);
    let carol = jitd.client(&token("carol").await);

    let id = request(&alice, "prod-db-admin", "10m").await;
    let e = alice.approve(&id, None, None).await.unwrap_err();
    assert_eq!(e.code(), Some("self_approval"), "{e}");
    assert!(e.to_string().contains("own request"), "{e}");

    // bob is an approver of prod-db-admin, but not of his own request.
    let own = request(&bob, "prod-db-admin", "10m").await;
    let e = bob.approve(&own, None, None).await.unwrap_err();
    assert_eq!(e.code(), Some("self_approval"), "{e}");

    // carol approves ops entitlements only: alice's request is not hers to see.
    let e = carol.approve(&id, None, None).await.unwrap_err();
    assert_eq!(e.code(), Some("not_found"), "{e}");
    assert!(e.to_string().contains("approver of its entitlement"), "{e}");
    assert_eq!(
        alice.get(&id).await.unwrap().request.status(),
        Status::Pending
    );

    let over = alice
        .create(&jit_core::api::CreateRequestBody {
            entitlement: "prod-db-admin".into(),
            duration: Some("2h".into()),
            justification: "needs a long time".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(over.code(), Some("duration_exceeds_max"));
    assert!(over.to_string().contains("maximum of 1h"), "{over}");

    let unknown = alice
        .create(&jit_core::api::CreateRequestBody {
            entitlement: "realm-admin".into(),
            justification: "give me everything".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some("unknown_entitlement"));
    assert!(unknown.to_string().contains("realm-admin"), "{unknown}");

    let short = alice
        .create(&jit_core::api::CreateRequestBody {
            entitlement: "prod-db-admin".into(),
            justification: "db".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(short.code(), Some("justification_too_short"));

    // Malformed input: problem+json, not a stack trace.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/requests", jitd.url))
        .bearer_auth(token("alice").await)
        .header("content-type", "application/json")
        .body("{\"entitlement\": 5")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert!(resp.headers().contains_key("x-server-time"));
    let e = alice
        .create(&jit_core::api::CreateRequestBody {
            entitlement: "prod-db-admin".into(),
            justification: "ok\n\u{1b}[31mAPPROVED by security".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_text"), "{e}");
    let dup = alice
        .create(&jit_core::api::CreateRequestBody {
            entitlement: "prod-db-admin".into(),
            justification: "the same thing again".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some("duplicate_pending"), "{dup}");
    let big = http
        .post(format!("{}/v1/requests", jitd.url))
        .bearer_auth(token("alice").await)
        .header("content-type", "application/json")
        .body(format!("{{\"entitlement\": \"{}\"}}", "x".repeat(3 << 20)))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let nothing_granted = alice.list(&Default::default()).await.unwrap();
    assert!(nothing_granted
        .iter()
        .all(|r| r.request.status() == Status::Pending));
}

fn b64(v: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

async fn status_with(url: &str, token: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(format!("{url}/v1/requests"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_wrong_audience_tokens_get_401() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let real = token("alice").await;
    assert_eq!(status_with(&jitd.url, &real).await.0, 200);

    // 1. Payload changed (become dave, the auditor), signature kept.
    let parts: Vec<&str> = real.split('.').collect();
    let mut claims = jit_testkit::decode_jwt_claims(&real).unwrap();
    claims["realm_access"]["roles"] = serde_json::json!(["jit-auditor"]);
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let (s, body) = status_with(&jitd.url, &tampered).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("signature"), "{body}");

    // 2. Signed with a secret of our own (HS256) under Keycloak's key id.
    let header: serde_json::Value = {
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[0])
                .unwrap(),
        )
        .unwrap()
    };
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = header["kid"].as_str().map(str::to_string);
    let forged = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    assert_eq!(status_with(&jitd.url, &forged).await.0, 401);

    // 3. alg none.
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    assert_eq!(status_with(&jitd.url, &none).await.0, 401);

    // 4. A real Keycloak token for another audience (the backend's service account).
    let other = ctx.probe.access_token().await.unwrap();
    let (s, body) = status_with(&jitd.url, &other).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("audience"), "{body}");

    // 5. An ID token is not an access token.
    let set = jit_testkit::pkce_login(&ctx.env, jit_testkit::CLI_CLIENT_ID, "alice", "alice-pass")
        .await
        .unwrap();
    if let Some(id_token) = set.id_token {
        assert_eq!(status_with(&jitd.url, &id_token).await.0, 401);
    }

    // 6. Expired: a real token of a client whose tokens live 5 s.
    let short = jit_testkit::pkce_login(&ctx.env, "jit-e2e-short", "alice", "alice-pass")
        .await
        .unwrap();
    assert_eq!(status_with(&jitd.url, &short.access_token).await.0, 200);
    tokio::time::sleep(secs(11)).await; // 5 s lifetime + 5 s leeway
    let (s, body) = status_with(&jitd.url, &short.access_token).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("expired"), "{body}");

    // 7. No token at all.
    let resp = reqwest::get(format!("{}/v1/requests", jitd.url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_jitd_still_revokes_on_time() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let mut jitd = Jitd::start(POLICY);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);

    // Killed and restarted before expiry: the revoke is still on time.
    let id = request(&alice, "prod-db-admin", "8s").await;
    bob.approve(&id, None, None).await.unwrap();
    eventually(secs(5), "active", || async {
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    let expires = alice.get(&id).await.unwrap().request.expires_at().unwrap();
    jitd.kill9();
    tokio::time::sleep(secs(1)).await;
    assert!(ctx.has_realm_role("alice", "prod-db-admin").await);
    jitd.spawn();
    eventually(secs(20), "revoke after restart", || async {
        !ctx.has_realm_role("alice", "prod-db-admin").await
    })
    .await;
    let late = removal_late_ms(&alice, &id, expires).await;
    assert!(late <= 2000, "removed {late} ms after expiry");

    // Killed, and the grant expires while jitd is down: revoked at once on start.
    let id = request(&alice, "prod-db-admin", "3s").await;
    bob.approve(&id, None, None).await.unwrap();
    eventually(secs(5), "active", || async {
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    let expires = alice.get(&id).await.unwrap().request.expires_at().unwrap();
    jitd.kill9();
    while Utc::now() < expires + chrono::Duration::seconds(2) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ctx.has_realm_role("alice", "prod-db-admin").await,
        "nothing else removes it"
    );
    jitd.spawn();
    eventually(secs(10), "revoke right after restart", || async {
        !ctx.has_realm_role("alice", "prod-db-admin").await
    })
    .await;
    let r = alice.get(&id).await.unwrap();
    assert_eq!(r.request.status(), Status::Expired);
    // Judged by jitd's own clock, not the test's: from the restarted
    // process's "jitd listening" line to the removal it recorded.
    let removed = r.keycloak.removed_at.expect("removed_at recorded");
    let listening = last_listening_at(&jitd);
    let after = (removed - listening).num_milliseconds();
    assert!(
        after <= 2000,
        "removed {after} ms after the restarted jitd listened ({listening} → {removed})"
    );
}

/// How late jitd removed the role of request `id`, in milliseconds after
/// `expires`, by jitd's own record (`keycloak.removed_at`), not by the
/// test's clock (which sees the removal only when it next polls Keycloak).
async fn removal_late_ms(c: &jit_client::Client, id: &str, expires: chrono::DateTime<Utc>) -> i64 {
    eventually(secs(10), "removed_at recorded", || async {
        c.get(id).await.unwrap().keycloak.removed_at.is_some()
    })
    .await;
    let removed = c.get(id).await.unwrap().keycloak.removed_at.unwrap();
    (removed - expires).num_milliseconds()
}

/// When jitd's last run said "jitd listening", by jitd's own clock (the
/// RFC 3339 UTC timestamp that opens each line of its log).
fn last_listening_at(jitd: &Jitd) -> chrono::DateTime<Utc> {
    let log = std::fs::read_to_string(jitd.log_path()).expect("jitd log");
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("jitd listening"))
        .expect("a \"jitd listening\" line in jitd's log");
    let stamp = line.split_whitespace().next().unwrap_or_default();
    chrono::DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("timestamp of {line:?}: {e}"))
        .with_timezone(&Utc)
}

async fn collect_until(
    stream: &mut (impl futures::Stream<Item = Result<jit_client::ServerEvent, jit_client::ClientError>>
              + Unpin),
    request_id: &str,
    last_event: &str,
) -> Vec<jit_client::ServerEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + secs(20);
    loop {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {last_event} event within 20 s; saw {:?}",
                    seen.iter()
                        .map(|e: &jit_client::ServerEvent| e.event.clone())
                        .collect::<Vec<_>>()
                )
            })
            .expect("stream ended")
            .expect("event");
        let done = ev.data.record.request_id == request_id && ev.event.as_str() == last_event;
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_delivers_and_resumes() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);
    let frank = jitd.client(&token("frank").await);

    let mut live = Box::pin(bob.events(None).await.unwrap());
    let mut franks = Box::pin(frank.events(Some(0)).await.unwrap());
    let id = request(&alice, "prod-db-admin", "3s").await;
    bob.approve(&id, None, None).await.unwrap();
    let seen = collect_until(&mut live, &id, "grant.expired").await;
    let names: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "request.created",
            "request.approved",
            "grant.granted",
            "grant.expired"
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    assert_eq!(
        seen[0]
            .data
            .request
            .as_ref()
            .unwrap()
            .request
            .requester_username(),
        "alice"
    );
    drop(live);

    // Resume from the first event: everything after it, nothing lost.
    let mut resumed = Box::pin(bob.events(Some(seen[0].id)).await.unwrap());
    let again = collect_until(&mut resumed, &id, "grant.expired").await;
    let ids: Vec<i64> = again.iter().map(|e| e.id).collect();
    let want: Vec<i64> = seen[1..].iter().map(|e| e.id).collect();
    assert_eq!(ids, want);

    // frank may see none of alice's request, from the start of time.
    let peek = tokio::time::timeout(secs(2), franks.next()).await;
    assert!(
        peek.is_err(),
        "frank received an event: {:?}",
        peek.ok().flatten().map(|e| e.map(|e| e.event))
    );
}
