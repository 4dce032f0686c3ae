//! The store: the only truth about requests, grants and the audit log.
//!
//! SQLite (WAL) in one file. Every state change goes through
//! [`Store::update`], which loads a request, lets `jit-core` apply a
//! transition, and saves the request and its audit rows in one transaction,
//! so a crash leaves either all of a change or none of it.
//!
//! The audit log is append-only and hash-chained: each row stores the hash of
//! the previous row, and its own hash covers its content and that link, so a
//! changed, removed or reordered row breaks [`Store::verify_audit`].
//!
//! This is the seam for a PostgreSQL store later: callers use only the
//! methods here, never SQL.

mod outbox;

use std::path::Path;
use std::sync::{Mutex, RwLock};

use chrono::{DateTime, Utc};
use jit_core::{AccessRequest, DomainError, EntitlementKind, Status, Transition};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

pub use jit_core::api::{AuditRecord, GrantState, GENESIS};
pub use outbox::{Claim, OutboxItem, OutboxRouter, OutboxRow, WebhookEvent};

/// Result of checking the audit chain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AuditVerification {
    /// Whether every row's hash and link match.
    pub ok: bool,
    /// Rows checked.
    pub rows: i64,
    /// First sequence number whose hash or link does not match.
    #[schema(required = true)]
    pub first_bad_seq: Option<i64>,
    /// Hash of the last row (`null` when the log is empty).
    #[schema(required = true)]
    pub last_hash: Option<String>,
}

/// An event not caused by a request transition (e.g. the role really left
/// Keycloak), for the audit log.
#[derive(Debug, Clone)]
pub struct Note {
    pub event: &'static str,
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

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("corrupt row: {0}")]
    Corrupt(String),
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

/// SQLite-backed store. One connection behind a mutex: SQLite serialises
/// writers anyway, and one writer makes "two approvals at once" a
/// non-question — they run one after the other against fresh state.
pub struct Store {
    conn: Mutex<Connection>,
    /// Routes audit rows to webhook endpoints (the outbox); `None`: no
    /// webhooks.
    outbox: RwLock<Option<OutboxRouter>>,
}

const MIGRATIONS: &[&str] = &[
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
    outbox::MIGRATION,
    // Service-account actors (pipelines), see `AuditRecord::actor_client`.
    "ALTER TABLE audit ADD COLUMN actor_client TEXT;",
];

fn ts(t: DateTime<Utc>) -> String {
    // Fixed width, so text order is time order in SQL comparisons.
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {s}: {e}")))
}

fn target_key(t: &EntitlementKind) -> String {
    serde_json::to_string(t).expect("target serialises")
}

