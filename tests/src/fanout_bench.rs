//! Sections `fanout` and `footprint` of `cargo xtask bench`.
//!
//! `fanout`: request → event at every subscriber. 1,000 `/v1/events`
//! streams (`JIT_BENCH_SUBSCRIBERS`) spread round-robin over the jitd
//! replicas, opened with the tokens of three users who may all see the
//! request (its requester, an approver, an auditor; many streams share a
//! token, jitd still checks visibility per stream). A requester creates a
//! request on replica 0; the time from sending `POST /v1/requests` to the
//! `request.created` event arriving on each stream is one sample. The
//! requester then cancels it and the next round starts once every stream
//! got the cancellation (its latency is reported too). Clock: the bench
//! process's monotonic clock, in the same process as every stream, read
//! as each chunk of a stream arrives (before the frame is scanned; only
//! its `event` line and the data's `request_id` are read, the JSON is not
//! decoded) — still, the 1,000 streams' reads share the 2 cores with jitd.
//!
//! `footprint`: jitd's resident memory and CPU time (from `/proc/PID`)
//! over 1,000 requests (`JIT_BENCH_FOOTPRINT_REQUESTS`), each created by
//! one of four requesters, approved by an approver, granted in Keycloak,
//! dropped by the requester and removed from Keycloak — all through jitd's
//! API and the real Keycloak, four requesters at a time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use jit_client::{Client, ClientError, TokenSource};
use jit_core::api::CreateRequestBody;

use crate::bench_opts::{self, fresh_database, percentile, Engine, Setup};
use crate::token_bounds::Line;
use crate::{token, Jitd, POLICY};

/// The entitlement requested (`POLICY`: approvers hold `jit-approver-db`).
const ENTITLEMENT: &str = "prod-db-admin";

fn env_usize(key: &str, default: usize) -> Result<usize> {
    match std::env::var(key) {
        Ok(v) if !v.is_empty() => v.parse().with_context(|| format!("{key}={v}")),
        _ => Ok(default),
    }
}

/// jitd replicas on one fresh store, and the store's folder.
struct Replicas {
    jitd: Vec<Jitd>,
    _dir: tempfile::TempDir,
}

async fn start(setup: Setup) -> Result<Replicas> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_path_buf();
    let engine = setup.engine;
    let database = tokio::task::spawn_blocking(move || fresh_database(engine, &path)).await??;
    let url = jit_testkit::keycloak_env().url;
    let mut jitd = Vec::new();
    for _ in 0..setup.replicas {
        let db = database.clone();
        let u = url.clone();
        // Starting waits for "listening" (blocking).
        jitd.push(tokio::task::spawn_blocking(move || Jitd::start_on(POLICY, &u, &db)).await?);
    }
    Ok(Replicas { jitd, _dir: dir })
}

/// What a stream saw: `(stream, event, request id, when)`.
type Seen = (usize, String, String, Instant);

/// The `event` type and `request_id` of one SSE frame (the bytes before
/// its blank line) of jitd's stream, without decoding its JSON; `None` for
/// a keep-alive comment or a frame without them.
fn frame_fields(frame: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(frame).ok()?;
    let mut event = None;
    let mut id = None;
    for line in text.split('\n') {
        if let Some(e) = line.strip_prefix("event: ") {
            event = Some(e);
        } else if let Some(d) = line.strip_prefix("data: ") {
            id = request_id(d);
        }
    }
    Some((event?, id?))
}

/// The `request_id` of an event's JSON data, without decoding all of it.
fn request_id(data: &str) -> Option<&str> {
    let key = "\"request_id\":\"";
    let at = data.find(key)? + key.len();
    let end = data[at..].find('"')?;
    Some(&data[at..at + end])
}

/// Opens `n` event streams over `urls` (round-robin) with `tokens`
/// (round-robin); returns once every stream is subscribed (jitd answers
/// the stream's headers after subscribing to its hub).
async fn subscribe(
    urls: &[String],
    tokens: &[String],
    n: usize,
    tx: tokio::sync::mpsc::UnboundedSender<Seen>,
) -> Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let opened: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let url = format!("{}/v1/events", urls[i % urls.len()]);
            let tok = tokens[i % tokens.len()].clone();
            let http = http.clone();
            let tx = tx.clone();
            async move {
                let resp = http
                    .get(&url)
                    .bearer_auth(&tok)
                    .header("accept", "text/event-stream")
                    .send()
                    .await
                    .with_context(|| format!("stream {i}: {url}"))?;
                if !resp.status().is_success() {
                    bail!("stream {i}: {url}: HTTP {}", resp.status());
                }
                tokio::spawn(async move {
                    // The time of a frame is when its last bytes arrived,
                    // taken before any look at them; a frame is then only
                    // scanned for its type and request id.
                    let mut s = resp.bytes_stream();
                    let mut buf: Vec<u8> = Vec::new();
                    while let Some(Ok(chunk)) = s.next().await {
                        let at = Instant::now();
                        buf.extend_from_slice(&chunk);
                        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                            if let Some((event, id)) = frame_fields(&buf[..end]) {
                                if (event == "request.created" || event == "request.cancelled")
                                    && tx.send((i, event.to_string(), id.to_string(), at)).is_err()
                                {
                                    return;
                                }
                            }
                            buf.drain(..end + 2);
                        }
                    }
                });
                Ok(())
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    opened.into_iter().collect()
}

