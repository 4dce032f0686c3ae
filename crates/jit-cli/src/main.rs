//! `jit`: the JIT Access command line. A thin shell over `jit-client`
//! (API) and `jit-keycloak` (login).
//!
//! Exit codes: 0 success; 1 error (one line on stderr); 2 usage; 3 denied;
//! 4 lapsed, cancelled or ended before it was active; 5 timed out waiting.

mod profile;
mod render;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use jit_client::{Client, ListQuery, StaticToken, TokenSource};
use jit_core::api::CreateRequestBody;
use jit_core::{format_duration, parse_duration, Status};

#[derive(Parser)]
#[command(
    name = "jit",
    version,
    about = "Just-in-time access to Keycloak roles",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 denied, 4 lapsed/cancelled/ended, 5 timed out.\n\
                  Pipelines: set JIT_TOKEN to an access token (audience jit-api) instead of `jit login`."
)]
struct Cli {
    /// Login profile, so several users can be logged in side by side.
    #[arg(long, global = true, env = "JIT_PROFILE", default_value = "default")]
    profile: String,
    /// jitd URL (default: the profile's, else http://127.0.0.1:8787).
    #[arg(long, global = true, env = "JIT_SERVER")]
    server: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Log in through the browser (Authorization Code + PKCE, loopback redirect).
    Login {
        /// Give up after this long.
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
    /// End the Keycloak session and forget this profile's tokens.
    Logout,
    /// Who am I, and what may I approve.
    Whoami,
    /// What you may request.
    Entitlements {
        #[arg(long)]
        json: bool,
    },
    /// Ask for an entitlement.
    Request(RequestArgs),
    /// List requests you may see.
    List {
        /// Only my own requests.
        #[arg(long, conflicts_with = "to_review")]
        mine: bool,
        /// Only pending requests I may approve.
        #[arg(long)]
        to_review: bool,
        /// Filter by status (pending, approved, active, denied, cancelled, lapsed, expired, revoked).
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one request (an id or a unique prefix of one).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a request.
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
        /// Shorten the grant to this duration (never lengthen).
        #[arg(long = "for")]
        duration: Option<String>,
    },
    /// Deny a request (a comment is required).
    Deny {
        id: String,
        #[arg(long)]
        comment: String,
    },
    /// Withdraw your request before it is active.
    Cancel { id: String },
    /// Give up your active grant now.
    Drop { id: String },
    /// End someone's grant (approvers; a comment is required).
    Revoke {
        id: String,
        #[arg(long)]
        comment: String,
    },
    /// Ask for more time on your active grant.
    Extend {
        id: String,
        #[arg(long = "for")]
        duration: String,
        #[arg(long)]
        reason: String,
    },
    /// Close the after-the-fact review of a break-glass activation.
    Review {
        id: String,
        #[arg(long)]
        comment: String,
    },
    /// The audit trail you may see.
    Audit {
        /// Only rows after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: i64,
        /// JSON lines (one row per line).
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        #[arg(long)]
        csv: bool,
        /// Check the hash chain (auditors).
        #[arg(long)]
        verify: bool,
    },
    /// Follow events live (Ctrl-C to stop).
    Watch,
}

#[derive(Args)]
struct RequestArgs {
    /// Entitlement id (see `jit entitlements`).
    entitlement: String,
    /// Duration, e.g. 30m, 2h (default: the entitlement's).
    #[arg(long = "for")]
    duration: Option<String>,
    /// Justification.
    #[arg(long)]
    reason: String,
    /// Ticket reference, if the entitlement requires one.
    #[arg(long)]
    ticket: Option<String>,
    /// Flag as urgent (approvers get a critical notification).
    #[arg(long)]
    urgent: bool,
    /// Emergency self-activation, where the policy allows it.
    #[arg(long)]
    break_glass: bool,
    /// Start later (RFC 3339, UTC), e.g. 2026-12-01T09:00:00Z.
    #[arg(long)]
    start: Option<chrono::DateTime<chrono::Utc>>,
    /// Wait until approved and active (exit 0) or denied/lapsed (non-zero).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (exit 5).
    #[arg(long, default_value = "1h")]
    timeout: String,
}

/// An error with a specific exit code.
#[derive(Debug)]
struct Exit(u8, String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}
impl std::error::Error for Exit {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(Exit(code, msg)) = e.downcast_ref::<Exit>() {
                eprintln!("jit: {msg}");
                return ExitCode::from(*code);
            }
            // One line: the outermost message and its causes.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("jit: {}", msg.join(": "));
            ExitCode::from(1)
        }
    }
}

