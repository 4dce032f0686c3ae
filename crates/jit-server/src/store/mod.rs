//! The store: the only truth about requests, grants and the audit log.
//!
//! Two engines behind one interface ([`db::Database`]): SQLite in one file
//! (the default, WAL, `synchronous=FULL`) and PostgreSQL (several jitd
//! replicas on one database). The SQL is written once ([`SqlStore`]).
//!
//! Every state change goes through [`Store::update`] (or its relatives),
//! which loads a request, lets `jit-core` apply a transition, and saves the
//! request and its audit rows in one transaction, so a crash leaves either
//! all of a change or none of it.
//!
//! The audit log is append-only and hash-chained: each row stores the hash of
//! the previous row, and its own hash covers its content and that link, so a
//! changed, removed or reordered row breaks [`Store::verify_audit`]. Appends
//! are serialised (SQLite: one writer; PostgreSQL: a transaction-scoped
//! advisory lock), so concurrent writers on several replicas still make one
//! chain without forks.
//!
//! Requests keep their whole body as JSON plus real, indexed columns for
//! everything lists filter and sort on (status, requester, entitlement,
//! `created_at`, review state, votes), so every list is filtered and
//! paginated in SQL ([`Store::list`]) with a stable cursor — exact for any
//! store size.
//!
//! [`Store`] is the async face used by handlers and the scheduler: each call
//! runs on tokio's blocking pool (`spawn_blocking`), never on the runtime's
//! worker threads; reads use their own connections, so a long list never
//! holds up a write or `/healthz`.

pub mod db;
mod outbox;
pub mod pg_tls;
pub mod postgres;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_core::{AccessRequest, DomainError, EntitlementKind, Status, Transition};

use db::{Conn, Database, Dialect, Row, P, V};

pub use jit_core::api::{AuditRecord, AuditVerification, EventKind, GrantState, GENESIS};
pub use outbox::{Claim, OutboxItem, OutboxRouter, OutboxRow, WebhookEvent};

/// An event not caused by a request transition (e.g. the role really left
/// Keycloak), for the audit log.
#[derive(Debug, Clone)]
pub struct Note {
    pub event: EventKind,
    pub actor: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// What a closure passed to [`Store::update`] may record.
pub enum Entry {
    Transition(Transition),
    Note(Note),
}

impl From<Transition> for Entry {
    fn from(t: Transition) -> Entry {
        Entry::Transition(t)
    }
}

/// Logs a failed store step of a background loop (scheduler, event hub,
/// webhook delivery, metrics). No connection to the database (it is down
/// or unreachable: [`StoreError::Pool`]) is said by the pool itself, at
/// WARN, once a minute with a count, and when it is back; the loops run
/// into it on every pass, so it is logged here at debug only. A database
/// that does not answer within the call limit ([`StoreError::TimedOut`])
/// is an outage too: WARN (at most once per limit and loop). Anything
/// else is an ERROR.
pub fn log_failure(e: &StoreError, what: &str) {
    match e {
        StoreError::Pool(_) => tracing::debug!(error = %e, "{what}"),
        StoreError::TimedOut(_) => tracing::warn!(error = %e, "{what}"),
        _ => tracing::error!(error = %e, "{what}"),
    }
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Pg(String),
    #[error("no database connection: {0}")]
    Pool(String),
    /// The database took longer than [`Store::call_limit`] to answer (hung,
    /// or cut off without the connection closing): the call's transaction
    /// may still commit when it answers, or not.
    #[error("the database did not answer within {0} s")]
    TimedOut(u64),
    /// A unique index refused a row (e.g. a second pending request).
    #[error("unique constraint: {0}")]
    Unique(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Opened without migrating ([`Store::open_spec_as_is`]) and the schema
    /// is older than this jitd's: migration `next` (of `latest`) is due.
    #[error("the database needs migration {next} (of {latest}), which jitd applies when it starts; this command does not change the database")]
    NeedsMigration { next: usize, latest: usize },
}

/// Work the scheduler must do now.
#[derive(Debug, Default)]
pub struct DueWork {
    pub lapse: Vec<String>,
    pub expire: Vec<String>,
    pub activate: Vec<String>,
    pub remove: Vec<String>,
    /// Earliest future instant at which something becomes due.
    pub next_due: Option<DateTime<Utc>>,
}

/// A stored request with its grant bookkeeping.
#[derive(Debug, Clone)]
pub struct Stored {
    pub request: AccessRequest,
    pub grant: GrantState,
}

/// An active grant, or a waiting request, as whose it is
/// ([`SqlStore::active_grant_holders`], [`SqlStore::waiting_requests_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantHolder {
    /// The request's id (a grant's is its request's).
    pub id: String,
    /// The requester's Keycloak user id.
    pub requester_id: String,
    /// The requester's username, as at the request.
    pub requester_username: String,
}

/// A request as the scheduler reads it before its Keycloak work
/// ([`SqlStore::work_views`]).
#[derive(Debug, Clone)]
pub struct WorkView {
    pub stored: Stored,
    /// [`SqlStore::active_ownership`] of the request's assignment by the
    /// user's other active grants: `None` when there is none.
    pub others_own: Option<bool>,
}

/// Who is asking, for visibility in SQL: the same rule as
/// [`AccessRequest::visible_to`] — the requester, auditors, and approvers of
/// the request's entitlement (in the policy in force).
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub user_id: String,
    pub auditor: bool,
    /// Entitlement ids this user approves.
    pub approves: Vec<String>,
}

impl Viewer {
    /// The viewer `p` is under `policy`.
    pub fn of(p: &jit_core::Principal, policy: &jit_core::Policy) -> Viewer {
        Viewer {
            user_id: p.id.clone(),
            auditor: policy.is_auditor(p),
            approves: policy
                .entitlements
                .values()
                .filter(|e| e.is_approver(p))
                .map(|e| e.id.clone())
                .collect(),
        }
    }

    /// Whether an audit row (or its request) with this requester and
    /// entitlement is visible: a check on two fields, no store read.
    pub fn sees(&self, requester_id: &str, entitlement_id: &str) -> bool {
        self.auditor
            || requester_id == self.user_id
            || self.approves.iter().any(|e| e == entitlement_id)
    }
}

/// Position in a list ordered newest first: the last row's `created_at` and
/// id. Text form `MICROS.ID` (microseconds since the epoch, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

impl Cursor {
    /// `MICROS.ID`, safe in a URL query for the ids jitd makes (UUIDs).
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.id)
    }

    /// Parses [`encode`](Self::encode)'s form; `None` if malformed.
    pub fn decode(s: &str) -> Option<Cursor> {
        let (micros, id) = s.split_once('.')?;
        let created_at = DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?;
        (!id.is_empty()).then(|| Cursor {
            created_at,
            id: id.to_string(),
        })
    }
}

/// A filtered list of requests, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only what this viewer may see.
    pub viewer: Viewer,
    pub status: Option<Status>,
    /// Only the viewer's own requests.
    pub mine: bool,
    /// Waiting for the viewer: `AccessRequest::awaits_review_by` (pending
    /// without their vote, or a break-glass activation whose review is
    /// open, for entitlements they approve, not their own), in SQL.
    pub to_review: bool,
    /// Break-glass activations whose after-the-fact review is open.
    pub review_open: bool,
    /// Only ids starting with this.
    pub id_prefix: Option<String>,
    /// Continue after this position.
    pub after: Option<Cursor>,
    /// Page size (at least 1).
    pub limit: usize,
}

/// One page of a list: `next` is set when more rows follow.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Stored>,
    pub next: Option<Cursor>,
}

fn ts(t: DateTime<Utc>) -> String {
    // Fixed width, so text order is time order in SQL comparisons.
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {s}: {e}")))
}

/// The indexed `removal_pending` column: 1 = the removal is due (work for
/// the scheduler), 2 = it failed for good (`removal_failed`: no work, but
/// counted as a late revoke by [`SqlStore::stats`]), 0 = neither.
fn removal_column(g: &GrantState) -> i64 {
    if g.removal_pending {
        1
    } else if g.removal_failed {
        2
    } else {
        0
    }
}

/// The columns of a request row that an update may change besides its two
/// documents (`body`, `grant_state`), in their stored form (text, 0/1/2):
/// status, start, end, removal state, next attempt, open review. Most of
/// the row's indexes are on these (`INDEXES`). The one place that derives
/// them from a request: `SqlStore::save` and `save_existing_pg` write
/// these values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UpdatedColumns {
    status: &'static str,
    start_at: Option<String>,
    expires_at: Option<String>,
    removal: i64,
    next_attempt_at: Option<String>,
    review_open: i64,
}

/// [`UpdatedColumns`] in a `SELECT` list, in [`UpdatedColumns::stored_in`]'s order.
const UPDATED_COLS: &str =
    "status, start_at, expires_at, removal_pending, next_attempt_at, review_open";

impl UpdatedColumns {
    /// As they must be stored for `s`.
    fn of(s: &Stored) -> UpdatedColumns {
        let r = &s.request;
        UpdatedColumns {
            status: r.status().as_str(),
            start_at: r.start_at().map(ts),
            expires_at: r.expires_at().map(ts),
            removal: removal_column(&s.grant),
            next_attempt_at: s.grant.next_attempt_at.map(ts),
            review_open: (r.review_required() && r.reviewed_at().is_none()) as i64,
        }
    }

    /// These as a row read with [`UPDATED_COLS`] from column 2 on (the
    /// documents' columns left null): for a row written in this very
    /// transaction.
    fn as_row(&self) -> Row {
        let opt = |v: &Option<String>| v.clone().map_or(V::Null, V::Text);
        vec![
            V::Null,
            V::Null,
            V::Text(self.status.to_string()),
            opt(&self.start_at),
            opt(&self.expires_at),
            V::Int(self.removal),
            opt(&self.next_attempt_at),
            V::Int(self.review_open),
        ]
    }

    /// Whether the row's columns as read (`row[at..]`, [`UPDATED_COLS`])
    /// are these: compared with what is in the row, not with what its
    /// documents imply, so a row whose columns disagree with its documents
    /// (an older version's, a hand edit) gets them rewritten.
    fn stored_in(&self, row: &Row, at: usize) -> Result<bool, StoreError> {
        let cols = row
            .get(at..at + 6)
            .ok_or_else(|| StoreError::Corrupt("request row lacks its columns".into()))?;
        Ok(cols[0].text()? == self.status
            && cols[1].opt_text()? == self.start_at
            && cols[2].opt_text()? == self.expires_at
            && cols[3].int()? == self.removal
            && cols[4].opt_text()? == self.next_attempt_at
            && cols[5].int()? == self.review_open)
    }
}

/// `ids` as one JSON array (the parameter of [`SqlStore::id_list`]).
fn ids_json(ids: &[String]) -> String {
    serde_json::to_string(ids).expect("ids serialise")
}

fn target_key(t: &EntitlementKind) -> String {
    serde_json::to_string(t).expect("target serialises")
}

