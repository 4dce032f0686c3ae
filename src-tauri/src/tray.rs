//! The tray icon: idle / pending / urgent states (icons/tray-*.png), and a
//! menu: Open, "N pending", Pause notifications, Quit. What it shows is
//! computed by pure functions ([`tray_view`], [`pending_label`],
//! [`tooltip`]); [`create`] builds the real icon.

use std::sync::Arc;

use tauri::image::Image;
use tauri::menu::{CheckMenuItem, Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager, Runtime};

use crate::state::Desktop;

pub use crate::tray_view::{pending_label, tooltip, tray_view, TrayState, TrayView};

fn icon(state: TrayState) -> Image<'static> {
    let bytes: &'static [u8] = match state {
        TrayState::Idle => include_bytes!("../../icons/tray-idle.png"),
        TrayState::Pending => include_bytes!("../../icons/tray-pending.png"),
        TrayState::Urgent => include_bytes!("../../icons/tray-urgent.png"),
    };
    Image::from_bytes(bytes).expect("bundled tray icon is a valid PNG")
}

/// The live tray and the menu items that change.
pub struct Tray<R: Runtime> {
    icon: TrayIcon<R>,
    pending: MenuItem<R>,
    pause: CheckMenuItem<R>,
}

impl<R: Runtime> Tray<R> {
    /// Shows `v`: icon, tooltip and menu labels.
    pub fn show(&self, v: &TrayView) {
        let _ = self.icon.set_icon(Some(icon(v.state)));
        let _ = self.icon.set_tooltip(Some(tooltip(v)));
        let _ = self.pending.set_text(pending_label(v));
        let _ = self.pause.set_checked(v.paused);
    }
}

/// Brings the main window forward.
pub fn show_main<R: Runtime>(app: &AppHandle<R>) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
    }
}

/// Builds the tray icon and its menu.
pub fn create<R: Runtime>(app: &AppHandle<R>, desktop: Arc<Desktop>) -> tauri::Result<Tray<R>> {
    let paused = desktop.settings.get().notifications_paused;
    let v = TrayView {
        paused,
        ..TrayView::default()
    };
    let open = MenuItem::with_id(app, "open", "Open JIT Access", true, None::<&str>)?;
    let pending = MenuItem::with_id(app, "pending", pending_label(&v), true, None::<&str>)?;
    let pause = CheckMenuItem::with_id(
        app,
        "pause",
        "Pause notifications",
        true,
        paused,
        None::<&str>,
    )?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let menu = Menu::with_items(
        app,
        &[
            &open,
            &pending,
            &PredefinedMenuItem::separator(app)?,
            &pause,
            &PredefinedMenuItem::separator(app)?,
            &quit,
        ],
    )?;
    let d = desktop.clone();
    let icon = TrayIconBuilder::with_id("jit-tray")
        .icon(icon(TrayState::Idle))
        .tooltip(tooltip(&v))
        .menu(&menu)
        .show_menu_on_left_click(false)
        .on_menu_event(move |app, ev| match ev.id().as_ref() {
            "open" | "pending" => show_main(app),
            "pause" => {
                let mut s = d.settings.get();
                s.notifications_paused = !s.notifications_paused;
                if let Err(e) = d.settings.set(s) {
                    tracing::warn!(error = %e, "cannot save settings");
                }
                crate::live::refresh_tray(d.clone());
            }
            "quit" => {
                let app = app.clone();
                tauri::async_runtime::spawn(crate::request_quit(app));
            }
            _ => {}
        })
        .on_tray_icon_event(|tray, ev| {
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = ev
            {
                show_main(tray.app_handle());
            }
        })
        .build(app)?;
    Ok(Tray {
        icon,
        pending,
        pause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{changed, request};

    #[test]
    fn idle_pending_urgent() {
        let v = tray_view(&[], false);
        assert_eq!(v.state, TrayState::Idle);
        assert_eq!(pending_label(&v), "0 pending");
        assert_eq!(tooltip(&v), "JIT Access — 0 pending");

        let a = request("a", "alice", "pending");
        let mut b = request("b", "carol", "pending");
        let v = tray_view(&[a.clone(), b.clone()], false);
        assert_eq!(v.state, TrayState::Pending);
        assert_eq!(pending_label(&v), "2 pending");

        b = changed(b, |s| s.urgent = true);
        let v = tray_view(&[a.clone(), b], true);
        assert_eq!(v.state, TrayState::Urgent);
        assert_eq!(v.urgent, 1);
        assert_eq!(pending_label(&v), "2 pending (1 urgent)");
        assert_eq!(
            tooltip(&v),
            "JIT Access — 2 pending (1 urgent) — notifications paused"
        );

        // Decided requests do not count.
        let done = request("c", "alice", "approved");
        assert_eq!(tray_view(&[done], false).state, TrayState::Idle);
    }

    #[test]
    fn tray_icons_are_valid_pngs() {
        for s in [TrayState::Idle, TrayState::Pending, TrayState::Urgent] {
            let i = icon(s);
            assert_eq!((i.width(), i.height()), (32, 32));
        }
    }
}
