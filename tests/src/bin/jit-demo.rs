//! The headless demo of the whole JIT cycle, as a readable timeline:
//! alice requests, bob approves, the role shows in Keycloak, a countdown,
//! the role is gone at expiry. Drives the real `jit` CLI (logins go through
//! Keycloak's login page via the scripted browser `kc-form-login`) and checks
//! Keycloak's admin API and fresh tokens.
//!
//! Run it with `cargo xtask demo` (which starts Keycloak and jitd); by hand:
//! `jit-demo --server URL` with `KEYCLOAK_URL` set.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use jit_testkit::{demo_password, keycloak_env, AdminProbe};

struct Timeline {
    start: Instant,
    jit: PathBuf,
    browser: PathBuf,
    server: String,
    config_dir: PathBuf,
}

impl Timeline {
    fn say(&self, what: &str) {
        println!("[{:>6.1}s] {what}", self.start.elapsed().as_secs_f64());
        let _ = std::io::stdout().flush();
    }

    fn jit_cmd(&self, user: &str, args: &[&str]) -> Command {
        let mut c = Command::new(&self.jit);
        c.arg("--profile")
            .arg(user)
            .arg("--server")
            .arg(&self.server)
            .args(args)
            .env("JIT_CONFIG_DIR", &self.config_dir)
            .env("BROWSER", &self.browser)
            .env("JIT_TEST_USERNAME", user)
            .env("JIT_TEST_PASSWORD", demo_password(user))
            .env_remove("JIT_TOKEN");
        c
    }

    /// Runs `jit` as `user`, shows the command and its output indented.
    fn jit(&self, user: &str, args: &[&str]) -> Result<String> {
        println!("           $ jit --profile {user} {}", shell_words(args));
        let out = self
            .jit_cmd(user, args)
            .output()
            .context("cannot run jit")?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        for line in text
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
        {
            // The login URL (the scripted browser opens it) is noise here.
            if !line.starts_with("To log in, open") && !line.starts_with("  http") {
                println!("             {line}");
            }
        }
        if !out.status.success() {
            bail!("jit {} failed ({})", args.join(" "), out.status);
        }
        Ok(text)
    }
}

fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn sibling(name: &str) -> Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} is missing: build the workspace (`cargo build --workspace --bins`)",
            p.display()
        );
    }
    Ok(p)
}

