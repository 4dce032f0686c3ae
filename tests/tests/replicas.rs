//! Three jitd replicas on one PostgreSQL against the real Keycloak
//! (issue "scale out", item 6): requests and approvals spread over all
//! three; one replica SIGKILLed while it holds claimed due work; every grant
//! and removal still happens exactly once and on time (judged by the
//! server's own timestamps; the killed replica's claimed work is taken
//! over because it was found dead, before its claims' lease lapses);
//! event streams on every replica see every event; the audit chain
//! verifies.
//!
//! Each replica reaches Keycloak's APIs through its own [`SlowProxy`]
//! (every Admin API call takes ≥ 1 s), so the removals it claims stay
//! claimed long enough for the test to see the claim in the database and
//! kill the replica that holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jit_client::{Client, StaticToken};
use jit_core::api::CreateRequestBody;
use jit_core::Status;
use jit_e2e::*;
use jit_server::store::SqlStore;

const POLICY: &str = r#"
auditor_roles = ["jit-auditor"]

[[entitlement]]
id = "prod-db-admin"
realm_role = "prod-db-admin"
max_duration = "1h"
approver_roles = ["jit-approver-db", "jit-approver-ops"]

[[entitlement]]
id = "billing-admin"
client_role = { client = "billing-app", role = "billing-admin" }
max_duration = "1h"
approver_roles = ["jit-approver-db", "jit-approver-ops"]

[[entitlement]]
id = "incident-responder"
group = "/incident-responders"
max_duration = "1h"
approver_roles = ["jit-approver-ops"]
"#;

/// The claim lease of jitd's scheduler (`scheduler::CLAIM_LEASE`).
const LEASE_SECS: i64 = jit_server::scheduler::CLAIM_LEASE.num_seconds();

/// The shared database, read directly for the claims (the API does not
/// show them).
struct Db(Option<Arc<SqlStore>>);

impl Drop for Db {
    fn drop(&mut self) {
        // The PostgreSQL driver must not be dropped on a runtime thread.
        if let Some(s) = self.0.take() {
            let _ = std::thread::spawn(move || drop(s)).join();
        }
    }
}

impl Db {
    async fn open(url: String) -> Db {
        let s = tokio::task::spawn_blocking(move || {
            SqlStore::new(Box::new(
                jit_server::store::postgres::Postgres::open(&url, 2).expect("open PostgreSQL"),
            ))
        })
        .await
        .unwrap()
        .expect("migrated store");
        Db(Some(Arc::new(s)))
    }

    /// `(request id, replica, claim_until)` of every live claim on a
    /// removal not done.
    async fn claims(&self) -> Vec<(String, String, chrono::DateTime<chrono::Utc>)> {
        let s = self.0.clone().expect("open");
        tokio::task::spawn_blocking(move || {
            let now = chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .to_string();
            s.raw_writer()
                .unwrap()
                .query(
                    "SELECT id, claimed_by, claim_until FROM requests WHERE claimed_by IS NOT NULL AND claim_until > ? AND removal_pending = 1",
                    &[now.into()],
                )
                .unwrap()
                .iter()
                .map(|r| {
                    let until = chrono::DateTime::parse_from_rfc3339(&r[2].text().unwrap())
                        .expect("claim_until is RFC 3339")
                        .with_timezone(&chrono::Utc);
                    (r[0].text().unwrap(), r[1].text().unwrap(), until)
                })
                .collect()
        })
        .await
        .unwrap()
    }
}