/// SQLite schema versions (`PRAGMA user_version` = how many are applied).
const SQLITE_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    entitlement_id TEXT NOT NULL,
    requester_id TEXT NOT NULL,
    status TEXT NOT NULL,
    target TEXT NOT NULL,
    extends TEXT,
    created_at TEXT NOT NULL,
    pending_until TEXT NOT NULL,
    start_at TEXT,
    expires_at TEXT,
    body TEXT NOT NULL,
    grant_state TEXT NOT NULL,
    removal_pending INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT
);
CREATE INDEX requests_status ON requests(status);
CREATE INDEX requests_requester ON requests(requester_id);
CREATE INDEX requests_removal ON requests(removal_pending);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    request_id TEXT NOT NULL,
    entitlement_id TEXT NOT NULL,
    requester_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    from_status TEXT,
    to_status TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_request ON audit(request_id);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"#,
    // 2: the webhook outbox.
    outbox::MIGRATION,
    // 3: service-account actors (pipelines), see `AuditRecord::actor_client`.
    "ALTER TABLE audit ADD COLUMN actor_client TEXT;",
    // 4: columns and indexes for SQL-side lists; votes as rows; one pending
    // request per requester and entitlement enforced by a unique index;
    // due-work claims (several replicas).
    r#"
ALTER TABLE requests ADD COLUMN review_open INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN pending_slot INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN claimed_by TEXT;
ALTER TABLE requests ADD COLUMN claim_until TEXT;
CREATE TABLE request_votes (
    request_id TEXT NOT NULL,
    approver_id TEXT NOT NULL,
    PRIMARY KEY (request_id, approver_id)
);
INSERT OR IGNORE INTO request_votes (request_id, approver_id)
    SELECT r.id, json_extract(v.value, '$.approver_id') FROM requests r, json_each(r.body, '$.votes') v;
UPDATE requests SET review_open = 1
    WHERE json_extract(body, '$.review_required') = 1 AND json_extract(body, '$.reviewed_at') IS NULL;
UPDATE requests SET pending_slot = 1
    WHERE status = 'pending' AND extends IS NULL AND id = (
        SELECT d.id FROM requests d
        WHERE d.requester_id = requests.requester_id AND d.entitlement_id = requests.entitlement_id
          AND d.status = 'pending' AND d.extends IS NULL
        ORDER BY d.created_at, d.id LIMIT 1);
DROP INDEX requests_status;
DROP INDEX requests_requester;
"#,
];

/// Indexes both engines share (created after the migrations, idempotent).
const INDEXES: &[&str] = &[
    // One pending access request per requester and entitlement, and one
    // pending extension per grant: the pending slot (`takes_pending_slot`)
    // under two unique indexes. Rows of older versions keep their slots
    // (extensions had none), so creating these cannot fail on old data.
    "CREATE UNIQUE INDEX IF NOT EXISTS requests_one_pending_access ON requests(requester_id, entitlement_id) WHERE pending_slot = 1 AND extends IS NULL",
    "CREATE UNIQUE INDEX IF NOT EXISTS requests_one_pending_extension ON requests(extends) WHERE pending_slot = 1 AND extends IS NOT NULL",
    // Replaced by `requests_one_pending_access` (it counted extensions in).
    "DROP INDEX IF EXISTS requests_one_pending",
    "CREATE INDEX IF NOT EXISTS requests_by_time ON requests(created_at, id)",
    "CREATE INDEX IF NOT EXISTS requests_by_status ON requests(status, created_at, id)",
    "CREATE INDEX IF NOT EXISTS requests_by_requester ON requests(requester_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS requests_by_requester_status ON requests(requester_id, status, created_at, id)",
    "CREATE INDEX IF NOT EXISTS requests_by_entitlement ON requests(entitlement_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS requests_by_entitlement_status ON requests(entitlement_id, status, created_at, id)",
    "CREATE INDEX IF NOT EXISTS requests_review_open ON requests(entitlement_id, created_at, id) WHERE review_open = 1",
    // Due work (`SqlStore::due`, `claim_due`): partial indexes hold only
    // the rows in the state each kind of work looks for, so a row entering
    // another state adds no entry to them (fewer index writes per status
    // change: 8 instead of 12 on an activation).
    "DROP INDEX IF EXISTS requests_pending_until",
    "DROP INDEX IF EXISTS requests_expires",
    "DROP INDEX IF EXISTS requests_start",
    "DROP INDEX IF EXISTS requests_removal",
    "CREATE INDEX IF NOT EXISTS requests_lapse_due ON requests(pending_until) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS requests_expiry_due ON requests(expires_at) WHERE status = 'active'",
    "CREATE INDEX IF NOT EXISTS requests_start_due ON requests(start_at) WHERE status = 'approved'",
    "CREATE INDEX IF NOT EXISTS requests_removal_due ON requests(requester_id, target) WHERE removal_pending = 1",
    "CREATE INDEX IF NOT EXISTS requests_removal_failed ON requests(id) WHERE removal_pending = 2",
    "CREATE INDEX IF NOT EXISTS audit_requester ON audit(requester_id, seq)",
    "CREATE INDEX IF NOT EXISTS audit_entitlement ON audit(entitlement_id, seq)",
];

/// Above this many approved entitlements, a list uses one `IN (…)` branch
/// instead of one index range per entitlement.
const MAX_BRANCHES: usize = 64;

const REQUEST_COLS: &str = "body, grant_state";

/// The store logic over any [`Database`]; synchronous (call it from a
/// blocking thread, or use [`Store`]).
pub struct SqlStore {
    db: Box<dyn Database>,
    /// Routes audit rows to webhook endpoints (the outbox); `None`: no
    /// webhooks.
    outbox: RwLock<Option<OutboxRouter>>,
}

/// Appends the audit rows of a JSON array (see
/// `SqlStore::audit_rows_json`), in chain order, on PostgreSQL.
const INSERT_AUDIT_PG: &str = "INSERT INTO audit (seq, at, event, request_id, entitlement_id, requester_id, actor, reason, from_status, to_status, prev_hash, hash, actor_client)
             SELECT seq, at, event, request_id, entitlement_id, requester_id, actor, reason, from_status, to_status, prev_hash, hash, actor_client
             FROM jsonb_to_recordset(?::text::jsonb) AS x(seq bigint, at text, event text, request_id text,
               entitlement_id text, requester_id text, actor text, reason text, from_status text, to_status text,
               prev_hash text, hash text, actor_client text)
             ORDER BY seq";

impl SqlStore {
    /// Opens (creating if needed) a SQLite database file and migrates it
    /// (tests, tools, benchmark seeding; the server uses [`Store`]).
    pub fn open_sqlite(path: &Path) -> Result<SqlStore, StoreError> {
        SqlStore::new(Box::new(db::Sqlite::open(path, 4)?))
    }

    /// Wraps an opened database and brings its schema up to date.
    pub fn new(db: Box<dyn Database>) -> Result<SqlStore, StoreError> {
        let s = SqlStore {
            db,
            outbox: RwLock::new(None),
        };
        match s.db.dialect() {
            Dialect::Sqlite => {
                s.migrate_sqlite()?;
                let mut c = s.db.writer()?;
                for ix in INDEXES {
                    c.batch(ix)?;
                }
            }
            Dialect::Postgres => postgres::migrate(&mut *s.db.writer()?, INDEXES)?,
        }
        Ok(s)
    }

    /// Wraps an opened database as it is: no migration, no index; for
    /// tools that only read. Errors: [`StoreError::NeedsMigration`] when
    /// its schema is older than this jitd's.
    pub fn as_is(db: Box<dyn Database>) -> Result<SqlStore, StoreError> {
        let s = SqlStore {
            db,
            outbox: RwLock::new(None),
        };
        let (version, latest) = {
            let mut c = s.db.reader()?;
            match s.db.dialect() {
                Dialect::Sqlite => (
                    c.query("PRAGMA user_version", &[])?[0][0].int()?,
                    SQLITE_MIGRATIONS.len(),
                ),
                Dialect::Postgres => (postgres::schema_version(&mut *c)?, postgres::latest()),
            }
        };
        if (version.max(0) as usize) < latest {
            return Err(StoreError::NeedsMigration {
                next: version.max(0) as usize + 1,
                latest,
            });
        }
        Ok(s)
    }

    /// The engine.
    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    /// Whether other processes may share this database (PostgreSQL): then
    /// due work is claimed before it is done.
    pub fn shared(&self) -> bool {
        self.db.dialect() == Dialect::Postgres
    }

    fn migrate_sqlite(&self) -> Result<(), StoreError> {
        let mut c = self.db.writer()?;
        let version = c.query("PRAGMA user_version", &[])?[0][0].int()?;
        for (i, m) in SQLITE_MIGRATIONS.iter().enumerate().skip(version as usize) {
            c.batch("BEGIN IMMEDIATE")?;
            let r = c
                .batch(m)
                .and_then(|_| c.batch(&format!("PRAGMA user_version = {}", i + 1)))
                .and_then(|_| c.batch("COMMIT"));
            if let Err(e) = r {
                let _ = c.batch("ROLLBACK");
                return Err(e);
            }
        }
        Ok(())
    }

