//! The `jit` binary's answers to a wrong command line or environment,
//! which it gives before talking to any jitd: one line `jit: …` with the
//! documented exit code (README's table), words that say what to do.
//! (The answers that need a jitd are in `tests/tests/cli.rs`.)

use std::process::{Command, Output};

/// `jit ARGS` with a clean environment plus `env`; the server is a closed
/// port, so nothing here can depend on a jitd.
fn jit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let cfg = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_jit"));
    c.args(args)
        .env("JIT_CONFIG_DIR", cfg.path())
        .env_remove("JIT_TOKEN")
        .env_remove("JIT_PROFILE")
        .env_remove("JIT_SERVER")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Asserts exit `code` and exactly one stderr line `jit: …` containing
/// each of `says`; returns that line.
fn one_line(o: &Output, code: i32, says: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "one line, got:\n{err}");
    assert!(err.starts_with("jit: "), "{err}");
    assert!(!err.contains('\u{1b}'), "no colour codes: {err:?}");
    for s in says {
        assert!(err.contains(s), "{s:?} missing in: {err}");
    }
    err
}

const SERVER: (&str, &str) = ("JIT_SERVER", "http://127.0.0.1:9");
/// Colour forced on, as on a terminal: error lines still carry none.
const COLOUR: (&str, &str) = ("CLICOLOR_FORCE", "1");

#[test]
fn usage_errors_are_one_line_with_exit_2_and_no_env_options() {
    for (args, says) in [
        (vec!["show"], vec!["<ID>", "try `jit show --help`"]),
        (
            vec!["deny", "abcd1234"],
            vec!["--comment", "try `jit deny --help`"],
        ),
        (
            vec!["revoke", "abcd1234"],
            vec!["--comment", "try `jit revoke --help`"],
        ),
        (
            vec!["list", "--no-such-flag"],
            vec!["--no-such-flag", "try `jit list --help`"],
        ),
        (vec!["frobnicate"], vec!["frobnicate", "try `jit --help`"]),
    ] {
        let o = jit(&args, &[SERVER, COLOUR]);
        let line = one_line(&o, 2, &says);
        assert!(
            !line.contains("--server") && !line.contains("Usage"),
            "{args:?}: {line}"
        );
    }
    // Help still shows the options; the usage line does not claim the
    // environment-backed ones are needed.
    for sub in ["show", "deny", "revoke", "request", "list"] {
        let o = jit(&[sub, "--help"], &[SERVER]);
        assert_eq!(o.status.code(), Some(0));
        let help = String::from_utf8_lossy(&o.stdout);
        let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap();
        assert!(!usage.contains("--server"), "{sub}: {usage}");
        assert!(help.contains("--server <URL>"), "{sub}: {help}");
    }
}

#[test]
fn a_token_that_is_not_a_jwt_is_said_in_words_with_exit_6() {
    for bad in ["garbage", "a.b", "x.y.z", ""] {
        let o = jit(&["list"], &[SERVER, ("JIT_TOKEN", bad)]);
        let line = one_line(
            &o,
            6,
            &["JIT_TOKEN is not a JWT access token", "`jit login`"],
        );
        assert!(!line.contains("InvalidToken"), "{line}");
    }
}

/// `JIT_TOKEN` with a profile chosen by name: refused (exit 2), never a
/// call made silently as the token's owner instead of the profile's user.
#[test]
fn a_profile_chosen_beside_jit_token_is_refused_not_ignored() {
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    let o = jit(
        &["--profile", "alice", "list"],
        &[SERVER, ("JIT_TOKEN", token)],
    );
    one_line(
        &o,
        2,
        &["JIT_TOKEN is set", "profile 'alice'", "unset JIT_TOKEN"],
    );
    let o = jit(
        &["list"],
        &[SERVER, ("JIT_TOKEN", token), ("JIT_PROFILE", "bob")],
    );
    one_line(&o, 2, &["profile 'bob'"]);
}

