//! Store tests. Each runs against SQLite and against a real PostgreSQL
//! (a throwaway cluster from `jit-testkit`, or the one `cargo xtask test`
//! started): one interface, the same expectations.

use super::*;
use jit_core::{NewRequest, Policy, Principal, StoredRequest};

fn policy() -> Policy {
    Policy::from_toml(
        "[[entitlement]]\nid=\"db\"\nrealm_role=\"prod-db-admin\"\nmax_duration=\"1h\"\napprover_roles=[\"ap\"]\n\
         [[entitlement]]\nid=\"web\"\nrealm_role=\"web-admin\"\nmax_duration=\"1h\"\napprover_roles=[\"ap\"]\n\
         [[entitlement]]\nid=\"two\"\nrealm_role=\"two-admin\"\nmax_duration=\"1h\"\napprovals_required=2\napprover_roles=[\"ap\"]\n\
         [[entitlement]]\nid=\"other\"\nrealm_role=\"other-admin\"\nmax_duration=\"1h\"\napprover_roles=[\"nobody\"]\n",
    )
    .unwrap()
}

/// Keeps what an engine's store needs alive for the test.
#[allow(dead_code)]
enum Engine {
    Sqlite(tempfile::TempDir),
    Postgres,
}

/// A fresh store of each engine.
fn stores() -> Vec<(&'static str, SqlStore, Engine)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqlStore::new(Box::new(
        db::Sqlite::open(&dir.path().join("s.sqlite"), 4).unwrap(),
    ))
    .unwrap();
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let pg = SqlStore::new(Box::new(postgres::Postgres::open(&url, 16).unwrap())).unwrap();
    vec![
        ("sqlite", sqlite, Engine::Sqlite(dir)),
        ("postgres", pg, Engine::Postgres),
    ]
}

fn request(
    id: &str,
    user: &str,
    entitlement: &str,
    now: DateTime<Utc>,
) -> (AccessRequest, Vec<Transition>) {
    let input = NewRequest {
        entitlement: entitlement.into(),
        duration_secs: Some(60),
        justification: "because of reasons".into(),
        ..Default::default()
    };
    AccessRequest::create(
        id.into(),
        &input,
        &Principal::new(user, format!("{user}-name")),
        &policy(),
        now,
    )
    .unwrap()
}

fn approver() -> Principal {
    let mut bob = Principal::new("u-bob", "bob");
    bob.roles.insert("ap".into());
    bob
}

fn approve(store: &SqlStore, id: &str, who: &Principal, now: DateTime<Utc>) {
    let p = policy();
    let who = who.clone();
    store
        .update(id, move |s| {
            let e = p.entitlement(s.request.entitlement_id()).unwrap();
            Ok(s.request
                .vote(e, &who, jit_core::Decision::Approve, None, None, now)?
                .into_iter()
                .map(Entry::from)
                .collect())
        })
        .unwrap();
}

#[test]
fn insert_update_and_audit_chain() {
    for (name, store, _keep) in stores() {
        let now = Utc::now();
        let (r, t) = request("r1", "u1", "db", now);
        store.insert(&r, t).unwrap();
        approve(&store, "r1", &approver(), now);
        let s = store.get("r1").unwrap().unwrap();
        assert_eq!(s.request.status(), Status::Approved, "{name}");
        // A failing closure writes nothing.
        let err = store
            .update("r1", |s| Ok(vec![s.request.lapse(now)?.into()]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Domain(DomainError::IllegalTransition { .. })
            ),
            "{name}: {err}"
        );
        assert_eq!(store.last_seq().unwrap(), 2, "{name}");
        let due = store.due(now).unwrap();
        assert_eq!(due.activate, vec!["r1".to_string()], "{name}");
        let v = store.verify_audit().unwrap();
        assert!(v.ok && v.rows == 2, "{name}: {v:?}");
    }
}

#[test]
fn late_revocations_use_the_core_rule() {
    // The metric's count agrees with the API's `revoke_late`
    // (jit_core::lateness): late only past the grace after the end.
    for (name, store, _keep) in stores() {
        let t: DateTime<Utc> = "2026-11-30T10:00:00Z".parse().unwrap();
        let (r, tr) = request("r1", "u1", "db", t);
        store.insert(&r, tr).unwrap();
        let p = policy();
        let bob = approver();
        store
            .update("r1", |s| {
                let e = p.entitlement("db").unwrap();
                let mut out: Vec<Entry> = s
                    .request
                    .vote(e, &bob, jit_core::Decision::Approve, None, None, t)?
                    .into_iter()
                    .map(Entry::from)
                    .collect();
                out.push(s.request.activate(t)?.into());
                Ok(out)
            })
            .unwrap();
        let late = |at: DateTime<Utc>| store.stats(at).unwrap().1;
        let grace = chrono::Duration::seconds(jit_core::lateness::REVOKE_LATE_GRACE_SECS);
        let end = t + chrono::Duration::seconds(60);
        // Active past expires_at, not yet expired by the scheduler.
        assert_eq!(late(end + chrono::Duration::seconds(2)), 0, "{name}");
        assert_eq!(
            late(end + grace + chrono::Duration::seconds(1)),
            1,
            "{name}"
        );
        // Dropped early, removal pending: counted from the drop.
        let dropped = t + chrono::Duration::seconds(10);
        let alice = Principal::new("u1", "alice");
        store
            .update("r1", |s| {
                let tr = s.request.drop_grant(&alice, dropped)?;
                s.grant.removal_pending = true;
                Ok(vec![tr.into()])
            })
            .unwrap();
        assert_eq!(late(dropped + chrono::Duration::seconds(2)), 0, "{name}");
        assert_eq!(
            late(dropped + grace + chrono::Duration::seconds(1)),
            1,
            "{name}"
        );
        // The removal failed for good: no longer pending, and the latest
        // revoke of all, counted at once and for good.
        store
            .update("r1", |s| {
                s.grant.removal_pending = false;
                s.grant.removal_failed = true;
                Ok(vec![])
            })
            .unwrap();
        assert_eq!(late(dropped + chrono::Duration::seconds(2)), 1, "{name}");
        assert_eq!(late(dropped + chrono::Duration::days(30)), 1, "{name}");
    }
}

#[test]
fn audit_is_append_only_and_tamper_evident() {
    for (name, store, _keep) in stores() {
        let (r, t) = request("r1", "u1", "db", Utc::now());
        store.insert(&r, t).unwrap();
        let mut c = store.raw_writer().unwrap();
        assert!(
            c.exec("UPDATE audit SET actor='mallory'", &[]).is_err(),
            "{name}"
        );
        assert!(c.exec("DELETE FROM audit", &[]).is_err(), "{name}");
        // Someone with database access drops the triggers and edits a row.
        match store.dialect() {
            Dialect::Sqlite => c.batch("DROP TRIGGER audit_no_update").unwrap(),
            Dialect::Postgres => c.batch("DROP TRIGGER audit_no_change ON audit").unwrap(),
        }
        c.exec("UPDATE audit SET actor='mallory' WHERE seq=1", &[])
            .unwrap();
        drop(c);
        let v = store.verify_audit().unwrap();
        assert!(!v.ok, "{name}");
        assert_eq!(v.first_bad_seq, Some(1), "{name}");
    }
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    {
        let store = Store::open(&path).unwrap();
        let (r, t) = request("r1", "u1", "db", Utc::now());
        store.sync().insert(&r, t).unwrap();
    }
    let store = Store::open(&path).unwrap();
    let s = store.sync();
    assert_eq!(
        s.get("r1").unwrap().unwrap().request.status(),
        Status::Pending
    );
    assert_eq!(s.last_seq().unwrap(), 1);
    assert!(s.verify_audit().unwrap().ok);
}

/// Inserts `n` requests of `user` for `entitlement`, the first created at
/// `start`, one second apart, in one transaction.
fn seed(
    store: &SqlStore,
    prefix: &str,
    user: &str,
    entitlement: &str,
    start: DateTime<Utc>,
    n: usize,
) {
    store
        .write(|c| {
            for i in 0..n {
                let (mut r, t) = request(
                    &format!("{prefix}-{i:06}"),
                    user,
                    entitlement,
                    start + chrono::Duration::seconds(i as i64),
                );
                // Long-decided history: not pending any more.
                r = stored_as(r, |s| s.status = Status::Denied);
                store.insert_in(c, &mut None, &r, t)?;
            }
            Ok(())
        })
        .unwrap();
}

/// `r` as a store would hold it after `change`: sets up states the tests
/// need without going through the state machine (`AccessRequest::restore`).
fn stored_as(r: AccessRequest, change: impl FnOnce(&mut StoredRequest)) -> AccessRequest {
    let mut s = r.to_stored();
    change(&mut s);
    AccessRequest::restore(s)
}

fn all_pages(store: &SqlStore, mut q: ListQuery) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let page = store.list(&q).unwrap();
        assert!(page.items.len() <= q.limit);
        out.extend(page.items.into_iter().map(|s| s.request.id().to_string()));
        match page.next {
            Some(c) => q.after = Some(c),
            None => return out,
        }
    }
}

