//! The warnings of `POST /v1/requests`. `no_eligible_approver`: a request
//! that nobody but its requester may approve (nobody approves their own)
//! can only lapse, so the answer says so at once; a request someone else
//! may approve, or one already approved (auto-approval, break-glass),
//! carries no warning. The router through `oneshot`, approvers read from
//! the in-process fake Keycloak (the real Keycloak's listings are the
//! e2e test `cli::a_request_nobody_else_may_approve_warns`).
//! `already_granted`: a request for what the requester holds through an
//! active JIT grant names that grant (an extension was probably meant).

#[allow(unused_imports)]
mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use support::*;
use tower::ServiceExt;

const POLICY: &str = r#"
[[entitlement]]
id = "solo"
realm_role = "solo-role"
max_duration = "1h"
approver_roles = ["solo-approver"]
justification_min = 5
break_glass = true

[[entitlement]]
id = "pair"
realm_role = "pair-role"
max_duration = "1h"
approver_groups = ["/pair-approvers"]
approvals_required = 2

[[entitlement]]
id = "auto"
realm_role = "auto-role"
max_duration = "1h"
approver_roles = ["solo-approver"]
[[entitlement.auto_approve]]
requester_role = "trusted"
"#;

async fn create(
    j: &TestJitd,
    token: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let app = jit_server::api::router(j.state().clone());
    let req = Request::builder()
        .method("POST")
        .uri("/v1/requests")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn body(entitlement: &str) -> serde_json::Value {
    serde_json::json!({
        "entitlement": entitlement,
        "duration": "10m",
        "justification": "checking the approver warning",
    })
}

#[tokio::test]
async fn a_request_only_its_requester_could_approve_is_warned() {
    let kc = Arc::new(FakeKeycloak::default());
    kc.add_user("ann", &["solo-approver", "trusted"], &["pair-approvers"]);
    kc.add_user("ben", &[], &["pair-approvers"]);
    kc.add_user("cid", &[], &[]);
    let j = start(POLICY, kc.clone(), "").await;
    let ann = j.issuer.token("ann", &["solo-approver", "trusted"]);
    let cid = j.issuer.token("cid", &[]);

    // ann is the only approver of "solo": her own request can only lapse.
    let (status, b) = create(&j, &ann, body("solo")).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert_eq!(b["status"], "pending", "{b}");
    let w = b["warnings"].as_array().expect("warnings");
    assert_eq!(w.len(), 1, "{b}");
    assert_eq!(w[0]["code"], "no_eligible_approver", "{b}");
    let msg = w[0]["message"].as_str().unwrap();
    assert!(msg.contains("nobody besides you"), "{msg}");
    assert!(msg.contains("lapses at "), "{msg}");
    assert!(
        msg.contains("break-glass"),
        "solo allows break-glass: {msg}"
    );
    // The warning is the answer's only: not in later reads.
    let id = b["id"].as_str().unwrap();
    let stored = jit_server::api::view(j.state(), &j.get(id), None);
    assert!(stored.warnings.is_empty());

    // cid's request for "solo": ann may approve it, no warning.
    let (status, b) = create(&j, &cid, body("solo")).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert!(b.get("warnings").is_none(), "{b}");

    // "pair" needs 2 approvals: for ann only ben is left (1 of 2).
    let (_, b) = create(&j, &ann, body("pair")).await;
    let w = b["warnings"].as_array().expect("warnings");
    assert_eq!(w[0]["code"], "no_eligible_approver", "{b}");
    assert!(
        w[0]["message"]
            .as_str()
            .unwrap()
            .contains("needs 2 approvals and only 1"),
        "{b}"
    );
    // For cid both ann and ben may approve: no warning.
    let (_, b) = create(&j, &cid, body("pair")).await;
    assert!(b.get("warnings").is_none(), "{b}");

    // Already approved (auto-approval; break-glass): nothing to warn of.
    let (_, b) = create(&j, &ann, body("auto")).await;
    assert_eq!(b["status"], "approved", "{b}");
    assert!(b.get("warnings").is_none(), "{b}");
    let mut glass = body("solo");
    glass["break_glass"] = true.into();
    // ann's pending "solo" is in the way; cancel it first.
    let app = jit_server::api::router(j.state().clone());
    let resp = app
        .oneshot(
            Request::builder()
                .method("POST")
                .uri(format!("/v1/requests/{id}/cancel"))
                .header(header::AUTHORIZATION, format!("Bearer {ann}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, b) = create(&j, &ann, glass).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert_eq!(b["status"], "approved", "break-glass works as before: {b}");
    assert!(b.get("warnings").is_none(), "{b}");
    j.stop().await;
}

/// A request for an entitlement its requester holds through an active JIT
/// grant is accepted (grants may overlap) with the `already_granted`
/// warning naming that grant, its end (UTC) and `jit extend`; a request
/// for something else, or by someone else, carries none.
#[tokio::test]
async fn a_request_for_what_an_active_grant_gives_is_warned() {
    let kc = Arc::new(FakeKeycloak::default());
    kc.add_user("ann", &["solo-approver", "trusted"], &[]);
    kc.add_user("ben", &["trusted"], &[]);
    let j = start(POLICY, kc.clone(), "").await;
    let ann = j.issuer.token("ann", &["solo-approver", "trusted"]);
    let ben = j.issuer.token("ben", &["trusted"]);

    // The first is auto-approved and granted: no warning yet.
    let (status, b) = create(&j, &ann, body("auto")).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert!(b.get("warnings").is_none(), "{b}");
    let first = b["id"].as_str().unwrap().to_string();
    let g = j
        .wait(
            &first,
            "the grant active",
            std::time::Duration::from_secs(30),
            |s| s.request.status() == jit_core::Status::Active,
        )
        .await;
    let until = g
        .request
        .expires_at()
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    // The same again while it runs: accepted, with the warning.
    let (status, b) = create(&j, &ann, body("auto")).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let w = b["warnings"].as_array().expect("warnings");
    assert_eq!(w.len(), 1, "{b}");
    assert_eq!(w[0]["code"], "already_granted", "{b}");
    let msg = w[0]["message"].as_str().unwrap();
    for part in [first.as_str(), until.as_str(), "jit extend"] {
        assert!(msg.contains(part), "{part:?} missing in: {msg}");
    }

    // Someone else's request for it, or ann's for another entitlement:
    // nothing to warn of.
    let (_, b) = create(&j, &ben, body("auto")).await;
    assert!(b.get("warnings").is_none(), "{b}");
    let (_, b) = create(&j, &ann, body("pair")).await;
    let codes: Vec<&str> = b["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(|x| x["code"].as_str()).collect())
        .unwrap_or_default();
    assert!(!codes.contains(&"already_granted"), "{b}");
    j.stop().await;
}