/// Waits until every one of `n` streams saw `event` of request `id`;
/// returns each stream's delay after `t0`, in ms. Fails after `limit`.
async fn deliveries(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>,
    n: usize,
    event: &str,
    id: &str,
    t0: Instant,
    limit: Duration,
) -> Result<Vec<f64>> {
    let mut got: HashMap<usize, f64> = HashMap::with_capacity(n);
    let deadline = tokio::time::Instant::now() + limit;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((i, e, rid, at))) => {
                if e == event && rid == id {
                    got.entry(i).or_insert((at - t0).as_secs_f64() * 1000.0);
                }
            }
            Ok(None) => bail!("every stream ended"),
            Err(_) => bail!(
                "{event} of {id}: {} of {n} streams got it within {limit:?}",
                got.len()
            ),
        }
    }
    Ok(got.into_values().collect())
}

/// Section `fanout`.
pub async fn run_fanout(_url: &str) -> Result<Vec<Line>> {
    let setups = bench_opts::setups(&[
        Setup {
            engine: Engine::Sqlite,
            replicas: 1,
        },
        Setup {
            engine: Engine::Postgres,
            replicas: 1,
        },
        Setup {
            engine: Engine::Postgres,
            replicas: 3,
        },
    ])?;
    let n = env_usize("JIT_BENCH_SUBSCRIBERS", 1000)?;
    let rounds = env_usize("JIT_BENCH_FANOUT_ROUNDS", 30)?;
    // Requests made first and not counted: each jitd's first Admin API
    // calls fetch its service-account token and open its connections, and
    // a freshly started Keycloak compiles its code paths on first use.
    // The figures are for a jitd in service, not its first seconds.
    let warmup = env_usize("JIT_BENCH_FANOUT_WARMUP", 3)?;
    let mut out = Vec::new();
    for setup in setups {
        eprintln!(
            "jit-bench: fanout: {setup}: {n} streams, {rounds} requests (after {warmup} not counted)"
        );
        let r = start(setup).await?;
        let urls: Vec<String> = r.jitd.iter().map(|j| j.url.clone()).collect();
        // jit-cli tokens last 120 s; a stream ends with its token, so the
        // rounds must fit in that (they take seconds).
        let alice = token("alice").await;
        let tokens = vec![alice.clone(), token("bob").await, token("dave").await];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let opened = Instant::now();
        subscribe(&urls, &tokens, n, tx).await?;
        eprintln!(
            "jit-bench: fanout: {n} streams open in {:.1} s",
            opened.elapsed().as_secs_f64()
        );
        let requester = r.jitd[0].client(&alice);
        let mut created = Vec::with_capacity(n * rounds);
        let mut cancelled = Vec::with_capacity(n * rounds);
        let mut last = Vec::with_capacity(rounds);
        // The two parts of create → event: the create call itself (its
        // answer), and the fan-out (each stream after the first stream
        // that had the event, which is about when jitd published it).
        let mut answered = Vec::with_capacity(rounds);
        let mut spread = Vec::with_capacity(n * rounds);
        let limit = Duration::from_secs(30);
        for round in 0..warmup + rounds {
            if round == warmup {
                // Only counted rounds below.
                created.clear();
                cancelled.clear();
                last.clear();
                answered.clear();
                spread.clear();
            }
            let t0 = Instant::now();
            let id = requester
                .create(&CreateRequestBody {
                    entitlement: ENTITLEMENT.into(),
                    duration: Some("15m".into()),
                    justification: "fan-out benchmark".into(),
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow!("create: {e}"))?
                .request
                .id()
                .to_string();
            answered.push(t0.elapsed().as_secs_f64() * 1000.0);
            let mut d = deliveries(&mut rx, n, "request.created", &id, t0, limit).await?;
            d.sort_by(|a, b| a.total_cmp(b));
            last.push(*d.last().unwrap_or(&f64::NAN));
            let first = *d.first().unwrap_or(&f64::NAN);
            spread.extend(d.iter().map(|x| x - first));
            created.extend(d);
            let t1 = Instant::now();
            requester
                .cancel(&id)
                .await
                .map_err(|e| anyhow!("cancel: {e}"))?;
            cancelled.extend(deliveries(&mut rx, n, "request.cancelled", &id, t1, limit).await?);
        }
        let load = bench_opts::load();
        drop(rx);
        drop(r);
        // Which counted rounds had the slowest create calls: early ones
        // point at warm-up, scattered ones at single slow answers.
        let mut by_round: Vec<(usize, f64)> = answered
            .iter()
            .enumerate()
            .map(|(i, ms)| (i + 1, *ms))
            .collect();
        by_round.sort_by(|a, b| b.1.total_cmp(&a.1));
        let slowest = by_round
            .iter()
            .take(3)
            .map(|(i, ms)| format!("round {i}: {ms:.1} ms"))
            .collect::<Vec<_>>()
            .join(", ");
        for v in [
            &mut created,
            &mut cancelled,
            &mut last,
            &mut answered,
            &mut spread,
        ] {
            v.sort_by(|a, b| a.total_cmp(b));
        }
        let p99 = percentile(&created, 0.99);
        out.push((
            format!("{setup}: create → request.created at each of {n} streams ({rounds} requests after {warmup} warm-up)"),
            format!(
                "p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
                percentile(&created, 0.5),
                created.last().unwrap_or(&f64::NAN)
            ),
            format!(
                "goal p99 < 50 ms: {}; {load}",
                if p99 < 50.0 { "met" } else { "**not met**" }
            ),
        ));
        out.push((
            format!("{setup}: create → the last of {n} streams has it"),
            format!(
                "p50 {:.1} ms, p99 {:.1} ms",
                percentile(&last, 0.5),
                percentile(&last, 0.99)
            ),
            String::new(),
        ));
        out.push((
            format!("{setup}: of which the create call (POST answered)"),
            format!(
                "p50 {:.1} ms, p99 {:.1} ms",
                percentile(&answered, 0.5),
                percentile(&answered, 0.99)
            ),
            format!("rights look-up, availability and standing checks in Keycloak, the insert; slowest of {rounds}: {slowest}"),
        ));
        out.push((
            format!("{setup}: of which the fan-out (first stream → each of {n} streams)"),
            format!(
                "p50 {:.1} ms, p99 {:.1} ms",
                percentile(&spread, 0.5),
                percentile(&spread, 0.99)
            ),
            String::new(),
        ));
        out.push((
            format!("{setup}: cancel → request.cancelled at each of {n} streams"),
            format!(
                "p50 {:.1} ms, p99 {:.1} ms",
                percentile(&cancelled, 0.5),
                percentile(&cancelled, 0.99)
            ),
            String::new(),
        ));
    }
    Ok(out)
}

/// A user's token, logged in again through Keycloak's page when it is
/// older than a minute (jit-cli tokens last 120 s).
struct Relogin {
    user: &'static str,
    cur: tokio::sync::Mutex<(String, Instant)>,
}

impl Relogin {
    async fn new(user: &'static str) -> Arc<Relogin> {
        Arc::new(Relogin {
            user,
            cur: tokio::sync::Mutex::new((token(user).await, Instant::now())),
        })
    }
}

impl TokenSource for Relogin {
    fn token(&self) -> futures::future::BoxFuture<'_, Result<String, ClientError>> {
        Box::pin(async move {
            let mut g = self.cur.lock().await;
            if g.1.elapsed() > Duration::from_secs(60) {
                *g = (token(self.user).await, Instant::now());
            }
            Ok(g.0.clone())
        })
    }
}