#[test]
fn lists_are_exact_past_any_cap_and_page_in_order() {
    for (name, store, _keep) in stores() {
        let now = Utc::now();
        let old = now - chrono::Duration::days(30);
        // 30 pending requests of 30 users, older than 10,050 others.
        for i in 0..30 {
            let (r, t) = request(
                &format!("old-{i:02}"),
                &format!("u-old-{i}"),
                if i % 2 == 0 { "db" } else { "web" },
                old + chrono::Duration::seconds(i),
            );
            store.insert(&r, t).unwrap();
        }
        seed(
            &store,
            "new",
            "u-many",
            "db",
            old + chrono::Duration::hours(1),
            10_050,
        );
        let p = policy();
        let bob = Viewer::of(&approver(), &p);
        // to_review: every pending request, in pages of 7, newest first.
        let ids = all_pages(
            &store,
            ListQuery {
                viewer: bob.clone(),
                to_review: true,
                limit: 7,
                ..Default::default()
            },
        );
        let want: Vec<String> = (0..30).rev().map(|i| format!("old-{i:02}")).collect();
        assert_eq!(ids, want, "{name}");
        // The requester's own list finds their old request.
        let mine = all_pages(
            &store,
            ListQuery {
                viewer: Viewer::of(&Principal::new("u-old-3", "x"), &p),
                mine: true,
                limit: 500,
                ..Default::default()
            },
        );
        assert_eq!(mine, vec!["old-03".to_string()], "{name}");
        // Status filter and visibility over everything: the approver sees
        // all 10,080, each once, in order.
        let seen = all_pages(
            &store,
            ListQuery {
                viewer: bob.clone(),
                limit: 1000,
                ..Default::default()
            },
        );
        assert_eq!(seen.len(), 10_080, "{name}");
        let mut dedup = seen.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 10_080, "{name}");
        let pending = all_pages(
            &store,
            ListQuery {
                viewer: bob.clone(),
                status: Some(Status::Pending),
                limit: 9,
                ..Default::default()
            },
        );
        assert_eq!(pending, want, "{name}");
        // Someone who approves nothing sees only their own.
        let stranger = all_pages(
            &store,
            ListQuery {
                viewer: Viewer::of(&Principal::new("u-x", "x"), &p),
                limit: 50,
                ..Default::default()
            },
        );
        assert!(stranger.is_empty(), "{name}");
        // After bob votes on one it leaves his to_review; a second approver
        // still sees it.
        let (r, t) = request("two", "u-two", "db", now);
        store.insert(&r, t).unwrap();
        approve(
            &store,
            "old-04",
            &approver(),
            old + chrono::Duration::minutes(1),
        );
        let ids = all_pages(
            &store,
            ListQuery {
                viewer: bob.clone(),
                to_review: true,
                limit: 100,
                ..Default::default()
            },
        );
        assert!(!ids.contains(&"old-04".to_string()), "{name}");
        assert_eq!(ids.first().map(String::as_str), Some("two"), "{name}");
        assert_eq!(ids.len(), 30, "{name}");
        // Prefix lookup.
        let found = all_pages(
            &store,
            ListQuery {
                viewer: bob,
                id_prefix: Some("old-1".into()),
                limit: 100,
                ..Default::default()
            },
        );
        assert_eq!(found.len(), 10, "{name}");
    }
}

#[test]
fn one_pending_request_per_requester_and_entitlement_under_parallel_inserts() {
    for (name, store, _keep) in stores() {
        let store = Arc::new(store);
        let now = Utc::now();
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let (r, t) = request(&format!("dup-{i}"), "u1", "db", now);
                    barrier.wait();
                    store.insert(&r, t).map(|_| r.id().to_string())
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "{name}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                match e {
                    StoreError::Domain(DomainError::DuplicatePending(ent, id)) => {
                        assert_eq!(ent, "db");
                        assert_eq!(id, winners[0], "{name}");
                    }
                    other => panic!("{name}: {other}"),
                }
            }
        }
        // Another entitlement, or after the first is decided: fine.
        let (r, t) = request("web-1", "u1", "web", now);
        store.insert(&r, t).unwrap();
        approve(&store, winners[0], &approver(), now);
        let (r, t) = request("again", "u1", "db", now);
        store.insert(&r, t).unwrap();
        assert!(store.verify_audit().unwrap().ok, "{name}");
    }
}

#[test]
fn insert_then_update_is_one_transaction() {
    for (name, store, _keep) in stores() {
        let now = Utc::now();
        let (g, t) = request("grant", "u1", "db", now);
        store.insert(&g, t).unwrap();
        let (mut ext, t) = request("ext", "u1", "web", now);
        ext = stored_as(ext, |s| {
            s.kind = jit_core::RequestKind::Extension {
                grant_id: "grant".into(),
            }
        });
        let before = store.last_seq().unwrap();
        // The second half fails: the inserted request is gone too.
        let err = store
            .insert_then_update(&ext, t.clone(), "grant", |_, g| {
                Ok((
                    vec![],
                    vec![g.request.lapse(now + chrono::Duration::days(1))?.into()],
                ))
            })
            .map(|_| ());
        assert!(err.is_ok(), "{name}: lapse of a pending request is legal");
        assert!(store.get("ext").unwrap().is_some(), "{name}");
        let (mut ext2, t2) = request("ext2", "u1", "web", now);
        ext2 = stored_as(ext2, |s| {
            s.kind = jit_core::RequestKind::Extension {
                grant_id: "grant".into(),
            }
        });
        let after_first = store.last_seq().unwrap();
        assert!(after_first > before);
        let err = store
            .insert_then_update(&ext2, t2, "grant", |_, g| {
                // Already lapsed: illegal.
                Ok((vec![], vec![g.request.lapse(now)?.into()]))
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::Domain(_)), "{name}: {err}");
        assert!(store.get("ext2").unwrap().is_none(), "{name}");
        assert_eq!(store.last_seq().unwrap(), after_first, "{name}");
    }
}

#[test]
fn audit_visible_filters_in_sql() {
    for (name, store, _keep) in stores() {
        let now = Utc::now();
        for (id, user, ent) in [("a", "u1", "db"), ("b", "u2", "other"), ("c", "u3", "web")] {
            let (r, t) = request(id, user, ent, now);
            store.insert(&r, t).unwrap();
        }
        let p = policy();
        let bob = Viewer::of(&approver(), &p);
        let (rows, cursor) = store.audit_visible(&bob, 0, None, 100).unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, vec!["a", "c"], "{name}");
        assert_eq!(cursor, 3, "{name}");
        let u2 = Viewer::of(&Principal::new("u2", "x"), &p);
        let (rows, _) = store.audit_visible(&u2, 0, Some(2), 100).unwrap();
        assert_eq!(rows.len(), 1, "{name}");
        let (rows, cursor) = store.audit_visible(&u2, 2, None, 100).unwrap();
        assert!(rows.is_empty() && cursor == 3, "{name}");
    }
}

/// A database written by the schema before SQL-side lists (versions 1–3:
/// base, outbox, `actor_client`, as released) opens, migrates, and keeps
/// its meaning: votes and open reviews become rows and columns, the oldest
/// of duplicate pending requests keeps the pending slot, the audit chain
/// (with its `actor_client`) still verifies, outbox rows stay due.
#[test]
fn sqlite_database_of_schema_3_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    let now = Utc::now();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        for m in &SQLITE_MIGRATIONS[..3] {
            c.execute_batch(m).unwrap();
        }
        c.pragma_update(None, "user_version", 3).unwrap();
        // One audit row and its outbox row, as the old schema wrote them.
        let mut rec = AuditRecord {
            seq: 1,
            at: now,
            event: EventKind::RequestCreated,
            request_id: "voted".into(),
            entitlement_id: "db".into(),
            requester_id: "u2".into(),
            actor: "pipeline-bot".into(),
            actor_client: Some("jit-pipeline".into()),
            reason: None,
            from_status: None,
            to_status: Some("pending".into()),
            prev_hash: GENESIS.into(),
            hash: String::new(),
        };
        rec.hash = rec.compute_hash();
        c.execute(
            "INSERT INTO audit (seq, at, event, request_id, entitlement_id, requester_id, actor, reason, from_status, to_status, prev_hash, hash, actor_client)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL, ?8, ?9, ?10, ?11)",
            rusqlite::params![
                rec.seq,
                ts(rec.at),
                rec.event.as_str(),
                rec.request_id,
                rec.entitlement_id,
                rec.requester_id,
                rec.actor,
                rec.to_status,
                rec.prev_hash,
                rec.hash,
                rec.actor_client
            ],
        )
        .unwrap();
        let (r, _) = request("voted", "u2", "db", now);
        let ev = WebhookEvent {
            id: "ev-1".into(),
            record: rec.clone(),
            request: r,
        };
        c.execute(
            "INSERT INTO outbox (endpoint, event_id, audit_seq, payload, created_at) VALUES ('chat', 'ev-1', 1, ?1, ?2)",
            rusqlite::params![serde_json::to_string(&ev).unwrap(), ts(now)],
        )
        .unwrap();
        let put = |id: &str, user: &str, at: DateTime<Utc>, voted: bool, review: bool| {
            let (mut r, _) = request(id, user, "db", at);
            if voted {
                r = stored_as(r, |s| {
                    s.votes.push(jit_core::model::Vote {
                        approver_id: "u-bob".into(),
                        approver_username: "bob".into(),
                        decision: jit_core::Decision::Approve,
                        comment: None,
                        duration_secs: None,
                        at,
                    })
                });
            }
            if review {
                r = stored_as(r, |s| {
                    s.status = Status::Active;
                    s.review_required = true;
                });
            }
            c.execute(
                "INSERT INTO requests (id, entitlement_id, requester_id, status, target, extends, created_at, pending_until, body, grant_state)
                 VALUES (?1, 'db', ?2, ?3, ?4, NULL, ?5, ?6, ?7, ?8)",
                rusqlite::params![
                    id,
                    user,
                    r.status().as_str(),
                    target_key(r.target()),
                    ts(r.created_at()),
                    ts(r.pending_until()),
                    serde_json::to_string(&r).unwrap(),
                    serde_json::to_string(&GrantState::default()).unwrap()
                ],
            )
            .unwrap();
        };
        put(
            "dup-old",
            "u1",
            now - chrono::Duration::seconds(10),
            false,
            false,
        );
        put("dup-new", "u1", now, false, false);
        put("voted", "u2", now, true, false);
        put("review", "u3", now, false, true);
    }
    let store = Store::open(&path).unwrap();
    let s = store.sync();
    let v = s.verify_audit().unwrap();
    assert!(v.ok && v.rows == 1, "{v:?}");
    assert_eq!(
        s.audit_after(0, 10).unwrap()[0].actor_client.as_deref(),
        Some("jit-pipeline")
    );
    match s
        .outbox_claim("chat", now, now + chrono::Duration::seconds(15))
        .unwrap()
    {
        Claim::Item(i) => assert_eq!(i.event.id, "ev-1"),
        other => panic!("{other:?}"),
    }
    let bob = Viewer::of(&approver(), &policy());
    let ids = all_pages(
        s,
        ListQuery {
            viewer: bob,
            to_review: true,
            limit: 10,
            ..Default::default()
        },
    );
    assert_eq!(ids, vec!["review", "dup-new", "dup-old"]);
    // The slot stays with the oldest: a new request is refused naming it,
    // and the newer duplicate can still be decided.
    let (r, t) = request("third", "u1", "db", now);
    match s.insert(&r, t).unwrap_err() {
        StoreError::Domain(DomainError::DuplicatePending(_, id)) => assert_eq!(id, "dup-old"),
        other => panic!("{other}"),
    }
    approve(s, "dup-new", &approver(), now);
    approve(s, "dup-old", &approver(), now);
    let (r, t) = request("fourth", "u1", "db", now);
    s.insert(&r, t).unwrap();
    // New rows chain onto the old one.
    assert!(s.verify_audit().unwrap().ok);
}

