//! PostgreSQL behind [`Database`]: a pool of connections (r2d2 over the
//! `postgres` driver), real migrations kept in `jit_schema_version`, and the
//! locks that let several jitd replicas share one database.
//!
//! - Every write transaction that may append to the audit chain first
//!   takes the transaction-scoped advisory lock [`AUDIT_LOCK`]: appends are
//!   serialised across replicas (one chain, no forks), and its row locks
//!   (`FOR UPDATE`) are taken after it, several in id order. Transactions
//!   that append nothing do not take it (the scheduler's claims, which skip
//!   locked rows, and their release, which locks rows in id order; the
//!   outbox's leases): they never queue behind the replicas' writers.
//! - Every transaction that appends to the audit log sends
//!   `NOTIFY jit_audit, '<last seq> <origin>'` ([`CHANNEL`]), delivered at
//!   commit, so every replica's event streams and scheduler wake at once;
//!   the origin lets the writing replica's own listener tell its own
//!   writes (its scheduler already knows of them) from the others'.
//! - Migrations run under the session advisory lock [`MIGRATE_LOCK`], so
//!   replicas starting together migrate once.
//! - Each replica holds a liveness lock for as long as it runs (a shared
//!   session advisory lock of class [`LIVENESS_CLASS`] keyed by its claims'
//!   owner name, on its `LISTEN` connection) and is listed in
//!   `jit_replicas`. PostgreSQL releases the lock when that connection
//!   ends — at once when the process dies (SIGKILL, crash: the kernel
//!   closes its sockets). Every replica's listener looks once a second for
//!   listed replicas whose lock is gone, marks them `gone_at` and wakes
//!   its scheduler, whose claims then take over the dead replica's claimed
//!   work without waiting for the claim lease to lapse
//!   ([`super::SqlStore::claim_due`]). A replica whose host vanishes
//!   without closing its connections keeps its lock until PostgreSQL's TCP
//!   keepalive ends them: its claims pass on when their lease lapses, as
//!   before.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::Arc;

use postgres::types::Type;

use super::pg_tls::{Connector, SslMode};

use super::db::{numbered_placeholders, Announced, Conn, Database, Dialect, Follower, Row, P, V};
use super::StoreError;

/// Advisory lock serialising writers (audit chain head).
pub const AUDIT_LOCK: i64 = 0x6a69_7401;
/// Advisory lock held while migrating.
pub const MIGRATE_LOCK: i64 = 0x6a69_7402;
/// Class (first key of the two-key form) of the replicas' liveness locks,
/// `pg_advisory_lock_shared(LIVENESS_CLASS, hashtext(owner) & 2147483647)`
/// (shared: two owner names with the same hash both hold it; a dead
/// replica whose hash a live one shares then looks alive, and its claims
/// pass on when their lease lapses, the safe side).
pub const LIVENESS_CLASS: i32 = 0x6a69_7403;
/// `LISTEN` channel carrying the newest audit sequence number.
pub const CHANNEL: &str = "jit_audit";

/// Whether `spec` is a PostgreSQL URL (`postgres://…` or `postgresql://…`).
pub fn is_url(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

/// A PostgreSQL database reached by URL, e.g.
/// `postgres://jit@127.0.0.1:5432/jit`.
pub struct Postgres {
    pool: r2d2::Pool<PgManager>,
    config: postgres::Config,
    tls: Connector,
    /// Random per opened store: its `NOTIFY` payloads carry it after the
    /// sequence number (`"<seq> <origin>"`), so its own listener tells
    /// its own writes from other replicas' ([`Database::origin`]).
    origin: String,
}

/// One pooled connection with its prepared statements (prepared once per
/// connection, saving a round trip on every later use).
pub struct PgClient {
    /// Always `Some` until dropped (see the `Drop` impl).
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
    /// When a statement last came back from the server on it (`None`:
    /// never): the pool's check-out test trusts a connection that answered
    /// within [`ANSWERED_RECENTLY`].
    answered_at: Option<std::time::Instant>,
}

/// A pooled connection that answered a statement this recently is handed
/// out without the check-out test's round trip (an empty query): under
/// load every store call checked out a connection, and the test was one
/// more round trip to the server for each. One whose server went away
/// meanwhile (a restart, a failover) fails its next call like a call under
/// way at that moment ([`StoreError::Pool`]): an API call answers 503, a
/// scheduler batch is not written and its work is done again at a later
/// pass; the pool then drops the connection (`has_broken`). After a
/// restart that is once per pooled connection: up to the pool's size of
/// calls fail within that second.
const ANSWERED_RECENTLY: Duration = Duration::from_secs(1);

/// Whether a connection that last answered at `answered_at` is handed out
/// without the check-out test, at `now` ([`ANSWERED_RECENTLY`]).
fn answered_recently(answered_at: Option<std::time::Instant>, now: std::time::Instant) -> bool {
    answered_at.is_some_and(|t| now.saturating_duration_since(t) < ANSWERED_RECENTLY)
}

impl PgClient {
    fn client(&mut self) -> &mut postgres::Client {
        self.client
            .as_mut()
            .expect("a PgClient's connection until it is dropped")
    }
}

/// `postgres::Client` closes its connection by blocking on its own runtime,
/// which panics on a thread of an async runtime ("Cannot start a runtime
/// from within a runtime") — where the pool goes when jitd's state is
/// dropped at shutdown. So a connection is closed on a plain thread of its
/// own whenever a runtime is around.
impl Drop for PgClient {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::spawn(move || drop(client)).join();
            }
        }
    }
}

