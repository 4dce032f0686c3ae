//! The exit codes of `jit`: one table, printed by `jit --help` and copied
//! in README (a test keeps the two equal), and the one place that decides
//! which code an error gets.

use jit_client::ClientError;
use jit_core::error::ErrorKind;
use jit_core::DomainError;
use jit_login::OidcError;

/// Success.
pub const OK: u8 = 0;
/// Any error not listed below (jitd or Keycloak unreachable, server error).
pub const ERROR: u8 = 1;
/// Invalid usage or input: the command line (clap), a duration, or a
/// refusal of jitd's validation (HTTP 400, 413, 422).
pub const USAGE: u8 = 2;
/// Forbidden or denied: jitd's HTTP 403 (not your right, your own
/// request); `--wait`: an approver denied the request.
pub const FORBIDDEN: u8 = 3;
/// `--wait`: the request ended without being granted, or the grant ended
/// (lapsed, cancelled, expired, revoked).
pub const ENDED: u8 = 4;
/// Timed out: `--wait --timeout`, `jit wait --timeout`, `login --timeout`.
pub const TIMED_OUT: u8 = 5;
/// Not logged in, or the session ended (HTTP 401, no profile, refused
/// refresh): run `jit login`.
pub const NOT_LOGGED_IN: u8 = 6;
/// No such request, or none you may see (HTTP 404, unknown id prefix).
pub const NOT_FOUND: u8 = 7;
/// The request's state does not allow it (HTTP 409: already held,
/// duplicate pending, already decided).
pub const CONFLICT: u8 = 8;
/// SIGHUP (the terminal closed) while waiting or watching: 128 + SIGHUP,
/// as shells report it; ends at once, quietly.
pub const HUNG_UP: u8 = 129;
/// Ctrl-C while waiting (`--wait`, `jit wait`) or watching: 128 + SIGINT,
/// as shells report it; the request goes on, `jit wait ID` resumes.
pub const INTERRUPTED: u8 = 130;
/// SIGTERM while waiting or watching: 128 + SIGTERM; as [`INTERRUPTED`].
pub const TERMINATED: u8 = 143;

/// Whether `e` ends the command without a word: an [`Exit`] with an
/// empty message (a signal that stopped `watch`, a hang-up).
pub fn is_quiet(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<Exit>(), Some(Exit(_, m)) if m.is_empty())
}

/// The table, as `jit --help` prints it (through the same macro) and
/// README shows it; the tests compare the three.
#[cfg_attr(not(test), allow(dead_code))]
pub const TABLE: &str = exit_table!();

/// An error with a specific exit code and a one-line message.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}
impl std::error::Error for Exit {}

/// Error `e` (exit `code`, message `msg`) as `--json` prints it on
/// stderr: one problem object, each fact once (README, "Errors"). When
/// jitd refused, its problem as it sent it — `type`, `title`, `status`,
/// `code` — with `detail` its sentence (after any step of the CLI's, e.g.
/// `cannot read jitd's login settings: …`), never the code again; else the
/// CLI's own `code` and `title` for exit `code`, no `status`. Always
/// `exit`, the process's exit code. `msg` must come from
/// `crate::message_of(.., false)` (no `(code)` suffix).
pub fn problem_json(e: &anyhow::Error, code: u8, msg: &str) -> String {
    let api = e
        .chain()
        .find_map(|c| match c.downcast_ref::<ClientError>() {
            Some(ClientError::Api {
                status,
                code,
                title,
                ..
            }) => Some((*status, code.clone(), title.clone())),
            _ => None,
        });
    let (status, problem, title) = match api {
        // An Exit made from a jitd refusal (e.g. `jit drop` of a grant
        // that ended) has its own words and code: the CLI's.
        Some(_) if e.downcast_ref::<Exit>().is_some() => (
            None,
            local_code(code).to_string(),
            title_of(code).to_string(),
        ),
        Some((s, c, t)) if !t.is_empty() => (Some(s), c, t),
        Some((s, c, _)) => (Some(s), c, title_of(code).to_string()),
        None => (
            None,
            local_code(code).to_string(),
            title_of(code).to_string(),
        ),
    };
    let mut v = serde_json::json!({
        "type": format!("urn:jit-access:problem:{problem}"),
        "title": title,
        "detail": msg,
        "code": problem,
        "exit": code,
    });
    if let Some(s) = status {
        v["status"] = s.into();
    }
    v.to_string()
}

/// The `code` of an error jitd did not give, by exit code.
fn local_code(code: u8) -> &'static str {
    match code {
        USAGE => "invalid_usage",
        FORBIDDEN => "forbidden",
        ENDED => "ended",
        TIMED_OUT => "timed_out",
        NOT_LOGGED_IN => "not_logged_in",
        NOT_FOUND => "not_found",
        CONFLICT => "conflict",
        INTERRUPTED => "interrupted",
        HUNG_UP => "hung_up",
        TERMINATED => "terminated",
        _ => "error",
    }
}

