//! `jit`: the JIT Access command line. A thin shell over `jit-client`
//! (API) and `jit-login` (login and refresh). `main` parses, then hands each
//! subcommand to one function; output is a table or JSON (`--output`).
//!
//! Exit codes: see [`exit::TABLE`] (also in `jit --help` and README).

/// The exit-code table (one literal for `exit::TABLE` and `jit --help`).
macro_rules! exit_table {
    () => {
        "Exit codes:
  0  success
  1  error not listed below (jitd or Keycloak unreachable, --server is not a jitd, server error)
  2  invalid usage or input (command line, duration, refused by jitd's validation)
  3  forbidden or denied (not your right, your own request; --wait: denied)
  4  ended without access (--wait: lapsed, cancelled, expired, revoked)
  5  timed out (--wait --timeout, jit wait, login --timeout)
  6  not logged in, or the session ended: run `jit login`
  7  not found (no such request, or not one you may see)
  8  conflict: the request's state does not allow it (already held, duplicate, decided, ended)
  129  hung up (SIGHUP: the terminal closed) while waiting or watching
  130  interrupted (Ctrl-C) while waiting or watching: resume a wait with `jit wait ID`
  143  terminated (SIGTERM) while waiting or watching: resume a wait with `jit wait ID`"
    };
}

/// `println!` for `jit`'s output: a closed stdout (`jit list | head -1`)
/// ends the process quietly with exit 0, as for any Unix filter, instead
/// of std's panic. SIGPIPE stays ignored (Rust's default), so a write to a
/// socket jitd closed is an error that `jit` reports, not a silent death.
/// Shadows std's macro in every module declared below.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::out::line(::std::format_args!($($arg)*))
    };
}

/// `print!` for `jit`'s output; see [`println!`].
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::out::write(::std::format_args!($($arg)*))
    };
}

mod exit;
mod out;
mod profile;
mod render;
mod ticket;
mod wait;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use jit_client::{Client, ListQuery, StaticToken, TokenSource};
use jit_core::api::{CreateRequestBody, RequestView};
use jit_core::{format_duration, parse_duration, Status};
use serde::Serialize;

use crate::exit::Exit;

#[derive(Parser)]
#[command(
    name = "jit",
    version,
    about = "Just-in-time access to Keycloak roles",
    after_help = "Pipelines: set JIT_TOKEN to an access token (audience jit-api) instead of `jit login`.\n\
                  Exit codes: `jit --help` lists them.",
    after_long_help = concat!(
        "Pipelines: set JIT_TOKEN to an access token (audience jit-api) instead of `jit login`.\n\n",
        exit_table!()
    )
)]
struct Cli {
    /// Login profile, so several users can be logged in side by side.
    /// 1 to 64 letters, digits, - and _.
    #[arg(
        long,
        global = true,
        env = "JIT_PROFILE",
        default_value = "default",
        value_parser = profile::parse_name
    )]
    profile: String,
    /// jitd URL [default: the profile's, else http://127.0.0.1:8787].
    #[arg(long, global = true, env = "JIT_SERVER", value_name = "URL")]
    server: Option<String>,
    /// Output format of every command: a table for people, or JSON for
    /// scripts (audit and watch: one JSON object per line) [default: table].
    #[arg(long, global = true, value_enum, ignore_case = true)]
    output: Option<Output>,
    /// Same as `--output json` (`--output table` with it is refused).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

/// `--output`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Log in: through the browser (Authorization Code + PKCE, loopback
    /// redirect), or with --device from any other device (RFC 8628).
    Login {
        /// For a machine without a browser (SSH, a server): prints a URL and
        /// a code to enter on any device that has one.
        #[arg(long)]
        device: bool,
        /// Give up after this long (exit 5).
        #[arg(
            long,
            default_value = "5m",
            value_name = "DURATION",
            allow_hyphen_values = true
        )]
        timeout: String,
    },
    /// End the Keycloak session and forget this profile's tokens.
    Logout,
    /// Who am I, and what may I approve.
    Whoami,
    /// What you may request.
    Entitlements,
    /// Ask for an entitlement.
    Request(RequestArgs),
    /// Wait for a request to become active (again, e.g. after `--wait`
    /// was interrupted): exit 0 once active, 3 denied, 4 ended, 5 timeout.
    Wait {
        /// Request id, or a unique prefix of one (at least 4 characters).
        id: String,
        /// Give up after this long (exit 5).
        #[arg(
            long,
            default_value = "1h",
            value_name = "DURATION",
            allow_hyphen_values = true
        )]
        timeout: String,
    },
    /// List requests you may see.
    List {
        /// Only my own requests.
        #[arg(long, conflicts_with = "to_review")]
        mine: bool,
        /// Only pending requests I may approve.
        #[arg(long)]
        to_review: bool,
        /// Filter by status (any case): pending, approved, active, denied,
        /// cancelled, lapsed, expired, revoked, applied (an extension added
        /// to its grant) or failed (Keycloak refused the grant).
        #[arg(
            long,
            value_name = "STATUS",
            ignore_case = true,
            hide_possible_values = true,
            value_parser = status_values()
        )]
        status: Option<String>,
    },
    /// Show every detail of one request.
    #[command(after_help = "With --output json (or --json): the request as the API returns it.")]
    Show {
        /// Request id, or a unique prefix of one (at least 4 characters), as
        /// `jit list` shows it.
        id: String,
    },
    /// Approve a request.
    Approve {
        /// Request id, or a unique prefix of one.
        id: String,
        /// Why you approve (kept in the audit; the requester sees it).
        #[arg(long)]
        comment: Option<String>,
        /// Shorten the grant to this duration (never lengthen).
        #[arg(long = "for", value_name = "DURATION", allow_hyphen_values = true)]
        duration: Option<String>,
    },
    /// Deny a request (a comment is required).
    Deny {
        /// Request id, or a unique prefix of one.
        id: String,
        /// Why you deny (required; the requester sees it).
        #[arg(long)]
        comment: String,
    },
    /// Withdraw your request before it is active.
    Cancel {
        /// Request id, or a unique prefix of one.
        id: String,
    },
    /// Give up your active grant now.
    Drop {
        /// Grant (request) id, or a unique prefix of one.
        id: String,
    },
    /// End someone's grant (approvers; a comment is required).
    Revoke {
        /// Grant (request) id, or a unique prefix of one.
        id: String,
        /// Why you end it (required; kept in the audit, the requester sees it).
        #[arg(long)]
        comment: String,
    },
    /// Try again a removal jitd gave up (shown as removal FAILED), after
    /// the cause in Keycloak is fixed or the role was removed by hand
    /// (approvers of the entitlement, or the grant's requester).
    RetryRemoval {
        /// Grant (request) id, or a unique prefix of one.
        id: String,
        /// What was fixed (kept in the audit).
        #[arg(long)]
        comment: Option<String>,
    },
    /// Ask for more time on your active grant.
    Extend {
        /// Grant (request) id, or a unique prefix of one.
        id: String,
        /// How much longer, e.g. 15m.
        #[arg(long = "for", value_name = "DURATION", allow_hyphen_values = true)]
        duration: String,
        /// Why you need more time (the justification approvers see; the
        /// entitlement's length limits apply, as for a request).
        #[arg(long)]
        reason: String,
    },
    /// Close the after-the-fact review of a break-glass activation.
    Review {
        /// Request id, or a unique prefix of one.
        id: String,
        /// What the review found (required; kept in the audit).
        #[arg(long)]
        comment: String,
    },
    /// The audit trail you may see (with --output json: JSON lines).
    Audit {
        /// Only rows after this sequence number (0 or more).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(0..))]
        since: i64,
        /// CSV export (not with --output json).
        #[arg(long)]
        csv: bool,
        /// Check the hash chain (auditors): the whole chain, so not with
        /// --csv or --since.
        #[arg(long, conflicts_with_all = ["csv", "since"])]
        verify: bool,
    },
    /// Follow events live (Ctrl-C to stop); reconnects by itself.
    Watch {
        /// Start after this event (audit sequence number, 0 or more);
        /// default: now.
        #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(0..))]
        since: Option<i64>,
    },
    /// Print a shell completion script, e.g. `jit completions bash >
    /// ~/.local/share/bash-completion/completions/jit`.
    Completions {
        /// The shell (any case).
        #[arg(ignore_case = true)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `jit man | man -l -`.
    Man,
}

