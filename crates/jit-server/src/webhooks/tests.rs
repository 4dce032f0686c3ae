use std::sync::Arc;

use chrono::{Duration, Utc};
use jit_core::{AccessRequest, NewRequest, Policy, Principal};

use super::format::{self, Context};
use super::*;
use crate::store::{Claim, Entry, SqlStore};

fn hook(toml_text: &str) -> anyhow::Result<WebhookConfig> {
    let c: WebhookConfig = toml::from_str(toml_text)?;
    c.validate()?;
    Ok(c)
}

#[test]
fn malformed_receiver_urls_are_refused() {
    for bad in [
        "not a url",
        "htp//example.com",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "http://",
        "https:///path",
        "http:example.com",
        "",
    ] {
        let err = hook(&format!(
            "name = \"x\"\nurl = \"{bad}\"\nsecret_env = \"S\"\n"
        ))
        .expect_err(bad);
        assert!(err.to_string().contains("webhook 'x': url"), "{bad}: {err}");
    }
    hook("name = \"x\"\nurl = \"https://hooks.example.com/a?b=c\"\nsecret_env = \"S\"\n").unwrap();
    hook("name = \"x\"\nurl = \"http://127.0.0.1:9/x\"\nsecret_env = \"S\"\n").unwrap();
}

#[test]
fn config_refuses_what_it_cannot_honour() {
    let cases = [
        ("name = \"x\"\nurl = \"https://h/\"\n", "every delivery is signed"),
        ("name = \"x\"\nurl = \"https://h/\"\nsecret_env = \"S\"\nsecret_file = \"f\"\n", "not both"),
        ("name = \"X Y\"\nurl = \"https://h/\"\nsecret_env = \"S\"\n", "webhook name"),
        ("name = \"x\"\nsecret_env = \"S\"\n", "give url or url_file"),
        ("name = \"x\"\nurl = \"https://h/\"\nsecret_env = \"S\"\nevents = [\"approved\"]\n", "events"),
        ("name = \"x\"\nurl = \"https://h/\"\nsecret_env = \"S\"\nevents = [\"audit.*\"]\n", "events"),
        ("name = \"x\"\nurl = \"https://h/\"\nsecret_env = \"S\"\nmax_attempts = 0\n", "max_attempts"),
        ("name = \"x\"\nurl = \"https://h/\"\nsecret_env = \"S\"\nrequest_url = \"https://w/\"\n", "{id}"),
        ("name = \"x\"\nurl = \"https://h/\"\nsecret_env = \"S\"\nformat = \"discord\"\n", "unknown variant"),
    ];
    for (text, want) in cases {
        let err = hook(text).expect_err(text).to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
    let one = hook("name = \"a\"\nurl = \"https://h/\"\nsecret_env = \"S\"\n").unwrap();
    let twice = [one.clone(), one];
    assert!(validate_all(&twice)
        .unwrap_err()
        .to_string()
        .contains("used twice"));
}

#[test]
fn config_load_refuses_a_malformed_webhook_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jitd.toml");
    let base = "database = \"db.sqlite\"\npolicy = \"policy.toml\"\n[keycloak]\nurl = \"http://127.0.0.1:1\"\nrealm = \"r\"\n";
    std::fs::write(
        &path,
        format!("{base}\n[[webhook]]\nname = \"chat\"\nurl = \"hooks.example.com/x\"\nsecret_env = \"S\"\n"),
    )
    .unwrap();
    let err = crate::Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("webhook 'chat': url: not a URL"), "{err}");
    std::fs::write(
        dir.path().join("url"),
        "https://hooks.example.com/services/T/B/x\n",
    )
    .unwrap();
    std::fs::write(
        &path,
        format!("{base}\n[[webhook]]\nname = \"chat\"\nurl_file = \"url\"\nformat = \"slack\"\nsecret_file = \"s\"\n"),
    )
    .unwrap();
    let c = crate::Config::load(&path).unwrap();
    assert_eq!(c.webhooks[0].format, Format::Slack);
    assert_eq!(
        c.webhooks[0].secret_file.as_deref(),
        Some(dir.path().join("s").as_path())
    );
}