/// Opens pooled connections.
pub struct PgManager {
    config: postgres::Config,
    tls: Connector,
    /// The pool's failed attempts (shared with its error handler): a
    /// connection made after failures says the database is back.
    failures: Arc<FailureLog>,
}

impl r2d2::ManageConnection for PgManager {
    type Connection = PgClient;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgClient, postgres::Error> {
        let client = self.tls.connect(&self.config)?;
        if let Some(n) = self.failures.recovered() {
            tracing::info!(
                "PostgreSQL connection is back ({n} failed attempts since the last warning)"
            );
        }
        Ok(PgClient {
            client: Some(client),
            statements: HashMap::new(),
            answered_at: None,
        })
    }
    fn is_valid(&self, conn: &mut PgClient) -> Result<(), postgres::Error> {
        if answered_recently(conn.answered_at, std::time::Instant::now())
            && !conn.client().is_closed()
        {
            return Ok(());
        }
        conn.client().simple_query("")?;
        conn.answered_at = Some(std::time::Instant::now());
        Ok(())
    }
    fn has_broken(&self, conn: &mut PgClient) -> bool {
        conn.client.as_ref().is_none_or(|c| c.is_closed())
    }
}

/// How often, at most, repeated failed connection attempts are logged.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Logs repeated failed connection attempts (the pool's refill, the
/// `LISTEN` connection's reconnects) once a minute at WARN, with the number
/// of attempts in between. r2d2's own handler logs every attempt at ERROR,
/// and its background refill retries without pause while PostgreSQL is
/// down: an outage used to fill the log with "ERROR error connecting to
/// server" lines. The errors carry no secrets (`postgres::Error`'s text
/// names the failure, never the URL's password).
#[derive(Debug, Default)]
struct FailureLog {
    /// When the last line was written, and the attempts failed since.
    state: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
    /// The last connection error, with its causes (for the error of a
    /// pool that could not open at all).
    last: std::sync::Mutex<Option<String>>,
}

impl FailureLog {
    /// A connection was made: if attempts had failed (a warning was
    /// written), how many failed since that warning; the count starts
    /// afresh (the next failure is logged at once).
    fn recovered(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.take().map(|(_, skipped)| skipped)
    }

    /// Whether a failure at `now` is logged; if so, how many failures
    /// since the last line were not.
    fn should_log(&self, now: std::time::Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *state {
            Some((last, skipped)) if now.duration_since(*last) < FAILURE_LOG_EVERY => {
                *skipped += 1;
                None
            }
            Some((last, skipped)) => {
                let n = *skipped;
                *last = now;
                *skipped = 0;
                Some(n)
            }
            None => {
                *state = Some((now, 0));
                Some(0)
            }
        }
    }
}

/// The pool's error handler: [`FailureLog`] shared with [`PgManager`].
#[derive(Debug)]
struct PoolFailures(Arc<FailureLog>);

impl r2d2::HandleError<postgres::Error> for PoolFailures {
    fn handle_error(&self, error: postgres::Error) {
        let error = with_causes(&error);
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.clone());
        match self.0.should_log(std::time::Instant::now()) {
            Some(0) => tracing::warn!("PostgreSQL connection failed: {error} (the pool keeps trying)"),
            Some(n) => tracing::warn!(
                "PostgreSQL connection failed: {error} ({n} more failed attempts in the last {} s; the pool keeps trying)",
                FAILURE_LOG_EVERY.as_secs()
            ),
            None => {}
        }
    }
}