/// The webhook outbox on both engines: rows written with their audit row
/// (same transaction), handed out oldest first under a lease, one at a
/// time per endpoint, backed off, delivered, given up, pruned; a refused
/// write leaves no outbox row; `actor_client` is kept on audit rows.
#[test]
fn outbox_and_actor_client_on_both_engines() {
    for (name, store, _keep) in stores() {
        let now = Utc::now();
        let router: OutboxRouter = Arc::new(|rec: &AuditRecord| {
            let mut v = vec!["all".to_string()];
            if rec.entitlement_id == "web" {
                v.push("web-only".into());
            }
            v
        });
        store.set_outbox_router(Some(router));
        let (mut r, t) = request("o1", "u-bot", "db", now);
        r = stored_as(r, |s| {
            s.requester_client = Some("jit-pipeline".into());
            s.requester_username = "u-bot-name".into();
        });
        store.insert(&r, t).unwrap();
        let (r2, t2) = request("o2", "u2", "web", now);
        store.insert(&r2, t2).unwrap();
        // Refused by the unique index: neither audit nor outbox row.
        let (dup, td) = request("o3", "u2", "web", now);
        assert!(store.insert(&dup, td).is_err(), "{name}");
        let recs = store.audit_after(0, 10).unwrap();
        assert_eq!(recs.len(), 2, "{name}");
        assert_eq!(
            recs[0].actor_client.as_deref(),
            Some("jit-pipeline"),
            "{name}"
        );
        assert_eq!(recs[1].actor_client, None, "{name}");
        assert!(store.verify_audit().unwrap().ok, "{name}");
        let all = store.outbox_rows("all").unwrap();
        assert_eq!(
            all.iter().map(|r| r.audit_seq).collect::<Vec<_>>(),
            vec![1, 2],
            "{name}"
        );
        assert_eq!(store.outbox_rows("web-only").unwrap().len(), 1, "{name}");
        let lease = now + chrono::Duration::seconds(15);
        let Claim::Item(first) = store.outbox_claim("all", now, lease).unwrap() else {
            panic!("{name}: nothing handed out");
        };
        assert_eq!(first.event.record.seq, 1, "{name}");
        assert_eq!(
            first.event.record.actor_client.as_deref(),
            Some("jit-pipeline")
        );
        // Leased: the next caller (another replica) waits, in order.
        match store.outbox_claim("all", now, lease).unwrap() {
            Claim::WaitUntil(t) => assert_eq!(t.timestamp(), lease.timestamp(), "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        let retry_at = now + chrono::Duration::seconds(2);
        store.outbox_retry(first.id, 1, retry_at, "503").unwrap();
        assert!(
            matches!(
                store.outbox_claim("all", now, lease).unwrap(),
                Claim::WaitUntil(_)
            ),
            "{name}"
        );
        let Claim::Item(again) = store.outbox_claim("all", retry_at, lease).unwrap() else {
            panic!("{name}: not handed out after backoff");
        };
        assert_eq!((again.id, again.attempts), (first.id, 1), "{name}");
        store.outbox_delivered(again.id, 2, retry_at).unwrap();
        let Claim::Item(second) = store.outbox_claim("all", retry_at, lease).unwrap() else {
            panic!("{name}: second row");
        };
        assert_eq!(second.event.record.seq, 2, "{name}");
        store
            .outbox_failed(second.id, 1, retry_at, "410 gone")
            .unwrap();
        assert!(
            matches!(
                store.outbox_claim("all", retry_at, lease).unwrap(),
                Claim::Idle
            ),
            "{name}"
        );
        let counts = store.outbox_counts().unwrap();
        assert!(
            counts.contains(&("all".into(), "delivered".into(), 1)),
            "{name}: {counts:?}"
        );
        assert!(
            counts.contains(&("all".into(), "failed".into(), 1)),
            "{name}: {counts:?}"
        );
        assert_eq!(
            store
                .outbox_abandon_unknown(&["all".into()], retry_at)
                .unwrap(),
            1,
            "{name}"
        );
        assert_eq!(
            store
                .outbox_prune(retry_at + chrono::Duration::seconds(1))
                .unwrap(),
            3,
            "{name}"
        );
        store.set_outbox_router(None);
    }
}

#[test]
fn to_review_in_sql_is_the_core_rule() {
    let t0 = Utc::now() - chrono::Duration::hours(1);
    let policy = policy();
    let mut carol = Principal::new("u-carol", "carol");
    carol.roles.insert("ap".into());
    let viewers = [approver(), carol, Principal::new("u-alice", "alice")];
    for (name, store, _keep) in stores() {
        // Every shape the rule distinguishes: pending (voted by bob or
        // not), decided, break-glass reviews open and closed, an
        // entitlement bob does not approve, bob's own request.
        let mut all = Vec::new();
        let shapes: [(&str, &str, Status, bool, bool); 9] = [
            ("u-alice", "db", Status::Pending, false, false),
            ("u-alice", "web", Status::Pending, false, false),
            ("u-alice", "other", Status::Pending, false, false),
            ("u-dave", "db", Status::Denied, false, false),
            ("u-dave", "web", Status::Active, true, false),
            ("u-erin", "web", Status::Active, true, true),
            ("u-bob", "db", Status::Pending, false, false),
            ("u-frank", "db", Status::Pending, false, false),
            ("u-gina", "two", Status::Pending, false, false),
        ];
        for (i, (user, ent, status, review, reviewed)) in shapes.into_iter().enumerate() {
            let (mut r, tr) = request(
                &format!("{name}-r{i}"),
                user,
                ent,
                t0 + chrono::Duration::seconds(i as i64),
            );
            r = stored_as(r, |s| {
                s.status = status;
                s.review_required = review;
                s.reviewed_at = reviewed.then_some(t0);
            });
            store.insert(&r, tr).unwrap();
            all.push(r.id().to_string());
        }
        // bob's vote approves frank's request (one approval needed): it
        // leaves every list.
        approve(&store, &format!("{name}-r7"), &approver(), t0);
        // bob's vote on gina's leaves it pending (two approvals needed):
        // out of bob's list, still in carol's.
        approve(&store, &format!("{name}-r8"), &approver(), t0);
        for p in &viewers {
            let q = ListQuery {
                viewer: Viewer::of(p, &policy),
                to_review: true,
                limit: 100,
                ..Default::default()
            };
            let mut sql = all_pages(&store, q);
            sql.sort();
            let mut core: Vec<String> = all
                .iter()
                .map(|id| store.get(id).unwrap().unwrap().request)
                .filter(|r| r.awaits_review_by(p, &policy))
                .map(|r| r.id().to_string())
                .collect();
            core.sort();
            assert_eq!(sql, core, "{name}: {}", p.username);
        }
    }
}

/// PostgreSQL: the webhook outbox's leases and outcomes do not take the
/// audit chain's advisory lock, so a replica delivering webhooks does not
/// queue behind another replica's request writes. A transaction of
/// "another replica" holds the audit lock while this store claims,
/// records the attempt and claims again; all of it must finish while the
/// lock is held (bounded wait; with the audit lock it would block until
/// the holder gives up after the bound).
#[test]
fn postgres_outbox_does_not_wait_for_the_audit_lock() {
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let store =
        Arc::new(SqlStore::new(Box::new(postgres::Postgres::open(&url, 4).unwrap())).unwrap());
    let router: OutboxRouter = Arc::new(|_: &AuditRecord| vec!["chat".to_string()]);
    store.set_outbox_router(Some(router));
    let now = Utc::now();
    let (r, t) = request("w1", "u1", "db", now);
    store.insert(&r, t).unwrap();

    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&postgres::AUDIT_LOCK])
            .unwrap();
        held_tx.send(()).unwrap();
        // Held until the claims are done, or 20 s at most.
        let finished = done_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .is_ok();
        tx.rollback().unwrap();
        finished
    });
    held_rx.recv().unwrap();
    let (s, done) = (store.clone(), done_tx);
    let worker = std::thread::spawn(move || {
        let lease = now + chrono::Duration::seconds(15);
        let Claim::Item(item) = s.outbox_claim("chat", now, lease).unwrap() else {
            panic!("nothing handed out");
        };
        assert!(matches!(
            s.outbox_claim("chat", now, lease).unwrap(),
            Claim::WaitUntil(_)
        ));
        s.outbox_delivered(item.id, 1, now).unwrap();
        assert!(matches!(
            s.outbox_claim("chat", now, lease).unwrap(),
            Claim::Idle
        ));
        let _ = done.send(());
    });
    assert!(
        holder.join().unwrap(),
        "the outbox waited for the audit chain's lock"
    );
    worker.join().unwrap();
    drop(store);
}