const DEFAULT_SERVER: &str = "http://127.0.0.1:8787";

/// Checks `--server` is an http(s) URL, so a typo gives a clear message.
fn server_url(s: &str) -> anyhow::Result<String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(s.trim_end_matches('/').to_string())
        }
        _ => bail!("invalid --server '{s}': expected a URL like http://127.0.0.1:8787"),
    }
}

fn client(cli: &Cli) -> anyhow::Result<Client> {
    if let Ok(t) = std::env::var("JIT_TOKEN") {
        let server = server_url(cli.server.as_deref().unwrap_or(DEFAULT_SERVER))?;
        let src: Arc<dyn TokenSource> = Arc::new(StaticToken(t.trim().to_string()));
        return Ok(Client::new(&server, Some(src)));
    }
    let p = profile::load(&cli.profile)?.ok_or_else(|| {
        anyhow!(
            "not logged in (profile '{}'): run `jit --profile {} login`",
            cli.profile,
            cli.profile
        )
    })?;
    let server = server_url(cli.server.as_deref().unwrap_or(&p.server))?;
    let src: Arc<dyn TokenSource> = profile::ProfileTokens::new(&cli.profile, p);
    Ok(Client::new(&server, Some(src)))
}

/// Accepts a full id or a unique prefix of a visible request's id.
async fn resolve(c: &Client, id: &str) -> anyhow::Result<String> {
    if id.len() == 36 {
        return Ok(id.to_string());
    }
    if id.len() < 4 {
        bail!("id '{id}' is too short: give at least 4 characters");
    }
    let hits = c.find_by_prefix(id).await?;
    match hits.len() {
        1 => Ok(hits[0].request.id.clone()),
        0 => bail!("no request you may see has an id starting with '{id}'"),
        n => bail!("'{id}' matches {n} requests: give more characters"),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Cmd::Login { timeout } => login(&cli, parse_duration(timeout)?).await,
        Cmd::Logout => logout(&cli).await,
        Cmd::Whoami => {
            let me = client(&cli)?.me().await?;
            println!("{} ({})", me.username, me.id);
            if me.auditor {
                println!("auditor: sees all requests and the whole audit trail");
            }
            if !me.approves.is_empty() {
                println!("approves: {}", me.approves.join(", "));
            }
            Ok(())
        }
        Cmd::Entitlements { json } => {
            let es = client(&cli)?.entitlements().await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&es)?);
            } else {
                render::entitlements(&es);
            }
            Ok(())
        }
        Cmd::Request(a) => request(&cli, a).await,
        Cmd::List {
            mine,
            to_review,
            status,
            json,
        } => {
            if let Some(s) = status {
                s.parse::<Status>().map_err(|e| anyhow!(e))?;
            }
            let c = client(&cli)?;
            let rows = c
                .list(&ListQuery {
                    status: status.clone(),
                    mine: *mine,
                    to_review: *to_review,
                    review_open: false,
                })
                .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                render::list(&rows, c.server_now());
            }
            Ok(())
        }
        Cmd::Show { id, json } => {
            let c = client(&cli)?;
            let r = c.get(&resolve(&c, id).await?).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                render::show(&r, c.server_now());
            }
            Ok(())
        }
        Cmd::Approve {
            id,
            comment,
            duration,
        } => {
            let c = client(&cli)?;
            if let Some(d) = duration {
                parse_duration(d)?;
            }
            let r = c
                .approve(&resolve(&c, id).await?, comment.clone(), duration.clone())
                .await?;
            let approvals = r
                .request
                .votes
                .iter()
                .filter(|v| v.decision == jit_core::Decision::Approve)
                .count();
            render::outcome(
                &r,
                &format!(
                    "{} ({approvals}/{} approvals)",
                    r.request.status, r.request.approvals_required
                ),
            );
            Ok(())
        }
        Cmd::Deny { id, comment } => {
            let c = client(&cli)?;
            let r = c.deny(&resolve(&c, id).await?, comment).await?;
            render::outcome(&r, r.request.status.as_str());
            Ok(())
        }
        Cmd::Cancel { id } => {
            let c = client(&cli)?;
            let r = c.cancel(&resolve(&c, id).await?).await?;
            render::outcome(&r, r.request.status.as_str());
            Ok(())
        }
        Cmd::Drop { id } => {
            let c = client(&cli)?;
            let r = c.drop_grant(&resolve(&c, id).await?).await?;
            render::outcome(&r, "dropped; the role is being removed");
            Ok(())
        }
        Cmd::Revoke { id, comment } => {
            let c = client(&cli)?;
            let r = c.revoke(&resolve(&c, id).await?, comment).await?;
            render::outcome(&r, "revoked; the role is being removed");
            Ok(())
        }
        Cmd::Extend {
            id,
            duration,
            reason,
        } => {
            let c = client(&cli)?;
            parse_duration(duration)?;
            let r = c.extend(&resolve(&c, id).await?, duration, reason).await?;
            println!(
                "extension {} for {}: {}",
                render::short(&r.request.id),
                format_duration(r.request.duration_secs),
                r.request.status
            );
            Ok(())
        }
        Cmd::Review { id, comment } => {
            let c = client(&cli)?;
            let r = c.review(&resolve(&c, id).await?, comment).await?;
            println!("{} reviewed", render::short(&r.request.id));
            Ok(())
        }
        Cmd::Audit {
            since,
            json,
            csv,
            verify,
        } => {
            let c = client(&cli)?;
            if *verify {
                let v = c.audit_verify().await?;
                if v["ok"].as_bool() == Some(true) {
                    println!(
                        "audit chain OK: {} rows, last hash {}",
                        v["rows"],
                        v["last_hash"].as_str().unwrap_or("-")
                    );
                    return Ok(());
                }
                return Err(Exit(
                    1,
                    format!("audit chain BROKEN at seq {}", v["first_bad_seq"]),
                )
                .into());
            }
            if *json || *csv {
                print!(
                    "{}",
                    c.audit_export(*since, if *csv { "csv" } else { "jsonl" })
                        .await?
                );
            } else {
                render::audit(&c.audit(*since).await?);
            }
            Ok(())
        }
        Cmd::Watch => {
            use futures::StreamExt;
            let c = client(&cli)?;
            let mut last = None;
            loop {
                match c.events(last).await {
                    Ok(stream) => {
                        let mut stream = Box::pin(stream);
                        while let Some(ev) = stream.next().await {
                            let ev = ev?;
                            last = Some(ev.id);
                            render::event(&ev);
                        }
                    }
                    Err(e) => eprintln!("jit: event stream: {e}; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn login(cli: &Cli, timeout_secs: i64) -> anyhow::Result<()> {
    let server = cli
        .server
        .clone()
        .or_else(|| profile::load(&cli.profile).ok().flatten().map(|p| p.server))
        .unwrap_or_else(|| DEFAULT_SERVER.into());
    let server = server_url(&server)?;
    let anon = Client::new(&server, None);
    let cfg = anon
        .server_config()
        .await
        .context("cannot read jitd's login settings")?;
    let oidc = jit_keycloak::OidcClient::discover(
        jit_keycloak::http_client(),
        &cfg.issuer,
        &cfg.cli_client_id,
    )
    .await?;
    let session = oidc.start_login().await?;
    let url = session.authorize_url.to_string();
    eprintln!("Opening the browser to log in. If it does not open, visit:\n  {url}");
    if let Err(e) = jit_keycloak::oidc::open_in_browser(&url) {
        eprintln!("jit: {e}");
    }
    let tokens = oidc
        .finish_login(session, Duration::from_secs(timeout_secs as u64))
        .await?;
    let probe = Client::new(
        &server,
        Some(Arc::new(StaticToken(tokens.access_token.clone()))),
    );
    let me = probe.me().await.context("jitd refused the new token")?;
    profile::save(
        &cli.profile,
        &profile::Profile {
            server: server.clone(),
            issuer: cfg.issuer,
            client_id: cfg.cli_client_id,
            username: me.username.clone(),
            tokens,
        },
    )?;
    println!(
        "Logged in as {} (profile '{}', server {server})",
        me.username, cli.profile
    );
    Ok(())
}

async fn logout(cli: &Cli) -> anyhow::Result<()> {
    let Some(p) = profile::load(&cli.profile)? else {
        println!("Not logged in (profile '{}')", cli.profile);
        return Ok(());
    };
    if let Some(rt) = &p.tokens.refresh_token {
        match jit_keycloak::OidcClient::discover(
            jit_keycloak::http_client(),
            &p.issuer,
            &p.client_id,
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
    println!("Logged out {} (profile '{}')", p.username, cli.profile);
    Ok(())
}

async fn request(cli: &Cli, a: &RequestArgs) -> anyhow::Result<()> {
    if let Some(d) = &a.duration {
        parse_duration(d)?;
    }
    let timeout = parse_duration(&a.timeout)?;
    let c = client(cli)?;
    let r = c
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
        .await?;
    println!(
        "Requested {} for {}: {} (id {})",
        r.request.entitlement_id,
        format_duration(r.request.duration_secs),
        r.request.status,
        r.request.id
    );
    if !a.wait {
        return Ok(());
    }
    let id = r.request.id.clone();
    let started = std::time::Instant::now();
    let mut last_line = String::new();
    loop {
        let r = c.get(&id).await?;
        let approvals = r
            .request
            .votes
            .iter()
            .filter(|v| v.decision == jit_core::Decision::Approve)
            .count();
        let line = match r.request.status {
            Status::Active => {
                let left = r.remaining_secs.unwrap_or(0);
                println!(
                    "Granted: {} is active until {} ({} left)",
                    r.request.entitlement_id,
                    r.request.expires_at.map(render::time).unwrap_or_default(),
                    format_duration(left)
                );
                return Ok(());
            }
            Status::Denied => {
                let why = r
                    .request
                    .votes
                    .iter()
                    .find(|v| v.decision == jit_core::Decision::Deny)
                    .map(|v| {
                        format!(
                            " by {}: {}",
                            v.approver_username,
                            v.comment.clone().unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                return Err(Exit(3, format!("denied{why}")).into());
            }
            Status::Applied => {
                println!(
                    "Extended: {} (added {} to its grant)",
                    r.request.entitlement_id,
                    format_duration(r.request.duration_secs)
                );
                return Ok(());
            }
            s @ (Status::Lapsed | Status::Cancelled | Status::Expired | Status::Revoked) => {
                return Err(Exit(4, format!("request {s}")).into());
            }
            Status::Approved => match (&r.request.start_at, &r.keycloak.last_error) {
                (_, Some(err)) => {
                    format!("approved; granting in Keycloak is being retried ({err})")
                }
                (Some(t), None) if *t > c.server_now() => {
                    format!("approved; starts at {}", render::time(*t))
                }
                _ => "approved; granting in Keycloak…".to_string(),
            },
            Status::Pending => format!(
                "waiting for approval ({approvals}/{} approvals)",
                r.request.approvals_required
            ),
        };
        if line != last_line {
            eprintln!("  {line}");
            last_line = line;
        }
        if started.elapsed().as_secs() as i64 >= timeout {
            return Err(Exit(
                5,
                format!(
                    "timed out after {} waiting for {id}",
                    format_duration(timeout)
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}
