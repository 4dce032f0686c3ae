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
    for args in [vec!["list"], vec!["--output", "json", "list"]] {
        let mut a = vec!["--server", server.as_str()];
        a.extend(args);
        let o = jit(&a, &[("JIT_TOKEN", token.as_str())]);
        one_line(&o, 1, &["cannot reach jitd"]);
    }
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
