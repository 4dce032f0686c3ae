//! Waiting that survives jitd restarts and outages: `request --wait`,
//! `jit wait ID` and `jit watch`. Transient failures (jitd unreachable,
//! a cut stream, 5xx, 429) are retried with a bounded exponential backoff;
//! everything else ends the command with its exit code.

use std::time::{Duration, Instant};

use futures::StreamExt;
use jit_client::{Client, ClientError};
use jit_core::api::RequestView;
use jit_core::{format_duration, Decision, Status};

use crate::exit::{self, Exit};
use crate::render;

/// Backoff between reconnects: 0.5 s, doubling, at most 5 s.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);

    /// Starts at the first (shortest) delay.
    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The pause before the next attempt (and doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    /// Back to the first delay (after a call that worked).
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Whether `e` may go away by itself (worth retrying).
pub fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. }
        | ClientError::KeycloakUnreachable(_)
        | ClientError::Protocol(_) => true,
        ClientError::Api { status, .. } => *status >= 500 || *status == 429,
        ClientError::Token(_) => false,
    }
}

/// Whether anyhow error `e` comes from a [`transient`] client error.
fn transient_any(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<ClientError>().is_some_and(transient))
}

/// Polls request `target` (an id or a unique prefix of one) until it is
/// active (Ok), denied (exit 3), ended without access (exit 4), or
/// `timeout_secs` pass (exit 5). jitd being down or restarting does not
/// end the wait: it is retried with backoff within the same overall limit.
/// Progress lines go to stderr; `last` holds the status last seen (for
/// what to say when the wait is interrupted).
pub async fn wait_for(
    c: &Client,
    target: &str,
    timeout_secs: i64,
    last: &std::cell::Cell<Option<Status>>,
) -> anyhow::Result<RequestView> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs.max(0) as u64);
    let resume = format!("resume with `jit wait {}`", render::short(target));
    let mut id: Option<String> = None;
    let mut last_line = String::new();
    let mut backoff = Backoff::new();
    let mut down = false;
    loop {
        let step: anyhow::Result<RequestView> = async {
            if id.is_none() {
                id = Some(crate::resolve(c, target).await?);
            }
            Ok(c.get(id.as_deref().unwrap_or(target)).await?)
        }
        .await;
        let pause = match step {
            Ok(r) => {
                if down {
                    eprintln!("  jitd is reachable again");
                    down = false;
                }
                backoff.reset();
                last.set(Some(r.request.status()));
                if let Some(done) = decided(&r)? {
                    return Ok(done);
                }
                let line = progress(c, &r);
                if line != last_line {
                    eprintln!("  {line}");
                    last_line = line;
                }
                Duration::from_secs(1)
            }
            Err(e) if transient_any(&e) => {
                if !down {
                    let why: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                    eprintln!(
                        "  jitd is not answering ({}); still waiting, retrying",
                        why.join(": ")
                    );
                    down = true;
                }
                backoff.next_delay()
            }
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(Exit(
                exit::TIMED_OUT,
                format!(
                    "timed out after {} waiting for {}; {resume}",
                    format_duration(timeout_secs),
                    id.as_deref().unwrap_or(target)
                ),
            )
            .into());
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
    }
}

/// `Some` when the wait is over: active, or an error with the exit code.
fn decided(r: &RequestView) -> anyhow::Result<Option<RequestView>> {
    match r.request.status() {
        // Active: the grant runs; applied: an extension added its time.
        Status::Active | Status::Applied => Ok(Some(r.clone())),
        Status::Denied => {
            let why = r
                .request
                .votes()
                .iter()
                .find(|v| v.decision == Decision::Deny)
                .map(|v| {
                    format!(
                        " by {}: {}",
                        v.approver_username,
                        render::safe(v.comment.as_deref().unwrap_or_default())
                    )
                })
                .unwrap_or_default();
            Err(Exit(exit::FORBIDDEN, format!("denied{why}")).into())
        }
        s @ (Status::Lapsed
        | Status::Cancelled
        | Status::Expired
        | Status::Revoked
        | Status::Failed) => {
            let why = r
                .request
                .end_reason()
                .map(|w| format!(": {}", render::safe(w)))
                .unwrap_or_default();
            Err(Exit(exit::ENDED, format!("request {s}{why}")).into())
        }
        Status::Pending | Status::Approved => Ok(None),
    }
}

