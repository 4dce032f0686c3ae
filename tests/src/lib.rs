//! Harness for the end-to-end tests: runs the real `jitd` binary (as a child
//! process, so it can be killed with SIGKILL) against the real Keycloak
//! named by `KEYCLOAK_URL`, logs users in through Keycloak's real login page,
//! and checks what Keycloak really holds.
//!
//! Tests share one Keycloak and its users, so they run one at a time
//! ([`serial`]); each starts its own jitd with a fresh database.

pub mod bench_opts;
pub mod burst_bench;
pub mod fanout_bench;
pub mod list_bench;
pub mod token_bounds;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jit_client::{Client, StaticToken, TokenSource};
use jit_keycloak::AdminClient;
use jit_testkit::{demo_password, keycloak_env, AdminProbe, KeycloakEnv};

/// The user attribute jitd writes grant ends to (its default), read by the
/// Keycloak extension.
pub const GRANTS_ATTRIBUTE: &str = "jit.grants";

/// The standing access of the realm's users that no JIT action may touch.
pub const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held for the whole of a test: tests share Keycloak users.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Path of a binary of this workspace (`target/debug/NAME`), built by
/// `cargo test --workspace --all-targets` (or `cargo build --workspace`):
/// next to the running binary, or one folder up (test binaries live in
/// `target/debug/deps`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let here = exe.parent().expect("binary folder");
    let up = here.parent().unwrap_or(here);
    let p = [here.join(name), up.join(name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| up.join(name));
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace --bins`)",
        p.display()
    );
    p
}

/// A jitd child process with its own folder, database and port.
pub struct Jitd {
    pub dir: tempfile::TempDir,
    /// Extra environment of the process (e.g. webhook secrets).
    pub env: Vec<(String, String)>,
    pub port: u16,
    child: Option<Child>,
    pub url: String,
    /// Where jitd's stderr goes (appended); `jitd.log` in `dir` when `None`
    /// (see [`Jitd::log_path`]).
    pub log: Option<PathBuf>,
    /// `JITD_LOG` (default `info`).
    pub log_filter: String,
}

/// The test policy: the demo entitlements with short limits.
pub const POLICY: &str = r#"
auditor_roles = ["jit-auditor"]

[[entitlement]]
id = "prod-db-admin"
display_name = "Production database admin"
realm_role = "prod-db-admin"
max_duration = "1h"
default_duration = "15m"
approver_roles = ["jit-approver-db"]
approver_groups = ["db-approvers"]
justification_min = 10
pending_ttl = "30m"

[[entitlement]]
id = "billing-admin"
client_role = { client = "billing-app", role = "billing-admin" }
max_duration = "4h"
approver_roles = ["jit-approver-ops"]

[[entitlement]]
id = "incident-responder"
group = "/incident-responders"
max_duration = "2h"
approver_roles = ["jit-approver-ops"]
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Jitd {
    /// Starts jitd with `policy` on a free port, fresh database.
    pub fn start(policy: &str) -> Jitd {
        Jitd::start_via(policy, &keycloak_env().url)
    }

    /// jitd's log (all its runs in this test), kept out of the test
    /// output: negative tests make jitd log expected WARN/ERROR lines. It
    /// is printed when the test fails (see `Drop`).
    pub fn log_path(&self) -> PathBuf {
        self.log
            .clone()
            .unwrap_or_else(|| self.dir.path().join("jitd.log"))
    }

    /// (Re)starts the process on the same port and database; waits until it
    /// listens.
    pub fn spawn(&mut self) {
        let env = keycloak_env();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open jitd.log");
        let mut child = Command::new(bin("jitd"))
            .arg("--config")
            .arg(self.dir.path().join("jitd.toml"))
            .env("JIT_BACKEND_SECRET", &env.backend_secret)
            .env("JITD_LOG", &self.log_filter)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start jitd");
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut reader = BufReader::new(out);
        // The first stdout line is "jitd listening on URL".
        reader.read_line(&mut line).expect("read jitd stdout");
        if !line.contains("listening on") || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "jitd did not start (stdout: {line:?}); its log:\n{}",
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
        }
        std::thread::spawn(move || for _ in reader.lines() {});
        self.child = Some(child);
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9 jitd");
            c.wait().unwrap();
        }
    }

    /// Writes a new policy file (jitd reloads it).
    pub fn write_policy(&self, policy: &str) {
        std::fs::write(self.dir.path().join("policy.toml"), policy).unwrap();
    }

    /// A client with `token`.
    pub fn client(&self, token: &str) -> Client {
        let src: Arc<dyn TokenSource> = Arc::new(StaticToken(token.to_string()));
        Client::new(&self.url, Some(src))
    }
}

impl Drop for Jitd {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            // The test failed: its jitd log helps (captured with the test's output).
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!(
                "---- jitd log (last {} lines of {}) ----\n{}",
                tail.len(),
                self.log_path().display(),
                tail.join("\n")
            );
        }
    }
}

/// Logs `user` in through Keycloak's login page (client jit-cli, PKCE) and
/// returns the access token.
pub async fn token(user: &str) -> String {
    jit_testkit::pkce_login(
        &keycloak_env(),
        jit_testkit::CLI_CLIENT_ID,
        user,
        &demo_password(user),
    )
    .await
    .unwrap_or_else(|e| panic!("login of {user} through Keycloak failed: {e:#}"))
    .access_token
}

/// Realm roles (`realm_access.roles`) in a token `user` gets now, after a
/// login through Keycloak's page. Errors: login or token decoding failed.
pub async fn fresh_token_roles(user: &str) -> anyhow::Result<Vec<String>> {
    let set = jit_testkit::pkce_login(
        &keycloak_env(),
        jit_testkit::CLI_CLIENT_ID,
        user,
        &demo_password(user),
    )
    .await?;
    let claims = jit_testkit::decode_jwt_claims(&set.access_token)?;
    Ok(claims["realm_access"]["roles"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// [`fresh_token_roles`], panicking with the reason (for tests).
pub async fn token_roles(user: &str) -> Vec<String> {
    fresh_token_roles(user)
        .await
        .unwrap_or_else(|e| panic!("token of {user}: {e:#}"))
}

/// Everything Keycloak says `user` holds: direct and effective realm roles,
/// billing-app client roles, groups — sorted, for before/after comparison.
pub async fn snapshot(probe: &AdminProbe, user: &str) -> Vec<String> {
    let mut v = Vec::new();
    for r in probe.realm_roles_direct(user).await.unwrap() {
        v.push(format!("direct:{r}"));
    }
    for r in probe.realm_roles_effective(user).await.unwrap() {
        v.push(format!("effective:{r}"));
    }
    for r in probe
        .client_roles(user, jit_testkit::BILLING_CLIENT_ID)
        .await
        .unwrap()
    {
        v.push(format!("client:{r}"));
    }
    for g in probe.groups(user).await.unwrap() {
        v.push(format!("group:{g}"));
    }
    v.sort();
    v
}

/// Test context: Keycloak env, admin probe, and jitd's own admin client
/// (used only to clean up JIT roles left by an earlier failed run).
pub struct Ctx {
    pub env: KeycloakEnv,
    pub probe: AdminProbe,
    pub admin: AdminClient,
}

impl Ctx {
    /// Connects to Keycloak (fails loudly if it is not there) and removes
    /// any requestable entitlement from the requesters.
    pub async fn new() -> Ctx {
        let env = keycloak_env();
        let probe = AdminProbe::new(&env)
            .await
            .unwrap_or_else(|e| panic!("cannot reach Keycloak at {}: {e:#}", env.url));
        let admin = AdminClient::new(
            &env.url,
            &env.realm,
            "jit-backend",
            &env.backend_secret,
            jit_keycloak::http_client(),
        );
        let ctx = Ctx { env, probe, admin };
        ctx.restore_fixture_rights().await;
        for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
            let id = ctx.probe.user_id(user).await.unwrap();
            for t in targets() {
                ctx.admin.unassign(&id, &t).await.unwrap();
            }
            // Grant ends an earlier run left for the Keycloak extension.
            ctx.admin
                .set_user_attribute(&id, GRANTS_ATTRIBUTE, &[])
                .await
                .unwrap();
        }
        ctx
    }

    /// Puts back the fixture's rights that tests change for a while
    /// (carol's approver role, bob's approver group, erin's direct
    /// support-agent role, frank enabled), also after a failed run.
    pub async fn restore_fixture_rights(&self) {
        let kc = RealmAdmin::new(self).await;
        let id = |u: &'static str| async move { self.probe.user_id(u).await.unwrap() };
        kc.set_realm_role(&id("carol").await, "jit-approver-ops", true)
            .await;
        kc.set_member(&id("bob").await, "/db-approvers", true).await;
        kc.set_realm_role(&id("erin").await, "support-agent", true)
            .await;
        kc.set_enabled(&id("frank").await, true).await;
    }

    pub async fn has_realm_role(&self, user: &str, role: &str) -> bool {
        self.probe
            .realm_roles_direct(user)
            .await
            .unwrap()
            .iter()
            .any(|r| r == role)
    }
}

/// The Keycloak targets of [`POLICY`].
pub fn targets() -> Vec<jit_core::EntitlementKind> {
    use jit_core::EntitlementKind::*;
    vec![
        RealmRole {
            role: "prod-db-admin".into(),
        },
        ClientRole {
            client: "billing-app".into(),
            role: "billing-admin".into(),
        },
        Group {
            path: "/incident-responders".into(),
        },
    ]
}

/// Polls `f` every 100 ms until it is true or `timeout` passes; returns
/// how long it took, or panics with `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a request as `token`'s user and returns its id.
pub async fn request(c: &Client, entitlement: &str, duration: &str) -> String {
    c.create(&jit_core::api::CreateRequestBody {
        entitlement: entitlement.into(),
        duration: Some(duration.into()),
        justification: "end-to-end test of the JIT cycle".into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("create {entitlement}: {e}"))
    .request
    .id()
    .to_string()
}

/// A TCP proxy on loopback in front of Keycloak that can be switched off,
/// to give jitd a real Keycloak outage (connections refused or cut) without
/// stopping the shared Keycloak.
pub struct Outage {
    pub url: String,
    up: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Outage {
    /// Starts the proxy to `target` (`http://127.0.0.1:PORT`), up.
    pub async fn start(target: &str) -> Outage {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (u, g) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !u.load(Ordering::SeqCst) {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let target = target.clone();
                let (u, g) = (u.clone(), g.clone());
                let born = g.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        // Cut live connections when the outage starts.
                        while u.load(Ordering::SeqCst) && g.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = cut => {} }
                });
            }
        });
        Outage {
            url,
            up,
            generation,
        }
    }

    /// Keycloak becomes unreachable: new connections are refused and open
    /// (pooled keep-alive) ones are cut before this returns.
    pub async fn down(&self) {
        use std::sync::atomic::Ordering;
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        // The relay tasks notice within 50 ms.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Keycloak is reachable again.
    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A TCP proxy on loopback in front of Keycloak that holds every chunk a
/// client sends for `delay` before passing it on: each Admin API call of a
/// jitd behind it takes at least `delay` (a slow Keycloak, so due work stays
/// claimed long enough to be seen).
pub struct SlowProxy {
    pub url: String,
}

impl SlowProxy {
    /// Starts the proxy to `target` (`http://127.0.0.1:PORT`).
    pub async fn start(target: &str, delay: Duration) -> SlowProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match ri.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    tokio::time::sleep(delay).await;
                                    if wo.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = wo.shutdown().await;
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut ro, &mut wi).await;
                        let _ = wi.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        SlowProxy { url }
    }
}

