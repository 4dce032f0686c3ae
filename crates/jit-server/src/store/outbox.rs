//! The webhook outbox: one row per (audit event, endpoint), written in the
//! same transaction as the audit row, so an event that is on the record is
//! also due for delivery — a crash or a receiver outage loses nothing.
//!
//! Rows of one endpoint are delivered strictly in `id` order (= audit
//! order): only the oldest pending row of an endpoint is ever handed out.
//! Handing it out takes a lease (`lease_until`), so with several jitd on one
//! database an event is in flight from one of them at a time; when a jitd
//! dies mid-delivery the lease runs out and the row is sent again (with the
//! same `event_id`: at-least-once, receivers de-duplicate).
//!
//! States: `pending` → `delivered`, or `failed` when the endpoint refused it
//! for good or the attempts ran out (see `webhooks`). Nothing stays pending
//! forever: each row has a bounded number of attempts.

use chrono::{DateTime, Utc};
use jit_core::AccessRequest;
use serde::{Deserialize, Serialize};

use super::db::{Conn, Dialect, P};
use super::{parse_ts, ts, AuditRecord, SqlStore, Store, StoreError};

/// Schema of the outbox (migration 2 of the SQLite store).
pub(super) const MIGRATION: &str = r#"
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    event_id TEXT NOT NULL,
    audit_seq INTEGER NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    lease_until TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    done_at TEXT,
    UNIQUE(endpoint, event_id)
);
CREATE INDEX outbox_head ON outbox(endpoint, state, id);
"#;

/// The same table in PostgreSQL (part of its first migration). Ids come
/// from a sequence; writers hold the audit lock, so id order is commit
/// order.
pub(super) const PG_MIGRATION: &str = r#"
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    endpoint TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    audit_seq BIGINT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT COLLATE "C" NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT COLLATE "C",
    lease_until TEXT COLLATE "C",
    last_error TEXT,
    created_at TEXT COLLATE "C" NOT NULL,
    done_at TEXT COLLATE "C",
    UNIQUE(endpoint, event_id)
);
CREATE INDEX outbox_head ON outbox(endpoint, state, id);
"#;

/// Decides, for one audit row, which webhook endpoints (by name) get it.
/// Set with [`SqlStore::set_outbox_router`]; without one nothing is queued.
pub type OutboxRouter = std::sync::Arc<dyn Fn(&AuditRecord) -> Vec<String> + Send + Sync>;

/// What a webhook carries: the audit row and the request as it was right
/// after the change (a snapshot, so a retry an hour later still tells what
/// happened then). `id` is the idempotency id: the same for every endpoint
/// and every retry of this event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Idempotency id (UUID v4), also the CloudEvents `id` and the
    /// `webhook-id` header.
    pub id: String,
    #[serde(flatten)]
    pub record: AuditRecord,
    pub request: AccessRequest,
}

/// One outbox row handed out for delivery.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    /// Row id; order of delivery within an endpoint.
    pub id: i64,
    pub endpoint: String,
    pub event: WebhookEvent,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// Answer of [`SqlStore::outbox_claim`].
#[derive(Debug)]
pub enum Claim {
    /// The endpoint's oldest pending row, now leased to the caller.
    Item(Box<OutboxItem>),
    /// The oldest pending row is backing off or leased until this instant.
    WaitUntil(DateTime<Utc>),
    /// Nothing pending for this endpoint.
    Idle,
}

