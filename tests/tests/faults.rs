//! Faults: Keycloak unreachable while a grant starts and while it ends. The
//! work is retried until done, a late revoke is visible in the API and the
//! metrics, and nothing is lost.

use std::time::Duration;

use jit_core::Status;
use jit_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_outage_delays_but_never_loses_a_grant_or_a_revoke() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let proxy = Outage::start(&ctx.env.url).await;
    let jitd = Jitd::start_via(POLICY, &proxy.url);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);
    // Warm the JWKS cache (it is fetched from the real issuer anyway).
    alice.me().await.unwrap();

    // Outage while the grant should start: it waits, then happens. The
    // approval needs Keycloak (bob's current rights), so it comes first and
    // the start is a little later; nothing can be granted before approval.
    let id = alice
        .create(&jit_core::api::CreateRequestBody {
            entitlement: "prod-db-admin".into(),
            // Long enough that the start, the outage and the recovery fit
            // in its window (a grant is never applied after its window).
            duration: Some("12s".into()),
            justification: "end-to-end test of the JIT cycle".into(),
            start_at: Some(chrono::Utc::now() + chrono::Duration::seconds(20)),
            ..Default::default()
        })
        .await
        .unwrap()
        .request
        .id()
        .to_string();
    bob.approve(&id, None, None).await.unwrap();
    proxy.down().await;
    eventually(
        Duration::from_secs(40),
        "the failed grant attempt to be visible",
        || async { alice.get(&id).await.unwrap().keycloak.last_error.is_some() },
    )
    .await;
    let r = alice.get(&id).await.unwrap();
    assert_eq!(
        r.request.status(),
        Status::Approved,
        "not active while Keycloak is down"
    );
    assert!(!ctx.has_realm_role("alice", "prod-db-admin").await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.up();
    eventually(
        Duration::from_secs(20),
        "granted once Keycloak is back",
        || async { alice.get(&id).await.unwrap().request.status() == Status::Active },
    )
    .await;
    assert!(ctx.has_realm_role("alice", "prod-db-admin").await);
    let r = alice.get(&id).await.unwrap().request;
    assert_eq!(
        (r.expires_at().unwrap() - r.activated_at().unwrap()).num_seconds(),
        12,
        "counts from the real grant"
    );

    // Outage at expiry: the revoke is late, visibly, and then done.
    proxy.down().await;
    // jitd itself says when the removal is late (its clock, its rule).
    eventually(
        Duration::from_secs(30),
        "jitd to show the revoke as late",
        || async { alice.get(&id).await.unwrap().revoke_late },
    )
    .await;
    let late = alice.get(&id).await.unwrap();
    assert_eq!(late.request.status(), Status::Expired);
    assert!(late.revoke_late, "the API shows the revoke is late");
    assert!(late.keycloak.removal_pending && late.keycloak.last_error.is_some());
    assert!(
        ctx.has_realm_role("alice", "prod-db-admin").await,
        "still there: Keycloak was unreachable"
    );
    let metrics = reqwest::get(format!("{}/metrics", jitd.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("jit_revocations_late 1"), "{metrics}");
    proxy.up();
    // jitd records the removal after Keycloak confirmed it: wait for the
    // record (a check of Keycloak alone can come between the two).
    eventually(
        Duration::from_secs(70),
        "removed once Keycloak is back",
        || async { alice.get(&id).await.unwrap().keycloak.removed_at.is_some() },
    )
    .await;
    assert!(
        !ctx.has_realm_role("alice", "prod-db-admin").await,
        "gone from Keycloak"
    );
    let done = alice.get(&id).await.unwrap();
    assert!(!done.revoke_late && done.keycloak.removed_at.is_some());
    let dave = jitd.client(&token("dave").await);
    let removed = dave
        .audit(0)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.request_id == id && a.event == jit_core::api::EventKind::GrantRemoved)
        .expect("removal audited");
    assert!(
        removed.reason.unwrap().contains("late"),
        "the audit says it was late"
    );
}
