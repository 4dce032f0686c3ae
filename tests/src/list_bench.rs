//! Section `lists` of `cargo xtask bench`: an approver's `to_review` list
//! and a requester's `mine` list through jitd's API over a store holding
//! 100,000 and 1,000,000 requests, on SQLite and on PostgreSQL.
//!
//! The store is seeded in bulk by SQL straight into the `requests` table
//! (one `INSERT … SELECT` over a generated series; no audit rows, so the
//! audit chain stays valid — it is empty), not through the API. Every
//! 100th seeded request is pending; entitlements and requesters rotate, 2 %
//! belong to the requester measured. Thirty pending requests of that
//! requester are seeded *before* all others (the oldest rows): exactness is
//! checked by following every page and finding all of them, and the total
//! equal to what the seeding makes visible.
//!
//! Sizes: `JIT_BENCH_LIST_SIZES` (default `100000,1000000`). With
//! `--replicas N` (PostgreSQL) N jitd serve the store and the timed reads
//! go round-robin over them.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use jit_core::{AccessRequest, NewRequest, Principal};
use jit_server::store::{GrantState, SqlStore};

use crate::bench_opts::{Engine, Setup};
use crate::token_bounds::Line;
use crate::{token, Jitd, POLICY};

/// Requests per page the bench asks for (the API's default is 500).
const PAGE: usize = 100;
/// Timed first-page reads per list.
const READS: usize = 200;
/// Untimed reads on each jitd before the timed ones, per list.
const WARMUP_READS: usize = 5;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the section.
pub async fn run(_url: &str) -> Result<Vec<Line>> {
    let sizes: Vec<u64> = std::env::var("JIT_BENCH_LIST_SIZES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().context("JIT_BENCH_LIST_SIZES"))
        .collect::<Result<_>>()?;
    let env = jit_testkit::keycloak_env();
    let probe = jit_testkit::AdminProbe::new(&env).await?;
    let alice = probe.user_id("alice").await?;
    let mut out = Vec::new();
    let setups = crate::bench_opts::setups(&[
        Setup {
            engine: Engine::Sqlite,
            replicas: 1,
        },
        Setup {
            engine: Engine::Postgres,
            replicas: 1,
        },
    ])?;
    for setup in setups {
        let engine = setup.engine.name();
        // "sqlite", or "postgres, 3 replicas" (reads spread over them).
        let label = if setup.replicas == 1 {
            engine.to_string()
        } else {
            setup.to_string()
        };
        for &n in &sizes {
            eprintln!("jit-bench: lists: seeding {n} requests ({engine})");
            let dir = tempfile::tempdir()?;
            let database = match engine {
                "sqlite" => dir.path().join("bench.sqlite").display().to_string(),
                _ => tokio::task::spawn_blocking(jit_testkit::postgres::test_database).await??,
            };
            let (db, a) = (database.clone(), alice.clone());
            let started = Instant::now();
            let expect = tokio::task::spawn_blocking(move || seed(&db, n, &a)).await??;
            let seeded = started.elapsed();
            let replicas: Vec<Jitd> = (0..setup.replicas)
                .map(|_| Jitd::start_on(POLICY, &env.url, &database))
                .collect();
            let jitd = &replicas[0];
            // Fresh tokens: seeding a million rows outlasts a token.
            let bob_token = token("bob").await;
            let alice_token = token("alice").await;
            for (who, tok, q, want) in [
                (
                    "to_review (bob)",
                    &bob_token,
                    "to_review=true",
                    expect.to_review,
                ),
                ("mine (alice)", &alice_token, "mine=true", expect.mine),
            ] {
                let http = reqwest::Client::new();
                let urls: Vec<String> = replicas
                    .iter()
                    .map(|j| format!("{}/v1/requests?{q}&limit={PAGE}", j.url))
                    .collect();
                // Not counted: each jitd's first reads of this caller (its
                // first sight of the token's signing key, its first
                // database connections and query plans) — a jitd in
                // service has long made them.
                for url in &urls {
                    for _ in 0..WARMUP_READS {
                        let r = http.get(url).bearer_auth(tok).send().await?;
                        if !r.status().is_success() {
                            bail!("{who}: {}", r.status());
                        }
                        let _ = r.bytes().await?;
                    }
                }
                let mut ms = Vec::with_capacity(READS);
                for i in 0..READS {
                    let t = Instant::now();
                    let r = http
                        .get(&urls[i % urls.len()])
                        .bearer_auth(tok)
                        .send()
                        .await?;
                    if !r.status().is_success() {
                        bail!("{who}: {}", r.status());
                    }
                    let _ = r.bytes().await?;
                    ms.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                ms.sort_by(|a, b| a.total_cmp(b));
                // Exactness: every page, every visible pending request.
                let c = jitd.client(tok);
                let all = c
                    .list(&jit_client::ListQuery {
                        to_review: q.starts_with("to_review"),
                        mine: q.starts_with("mine"),
                        ..Default::default()
                    })
                    .await?;
                let oldest = all
                    .iter()
                    .filter(|v| v.request.id().starts_with("old-"))
                    .count();
                let exact = all.len() as u64 == want && oldest == 30;
                let p99 = percentile(&ms, 0.99);
                out.push((
                    format!("{label}, {n} requests: {who}, first page of {PAGE}"),
                    format!(
                        "p50 {:.1} ms, p99 {p99:.1} ms; {} listed of {want} (30/30 oldest: {})",
                        percentile(&ms, 0.5),
                        all.len(),
                        oldest == 30
                    ),
                    format!(
                        "goal p99 < 50 ms and exact: {}; seeded in {:.0} s",
                        if p99 < 50.0 && exact {
                            "met"
                        } else {
                            "**not met**"
                        },
                        seeded.as_secs_f64()
                    ),
                ));
            }
            drop(replicas);
        }
    }
    Ok(out)
}

/// What the seeding makes visible.
struct Expect {
    /// Pending requests of entitlements bob approves, not his own.
    to_review: u64,
    /// Alice's requests.
    mine: u64,
}

/// Seeds `n` requests plus 30 old pending ones of `alice` into `database`.
fn seed(database: &str, n: u64, alice: &str) -> Result<Expect> {
    let store = if jit_server::store::postgres::is_url(database) {
        SqlStore::new(Box::new(jit_server::store::postgres::Postgres::open(
            database, 2,
        )?))?
    } else {
        SqlStore::open_sqlite(std::path::Path::new(database))?
    };
    let pg = store.shared();
    let policy = jit_core::Policy::from_toml(POLICY)?;
    let base = chrono::Utc::now() - chrono::Duration::days(1);
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (template, _) = AccessRequest::create(
        "@@ID@@".into(),
        &NewRequest {
            entitlement: "prod-db-admin".into(),
            duration_secs: Some(600),
            justification: "seeded for the list benchmark".into(),
            ..Default::default()
        },
        &Principal::new("@@REQ@@", "seeded"),
        &policy,
        base,
    )?;
    let mut body = serde_json::to_value(&template)?;
    body["entitlement_id"] = "@@ENT@@".into();
    body["status"] = "pending".into();
    let body = serde_json::to_string(&body)?.replace('\'', "''");
    let status_marker = "\"status\":\"pending\"";
    let expr = body
        .replace("@@ID@@", "' || id || '")
        .replace("@@REQ@@", "' || req || '")
        .replace("@@ENT@@", "' || ent || '")
        .replace(status_marker, "\"status\":\"' || st || '\"");
    let grant = serde_json::to_string(&GrantState::default())?;
    let target = serde_json::to_string(&template.target())?;
    let created = ts(base);
    let pending_until = ts(base + chrono::Duration::days(30));
    let cols = "id, entitlement_id, requester_id, status, target, extends, created_at, pending_until, body, grant_state, removal_pending, review_open, pending_slot";
    let select = |from: &str, id: &str, req_rest: &str| {
        format!(
            "SELECT id, ent, req, st, '{target}', NULL, '{created}', '{pending_until}', '{expr}', '{grant}', 0, 0, 0 FROM (
               SELECT {id} AS id,
                 CASE i % 3 WHEN 0 THEN 'prod-db-admin' WHEN 1 THEN 'billing-admin' ELSE 'incident-responder' END AS ent,
                 CASE WHEN i % 50 = 1 THEN '{alice}' ELSE 'fill-user-' || {req_rest} END AS req,
                 CASE WHEN i % 100 = 0 THEN 'pending' ELSE 'expired' END AS st
               FROM {from}) AS g"
        )
    };
    let fill = if pg {
        format!(
            "INSERT INTO requests ({cols}) {}",
            select(
                &format!("generate_series(1, {n}) AS n(i)"),
                "'fill-' || lpad(i::text, 9, '0')",
                "(i % 5000)::text"
            )
        )
    } else {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) INSERT INTO requests ({cols}) {}",
            select("n", "printf('fill-%09d', i)", "(i % 5000)")
        )
    };
    let mut c = store.raw_writer()?;
    c.batch("BEGIN")?;
    c.batch(&fill)?;
    // The 30 oldest rows: alice's pending requests of prod-db-admin.
    for k in 0..30 {
        let id = format!("old-{k:02}");
        let at = ts(base - chrono::Duration::hours(1) + chrono::Duration::seconds(k));
        let row_body = body
            .replace("''", "'")
            .replace("@@ID@@", &id)
            .replace("@@REQ@@", alice)
            .replace("@@ENT@@", "prod-db-admin");
        c.exec(
            &format!("INSERT INTO requests ({cols}) VALUES (?, 'prod-db-admin', ?, 'pending', ?, NULL, ?, ?, ?, ?, 0, 0, 0)"),
            &[
                id.clone().into(),
                alice.into(),
                target.clone().into(),
                at.into(),
                pending_until.clone().into(),
                row_body.into(),
                grant.clone().into(),
            ],
        )?;
    }
    c.batch("COMMIT")?;
    if pg {
        c.batch("ANALYZE requests")?;
    }
    drop(c);
    let count = |f: &dyn Fn(u64) -> bool| (1..=n).filter(|i| f(*i)).count() as u64;
    let expect = Expect {
        to_review: 30 + count(&|i| i % 100 == 0 && i % 3 == 0),
        mine: 30 + count(&|i| i % 50 == 1),
    };
    Ok(expect)
}
