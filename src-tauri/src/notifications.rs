//! Native notifications (notify-rust), per the contract's table.
//!
//! The decision *what* to show is pure ([`note_for_event`],
//! [`expiring_notes`]) and tested; [`Notifier`] remembers what was shown (so
//! a reconnect or a poll never repeats one) and shows notes on a thread,
//! where it also waits for the user's action.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use jit_core::api::{EventData, RequestView};
use jit_core::model::Status;

use crate::settings::Settings;

/// The app name notifications carry.
pub const APP_NAME: &str = "JIT Access";

/// Who the user is, for deciding which notifications concern them.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// Keycloak subject id.
    pub user_id: String,
    /// Entitlement ids the user may approve.
    pub approves: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Normal,
    Critical,
}

/// An action button: id as sent back by the notification server, and label.
pub type Action = (&'static str, &'static str);

pub const OPEN: Action = ("default", "Open");
pub const APPROVE: Action = ("approve", "Approve");
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
    let mut line = format!("Duration: {}", human(q.duration_secs));
    if approver {
        if let Some(t) = &q.ticket {
            line.push_str(&format!(" · Ticket: {t}"));
        }
    }
    format!("{}\n{line}", q.justification)
}

/// The notification (if any) that server event `data` means for `viewer`.
/// `actions`: whether the notification server supports actions.
pub fn note_for_event(data: &EventData, viewer: &Viewer, actions: bool) -> Option<Note> {
    let r = data.request.as_ref()?;
    let q = &r.request;
    let id = q.id.clone();
    let e = entitlement_name(data);
    let own = q.requester_id == viewer.user_id;
    let event = data.record.event.as_str();

    if !own {
        // Approver: a new request they may decide (or a break-glass
        // activation they must review). Never for their own request.
        let approves = viewer.approves.iter().any(|a| *a == q.entitlement_id);
        let new_request = event == "request.created";
        if !(approves && new_request) {
            return None;
        }
        let urgent = q.urgent || q.break_glass;
        let decidable = q.status == Status::Pending;
        if !decidable && !q.break_glass {
            return None; // already decided by someone else
        }
        let summary = format!(
            "{} request: {} → {e}",
            if urgent { "URGENT access" } else { "Access" },
            q.requester_username
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
        "request.approved" => ("approved", format!("Request approved: {e}")),
        "request.denied" => ("denied", format!("Request denied: {e}")),
        "grant.granted" => ("granted", format!("Access granted: {e}")),
        "grant.expired" => ("expired", format!("Access expired: {e}")),
        "grant.revoked" => ("revoked", format!("Access revoked: {e}")),
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
        .filter(|r| r.request.status == Status::Active && r.request.requester_id == viewer.user_id)
        .filter_map(|r| {
            let exp = r.request.expires_at?;
            let left = (exp - server_now).num_seconds();
            (left > 0 && left <= 300).then(|| Note {
                key: format!("expiring:{}:{}", r.request.id, exp.timestamp()),
                request_id: r.request.id.clone(),
                summary: format!("Access expires in 5 minutes: {}", r.entitlement_name),
                body: format!(
                    "{}\nEnds at {} UTC",
                    r.request.justification,
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

/// Shows notes once each, honouring the settings.
pub struct Notifier {
    seen: Mutex<Seen>,
    actions: Mutex<Option<bool>>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}

impl Notifier {
    pub fn new() -> Notifier {
        Notifier {
            seen: Mutex::new(Seen::default()),
            actions: Mutex::new(None),
        }
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

/// Shows `note` on a thread; `on_action` is called there with the action id
/// the user chose (`default`, `approve`, `deny`).
pub fn show(note: Note, on_action: impl FnOnce(&str) + Send + 'static) {
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
                    if !note.actions.is_empty() {
                        #[cfg(all(unix, not(target_os = "macos")))]
                        handle.wait_for_action(|a| {
                            if a != "__closed" {
                                on_action(a)
                            }
                        });
                        #[cfg(not(all(unix, not(target_os = "macos"))))]
                        let _ = (handle, on_action);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, summary = %note.summary, "notification failed")
                }
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::warn!(error = %e, "cannot start notification thread"));
}