/// A profile's token goes only to the jitd it logged in to: with another
/// `--server` or `JIT_SERVER` the call is refused (exit 2) before anything
/// is sent; nothing connects to the other server.
#[test]
fn a_profiles_token_is_never_sent_to_another_server() {
    let cfg = tempfile::tempdir().unwrap();
    let dir = cfg.path().join("profiles");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("alice.json"),
        serde_json::json!({
            "server": "http://127.0.0.1:8787",
            "issuer": "http://127.0.0.1:8080/realms/jit",
            "client_id": "jit-cli",
            "username": "alice",
            "tokens": {
                "access_token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
                "refresh_token": null,
                "expires_at": "2099-01-01T00:00:00Z"
            }
        })
        .to_string(),
    )
    .unwrap();
    // Another server that would take the token.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let url = format!("http://{}", other.local_addr().unwrap());
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jit"));
        c.args(args)
            .env("JIT_CONFIG_DIR", cfg.path())
            .env_remove("JIT_TOKEN")
            .env_remove("JIT_PROFILE")
            .env_remove("JIT_SERVER");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let o = run(&["--profile", "alice", "--server", &url, "list"], &[]);
    one_line(
        &o,
        2,
        &[
            "profile 'alice' is logged in to http://127.0.0.1:8787",
            "not sent to",
            "another profile",
        ],
    );
    let o = run(&["--profile", "alice", "list"], &[("JIT_SERVER", &url)]);
    one_line(&o, 2, &["not sent to"]);
    // Nor does a login move the profile there (it would get the new token).
    let o = run(&["--profile", "alice", "login"], &[("JIT_SERVER", &url)]);
    one_line(
        &o,
        2,
        &[
            "profile 'alice' is logged in to http://127.0.0.1:8787, not",
            "another profile",
        ],
    );
    let o = run(&["--profile", "alice", "--server", &url, "login"], &[]);
    one_line(&o, 2, &["logout"]);
    assert!(other.accept().is_err(), "the other server was connected to");
}

/// A negative `--since` is the CLI's own usage error (exit 2), not jitd's
/// word about a `Last-Event-ID` header the user never typed.
#[test]
fn a_negative_since_is_a_usage_error() {
    // `--since -1` (a separate word) too: it said "unexpected argument
    // '-1' found" (taken for an option), not what `--since` accepts.
    for args in [
        vec!["watch", "--since=-1"],
        vec!["audit", "--since=-1"],
        vec!["watch", "--since", "-1"],
        vec!["audit", "--since", "-1"],
    ] {
        let o = jit(&args, &[SERVER]);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("--since"), "{err}");
        assert!(err.contains("-1"), "{err}");
        assert!(!err.contains("unexpected argument"), "{err}");
        assert!(!err.contains("Last-Event-ID"), "{err}");
    }
}

#[test]
fn start_time_errors_say_the_accepted_forms() {
    let o = jit(
        &[
            "request",
            "some-entitlement",
            "--reason",
            "a reason long enough",
            "--start",
            "tomorrow",
        ],
        &[SERVER],
    );
    one_line(
        &o,
        2,
        &["'tomorrow'", "RFC 3339", "2026-12-01T09:00:00Z", "+2h"],
    );
}

#[test]
fn a_negative_duration_is_refused_as_such() {
    for args in [
        vec![
            "request",
            "some-entitlement",
            "--for",
            "-5m",
            "--reason",
            "r",
        ],
        vec!["approve", "abcd1234", "--for", "-5m"],
        vec!["extend", "abcd1234", "--for", "-5m", "--reason", "r"],
        vec!["wait", "abcd1234", "--timeout", "-5m"],
    ] {
        let o = jit(&args, &[SERVER]);
        let line = one_line(&o, 2, &["'-5m'", "duration must be positive"]);
        assert!(!line.contains("tip"), "{line}");
    }
}

