//! `jit-chaos`: a bounded workload of requests, approvals, denials,
//! cancels, drops, extensions and short expiries against the real Keycloak
//! while jitd is killed with SIGKILL at random moments (`--kills N`) and
//! Keycloak is stopped and restarted once. Afterwards it checks, in
//! Keycloak's admin API and jitd's audit, that every request's state
//! matches Keycloak (active ⇔ held; ended ⇒ absent), nothing was granted
//! twice, nothing accepted was lost, the audit chain verifies — and prints
//! the figures. Exit 0 when every check holds, 1 otherwise.
//!
//! Run it with `cargo xtask chaos [--kills N]`, which builds the binaries,
//! makes sure Keycloak runs and tells this program how to restart it
//! (`JIT_CHAOS_XTASK`, `JIT_CHAOS_KC_PORTS`).
//!
//! Options: `--kills N` (default 100), `--seed S` (default: from the
//! clock; printed so a run can be repeated), `--log-dir DIR` (jitd's log).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use futures::future::BoxFuture;
use jit_client::{Client, ClientError, ListQuery, TokenSource};
use jit_core::api::{CreateRequestBody, RequestView};
use jit_core::{RequestKind, Status};
use jit_e2e::{targets, Ctx, Jitd, POLICY};
use jit_testkit::{demo_password, keycloak_env};

const REQUESTERS: [&str; 3] = ["alice", "erin", "frank"];
const ENTITLEMENTS: [&str; 3] = ["prod-db-admin", "billing-admin", "incident-responder"];

/// The approver of each entitlement in [`POLICY`].
fn approver(entitlement: &str) -> &'static str {
    if entitlement == "prod-db-admin" {
        "bob"
    } else {
        "carol"
    }
}

/// A token that is renewed through Keycloak's login page when it gets old;
/// while Keycloak is down the old one is used until it expires.
struct Login {
    user: &'static str,
    cur: tokio::sync::Mutex<(String, Instant)>,
}

impl Login {
    async fn new(user: &'static str) -> Result<Arc<Login>> {
        let t = login(user).await?;
        Ok(Arc::new(Login {
            user,
            cur: tokio::sync::Mutex::new((t, Instant::now())),
        }))
    }
}

async fn login(user: &str) -> Result<String> {
    Ok(jit_testkit::pkce_login(
        &keycloak_env(),
        jit_testkit::CLI_CLIENT_ID,
        user,
        &demo_password(user),
    )
    .await?
    .access_token)
}

impl TokenSource for Login {
    fn token(&self) -> BoxFuture<'_, Result<String, ClientError>> {
        Box::pin(async move {
            let mut cur = self.cur.lock().await;
            // Access tokens live 300 s in the realm; renew well before.
            if cur.1.elapsed() > Duration::from_secs(150) {
                if let Ok(t) = tokio::time::timeout(Duration::from_secs(20), login(self.user))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("login timed out")))
                {
                    *cur = (t, Instant::now());
                }
            }
            Ok(cur.0.clone())
        })
    }
}

/// What jitd accepted (answered 2xx to); each must be true at the end.
#[derive(Default)]
struct Ledger {
    created: BTreeMap<String, (&'static str, &'static str)>,
    approved: Vec<(String, &'static str)>,
    denied: Vec<String>,
    cancelled: Vec<String>,
    dropped: Vec<String>,
    /// Extension id → grant id, approved (so applied).
    extended: Vec<(String, String)>,
    /// Calls retried because jitd or Keycloak was down.
    retries: u64,
}

type Shared = Arc<Mutex<Ledger>>;

/// Retries `f` while jitd is restarting or Keycloak is down (connection
/// refused or cut, 503), up to `within`; returns the last answer.
async fn retry<T, F, Fut>(ledger: &Shared, within: Duration, mut f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Err(e) if transient(&e) && start.elapsed() < within => {
                ledger.lock().unwrap().retries += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            other => return other,
        }
    }
}

fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. }
        | ClientError::KeycloakUnreachable(_)
        | ClientError::Protocol(_) => true,
        ClientError::Api { status, .. } => *status == 503 || *status == 502,
        ClientError::Token(_) => false,
    }
}

const PATIENCE: Duration = Duration::from_secs(120);

struct Worker {
    user: &'static str,
    me: Client,
    approvers: HashMap<&'static str, Client>,
    ledger: Shared,
    stop: Arc<AtomicBool>,
    rng: fastrand::Rng,
}