/// An error with its causes (`postgres::Error` alone says "error
/// connecting to server" or "db error" and keeps the why in its source:
/// "Connection refused", "terminating connection due to administrator
/// command").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

/// A driver error as the store's: a unique index's refusal, the database
/// gone ([`StoreError::Pool`]: the connection closed or broke, or the
/// server is shutting down or starting — an outage the API answers 503
/// to), or any other database error.
fn pg_err(e: postgres::Error) -> StoreError {
    use postgres::error::SqlState;
    let down = [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
    ];
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Unique(e.to_string())
    } else if e.is_closed() || io || e.code().is_some_and(|c| down.contains(c)) {
        StoreError::Pool(with_causes(&e))
    } else {
        StoreError::Pg(with_causes(&e))
    }
}

/// How long one store call waits for a pooled connection before it fails
/// (the API answers 503): while PostgreSQL is down, callers (and the
/// clients behind them, `jit` gives up after 30 s) learn it in this time
/// instead of hanging for the pool's 30 s.
const CONNECTION_WAIT: Duration = Duration::from_secs(10);

impl Postgres {
    /// Connects a pool of at most `size` connections.
    ///
    /// Errors: a malformed URL; at once, a database that does not exist or
    /// refuses the user or password; the database unreachable within 30 s
    /// (with the last connection error).
    /// TLS as the URL's `sslmode` and `sslrootcert` say
    /// ([`super::pg_tls`]).
    pub fn open(url: &str, size: u32) -> Result<Postgres, StoreError> {
        let (url, mode, tls) = super::pg_tls::parse(url)?;
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Pg(format!("database URL: {e}")))?;
        config.ssl_mode(match mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
        if matches!(mode, SslMode::Prefer | SslMode::Require) {
            tracing::warn!(
                "database sslmode does not check the server's certificate: use sslmode=verify-full over a network"
            );
        }
        config.connect_timeout(Duration::from_secs(10));
        config.application_name("jitd");
        // The server's notices (e.g. "relation … already exists, skipping"
        // of each start's idempotent migration statements) are not news
        // for an operator.
        config.notice_callback(|n| {
            tracing::debug!(
                severity = n.severity(),
                "PostgreSQL notice: {}",
                n.message()
            )
        });
        // A database that answers but refuses for good (no such database,
        // wrong password or user) is said at once, not after the pool's
        // 30 s of retries; one that does not answer yet (starting, down)
        // gets those 30 s.
        if let Err(e) = tls.connect(&config) {
            use postgres::error::SqlState;
            let permanent = [
                SqlState::INVALID_CATALOG_NAME,
                SqlState::INVALID_PASSWORD,
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            ];
            if e.code().is_some_and(|c| permanent.contains(c)) {
                return Err(StoreError::Pool(with_causes(&e)));
            }
        }
        let failures = Arc::new(FailureLog::default());
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(size.min(2)))
            .connection_timeout(Duration::from_secs(30))
            .error_handler(Box::new(PoolFailures(failures.clone())))
            .build(PgManager {
                config: config.clone(),
                tls: tls.clone(),
                failures: failures.clone(),
            })
            .map_err(|e| {
                // r2d2 says only that it timed out; the why is the last
                // connection error (e.g. `database "x" does not exist`).
                match failures
                    .last
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                {
                    Some(last) => StoreError::Pool(format!("{e}; the last attempt: {last}")),
                    None => StoreError::Pool(e.to_string()),
                }
            })?;
        Ok(Postgres {
            pool,
            config,
            tls,
            origin: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    /// A separate connection for `LISTEN` (not from the pool).
    pub fn listener(&self) -> Result<postgres::Client, StoreError> {
        self.tls.connect(&self.config).map_err(pg_err)
    }
}

struct PgConn<C>(C);

impl<C: std::ops::DerefMut<Target = PgClient>> PgConn<C> {
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(st) = self.0.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self
            .0
            .client()
            .prepare(&numbered_placeholders(sql))
            .map_err(pg_err)?;
        // Bounded: the store's statements are few; lists vary with the
        // number of approved entitlements.
        if self.0.statements.len() > 500 {
            self.0.statements.clear();
        }
        self.0.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

fn bind(params: &[P]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|p| -> Box<dyn postgres::types::ToSql + Sync> {
            match p {
                P::T(s) => Box::new(s.clone()),
                P::I(i) => Box::new(*i),
            }
        })
        .collect()
}

impl<C: std::ops::DerefMut<Target = PgClient>> Conn for PgConn<C> {
    fn exec(&mut self, sql: &str, params: &[P]) -> Result<u64, StoreError> {
        let st = self.statement(sql)?;
        let b = bind(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = b.iter().map(|x| &**x).collect();
        let n = self.0.client().execute(&st, &refs).map_err(pg_err)?;
        self.0.answered_at = Some(std::time::Instant::now());
        Ok(n)
    }

    fn query(&mut self, sql: &str, params: &[P]) -> Result<Vec<Row>, StoreError> {
        let st = self.statement(sql)?;
        let b = bind(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = b.iter().map(|x| &**x).collect();
        let rows = self.0.client().query(&st, &refs).map_err(pg_err)?;
        self.0.answered_at = Some(std::time::Instant::now());
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut row = Vec::with_capacity(r.len());
            for (i, col) in r.columns().iter().enumerate() {
                let t = col.type_();
                let v = if *t == Type::INT8 {
                    r.try_get::<_, Option<i64>>(i).map(|o| o.map(V::Int))
                } else if *t == Type::INT4 {
                    r.try_get::<_, Option<i32>>(i)
                        .map(|o| o.map(|x| V::Int(x as i64)))
                } else if *t == Type::INT2 {
                    r.try_get::<_, Option<i16>>(i)
                        .map(|o| o.map(|x| V::Int(x as i64)))
                } else if *t == Type::BOOL {
                    r.try_get::<_, Option<bool>>(i)
                        .map(|o| o.map(|x| V::Int(x as i64)))
                } else if *t == Type::VOID {
                    Ok(None)
                } else {
                    r.try_get::<_, Option<String>>(i).map(|o| o.map(V::Text))
                }
                .map_err(pg_err)?;
                row.push(v.unwrap_or(V::Null));
            }
            out.push(row);
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.0.client().batch_execute(sql).map_err(pg_err)?;
        self.0.answered_at = Some(std::time::Instant::now());
        Ok(())
    }
}

impl Database for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn reader(&self) -> Result<Box<dyn Conn + '_>, StoreError> {
        let c = self
            .pool
            .get_timeout(CONNECTION_WAIT)
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(Box::new(PgConn(c)))
    }

    fn writer(&self) -> Result<Box<dyn Conn + '_>, StoreError> {
        self.reader()
    }

    fn follow(&self, alive_as: Option<&str>, f: Follower) -> bool {
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let origin = self.origin.clone();
        let alive_as = alive_as.map(str::to_string);
        std::thread::Builder::new()
            .name("jit-pg-listen".into())
            .spawn(move || listen_loop(config, tls, &origin, alive_as.as_deref(), f))
            .is_ok()
    }

    fn origin(&self) -> Option<&str> {
        Some(&self.origin)
    }
}

/// Takes `owner`'s liveness lock on `client`'s session and lists it in
/// `jit_replicas` (again, after a reconnect: `gone_at` cleared), in one
/// transaction: a replica is never listed without its lock.
fn register(client: &mut postgres::Client, owner: &str) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_lock_shared($1, hashtext($2) & 2147483647)",
        &[&LIVENESS_CLASS, &owner],
    )?;
    tx.execute(
        "INSERT INTO jit_replicas (owner) VALUES ($1)
         ON CONFLICT (owner) DO UPDATE SET registered_at = now(), gone_at = NULL",
        &[&owner],
    )?;
    tx.commit()
}

