//! Waiting that survives jitd restarts and outages: `request --wait`,
//! `jit wait ID` and `jit watch`. Transient failures (jitd unreachable,
//! a cut stream, 5xx, 429) are retried with a bounded exponential backoff;
//! everything else ends the command with its exit code.

use std::time::{Duration, Instant};

use futures::StreamExt;
use jit_client::{Client, ClientError, ServerEvent};
use jit_core::api::RequestView;
use jit_core::{format_duration, Decision, Status};

use crate::exit::{self, Exit};
use crate::render;

/// A signal that ends `watch` or a wait at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, a service manager).
    Terminate,
    /// SIGHUP: the terminal closed (nobody is left to read the output).
    HangUp,
}

impl Stop {
    /// The exit code: 128 + the signal's number, as shells report it.
    pub fn exit_code(self) -> u8 {
        match self {
            Stop::Interrupt => exit::INTERRUPTED,
            Stop::Terminate => exit::TERMINATED,
            Stop::HangUp => exit::HUNG_UP,
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, listened for from [`Signals::listen`] on
/// (their default action, dying without a word, no longer applies; a
/// signal that arrives before [`Signals::next`] is polled is kept).
pub struct Signals {
    #[cfg(unix)]
    each: Vec<(Stop, Option<tokio::signal::unix::Signal>)>,
}

impl Signals {
    /// Starts listening. Must run inside the tokio runtime.
    pub fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                each: vec![
                    (Stop::Interrupt, signal(SignalKind::interrupt()).ok()),
                    (Stop::Terminate, signal(SignalKind::terminate()).ok()),
                    (Stop::HangUp, signal(SignalKind::hangup()).ok()),
                ],
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next of the signals to arrive.
    pub async fn next(&mut self) -> Stop {
        #[cfg(unix)]
        {
            let waits = self.each.iter_mut().filter_map(|(stop, s)| {
                let stop = *stop;
                s.as_mut()
                    .map(|s| Box::pin(async move { s.recv().await.map(|_| stop) }))
            });
            let waits: Vec<_> = waits.collect();
            if waits.is_empty() {
                return std::future::pending().await;
            }
            match futures::future::select_all(waits).await.0 {
                Some(stop) => stop,
                None => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Stop::Interrupt
        }
    }
}

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
        // Keycloak refusing jitd's own call (502 `keycloak_refused`) needs
        // an administrator; asking again changes nothing.
        ClientError::Api { status, code, .. } => {
            (*status >= 500 && code != "keycloak_refused") || *status == 429
        }
        ClientError::Token(_) => false,
    }
}

/// Where a watch goes on from once a stream opened: the last event shown
/// (`last`), or — having seen nothing — where the stream says it starts
/// (`after`, `JIT-Events-After`), so what is written while a cut is mended
/// is not lost. A stream that starts before `last` (jitd had no event that
/// far: a bogus `--since`, or a database restored to an earlier point)
/// wins: its events would otherwise all be skipped as already shown.
fn resume_point(last: Option<i64>, after: Option<i64>) -> Option<i64> {
    match (last, after) {
        (None, a) => a,
        (Some(l), Some(a)) if a < l => Some(a),
        (l, _) => l,
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
/// end the wait once jitd has answered (`reached`: the request was just
/// made, or an earlier poll was answered): it is retried with backoff
/// within the same overall limit. A jitd never reached fails at once as
/// any other command does (exit 1: a wrong `--server` is not waited on).
/// Progress lines go to stderr; `last` holds the status last seen (for
/// what to say when the wait is interrupted).
pub async fn wait_for(
    c: &Client,
    target: &str,
    timeout_secs: i64,
    last: &std::cell::Cell<Option<Status>>,
    mut reached: bool,
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
                reached = true;
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
            Err(e) if reached && transient_any(&e) => {
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
        Status::Expired | Status::Revoked => Err(Exit(
            exit::ENDED,
            format!("the grant {}", render::safe(&r.request.end_phrase())),
        )
        .into()),
        Status::Lapsed => Err(Exit(
            exit::ENDED,
            format!(
                "request lapsed: no approver decided before {}",
                render::time(r.request.pending_until())
            ),
        )
        .into()),
        s @ (Status::Cancelled | Status::Failed) => {
            // Who cancelled it (the requester, or jitd when the policy
            // dropped the entitlement); a failure is always jitd's.
            let by = match (s, r.request.ended_by()) {
                (Status::Cancelled, Some(b)) => format!(" by {}", render::safe(b)),
                _ => String::new(),
            };
            let why = r
                .request
                .end_reason()
                .filter(|w| *w != s.as_str())
                .map(|w| format!(": {}", render::safe(w)))
                .unwrap_or_default();
            Err(Exit(exit::ENDED, format!("request {s}{by}{why}")).into())
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

/// A stream that jitd ended cleanly after at least this long was a planned
/// end (the token it was opened with expired, or jitd is stopping):
/// reconnect at once. A shorter one is retried after the backoff, so a
/// server that ends every stream at once is not called in a tight loop.
const PLANNED_END_AFTER: Duration = Duration::from_secs(5);

/// Follows `/v1/events` until Ctrl-C: reconnects after a cut or a jitd
/// restart with `Last-Event-ID` (nothing lost, nothing shown twice); gives
/// up (exit 1) after [`WATCH_GIVE_UP`] without a connection, and at once
/// when jitd cannot be reached the first time (as any other command). The
/// header goes out once the first stream is open.
/// `remember` is given the request of each event that carries it.
pub async fn watch(
    c: &Client,
    since: Option<i64>,
    json: bool,
    remember: impl Fn(&[RequestView]),
) -> anyhow::Result<()> {
    let opened = || {
        eprintln!("jit: watching events on {} (Ctrl-C to stop)", c.base());
        if !json {
            println!("{}", render::event_header());
        }
    };
    let show = |ev: &ServerEvent| {
        if let Some(r) = &ev.data.request {
            remember(std::slice::from_ref(r));
        }
        if json {
            println!(
                "{}",
                serde_json::json!({"id": ev.id, "event": ev.event, "data": ev.data})
            );
        } else {
            println!("{}", render::event(ev));
        }
    };
    follow(c, since, opened, show, |note| eprintln!("jit: {note}")).await
}

/// The loop of [`watch`]: each event after `since` once, in order, to
/// `show`; what happens to the link to `note`. A stream jitd ends cleanly
/// (its token expired: jitd ends each stream then; or jitd stopping) is
/// re-opened silently with a fresh token; only a lost link is noted: once
/// when it is lost (a cut, or jitd not answering), once when it is back,
/// with backoff ([`Backoff`]) between attempts in between. `opened` is
/// called once, when the first stream is open; a jitd that does not answer
/// before that is an error at once (nothing to resume).
pub async fn follow(
    c: &Client,
    since: Option<i64>,
    opened: impl FnOnce(),
    mut show: impl FnMut(&ServerEvent),
    mut note: impl FnMut(&str),
) -> anyhow::Result<()> {
    let mut last = since;
    let mut backoff = Backoff::new();
    // Since when the link is lost (noted), while it is.
    let mut lost: Option<Instant> = None;
    let mut opened = Some(opened);
    loop {
        match c.events_from(last).await {
            Ok((after, stream)) => {
                let asked = last;
                last = resume_point(last, after);
                if let Some(first) = opened.take() {
                    first();
                    // `--since` past the newest event: jitd starts after
                    // its newest instead (say so: nothing was skipped).
                    if let (Some(a), Some(l)) = (asked, last) {
                        if l < a {
                            note(&format!(
                                "no event {a} yet (the newest is {l}); following from event {}",
                                l + 1
                            ));
                        }
                    }
                }
                if lost.take().is_some() {
                    note(&format!(
                        "jitd is back; resuming after event {}",
                        last.map(|l| l.to_string()).unwrap_or_else(|| "-".into())
                    ));
                }
                backoff.reset();
                let opened = Instant::now();
                let mut stream = Box::pin(stream);
                let mut cut = false;
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(ev) => {
                            if last.is_some_and(|l| ev.id <= l) {
                                continue; // already shown
                            }
                            last = Some(ev.id);
                            show(&ev);
                        }
                        // The transport's own words ("error decoding
                        // response body") tell a user nothing.
                        Err(_) => {
                            note("the event stream was cut (jitd stopped or the connection broke); reconnecting");
                            lost = Some(Instant::now());
                            cut = true;
                            break;
                        }
                    }
                }
                if !cut && opened.elapsed() >= PLANNED_END_AFTER {
                    continue; // a planned end: re-open now, silently
                }
            }
            Err(e) if opened.is_none() && transient(&e) => match lost {
                Some(t) if t.elapsed() >= WATCH_GIVE_UP => {
                    return Err(anyhow::Error::from(e).context(format!(
                        "no connection to jitd for {}",
                        format_duration(WATCH_GIVE_UP.as_secs() as i64)
                    )));
                }
                Some(_) => {}
                None => {
                    note(&format!(
                        "jitd is not answering ({e}); retrying until it is back (Ctrl-C to stop)"
                    ));
                    lost = Some(Instant::now());
                }
            },
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

    /// A watch resumes after the last event it showed, or where the stream
    /// starts when it has shown none or jitd has no event that far
    /// (`jit watch --since 99999999` showed nothing, ever).
    #[test]
    fn a_watch_resumes_where_the_stream_starts_when_it_is_behind_the_asked_point() {
        assert_eq!(resume_point(None, Some(81)), Some(81));
        assert_eq!(resume_point(Some(90), Some(90)), Some(90));
        assert_eq!(resume_point(Some(99_999_999), Some(81)), Some(81));
        assert_eq!(resume_point(Some(90), None), Some(90));
        assert_eq!(resume_point(None, None), None);
    }

    #[test]
    fn only_outages_are_retried() {
        let api = |status| ClientError::Api {
            status,
            code: "c".into(),
            title: "C".into(),
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
        assert!(!transient(&ClientError::Api {
            status: 502,
            code: "keycloak_refused".into(),
            title: "T".into(),
            detail: "d".into(),
        }));
        assert!(!transient(&ClientError::Token("expired".into())));
    }

    /// How a wait ends for a request that lapsed or was cancelled: when,
    /// and by whom (it used to say only "request lapsed").
    #[test]
    fn an_ended_wait_says_when_and_by_whom() {
        let view = |status: &str, ended_by: Option<&str>, reason: Option<&str>| -> RequestView {
            serde_json::from_value(serde_json::json!({
                "id": "8a9a60d7-0000-4000-8000-000000000000", "kind": {"type": "access"},
                "entitlement_id": "db", "target": {"kind": "realm_role", "role": "db"},
                "requester_id": "u1", "requester_username": "alice",
                "justification": "why", "ticket": null, "urgent": false,
                "break_glass": false, "requested_secs": 1800, "duration_secs": 1800,
                "approvals_required": 1, "votes": [], "status": status,
                "created_at": "2026-11-29T11:18:04Z", "pending_until": "2026-11-29T12:18:04Z",
                "start_at": null, "decided_at": null, "activated_at": null,
                "expires_at": null, "ended_at": "2026-11-29T12:18:05Z", "ended_by": ended_by,
                "end_reason": reason, "auto_approved": null, "review_required": false,
                "reviewed_by": null, "reviewed_at": null, "extensions": [],
                "entitlement_name": "db", "remaining_secs": null,
                "total_secs": 1800, "approvals": 0,
                "keycloak": {"owns_assignment": null, "granted_at": null,
                    "removal_pending": false, "removed_at": null, "attempts": 0,
                    "next_attempt_at": null, "last_error": null},
                "revoke_late": false, "awaits_your_review": null
            }))
            .unwrap()
        };
        let said = |r: RequestView| decided(&r).unwrap_err().to_string();
        let lapsed = said(view("lapsed", Some("jitd"), Some("lapsed")));
        assert!(
            lapsed.starts_with("request lapsed: no approver decided before 2026-11-29"),
            "{lapsed}"
        );
        let cancelled = said(view("cancelled", Some("alice"), Some("not needed")));
        assert_eq!(cancelled, "request cancelled by alice: not needed");
    }

    /// A stand-in jitd for [`follow`]: each connection's fate by its
    /// number, as `plan` says; counts the connections it took.
    async fn fake_jitd(
        plan: fn(usize) -> Fate,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = n.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let i = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n: keep-alive\n\n";
                match plan(i) {
                    Fate::Refuse => drop(s),
                    Fate::HoldAfter5 => {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\njit-events-after: 5\r\nconnection: close\r\n\r\n: keep-alive\n\n").await;
                        held.push(s);
                    }
                    Fate::EndCleanly => {
                        let _ = s.write_all(head).await;
                        let _ = s.shutdown().await;
                    }
                    Fate::Hold => {
                        let _ = s.write_all(head).await;
                        held.push(s);
                    }
                }
            }
        });
        (url, n)
    }

    #[derive(Clone, Copy)]
    enum Fate {
        /// Closed before any answer (jitd down or restarting).
        Refuse,
        /// A stream jitd ends cleanly (as when the token expires).
        EndCleanly,
        /// A stream kept open.
        Hold,
        /// A stream kept open that starts after event 5 (the newest).
        HoldAfter5,
    }

    /// Runs [`follow`] against `url` until `done(notes, connections)`
    /// (bounded: 60 s); returns its notes.
    async fn notes_until(
        url: &str,
        since: Option<i64>,
        connections: &std::sync::atomic::AtomicUsize,
        done: impl Fn(&[String], usize) -> bool,
    ) -> Vec<String> {
        let c = Client::new(
            url,
            Some(std::sync::Arc::new(jit_client::StaticToken("t".into()))),
        );
        let notes = std::sync::Mutex::new(Vec::new());
        let run = follow(
            &c,
            since,
            || {},
            |_| {},
            |n| notes.lock().unwrap().push(n.to_string()),
        );
        let count = || connections.load(std::sync::atomic::Ordering::SeqCst);
        let reached = async {
            while !done(&notes.lock().unwrap(), count()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            r = run => panic!("follow ended: {r:?}"),
            r = tokio::time::timeout(Duration::from_secs(60), reached) => {
                let notes = notes.lock().unwrap();
                assert!(r.is_ok(), "not reached after {} connections: {notes:#?}", count());
            }
        }
        notes.into_inner().unwrap()
    }

    /// jitd ends each stream when its token expires: `jit watch` opens the
    /// next one without a word (it used to say "reconnected" each time).
    #[tokio::test]
    async fn a_planned_end_of_the_stream_is_silent() {
        let (url, n) = fake_jitd(|i| if i < 3 { Fate::EndCleanly } else { Fate::Hold }).await;
        let notes = notes_until(&url, None, &n, |_, c| c >= 4).await;
        assert!(notes.is_empty(), "{notes:#?}");
    }

    /// `--since` past the newest event: jitd starts after its newest, and
    /// `jit watch` says so (it used to start there without a word).
    #[tokio::test]
    async fn a_since_past_the_newest_event_is_said() {
        let (url, n) = fake_jitd(|_| Fate::HoldAfter5).await;
        let notes = notes_until(&url, Some(1_000_000), &n, |notes, _| !notes.is_empty()).await;
        assert_eq!(
            notes,
            ["no event 1000000 yet (the newest is 5); following from event 6"],
            "{notes:#?}"
        );
    }

    /// jitd down for several attempts: one line when it is lost, one when
    /// it is back (it used to print one per attempt).
    #[tokio::test]
    async fn an_outage_is_said_once_and_its_end_once() {
        let (url, n) = fake_jitd(|i| match i {
            0 => Fate::EndCleanly,
            1..=4 => Fate::Refuse,
            _ => Fate::Hold,
        })
        .await;
        let notes = notes_until(&url, None, &n, |notes, _| {
            notes.iter().any(|n| n.contains("jitd is back"))
        })
        .await;
        let lost = notes.iter().filter(|n| n.contains("not answering")).count();
        let back = notes.iter().filter(|n| n.contains("jitd is back")).count();
        assert_eq!((lost, back), (1, 1), "{notes:#?}");
        assert_eq!(notes.len(), 2, "{notes:#?}");
    }
}
