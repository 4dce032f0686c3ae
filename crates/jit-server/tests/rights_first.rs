//! Every decision and action on a request checks the caller's right
//! before the request's state: someone without the right (an auditor, who
//! sees everything but approves nothing; an approver acting as requester)
//! gets 403 whatever the state, never a 409 that tells them where the
//! request stands. And a removal retry on a request that has nothing to
//! retry says what the request is. The router through `oneshot`, rights
//! read from the in-process fake Keycloak.

#[allow(unused_imports)]
mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use support::*;
use tower::ServiceExt;

const POLICY: &str = r#"
auditor_roles = ["auditor"]

[[entitlement]]
id = "open"
realm_role = "open-role"
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
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json");
    let body = Body::from(body.unwrap_or_else(|| serde_json::json!({})).to_string());
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
    kc.add_user("bob", &["approver"], &[]);
    kc.add_user("audrey", &["auditor"], &[]);
    kc
}

async fn create(j: &TestJitd, token: &str) -> String {
    let (status, body) = send(
        j,
        "POST",
        "/v1/requests",
        token,
        Some(serde_json::json!({
            "entitlement": "open",
            "duration": "10m",
            "justification": "rights before state",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn rights_are_checked_before_state_on_every_action() {
    let j = start(POLICY, kc(), "").await;
    let alice = j.issuer.token("alice", &[]);
    let bob = j.issuer.token("bob", &["approver"]);
    let audrey = j.issuer.token("audrey", &["auditor"]);
    let id = create(&j, &alice).await;
    let (status, b) = send(
        &j,
        "POST",
        &format!("/v1/requests/{id}/cancel"),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");

    let comment = || Some(serde_json::json!({"comment": "looked at it"}));
    // (who, action path, expected code): each would be a 409 on the
    // cancelled request if the state came first.
    let cases = [
        (
            "audrey",
            &audrey,
            format!("/v1/requests/{id}/approve"),
            "not_an_approver",
        ),
        (
            "audrey",
            &audrey,
            format!("/v1/requests/{id}/deny"),
            "not_an_approver",
        ),
        (
            "audrey",
            &audrey,
            format!("/v1/requests/{id}/review"),
            "not_an_approver",
        ),
        (
            "audrey",
            &audrey,
            format!("/v1/requests/{id}/cancel"),
            "not_requester",
        ),
        (
            "audrey",
            &audrey,
            format!("/v1/grants/{id}/drop"),
            "not_requester",
        ),
        (
            "audrey",
            &audrey,
            format!("/v1/grants/{id}/revoke"),
            "not_an_approver",
        ),
        (
            "audrey",
            &audrey,
            format!("/v1/grants/{id}/retry-removal"),
            "not_an_approver",
        ),
        (
            "audrey",
            &audrey,
            format!("/v1/requests/{id}/extend"),
            "not_requester",
        ),
        (
            "bob",
            &bob,
            format!("/v1/requests/{id}/cancel"),
            "not_requester",
        ),
        (
            "bob",
            &bob,
            format!("/v1/grants/{id}/drop"),
            "not_requester",
        ),
        (
            "alice",
            &alice,
            format!("/v1/requests/{id}/approve"),
            "self_approval",
        ),
        (
            "alice",
            &alice,
            format!("/v1/requests/{id}/review"),
            "self_approval",
        ),
    ];
    for (who, token, path, code) in cases {
        let body = if path.ends_with("/extend") {
            Some(serde_json::json!({"duration": "5m", "justification": "more time please"}))
        } else {
            comment()
        };
        let (status, b) = send(&j, "POST", &path, token, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who} {path}: {b}");
        assert_eq!(b["code"], code, "{who} {path}: {b}");
        let detail = b["detail"].as_str().unwrap();
        assert!(
            !detail.contains("cancelled"),
            "no state in a refusal of rights: {b}"
        );
    }
    // Someone with the right still hears about the state.
    let (status, b) = send(
        &j,
        "POST",
        &format!("/v1/requests/{id}/approve"),
        &bob,
        comment(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    j.stop().await;
}

/// `retry-removal` of a request that was never granted says so (and its
/// status), not "the removal has not failed".
#[tokio::test]
async fn retrying_the_removal_of_a_request_never_granted_says_what_it_is() {
    let j = start(POLICY, kc(), "").await;
    let alice = j.issuer.token("alice", &[]);
    let id = create(&j, &alice).await;
    let path = format!("/v1/grants/{id}/retry-removal");
    let (status, b) = send(&j, "POST", &path, &alice, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], "removal_not_failed", "{b}");
    assert_eq!(b["title"], "No failed removal to retry", "{b}");
    let detail = b["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "request {id} (open) has not been granted (it is pending): nothing to remove"
        )),
        "{b}"
    );
    send(
        &j,
        "POST",
        &format!("/v1/requests/{id}/cancel"),
        &alice,
        None,
    )
    .await;
    let (status, b) = send(&j, "POST", &path, &alice, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    let detail = b["detail"].as_str().unwrap();
    assert!(
        detail.contains("was never granted (it is cancelled): nothing to remove"),
        "{b}"
    );
    j.stop().await;
}