/// Runs `openssl` with `args` in `dir`; panics with its output on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PostgreSQL over TLS: a throwaway cluster with `ssl = on` and a server
/// certificate (for IP 127.0.0.1) from a CA made here with the openssl
/// command. `verify-full` with that CA connects, migrates and is
/// encrypted (the server's `pg_stat_ssl`); another CA, or a host name the
/// certificate does not name, is refused; `verify-ca` accepts the other
/// name; `require` encrypts without checking; no `sslmode` stays plain.
#[test]
fn postgres_over_tls_checks_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let days = ["-days", "2"];
    for (key, crt, cn) in [
        ("ca.key", "ca.crt", "/CN=jit test CA"),
        ("other.key", "other.crt", "/CN=another CA"),
    ] {
        openssl(
            d,
            &[
                &[
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-subj", cn,
                ][..],
                &days[..],
            ]
            .concat(),
        );
    }
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=jit test database",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-extfile",
                "ext.cnf",
            ][..],
            &days[..],
        ]
        .concat(),
    );
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    let cluster = jit_testkit::postgres::start_with(
        &std::env::temp_dir().join("jit-test-postgres"),
        0,
        false,
        false,
        Some((&read("server.crt"), &read("server.key"))),
    )
    .expect("a PostgreSQL cluster with ssl=on");
    let ca = d.join("ca.crt").display().to_string();
    let other = d.join("other.crt").display().to_string();
    let at = |host: &str, query: &str| {
        format!(
            "postgres://postgres@{host}:{}/postgres{query}",
            cluster.port
        )
    };
    // How a connection of `url` is carried, per the server.
    let transport = |url: &str| -> Result<String, String> {
        let (u, _, tls) = pg_tls::parse(url).map_err(|e| e.to_string())?;
        let mut config: ::postgres::Config = u.parse().unwrap();
        config.connect_timeout(std::time::Duration::from_secs(10));
        let mut c = tls.connect(&config).map_err(|e| format!("{e:?}"))?;
        let row = c
            .query_one("SELECT CASE WHEN ssl THEN 'tls' ELSE 'plain' END FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .map_err(|e| e.to_string())?;
        Ok(row.get(0))
    };
    let full = at(
        "127.0.0.1",
        &format!("?sslmode=verify-full&sslrootcert={ca}"),
    );
    assert_eq!(transport(&full).as_deref(), Ok("tls"));
    // The whole store over it: pool, migrations, LISTEN connection.
    let store = SqlStore::new(Box::new(postgres::Postgres::open(&full, 2).unwrap())).unwrap();
    let (r, t) = request("tls-1", "u1", "db", Utc::now());
    store.insert(&r, t).unwrap();
    assert!(store.verify_audit().unwrap().ok);
    let rows = store
        .raw_writer()
        .unwrap()
        .query("SELECT CASE WHEN ssl THEN 'tls' ELSE 'plain' END FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .unwrap();
    assert_eq!(rows[0][0].text().unwrap(), "tls");
    drop(store);

    let refused = transport(&at(
        "127.0.0.1",
        &format!("?sslmode=verify-full&sslrootcert={other}"),
    ));
    assert!(refused.is_err(), "a certificate of another CA was accepted");
    let wrong_name = at(
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={ca}"),
    );
    assert!(
        transport(&wrong_name).is_err(),
        "a certificate not naming the host was accepted"
    );
    assert_eq!(
        transport(&at(
            "localhost",
            &format!("?sslmode=verify-ca&sslrootcert={ca}")
        ))
        .as_deref(),
        Ok("tls")
    );
    assert!(transport(&at(
        "localhost",
        &format!("?sslmode=verify-ca&sslrootcert={other}")
    ))
    .is_err());
    assert_eq!(
        transport(&at("127.0.0.1", "?sslmode=require")).as_deref(),
        Ok("tls")
    );
    assert_eq!(transport(&at("127.0.0.1", "")).as_deref(), Ok("plain"));
}

/// PostgreSQL: the `LISTEN` thread waits (up to 1 s) between idle ticks
/// instead of spinning. Five idle ticks (`f(None)`) are collected; ticks
/// 2 to 5 span at least three 1-s waits (a lower bound only: load can make
/// it longer, never shorter). A listener whose timer stopped restarting
/// delivered them microseconds apart.
#[test]
fn postgres_listener_waits_between_idle_ticks() {
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let store = SqlStore::new(Box::new(postgres::Postgres::open(&url, 2).unwrap())).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let ticks = std::sync::atomic::AtomicUsize::new(0);
    assert!(store.follow(Box::new(move |announced| {
        if announced.is_none() {
            let _ = tx.send(std::time::Instant::now());
            return ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 4;
        }
        true
    })));
    let at: Vec<std::time::Instant> = (0..5)
        .map(|i| {
            rx.recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("idle tick {i} of the listener"))
        })
        .collect();
    let span = at[4] - at[1];
    assert!(
        span >= std::time::Duration::from_millis(2900),
        "three idle waits took {span:?}: the listener spins"
    );
}

/// One pending extension per grant, held by a unique index on both
/// engines: a second is refused naming the first; extensions of another
/// grant and the requester's access requests are not in its way.
#[test]
fn one_pending_extension_per_grant_on_both_engines() {
    for (name, store, _keep) in stores() {
        let now = Utc::now();
        let (r, t) = request("g1", "u1", "db", now);
        store.insert(&r, t).unwrap();
        let p = policy();
        let bob = approver();
        store
            .update("g1", |s| {
                let e = p.entitlement("db").unwrap();
                let mut out: Vec<Entry> = s
                    .request
                    .vote(e, &bob, jit_core::Decision::Approve, None, None, now)?
                    .into_iter()
                    .map(Entry::from)
                    .collect();
                out.push(s.request.activate(now)?.into());
                Ok(out)
            })
            .unwrap();
        let grant = store.get("g1").unwrap().unwrap().request;
        let u1 = Principal::new("u1", "u1-name");
        let ext = |id: &str| {
            AccessRequest::create_extension(
                id.into(),
                &grant,
                Some(30),
                "more time please",
                &u1,
                &p,
                now,
            )
            .unwrap()
        };
        let (x1, t1) = ext("x1");
        store.insert(&x1, t1).unwrap();
        let (x2, t2) = ext("x2");
        match store.insert(&x2, t2).unwrap_err() {
            StoreError::Domain(DomainError::DuplicatePendingExtension { grant_id, existing }) => {
                assert_eq!(
                    (grant_id.as_str(), existing.as_str()),
                    ("g1", "x1"),
                    "{name}"
                )
            }
            other => panic!("{name}: {other}"),
        }
        // An access request of the same requester and entitlement is not
        // blocked by the extension's slot (nor the other way round).
        let (a, ta) = request("a1", "u1", "db", now);
        store.insert(&a, ta).unwrap();
        // Decided, the extension gives its slot up.
        approve(&store, "x1", &approver(), now);
        let (x3, t3) = ext("x3");
        store.insert(&x3, t3).unwrap();
    }
}

/// Counts the statements sent to a [`Database`] (each one a round trip on
/// PostgreSQL).
struct Counting {
    inner: Box<dyn Database>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
}

struct CountingConn<'a> {
    inner: Box<dyn Conn + 'a>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
}

impl Conn for CountingConn<'_> {
    fn exec(&mut self, sql: &str, params: &[db::P]) -> Result<u64, StoreError> {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.exec(sql, params)
    }
    fn query(&mut self, sql: &str, params: &[db::P]) -> Result<Vec<Row>, StoreError> {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.query(sql, params)
    }
    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.batch(sql)
    }
}

impl Database for Counting {
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }
    fn reader(&self) -> Result<Box<dyn Conn + '_>, StoreError> {
        Ok(Box::new(CountingConn {
            inner: self.inner.reader()?,
            sent: self.sent.clone(),
        }))
    }
    fn writer(&self) -> Result<Box<dyn Conn + '_>, StoreError> {
        Ok(Box::new(CountingConn {
            inner: self.inner.writer()?,
            sent: self.sent.clone(),
        }))
    }
}