    /// Runs `f` in one write transaction: all of it or nothing.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_in(true, f)
    }

    /// Like [`SqlStore::write`], but on PostgreSQL without the audit
    /// chain's advisory lock: for transactions that append nothing to the
    /// audit log, so they do not queue behind every replica's writers (nor
    /// wait for their disk syncs): the webhook outbox's leases and outcomes
    /// (they lock only `outbox` rows, which no transaction holding the
    /// audit lock locks — enqueueing only inserts) and the scheduler's
    /// claims on requests ([`SqlStore::claim`] never waits for a row lock;
    /// [`SqlStore::release_many`] locks rows in id order, like every
    /// transaction that locks several). No lock-order deadlock either way.
    /// On SQLite the same as `write` (one writer at a time anyway).
    pub(crate) fn write_unchained<R>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_in(false, f)
    }

    fn write_in<R>(
        &self,
        audit_lock: bool,
        f: impl FnOnce(&mut dyn Conn) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut c = self.db.writer()?;
        match self.db.dialect() {
            Dialect::Sqlite => c.batch("BEGIN IMMEDIATE")?,
            // Writers on every replica take the same transaction-scoped lock
            // first: the audit chain gets one head, and row locks are always
            // taken after it (no lock-order deadlocks).
            Dialect::Postgres if audit_lock => c.batch(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({})",
                postgres::AUDIT_LOCK
            ))?,
            Dialect::Postgres => c.batch("BEGIN")?,
        }
        match f(&mut *c) {
            Ok(r) => {
                if let Err(e) = c.batch("COMMIT") {
                    let _ = c.batch("ROLLBACK");
                    return Err(e);
                }
                Ok(r)
            }
            Err(e) => {
                let _ = c.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn row_to_stored(row: &Row) -> Result<Stored, StoreError> {
        Ok(Stored {
            request: serde_json::from_str(&row[0].text()?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            grant: serde_json::from_str(&row[1].text()?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        })
    }

    /// Writes request `s`: a new row (`before` is `None`) or an existing
    /// one, `before` being its row as read in this transaction with the
    /// [`UPDATED_COLS`] from column 2 on. When the row already holds
    /// every other column as `s` needs it ([`UpdatedColumns`]: an
    /// ownership decision, the start of an assignment attempt, a vote that
    /// does not decide), only the documents are written: an `UPDATE`
    /// rewrites the entries of every index on a column in its `SET` list
    /// even when the value stays the same, which on SQLite dirtied a page
    /// per such index (5 WAL frames more for one request) for a change
    /// that moves none of them.
    fn save(c: &mut dyn Conn, s: &Stored, before: Option<&Row>) -> Result<(), StoreError> {
        let r = &s.request;
        let new = before.is_none();
        let cols = UpdatedColumns::of(s);
        let unchanged = match before {
            Some(row) => cols.stored_in(row, 2)?,
            None => false,
        };
        if unchanged {
            // The status stays, so the pending slot does too (the upsert
            // below gives it up only when the status leaves `pending`).
            c.exec(
                "UPDATE requests SET body = ?, grant_state = ? WHERE id = ?",
                &[
                    P::from(serde_json::to_string(r).expect("request serialises")),
                    P::from(serde_json::to_string(&s.grant).expect("grant state serialises")),
                    P::from(r.id()),
                ],
            )?;
        } else {
            Self::upsert(c, s, &cols, new)?;
        }
        for v in r.votes() {
            c.exec(
                "INSERT INTO request_votes (request_id, approver_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                &[P::from(r.id()), P::from(&v.approver_id)],
            )?;
        }
        Ok(())
    }

    /// The whole row of `s` with `cols` (its [`UpdatedColumns`]): inserted
    /// when `new`, else every column an update may change rewritten.
    fn upsert(
        c: &mut dyn Conn,
        s: &Stored,
        cols: &UpdatedColumns,
        new: bool,
    ) -> Result<(), StoreError> {
        let r = &s.request;
        let extends = match &r.kind() {
            jit_core::RequestKind::Extension { grant_id } => Some(grant_id.clone()),
            jit_core::RequestKind::Access => None,
        };
        // The slot of "one pending request per requester and entitlement"
        // or, for an extension, "one pending extension per grant"
        // (`AccessRequest::takes_pending_slot`): taken at creation, given up
        // when the request leaves `pending`.
        let pending_slot = (new && r.takes_pending_slot()) as i64;
        c.exec(
            "INSERT INTO requests (id, entitlement_id, requester_id, status, target, extends, created_at, pending_until, start_at, expires_at, body, grant_state, removal_pending, next_attempt_at, review_open, pending_slot)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET status=excluded.status, start_at=excluded.start_at, expires_at=excluded.expires_at,
               body=excluded.body, grant_state=excluded.grant_state, removal_pending=excluded.removal_pending,
               next_attempt_at=excluded.next_attempt_at, review_open=excluded.review_open,
               pending_slot = CASE WHEN excluded.status = 'pending' THEN requests.pending_slot ELSE 0 END",
            &[
                P::from(r.id()),
                P::from(r.entitlement_id()),
                P::from(r.requester_id()),
                P::from(cols.status),
                P::from(target_key(r.target())),
                P::from(extends),
                P::from(ts(r.created_at())),
                P::from(ts(r.pending_until())),
                P::from(cols.start_at.clone()),
                P::from(cols.expires_at.clone()),
                P::from(serde_json::to_string(r).expect("request serialises")),
                P::from(serde_json::to_string(&s.grant).expect("grant state serialises")),
                P::from(cols.removal),
                P::from(cols.next_attempt_at.clone()),
                P::from(cols.review_open),
                P::from(pending_slot),
            ],
        )?;
        Ok(())
    }

    /// Appends one audit row for `e` to the chain, with the chain's head
    /// read once per transaction (`head`: `None` until read). Every caller
    /// holds the chain's lock (PostgreSQL: [`postgres::AUDIT_LOCK`];
    /// SQLite: the one writer), so the head cannot move under it.
    fn append(
        &self,
        c: &mut dyn Conn,
        head: &mut Option<(i64, String)>,
        r: &AccessRequest,
        e: &Entry,
    ) -> Result<AuditRecord, StoreError> {
        let rec = Self::next_record(c, head, r, e)?;
        c.exec(
            "INSERT INTO audit (seq, at, event, request_id, entitlement_id, requester_id, actor, reason, from_status, to_status, prev_hash, hash, actor_client)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                P::from(rec.seq),
                P::from(ts(rec.at)),
                P::from(rec.event.as_str()),
                P::from(&rec.request_id),
                P::from(&rec.entitlement_id),
                P::from(&rec.requester_id),
                P::from(&rec.actor),
                P::from(rec.reason.clone()),
                P::from(rec.from_status.clone()),
                P::from(rec.to_status.clone()),
                P::from(&rec.prev_hash),
                P::from(&rec.hash),
                P::from(rec.actor_client.clone()),
            ],
        )?;
        // The outbox rows are part of the same transaction as the audit row.
        self.enqueue(c, &rec, r)?;
        Ok(rec)
    }

    /// The audit row that follows `head` for entry `e` of request `r`
    /// (hash computed, not written); moves `head` on to it. Reads the head
    /// from the database the first time in a transaction.
    fn next_record(
        c: &mut dyn Conn,
        head: &mut Option<(i64, String)>,
        r: &AccessRequest,
        e: &Entry,
    ) -> Result<AuditRecord, StoreError> {
        let (prev_seq, prev_hash) = match head.take() {
            Some(h) => h,
            None => {
                let last = c.query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?;
                match last.first() {
                    Some(row) => (row[0].int()?, row[1].text()?),
                    None => (0, GENESIS.to_string()),
                }
            }
        };
        let (event, actor, reason, from, to, at) = match e {
            Entry::Transition(t) => (
                t.action.event(),
                t.actor.clone(),
                t.reason.clone(),
                t.from.map(|s| s.as_str().to_string()),
                Some(t.to.as_str().to_string()),
                t.at,
            ),
            Entry::Note(n) => (
                n.event.clone(),
                n.actor.clone(),
                n.reason.clone(),
                None,
                None,
                n.at,
            ),
        };
        // The requester acting on their own request: a service account
        // (pipeline) is marked as such. Usernames are unique in a realm.
        let actor_client = r
            .requester_client()
            .filter(|_| actor == r.requester_username())
            .map(str::to_string);
        let mut rec = AuditRecord {
            seq: prev_seq + 1,
            at,
            event,
            request_id: r.id().to_string(),
            entitlement_id: r.entitlement_id().to_string(),
            requester_id: r.requester_id().to_string(),
            actor,
            actor_client,
            reason,
            from_status: from,
            to_status: to,
            prev_hash,
            hash: String::new(),
        };
        rec.hash = rec.compute_hash();
        *head = Some((rec.seq, rec.hash.clone()));
        Ok(rec)
    }

    fn notify(&self, c: &mut dyn Conn, recs: &[AuditRecord]) -> Result<(), StoreError> {
        if let (Dialect::Postgres, Some(last)) = (self.db.dialect(), recs.last()) {
            c.exec(
                &format!("SELECT pg_notify('{}', ?)", postgres::CHANNEL),
                &[P::from(self.announcement(last.seq))],
            )?;
        }
        Ok(())
    }

    /// The `NOTIFY` payload that announces the audit rows up to `seq`:
    /// delivered at commit to every replica's listener, this one's too
    /// (which knows its own by the origin).
    fn announcement(&self, seq: i64) -> String {
        match self.db.origin() {
            Some(origin) => format!("{seq} {origin}"),
            None => seq.to_string(),
        }
    }

    fn insert_in(
        &self,
        c: &mut dyn Conn,
        head: &mut Option<(i64, String)>,
        r: &AccessRequest,
        transitions: Vec<Transition>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let stored = Stored {
            request: r.clone(),
            grant: GrantState::default(),
        };
        Self::save(c, &stored, None)?;
        let mut recs = Vec::new();
        for t in transitions {
            recs.push(self.append(c, head, r, &t.into())?);
        }
        Ok(recs)
    }

    /// Maps the unique index on pending requests to the domain's answer.
    fn duplicate_pending(&self, r: &AccessRequest, e: StoreError) -> StoreError {
        if !matches!(e, StoreError::Unique(_)) {
            return e;
        }
        let existing = self
            .db
            .reader()
            .and_then(|mut c| match r.kind() {
                jit_core::RequestKind::Extension { grant_id } => c.query(
                    "SELECT id FROM requests WHERE extends = ? AND pending_slot = 1",
                    &[P::from(grant_id.as_str())],
                ),
                _ => c.query(
                    "SELECT id FROM requests WHERE requester_id = ? AND entitlement_id = ? AND pending_slot = 1 AND extends IS NULL",
                    &[P::from(r.requester_id()), P::from(r.entitlement_id())],
                ),
            })
            .ok()
            .and_then(|rows| rows.first().and_then(|row| row[0].text().ok()))
            .unwrap_or_default();
        match r.kind() {
            jit_core::RequestKind::Extension { grant_id } => {
                DomainError::DuplicatePendingExtension {
                    grant_id: grant_id.clone(),
                    existing,
                }
                .into()
            }
            _ => DomainError::DuplicatePending(r.entitlement_id().to_string(), existing).into(),
        }
    }

    /// Inserts a new request with its creation transitions, atomically.
    ///
    /// Errors: [`DomainError::DuplicatePending`] when the requester already
    /// has a pending access request for the entitlement, or the grant an
    /// extension extends already has a pending extension (unique indexes,
    /// so it holds for parallel requests and several replicas).
    pub fn insert(
        &self,
        r: &AccessRequest,
        transitions: Vec<Transition>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.write(|c| {
            let recs = self.insert_in(c, &mut None, r, transitions)?;
            self.notify(c, &recs)?;
            Ok(recs)
        })
        .map_err(|e| self.duplicate_pending(r, e))
    }

    /// Inserts request `r` and, in the same transaction, updates it and
    /// request `other` with `f`: e.g. an auto-approved extension and the
    /// grant whose end it moves. A crash leaves both or neither.
    pub fn insert_then_update<F>(
        &self,
        r: &AccessRequest,
        transitions: Vec<Transition>,
        other: &str,
        f: F,
    ) -> Result<(Stored, Stored, Vec<AuditRecord>), StoreError>
    where
        F: FnOnce(&mut Stored, &mut Stored) -> Result<(Vec<Entry>, Vec<Entry>), DomainError>,
    {
        self.write(|c| {
            let head = &mut None;
            let mut recs = self.insert_in(c, head, r, transitions)?;
            let mut n = Stored {
                request: r.clone(),
                grant: GrantState::default(),
            };
            let (mut o, o0) = self.get_for_update(c, other)?;
            let n0 = UpdatedColumns::of(&n).as_row();
            let (en, eo) = f(&mut n, &mut o)?;
            Self::save(c, &n, Some(&n0))?;
            Self::save(c, &o, Some(&o0))?;
            for e in &en {
                recs.push(self.append(c, head, &n.request, e)?);
            }
            for e in &eo {
                recs.push(self.append(c, head, &o.request, e)?);
            }
            self.notify(c, &recs)?;
            Ok((n, o, recs))
        })
        .map_err(|e| self.duplicate_pending(r, e))
    }

    /// Request `id` (locked for this transaction on PostgreSQL), with its
    /// row as read (the [`UPDATED_COLS`] from column 2 on, for `save`).
    fn get_for_update(&self, c: &mut dyn Conn, id: &str) -> Result<(Stored, Row), StoreError> {
        let lock = match self.db.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        };
        let mut rows = c.query(
            &format!("SELECT body, grant_state, {UPDATED_COLS} FROM requests WHERE id = ?{lock}"),
            &[P::from(id)],
        )?;
        match rows.pop() {
            Some(row) => Ok((Self::row_to_stored(&row)?, row)),
            None => Err(DomainError::NotFound.into()),
        }
    }

    /// Loads request `id`, applies `f` to it and its grant state, and saves
    /// both plus the entries `f` returns as audit rows — all in one
    /// transaction. If `f` fails nothing is written.
    pub fn update<F>(&self, id: &str, f: F) -> Result<(Stored, Vec<AuditRecord>), StoreError>
    where
        F: FnOnce(&mut Stored) -> Result<Vec<Entry>, DomainError>,
    {
        self.write(|c| {
            let (mut s, before) = self.get_for_update(c, id)?;
            let entries = f(&mut s)?;
            Self::save(c, &s, Some(&before))?;
            let (mut recs, head) = (Vec::new(), &mut None);
            for e in &entries {
                recs.push(self.append(c, head, &s.request, e)?);
            }
            self.notify(c, &recs)?;
            Ok((s, recs))
        })
    }

    /// Like [`update`](Self::update) for two requests at once (an extension
    /// and the grant it extends), in one transaction.
    pub fn update_pair<F>(
        &self,
        a: &str,
        b: &str,
        f: F,
    ) -> Result<(Stored, Stored, Vec<AuditRecord>), StoreError>
    where
        F: FnOnce(&mut Stored, &mut Stored) -> Result<(Vec<Entry>, Vec<Entry>), DomainError>,
    {
        self.write(|c| {
            // Rows are locked in id order, as everywhere (no lock-order
            // deadlock with claim releases, which take no audit lock).
            let ((mut sa, a0), (mut sb, b0)) = if a <= b {
                let sa = self.get_for_update(c, a)?;
                (sa, self.get_for_update(c, b)?)
            } else {
                let sb = self.get_for_update(c, b)?;
                (self.get_for_update(c, a)?, sb)
            };
            let (ea, eb) = f(&mut sa, &mut sb)?;
            Self::save(c, &sa, Some(&a0))?;
            Self::save(c, &sb, Some(&b0))?;
            let (mut recs, head) = (Vec::new(), &mut None);
            for e in &ea {
                recs.push(self.append(c, head, &sa.request, e)?);
            }
            for e in &eb {
                recs.push(self.append(c, head, &sb.request, e)?);
            }
            self.notify(c, &recs)?;
            Ok((sa, sb, recs))
        })
    }

    /// Applies `f` to each request of `ids` in one transaction (one disk
    /// sync for all): each request is saved with its audit rows, or — if
    /// `f` refuses it (e.g. another path changed it first) — left as it was
    /// while the others are still saved. Requests are taken in id order
    /// (each once; ids that do not exist are skipped). Returns the ids that
    /// changed and all audit rows written, in order.
    ///
    /// A fixed number of round trips for the whole batch on PostgreSQL:
    /// one statement locks and reads every row with the audit chain's head,
    /// one writes every changed row with its audit rows and their
    /// `NOTIFY`, one more for new votes; with webhooks configured, one per
    /// audit row and endpoint for the outbox.
    pub fn update_each<F>(
        &self,
        ids: &[String],
        f: F,
    ) -> Result<(Vec<String>, Vec<AuditRecord>), StoreError>
    where
        F: FnMut(&mut Stored) -> Result<Vec<Entry>, DomainError>,
    {
        self.update_each_releasing(ids, None, f)
    }

    /// [`SqlStore::update_each`] that also gives back `owner`'s claims
    /// ([`SqlStore::claim_due`]) on the requests of `release` it changes,
    /// in the same statement (`release`: `(owner, ids)`): the scheduler's
    /// last write of an item ends its claim with it, instead of in a
    /// transaction of its own afterwards ([`SqlStore::release_many`]). A
    /// request whose change is refused keeps its claim.
    pub fn update_each_releasing<F>(
        &self,
        ids: &[String],
        release: Option<(&str, &HashSet<String>)>,
        mut f: F,
    ) -> Result<(Vec<String>, Vec<AuditRecord>), StoreError>
    where
        F: FnMut(&mut Stored) -> Result<Vec<Entry>, DomainError>,
    {
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        self.write(|c| {
            let (changed, recs) = self.update_each_in(c, ids, release, &mut f, true)?;
            if self.db.dialect() != Dialect::Postgres {
                // (On PostgreSQL the write itself announced the rows.)
                self.notify(c, &recs)?;
            }
            Ok((changed, recs))
        })
    }

    /// [`SqlStore::update_each`] inside the caller's write transaction;
    /// with `announce`, on PostgreSQL, the rows' `NOTIFY` too (in the
    /// statement that writes them).
    ///
    /// On PostgreSQL a batch is four round trips with the transaction's
    /// `BEGIN` and `COMMIT`: the rows are locked and read with the audit
    /// chain's head (the caller holds the chain's lock, so it stays the
    /// head), and the changed rows, their audit rows and the `NOTIFY` are
    /// one statement; new votes add one, and with webhooks configured the
    /// outbox adds one per audit row and endpoint.
    fn update_each_in(
        &self,
        c: &mut dyn Conn,
        ids: &[String],
        release: Option<(&str, &HashSet<String>)>,
        f: &mut dyn FnMut(&mut Stored) -> Result<Vec<Entry>, DomainError>,
        announce: bool,
    ) -> Result<(Vec<String>, Vec<AuditRecord>), StoreError> {
        let pg = self.db.dialect() == Dialect::Postgres;
        let list = self.id_list();
        let json = ids_json(ids);
        {
            let rows = if pg {
                c.query(
                    &format!(
                        "SELECT r.body, r.grant_state, h.seq, h.hash FROM requests r
                         LEFT JOIN LATERAL (SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1) h ON true
                         WHERE r.id{list} ORDER BY r.id FOR UPDATE OF r"
                    ),
                    &[P::from(&json)],
                )?
            } else {
                c.query(
                    &format!(
                        "SELECT body, grant_state, {UPDATED_COLS} FROM requests WHERE id{list} ORDER BY id"
                    ),
                    &[P::from(&json)],
                )?
            };
            let mut changed = Vec::new();
            let mut saved = Vec::new();
            let mut recs = Vec::new();
            let head = &mut None;
            if let (true, Some(first)) = (pg, rows.first()) {
                *head = Some(match &first[2] {
                    V::Null => (0, GENESIS.to_string()),
                    seq => (seq.int()?, first[3].text()?),
                });
            }
            for row in &rows {
                let mut s = Self::row_to_stored(row)?;
                let votes = s.request.votes().len();
                let Ok(entries) = f(&mut s) else {
                    continue;
                };
                if pg {
                    for e in &entries {
                        recs.push((Self::next_record(c, head, &s.request, e)?, saved.len()));
                    }
                    saved.push((s, votes));
                } else {
                    Self::save(c, &s, Some(row))?;
                    for e in &entries {
                        let rec = self.append(c, head, &s.request, e)?;
                        recs.push((rec, 0));
                    }
                    changed.push(s.request.id().to_string());
                }
            }
            if let (false, Some((owner, which))) = (pg, release) {
                let mine: Vec<String> = changed
                    .iter()
                    .filter(|id| which.contains(*id))
                    .cloned()
                    .collect();
                if !mine.is_empty() {
                    c.exec(
                        &format!(
                            "UPDATE requests SET claimed_by = NULL, claim_until = NULL WHERE id{list} AND claimed_by = ?"
                        ),
                        &[P::from(ids_json(&mine)), P::from(owner)],
                    )?;
                }
            }
            if pg && !saved.is_empty() {
                let announcement = match (announce, recs.last()) {
                    (true, Some((last, _))) => Some(self.announcement(last.seq)),
                    _ => None,
                };
                Self::save_existing_pg(
                    c,
                    &saved,
                    release,
                    recs.iter().map(|(r, _)| r),
                    announcement,
                )?;
                for (rec, i) in &recs {
                    self.enqueue(c, rec, &saved[*i].0.request)?;
                }
                changed = saved
                    .iter()
                    .map(|(s, _)| s.request.id().to_string())
                    .collect();
            }
            let recs: Vec<AuditRecord> = recs.into_iter().map(|(r, _)| r).collect();
            Ok((changed, recs))
        }
    }

    /// Saves requests that exist already, on PostgreSQL, with the audit
    /// rows `recs` (made by [`SqlStore::next_record`], in chain order) and,
    /// with `announcement`, the `NOTIFY` of them, in one statement (and
    /// one more for the votes added: `(stored, votes it had when read)`;
    /// votes are only ever added).
    ///
    /// `release`: `(owner, ids)` — of these requests, those `owner` has
    /// claimed are unclaimed in the same statement.
    fn save_existing_pg<'a>(
        c: &mut dyn Conn,
        saved: &[(Stored, usize)],
        release: Option<(&str, &HashSet<String>)>,
        recs: impl Iterator<Item = &'a AuditRecord>,
        announcement: Option<String>,
    ) -> Result<(), StoreError> {
        let ids: Vec<String> = saved
            .iter()
            .map(|(s, _)| s.request.id().to_string())
            .collect();
        let rows: Vec<serde_json::Value> = saved
            .iter()
            .map(|(s, _)| {
                let r = &s.request;
                let cols = UpdatedColumns::of(s);
                serde_json::json!({
                    "id": r.id(),
                    "status": cols.status,
                    "start_at": cols.start_at,
                    "expires_at": cols.expires_at,
                    "body": serde_json::to_string(r).expect("request serialises"),
                    "grant_state": serde_json::to_string(&s.grant).expect("grant state serialises"),
                    "removal_pending": cols.removal,
                    "next_attempt_at": cols.next_attempt_at,
                    "review_open": cols.review_open,
                    "release_by": release
                        .filter(|(_, which)| which.contains(r.id()))
                        .map(|(owner, _)| owner),
                })
            })
            .collect();
        // The same columns as `save` changes on a conflict.
        const UPDATE: &str = "UPDATE requests AS q SET status = x.status, start_at = x.start_at, expires_at = x.expires_at,
               body = x.body, grant_state = x.grant_state, removal_pending = x.removal_pending,
               next_attempt_at = x.next_attempt_at, review_open = x.review_open,
               pending_slot = CASE WHEN x.status = 'pending' THEN q.pending_slot ELSE 0 END,
               claimed_by = CASE WHEN q.claimed_by = x.release_by THEN NULL ELSE q.claimed_by END,
               claim_until = CASE WHEN q.claimed_by = x.release_by THEN NULL ELSE q.claim_until END
             FROM jsonb_to_recordset(?::text::jsonb) AS x(id text, status text, start_at text, expires_at text,
               body text, grant_state text, removal_pending bigint, next_attempt_at text, review_open bigint,
               release_by text)
             WHERE q.id = x.id
               AND q.id = ANY(ARRAY(SELECT jsonb_array_elements_text(?::text::jsonb)))";
        // The ids again, as a list the planner reads through the index
        // (joined with the record set alone, it scans the whole table:
        // see `SqlStore::id_list`).
        let mut params = vec![
            P::from(serde_json::Value::Array(rows).to_string()),
            P::from(ids_json(&ids)),
        ];
        let audit_rows = Self::audit_rows_json(recs);
        match (audit_rows, announcement) {
            (None, _) => {
                c.exec(UPDATE, &params)?;
            }
            // Data-modifying statements in `WITH` all run, on one snapshot
            // (PostgreSQL manual, 7.8.4); the two touch different tables.
            (Some(audit), announcement) => {
                params.push(P::from(audit));
                let notify = match announcement {
                    Some(payload) => {
                        params.push(P::from(payload));
                        format!("pg_notify('{}', ?)", postgres::CHANNEL)
                    }
                    None => "NULL".to_string(),
                };
                c.query(
                    &format!(
                        "WITH u AS ({UPDATE} RETURNING 1), a AS ({INSERT_AUDIT_PG} RETURNING 1)
                         SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM a), {notify}"
                    ),
                    &params,
                )?;
            }
        }
        let votes: Vec<serde_json::Value> = saved
            .iter()
            .flat_map(|(s, before)| {
                s.request.votes().iter().skip(*before).map(|v| {
                    serde_json::json!({"request_id": s.request.id(), "approver_id": v.approver_id})
                })
            })
            .collect();
        if !votes.is_empty() {
            c.exec(
                "INSERT INTO request_votes (request_id, approver_id)
                 SELECT request_id, approver_id FROM jsonb_to_recordset(?::text::jsonb) AS x(request_id text, approver_id text)
                 ON CONFLICT DO NOTHING",
                &[P::from(serde_json::Value::Array(votes).to_string())],
            )?;
        }
        Ok(())
    }

    /// The audit rows `recs` as the JSON array [`INSERT_AUDIT_PG`] takes
    /// (`None` if there are none).
    fn audit_rows_json<'a>(recs: impl Iterator<Item = &'a AuditRecord>) -> Option<String> {
        let rows: Vec<serde_json::Value> = recs
            .map(|rec| {
                serde_json::json!({
                    "seq": rec.seq,
                    "at": ts(rec.at),
                    "event": rec.event.as_str(),
                    "request_id": rec.request_id,
                    "entitlement_id": rec.entitlement_id,
                    "requester_id": rec.requester_id,
                    "actor": rec.actor,
                    "reason": rec.reason,
                    "from_status": rec.from_status,
                    "to_status": rec.to_status,
                    "prev_hash": rec.prev_hash,
                    "hash": rec.hash,
                    "actor_client": rec.actor_client,
                })
            })
            .collect();
        (!rows.is_empty()).then(|| serde_json::Value::Array(rows).to_string())
    }

    /// ` IN (SELECT …)` (SQLite) or ` = ANY(ARRAY(SELECT …))`
    /// (PostgreSQL), to follow a column: "is one of the ids of one
    /// JSON-array text parameter (`?`)", so a set of ids is one statement
    /// with one parameter on both engines.
    ///
    /// On PostgreSQL, `col IN (SELECT jsonb_array_elements_text(…))` is
    /// planned for 100 ids (the planner's guess for a set-returning
    /// function) and, on a table of a few thousand rows, as a hash join
    /// over a sequential scan of the whole table — for a group commit of
    /// two requests. `= ANY(ARRAY(…))` is planned as an index scan.
    fn id_list(&self) -> &'static str {
        match self.db.dialect() {
            Dialect::Sqlite => " IN (SELECT value FROM json_each(?))",
            Dialect::Postgres => " = ANY(ARRAY(SELECT jsonb_array_elements_text(?::text::jsonb)))",
        }
    }

    /// Makes every request waiting out a retry backoff due now (Keycloak
    /// answered again after an outage: nothing should wait for its own
    /// timer). Returns how many were waiting.
    pub fn clear_backoff(&self) -> Result<usize, StoreError> {
        self.write(|c| {
            let ids = c
                .query(
                    "SELECT id FROM requests WHERE next_attempt_at IS NOT NULL ORDER BY id",
                    &[],
                )?
                .iter()
                .map(|r| r[0].text())
                .collect::<Result<Vec<_>, _>>()?;
            if ids.is_empty() {
                return Ok(0);
            }
            // Written like a group commit: a fixed number of statements
            // for any number of waiting requests.
            let (changed, _) = self.update_each_in(
                c,
                &ids,
                None,
                &mut |s| {
                    if s.grant.next_attempt_at.is_none() {
                        return Err(DomainError::NotFound);
                    }
                    s.grant.next_attempt_at = None;
                    Ok(vec![])
                },
                false,
            )?;
            // Wake the other replicas' schedulers too.
            if !changed.is_empty() && self.shared() {
                c.exec(
                    &format!("SELECT pg_notify('{}', '0')", postgres::CHANNEL),
                    &[],
                )?;
            }
            Ok(changed.len())
        })
    }

    /// The requests of `ids` that exist, in the order given, read in one
    /// statement (one round trip for the scheduler's whole tick).
    pub fn get_many(&self, ids: &[String]) -> Result<Vec<Stored>, StoreError> {
        Ok(self
            .read_many(&mut *self.db.reader()?, ids)?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    /// `(id, request)` of each of `ids` that exists, in the order given,
    /// from one statement on `c`.
    fn read_many(
        &self,
        c: &mut dyn Conn,
        ids: &[String],
    ) -> Result<Vec<(String, Stored)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = c.query(
            &format!(
                "SELECT id, body, grant_state FROM requests WHERE id{}",
                self.id_list()
            ),
            &[P::from(ids_json(ids))],
        )?;
        let mut by_id = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            by_id.insert(row[0].text()?, Self::row_to_stored(&row[1..].to_vec())?);
        }
        Ok(ids
            .iter()
            .filter_map(|id| by_id.remove(id).map(|s| (id.clone(), s)))
            .collect())
    }

    /// What the scheduler needs to work on each request of `ids` (those
    /// that exist, in the order given): the request, and
    /// [`active_ownership`](Self::active_ownership) of its assignment by
    /// the user's other active grants. Two statements for all of them.
    pub fn work_views(&self, ids: &[String]) -> Result<Vec<WorkView>, StoreError> {
        let mut c = self.db.reader()?;
        let found = self.read_many(&mut *c, ids)?;
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let mut users: Vec<String> = found
            .iter()
            .map(|(_, s)| s.request.requester_id().to_string())
            .collect();
        users.sort();
        users.dedup();
        // The users' active grants: (user, target) → [(id, owns)].
        let rows = c.query(
            &format!(
                "SELECT id, requester_id, target, grant_state FROM requests WHERE status = 'active' AND extends IS NULL AND requester_id{}",
                self.id_list()
            ),
            &[P::from(ids_json(&users))],
        )?;
        let mut active: std::collections::HashMap<(String, String), Vec<(String, bool)>> =
            Default::default();
        for row in &rows {
            let grant: GrantState = serde_json::from_str(&row[3].text()?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            active
                .entry((row[1].text()?, row[2].text()?))
                .or_default()
                .push((row[0].text()?, grant.owns_assignment.unwrap_or(true)));
        }
        Ok(found
            .into_iter()
            .map(|(id, stored)| {
                let key = (
                    stored.request.requester_id().to_string(),
                    target_key(stored.request.target()),
                );
                // As `active_ownership_in`: any other active grant that
                // owns it, else `Some(false)` if there is one at all.
                let others_own = active
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter(|(other, _)| *other != id)
                    .fold(None, |acc: Option<bool>, (_, owns)| {
                        Some(acc.unwrap_or(false) || *owns)
                    });
                WorkView { stored, others_own }
            })
            .collect())
    }

    /// One request by id.
    pub fn get(&self, id: &str) -> Result<Option<Stored>, StoreError> {
        let rows = self.db.reader()?.query(
            "SELECT body, grant_state FROM requests WHERE id = ?",
            &[P::from(id)],
        )?;
        rows.first().map(Self::row_to_stored).transpose()
    }

    /// One page of requests the viewer may see, newest first (by
    /// `created_at`, then id), filtered in SQL. Exact for any store size:
    /// each branch of the visibility rule walks its own index range, and
    /// the branches are merged in order.
    pub fn list(&self, q: &ListQuery) -> Result<Page, StoreError> {
        let limit = q.limit.max(1);
        let v = &q.viewer;
        // Conditions every branch shares.
        let mut common = String::new();
        let mut common_p: Vec<P> = Vec::new();
        if let Some(s) = q.status {
            common.push_str(" AND status = ?");
            common_p.push(P::from(s.as_str()));
        }
        if q.review_open {
            common.push_str(" AND review_open = 1");
        }
        if let Some(pre) = &q.id_prefix {
            common.push_str(" AND id >= ? AND id < ?");
            common_p.push(P::from(pre));
            common_p.push(P::from(format!("{pre}\u{10FFFF}")));
        }
        if let Some(c) = &q.after {
            common.push_str(" AND (created_at < ? OR (created_at = ? AND id < ?))");
            common_p.push(P::from(ts(c.created_at)));
            common_p.push(P::from(ts(c.created_at)));
            common_p.push(P::from(&c.id));
        }
        // Branches of the visibility rule: disjoint, each on an index.
        let mut branches: Vec<(String, Vec<P>)> = Vec::new();
        let me = || P::from(&v.user_id);
        let ents: Vec<(String, Vec<P>)> = if v.approves.len() <= MAX_BRANCHES {
            v.approves
                .iter()
                .map(|e| ("entitlement_id = ?".to_string(), vec![P::from(e)]))
                .collect()
        } else {
            vec![(
                format!(
                    "entitlement_id IN ({})",
                    vec!["?"; v.approves.len()].join(", ")
                ),
                v.approves.iter().map(P::from).collect(),
            )]
        };
        if q.to_review {
            for (cond, ps) in &ents {
                let mut p1 = ps.clone();
                p1.extend([me(), me()]);
                branches.push((
                    format!("{cond} AND status = 'pending' AND requester_id <> ? AND NOT EXISTS (SELECT 1 FROM request_votes rv WHERE rv.request_id = requests.id AND rv.approver_id = ?)"),
                    p1,
                ));
                let mut p2 = ps.clone();
                p2.push(me());
                branches.push((
                    format!(
                        "{cond} AND review_open = 1 AND status <> 'pending' AND requester_id <> ?"
                    ),
                    p2,
                ));
            }
        } else if q.mine {
            branches.push(("requester_id = ?".into(), vec![me()]));
        } else if v.auditor {
            branches.push(("1 = 1".into(), vec![]));
        } else {
            branches.push(("requester_id = ?".into(), vec![me()]));
            for (cond, ps) in &ents {
                let mut p = ps.clone();
                p.push(me());
                branches.push((format!("{cond} AND requester_id <> ?"), p));
            }
        }
        if branches.is_empty() {
            return Ok(Page::default());
        }
        let take = (limit + 1) as i64;
        let mut params = Vec::new();
        let sql = if branches.len() == 1 {
            let (cond, ps) = branches.pop().expect("one branch");
            params.extend(ps);
            params.extend(common_p);
            params.push(P::from(take));
            format!(
                "SELECT {REQUEST_COLS}, created_at, id FROM requests WHERE {cond}{common} ORDER BY created_at DESC, id DESC LIMIT ?"
            )
        } else {
            let mut parts = Vec::new();
            for (i, (cond, ps)) in branches.into_iter().enumerate() {
                params.extend(ps);
                params.extend(common_p.iter().cloned());
                params.push(P::from(take));
                parts.push(format!(
                    "SELECT id, created_at FROM (SELECT id, created_at FROM requests WHERE {cond}{common} ORDER BY created_at DESC, id DESC LIMIT ?) AS b{i}"
                ));
            }
            params.push(P::from(take));
            format!(
                "SELECT r.body, r.grant_state, r.created_at, r.id FROM ({} ORDER BY 2 DESC, 1 DESC LIMIT ?) AS u JOIN requests r ON r.id = u.id ORDER BY r.created_at DESC, r.id DESC",
                parts.join(" UNION ALL ")
            )
        };
        let rows = self.db.reader()?.query(&sql, &params)?;
        let mut items = Vec::with_capacity(rows.len().min(limit));
        let mut next = None;
        for (i, row) in rows.iter().enumerate() {
            if i == limit {
                let last = &rows[i - 1];
                next = Some(Cursor {
                    created_at: parse_ts(&last[2].text()?)?,
                    id: last[3].text()?,
                });
                break;
            }
            items.push(Self::row_to_stored(row)?);
        }
        Ok(Page { items, next })
    }

    /// The user's requests that may have something in Keycloak now or soon:
    /// approved, active, or ended with the removal still pending. For the
    /// grant ends jitd writes on the user (`grant_ends`).
    pub fn user_grants_in_keycloak(&self, user_id: &str) -> Result<Vec<Stored>, StoreError> {
        let rows = self.db.reader()?.query(
            "SELECT body, grant_state FROM requests WHERE requester_id = ? AND (status IN ('approved', 'active') OR removal_pending = 1) ORDER BY created_at, id",
            &[P::from(user_id)],
        )?;
        rows.iter().map(Self::row_to_stored).collect()
    }

    /// Pending extensions whose grant is no longer active (it expired, was
    /// dropped or revoked): nobody can approve them any more.
    pub fn orphaned_extensions(&self) -> Result<Vec<String>, StoreError> {
        let rows = self.db.reader()?.query(
            "SELECT r.id FROM requests r JOIN requests g ON g.id = r.extends WHERE r.status = 'pending' AND g.status <> 'active' ORDER BY r.created_at, r.id",
            &[],
        )?;
        rows.iter().map(|r| r[0].text()).collect()
    }

    /// Every active grant (not extension) of `user_id`, whatever its target.
    pub fn active_grants_of(&self, user_id: &str) -> Result<Vec<Stored>, StoreError> {
        let rows = self.db.reader()?.query(
            "SELECT body, grant_state FROM requests WHERE requester_id = ? AND status = 'active' AND extends IS NULL ORDER BY created_at, id",
            &[P::from(user_id)],
        )?;
        rows.iter().map(Self::row_to_stored).collect()
    }

    /// Every active grant (not extension), as who holds it: the request id,
    /// the requester's Keycloak id and username, the soonest to end first.
    /// For the
    /// check of active grants against Keycloak's disabled users
    /// (`scheduler::end_open_requests_of_disabled_requesters`); read through an
    /// index on the status, never a scan of all requests.
    pub fn active_grant_holders(&self) -> Result<Vec<GrantHolder>, StoreError> {
        let rows = self.db.reader()?.query(
            "SELECT id, requester_id, body FROM requests WHERE status = 'active' AND extends IS NULL ORDER BY expires_at, id",
            &[],
        )?;
        rows.iter().map(Self::row_to_holder).collect()
    }

    /// Whether any access request waits for a decision or its start
    /// (`pending` or `approved`, not an extension): read through the
    /// status index.
    pub fn any_waiting_request(&self) -> Result<bool, StoreError> {
        let rows = self.db.reader()?.query(
            "SELECT 1 FROM requests WHERE status IN ('pending', 'approved') AND extends IS NULL LIMIT 1",
            &[],
        )?;
        Ok(!rows.is_empty())
    }

    /// The access requests of `user_ids` (Keycloak user ids) that wait for
    /// a decision or their start (`pending`, `approved`; not extensions,
    /// which end with their grant), by id, with their requester: for the
    /// check against Keycloak's disabled users
    /// (`scheduler::end_open_requests_of_disabled_requesters`). Read through the
    /// requester index, one statement for any number of users.
    pub fn waiting_requests_of(&self, user_ids: &[String]) -> Result<Vec<GrantHolder>, StoreError> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.db.reader()?.query(
            &format!(
                "SELECT id, requester_id, body FROM requests WHERE requester_id{} AND status IN ('pending', 'approved') AND extends IS NULL ORDER BY id",
                self.id_list()
            ),
            &[P::from(ids_json(user_ids))],
        )?;
        rows.iter().map(Self::row_to_holder).collect()
    }

    fn row_to_holder(r: &Row) -> Result<GrantHolder, StoreError> {
        let request: AccessRequest =
            serde_json::from_str(&r[2].text()?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(GrantHolder {
            id: r[0].text()?,
            requester_id: r[1].text()?,
            requester_username: request.requester_username().to_string(),
        })
    }

    /// Active grants of `target` to `user_id`, other than `except`.
    pub fn other_active_grants(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        except: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self.db.reader()?.query(
            "SELECT id FROM requests WHERE requester_id = ? AND target = ? AND status = 'active' AND extends IS NULL AND id <> ?",
            &[P::from(user_id), P::from(target_key(target)), P::from(except)],
        )?;
        rows.iter().map(|r| r[0].text()).collect()
    }

    /// Whether JIT currently owns the assignment of `target` to `user_id`
    /// through some active grant (other than `except`): `Some(owns)` if any
    /// active grant exists.
    pub fn active_ownership(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        except: &str,
    ) -> Result<Option<bool>, StoreError> {
        Self::active_ownership_in(&mut *self.db.reader()?, user_id, target, except)
    }

    /// [`active_ownership`](Self::active_ownership) on connection `c`.
    fn active_ownership_in(
        c: &mut dyn Conn,
        user_id: &str,
        target: &EntitlementKind,
        except: &str,
    ) -> Result<Option<bool>, StoreError> {
        let rows = c.query(
            "SELECT body, grant_state FROM requests WHERE requester_id = ? AND target = ? AND status = 'active' AND extends IS NULL AND id <> ?",
            &[P::from(user_id), P::from(target_key(target)), P::from(except)],
        )?;
        let mut result = None;
        for row in &rows {
            let s = Self::row_to_stored(row)?;
            let owns = s.grant.owns_assignment.unwrap_or(true);
            result = Some(result.unwrap_or(false) || owns);
        }
        Ok(result)
    }

    /// Usernames whose Keycloak assignment of `target` is owned by an
    /// active JIT grant (`owns_assignment = true`: jitd made it and removes
    /// it when the last such grant ends), sorted, without repeats. Used by
    /// `check-policy` to tell JIT holders from standing ones.
    pub fn jit_owned_holders(&self, target: &EntitlementKind) -> Result<Vec<String>, StoreError> {
        let rows = self.db.reader()?.query(
            "SELECT body, grant_state FROM requests WHERE target = ? AND status = 'active' AND extends IS NULL",
            &[P::from(target_key(target))],
        )?;
        let mut names = std::collections::BTreeSet::new();
        for row in &rows {
            let s = Self::row_to_stored(row)?;
            if s.grant.owns_assignment == Some(true) {
                names.insert(s.request.requester_username().to_string());
            }
        }
        Ok(names.into_iter().collect())
    }

    /// What is due at `now`: pending requests past their TTL, active grants
    /// past `expires_at`, approved access requests whose start has come, and
    /// ended grants still to be removed from Keycloak (respecting backoff).
    pub fn due(&self, now: DateTime<Utc>) -> Result<DueWork, StoreError> {
        let mut c = self.db.reader()?;
        let n = ts(now);
        // Each `?` is `now`.
        let mut ids = |sql: &str| -> Result<Vec<String>, StoreError> {
            let params = vec![P::from(&n); sql.matches('?').count()];
            c.query(sql, &params)?.iter().map(|r| r[0].text()).collect()
        };
        let backoff_ok = "(next_attempt_at IS NULL OR next_attempt_at <= ?)";
        let mut w = DueWork {
            lapse: ids("SELECT id FROM requests WHERE status='pending' AND pending_until <= ?")?,
            expire: ids("SELECT id FROM requests WHERE status='active' AND expires_at <= ?")?,
            activate: ids(&format!(
                "SELECT id FROM requests WHERE status='approved' AND extends IS NULL AND (start_at IS NULL OR start_at <= ?) AND {backoff_ok}"
            ))?,
            remove: ids(&format!("SELECT id FROM requests WHERE removal_pending=1 AND {backoff_ok}"))?,
            next_due: None,
        };
        // The smallest of each kind, then of those: each branch is one
        // step down its (status, time) index, where a MIN over the union
        // of the rows reads every open grant's time (a burst of 1,000).
        let next = c.query(
            "SELECT MIN(t) FROM (
                SELECT MIN(pending_until) AS t FROM requests WHERE status='pending' AND pending_until > ?
                UNION ALL SELECT MIN(expires_at) FROM requests WHERE status='active' AND expires_at > ?
                UNION ALL SELECT MIN(start_at) FROM requests WHERE status='approved' AND start_at > ?
                UNION ALL SELECT MIN(next_attempt_at) FROM requests WHERE (removal_pending=1 OR status='approved') AND next_attempt_at > ?) AS due_times",
            &[P::from(&n), P::from(&n), P::from(&n), P::from(&n)],
        )?;
        w.next_due = next
            .first()
            .map(|r| r[0].opt_text())
            .transpose()?
            .flatten()
            .map(|s| parse_ts(&s))
            .transpose()?;
        Ok(w)
    }

    /// Claims due Keycloak work for replica `owner` until `now + lease`:
    /// of `ids`, those not claimed, whose claim has expired (a dead
    /// replica's), or already `owner`'s. Returns the ids claimed. With
    /// several replicas on one database, each grant or removal is worked on
    /// by one replica at a time; a dead replica's claims pass to another
    /// after `lease`.
    ///
    /// One statement for all of `ids`, in its own transaction without the
    /// audit chain's lock (it writes no audit row), so claims do not queue
    /// behind the replicas' request writes. On PostgreSQL a row another
    /// transaction is writing right now is skipped (`SKIP LOCKED`: not
    /// claimed this time, still due): a claim never waits for a row lock,
    /// so it can take no part in a deadlock.
    pub fn claim(
        &self,
        ids: &[String],
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let (n, until) = (ts(now), ts(now + lease));
        let lock = match self.db.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE requests SET claimed_by = ?, claim_until = ? WHERE id IN (
               SELECT id FROM requests WHERE id{} AND (claim_until IS NULL OR claim_until <= ? OR claimed_by = ?)
               ORDER BY id{lock})
             RETURNING id",
            self.id_list()
        );
        let json = ids_json(ids);
        let got: HashSet<String> = self.write_unchained(|c| {
            c.query(
                &sql,
                &[
                    P::from(owner),
                    P::from(&until),
                    P::from(&json),
                    P::from(&n),
                    P::from(owner),
                ],
            )?
            .iter()
            .map(|r| r[0].text())
            .collect()
        })?;
        let mut seen = HashSet::new();
        Ok(ids
            .iter()
            .filter(|id| got.contains(*id) && seen.insert(*id))
            .cloned()
            .collect())
    }

    /// Claims due Keycloak work for replica `owner` like [`SqlStore::claim`],
    /// but at most `limit` of `ids` — what this replica can start soon —
    /// so that the replicas share a burst instead of the first to look
    /// taking all of it. Removals (`removal_pending`) are claimed before
    /// grants, each kind in id order. A grant is not claimed while another
    /// request of the same user and Keycloak target has a removal due that
    /// is not `owner`'s live claim (another replica works on it, or nobody
    /// claimed it yet): a grant and a removal of one assignment are then
    /// never worked on by two replicas at once (the per-assignment order of
    /// the scheduler: removals first). Returns the ids claimed, in the
    /// order of `ids`.
    ///
    /// One statement in its own transaction without the audit chain's lock;
    /// on PostgreSQL rows another transaction holds are skipped (`SKIP
    /// LOCKED`: two replicas claiming at once get disjoint sets, and a
    /// claim never waits for a row lock), and a claim of a replica found
    /// dead (`jit_replicas.gone_at`, see [`SqlStore::follow_alive`]) is
    /// taken over without waiting for its lease.
    pub fn claim_due(
        &self,
        ids: &[String],
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() || limit == 0 {
            return Ok(vec![]);
        }
        let (n, until) = (ts(now), ts(now + lease));
        let (lock, gone) = match self.db.dialect() {
            // A claim of a replica found dead (its liveness lock released,
            // see `postgres`) is taken over before its lease lapses.
            Dialect::Postgres => (
                " FOR UPDATE OF r SKIP LOCKED",
                " OR r.claimed_by IN (SELECT owner FROM jit_replicas WHERE gone_at IS NOT NULL)",
            ),
            Dialect::Sqlite => ("", ""),
        };
        let sql = format!(
            "UPDATE requests SET claimed_by = ?, claim_until = ? WHERE id IN (
               SELECT r.id FROM requests r WHERE r.id{}
                 AND (r.claim_until IS NULL OR r.claim_until <= ? OR r.claimed_by = ?{gone})
                 AND (r.removal_pending = 1 OR NOT EXISTS (
                   SELECT 1 FROM requests o WHERE o.requester_id = r.requester_id AND o.target = r.target
                     AND o.id <> r.id AND o.removal_pending = 1
                     AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= ?)
                     AND (o.claimed_by IS NULL OR o.claimed_by <> ? OR o.claim_until IS NULL OR o.claim_until <= ?)))
               ORDER BY r.removal_pending DESC, r.id LIMIT ?{lock})
             RETURNING id",
            self.id_list()
        );
        let json = ids_json(ids);
        let got: HashSet<String> = self.write_unchained(|c| {
            c.query(
                &sql,
                &[
                    P::from(owner),
                    P::from(&until),
                    P::from(&json),
                    P::from(&n),
                    P::from(owner),
                    P::from(&n),
                    P::from(owner),
                    P::from(&n),
                    P::from(limit.min(i64::MAX as usize) as i64),
                ],
            )?
            .iter()
            .map(|r| r[0].text())
            .collect()
        })?;
        let mut seen = HashSet::new();
        Ok(ids
            .iter()
            .filter(|id| got.contains(*id) && seen.insert(*id))
            .cloned()
            .collect())
    }

    /// Gives up `owner`'s claim on `id` (work done or failed).
    pub fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.release_many(&[id.to_string()], owner)
    }

    /// Gives up `owner`'s claims on `ids` in one statement, in a
    /// transaction without the audit chain's lock (it writes no audit
    /// row). Rows are locked in id order, the order every transaction that
    /// locks several request rows uses, so this cannot deadlock with them.
    pub fn release_many(&self, ids: &[String], owner: &str) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let lock = match self.db.dialect() {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE requests SET claimed_by = NULL, claim_until = NULL WHERE id IN (
               SELECT id FROM requests WHERE id{} AND claimed_by = ? ORDER BY id{lock})",
            self.id_list()
        );
        let json = ids_json(ids);
        self.write_unchained(|c| c.exec(&sql, &[P::from(&json), P::from(owner)]).map(|_| ()))
    }

    /// Requests that are not over yet (pending, approved, active).
    pub fn open_requests(&self) -> Result<Vec<Stored>, StoreError> {
        let rows = self.db.reader()?.query(
            "SELECT body, grant_state FROM requests WHERE status IN ('pending', 'approved', 'active') ORDER BY created_at, id",
            &[],
        )?;
        rows.iter().map(Self::row_to_stored).collect()
    }

    fn audit_rows(rows: Vec<Row>) -> Result<Vec<AuditRecord>, StoreError> {
        rows.into_iter()
            .map(|r| {
                Ok(AuditRecord {
                    seq: r[0].int()?,
                    at: parse_ts(&r[1].text()?)?,
                    event: EventKind::from_name(&r[2].text()?),
                    request_id: r[3].text()?,
                    entitlement_id: r[4].text()?,
                    requester_id: r[5].text()?,
                    actor: r[6].text()?,
                    reason: r[7].opt_text()?,
                    from_status: r[8].opt_text()?,
                    to_status: r[9].opt_text()?,
                    prev_hash: r[10].text()?,
                    hash: r[11].text()?,
                    actor_client: r[12].opt_text()?,
                })
            })
            .collect()
    }

    /// Audit rows with `seq > after`, in order, at most `limit`.
    pub fn audit_after(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        Self::audit_rows(self.db.reader()?.query(
            "SELECT seq, at, event, request_id, entitlement_id, requester_id, actor, reason, from_status, to_status, prev_hash, hash, actor_client
             FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
            &[P::from(after), P::from(limit as i64)],
        )?)
    }

    /// Audit rows the viewer may see with `after < seq <= upto` (all after
    /// `after` when `upto` is `None`), in order, at most `limit`. Returns
    /// the rows and the position to continue from: the last row's seq when
    /// the page is full, else the highest seq examined (rows the viewer may
    /// not see are skipped for good).
    pub fn audit_visible(
        &self,
        v: &Viewer,
        after: i64,
        upto: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<AuditRecord>, i64), StoreError> {
        let mut c = self.db.reader()?;
        let upto = match upto {
            Some(u) => u,
            None => c.query("SELECT COALESCE(MAX(seq), 0) FROM audit", &[])?[0][0].int()?,
        };
        let mut sql = String::from(
            "SELECT seq, at, event, request_id, entitlement_id, requester_id, actor, reason, from_status, to_status, prev_hash, hash, actor_client
             FROM audit WHERE seq > ? AND seq <= ?",
        );
        let mut params = vec![P::from(after), P::from(upto)];
        if !v.auditor {
            sql.push_str(" AND (requester_id = ?");
            params.push(P::from(&v.user_id));
            if !v.approves.is_empty() {
                sql.push_str(&format!(
                    " OR entitlement_id IN ({})",
                    vec!["?"; v.approves.len()].join(", ")
                ));
                params.extend(v.approves.iter().map(P::from));
            }
            sql.push(')');
        }
        sql.push_str(" ORDER BY seq LIMIT ?");
        params.push(P::from(limit as i64));
        let rows = Self::audit_rows(c.query(&sql, &params)?)?;
        let cursor = if rows.len() >= limit {
            rows.last().map(|r| r.seq).unwrap_or(after)
        } else {
            upto.max(after)
        };
        Ok((rows, cursor))
    }

    /// Highest audit sequence number (0 when empty).
    pub fn last_seq(&self) -> Result<i64, StoreError> {
        self.db
            .reader()?
            .query("SELECT COALESCE(MAX(seq), 0) FROM audit", &[])?[0][0]
            .int()
    }

    /// Recomputes the whole chain.
    pub fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let mut prev = GENESIS.to_string();
        let mut rows = 0;
        let mut after = 0;
        loop {
            let batch = self.audit_after(after, 1000)?;
            if batch.is_empty() {
                break;
            }
            for rec in &batch {
                rows += 1;
                if rec.prev_hash != prev || rec.compute_hash() != rec.hash || rec.seq != after + 1 {
                    return Ok(AuditVerification {
                        ok: false,
                        rows,
                        first_bad_seq: Some(rec.seq),
                        last_hash: None,
                    });
                }
                prev = rec.hash.clone();
                after = rec.seq;
            }
        }
        Ok(AuditVerification {
            ok: true,
            rows,
            first_bad_seq: None,
            last_hash: (rows > 0).then_some(prev),
        })
    }

    /// Counts of requests by status, and grants whose revoke is late at
    /// `now` (`jit_core::lateness::revoke_late`, the same rule as the API's
    /// `revoke_late`), for metrics.
    pub fn stats(&self, now: DateTime<Utc>) -> Result<(Vec<(String, i64)>, i64), StoreError> {
        let mut c = self.db.reader()?;
        // Extensions are not grants of their own: counted apart.
        let by = c
            .query(
                "SELECT CASE WHEN extends IS NULL THEN status ELSE 'extension_' || status END AS s, COUNT(*) FROM requests GROUP BY 1",
                &[],
            )?
            .iter()
            .map(|r| Ok((r[0].text()?, r[1].int()?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Candidates (their role may still be in Keycloak, past expiry or
        // ended); jit-core decides which are late.
        let rows = c.query(
            "SELECT body, grant_state FROM requests WHERE removal_pending = 1
             UNION ALL SELECT body, grant_state FROM requests WHERE removal_pending = 2
             UNION ALL SELECT body, grant_state FROM requests WHERE status = 'active' AND expires_at <= ? AND removal_pending = 0",
            &[P::from(ts(now))],
        )?;
        let mut late = 0;
        for row in &rows {
            let s = Self::row_to_stored(row)?;
            if jit_core::lateness::revoke_late(&s.request, &s.grant, now) {
                late += 1;
            }
        }
        Ok((by, late))
    }

    /// A cheap round trip to the database (health checks).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.db.reader()?.query("SELECT 1", &[])?;
        Ok(())
    }

    /// See [`Database::follow`] (no liveness held).
    pub fn follow(&self, f: db::Follower) -> bool {
        self.db.follow(None, f)
    }

    /// [`SqlStore::follow`] that also holds `owner`'s liveness while it
    /// follows: on PostgreSQL, once this process is gone (its connection
    /// closed), other replicas take its claims over at once
    /// ([`SqlStore::claim_due`]) instead of when their lease lapses.
    pub fn follow_alive(&self, owner: &str, f: db::Follower) -> bool {
        self.db.follow(Some(owner), f)
    }

    /// Replica `owner` stops cleanly (PostgreSQL; nothing on SQLite): it is
    /// marked gone in `jit_replicas`, so the other replicas take over what
    /// it leaves claimed at once, and do not report it as died when its
    /// liveness lock goes with its connection.
    pub fn leave(&self, owner: &str) -> Result<(), StoreError> {
        if self.db.dialect() != Dialect::Postgres {
            return Ok(());
        }
        self.write_unchained(|c| {
            c.exec(
                "UPDATE jit_replicas SET gone_at = now() WHERE owner = ? AND gone_at IS NULL",
                &[P::from(owner)],
            )?;
            // "Look again" (sequence 0) to the others' schedulers.
            c.query("SELECT pg_notify(?, '0')", &[P::from(postgres::CHANNEL)])
                .map(|_| ())
        })
    }

    /// A connection for direct SQL (tests, benchmark seeding).
    pub fn raw_writer(&self) -> Result<Box<dyn Conn + '_>, StoreError> {
        self.db.writer()
    }
}

/// The store as handlers and the scheduler use it: every call runs on the
/// blocking thread pool. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<SqlStore>,
    /// See [`Store::call_limit`].
    limit: Duration,
}

