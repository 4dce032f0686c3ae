//! What the tray shows, computed by pure functions ([`tray_view`],
//! [`pending_label`], [`tooltip`]) from the requests to review. Apart from
//! `tray` (which draws it and handles its menu) so that `state` and `live`
//! can compute it without depending on the tray, which depends on them.

use jit_core::api::RequestView;
use jit_core::model::Status;

/// The tray icon's state: nothing pending, requests to review, an urgent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayState {
    Idle,
    Pending,
    Urgent,
}

/// What the tray shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayView {
    pub state: TrayState,
    pub pending: usize,
    pub urgent: usize,
    pub paused: bool,
}

impl Default for TrayView {
    fn default() -> Self {
        TrayView {
            state: TrayState::Idle,
            pending: 0,
            urgent: 0,
            paused: false,
        }
    }
}

/// The tray's view of the requests waiting for the user's decision.
pub fn tray_view(to_review: &[RequestView], paused: bool) -> TrayView {
    let open: Vec<_> = to_review
        .iter()
        .filter(|r| r.request.status() == Status::Pending)
        .collect();
    let urgent = open
        .iter()
        .filter(|r| r.request.urgent() || r.request.break_glass())
        .count();
    TrayView {
        state: if urgent > 0 {
            TrayState::Urgent
        } else if !open.is_empty() {
            TrayState::Pending
        } else {
            TrayState::Idle
        },
        pending: open.len(),
        urgent,
        paused,
    }
}

/// The menu line: `N pending`.
pub fn pending_label(v: &TrayView) -> String {
    if v.urgent > 0 {
        format!("{} pending ({} urgent)", v.pending, v.urgent)
    } else {
        format!("{} pending", v.pending)
    }
}

/// The icon's tooltip.
pub fn tooltip(v: &TrayView) -> String {
    let mut t = format!("JIT Access — {}", pending_label(v));
    if v.paused {
        t.push_str(" — notifications paused");
    }
    t
}