/// The scheduler's store work for a whole batch is a fixed number of
/// statements, not some per request: its claims and their release, the
/// reads of a tick, and (PostgreSQL, where each statement is a round trip)
/// a group commit. Results as before: each change saved with its audit
/// rows in one chain, refused ones untouched, new votes stored as rows.
#[test]
fn scheduler_batches_are_a_few_statements_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let engines: Vec<(&str, Box<dyn Database>)> = vec![
        (
            "sqlite",
            Box::new(db::Sqlite::open(&dir.path().join("s.sqlite"), 4).unwrap()),
        ),
        (
            "postgres",
            Box::new(postgres::Postgres::open(&url, 4).unwrap()),
        ),
    ];
    for (engine, inner) in engines {
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let store = SqlStore::new(Box::new(Counting {
            inner,
            sent: sent.clone(),
        }))
        .unwrap();
        let now = Utc::now();
        let n = 40;
        let ids: Vec<String> = (0..n).map(|i| format!("b{i:03}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let (r, t) = request(id, &format!("u{i}"), "db", now);
            store.insert(&r, t).unwrap();
        }
        let count = |f: &mut dyn FnMut()| {
            sent.store(0, std::sync::atomic::Ordering::SeqCst);
            f();
            sent.load(std::sync::atomic::Ordering::SeqCst)
        };

        let mut got = vec![];
        let claims = count(&mut || {
            got = store
                .claim(&ids, "r1", now, chrono::Duration::seconds(10))
                .unwrap()
        });
        assert_eq!(got, ids, "{engine}");
        assert!(
            claims <= 3,
            "{engine}: claiming {n} took {claims} statements"
        );
        let mut read = 0;
        let reads = count(&mut || read = store.get_many(&ids).unwrap().len());
        assert_eq!(read, n, "{engine}");
        assert!(reads <= 1, "{engine}: reading {n} took {reads} statements");
        let mut views = vec![];
        let reads = count(&mut || views = store.work_views(&ids).unwrap());
        assert_eq!(views.len(), n, "{engine}");
        assert!(views.iter().all(|v| v.others_own.is_none()), "{engine}");
        assert!(reads <= 2, "{engine}: views of {n} took {reads} statements");
        let releases = count(&mut || store.release_many(&ids, "r1").unwrap());
        assert!(
            releases <= 3,
            "{engine}: releasing {n} took {releases} statements"
        );
        let again = store
            .claim(&ids, "r2", now, chrono::Duration::seconds(10))
            .unwrap();
        assert_eq!(again.len(), n, "{engine}: all released");

        // A group commit: every other request is approved (a vote row, an
        // audit row, its pending slot given up); the rest are refused
        // (nothing written).
        let p = policy();
        let who = approver();
        let mut result = (vec![], vec![]);
        let writes = count(&mut || {
            let (p, who) = (p.clone(), who.clone());
            result = store
                .update_each(&ids, move |s| {
                    let i: usize = s.request.id()[1..].parse().unwrap();
                    if i % 2 == 1 {
                        return Err(DomainError::NotFound);
                    }
                    s.grant.last_error = Some(format!("note {i}"));
                    let e = p.entitlement(s.request.entitlement_id()).unwrap();
                    Ok(s.request
                        .vote(e, &who, jit_core::Decision::Approve, None, None, now)?
                        .into_iter()
                        .map(Entry::from)
                        .collect())
                })
                .unwrap()
        });
        let (changed, recs) = result;
        let even: Vec<String> = ids.iter().step_by(2).cloned().collect();
        assert_eq!(changed, even, "{engine}");
        assert_eq!(recs.len(), n / 2, "{engine}");
        if engine == "postgres" {
            // `BEGIN` with the chain's lock; the rows locked and read with
            // the chain's head; the requests, their audit rows and the
            // `NOTIFY` in one statement; the new votes; `COMMIT`.
            assert!(
                writes <= 5,
                "{engine}: a group commit of {} took {writes} statements",
                n / 2
            );
        }
        assert!(store.verify_audit().unwrap().ok, "{engine}");
        for (i, id) in ids.iter().enumerate() {
            let s = store.get(id).unwrap().unwrap();
            let mut c = store.raw_writer().unwrap();
            let votes = c
                .query(
                    "SELECT COUNT(*) FROM request_votes WHERE request_id = ?",
                    &[db::P::from(id.as_str())],
                )
                .unwrap()[0][0]
                .int()
                .unwrap();
            drop(c);
            let (next, t) = request(&format!("n{i:03}"), &format!("u{i}"), "db", now);
            let second = store.insert(&next, t);
            if i % 2 == 0 {
                assert_eq!(s.grant.last_error, Some(format!("note {i}")), "{engine}");
                assert_eq!(s.request.status(), Status::Approved, "{engine}");
                assert_eq!(s.request.votes().len(), 1, "{engine}");
                assert_eq!(votes, 1, "{engine}: {id}'s vote is a row");
                second
                    .unwrap_or_else(|e| panic!("{engine}: {id} still holds its pending slot: {e}"));
            } else {
                assert_eq!(s.grant.last_error, None, "{engine}");
                assert_eq!(s.request.status(), Status::Pending, "{engine}");
                assert_eq!(votes, 0, "{engine}");
                assert!(second.is_err(), "{engine}: {id} is still pending");
            }
        }
        // Keycloak answers again: every retry timer cleared at once.
        store
            .update_each(&ids, move |s| {
                s.grant.next_attempt_at = Some(now + chrono::Duration::seconds(30));
                Ok(vec![])
            })
            .unwrap();
        let mut cleared = 0;
        let writes = count(&mut || cleared = store.clear_backoff().unwrap());
        assert_eq!(cleared, n, "{engine}");
        if engine == "postgres" {
            assert!(
                writes <= 8,
                "{engine}: clearing {n} timers took {writes} statements"
            );
        }
        assert!(
            store
                .due(now)
                .unwrap()
                .next_due
                .is_none_or(|t| t > now + chrono::Duration::seconds(60)),
            "{engine}: no timer left"
        );
        assert!(
            store
                .get_many(&ids)
                .unwrap()
                .iter()
                .all(|s| s.grant.next_attempt_at.is_none()),
            "{engine}"
        );
        // The audit rows of the batch follow one another in the chain.
        let all = store.audit_after(0, 10_000).unwrap();
        let at = all.iter().position(|r| r.seq == recs[0].seq).unwrap();
        let key = |r: &AuditRecord| (r.seq, r.request_id.clone(), r.hash.clone());
        let stored: Vec<_> = all[at..at + recs.len()].iter().map(key).collect();
        assert_eq!(stored, recs.iter().map(key).collect::<Vec<_>>(), "{engine}");
    }
}

/// Claims: one replica at a time; its own claim renews; an expired one
/// passes to another; a release gives back only the owner's claims.
#[test]
fn claims_pass_over_on_expiry_and_release_only_the_owners_on_both_engines() {
    for (engine, store, _keep) in stores() {
        let now = Utc::now();
        for id in ["ca", "cb", "cc"] {
            let (r, t) = request(id, &format!("u-{id}"), "db", now);
            store.insert(&r, t).unwrap();
        }
        let lease = chrono::Duration::seconds(10);
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            store.claim(&ids(&["cb", "ca"]), "r1", now, lease).unwrap(),
            ids(&["cb", "ca"]),
            "{engine}"
        );
        assert!(
            store
                .claim(&ids(&["ca", "cb"]), "r2", now, lease)
                .unwrap()
                .is_empty(),
            "{engine}"
        );
        assert_eq!(
            store.claim(&ids(&["ca"]), "r1", now, lease).unwrap(),
            ids(&["ca"]),
            "{engine}: renewed"
        );
        // r1 died: past its lease, r2 takes over.
        let later = now + chrono::Duration::seconds(11);
        assert_eq!(
            store
                .claim(&ids(&["cb", "cc"]), "r2", later, lease)
                .unwrap(),
            ids(&["cb", "cc"]),
            "{engine}"
        );
        // r1's release gives back its own claim only.
        store.release_many(&ids(&["ca", "cb", "cc"]), "r1").unwrap();
        assert_eq!(
            store
                .claim(&ids(&["ca", "cb", "cc"]), "r3", later, lease)
                .unwrap(),
            ids(&["ca"]),
            "{engine}"
        );
        store.release("cb", "r2").unwrap();
        assert_eq!(
            store
                .claim(&ids(&["cb", "cc"]), "r3", later, lease)
                .unwrap(),
            ids(&["cb"]),
            "{engine}"
        );
    }
}

/// On PostgreSQL, claims and their release take no audit-chain lock (they
/// write no audit row): they go on while another replica's writer holds it
/// (before, each queued behind every writer and its disk sync). A row
/// another transaction holds is skipped, not waited for.
#[test]
fn postgres_claims_wait_neither_for_the_audit_lock_nor_for_a_locked_row() {
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let store =
        Arc::new(SqlStore::new(Box::new(postgres::Postgres::open(&url, 4).unwrap())).unwrap());
    let now = Utc::now();
    for id in ["la", "lb", "lc"] {
        let (r, t) = request(id, &format!("u-{id}"), "db", now);
        store.insert(&r, t).unwrap();
    }
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&postgres::AUDIT_LOCK])
            .unwrap();
        tx.execute("SELECT id FROM requests WHERE id = 'lc' FOR UPDATE", &[])
            .unwrap();
        held_tx.send(()).unwrap();
        // Held until the claims are done, or 20 s at most.
        let finished = done_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .is_ok();
        tx.rollback().unwrap();
        finished
    });
    held_rx.recv().unwrap();
    let (s, done) = (store.clone(), done_tx);
    let worker = std::thread::spawn(move || {
        let lease = chrono::Duration::seconds(10);
        let ids: Vec<String> = ["la", "lb", "lc"].iter().map(|s| s.to_string()).collect();
        let got = s.claim(&ids, "r1", now, lease).unwrap();
        s.release_many(&got, "r1").unwrap();
        let again = s.claim(&ids[..1], "r2", now, lease).unwrap();
        let _ = done.send(());
        (got, again)
    });
    assert!(
        holder.join().unwrap(),
        "claims waited for the audit chain's lock or a locked row"
    );
    let (got, again) = worker.join().unwrap();
    assert_eq!(
        got,
        vec!["la".to_string(), "lb".to_string()],
        "the locked row is skipped"
    );
    assert_eq!(again, vec!["la".to_string()], "released");
    drop(store);
}

/// `jitd check-policy` reads jitd's database as it is: a database of an
/// older schema is not migrated (its version and file stay as they were)
/// but refused with the migration that is due; an up-to-date one opens
/// read-only; a file that does not exist is not created.
#[test]
fn a_database_opened_as_is_is_never_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        for m in &SQLITE_MIGRATIONS[..3] {
            c.execute_batch(m).unwrap();
        }
        c.pragma_update(None, "user_version", 3).unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let e = Store::open_spec_as_is(path.to_str().unwrap())
        .err()
        .expect("an old schema is refused");
    assert!(
        matches!(e, StoreError::NeedsMigration { next: 4, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("needs migration 4"), "{e}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is unchanged"
    );
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 3);
    drop(c);

    // Up to date: opens, and reads.
    let current = dir.path().join("current.sqlite");
    drop(Store::open(&current).unwrap());
    let s = Store::open_spec_as_is(current.to_str().unwrap()).unwrap();
    assert!(s.sync().open_requests().unwrap().is_empty());

    let missing = dir.path().join("missing.sqlite");
    assert!(Store::open_spec_as_is(missing.to_str().unwrap()).is_err());
    assert!(!missing.exists(), "never created");
}