#[derive(Args)]
struct RequestArgs {
    /// Entitlement id (see `jit entitlements`).
    entitlement: String,
    /// Duration, e.g. 30m, 2h [default: the entitlement's].
    #[arg(long = "for", value_name = "DURATION", allow_hyphen_values = true)]
    duration: Option<String>,
    /// Why you need it (the justification approvers see; the entitlement
    /// sets its length limits).
    #[arg(long)]
    reason: String,
    /// Ticket reference, if the entitlement requires one.
    #[arg(long)]
    ticket: Option<String>,
    /// Flag as urgent (approvers get a critical notification).
    #[arg(long)]
    urgent: bool,
    /// Emergency self-activation, where the policy allows it: now, so not
    /// with --start.
    #[arg(long, conflicts_with = "start")]
    break_glass: bool,
    /// Start later: a time in RFC 3339, e.g. 2026-12-01T09:00:00Z, or a
    /// duration from now, e.g. +2h.
    #[arg(long, value_name = "TIME", value_parser = start_time, allow_hyphen_values = true)]
    start: Option<chrono::DateTime<chrono::Utc>>,
    /// Wait until approved and active (exit 0) or denied/lapsed (non-zero);
    /// survives jitd restarts. Resume an interrupted wait with `jit wait ID`.
    #[arg(long)]
    wait: bool,
    /// With --wait (only): give up after this long (exit 5) [default: 1h].
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    timeout: Option<String>,
}

fn main() -> ExitCode {
    // SIGPIPE stays ignored (Rust's default): a closed stdout is handled
    // where output is written (`out`), a closed socket is an I/O error.
    let argv: Vec<String> = std::env::args().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e, &argv),
    };
    let profile = cli.profile.clone();
    let json = cli.json();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            let code = exit::code_of(&e);
            // An empty message is a quiet end (watch stopped by a signal,
            // a wait whose terminal hung up): the exit code says it all.
            if exit::is_quiet(&e) {
            } else if json {
                let msg = message_of(&e, &profile, false);
                eprintln!("{}", exit::problem_json(&e, code, &msg));
            } else {
                eprintln!("jit: {}", message_of(&e, &profile, true));
            }
            ExitCode::from(code)
        }
    }
}

/// A command-line error: help and version as clap prints them; anything
/// else as one line `jit: …; try `jit CMD --help`` with exit 2 (no usage
/// block, which would list the options taken from the environment).
fn usage_error(e: clap::Error, argv: &[String]) -> ExitCode {
    use clap::error::ErrorKind as K;
    if matches!(
        e.kind(),
        K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() {
            exit::USAGE
        } else {
            exit::OK
        });
    }
    let line = usage_line(&e, argv);
    if wants_json(argv) {
        let err = anyhow::anyhow!(line.clone());
        eprintln!("{}", exit::problem_json(&err, exit::USAGE, &line));
    } else {
        eprintln!("jit: {line}");
    }
    ExitCode::from(exit::USAGE)
}

/// Whether the command line asks for JSON (`--json`, `--output json`,
/// `--output=json`), read from the words themselves: for errors found
/// before the command line could be parsed.
fn wants_json(argv: &[String]) -> bool {
    argv.iter().enumerate().any(|(i, a)| {
        a == "--json"
            || a == "--output=json"
            || (a == "--output" && argv.get(i + 1).is_some_and(|v| v == "json"))
    })
}

/// clap's message on one line (its lines up to the first blank one,
/// joined), then where to read more: `…; try `jit deny --help``.
fn usage_line(e: &clap::Error, argv: &[String]) -> String {
    let text = e.render().to_string();
    let msg: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect();
    let msg = cut_quoted(&msg.join(" "), 60);
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    let cmd = Cli::command();
    let sub = argv
        .iter()
        .skip(1)
        .find(|a| cmd.find_subcommand(a.as_str()).is_some());
    match sub {
        Some(sub) => format!("{msg}; try `jit {sub} --help`"),
        None => format!("{msg}; try `jit --help`"),
    }
}

