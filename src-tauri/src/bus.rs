//! The app's own calls on the D-Bus session bus (zbus, the library
//! notify-rust already uses): whether a tray host is really there
//! (StatusNotifierWatcher), closing notifications (CloseNotification), and
//! the single-instance hand-over of [`crate::instance`].
//!
//! Every call is bounded (2 s); no bus means "no tray", "nothing to close".

use std::time::Duration;

use tokio::sync::OnceCell;

/// Limit of one call on the bus.
const CALL_LIMIT: Duration = Duration::from_secs(2);

/// The StatusNotifierItem watcher (KDE's spec, used by GNOME's AppIndicator
/// extension, KDE, XFCE, waybar, ...): the tray host registers with it.
pub const SNI_WATCHER: &str = "org.kde.StatusNotifierWatcher";
const SNI_WATCHER_PATH: &str = "/StatusNotifierWatcher";

static SESSION: OnceCell<Option<zbus::Connection>> = OnceCell::const_new();

/// The session bus, connected once (`None` if there is none).
pub async fn session() -> Option<zbus::Connection> {
    SESSION
        .get_or_init(|| async {
            match tokio::time::timeout(CALL_LIMIT, zbus::Connection::session()).await {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "no D-Bus session bus");
                    None
                }
                Err(_) => {
                    tracing::warn!("the D-Bus session bus did not answer in 2 s");
                    None
                }
            }
        })
        .await
        .clone()
}

/// One method call with a time limit; the reply's body as `T`.
pub async fn call<T, B>(
    conn: &zbus::Connection,
    dest: &str,
    path: &str,
    iface: &str,
    method: &str,
    body: &B,
) -> Result<T, String>
where
    T: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    let reply = tokio::time::timeout(
        CALL_LIMIT,
        conn.call_method(Some(dest), path, Some(iface), method, body),
    )
    .await
    .map_err(|_| format!("{dest} {method}: no answer in 2 s"))?
    .map_err(|e| format!("{dest} {method}: {e}"))?;
    reply
        .body()
        .deserialize::<T>()
        .map_err(|e| format!("{dest} {method}: {e}"))
}

/// Whether `name` has an owner on the bus.
pub async fn name_has_owner(conn: &zbus::Connection, name: &str) -> bool {
    call::<bool, _>(
        conn,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "NameHasOwner",
        &(name,),
    )
    .await
    .unwrap_or(false)
}

/// Whether a tray is really shown: a StatusNotifierWatcher owns its name
/// on the session bus and says a host (the panel that draws the icons) is
/// registered. Without one (stock GNOME, Xvfb) the tray icon is invisible
/// and closing the window must quit instead of hiding it.
pub async fn tray_host_present() -> bool {
    let Some(conn) = session().await else {
        return false;
    };
    if !name_has_owner(&conn, SNI_WATCHER).await {
        return false;
    }
    let v = call::<zbus::OwnedVariant, _>(
        &conn,
        SNI_WATCHER,
        SNI_WATCHER_PATH,
        "org.freedesktop.DBus.Properties",
        "Get",
        &(SNI_WATCHER, "IsStatusNotifierHostRegistered"),
    )
    .await;
    match v {
        Ok(v) => bool::try_from(v).unwrap_or(false),
        Err(e) => {
            tracing::debug!(error = %e, "StatusNotifierWatcher property");
            false
        }
    }
}

/// Closes notifications `ids` (org.freedesktop.Notifications
/// CloseNotification); an id already gone is no error.
pub async fn close_notifications(ids: &[u32]) {
    if ids.is_empty() {
        return;
    }
    let Some(conn) = session().await else { return };
    for id in ids {
        if let Err(e) = call::<(), _>(
            &conn,
            "org.freedesktop.Notifications",
            "/org/freedesktop/Notifications",
            "org.freedesktop.Notifications",
            "CloseNotification",
            &(*id,),
        )
        .await
        {
            tracing::debug!(error = %e, id, "CloseNotification");
        }
    }
}