/// A PostgreSQL store dropped on one of the async runtime's threads (as at
/// jitd's shutdown, when the last handle goes with the server's state)
/// closes its connections without a panic ("Cannot start a runtime from
/// within a runtime": `postgres::Client` closes by blocking on its own
/// runtime).
#[test]
fn a_postgres_store_dropped_inside_the_async_runtime_closes_quietly() {
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Opened and used as jitd does (blocking work off the async threads).
    let store = SqlStore::new(Box::new(postgres::Postgres::open(&url, 4).unwrap())).unwrap();
    assert!(store.get("nothing-here").unwrap().is_none());
    let dropped = rt.block_on(async move {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(store)))
    });
    assert!(dropped.is_ok(), "dropping the store panicked");
}

/// A replica claims at most what it can start soon (`limit`), removals
/// first, and the replicas share the rest; a grant whose assignment (user
/// and target) has a removal due that is not this replica's live claim is
/// left alone, so one assignment's grant and removal never run on two
/// replicas at once.
#[test]
fn claim_due_takes_at_most_its_limit_removals_first_and_keeps_assignments_together_on_both_engines()
{
    for (engine, store, _keep) in stores() {
        let now = Utc::now();
        // Removals due: ra (user u-a), rb, rc; grants due: ga (u-a, the
        // same target as ra), gz.
        for (id, user) in [("ra", "u-a"), ("rb", "u-b"), ("rc", "u-c")] {
            let (r, t) = request(id, user, "db", now);
            store.insert(&r, t).unwrap();
            store
                .update(id, |s| {
                    let t = s.request.withdraw("test", Utc::now())?;
                    s.grant.owns_assignment = Some(true);
                    s.grant.removal_pending = true;
                    Ok(vec![t.into()])
                })
                .unwrap();
        }
        for (id, user) in [("ga", "u-a"), ("gz", "u-z")] {
            let (r, t) = request(id, user, "db", now);
            store.insert(&r, t).unwrap();
        }
        let lease = chrono::Duration::seconds(10);
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = ids(&["ga", "gz", "ra", "rb", "rc"]);
        assert!(
            store
                .claim_due(&all, "r1", now, lease, 0)
                .unwrap()
                .is_empty(),
            "{engine}: no room, no claim"
        );
        assert_eq!(
            store.claim_due(&all, "r1", now, lease, 2).unwrap(),
            ids(&["ra", "rb"]),
            "{engine}: two, removals first"
        );
        assert_eq!(
            store.claim_due(&all, "r2", now, lease, 10).unwrap(),
            ids(&["gz", "rc"]),
            "{engine}: the rest but ga, whose removal r1 holds"
        );
        assert_eq!(
            store.claim_due(&all, "r1", now, lease, 10).unwrap(),
            ids(&["ga", "ra", "rb"]),
            "{engine}: r1 holds ga's removal, so it may take ga (and renews its own)"
        );
        // r1 died: past its lease, r2 takes its removals over — and only
        // then the grant of the same assignment.
        let later = now + chrono::Duration::seconds(11);
        store.release_many(&ids(&["gz", "rc"]), "r2").unwrap();
        assert_eq!(
            store.claim_due(&all, "r2", later, lease, 10).unwrap(),
            ids(&["gz", "ra", "rb", "rc"]),
            "{engine}: ga waits while its removal is nobody's live claim"
        );
        assert_eq!(
            store.claim_due(&all, "r2", later, lease, 10).unwrap(),
            all,
            "{engine}"
        );
    }
}

/// The scheduler's last write of an item gives back its claim in the same
/// statement: only the named owner's claim, only on the requests named,
/// only where the change is written (a refused change keeps its claim).
#[test]
fn a_last_write_gives_back_only_its_owners_claim_on_both_engines() {
    for (engine, store, _keep) in stores() {
        let now = Utc::now();
        for id in ["la", "lb", "lc", "ld"] {
            let (r, t) = request(id, &format!("u-{id}"), "db", now);
            store.insert(&r, t).unwrap();
        }
        let lease = chrono::Duration::seconds(10);
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            store
                .claim(&ids(&["la", "lb", "lc"]), "r1", now, lease)
                .unwrap(),
            ids(&["la", "lb", "lc"]),
            "{engine}"
        );
        assert_eq!(
            store.claim(&ids(&["ld"]), "r2", now, lease).unwrap(),
            ids(&["ld"]),
            "{engine}"
        );
        // la: written and released; lb: refused (keeps its claim); lc:
        // written but not named for release; ld: r2's claim.
        let release: HashSet<String> = ["la", "lb", "ld"].iter().map(|s| s.to_string()).collect();
        let (changed, _) = store
            .update_each_releasing(
                &ids(&["la", "lb", "lc", "ld"]),
                Some(("r1", &release)),
                |s| {
                    if s.request.id() == "lb" {
                        return Err(DomainError::NotFound);
                    }
                    s.grant.attempts += 1;
                    Ok(vec![])
                },
            )
            .unwrap();
        assert_eq!(changed.len(), 3, "{engine}: {changed:?}");
        assert_eq!(
            store
                .claim(&ids(&["la", "lb", "lc", "ld"]), "r3", now, lease)
                .unwrap(),
            ids(&["la"]),
            "{engine}: only la's claim was given back"
        );
        assert_eq!(
            store.get("lc").unwrap().unwrap().grant.attempts,
            1,
            "{engine}: the change itself is written"
        );
    }
}

/// A set of ids in a statement is read through the primary key on
/// PostgreSQL, also where the planner would rather scan a table of a few
/// thousand rows for the 100 ids it guesses a set-returning function gives
/// (it did for every group commit of two requests).
#[test]
fn postgres_reads_a_set_of_ids_through_the_index() {
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let store = SqlStore::new(Box::new(postgres::Postgres::open(&url, 2).unwrap())).unwrap();
    let mut c = store.raw_writer().unwrap();
    c.batch(
        "INSERT INTO requests (id, entitlement_id, requester_id, status, target, created_at, pending_until, body, grant_state)
         SELECT 'seq-' || i, 'db', 'u' || i, 'active', 't', '2026', '2026', repeat('x', 600), '{}'
         FROM generate_series(1, 4000) AS i;
         ANALYZE requests;",
    )
    .unwrap();
    let ids = ids_json(&["seq-1".to_string(), "seq-2".to_string()]);
    let plans: Vec<String> = [
        format!(
            "EXPLAIN SELECT body, grant_state FROM requests WHERE id{} ORDER BY id FOR UPDATE",
            store.id_list()
        ),
        format!(
            "EXPLAIN UPDATE requests SET claimed_by = NULL WHERE id IN (SELECT id FROM requests WHERE id{} ORDER BY id FOR UPDATE)",
            store.id_list()
        ),
    ]
    .iter()
    .map(|sql| {
        c.query(sql, &[P::from(&ids)])
            .unwrap()
            .iter()
            .map(|r| r[0].text().unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    })
    .collect();
    for plan in plans {
        assert!(
            !plan.contains("Seq Scan on requests"),
            "a set of two ids scans the table:\n{plan}"
        );
    }
}

/// PostgreSQL announcements carry their origin: a store's listener tells
/// its own writes (its scheduler knows of them) from another replica's.
#[test]
fn postgres_announcements_say_whose_write_they_are() {
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let mine = SqlStore::new(Box::new(postgres::Postgres::open(&url, 2).unwrap())).unwrap();
    let other = SqlStore::new(Box::new(postgres::Postgres::open(&url, 2).unwrap())).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    assert!(mine.follow(Box::new(move |a| {
        if let Some(a) = a.filter(|a| a.seq > 0) {
            let _ = tx.lock().unwrap().send(a);
        }
        true
    })));
    // The listener is up once it has said "look again" (seq 0), which is
    // not forwarded; give it a write to see, then another from the other
    // store, and wait for each announcement (bounded).
    let next = |want_own: bool| -> db::Announced {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let a = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no announcement (own: {want_own})"));
            if a.own == want_own {
                return a;
            }
        }
    };
    let now = Utc::now();
    // Writes before the listener was up are not announced to it: write
    // until one is seen.
    let mut i = 0;
    let own = loop {
        i += 1;
        let (r, t) = request(&format!("an-{i}"), &format!("u-an-{i}"), "db", now);
        mine.insert(&r, t).unwrap();
        if let Ok(a) = rx.recv_timeout(std::time::Duration::from_secs(2)) {
            break a;
        }
        assert!(i < 15, "the listener never saw a write");
    };
    assert!(own.own, "{own:?}: this store's own write");
    let (r, t) = request("an-other", "u-an-other", "db", now);
    other.insert(&r, t).unwrap();
    let theirs = next(false);
    assert!(theirs.seq > own.seq, "{theirs:?} after {own:?}");
    assert_eq!(
        postgres::parse_announcement("17", "abc"),
        Some(db::Announced {
            seq: 17,
            own: false
        }),
        "a replica of an older version announces the number only"
    );
    assert_eq!(postgres::parse_announcement("x abc", "abc"), None);
}