/// One outbox row as stored, for inspection (tests, diagnostics).
#[derive(Debug, Clone, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub endpoint: String,
    pub event_id: String,
    pub audit_seq: i64,
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl SqlStore {
    /// Sets (or replaces) the function that routes audit rows to webhook
    /// endpoints. Rows written from now on are queued accordingly.
    pub fn set_outbox_router(&self, router: Option<OutboxRouter>) {
        *self.outbox.write().unwrap_or_else(|p| p.into_inner()) = router;
    }

    /// Queues `rec` for every endpoint the router names, inside the caller's
    /// transaction.
    pub(super) fn enqueue(
        &self,
        c: &mut dyn Conn,
        rec: &AuditRecord,
        r: &AccessRequest,
    ) -> Result<(), StoreError> {
        let router = self
            .outbox
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(router) = router else {
            return Ok(());
        };
        let endpoints = router(rec);
        if endpoints.is_empty() {
            return Ok(());
        }
        let ev = WebhookEvent {
            id: uuid::Uuid::new_v4().to_string(),
            record: rec.clone(),
            request: r.clone(),
        };
        let payload = serde_json::to_string(&ev).expect("webhook event serialises");
        for e in endpoints {
            c.exec(
                "INSERT INTO outbox (endpoint, event_id, audit_seq, payload, created_at) VALUES (?, ?, ?, ?, ?)",
                &[P::from(e), P::from(&ev.id), P::from(rec.seq), P::from(&payload), P::from(ts(rec.at))],
            )?;
        }
        Ok(())
    }

    /// Hands out the oldest pending row of `endpoint` if it is due at `now`
    /// and not leased, leasing it until `lease_until` (UTC). Several
    /// replicas may ask at once: the write transaction serialises them, so
    /// a row is leased to one at a time.
    pub fn outbox_claim(
        &self,
        endpoint: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        // Row locks, not the audit chain's lock: replicas delivering
        // webhooks do not queue behind every request write.
        let lock = match self.db.dialect() {
            Dialect::Postgres => " FOR UPDATE",
            // BEGIN IMMEDIATE: one writer at a time already.
            Dialect::Sqlite => "",
        };
        let claimed = self.write_unchained(|c| {
            let head = c.query(
                "SELECT id FROM outbox WHERE endpoint = ? AND state = 'pending' ORDER BY id LIMIT 1",
                &[P::from(endpoint)],
            )?;
            let Some(id) = head.first().map(|r| r[0].int()).transpose()? else {
                return Ok(Err(Claim::Idle));
            };
            // Locked, then read again: another replica may have leased or
            // finished it in between (then ask again at once).
            let locked = c.query(
                &format!(
                    "SELECT id, payload, attempts, next_attempt_at, lease_until FROM outbox
                     WHERE id = ? AND state = 'pending'{lock}"
                ),
                &[P::from(id)],
            )?;
            let Some(row) = locked.first() else {
                return Ok(Err(Claim::WaitUntil(now)));
            };
            let (id, payload, attempts) = (row[0].int()?, row[1].text()?, row[2].int()?);
            let blocked = [row[3].opt_text()?, row[4].opt_text()?]
                .into_iter()
                .flatten()
                .map(|t| parse_ts(&t))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|t| *t > now)
                .max();
            if let Some(t) = blocked {
                return Ok(Err(Claim::WaitUntil(t)));
            }
            c.exec(
                "UPDATE outbox SET lease_until = ? WHERE id = ?",
                &[P::from(ts(lease_until)), P::from(id)],
            )?;
            Ok(Ok((id, payload, attempts)))
        })?;
        let (id, payload, attempts) = match claimed {
            Ok(x) => x,
            Err(answer) => return Ok(answer),
        };
        let event: WebhookEvent = serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("outbox row {id}: {e}")))?;
        Ok(Claim::Item(Box::new(OutboxItem {
            id,
            endpoint: endpoint.to_string(),
            event,
            attempts: attempts.try_into().unwrap_or(u32::MAX),
        })))
    }

    fn outbox_exec(&self, sql: &str, params: &[P]) -> Result<u64, StoreError> {
        self.write_unchained(|c| c.exec(sql, params))
    }

    /// The receiver took row `id` (2xx) at `at`.
    pub fn outbox_delivered(
        &self,
        id: i64,
        attempts: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.outbox_exec(
            "UPDATE outbox SET state = 'delivered', attempts = ?, done_at = ?, lease_until = NULL, last_error = NULL WHERE id = ?",
            &[P::from(attempts as i64), P::from(ts(at)), P::from(id)],
        )?;
        Ok(())
    }

    /// Attempt `attempts` of row `id` failed with `error`; try again at
    /// `next_attempt_at` (UTC).
    pub fn outbox_retry(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.outbox_exec(
            "UPDATE outbox SET attempts = ?, next_attempt_at = ?, lease_until = NULL, last_error = ? WHERE id = ?",
            &[
                P::from(attempts as i64),
                P::from(ts(next_attempt_at)),
                P::from(error),
                P::from(id),
            ],
        )?;
        Ok(())
    }

    /// Row `id` is given up at `at` after `attempts` attempts (refused for
    /// good, or attempts exhausted); `error` says why. It stays in the table
    /// as the record of the loss.
    pub fn outbox_failed(
        &self,
        id: i64,
        attempts: u32,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.outbox_exec(
            "UPDATE outbox SET state = 'failed', attempts = ?, done_at = ?, lease_until = NULL, last_error = ? WHERE id = ?",
            &[P::from(attempts as i64), P::from(ts(at)), P::from(error), P::from(id)],
        )?;
        Ok(())
    }

    /// Gives up every pending row of an endpoint that is no longer
    /// configured (not in `known`); returns how many.
    pub fn outbox_abandon_unknown(
        &self,
        known: &[String],
        at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.write_unchained(|c| {
            let endpoints = c
                .query("SELECT DISTINCT endpoint FROM outbox WHERE state = 'pending'", &[])?
                .iter()
                .map(|r| r[0].text())
                .collect::<Result<Vec<_>, _>>()?;
            let mut n = 0;
            for e in endpoints.iter().filter(|e| !known.contains(e)) {
                n += c.exec(
                    "UPDATE outbox SET state = 'failed', done_at = ?, lease_until = NULL,
                       last_error = 'endpoint no longer configured' WHERE endpoint = ? AND state = 'pending'",
                    &[P::from(ts(at)), P::from(e)],
                )?;
            }
            Ok(n as usize)
        })
    }

    /// Deletes delivered and failed rows finished before `before` (UTC);
    /// returns how many.
    pub fn outbox_prune(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(self.outbox_exec(
            "DELETE FROM outbox WHERE state <> 'pending' AND done_at < ?",
            &[P::from(ts(before))],
        )? as usize)
    }

    /// Row counts by endpoint and state (for metrics).
    pub fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.db
            .reader()?
            .query(
                "SELECT endpoint, state, COUNT(*) FROM outbox GROUP BY endpoint, state",
                &[],
            )?
            .iter()
            .map(|r| Ok((r[0].text()?, r[1].text()?, r[2].int()?)))
            .collect()
    }

    /// Every outbox row of `endpoint` in delivery order (tests, diagnostics).
    pub fn outbox_rows(&self, endpoint: &str) -> Result<Vec<OutboxRow>, StoreError> {
        self.db
            .reader()?
            .query(
                "SELECT id, endpoint, event_id, audit_seq, state, attempts, last_error FROM outbox WHERE endpoint = ? ORDER BY id",
                &[P::from(endpoint)],
            )?
            .iter()
            .map(|r| {
                Ok(OutboxRow {
                    id: r[0].int()?,
                    endpoint: r[1].text()?,
                    event_id: r[2].text()?,
                    audit_seq: r[3].int()?,
                    state: r[4].text()?,
                    attempts: r[5].int()?.try_into().unwrap_or(u32::MAX),
                    last_error: r[6].opt_text()?,
                })
            })
            .collect()
    }
}