/// `msg` with each single-quoted value longer than `max` characters cut
/// with `…` (clap echoes a wrong value in full: a 300-character profile
/// name would fill the screen).
fn cut_quoted(msg: &str, max: usize) -> String {
    let parts: Vec<&str> = msg.split('\'').collect();
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            // Odd parts are inside quotes (when the quote closes).
            if i % 2 == 1 && i + 1 < parts.len() {
                render::cut(p, max)
            } else {
                p.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("'")
}

/// `jit login`, or `jit --profile P login` for another profile.
pub(crate) fn login_command(profile: &str) -> String {
    if profile == "default" {
        "`jit login`".into()
    } else {
        format!("`jit --profile {profile} login`")
    }
}

/// The one line printed for error `e`: an [`Exit`]'s message; a refused
/// token with what to do about it; else the message and its causes.
/// `with_code`: a jitd refusal ends with its code in parentheses (the
/// line people read); without it (the `--json` problem's `detail`, whose
/// `code` member says it) only jitd's sentence.
fn message_of(e: &anyhow::Error, profile: &str, with_code: bool) -> String {
    if let Some(Exit(_, msg)) = e.downcast_ref::<Exit>() {
        return msg.clone();
    }
    for cause in e.chain() {
        if let Some(jit_client::ClientError::Api {
            status: 401,
            detail,
            ..
        }) = cause.downcast_ref()
        {
            let detail = render::cut(detail, 200);
            return if std::env::var_os("JIT_TOKEN").is_some() {
                format!(
                    "jitd refused JIT_TOKEN ({detail}): set it to a current access token \
                     for jitd (audience jit-api), or unset it and run {}",
                    login_command(profile)
                )
            } else {
                format!(
                    "jitd refused your login ({detail}): run {}",
                    login_command(profile)
                )
            };
        }
    }
    let msg: Vec<String> = e
        .chain()
        .map(|c| match c.downcast_ref::<jit_client::ClientError>() {
            Some(jit_client::ClientError::Api { detail, .. }) if !with_code => detail.clone(),
            _ => c.to_string(),
        })
        .collect();
    msg.join(": ")
}

const DEFAULT_SERVER: &str = "http://127.0.0.1:8787";

impl Cli {
    fn json(&self) -> bool {
        self.json || self.output == Some(Output::Json)
    }

    /// Refuses flags that contradict each other across the command line
    /// (exit 2), where clap's own conflicts cannot say it: `--json` with
    /// `--output table`; JSON for commands whose output is not data
    /// (`completions`, `man`).
    fn check_flags(&self) -> anyhow::Result<()> {
        if self.json && self.output == Some(Output::Table) {
            bail!(Exit(
                exit::USAGE,
                "--json and --output table exclude each other: give one".into()
            ));
        }
        let what = match self.command {
            Cmd::Completions { .. } => "completions prints a shell script",
            Cmd::Man => "man prints a manual page",
            _ => return Ok(()),
        };
        if self.json() {
            bail!(Exit(
                exit::USAGE,
                format!("{what}; --output json does not apply: leave it out")
            ));
        }
        Ok(())
    }

    /// Prints `value` as JSON (JSON mode) or calls `table`.
    fn print<T: Serialize>(&self, value: &T, table: impl FnOnce()) -> anyhow::Result<()> {
        if self.json() {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            table();
        }
        Ok(())
    }
}

/// Checks `--server` is an http(s) URL, so a typo gives a clear message.
fn server_url(s: &str) -> anyhow::Result<String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(s.trim_end_matches('/').to_string())
        }
        _ => Err(Exit(
            exit::USAGE,
            format!("invalid --server '{s}': expected a URL like http://127.0.0.1:8787"),
        )
        .into()),
    }
}

/// Whether two jitd URLs name the same server (scheme, host, port and
/// path; `HTTP://Host:80/` is `http://host`).
fn same_server(a: &str, b: &str) -> bool {
    let parse = |s: &str| url::Url::parse(s.trim_end_matches('/')).ok();
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => {
            x.scheme() == y.scheme()
                && x.host_str() == y.host_str()
                && x.port_or_known_default() == y.port_or_known_default()
                && x.path().trim_end_matches('/') == y.path().trim_end_matches('/')
        }
        _ => a.trim_end_matches('/') == b.trim_end_matches('/'),
    }
}

/// Why `token` cannot be a JWT (three base64url parts, the first a JSON
/// header), in words; `Ok` when it has that shape. jitd checks the rest.
fn jwt_shape(token: &str) -> Result<(), &'static str> {
    use base64::Engine;
    if token.is_empty() {
        return Err("it is empty");
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err("a JWT has three parts separated by dots");
    }
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[0].trim_end_matches('='))
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok());
    match header {
        Some(h) if h.get("alg").is_some() => Ok(()),
        _ => Err("its first part is not a JWT header"),
    }
}