async fn token_has(user: &str, role: &str) -> Result<bool> {
    Ok(jit_e2e::fresh_token_roles(user)
        .await?
        .iter()
        .any(|r| r == role))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut server = "http://127.0.0.1:8787".to_string();
    let mut duration = "20s".to_string();
    let mut keep_dir: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--server" => server = args.next().context("--server URL")?,
            "--for" => duration = args.next().context("--for DURATION")?,
            "--config-dir" => keep_dir = Some(args.next().context("--config-dir DIR")?.into()),
            other => {
                bail!("unknown argument {other}; usage: jit-demo [--server URL] [--for DURATION] [--config-dir DIR]")
            }
        }
    }
    let env = keycloak_env();
    let probe = AdminProbe::new(&env)
        .await
        .context("cannot reach Keycloak's admin API")?;
    // The users' CLI profiles: in `--config-dir` when given (kept, for
    // `jit --profile alice` afterwards with JIT_CONFIG_DIR), else a
    // temporary folder removed at the end.
    let temp = tempfile::tempdir()?;
    let config_dir = match &keep_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let t = Timeline {
        start: Instant::now(),
        jit: sibling("jit")?,
        browser: sibling("kc-form-login")?,
        server: server.clone(),
        config_dir,
    };
    let role = "prod-db-admin";
    println!(
        "JIT Access demo — Keycloak {} (realm {}), jitd {server}",
        env.url, env.realm
    );
    println!("(demo users and passwords are for this local demo only)\n");

    // A known state: this jitd is new, so a role alice holds now is left
    // from an earlier run (or set by hand); take it away first.
    if probe
        .realm_roles_direct("alice")
        .await?
        .iter()
        .any(|r| r == role)
    {
        let admin = jit_keycloak::AdminClient::new(
            &env.url,
            &env.realm,
            "jit-backend",
            &env.backend_secret,
            jit_keycloak::http_client(),
        );
        let alice = probe.user_id("alice").await?;
        admin
            .unassign(
                &alice,
                &jit_core::EntitlementKind::RealmRole { role: role.into() },
            )
            .await
            .with_context(|| format!("cannot remove the leftover {role} from alice"))?;
        t.say(&format!(
            "alice still held {role} from an earlier run: removed it to start from a known state"
        ));
    }

    t.say("alice and bob log in through Keycloak's login page (Authorization Code + PKCE)");
    t.jit("alice", &["login"])?;
    t.jit("bob", &["login"])?;
    let held = probe.realm_roles_direct("alice").await?;
    if held.iter().any(|r| r == role) {
        bail!("alice holds {role} before the demo: {held:?}");
    }
    t.say(&format!(
        "Keycloak admin API: alice's realm roles are {held:?} — no {role}, nobody keeps it"
    ));

    t.say(&format!(
        "alice requests {role} for {duration} and waits for the decision"
    ));
    let reason = "Investigate replication lag on db-3 (INC-4711)";
    println!("           $ jit --profile alice request {role} --for {duration} --reason \"{reason}\" --wait");
    let waiter = t
        .jit_cmd(
            "alice",
            &[
                "request", role, "--for", &duration, "--reason", reason, "--wait",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run jit")?;
    let mut waiter = waiter;
    let asked = Instant::now();
    let id = loop {
        if waiter.try_wait()?.is_some() {
            // The request itself failed: show what jit said, word for word.
            let out = waiter.wait_with_output()?;
            for line in String::from_utf8_lossy(&out.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&out.stderr).lines())
            {
                println!("             {line}");
            }
            bail!("alice's request failed ({})", out.status);
        }
        let list = t
            .jit_cmd("bob", &["list", "--to-review", "--output", "json"])
            .output()?;
        if !list.status.success() {
            bail!(
                "bob's review list failed ({}): {}",
                list.status,
                String::from_utf8_lossy(&list.stderr).trim()
            );
        }
        let rows: serde_json::Value = serde_json::from_slice(&list.stdout)?;
        if let Some(id) = rows
            .as_array()
            .and_then(|a| a.iter().find(|r| r["requester_username"] == "alice"))
            .and_then(|r| r["id"].as_str())
        {
            break id.to_string();
        }
        if asked.elapsed() > Duration::from_secs(30) {
            bail!("alice's request did not reach bob's review list within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    t.say("bob (an approver of prod-db-admin) sees it waiting for review");
    t.jit("bob", &["list", "--to-review"])?;

    t.say("alice may not approve her own request");
    let own = t.jit_cmd("alice", &["approve", &id]).output()?;
    println!("           $ jit --profile alice approve {}", &id[..8]);
    println!(
        "             {} (exit {})",
        String::from_utf8_lossy(&own.stderr).trim(),
        own.status.code().unwrap_or(-1)
    );

    t.say("bob approves");
    t.jit(
        "bob",
        &["approve", &id[..8], "--comment", "ok for the incident"],
    )?;

    let out = waiter.wait_with_output()?;
    t.say("jitd granted the role in Keycloak; alice's `--wait` returns:");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    // "Requested …" (stdout), the progress lines (stderr), "Granted …" (stdout).
    if let Some(first) = lines.next() {
        println!("             {first}");
    }
    for line in String::from_utf8_lossy(&out.stderr).lines().chain(lines) {
        println!("             {line}");
    }
    if !out.status.success() {
        bail!("alice's request did not become active ({})", out.status);
    }
    let has = probe
        .realm_roles_direct("alice")
        .await?
        .iter()
        .any(|r| r == role);
    t.say(&format!(
        "Keycloak admin API: alice holds {role}: {}",
        if has { "yes ✔" } else { "NO ✘" }
    ));
    t.say(&format!(
        "a fresh token of alice carries {role}: {}",
        if token_has("alice", role).await? {
            "yes ✔"
        } else {
            "NO ✘"
        }
    ));

    t.say("countdown (expires_at − server time, as everywhere):");
    let show = t
        .jit_cmd("alice", &["show", &id, "--output", "json"])
        .output()?;
    if !show.status.success() {
        bail!(
            "jit show failed ({}): {}",
            show.status,
            String::from_utf8_lossy(&show.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&show.stdout)?;
    let expires: chrono::DateTime<chrono::Utc> =
        v["expires_at"].as_str().context("expires_at")?.parse()?;
    loop {
        let left = (expires - chrono::Utc::now()).num_milliseconds();
        if left <= 0 {
            break;
        }
        // Same rounding and format as `jit show` (whole seconds, down).
        println!(
            "             ⏳ {} left",
            jit_core::format_duration(left / 1000)
        );
        tokio::time::sleep(Duration::from_millis((left.min(5000)) as u64)).await;
    }
    t.say("expires_at reached: jitd takes the role away");
    let removed = Instant::now();
    loop {
        if !probe
            .realm_roles_direct("alice")
            .await?
            .iter()
            .any(|r| r == role)
        {
            break;
        }
        if removed.elapsed() > Duration::from_secs(15) {
            bail!("the role is still in Keycloak 15 s after expiry");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = (chrono::Utc::now() - expires).num_milliseconds() as f64 / 1000.0;
    t.say(&format!(
        "Keycloak admin API: alice no longer holds {role} ✔ (gone {late:.1} s after expiry)"
    ));
    t.say(&format!(
        "a fresh token of alice carries {role}: {}",
        if token_has("alice", role).await? {
            "YES ✘"
        } else {
            "no ✔"
        }
    ));
    t.jit("alice", &["show", &id[..8]])?;

    t.say("the audit trail, as dave the auditor sees it (hash-chained):");
    t.jit("dave", &["login"])?;
    t.jit("dave", &["audit"])?;
    t.jit("dave", &["audit", "--verify"])?;
    // Logins kept for `--keep-running` (`--config-dir`); else ended.
    if keep_dir.is_none() {
        for u in ["alice", "bob", "dave"] {
            let _ = t.jit_cmd(u, &["logout"]).output();
        }
    }
    t.say("done: requested → approved → granted → counted down → expired → removed from Keycloak");
    Ok(())
}
