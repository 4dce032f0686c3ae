//! Shared pieces of jitd's in-process tests: the fault-injecting Keycloak,
//! a jitd with it, tokens signed by a key of our own (served as JWKS on
//! loopback), and bounded waits on the store.

#![allow(dead_code)]

pub mod fake_keycloak;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use jit_core::{AccessRequest, NewRequest, Principal};
use jit_server::store::Stored;
use jit_server::{AppState, Config, Server};

pub use fake_keycloak::{FakeKeycloak, Fault, Op};

/// A jitd on loopback with a fake Keycloak, its folder kept alive.
pub struct TestJitd {
    pub server: Server,
    pub kc: Arc<FakeKeycloak>,
    pub dir: tempfile::TempDir,
    pub issuer: Issuer,
}

impl TestJitd {
    pub fn state(&self) -> &Arc<AppState> {
        &self.server.state
    }

    /// The stored request `id`.
    pub fn get(&self, id: &str) -> Stored {
        self.state()
            .store
            .sync()
            .get(id)
            .unwrap()
            .expect("request stored")
    }

    /// Inserts a request by `user` for `entitlement` (the policy must
    /// auto-approve requesters holding role `auto`), as the API would, and
    /// wakes the scheduler. Returns its id.
    pub fn request(&self, user: &str, entitlement: &str, secs: i64) -> String {
        self.request_at(user, entitlement, secs, None)
    }

    /// Like [`request`](Self::request) with a scheduled start.
    pub fn request_at(
        &self,
        user: &str,
        entitlement: &str,
        secs: i64,
        start: Option<chrono::DateTime<Utc>>,
    ) -> String {
        self.request_as(Principal::new(user, user), entitlement, secs, start)
    }

    /// Like [`request`](Self::request), by OAuth client `client` acting for
    /// itself through its service account `user`.
    pub fn request_by_client(
        &self,
        user: &str,
        client: &str,
        entitlement: &str,
        secs: i64,
        start: Option<chrono::DateTime<Utc>>,
    ) -> String {
        let mut p = Principal::new(user, user);
        p.client_id = Some(client.into());
        self.request_as(p, entitlement, secs, start)
    }

    /// Makes the scheduled requests `ids` due now, in one transaction, and
    /// wakes the scheduler: one pass hands them all out.
    pub fn make_due_now(&self, ids: &[String]) {
        let now = Utc::now();
        self.state()
            .store
            .sync()
            .update_each(ids, move |s| {
                let mut st = s.request.to_stored();
                st.start_at = Some(now);
                s.request = jit_core::AccessRequest::restore(st);
                Ok(vec![])
            })
            .unwrap();
        self.state().wake.notify_one();
    }

    /// Like [`request`](Self::request) by a requester without role `auto`:
    /// the request waits for an approver (`pending`).
    pub fn request_pending(&self, user: &str, entitlement: &str, secs: i64) -> String {
        self.request_with(Principal::new(user, user), false, entitlement, secs, None)
    }

    fn request_as(
        &self,
        p: Principal,
        entitlement: &str,
        secs: i64,
        start: Option<chrono::DateTime<Utc>>,
    ) -> String {
        self.request_with(p, true, entitlement, secs, start)
    }

    fn request_with(
        &self,
        mut p: Principal,
        auto: bool,
        entitlement: &str,
        secs: i64,
        start: Option<chrono::DateTime<Utc>>,
    ) -> String {
        if auto {
            p.roles.insert("auto".into());
        }
        p.roles.insert("requester".into());
        let input = NewRequest {
            entitlement: entitlement.into(),
            duration_secs: Some(secs),
            justification: "in-process scheduler test".into(),
            start_at: start,
            ..Default::default()
        };
        let id = uuid_like();
        let (r, t) =
            AccessRequest::create(id.clone(), &input, &p, &self.state().policy(), Utc::now())
                .expect("request valid");
        let recs = self.state().store.sync().insert(&r, t).unwrap();
        self.state().published(&recs);
        id
    }

