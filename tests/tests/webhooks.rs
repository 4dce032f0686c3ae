//! Webhooks against a local receiver: every delivery signed (checked here
//! with the receiver's own HMAC code, not jitd's), in audit order, retried
//! after a 500 with the same idempotency id, and nothing lost when jitd is
//! SIGKILLed in the middle of a delivery.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use hmac::{Hmac, Mac};
use jit_core::Status;
use jit_e2e::*;
use jit_testkit::keycloak_env;
use sha2::Sha256;

const SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC0zMi1ieXRlcyEh";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    id: String,
    signature_ok: bool,
    body: serde_json::Value,
    /// What the receiver answered.
    answered: u16,
}

#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<Seen>>,
    /// Answer 500 to this many requests (of `/hook/events`) first.
    fail_next: AtomicU32,
    /// Hold the next request of `/hook/events` open (never answer it).
    hang_next: AtomicBool,
    hanging: AtomicBool,
}

impl Receiver {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    /// Bodies taken with a 2xx at `path`, in arrival order.
    fn delivered(&self, path: &str) -> Vec<serde_json::Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.path == path && s.answered == 200)
            .map(|s| s.body)
            .collect()
    }
}

/// The check a receiver makes (docs/webhooks.md): HMAC-SHA256 over
/// `{id}.{timestamp}.{body}` with the base64-decoded `whsec_` key, and the
/// timestamp within 5 minutes of the receiver's clock.
fn signature_ok(headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (id, ts, sig) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let Ok(ts_n) = ts.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - ts_n).abs() > 300 || id.is_empty() {
        return false;
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    sig.split(' ').any(|s| s == format!("v1,{want}"))
}

async fn hook(
    State(rx): State<Arc<Receiver>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut answered = 200;
    // Faults are for the CloudEvents endpoint only.
    let faulty = path == "events";
    if faulty && rx.hang_next.swap(false, Ordering::SeqCst) {
        rx.hanging.store(true, Ordering::SeqCst);
        answered = 599; // never answered: the sender dies first
    } else if faulty
        && rx
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        answered = 500;
    }
    rx.seen.lock().unwrap().push(Seen {
        path,
        id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        signature_ok: signature_ok(&headers, &body),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        answered,
    });
    if answered == 599 {
        // Held until the test is over (jitd is killed meanwhile).
        tokio::time::sleep(secs(600)).await;
    }
    StatusCode::from_u16(answered).unwrap()
}

async fn receiver() -> (Arc<Receiver>, String) {
    let rx = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook/{path}", axum::routing::post(hook))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (rx, url)
}

fn webhooks_toml(base: &str) -> String {
    format!(
        r#"
[[webhook]]
name = "events"
url = "{base}/hook/events"
format = "cloudevents"
secret_env = "JIT_TEST_HOOK_SECRET"
timeout_secs = 2

[[webhook]]
name = "chat"
url = "{base}/hook/chat"
format = "slack"
events = ["request.created"]
entitlements = ["prod-db-admin"]
secret_env = "JIT_TEST_HOOK_SECRET"
request_url = "https://jit.example.com/requests/{{id}}"
"#
    )
}

fn start_jitd(base: &str) -> Jitd {
    Jitd::start_with(
        POLICY,
        &keycloak_env().url,
        &webhooks_toml(base),
        &[
            ("JIT_TEST_HOOK_SECRET", SECRET),
            // The retries after the receiver's 500s are expected here.
            ("JITD_LOG", "info,jit_server::webhooks=error"),
        ],
    )
}

