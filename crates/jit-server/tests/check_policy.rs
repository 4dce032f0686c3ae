//! `jitd check-policy --config`: what it reports for each entitlement,
//! against the in-process fake Keycloak (every answer reachable).

mod support;

use jit_core::{EntitlementKind, Policy};
use jit_keycloak::TargetStatus;
use jit_server::check_policy::against_keycloak;
use support::{FakeKeycloak, Fault, Op};

const POLICY: &str = r#"
[[entitlement]]
id = "a-ok"
realm_role = "role-ok"
max_duration = "1h"
approver_roles = ["approver"]

[[entitlement]]
id = "b-held"
realm_role = "role-held"
max_duration = "1h"
approver_roles = ["approver"]

[[entitlement]]
id = "c-missing"
group = "gone"
max_duration = "1h"
approver_roles = ["approver"]
"#;

fn role(r: &str) -> EntitlementKind {
    EntitlementKind::RealmRole { role: r.into() }
}

#[tokio::test]
async fn each_entitlement_is_ok_held_standing_or_an_error() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let kc = FakeKeycloak::default();
    kc.add_user("u-standing", &[], &[]);
    kc.edit_user("u-standing", |u| {
        u.assigned.insert(role("role-held"));
    });
    kc.set_target(
        EntitlementKind::Group {
            path: "/gone".into(),
        },
        TargetStatus::Missing("group /gone does not exist".into()),
    );
    let f = against_keycloak(&policy, &kc, None).await;
    assert_eq!(f.errors, 1, "{f:?}");
    assert_eq!(f.lines[0], "policy OK: 3 entitlements");
    assert!(f.lines[1].starts_with("ok: 'a-ok'"), "{f:?}");
    assert!(
        f.lines[2]
            == "warning: 'b-held' (realm role role-held) is held by: u-standing (standing or through JIT grants: no jitd database was read)",
        "{f:?}"
    );
    assert!(
        f.lines[3].starts_with("error: entitlement 'c-missing'")
            && f.lines[3].contains("does not exist"),
        "{f:?}"
    );
}

#[tokio::test]
async fn a_keycloak_that_cannot_answer_is_an_error_per_entitlement() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let kc = FakeKeycloak::default();
    kc.fail(Some(Op::TargetStatus), None, Fault::Refused, None);
    let f = against_keycloak(&policy, &kc, None).await;
    assert_eq!(f.errors, 3, "{f:?}");
    assert!(
        f.lines[1..]
            .iter()
            .all(|l| l.contains("cannot check it in Keycloak")),
        "{f:?}"
    );
}

/// A refused service-account login is one line saying what to fix, not
/// the same error once per entitlement.
#[tokio::test]
async fn a_refused_login_is_one_line_naming_the_credentials() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let kc = FakeKeycloak::default();
    kc.fail(None, None, Fault::LoginRefused, None);
    let f = against_keycloak(&policy, &kc, None).await;
    assert_eq!(f.errors, 3, "{f:?}");
    assert_eq!(f.lines.len(), 2, "{f:?}");
    assert!(
        f.lines[1].contains("backend_client_id and its secret"),
        "{f:?}"
    );
}

const AUTO_POLICY: &str = r#"
[[entitlement]]
id = "a-jit-only"
realm_role = "role-jit"
max_duration = "1h"
approver_roles = ["approver"]
[[entitlement.auto_approve]]
requester_role = "auto"

[[entitlement]]
id = "b-held"
realm_role = "role-held"
max_duration = "1h"
approver_roles = ["approver"]
[[entitlement.auto_approve]]
requester_role = "auto"
"#;

