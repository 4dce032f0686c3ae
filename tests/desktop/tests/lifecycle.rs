//! The app's life around its window, driven for real: the tray through its
//! D-Bus StatusNotifierItem menu (com.canonical.dbusmenu) under a tray host
//! stand-in (`sni_host.py`, a StatusNotifierWatcher on the test bus),
//! close-to-tray, closing without a tray host, quitting while the embedded
//! jitd holds a grant (the grant is ended and Keycloak confirms before the
//! app is gone), the "expires in 5 minutes" notification and its closing,
//! single instance and deep links.

use std::time::{Duration, Instant};

use jit_core::api::CreateRequestBody;
use jit_desktop_e2e::bus::MenuEntry;
use jit_desktop_e2e::{Bus, Desktop, Launch};
use jit_e2e::{eventually, serial, token, Ctx, Jitd, POLICY};

const ENTITLEMENT: &str = "prod-db-admin";

/// Waits until the app registered its tray item with the host; returns it.
async fn tray_item(d: &Desktop) -> (String, String) {
    let start = Instant::now();
    loop {
        if let Some(i) = d.bus().tray_items().into_iter().last() {
            return i;
        }
        if start.elapsed() > Duration::from_secs(20) {
            d.fail("the app registered no tray item with the tray host")
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the tray menu satisfies `pred`; returns it.
async fn menu_until(
    d: &Desktop,
    item: &(String, String),
    what: &str,
    pred: impl Fn(&[MenuEntry]) -> bool,
) -> Vec<MenuEntry> {
    let start = Instant::now();
    loop {
        let m = d.bus().tray_menu(item).unwrap_or_default();
        if pred(&m) {
            return m;
        }
        if start.elapsed() > Duration::from_secs(15) {
            d.fail(&format!("tray menu: {what}; it is {m:#?}")).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn entry<'a>(m: &'a [MenuEntry], label: &str) -> &'a MenuEntry {
    m.iter()
        .find(|e| e.label.replace('_', "") == label)
        .unwrap_or_else(|| panic!("no tray menu entry {label:?} in {m:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tray_menu_close_to_tray_and_quit() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let mut bus = Bus::private().expect("private bus");
    bus.start_tray_host().expect("tray host stand-in");
    let bob = Desktop::launch_on(Launch::new("bob", &jitd.url), bus).await;
    bob.login().await;
    bob.wait("nav-approvals", Duration::from_secs(10)).await;

    // The menu as a panel shows it: Open, "N pending", Pause, Quit.
    let item = tray_item(&bob).await;
    let m = menu_until(&bob, &item, "0 pending", |m| {
        m.iter().any(|e| e.label == "0 pending")
    })
    .await;
    for label in ["Open JIT Access", "Pause notifications", "Quit"] {
        entry(&m, label);
    }
    assert_eq!(entry(&m, "Pause notifications").toggle_state, 0, "{m:#?}");

    // A new request shows in the menu.
    let alice_api = jitd.client(&token("alice").await);
    let r = alice_api
        .create(&CreateRequestBody {
            entitlement: ENTITLEMENT.into(),
            duration: Some("10m".into()),
            justification: "tray menu pending count".into(),
            ..Default::default()
        })
        .await
        .expect("alice's request");
    menu_until(&bob, &item, "1 pending", |m| {
        m.iter().any(|e| e.label == "1 pending")
    })
    .await;

    // Pause from the tray: the setting is saved and the check shows.
    let pause = entry(&m, "Pause notifications").id;
    bob.bus().tray_click(&item, pause).expect("click Pause");
    menu_until(&bob, &item, "Pause checked", |m| {
        m.iter()
            .any(|e| e.label == "Pause notifications" && e.toggle_state == 1)
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "notifications_paused saved",
        || async {
            std::fs::read_to_string(bob.data_dir.join("settings.json"))
                .unwrap_or_default()
                .contains("\"notifications_paused\": true")
        },
    )
    .await;
    bob.bus()
        .tray_click(&item, pause)
        .expect("click Pause again");
    menu_until(&bob, &item, "Pause unchecked", |m| {
        m.iter()
            .any(|e| e.label == "Pause notifications" && e.toggle_state == 0)
    })
    .await;

    // Close with a tray host: the window hides, the app keeps running.
    let pid = bob.app_pid().expect("app pid");
    let win = bob.x11_window();
    bob.wait_window(&win, "viewable", Duration::from_secs(5))
        .await;
    bob.close_window(&win);
    bob.wait_window(&win, "hidden", Duration::from_secs(10))
        .await;
    assert!(jit_desktop_e2e::procs::alive(pid), "closing hid, not quit");
    // "Open" brings it back; so does "N pending".
    bob.bus()
        .tray_click(&item, entry(&m, "Open JIT Access").id)
        .expect("click Open");
    bob.wait_window(&win, "viewable", Duration::from_secs(10))
        .await;
    bob.close_window(&win);
    bob.wait_window(&win, "hidden", Duration::from_secs(10))
        .await;
    let m = menu_until(&bob, &item, "1 pending", |m| {
        m.iter().any(|e| e.label == "1 pending")
    })
    .await;
    bob.bus()
        .tray_click(&item, entry(&m, "1 pending").id)
        .expect("click 1 pending");
    bob.wait_window(&win, "viewable", Duration::from_secs(10))
        .await;

    // Quit from the tray: remote jitd, nothing held here: it just quits.
    // The app may end before its dbusmenu answers the click (NoReply:
    // "recipient disconnected"): that is the quit itself, which wait_exit
    // checks; any other error fails.
    if let Err(e) = bob.bus().tray_click(&item, entry(&m, "Quit").id) {
        assert!(
            format!("{e:#}").contains("org.freedesktop.DBus.Error.NoReply"),
            "click Quit: {e:#}"
        );
    }
    Desktop::wait_exit(pid, "Quit in the tray menu", Duration::from_secs(15)).await;
    alice_api.cancel(r.request.id()).await.expect("cancel");
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_tray_host_closing_the_window_quits() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    // A bus with no StatusNotifierWatcher: stock GNOME, or Xvfb.
    let bob = Desktop::launch_on(
        Launch::new("bob", &jitd.url),
        Bus::private().expect("private bus"),
    )
    .await;
    bob.wait("login-button", Duration::from_secs(10)).await;
    let pid = bob.app_pid().expect("app pid");
    let win = bob.x11_window();
    bob.close_window(&win);
    Desktop::wait_exit(
        pid,
        "closing the window without a tray host",
        Duration::from_secs(15),
    )
    .await;
    bob.close().await;
}

fn api(url: &str, token: String) -> jit_client::Client {
    let src: std::sync::Arc<dyn jit_client::TokenSource> =
        std::sync::Arc::new(jit_client::StaticToken(token));
    jit_client::Client::new(url, Some(src))
}

/// The embedded jitd's URL, as the login screen shows it.
async fn embedded_url(d: &Desktop) -> String {
    let start = Instant::now();
    loop {
        let t = d.text("server-url").await;
        if t.starts_with("http://") {
            return t;
        }
        if start.elapsed() > Duration::from_secs(30) {
            d.fail(&format!("the embedded jitd did not come up: {t:?}"))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_quit_ends_the_grants_and_deep_links_reach_the_running_app() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let env = jit_testkit::keycloak_env();
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    // Embedded mode: no JIT_SERVER; the app runs jitd itself.
    let mut launch = Launch::new("alice", "");
    launch.env = vec![
        ("JIT_KEYCLOAK_URL".into(), env.url.clone()),
        ("JIT_REALM".into(), env.realm.clone()),
        ("JIT_BACKEND_SECRET".into(), env.backend_secret.clone()),
        ("JIT_POLICY".into(), policy.display().to_string()),
    ];
    let alice = Desktop::launch_on(launch, Bus::private().expect("private bus")).await;
    let url = embedded_url(&alice).await;
    alice.login().await;
    alice.wait("nav-mine", Duration::from_secs(10)).await;
    let alice_api = api(&url, token("alice").await);
    let bob_api = api(&url, token("bob").await);

    // A 4-minute grant: "expires in 5 minutes" at once; closed when dropped.
    let short = alice_api
        .create(&CreateRequestBody {
            entitlement: ENTITLEMENT.into(),
            duration: Some("4m".into()),
            justification: "short grant for the expiry warning".into(),
            ..Default::default()
        })
        .await
        .expect("short request");
    bob_api
        .approve(short.request.id(), None, None)
        .await
        .expect("approve");
    let summary = format!("Access expires in 5 minutes: {}", short.entitlement_name);
    let warn = alice
        .bus()
        .wait_notification(
            &format!("`{summary}` at alice's"),
            Duration::from_secs(25),
            |n| n.summary == summary,
        )
        .await;
    alice_api
        .drop_grant(short.request.id())
        .await
        .expect("drop");
    alice
        .bus()
        .wait_closed(
            "the expiry warning of a dropped grant",
            warn.id,
            Duration::from_secs(15),
        )
        .await;
    eventually(Duration::from_secs(15), "role gone after drop", || async {
        !ctx.has_realm_role("alice", ENTITLEMENT).await
    })
    .await;

    // A grant held when alice closes the app.
    let held = alice_api
        .create(&CreateRequestBody {
            entitlement: ENTITLEMENT.into(),
            duration: Some("30m".into()),
            justification: "held while the app is closed".into(),
            ..Default::default()
        })
        .await
        .expect("request");
    let id = held.request.id().to_string();
    bob_api.approve(&id, None, None).await.expect("approve");
    eventually(Duration::from_secs(15), "alice holds the role", || {
        ctx.has_realm_role("alice", ENTITLEMENT)
    })
    .await;

    // No tray host here: closing asks what to do (the app holds a grant).
    let pid = alice.app_pid().expect("app pid");
    let win = alice.x11_window();
    alice.close_window(&win);
    alice.wait("quit-dialog", Duration::from_secs(10)).await;
    let listed = alice.text("quit-grants").await;
    assert!(
        listed.contains("alice") && listed.contains(&held.entitlement_name),
        "the grant in the quit dialog: {listed:?}"
    );
    assert!(
        jit_desktop_e2e::procs::alive(pid),
        "still running while it asks"
    );

    // Keep running in the background: hidden, still running, role kept.
    alice.click_detached("quit-background").await;
    alice
        .wait_window(&win, "hidden", Duration::from_secs(10))
        .await;
    assert!(jit_desktop_e2e::procs::alive(pid));

    // Launching the app again (same profile) with a deep link: the running
    // app takes it, shows its window on that request; the new process ends.
    let out = tokio::task::spawn_blocking({
        let app = alice.tools.app.clone();
        let env = alice.env.clone();
        let link = format!("jit://request/{id}");
        move || {
            let mut child = std::process::Command::new(app)
                .arg(link)
                .envs(env)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("second launch");
            // It must hand over and end, not open a second app.
            let start = Instant::now();
            while child.try_wait().expect("wait").is_none() {
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            child.wait_with_output().expect("second launch output")
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the second launch hands over and ends: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("handed over"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    alice
        .wait_window(&win, "viewable", Duration::from_secs(10))
        .await;
    alice
        .wait_css(
            &format!("[data-testid=\"grant-row\"][data-request-id=\"{id}\"].highlight"),
            Duration::from_secs(10),
            "the linked request, highlighted in My access",
        )
        .await;
    assert!(ctx.has_realm_role("alice", ENTITLEMENT).await);

    // Close again and end the grants: the app quits only once Keycloak
    // confirmed the removal.
    alice.close_window(&win);
    alice.wait("quit-dialog", Duration::from_secs(10)).await;
    alice.click_detached("quit-end-grants").await;
    Desktop::wait_exit(pid, "End grants and quit", Duration::from_secs(60)).await;
    assert!(
        !ctx.has_realm_role("alice", ENTITLEMENT).await,
        "the role outlived the app that granted it"
    );
    alice.close().await;
}