    /// Waits (at most `limit`) until request `id` satisfies `f`.
    pub async fn wait(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        f: impl Fn(&Stored) -> bool,
    ) -> Stored {
        let start = Instant::now();
        loop {
            let s = self.get(id);
            if f(&s) {
                return s;
            }
            if start.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting for {what}: {:?} {:?}",
                    s.request.status(),
                    s.grant
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Audit events of request `id`, in order.
    pub fn events(&self, id: &str) -> Vec<(jit_core::api::EventKind, Option<String>)> {
        self.state()
            .store
            .sync()
            .audit_after(0, 100_000)
            .unwrap()
            .into_iter()
            .filter(|r| r.request_id == id)
            .map(|r| (r.event, r.reason))
            .collect()
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Waits (at most `limit`) for `f` to hold.
pub async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts jitd with `policy`, the fake `kc` and extra `[scheduler]` lines.
pub async fn start(policy: &str, kc: Arc<FakeKeycloak>, scheduler: &str) -> TestJitd {
    start_on(policy, kc, scheduler, "jitd.sqlite").await
}

/// Like [`start`], on `database` (a SQLite file in jitd's folder, or a
/// PostgreSQL URL several jitd may share).
pub async fn start_on(
    policy: &str,
    kc: Arc<FakeKeycloak>,
    scheduler: &str,
    database: &str,
) -> TestJitd {
    try_start_on(policy, kc, scheduler, database).await.unwrap()
}

/// Like [`start_on`]; a jitd that does not start is an error.
#[allow(dead_code)]
pub async fn try_start_on(
    policy: &str,
    kc: Arc<FakeKeycloak>,
    scheduler: &str,
    database: &str,
) -> anyhow::Result<TestJitd> {
    let issuer = Issuer::start().await;
    // The check of active grants against the disabled users reads
    // Keycloak every 30 s by default: tests that count Keycloak's calls
    // must not meet it; the tests of that check set their own.
    let own_check = scheduler.contains("disabled_check_secs");
    let scheduler = if own_check {
        scheduler.to_string()
    } else {
        format!("disabled_check_secs = 3600\n{scheduler}")
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    std::fs::write(
        dir.path().join("jitd.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = \"{database}\"\npolicy = \"policy.toml\"\n\n\
             [keycloak]\nurl = \"http://127.0.0.1:9\"\nrealm = \"test\"\nissuer = \"{}\"\n\n\
             [scheduler]\n{scheduler}\n",
            issuer.issuer
        ),
    )
    .unwrap();
    let config = Config::load(&dir.path().join("jitd.toml")).unwrap();
    let server = jit_server::start_with(&config, kc.clone()).await?;
    if !own_check {
        // The check's first round runs right after start: it is over
        // before the test makes requests (it reads Keycloak when any
        // request is open), unless Keycloak is taken for down.
        let sched = &server.state.scheduler;
        let deadline = Instant::now() + Duration::from_secs(20);
        while sched.disabled_checks_finished() == 0 && !sched.keycloak_down() {
            assert!(
                Instant::now() < deadline,
                "the first check against the disabled users never finished"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(TestJitd {
        server,
        kc,
        dir,
        issuer,
    })
}

/// An OIDC issuer of our own on loopback: serves a JWKS with one P-256 key
/// and signs access tokens with it, shaped like Keycloak's.
pub struct Issuer {
    pub issuer: String,
    key: jsonwebtoken::EncodingKey,
    _task: tokio::task::JoinHandle<()>,
}

impl Issuer {
    pub async fn start() -> Issuer {
        use base64::Engine;
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "test-key", "alg": "ES256", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        }]});
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/realms/test/protocol/openid-connect/certs",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Issuer {
            issuer: format!("http://{addr}/realms/test"),
            key: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
            _task: task,
        }
    }

    /// An access token for user `sub` with realm `roles`, audience jit-api,
    /// valid for 5 minutes.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.token_lasting(sub, roles, 300)
    }

    /// Like [`Issuer::token`], valid for `secs` seconds.
    pub fn token_lasting(&self, sub: &str, roles: &[&str], secs: i64) -> String {
        let now = Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": self.issuer, "aud": ["jit-api"], "sub": sub, "typ": "Bearer",
            "preferred_username": sub, "exp": now + secs, "iat": now, "azp": "jit-cli",
            "realm_access": {"roles": roles},
        });
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some("test-key".into());
        jsonwebtoken::encode(&h, &claims, &self.key).unwrap()
    }
}

/// An HTTP request to jitd's router with a bearer token and an optional
/// JSON body.
pub fn request(
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> axum::http::Request<axum::body::Body> {
    use axum::http::header;
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    let body = match body {
        Some(b) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            axum::body::Body::from(b.to_string())
        }
        None => axum::body::Body::empty(),
    };
    req.body(body).unwrap()
}

/// Sends [`request`] through jitd's router (axum `oneshot`, no socket):
/// the status and the body as JSON (`Null` when it is not JSON).
pub async fn send(
    j: &TestJitd,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (axum::http::StatusCode, serde_json::Value) {
    use tower::ServiceExt;
    let app = jit_server::api::router(j.state().clone());
    let resp = app
        .oneshot(request(method, path, token, body))
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}
