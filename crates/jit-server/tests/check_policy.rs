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
    let f = against_keycloak(&policy, &kc).await;
    assert_eq!(f.errors, 1, "{f:?}");
    assert_eq!(f.lines[0], "policy OK: 3 entitlements");
    assert!(f.lines[1].starts_with("ok: 'a-ok'"), "{f:?}");
    assert!(
        f.lines[2].starts_with("warning: 'b-held'") && f.lines[2].ends_with("u-standing"),
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
    let f = against_keycloak(&policy, &kc).await;
    assert_eq!(f.errors, 3, "{f:?}");
    assert!(
        f.lines[1..]
            .iter()
            .all(|l| l.contains("cannot check it in Keycloak")),
        "{f:?}"
    );
}
