//! The router (axum `oneshot`, no socket) against a fault-injecting
//! Keycloak: what the API says when a target is missing or not
//! assignable, and when Keycloak cannot be reached.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use jit_core::EntitlementKind;
use jit_keycloak::TargetStatus;
use support::*;
use tower::ServiceExt;

const POLICY: &str = r#"
[[entitlement]]
id = "open"
realm_role = "open-role"
max_duration = "1h"
approver_roles = ["approver"]

[[entitlement]]
id = "realm-admin-ish"
client_role = { client = "realm-management", role = "manage-realm" }
max_duration = "1h"
approver_roles = ["approver"]

[[entitlement]]
id = "ghost"
realm_role = "no-such-role"
max_duration = "1h"
approver_roles = ["approver"]
"#;

async fn send(
    j: &TestJitd,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let app = jit_server::api::router(j.state().clone());
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    let body = match body {
        Some(b) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = app.oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn kc() -> Arc<FakeKeycloak> {
    let kc = Arc::new(FakeKeycloak::default());
    kc.add_user("alice", &[], &[]);
    kc.set_target(
        EntitlementKind::ClientRole {
            client: "realm-management".into(),
            role: "manage-realm".into(),
        },
        TargetStatus::NotAssignable(
            "Keycloak does not let jitd's service account (jit-backend) assign client role 'realm-management/manage-realm'".into(),
        ),
    );
    kc.set_target(
        EntitlementKind::RealmRole {
            role: "no-such-role".into(),
        },
        TargetStatus::Missing("realm role 'no-such-role' does not exist in realm 'test'".into()),
    );
    kc
}

fn create(entitlement: &str) -> serde_json::Value {
    serde_json::json!({
        "entitlement": entitlement,
        "duration": "10m",
        "justification": "router test of unavailable targets",
    })
}

#[tokio::test]
async fn unavailable_targets_are_refused_at_creation_and_listed_with_the_reason() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    let alice = j.issuer.token("alice", &[]);
    for (id, why) in [
        ("realm-admin-ish", "does not let jitd's service account"),
        ("ghost", "does not exist"),
    ] {
        let (status, body) = send(&j, "POST", "/v1/requests", &alice, Some(create(id))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{id}: {body}");
        assert_eq!(body["code"], "entitlement_unavailable", "{body}");
        assert!(body["detail"].as_str().unwrap().contains(why), "{body}");
    }
    let (status, body) = send(&j, "POST", "/v1/requests", &alice, Some(create("open"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, list) = send(&j, "GET", "/v1/entitlements", &alice, None).await;
    assert_eq!(status, StatusCode::OK);
    let by_id = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("open")["available"], true);
    assert_eq!(by_id("ghost")["available"], false);
    assert!(by_id("ghost")["unavailable_reason"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    assert_eq!(by_id("realm-admin-ish")["available"], false);

    // Fixed in Keycloak: the next request asks again and is accepted.
    kc.set_target(
        EntitlementKind::RealmRole {
            role: "no-such-role".into(),
        },
        TargetStatus::Available,
    );
    let (status, body) = send(&j, "POST", "/v1/requests", &alice, Some(create("ghost"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    j.stop().await;
}

#[tokio::test]
async fn keycloak_unreachable_at_creation_is_a_503_problem() {
    let kc = kc();
    let j = start(POLICY, kc.clone(), "").await;
    let alice = j.issuer.token("alice", &[]);
    // Known available first, so only the standing check asks Keycloak.
    let (status, _) = send(&j, "POST", "/v1/requests", &alice, Some(create("open"))).await;
    assert_eq!(status, StatusCode::CREATED);
    kc.fail(Some(Op::Holds), None, Fault::Refused, None);
    let (_, mine) = send(&j, "GET", "/v1/requests?mine=true", &alice, None).await;
    let id = mine[0]["id"].as_str().unwrap().to_string();
    send(
        &j,
        "POST",
        &format!("/v1/requests/{id}/cancel"),
        &alice,
        None,
    )
    .await;
    let (status, body) = send(&j, "POST", "/v1/requests", &alice, Some(create("open"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "keycloak_unavailable");
    j.stop().await;
}

/// `awaits_your_review` is the server's answer for the caller
/// (`AccessRequest::awaits_review_by`): true for an approver of a pending
/// request, false for its requester; every row of bob's `to_review` list
/// says true. Clients (the app's notifications) rely on it instead of a
/// rule of their own.
#[tokio::test]
async fn awaits_your_review_is_the_servers_answer_for_the_caller() {
    let j = start(POLICY, kc(), "").await;
    let alice = j.issuer.token("alice", &[]);
    let bob = j.issuer.token("bob", &["approver"]);
    let (status, created) = send(&j, "POST", "/v1/requests", &alice, Some(create("open"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["awaits_your_review"], false, "the requester's own");
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/v1/requests/{id}");
    let (_, as_bob) = send(&j, "GET", &path, &bob, None).await;
    assert_eq!(as_bob["awaits_your_review"], true, "{as_bob}");
    let (_, as_alice) = send(&j, "GET", &path, &alice, None).await;
    assert_eq!(as_alice["awaits_your_review"], false);
    let (_, list) = send(&j, "GET", "/v1/requests?to_review=true", &bob, None).await;
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    assert!(rows.iter().all(|r| r["awaits_your_review"] == true));
    j.stop().await;
}