fn client(cli: &Cli) -> anyhow::Result<Client> {
    if let Ok(t) = std::env::var("JIT_TOKEN") {
        // A profile chosen by name would be ignored: the call would be
        // made as the token's owner, not as the profile's user.
        if cli.profile != "default" && !t.trim().is_empty() {
            bail!(Exit(
                exit::USAGE,
                format!(
                    "JIT_TOKEN is set, so profile '{}' would not be used (calls are made as the token's owner): unset JIT_TOKEN, or leave out --profile / JIT_PROFILE",
                    cli.profile
                )
            ));
        }
        let t = t.trim();
        if let Err(why) = jwt_shape(t) {
            bail!(Exit(
                exit::NOT_LOGGED_IN,
                format!(
                    "JIT_TOKEN is not a JWT access token ({why}); set it to an access token \
                     for jitd (audience jit-api), or unset it and run {}",
                    login_command(&cli.profile)
                )
            ));
        }
        let server = server_url(cli.server.as_deref().unwrap_or(DEFAULT_SERVER))?;
        let src: Arc<dyn TokenSource> = Arc::new(StaticToken(t.to_string()));
        return Ok(Client::new(&server, Some(src)));
    }
    let p = profile::load(&cli.profile)?.ok_or_else(|| {
        Exit(
            exit::NOT_LOGGED_IN,
            format!(
                "not logged in (profile '{}'): run {}",
                cli.profile,
                login_command(&cli.profile)
            ),
        )
    })?;
    let server = server_url(cli.server.as_deref().unwrap_or(&p.server))?;
    // The profile's tokens go only to the jitd it logged in to: a mistyped
    // --server or a planted JIT_SERVER must not receive them.
    if !same_server(&server, &p.server) {
        bail!(Exit(
            exit::USAGE,
            format!(
                "profile '{}' is logged in to {}, so its token is not sent to {server}: leave out --server / JIT_SERVER, or log in to {server} with another profile (`jit --profile NAME --server {server} login`)",
                cli.profile,
                p.server.trim_end_matches('/'),
            )
        ));
    }
    let src: Arc<dyn TokenSource> = profile::ProfileTokens::new(&cli.profile, p);
    Ok(Client::new(&server, Some(src)))
}

/// A local value the user typed that is wrong: exit 2. A negative one
/// (`--for -5m`) is refused as such.
fn duration(text: &str) -> anyhow::Result<i64> {
    if text.trim().starts_with('-') {
        bail!(Exit(
            exit::USAGE,
            format!("invalid duration '{text}': duration must be positive, e.g. 30m")
        ));
    }
    parse_duration(text).map_err(|e| Exit(exit::USAGE, e.to_string()).into())
}

/// `--status`'s values: every status jitd has (`Status::ALL`), matched in
/// any case (the argument's `ignore_case`); a wrong one is refused by clap
/// with the list of values.
fn status_values() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Status::ALL.map(|s| s.as_str()))
}

/// `--start`: a time in RFC 3339 (`2026-12-01T09:00:00Z`, any offset,
/// kept as UTC) or `+DURATION` from now (this machine's clock).
///
/// Errors say what is wrong with the value and what is accepted: the
/// start must be in the future (`+0s` is now: leave `--start` out
/// instead), `+DURATION` takes the duration grammar (`s m h d`), a time
/// must be RFC 3339 with a date, a `T`, a time and an offset (`Z` for UTC).
fn start_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    const FORMS: &str = "give a time in RFC 3339, e.g. 2026-12-01T09:00:00Z (UTC) or \
                         2026-12-01T10:00:00+01:00, or a duration from now, e.g. +2h or +1h30m; \
                         leave --start out to begin once approved";
    let t = text.trim();
    if let Some(rel) = t.strip_prefix('+') {
        let zero = rel.chars().any(|c| c.is_ascii_digit())
            && rel.chars().filter(|c| c.is_ascii_digit()).all(|c| c == '0');
        if zero {
            return Err(format!(
                "the start must be in the future, and +{rel} is now; {FORMS}"
            ));
        }
        return match parse_duration(rel) {
            Ok(secs) => Ok(chrono::Utc::now() + chrono::Duration::seconds(secs)),
            Err(e) => {
                let why = match &e {
                    jit_core::DomainError::InvalidDuration { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                Err(format!(
                    "after + comes a duration, and '{rel}' is not one ({why}); {FORMS}"
                ))
            }
        };
    }
    if t.starts_with('-') {
        return Err(format!(
            "the start must be in the future, not before now; {FORMS}"
        ));
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e}); {FORMS}"))
}

/// Accepts a full id or a unique prefix of a visible request's id.
/// Ids are UUIDs, which jitd writes in lower case; any case is accepted.
async fn resolve(c: &Client, id: &str) -> anyhow::Result<String> {
    let id = &id.trim().to_ascii_lowercase();
    if id.len() == 36 {
        return Ok(id.to_string());
    }
    if id.len() > 36 {
        // Longer than any id (a UUID is 36 characters): no request can
        // match, and a huge one would not even fit in a URL.
        bail!(Exit(
            exit::NOT_FOUND,
            format!(
                "no request has the id '{}': an id is 36 characters (a UUID) or a prefix of one",
                render::cut(id, 40)
            )
        ));
    }
    if id.len() < 4 {
        bail!(Exit(
            exit::USAGE,
            format!("id '{id}' is too short: give at least 4 characters")
        ));
    }
    let hits = c.find_by_prefix(id).await?;
    match hits.len() {
        1 => Ok(hits[0].request.id().to_string()),
        0 => bail!(Exit(
            exit::NOT_FOUND,
            format!("no request you may see has an id starting with '{id}'")
        )),
        _ => bail!(Exit(exit::USAGE, render::ambiguous_prefix(id, &hits))),
    }
}

/// Hands the subcommand to its function.
async fn run(cli: Cli) -> anyhow::Result<()> {
    cli.check_flags()?;
    match &cli.command {
        Cmd::Login { device, timeout } => login(&cli, *device, duration(timeout)?).await,
        Cmd::Logout => logout(&cli).await,
        Cmd::Whoami => whoami(&cli).await,
        Cmd::Entitlements => entitlements(&cli).await,
        Cmd::Request(a) => request(&cli, a).await,
        Cmd::Wait { id, timeout } => wait(&cli, id, timeout).await,
        Cmd::List {
            mine,
            to_review,
            status,
        } => list(&cli, *mine, *to_review, status.as_deref()).await,
        Cmd::Show { id } => show(&cli, id).await,
        Cmd::Approve {
            id,
            comment,
            duration: d,
        } => approve(&cli, id, comment.clone(), d.clone()).await,
        Cmd::Deny { id, comment } => deny(&cli, id, comment).await,
        Cmd::Cancel { id } => cancel(&cli, id).await,
        Cmd::Drop { id } => drop_grant(&cli, id).await,
        Cmd::Revoke { id, comment } => revoke(&cli, id, comment).await,
        Cmd::RetryRemoval { id, comment } => retry_removal(&cli, id, comment.as_deref()).await,
        Cmd::Extend {
            id,
            duration: d,
            reason,
        } => extend(&cli, id, d, reason).await,
        Cmd::Review { id, comment } => review(&cli, id, comment).await,
        Cmd::Audit { since, csv, verify } => audit(&cli, *since, *csv, *verify).await,
        Cmd::Watch { since } => {
            // Listening from the start: a signal ends the watch at once,
            // quietly, with its exit code (never left running).
            let mut signals = wait::Signals::listen();
            let c = client(&cli)?;
            tokio::select! {
                r = wait::watch(&c, *since, cli.json(), |r| remember(&cli, r)) => r,
                stop = signals.next() => Err(Exit(stop.exit_code(), String::new()).into()),
                // The reader is gone (`jit watch | head -1`): quietly, 0.
                () = out::closed() => Ok(()),
            }
        }
        Cmd::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "jit", &mut buf);
            out::bytes(&buf);
            Ok(())
        }
        Cmd::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
            out::bytes(&buf);
            Ok(())
        }
    }
}

