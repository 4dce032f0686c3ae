//! The app on Tauri's mock runtime: commands called through the real IPC
//! handler, with a remote jitd that is not there and no keyring.

use std::time::{Duration, Instant};

use jit_desktop::{run_app_with, Options};
use serde_json::{json, Value};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{get_ipc_response, mock_builder, mock_context, noop_assets, INVOKE_KEY};
use tauri::webview::InvokeRequest;
use tauri::{App, WebviewWindow, WebviewWindowBuilder};

const SERVER: &str = "http://127.0.0.1:1";

fn app(
    data: &std::path::Path,
) -> (
    App<tauri::test::MockRuntime>,
    WebviewWindow<tauri::test::MockRuntime>,
) {
    let mut app = run_app_with(
        mock_builder(),
        Options::headless(SERVER, Some(data.to_path_buf())),
    )
    .build(mock_context(noop_assets()))
    .expect("app builds on the mock runtime");
    // Setup (state, backend) runs on the first event-loop iteration; one
    // iteration, not a loop, so the busy-loop deprecation does not apply.
    #[allow(deprecated)]
    app.run_iteration(|_, _| {});
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .expect("window");
    (app, w)
}

fn call(
    w: &WebviewWindow<tauri::test::MockRuntime>,
    cmd: &str,
    args: Value,
) -> Result<Value, Value> {
    get_ipc_response(
        w,
        InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|b| b.deserialize::<Value>().expect("json response"))
}

#[test]
fn commands_say_not_logged_in_with_a_code_and_one_readable_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_app, w) = app(dir.path());
    let calls = [
        ("get_me", json!({})),
        ("list_entitlements", json!({})),
        ("list_requests", json!({"query": {"to_review": true}})),
        ("list_requests", json!({})),
        (
            "create_request",
            json!({"body": {"entitlement": "prod-db-admin", "duration": "15m", "justification": "need it now please"}}),
        ),
        ("approve_request", json!({"id": "r1"})),
        ("deny_request", json!({"id": "r1", "comment": "no"})),
        ("cancel_request", json!({"id": "r1"})),
        ("drop_grant", json!({"id": "r1"})),
        ("revoke_grant", json!({"id": "r1", "comment": "done"})),
        (
            "extend_grant",
            json!({"id": "r1", "duration": "15m", "justification": "more"}),
        ),
        ("review_request", json!({"id": "r1", "comment": "ok"})),
        ("list_audit", json!({})),
        ("list_audit", json!({"since": 5})),
    ];
    for (cmd, args) in calls {
        let err = call(&w, cmd, args).expect_err(cmd);
        assert_eq!(
            err,
            json!({"code": "login_required", "message": "You are not logged in: log in first."}),
            "{cmd}"
        );
    }
}

#[test]
fn bad_arguments_are_refused_readably() {
    let dir = tempfile::tempdir().unwrap();
    let (_app, w) = app(dir.path());
    let err = call(&w, "deny_request", json!({"id": "r1"})).unwrap_err();
    // Tauri refuses a missing argument before the command runs (a string).
    assert!(err.as_str().unwrap().contains("comment"), "{err}");
    let err = call(&w, "deny_request", json!({"id": "r1", "comment": " "})).unwrap_err();
    assert_eq!(err["code"], "invalid_input", "{err}");
    let err = call(&w, "list_requests", json!({"query": {"bogus": true}})).unwrap_err();
    assert!(err.as_str().unwrap().contains("bogus"), "{err}");
}

#[test]
fn session_info_when_logged_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_app, w) = app(dir.path());
    // Setup finishes on a task; wait for the connection state to settle.
    let start = Instant::now();
    let s = loop {
        let s = call(&w, "get_session", json!({})).unwrap();
        if !s["notice"].is_null() || start.elapsed() > Duration::from_secs(5) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(s["logged_in"], false);
    assert_eq!(s["username"], Value::Null);
    assert_eq!(s["server_url"], SERVER);
    assert_eq!(s["backend"], "remote");
    assert_eq!(s["connection"], "offline");
    assert_eq!(s["token_storage"], "memory");
    let notice = s["notice"].as_str().expect("a notice about token storage");
    assert!(notice.contains("never written to a file"), "{notice}");
    // Logged out: no outage to report, no lost login.
    assert_eq!(s["outage"], Value::Null);
    assert_eq!(s["lost_reason"], Value::Null);
}

#[test]
fn settings_round_trip_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_app, w) = app(dir.path());
        assert_eq!(
            call(&w, "get_settings", json!({})).unwrap(),
            json!({"mute_non_urgent": false, "notifications_paused": false})
        );
        let new = json!({"mute_non_urgent": true, "notifications_paused": false});
        assert_eq!(
            call(&w, "set_settings", json!({"settings": new})).unwrap(),
            new
        );
        assert_eq!(call(&w, "get_settings", json!({})).unwrap(), new);
        let both = json!({"mute_non_urgent": true, "notifications_paused": true});
        assert_eq!(
            call(&w, "set_settings", json!({"settings": both})).unwrap(),
            both
        );
    }
    // A new start reads them back (settings are not secrets: a file is fine).
    let (_app, w) = app(dir.path());
    assert_eq!(
        call(&w, "get_settings", json!({})).unwrap(),
        json!({"mute_non_urgent": true, "notifications_paused": true})
    );
    let text = std::fs::read_to_string(dir.path().join("settings.json")).unwrap();
    assert!(!text.contains("token"), "{text}");
}

#[test]
fn server_clock_answers_even_when_jitd_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (_app, w) = app(dir.path());
    let c = call(&w, "server_clock", json!({})).unwrap();
    assert_eq!(c["offset_ms"], 0);
}

#[test]
fn login_against_an_unreachable_jitd_fails_readably() {
    let dir = tempfile::tempdir().unwrap();
    let (_app, w) = app(dir.path());
    let err = call(&w, "login", json!({})).unwrap_err();
    assert_eq!(err["code"], "jitd_unreachable", "{err}");
    let text = err["message"].as_str().unwrap();
    assert!(
        text.starts_with("jitd (http://127.0.0.1:1) cannot be reached"),
        "{text}"
    );
    // Words, not the transport's error.
    assert!(
        !text.contains("os error") && !text.contains("tcp connect"),
        "{text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
}
