//! One app per profile, and deep links.
//!
//! Deep links (`jit://request/<id>`, `jit://request?entitlement=<id>`) come
//! as a command-line argument: the Linux package's desktop entry declares
//! `MimeType=x-scheme-handler/jit` with `Exec=jit-desktop %u`, so the
//! desktop starts the app with the link. Chat messages (webhooks) carry
//! these links.
//!
//! Single instance: the first app of a profile (its data dir) owns the
//! D-Bus name [`bus_name`]; a second launch of the same profile hands its
//! arguments to the first (method `Open` on [`OBJECT_PATH`]) and exits, and
//! the first shows its window and opens the link. Two profiles (two users
//! on one machine, `JIT_DESKTOP_DATA_DIR`) are two instances. (This is
//! what tauri-plugin-single-instance does on Linux, but keyed by profile
//! instead of by app identifier, which would let only one user run.)

use std::sync::Mutex;

use futures::StreamExt;
use serde::Serialize;

/// The object the first instance answers on.
pub const OBJECT_PATH: &str = "/io/github/jit_access/Instance";
/// Its interface.
pub const INTERFACE: &str = "io.github.jit_access.Instance";

/// What a deep link asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeepLink {
    /// `jit://request/<id>`: show that request.
    Request { id: String },
    /// `jit://request?entitlement=<id>`: the request form, prefilled.
    NewRequest { entitlement: String },
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses a `jit://` link; `None` for anything else (other schemes, other
/// paths, ids with characters no id has).
pub fn parse_link(text: &str) -> Option<DeepLink> {
    let rest = text.trim().strip_prefix("jit://")?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let path = path.trim_end_matches('/');
    if let Some(id) = path.strip_prefix("request/") {
        return valid_id(id).then(|| DeepLink::Request { id: id.to_string() });
    }
    if path == "request" {
        let q = query?;
        let entitlement = q
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "entitlement")
            .map(|(_, v)| v)?;
        return valid_id(entitlement).then(|| DeepLink::NewRequest {
            entitlement: entitlement.to_string(),
        });
    }
    None
}

/// The first deep link among command-line arguments.
pub fn link_in_args(args: &[String]) -> Option<DeepLink> {
    args.iter().find_map(|a| parse_link(a))
}

/// The D-Bus name of the instance of profile `key` (its data dir).
pub fn bus_name(key: &str) -> String {
    // FNV-1a: stable across builds, no dependency; a name per profile.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("io.github.jit_access.desktop.i{h:016x}")
}

/// `JIT_PROFILE`, if it is a usable name (letters, digits, `-`, `_`, `.`;
/// not starting with a dot).
pub fn profile_name() -> Option<String> {
    std::env::var("JIT_PROFILE")
        .ok()
        .map(|p| p.trim().to_string())
        .filter(|p| valid_id(p) && !p.starts_with('.'))
}

/// The profile key of this launch: `JIT_DESKTOP_DATA_DIR`, else the
/// `JIT_PROFILE` name, else "default".
pub fn profile_key() -> String {
    std::env::var("JIT_DESKTOP_DATA_DIR")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| profile_name().map(|p| format!("profile:{p}")))
        .unwrap_or_else(|| "default".into())
}

/// Outcome of [`claim`].
pub enum Claim {
    /// This is the first instance (or there is no session bus).
    First,
    /// Another instance took the arguments: exit.
    HandedOver,
}

static INBOX: Mutex<Option<zbus::MessageStream>> = Mutex::new(None);
static CONN: Mutex<Option<zbus::Connection>> = Mutex::new(None);