impl Jitd {
    /// Like [`Jitd::start`], but jitd reaches Keycloak's APIs through
    /// `keycloak_url` (tokens still carry the real issuer).
    pub fn start_via(policy: &str, keycloak_url: &str) -> Jitd {
        Jitd::start_with(policy, keycloak_url, "", &[])
    }

    /// Like [`Jitd::start_via`], with `extra` TOML appended to `jitd.toml`
    /// (e.g. `[[webhook]]` tables) and `env_vars` set for the process.
    pub fn start_with(
        policy: &str,
        keycloak_url: &str,
        extra: &str,
        env_vars: &[(&str, &str)],
    ) -> Jitd {
        let mut j = Jitd::prepare(policy, keycloak_url, extra, env_vars);
        j.spawn();
        j
    }

    /// Folder, policy and config of a jitd, not started yet.
    fn prepare(policy: &str, keycloak_url: &str, extra: &str, env_vars: &[(&str, &str)]) -> Jitd {
        let env = keycloak_env();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("jitd.toml"),
            format!(
                "listen = \"127.0.0.1:{port}\"\ndatabase = \"jitd.sqlite\"\npolicy = \"policy.toml\"\n\n[keycloak]\nurl = \"{keycloak_url}\"\nrealm = \"{}\"\nissuer = \"{}\"\n{extra}\n",
                env.realm,
                env.issuer()
            ),
        )
        .unwrap();
        Jitd {
            dir,
            env: env_vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port,
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            log: None,
            log_filter: "info".into(),
        }
    }

    /// Like [`Jitd::start_via`], with `database` (e.g. a `postgres://` URL
    /// that several jitd share) instead of a SQLite file of its own.
    pub fn start_on(policy: &str, keycloak_url: &str, database: &str) -> Jitd {
        let mut j = Jitd::prepare(policy, keycloak_url, "", &[]);
        let cfg = j.dir.path().join("jitd.toml");
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "database = \"jitd.sqlite\"",
            &format!("database = \"{database}\""),
        );
        std::fs::write(&cfg, text).unwrap();
        j.spawn();
        j
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Like [`Jitd::start`], with jitd's log appended to `log` (chaos runs
    /// restart it many times; their output stays readable).
    pub fn start_logged(policy: &str, log: &Path) -> Jitd {
        let mut j = Jitd::prepare(policy, &keycloak_env().url, "", &[]);
        j.log = Some(log.to_path_buf());
        j.spawn();
        j
    }

    /// Like [`Jitd::start`], with `top_level` lines put first in jitd.toml
    /// (e.g. `log_format = "json"`), `extra` sections last (e.g.
    /// `[scheduler]`), `JITD_LOG=filter`, and the log
    /// appended to `jitd.log` in its folder ([`Jitd::log`]).
    pub fn start_observed(policy: &str, top_level: &str, extra: &str, filter: &str) -> Jitd {
        let mut j = Jitd::prepare(policy, &keycloak_env().url, extra, &[]);
        let cfg = j.dir.path().join("jitd.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, format!("{top_level}\n{text}")).unwrap();
        j.log = Some(j.dir.path().join("jitd.log"));
        j.log_filter = filter.to_string();
        j.spawn();
        j
    }
}