#[test]
fn signature_matches_the_standard_webhooks_example() {
    // The example of the Standard Webhooks specification.
    let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let body = br#"{"test": 2432232314}"#;
    let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    let ok = |id: &str, ts: i64, body: &[u8], now: i64| {
        verify(
            &key,
            id,
            ts,
            body,
            &format!("v0,xyz {sig}"),
            now,
            REPLAY_WINDOW_SECS,
        )
    };
    assert!(ok(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        body,
        1614265330 + 299
    ));
    assert!(
        !ok(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
            1614265330 + 301
        ),
        "replay window"
    );
    assert!(
        !ok("msg_other", 1614265330, body, 1614265330),
        "id is signed"
    );
    assert!(
        !ok("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, 1614265330),
        "timestamp is signed"
    );
    assert!(
        !ok(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b"{}",
            1614265330
        ),
        "body is signed"
    );
    assert_eq!(signing_key(" plain-secret\n").unwrap(), b"plain-secret");
    assert!(signing_key("  ").is_err());
}

#[test]
fn filters_on_event_kind_and_entitlement() {
    let h = hook("name = \"x\"\nurl = \"https://h/\"\nsecret_env = \"S\"\nevents = [\"request.created\", \"grant.*\"]\nentitlements = [\"db\"]\n").unwrap();
    assert!(h.wants("request.created", "db"));
    assert!(h.wants("grant.expired", "db"));
    assert!(!h.wants("request.approved", "db"));
    assert!(!h.wants("request.created", "other"));
    assert!(!h.wants("grantx.expired", "db"));
    let all = hook("name = \"x\"\nurl = \"https://h/\"\nsecret_env = \"S\"\n").unwrap();
    assert!(all.wants("request.voted", "anything"));
}

#[test]
fn backoff_doubles_and_is_capped() {
    let secs: Vec<u64> = (1..=12).map(|n| backoff(n, 300).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    assert_eq!(backoff(200, 60).as_secs(), 60);
}

fn policy() -> Policy {
    Policy::from_toml(
        "[[entitlement]]\nid=\"db\"\ndisplay_name=\"Prod DB\"\nrealm_role=\"prod-db-admin\"\nmax_duration=\"1h\"\napprover_roles=[\"ap\"]\n\n[[entitlement]]\nid=\"other\"\nrealm_role=\"x\"\nmax_duration=\"1h\"\napprover_roles=[\"ap\"]\n",
    )
    .unwrap()
}

fn create(store: &SqlStore, id: &str, ent: &str, justification: &str) -> AccessRequest {
    let input = NewRequest {
        entitlement: ent.into(),
        duration_secs: Some(1800),
        justification: justification.into(),
        urgent: true,
        ..Default::default()
    };
    let (r, t) = AccessRequest::create(
        id.into(),
        &input,
        // One requester per request: one pending request per requester and
        // entitlement is the store's rule.
        &Principal::new(format!("u-{id}"), "alice"),
        &policy(),
        Utc::now(),
    )
    .unwrap();
    store.insert(&r, t).unwrap();
    r
}

fn hooks(defs: &str) -> Arc<Webhooks> {
    std::env::set_var("JIT_TEST_WEBHOOK_SECRET", "s3cret");
    let cfg: crate::Config = toml::from_str(&format!(
        "database = \"x\"\npolicy = \"y\"\n[keycloak]\nurl = \"http://k\"\nrealm = \"r\"\n{defs}"
    ))
    .unwrap();
    Arc::new(Webhooks::new(&cfg.webhooks, "r").unwrap())
}

const TWO: &str = "[[webhook]]\nname = \"all\"\nurl = \"http://127.0.0.1:9/\"\nsecret_env = \"JIT_TEST_WEBHOOK_SECRET\"\n[[webhook]]\nname = \"db-created\"\nurl = \"http://127.0.0.1:9/\"\nsecret_env = \"JIT_TEST_WEBHOOK_SECRET\"\nevents = [\"request.created\"]\nentitlements = [\"db\"]\n";

#[test]
fn outbox_rows_are_written_with_the_audit_row_and_routed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open_sqlite(&dir.path().join("s.sqlite")).unwrap();
    let h = hooks(TWO);
    store.set_outbox_router(h.router());
    create(&store, "r1", "db", "because of reasons");
    create(&store, "r2", "other", "because of reasons");
    let p = policy();
    let mut bob = Principal::new("u2", "bob");
    bob.roles.insert("ap".into());
    let now = Utc::now();
    store
        .update("r1", |s| {
            let e = p.entitlement("db").unwrap();
            Ok(s.request
                .vote(e, &bob, jit_core::Decision::Approve, None, None, now)?
                .into_iter()
                .map(Entry::from)
                .collect())
        })
        .unwrap();
    // A failing change writes neither audit nor outbox rows.
    store
        .update("r1", |s| Ok(vec![s.request.lapse(now)?.into()]))
        .unwrap_err();
    let all = store.outbox_rows("all").unwrap();
    assert_eq!(
        all.iter().map(|r| r.audit_seq).collect::<Vec<_>>(),
        [1, 2, 3],
        "every event, in audit order"
    );
    let db = store.outbox_rows("db-created").unwrap();
    assert_eq!(db.iter().map(|r| r.audit_seq).collect::<Vec<_>>(), [1]);
    // One idempotency id per event, the same for every endpoint.
    assert_eq!(db[0].event_id, all[0].event_id);
    assert_ne!(all[0].event_id, all[1].event_id);
    // Without a router nothing is queued.
    store.set_outbox_router(None);
    create(&store, "r3", "db", "because of reasons");
    assert_eq!(store.outbox_rows("all").unwrap().len(), 3);
}

#[test]
fn outbox_hands_out_in_order_with_lease_backoff_and_bounded_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open_sqlite(&dir.path().join("s.sqlite")).unwrap();
    store.set_outbox_router(hooks(TWO).router());
    create(&store, "r1", "db", "because of reasons");
    create(&store, "r2", "db", "because of reasons");
    let now = Utc::now();
    let lease = now + Duration::seconds(15);
    let Claim::Item(first) = store.outbox_claim("all", now, lease).unwrap() else {
        panic!("head expected")
    };
    assert_eq!(first.event.record.request_id, "r1");
    // Leased: nobody else gets it (nor the next row: order) until it ends.
    match store.outbox_claim("all", now, lease).unwrap() {
        // Stored with microseconds.
        Claim::WaitUntil(t) => assert!((t - lease).abs() < Duration::milliseconds(1), "{t}"),
        other => panic!("{other:?}"),
    }
    // A dead deliverer's lease runs out: the same event again.
    let later = lease + Duration::seconds(1);
    let Claim::Item(again) = store
        .outbox_claim("all", later, later + Duration::seconds(15))
        .unwrap()
    else {
        panic!("lease should have expired")
    };
    assert_eq!(again.event.id, first.event.id);
    store
        .outbox_retry(
            again.id,
            1,
            later + Duration::seconds(2),
            "receiver answered 500",
        )
        .unwrap();
    assert!(matches!(
        store.outbox_claim("all", later, later).unwrap(),
        Claim::WaitUntil(_)
    ));
    let t = later + Duration::seconds(2);
    let Claim::Item(third) = store
        .outbox_claim("all", t, t + Duration::seconds(15))
        .unwrap()
    else {
        panic!("due after backoff")
    };
    assert_eq!((third.id, third.attempts), (first.id, 1));
    store.outbox_failed(third.id, 2, t, "gave up").unwrap();
    let Claim::Item(next) = store
        .outbox_claim("all", t, t + Duration::seconds(15))
        .unwrap()
    else {
        panic!("next row")
    };
    assert_eq!(next.event.record.request_id, "r2");
    store.outbox_delivered(next.id, 1, t).unwrap();
    assert!(matches!(
        store.outbox_claim("all", t, t).unwrap(),
        Claim::Idle
    ));
    let rows = store.outbox_rows("all").unwrap();
    assert_eq!(
        rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(),
        ["failed", "delivered"]
    );
    // An endpoint that left the config: its pending rows are given up.
    assert_eq!(store.outbox_rows("db-created").unwrap()[0].state, "pending");
    assert_eq!(store.outbox_abandon_unknown(&["all".into()], t).unwrap(), 2);
    assert_eq!(store.outbox_rows("db-created").unwrap()[0].state, "failed");
    assert_eq!(store.outbox_prune(t + Duration::seconds(1)).unwrap(), 4);
}