/// Follows `/v1/events` as `user` on `urls[0]`; when that stream ends (its
/// replica died, or its token expired: jit-cli tokens last 120 s) it logs
/// in again and resumes on the next replica with `Last-Event-ID`.
/// Collects the ids seen.
fn follow(urls: Vec<String>, user: &'static str, seen: Arc<Mutex<BTreeSet<i64>>>) {
    tokio::spawn(async move {
        let mut last: Option<i64> = None;
        let mut i = 0;
        loop {
            // A fresh token for every connection; a failed login (Keycloak
            // busy) is retried like a failed connection.
            if let Ok(t) = jit_testkit::pkce_login(
                &jit_testkit::keycloak_env(),
                jit_testkit::CLI_CLIENT_ID,
                user,
                &jit_testkit::demo_password(user),
            )
            .await
            {
                let c = Client::new(
                    &urls[i % urls.len()],
                    Some(Arc::new(StaticToken(t.access_token))),
                );
                if let Ok(s) = c.events(last).await {
                    let mut s = Box::pin(s);
                    while let Some(Ok(ev)) = s.next().await {
                        last = Some(ev.id);
                        seen.lock().unwrap().insert(ev.id);
                    }
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

async fn create(c: &Client, entitlement: &str, duration: &str) -> String {
    c.create(&CreateRequestBody {
        entitlement: entitlement.into(),
        duration: Some(duration.into()),
        justification: "three replicas, one database".into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("create {entitlement}: {e}"))
    .request
    .id()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_postgres_and_survive_a_sigkill() {
    let _serial = serial().await;
    let ctx = Ctx::new().await;
    let url = tokio::task::spawn_blocking(jit_testkit::postgres::test_database)
        .await
        .unwrap()
        .expect("a real PostgreSQL (cargo xtask test starts one)");
    let kc = jit_testkit::keycloak_env().url;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let proxy = SlowProxy::start(&kc, Duration::from_secs(1)).await;
        replicas.push(Jitd::start_on(POLICY, &proxy.url, &url));
    }
    let urls: Vec<String> = replicas.iter().map(|j| j.url.clone()).collect();
    let db = Db::open(url.clone()).await;

    // One auditor stream per replica, each resuming elsewhere if its
    // replica dies.
    let dave_token = token("dave").await;
    let streams: Vec<Arc<Mutex<BTreeSet<i64>>>> = (0..3)
        .map(|i| {
            let seen = Arc::new(Mutex::new(BTreeSet::new()));
            let mut order = urls.clone();
            order.rotate_left(i);
            follow(order, "dave", seen.clone());
            seen
        })
        .collect();

    let tokens: BTreeMap<&str, String> = [
        ("alice", token("alice").await),
        ("erin", token("erin").await),
        ("frank", token("frank").await),
        ("bob", token("bob").await),
        ("carol", token("carol").await),
    ]
    .into_iter()
    .collect();
    let on = |who: &str, replica: usize| replicas[replica].client(&tokens[who]);

    // Requests made on all three replicas; each approved on another one.
    let plan = [
        ("alice", "prod-db-admin", 0, "bob", 1),
        ("erin", "billing-admin", 1, "carol", 2),
        ("frank", "incident-responder", 2, "carol", 0),
        ("alice", "billing-admin", 1, "bob", 2),
        ("erin", "prod-db-admin", 2, "bob", 0),
        ("frank", "billing-admin", 0, "carol", 1),
    ];
    let mut ids = Vec::new();
    for (who, ent, at, _, _) in plan {
        ids.push(create(&on(who, at), ent, "25s").await);
    }
    for ((_, _, _, approver, at), id) in plan.iter().zip(&ids) {
        on(approver, *at)
            .approve(id, None, None)
            .await
            .unwrap_or_else(|e| panic!("approve {id}: {e}"));
    }
    let dave = Client::new(&urls[2], Some(Arc::new(StaticToken(dave_token.clone()))));
    eventually(Duration::from_secs(120), "every grant active", || async {
        let mut all = true;
        for id in &ids {
            all &= dave.get(id).await.unwrap().request.status() == Status::Active;
        }
        all
    })
    .await;

    // Wait for removals to be claimed (the grants expire ~25 s after they
    // started), then SIGKILL the replica holding claims.
    let mut victim = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while victim.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no replica was seen holding a claim"
        );
        for (id, owner, _) in db.claims().await {
            if let Some(i) = replicas.iter().position(|j| {
                j.pid()
                    .is_some_and(|p| owner.starts_with(&format!("jitd-{p}-")))
            }) {
                victim = Some((i, id));
                break;
            }
        }
        if victim.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (v, held) = victim.unwrap();
    let is_victims = |o: &str| {
        replicas[v]
            .pid()
            .is_some_and(|p| o.starts_with(&format!("jitd-{p}-")))
    };
    let held_by_victim: Vec<String> = db
        .claims()
        .await
        .into_iter()
        .filter(|(_, o, _)| is_victims(o))
        .map(|(id, ..)| id)
        .chain([held.clone()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let victim_pid = replicas[v].pid();
    replicas[v].kill9();
    // The victim's claims as it left them (it renews them no more): when
    // their lease would lapse.
    let lease_ends: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> = db
        .claims()
        .await
        .into_iter()
        .filter(|(_, o, _)| victim_pid.is_some_and(|p| o.starts_with(&format!("jitd-{p}-"))))
        .map(|(id, _, until)| (id, until))
        .collect();
    eprintln!("replica {v} SIGKILLed while holding {held_by_victim:?}");
    let survivor = (v + 1) % 3;
    let dave = Client::new(
        &urls[survivor],
        Some(Arc::new(StaticToken(dave_token.clone()))),
    );
    // What the victim had not finished: the survivors must take it over.
    let mut taken_over = Vec::new();
    for id in &held_by_victim {
        if dave.get(id).await.unwrap().keycloak.removal_pending {
            taken_over.push(id.clone());
        }
    }
    assert!(
        !taken_over.is_empty(),
        "the replica was killed holding unfinished removals {held_by_victim:?}"
    );

    // Every removal is done (by the survivors, after the lease for the
    // victim's claims). A fresh token: the wait must fail on the removals,
    // not on a token that expired meanwhile (jit-cli tokens last 120 s).
    let dave_token = token("dave").await;
    let dave = Client::new(
        &urls[survivor],
        Some(Arc::new(StaticToken(dave_token.clone()))),
    );
    eventually(
        Duration::from_secs(90),
        "every grant expired and removed",
        || async {
            let mut all = true;
            for id in &ids {
                let v = dave.get(id).await.unwrap();
                all &= v.request.status() == Status::Expired
                    && v.keycloak.removed_at.is_some()
                    && !v.keycloak.removal_pending;
            }
            all
        },
    )
    .await;

    // Keycloak: nothing left.
    for (who, ent, ..) in plan {
        let user = ctx.probe.user_id(who).await.unwrap();
        let target = jit_core::Policy::from_toml(POLICY)
            .unwrap()
            .entitlement(ent)
            .unwrap()
            .kind
            .clone();
        assert!(
            !ctx.admin.holds(&user, &target, false).await.unwrap(),
            "{who} still holds {ent} in Keycloak"
        );
    }

    // Exactly once, on time, by the server's own timestamps.
    let audit = dave.audit(0).await.unwrap();
    for id in &ids {
        let events: Vec<&str> = audit
            .iter()
            .filter(|a| &a.request_id == id)
            .map(|a| a.event.as_str())
            .collect();
        for e in ["grant.granted", "grant.expired", "grant.removed"] {
            assert_eq!(
                events.iter().filter(|x| **x == e).count(),
                1,
                "{id}: {e} exactly once in {events:?}"
            );
        }
        let v = dave.get(id).await.unwrap();
        let expires = v.request.expires_at().unwrap();
        let removed = v.keycloak.removed_at.unwrap();
        let late = (removed - expires).num_milliseconds() as f64 / 1000.0;
        // Removal needs a few Admin API calls of ≥ 1 s each (the proxy);
        // a grant the victim held is taken over once its lease lapses.
        let bound = if taken_over.contains(id) {
            LEASE_SECS as f64 + 15.0
        } else {
            15.0
        };
        assert!(
            (0.0..=bound).contains(&late),
            "{id}: removed {late:.1} s after expires_at (bound {bound} s)"
        );
        // Taken over because the victim was found dead (its liveness lock
        // went with its connections), not when its claim's lease lapsed:
        // a takeover after the lease could not be done before it ends +
        // 1 s (the removal's first Admin API call alone takes ≥ 1 s
        // through the proxy).
        if let (true, Some(until)) = (taken_over.contains(id), lease_ends.get(id)) {
            assert!(
                removed < *until + chrono::Duration::seconds(1),
                "{id}: removed at {removed}, not before the killed replica's claim lapsed at {until}"
            );
            eprintln!(
                "{id}: taken over from the killed replica and removed {:.1} s before its claim's lease ended",
                (*until - removed).num_milliseconds() as f64 / 1000.0
            );
        }
        eprintln!(
            "{id}: removed {late:.1} s after its end{}",
            if taken_over.contains(id) {
                " (taken over from the killed replica)"
            } else {
                ""
            }
        );
    }

    // Every stream saw every event.
    let want: BTreeSet<i64> = audit.iter().map(|a| a.seq).collect();
    eventually(
        Duration::from_secs(30),
        "every stream saw every event",
        || {
            let streams = streams.clone();
            let want = want.clone();
            async move { streams.iter().all(|s| want.is_subset(&s.lock().unwrap())) }
        },
    )
    .await;

    let v = dave.audit_verify().await.unwrap();
    assert!(v.ok, "audit chain: {v:?}");
    assert_eq!(v.rows, audit.len() as i64);

    // Grant ends (the user attribute the Keycloak extension reads): the
    // replicas wrote the same users at the same time; every grant has
    // ended, so none may be left on any user (a write from an older read
    // landing last would leave one), and no replica may have taken another
    // replica's write for a realm that drops the attribute.
    for user in ["alice", "erin", "frank"] {
        let id = ctx.probe.user_id(user).await.unwrap();
        eventually(
            Duration::from_secs(30),
            &format!("{user} keeps no grant ends once every grant ended"),
            || {
                let (admin, id) = (&ctx.admin, id.clone());
                async move {
                    admin
                        .user_attribute(&id, GRANTS_ATTRIBUTE)
                        .await
                        .is_ok_and(|v| v.is_empty())
                }
            },
        )
        .await;
    }
    for (i, r) in replicas.iter().enumerate() {
        let log = std::fs::read_to_string(r.log_path()).unwrap_or_default();
        assert!(
            !log.contains("tokens are not time-bound"),
            "replica {i} reported grant ends Keycloak did not keep:\n{}",
            log.lines()
                .filter(|l| l.contains("grant ends"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
