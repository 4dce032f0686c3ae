//! The `jit` CLI as a user runs it: login through Keycloak's login page
//! (the scripted browser is `$BROWSER`) or its device pages, profiles side
//! by side, `request --wait` across a jitd restart, `jit wait`, `jit watch`
//! resuming after a cut, approve, drop, one-line errors with the documented
//! exit codes, a closed stdout, `JIT_TOKEN`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
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

/// Runs `jit` as `user` where it must fail: asserts the documented exit
/// `code` and one line on stderr, `jit: …`, that says `says`.
fn fails_with(cfg: &Path, server: &str, user: &str, args: &[&str], code: i32, says: &str) {
    let o = run(cfg, server, user, args);
    assert_eq!(o.status.code(), Some(code), "jit {args:?}: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "jit {args:?}: {err}");
    assert!(
        err.starts_with("jit: ") && err.contains(says),
        "jit {args:?}: {err}"
    );
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
            text(&o).contains("open this URL in a browser") && text(&o).contains("Ctrl-C"),
            "{}",
            text(&o)
        );
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

    // alice cannot approve her own request: one line, exit 3 (forbidden).
    fails_with(cfg, url, "alice", &["approve", &id], 3, "own request");

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

    // Cancel on an active grant points at `jit drop` (exit 8).
    let o = run(cfg, url, "alice", &["cancel", &id[..8]]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("jit drop {}", &id[..8])),
        "{}",
        text(&o)
    );
    // Asking again while the grant runs is accepted with the
    // already_granted warning naming that grant (more time was meant).
    let o = run(
        cfg,
        url,
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "10m",
            "--reason",
            "asked again by mistake",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.lines().any(|l| l.starts_with("jit: warning: ")
            && l.contains(&id)
            && l.contains("jit extend")
            && l.ends_with("(already_granted)")),
        "{err}"
    );
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let again = again["id"].as_str().unwrap().to_string();
    let o = run(cfg, url, "alice", &["cancel", &again[..8]]);
    assert!(o.status.success(), "{}", text(&o));

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

    // Bad input: one line and exit 2.
    for (duration, says) in [("2h", "maximum of 1h"), ("soon", "invalid duration")] {
        let args = [
            "request",
            "prod-db-admin",
            "--for",
            duration,
            "--reason",
            "longer than allowed or bad",
        ];
        fails_with(cfg, url, "alice", &args, 2, says);
    }
    fails_with(cfg, url, "frank", &["list"], 6, "not logged in");

    // Pipelines: a token from the environment, no profile.
    let o = Command::new(bin("jit"))
        .args(["--server", url, "list", "--mine", "--json"])
        .env("JIT_TOKEN", token("alice").await)
        .env("JIT_CONFIG_DIR", cfg.join("none"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The dropped grant, the request cancelled beside it, the denied one.
    assert_eq!(rows.as_array().unwrap().len(), 3);

    // Logout ends the Keycloak session and forgets the tokens.
    let o = run(cfg, url, "alice", &["logout"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!cfg.join("profiles/alice.json").exists());
    let c = jitd.client(&token("bob").await);
    assert_eq!(c.get(&id).await.unwrap().request.status(), Status::Revoked);
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
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    let x = alice
        .extend(&id, "5m", "the migration needs longer")
        .await
        .unwrap()
        .request
        .id()
        .to_string();
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

/// Lines of a child's stream, as they come.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line containing `needle`; returns every line
/// read up to and including it.
fn until_line(rx: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(e) => panic!("no line with {needle:?} ({e}); lines so far: {seen:#?}"),
        }
    }
}

/// Linux signal number of SIGPIPE.
const SIGPIPE: i32 = 13;

fn finish(child: Child) -> Output {
    child.wait_with_output().expect("wait for jit")
}

fn login_all(cfg: &Path, url: &str, users: &[&str]) {
    for user in users {
        let o = run(cfg, url, user, &["login", "--timeout", "60s"]);
        assert!(o.status.success(), "login {user}: {}", text(&o));
    }
}

/// One documented exit code per kind of failure, and a closed stdout that
/// ends every command quietly (exit 0 or SIGPIPE, never a panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_closed_stdout() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let cfg = tempfile::tempdir().unwrap();
    let (cfg, url) = (cfg.path(), jitd.url.as_str());
    login_all(cfg, url, &["alice", "dave"]);

    let o = run(
        cfg,
        url,
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "10m",
            "--reason",
            "exit code checks",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let code = |user: &str, args: &[&str]| {
        let o = run(cfg, url, user, args);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        (o.status.code(), err)
    };
    // 2: usage (clap), a local duration, jitd's validation.
    assert_eq!(code("alice", &["list", "--no-such-flag"]).0, Some(2));
    assert_eq!(
        code("alice", &["wait", "abcd", "--timeout", "later"]).0,
        Some(2)
    );
    let (c, err) = code(
        "alice",
        &[
            "request",
            "billing-admin",
            "--for",
            "9h",
            "--reason",
            "too long for policy",
        ],
    );
    assert_eq!(c, Some(2), "{err}");
    // 3: forbidden (own request), 8: conflict (a duplicate pending request).
    let mine = jitd
        .client(&token("alice").await)
        .list(&jit_client::ListQuery {
            mine: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let id = mine[0].request.id().to_string();
    assert_eq!(code("alice", &["approve", &id]).0, Some(3));
    let (c, err) = code(
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "10m",
            "--reason",
            "exit code checks",
        ],
    );
    assert_eq!(c, Some(8), "{err}");
    // 7: not found (an id nobody has, a prefix that matches nothing).
    assert_eq!(
        code("alice", &["show", "00000000-0000-4000-8000-000000000000"]).0,
        Some(7)
    );
    assert_eq!(code("alice", &["show", "zzzz"]).0, Some(7));
    // 6: not logged in.
    assert_eq!(code("frank", &["whoami"]).0, Some(6));
    // 5: a login nobody completes (a "browser" that does nothing).
    let o = jit(cfg, url, "erin", &["login", "--timeout", "2s"])
        .env("BROWSER", "true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    // 4 and 5 of --wait / jit wait: cancelled, and a timeout.
    let o = run(cfg, url, "alice", &["wait", &id[..8], "--timeout", "1s"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("jit wait"), "{}", text(&o));
    assert!(run(cfg, url, "alice", &["cancel", &id[..8]])
        .status
        .success());
    let o = run(cfg, url, "alice", &["wait", &id[..8]]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));

    // Closed stdout: the reading end is gone before jit writes anything.
    for (user, args) in [
        ("alice", vec!["list"]),
        ("alice", vec!["list", "--output", "json"]),
        ("alice", vec!["entitlements"]),
        ("alice", vec!["show", &id[..8]]),
        ("dave", vec!["audit"]),
        ("dave", vec!["audit", "--csv"]),
        ("dave", vec!["watch", "--since", "0"]),
        ("alice", vec!["completions", "bash"]),
        ("alice", vec!["man"]),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = jit(cfg, url, user, &args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            o.status.success() || o.status.signal() == Some(SIGPIPE),
            "{args:?}: {:?} {err}",
            o.status
        );
    }
}

/// `request --wait` survives a jitd crash and restart (it retries, then
/// sees the approval); `jit wait` resumes; a `jit wait` started while
/// jitd is down fails at once (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_survives_a_jitd_restart() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let mut jitd = Jitd::start(POLICY);
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path();
    let url = jitd.url.clone();
    login_all(cfg, &url, &["alice"]);

    let mut waiter = jit(
        cfg,
        &url,
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "10m",
            "--reason",
            "wait across restarts",
            "--wait",
            "--timeout",
            "5m",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let err = lines_of(waiter.stderr.take().unwrap());
    let mut seen = Vec::new();
    until_line(&err, "waiting for approval", &mut seen);

    jitd.kill9();
    until_line(&err, "not answering", &mut seen);
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "the wait ended with jitd: {seen:#?}"
    );
    jitd.spawn();
    until_line(&err, "reachable again", &mut seen);

    let bob = jitd.client(&token("bob").await);
    let id = bob
        .list(&jit_client::ListQuery {
            to_review: true,
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .request
        .id()
        .to_string();
    bob.approve(&id, Some("after the restart".into()), None)
        .await
        .unwrap();
    let out = finish(waiter);
    assert_eq!(out.status.code(), Some(0), "{seen:#?} {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Granted"));
    assert!(ctx.has_realm_role("alice", "prod-db-admin").await);

    // `jit wait` on the active grant returns at once, JSON on request.
    let o = run(cfg, &url, "alice", &["wait", &id[..8], "--output", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "active");

    // jitd down when `jit wait` starts: it never reached jitd, so it fails
    // as any other command (exit 1, the same words), instead of waiting on
    // what may be a wrong --server; only a wait that was answered once
    // waits an outage out (above).
    jitd.kill9();
    let o = run(cfg, &url, "alice", &["wait", &id[..8], "--timeout", "5m"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("cannot reach jitd"), "{}", text(&o));
    assert!(!text(&o).contains("retrying"), "{}", text(&o));
    jitd.spawn();
    let o = run(cfg, &url, "alice", &["drop", &id[..8]]);
    assert!(o.status.success(), "{}", text(&o));
}

/// `jit watch` says it is watching, survives a jitd restart, resumes with
/// Last-Event-ID (events made while it was away are shown) and shows each
/// event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reconnects_and_shows_each_event_once() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let mut jitd = Jitd::start(POLICY);
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path();
    let url = jitd.url.clone();
    login_all(cfg, &url, &["bob"]);

    let mut watcher = jit(cfg, &url, "bob", &["watch", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(watcher.stdout.take().unwrap());
    let err = lines_of(watcher.stderr.take().unwrap());
    let (mut events, mut notes) = (Vec::new(), Vec::new());
    let first = until_line(&err, "watching", &mut notes);
    assert!(first.contains("Ctrl-C"), "{first}");

    let alice = jitd.client(&token("alice").await);
    let r1 = request(&alice, "prod-db-admin", "10m").await;
    until_line(&out, &r1, &mut events);

    jitd.kill9();
    until_line(&err, "cut", &mut notes);
    jitd.spawn();
    // Made while the watcher may still be reconnecting: Last-Event-ID
    // brings them.
    alice.cancel(&r1).await.unwrap();
    let r2 = request(&alice, "prod-db-admin", "10m").await;
    until_line(&out, &r2, &mut events);
    assert!(
        watcher.try_wait().unwrap().is_none(),
        "watch ended: {notes:#?}"
    );
    let _ = watcher.kill();
    let _ = watcher.wait();

    let parsed: Vec<serde_json::Value> = events
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let ids: Vec<i64> = parsed.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "each event once, in order: {ids:?}"
    );
    let kinds: Vec<String> = parsed
        .iter()
        .map(|v| {
            format!(
                "{} {}",
                v["event"].as_str().unwrap(),
                v["data"]["request_id"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        format!("request.created {r1}"),
        format!("request.cancelled {r1}"),
        format!("request.created {r2}"),
    ] {
        assert_eq!(
            kinds.iter().filter(|k| **k == want).count(),
            1,
            "{want} once in {kinds:#?}"
        );
    }
    alice.cancel(&r2).await.unwrap();
}

/// `jit login --device` (RFC 8628) through Keycloak's real device pages:
/// the link with the code in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_through_keycloaks_pages() {
    device_login_as_carol(DevicePage::LinkWithCode).await;
}

/// The same with the code typed on Keycloak's plain device page (the
/// verification URI without `?user_code`), as from a phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_typing_the_code_on_the_plain_device_page() {
    device_login_as_carol(DevicePage::TypeTheCode).await;
}

/// Which page of [`device_login_as_carol`] the person opens.
enum DevicePage {
    LinkWithCode,
    TypeTheCode,
}

async fn device_login_as_carol(page: DevicePage) {
    let _serial = serial().await;
    let jitd = Jitd::start(POLICY);
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path();
    let mut child = jit(
        cfg,
        &jitd.url,
        "carol",
        &["login", "--device", "--timeout", "2m"],
    )
    .env_remove("BROWSER")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let err = lines_of(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let line = until_line(&err, "enter the code", &mut seen);
    let code = line.rsplit(' ').next().unwrap().to_string();
    let plain = line
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap()
        .to_string();
    assert!(!plain.contains('?'), "{plain}");
    let complete = until_line(&err, "or open", &mut seen);
    let uri = complete
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    assert!(uri.contains(&code), "{uri}");
    until_line(&err, "Ctrl-C", &mut seen);
    // The person opens a link on another device, signs in and confirms.
    let open = match page {
        DevicePage::LinkWithCode => &uri,
        DevicePage::TypeTheCode => &plain,
    };
    jit_testkit::device_login(open, &code, "carol", &jit_testkit::demo_password("carol"))
        .await
        .unwrap_or_else(|e| panic!("device pages from {open}: {e:#}; jit said {seen:#?}"));
    let out = finish(child);
    assert!(out.status.success(), "{seen:#?} {}", text(&out));
    assert!(text(&out).contains("Logged in as carol"), "{}", text(&out));
    let o = run(cfg, &jitd.url, "carol", &["whoami", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let me: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(me["username"], "carol");
}

/// The test policy with a ticket pattern on billing-admin.
fn ticket_policy() -> String {
    let policy = POLICY.replace(
        r#"client_role = { client = "billing-app", role = "billing-admin" }"#,
        "client_role = { client = \"billing-app\", role = \"billing-admin\" }\n\
         ticket_pattern = \"CHG-[0-9]{4}\"",
    );
    assert_ne!(policy, POLICY, "the test policy has a ticket pattern");
    policy
}

/// An entitlement that needs a ticket says so with an example of one,
/// never the regular expression: in `jit entitlements` and when a request
/// lacks the ticket or gives a malformed one (exit 2, one line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_needed_ticket_is_said_with_an_example() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(&ticket_policy());
    let cfg = tempfile::tempdir().unwrap();
    let (cfg, url) = (cfg.path(), jitd.url.as_str());
    login_all(cfg, url, &["alice"]);

    let o = run(cfg, url, "alice", &["entitlements"]);
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    let row = table
        .lines()
        .find(|l| l.starts_with("billing-admin"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("e.g. CHG-1234"), "{table}");
    assert!(!table.contains("[0-9]"), "no regular expression: {table}");

    let ask = [
        "request",
        "billing-admin",
        "--reason",
        "rotate the billing keys",
    ];
    fails_with(cfg, url, "alice", &ask, 2, "add --ticket CHG-1234");
    let o = run(cfg, url, "alice", &[&ask[..], &["--ticket", "42"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("CHG-1234") && !text(&o).contains("[0-9]"),
        "{}",
        text(&o)
    );
}

/// Ctrl-C during `request --wait`: one line saying the request is still
/// pending and how to resume (`jit wait ID`), exit 130; `jit wait` then
/// resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_wait_says_how_to_resume() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let cfg = tempfile::tempdir().unwrap();
    let (cfg, url) = (cfg.path(), jitd.url.as_str());
    login_all(cfg, url, &["alice", "bob"]);

    let mut waiter = jit(
        cfg,
        url,
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "10m",
            "--reason",
            "interrupted wait, resumed later",
            "--wait",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let out = lines_of(waiter.stdout.take().unwrap());
    let err = lines_of(waiter.stderr.take().unwrap());
    let (mut printed, mut notes) = (Vec::new(), Vec::new());
    let requested = until_line(&out, "(id ", &mut printed);
    let id = requested
        .rsplit("(id ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    until_line(&err, "waiting for approval", &mut notes);
    // SAFETY: signals our own child, whose pid we hold.
    assert_eq!(unsafe { libc::kill(waiter.id() as i32, libc::SIGINT) }, 0);
    let status = waiter.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?} {notes:#?}");
    let last = until_line(&err, "resume with", &mut notes);
    assert_eq!(
        last,
        format!("jit: still pending; resume with `jit wait {}`", &id[..8]),
        "{notes:#?}"
    );

    let o = run(cfg, url, "bob", &["approve", &id[..8], "--comment", "ok"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(cfg, url, "alice", &["wait", &id[..8], "--timeout", "1m"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(cfg, url, "alice", &["drop", &id[..8]]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Waits (bounded: 30 s) for `child` to exit after a signal; kills it and
/// fails if it is still running then.
fn exits_soon(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running 30 s after the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `jit watch` and `jit wait` end at once on SIGINT (130), SIGTERM (143)
/// and SIGHUP (129, the terminal closed): by themselves, with their exit
/// code, never left running. `watch` ends quietly; `wait` says how to
/// resume (not after a hang-up: nobody is there to read it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_wait_end_on_signals() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let cfg = tempfile::tempdir().unwrap();
    let (cfg, url) = (cfg.path(), jitd.url.as_str());
    login_all(cfg, url, &["alice", "bob"]);
    let alice = jitd.client(&token("alice").await);
    let id = request(&alice, "prod-db-admin", "10m").await;
    for (signal, code) in [
        (libc::SIGINT, 130),
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
    ] {
        let mut watcher = jit(cfg, url, "bob", &["watch"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = lines_of(watcher.stderr.take().unwrap());
        let mut notes = Vec::new();
        until_line(&err, "watching", &mut notes);
        // SAFETY: signals our own child, whose pid we hold.
        assert_eq!(unsafe { libc::kill(watcher.id() as i32, signal) }, 0);
        let status = exits_soon(&mut watcher, "jit watch");
        assert_eq!(
            status.code(),
            Some(code),
            "watch, signal {signal}: {status:?}"
        );
        let rest: Vec<String> = err.iter().collect();
        assert!(rest.is_empty(), "watch ends quietly: {rest:?}");

        let mut waiter = jit(cfg, url, "alice", &["wait", &id[..8], "--timeout", "10m"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = lines_of(waiter.stderr.take().unwrap());
        let mut notes = Vec::new();
        until_line(&err, "waiting for approval", &mut notes);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(waiter.id() as i32, signal) }, 0);
        let status = exits_soon(&mut waiter, "jit wait");
        assert_eq!(
            status.code(),
            Some(code),
            "wait, signal {signal}: {status:?}"
        );
        let rest: Vec<String> = err.iter().collect();
        if signal == libc::SIGHUP {
            assert!(rest.is_empty(), "a hang-up ends quietly: {rest:?}");
        } else {
            assert_eq!(
                rest,
                vec![format!(
                    "jit: still pending; resume with `jit wait {}`",
                    &id[..8]
                )]
            );
        }
    }
    // The request went on meanwhile.
    assert_eq!(
        alice.get(&id).await.unwrap().request.status(),
        Status::Pending
    );
    alice.cancel(&id).await.unwrap();
}

/// A request nobody but its requester may approve is warned of on
/// stderr (`jit: warning: … (no_eligible_approver)`, exit 0, the request
/// made) and in `--json`'s object; one someone else may approve is not.
/// Approvers as the real Keycloak lists them: a role held directly, a
/// role carried by a group (a member added during the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_else_may_approve_warns() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    // In the fixture realm only erin holds reporting-reader, and only she
    // holds support-agent (directly and through /support-team).
    let policy = r#"
[[entitlement]]
id = "solo"
realm_role = "prod-db-admin"
max_duration = "1h"
approver_roles = ["reporting-reader"]

[[entitlement]]
id = "team"
client_role = { client = "billing-app", role = "billing-admin" }
max_duration = "1h"
approver_roles = ["support-agent"]

[[entitlement]]
id = "team-later"
group = "/incident-responders"
max_duration = "1h"
approver_roles = ["support-agent"]
"#;
    let jitd = Jitd::start(policy);
    let cfg = tempfile::tempdir().unwrap();
    let (cfg, url) = (cfg.path(), jitd.url.as_str());
    login_all(cfg, url, &["alice", "erin"]);
    let ask = |user: &str, ent: &str, json: bool| {
        let mut args = vec![
            "request",
            ent,
            "--for",
            "10m",
            "--reason",
            "approver warning",
        ];
        if json {
            args.push("--json");
        }
        let o = run(cfg, url, user, &args);
        assert_eq!(o.status.code(), Some(0), "{user} {ent}: {}", text(&o));
        o
    };
    let warned = |o: &Output| {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| l.starts_with("jit: warning: "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    let o = ask("erin", "solo", false);
    let w = warned(&o);
    assert_eq!(w.len(), 1, "{}", text(&o));
    assert!(
        w[0].contains("nobody besides you") && w[0].ends_with("(no_eligible_approver)"),
        "{w:?}"
    );
    let o = ask("alice", "solo", false);
    assert!(
        warned(&o).is_empty(),
        "erin may approve alice's: {}",
        text(&o)
    );

    let o = ask("erin", "team", true);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["warnings"][0]["code"], "no_eligible_approver", "{v}");
    assert_eq!(warned(&o).len(), 1, "{}", text(&o));

    // frank joins /support-team, which carries support-agent: now someone
    // besides erin may approve.
    let kc = RealmAdmin::new(&ctx).await;
    let frank = ctx.probe.user_id("frank").await.unwrap();
    kc.set_member(&frank, "/support-team", true).await;
    let o = ask("erin", "team-later", false);
    kc.set_member(&frank, "/support-team", false).await;
    assert!(warned(&o).is_empty(), "frank may approve: {}", text(&o));

    let erin = jitd.client(&token("erin").await);
    let alice = jitd.client(&token("alice").await);
    for c in [&erin, &alice] {
        let me = c.me().await.unwrap();
        for r in c.list(&Default::default()).await.unwrap() {
            if r.request.requester_id() == me.id && r.request.status() == Status::Pending {
                c.cancel(r.request.id()).await.unwrap();
            }
        }
    }
}

/// A second `jit drop` of a grant its requester already dropped says so
/// (from jitd's record of who ended it), not "revoked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_drop_says_the_grant_was_dropped() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let cfg = tempfile::tempdir().unwrap();
    let (cfg, url) = (cfg.path(), jitd.url.as_str());
    login_all(cfg, url, &["alice"]);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);
    let id = request(&alice, "prod-db-admin", "10m").await;
    bob.approve(&id, None, None).await.unwrap();
    eventually(Duration::from_secs(10), "grant active", || async {
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    let o = run(cfg, url, "alice", &["drop", &id[..8]]);
    assert!(o.status.success(), "{}", text(&o));
    let again = run(cfg, url, "alice", &["drop", &id[..8]]);
    assert_eq!(again.status.code(), Some(8), "{}", text(&again));
    let said = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(
        said.contains("already dropped: ended by its requester alice"),
        "{said}"
    );
    assert!(!said.contains("revoked"), "{said}");
}

/// `jit drop` of a grant whose role the user held before it started (a
/// standing assignment, which JIT never removes) says the role stays,
/// not that it is being removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_says_a_standing_role_stays() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let cfg = tempfile::tempdir().unwrap();
    let (cfg, url) = (cfg.path(), jitd.url.as_str());
    login_all(cfg, url, &["alice"]);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);
    // Starts a little later, so the role can be given directly before.
    let id = alice
        .create(&jit_core::api::CreateRequestBody {
            entitlement: "prod-db-admin".into(),
            duration: Some("10m".into()),
            justification: "standing role given meanwhile".into(),
            start_at: Some(chrono::Utc::now() + chrono::Duration::seconds(15)),
            ..Default::default()
        })
        .await
        .unwrap()
        .request
        .id()
        .to_string();
    bob.approve(&id, None, None).await.unwrap();
    let kc = RealmAdmin::new(&ctx).await;
    let alice_id = ctx.probe.user_id("alice").await.unwrap();
    kc.set_realm_role(&alice_id, "prod-db-admin", true).await;
    eventually(Duration::from_secs(60), "grant active", || async {
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    let view = alice.get(&id).await.unwrap();
    assert_eq!(
        view.keycloak.owns_assignment,
        Some(false),
        "the role was held when the grant started: {view:?}"
    );
    let o = run(cfg, url, "alice", &["drop", &id[..8]]);
    assert!(o.status.success(), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    kc.set_realm_role(&alice_id, "prod-db-admin", false).await;
    assert!(
        said.contains("realm role prod-db-admin stays: it was held before this grant"),
        "{said}"
    );
    assert!(!said.contains("being removed"), "{said}");
}

/// jitd's problem+json for `path` (POST, JSON `body`) as `token`'s user.
async fn problem_of(
    url: &str,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "{path}"
    );
    resp.json().await.unwrap()
}

/// The three refusals that used to be one "is not an active grant … try
/// again": extending an ended grant, extending by an extension's id, and
/// deciding an extension jitd cancelled when its grant ended. Each has its
/// own problem (`type`, `title`, `detail`) and the CLI says it with its
/// documented exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_extensions_say_what_happened() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let cfg = tempfile::tempdir().unwrap();
    let (cfg, url) = (cfg.path(), jitd.url.as_str());
    login_all(cfg, url, &["alice", "bob"]);
    let alice_token = token("alice").await;
    let bob_token = token("bob").await;
    let (alice, bob) = (jitd.client(&alice_token), jitd.client(&bob_token));
    let g = request(&alice, "prod-db-admin", "10m").await;
    bob.approve(&g, None, None).await.unwrap();
    eventually(Duration::from_secs(30), "grant active", || async {
        alice.get(&g).await.unwrap().request.status() == Status::Active
    })
    .await;
    let x = alice
        .extend(&g, "5m", "the migration needs longer")
        .await
        .unwrap()
        .request
        .id()
        .to_string();

    // Extending by the extension's id: exit 2, names the grant to extend.
    let more = |id: &str| -> Vec<String> {
        [
            "extend",
            id,
            "--for",
            "5m",
            "--reason",
            "still migrating the data",
        ]
        .map(String::from)
        .to_vec()
    };
    let args = more(&x[..8]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fails_with(
        cfg,
        url,
        "alice",
        &args,
        2,
        &format!("is an extension request of grant {g}, not a grant"),
    );
    let p = problem_of(
        url,
        &alice_token,
        &format!("/v1/requests/{x}/extend"),
        serde_json::json!({"duration": "5m", "justification": "still migrating the data"}),
    )
    .await;
    assert_eq!(p["type"], "urn:jit-access:problem:not_a_grant", "{p}");
    assert_eq!(p["title"], "An extension, not a grant", "{p}");

    // The grant ends (dropped): jitd cancels its pending extension.
    alice.drop_grant(&g).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the orphaned extension cancelled",
        || async { alice.get(&x).await.unwrap().request.status() == Status::Cancelled },
    )
    .await;
    // Extending the ended grant: exit 8, says how it ended.
    let args = more(&g[..8]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fails_with(
        cfg,
        url,
        "alice",
        &args,
        8,
        "has already ended: it was dropped by its requester alice at ",
    );
    let p = problem_of(
        url,
        &alice_token,
        &format!("/v1/requests/{g}/extend"),
        serde_json::json!({"duration": "5m", "justification": "still migrating the data"}),
    )
    .await;
    assert_eq!(p["type"], "urn:jit-access:problem:grant_ended", "{p}");
    assert_eq!(p["title"], "Grant already ended", "{p}");
    assert!(!p["detail"].as_str().unwrap().contains("try again"), "{p}");
    // Approving the extension jitd cancelled: exit 8, says jitd cancelled it.
    fails_with(
        cfg,
        url,
        "bob",
        &["approve", &x[..8]],
        8,
        &format!("extension {x} was cancelled by jitd at "),
    );
    let p = problem_of(
        url,
        &bob_token,
        &format!("/v1/requests/{x}/approve"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(
        p["type"], "urn:jit-access:problem:extension_withdrawn",
        "{p}"
    );
    assert_eq!(p["title"], "Extension cancelled by jitd", "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("its grant {g} has ended")),
        "{p}"
    );

    // A grant that expired: `jit extend` says when, so do `jit show` and
    // `jit wait`, once each.
    let e = request(&alice, "prod-db-admin", "3s").await;
    bob.approve(&e, None, None).await.unwrap();
    eventually(Duration::from_secs(60), "grant expired", || async {
        alice.get(&e).await.unwrap().request.status() == Status::Expired
    })
    .await;
    let args = more(&e[..8]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fails_with(
        cfg,
        url,
        "alice",
        &args,
        8,
        "has already ended: it expired at ",
    );
    let o = run(cfg, url, "alice", &["show", &e[..8]]);
    let show = String::from_utf8_lossy(&o.stdout).to_string();
    let ended = show
        .lines()
        .find(|l| l.starts_with("Ended"))
        .unwrap_or_else(|| panic!("{show}"));
    assert!(ended.contains("expired at "), "{show}");
    assert!(!ended.contains("by jitd"), "{show}");
    fails_with(
        cfg,
        url,
        "alice",
        &["wait", &e[..8]],
        4,
        "the grant expired at ",
    );
    let o = run(cfg, url, "alice", &["wait", &e[..8]]);
    let said = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(said.matches("expired").count(), 1, "{said}");
}

/// Small words: review of a grant with nothing to review, revoke of one's
/// own grant (points at `jit drop`), id prefixes in upper case, a
/// scheduled request's start in `jit list`, its revoke before the start
/// ("nothing was granted"), `--server` pointed at
/// Keycloak (exit 1, "not a jitd"), `--json` errors as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_words_of_the_cli() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let cfg = tempfile::tempdir().unwrap();
    let (cfg, url) = (cfg.path(), jitd.url.as_str());
    login_all(cfg, url, &["alice", "bob"]);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);
    let g = request(&alice, "prod-db-admin", "10m").await;
    bob.approve(&g, None, None).await.unwrap();
    eventually(Duration::from_secs(30), "grant active", || async {
        alice.get(&g).await.unwrap().request.status() == Status::Active
    })
    .await;

    // An active grant, not break-glass: nothing to review (exit 8).
    let o = run(
        cfg,
        url,
        "bob",
        &["review", &g[..8], "--comment", "looks fine"],
    );
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let said = text(&o);
    assert!(
        said.contains("nothing to review") && said.contains("already approved and active"),
        "{said}"
    );
    assert!(!said.contains("that is active"), "{said}");

    // alice revokes her own grant: exit 3 and a pointer to `jit drop`.
    fails_with(
        cfg,
        url,
        "alice",
        &["revoke", &g[..8], "--comment", "done"],
        3,
        &format!("run `jit drop {}`", &g[..8]),
    );

    // Ids in any case.
    let o = run(cfg, url, "alice", &["show", &g[..8].to_uppercase()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(cfg, url, "alice", &["show", &g.to_uppercase()]);
    assert!(o.status.success(), "{}", text(&o));
    // jitd too (the app, scripts): `id_prefix` in any case.
    let hits = alice.find_by_prefix(&g[..8].to_uppercase()).await.unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    alice.drop_grant(&g).await.unwrap();
    eventually(Duration::from_secs(30), "role gone after drop", || async {
        !ctx.has_realm_role("alice", "prod-db-admin").await
    })
    .await;

    // A scheduled request shows when it starts.
    let start = chrono::Utc::now() + chrono::Duration::hours(2);
    let s = alice
        .create(&jit_core::api::CreateRequestBody {
            entitlement: "prod-db-admin".into(),
            duration: Some("10m".into()),
            justification: "scheduled maintenance window".into(),
            start_at: Some(start),
            ..Default::default()
        })
        .await
        .unwrap()
        .request
        .id()
        .to_string();
    let o = run(cfg, url, "alice", &["list", "--mine"]);
    let list = String::from_utf8_lossy(&o.stdout).to_string();
    let row = list
        .lines()
        .find(|l| l.starts_with(&s[..8]))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains(&format!("[starts {}", start.format("%H:%M")))
            || row.contains(&format!("[starts {}", start.format("%Y-%m-%d %H:%M"))),
        "{list}"
    );
    // Approved, then revoked before its start: nothing was granted, and
    // the CLI does not say a role is being removed.
    bob.approve(&s, None, None).await.unwrap();
    let o = run(
        cfg,
        url,
        "bob",
        &["revoke", &s[..8], "--comment", "window moved"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        said.contains("revoked before it started; nothing was granted in Keycloak"),
        "{said}"
    );
    assert!(!said.contains("being removed"), "{said}");

    // --server elsewhere (here Keycloak) with alice's profile: her token
    // is not sent there, exit 2, before any call.
    let kc = jit_testkit::keycloak_env().url;
    for args in [vec!["list"], vec!["show", &g[..8]]] {
        fails_with(cfg, &kc, "alice", &args, 2, "so its token is not sent to");
    }
    // A login there (a user with no profile yet): not a jitd, exit 1.
    fails_with(
        cfg,
        &kc,
        "frank",
        &["login"],
        1,
        "does not look like a jitd",
    );

    // --json: errors as a JSON problem on stderr, the same exit code.
    let o = run(
        cfg,
        url,
        "alice",
        &["--json", "show", "00000000-0000-4000-8000-000000000000"],
    );
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stderr).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["type"], "urn:jit-access:problem:not_found", "{v}");
    assert_eq!(v["status"], 404, "{v}");
    assert_eq!(v["exit"], 7, "{v}");
}

/// A grant of an entitlement that ends the user's Keycloak sessions
/// (`end_sessions_on_revoke`, here a break-glass one) ends: the next
/// command that must refresh the login says why the session is gone and
/// what to do (exit 6), instead of a bare "session ended".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_by_a_grant_says_so() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let policy = POLICY.replacen(
        "pending_ttl = \"30m\"",
        "pending_ttl = \"30m\"\nbreak_glass = true\nend_sessions_on_revoke = true",
        1,
    );
    assert_ne!(policy, POLICY);
    let jitd = Jitd::start(&policy);
    let cfg = tempfile::tempdir().unwrap();
    let (cfg, url) = (cfg.path(), jitd.url.as_str());
    login_all(cfg, url, &["alice"]);
    let o = run(
        cfg,
        url,
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--break-glass",
            "--for",
            "3s",
            "--reason",
            "INC-7: database down, break-glass",
            "--wait",
            "--timeout",
            "1m",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let bob = jitd.client(&token("bob").await);
    let all = bob.list(&Default::default()).await.unwrap();
    let id = all[0].request.id().to_string();
    eventually(
        Duration::from_secs(60),
        "grant over and its role removed",
        || async {
            let v = bob.get(&id).await.unwrap();
            v.request.status() == Status::Expired && v.keycloak.removed_at.is_some()
        },
    )
    .await;
    // The access token alice's profile holds would still work a while:
    // make it due for a refresh, as it will be once its lifetime is over.
    let file = cfg.join("profiles/alice.json");
    let mut p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    p["tokens"]["expires_at"] = "2000-01-01T00:00:00Z".into();
    std::fs::write(&file, p.to_string()).unwrap();
    fails_with(
        cfg,
        url,
        "alice",
        &["list"],
        6,
        &format!(
            "your Keycloak session was ended when grant {} (prod-db-admin) ended at ",
            &id[..8]
        ),
    );
}

/// jitd stopped (SIGTERM, as Ctrl-C of `./dev demo --keep-running`) while
/// a grant is active says what happens to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitd_stopping_with_active_grants_says_what_stays() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let mut jitd = Jitd::start(POLICY);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);
    let id = request(&alice, "prod-db-admin", "10m").await;
    bob.approve(&id, None, None).await.unwrap();
    eventually(Duration::from_secs(30), "grant active", || async {
        alice.get(&id).await.unwrap().request.status() == Status::Active
    })
    .await;
    // SAFETY: signals our own child, whose pid we hold.
    assert_eq!(
        unsafe { libc::kill(jitd.pid().unwrap() as i32, libc::SIGTERM) },
        0
    );
    let log = jitd.log_path();
    eventually(Duration::from_secs(30), "jitd's stop line", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("stopping with 1 active grant:") }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("their roles stay in Keycloak while no jitd runs on this database"),
        "{text}"
    );
    jitd.kill9();
    jitd.spawn();
    alice.drop_grant(&id).await.unwrap();
}