/// On PostgreSQL a change of a request that touches no indexed column (a
/// claim, its release, the ownership decision) is written on the row's own
/// page, without new entries in the table's indexes (a heap-only tuple):
/// the table keeps room on each page (migration 3). Counted inside one
/// transaction (`pg_stat_get_xact_tuples_hot_updated`), so nothing depends
/// on when the statistics are flushed.
#[test]
fn postgres_claims_rewrite_a_request_on_its_own_page() {
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let store = SqlStore::new(Box::new(postgres::Postgres::open(&url, 2).unwrap())).unwrap();
    let mut c = store.raw_writer().unwrap();
    c.batch(
        "INSERT INTO requests (id, entitlement_id, requester_id, status, target, created_at, pending_until, body, grant_state)
         SELECT 'hot-' || lpad(i::text, 4, '0'), 'db', 'u' || i, 'active', 't', '2026', '2026', repeat('x', 600), '{}'
         FROM generate_series(1, 400) AS i;",
    )
    .unwrap();
    c.batch("BEGIN").unwrap();
    // Every fourth request (spread over all pages) is claimed.
    let changed = c
        .exec(
            "UPDATE requests SET claimed_by = 'r1', claim_until = '2027' WHERE id LIKE 'hot-%' AND right(id, 1) IN ('0', '4', '8')",
            &[],
        )
        .unwrap();
    let hot = c
        .query(
            "SELECT pg_stat_get_xact_tuples_hot_updated('requests'::regclass)",
            &[],
        )
        .unwrap()[0][0]
        .int()
        .unwrap();
    c.batch("ROLLBACK").unwrap();
    assert!(changed >= 100, "{changed} claimed");
    assert!(
        hot as u64 * 10 >= changed * 9,
        "only {hot} of {changed} claims were written on their own page"
    );
}

/// A replica that dies — its listener's connection ends with it, and with
/// it its liveness lock — has its claims taken over by another replica at
/// once, long before their lease lapses; while it lives, nobody takes
/// them. (The lease here is 10 minutes: only the liveness can explain a
/// takeover within the test's bounded wait.)
#[test]
fn postgres_a_dead_replicas_claims_are_taken_over_before_their_lease() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let open = || SqlStore::new(Box::new(postgres::Postgres::open(&url, 2).unwrap())).unwrap();
    let (survivor, dying) = (open(), open());
    let now = Utc::now();
    let (r, t) = request("x", "u-x", "db", now);
    survivor.insert(&r, t).unwrap();
    let ids = vec!["x".to_string()];
    let lease = chrono::Duration::minutes(10);
    // The survivor's "look again" signals (after it connects, and when it
    // finds a replica gone).
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    assert!(survivor.follow_alive(
        "survivor",
        Box::new(move |a| {
            if a.is_some_and(|a| a.seq == 0) {
                let _ = tx.lock().unwrap().send(());
            }
            true
        })
    ));
    let look_again = |what: &str| {
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no 'look again' from the survivor's listener: {what}"))
    };
    look_again("after it connected");
    // Dying: once `stop` is set its listener never returns (as a process
    // that is gone), so it cannot say it leaves; its connection is then
    // cut by the server (below), which drops its liveness lock.
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let (stuck_tx, stuck) = std::sync::mpsc::channel();
    let stuck_tx = std::sync::Mutex::new(stuck_tx);
    assert!(dying.follow_alive(
        "dying",
        Box::new(move |_| {
            if stopped.load(Ordering::SeqCst) {
                let _ = stuck_tx.lock().unwrap().send(());
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            true
        })
    ));
    // Listed (with its lock) within a bounded wait.
    let mut check = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let listed = |c: &mut ::postgres::Client, owner: &str| -> Option<bool> {
        c.query_opt(
            "SELECT gone_at IS NOT NULL FROM jit_replicas WHERE owner = $1",
            &[&owner],
        )
        .unwrap()
        .map(|r| r.get(0))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while listed(&mut check, "dying").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dying replica never registered"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(dying.claim_due(&ids, "dying", now, lease, 10).unwrap(), ids);
    // Alive: a look finds nobody gone, and its claim stays its own.
    assert_eq!(postgres::mark_gone(&mut check, "survivor").unwrap(), 0);
    assert!(survivor
        .claim_due(&ids, "survivor", now, lease, 10)
        .unwrap()
        .is_empty());
    // It dies: its listener stops at its next tick (≤ 1 s) and its
    // connection is cut (as the kernel closes a killed process's). The
    // survivor's listener finds its lock gone and says "look again"; its
    // claim then takes the work over.
    stop.store(true, Ordering::SeqCst);
    stuck
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the dying replica's listener stopped");
    let cut = check
        .query(
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2
                   AND classid = {} AND objid = (hashtext('dying') & 2147483647)::oid",
                postgres::LIVENESS_CLASS
            ),
            &[],
        )
        .unwrap();
    assert_eq!(cut.len(), 1, "the dying replica's listener connection");
    look_again("after the other replica died");
    assert_eq!(listed(&mut check, "dying"), Some(true));
    assert_eq!(
        survivor
            .claim_due(&ids, "survivor", now, lease, 10)
            .unwrap(),
        ids,
        "taken over before the lease"
    );
    // A replica that stops cleanly says so itself: listed as gone, and the
    // others told to look again at once (its claims are theirs to take).
    let leaving = open();
    let l_stop = Arc::new(AtomicBool::new(false));
    let flag = l_stop.clone();
    assert!(leaving.follow_alive("leaving", Box::new(move |_| !flag.load(Ordering::SeqCst))));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while listed(&mut check, "leaving").is_none() {
        assert!(std::time::Instant::now() < deadline, "never registered");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    while rx.try_recv().is_ok() {}
    l_stop.store(true, Ordering::SeqCst);
    look_again("after a replica left");
    assert_eq!(listed(&mut check, "leaving"), Some(true));
    drop(leaving);
}

/// Due work, the claim's check for a pending removal of the same
/// assignment, and the late-revoke candidates of `/metrics` are read
/// through their partial indexes on both engines, never by a scan of all
/// requests (most rows of a large store are in none of these states).
#[test]
fn due_work_is_read_through_partial_indexes_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let engines: Vec<(&str, Box<dyn Database>)> = vec![
        (
            "sqlite",
            Box::new(db::Sqlite::open(&dir.path().join("p.sqlite"), 2).unwrap()),
        ),
        (
            "postgres",
            Box::new(postgres::Postgres::open(&url, 2).unwrap()),
        ),
    ];
    for (engine, inner) in engines {
        let store = SqlStore::new(inner).unwrap();
        let mut c = store.raw_writer().unwrap();
        // 4,000 ended requests, a few in each due state.
        let (series, explain, scan) = match store.dialect() {
            Dialect::Postgres => (
                "generate_series(1, 4000) AS g(i)",
                "EXPLAIN",
                "Seq Scan on requests",
            ),
            Dialect::Sqlite => (
                "(WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 4000) SELECT i FROM g) AS g",
                "EXPLAIN QUERY PLAN",
                "SCAN requests",
            ),
        };
        c.batch(&format!(
            "INSERT INTO requests (id, entitlement_id, requester_id, status, target, created_at, pending_until, expires_at, body, grant_state, removal_pending)
             SELECT 'pi-' || i, 'db', 'u' || i,
                    CASE WHEN i % 500 = 0 THEN 'active' WHEN i % 500 = 1 THEN 'pending' WHEN i % 500 = 2 THEN 'approved' ELSE 'expired' END,
                    't', '2026', '2026', '2026', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx', '{{}}',
                    CASE WHEN i % 500 = 3 THEN 1 WHEN i % 500 = 4 THEN 2 ELSE 0 END
             FROM {series};
             ANALYZE;"
        ))
        .unwrap();
        let n = "2027";
        let list = match store.dialect() {
            Dialect::Sqlite => " IN (SELECT value FROM json_each(?))",
            Dialect::Postgres => " = ANY(ARRAY(SELECT jsonb_array_elements_text(?::text::jsonb)))",
        };
        let waiting = format!("SELECT id, requester_id, body FROM requests WHERE requester_id{list} AND status IN ('pending', 'approved') AND extends IS NULL ORDER BY id");
        let queries = [
            ("SELECT id FROM requests WHERE status='pending' AND pending_until <= ?", &["requests_lapse_due"][..]),
            ("SELECT id FROM requests WHERE status='active' AND expires_at <= ?", &["requests_expiry_due"]),
            ("SELECT id FROM requests WHERE status='approved' AND extends IS NULL AND (start_at IS NULL OR start_at <= ?) AND (next_attempt_at IS NULL OR next_attempt_at <= ?)", &[]),
            ("SELECT id FROM requests WHERE removal_pending=1 AND (next_attempt_at IS NULL OR next_attempt_at <= ?)", &["requests_removal_due"]),
            ("SELECT 1 FROM requests WHERE requester_id = ? AND target = ? AND removal_pending = 1", &["requests_removal_due"]),
            // The check of active grants against the disabled users.
            ("SELECT id, requester_id, body FROM requests WHERE status = 'active' AND extends IS NULL ORDER BY expires_at, id", &[]),
            ("SELECT 1 FROM requests WHERE status IN ('pending', 'approved') AND extends IS NULL LIMIT 1", &[]),
            (waiting.as_str(), &[]),
            ("SELECT body, grant_state FROM requests WHERE removal_pending = 1
             UNION ALL SELECT body, grant_state FROM requests WHERE removal_pending = 2
             UNION ALL SELECT body, grant_state FROM requests WHERE status = 'active' AND expires_at <= ? AND removal_pending = 0",
             &["requests_removal_due", "requests_removal_failed", "requests_expiry_due"]),
        ];
        for (sql, indexes) in queries {
            let params = vec![P::from(n); sql.matches('?').count()];
            let plan = c
                .query(&format!("{explain} {sql}"), &params)
                .unwrap()
                .iter()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.text().ok())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                !plan
                    .lines()
                    .any(|l| l.contains(scan) && !l.contains("USING")),
                "{engine}: a scan of all requests for\n{sql}\n{plan}"
            );
            for index in indexes {
                assert!(
                    plan.contains(index),
                    "{engine}: {index} unused by\n{sql}\n{plan}"
                );
            }
        }
    }
}

