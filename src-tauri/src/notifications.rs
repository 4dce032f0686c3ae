//! Native notifications (notify-rust), per the contract's table.
//!
//! The decision *what* to show is pure ([`note_for_event`],
//! [`expiring_notes`]) and tested; [`Notifier`] remembers what was shown (so
//! a reconnect or a poll never repeats one) and shows notes on a thread,
//! where it also waits for the user's action.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use jit_core::api::{EventData, EventKind, RequestView};
use jit_core::model::Status;

use crate::settings::Settings;

/// The app name notifications carry.
pub const APP_NAME: &str = "JIT Access";

/// Who the user is, for deciding which notifications concern them.
/// Whether a request awaits their review is the server's answer
/// (`RequestView::awaits_your_review`), never a rule of the app's.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// Keycloak subject id.
    pub user_id: String,
}

/// How loudly a notification asks for attention (urgent requests: critical).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Normal,
    Critical,
}

/// An action button: id as sent back by the notification server, and label.
pub type Action = (&'static str, &'static str);

/// The notification's default action: open the app at the request.
pub const OPEN: Action = ("default", "Open");
/// Approve from the notification: a vote through jitd, whose rules apply (no self-approval, one vote).
pub const APPROVE: Action = ("approve", "Approve");
/// Deny from the notification (opens the app for the required comment).
pub const DENY: Action = ("deny", "Deny");

/// One notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// What makes it unique: a note with a key already shown is never shown again.
    pub key: String,
    pub request_id: String,
    pub summary: String,
    pub body: String,
    pub urgency: Urgency,
    /// Empty when the server lacks the `actions` capability.
    pub actions: Vec<Action>,
}

impl Note {
    /// Critical notes stay until acted on.
    pub fn sticky(&self) -> bool {
        self.urgency == Urgency::Critical
    }
}

fn human(secs: i64) -> String {
    jit_core::format_duration(secs)
}

fn entitlement_name(data: &EventData) -> String {
    data.request
        .as_ref()
        .map(|r| r.entitlement_name.clone())
        .unwrap_or_else(|| data.record.entitlement_id.clone())
}

/// Body: the justification, the duration and (for approvers) the ticket.
fn body(r: &RequestView, approver: bool) -> String {
    let q = &r.request;
    let mut line = format!("Duration: {}", human(q.duration_secs()));
    if approver {
        if let Some(t) = &q.ticket() {
            line.push_str(&format!(" · Ticket: {t}"));
        }
    }
    format!("{}\n{line}", q.justification())
}

/// The notification (if any) that server event `data` means for `viewer`.
/// `actions`: whether the notification server supports actions.
pub fn note_for_event(data: &EventData, viewer: &Viewer, actions: bool) -> Option<Note> {
    let r = data.request.as_ref()?;
    let q = &r.request;
    let id = q.id().to_string();
    let e = entitlement_name(data);
    let own = q.requester_id() == viewer.user_id;
    let event = &data.record.event;

    if !own {
        // Approver: a new request that awaits their decision (or a
        // break-glass activation they must review), as the server says
        // (`awaits_your_review`: the core rule, which also excludes their
        // own requests). Unknown (`None`, an event not made for this
        // caller) is not notified; the live loop asks the server first.
        let awaits = r.awaits_your_review == Some(true);
        let new_request = *event == EventKind::RequestCreated;
        if !(awaits && new_request) {
            return None;
        }
        let urgent = q.urgent() || q.break_glass();
        let decidable = q.status() == Status::Pending;
        if !decidable && !q.break_glass() {
            return None; // already decided by someone else
        }
        let summary = format!(
            "{} request: {} → {e}",
            if urgent { "URGENT access" } else { "Access" },
            q.requester_username()
        );
        let mut acts = Vec::new();
        if actions {
            acts.push(OPEN);
            if decidable {
                acts.push(APPROVE);
                acts.push(DENY);
            }
        }
        return Some(Note {
            key: format!("review:{id}"),
            request_id: id,
            summary,
            body: body(r, true),
            urgency: if urgent {
                Urgency::Critical
            } else {
                Urgency::Normal
            },
            actions: acts,
        });
    }

    // Requester: what happened to my request.
    let (kind, summary) = match event {
        EventKind::RequestApproved => ("approved", format!("Request approved: {e}")),
        EventKind::RequestDenied => ("denied", format!("Request denied: {e}")),
        EventKind::GrantGranted => ("granted", format!("Access granted: {e}")),
        EventKind::GrantExpired => ("expired", format!("Access expired: {e}")),
        EventKind::GrantRevoked => ("revoked", format!("Access revoked: {e}")),
        _ => return None,
    };
    let mut b = body(r, false);
    if kind == "denied" || kind == "revoked" {
        if let Some(why) = &data.record.reason {
            b = format!("{} ({}): {why}\n{b}", data.record.actor, kind);
        }
    }
    Some(Note {
        key: format!("{kind}:{id}"),
        request_id: id,
        summary,
        body: b,
        urgency: Urgency::Normal,
        actions: if actions { vec![OPEN] } else { Vec::new() },
    })
}

