//! Live updates while logged in: `/v1/events` (server-sent events) with
//! `Last-Event-ID` resume and reconnect backoff; while the stream is down,
//! polls every 5 s (`list_requests` for the tray, and the audit rows since
//! the last event id, so nothing is missed or repeated). Emits `jit:event`
//! for every server event and `jit:session` on connection changes, raises
//! notifications and keeps the tray current.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jit_client::{Client, ClientError, ListQuery};
use jit_core::api::{EventData, EventKind, RequestView};

use crate::error::CommandError;
use crate::notifications::{self, expiring_notes, note_for_event, Note, Notifier, Viewer};
use crate::settings::Settings;
use crate::state::{Connection, Desktop};
use crate::tray_view::{tray_view, TrayView};

/// How often the list is polled while the event stream is down.
pub const POLL_EVERY: Duration = Duration::from_secs(5);
/// Longest wait between reconnect attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Event ids already handled: the stream and the poll share it, so an
/// event is handled once whichever way it came.
#[derive(Debug, Default, Clone)]
pub struct Cursor {
    pub last_id: Option<i64>,
}

impl Cursor {
    /// True if `id` is new (and remembers it).
    pub fn accept(&mut self, id: i64) -> bool {
        if self.last_id.is_some_and(|l| id <= l) {
            return false;
        }
        self.last_id = Some(id);
        true
    }
}

/// The per-login state of the live loop, without I/O.
#[derive(Debug, Default)]
pub struct LiveCore {
    pub cursor: Cursor,
    pub viewer: Viewer,
    /// The notification server supports actions.
    pub actions: bool,
}

impl LiveCore {
    /// Handles server event `id`: `None` if it was already handled (do not
    /// emit it again), else `Some(note to show, if any)`.
    pub fn on_event(
        &mut self,
        notifier: &Notifier,
        settings: &Settings,
        id: i64,
        data: &EventData,
    ) -> Option<Option<Note>> {
        if !self.cursor.accept(id) {
            return None;
        }
        Some(
            note_for_event(data, &self.viewer, self.actions)
                .and_then(|n| notifier.admit(n, settings)),
        )
    }

