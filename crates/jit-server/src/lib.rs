//! jitd, the JIT Access backend, as a library: run it standalone (binary
//! `jitd`) or embedded (the desktop app), with the same code.
//!
//! - [`store`]: SQLite, the only truth; hash-chained audit log.
//! - [`scheduler`]: derives due work from the store and does it in
//!   Keycloak — grant, expire, remove — with retries and backoff.
//! - [`api`]: the HTTP API under `/v1`, server-sent events, problem+json.
//! - [`webhooks`]: delivers the store's outbox to chat and other receivers,
//!   signed, at least once, in order.
//!
//! Not for: the rules themselves (that is `jit-core`) or Keycloak's wire
//! format (that is `jit-keycloak`).

pub mod api;
pub mod approvers;
pub mod check_policy;
pub mod commit_batch;
pub mod config;
pub mod error;
pub mod events;
pub mod extract;
pub mod grant_ends;
pub mod metrics;
mod openapi;
pub mod permits;
pub mod rights;
pub mod scheduler;
pub mod stdout;
pub mod store;
pub mod tracing_setup;
pub mod views;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use jit_core::{EntitlementKind, Policy};
use jit_keycloak::{AdminClient, KeycloakAdmin, TargetStatus, TokenValidator};
use tokio::sync::{watch, Notify};

pub use config::Config;
pub use store::Store;

/// Shared state of a running jitd, passed to handlers and the scheduler.
pub struct AppState {
    pub store: Store,
    policy: RwLock<Arc<Policy>>,
    policy_path: PathBuf,
    policy_mtime: RwLock<Option<SystemTime>>,
    /// A changed mtime seen, and when: reload once it has been stable 1 s,
    /// so a half-written file is never loaded.
    policy_change_seen: RwLock<Option<(Option<SystemTime>, std::time::Instant)>>,
    /// Bumped on every policy change; the scheduler re-checks open
    /// requests against the new policy.
    pub policy_generation: std::sync::atomic::AtomicU64,
    pub validator: TokenValidator,
    /// The Keycloak Admin API (the real client, or a fake in tests).
    pub admin: Arc<dyn KeycloakAdmin>,
    /// Bounded, per-assignment ordered Keycloak work; Keycloak up/down.
    pub scheduler: scheduler::Scheduler,
    /// Last known [`TargetStatus`] of each entitlement's Keycloak target
    /// (by entitlement id, with the target it was checked for).
    targets: RwLock<std::collections::HashMap<String, (EntitlementKind, TargetStatus)>>,
    /// Recent Admin API answers about callers' rights ([`rights`]).
    pub rights: rights::RightsCache,
    /// Recent answers about who may approve an entitlement ([`approvers`]).
    pub approvers: approvers::ApproversCache,
    /// Wakes the scheduler when something became due.
    pub wake: Notify,
    /// Latest audit sequence number known (local writes, and other
    /// replicas' notifications); the event hub follows it.
    pub last_seq: watch::Sender<i64>,
    /// Fan-out of events to `/v1/events` streams.
    pub events: Arc<events::Hub>,
    /// This process's name in due-work claims (unique per start):
    /// `jitd-<pid>-<random>`.
    pub replica: String,
    /// What clients need to log in (served at `/v1/config`).
    pub public: jit_core::api::ServerConfigView,
    /// Flips to `true` when the server stops; long-lived streams end then.
    pub stopping: watch::Sender<bool>,
    /// Grant ends written on users for the Keycloak extension.
    pub grant_ends: grant_ends::GrantEnds,
    /// Prometheus metrics (`GET /metrics`); other parts record into it.
    pub metrics: Arc<metrics::Metrics>,
    /// Configured webhook endpoints (empty when none).
    pub webhooks: Arc<webhooks::Webhooks>,
}

impl AppState {
    /// When `e` is Keycloak as a whole out of reach for jitd (no answer,
    /// timeouts, 502–504, its service account's login refused): pauses
    /// Keycloak work until the scheduler's probe sees it answer again
    /// ([`scheduler::keycloak_failed`]) and returns `true`; else `false`
    /// (a refusal of one call).
    pub fn keycloak_failed(&self, e: &jit_keycloak::KeycloakError) -> bool {
        if scheduler::is_keycloak_outage(e) {
            scheduler::keycloak_failed(self, e);
            true
        } else {
            false
        }
    }

