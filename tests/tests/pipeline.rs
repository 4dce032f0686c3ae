//! The CI/CD case: a pipeline authenticates with its own Keycloak client
//! (client-credentials grant, audience `jit-api`), asks for access for its
//! own service account with `jit request … --wait` and `JIT_TOKEN`, a human
//! approves, the service account holds the role in Keycloak, and the grant
//! ends on time. The requester is shown as a service account in the API
//! view and in the audit.

use std::process::Stdio;
use std::time::Duration;

use jit_core::Status;
use jit_e2e::*;
use jit_testkit::{client_credentials_token, PIPELINE_CLIENT_ID};

const PIPELINE_POLICY: &str = r#"
auditor_roles = ["jit-auditor"]

[[entitlement]]
id = "prod-deploy"
display_name = "Production deploy"
realm_role = "prod-deployer"
max_duration = "1h"
default_duration = "10m"
approver_roles = ["jit-approver-ops"]
"#;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_service_account_requests_waits_and_loses_the_role_on_time() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let sa_id = ctx
        .probe
        .service_account_id(PIPELINE_CLIENT_ID)
        .await
        .expect("the fixture's pipeline client has a service account");
    // A role left by an earlier failed run.
    ctx.admin
        .unassign(
            &sa_id,
            &jit_core::EntitlementKind::RealmRole {
                role: "prod-deployer".into(),
            },
        )
        .await
        .unwrap();
    let jitd = Jitd::start(PIPELINE_POLICY);
    let pipeline_token = client_credentials_token(
        &ctx.env,
        PIPELINE_CLIENT_ID,
        jit_testkit::DEMO_PIPELINE_SECRET,
    )
    .await
    .expect("client-credentials token of the pipeline client");

    // The pipeline step, exactly as in the README's CI example.
    let cfg = tempfile::tempdir().unwrap();
    let step = tokio::process::Command::new(bin("jit"))
        .args([
            "--server",
            &jitd.url,
            "request",
            "prod-deploy",
            "--for",
            "15s",
            "--reason",
            "deploy build 42 to production",
            "--wait",
            "--timeout",
            "2m",
        ])
        .env("JIT_TOKEN", &pipeline_token)
        .env("JIT_CONFIG_DIR", cfg.path())
        .env_remove("JIT_PROFILE")
        .env_remove("JIT_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run jit");

    // A human (carol, approver of prod-deploy) sees it and approves.
    let carol = jitd.client(&token("carol").await);
    let to_review = jit_client::ListQuery {
        to_review: true,
        ..Default::default()
    };
    eventually(
        secs(20),
        "the pipeline's request to reach carol",
        || async { !carol.list(&to_review).await.unwrap().is_empty() },
    )
    .await;
    let id = carol.list(&to_review).await.unwrap()[0]
        .request
        .id()
        .to_string();
    let view = carol.get(&id).await.unwrap();
    assert_eq!(
        view.request.requester_client(),
        Some(PIPELINE_CLIENT_ID),
        "the requester is shown as the pipeline client's service account"
    );
    assert_eq!(view.request.requester_id(), sa_id);
    assert_eq!(view.request.status(), Status::Pending);
    carol
        .approve(&id, Some("go".into()), None)
        .await
        .expect("carol approves");

    let out = tokio::time::timeout(secs(60), step.wait_with_output())
        .await
        .expect("jit --wait returns after the approval")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "jit request --wait: {text}");
    assert!(text.contains("Granted: prod-deploy is active"), "{text}");
    assert!(
        ctx.probe
            .service_account_realm_roles(PIPELINE_CLIENT_ID)
            .await
            .unwrap()
            .contains(&"prod-deployer".to_string()),
        "Keycloak's admin API shows the role on the service account"
    );

    // It ends on time: removed from Keycloak, by the server's own clock.
    let pipeline = jitd.client(&pipeline_token);
    eventually(secs(45), "the grant to end and leave Keycloak", || async {
        pipeline
            .get(&id)
            .await
            .unwrap()
            .keycloak
            .removed_at
            .is_some()
    })
    .await;
    let r = pipeline.get(&id).await.unwrap();
    assert_eq!(r.request.status(), Status::Expired);
    let late = r.keycloak.removed_at.unwrap() - r.request.expires_at().unwrap();
    assert!(
        late <= chrono::Duration::seconds(5),
        "removed {late} after expires_at"
    );
    assert!(
        !ctx.probe
            .service_account_realm_roles(PIPELINE_CLIENT_ID)
            .await
            .unwrap()
            .contains(&"prod-deployer".to_string()),
        "the role left the service account"
    );

    // The audit marks the service account's own actions, not carol's.
    let dave = jitd.client(&token("dave").await);
    let rows = dave.audit(0).await.unwrap();
    let created = rows
        .iter()
        .find(|r| r.event == jit_core::api::EventKind::RequestCreated)
        .unwrap();
    assert_eq!(created.actor_client.as_deref(), Some(PIPELINE_CLIENT_ID));
    let approved = rows
        .iter()
        .find(|r| r.event == jit_core::api::EventKind::RequestApproved)
        .unwrap();
    assert_eq!(
        (approved.actor.as_str(), approved.actor_client.as_deref()),
        ("carol", None)
    );
    assert!(dave.audit_verify().await.unwrap().ok);
}