fn event(justification: &str) -> crate::store::WebhookEvent {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open_sqlite(&dir.path().join("s.sqlite")).unwrap();
    store.set_outbox_router(hooks(TWO).router());
    create(
        &store,
        "0d8bff88-aaaa-bbbb-cccc-123456789abc",
        "db",
        justification,
    );
    let Claim::Item(i) = store.outbox_claim("all", Utc::now(), Utc::now()).unwrap() else {
        panic!()
    };
    i.event
}

const CTX: Context = Context {
    source: "urn:jit-access:r",
    entitlement_name: "Prod DB",
    web_url: Some("https://jit.example.com/requests/0d8bff88-aaaa-bbbb-cccc-123456789abc"),
};

#[test]
fn cloudevent_is_structured_mode_1_0() {
    let ev = event("INC-42: fix replica lag");
    let (ct, body) = format::render(Format::Cloudevents, &ev, &CTX);
    assert_eq!(ct, "application/cloudevents+json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["specversion"], "1.0");
    assert_eq!(v["id"], ev.id);
    assert_eq!(v["type"], "jit.request.created");
    assert_eq!(v["source"], "urn:jit-access:r");
    assert_eq!(v["subject"], "0d8bff88-aaaa-bbbb-cccc-123456789abc");
    assert_eq!(v["data"]["seq"], 1);
    assert_eq!(
        v["data"]["request"]["justification"],
        "INC-42: fix replica lag"
    );
    assert_eq!(
        v["data"]["link"],
        "jit://request/0d8bff88-aaaa-bbbb-cccc-123456789abc"
    );
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn slack_message_says_who_what_why_how_long_and_links_without_approving() {
    let ev = event("INC-42 <!channel> <https://evil|click> & more");
    let (_, body) = format::render(Format::Slack, &ev, &CTX);
    let text = String::from_utf8(body).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["text"], "Urgent: alice asks for Prod DB");
    assert!(text.contains("*Who*\\nalice"), "{text}");
    assert!(text.contains("*For*\\n30m"), "{text}");
    assert!(text.contains("*Urgency*\\nurgent"), "{text}");
    assert!(
        text.contains("INC-42 &lt;!channel&gt; &lt;https://evil|click&gt; &amp; more"),
        "{text}"
    );
    assert!(!text.contains("<!channel>"));
    assert!(text.contains("jit://request/0d8bff88-aaaa-bbbb-cccc-123456789abc"));
    assert!(text.contains("\"url\":\"https://jit.example.com/requests/0d8bff88"));
    assert!(text.contains("jit approve 0d8bff88"));
    // The only interactive element opens the request.
    let buttons: Vec<_> = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap().clone())
        .collect();
    assert_eq!(buttons.len(), 1);
    assert_eq!(buttons[0]["action_id"], "open_request");
}

#[test]
fn teams_adaptive_card() {
    let ev = event("INC-42 [click](https://evil)");
    let (_, body) = format::render(Format::Teams, &ev, &CTX);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let card = &v["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let c = &card["content"];
    assert_eq!(
        (c["type"].as_str(), c["version"].as_str()),
        (Some("AdaptiveCard"), Some("1.4"))
    );
    assert_eq!(c["body"][0]["text"], "Urgent: alice asks for Prod DB");
    assert_eq!(c["body"][0]["color"], "Attention");
    let facts = c["body"][1]["facts"].as_array().unwrap();
    assert!(facts
        .iter()
        .any(|f| f["title"] == "For" && f["value"] == "30m"));
    assert_eq!(
        c["body"][2]["text"],
        "Why: INC-42 \\[click\\]\\(https://evil\\)"
    );
    assert_eq!(c["actions"][0]["type"], "Action.OpenUrl");
    assert!(c["body"].to_string().contains("jit://request/0d8bff88"));
}
