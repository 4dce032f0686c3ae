//! The error of every command: [`CommandError`] `{code, message}`, and how
//! jit-client's errors become one. Its own module (not `commands`) so that
//! `session` and `state`, which word errors too, do not depend on the
//! command handlers that depend on them.

use jit_client::ClientError;
use serde::Serialize;

/// Codes of the login errors (see [`token_error`]).
pub(crate) const NOT_LOGGED_IN: &str = "log in first";
pub(crate) const KEYCLOAK_DOWN: &str = "Keycloak cannot be reached";
/// What the app says while Keycloak cannot renew the login (no URL, no
/// transport error: those go to the log).
const KEYCLOAK_DOWN_WORDS: &str = "Your login cannot be renewed until Keycloak is back; you stay logged in and the app retries by itself. jitd still ends grants on time.";

/// A [`ClientError::Token`] text as the UI's `{code, message}`.
pub fn token_error(text: &str) -> CommandError {
    if text.starts_with(KEYCLOAK_DOWN) {
        // The raw cause (token endpoint URL, transport error) is in the
        // log (`session::keycloak_failed`); the banner says it in words,
        // under its own "Keycloak is unreachable." heading.
        CommandError::new("keycloak_unreachable", KEYCLOAK_DOWN_WORDS)
    } else if text == NOT_LOGGED_IN {
        CommandError::new("login_required", "You are not logged in: log in first.")
    } else {
        CommandError::new("login_required", text)
    }
}

/// The error of every command, as the UI receives it (JSON
/// `{"code": "...", "message": "..."}`).
///
/// Codes: `jitd_unreachable` (jitd down or not answering), `keycloak_unreachable`
/// (the login cannot be renewed), `login_required` (not logged in, or the
/// Keycloak session ended), `starting` (the embedded jitd is still
/// starting), `backend_failed` (it could not start), `invalid_input`, and for
/// refusals jitd's own problem `code` (e.g. `self_approval`,
/// `illegal_transition`), `protocol` for an answer jitd should not give,
/// `internal` for the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandError {
    pub code: String,
    pub message: String,
}

impl CommandError {
    /// An error with a stable `code` (e.g. `login_required`) and words for the user.
    pub fn new(code: &str, message: impl Into<String>) -> CommandError {
        CommandError {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// Bad input from the UI (checked before anything is sent).
    pub fn invalid(message: impl Into<String>) -> CommandError {
        CommandError::new("invalid_input", message)
    }

    /// Turns a jit-client error into words that say which part is down.
    pub fn from_client(e: ClientError) -> CommandError {
        match e {
            ClientError::Api { code, detail, .. } => CommandError::new(&code, detail),
            ClientError::Unreachable { url, .. } => CommandError::new(
                "jitd_unreachable",
                format!(
                    "jitd ({url}) cannot be reached right now. What you see may be out of date; grants still end on time on the server. The app reconnects by itself."
                ),
            ),
            ClientError::Protocol(p) => CommandError::new(
                "protocol",
                format!("jitd gave an answer the app does not understand ({p})"),
            ),
            ClientError::KeycloakUnreachable(why) => {
                tracing::warn!(error = %why, "Keycloak cannot renew the login");
                CommandError::new("keycloak_unreachable", KEYCLOAK_DOWN_WORDS)
            }
            ClientError::Token(t) => token_error(&t),
        }
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl From<ClientError> for CommandError {
    fn from(e: ClientError) -> Self {
        CommandError::from_client(e)
    }
}

/// What commands return.
pub type CmdResult<T> = Result<T, CommandError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_become_words_with_a_code() {
        let e = CommandError::from_client(ClientError::Unreachable {
            url: "http://127.0.0.1:8787".into(),
            reason: "client error (Connect): tcp connect error (os error 111)".into(),
        });
        assert_eq!(e.code, "jitd_unreachable");
        assert!(e
            .message
            .starts_with("jitd (http://127.0.0.1:8787) cannot be reached"));
        assert!(!e.message.contains("os error"), "{}", e.message);

        let e = CommandError::from_client(ClientError::Api {
            status: 409,
            code: "illegal_transition".into(),
            title: "Not allowed in this state".into(),
            detail: "cannot cancel an approved request".into(),
        });
        assert_eq!(
            e,
            CommandError::new("illegal_transition", "cannot cancel an approved request")
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["code"], "illegal_transition");
    }

    /// The banner heads it with "Keycloak is unreachable."; the words must
    /// not say it again, nor show the token endpoint or a transport error.
    #[test]
    fn keycloak_down_is_said_once_without_urls_or_raw_errors() {
        for e in [
            token_error(&format!(
                "{KEYCLOAK_DOWN} (http://127.0.0.1:8080/realms/r/protocol/openid-connect/token)"
            )),
            token_error(&format!(
                "{KEYCLOAK_DOWN} to renew the login (token request failed: 502)"
            )),
            CommandError::from_client(ClientError::KeycloakUnreachable(
                "client error (Connect): tcp connect error (os error 111)".into(),
            )),
        ] {
            assert_eq!(e.code, "keycloak_unreachable");
            assert!(e.message.contains("cannot be renewed"), "{}", e.message);
            for raw in ["http", "cannot be reached", "error", "openid-connect"] {
                assert!(!e.message.contains(raw), "{raw} in {}", e.message);
            }
        }
    }
}
