//! Sections `burst` and `recovery` of `cargo xtask bench`: jitd's
//! scheduler against the real Keycloak and the release `jitd` next to the
//! running `jit-bench`. Figures come from jitd's own timestamps
//! (`granted_at`, `removed_at` in its store) and Keycloak's state; a
//! removal before `expires_at` fails the run.
//!
//! `--database postgres` / `--replicas N` of `cargo xtask bench` (see
//! [`crate::bench_opts`]) run the same against a fresh database on the
//! benchmark's PostgreSQL and N jitd processes on it (default: one jitd on
//! SQLite). Each replica has `keycloak_concurrency = 12`, the raw
//! baseline's calls in flight (`JIT_BENCH_REPLICA_CONCURRENCY` sets it).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use jit_core::{AccessRequest, NewRequest, Principal, Status};
use jit_keycloak::admin::RoleRep;
use jit_keycloak::AdminClient;
use jit_server::store::SqlStore;

use crate::bench_opts::{Engine, Setup};

/// `(metric, value, note)` rows, as `jit-bench` prints them.
pub type Lines = Vec<(String, String, String)>;

fn lines(rows: Vec<Row>) -> Lines {
    rows.into_iter()
        .map(|r| {
            let note = match r.met {
                Some(true) => format!("goal {}: met", r.goal),
                Some(false) => format!("goal {}: **not met**", r.goal),
                None => String::new(),
            };
            (r.metric, r.value, note)
        })
        .collect()
}

/// Section `burst`: lateness of 200 grants expiring at once; removal and
/// activation rates for 500 and 1,000 against raw Admin API calls.
pub async fn run_burst(_url: &str) -> Result<Lines> {
    let b = Bench::new().await?;
    Ok(lines(labelled(&b, burst(&b).await?)))
}

/// Names the setup in each metric unless it is the default (one jitd on
/// SQLite).
fn labelled(b: &Bench, mut rows: Vec<Row>) -> Vec<Row> {
    if b.setup.engine != Engine::Sqlite || b.setup.replicas != 1 {
        for r in &mut rows {
            r.metric = format!("{}: {}", b.setup, r.metric);
        }
    }
    rows
}

/// Section `recovery`: Keycloak stopped and restarted while work waits.
pub async fn run_recovery(_url: &str) -> Result<Lines> {
    let b = Bench::new().await?;
    Ok(lines(labelled(&b, recovery(&b).await?)))
}

/// One measured figure.
struct Row {
    metric: String,
    value: String,
    goal: String,
    met: Option<bool>,
}

fn row(metric: impl Into<String>, value: impl Into<String>) -> Row {
    Row {
        metric: metric.into(),
        value: value.into(),
        goal: String::new(),
        met: None,
    }
}

fn goal(metric: impl Into<String>, value: impl Into<String>, goal: &str, met: bool) -> Row {
    Row {
        metric: metric.into(),
        value: value.into(),
        goal: goal.into(),
        met: Some(met),
    }
}

/// Keycloak work in flight, for jitd and for the raw baseline alike.
const CONCURRENCY: usize = 12;

