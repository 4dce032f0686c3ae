//! The store as the API shows it, against the real Keycloak: parallel
//! identical requests (one wins), and lists that page with a cursor.

use jit_client::ListQuery;
use jit_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_identical_requests_make_one_pending_request() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let alice = jitd.client(&token("alice").await);
    let body = jit_core::api::CreateRequestBody {
        entitlement: "prod-db-admin".into(),
        duration: Some("10m".into()),
        justification: "parallel duplicate check".into(),
        ..Default::default()
    };
    let calls = (0..8).map(|_| {
        let (c, b) = (alice.clone(), body.clone());
        tokio::spawn(async move { c.create(&b).await })
    });
    let results = futures::future::join_all(calls).await;
    let mut created = Vec::new();
    let mut refused = 0;
    for r in results {
        match r.unwrap() {
            Ok(v) => created.push(v.request.id().to_string()),
            Err(jit_client::ClientError::Api { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (409, "duplicate_pending"));
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one request is created");
    assert_eq!(refused, 7);
    let mine = alice
        .list(&ListQuery {
            mine: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].request.id(), created[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_with_a_cursor_and_the_client_follows_it() {
    let _serial = serial().await;
    let _ctx = Ctx::new().await;
    let jitd = Jitd::start(POLICY);
    let alice = jitd.client(&token("alice").await);
    let bob = jitd.client(&token("bob").await);
    let mut ids = Vec::new();
    for e in ["prod-db-admin", "billing-admin", "incident-responder"] {
        ids.push(request(&alice, e, "10m").await);
    }
    ids.reverse(); // newest first
    let q = ListQuery {
        mine: true,
        ..Default::default()
    };
    // One row per page: three pages, in order, the last without a cursor.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    for i in 0..3 {
        let (rows, next) = alice
            .list_page(&q, after.as_deref(), Some(1))
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        paged.push(rows[0].request.id().to_string());
        assert_eq!(next.is_some(), i < 2, "page {i}: next = {next:?}");
        after = next;
    }
    assert_eq!(paged, ids);
    // A bad cursor is a problem, not a crash.
    match alice.list_page(&q, Some("nonsense"), None).await {
        Err(jit_client::ClientError::Api { status: 400, .. }) => {}
        other => panic!("bad cursor: {other:?}"),
    }
    // The whole list through the client (it follows the pages).
    assert_eq!(alice.list(&q).await.unwrap().len(), 3);
    // bob approves prod-db-admin only: one of the three is his to review.
    let review = bob
        .list(&ListQuery {
            to_review: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let mine_to_review: Vec<&str> = review
        .iter()
        .filter(|r| ids.iter().any(|i| i == r.request.id()))
        .map(|r| r.request.entitlement_id())
        .collect();
    assert_eq!(mine_to_review, ["prod-db-admin"]);
}