impl Worker {
    async fn run(mut self) {
        while !self.stop.load(Ordering::SeqCst) {
            self.cycle().await;
            tokio::time::sleep(Duration::from_millis(self.rng.u64(100..800))).await;
        }
    }

    /// One request through a random path.
    async fn cycle(&mut self) {
        let ent = ENTITLEMENTS[self.rng.usize(..ENTITLEMENTS.len())];
        let secs = self.rng.u64(3..=10);
        let body = CreateRequestBody {
            entitlement: ent.into(),
            duration: Some(format!("{secs}s")),
            justification: format!("chaos run: {ent} for {secs}s"),
            ..Default::default()
        };
        let (me, ledger) = (self.me.clone(), self.ledger.clone());
        let Ok(r) = retry(&ledger, PATIENCE, || me.create(&body)).await else {
            return;
        };
        let id = r.request.id().to_string();
        ledger
            .lock()
            .unwrap()
            .created
            .insert(id.clone(), (self.user, ent));
        let roll = self.rng.u32(0..100);
        if roll < 8 {
            if retry(&ledger, PATIENCE, || me.cancel(&id)).await.is_ok() {
                ledger.lock().unwrap().cancelled.push(id);
            }
            return;
        }
        let who = approver(ent);
        let ap = self.approvers[who].clone();
        if roll < 16 {
            if retry(&ledger, PATIENCE, || ap.deny(&id, "chaos says no"))
                .await
                .is_ok()
            {
                ledger.lock().unwrap().denied.push(id);
            }
            return;
        }
        if retry(&ledger, PATIENCE, || ap.approve(&id, None, None))
            .await
            .is_err()
        {
            return;
        }
        ledger.lock().unwrap().approved.push((id.clone(), who));
        // Until active (Keycloak may be down for a while).
        let start = Instant::now();
        loop {
            match retry(&ledger, PATIENCE, || me.get(&id)).await {
                Ok(v) if v.request.status() == Status::Active => break,
                Ok(v) if v.request.status().is_terminal() => return,
                _ if start.elapsed() > PATIENCE => return,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let then = self.rng.u32(0..100);
        if then < 25 {
            let wait = self.rng.u64(0..secs * 1000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            if retry(&ledger, PATIENCE, || me.drop_grant(&id))
                .await
                .is_ok()
            {
                ledger.lock().unwrap().dropped.push(id);
            }
        } else if then < 55 {
            let more = format!("{}s", self.rng.u64(2..=6));
            let Ok(x) = retry(&ledger, PATIENCE, || {
                me.extend(&id, &more, "chaos needs more time")
            })
            .await
            else {
                return;
            };
            let xid = x.request.id().to_string();
            ledger
                .lock()
                .unwrap()
                .created
                .insert(xid.clone(), (self.user, ent));
            if retry(&ledger, PATIENCE, || ap.approve(&xid, None, None))
                .await
                .is_ok()
            {
                ledger.lock().unwrap().extended.push((xid, id));
            }
        }
    }
}

struct Args {
    kills: usize,
    seed: u64,
    log_dir: PathBuf,
}

fn args() -> Result<Args> {
    let mut a = Args {
        kills: 100,
        seed: Utc::now().timestamp_micros() as u64,
        log_dir: std::env::temp_dir().join("jit-chaos"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--kills" => a.kills = value()?.parse().context("--kills N")?,
            "--seed" => a.seed = value()?.parse().context("--seed S")?,
            "--log-dir" => a.log_dir = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("jit-chaos [--kills N] [--seed S] [--log-dir DIR]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (see --help)"),
        }
    }
    Ok(a)
}

/// Stops and starts Keycloak keeping its database, through the xtask;
/// returns how long Keycloak was down.
fn restart_keycloak() -> Result<Duration> {
    let xtask = std::env::var("JIT_CHAOS_XTASK")
        .context("JIT_CHAOS_XTASK is not set: run this through `cargo xtask chaos`")?;
    let ports = std::env::var("JIT_CHAOS_KC_PORTS").context("JIT_CHAOS_KC_PORTS is not set")?;
    let mut p = ports.split_whitespace();
    let (http, mgmt) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
    let start = Instant::now();
    let out = std::process::Command::new(&xtask)
        .args([
            "keycloak",
            "restart",
            "--port",
            http,
            "--management-port",
            mgmt,
        ])
        .output()
        .context("cannot run the xtask to restart Keycloak")?;
    if !out.status.success() {
        bail!(
            "restarting Keycloak failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(start.elapsed())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    match run().await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("jit-chaos: error: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run() -> Result<bool> {
    let a = args()?;
    std::fs::create_dir_all(&a.log_dir)?;
    let log = a.log_dir.join("jitd.log");
    let _ = std::fs::remove_file(&log);
    println!(
        "chaos: {} SIGKILLs of jitd and one Keycloak restart; seed {} (jitd log: {})",
        a.kills,
        a.seed,
        log.display()
    );
    let started = Instant::now();
    let ctx = Ctx::new().await;
    let jitd = Arc::new(Mutex::new(Jitd::start_logged(POLICY, &log)));
    let url = jitd.lock().unwrap().url.clone();

    let mut logins = HashMap::new();
    for u in REQUESTERS.iter().chain(&["bob", "carol", "dave"]) {
        logins.insert(*u, Login::new(u).await?);
    }
    let client = |u: &str| Client::new(&url, Some(logins[u].clone() as Arc<dyn TokenSource>));
    let ledger: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (i, u) in REQUESTERS.iter().enumerate() {
        let w = Worker {
            user: u,
            me: client(u),
            approvers: [("bob", client("bob")), ("carol", client("carol"))]
                .into_iter()
                .collect(),
            ledger: ledger.clone(),
            stop: stop.clone(),
            rng: fastrand::Rng::with_seed(a.seed.wrapping_add(i as u64 + 1)),
        };
        workers.push(tokio::spawn(w.run()));
    }

    // The killer: N SIGKILLs at random moments, jitd restarted each time;
    // Keycloak restarted once, half-way.
    let mut rng = fastrand::Rng::with_seed(a.seed);
    let mut restarts_ms = Vec::new();
    let mut keycloak = None;
    let kc_down_ms = Arc::new(AtomicU64::new(0));
    for k in 0..a.kills {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..2500))).await;
        let t = Instant::now();
        {
            let j = jitd.clone();
            let pause = rng.u64(0..300);
            tokio::task::spawn_blocking(move || {
                let mut j = j.lock().unwrap();
                j.kill9();
                std::thread::sleep(Duration::from_millis(pause));
                j.spawn();
            })
            .await?;
        }
        restarts_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if k + 1 == a.kills.div_ceil(2) {
            println!("chaos: {} kills done; restarting Keycloak", k + 1);
            let down = kc_down_ms.clone();
            keycloak = Some(tokio::task::spawn_blocking(move || {
                let d = restart_keycloak()?;
                down.store(d.as_millis() as u64, Ordering::SeqCst);
                println!("chaos: Keycloak back after {:.1} s", d.as_secs_f64());
                Ok::<_, anyhow::Error>(())
            }));
        }
        if (k + 1) % 10 == 0 || k + 1 == a.kills {
            println!("chaos: {}/{} kills", k + 1, a.kills);
        }
    }
    if let Some(k) = keycloak {
        k.await??;
    }
    stop.store(true, Ordering::SeqCst);
    println!("chaos: kills done; letting the workload finish");
    for w in workers {
        if tokio::time::timeout(Duration::from_secs(400), w)
            .await
            .is_err()
        {
            bail!("a workload task did not finish within 400 s");
        }
    }
    let mut failures = Vec::new();
    let dave = client("dave");

    // 1. Live check, once jitd has caught up: active ⇔ held.
    check_live(&ctx, &dave, &mut failures).await?;

    // 2. Nothing left open: cancel what is pending, let every grant end.
    for u in REQUESTERS {
        let me = client(u);
        for r in me
            .list(&ListQuery {
                mine: true,
                status: Some("pending".into()),
                ..Default::default()
            })
            .await?
        {
            match me.cancel(r.request.id()).await {
                // jitd closed it meanwhile (an extension of an ended grant).
                Err(e) if e.code() == Some("illegal_transition") => {}
                other => {
                    other?;
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let all = all_requests(&dave).await?;
        let open = all
            .iter()
            .filter(|r| !r.request.status().is_terminal() || r.keycloak.removal_pending)
            .count();
        if open == 0 {
            break;
        }
        if Instant::now() > deadline {
            failures.push(format!(
                "{open} requests still open or removal pending 180 s after the workload"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 3. Keycloak: nothing JIT granted is left.
    let user_ids = user_ids(&ctx).await?;
    for u in REQUESTERS {
        for t in targets() {
            if ctx.admin.holds(&user_ids[u], &t, false).await? {
                failures.push(format!("{u} still holds {t} after every grant ended"));
            }
        }
    }

    // 4. Every accepted step is in jitd's record.
    let all = all_requests(&dave).await?;
    let by_id: HashMap<&str, &RequestView> = all.iter().map(|r| (r.request.id(), r)).collect();
    let l = std::mem::take(&mut *ledger.lock().unwrap());
    for id in l.created.keys() {
        if !by_id.contains_key(id.as_str()) {
            failures.push(format!("accepted request {id} is missing"));
        }
    }
    for (id, who) in &l.approved {
        match by_id.get(id.as_str()) {
            Some(r)
                if r.request
                    .votes()
                    .iter()
                    .any(|v| v.approver_username == *who) => {}
            _ => failures.push(format!("accepted approval of {id} by {who} is missing")),
        }
    }
    let want = |ids: &[String], status: Status, what: &str, failures: &mut Vec<String>| {
        for id in ids {
            if by_id.get(id.as_str()).map(|r| r.request.status()) != Some(status) {
                failures.push(format!("accepted {what} of {id} is not {status}"));
            }
        }
    };
    want(&l.denied, Status::Denied, "denial", &mut failures);
    want(&l.cancelled, Status::Cancelled, "cancel", &mut failures);
    want(&l.dropped, Status::Revoked, "drop", &mut failures);
    for (x, g) in &l.extended {
        let applied = by_id.get(x.as_str()).map(|r| r.request.status()) == Some(Status::Applied);
        let on_grant = by_id
            .get(g.as_str())
            .is_some_and(|r| r.request.extensions().iter().any(|e| &e.id == x));
        if !applied || !on_grant {
            failures.push(format!(
                "accepted extension {x} of {g} is not applied to it"
            ));
        }
    }
    // 5. The audit: each grant granted at most once and ended in Keycloak
    //    once (removed, or kept for an overlapping grant or standing
    //    access); the chain intact.
    let audit = dave.audit(0).await?;
    let mut ended: HashMap<&str, usize> = HashMap::new();
    for a in &audit {
        if a.event == jit_core::api::EventKind::GrantRemoved
            || a.event == jit_core::api::EventKind::GrantKept
        {
            *ended.entry(a.request_id.as_str()).or_default() += 1;
        }
    }
    for r in &all {
        let q = &r.request;
        if q.activated_at().is_some() && matches!(q.kind(), RequestKind::Access) {
            match ended.get(q.id()) {
                Some(1) => {}
                n => failures.push(format!(
                    "{} was granted; its end in Keycloak is audited {} times, not once",
                    q.id(),
                    n.unwrap_or(&0)
                )),
            }
        }
    }
    let mut granted: HashMap<&str, usize> = HashMap::new();
    for a in &audit {
        if a.event == jit_core::api::EventKind::GrantGranted {
            *granted.entry(a.request_id.as_str()).or_default() += 1;
        }
    }
    for (id, n) in &granted {
        if *n > 1 {
            failures.push(format!("{id} was granted {n} times"));
        }
        if by_id
            .get(id)
            .is_some_and(|r| r.request.activated_at().is_none())
        {
            failures.push(format!(
                "{id} has a grant in the audit but was never activated"
            ));
        }
    }
    let created_audit: BTreeSet<&str> = audit
        .iter()
        .filter(|a| a.event == jit_core::api::EventKind::RequestCreated)
        .map(|a| a.request_id.as_str())
        .collect();
    for id in l.created.keys() {
        if !created_audit.contains(id.as_str()) {
            failures.push(format!("{id} has no request.created audit row"));
        }
    }
    let verify = dave.audit_verify().await?;
    if !verify.ok {
        failures.push(format!("audit chain does not verify: {verify:?}"));
    }

    // Figures.
    let count = |s: Status| all.iter().filter(|r| r.request.status() == s).count();
    let activated = all
        .iter()
        .filter(|r| {
            r.request.activated_at().is_some() && matches!(r.request.kind(), RequestKind::Access)
        })
        .count();
    let mut late: Vec<f64> = all
        .iter()
        .filter(|r| r.request.status() == Status::Expired)
        .filter_map(|r| {
            Some(
                (r.keycloak.removed_at? - r.request.expires_at()?).num_milliseconds() as f64
                    / 1000.0,
            )
        })
        .collect();
    let late_max = late.iter().cloned().fold(0.0, f64::max);
    println!("chaos: figures (seed {})", a.seed);
    println!("  jitd SIGKILLs        {}", a.kills);
    println!(
        "  jitd back after kill p50 {:.0} ms, max {:.0} ms",
        pct(&mut restarts_ms.clone(), 0.5),
        restarts_ms.iter().cloned().fold(0.0, f64::max)
    );
    println!(
        "  Keycloak restart     down {:.1} s",
        kc_down_ms.load(Ordering::SeqCst) as f64 / 1000.0
    );
    println!(
        "  requests             {} accepted ({} in jitd), {} approved, {} denied, {} cancelled, {} dropped, {} extensions applied",
        l.created.len(),
        all.len(),
        l.approved.len(),
        l.denied.len(),
        l.cancelled.len(),
        l.dropped.len(),
        l.extended.len()
    );
    println!(
        "  grants               {activated} activated, {} expired, {} revoked; {} audit rows",
        count(Status::Expired),
        count(Status::Revoked),
        audit.len()
    );
    println!(
        "  removal after expiry p50 {:.1} s, p95 {:.1} s, max {:.1} s (includes the Keycloak outage)",
        pct(&mut late.clone(), 0.5),
        pct(&mut late, 0.95),
        late_max
    );
    println!(
        "  calls retried        {} (jitd restarting or Keycloak down)",
        l.retries
    );
    println!(
        "  wall time            {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        println!("chaos: every check holds ✔ (states match Keycloak, nothing granted twice, nothing accepted lost, audit chain verifies)");
        Ok(true)
    } else {
        for f in &failures {
            eprintln!("chaos: FAILED: {f}");
        }
        eprintln!(
            "chaos: {} checks failed; jitd log: {}",
            failures.len(),
            log.display()
        );
        Ok(false)
    }
}

async fn user_ids(ctx: &Ctx) -> Result<HashMap<&'static str, String>> {
    let mut m = HashMap::new();
    for u in REQUESTERS {
        m.insert(u, ctx.probe.user_id(u).await?);
    }
    Ok(m)
}

/// Every request, as the auditor sees them (listed per status: each list
/// holds at most 500).
async fn all_requests(dave: &Client) -> Result<Vec<RequestView>> {
    let mut out = Vec::new();
    for s in Status::ALL {
        let rows = dave
            .list(&ListQuery {
                status: Some(s.as_str().into()),
                ..Default::default()
            })
            .await?;
        if rows.len() >= 500 {
            bail!("more than 500 requests are {s}: the chaos run outgrew its checks");
        }
        out.extend(rows);
    }
    Ok(out)
}

/// Once nothing is waiting to be granted or removed: every grant that is
/// active (and not about to end) is held in Keycloak, and every
/// user/target pair without an active grant is not.
async fn check_live(ctx: &Ctx, dave: &Client, failures: &mut Vec<String>) -> Result<()> {
    let ids = user_ids(ctx).await?;
    let names: HashMap<String, &str> = ids.iter().map(|(k, v)| (v.clone(), *k)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all = all_requests(dave).await?;
        let busy = all.iter().any(|r| {
            (r.request.status() == Status::Approved
                && matches!(r.request.kind(), RequestKind::Access))
                || r.keycloak.removal_pending
        });
        if !busy {
            let now = Utc::now();
            let mut verdicts = Vec::new();
            for (uid, user) in &names {
                for t in targets() {
                    let active: Vec<&RequestView> = all
                        .iter()
                        .filter(|r| {
                            r.request.requester_id() == uid
                                && *r.request.target() == t
                                && r.request.status() == Status::Active
                                && matches!(r.request.kind(), RequestKind::Access)
                        })
                        .collect();
                    let safe = active.iter().any(|r| {
                        r.request
                            .expires_at()
                            .is_some_and(|x| x > now + chrono::Duration::seconds(3))
                    });
                    let expect = if active.is_empty() {
                        Some(false)
                    } else if safe {
                        Some(true)
                    } else {
                        None // about to end: either answer is right
                    };
                    if let Some(want) = expect {
                        verdicts.push((*user, t.clone(), want));
                    }
                }
            }
            let mut wrong = Vec::new();
            for (user, t, want) in &verdicts {
                let held = ctx.admin.holds(&ids[user], t, false).await?;
                if held != *want {
                    wrong.push(format!(
                        "{user} {} {t} in Keycloak while jitd says {}",
                        if held { "holds" } else { "lacks" },
                        if *want { "active" } else { "not active" }
                    ));
                }
            }
            // A grant that activated or ended between the two reads makes a
            // mismatch that is not one; confirm with a second look.
            let again = all_requests(dave).await?;
            let moved = again.len() != all.len()
                || again
                    .iter()
                    .zip(&all)
                    .any(|(a, b)| a.request.status() != b.request.status());
            if !moved {
                failures.extend(wrong);
                println!(
                    "chaos: live check of {} user/target pairs done",
                    verdicts.len()
                );
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            failures
                .push("jitd did not catch up (approved or removal pending) within 120 s".into());
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