/// "Access expires in 5 minutes" for the user's active grants with at most
/// five minutes (and more than zero) left at `server_now`. Keyed by the
/// expiry, so an extended grant warns again before its new end.
pub fn expiring_notes(
    mine: &[RequestView],
    viewer: &Viewer,
    server_now: DateTime<Utc>,
    actions: bool,
) -> Vec<Note> {
    mine.iter()
        .filter(|r| {
            r.request.status() == Status::Active && r.request.requester_id() == viewer.user_id
        })
        .filter_map(|r| {
            let exp = r.request.expires_at()?;
            let left = (exp - server_now).num_seconds();
            (left > 0 && left <= 300).then(|| Note {
                key: format!("expiring:{}:{}", r.request.id(), exp.timestamp()),
                request_id: r.request.id().to_string(),
                summary: format!("Access expires in 5 minutes: {}", r.entitlement_name),
                body: format!(
                    "{}\nEnds at {} UTC",
                    r.request.justification(),
                    exp.format("%H:%M:%S")
                ),
                urgency: Urgency::Normal,
                actions: if actions { vec![OPEN] } else { Vec::new() },
            })
        })
        .collect()
}

/// Whether `settings` let `note` through.
pub fn allowed(note: &Note, settings: &Settings) -> bool {
    !settings.notifications_paused
        && (!settings.mute_non_urgent || note.urgency == Urgency::Critical)
}

/// Keys of notes already handled, bounded (oldest forgotten first).
#[derive(Debug, Default)]
pub struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

const SEEN_MAX: usize = 10_000;