    /// Builds the shared state: store opened, policy loaded, `admin` as the
    /// Keycloak Admin API. Nothing is started.
    ///
    /// Errors: unreadable or invalid policy, database that cannot be opened.
    pub fn new(config: &Config, admin: Arc<dyn KeycloakAdmin>) -> anyhow::Result<Arc<AppState>> {
        AppState::with_observed_admin(config, |_| admin)
    }

    /// [`AppState::new`], the Admin API client made by `make_admin` with
    /// the metrics as its call observer.
    pub fn with_observed_admin(
        config: &Config,
        make_admin: impl FnOnce(Arc<dyn jit_keycloak::CallObserver>) -> Arc<dyn KeycloakAdmin>,
    ) -> anyhow::Result<Arc<AppState>> {
        let policy = load_policy(&config.policy)?;
        let store = open_store_blocking(config)?;
        let issuer = config.issuer();
        let metrics = Arc::new(metrics::Metrics::new(store.clone()));
        metrics.disabled_check_every(config.scheduler.disabled_check_secs);
        let validator = TokenValidator::new(
            &issuer,
            &config.keycloak.audience,
            jit_keycloak::http_client(),
        )
        .with_observer(metrics.clone());
        let admin = make_admin(metrics.clone());
        let hooks = Arc::new(webhooks::Webhooks::new(
            &config.webhooks,
            &config.keycloak.realm,
        )?);
        // From here on every audit row is also queued for the endpoints that
        // want it, in the same transaction.
        store.set_outbox_router(hooks.router());
        let last = off_runtime(|| store.sync().last_seq())?;
        let hub = Arc::new(events::Hub::new(last));
        let scheduler = scheduler::Scheduler::new(config.scheduler.clone());
        // The scheduler's group commits hand their rows to the hub before
        // any of their writers announces one (see `CommitBatcher`).
        scheduler.hand_commits_to(hub.clone());
        Ok(Arc::new(AppState {
            store,
            policy: RwLock::new(Arc::new(policy)),
            policy_mtime: RwLock::new(
                std::fs::metadata(&config.policy)
                    .and_then(|m| m.modified())
                    .ok(),
            ),
            policy_path: config.policy.clone(),
            policy_change_seen: RwLock::new(None),
            policy_generation: std::sync::atomic::AtomicU64::new(1),
            validator,
            admin,
            scheduler,
            targets: RwLock::new(std::collections::HashMap::new()),
            rights: rights::RightsCache::default(),
            approvers: approvers::ApproversCache::default(),
            grant_ends: grant_ends::GrantEnds::new(config.keycloak.grants_attribute.clone()),
            metrics,
            webhooks: hooks,
            wake: Notify::new(),
            last_seq: watch::channel(last).0,
            events: hub,
            // Operators (and tests) can tell which process holds a claim.
            replica: format!(
                "jitd-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            stopping: watch::channel(false).0,
            public: jit_core::api::ServerConfigView {
                issuer,
                audience: config.keycloak.audience.clone(),
                cli_client_id: config.keycloak.cli_client_id.clone(),
                desktop_client_id: config.keycloak.desktop_client_id.clone(),
            },
        }))
    }

    /// The last known status of entitlement `id`'s Keycloak target, if it
    /// was checked for this `target`.
    pub fn target_status(&self, id: &str, target: &EntitlementKind) -> Option<TargetStatus> {
        self.targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .filter(|(k, _)| k == target)
            .map(|(_, s)| s.clone())
    }

    /// Records what Keycloak said about entitlement `id`'s target.
    pub fn set_target_status(&self, id: &str, target: &EntitlementKind, status: TargetStatus) {
        self.targets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), (target.clone(), status));
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Tells the scheduler and the event streams that rows were written.
    pub fn published(&self, recs: &[store::AuditRecord]) {
        self.published_quietly(recs);
        self.wake.notify_one();
    }

