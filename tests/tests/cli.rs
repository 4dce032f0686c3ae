//! The `jit` CLI as a user runs it: login through Keycloak's login page
//! (the scripted browser is `$BROWSER`), profiles side by side, `request
//! --wait`, approve, drop, one-line errors with exit codes, `JIT_TOKEN`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use jit_core::Status;
use jit_e2e::*;

fn jit(cfg: &Path, server: &str, user: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin("jit"));
    c.arg("--profile")
        .arg(user)
        .arg("--server")
        .arg(server)
        .args(args)
        .env("JIT_CONFIG_DIR", cfg)
        .env("BROWSER", bin("kc-form-login"))
        .env("JIT_TEST_USERNAME", user)
        .env("JIT_TEST_PASSWORD", jit_testkit::demo_password(user))
        .env_remove("JIT_TOKEN")
        .env_remove("JIT_PROFILE")
        .env_remove("JIT_SERVER");
    c
}

fn run(cfg: &Path, server: &str, user: &str, args: &[&str]) -> Output {
    jit(cfg, server, user, args).output().expect("run jit")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_request_wait_approve_drop() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let cfg = tempfile::tempdir().unwrap();
    let (cfg, url) = (cfg.path(), jitd.url.as_str());

    for user in ["alice", "bob"] {
        let o = run(cfg, url, user, &["login", "--timeout", "60s"]);
        assert!(o.status.success(), "login {user}: {}", text(&o));
        assert!(
            text(&o).contains(&format!("Logged in as {user}")),
            "{}",
            text(&o)
        );
    }
    // Tokens are on disk for the owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cfg.join("profiles/alice.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let o = run(cfg, url, "bob", &["whoami"]);
    assert!(text(&o).contains("approves: prod-db-admin"), "{}", text(&o));

    let waiter = jit(
        cfg,
        url,
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "30m",
            "--reason",
            "rotate the replica credentials",
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    let mut id = String::new();
    eventually(
        Duration::from_secs(10),
        "the request in bob's review list",
        || {
            let o = run(cfg, url, "bob", &["list", "--to-review", "--json"]);
            let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            if let Some(found) = rows
                .as_array()
                .and_then(|a| a.first())
                .and_then(|r| r["id"].as_str())
            {
                id = found.to_string();
            }
            let found = !id.is_empty();
            async move { found }
        },
    )
    .await;

    // alice cannot approve her own request: one line, non-zero exit.
    let o = run(cfg, url, "alice", &["approve", &id]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("jit: ") && err.contains("own request"),
        "{err}"
    );

    // bob approves by id prefix.
    let o = run(
        cfg,
        url,
        "bob",
        &["approve", &id[..8], "--comment", "approved in test"],
    );
    assert!(o.status.success(), "{}", text(&o));

    let out = tokio::task::spawn_blocking(move || waiter.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "--wait exits 0 once active: {}",
        text(&out)
    );
    assert!(text(&out).contains("Granted"), "{}", text(&out));
    assert!(ctx.has_realm_role("alice", "prod-db-admin").await);

    let o = run(cfg, url, "alice", &["show", &id[..8]]);
    assert!(text(&o).contains("left)"), "countdown shown: {}", text(&o));

    let o = run(cfg, url, "alice", &["drop", &id[..8]]);
    assert!(o.status.success(), "{}", text(&o));
    eventually(Duration::from_secs(5), "role gone after drop", || async {
        !ctx.has_realm_role("alice", "prod-db-admin").await
    })
    .await;

    // A denied request: --wait exits 3.
    let waiter = jit(
        cfg,
        url,
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "5m",
            "--reason",
            "just curious about prod",
            "--wait",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut id2 = String::new();
    eventually(Duration::from_secs(10), "second request listed", || {
        let o = run(cfg, url, "bob", &["list", "--to-review", "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(found) = rows
            .as_array()
            .and_then(|a| a.first())
            .and_then(|r| r["id"].as_str())
        {
            id2 = found.to_string();
        }
        let found = !id2.is_empty();
        async move { found }
    })
    .await;
    let o = run(cfg, url, "bob", &["deny", &id2, "--comment", "no"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = tokio::task::spawn_blocking(move || waiter.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    // Bad input: one line and a non-zero exit.
    let o = run(
        cfg,
        url,
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "2h",
            "--reason",
            "longer than allowed",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("maximum of 1h"),
        "{}",
        text(&o)
    );
    let o = run(
        cfg,
        url,
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "soon",
            "--reason",
            "bad duration here",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid duration"),
        "{}",
        text(&o)
    );
    let o = run(cfg, url, "frank", &["list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not logged in"),
        "{}",
        text(&o)
    );

    // Pipelines: a token from the environment, no profile.
    let o = Command::new(bin("jit"))
        .args(["--server", url, "list", "--mine", "--json"])
        .env("JIT_TOKEN", token("alice").await)
        .env("JIT_CONFIG_DIR", cfg.join("none"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);

    // Logout ends the Keycloak session and forgets the tokens.
    let o = run(cfg, url, "alice", &["logout"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!cfg.join("profiles/alice.json").exists());
    let c = jitd.client(&token("bob").await);
    assert_eq!(c.get(&id).await.unwrap().request.status, Status::Revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show_fold_applied_extensions_into_their_grant() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let alice_token = token("alice").await;
    let (alice, bob) = (jitd.client(&alice_token), jitd.client(&token("bob").await));
    let id = request(&alice, "prod-db-admin", "10m").await;
    bob.approve(&id, None, None).await.unwrap();
    eventually(Duration::from_secs(10), "grant active", || async {
        alice.get(&id).await.unwrap().request.status == Status::Active
    })
    .await;
    let x = alice
        .extend(&id, "5m", "the migration needs longer")
        .await
        .unwrap()
        .request
        .id;
    bob.approve(&x, None, None).await.unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let o = Command::new(bin("jit"))
            .env("JIT_CONFIG_DIR", cfg.path())
            .args(["--server", &jitd.url])
            .args(args)
            .env("JIT_TOKEN", &alice_token)
            .env_remove("JIT_PROFILE")
            .env_remove("JIT_SERVER")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let list = cli(&["list", "--mine"]);
    assert!(list.contains(&id[..8]), "{list}");
    assert!(
        !list.contains(&x[..8]),
        "an applied extension is not a row of its own:\n{list}"
    );
    let row = list.lines().find(|l| l.starts_with(&id[..8])).unwrap();
    assert!(row.contains("15m"), "DURATION is the whole length: {row}");
    let show = cli(&["show", &id[..8]]);
    assert!(
        show.contains("15m in all: 10m granted + 5m in 1 extension"),
        "{show}"
    );
    assert!(
        show.contains(&format!(
            "+5m ({}) asked by alice, approved by bob",
            &x[..8]
        )),
        "{show}"
    );
    let show_x = cli(&["show", &x[..8]]);
    assert!(show_x.contains("applied"), "{show_x}");
    assert!(
        show_x.contains(&format!("Extends      grant {id}")),
        "{show_x}"
    );
    alice.drop_grant(&id).await.unwrap();
}