fn seqs(bodies: &[serde_json::Value]) -> Vec<i64> {
    bodies
        .iter()
        .map(|b| b["data"]["seq"].as_i64().expect("data.seq"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_in_order_filtered_and_retried_after_500() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let (rx, base) = receiver().await;
    // The first two attempts fail: the receiver is "down".
    rx.fail_next.store(2, Ordering::SeqCst);
    let jitd = start_jitd(&base);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);
    let dave = jitd.client(&token("dave").await);

    let id = request(&alice, "prod-db-admin", "10m").await;
    let other = request(&alice, "billing-admin", "10m").await;
    bob.approve(&id, Some("ok".into()), None).await.unwrap();
    eventually(secs(10), "the grant to become active", || async {
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    alice.drop_grant(&id).await.unwrap();
    alice.cancel(&other).await.unwrap();
    eventually(secs(15), "the role to be removed", || async {
        alice.get(&id).await.unwrap().keycloak.removed_at.is_some()
    })
    .await;

    let audit: Vec<i64> = dave.audit(0).await.unwrap().iter().map(|r| r.seq).collect();
    assert!(audit.len() >= 7, "audit: {audit:?}");
    eventually(secs(30), "every audit event at the receiver", || async {
        seqs(&rx.delivered("events")) == audit
    })
    .await;

    let seen = rx.seen();
    assert!(
        seen.iter().all(|s| s.signature_ok),
        "every request carries a valid signature: {seen:#?}"
    );
    // The two 500s were for the first event; it came again with its id.
    let first: Vec<&Seen> = seen.iter().filter(|s| s.path == "events").take(3).collect();
    assert_eq!(
        first.iter().map(|s| s.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    assert!(
        first.iter().all(|s| s.id == first[0].id),
        "same idempotency id on retries"
    );
    let delivered = rx.delivered("events");
    let ids: std::collections::HashSet<&str> = delivered
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), delivered.len(), "one id per event");
    assert_eq!(delivered[0]["specversion"], "1.0");
    assert_eq!(delivered[0]["type"], "jit.request.created");
    assert_eq!(delivered[0]["subject"], id.as_str());
    assert_eq!(delivered[0]["data"]["link"], format!("jit://request/{id}"));

    // The chat endpoint only gets request.created of prod-db-admin.
    let chat = rx.delivered("chat");
    assert_eq!(chat.len(), 1, "{chat:#?}");
    let text = chat[0].to_string();
    assert!(
        chat[0]["text"].as_str().unwrap().contains("alice asks for"),
        "{text}"
    );
    assert!(text.contains(&format!("jit://request/{id}")), "{text}");
    assert!(
        text.contains(&format!("https://jit.example.com/requests/{id}")),
        "{text}"
    );

    let metrics = reqwest::get(format!("{}/metrics", jitd.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "jit_webhook_deliveries_total{{endpoint=\"events\",outcome=\"delivered\"}} {}",
            audit.len()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("jit_webhook_deliveries_total{endpoint=\"events\",outcome=\"failed\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_lose_nothing_when_jitd_is_killed_mid_delivery() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let (rx, base) = receiver().await;
    rx.hang_next.store(true, Ordering::SeqCst);
    let mut jitd = start_jitd(&base);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);

    let id = request(&alice, "prod-db-admin", "10m").await;
    eventually(secs(10), "the first delivery to be in flight", || async {
        rx.hanging.load(Ordering::SeqCst)
    })
    .await;
    // More events queue up behind the one in flight (order per endpoint).
    bob.deny(&id, "not now").await.unwrap();
    let id2 = request(&alice, "incident-responder", "10m").await;
    jitd.kill9();
    // While jitd is down nothing is answered; at restart the in-flight
    // event's lease runs out and everything is delivered, in order.
    jitd.spawn();
    let dave = jitd.client(&token("dave").await);
    let audit: Vec<i64> = dave.audit(0).await.unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(audit.len(), 3, "created, denied, created");
    eventually(
        secs(40),
        "every event delivered after the restart",
        || async { seqs(&rx.delivered("events")) == audit },
    )
    .await;
    let seen = rx.seen();
    let hung = seen
        .iter()
        .find(|s| s.answered == 599)
        .expect("the hung attempt");
    let again = &rx.delivered("events")[0];
    assert_eq!(
        again["id"],
        hung.id.as_str(),
        "re-sent with the same idempotency id"
    );
    assert_eq!(again["subject"], id.as_str());
    assert!(seen.iter().all(|s| s.signature_ok));
    assert_eq!(rx.delivered("events")[2]["subject"], id2.as_str());
}