/// A JWT-shaped access token (unsigned; jit only reads its claims, jitd
/// would refuse it) that expires far in the future.
fn jwt_shaped() -> String {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        b(r#"{"alg":"RS256","typ":"JWT"}"#),
        b(r#"{"sub":"u","exp":4102444800,"aud":"jit-api"}"#),
        b("sig")
    )
}

/// `--server https://…` pointed at a port that is not TLS (here a
/// listener that takes each connection, answers garbage and closes it):
/// one line `jit: cannot reach jitd …` and exit 1, never a silent death by
/// SIGPIPE (exit 141) from a write to the closed socket.
#[test]
fn a_server_that_closes_the_connection_is_one_line_with_exit_1() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            drop(s);
        }
    });
    let token = jwt_shaped();
    let server = format!("https://127.0.0.1:{port}");
    let mut a = vec!["--server", server.as_str(), "list"];
    let o = jit(&a, &[("JIT_TOKEN", token.as_str())]);
    // https:// to a plain-HTTP port: said as such, not as rustls's
    // "corrupt message … InvalidContentType".
    let line = one_line(
        &o,
        1,
        &[
            "cannot reach jitd",
            &format!("does not answer TLS (is it http://127.0.0.1:{port}?)"),
        ],
    );
    assert!(!line.contains("InvalidContentType"), "{line}");
    // With --output json: the same as a JSON problem object.
    a.extend(["--output", "json"]);
    let o = jit(&a, &[("JIT_TOKEN", token.as_str())]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let v: serde_json::Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert!(
        v["detail"].as_str().unwrap().contains("cannot reach jitd"),
        "{v}"
    );
}