impl Store {
    /// Opens (creating if needed) the database at `path`, in WAL mode with
    /// `synchronous=FULL`, and applies pending migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Corrupt(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
            outbox: RwLock::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-written
        // transaction (SQLite rolls it back), so the poison can be ignored.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn row_to_stored(body: String, grant: String) -> Result<Stored, StoreError> {
        Ok(Stored {
            request: serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            grant: serde_json::from_str(&grant).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        })
    }

    fn save(tx: &Connection, s: &Stored) -> Result<(), StoreError> {
        let r = &s.request;
        let extends = match &r.kind {
            jit_core::RequestKind::Extension { grant_id } => Some(grant_id.clone()),
            jit_core::RequestKind::Access => None,
        };
        tx.execute(
            "INSERT INTO requests (id, entitlement_id, requester_id, status, target, extends, created_at, pending_until, start_at, expires_at, body, grant_state, removal_pending, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT(id) DO UPDATE SET status=excluded.status, start_at=excluded.start_at, expires_at=excluded.expires_at,
               body=excluded.body, grant_state=excluded.grant_state, removal_pending=excluded.removal_pending, next_attempt_at=excluded.next_attempt_at",
            params![
                r.id,
                r.entitlement_id,
                r.requester_id,
                r.status.as_str(),
                target_key(&r.target),
                extends,
                ts(r.created_at),
                ts(r.pending_until),
                r.start_at.map(ts),
                r.expires_at.map(ts),
                serde_json::to_string(r).expect("request serialises"),
                serde_json::to_string(&s.grant).expect("grant state serialises"),
                s.grant.removal_pending as i64,
                s.grant.next_attempt_at.map(ts),
            ],
        )?;
        Ok(())
    }

    fn append(
        &self,
        tx: &Connection,
        r: &AccessRequest,
        e: &Entry,
    ) -> Result<AuditRecord, StoreError> {
        let (prev_seq, prev_hash): (i64, String) = tx
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, GENESIS.to_string()));
        let (event, actor, reason, from, to, at) = match e {
            Entry::Transition(t) => (
                t.action.event().to_string(),
                t.actor.clone(),
                t.reason.clone(),
                t.from.map(|s| s.as_str().to_string()),
                Some(t.to.as_str().to_string()),
                t.at,
            ),
            Entry::Note(n) => (
                n.event.to_string(),
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
            .requester_client
            .clone()
            .filter(|_| actor == r.requester_username);
        let mut rec = AuditRecord {
            seq: prev_seq + 1,
            at,
            event,
            request_id: r.id.clone(),
            entitlement_id: r.entitlement_id.clone(),
            requester_id: r.requester_id.clone(),
            actor,
            actor_client,
            reason,
            from_status: from,
            to_status: to,
            prev_hash,
            hash: String::new(),
        };
        rec.hash = rec.compute_hash();
        tx.execute(
            "INSERT INTO audit (seq, at, event, request_id, entitlement_id, requester_id, actor, reason, from_status, to_status, prev_hash, hash, actor_client)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                rec.seq,
                ts(rec.at),
                rec.event,
                rec.request_id,
                rec.entitlement_id,
                rec.requester_id,
                rec.actor,
                rec.reason,
                rec.from_status,
                rec.to_status,
                rec.prev_hash,
                rec.hash,
                rec.actor_client
            ],
        )?;
        // The outbox row is part of the same transaction as the audit row.
        self.enqueue(tx, &rec, r)?;
        Ok(rec)
    }

    /// Inserts a new request with its creation transitions, atomically.
    pub fn insert(
        &self,
        r: &AccessRequest,
        transitions: Vec<Transition>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        Self::save(
            &tx,
            &Stored {
                request: r.clone(),
                grant: GrantState::default(),
            },
        )?;
        let mut recs = Vec::new();
        for t in transitions {
            recs.push(self.append(&tx, r, &t.into())?);
        }
        tx.commit()?;
        Ok(recs)
    }

    /// Loads request `id`, applies `f` to it and its grant state, and saves
    /// both plus the entries `f` returns as audit rows — all in one
    /// transaction. If `f` fails nothing is written.
    pub fn update<F>(&self, id: &str, f: F) -> Result<(Stored, Vec<AuditRecord>), StoreError>
    where
        F: FnOnce(&mut Stored) -> Result<Vec<Entry>, DomainError>,
    {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut s = Self::get_in(&tx, id)?.ok_or(DomainError::NotFound)?;
        let entries = f(&mut s)?;
        Self::save(&tx, &s)?;
        let mut recs = Vec::new();
        for e in &entries {
            recs.push(self.append(&tx, &s.request, e)?);
        }
        tx.commit()?;
        Ok((s, recs))
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
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut sa = Self::get_in(&tx, a)?.ok_or(DomainError::NotFound)?;
        let mut sb = Self::get_in(&tx, b)?.ok_or(DomainError::NotFound)?;
        let (ea, eb) = f(&mut sa, &mut sb)?;
        Self::save(&tx, &sa)?;
        Self::save(&tx, &sb)?;
        let mut recs = Vec::new();
        for e in &ea {
            recs.push(self.append(&tx, &sa.request, e)?);
        }
        for e in &eb {
            recs.push(self.append(&tx, &sb.request, e)?);
        }
        tx.commit()?;
        Ok((sa, sb, recs))
    }

    /// Applies `f` to each request of `ids` in one transaction (one disk
    /// sync for all): each request is saved with its audit rows, or — if
    /// `f` refuses it (e.g. another path changed it first) — left as it was
    /// while the others are still saved. Returns the ids that changed and
    /// all audit rows written, in order.
    pub fn update_each<F>(
        &self,
        ids: &[String],
        mut f: F,
    ) -> Result<(Vec<String>, Vec<AuditRecord>), StoreError>
    where
        F: FnMut(&mut Stored) -> Result<Vec<Entry>, DomainError>,
    {
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut changed = Vec::new();
        let mut recs = Vec::new();
        for id in ids {
            let Some(mut s) = Self::get_in(&tx, id)? else {
                continue;
            };
            let Ok(entries) = f(&mut s) else {
                continue;
            };
            Self::save(&tx, &s)?;
            for e in &entries {
                recs.push(self.append(&tx, &s.request, e)?);
            }
            changed.push(id.clone());
        }
        tx.commit()?;
        Ok((changed, recs))
    }

    /// Makes every request waiting out a retry backoff due now (Keycloak
    /// answered again after an outage: nothing should wait for its own
    /// timer). Returns how many were waiting.
    pub fn clear_backoff(&self) -> Result<usize, StoreError> {
        let conn = self.lock();
        Ok(conn.execute(
            "UPDATE requests SET next_attempt_at = NULL,
               grant_state = json_set(grant_state, '$.next_attempt_at', json('null'))
             WHERE next_attempt_at IS NOT NULL",
            [],
        )?)
    }

    fn get_in(conn: &Connection, id: &str) -> Result<Option<Stored>, StoreError> {
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT body, grant_state FROM requests WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(b, g)| Self::row_to_stored(b, g)).transpose()
    }

    /// One request by id.
    pub fn get(&self, id: &str) -> Result<Option<Stored>, StoreError> {
        Self::get_in(&self.lock(), id)
    }

    /// Requests, newest first, optionally only those with `status`, at most
    /// `limit`.
    pub fn list(&self, status: Option<Status>, limit: usize) -> Result<Vec<Stored>, StoreError> {
        let conn = self.lock();
        let mut out = Vec::new();
        let mut q = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<(), StoreError> {
            let mut stmt = conn.prepare(sql)?;
            let rows =
                stmt.query_map(p, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (b, g) = row?;
                out.push(Self::row_to_stored(b, g)?);
            }
            Ok(())
        };
        let limit = limit as i64;
        match status {
            Some(s) => q(
                "SELECT body, grant_state FROM requests WHERE status = ?1 ORDER BY created_at DESC LIMIT ?2",
                &[&s.as_str(), &limit],
            )?,
            None => q("SELECT body, grant_state FROM requests ORDER BY created_at DESC LIMIT ?1", &[&limit])?,
        }
        Ok(out)
    }

    /// The user's requests that may have something in Keycloak now or soon:
    /// approved, active, or ended with the removal still pending. For the
    /// grant ends jitd writes on the user (`grant_ends`).
    pub fn user_grants_in_keycloak(&self, user_id: &str) -> Result<Vec<Stored>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT body, grant_state FROM requests WHERE requester_id = ?1 AND (status IN ('approved', 'active') OR removal_pending = 1) ORDER BY created_at",
        )?;
        let rows = stmt.query_map([user_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (b, g) = row?;
            out.push(Self::row_to_stored(b, g)?);
        }
        Ok(out)
    }

    /// Pending extensions whose grant is no longer active (it expired, was
    /// dropped or revoked): nobody can approve them any more.
    pub fn orphaned_extensions(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT r.id FROM requests r JOIN requests g ON g.id = r.extends WHERE r.status = 'pending' AND g.status != 'active' ORDER BY r.created_at",
        )?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    /// Every active grant (not extension) of `user_id`, whatever its target.
    pub fn active_grants_of(&self, user_id: &str) -> Result<Vec<Stored>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT body, grant_state FROM requests WHERE requester_id = ?1 AND status = 'active' AND extends IS NULL",
        )?;
        let rows = stmt
            .query_map(params![user_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(b, g)| Self::row_to_stored(b, g))
            .collect()
    }

    /// Active grants of `target` to `user_id`, other than `except`.
    pub fn other_active_grants(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        except: &str,
    ) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id FROM requests WHERE requester_id = ?1 AND target = ?2 AND status = 'active' AND extends IS NULL AND id != ?3",
        )?;
        let ids = stmt
            .query_map(params![user_id, target_key(target), except], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
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
        let ids = self.other_active_grants(user_id, target, except)?;
        let mut result = None;
        for id in ids {
            if let Some(s) = self.get(&id)? {
                let owns = s.grant.owns_assignment.unwrap_or(true);
                result = Some(result.unwrap_or(false) || owns);
            }
        }
        Ok(result)
    }

    /// What is due at `now`: pending requests past their TTL, active grants
    /// past `expires_at`, approved access requests whose start has come, and
    /// ended grants still to be removed from Keycloak (respecting backoff).
    pub fn due(&self, now: DateTime<Utc>) -> Result<DueWork, StoreError> {
        let conn = self.lock();
        let n = ts(now);
        let ids = |sql: &str| -> Result<Vec<String>, StoreError> {
            let mut stmt = conn.prepare(sql)?;
            let v = stmt
                .query_map([&n], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(v)
        };
        let backoff_ok = "(next_attempt_at IS NULL OR next_attempt_at <= ?1)";
        let mut w = DueWork {
            lapse: ids("SELECT id FROM requests WHERE status='pending' AND pending_until <= ?1")?,
            expire: ids("SELECT id FROM requests WHERE status='active' AND expires_at <= ?1")?,
            activate: ids(&format!(
                "SELECT id FROM requests WHERE status='approved' AND extends IS NULL AND (start_at IS NULL OR start_at <= ?1) AND {backoff_ok}"
            ))?,
            remove: ids(&format!("SELECT id FROM requests WHERE removal_pending=1 AND {backoff_ok}"))?,
            next_due: None,
        };
        let next: Option<String> = conn.query_row(
            "SELECT MIN(t) FROM (
                SELECT pending_until AS t FROM requests WHERE status='pending' AND pending_until > ?1
                UNION ALL SELECT expires_at FROM requests WHERE status='active' AND expires_at > ?1
                UNION ALL SELECT start_at FROM requests WHERE status='approved' AND start_at > ?1
                UNION ALL SELECT next_attempt_at FROM requests WHERE (removal_pending=1 OR status='approved') AND next_attempt_at > ?1)",
            [&n],
            |r| r.get(0),
        )?;
        w.next_due = next.map(|s| parse_ts(&s)).transpose()?;
        Ok(w)
    }

    /// Requests that are not over yet (pending, approved, active).
    pub fn open_requests(&self) -> Result<Vec<Stored>, StoreError> {
        let mut out = Vec::new();
        for s in [Status::Pending, Status::Approved, Status::Active] {
            out.extend(self.list(Some(s), usize::MAX >> 1)?);
        }
        Ok(out)
    }

    /// Audit rows with `seq > after`, in order, at most `limit`.
    pub fn audit_after(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT seq, at, event, request_id, entitlement_id, requester_id, actor, reason, from_status, to_status, prev_hash, hash, actor_client
             FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                AuditRecord {
                    seq: r.get(0)?,
                    at: DateTime::<Utc>::MIN_UTC,
                    event: r.get(2)?,
                    request_id: r.get(3)?,
                    entitlement_id: r.get(4)?,
                    requester_id: r.get(5)?,
                    actor: r.get(6)?,
                    actor_client: r.get(12)?,
                    reason: r.get(7)?,
                    from_status: r.get(8)?,
                    to_status: r.get(9)?,
                    prev_hash: r.get(10)?,
                    hash: r.get(11)?,
                },
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (_, at, mut rec) = row?;
            rec.at = parse_ts(&at)?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Highest audit sequence number (0 when empty).
    pub fn last_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .lock()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", [], |r| r.get(0))?)
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
        let conn = self.lock();
        // Extensions are not grants of their own: counted apart.
        let mut stmt = conn.prepare(
            "SELECT CASE WHEN extends IS NULL THEN status ELSE 'extension_' || status END, COUNT(*) FROM requests GROUP BY 1",
        )?;
        let by = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<(String, i64)>, _>>()?;
        // Candidates (their role may still be in Keycloak, past expiry or
        // ended); jit-core decides which are late.
        let mut stmt = conn.prepare(
            "SELECT body, grant_state FROM requests WHERE removal_pending=1 OR (status='active' AND expires_at <= ?1)",
        )?;
        let rows = stmt.query_map([ts(now)], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut late = 0;
        for row in rows {
            let (b, g) = row?;
            let s = Self::row_to_stored(b, g)?;
            if jit_core::lateness::revoke_late(&s.request, s.grant.removal_pending, now) {
                late += 1;
            }
        }
        Ok((by, late))
    }

    #[cfg(test)]
    pub(crate) fn raw(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jit_core::{NewRequest, Policy, Principal};

    fn policy() -> Policy {
        Policy::from_toml(
            "[[entitlement]]\nid=\"db\"\nrealm_role=\"prod-db-admin\"\nmax_duration=\"1h\"\napprover_roles=[\"ap\"]\n",
        )
        .unwrap()
    }

    fn new_request(store: &Store, now: DateTime<Utc>) -> AccessRequest {
        let input = NewRequest {
            entitlement: "db".into(),
            duration_secs: Some(60),
            justification: "because of reasons".into(),
            ..Default::default()
        };
        let (r, t) = AccessRequest::create(
            "r1".into(),
            &input,
            &Principal::new("u1", "alice"),
            &policy(),
            now,
        )
        .unwrap();
        store.insert(&r, t).unwrap();
        r
    }

    #[test]
    fn insert_update_and_audit_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite")).unwrap();
        let now = Utc::now();
        new_request(&store, now);
        let p = policy();
        let mut bob = Principal::new("u2", "bob");
        bob.roles.insert("ap".into());
        let (s, recs) = store
            .update("r1", |s| {
                let e = p.entitlement("db").unwrap();
                Ok(s.request
                    .vote(e, &bob, jit_core::Decision::Approve, None, None, now)?
                    .into_iter()
                    .map(Entry::from)
                    .collect())
            })
            .unwrap();
        assert_eq!(s.request.status, Status::Approved);
        assert_eq!(recs[0].event, "request.approved");
        assert_eq!(recs[0].seq, 2);
        // A failing closure writes nothing.
        let err = store
            .update("r1", |s| Ok(vec![s.request.lapse(now)?.into()]))
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::Domain(DomainError::IllegalTransition { .. })
        ));
        assert_eq!(store.last_seq().unwrap(), 2);
        let due = store.due(now).unwrap();
        assert_eq!(due.activate, vec!["r1".to_string()]);
        let v = store.verify_audit().unwrap();
        assert!(v.ok && v.rows == 2, "{v:?}");
    }

    #[test]
    fn late_revocations_use_the_core_rule() {
        // The metric's count agrees with the API's `revoke_late`
        // (jit_core::lateness): late only past the grace after the end.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite")).unwrap();
        let t: DateTime<Utc> = "2026-11-30T10:00:00Z".parse().unwrap();
        new_request(&store, t);
        let p = policy();
        let mut bob = Principal::new("u2", "bob");
        bob.roles.insert("ap".into());
        store
            .update("r1", |s| {
                let e = p.entitlement("db").unwrap();
                let mut out: Vec<Entry> = s
                    .request
                    .vote(e, &bob, jit_core::Decision::Approve, None, None, t)?
                    .into_iter()
                    .map(Entry::from)
                    .collect();
                out.push(s.request.activate(t)?.into());
                Ok(out)
            })
            .unwrap();
        let late = |at: DateTime<Utc>| store.stats(at).unwrap().1;
        let grace = chrono::Duration::seconds(jit_core::lateness::REVOKE_LATE_GRACE_SECS);
        let end = t + chrono::Duration::seconds(60);
        // Active past expires_at, not yet expired by the scheduler.
        assert_eq!(late(end + chrono::Duration::seconds(2)), 0);
        assert_eq!(late(end + grace + chrono::Duration::seconds(1)), 1);
        // Dropped early, removal pending: counted from the drop.
        let dropped = t + chrono::Duration::seconds(10);
        let alice = Principal::new("u1", "alice");
        store
            .update("r1", |s| {
                let tr = s.request.drop_grant(&alice, dropped)?;
                s.grant.removal_pending = true;
                Ok(vec![tr.into()])
            })
            .unwrap();
        assert_eq!(late(dropped + chrono::Duration::seconds(2)), 0);
        assert_eq!(late(dropped + grace + chrono::Duration::seconds(1)), 1);
    }

    #[test]
    fn audit_is_append_only_and_tamper_evident() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let store = Store::open(&path).unwrap();
        new_request(&store, Utc::now());
        {
            let conn = store.raw();
            assert!(conn
                .execute("UPDATE audit SET actor='mallory'", [])
                .is_err());
            assert!(conn.execute("DELETE FROM audit", []).is_err());
            // Someone with file access drops the triggers and edits a row.
            conn.execute_batch(
                "DROP TRIGGER audit_no_update; UPDATE audit SET actor='mallory' WHERE seq=1;",
            )
            .unwrap();
        }
        let v = store.verify_audit().unwrap();
        assert!(!v.ok);
        assert_eq!(v.first_bad_seq, Some(1));
    }

    #[test]
    fn reopen_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        {
            let store = Store::open(&path).unwrap();
            new_request(&store, Utc::now());
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.get("r1").unwrap().unwrap().request.status,
            Status::Pending
        );
        assert_eq!(store.last_seq().unwrap(), 1);
        assert!(store.verify_audit().unwrap().ok);
    }
}
