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
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{parse_ts, ts, AuditRecord, Store, StoreError};

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

/// Decides, for one audit row, which webhook endpoints (by name) get it.
/// Set with [`Store::set_outbox_router`]; without one nothing is queued.
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

/// Answer of [`Store::outbox_claim`].
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

impl Store {
    /// Sets (or replaces) the function that routes audit rows to webhook
    /// endpoints. Rows written from now on are queued accordingly.
    pub fn set_outbox_router(&self, router: Option<OutboxRouter>) {
        *self.outbox.write().unwrap_or_else(|p| p.into_inner()) = router;
    }

    /// Queues `rec` for every endpoint the router names, inside the caller's
    /// transaction.
    pub(super) fn enqueue(
        &self,
        tx: &Connection,
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
            tx.execute(
                "INSERT INTO outbox (endpoint, event_id, audit_seq, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e, ev.id, rec.seq, payload, ts(rec.at)],
            )?;
        }
        Ok(())
    }

    /// Hands out the oldest pending row of `endpoint` if it is due at `now`
    /// and not leased, leasing it until `lease_until` (UTC).
    pub fn outbox_claim(
        &self,
        endpoint: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        type Head = (i64, String, u32, Option<String>, Option<String>);
        let head: Option<Head> = tx
            .query_row(
                "SELECT id, payload, attempts, next_attempt_at, lease_until FROM outbox
                 WHERE endpoint = ?1 AND state = 'pending' ORDER BY id LIMIT 1",
                [endpoint],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((id, payload, attempts, next, lease)) = head else {
            return Ok(Claim::Idle);
        };
        let blocked = [next, lease]
            .into_iter()
            .flatten()
            .map(|t| parse_ts(&t))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|t| *t > now)
            .max();
        if let Some(t) = blocked {
            return Ok(Claim::WaitUntil(t));
        }
        tx.execute(
            "UPDATE outbox SET lease_until = ?2 WHERE id = ?1",
            params![id, ts(lease_until)],
        )?;
        tx.commit()?;
        let event: WebhookEvent = serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("outbox row {id}: {e}")))?;
        Ok(Claim::Item(Box::new(OutboxItem {
            id,
            endpoint: endpoint.to_string(),
            event,
            attempts,
        })))
    }

    /// The receiver took row `id` (2xx) at `at`.
    pub fn outbox_delivered(
        &self,
        id: i64,
        attempts: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE outbox SET state = 'delivered', attempts = ?2, done_at = ?3, lease_until = NULL, last_error = NULL WHERE id = ?1",
            params![id, attempts, ts(at)],
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
        self.lock().execute(
            "UPDATE outbox SET attempts = ?2, next_attempt_at = ?3, lease_until = NULL, last_error = ?4 WHERE id = ?1",
            params![id, attempts, ts(next_attempt_at), error],
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
        self.lock().execute(
            "UPDATE outbox SET state = 'failed', attempts = ?2, done_at = ?3, lease_until = NULL, last_error = ?4 WHERE id = ?1",
            params![id, attempts, ts(at), error],
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
        let conn = self.lock();
        let endpoints: Vec<String> = conn
            .prepare("SELECT DISTINCT endpoint FROM outbox WHERE state = 'pending'")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut n = 0;
        for e in endpoints.iter().filter(|e| !known.contains(e)) {
            n += conn.execute(
                "UPDATE outbox SET state = 'failed', done_at = ?2, lease_until = NULL,
                   last_error = 'endpoint no longer configured' WHERE endpoint = ?1 AND state = 'pending'",
                params![e, ts(at)],
            )?;
        }
        Ok(n)
    }

    /// Deletes delivered and failed rows finished before `before` (UTC);
    /// returns how many.
    pub fn outbox_prune(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(self.lock().execute(
            "DELETE FROM outbox WHERE state != 'pending' AND done_at < ?1",
            [ts(before)],
        )?)
    }

    /// Row counts by endpoint and state (for metrics).
    pub fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT endpoint, state, COUNT(*) FROM outbox GROUP BY endpoint, state")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Every outbox row of `endpoint` in delivery order (tests, diagnostics).
    pub fn outbox_rows(&self, endpoint: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, endpoint, event_id, audit_seq, state, attempts, last_error FROM outbox WHERE endpoint = ?1 ORDER BY id",
        )?;
        let rows = stmt
            .query_map([endpoint], |r| {
                Ok(OutboxRow {
                    id: r.get(0)?,
                    endpoint: r.get(1)?,
                    event_id: r.get(2)?,
                    audit_seq: r.get(3)?,
                    state: r.get(4)?,
                    attempts: r.get(5)?,
                    last_error: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