/// Marks the listed replicas other than `owner` whose liveness lock is no
/// longer held as gone (now); returns how many. Forgets replicas gone for
/// a day (their claims lapsed long before).
pub(crate) fn mark_gone(
    client: &mut postgres::Client,
    owner: &str,
) -> Result<u64, postgres::Error> {
    let gone = client.execute(
        &format!(
            "UPDATE jit_replicas r SET gone_at = now()
             WHERE r.gone_at IS NULL AND r.owner <> $1
               AND NOT EXISTS (SELECT 1 FROM pg_locks l
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND l.classid = {LIVENESS_CLASS}
                   AND l.objid = (hashtext(r.owner) & 2147483647)::oid)"
        ),
        &[&owner],
    )?;
    client.execute(
        "DELETE FROM jit_replicas WHERE gone_at < now() - interval '1 day'",
        &[],
    )?;
    Ok(gone)
}

/// A replica stopping cleanly says so (`gone_at`), so the others take
/// over what it leaves claimed at once and do not report it as died.
fn leave(client: &mut postgres::Client, alive_as: Option<&str>) {
    if let Some(owner) = alive_as {
        if let Err(e) = client.execute(
            "UPDATE jit_replicas SET gone_at = now() WHERE owner = $1 AND gone_at IS NULL",
            &[&owner],
        ) {
            tracing::debug!(error = %with_causes(&e), "cannot say this replica is leaving");
        }
        // "Look again" (sequence 0) to the others' schedulers.
        let _ = client.execute("SELECT pg_notify($1, '0')", &[&CHANNEL]);
    }
}