impl Seen {
    /// Records `key`; true if it was new.
    pub fn first_time(&mut self, key: &str) -> bool {
        if self.set.contains(key) {
            return false;
        }
        self.set.insert(key.to_string());
        self.order.push_back(key.to_string());
        while self.order.len() > SEEN_MAX {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// Whether the notification with `key` no longer fits request `r` as it
/// is now: a review whose request was decided, cancelled or lapsed; an
/// "expires in 5 minutes" whose grant ended or was extended; "approved"
/// once granted; "granted" once ended. Final outcomes (denied, expired,
/// revoked) stay (they time out by themselves).
pub fn is_stale(key: &str, r: &RequestView) -> bool {
    let q = &r.request;
    let kind = key.split(':').next().unwrap_or("");
    match kind {
        "review" => {
            let break_glass_review = q.break_glass()
                && q.review_required()
                && q.reviewed_at().is_none()
                && !q.status().is_terminal();
            q.status() != Status::Pending && !break_glass_review
        }
        "expiring" => {
            let exp = key.rsplit(':').next().and_then(|t| t.parse::<i64>().ok());
            q.status() != Status::Active || q.expires_at().map(|x| x.timestamp()) != exp
        }
        "approved" => q.status() != Status::Approved,
        "granted" => q.status() != Status::Active,
        _ => false,
    }
}

/// Shows notes once each, honouring the settings; remembers which are on
/// screen so they can be closed when their request moves on.
pub struct Notifier {
    seen: Mutex<Seen>,
    actions: Mutex<Option<bool>>,
    /// Request id → (note key, notification server id) of notes shown.
    open: Mutex<HashMap<String, Vec<(String, u32)>>>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}

impl Notifier {
    /// A notifier that has shown nothing yet.
    pub fn new() -> Notifier {
        Notifier {
            seen: Mutex::new(Seen::default()),
            actions: Mutex::new(None),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Records that `note` is on screen with server id `id`.
    pub fn shown(&self, note: &Note, id: u32) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(note.request_id.clone())
            .or_default()
            .push((note.key.clone(), id));
    }

    /// Forgets notification `id` (closed by the user or the server).
    pub fn closed(&self, id: u32) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for v in open.values_mut() {
            v.retain(|(_, i)| *i != id);
        }
        open.retain(|_, v| !v.is_empty());
    }

    /// The server ids of the notes about `r` that no longer fit it
    /// ([`is_stale`]); they are forgotten here and must be closed.
    pub fn stale(&self, r: &RequestView) -> Vec<u32> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let Some(v) = open.get_mut(r.request.id()) else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        v.retain(|(key, id)| {
            let stale = is_stale(key, r);
            if stale {
                ids.push(*id);
            }
            !stale
        });
        if v.is_empty() {
            open.remove(r.request.id());
        }
        ids
    }

    /// True the first time `key` is offered (it is then remembered).
    pub fn first_time(&self, key: &str) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_time(key)
    }

    /// Whether the notification server lists the `actions` capability
    /// (asked once; a missing server counts as no).
    pub fn server_has_actions(&self) -> bool {
        let mut a = self.actions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = *a {
            return v;
        }
        let v = server_capabilities()
            .map(|caps| caps.iter().any(|c| c == "actions"))
            .unwrap_or(false);
        *a = Some(v);
        v
    }

    /// Filters `note` through dedup and settings. Returns it if it should be
    /// shown now. A note suppressed by the settings still counts as handled.
    pub fn admit(&self, note: Note, settings: &Settings) -> Option<Note> {
        if !self.first_time(&note.key) {
            return None;
        }
        allowed(&note, settings).then_some(note)
    }
}

#[cfg(target_os = "linux")]
fn server_capabilities() -> Option<Vec<String>> {
    notify_rust::get_capabilities().ok()
}

#[cfg(not(target_os = "linux"))]
fn server_capabilities() -> Option<Vec<String>> {
    Some(vec!["actions".into()])
}

/// Shows `note` on a thread; `on_shown` gets the server's id of the
/// notification, `on_action` the action id the user chose (`default`,
/// `approve`, `deny`), or `__closed` when it was closed without one.
pub fn show(
    note: Note,
    on_shown: impl FnOnce(u32) + Send + 'static,
    on_action: impl FnOnce(&str) + Send + 'static,
) {
    std::thread::Builder::new()
        .name("jit-notification".into())
        .spawn(move || {
            let mut n = notify_rust::Notification::new();
            n.appname(APP_NAME)
                .summary(&note.summary)
                .body(&note.body)
                .icon("dialog-password");
            #[cfg(all(unix, not(target_os = "macos")))]
            {
                n.urgency(match note.urgency {
                    Urgency::Critical => notify_rust::Urgency::Critical,
                    Urgency::Normal => notify_rust::Urgency::Normal,
                });
            }
            if note.sticky() {
                n.timeout(notify_rust::Timeout::Never);
            }
            for (id, label) in &note.actions {
                n.action(id, label);
            }
            match n.show() {
                Ok(handle) => {
                    #[cfg(all(unix, not(target_os = "macos")))]
                    {
                        on_shown(handle.id());
                        if !note.actions.is_empty() {
                            handle.wait_for_action(on_action);
                        }
                    }
                    #[cfg(not(all(unix, not(target_os = "macos"))))]
                    let _ = (handle, on_shown, on_action);
                }
                Err(e) => {
                    tracing::warn!(error = %e, summary = %note.summary, "notification failed")
                }
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::warn!(error = %e, "cannot start notification thread"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{at, changed, event, request, to_review};

    fn bob() -> Viewer {
        Viewer {
            user_id: "u-bob".into(),
        }
    }

    fn alice() -> Viewer {
        Viewer {
            user_id: "u-alice".into(),
        }
    }

    #[test]
    fn notes_are_closed_once_their_request_moved_on() {
        let notifier = Notifier::new();
        let mut r = to_review("r1", "alice", "pending");
        let review =
            note_for_event(&event(1, "request.created", &r, "alice"), &bob(), true).unwrap();
        notifier.shown(&review, 7);
        // Still pending: nothing to close.
        assert!(notifier.stale(&r).is_empty());
        for status in ["approved", "denied", "cancelled", "lapsed"] {
            let decided = request("r1", "alice", status);
            assert!(is_stale("review:r1", &decided), "{status}");
        }
        r = request("r1", "alice", "approved");
        assert_eq!(notifier.stale(&r), vec![7]);
        assert!(notifier.stale(&r).is_empty(), "forgotten once closed");

        // Expiry warning: stale once the grant ended or moved.
        let mut g = request("g1", "alice", "active");
        g = changed(g, |s| s.expires_at = Some(at("2030-01-01T12:10:00Z")));
        let key = format!("expiring:g1:{}", at("2030-01-01T12:10:00Z").timestamp());
        assert!(!is_stale(&key, &g));
        g = changed(g, |s| s.expires_at = Some(at("2030-01-01T12:25:00Z")));
        assert!(is_stale(&key, &g), "extended");
        let ended = request("g1", "alice", "revoked");
        assert!(is_stale(&key, &ended));
        assert!(is_stale("granted:g1", &ended));
        assert!(!is_stale("revoked:g1", &ended), "final outcomes stay");

        // A notification closed by the user is forgotten.
        let n2 = note_for_event(
            &event(
                2,
                "request.created",
                &to_review("r2", "carol", "pending"),
                "carol",
            ),
            &bob(),
            true,
        )
        .unwrap();
        notifier.shown(&n2, 9);
        notifier.closed(9);
        assert!(notifier
            .stale(&request("r2", "carol", "approved"))
            .is_empty());
    }

    #[test]
    fn approver_gets_a_new_request_with_actions() {
        let r = to_review("r1", "alice", "pending");
        let n = note_for_event(&event(1, "request.created", &r, "alice"), &bob(), true).unwrap();
        assert_eq!(
            n.summary,
            "Access request: alice → Production database admin"
        );
        assert_eq!(n.urgency, Urgency::Normal);
        assert_eq!(n.actions, vec![OPEN, APPROVE, DENY]);
        assert!(
            n.body.contains("rotate the replica credentials"),
            "{}",
            n.body
        );
        assert!(
            n.body.contains("10m") && n.body.contains("INC-42"),
            "{}",
            n.body
        );
        assert_eq!(n.key, "review:r1");
        assert_eq!(n.request_id, "r1");
    }

    #[test]
    fn urgent_and_break_glass_are_critical_and_sticky() {
        let mut r = to_review("r1", "alice", "pending");
        r = changed(r, |s| s.urgent = true);
        let n = note_for_event(&event(1, "request.created", &r, "alice"), &bob(), true).unwrap();
        assert_eq!(
            n.summary,
            "URGENT access request: alice → Production database admin"
        );
        assert_eq!(n.urgency, Urgency::Critical);
        assert!(n.sticky());
        assert_eq!(n.actions, vec![OPEN, APPROVE, DENY]);

        // Break-glass is active already: nothing to approve, only open.
        let mut g = to_review("r2", "alice", "active");
        g = changed(g, |s| s.break_glass = true);
        let n = note_for_event(&event(2, "request.created", &g, "alice"), &bob(), true).unwrap();
        assert!(n.summary.starts_with("URGENT access request: alice"));
        assert_eq!(n.actions, vec![OPEN]);
    }

    #[test]
    fn no_actions_without_the_servers_capability() {
        let r = to_review("r1", "alice", "pending");
        let n = note_for_event(&event(1, "request.created", &r, "alice"), &bob(), false).unwrap();
        assert!(n.actions.is_empty());
    }

    #[test]
    fn my_own_request_never_offers_approve() {
        // bob approves prod-db-admin but asked for it himself.
        let r = request("r1", "bob", "pending");
        for ev in ["request.created", "request.voted", "request.approved"] {
            let n = note_for_event(&event(1, ev, &r, "bob"), &bob(), true);
            assert!(
                n.as_ref().is_none_or(
                    |n| !n.actions.contains(&APPROVE) && !n.summary.contains("access request")
                ),
                "{ev}: {n:?}"
            );
        }
    }

    #[test]
    fn not_awaiting_me_or_unknown_means_no_note() {
        // The server says it does not await carol (not an approver of it,
        // or already decided), or nothing was said (an event rendered for
        // every subscriber): no review note.
        let carol = Viewer {
            user_id: "u-carol".into(),
        };
        let not_mine = RequestView {
            awaits_your_review: Some(false),
            ..request("r1", "alice", "pending")
        };
        assert!(note_for_event(
            &event(1, "request.created", &not_mine, "alice"),
            &carol,
            true
        )
        .is_none());
        let unknown = request("r1", "alice", "pending");
        assert!(note_for_event(
            &event(1, "request.created", &unknown, "alice"),
            &carol,
            true
        )
        .is_none());
        let r = to_review("r1", "alice", "pending");
        let done = request("r1", "alice", "approved");
        assert!(
            note_for_event(&event(1, "request.created", &done, "alice"), &bob(), true).is_none()
        );
        // Other people's decisions are not the approver's business here.
        assert!(note_for_event(&event(2, "grant.granted", &r, "jitd"), &bob(), true).is_none());
    }

    #[test]
    fn requester_notes_follow_the_contract() {
        let r = request("r1", "alice", "active");
        let cases = [
            (
                "request.approved",
                "Request approved: Production database admin",
            ),
            (
                "request.denied",
                "Request denied: Production database admin",
            ),
            ("grant.granted", "Access granted: Production database admin"),
            ("grant.expired", "Access expired: Production database admin"),
            ("grant.revoked", "Access revoked: Production database admin"),
        ];
        for (ev, summary) in cases {
            let n = note_for_event(&event(1, ev, &r, "bob"), &alice(), true)
                .unwrap_or_else(|| panic!("{ev}"));
            assert_eq!(n.summary, summary);
            assert_eq!(n.urgency, Urgency::Normal);
            assert_eq!(n.actions, vec![OPEN]);
            assert!(!n.body.contains("INC-42"), "no ticket for requesters");
        }
        // Her own actions and other steps are not notified.
        for ev in [
            "request.created",
            "grant.dropped",
            "request.cancelled",
            "request.voted",
        ] {
            assert!(
                note_for_event(&event(1, ev, &r, "alice"), &alice(), true).is_none(),
                "{ev}"
            );
        }
    }

    #[test]
    fn denial_reason_is_in_the_body() {
        let r = request("r1", "alice", "denied");
        let mut e = event(1, "request.denied", &r, "bob");
        e.record.reason = Some("not during the freeze".into());
        let n = note_for_event(&e, &alice(), true).unwrap();
        assert!(n.body.contains("not during the freeze"), "{}", n.body);
    }

    #[test]
    fn five_minutes_left_once_per_expiry() {
        let mut r = request("r1", "alice", "active");
        r = changed(r, |s| s.expires_at = Some(at("2030-01-01T12:10:00Z")));
        let mine = vec![r.clone()];
        let early = expiring_notes(&mine, &alice(), at("2030-01-01T12:04:00Z"), true);
        assert!(early.is_empty(), "6 minutes left: not yet");
        let due = expiring_notes(&mine, &alice(), at("2030-01-01T12:05:30Z"), true);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].summary,
            "Access expires in 5 minutes: Production database admin"
        );
        assert!(expiring_notes(&mine, &alice(), at("2030-01-01T12:10:00Z"), true).is_empty());
        // Someone else's grant (as an auditor might see) is not mine.
        assert!(expiring_notes(&mine, &bob(), at("2030-01-01T12:05:30Z"), true).is_empty());

        let notifier = Notifier::new();
        let s = Settings::default();
        assert!(notifier.admit(due[0].clone(), &s).is_some());
        assert!(notifier.admit(due[0].clone(), &s).is_none(), "once");
        // Extended: a new expiry warns again.
        let mut ext = r;
        ext = changed(ext, |s| s.expires_at = Some(at("2030-01-01T12:40:00Z")));
        let again = expiring_notes(&[ext], &alice(), at("2030-01-01T12:36:00Z"), true);
        assert!(notifier.admit(again[0].clone(), &s).is_some());
    }

    #[test]
    fn settings_mute_and_pause() {
        let r = to_review("r1", "alice", "pending");
        let normal =
            note_for_event(&event(1, "request.created", &r, "alice"), &bob(), true).unwrap();
        let mut u = r.clone();
        u = changed(u, |s| s.urgent = true);
        let urgent =
            note_for_event(&event(2, "request.created", &u, "alice"), &bob(), true).unwrap();
        let mute = Settings {
            mute_non_urgent: true,
            notifications_paused: false,
        };
        assert!(!allowed(&normal, &mute));
        assert!(allowed(&urgent, &mute));
        let paused = Settings {
            mute_non_urgent: false,
            notifications_paused: true,
        };
        assert!(!allowed(&urgent, &paused));
        assert!(allowed(&normal, &Settings::default()));
    }
}