/// Holders through active JIT grants (jitd owns the assignment) are not
/// reported as standing; only the others are.
#[tokio::test]
async fn holders_through_active_jit_grants_are_not_standing() {
    let kc = std::sync::Arc::new(FakeKeycloak::default());
    for u in ["alice", "erin", "u-standing"] {
        kc.add_user(u, &[], &[]);
    }
    kc.edit_user("u-standing", |u| {
        u.assigned.insert(role("role-held"));
    });
    let j = support::start(AUTO_POLICY, kc.clone(), "").await;
    let ids = [
        j.request("alice", "b-held", 600),
        j.request("erin", "b-held", 600),
        j.request("erin", "a-jit-only", 600),
    ];
    for id in &ids {
        j.wait(
            id,
            "the grant active",
            std::time::Duration::from_secs(30),
            |s| {
                s.request.status() == jit_core::Status::Active
                    && s.grant.owns_assignment == Some(true)
            },
        )
        .await;
    }
    let policy = Policy::from_toml(AUTO_POLICY).unwrap();
    let f = against_keycloak(&policy, &*kc, Some(&j.state().store)).await;
    assert_eq!(f.errors, 0, "{f:?}");
    assert_eq!(
        f.lines[1], "ok: 'a-jit-only' (realm role role-jit) — nobody holds it standing; held through active JIT grants by: erin",
        "{f:?}"
    );
    assert!(
        f.lines[2].starts_with("warning: 'b-held'")
            && f.lines[2].contains("standing assignment by: u-standing;")
            && f.lines[2].ends_with("held through active JIT grants by: alice, erin"),
        "{f:?}"
    );
    // Without the store holders cannot be told apart: named as held, not
    // as standing.
    let f = against_keycloak(&policy, &*kc, None).await;
    assert_eq!(
        f.lines[1],
        "warning: 'a-jit-only' (realm role role-jit) is held by: erin (standing or through JIT grants: no jitd database was read)",
        "{f:?}"
    );
    j.stop().await;
}

/// Open requests and grants of entitlements a new policy leaves out are
/// named before it is loaded: jitd would end them at the reload.
#[tokio::test]
async fn what_a_policy_would_end_is_said_before_it_is_loaded() {
    let kc = std::sync::Arc::new(FakeKeycloak::default());
    for u in ["alice", "erin"] {
        kc.add_user(u, &[], &[]);
    }
    let j = support::start(AUTO_POLICY, kc.clone(), "").await;
    let ids = [
        j.request("alice", "b-held", 600),
        j.request("erin", "b-held", 600),
    ];
    for id in &ids {
        j.wait(
            id,
            "the grant active",
            std::time::Duration::from_secs(30),
            |s| s.request.status() == jit_core::Status::Active,
        )
        .await;
    }
    let without_b = AUTO_POLICY
        .split("[[entitlement]]")
        .filter(|part| !part.contains("\"b-held\""))
        .collect::<Vec<_>>()
        .join("[[entitlement]]");
    let policy = Policy::from_toml(&without_b).unwrap();
    assert!(policy.entitlement("b-held").is_none());
    let f = against_keycloak(&policy, &*kc, Some(&j.state().store)).await;
    assert_eq!(
        f.lines.last().unwrap(),
        "warning: loading this policy ends what is open of 'b-held' (it is no longer in this policy): 2 active grant(s) revoked and their roles removed, 0 request(s) not active yet cancelled",
        "{f:?}"
    );
    // The policy in force ends nothing.
    let f = against_keycloak(
        &Policy::from_toml(AUTO_POLICY).unwrap(),
        &*kc,
        Some(&j.state().store),
    )
    .await;
    assert!(
        !f.lines
            .iter()
            .any(|l| l.contains("loading this policy ends")),
        "{f:?}"
    );
    j.stop().await;
}

/// `jitd --config … check-policy` with a SQLite file that does not exist
/// (no jitd ran with that config) says so before the per-entitlement lines
/// and creates no file (the README's `config/jitd.toml` while the demo runs
/// on its own database).
#[test]
fn a_missing_database_is_named_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[[entitlement]]\nid = \"x\"\nrealm_role = \"r\"\nmax_duration = \"1h\"\napprover_roles = [\"a\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("jitd.toml"),
        "listen = \"127.0.0.1:0\"\ndatabase = \"no-such/jitd.sqlite\"\npolicy = \"policy.toml\"\n\n\
         [keycloak]\nurl = \"http://127.0.0.1:9\"\nrealm = \"test\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitd"))
        .arg("--config")
        .arg(dir.path().join("jitd.toml"))
        .arg("check-policy")
        .arg(dir.path().join("policy.toml"))
        .env("JIT_BACKEND_SECRET", "test-secret")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("note: jitd's database ")
            && l.contains("no-such/jitd.sqlite does not exist")
            && l.ends_with("holders through active JIT grants cannot be told from standing ones")),
        "{text}"
    );
    assert!(!dir.path().join("no-such").exists(), "nothing created");
}