/// How often a listener looks for replicas that died ([`mark_gone`]).
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// `LISTEN`s on [`CHANNEL`] on a connection of its own, reconnecting
/// (at most every 2 s) after errors, until `f` says stop. With
/// `alive_as` (the scheduler's claims owner), the connection also holds
/// that replica's liveness lock, and about once a second the listener
/// marks replicas whose lock is gone and then says "look again"
/// (`seq` 0) so the scheduler takes their claimed work over.
fn listen_loop(
    config: postgres::Config,
    tls: Connector,
    origin: &str,
    alive_as: Option<&str>,
    f: Follower,
) {
    use fallible_iterator::FallibleIterator;
    let failures = FailureLog::default();
    loop {
        let mut client = match tls.connect(&config) {
            Ok(c) => {
                if let Some(n) = failures.recovered() {
                    tracing::info!("listening for other replicas' events again ({n} failed attempts since the last warning)");
                }
                c
            }
            Err(e) => {
                let e = with_causes(&e);
                match failures.should_log(std::time::Instant::now()) {
                    Some(0) => {
                        tracing::warn!(error = %e, "cannot listen for other replicas' events; retrying every 2 s")
                    }
                    Some(n) => {
                        tracing::warn!(error = %e, "cannot listen for other replicas' events; {n} more failed attempts in the last {} s; retrying every 2 s", FAILURE_LOG_EVERY.as_secs())
                    }
                    None => {}
                }
                if !f(None) {
                    return;
                }
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::warn!(error = %with_causes(&e), "LISTEN failed; retrying");
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        if let Some(owner) = alive_as {
            if let Err(e) = register(&mut client, owner) {
                tracing::warn!(error = %with_causes(&e), "cannot take this replica's liveness lock; retrying");
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
        }
        // After (re)connecting, whatever was missed is read by the hub from
        // the audit sequence: one wake-up is enough.
        if !f(Some(Announced { seq: 0, own: false })) {
            leave(&mut client, alive_as);
            return;
        }
        let mut looked = std::time::Instant::now();
        loop {
            if let Some(owner) = alive_as.filter(|_| looked.elapsed() >= LIVENESS_EVERY) {
                looked = std::time::Instant::now();
                match mark_gone(&mut client, owner) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(
                            replicas = n,
                            "another jitd replica is gone; taking over its claimed work"
                        );
                        if !f(Some(Announced { seq: 0, own: false })) {
                            leave(&mut client, alive_as);
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %with_causes(&e), "listen connection lost; reconnecting");
                        break;
                    }
                }
            }
            // A fresh iterator per wait: `TimeoutIter` does not restart its
            // timer after it fires, so one kept across waits would return
            // at once ever after (a busy loop burning a core).
            let next = client
                .notifications()
                .timeout_iter(Duration::from_secs(1))
                .next();
            match next {
                Ok(Some(note)) => {
                    if !f(parse_announcement(note.payload(), origin)) {
                        leave(&mut client, alive_as);
                        return;
                    }
                }
                Ok(None) => {
                    if !f(None) {
                        leave(&mut client, alive_as);
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %with_causes(&e), "listen connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}

/// A `NOTIFY` payload on [`CHANNEL`]: `"<seq>"` or `"<seq> <origin>"`
/// (see [`Postgres::origin`]); `None` if it is neither.
pub fn parse_announcement(payload: &str, origin: &str) -> Option<Announced> {
    let (seq, from) = match payload.split_once(' ') {
        Some((seq, from)) => (seq, Some(from)),
        None => (payload, None),
    };
    Some(Announced {
        seq: seq.parse().ok()?,
        own: from == Some(origin),
    })
}

/// PostgreSQL schema versions; `jit_schema_version` holds how many are
/// applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE requests (
    id TEXT COLLATE "C" PRIMARY KEY,
    entitlement_id TEXT COLLATE "C" NOT NULL,
    requester_id TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    extends TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL,
    pending_until TEXT COLLATE "C" NOT NULL,
    start_at TEXT COLLATE "C",
    expires_at TEXT COLLATE "C",
    body TEXT NOT NULL,
    grant_state TEXT NOT NULL,
    removal_pending BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT COLLATE "C",
    review_open BIGINT NOT NULL DEFAULT 0,
    pending_slot BIGINT NOT NULL DEFAULT 0,
    claimed_by TEXT COLLATE "C",
    claim_until TEXT COLLATE "C"
);
CREATE INDEX requests_removal ON requests(removal_pending);
CREATE TABLE request_votes (
    request_id TEXT COLLATE "C" NOT NULL,
    approver_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (request_id, approver_id)
);
CREATE TABLE audit (
    seq BIGINT PRIMARY KEY,
    at TEXT COLLATE "C" NOT NULL,
    event TEXT NOT NULL,
    request_id TEXT COLLATE "C" NOT NULL,
    entitlement_id TEXT COLLATE "C" NOT NULL,
    requester_id TEXT COLLATE "C" NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    from_status TEXT,
    to_status TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    actor_client TEXT
);
CREATE INDEX audit_request ON audit(request_id);
CREATE FUNCTION jit_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit log is append-only'; END $$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION jit_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION jit_audit_append_only();
"#,
    // 2: the webhook outbox.
    super::outbox::PG_MIGRATION,
    // 3: room on each page of `requests` for the next version of its rows.
    // A request's row is rewritten several times in its life (claimed,
    // ownership decided, granted, released …); most of these changes touch
    // no indexed column, and with room on its page PostgreSQL writes the
    // new version there without a new entry in each of the table's
    // indexes (a heap-only tuple). Full pages (the default, 100) made every
    // such write insert into all of them. Applies to pages written from now on.
    "ALTER TABLE requests SET (fillfactor = 70);",
    // 4: the replicas that hold a liveness lock (see the module's doc);
    // `gone_at`: when another replica found its lock released.
    r#"
CREATE TABLE jit_replicas (
    owner TEXT COLLATE "C" PRIMARY KEY,
    registered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    gone_at TIMESTAMPTZ
);
"#,
];

/// How many migrations this jitd has.
pub fn latest() -> usize {
    MIGRATIONS.len()
}

/// The schema version of the database `c` is connected to, without
/// changing anything (0 before the first migration).
pub fn schema_version(c: &mut dyn Conn) -> Result<i64, StoreError> {
    let exists = c.query(
        "SELECT 1 FROM information_schema.tables WHERE table_name = 'jit_schema_version' AND table_schema = current_schema()",
        &[],
    )?;
    if exists.is_empty() {
        return Ok(0);
    }
    match c
        .query("SELECT version FROM jit_schema_version", &[])?
        .first()
    {
        Some(r) => r[0].int(),
        None => Ok(0),
    }
}

/// Applies pending migrations and the shared `indexes`, under
/// [`MIGRATE_LOCK`].
pub fn migrate(c: &mut dyn Conn, indexes: &[&str]) -> Result<(), StoreError> {
    c.batch(&format!("SELECT pg_advisory_lock({MIGRATE_LOCK})"))?;
    let r = (|| {
        c.batch("CREATE TABLE IF NOT EXISTS jit_schema_version (version BIGINT NOT NULL)")?;
        let rows = c.query("SELECT version FROM jit_schema_version", &[])?;
        let version = match rows.first() {
            Some(r) => r[0].int()?,
            None => {
                c.exec("INSERT INTO jit_schema_version (version) VALUES (0)", &[])?;
                0
            }
        };
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            c.batch("BEGIN")?;
            let r = c.batch(m).and_then(|_| {
                c.exec(
                    "UPDATE jit_schema_version SET version = ?",
                    &[P::from((i + 1) as i64)],
                )
                .map(|_| ())
            });
            match r {
                Ok(()) => c.batch("COMMIT")?,
                Err(e) => {
                    let _ = c.batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        for ix in indexes {
            c.batch(ix)?;
        }
        Ok(())
    })();
    let _ = c.batch(&format!("SELECT pg_advisory_unlock({MIGRATE_LOCK})"));
    r
}

#[cfg(test)]
mod failure_log_tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn pool_errors_are_logged_once_a_minute_with_the_count_in_between() {
        let log = FailureLog::default();
        let t0 = Instant::now();
        assert_eq!(log.should_log(t0), Some(0), "the first failure is logged");
        for i in 1..=50 {
            assert_eq!(log.should_log(t0 + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(
            log.should_log(t0 + FAILURE_LOG_EVERY),
            Some(50),
            "a minute later one line counts the 50 attempts in between"
        );
        assert_eq!(
            log.should_log(t0 + FAILURE_LOG_EVERY + Duration::from_secs(1)),
            None
        );
        // The database is back: the count since the last line, and the
        // next outage's first failure is logged at once (not counted into
        // the old one).
        assert_eq!(log.recovered(), Some(1));
        assert_eq!(log.recovered(), None, "said once");
        let later = t0 + FAILURE_LOG_EVERY + Duration::from_secs(2);
        assert_eq!(log.should_log(later), Some(0));
    }

    #[test]
    fn a_connection_error_is_said_with_its_cause() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error connecting to server")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        assert_eq!(
            with_causes(&e),
            "error connecting to server: Connection refused"
        );
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn only_an_answer_within_a_second_spares_the_check_out_test() {
        let now = Instant::now();
        assert!(answered_recently(Some(now), now));
        assert!(answered_recently(
            Some(now - ANSWERED_RECENTLY + Duration::from_millis(1)),
            now
        ));
        assert!(!answered_recently(Some(now - ANSWERED_RECENTLY), now));
        assert!(!answered_recently(None, now), "a new connection is tested");
    }

    /// A connection that answered recently is handed out without the
    /// check-out test (its time of answer stays as it was); an older one
    /// is tested (an empty query, which sets it anew).
    #[test]
    fn a_connection_that_answered_recently_is_handed_out_untested() {
        let url =
            jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
        let pg = Postgres::open(&url, 1).unwrap();
        // "Recently" whatever the machine's load: an answer time ahead of
        // the clock counts as just now.
        let ahead = Instant::now() + Duration::from_secs(3600);
        pg.pool.get().unwrap().answered_at = Some(ahead);
        assert_eq!(
            pg.pool.get().unwrap().answered_at,
            Some(ahead),
            "not tested: its time of answer is unchanged"
        );
        let old = Instant::now() - ANSWERED_RECENTLY - Duration::from_millis(100);
        pg.pool.get().unwrap().answered_at = Some(old);
        let c = pg.pool.get().unwrap();
        assert!(
            c.answered_at.is_some_and(|t| t > old + ANSWERED_RECENTLY),
            "an idle connection is tested before it is handed out"
        );
    }

    /// A connection the server ended meanwhile, handed out untested, fails
    /// the one call that finds out (with a database error, not a hang), is
    /// dropped by the pool, and the next call gets a working connection.
    #[test]
    fn a_connection_ended_by_the_server_fails_one_call_at_most() {
        let url =
            jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
        let pg = Postgres::open(&url, 1).unwrap();
        let pid = {
            let mut c = pg.pool.get().unwrap();
            let pid = PgConn(&mut *c)
                .query("SELECT pg_backend_pid()", &[])
                .unwrap()[0][0]
                .int()
                .unwrap();
            // Handed out untested next time, however long what follows takes.
            c.answered_at = Some(Instant::now() + Duration::from_secs(3600));
            pid
        };
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&(pid as i32)])
            .unwrap();
        // Bounded wait until the server has ended it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while admin
            .query(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1",
                &[&(pid as i32)],
            )
            .unwrap()
            .len()
            == 1
        {
            assert!(
                Instant::now() < deadline,
                "backend {pid} still there after 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let first = {
            let mut c = pg.pool.get().unwrap();
            PgConn(&mut *c).query("SELECT 1", &[]).map(|_| ())
        };
        assert!(
            matches!(first, Err(StoreError::Pool(_))),
            "the ended connection was handed out untested and failed as an outage (503): {first:?}"
        );
        let mut c = pg.pool.get().unwrap();
        let second = PgConn(&mut *c)
            .query("SELECT pg_backend_pid()", &[])
            .unwrap()[0][0]
            .int()
            .unwrap();
        assert_ne!(second, pid, "a new connection");
    }
}
