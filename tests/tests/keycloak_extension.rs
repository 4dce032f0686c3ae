//! The Keycloak extension (`keycloak-extension/`) on the real Keycloak:
//! tokens that end with the grant, roles left out once the grant ended (even
//! while jitd is down), the claim, the login gate, and that users without
//! grants — or with a broken attribute — get ordinary tokens.
//!
//! Times are judged by Keycloak's own `iat`/`exp` and jitd's `expires_at`,
//! never by this test's clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_core::Status;
use jit_e2e::*;
use jit_testkit::{demo_password, keycloak_env, pkce_login, TokenSet, CLI_CLIENT_ID};
use serde_json::Value;

/// The demo client the realm fixture gates on a running grant of prod-db-admin.
const GATED_CLIENT: &str = "db-console";
/// `access.token.lifespan` of jit-cli in the realm fixture, seconds.
const CLI_LIFESPAN: i64 = 120;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

struct Login {
    set: TokenSet,
    access: Value,
    id: Value,
}

impl Login {
    fn iat(&self) -> i64 {
        self.access["iat"].as_i64().expect("iat")
    }
    fn exp(&self) -> i64 {
        self.access["exp"].as_i64().expect("exp")
    }
    fn roles(&self) -> Vec<String> {
        self.access["realm_access"]["roles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
    fn carries(&self, role: &str) -> bool {
        self.roles().iter().any(|r| r == role)
    }
    /// The `jit_grants` claim of the access token (empty when absent).
    fn grants(&self) -> Vec<Value> {
        self.access["jit_grants"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    /// `expires_at` the claim gives for grant `id`.
    fn claimed_end(&self, id: &str) -> Option<DateTime<Utc>> {
        self.grants()
            .iter()
            .find(|g| g["grant"] == id)
            .and_then(|g| g["expires_at"].as_str())
            .map(|s| s.parse().expect("expires_at is RFC 3339"))
    }
}

async fn login(client: &str, user: &str) -> anyhow::Result<Login> {
    let set = pkce_login(&keycloak_env(), client, user, &demo_password(user)).await?;
    let access = jit_testkit::decode_jwt_claims(&set.access_token)?;
    let id = jit_testkit::decode_jwt_claims(set.id_token.as_deref().expect("id_token"))?;
    Ok(Login { set, access, id })
}

async fn cli_login(user: &str) -> Login {
    login(CLI_CLIENT_ID, user)
        .await
        .unwrap_or_else(|e| panic!("login of {user}: {e:#}"))
}

/// A token of `user` whose claim shows grant `id` ending at `end` (jitd
/// writes the attribute right after each change): waits for it, bounded.
async fn token_showing(user: &str, id: &str, end: DateTime<Utc>) -> Login {
    let deadline = std::time::Instant::now() + secs(15);
    loop {
        let l = cli_login(user).await;
        if l.claimed_end(id).map(|t| t.timestamp_millis()) == Some(end.timestamp_millis()) {
            return l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no token of {user} shows grant {id} ending at {end} (last claim: {:?})",
            l.grants()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `exp` must be the grant's end to the second (floor), never later.
fn assert_ends_at(l: &Login, end: DateTime<Utc>, what: &str) {
    let want = end.timestamp();
    let (iat, exp) = (l.iat(), l.exp());
    assert!(
        (exp - want).abs() <= 1 && exp <= want,
        "{what}: access token exp {exp} (iat {iat}) should be the grant's end {end} ({want}), not iat + the lifespan"
    );
    let id_exp = l.id["exp"].as_i64().unwrap();
    assert!(
        id_exp <= want,
        "{what}: ID token exp {id_exp} after the grant's end {want}"
    );
    let expires_in = l.set.expires_in as i64;
    assert!(
        (expires_in - (exp - iat)).abs() <= 1,
        "{what}: expires_in {expires_in} does not match exp - iat = {}",
        exp - iat
    );
}

async fn attribute(ctx: &Ctx, user: &str) -> Vec<String> {
    let id = ctx.probe.user_id(user).await.unwrap();
    ctx.admin
        .user_attribute(&id, GRANTS_ATTRIBUTE)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_end_with_the_grant_follow_extensions_and_lose_the_role_at_drop() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);

    let id = request(&alice, "prod-db-admin", "40s").await;
    bob.approve(&id, None, None).await.unwrap();
    eventually(secs(10), "the grant to become active", || async {
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    let end = alice.get(&id).await.unwrap().request.expires_at().unwrap();

    let l = token_showing("alice", &id, end).await;
    assert!(l.carries("prod-db-admin"), "the token carries the JIT role");
    assert_ends_at(&l, end, "during the grant");
    assert!(
        l.exp() - l.iat() < CLI_LIFESPAN,
        "shorter than the client's lifespan"
    );
    let claim = l.grants();
    assert_eq!(claim.len(), 1, "{claim:?}");
    assert_eq!(claim[0]["entitlement"], "prod-db-admin");
    assert_eq!(
        claim[0]["target"],
        serde_json::json!({"kind": "realm_role", "role": "prod-db-admin"})
    );

    // Extension: a new token reaches the new end.
    let ext = alice
        .extend(&id, "30s", "need more time for the fix")
        .await
        .unwrap();
    bob.approve(ext.request.id(), None, None).await.unwrap();
    let new_end = alice.get(&id).await.unwrap().request.expires_at().unwrap();
    assert_eq!(new_end, end + chrono::Duration::seconds(30));
    let l = token_showing("alice", &id, new_end).await;
    assert_ends_at(&l, new_end, "after the extension");

    // Drop: no new token carries the role; the attribute is cleaned once the
    // role has left Keycloak, and lifetimes are ordinary again.
    alice.drop_grant(&id).await.unwrap();
    eventually(
        secs(10),
        "no new token carries the dropped role",
        || async { !cli_login("alice").await.carries("prod-db-admin") },
    )
    .await;
    eventually(secs(10), "jitd removes the grant end", || async {
        attribute(&ctx, "alice").await.is_empty()
    })
    .await;
    assert!(!ctx.has_realm_role("alice", "prod-db-admin").await);
    let l = cli_login("alice").await;
    assert!(!l.carries("prod-db-admin"));
    assert!(l.grants().is_empty(), "{:?}", l.grants());
    assert_eq!(l.exp() - l.iat(), CLI_LIFESPAN, "ordinary lifetime again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_role_is_left_out_of_tokens_while_jitd_is_down() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let mut jitd = Jitd::start(POLICY);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);
    let id = request(&alice, "prod-db-admin", "8s").await;
    bob.approve(&id, None, None).await.unwrap();
    eventually(secs(10), "the grant to become active", || async {
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    let end = alice.get(&id).await.unwrap().request.expires_at().unwrap();
    token_showing("alice", &id, end).await;

    // jitd dies: nobody removes the role from Keycloak at the end.
    jitd.kill9();
    let deadline = std::time::Instant::now() + secs(40);
    let after = loop {
        let l = cli_login("alice").await;
        // Judged by Keycloak's own clock: iat (whole seconds) is when it
        // issued the token; iat > floor(end) means issued after the end.
        if l.iat() > end.timestamp() {
            break l;
        }
        if l.iat() < end.timestamp() {
            assert!(
                l.carries("prod-db-admin"),
                "still granted at iat {}",
                l.iat()
            );
        }
        if l.carries("prod-db-admin") {
            assert!(l.exp() <= end.timestamp(), "exp {} after the end", l.exp());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no token issued after the end"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        ctx.has_realm_role("alice", "prod-db-admin").await,
        "the mapping is still in Keycloak (jitd is down)"
    );
    assert!(
        !after.carries("prod-db-admin"),
        "a token issued after expires_at carries the ended role: {:?}",
        after.roles()
    );
    assert!(!after.id["realm_access"]["roles"]
        .as_array()
        .is_some_and(|a| a.iter().any(|r| r == "prod-db-admin")));
    assert!(after.grants().is_empty(), "{:?}", after.grants());
    assert_eq!(after.exp() - after.iat(), CLI_LIFESPAN);

    // Back up, jitd finishes: role and grant end both gone.
    jitd.spawn();
    eventually(secs(15), "the role to leave Keycloak", || async {
        !ctx.has_realm_role("alice", "prod-db-admin").await
    })
    .await;
    eventually(secs(15), "jitd removes the grant end", || async {
        attribute(&ctx, "alice").await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_refuses_a_login_without_a_grant_and_lets_one_in_with_it() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let err = login(GATED_CLIENT, "alice")
        .await
        .err()
        .expect("alice holds no grant: the gate must refuse the login");
    let text = format!("{err:#}");
    for want in [
        "Just-in-time access required",
        "prod-db-admin",
        "jit request prod-db-admin",
        "jit://request?entitlement=prod-db-admin",
        "Try again",
    ] {
        assert!(text.contains(want), "the gate page lacks {want:?}: {text}");
    }
    // Other clients are not gated.
    cli_login("alice").await;

    let jitd = Jitd::start(POLICY);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);
    let id = request(&alice, "prod-db-admin", "60s").await;
    bob.approve(&id, None, None).await.unwrap();
    eventually(secs(10), "the grant to become active", || async {
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    let end = alice.get(&id).await.unwrap().request.expires_at().unwrap();
    token_showing("alice", &id, end).await;
    let l = login(GATED_CLIENT, "alice")
        .await
        .unwrap_or_else(|e| panic!("with a running grant the gate lets alice in: {e:#}"));
    assert!(l.carries("prod-db-admin"));
    assert!(l.exp() <= end.timestamp());

    bob.revoke(&id, "incident over").await.unwrap();
    eventually(
        secs(10),
        "the gate to refuse again after the revoke",
        || async { login(GATED_CLIENT, "alice").await.is_err() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_without_grants_and_broken_attributes_get_ordinary_tokens() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let log_path = std::env::var("KEYCLOAK_LOG").unwrap_or_else(|_| {
        panic!("KEYCLOAK_LOG is not set: run with `cargo xtask test` (it names Keycloak's log)")
    });
    // Started cleanly with the extension in providers/ (that it is loaded
    // shows below: only the extension logs the malformed attribute).
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("Listening on:"),
        "Keycloak has not started ({log_path})"
    );
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") && (l.contains("jitaccess") || l.contains("jit-")))
        .collect();
    assert!(bad.is_empty(), "errors from the extension: {bad:?}");

    // frank holds no JIT grant: the client's lifespan, no claim.
    let l = cli_login("frank").await;
    assert_eq!(l.exp() - l.iat(), CLI_LIFESPAN);
    assert!((l.set.expires_in as i64 - CLI_LIFESPAN).abs() <= 1);
    assert!(l.access.get("jit_grants").is_none());
    let ordinary_roles = {
        let mut r = l.roles();
        r.sort();
        r
    };

    // A malformed attribute: ordinary token, and Keycloak logs it.
    let frank = ctx.probe.user_id("frank").await.unwrap();
    let junk = vec![
        "not json".to_string(),
        r#"{"grant":"x","entitlement":"prod-db-admin","target":{"kind":"realm_role","role":"prod-db-admin"},"expires_at":"tomorrow"}"#.to_string(),
    ];
    ctx.admin
        .set_user_attribute(&frank, GRANTS_ATTRIBUTE, &junk)
        .await
        .unwrap();
    let l = cli_login("frank").await;
    let mut roles = l.roles();
    roles.sort();
    ctx.admin
        .set_user_attribute(&frank, GRANTS_ATTRIBUTE, &[])
        .await
        .unwrap();
    assert_eq!(
        l.exp() - l.iat(),
        CLI_LIFESPAN,
        "fallback to the normal lifetime"
    );
    assert!(l.access.get("jit_grants").is_none());
    assert_eq!(roles, ordinary_roles);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains(&format!(
            "ignoring malformed value of attribute {GRANTS_ATTRIBUTE} on user {frank}"
        )),
        "the malformed attribute is logged in {log_path}"
    );
}