/// Remembers the profile user's grants among `rows` (see
/// [`profile::SeenGrant`]: to say why a session ended); not with
/// `JIT_TOKEN`, which has no profile.
fn remember(cli: &Cli, rows: &[RequestView]) {
    if std::env::var_os("JIT_TOKEN").is_some() {
        return;
    }
    if let Ok(Some(p)) = profile::load(&cli.profile) {
        profile::note_grants(&cli.profile, &p.login.username, rows);
    }
}

/// `jit entitlements`.
async fn entitlements(cli: &Cli) -> anyhow::Result<()> {
    let es = client(cli)?.entitlements().await?;
    cli.print(&es, || print!("{}", render::entitlements(&es)))
}

/// `jit wait ID`: until active (0), denied (3), ended (4) or timed out (5).
async fn wait(cli: &Cli, id: &str, timeout: &str) -> anyhow::Result<()> {
    let timeout = duration(timeout)?;
    let mut signals = wait::Signals::listen();
    let c = client(cli)?;
    let r = wait_or_interrupt(&c, &mut signals, id, timeout, false).await?;
    remember(cli, std::slice::from_ref(&r));
    cli.print(&r, || render::granted(&r))
}

/// `jit list`: a bad `--status` is a usage error (2) before any call.
async fn list(cli: &Cli, mine: bool, to_review: bool, status: Option<&str>) -> anyhow::Result<()> {
    // clap accepted it in any case; jitd takes the lower-case name.
    let status = status.map(str::to_ascii_lowercase);
    let applied = status.as_deref() == Some("applied");
    let c = client(cli)?;
    let rows = c
        .list(&ListQuery {
            status,
            mine,
            to_review,
            review_open: false,
        })
        .await?;
    remember(cli, &rows);
    cli.print(&rows, || {
        print!("{}", render::list(&rows, c.server_now(), applied))
    })
}

/// `jit show ID`.
async fn show(cli: &Cli, id: &str) -> anyhow::Result<()> {
    let c = client(cli)?;
    let r = c.get(&resolve(&c, id).await?).await?;
    remember(cli, std::slice::from_ref(&r));
    cli.print(&r, || render::show(&r, c.server_now()))
}

/// `jit approve ID [--for D]`: prints the status and the approval count.
async fn approve(
    cli: &Cli,
    id: &str,
    comment: Option<String>,
    shorten_to: Option<String>,
) -> anyhow::Result<()> {
    if let Some(d) = &shorten_to {
        duration(d)?;
    }
    let c = client(cli)?;
    let r = c
        .approve(&resolve(&c, id).await?, comment, shorten_to)
        .await?;
    cli.print(&r, || {
        render::outcome(
            &r,
            &format!(
                "{} ({}/{} approvals)",
                r.request.status(),
                r.request.approvals(),
                r.request.approvals_required()
            ),
        )
    })
}

/// `jit deny ID --comment C`.
async fn deny(cli: &Cli, id: &str, comment: &str) -> anyhow::Result<()> {
    let c = client(cli)?;
    let r = c.deny(&resolve(&c, id).await?, comment).await?;
    cli.print(&r, || render::outcome(&r, r.request.status().as_str()))
}

/// `jit cancel ID`.
async fn cancel(cli: &Cli, id: &str) -> anyhow::Result<()> {
    let c = client(cli)?;
    let id = resolve(&c, id).await?;
    let r = match c.cancel(&id).await {
        Ok(r) => r,
        Err(e) if e.code() == Some("illegal_transition") => {
            return Err(cancel_refused(&c, &id, e).await)
        }
        Err(e) => return Err(e.into()),
    };
    // Cancelled while jitd was granting it: say what becomes of the role.
    let what = if r.keycloak.owns_assignment == Some(true) || r.keycloak.removal_pending {
        ended_grant_effect(&c, &r, "cancelled").await
    } else {
        r.request.status().as_str().to_string()
    };
    cli.print(&r, || render::outcome(&r, &what))
}

/// A cancel jitd refused as `illegal_transition`: for a grant already
/// active, that `jit drop` ends it (exit 8, as the refusal); any other
/// refusal as it came.
async fn cancel_refused(c: &Client, id: &str, e: jit_client::ClientError) -> anyhow::Error {
    match c.get(id).await {
        Ok(r) if r.request.status() == Status::Active => Exit(
            exit::CONFLICT,
            format!(
                "cannot cancel {} {}: it is already approved and active (`jit cancel` withdraws a request before that); to end the grant now, run `jit drop {}`",
                render::short(id),
                r.request.entitlement_id(),
                render::short(id)
            ),
        )
        .into(),
        _ => e.into(),
    }
}

/// `jit drop ID`: says whether the role goes or another grant keeps it;
/// a grant already over is said as jitd recorded its end.
async fn drop_grant(cli: &Cli, id: &str) -> anyhow::Result<()> {
    let c = client(cli)?;
    let id = resolve(&c, id).await?;
    let r = match c.drop_grant(&id).await {
        Ok(r) => r,
        Err(e) => return Err(not_active(&c, &id, e).await),
    };
    let what = ended_grant_effect(&c, &r, "dropped").await;
    cli.print(&r, || render::outcome(&r, &what))
}