/// Follows `/v1/events` on `url` as `who` (reconnecting with
/// `Last-Event-ID` when the stream ends with its token) and broadcasts
/// `(request id, event)`.
fn follow(url: String, who: Arc<Relogin>, tx: tokio::sync::broadcast::Sender<(String, String)>) {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let c = Client::new(&url, Some(who.clone() as Arc<dyn TokenSource>));
            if let Ok(s) = c.events(last).await {
                let mut s = Box::pin(s);
                while let Some(Ok(ev)) = s.next().await {
                    last = Some(ev.id);
                    let _ = tx.send((ev.data.record.request_id.clone(), ev.event.to_string()));
                }
            }
            if tx.receiver_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Waits for `event` of `id` on `rx` (at most `limit`).
async fn wait_event(
    rx: &mut tokio::sync::broadcast::Receiver<(String, String)>,
    id: &str,
    event: &str,
    limit: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok((rid, e))) if rid == id && e == event => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(k))) => {
                bail!("the event follower lagged by {k} events")
            }
            Ok(Err(e)) => bail!("event follower: {e}"),
            Err(_) => bail!("{event} of {id} not seen within {limit:?}"),
        }
    }
}

/// Section `footprint`.
pub async fn run_footprint(_url: &str) -> Result<Vec<Line>> {
    let setups = bench_opts::setups(&[
        Setup {
            engine: Engine::Sqlite,
            replicas: 1,
        },
        Setup {
            engine: Engine::Postgres,
            replicas: 1,
        },
    ])?;
    let total = env_usize("JIT_BENCH_FOOTPRINT_REQUESTS", 1000)?;
    let requesters = ["alice", "erin", "frank", "carol"];
    let mut out = Vec::new();
    for setup in setups {
        let r = start(setup).await?;
        let pids: Vec<u32> = r.jitd.iter().filter_map(|j| j.pid()).collect();
        let url = r.jitd[0].url.clone();
        let bob = Relogin::new("bob").await;
        let dave = Relogin::new("dave").await;
        let (tx, _) = tokio::sync::broadcast::channel(65536);
        follow(url.clone(), dave, tx.clone());
        // Let the follower subscribe before the first request.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before: Vec<bench_opts::Footprint> = pids
            .iter()
            .map(|p| bench_opts::footprint(*p))
            .collect::<Result<_>>()?;
        eprintln!(
            "jit-bench: footprint: {setup}: {total} requests created, approved, granted, dropped, removed"
        );
        let started = Instant::now();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = Vec::new();
        for (k, who) in requesters.iter().enumerate() {
            let share = total / requesters.len() + usize::from(k < total % requesters.len());
            let me = Relogin::new(who).await;
            let (url, bob, mut rx, done) = (url.clone(), bob.clone(), tx.subscribe(), done.clone());
            workers.push(tokio::spawn(async move {
                let mine = Client::new(&url, Some(me as Arc<dyn TokenSource>));
                let approver = Client::new(&url, Some(bob as Arc<dyn TokenSource>));
                let limit = Duration::from_secs(60);
                let mut seen = HashSet::new();
                for _ in 0..share {
                    let id = mine
                        .create(&CreateRequestBody {
                            entitlement: ENTITLEMENT.into(),
                            duration: Some("15m".into()),
                            justification: "footprint benchmark".into(),
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| anyhow!("create: {e}"))?
                        .request
                        .id()
                        .to_string();
                    approver
                        .approve(&id, None, None)
                        .await
                        .map_err(|e| anyhow!("approve {id}: {e}"))?;
                    wait_event(&mut rx, &id, "grant.granted", limit).await?;
                    mine.drop_grant(&id)
                        .await
                        .map_err(|e| anyhow!("drop {id}: {e}"))?;
                    wait_event(&mut rx, &id, "grant.removed", limit).await?;
                    seen.insert(id);
                    let d = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if d % 100 == 0 {
                        eprintln!("jit-bench: footprint: {d}/{total}");
                    }
                }
                Ok::<usize, anyhow::Error>(seen.len())
            }));
        }
        let mut cycles = 0;
        for w in workers {
            cycles += w.await??;
        }
        let secs = started.elapsed().as_secs_f64();
        let after: Vec<bench_opts::Footprint> = pids
            .iter()
            .map(|p| bench_opts::footprint(*p))
            .collect::<Result<_>>()?;
        let load = bench_opts::load();
        drop(tx);
        drop(r);
        if cycles != total {
            bail!("{cycles} of {total} cycles done");
        }
        let cpu: f64 = after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.cpu_secs - b.cpu_secs)
            .sum();
        let per_1000 = cpu * 1000.0 / total as f64;
        let mib = |k: u64| k as f64 / 1024.0;
        out.push((
            format!("{setup}: jitd CPU (utime + stime) per 1,000 requests"),
            format!("{per_1000:.2} s ({total} requests in {secs:.0} s)"),
            format!(
                "create, approve, grant, drop, removal through the API and Keycloak; {}{load}",
                if setup.engine == Engine::Postgres {
                    "PostgreSQL's own processes not counted; "
                } else {
                    ""
                }
            ),
        ));
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            out.push((
                format!(
                    "{setup}: jitd{} resident memory",
                    if pids.len() > 1 {
                        format!(" {i}")
                    } else {
                        String::new()
                    }
                ),
                format!(
                    "VmRSS {:.1} MiB before, {:.1} MiB after; VmHWM (peak) {:.1} MiB",
                    mib(b.rss_kib),
                    mib(a.rss_kib),
                    mib(a.hwm_kib)
                ),
                String::new(),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_give_their_type_and_request_id() {
        let f = b"id: 7\nevent: request.created\ndata: {\"seq\":7,\"request_id\":\"ab-1\"}";
        assert_eq!(super::frame_fields(f), Some(("request.created", "ab-1")));
        assert_eq!(super::frame_fields(b":"), None);
    }

    #[test]
    fn request_id_is_read_from_event_data() {
        assert_eq!(
            super::request_id(r#"{"record":{"seq":3,"request_id":"ab-1","x":"y"}}"#),
            Some("ab-1")
        );
        assert_eq!(super::request_id(r#"{"record":{}}"#), None);
    }
}