/// Default of [`Store::call_limit`].
pub const CALL_LIMIT: Duration = Duration::from_secs(10);

/// Runs `$body` on the blocking pool, answering [`StoreError::TimedOut`]
/// after the store's call limit (the blocking thread ends when the
/// database answers; its result is dropped).
macro_rules! blocking {
    ($self:ident, |$s:ident| $body:expr) => {{
        let $s = $self.inner.clone();
        let limit = $self.limit;
        match tokio::time::timeout(limit, tokio::task::spawn_blocking(move || $body)).await {
            Ok(done) => done.map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))?,
            Err(_) => Err(StoreError::TimedOut(limit.as_secs())),
        }
    }};
}

/// [`blocking!`] without the call limit: for work whose length grows with
/// the store (checking the whole audit chain).
macro_rules! blocking_unbounded {
    ($self:ident, |$s:ident| $body:expr) => {{
        let $s = $self.inner.clone();
        tokio::task::spawn_blocking(move || $body)
            .await
            .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))?
    }};
}

impl Store {
    /// Opens (creating if needed) a SQLite database file and migrates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::from(SqlStore::new(Box::new(db::Sqlite::open(
            path, 8,
        )?))?))
    }

    /// Opens the database `spec` names: a `postgres://` or `postgresql://`
    /// URL, else a SQLite file path.
    pub fn open_spec(spec: &str) -> Result<Store, StoreError> {
        if postgres::is_url(spec) {
            Ok(Store::from(SqlStore::new(Box::new(
                postgres::Postgres::open(spec, 16)?,
            ))?))
        } else {
            Store::open(Path::new(spec))
        }
    }

    /// Opens the database `spec` names (see [`Store::open_spec`]) without
    /// changing it: a SQLite file read-only, no migration, no index.
    /// Errors: [`StoreError::NeedsMigration`] for an older schema.
    pub fn open_spec_as_is(spec: &str) -> Result<Store, StoreError> {
        let db: Box<dyn Database> = if postgres::is_url(spec) {
            Box::new(postgres::Postgres::open(spec, 2)?)
        } else {
            Box::new(db::Sqlite::open_read_only(Path::new(spec))?)
        };
        Ok(Store::from(SqlStore::as_is(db)?))
    }

    /// Longest wait for one store call (default [`CALL_LIMIT`], 10 s; the
    /// audit chain check has none): a database that hangs without closing
    /// its connections (stopped, or cut off by a silent network) makes
    /// calls fail with [`StoreError::TimedOut`] (the API's 503
    /// `database_unavailable`) instead of waiting until it answers.
    pub fn call_limit(&self) -> Duration {
        self.limit
    }

    /// This store with another [`Store::call_limit`].
    pub fn with_call_limit(mut self, limit: Duration) -> Store {
        self.limit = limit;
        self
    }

    /// The synchronous store (tests, tools; not on async threads).
    pub fn sync(&self) -> &SqlStore {
        &self.inner
    }

    /// See [`SqlStore::insert`].
    pub async fn insert(
        &self,
        r: &AccessRequest,
        transitions: Vec<Transition>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let r = r.clone();
        blocking!(self, |s| s.insert(&r, transitions))
    }

    /// See [`SqlStore::insert_then_update`].
    pub async fn insert_then_update<F>(
        &self,
        r: &AccessRequest,
        transitions: Vec<Transition>,
        other: &str,
        f: F,
    ) -> Result<(Stored, Stored, Vec<AuditRecord>), StoreError>
    where
        F: FnOnce(&mut Stored, &mut Stored) -> Result<(Vec<Entry>, Vec<Entry>), DomainError>
            + Send
            + 'static,
    {
        let (r, other) = (r.clone(), other.to_string());
        blocking!(self, |s| s.insert_then_update(&r, transitions, &other, f))
    }

    /// See [`SqlStore::update`].
    pub async fn update<F>(&self, id: &str, f: F) -> Result<(Stored, Vec<AuditRecord>), StoreError>
    where
        F: FnOnce(&mut Stored) -> Result<Vec<Entry>, DomainError> + Send + 'static,
    {
        let id = id.to_string();
        blocking!(self, |s| s.update(&id, f))
    }

    /// See [`SqlStore::update_pair`].
    pub async fn update_pair<F>(
        &self,
        a: &str,
        b: &str,
        f: F,
    ) -> Result<(Stored, Stored, Vec<AuditRecord>), StoreError>
    where
        F: FnOnce(&mut Stored, &mut Stored) -> Result<(Vec<Entry>, Vec<Entry>), DomainError>
            + Send
            + 'static,
    {
        let (a, b) = (a.to_string(), b.to_string());
        blocking!(self, |s| s.update_pair(&a, &b, f))
    }

    /// See [`SqlStore::update_each`].
    pub async fn update_each<F>(
        &self,
        ids: Vec<String>,
        f: F,
    ) -> Result<(Vec<String>, Vec<AuditRecord>), StoreError>
    where
        F: FnMut(&mut Stored) -> Result<Vec<Entry>, DomainError> + Send + 'static,
    {
        blocking!(self, |s| s.update_each(&ids, f))
    }

    /// See [`SqlStore::update_each_releasing`] (`release`: `(owner, ids)`).
    pub async fn update_each_releasing<F>(
        &self,
        ids: Vec<String>,
        release: Option<(String, HashSet<String>)>,
        f: F,
    ) -> Result<(Vec<String>, Vec<AuditRecord>), StoreError>
    where
        F: FnMut(&mut Stored) -> Result<Vec<Entry>, DomainError> + Send + 'static,
    {
        blocking!(self, |s| s.update_each_releasing(
            &ids,
            release.as_ref().map(|(o, w)| (o.as_str(), w)),
            f
        ))
    }

    /// See [`SqlStore::clear_backoff`].
    pub async fn clear_backoff(&self) -> Result<usize, StoreError> {
        blocking!(self, |s| s.clear_backoff())
    }

    /// See [`SqlStore::shared`] (no database work).
    pub fn shared(&self) -> bool {
        self.inner.shared()
    }

    /// See [`SqlStore::get`].
    pub async fn get(&self, id: &str) -> Result<Option<Stored>, StoreError> {
        let id = id.to_string();
        blocking!(self, |s| s.get(&id))
    }

    /// See [`SqlStore::get_many`].
    pub async fn get_many(&self, ids: Vec<String>) -> Result<Vec<Stored>, StoreError> {
        blocking!(self, |s| s.get_many(&ids))
    }

    /// See [`SqlStore::work_views`].
    pub async fn work_views(&self, ids: Vec<String>) -> Result<Vec<WorkView>, StoreError> {
        blocking!(self, |s| s.work_views(&ids))
    }

    /// See [`SqlStore::list`].
    pub async fn list(&self, q: ListQuery) -> Result<Page, StoreError> {
        blocking!(self, |s| s.list(&q))
    }

    /// See [`SqlStore::user_grants_in_keycloak`].
    pub async fn user_grants_in_keycloak(&self, user_id: &str) -> Result<Vec<Stored>, StoreError> {
        let u = user_id.to_string();
        blocking!(self, |s| s.user_grants_in_keycloak(&u))
    }

    /// See [`SqlStore::orphaned_extensions`].
    pub async fn orphaned_extensions(&self) -> Result<Vec<String>, StoreError> {
        blocking!(self, |s| s.orphaned_extensions())
    }

    /// See [`SqlStore::active_grants_of`].
    pub async fn active_grants_of(&self, user_id: &str) -> Result<Vec<Stored>, StoreError> {
        let u = user_id.to_string();
        blocking!(self, |s| s.active_grants_of(&u))
    }

    /// See [`SqlStore::active_grant_holders`].
    pub async fn active_grant_holders(&self) -> Result<Vec<GrantHolder>, StoreError> {
        blocking!(self, |s| s.active_grant_holders())
    }

    /// See [`SqlStore::any_waiting_request`].
    pub async fn any_waiting_request(&self) -> Result<bool, StoreError> {
        blocking!(self, |s| s.any_waiting_request())
    }

    /// See [`SqlStore::waiting_requests_of`].
    pub async fn waiting_requests_of(
        &self,
        user_ids: Vec<String>,
    ) -> Result<Vec<GrantHolder>, StoreError> {
        blocking!(self, |s| s.waiting_requests_of(&user_ids))
    }

    /// See [`SqlStore::other_active_grants`].
    pub async fn other_active_grants(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        except: &str,
    ) -> Result<Vec<String>, StoreError> {
        let (u, t, e) = (user_id.to_string(), target.clone(), except.to_string());
        blocking!(self, |s| s.other_active_grants(&u, &t, &e))
    }

    /// See [`SqlStore::active_ownership`].
    pub async fn active_ownership(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        except: &str,
    ) -> Result<Option<bool>, StoreError> {
        let (u, t, e) = (user_id.to_string(), target.clone(), except.to_string());
        blocking!(self, |s| s.active_ownership(&u, &t, &e))
    }

    /// See [`SqlStore::due`].
    pub async fn due(&self, now: DateTime<Utc>) -> Result<DueWork, StoreError> {
        blocking!(self, |s| s.due(now))
    }

    /// See [`SqlStore::claim`].
    pub async fn claim(
        &self,
        ids: Vec<String>,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Vec<String>, StoreError> {
        let owner = owner.to_string();
        blocking!(self, |s| s.claim(&ids, &owner, now, lease))
    }

    /// See [`SqlStore::claim_due`].
    pub async fn claim_due(
        &self,
        ids: Vec<String>,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let owner = owner.to_string();
        blocking!(self, |s| s.claim_due(&ids, &owner, now, lease, limit))
    }

    /// See [`SqlStore::release`].
    pub async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        blocking!(self, |s| s.release(&id, &owner))
    }

    /// See [`SqlStore::release_many`].
    pub async fn release_many(&self, ids: Vec<String>, owner: &str) -> Result<(), StoreError> {
        let owner = owner.to_string();
        blocking!(self, |s| s.release_many(&ids, &owner))
    }

    /// See [`SqlStore::jit_owned_holders`].
    pub async fn jit_owned_holders(
        &self,
        target: &EntitlementKind,
    ) -> Result<Vec<String>, StoreError> {
        let target = target.clone();
        blocking!(self, |s| s.jit_owned_holders(&target))
    }

    /// See [`SqlStore::open_requests`].
    pub async fn open_requests(&self) -> Result<Vec<Stored>, StoreError> {
        blocking!(self, |s| s.open_requests())
    }

    /// See [`SqlStore::audit_after`].
    pub async fn audit_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        blocking!(self, |s| s.audit_after(after, limit))
    }

    /// See [`SqlStore::audit_visible`].
    pub async fn audit_visible(
        &self,
        v: &Viewer,
        after: i64,
        upto: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<AuditRecord>, i64), StoreError> {
        let v = v.clone();
        blocking!(self, |s| s.audit_visible(&v, after, upto, limit))
    }

    /// See [`SqlStore::last_seq`].
    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        blocking!(self, |s| s.last_seq())
    }

    /// See [`SqlStore::verify_audit`].
    pub async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        blocking_unbounded!(self, |s| s.verify_audit())
    }

    /// See [`SqlStore::stats`].
    pub async fn stats(&self, now: DateTime<Utc>) -> Result<(Vec<(String, i64)>, i64), StoreError> {
        blocking!(self, |s| s.stats(now))
    }

    /// See [`SqlStore::ping`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        blocking!(self, |s| s.ping())
    }
}

impl From<SqlStore> for Store {
    fn from(s: SqlStore) -> Store {
        Store {
            inner: Arc::new(s),
            limit: CALL_LIMIT,
        }
    }
}

#[cfg(test)]
mod tests;