/// Each replica's `keycloak_concurrency`: [`CONCURRENCY`], as one jitd's
/// default (N replicas then have up to N × it in flight), or
/// `JIT_BENCH_REPLICA_CONCURRENCY`. Splitting the 12 among 3 replicas
/// (4 each) was measured slower: 200-in-one-second lateness p99 1.05–1.17 s
/// against 0.81 s (docs/measurements.md).
fn replica_concurrency() -> usize {
    std::env::var("JIT_BENCH_REPLICA_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CONCURRENCY)
}
const ROLE: &str = "prod-db-admin";

struct Bench {
    url: String,
    secret: String,
    admin: Arc<AdminClient>,
    probe: jit_testkit::AdminProbe,
    http: reqwest::Client,
    role: RoleRep,
    jitd: PathBuf,
    /// Keycloak ports, for the restart of the recovery section.
    kc_ports: Option<xtask::keycloak::Ports>,
    /// jitd's `keycloak.grants_attribute` (`JIT_BENCH_GRANTS_ATTRIBUTE`;
    /// default empty: no writes for the Keycloak extension).
    grants_attribute: String,
    /// Store engine and jitd replicas.
    setup: Setup,
}

impl Bench {
    async fn new() -> Result<Bench> {
        let env = jit_testkit::keycloak_env();
        let admin = Arc::new(AdminClient::new(
            &env.url,
            &env.realm,
            "jit-backend",
            &env.backend_secret,
            jit_keycloak::http_client(),
        ));
        let probe = jit_testkit::AdminProbe::new(&env)
            .await
            .with_context(|| format!("cannot reach Keycloak at {}", env.url))?;
        let role = admin.realm_role(ROLE).await?;
        // `JIT_BENCH_JITD`: another build's jitd, to compare two builds on
        // the same Keycloak and machine (the bench's own otherwise).
        let jitd = match std::env::var_os("JIT_BENCH_JITD") {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe()?.with_file_name("jitd"),
        };
        if !jitd.exists() {
            bail!(
                "{} is missing: run through `cargo xtask bench` (JIT_BENCH_JITD, if set, names another jitd)",
                jitd.display()
            );
        }
        let port = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u16>().ok());
        let kc_ports = match (
            port("JIT_BENCH_KC_PORT"),
            port("JIT_BENCH_KC_MANAGEMENT_PORT"),
        ) {
            (Some(http), Some(management)) => Some(xtask::keycloak::Ports { http, management }),
            _ => None,
        };
        Ok(Bench {
            url: env.url.clone(),
            secret: env.backend_secret.clone(),
            admin,
            probe,
            http: reqwest::Client::new(),
            role,
            jitd,
            kc_ports,
            grants_attribute: std::env::var("JIT_BENCH_GRANTS_ATTRIBUTE").unwrap_or_default(),
            setup: crate::bench_opts::setups(&[Setup {
                engine: Engine::Sqlite,
                replicas: 1,
            }])?[0],
        })
    }

    /// Ids of users `bench-0000` … (`n` of them), created if missing.
    async fn users(&self, n: usize) -> Result<Vec<String>> {
        let token = self.probe.access_token().await?;
        let base = format!("{}/admin/realms/jit/users", self.url);
        #[derive(serde::Deserialize)]
        struct U {
            id: String,
            username: String,
        }
        let list = |token: String| {
            let http = self.http.clone();
            let base = base.clone();
            async move {
                let v: Vec<U> = http
                    .get(format!(
                        "{base}?search=bench-&max=10000&briefRepresentation=true"
                    ))
                    .bearer_auth(token)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                Ok::<_, anyhow::Error>(v)
            }
        };
        let have: std::collections::HashSet<String> = list(token.clone())
            .await?
            .into_iter()
            .map(|u| u.username)
            .collect();
        let missing: Vec<String> = (0..n)
            .map(|i| format!("bench-{i:04}"))
            .filter(|u| !have.contains(u))
            .collect();
        if !missing.is_empty() {
            eprintln!("jit-bench: creating {} users", missing.len());
        }
        let results: Vec<Result<()>> = futures::stream::iter(missing)
            .map(|name| {
                let http = self.http.clone();
                let base = base.clone();
                let token = token.clone();
                async move {
                    let r = http
                        .post(&base)
                        .bearer_auth(token)
                        .json(&serde_json::json!({"username": name, "enabled": true}))
                        .send()
                        .await?;
                    if !r.status().is_success() && r.status() != reqwest::StatusCode::CONFLICT {
                        bail!("creating {name}: HTTP {}", r.status());
                    }
                    Ok(())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        let token = self.probe.access_token().await?;
        let mut all: Vec<U> = list(token).await?;
        all.sort_by(|a, b| a.username.cmp(&b.username));
        let ids: Vec<String> = all
            .into_iter()
            .filter(|u| u.username.starts_with("bench-"))
            .take(n)
            .map(|u| u.id)
            .collect();
        if ids.len() < n {
            bail!("only {} bench users exist, {n} needed", ids.len());
        }
        Ok(ids)
    }

    /// Raw role-mapping POSTs (`add`) or DELETEs of [`ROLE`] for `users`,
    /// [`CONCURRENCY`] in flight; returns calls per second.
    async fn raw(&self, users: &[String], add: bool) -> Result<f64> {
        let start = Instant::now();
        let results: Vec<Result<(), jit_keycloak::KeycloakError>> =
            futures::stream::iter(users.iter())
                .map(|u| async move {
                    if add {
                        self.admin.add_realm_role(u, &self.role).await
                    } else {
                        self.admin.remove_realm_role(u, &self.role).await
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        let secs = start.elapsed().as_secs_f64();
        for r in results {
            r?;
        }
        Ok(users.len() as f64 / secs)
    }

    /// How many of `users` hold [`ROLE`] directly, per Keycloak.
    async fn holding(&self, users: &[String]) -> Result<usize> {
        let token = self.probe.access_token().await?;
        #[derive(serde::Deserialize)]
        struct U {
            id: String,
        }
        let v: Vec<U> = self
            .http
            .get(format!(
                "{}/admin/realms/jit/roles/{ROLE}/users?first=0&max=100000&briefRepresentation=true",
                self.url
            ))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let set: std::collections::HashSet<&str> = users.iter().map(String::as_str).collect();
        Ok(v.iter().filter(|u| set.contains(u.id.as_str())).count())
    }
}

/// jitd processes (one per replica) on a fresh folder and store,
/// stopped on drop.
struct Jitd {
    dir: tempfile::TempDir,
    database: String,
    children: Vec<Child>,
}

/// The bench's own handle on jitd's store. Its calls run outside the async
/// runtime's context (the PostgreSQL driver blocks on a runtime of its
/// own), and so does dropping it.
struct BenchStore(Option<SqlStore>);

impl BenchStore {
    fn open(database: &str) -> Result<BenchStore> {
        let s = tokio::task::block_in_place(|| -> Result<SqlStore> {
            Ok(if jit_server::store::postgres::is_url(database) {
                SqlStore::new(Box::new(jit_server::store::postgres::Postgres::open(
                    database, 4,
                )?))?
            } else {
                SqlStore::open_sqlite(std::path::Path::new(database))?
            })
        })?;
        Ok(BenchStore(Some(s)))
    }

    fn run<R>(&self, f: impl FnOnce(&SqlStore) -> R) -> R {
        tokio::task::block_in_place(|| f(self.0.as_ref().expect("open")))
    }

    /// Those of `ids` that exist, from one statement.
    fn get_many(&self, ids: &[String]) -> Result<Vec<jit_server::store::Stored>> {
        Ok(self.run(|s| s.get_many(ids))?)
    }

    fn update(
        &self,
        id: &str,
        f: impl FnOnce(
            &mut jit_server::store::Stored,
        ) -> Result<Vec<jit_server::store::Entry>, jit_core::DomainError>,
    ) -> Result<()> {
        self.run(|s| s.update(id, f))?;
        Ok(())
    }
}

impl Drop for BenchStore {
    fn drop(&mut self) {
        let s = self.0.take();
        tokio::task::block_in_place(move || drop(s));
    }
}

const POLICY: &str = r#"
[[entitlement]]
id = "bench"
realm_role = "prod-db-admin"
max_duration = "24h"
approver_roles = ["jit-approver-db"]
[[entitlement.auto_approve]]
requester_role = "bench"
"#;

impl Jitd {
    fn new(b: &Bench) -> Result<Jitd> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("policy.toml"), POLICY)?;
        let database = tokio::task::block_in_place(|| {
            crate::bench_opts::fresh_database(b.setup.engine, dir.path())
        })?;
        let per_replica = replica_concurrency();
        for i in 0..b.setup.replicas {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            std::fs::write(
                dir.path().join(format!("jitd-{i}.toml")),
                format!(
                    "listen = \"127.0.0.1:{port}\"\ndatabase = \"{database}\"\npolicy = \"policy.toml\"\n\n\
                     [keycloak]\nurl = \"{}\"\nrealm = \"jit\"\ngrants_attribute = \"{}\"\n\n\
                     [scheduler]\nkeycloak_concurrency = {per_replica}\n",
                    b.url, b.grants_attribute
                ),
            )?;
        }
        Ok(Jitd {
            dir,
            database,
            children: Vec::new(),
        })
    }

    fn store(&self) -> Result<BenchStore> {
        BenchStore::open(&self.database)
    }

    /// Starts the processes; returns once each listens.
    fn spawn(&mut self, b: &Bench) -> Result<()> {
        for i in 0..b.setup.replicas {
            self.spawn_one(b, i)?;
        }
        Ok(())
    }

    fn spawn_one(&mut self, b: &Bench, i: usize) -> Result<()> {
        use std::io::BufRead;
        let log = std::fs::File::create(self.dir.path().join(format!("jitd-{i}.log")))?;
        let mut child = Command::new(&b.jitd)
            .arg("--config")
            .arg(self.dir.path().join(format!("jitd-{i}.toml")))
            .env("JIT_BACKEND_SECRET", &b.secret)
            .env(
                "JITD_LOG",
                std::env::var("JIT_BENCH_JITD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("start jitd")?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
        if !line.contains("listening") {
            let _ = child.kill();
            bail!(
                "jitd did not start; see {}",
                self.dir.path().join(format!("jitd-{i}.log")).display()
            );
        }
        self.children.push(child);
        Ok(())
    }

    /// SIGTERM and wait.
    fn stop(&mut self) {
        for c in &self.children {
            // SAFETY: plain syscall on our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        let n = self.children.len();
        for mut c in std::mem::take(&mut self.children) {
            let _ = c.wait();
        }
        for i in 0..n {
            self.keep_log(i);
        }
    }

    /// With `JIT_BENCH_LOG_DIR` set, copies replica `i`'s log there
    /// (`jitd-<unix ms>[-i].log`), for profiling with `JIT_BENCH_JITD_LOG`.
    fn keep_log(&self, i: usize) {
        if let Ok(dir) = std::env::var("JIT_BENCH_LOG_DIR") {
            let suffix = if i == 0 {
                String::new()
            } else {
                format!("-{i}")
            };
            let to = PathBuf::from(dir).join(format!(
                "jitd-{}{suffix}.log",
                Utc::now().timestamp_millis()
            ));
            if let Err(e) = std::fs::copy(self.dir.path().join(format!("jitd-{i}.log")), &to) {
                eprintln!("jit-bench: cannot keep jitd's log in {}: {e}", to.display());
            }
        }
    }
}

impl Drop for Jitd {
    fn drop(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Inserts approved requests of `users` for `bench`, starting at `start`
/// (or now), lasting `secs`. Returns their ids.
fn seed_approved(
    store: &BenchStore,
    users: &[String],
    start: Option<DateTime<Utc>>,
    secs: i64,
) -> Result<Vec<String>> {
    let policy = jit_core::Policy::from_toml(POLICY)?;
    let mut ids = Vec::new();
    for u in users {
        let mut p = Principal::new(u.clone(), u.clone());
        p.roles.insert("bench".into());
        let input = NewRequest {
            entitlement: "bench".into(),
            duration_secs: Some(secs),
            justification: "benchmark of the scheduler".into(),
            start_at: start,
            ..Default::default()
        };
        let id = uuid::Uuid::new_v4().to_string();
        let (r, t) = AccessRequest::create(id.clone(), &input, &p, &policy, Utc::now())?;
        if r.status() != Status::Approved {
            bail!("the bench policy should auto-approve");
        }
        store.run(|s| s.insert(&r, t))?;
        ids.push(id);
    }
    Ok(ids)
}

/// Waits (at most `limit`) until `f` holds for every one of `ids`; returns
/// them in the order of `ids`.
///
/// Each poll is one statement for the requests not done yet, every
/// [`POLL_EVERY`]: the bench shares the 2 cores and the database with the
/// jitd it measures, and nothing measured depends on when it notices (every
/// figure comes from jitd's own timestamps). Reading each request with a
/// statement of its own every 100 ms (as it once did) cost PostgreSQL ~40
/// statements per request in a burst of 1,000 — five times jitd's own —
/// and that load fell on the jitd runs only, not on the raw baseline.
async fn wait_all(
    store: &BenchStore,
    ids: &[String],
    what: &str,
    limit: Duration,
    f: impl Fn(&jit_server::store::Stored) -> bool,
) -> Result<Vec<jit_server::store::Stored>> {
    let start = Instant::now();
    let mut done: HashMap<String, jit_server::store::Stored> = HashMap::new();
    loop {
        let pending: Vec<String> = ids
            .iter()
            .filter(|id| !done.contains_key(*id))
            .cloned()
            .collect();
        if pending.is_empty() {
            return ids
                .iter()
                .map(|id| {
                    done.remove(id)
                        .ok_or_else(|| anyhow!("request {id} listed twice"))
                })
                .collect();
        }
        let read = store.get_many(&pending)?;
        if read.len() < pending.len() {
            let seen: HashSet<&str> = read.iter().map(|s| s.request.id()).collect();
            if let Some(id) = pending.iter().find(|id| !seen.contains(id.as_str())) {
                bail!("request {id} vanished");
            }
        }
        for s in read {
            if f(&s) {
                done.insert(s.request.id().to_string(), s);
            }
        }
        if done.len() == ids.len() {
            continue;
        }
        if start.elapsed() > limit {
            bail!(
                "timed out after {limit:?}: {}/{} {what}",
                done.len(),
                ids.len()
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// How often [`wait_all`] looks.
const POLL_EVERY: Duration = Duration::from_millis(500);

fn secs(d: chrono::Duration) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Cycle {
    raw_post: f64,
    raw_delete: f64,
    activation: f64,
    removal: f64,
    lateness: Vec<f64>,
}

/// Raw POST/DELETE rates for `n` users, then jitd: `n` approved requests
/// all due at one instant (activation rate), then the same `n` grants all
/// expiring at one instant (lateness and removal rate).
async fn cycle(b: &Bench, n: usize) -> Result<Cycle> {
    let users = b.users(n).await?;
    b.raw(&users, false).await?; // clean slate, warm caches
    eprintln!("jit-bench: {n}: raw role-mapping POSTs and DELETEs");
    let raw_post = b.raw(&users, true).await?;
    let raw_delete = b.raw(&users, false).await?;

    let mut jitd = Jitd::new(b)?;
    let store = jitd.store()?;
    let t0 = Utc::now() + chrono::Duration::seconds(4);
    let ids = seed_approved(&store, &users, Some(t0), 24 * 3600)?;
    jitd.spawn(b)?;
    eprintln!("jit-bench: {n}: jitd activates {n} grants due at one instant");
    let active = wait_all(&store, &ids, "active", Duration::from_secs(300), |s| {
        s.request.status() == Status::Active
    })
    .await?;
    let last = active
        .iter()
        .filter_map(|s| s.grant.granted_at)
        .max()
        .ok_or_else(|| anyhow!("no grant"))?;
    let activation = n as f64 / secs(last - t0);
    if b.holding(&users).await? != n {
        bail!("Keycloak does not show all {n} grants");
    }

    jitd.stop();
    let t1 = Utc::now() + chrono::Duration::seconds(4);
    for id in &ids {
        store.update(id, |s| {
            // A bench sets the stored end directly, as a store would hold it.
            let mut st = s.request.to_stored();
            st.expires_at = Some(t1);
            s.request = AccessRequest::restore(st);
            Ok(vec![])
        })?;
    }
    jitd.spawn(b)?;
    eprintln!("jit-bench: {n}: {n} grants expire at one instant");
    let done = wait_all(&store, &ids, "removed", Duration::from_secs(300), |s| {
        s.grant.removed_at.is_some()
    })
    .await?;
    jitd.stop();
    let mut lateness: Vec<f64> = done
        .iter()
        .map(|s| secs(s.grant.removed_at.expect("removed") - t1))
        .collect();
    if let Some(early) = lateness.iter().find(|l| **l < 0.0) {
        bail!("a role was removed {early:.3} s before expires_at");
    }
    lateness.sort_by(|a, b| a.total_cmp(b));
    let removal = n as f64 / lateness.last().copied().unwrap_or(f64::NAN);
    let left = b.holding(&users).await?;
    if left != 0 {
        bail!("{left} of {n} users still hold {ROLE} in Keycloak");
    }
    Ok(Cycle {
        raw_post,
        raw_delete,
        activation,
        removal,
        lateness,
    })
}

/// Burst sizes to run: `JIT_BENCH_BURST_SIZES` (comma-separated, of 200,
/// 500, 1000), default all.
fn burst_sizes() -> Vec<usize> {
    std::env::var("JIT_BENCH_BURST_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![200, 500, 1000])
}

/// Rounds of raw POSTs and DELETEs over all the section's users before
/// anything is measured. A Keycloak just started compiles its hot paths
/// while the first few thousand calls run (its JIT compiler threads took
/// 14% of the machine during a measured burst), so whichever measurement
/// came first paid for it: the raw baseline or jitd's first burst (the
/// 200 expiring at once). A Keycloak in use has long been warm.
const WARM_UP_ROUNDS: usize = 3;

async fn warm_up(b: &Bench, n: usize) -> Result<()> {
    let users = b.users(n).await?;
    eprintln!(
        "jit-bench: warming Keycloak up: {WARM_UP_ROUNDS} rounds of raw role-mapping POSTs and DELETEs for {n} users (not measured)"
    );
    b.raw(&users, false).await?; // clean slate
    for _ in 0..WARM_UP_ROUNDS {
        b.raw(&users, true).await?;
        b.raw(&users, false).await?;
    }
    Ok(())
}

async fn burst(b: &Bench) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let sizes = burst_sizes();
    if let Some(&n) = sizes.iter().max() {
        warm_up(b, n).await?;
    }
    if !sizes.contains(&200) {
        return burst_rates(b, &sizes, rows).await;
    }
    let c = cycle(b, 200).await?;
    let p50 = percentile(&c.lateness, 50.0);
    let p99 = percentile(&c.lateness, 99.0);
    rows.push(row(
        "200 grants expiring in the same second: revocation lateness p50",
        format!("{p50:.3} s"),
    ));
    rows.push(goal(
        "200 grants expiring in the same second: revocation lateness p99",
        format!(
            "{p99:.3} s (max {:.3} s)",
            c.lateness.last().unwrap_or(&f64::NAN)
        ),
        "< 1 s",
        p99 < 1.0,
    ));
    burst_rates(b, &sizes, rows).await
}

/// The 500 and 1,000 cycles of [`burst`] (those in `sizes`).
async fn burst_rates(b: &Bench, sizes: &[usize], mut rows: Vec<Row>) -> Result<Vec<Row>> {
    for n in [500, 1000] {
        if !sizes.contains(&n) {
            continue;
        }
        let c = cycle(b, n).await?;
        let rr = c.removal / c.raw_delete;
        rows.push(goal(
            format!("{n} removals: jitd vs raw DELETEs ({CONCURRENCY} in flight)"),
            format!("{:.0}/s vs {:.0}/s = {rr:.2}×", c.removal, c.raw_delete),
            "≥ 0.8×",
            rr >= 0.8,
        ));
        rows.push(row(
            format!("{n} removals: lateness p50 / p99"),
            format!(
                "{:.2} s / {:.2} s",
                percentile(&c.lateness, 50.0),
                percentile(&c.lateness, 99.0)
            ),
        ));
        let ar = c.activation / c.raw_post;
        rows.push(goal(
            format!("{n} activations: jitd vs raw POSTs ({CONCURRENCY} in flight)"),
            format!("{:.0}/s vs {:.0}/s = {ar:.2}×", c.activation, c.raw_post),
            "≥ 0.8×",
            ar >= 0.8,
        ));
    }
    Ok(rows)
}

/// Polls Keycloak's readiness (management port) every 20 ms; returns the
/// first instant it is UP.
async fn ready_at(
    b: &Bench,
    ports: xtask::keycloak::Ports,
    limit: Duration,
) -> Result<DateTime<Utc>> {
    let url = format!("http://127.0.0.1:{}/health/ready", ports.management);
    let realm = format!("{}/realms/jit", b.url);
    let start = Instant::now();
    loop {
        let up = matches!(b.http.get(&url).send().await, Ok(r) if r.status().is_success())
            && matches!(b.http.get(&realm).send().await, Ok(r) if r.status().is_success());
        if up {
            return Ok(Utc::now());
        }
        if start.elapsed() > limit {
            bail!("Keycloak not ready after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn recovery(b: &Bench) -> Result<Vec<Row>> {
    let ports = b.kc_ports.ok_or_else(|| {
        anyhow!(
            "needs JIT_BENCH_KC_PORT and JIT_BENCH_KC_MANAGEMENT_PORT (set by cargo xtask bench)"
        )
    })?;
    let users = b.users(520).await?;
    let (expiring, starting) = users.split_at(20);
    b.raw(&users, false).await?;
    b.raw(expiring, true).await?;
    let mut jitd = Jitd::new(b)?;
    let store = jitd.store()?;
    // 20 active grants and 500 approved requests, all due a little after
    // Keycloak is stopped.
    let due = Utc::now() + chrono::Duration::seconds(20);
    let active = seed_approved(&store, expiring, None, 24 * 3600)?;
    for id in &active {
        store.update(id, |s| {
            let t = s.request.activate(Utc::now())?;
            // A bench sets the stored end directly, as a store would hold it.
            let mut st = s.request.to_stored();
            st.expires_at = Some(due);
            s.request = AccessRequest::restore(st);
            s.grant.owns_assignment = Some(true);
            s.grant.granted_at = Some(Utc::now());
            Ok(vec![t.into()])
        })?;
    }
    let waiting = seed_approved(&store, starting, Some(due), 24 * 3600)?;
    jitd.spawn(b)?;
    eprintln!("jit-bench: recovery: stopping Keycloak");
    xtask::keycloak::stop()?;
    while Utc::now() < due + chrono::Duration::seconds(5) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("jit-bench: recovery: restarting Keycloak (same database)");
    // The raw baseline: the bench's own Admin API client (its token from
    // before the outage, a new one on 401, as jitd's) asks every 20 ms
    // until Keycloak answers; the first answer is how soon after ready
    // Keycloak itself serves the Admin API.
    let raw_first = {
        let admin = b.admin.clone();
        tokio::spawn(async move {
            loop {
                let sent = Utc::now();
                if admin.realm_role(ROLE).await.is_ok() {
                    return (sent, Utc::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let restart = tokio::task::spawn_blocking(move || xtask::keycloak::start_keep_data(ports));
    let ready = ready_at(b, ports, Duration::from_secs(600)).await?;
    let started = restart.await??;
    drop(started.child); // keeps running in its own process group
    let (raw_sent, raw_answered) = tokio::time::timeout(Duration::from_secs(120), raw_first)
        .await
        .map_err(|_| anyhow!("the raw Admin API call got no answer 120 s after ready"))??;
    eprintln!(
        "jit-bench: recovery: Keycloak ready at {}, raw Admin API call answered at {} (sent {})",
        ready.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        raw_answered.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        raw_sent.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    );
    let removed = wait_all(&store, &active, "removed", Duration::from_secs(120), |s| {
        s.grant.removed_at.is_some()
    })
    .await?;
    let granted = wait_all(&store, &waiting, "active", Duration::from_secs(300), |s| {
        s.request.status() == Status::Active
    })
    .await?;
    jitd.stop();
    let last_removed = removed
        .iter()
        .filter_map(|s| s.grant.removed_at)
        .max()
        .expect("removed");
    let grants: Vec<DateTime<Utc>> = granted.iter().filter_map(|s| s.grant.granted_at).collect();
    let first = *grants.iter().min().expect("granted");
    let last = *grants.iter().max().expect("granted");
    if b.holding(expiring).await? != 0 || b.holding(starting).await? != starting.len() {
        bail!("Keycloak's state does not match jitd's");
    }
    b.raw(starting, false).await?;
    let after = secs(last_removed - ready);
    Ok(vec![
        goal(
            "20 removals waiting through the outage: all done after Keycloak ready",
            format!("{after:.3} s"),
            "≤ 1 s",
            after <= 1.0,
        ),
        goal(
            "500 grants waiting through the outage: first granted after ready",
            format!("{:.3} s", secs(first - ready)),
            "≤ 1 s",
            secs(first - ready) <= 1.0,
        ),
        row(
            "raw baseline: the bench's own first Admin API answer after ready (that call sent at)",
            format!(
                "{:.3} s (sent at {:+.3} s)",
                secs(raw_answered - ready),
                secs(raw_sent - ready)
            ),
        ),
        row(
            "500 grants waiting through the outage: all granted after ready",
            format!(
                "{:.2} s ({:.0}/s)",
                secs(last - ready),
                500.0 / secs(last - ready)
            ),
        ),
    ])
}