/// `jit revoke ID --comment C`: as `drop`, for an approver.
async fn revoke(cli: &Cli, id: &str, comment: &str) -> anyhow::Result<()> {
    let c = client(cli)?;
    let id = resolve(&c, id).await?;
    let r = match c.revoke(&id, comment).await {
        Ok(r) => r,
        Err(e) if e.code() == Some("not_an_approver") => return Err(own_grant(&c, &id, e).await),
        Err(e) => return Err(not_active(&c, &id, e).await),
    };
    let what = ended_grant_effect(&c, &r, "revoked").await;
    cli.print(&r, || render::outcome(&r, &what))
}

async fn retry_removal(cli: &Cli, id: &str, comment: Option<&str>) -> anyhow::Result<()> {
    let c = client(cli)?;
    let id = resolve(&c, id).await?;
    let r = c.retry_removal(&id, comment).await?;
    cli.print(&r, || {
        render::outcome(
            &r,
            "the removal is pending again; jitd removes the role from Keycloak now (see `jit show`)",
        )
    })
}

/// A revoke refused because the caller approves nothing of the grant's
/// entitlement: when it is the caller's own grant, where to look instead
/// (`jit drop`, exit 3); else the refusal as it came.
async fn own_grant(c: &Client, id: &str, e: jit_client::ClientError) -> anyhow::Error {
    match (c.get(id).await, c.me().await) {
        (Ok(r), Ok(me)) if r.request.requester_id() == me.id => {
            // Your own extension request: its grant is what `jit drop` ends.
            let grant = match r.request.kind() {
                jit_core::RequestKind::Extension { grant_id } => grant_id.as_str(),
                jit_core::RequestKind::Access => id,
            };
            let what = if grant == id {
                "your own grant"
            } else {
                "your own extension request"
            };
            Exit(
                exit::FORBIDDEN,
                format!(
                    "{} {} is {what}: `jit revoke` is for approvers; to end the grant now, run `jit drop {}`",
                    render::short(id),
                    r.request.entitlement_id(),
                    render::short(grant)
                ),
            )
            .into()
        }
        _ => e.into(),
    }
}

/// The error of a drop or revoke that jitd refused: for a grant no longer
/// active (`illegal_transition`), how and when it ended as jitd recorded
/// it (exit 8); any other refusal as it came.
async fn not_active(c: &Client, id: &str, e: jit_client::ClientError) -> anyhow::Error {
    if e.code() != Some("illegal_transition") {
        return e.into();
    }
    match c.get(id).await {
        Ok(r) => Exit(
            exit::CONFLICT,
            format!(
                "{} {}: {}",
                render::short(r.request.id()),
                r.request.entitlement_id(),
                render::how_it_ended(&r)
            ),
        )
        .into(),
        Err(_) => e.into(),
    }
}

/// Waits as [`wait::wait_for`] until a signal ends the command at once:
/// Ctrl-C (exit 130) or SIGTERM (143) with one line saying where the
/// request stands and how to resume; SIGHUP (129, the terminal is gone)
/// quietly; a closed stdout (the reader is gone) quietly with exit 0, as
/// any write to it would. The request itself goes on in jitd. `reached`:
/// jitd has answered already (see [`wait::wait_for`]).
async fn wait_or_interrupt(
    c: &Client,
    signals: &mut wait::Signals,
    id: &str,
    timeout: i64,
    reached: bool,
) -> anyhow::Result<RequestView> {
    let last = std::cell::Cell::new(None);
    tokio::select! {
        r = wait::wait_for(c, id, timeout, &last, reached) => r,
        () = out::closed() => Err(Exit(exit::OK, String::new()).into()),
        stop = signals.next() => {
            if stop == wait::Stop::HangUp {
                return Err(Exit(stop.exit_code(), String::new()).into());
            }
            let now = match last.get() {
                Some(Status::Pending) => "still pending",
                Some(Status::Approved) => "approved, not active yet",
                _ => "still waiting",
            };
            Err(Exit(
                stop.exit_code(),
                format!("{now}; resume with `jit wait {}`", render::short(id)),
            )
            .into())
        }
    }
}

/// `jit extend ID --for D --reason R`.
async fn extend(cli: &Cli, id: &str, more: &str, reason: &str) -> anyhow::Result<()> {
    duration(more)?;
    let c = client(cli)?;
    let r = c.extend(&resolve(&c, id).await?, more, reason).await?;
    cli.print(&r, || {
        println!(
            "extension {} for {}: {}",
            render::short(r.request.id()),
            format_duration(r.request.duration_secs()),
            r.request.status()
        )
    })
}

/// `jit review ID --comment C`.
async fn review(cli: &Cli, id: &str, comment: &str) -> anyhow::Result<()> {
    let c = client(cli)?;
    let r = c.review(&resolve(&c, id).await?, comment).await?;
    cli.print(&r, || {
        println!("{} reviewed", render::short(r.request.id()))
    })
}

async fn whoami(cli: &Cli) -> anyhow::Result<()> {
    let me = client(cli)?.me().await?;
    cli.print(&me, || {
        println!("{} ({})", me.username, me.id);
        if me.auditor {
            println!("auditor: sees all requests and the whole audit trail");
        }
        if !me.approves.is_empty() {
            println!("approves: {}", me.approves.join(", "));
        }
    })
}