/// Claims the profile's name, or hands `args` to the instance that owns
/// it. Runs before Tauri starts (blocking, bounded).
pub fn claim(key: &str, args: &[String]) -> Claim {
    let name = bus_name(key);
    let run = async {
        let conn = match zbus::Connection::session().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no session bus: no single-instance check");
                return Claim::First;
            }
        };
        // Subscribe before owning the name: no call is missed.
        let stream = zbus::MessageStream::from(&conn);
        let flags = zbus::fdo::RequestNameFlags::DO_NOT_QUEUE;
        match conn.request_name_with_flags(name.as_str(), flags).await {
            Ok(zbus::fdo::RequestNameReply::PrimaryOwner)
            | Ok(zbus::fdo::RequestNameReply::AlreadyOwner) => {
                *INBOX.lock().unwrap_or_else(|p| p.into_inner()) = Some(stream);
                *CONN.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
                Claim::First
            }
            // Taken: zbus reports DO_NOT_QUEUE's "exists" as NameTaken.
            Ok(_) | Err(zbus::Error::NameTaken) => {
                let r = conn
                    .call_method(
                        Some(name.as_str()),
                        OBJECT_PATH,
                        Some(INTERFACE),
                        "Open",
                        &(args.to_vec(),),
                    )
                    .await;
                match r {
                    Ok(_) => Claim::HandedOver,
                    Err(e) => {
                        tracing::warn!(error = %e, "the running instance did not take the arguments; starting another");
                        Claim::First
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim the single-instance name");
                Claim::First
            }
        }
    };
    // Tauri's runtime (it lives as long as the process); a stuck bus must
    // not keep the app from starting.
    tauri::async_runtime::block_on(async {
        match tokio::time::timeout(std::time::Duration::from_secs(3), run).await {
            Ok(c) => c,
            Err(_) => {
                tracing::warn!("the session bus did not answer in 3 s: no single-instance check");
                Claim::First
            }
        }
    })
}

/// Serves `Open` calls of later launches: `on_args` gets their arguments.
/// Call once, from the app's setup (no-op if [`claim`] did not own the
/// name).
pub fn serve(on_args: impl Fn(Vec<String>) + Send + 'static) {
    let stream = INBOX.lock().unwrap_or_else(|p| p.into_inner()).take();
    let conn = CONN.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (Some(mut stream), Some(conn)) = (stream, conn) else {
        return;
    };
    tauri::async_runtime::spawn(async move {
        while let Some(item) = stream.next().await {
            // One unreadable message must not end the serving.
            let Ok(msg) = item else { continue };
            if msg.message_type() != zbus::message::Type::MethodCall {
                continue;
            }
            let h = msg.header();
            let ours = h.path().is_some_and(|p| p.as_str() == OBJECT_PATH)
                && h.member().is_some_and(|m| m.as_str() == "Open");
            if !ours {
                continue;
            }
            let args: Vec<String> = msg.body().deserialize().unwrap_or_default();
            if let Err(e) = conn.reply(&h, &()).await {
                tracing::debug!(error = %e, "reply to Open");
            }
            on_args(args);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_links() {
        let cases: &[(&str, Option<DeepLink>)] = &[
            (
                "jit://request/0d8bff88-1c2b-4a53-9b58-aa0c2f6d9e01",
                Some(DeepLink::Request {
                    id: "0d8bff88-1c2b-4a53-9b58-aa0c2f6d9e01".into(),
                }),
            ),
            (
                "jit://request/abc/",
                Some(DeepLink::Request { id: "abc".into() }),
            ),
            (
                "jit://request?entitlement=prod-db-admin",
                Some(DeepLink::NewRequest {
                    entitlement: "prod-db-admin".into(),
                }),
            ),
            (
                "jit://request/?x=1&entitlement=a.b_c",
                Some(DeepLink::NewRequest {
                    entitlement: "a.b_c".into(),
                }),
            ),
            ("jit://request/", None),
            ("jit://request?entitlement=", None),
            ("jit://request/a%20b", None),
            ("jit://request/<script>", None),
            ("jit://grant/abc", None),
            ("https://request/abc", None),
            ("--verbose", None),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_link(text), want, "{text}");
        }
        let args = vec!["--x".to_string(), "jit://request/r1".to_string()];
        assert_eq!(
            link_in_args(&args),
            Some(DeepLink::Request { id: "r1".into() })
        );
    }

    #[test]
    fn one_name_per_profile() {
        let a = bus_name("/home/a/.local/share/jit");
        let b = bus_name("/home/b/.local/share/jit");
        assert_ne!(a, b);
        assert_eq!(a, bus_name("/home/a/.local/share/jit"));
        assert!(
            zbus::names::WellKnownName::try_from(a.as_str()).is_ok(),
            "{a}"
        );
    }
}
