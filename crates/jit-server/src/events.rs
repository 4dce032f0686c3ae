//! `GET /v1/events`: server-sent events of the audit log, filtered to what
//! the caller may see. Each event's `id` is the audit sequence number and
//! its `event` the audit event type; a client that reconnects with
//! `Last-Event-ID` (or `?since=`) gets every visible event after that id —
//! the backlog comes from the store, so nothing is lost. The stream ends
//! when the caller's token expires (reconnect with a fresh one) or the
//! server stops.
//!
//! Fan-out: one task per jitd ([`run_hub`]) reads each new audit row once,
//! renders it once (with the request's view) and broadcasts it. A
//! subscriber's work per event is a visibility check on the row's requester
//! and entitlement ([`Viewer::sees`]), not a store read. The hub follows
//! the store's audit sequence, so writes of other replicas (PostgreSQL
//! `NOTIFY`, see [`crate::store::postgres`]) fan out the same way.
//!
//! Exact resume: a subscriber subscribes to the broadcast first, then reads
//! its backlog from the store up to the last broadcast sequence, then takes
//! broadcast events above it. A subscriber that falls behind the broadcast
//! buffer reads the gap from the store again.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use jit_core::api::EventData;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};

use crate::error::ApiError;
use crate::extract::{Caller, Q};
use crate::store::{AuditRecord, StoreError, Viewer};
use crate::views::view;
use crate::AppState;

/// Events buffered for slow subscribers before they re-read from the store.
const BUFFER: usize = 4096;

/// One audit row, rendered once for every subscriber.
#[derive(Debug)]
pub struct Rendered {
    pub seq: i64,
    pub event: String,
    pub requester_id: String,
    pub entitlement_id: String,
    /// The [`EventData`] as JSON.
    pub data: String,
}

impl Rendered {
    fn sse(&self) -> Event {
        Event::default()
            .id(self.seq.to_string())
            .event(&self.event)
            .data(&self.data)
    }
}

/// The fan-out point of one jitd.
pub struct Hub {
    tx: broadcast::Sender<Arc<Rendered>>,
    /// Highest sequence number broadcast so far.
    published: watch::Sender<i64>,
}

impl Hub {
    /// A hub whose broadcast starts after `last_seq`.
    pub fn new(last_seq: i64) -> Hub {
        Hub {
            tx: broadcast::channel(BUFFER).0,
            published: watch::channel(last_seq).0,
        }
    }