    /// "Expires in 5 minutes" notes due now for `mine`.
    pub fn expiring(
        &self,
        notifier: &Notifier,
        settings: &Settings,
        mine: &[RequestView],
        server_now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<Note> {
        expiring_notes(mine, &self.viewer, server_now, self.actions)
            .into_iter()
            .filter_map(|n| notifier.admit(n, settings))
            .collect()
    }
}

/// Starts and stops the live loop as the user logs in and out.
pub fn watch_session(d: Arc<Desktop>) {
    tauri::async_runtime::spawn(async move {
        let mut rx = d.session.subscribe();
        loop {
            let logged_in = d.session.logged_in().await;
            {
                let mut live = d.live.lock().unwrap_or_else(|p| p.into_inner());
                if logged_in {
                    let running = live.as_ref().is_some_and(|h| !h.inner().is_finished());
                    if !running {
                        if let Some(b) = d.backend_now() {
                            d.set_connection(Connection::Connecting);
                            *live = Some(tauri::async_runtime::spawn(run(
                                d.clone(),
                                b.client.clone(),
                            )));
                        }
                    }
                } else {
                    if let Some(h) = live.take() {
                        h.abort();
                    }
                    d.set_connection(Connection::Offline);
                }
            }
            refresh_tray(d.clone());
            d.emit_session();
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Recomputes the tray from the requests waiting for the user.
pub fn refresh_tray(d: Arc<Desktop>) {
    tauri::async_runtime::spawn(async move {
        let paused = d.settings.get().notifications_paused;
        let view = match d.backend_now() {
            Some(b) if d.session.logged_in().await => match b.client.list(&to_review()).await {
                Ok(rows) => tray_view(&rows, paused),
                Err(_) => return,
            },
            _ => TrayView {
                paused,
                ..TrayView::default()
            },
        };
        if let Some(s) = d.sink() {
            s.tray(&view);
        }
    });
}

fn to_review() -> ListQuery {
    ListQuery {
        to_review: true,
        ..ListQuery::default()
    }
}

fn mine() -> ListQuery {
    ListQuery {
        mine: true,
        ..ListQuery::default()
    }
}

/// Shows `note`; its actions run as the logged-in user. The notifier
/// remembers it until it is closed, so it can be closed when its request
/// moves on ([`close_stale`]).
pub fn show_note(d: &Arc<Desktop>, note: Note) {
    let d = d.clone();
    let id = note.request_id.clone();
    let shown_note = note.clone();
    let d_shown = d.clone();
    let server_id = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let server_id2 = server_id.clone();
    notifications::show(
        note,
        move |nid| {
            server_id2.store(nid, std::sync::atomic::Ordering::SeqCst);
            d_shown.notifier.shown(&shown_note, nid);
        },
        move |action| match action {
            "__closed" => d
                .notifier
                .closed(server_id.load(std::sync::atomic::Ordering::SeqCst)),
            "approve" => {
                tauri::async_runtime::spawn(async move {
                    // The server's rules apply (no self-approval, one vote, ...).
                    let r = match d.client().await {
                        Ok(c) => c
                            .approve(&id, None, None)
                            .await
                            .map_err(|e| CommandError::from(e).message),
                        Err(e) => Err(e.message),
                    };
                    if let Err(e) = r {
                        notifications::show(
                            Note {
                                key: format!("approve-failed:{id}"),
                                request_id: id.clone(),
                                summary: "Could not approve the request".into(),
                                body: e,
                                urgency: notifications::Urgency::Normal,
                                actions: Vec::new(),
                            },
                            |_| {},
                            |_| {},
                        );
                        open_request(&d, &id);
                    }
                });
            }
            // Open, and Deny (a deny needs a comment): show the request.
            _ => open_request(&d, &id),
        },
    );
}

/// Closes the notifications about `r` that no longer fit it (decided,
/// cancelled, lapsed, ended, extended).
pub fn close_stale(d: &Desktop, r: &RequestView) {
    let ids = d.notifier.stale(r);
    if !ids.is_empty() {
        tracing::debug!(request = %r.request.id(), ?ids, "closing notifications");
        tauri::async_runtime::spawn(async move { crate::bus::close_notifications(&ids).await });
    }
}

/// Brings the window forward on request `id` (`jit:open-request`).
pub fn open_request(d: &Desktop, id: &str) {
    if let Some(s) = d.sink() {
        s.show_window();
        s.emit("jit:open-request", serde_json::json!({ "id": id }));
    }
}

struct Loop {
    d: Arc<Desktop>,
    client: Client,
    core: LiveCore,
    mine: Vec<RequestView>,
}

impl Loop {
    async fn handle(&mut self, id: i64, mut data: EventData) {
        self.ask_awaits_review(&mut data).await;
        let settings = self.d.settings.get();
        let Some(note) = self.core.on_event(&self.d.notifier, &settings, id, &data) else {
            return;
        };
        if let Some(s) = self.d.sink() {
            s.emit(
                "jit:event",
                serde_json::to_value(&data).expect("event serialises"),
            );
        }
        if let Some(r) = &data.request {
            close_stale(&self.d, r);
        }
        if let Some(n) = note {
            show_note(&self.d, n);
        }
    }

    /// A new request of someone else's arrives in the event stream without
    /// the server's per-caller answer (`awaits_your_review` is `None`:
    /// stream rows are rendered once for every subscriber). Whether it
    /// awaits this user's review is the server's rule, so ask it for the
    /// request as this user sees it; if that fails, the answer stays
    /// unknown and no review notification is shown (the tray's list, from
    /// the server too, still counts it).
    async fn ask_awaits_review(&self, data: &mut EventData) {
        let ask = data.record.event == EventKind::RequestCreated
            && data.request.as_ref().is_some_and(|r| {
                r.awaits_your_review.is_none()
                    && r.request.requester_id() != self.core.viewer.user_id
            });
        if ask {
            if let Ok(v) = self.client.get(&data.record.request_id).await {
                data.request = Some(v);
            }
        }
    }

    /// Lists for the tray and the expiry warnings.
    async fn refresh_lists(&mut self) -> Result<(), ClientError> {
        let review = self.client.list(&to_review()).await?;
        let view = tray_view(&review, self.d.settings.get().notifications_paused);
        if let Some(s) = self.d.sink() {
            s.tray(&view);
        }
        self.mine = self.client.list(&mine()).await?;
        // Anything decided or ended while the app was not listening.
        for r in review.iter().chain(self.mine.iter()) {
            close_stale(&self.d, r);
        }
        Ok(())
    }

    fn check_expiring(&mut self) {
        let settings = self.d.settings.get();
        let now = self.client.server_now();
        for n in self
            .core
            .expiring(&self.d.notifier, &settings, &self.mine, now)
        {
            show_note(&self.d, n);
        }
    }

    /// One poll while the stream is down: lists, then the audit rows after
    /// the last event id, handled like streamed events.
    async fn poll(&mut self) -> Result<(), ClientError> {
        self.refresh_lists().await?;
        let since = self.core.cursor.last_id.unwrap_or(0);
        let rows = self.client.audit(since).await?;
        for rec in rows {
            let request = self.client.get(&rec.request_id).await.ok();
            let id = rec.seq;
            self.handle(
                id,
                EventData {
                    record: rec,
                    request,
                },
            )
            .await;
        }
        Ok(())
    }

    async fn load_viewer(&mut self) {
        if !self.core.viewer.user_id.is_empty() {
            return;
        }
        if let Ok(me) = self.client.me().await {
            self.core.viewer = Viewer { user_id: me.id };
        }
    }

    /// Where the stream starts: after the newest event the user may see
    /// now, so old events are not notified again at start.
    async fn baseline(&mut self) {
        if self.core.cursor.last_id.is_some() {
            return;
        }
        if let Ok(rows) = self.client.audit(0).await {
            self.core.cursor.last_id = Some(rows.iter().map(|r| r.seq).max().unwrap_or(0));
        }
    }
}

/// The live loop of one login. Ends when the user logs out.
pub async fn run(d: Arc<Desktop>, client: Client) {
    // Asking the notification server for its capabilities is a D-Bus call
    // that can stall (server still starting, bus busy): never let it hold
    // the live connection back; without an answer, offer no actions.
    let notifier_actions = {
        let d = d.clone();
        let ask = tokio::task::spawn_blocking(move || d.notifier.server_has_actions());
        match tokio::time::timeout(Duration::from_secs(2), ask).await {
            Ok(Ok(has)) => has,
            _ => {
                tracing::warn!(
                    "notification server did not report its capabilities in 2 s; no actions"
                );
                false
            }
        }
    };
    let mut l = Loop {
        d: d.clone(),
        client,
        core: LiveCore {
            actions: notifier_actions,
            ..LiveCore::default()
        },
        mine: Vec::new(),
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        if !d.session.logged_in().await {
            return;
        }
        l.load_viewer().await;
        l.baseline().await;
        let mut clean_end = false;
        let mut lasted = Duration::ZERO;
        if l.core.cursor.last_id.is_some() {
            match l.client.events(l.core.cursor.last_id).await {
                Ok(stream) => {
                    let started = Instant::now();
                    d.set_connection(Connection::Live);
                    let _ = l.refresh_lists().await;
                    l.check_expiring();
                    let mut stream = Box::pin(stream);
                    let mut tick = tokio::time::interval(Duration::from_secs(10));
                    loop {
                        tokio::select! {
                            item = stream.next() => match item {
                                Some(Ok(ev)) => {
                                    l.handle(ev.id, ev.data).await;
                                    let _ = l.refresh_lists().await;
                                }
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "event stream broke");
                                    break;
                                }
                                None => { clean_end = true; break; }
                            },
                            _ = tick.tick() => l.check_expiring(),
                        }
                    }
                    lasted = started.elapsed();
                }
                Err(e) => tracing::warn!(error = %e, "cannot open the event stream"),
            }
        }
        if lasted > Duration::from_secs(30) {
            backoff = Duration::from_secs(1);
            if clean_end {
                // The server ended a long stream (token expiry): reconnect now.
                continue;
            }
        }
        // The stream is down: poll until the next attempt.
        let until = Instant::now() + backoff;
        loop {
            if !d.session.logged_in().await {
                return;
            }
            l.load_viewer().await;
            l.baseline().await;
            match l.poll().await {
                Ok(()) => d.set_connection(Connection::Polling),
                Err(e) => {
                    tracing::debug!(error = %e, "poll failed");
                    d.set_connection(Connection::Offline);
                }
            }
            l.check_expiring();
            let now = Instant::now();
            if now >= until {
                break;
            }
            tokio::time::sleep((until - now).min(POLL_EVERY)).await;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{event, request, to_review};

    fn bob_core() -> LiveCore {
        LiveCore {
            cursor: Cursor::default(),
            viewer: Viewer {
                user_id: "u-bob".into(),
            },
            actions: true,
        }
    }

    #[test]
    fn a_reconnect_never_repeats_an_event_or_a_notification() {
        let notifier = Notifier::new();
        let s = Settings::default();
        let mut core = bob_core();
        core.cursor.last_id = Some(10); // baseline at start
        let r1 = to_review("r1", "alice", "pending");
        let r2 = to_review("r2", "carol", "pending");

        // Live: two new requests.
        let n1 = core.on_event(
            &notifier,
            &s,
            11,
            &event(11, "request.created", &r1, "alice"),
        );
        assert!(matches!(n1, Some(Some(ref n)) if n.request_id == "r1"));
        let n2 = core.on_event(
            &notifier,
            &s,
            12,
            &event(12, "request.created", &r2, "carol"),
        );
        assert!(matches!(n2, Some(Some(_))));

        // The stream drops; reconnecting with Last-Event-ID = 12 should
        // resume after it, but even a server replaying 11 and 12 changes
        // nothing: not emitted again, not notified again.
        assert_eq!(core.cursor.last_id, Some(12));
        assert!(core
            .on_event(
                &notifier,
                &s,
                11,
                &event(11, "request.created", &r1, "alice")
            )
            .is_none());
        assert!(core
            .on_event(
                &notifier,
                &s,
                12,
                &event(12, "request.created", &r2, "carol")
            )
            .is_none());

        // While polling, event 13 arrives through the audit rows...
        let r3 = to_review("r3", "dave", "pending");
        let polled = core.on_event(
            &notifier,
            &s,
            13,
            &event(13, "request.created", &r3, "dave"),
        );
        assert!(matches!(polled, Some(Some(_))));
        // ...and the reconnected stream replays it: nothing new.
        assert!(core
            .on_event(
                &notifier,
                &s,
                13,
                &event(13, "request.created", &r3, "dave")
            )
            .is_none());

        // A new login (fresh cursor) with the same notifier: the same
        // request is not notified twice either.
        let mut again = bob_core();
        let re = again.on_event(
            &notifier,
            &s,
            11,
            &event(11, "request.created", &r1, "alice"),
        );
        assert!(
            matches!(re, Some(None)),
            "emitted to the UI but not notified again: {re:?}"
        );
    }

    #[test]
    fn events_without_a_note_still_advance_the_cursor() {
        let notifier = Notifier::new();
        let s = Settings::default();
        let mut core = bob_core();
        let r = request("r1", "alice", "active");
        assert!(matches!(
            core.on_event(&notifier, &s, 5, &event(5, "grant.granted", &r, "jitd")),
            Some(None)
        ));
        assert_eq!(core.cursor.last_id, Some(5));
    }

    #[test]
    fn paused_notifications_are_not_shown_later() {
        let notifier = Notifier::new();
        let paused = Settings {
            notifications_paused: true,
            ..Settings::default()
        };
        let mut core = bob_core();
        let r = to_review("r1", "alice", "pending");
        let e = event(1, "request.created", &r, "alice");
        assert!(matches!(
            core.on_event(&notifier, &paused, 1, &e),
            Some(None)
        ));
        // Unpaused, a replay of the same request does not pop up late.
        let mut core2 = bob_core();
        assert!(matches!(
            core2.on_event(&notifier, &Settings::default(), 1, &e),
            Some(None)
        ));
    }
}