    /// Tells the event streams that rows were written, without waking the
    /// scheduler (for its own writes, which make nothing due).
    pub fn published_quietly(&self, recs: &[store::AuditRecord]) {
        self.events.hand_over(recs, None);
        self.announce(recs);
    }

    /// [`AppState::published_quietly`] of a request's rows together with
    /// the request as written (see [`AppState::published_with`]): the
    /// scheduler's writes, so a burst of grants or removals costs the event
    /// hub no read per event.
    pub fn published_quietly_with(&self, recs: &[store::AuditRecord], stored: &store::Stored) {
        self.events.hand_over(recs, Some(stored));
        self.announce(recs);
    }

    /// [`AppState::published`] of a request's rows together with the
    /// request as written: the event hub renders its events from it
    /// instead of reading it back.
    pub fn published_with(&self, recs: &[store::AuditRecord], stored: &store::Stored) {
        self.events.hand_over(recs, Some(stored));
        self.announce(recs);
        self.wake.notify_one();
    }

    fn announce(&self, recs: &[store::AuditRecord]) {
        self.metrics.audit_written(recs);
        if let Some(max) = recs.iter().map(|r| r.seq).max() {
            self.last_seq.send_if_modified(|v| {
                if max > *v {
                    *v = max;
                    true
                } else {
                    false
                }
            });
        }
        self.grant_ends.mark_records(recs);
    }

    /// Re-reads the policy file if it changed. An invalid file is refused
    /// (logged with line and field) and the policy in force stays.
    pub fn reload_policy_if_changed(&self) {
        let mtime = std::fs::metadata(&self.policy_path)
            .and_then(|m| m.modified())
            .ok();
        if mtime == *self.policy_mtime.read().unwrap_or_else(|p| p.into_inner()) {
            return;
        }
        {
            let mut seen = self
                .policy_change_seen
                .write()
                .unwrap_or_else(|p| p.into_inner());
            match *seen {
                Some((m, since))
                    if m == mtime && since.elapsed() >= std::time::Duration::from_secs(1) => {}
                Some((m, _)) if m == mtime => return,
                _ => {
                    *seen = Some((mtime, std::time::Instant::now()));
                    return;
                }
            }
            *seen = None;
        }
        *self.policy_mtime.write().unwrap_or_else(|p| p.into_inner()) = mtime;
        self.reload_policy();
    }

    /// Re-reads the policy file now (SIGHUP). An invalid file is refused and
    /// the policy in force stays.
    pub fn reload_policy(&self) {
        match load_policy(&self.policy_path) {
            Ok(p) => {
                tracing::info!(entitlements = p.entitlements.len(), path = %self.policy_path.display(), "policy reloaded");
                *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(p);
                self.policy_generation
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.wake.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, "policy change refused; the previous policy stays in force")
            }
        }
    }
}

/// Reads and validates a policy file.
pub fn load_policy(path: &std::path::Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read policy {}: {e}", path.display()))?;
    Policy::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Runs blocking database work `f` on a thread of its own and waits for it:
/// callable from sync code and from inside a tokio runtime alike (the
/// PostgreSQL driver must not block a runtime thread). For start-up only.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// [`open_store`] for sync callers (and sync code on a runtime thread).
fn open_store_blocking(config: &Config) -> anyhow::Result<Store> {
    let spec = config.database.to_string_lossy().to_string();
    let shown = config.database_display();
    off_runtime(|| Store::open_spec(&spec))
        .map_err(|e| anyhow::anyhow!("cannot open database {shown}: {e}"))
}

/// Opens the store `config.database` names: a `postgres://` URL (several
/// replicas may share it) or a SQLite file (created if missing). Opening
/// and migrating run on the blocking pool.
///
/// Errors: unreachable database, failed migration; the message names the
/// file, never a URL's password.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let spec = config.database.to_string_lossy().to_string();
    let shown = config.database_display();
    tokio::task::spawn_blocking(move || Store::open_spec(&spec))
        .await?
        .map_err(|e| anyhow::anyhow!("cannot open database {shown}: {e}"))
}