macro_rules! blocking {
    ($self:ident, |$s:ident| $body:expr) => {{
        let $s = $self.inner.clone();
        tokio::task::spawn_blocking(move || $body)
            .await
            .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))?
    }};
}

/// The outbox from async code: each call on the blocking pool.
impl Store {
    /// See [`SqlStore::set_outbox_router`] (no database work).
    pub fn set_outbox_router(&self, router: Option<OutboxRouter>) {
        self.inner.set_outbox_router(router)
    }

    /// See [`SqlStore::outbox_claim`].
    pub async fn outbox_claim(
        &self,
        endpoint: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let e = endpoint.to_string();
        blocking!(self, |s| s.outbox_claim(&e, now, lease_until))
    }

    /// See [`SqlStore::outbox_delivered`].
    pub async fn outbox_delivered(
        &self,
        id: i64,
        attempts: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        blocking!(self, |s| s.outbox_delivered(id, attempts, at))
    }

    /// See [`SqlStore::outbox_retry`].
    pub async fn outbox_retry(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        let e = error.to_string();
        blocking!(self, |s| s.outbox_retry(id, attempts, next_attempt_at, &e))
    }

    /// See [`SqlStore::outbox_failed`].
    pub async fn outbox_failed(
        &self,
        id: i64,
        attempts: u32,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        let e = error.to_string();
        blocking!(self, |s| s.outbox_failed(id, attempts, at, &e))
    }

    /// See [`SqlStore::outbox_abandon_unknown`].
    pub async fn outbox_abandon_unknown(
        &self,
        known: &[String],
        at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let k = known.to_vec();
        blocking!(self, |s| s.outbox_abandon_unknown(&k, at))
    }

    /// See [`SqlStore::outbox_prune`].
    pub async fn outbox_prune(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        blocking!(self, |s| s.outbox_prune(before))
    }

    /// See [`SqlStore::outbox_counts`].
    pub async fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        blocking!(self, |s| s.outbox_counts())
    }

    /// See [`SqlStore::outbox_rows`].
    pub async fn outbox_rows(&self, endpoint: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let e = endpoint.to_string();
        blocking!(self, |s| s.outbox_rows(&e))
    }
}