/// A closed stdout (`jit man | head`, the reader gone before jit writes)
/// ends the command quietly with exit 0: no panic, no signal.
#[test]
fn a_closed_stdout_ends_quietly_with_exit_0() {
    for args in [vec!["completions", "bash"], vec!["man"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let cfg = tempfile::tempdir().unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_jit"))
            .args(&args)
            .env("JIT_CONFIG_DIR", cfg.path())
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {:?} {err}", o.status);
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

/// A profile name that cannot be a file name (empty, a path, too long,
/// from `--profile` or `JIT_PROFILE`) is refused before anything starts
/// (no browser login): one line, exit 2.
#[test]
fn a_bad_profile_name_is_refused_up_front_with_exit_2() {
    let long = "p".repeat(300);
    for name in ["", "../../etc", "a/b", "a.b", long.as_str()] {
        for cmd in ["login", "list"] {
            let o = jit(&["--profile", name, cmd], &[SERVER, ("BROWSER", "false")]);
            one_line(&o, 2, &["profile", "letters, digits, - and _"]);
            let o = jit(
                &[cmd],
                &[SERVER, ("JIT_PROFILE", name), ("BROWSER", "false")],
            );
            one_line(&o, 2, &["profile", "letters, digits, - and _"]);
        }
    }
    // The longest allowed name is accepted (then: not logged in, exit 6).
    let o = jit(&["--profile", &"p".repeat(64), "list"], &[SERVER]);
    one_line(&o, 6, &["not logged in"]);
}

/// `--timeout` belongs to `--wait`: without it, it would be ignored in
/// silence, so it is refused (exit 2, one line).
#[test]
fn timeout_without_wait_is_refused() {
    let o = jit(
        &[
            "request",
            "some-entitlement",
            "--reason",
            "a reason long enough",
            "--timeout",
            "5m",
        ],
        &[SERVER],
    );
    one_line(&o, 2, &["--timeout", "add --wait"]);
}

/// `jit list --help` and the error for a wrong `--status` name the same
/// statuses: every one jitd has.
#[test]
fn list_help_and_the_status_error_name_the_same_statuses() {
    let o = jit(&["list", "--help"], &[SERVER]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout).to_string();
    let o = jit(&["list", "--status", "nope"], &[SERVER]);
    let err = one_line(&o, 2, &["invalid value 'nope'", "possible values"]);
    for s in jit_core::Status::ALL {
        assert!(help.contains(s.as_str()), "{s} missing in help:\n{help}");
        assert!(err.contains(s.as_str()), "{s} missing in: {err}");
    }
}

/// Enum-like values are taken in any case (`--status PENDING`, `--output
/// JSON`, `completions BASH`): past the command line (here: not logged in,
/// exit 6), never refused as a usage error.
#[test]
fn enum_values_are_taken_in_any_case() {
    for args in [
        vec!["list", "--status", "PENDING"],
        vec!["list", "--status", "Active"],
        vec!["list", "--output", "TABLE"],
    ] {
        let o = jit(&args, &[SERVER]);
        one_line(&o, 6, &["not logged in"]);
    }
    let o = jit(&["--output", "JSON", "list"], &[SERVER]);
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let v: serde_json::Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(v["code"], "not_logged_in", "{v}");
    let o = jit(&["completions", "BASH"], &[SERVER]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("_jit"));
}

/// `--start` values that are not in the future, or not a duration after
/// `+`, say exactly what is wrong and what is accepted.
#[test]
fn start_errors_say_what_is_wrong_with_the_value() {
    let start = |v: &str| {
        jit(
            &[
                "request",
                "some-entitlement",
                "--reason",
                "a reason long enough",
                "--start",
                v,
            ],
            &[SERVER],
        )
    };
    for v in ["+0s", "+0m", "+0h0m"] {
        one_line(
            &start(v),
            2,
            &[
                "must be in the future",
                "is now",
                "+2h",
                "2026-12-01T09:00:00Z",
                "leave --start out",
            ],
        );
    }
    one_line(
        &start("+5q"),
        2,
        &["'5q' is not one", "unknown unit 'q'", "+2h"],
    );
    one_line(&start("-5m"), 2, &["must be in the future"]);
    one_line(
        &start("2026-12-01"),
        2,
        &["not an RFC 3339 time", "2026-12-01T09:00:00Z"],
    );
}

/// `--json` with an error from jitd: one problem object, each fact once —
/// jitd's `type`, `title`, `status`, `code`, its sentence as `detail`
/// (without the code again), and `exit`.
#[test]
fn json_api_errors_say_each_fact_once() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf);
            let body = r#"{"type":"urn:jit-access:problem:illegal_transition","title":"Not allowed in this state","status":409,"detail":"cannot cancel this request: it is already denied","code":"illegal_transition"}"#;
            let _ = write!(
                s,
                "HTTP/1.1 409 Conflict\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let token = jwt_shaped();
    let server = format!("http://127.0.0.1:{port}");
    let id = "0b5e5a43-2d4f-4a53-9a8e-6f1f8f3c9a10";
    let o = jit(
        &["--server", &server, "--json", "cancel", id],
        &[("JIT_TOKEN", token.as_str())],
    );
    assert_eq!(o.status.code(), Some(8), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(
        v,
        serde_json::json!({
            "type": "urn:jit-access:problem:illegal_transition",
            "title": "Not allowed in this state",
            "status": 409,
            "detail": "cannot cancel this request: it is already denied",
            "code": "illegal_transition",
            "exit": 8,
        })
    );
    // People still read the code in the one line.
    let o = jit(
        &["--server", &server, "cancel", id],
        &[("JIT_TOKEN", token.as_str())],
    );
    one_line(
        &o,
        8,
        &["cannot cancel this request: it is already denied (illegal_transition)"],
    );
}

/// `jit extend --help` says what `--reason` is.
#[test]
fn extend_help_describes_the_reason() {
    let o = jit(&["extend", "--help"], &[SERVER]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout).to_string();
    let reason = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("--reason"))
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(reason.contains("justification"), "{help}");
}

/// With `--json` (or `--output json`), an error is one JSON object on
/// stderr in the problem shape (`type`, `title`, `detail`, `code`) with
/// the exit code, which is the documented one.
#[test]
fn json_errors_are_problem_objects_on_stderr() {
    for args in [vec!["--json", "list"], vec!["list", "--output", "json"]] {
        let o = jit(&args, &[SERVER]);
        assert_eq!(o.status.code(), Some(6), "{o:?}");
        assert!(o.stdout.is_empty(), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        let v: serde_json::Value =
            serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
        assert_eq!(v["code"], "not_logged_in", "{v}");
        assert_eq!(v["type"], "urn:jit-access:problem:not_logged_in", "{v}");
        assert_eq!(v["exit"], 6, "{v}");
        assert!(v["title"].is_string(), "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains("not logged in"),
            "{v}"
        );
    }
    // A wrong command line with --json: the same shape, exit 2.
    let o = jit(&["--json", "list", "--status", "nope"], &[SERVER]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let v: serde_json::Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(v["code"], "invalid_usage", "{v}");
    let o = jit(&["list", "--no-such-flag", "--output", "json"], &[SERVER]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let v: serde_json::Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert!(
        v["detail"].as_str().unwrap().contains("--no-such-flag"),
        "{v}"
    );
}

/// A `--server` that answers HTTP but is no jitd (Keycloak, a web
/// server: an error page without problem+json) is said as such with exit
/// 1 (README: "--server is not a jitd"), not as "not found" (7).
#[test]
fn a_server_that_is_not_a_jitd_exits_1() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "<html><body>Resource not found</body></html>";
            let _ = write!(
                s,
                "HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let token = jwt_shaped();
    let server = format!("http://127.0.0.1:{port}");
    for args in [vec!["list"], vec!["show", "abcd1234"], vec!["login"]] {
        let mut a = vec!["--server", server.as_str()];
        a.extend(args.clone());
        let o = jit(&a, &[("JIT_TOKEN", token.as_str()), ("BROWSER", "false")]);
        one_line(&o, 1, &["does not look like a jitd"]);
    }
}

/// An overlong bad profile name is not echoed in full.
#[test]
fn an_overlong_profile_name_is_cut_in_the_error() {
    let long = format!("{}/x", "p".repeat(300));
    let o = jit(&["--profile", &long, "list"], &[SERVER]);
    let line = one_line(&o, 2, &["profile", "…"]);
    assert!(line.chars().count() < 200, "{line}");
}

/// An id longer than any request id (a UUID is 36 characters) is not
/// found, said before asking jitd (the server here is a closed port: no
/// "cannot reach jitd" with exit 1, even for an id too long for a URL),
/// and is not echoed in full.
#[test]
fn an_overlong_id_is_not_found_without_asking_jitd() {
    let token = jwt_shaped();
    for len in [37, 70_000] {
        let long = "a".repeat(len);
        let o = jit(&["show", &long], &[SERVER, ("JIT_TOKEN", &token)]);
        let line = one_line(&o, 7, &["36 characters"]);
        assert!(line.chars().count() < 200, "{line}");
    }
}

/// A jitd asked at a wrong path (`--server http://host:8787/v1`) answers
/// 404 `no_route`: said as a wrong server URL with exit 1, not as "not
/// found" (7), which would read as "no such request".
#[test]
fn a_server_url_with_a_path_is_said_as_such_with_exit_1() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            // jitd's answer to a path it has no route for.
            let body = r#"{"type":"urn:jit-access:problem:no_route","title":"Not found","status":404,"detail":"no such route","code":"no_route"}"#;
            let _ = write!(
                s,
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let token = jwt_shaped();
    let server = format!("http://127.0.0.1:{port}/v1");
    for args in [vec!["list"], vec!["show", "abcd1234"]] {
        let mut a = vec!["--server", server.as_str()];
        a.extend(args.clone());
        let o = jit(&a, &[("JIT_TOKEN", token.as_str())]);
        one_line(&o, 1, &["no such route", "root URL"]);
    }
}

/// `jit ARGS` as [`jit`], killed (and the test failed) if it has not
/// ended after `secs`.
fn jit_bounded(args: &[&str], env: &[(&str, &str)], secs: u64) -> Output {
    let cfg = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_jit"));
    c.args(args)
        .env("JIT_CONFIG_DIR", cfg.path())
        .env_remove("JIT_TOKEN")
        .env_remove("JIT_PROFILE")
        .env_remove("JIT_SERVER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "jit {args:?} still running after {secs} s: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A watch or wait that never reached jitd fails as any other command
/// (exit 1, "cannot reach jitd"): retrying is only for a link that was up
/// once (it used to retry a wrong --server forever, header printed).
#[test]
fn a_watch_or_wait_that_never_reached_jitd_fails_at_once() {
    let token = jwt_shaped();
    for args in [vec!["watch"], vec!["wait", "abcd1234"]] {
        let o = jit_bounded(&args, &[SERVER, ("JIT_TOKEN", &token)], 60);
        let line = one_line(&o, 1, &["cannot reach jitd", "connection refused"]);
        assert!(!line.contains("retrying"), "{args:?}: {line}");
        assert!(o.stdout.is_empty(), "{args:?}: no header: {o:?}");
    }
}

/// `jit watch | head -1`: once the reader is gone, the watch ends quietly
/// with exit 0 while it waits for the next event (it used to hang until
/// the next event came). The jitd here holds its event stream open and
/// sends nothing.
#[test]
fn a_watch_ends_quietly_when_its_reader_goes() {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n: keep-alive\n\n",
            );
            held.push(s);
        }
    });
    let token = jwt_shaped();
    let server = format!("http://127.0.0.1:{port}");
    let cfg = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jit"))
        .args(["--server", &server, "watch"])
        .env("JIT_CONFIG_DIR", cfg.path())
        .env("JIT_TOKEN", &token)
        .env_remove("JIT_PROFILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read the header as `head -1` does, then go.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut header = String::new();
    out.read_line(&mut header).unwrap();
    assert!(header.contains("EVENT"), "{header:?}");
    drop(out);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("jit watch still running 30 s after its reader went");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.lines().all(|l| l.starts_with("jit: watching events")),
        "{err}"
    );
}

/// Flags that contradict each other are a usage error (exit 2, one line)
/// before any call, never one of them silently dropped: `audit --csv
/// --verify` (verify checks the whole chain), `audit --verify --since`,
/// `--json --output table`, JSON for `completions`/`man`, `request
/// --break-glass --start` (an emergency is now). Flags that agree
/// (`--json --output json`) are taken.
#[test]
fn contradicting_flags_are_refused_with_exit_2() {
    let token = jwt_shaped();
    let env = [SERVER, ("JIT_TOKEN", token.as_str())];
    for (args, says) in [
        (vec!["audit", "--csv", "--verify"], "--csv"),
        (vec!["audit", "--verify", "--since", "5"], "--since"),
        (
            vec!["list", "--json", "--output", "table"],
            "--output table",
        ),
        (
            vec!["--output", "table", "watch", "--json"],
            "--output table",
        ),
        (vec!["completions", "bash", "--json"], "does not apply"),
        (vec!["man", "--output", "json"], "does not apply"),
        (
            vec![
                "request",
                "e",
                "--reason",
                "emergency fix",
                "--break-glass",
                "--start",
                "+1h",
            ],
            "--start",
        ),
    ] {
        let o = jit(&args, &env);
        if args.contains(&"--json") || args.contains(&"json") {
            // A JSON problem object on stderr, exit 2.
            assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(says), "{args:?}: {err}");
        } else {
            one_line(&o, 2, &[says]);
        }
        assert!(o.stdout.is_empty(), "{args:?}: {o:?}");
    }
    // Agreeing flags: past the command line (to the closed port: exit 1).
    let o = jit(&["list", "--json", "--output", "json"], &env);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach jitd"));
}