/// A running jitd.
pub struct Server {
    /// The address it listens on (the real port when `listen` said 0).
    pub addr: SocketAddr,
    /// Its shared state (store, policy, clients) — e.g. for SIGHUP reloads.
    pub state: Arc<AppState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// See [`lock_sqlite`]; dropped when the server has stopped.
    _sqlite_lock: Option<std::fs::File>,
}

impl Server {
    /// Stops accepting, finishes in-flight requests, stops the scheduler.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }

    /// The base URL, e.g. `http://127.0.0.1:8787`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Opens the store, loads the policy, binds `config.listen`, and starts the
/// API and the scheduler on the current tokio runtime, with the real
/// Keycloak Admin API client.
///
/// Errors: unreadable config parts, invalid policy, busy port, missing secret.
pub async fn start(config: &Config) -> anyhow::Result<Server> {
    let secret = config.backend_secret()?;
    let state = AppState::with_observed_admin(config, |observer| {
        Arc::new(
            AdminClient::new(
                &config.keycloak.url,
                &config.keycloak.realm,
                &config.keycloak.backend_client_id,
                &secret,
                jit_keycloak::http_client(),
            )
            .with_observer(observer),
        )
    })?;
    serve(config, state).await
}

/// Like [`start`], with `admin` as the Keycloak Admin API (tests pass a
/// fault-injecting fake).
pub async fn start_with(config: &Config, admin: Arc<dyn KeycloakAdmin>) -> anyhow::Result<Server> {
    serve(config, AppState::new(config, admin)?).await
}

/// The listener with `TCP_NODELAY` on every accepted connection: an event
/// frame (or any answer) goes out at once instead of waiting, under Nagle's
/// rule, for the client's delayed ACK of the previous one (up to 40 ms on
/// Linux) — an event stream writes small frames at any time.
fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    })
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the
/// open connections finish (each is told to close after its request in
/// flight; event streams end when jitd says it is stopping) and returns.
///
/// What `axum::serve` does, plus a limit on reading a request's head:
/// a connection that has not sent a whole request line and headers
/// `head_timeout` after it started one (or after it connected) is closed
/// (hyper's `header_read_timeout`). Without it a client could hold
/// connections open for ever by sending a request a byte at a time or
/// never finishing it. The body has its own limit
/// (`RequestBodyTimeoutLayer` between its frames and
/// `extract::BodyDeadline` for all of it, the same duration: a request
/// whose body stops or trickles is answered 400). Accept errors (e.g. out of file
/// descriptors) are waited out as `axum::serve` does.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    head_timeout: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use axum::serve::Listener;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let mut listener = no_delay(listener);
    // Connections start closing when `open` is dropped; `done` closes
    // once every connection's clone of `finished` is gone.
    let (open, open_rx) = tokio::sync::watch::channel(());
    let (done, finished) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let open = open.clone();
        let finished = finished.clone();
        tokio::spawn(async move {
            // HTTP/1.1 only, as before (axum::serve without its `http2`
            // feature).
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout);
            let mut conn = std::pin::pin!(builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades());
            let mut closing = std::pin::pin!(open.closed());
            let mut told = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = &mut closing, if !told => {
                        told = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(finished);
        });
    }
    drop(open_rx);
    drop(finished);
    done.closed().await;
}

/// Whether an announcement on the database ([`store::db::Announced`])
/// wakes this replica's scheduler: another replica's write it has not
/// seen yet, or `0` ("look again": a reconnect, or Keycloak answering
/// again). Its own writes come back too (it listens on the channel it
/// notifies), often before the writer has returned; they made nothing due
/// that its scheduler does not know of, and waking it for each re-read
/// the due work once per group commit in a burst (refill passes claiming
/// one or two items each).
fn wakes_scheduler(a: store::db::Announced, newer: bool) -> bool {
    a.seq == 0 || (newer && !a.own)
}

