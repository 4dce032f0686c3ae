//! Logs, request ids and metrics of a real jitd through a real cycle on
//! the real Keycloak: with debug logging in JSON, no access token and no
//! client secret ever reaches the log, every line is JSON, request ids are
//! in the log and in the responses, and the metrics saw the cycle.

use std::time::Duration;

use futures::StreamExt;
use jit_core::Status;
use jit_e2e::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Every piece of text that looks like a JWT (three base64url parts, the
/// first a JSON header: `eyJ…`).
fn jwt_like(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("eyJ") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .unwrap_or(tail.len());
        let candidate = &tail[..end];
        if candidate.matches('.').count() >= 2 && candidate.len() > 40 {
            found.push(candidate.chars().take(24).collect());
        }
        rest = &tail[3..];
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_never_carry_tokens_or_secrets() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start_observed(POLICY, "log_format = \"json\"", "", "debug");
    let alice_token = token("alice").await;
    let bob_token = token("bob").await;
    let alice = jitd.client(&alice_token);
    let bob = jitd.client(&bob_token);
    let http = reqwest::Client::new();

    // An event stream is open through the cycle.
    let mut events = Box::pin(alice.events(None).await.unwrap());

    // A request id from the caller is returned and logged.
    let r = http
        .get(format!("{}/v1/me", jitd.url))
        .bearer_auth(&alice_token)
        .header("x-request-id", "e2e-trace-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "e2e-trace-0001");
    // A refused token is not logged either.
    let r = http
        .get(format!("{}/v1/me", jitd.url))
        .bearer_auth(format!("{alice_token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let id = request(&alice, "prod-db-admin", "4s").await;
    bob.approve(&id, Some("ok".into()), None).await.unwrap();
    eventually(secs(10), "the grant to become active", || async {
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    assert!(ctx.has_realm_role("alice", "prod-db-admin").await);
    alice.drop_grant(&id).await.unwrap();
    eventually(secs(15), "the role to leave Keycloak", || async {
        let r = alice.get(&id).await.unwrap();
        r.keycloak.removed_at.is_some() && !r.keycloak.removal_pending
    })
    .await;
    assert!(!ctx.has_realm_role("alice", "prod-db-admin").await);
    // The stream saw the grant (it was open while it happened).
    let seen = tokio::time::timeout(secs(10), async {
        while let Some(Ok(ev)) = events.next().await {
            if ev.event == jit_core::api::EventKind::GrantGranted {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(seen, "grant.granted on the event stream");

    let metrics = http
        .get(format!("{}/metrics", jitd.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "jit_request_transitions_total{entitlement=\"prod-db-admin\",status=\"active\"} 1",
        "jit_request_transitions_total{entitlement=\"prod-db-admin\",status=\"revoked\"} 1",
        "jit_grant_lateness_seconds_count 1",
        "jit_grant_duration_seconds_count 1",
        "jit_removal_lateness_seconds_count 1",
        "jit_removal_duration_seconds_count 1",
        "jit_keycloak_request_duration_seconds_count{operation=\"jwks\"}",
        "jit_keycloak_request_duration_seconds_count{operation=\"token\"}",
        "jit_sse_subscribers 1",
        "http_server_requests_total{method=\"POST\",route=\"/v1/requests\",status=\"201\"} 1",
        "http_server_requests_total{method=\"GET\",route=\"/v1/me\",status=\"401\"} 1",
    ] {
        assert!(metrics.contains(want), "missing {want:?} in:\n{metrics}");
    }
    drop(events);
    jitd_stop(jitd, &alice_token, &bob_token);
}

/// Stops jitd and checks its log.
fn jitd_stop(mut jitd: Jitd, alice: &str, bob: &str) {
    jitd.kill9();
    let path = jitd.log.clone().expect("logged to a file");
    let log = std::fs::read_to_string(&path).unwrap();
    let env = jit_testkit::keycloak_env();
    assert!(
        log.lines().count() > 20,
        "debug logging wrote little ({} lines)",
        log.lines().count()
    );
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        log.contains("\"request_id\":\"e2e-trace-0001\""),
        "the caller's request id is in the log"
    );
    for (what, secret) in [
        ("alice's access token", alice),
        ("bob's access token", bob),
        ("the backend client secret", env.backend_secret.as_str()),
    ] {
        // Any tell-tale part of it: the signature alone would be enough to
        // replay nothing, but the payload part is what a leak shows.
        let payload = secret.split('.').nth(1).unwrap_or(secret);
        assert!(
            !log.contains(secret) && !log.contains(payload),
            "{what} is in the jitd log {}",
            path.display()
        );
    }
    let jwts = jwt_like(&log);
    assert!(
        jwts.is_empty(),
        "token-like strings in the jitd log {}: {jwts:?}",
        path.display()
    );
}