/// A PostgreSQL that stops answering without closing its connections (its
/// backends stopped, as by SIGSTOP or a silent network cut) makes a store
/// call fail with `TimedOut` after the call limit, not wait until it
/// answers again; once it answers, the store works again.
#[test]
fn a_hung_postgres_fails_calls_after_the_call_limit() {
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let store =
        Store::from(SqlStore::new(Box::new(postgres::Postgres::open(&url, 2).unwrap())).unwrap())
            .with_call_limit(std::time::Duration::from_secs(1));
    assert!(store.sync().get("nothing").unwrap().is_none());
    // The store's own backends (not this admin connection's).
    let admin = SqlStore::new(Box::new(postgres::Postgres::open(&url, 1).unwrap())).unwrap();
    let pids: Vec<i64> = admin
        .raw_writer()
        .unwrap()
        .query(
            "SELECT pid::bigint FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r[0].int().unwrap())
        .collect();
    assert!(!pids.is_empty());
    let signal = |sig: &str| {
        for pid in &pids {
            let ok = std::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill {sig} {pid}");
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    signal("-STOP");
    let r = rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(20), store.get("nothing")).await
    });
    signal("-CONT");
    match r {
        Ok(Err(StoreError::TimedOut(1))) => {}
        Ok(other) => panic!("expected TimedOut(1), got {other:?}"),
        Err(_) => panic!("the call waited 20 s for a hung database"),
    }
    // Answers again once PostgreSQL does (bounded).
    rt.block_on(async {
        let start = std::time::Instant::now();
        loop {
            match store.get("nothing").await {
                Ok(None) => break,
                r if start.elapsed() > std::time::Duration::from_secs(30) => {
                    panic!("the store did not recover: {r:?}")
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    });
}

/// A PostgreSQL that answers but has no such database is said with its
/// cause (not r2d2's bare "timed out waiting for connection: db error").
#[test]
fn a_missing_postgres_database_is_said_with_its_cause() {
    let url = jit_testkit::postgres::test_database().expect("a real PostgreSQL for store tests");
    let (base, _) = url.rsplit_once('/').unwrap();
    let missing = format!("{base}/no_such_jit_database");
    let err = match postgres::Postgres::open(&missing, 2) {
        Ok(_) => panic!("opened a database that does not exist"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("database \"no_such_jit_database\" does not exist"),
        "{err}"
    );
}

/// The holders of active grants (for the check against Keycloak's disabled
/// users): active access grants only, with their requester's id and
/// username; an ended grant leaves the list.
#[test]
fn active_grant_holders_are_the_active_grants_on_both_engines() {
    for (engine, store, _keep) in stores() {
        let now = Utc::now();
        for id in ["ga", "gb", "gc", "gd"] {
            let (r, t) = request(id, &format!("u-{id}"), "db", now);
            store.insert(&r, t).unwrap();
        }
        for id in ["ga", "gb", "gd"] {
            approve(&store, id, &approver(), now);
        }
        for id in ["ga", "gb"] {
            store
                .update(id, |s| {
                    Ok(vec![Entry::from(s.request.activate_since(now, now)?)])
                })
                .unwrap();
        }
        let holders = |store: &SqlStore| -> Vec<(String, String, String)> {
            store
                .active_grant_holders()
                .unwrap()
                .into_iter()
                .map(|h| (h.id, h.requester_id, h.requester_username))
                .collect()
        };
        let row = |id: &str| (id.to_string(), format!("u-{id}"), format!("u-{id}-name"));
        // gc is pending, gd approved: not active.
        assert_eq!(holders(&store), vec![row("ga"), row("gb")], "{engine}");
        store
            .update("ga", |s| {
                Ok(vec![Entry::from(s.request.withdraw("test", Utc::now())?)])
            })
            .unwrap();
        assert_eq!(holders(&store), vec![row("gb")], "{engine}: ga ended");
        // Waiting requests (gc pending, gd approved) of the users asked
        // for, not gb's active grant nor anyone else's.
        let users =
            |ids: &[&str]| -> Vec<String> { ids.iter().map(|i| format!("u-{i}")).collect() };
        let waiting = |store: &SqlStore, of: &[&str]| -> Vec<(String, String, String)> {
            store
                .waiting_requests_of(&users(of))
                .unwrap()
                .into_iter()
                .map(|h| (h.id, h.requester_id, h.requester_username))
                .collect()
        };
        assert_eq!(
            waiting(&store, &["gb", "gc", "gd"]),
            vec![row("gc"), row("gd")],
            "{engine}"
        );
        assert_eq!(
            waiting(&store, &["gd", "nobody"]),
            vec![row("gd")],
            "{engine}"
        );
        assert!(waiting(&store, &[]).is_empty(), "{engine}");
        assert!(store.any_waiting_request().unwrap(), "{engine}");
        for id in ["gc", "gd"] {
            store
                .update(id, |s| {
                    Ok(vec![Entry::from(s.request.withdraw("test", Utc::now())?)])
                })
                .unwrap();
        }
        assert!(waiting(&store, &["gc", "gd"]).is_empty(), "{engine}: ended");
        assert!(
            !store.any_waiting_request().unwrap(),
            "{engine}: none waits"
        );
    }
}

/// An update that changes only a request's documents (here its grant
/// state, as the scheduler's ownership decision and the start of an
/// assignment attempt do) rewrites the row and no index entry: on SQLite
/// one WAL frame, the table's page, where rewriting the row's indexed
/// columns as well dirtied a page per index (written to the WAL at every
/// commit). A status change still moves the row in its indexes.
#[test]
fn a_change_of_the_documents_alone_writes_no_index_page_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::new(Box::new(
        db::Sqlite::open(&dir.path().join("s.sqlite"), 2).unwrap(),
    ))
    .unwrap();
    let (r, t) = request("r1", "u1", "db", Utc::now());
    store.insert(&r, t).unwrap();
    // Frames in the WAL since the last call (which empties it).
    let frames = |store: &SqlStore| -> i64 {
        let mut c = store.raw_writer().unwrap();
        let rows = c.query("PRAGMA wal_checkpoint(PASSIVE)", &[]).unwrap();
        let n = rows[0][1].int().unwrap();
        let rows = c.query("PRAGMA wal_checkpoint(TRUNCATE)", &[]).unwrap();
        assert_eq!(rows[0][0], db::V::Int(0), "the checkpoint ran");
        n
    };
    assert!(frames(&store) > 0, "the insert went through the WAL");
    assert_eq!(frames(&store), 0, "an empty WAL counts none");

    store
        .update("r1", |s| {
            s.grant.owns_assignment = Some(true);
            Ok(vec![])
        })
        .unwrap();
    assert_eq!(frames(&store), 1, "one request's grant state alone");
    store
        .update_each(&["r1".to_string()], |s| {
            s.grant.assigning_since = Some(Utc::now());
            Ok(vec![])
        })
        .unwrap();
    assert_eq!(frames(&store), 1, "the same in a scheduler batch");

    let (s, _) = store
        .update("r1", |s| {
            Ok(vec![Entry::from(s.request.withdraw("test", Utc::now())?)])
        })
        .unwrap();
    assert!(
        frames(&store) > 4,
        "a status change moves the row in its indexes and appends to the audit log"
    );
    let got = store.get("r1").unwrap().unwrap();
    assert_eq!(got.request.status(), s.request.status());
    assert_eq!(got.grant.owns_assignment, Some(true));
    assert!(got.grant.assigning_since.is_some());
    let by_status = |status| {
        all_pages(
            &store,
            ListQuery {
                viewer: Viewer {
                    auditor: true,
                    ..Viewer::default()
                },
                status: Some(status),
                limit: 10,
                ..ListQuery::default()
            },
        )
    };
    assert_eq!(by_status(s.request.status()), vec!["r1".to_string()]);
    assert!(by_status(Status::Pending).is_empty());
}

/// Each column an update may change besides the documents is written when
/// it changes, alone; and a row whose columns disagree with its documents
/// (an older version's, a hand edit) gets them rewritten by its next
/// update, even one that changes only the documents. On both engines.
#[test]
fn an_update_writes_each_changed_column_and_mends_disagreeing_ones() {
    for (name, store, _keep) in stores() {
        let (r, t) = request("r1", "u1", "db", Utc::now());
        store.insert(&r, t).unwrap();
        let columns = |store: &SqlStore| -> Row {
            let mut c = store.raw_writer().unwrap();
            let mut rows = c
                .query(
                    &format!("SELECT {UPDATED_COLS} FROM requests WHERE id = ?"),
                    &[P::from("r1")],
                )
                .unwrap();
            rows.pop().unwrap()
        };
        let at = Utc::now() + chrono::Duration::seconds(30);
        store
            .update("r1", move |s| {
                s.grant.next_attempt_at = Some(at);
                Ok(vec![])
            })
            .unwrap();
        assert_eq!(
            columns(&store)[4],
            db::V::Text(ts(at)),
            "{name}: next attempt"
        );
        store
            .update_each(&["r1".to_string()], |s| {
                s.grant.next_attempt_at = None;
                s.grant.removal_pending = true;
                Ok(vec![])
            })
            .unwrap();
        let c = columns(&store);
        assert_eq!(c[3], db::V::Int(1), "{name}: removal state, batched");
        assert_eq!(c[4], db::V::Null, "{name}: next attempt cleared, batched");

        // A hand edit the documents do not say.
        store
            .raw_writer()
            .unwrap()
            .exec(
                "UPDATE requests SET status = 'denied', removal_pending = 0 WHERE id = ?",
                &[P::from("r1")],
            )
            .unwrap();
        store
            .update("r1", |s| {
                s.grant.owns_assignment = Some(true);
                Ok(vec![])
            })
            .unwrap();
        let c = columns(&store);
        assert_eq!(c[0], db::V::Text("pending".into()), "{name}: status mended");
        assert_eq!(c[3], db::V::Int(1), "{name}: removal state mended");
    }
}
