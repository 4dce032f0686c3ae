//! The `jit` realm fixture, checked against the running Keycloak at
//! `KEYCLOAK_URL` (start one with `cargo xtask keycloak start`, or run
//! everything with `cargo xtask test`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

use jit_testkit::{
    demo_password, keycloak_env, pkce_login, pkce_login_with_redirect, refresh, AdminProbe,
    API_AUDIENCE, BILLING_CLIENT_ID, CLI_CLIENT_ID, DESKTOP_CLIENT_ID,
};
use serde_json::Value;

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn realm_roles(claims: &Value) -> Vec<String> {
    strings(&claims["realm_access"]["roles"])
}

#[tokio::test]
async fn alice_cli_token_has_audience_lifespan_and_pinned_issuer() {
    let env = keycloak_env();
    let tokens = pkce_login(&env, CLI_CLIENT_ID, "alice", &demo_password("alice"))
        .await
        .expect("alice logs in through the login page");
    // Keycloak answers `expires_in` = exp − its clock when it writes the
    // response: a second boundary may fall between issuing and answering.
    // The lifespan itself is pinned below by the token's own exp − iat.
    assert!(
        (119..=120).contains(&tokens.expires_in),
        "expires_in = {}",
        tokens.expires_in
    );
    let claims = tokens.access_claims().unwrap();
    assert!(
        strings(&claims["aud"]).contains(&API_AUDIENCE.to_string()),
        "aud = {}",
        claims["aud"]
    );
    assert_eq!(claims["azp"], CLI_CLIENT_ID);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
    assert_eq!(claims["iss"], env.issuer());
    assert_eq!(claims["preferred_username"], "alice");
    assert!(claims["sub"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(tokens.id_token.is_some());

    // Refresh works for the public client and keeps the user.
    let refreshed = refresh(&env, CLI_CLIENT_ID, &tokens.refresh_token)
        .await
        .expect("refresh");
    let claims2 = refreshed.access_claims().unwrap();
    assert_eq!(claims2["preferred_username"], "alice");
    assert_eq!(claims2["sub"], claims["sub"]);
}

#[tokio::test]
async fn desktop_client_has_the_same_audience_and_lifespan() {
    let env = keycloak_env();
    let tokens = pkce_login(&env, DESKTOP_CLIENT_ID, "frank", &demo_password("frank"))
        .await
        .expect("frank logs in to jit-desktop");
    let claims = tokens.access_claims().unwrap();
    assert!(strings(&claims["aud"]).contains(&API_AUDIENCE.to_string()));
    assert_eq!(claims["azp"], DESKTOP_CLIENT_ID);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
}

#[tokio::test]
async fn bob_is_db_approver_in_token() {
    let env = keycloak_env();
    let tokens = pkce_login(&env, CLI_CLIENT_ID, "bob", &demo_password("bob"))
        .await
        .expect("bob logs in");
    let claims = tokens.access_claims().unwrap();
    assert!(
        realm_roles(&claims).contains(&"jit-approver-db".to_string()),
        "{}",
        claims["realm_access"]
    );
    assert!(
        strings(&claims["groups"]).contains(&"db-approvers".to_string()),
        "groups = {}",
        claims["groups"]
    );
}

#[tokio::test]
async fn carol_and_dave_roles_in_token() {
    let env = keycloak_env();
    for (user, role) in [("carol", "jit-approver-ops"), ("dave", "jit-auditor")] {
        let tokens = pkce_login(&env, CLI_CLIENT_ID, user, &demo_password(user))
            .await
            .unwrap_or_else(|e| panic!("{user} logs in: {e:#}"));
        let roles = realm_roles(&tokens.access_claims().unwrap());
        assert!(roles.contains(&role.to_string()), "{user}: {roles:?}");
        assert!(
            !roles.contains(&"jit-approver-db".to_string()),
            "{user}: {roles:?}"
        );
    }
}

#[tokio::test]
async fn erin_standing_entitlements_in_keycloak() {
    let env = keycloak_env();
    let admin = AdminProbe::new(&env).await.expect("service account login");
    // Standing entitlements that no JIT revoke may ever touch. (Only
    // positive checks: other tests may grant erin something meanwhile.)
    let direct = admin.realm_roles_direct("erin").await.unwrap();
    assert!(
        direct.contains(&"reporting-reader".to_string()),
        "{direct:?}"
    );
    assert!(direct.contains(&"support-agent".to_string()), "{direct:?}");
    let effective = admin.realm_roles_effective("erin").await.unwrap();
    assert!(effective.contains(&"support-agent".to_string()));
    assert!(effective.contains(&"reporting-reader".to_string()));
    assert!(effective.contains(&"default-roles-jit".to_string()));
    let groups = admin.groups("erin").await.unwrap();
    assert!(groups.contains(&"support-team".to_string()), "{groups:?}");

    // The other fixture memberships, and the probe's lookups.
    let bob_groups = admin.groups("bob").await.unwrap();
    assert!(
        bob_groups.contains(&"db-approvers".to_string()),
        "{bob_groups:?}"
    );
    admin
        .client_roles_effective("erin", BILLING_CLIENT_ID)
        .await
        .expect("effective client roles of billing-app are readable");
    admin
        .client_roles("erin", BILLING_CLIENT_ID)
        .await
        .expect("direct client roles are readable");
    admin
        .session_count("erin")
        .await
        .expect("sessions are readable");
    let err = admin.user_id("nobody-such").await.unwrap_err();
    assert!(format!("{err}").contains("no user"), "{err}");
}

#[tokio::test]
async fn backend_service_account_has_least_privilege() {
    let env = keycloak_env();
    let admin = AdminProbe::new(&env).await.expect("service account login");
    let token = admin.access_token().await.unwrap();
    let claims = jit_testkit::decode_jwt_claims(&token).unwrap();
    let mut rm = strings(&claims["resource_access"]["realm-management"]["roles"]);
    rm.sort();
    assert_eq!(
        rm,
        [
            "manage-users",
            "query-clients",
            "view-clients",
            "view-realm"
        ],
        "realm-management roles of service-account-jit-backend"
    );

    // It may not hand out admin roles (not even to itself).
    let http = reqwest::Client::new();
    let base = env.admin_base();
    let rm_id = admin.client_uuid("realm-management").await.unwrap();
    let realm_admin: Value = http
        .get(format!("{base}/clients/{rm_id}/roles/realm-admin"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let frank = admin.user_id("frank").await.unwrap();
    let resp = http
        .post(format!(
            "{base}/users/{frank}/role-mappings/clients/{rm_id}"
        ))
        .bearer_auth(&token)
        .json(&vec![realm_admin])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Nor change the realm.
    let resp = http
        .put(&base)
        .bearer_auth(&token)
        .json(&serde_json::json!({"registrationAllowed": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn wrong_password_gives_a_clear_error() {
    let env = keycloak_env();
    let err = pkce_login(&env, CLI_CLIENT_ID, "alice", "not-the-password")
        .await
        .expect_err("wrong password must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("Invalid username or password"), "{msg}");
    assert!(!msg.contains("not-the-password"), "{msg}");
}

#[tokio::test]
async fn non_loopback_redirect_is_refused() {
    let env = keycloak_env();
    let err = pkce_login_with_redirect(
        &env,
        CLI_CLIENT_ID,
        "http://attacker.example/callback",
        "alice",
        &demo_password("alice"),
    )
    .await
    .expect_err("only loopback redirects are registered");
    let msg = format!("{err:#}");
    assert!(msg.contains("redirect_uri"), "{msg}");
}

#[tokio::test]
async fn password_grant_is_disabled() {
    let env = keycloak_env();
    let resp = reqwest::Client::new()
        .post(env.token_endpoint())
        .form(&[
            ("grant_type", "password"),
            ("client_id", CLI_CLIENT_ID),
            ("username", "alice"),
            ("password", "alice-pass"),
        ])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized_client", "{body}");
}

#[test]
fn kc_form_login_delivers_code_and_state_to_the_loopback_listener() {
    let env = keycloak_env();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).unwrap();
        let request = String::from_utf8_lossy(&buf[..n]).to_string();
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
        request
    });
    let mut authorize = url::Url::parse(&env.authorization_endpoint()).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("client_id", CLI_CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid")
        .append_pair("redirect_uri", &format!("http://127.0.0.1:{port}/cb"))
        .append_pair("state", "s-123")
        .append_pair(
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        )
        .append_pair("code_challenge_method", "S256");
    let out = Command::new(env!("CARGO_BIN_EXE_kc-form-login"))
        .arg(authorize.as_str())
        .env("JIT_TEST_USERNAME", "frank")
        .env("JIT_TEST_PASSWORD", demo_password("frank"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let request = server.join().unwrap();
    let line = request.lines().next().unwrap();
    assert!(line.starts_with("GET /cb?"), "{line}");
    assert!(line.contains("state=s-123"), "{line}");
    assert!(line.contains("code="), "{line}");

    // Wrong password: exit 1, one line, no secrets.
    let out = Command::new(env!("CARGO_BIN_EXE_kc-form-login"))
        .arg(authorize.as_str())
        .env("JIT_TEST_USERNAME", "frank")
        .env("JIT_TEST_PASSWORD", "wrong-secret-value")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("Invalid username or password"), "{stderr}");
    assert!(!stderr.contains("wrong-secret-value"), "{stderr}");
}