/// Raw Admin REST calls as the realm's service account (manage-users), to
/// change users' rights in tests. Each call panics with Keycloak's answer
/// when it fails.
pub struct RealmAdmin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl RealmAdmin {
    pub async fn new(ctx: &Ctx) -> RealmAdmin {
        RealmAdmin {
            http: reqwest::Client::new(),
            base: ctx.env.admin_base(),
            token: ctx.probe.access_token().await.unwrap(),
        }
    }

    /// `method` on `{admin base}{path}` with an optional JSON body; the
    /// JSON answer (`Null` when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// `method` on `{admin base}{path}` without a body: the HTTP status
    /// (for calls whose "not found" is an answer, not a failure).
    pub async fn status_of(&self, method: reqwest::Method, path: &str) -> reqwest::StatusCode {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Gives (`held`) or takes the realm role `role` directly.
    pub async fn set_realm_role(&self, user_id: &str, role: &str, held: bool) {
        let r = self
            .call(reqwest::Method::GET, &format!("/roles/{role}"), None)
            .await;
        let m = if held {
            reqwest::Method::POST
        } else {
            reqwest::Method::DELETE
        };
        self.call(
            m,
            &format!("/users/{user_id}/role-mappings/realm"),
            Some(serde_json::json!([r])),
        )
        .await;
    }

    /// Makes the user a member of group `path` (`/ops`), or not.
    pub async fn set_member(&self, user_id: &str, path: &str, member: bool) {
        let g = self
            .call(
                reqwest::Method::GET,
                &format!("/group-by-path/{}", path.trim_start_matches('/')),
                None,
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let m = if member {
            reqwest::Method::PUT
        } else {
            reqwest::Method::DELETE
        };
        self.call(m, &format!("/users/{user_id}/groups/{g}"), None)
            .await;
    }

    /// Enables or disables the user.
    pub async fn set_enabled(&self, user_id: &str, enabled: bool) {
        self.call(
            reqwest::Method::PUT,
            &format!("/users/{user_id}"),
            Some(serde_json::json!({ "enabled": enabled })),
        )
        .await;
    }
}