/// What ending grant `r` does to the role: nothing granted yet (ended
/// before its start), removed (and the user's Keycloak sessions ended,
/// for an entitlement that ends them), kept because the user held it
/// before the grant (a standing assignment, `owns_assignment` false), or
/// kept by another active grant of the same entitlement to the same user
/// (which jitd honours: the role goes only with the last one).
async fn ended_grant_effect(c: &Client, r: &RequestView, verb: &str) -> String {
    // Ended before jitd recorded the grant (an approved request whose start
    // was still ahead, or one jitd was granting that very moment).
    if r.keycloak.granted_at.is_none() {
        return if r.keycloak.owns_assignment == Some(true) || r.keycloak.removal_pending {
            format!(
                "{verb} while jitd was granting it; jitd removes {} again if it reached Keycloak (see `jit show`)",
                r.request.target()
            )
        } else {
            format!("{verb} before it started; nothing was granted in Keycloak")
        };
    }
    if r.keycloak.owns_assignment == Some(false) {
        return format!(
            "{verb}; {} stays: it was held before this grant (a standing assignment JIT never removes)",
            r.request.target()
        );
    }
    let others = c
        .list(&ListQuery {
            status: Some("active".into()),
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let keeper = others.iter().find(|o| {
        o.request.id() != r.request.id()
            && o.request.entitlement_id() == r.request.entitlement_id()
            && o.request.requester_id() == r.request.requester_id()
    });
    match keeper {
        Some(k) => format!(
            "{verb}; {} stays while grant {} is active (until {})",
            r.request.target(),
            render::short(k.request.id()),
            k.request
                .expires_at()
                .map(render::time)
                .unwrap_or_else(|| "-".into())
        ),
        None if r.ends_sessions => format!(
            "{verb}; {} is being removed from Keycloak, and {}'s Keycloak sessions are ended with it (a new login is needed)",
            r.request.target(),
            r.request.requester_username()
        ),
        None => format!("{verb}; {} is being removed from Keycloak", r.request.target()),
    }
}

async fn audit(cli: &Cli, since: i64, csv: bool, verify: bool) -> anyhow::Result<()> {
    let c = client(cli)?;
    if verify {
        let v = c.audit_verify().await?;
        if v.ok {
            return cli.print(&v, || {
                println!(
                    "audit chain OK: {} rows, last hash {}",
                    v.rows,
                    v.last_hash.as_deref().unwrap_or("-")
                )
            });
        }
        if cli.json() {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        bail!(Exit(
            exit::ERROR,
            format!(
                "audit chain BROKEN at seq {}",
                v.first_bad_seq
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "?".into())
            )
        ));
    }
    if csv && cli.json() {
        bail!(Exit(
            exit::USAGE,
            "--csv and --output json exclude each other".into()
        ));
    }
    if csv || cli.json() {
        print!(
            "{}",
            c.audit_export(since, if csv { "csv" } else { "jsonl" })
                .await?
        );
    } else {
        print!("{}", render::audit(&c.audit(since).await?));
    }
    Ok(())
}

/// What `jit login` prints in JSON mode.
#[derive(Serialize)]
struct LoggedIn<'a> {
    username: &'a str,
    profile: &'a str,
    server: &'a str,
}

async fn login(cli: &Cli, device: bool, timeout_secs: i64) -> anyhow::Result<()> {
    let existing = profile::load(&cli.profile).ok().flatten().map(|p| p.server);
    let server = cli
        .server
        .clone()
        .or_else(|| existing.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.into());
    let server = server_url(&server)?;
    // A profile is never moved to another jitd by a login (a mistyped
    // --server, or a JIT_SERVER planted in the environment, would then
    // get this and every later token of the profile).
    if let Some(old) = existing.filter(|old| !same_server(&server, old)) {
        bail!(Exit(
            exit::USAGE,
            format!(
                "profile '{}' is logged in to {}, not {server}: to use {server}, log in with another profile (`jit --profile NAME --server {server} login`), or run `jit --profile {} logout` first",
                cli.profile,
                old.trim_end_matches('/'),
                cli.profile
            )
        ));
    }
    let anon = Client::new(&server, None);
    let cfg = anon
        .server_config()
        .await
        .context("cannot read jitd's login settings")?;
    let oidc =
        jit_login::OidcClient::discover(jit_login::http_client(), &cfg.issuer, &cfg.cli_client_id)
            .await?;
    let timeout = Duration::from_secs(timeout_secs as u64);
    let waiting = format!(
        "waiting up to {}; Ctrl-C to stop",
        format_duration(timeout_secs)
    );
    let tokens = if device {
        let d = oidc.start_device_login().await?;
        eprintln!(
            "To log in, open {} on any device with a browser and enter the code {}",
            d.verification_uri, d.user_code
        );
        if let Some(full) = &d.verification_uri_complete {
            eprintln!("  (or open {full})");
        }
        eprintln!("({waiting})");
        oidc.finish_device_login(d, timeout).await?
    } else {
        jit_login::browser_login(&oidc, timeout, |url, no_browser| {
            eprintln!(
                "To log in, open this URL in a browser on this machine ({waiting}):\n  {url}"
            );
            if let Some(e) = no_browser {
                eprintln!(
                    "(no browser was started: {e}. Open the URL yourself, or use \
                     `jit login --device` to log in from another device.)"
                );
            }
        })
        .await?
    };
    let probe = Client::new(
        &server,
        Some(Arc::new(StaticToken(tokens.access_token.clone()))),
    );
    let me = probe.me().await.context("jitd refused the new token")?;
    profile::forget_grants(&cli.profile);
    profile::save(
        &cli.profile,
        &profile::Profile {
            server: server.clone(),
            login: jit_login::Login {
                issuer: cfg.issuer,
                client_id: cfg.cli_client_id,
                username: me.username.clone(),
                tokens,
            },
        },
    )?;
    let out = LoggedIn {
        username: &me.username,
        profile: &cli.profile,
        server: &server,
    };
    cli.print(&out, || {
        println!(
            "Logged in as {} (profile '{}', server {server})",
            me.username, cli.profile
        )
    })
}

async fn logout(cli: &Cli) -> anyhow::Result<()> {
    let Some(p) = profile::load(&cli.profile)? else {
        let out = serde_json::json!({"profile": cli.profile, "logged_out": false});
        return cli.print(&out, || {
            println!("Not logged in (profile '{}')", cli.profile)
        });
    };
    let login = &p.login;
    if let Some(rt) = &login.tokens.refresh_token {
        match jit_login::OidcClient::discover(
            jit_login::http_client(),
            &login.issuer,
            &login.client_id,
        )
        .await
        {
            Ok(oidc) => {
                if let Err(e) = oidc.logout(rt).await {
                    eprintln!("jit: could not end the Keycloak session: {e}");
                }
            }
            Err(e) => eprintln!("jit: could not reach Keycloak to end the session: {e}"),
        }
    }
    profile::remove(&cli.profile)?;
    profile::forget_grants(&cli.profile);
    let out =
        serde_json::json!({"profile": cli.profile, "username": login.username, "logged_out": true});
    cli.print(&out, || {
        println!("Logged out {} (profile '{}')", login.username, cli.profile)
    })
}

async fn request(cli: &Cli, a: &RequestArgs) -> anyhow::Result<()> {
    if let Some(d) = &a.duration {
        duration(d)?;
    }
    if a.timeout.is_some() && !a.wait {
        bail!(Exit(
            exit::USAGE,
            "--timeout is the limit of --wait: add --wait, or leave --timeout out".into()
        ));
    }
    let timeout = duration(a.timeout.as_deref().unwrap_or("1h"))?;
    // Listening before the request is made: a signal from here on ends
    // the command with the resume line (the request goes on in jitd).
    let signals = a.wait.then(wait::Signals::listen);
    let c = client(cli)?;
    let created = c
        .create(&CreateRequestBody {
            entitlement: a.entitlement.clone(),
            duration: a.duration.clone(),
            duration_secs: None,
            justification: a.reason.clone(),
            ticket: a.ticket.clone(),
            start_at: a.start,
            urgent: a.urgent,
            break_glass: a.break_glass,
        })
        .await;
    let r = match created {
        Ok(r) => r,
        Err(e) if matches!(e.code(), Some("ticket_required" | "ticket_invalid")) => {
            return Err(ticket_error(&c, a, e).await);
        }
        Err(e) => return Err(e.into()),
    };
    // jitd's warnings (e.g. no_eligible_approver: nobody else may approve
    // it) on stderr, one line each; with --json also in the object.
    for w in &r.warnings {
        eprintln!("jit: warning: {} ({})", render::safe(&w.message), w.code);
    }
    if !a.wait {
        return cli.print(&r, || render::requested(&r));
    }
    if !cli.json() {
        render::requested(&r);
    }
    let mut signals = signals.unwrap_or_else(wait::Signals::listen);
    // jitd just answered: an outage from here on is waited out.
    let r = wait_or_interrupt(&c, &mut signals, r.request.id(), timeout, true).await?;
    remember(cli, std::slice::from_ref(&r));
    cli.print(&r, || render::granted(&r))
}

/// A ticket refusal in terms of the command line: add `--ticket` with an
/// example of the reference the entitlement's policy asks for (exit 2).
async fn ticket_error(c: &Client, a: &RequestArgs, e: jit_client::ClientError) -> anyhow::Error {
    let pattern = c.entitlements().await.ok().and_then(|es| {
        es.into_iter()
            .find(|x| x.id == a.entitlement)
            .and_then(|x| x.ticket_pattern)
    });
    let example = pattern.as_deref().and_then(ticket::example);
    let msg = match (e.code(), &a.ticket) {
        (Some("ticket_invalid"), Some(t)) => format!(
            "'{}' is not a ticket reference of the form {} asks for; give one like {}",
            render::cut(t, 60),
            a.entitlement,
            example.as_deref().unwrap_or("your ticket system's")
        ),
        _ => match &example {
            Some(x) => format!(
                "'{}' needs a ticket: add --ticket {x} (your ticket's reference)",
                a.entitlement
            ),
            None => format!(
                "'{}' needs a ticket: add --ticket with your ticket's reference",
                a.entitlement
            ),
        },
    };
    Exit(exit::USAGE, msg).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and every argument of every command (flags and
    /// positionals) says what it is in `--help` (`jit review --help` once
    /// showed `--comment <COMMENT>` with no words).
    #[test]
    fn every_command_and_argument_has_a_help_line() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                if a.is_hide_set() {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for s in c.get_subcommands() {
                let sub = format!("{path} {}", s.get_name());
                if s.get_about().is_none() && s.get_long_about().is_none() {
                    missing.push(sub.clone());
                }
                walk(s, &sub, missing);
            }
        }
        let mut c = Cli::command();
        c.build();
        let mut missing = Vec::new();
        walk(&c, "jit", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:#?}");
    }

    #[test]
    fn long_quoted_values_are_cut() {
        let long = "p".repeat(300);
        let msg = format!("invalid value '{long}' for '--profile <PROFILE>': no");
        let cut = cut_quoted(&msg, 60);
        assert!(cut.contains("'ppp"), "{cut}");
        assert!(cut.contains("…' for '--profile <PROFILE>': no"), "{cut}");
        assert!(cut.chars().count() < 120, "{cut}");
        assert_eq!(cut_quoted("it's 'short'", 60), "it's 'short'");
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn long_help_has_the_exit_code_table() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains(exit::TABLE), "{help}");
    }

    #[test]
    fn usage_lines_do_not_claim_optional_arguments_are_required() {
        let mut cmd = Cli::command();
        cmd.build();
        for sub in ["request", "list", "approve", "login"] {
            let usage = cmd
                .find_subcommand_mut(sub)
                .unwrap()
                .render_usage()
                .to_string();
            for optional in ["--for", "--server", "--timeout", "--output"] {
                assert!(!usage.contains(&format!(" {optional} ")), "{sub}: {usage}");
            }
        }
    }

    #[test]
    fn completions_and_man_page_cover_the_commands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "jit", &mut out);
            let text = String::from_utf8(out).unwrap();
            for sub in ["request", "approve", "watch", "completions"] {
                assert!(text.contains(sub), "{shell}: no {sub}");
            }
        }
        let mut man = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut man)
            .unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(man.starts_with(".ie") || man.contains(".TH"), "{man}");
        assert!(
            man.contains("Exit codes"),
            "the man page lists the exit codes"
        );
    }

    #[test]
    fn every_command_takes_output_json() {
        for args in [
            vec!["jit", "--output", "json", "list"],
            vec!["jit", "list", "--json"],
            vec!["jit", "audit", "--output", "json"],
            vec!["jit", "show", "abcd", "--output", "table"],
            vec!["jit", "whoami", "--json"],
        ] {
            Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