/// The exclusive lock (`flock`) a jitd holds on its SQLite database file
/// while it runs: a SQLite store is for one jitd (its scheduler claims
/// nothing), so a second jitd on the same file is refused at start rather
/// than granting and removing beside the first. Released when the jitd
/// stops (or dies: the kernel drops it with the process). `None` on
/// PostgreSQL (replicas share it by design). Tools that only read the
/// file (`check-policy`) take no lock.
///
/// Errors: another process holds it; the file cannot be opened.
fn lock_sqlite(config: &Config) -> anyhow::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    if store::postgres::is_url(&config.database.to_string_lossy()) {
        return Ok(None);
    }
    let shown = config.database_display();
    let file = std::fs::File::open(&config.database)
        .map_err(|e| anyhow::anyhow!("cannot open database {shown} to lock it: {e}"))?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            anyhow::bail!(
                "another jitd already serves the SQLite database {shown}: a SQLite store is for one jitd (several replicas need PostgreSQL, `database = \"postgres://…\"`)"
            );
        }
        anyhow::bail!("cannot lock database {shown}: {e}");
    }
    Ok(Some(file))
}

async fn serve(config: &Config, state: Arc<AppState>) -> anyhow::Result<Server> {
    let sqlite_lock = lock_sqlite(config)?;
    let issuer = state.public.issuer.clone();
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let sched = tokio::spawn(scheduler::run(state.clone()));
    tokio::spawn(grant_ends::run(state.clone()));
    let hub = tokio::spawn(events::run_hub(state.clone()));
    // Other replicas' writes (PostgreSQL NOTIFY): wake the hub and the
    // scheduler as local writes do.
    // The listener also holds this replica's liveness: once it is gone,
    // the others take its claimed work over at once.
    let weak = Arc::downgrade(&state);
    let replica = state.replica.clone();
    state.store.sync().follow_alive(
        &replica,
        Box::new(move |announced| {
            let Some(s) = weak.upgrade() else {
                return false;
            };
            if *s.stopping.borrow() {
                return false;
            }
            // This process's own writes come back too, often before their
            // writer has handed the rows to the event hub (the notification
            // is sent at commit): the writer announces them itself, after
            // that. Moving `last_seq` here sent the hub to the store for
            // rows on their way. (A local write that announced nothing is
            // found at the next announcement, or by the hub's look after a
            // second without any.)
            if let Some(a) = announced.filter(|a| !a.own) {
                let newer = s.last_seq.send_if_modified(|v| {
                    let newer = a.seq > *v;
                    if newer {
                        *v = a.seq;
                    }
                    newer
                });
                if wakes_scheduler(a, newer) {
                    s.wake.notify_one();
                }
            }
            true
        }),
    );
    let deliveries = webhooks::spawn(state.clone(), state.webhooks.clone());
    let read_timeout = std::time::Duration::from_secs(config.request_read_timeout_secs);
    let app = api::router(state.clone())
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            read_timeout,
        ))
        .layer(axum::Extension(extract::BodyDeadline(read_timeout)));
    let st = state.clone();
    let task = tokio::spawn(async move {
        let stopping = st.clone();
        serve_http(listener, app, read_timeout, async move {
            let _ = rx.await;
            let _ = stopping.stopping.send(true);
        })
        .await;
        let _ = st.stopping.send(true);
        let _ = sched.await;
        let _ = hub.await;
        for d in deliveries {
            let _ = d.await;
        }
        // Said before the process (and its liveness lock) goes.
        let (store, owner) = (st.store.clone(), st.replica.clone());
        let left = tokio::task::spawn_blocking(move || store.sync().leave(&owner));
        match tokio::time::timeout(std::time::Duration::from_secs(3), left).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::debug!(error = %e, "cannot say this replica is leaving"),
            _ => tracing::debug!("saying this replica is leaving took too long"),
        }
    });
    tracing::info!(%addr, issuer = %issuer, "jitd listening");
    Ok(Server {
        addr,
        state,
        shutdown: Some(tx),
        task,
        _sqlite_lock: sqlite_lock,
    })
}

#[cfg(test)]
mod no_delay_tests {
    /// Every connection the server accepts has `TCP_NODELAY` on.
    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        use axum::serve::Listener;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut l = super::no_delay(l);
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let (io, _) = l.accept().await;
        assert!(io.nodelay().unwrap());
        drop(client.await.unwrap().unwrap());
    }
}