    /// Number of connected event streams.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// Renders audit rows with their requests' views (one store read per
/// distinct request of the batch).
async fn render(state: &AppState, rows: Vec<AuditRecord>) -> Result<Vec<Rendered>, StoreError> {
    let mut views = HashMap::new();
    for rec in &rows {
        if !views.contains_key(&rec.request_id) {
            let v = state
                .store
                .get(&rec.request_id)
                .await?
                .map(|s| view(state, &s, None));
            views.insert(rec.request_id.clone(), v);
        }
    }
    Ok(rows
        .into_iter()
        .map(|rec| {
            let request = views.get(&rec.request_id).cloned().flatten();
            let (seq, event) = (rec.seq, rec.event.to_string());
            let (requester_id, entitlement_id) =
                (rec.requester_id.clone(), rec.entitlement_id.clone());
            let data = serde_json::to_string(&EventData {
                record: rec,
                request,
            })
            .expect("event serialises");
            Rendered {
                seq,
                event,
                requester_id,
                entitlement_id,
                data,
            }
        })
        .collect())
}

/// Follows the audit sequence (local writes bump `state.last_seq`; so do
/// other replicas' notifications) and broadcasts each new row once, in
/// order. Runs until the server stops.
pub async fn run_hub(state: Arc<AppState>) {
    let mut seq_rx = state.last_seq.subscribe();
    let mut stop = state.stopping.subscribe();
    let mut at = *state.events.published.borrow();
    loop {
        if *stop.borrow() {
            return;
        }
        seq_rx.borrow_and_update();
        loop {
            let rows = match state.store.audit_after(at, 500).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "event hub read failed");
                    break;
                }
            };
            if rows.is_empty() {
                break;
            }
            match render(&state, rows).await {
                Ok(evs) => {
                    for ev in evs {
                        at = ev.seq;
                        // No receivers is fine: the backlog is in the store.
                        let _ = state.events.tx.send(Arc::new(ev));
                        state.events.published.send_replace(at);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "event hub render failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = seq_rx.changed() => {}
            _ = stop.changed() => {}
            // A safety net for a missed notification.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Query of `GET /v1/events`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Resume after this sequence number (like `Last-Event-ID`).
    since: Option<i64>,
}

/// An event id as `Last-Event-ID` carries it: ASCII digits only (no sign,
/// no spaces inside), at most `i64::MAX`.
fn parse_event_id(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

struct Cursor {
    state: Arc<AppState>,
    caller: Caller,
    viewer: Viewer,
    generation: u64,
    /// Highest sequence number dealt with (delivered or not visible).
    after: i64,
    buf: VecDeque<Event>,
    rx: broadcast::Receiver<Arc<Rendered>>,
    stop_rx: watch::Receiver<bool>,
    /// Counts this stream in `jit_sse_subscribers` while it lives.
    _subscriber: crate::metrics::SseGuard,
}

impl Cursor {
    /// The viewer under the policy in force (recomputed when it changes).
    fn viewer(&mut self) -> &Viewer {
        let g = self
            .state
            .policy_generation
            .load(std::sync::atomic::Ordering::SeqCst);
        if g != self.generation {
            self.viewer = Viewer::of(&self.caller.principal, &self.state.policy());
            self.generation = g;
        }
        &self.viewer
    }

    /// Reads visible rows in `(after, upto]` from the store into `buf`.
    async fn backlog(&mut self, upto: i64) -> Result<(), StoreError> {
        while self.after < upto {
            let v = self.viewer().clone();
            let (rows, cursor) = self
                .state
                .store
                .audit_visible(&v, self.after, Some(upto), 100)
                .await?;
            for ev in render(&self.state, rows).await? {
                self.buf.push_back(ev.sse());
            }
            self.after = cursor;
        }
        Ok(())
    }
}

/// Starts after `Last-Event-ID`, else `?since=`, else the newest event (only
/// new events).
#[utoipa::path(get, path = "/v1/events", tag = "audit", security(("bearer" = [])),
    description = "Server-sent events (`text/event-stream`) of the audit log, filtered to what the caller may see. \
Each event: `id` = the audit sequence number, `event` = the audit event type (e.g. `request.created`), \
`data` = one JSON `EventData` (the audit row and the request as it is now). A comment line keeps the \
connection alive every 15 s. The stream ends when the token expires or the server stops; reconnect \
with `Last-Event-ID` to resume with nothing lost.",
    params(
        EventParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id (wins over `since`)"),
    ),
    responses((status = 200, description = "The event stream; each `data:` line is an `EventData`", content_type = "text/event-stream", body = String)))]
pub async fn stream(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Q(q): Q<EventParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| parse_event_id(s.trim()))
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Last-Event-ID must be an event id: a whole number ≥ 0".into(),
                    )
                })?,
        ),
        None => None,
    };
    if q.since.is_some_and(|s| s < 0) {
        return Err(ApiError::BadRequest(
            "since must be an event id: a whole number ≥ 0".into(),
        ));
    }
    // Subscribe before reading the broadcast position: nothing falls
    // between the backlog and the live events.
    let rx = state.events.tx.subscribe();
    let published = *state.events.published.borrow();
    let after = match last_id.or(q.since) {
        Some(n) => n,
        None => published,
    };
    let generation = state
        .policy_generation
        .load(std::sync::atomic::Ordering::SeqCst);
    let mut cursor = Cursor {
        viewer: Viewer::of(&caller.principal, &state.policy()),
        generation,
        _subscriber: state.metrics.sse_subscriber(),
        stop_rx: state.stopping.subscribe(),
        state,
        caller,
        after,
        buf: VecDeque::new(),
        rx,
    };
    cursor.backlog(published).await?;
    let s = futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(ev) = c.buf.pop_front() {
                return Some((Ok(ev), c));
            }
            if *c.stop_rx.borrow() {
                return None;
            }
            let left = c.caller.exp - chrono::Utc::now().timestamp();
            if left <= 0 {
                return None;
            }
            let received = tokio::select! {
                r = c.rx.recv() => r,
                _ = c.stop_rx.changed() => continue,
                _ = tokio::time::sleep(Duration::from_secs(left as u64)) => continue,
            };
            match received {
                Ok(ev) => {
                    if ev.seq <= c.after {
                        continue;
                    }
                    c.after = ev.seq;
                    if c.viewer().sees(&ev.requester_id, &ev.entitlement_id) {
                        return Some((Ok(ev.sse()), c));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the buffer: read the gap from the store.
                    let upto = *c.state.events.published.borrow();
                    if let Err(e) = c.backlog(upto).await {
                        tracing::error!(error = %e, "event stream read failed");
                        return None;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::parse_event_id;

    #[test]
    fn event_ids_are_plain_non_negative_numbers() {
        assert_eq!(parse_event_id("0"), Some(0));
        assert_eq!(parse_event_id("42"), Some(42));
        for bad in [
            "",
            "-5",
            "+5",
            "4 2",
            "1e3",
            "0x10",
            "99999999999999999999",
            "٣",
        ] {
            assert_eq!(parse_event_id(bad), None, "{bad:?}");
        }
    }
}