fn progress(c: &Client, r: &RequestView) -> String {
    let approvals = r.request.approvals();
    match (
        &r.request.status(),
        &r.request.start_at(),
        &r.keycloak.last_error,
    ) {
        (Status::Approved, _, Some(err)) => {
            format!("approved; granting in Keycloak is being retried ({err})")
        }
        (Status::Approved, Some(t), None) if *t > c.server_now() => {
            format!("approved; starts at {}", render::time(*t))
        }
        (Status::Approved, _, None) => "approved; granting in Keycloak…".to_string(),
        _ => format!(
            "waiting for approval ({approvals}/{} approvals)",
            r.request.approvals_required()
        ),
    }
}

/// How long `jit watch` keeps trying to reconnect before it gives up.
pub const WATCH_GIVE_UP: Duration = Duration::from_secs(600);

/// Follows `/v1/events` until Ctrl-C: reconnects after a cut or a jitd
/// restart with `Last-Event-ID` (nothing lost, nothing shown twice); gives
/// up (exit 1) after [`WATCH_GIVE_UP`] without a connection.
pub async fn watch(c: &Client, since: Option<i64>, json: bool) -> anyhow::Result<()> {
    eprintln!("jit: watching events on {} (Ctrl-C to stop)", c.base());
    if !json {
        println!("{}", render::event_header());
    }
    let mut last = since;
    let mut backoff = Backoff::new();
    let mut failing_since: Option<Instant> = None;
    loop {
        match c.events(last).await {
            Ok(stream) => {
                if failing_since.take().is_some() {
                    eprintln!(
                        "jit: reconnected; resuming after event {}",
                        last.map(|l| l.to_string()).unwrap_or_else(|| "-".into())
                    );
                }
                backoff.reset();
                let mut stream = Box::pin(stream);
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(ev) => {
                            if last.is_some_and(|l| ev.id <= l) {
                                continue; // already shown
                            }
                            last = Some(ev.id);
                            if json {
                                println!(
                                    "{}",
                                    serde_json::json!({"id": ev.id, "event": ev.event, "data": ev.data})
                                );
                            } else {
                                println!("{}", render::event(&ev));
                            }
                        }
                        Err(e) => {
                            eprintln!("jit: the event stream was cut ({e}); reconnecting");
                            break;
                        }
                    }
                }
                failing_since.get_or_insert_with(Instant::now);
            }
            Err(e) if transient(&e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= WATCH_GIVE_UP {
                    return Err(anyhow::Error::from(e).context(format!(
                        "no connection to jitd for {}",
                        format_duration(WATCH_GIVE_UP.as_secs() as i64)
                    )));
                }
                eprintln!("jit: cannot follow events ({e}); retrying");
            }
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_seconds_and_resets() {
        let mut b = Backoff::new();
        let seq: Vec<u64> = (0..6).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(seq, [500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[test]
    fn only_outages_are_retried() {
        let api = |status| ClientError::Api {
            status,
            code: "c".into(),
            detail: "d".into(),
        };
        assert!(transient(&ClientError::Unreachable {
            url: "u".into(),
            reason: "refused".into()
        }));
        assert!(transient(&ClientError::Protocol("cut".into())));
        assert!(transient(&api(503)));
        assert!(transient(&api(429)));
        assert!(!transient(&api(404)));
        assert!(!transient(&api(403)));
        assert!(!transient(&ClientError::Token("expired".into())));
    }
}
