//! Reliability at the edges, on the real Keycloak: targets that do not
//! exist or that the service account may not assign, a role or a user
//! deleted while a grant is active, eligibility lost before a scheduled
//! start, offline sessions ended with the grant. Every wait is bounded and
//! on a condition; lateness is read from jitd's own timestamps.

use std::time::Duration;

use jit_core::api::CreateRequestBody;
use jit_core::{EntitlementKind, Status};
use jit_e2e::*;

const SECS: Duration = Duration::from_secs(60);

/// Keycloak's master admin (realm changes the service account may not make).
struct MasterAdmin {
    url: String,
    http: reqwest::Client,
    token: String,
}

impl MasterAdmin {
    async fn new(url: &str) -> MasterAdmin {
        let http = reqwest::Client::new();
        let v: serde_json::Value = http
            .post(format!("{url}/realms/master/protocol/openid-connect/token"))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", "admin"),
                ("password", "admin-pass"),
            ])
            .send()
            .await
            .expect("master admin token")
            .error_for_status()
            .expect("master admin login")
            .json()
            .await
            .unwrap();
        MasterAdmin {
            url: format!("{url}/admin/realms/jit"),
            http,
            token: v["access_token"].as_str().unwrap().to_string(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("admin call");
        assert!(resp.status().is_success(), "{path}: HTTP {}", resp.status());
        resp
    }

    async fn create_role(&self, name: &str) {
        self.send(
            reqwest::Method::POST,
            "/roles",
            Some(serde_json::json!({"name": name})),
        )
        .await;
    }

    async fn delete_role(&self, name: &str) {
        self.send(reqwest::Method::DELETE, &format!("/roles/{name}"), None)
            .await;
    }

    /// A user who can log in with `password`; returns their id.
    async fn create_user(&self, name: &str, password: &str) -> String {
        let resp = self
            .send(
                reqwest::Method::POST,
                "/users",
                Some(serde_json::json!({
                    "username": name, "enabled": true, "emailVerified": true,
                    "email": format!("{name}@example.test"), "firstName": "Temp", "lastName": "User",
                    "credentials": [{"type": "password", "value": password, "temporary": false}],
                })),
            )
            .await;
        let loc = resp.headers()["location"].to_str().unwrap().to_string();
        loc.rsplit('/').next().unwrap().to_string()
    }

    /// Whether user `username` holds realm role `role` directly, as the
    /// master admin sees it (works while jitd's service account may not
    /// read users).
    async fn has_realm_role(&self, username: &str, role: &str) -> bool {
        let users: serde_json::Value = self
            .send(
                reqwest::Method::GET,
                &format!("/users?username={username}&exact=true"),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        let id = users[0]["id"].as_str().expect("the user");
        let roles: serde_json::Value = self
            .send(
                reqwest::Method::GET,
                &format!("/users/{id}/role-mappings/realm"),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        roles.as_array().unwrap().iter().any(|r| r["name"] == role)
    }

    async fn delete_user(&self, id: &str) {
        self.send(reqwest::Method::DELETE, &format!("/users/{id}"), None)
            .await;
    }
}

/// Takes `realm-management`'s `role` from jitd's service account
/// (`service-account-jit-backend`, the fixture's) until dropped: Keycloak
/// then refuses jitd's user changes for real (403). Gives it back on drop,
/// also when the test fails, so that later tests find the realm as it was.
struct ServiceAccountWithout {
    url: String,
    role: String,
}

impl ServiceAccountWithout {
    async fn take(url: &str, role: &str) -> ServiceAccountWithout {
        Self::set(url, role, false).await;
        ServiceAccountWithout {
            url: url.to_string(),
            role: role.to_string(),
        }
    }

    /// Gives (`held`) or takes `realm-management`'s `role` of the
    /// service account.
    async fn set(url: &str, role: &str, held: bool) {
        let m = MasterAdmin::new(url).await;
        let get = |path: String| {
            let m = &m;
            async move {
                m.send(reqwest::Method::GET, &path, None)
                    .await
                    .json::<serde_json::Value>()
                    .await
                    .unwrap()
            }
        };
        let users = get("/users?username=service-account-jit-backend&exact=true".into()).await;
        let user = users[0]["id"]
            .as_str()
            .expect("the service account")
            .to_string();
        let clients = get("/clients?clientId=realm-management".into()).await;
        let client = clients[0]["id"]
            .as_str()
            .expect("realm-management")
            .to_string();
        let rep = get(format!("/clients/{client}/roles/{role}")).await;
        let method = if held {
            reqwest::Method::POST
        } else {
            reqwest::Method::DELETE
        };
        m.send(
            method,
            &format!("/users/{user}/role-mappings/clients/{client}"),
            Some(serde_json::json!([rep])),
        )
        .await;
    }

    async fn give_back(self) {
        Self::set(&self.url, &self.role, true).await;
        std::mem::forget(self);
    }
}

impl Drop for ServiceAccountWithout {
    fn drop(&mut self) {
        let (url, role) = (self.url.clone(), self.role.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(ServiceAccountWithout::set(&url, &role, true))
        })
        .join();
    }
}

fn policy_with(extra: &str) -> String {
    format!("{POLICY}\n{extra}")
}

/// Only `extra`'s entitlements (a target may be in one entitlement only).
fn policy_only(extra: &str) -> String {
    format!("auditor_roles = [\"jit-auditor\"]\n{extra}")
}

/// An entitlement of `role` that anyone may request, auto-approved.
fn auto_entitlement(id: &str, role: &str, more: &str) -> String {
    format!(
        "[[entitlement]]\nid = \"{id}\"\nrealm_role = \"{role}\"\nmax_duration = \"1h\"\napprover_roles = [\"jit-approver-db\"]\n{more}\n[[entitlement.auto_approve]]\nrequester_role = \"default-roles-jit\"\n"
    )
}

async fn audit_has(jitd: &Jitd, id: &str, event: &str, part: &str) -> bool {
    let dave = jitd.client(&token("dave").await);
    dave.audit(0).await.unwrap().iter().any(|a| {
        a.request_id == id
            && a.event.as_str() == event
            && a.reason.as_deref().unwrap_or("").contains(part)
    })
}

fn body(entitlement: &str, duration: &str) -> CreateRequestBody {
    CreateRequestBody {
        entitlement: entitlement.into(),
        duration: Some(duration.into()),
        justification: "reliability end-to-end test".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_that_cannot_be_granted_are_flagged_listed_and_refused() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let policy = policy_with(
        r#"
[[entitlement]]
id = "ghost"
realm_role = "jit-e2e-no-such-role"
max_duration = "1h"
approver_roles = ["jit-approver-db"]

[[entitlement]]
id = "manage-realm"
client_role = { client = "realm-management", role = "manage-realm" }
max_duration = "1h"
approver_roles = ["jit-approver-db"]
"#,
    );
    let jitd = Jitd::start(&policy);
    let alice = jitd.client(&token("alice").await);
    for (id, why) in [
        ("ghost", "does not exist"),
        ("manage-realm", "does not let jitd's service account"),
    ] {
        let err = alice.create(&body(id, "10m")).await.unwrap_err();
        assert_eq!(err.code(), Some("entitlement_unavailable"), "{id}: {err}");
        assert!(err.to_string().contains(why), "{id}: {err}");
        let list = alice.entitlements().await.unwrap();
        let e = list.iter().find(|e| e.id == id).unwrap();
        assert!(!e.available, "{id} listed as unavailable");
        assert!(e.unavailable_reason.as_deref().unwrap().contains(why));
    }
    let ok = alice.entitlements().await.unwrap();
    assert!(
        ok.iter()
            .find(|e| e.id == "prod-db-admin")
            .unwrap()
            .available
    );

    // check-policy flags both, and only these two.
    let out = std::process::Command::new(bin("jitd"))
        .arg("--config")
        .arg(jitd.dir.path().join("jitd.toml"))
        .arg("check-policy")
        .arg(jitd.dir.path().join("policy.toml"))
        .env("JIT_BACKEND_SECRET", &ctx.env.backend_secret)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 2, "{text}");
    assert!(errors
        .iter()
        .any(|l| l.contains("'ghost'") && l.contains("does not exist")));
    assert!(errors
        .iter()
        .any(|l| l.contains("'manage-realm'") && l.contains("does not let")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_deleted_before_activation_fails_the_grant_and_one_deleted_while_active_completes_the_removal(
) {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let master = MasterAdmin::new(&ctx.env.url).await;
    let suffix = &uuid_suffix();
    let (before, during) = (format!("jit-e2e-a-{suffix}"), format!("jit-e2e-b-{suffix}"));
    master.create_role(&before).await;
    master.create_role(&during).await;
    let policy = policy_with(&format!(
        "{}\n[[entitlement]]\nid = \"needs-approval\"\nrealm_role = \"{before}\"\nmax_duration = \"1h\"\napprover_roles = [\"jit-approver-db\"]\n",
        auto_entitlement("temp-during", &during, "")
    ));
    let jitd = Jitd::start(&policy);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);

    // Deleted between the request and the approval: the grant fails for
    // good, with the reason, visible to requester and approver.
    let a = alice
        .create(&body("needs-approval", "10m"))
        .await
        .unwrap()
        .request
        .id()
        .to_string();
    master.delete_role(&before).await;
    bob.approve(&a, None, None).await.unwrap();
    eventually(SECS, "the grant to fail", || async {
        alice.get(&a).await.unwrap().request.status() == Status::Failed
    })
    .await;
    let seen_by_bob = bob.get(&a).await.unwrap();
    assert!(seen_by_bob
        .request
        .end_reason()
        .unwrap()
        .contains("does not exist"));
    assert!(audit_has(&jitd, &a, "grant.failed", "does not exist").await);
    assert!(
        !seen_by_bob.keycloak.removal_pending,
        "nothing was granted, so nothing is to remove"
    );

    // Deleted while active: the removal is complete (nothing is left).
    let b = alice
        .create(&body("temp-during", "30m"))
        .await
        .unwrap()
        .request
        .id()
        .to_string();
    eventually(SECS, "active", || async {
        alice.get(&b).await.unwrap().request.status() == Status::Active
    })
    .await;
    assert!(ctx.has_realm_role("alice", &during).await);
    master.delete_role(&during).await;
    alice.drop_grant(&b).await.unwrap();
    eventually(SECS, "the removal to complete", || async {
        !alice.get(&b).await.unwrap().keycloak.removal_pending
    })
    .await;
    let v = alice.get(&b).await.unwrap();
    assert!(
        !v.revoke_late && !v.keycloak.removal_failed,
        "{:?}",
        v.keycloak
    );
    assert!(audit_has(&jitd, &b, "grant.removed", "no longer exists in Keycloak").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deleted_while_active_completes_the_removal() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let master = MasterAdmin::new(&ctx.env.url).await;
    let name = format!("jit-e2e-temp-{}", uuid_suffix());
    let password = "temp-user-pass-1";
    let uid = master.create_user(&name, password).await;
    let policy = policy_only(&auto_entitlement("temp-db", "prod-db-admin", ""));
    let jitd = Jitd::start(&policy);
    let tok = jit_testkit::pkce_login(&ctx.env, jit_testkit::CLI_CLIENT_ID, &name, password)
        .await
        .expect("temp user login")
        .access_token;
    let temp = jitd.client(&tok);
    let id = temp
        .create(&body("temp-db", "30m"))
        .await
        .unwrap()
        .request
        .id()
        .to_string();
    eventually(SECS, "active", || async {
        temp.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    master.delete_user(&uid).await;
    // The token still works for jitd (it proves who they were).
    temp.drop_grant(&id).await.unwrap();
    eventually(SECS, "the removal to complete", || async {
        !temp.get(&id).await.unwrap().keycloak.removal_pending
    })
    .await;
    let v = temp.get(&id).await.unwrap();
    assert!(!v.revoke_late && !v.keycloak.removal_failed);
    assert!(audit_has(&jitd, &id, "grant.removed", "no longer exists in Keycloak").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eligibility_lost_before_a_scheduled_start_ends_the_request() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let policy = policy_only(
        r#"
[[entitlement]]
id = "support-db"
realm_role = "prod-db-admin"
max_duration = "1h"
approver_roles = ["jit-approver-db"]
requester_groups = ["support-team"]
"#,
    );
    let jitd = Jitd::start(&policy);
    let erin = jitd.client(&token("erin").await);
    let bob = jitd.client(&token("bob").await);
    let erin_id = ctx.probe.user_id("erin").await.unwrap();
    let group = EntitlementKind::Group {
        path: "/support-team".into(),
    };
    let start = chrono::Utc::now() + chrono::Duration::seconds(15);
    let id = erin
        .create(&CreateRequestBody {
            start_at: Some(start),
            ..body("support-db", "10m")
        })
        .await
        .unwrap()
        .request
        .id()
        .to_string();
    // erin leaves the group that may request it, then bob approves; the
    // start has not come (it cannot: the request was not approved yet).
    ctx.admin.unassign(&erin_id, &group).await.unwrap();
    let restore = async { ctx.admin.assign(&erin_id, &group).await.unwrap() };
    let approved = bob.approve(&id, None, None).await.unwrap();
    assert_eq!(approved.request.status(), Status::Approved);
    let ended = tokio::time::timeout(SECS, async {
        loop {
            let r = erin.get(&id).await.unwrap();
            if r.request.status().is_terminal() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    restore.await;
    let r = ended.expect("the request ends at its start");
    assert_eq!(r.request.status(), Status::Cancelled);
    assert!(r
        .request
        .end_reason()
        .unwrap()
        .contains("no longer eligible"));
    assert!(
        r.request.ended_at().unwrap() >= start,
        "ended at the start, not before"
    );
    assert!(!ctx.has_realm_role("erin", "prod-db-admin").await);
    assert!(audit_has(&jitd, &id, "request.cancelled", "no longer eligible").await);
    let seen_by_bob = bob.get(&id).await.unwrap();
    assert_eq!(seen_by_bob.request.status(), Status::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_sessions_on_revoke_ends_offline_sessions() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let policy = policy_only(&auto_entitlement(
        "db-sessions",
        "prod-db-admin",
        "end_sessions_on_revoke = true",
    ));
    let jitd = Jitd::start(&policy);
    let frank_id = ctx.probe.user_id("frank").await.unwrap();
    let offline = jit_testkit::pkce_login_scoped(
        &ctx.env,
        jit_testkit::CLI_CLIENT_ID,
        "http://127.0.0.1:49999/callback",
        "frank",
        &jit_testkit::demo_password("frank"),
        "openid offline_access",
    )
    .await
    .expect("offline login");
    let cli_uuid = ctx
        .probe
        .client_uuid(jit_testkit::CLI_CLIENT_ID)
        .await
        .unwrap();
    let count = || async {
        let token = ctx.probe.access_token().await.unwrap();
        let v: Vec<serde_json::Value> = reqwest::Client::new()
            .get(format!(
                "{}/users/{frank_id}/offline-sessions/{cli_uuid}",
                ctx.env.admin_base()
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        v.len()
    };
    assert!(count().await >= 1, "an offline session exists");
    let frank = jitd.client(&offline.access_token);
    let id = frank
        .create(&body("db-sessions", "30m"))
        .await
        .unwrap()
        .request
        .id()
        .to_string();
    eventually(SECS, "active", || async {
        frank.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    frank.drop_grant(&id).await.unwrap();
    eventually(SECS, "removed", || async {
        frank.get(&id).await.unwrap().keycloak.removed_at.is_some()
    })
    .await;
    assert_eq!(
        count().await,
        0,
        "offline sessions listed by Keycloak after revoke"
    );
    assert!(audit_has(&jitd, &id, "grant.removed", "offline session").await);
    let refresh =
        jit_testkit::refresh(&ctx.env, jit_testkit::CLI_CLIENT_ID, &offline.refresh_token).await;
    assert!(refresh.is_err(), "the offline token no longer refreshes");
}

/// Four grants of one realm role due at the same start are decided from
/// one read of the role's direct holders (jitd logs that read at debug); a
/// user given the role directly after their request was accepted keeps it
/// as standing access after their grant ends, and jitd's record says it
/// did not own the assignment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_grants_of_one_role_keeps_a_standing_assignment_made_before_activation() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let master = MasterAdmin::new(&ctx.env.url).await;
    let role = format!("jit-e2e-burst-{}", uuid_suffix());
    master.create_role(&role).await;
    let password = "burst-user-pass-1";
    let mut users = Vec::new();
    for i in 0..4 {
        let name = format!("{role}-user{i}");
        let id = master.create_user(&name, password).await;
        users.push((name, id));
    }
    let policy = policy_only(&auto_entitlement("burst-role", &role, ""));
    let jitd = Jitd::start_observed(&policy, "", "", "info,jit_server::scheduler=debug");
    let mut clients = Vec::new();
    for (name, _) in &users {
        let tok = jit_testkit::pkce_login(&ctx.env, jit_testkit::CLI_CLIENT_ID, name, password)
            .await
            .expect("temp user login")
            .access_token;
        clients.push(jitd.client(&tok));
    }
    // One start for all four: their grants become due in the same tick.
    let start = chrono::Utc::now() + chrono::Duration::seconds(25);
    let mut ids = Vec::new();
    for c in &clients {
        let v = c
            .create(&CreateRequestBody {
                start_at: Some(start),
                ..body("burst-role", "30m")
            })
            .await
            .unwrap();
        assert_eq!(
            v.request.status(),
            Status::Approved,
            "accepted for the later start"
        );
        ids.push(v.request.id().to_string());
    }
    // The first user gets the role directly (standing) after the request
    // was accepted, before its start.
    let kc = RealmAdmin::new(&ctx).await;
    kc.set_realm_role(&users[0].1, &role, true).await;
    assert_eq!(
        clients[0].get(&ids[0]).await.unwrap().request.status(),
        Status::Approved,
        "the standing assignment was made before activation"
    );
    for (c, id) in clients.iter().zip(&ids) {
        eventually(SECS, "all four grants active", || async {
            c.get(id).await.unwrap().request.status() == Status::Active
        })
        .await;
    }
    let log = std::fs::read_to_string(jitd.log_path()).unwrap();
    let reads: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("read a target's direct holders for a burst of grants"))
        .collect();
    assert_eq!(
        reads.len(),
        1,
        "one read of the role's holders decided the burst:\n{log}"
    );
    assert!(reads[0].contains(&role), "{}", reads[0]);
    let first = clients[0].get(&ids[0]).await.unwrap();
    assert_eq!(
        first.keycloak.owns_assignment,
        Some(false),
        "jitd does not own the standing assignment"
    );
    for (c, id) in clients.iter().zip(&ids).skip(1) {
        assert_eq!(
            c.get(id).await.unwrap().keycloak.owns_assignment,
            Some(true)
        );
    }
    for (c, id) in clients.iter().zip(&ids) {
        c.drop_grant(id).await.unwrap();
    }
    for (c, id) in clients.iter().zip(&ids) {
        eventually(SECS, "every grant ended and its removal done", || async {
            let v = c.get(id).await.unwrap();
            v.request.status().is_terminal() && !v.keycloak.removal_pending
        })
        .await;
    }
    assert!(
        ctx.has_realm_role(&users[0].0, &role).await,
        "the standing assignment survives the end of the grant"
    );
    for (name, _) in &users[1..] {
        assert!(
            !ctx.has_realm_role(name, &role).await,
            "{name}'s JIT assignment is removed"
        );
    }
    for (_, id) in &users {
        master.delete_user(id).await;
    }
    master.delete_role(&role).await;
}

fn uuid_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            & 0xffff_ffff
    )
}

/// A removal Keycloak really refuses (jitd's service account lost
/// `manage-users` while the grant was active) becomes `removal_failed`,
/// visible and late; once the rights are back, an approver retries it with
/// `jit retry-removal` and jitd removes the role, confirmed by Keycloak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_keycloak_refuses_fails_visibly_and_is_retried_after_the_fix() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let master = MasterAdmin::new(&ctx.env.url).await;
    let role = format!("jit-e2e-r-{}", uuid_suffix());
    master.create_role(&role).await;
    let policy = policy_only(&auto_entitlement("temp-refused", &role, ""));
    let jitd = Jitd::start(&policy);
    let alice = jitd.client(&token("alice").await);
    let id = alice
        .create(&body("temp-refused", "30m"))
        .await
        .unwrap()
        .request
        .id()
        .to_string();
    eventually(SECS, "active", || async {
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    assert!(ctx.has_realm_role("alice", &role).await);

    let without = ServiceAccountWithout::take(&ctx.env.url, "manage-users").await;
    alice.drop_grant(&id).await.unwrap();
    eventually(SECS, "the removal to fail for good", || async {
        alice.get(&id).await.unwrap().keycloak.removal_failed
    })
    .await;
    let v = alice.get(&id).await.unwrap();
    assert!(v.revoke_late, "a failed removal is shown as late");
    assert!(
        master.has_realm_role("alice", &role).await,
        "Keycloak really refused"
    );
    assert!(audit_has(&jitd, &id, "grant.removal_failed", "administrator").await);

    // `jit show` says so and what to do.
    let jit = |args: &[&str], who: &str, tok: &str| {
        std::process::Command::new(bin("jit"))
            .args(["--server", &jitd.url])
            .args(args)
            .env("JIT_TOKEN", tok)
            .env("JIT_CONFIG_DIR", jitd.dir.path())
            .env_remove("JIT_PROFILE")
            .env_remove("JIT_SERVER")
            .output()
            .unwrap_or_else(|e| panic!("jit as {who}: {e}"))
    };
    let bob_token = token("bob").await;
    let out = jit(&["show", &id], "bob", &bob_token);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("removal FAILED") && text.contains("jit retry-removal"),
        "{text}"
    );

    // The rights are back; bob (an approver) retries from the CLI.
    without.give_back().await;
    let out = jit(
        &[
            "retry-removal",
            &id,
            "--comment",
            "service account rights restored",
        ],
        "bob",
        &bob_token,
    );
    assert!(
        out.status.success(),
        "exit {:?}: {} {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(SECS, "the retried removal confirmed", || async {
        alice.get(&id).await.unwrap().keycloak.removed_at.is_some()
    })
    .await;
    let v = alice.get(&id).await.unwrap();
    assert!(
        !v.revoke_late && !v.keycloak.removal_failed,
        "{:?}",
        v.keycloak
    );
    assert!(
        !ctx.has_realm_role("alice", &role).await,
        "removed in Keycloak"
    );
    assert!(audit_has(&jitd, &id, "grant.removal_retried", "rights restored").await);
    assert!(audit_has(&jitd, &id, "grant.removed", "").await);

    // Nothing left to retry: exit 8 (conflict), one line.
    let out = jit(&["retry-removal", &id], "bob", &bob_token);
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to retry"));
    master.delete_role(&role).await;
}