/// The problem `title` of exit code `code` (its row of [`TABLE`]).
fn title_of(code: u8) -> &'static str {
    match code {
        USAGE => "Invalid usage or input",
        FORBIDDEN => "Forbidden or denied",
        ENDED => "Ended without access",
        TIMED_OUT => "Timed out",
        NOT_LOGGED_IN => "Not logged in",
        NOT_FOUND => "Not found",
        CONFLICT => "Conflict",
        INTERRUPTED => "Interrupted",
        HUNG_UP => "Hung up",
        TERMINATED => "Terminated",
        _ => "Error",
    }
}

/// The exit code of `e`: the first error in its chain that says one.
pub fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(Exit(code, _)) = cause.downcast_ref::<Exit>() {
            return *code;
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return match c {
                // Something answered that is not a jitd (e.g. --server
                // pointed at Keycloak): like an unreachable jitd.
                ClientError::Api { code, .. } if code == jit_client::NOT_JITD => ERROR,
                ClientError::Api { status, .. } => match status {
                    400 | 413 | 422 => USAGE,
                    401 => NOT_LOGGED_IN,
                    403 => FORBIDDEN,
                    404 => NOT_FOUND,
                    409 => CONFLICT,
                    _ => ERROR,
                },
                ClientError::Token(_) => NOT_LOGGED_IN,
                ClientError::Unreachable { .. }
                | ClientError::KeycloakUnreachable(_)
                | ClientError::Protocol(_) => ERROR,
            };
        }
        if let Some(d) = cause.downcast_ref::<DomainError>() {
            return match d.kind() {
                ErrorKind::Invalid => USAGE,
                ErrorKind::Forbidden => FORBIDDEN,
                ErrorKind::Conflict => CONFLICT,
                ErrorKind::NotFound => NOT_FOUND,
            };
        }
        if let Some(o) = cause.downcast_ref::<OidcError>() {
            return match o {
                OidcError::Timeout => TIMED_OUT,
                OidcError::SessionEnded => NOT_LOGGED_IN,
                _ => ERROR,
            };
        }
    }
    ERROR
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> anyhow::Error {
        ClientError::Api {
            status,
            code: "x".into(),
            title: "X".into(),
            detail: "d".into(),
        }
        .into()
    }

    #[test]
    fn each_kind_of_error_has_its_code() {
        assert_eq!(code_of(&api(422)), USAGE);
        assert_eq!(code_of(&api(400)), USAGE);
        assert_eq!(code_of(&api(403)), FORBIDDEN);
        assert_eq!(code_of(&api(401)), NOT_LOGGED_IN);
        assert_eq!(code_of(&api(404)), NOT_FOUND);
        assert_eq!(code_of(&api(409)), CONFLICT);
        assert_eq!(code_of(&api(503)), ERROR);
        assert_eq!(
            code_of(&ClientError::Token("t".into()).into()),
            NOT_LOGGED_IN
        );
        assert_eq!(
            code_of(
                &ClientError::Unreachable {
                    url: "u".into(),
                    reason: "r".into()
                }
                .into()
            ),
            ERROR
        );
        let bad_duration = jit_core::parse_duration("soon").unwrap_err();
        assert_eq!(code_of(&bad_duration.into()), USAGE);
        assert_eq!(code_of(&OidcError::Timeout.into()), TIMED_OUT);
        assert_eq!(code_of(&OidcError::SessionEnded.into()), NOT_LOGGED_IN);
        assert_eq!(code_of(&Exit(ENDED, "lapsed".into()).into()), ENDED);
        // Context around an error keeps its code.
        let wrapped = api(403).context("approving");
        assert_eq!(code_of(&wrapped), FORBIDDEN);
        assert_eq!(code_of(&anyhow::anyhow!("other")), ERROR);
    }

    #[test]
    fn readme_shows_the_same_table() {
        let readme = include_str!("../../../README.md");
        for line in TABLE.lines().skip(1) {
            assert!(
                readme.contains(line),
                "README.md lacks the exit-code line {line:?} (copy exit::TABLE)"
            );
        }
    }

    #[test]
    fn codes_match_the_table() {
        for (code, word) in [
            (OK, "success"),
            (ERROR, "error"),
            (USAGE, "usage"),
            (FORBIDDEN, "forbidden"),
            (ENDED, "ended"),
            (TIMED_OUT, "timed out"),
            (NOT_LOGGED_IN, "not logged in"),
            (NOT_FOUND, "not found"),
            (CONFLICT, "conflict"),
            (INTERRUPTED, "interrupted"),
            (HUNG_UP, "hung up"),
            (TERMINATED, "terminated"),
        ] {
            let line = format!("  {code}  ");
            let row = TABLE
                .lines()
                .find(|l| l.starts_with(&line))
                .unwrap_or_else(|| panic!("no row for {code}"));
            assert!(row.contains(word), "{row}");
        }
    }
}
