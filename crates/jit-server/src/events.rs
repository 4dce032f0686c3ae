//! `GET /v1/events`: server-sent events of the audit log, filtered to what
//! the caller may see. Each event's `id` is the audit sequence number and
//! its `event` the audit event type; a client that reconnects with
//! `Last-Event-ID` (or `?since=`) gets every visible event after that id —
//! the stream reads the store, not an in-memory buffer, so nothing is lost.
//! The stream ends when the caller's token expires (reconnect with a fresh
//! one) or the server stops.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use jit_core::api::EventData;
use serde::Deserialize;
use tokio::sync::watch;

use crate::api::{view, visible_audit, Caller, Q};
use crate::error::ApiError;
use crate::AppState;

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
    after: i64,
    buf: VecDeque<Event>,
    seq_rx: watch::Receiver<i64>,
    stop_rx: watch::Receiver<bool>,
    /// Counts this stream in `jit_sse_subscribers` while it lives.
    _subscriber: crate::metrics::SseGuard,
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
    let after = match last_id.or(q.since) {
        Some(n) => n,
        None => state.store.last_seq()?,
    };
    let cursor = Cursor {
        _subscriber: state.metrics.sse_subscriber(),
        seq_rx: state.last_seq.subscribe(),
        stop_rx: state.stopping.subscribe(),
        state,
        caller,
        after,
        buf: VecDeque::new(),
    };
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
            // Mark the current value seen before reading, so a write that
            // lands after the read wakes us.
            c.seq_rx.borrow_and_update();
            match visible_audit(&c.state, &c.caller.principal, c.after, 100) {
                Ok((rows, cursor)) => {
                    c.after = cursor;
                    for rec in rows {
                        let request = c
                            .state
                            .store
                            .get(&rec.request_id)
                            .ok()
                            .flatten()
                            .map(|s| view(&c.state, &s));
                        let id = rec.seq.to_string();
                        let name = rec.event.clone();
                        let data = EventData {
                            record: rec,
                            request,
                        };
                        let ev = Event::default()
                            .id(id)
                            .event(name)
                            .json_data(&data)
                            .unwrap_or_else(|_| Event::default().comment("unserialisable event"));
                        c.buf.push_back(ev);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "event stream read failed");
                    return None;
                }
            }
            if !c.buf.is_empty() {
                continue;
            }
            tokio::select! {
                _ = c.seq_rx.changed() => {}
                _ = c.stop_rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(left as u64)) => {}
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
