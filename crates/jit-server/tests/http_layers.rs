//! The HTTP layers of a real jitd on loopback, without Keycloak (only
//! unauthenticated routes are called): request ids, the OpenAPI document,
//! HTTP metrics, problem+json for unknown routes.

// Only its token issuer is used here.
#[allow(unused_imports)]
mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POLICY: &str = r#"
[[entitlement]]
id = "db"
realm_role = "some-role"
max_duration = "1h"
approver_roles = ["approvers"]
"#;

async fn start(dir: &Path) -> jit_server::Server {
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    std::fs::write(dir.join("secret"), "not-used-here").unwrap();
    // Nothing listens on port 9 (discard): no Keycloak call is made here.
    std::fs::write(
        dir.join("jitd.toml"),
        "listen = \"127.0.0.1:0\"\ndatabase = \"db.sqlite\"\npolicy = \"policy.toml\"\n\
         [keycloak]\nurl = \"http://127.0.0.1:9\"\nrealm = \"r\"\nbackend_client_secret_file = \"secret\"\n",
    )
    .unwrap();
    let cfg = jit_server::Config::load(&dir.join("jitd.toml")).unwrap();
    jit_server::start(&cfg).await.unwrap()
}

#[tokio::test]
async fn request_ids_are_echoed_made_and_sanitised() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/healthz", server.url());

    let r = http
        .get(&url)
        .header("x-request-id", "ci-run-42.step:7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "ci-run-42.step:7");

    let r = http.get(&url).send().await.unwrap();
    let made = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 36, "a UUID: {made}");

    // Not a plain token (spaces, quotes, too long): replaced, never echoed.
    for bad in ["a b", "x\"y", &"z".repeat(129)] {
        let r = http
            .get(&url)
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let got = r.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(got, bad);
        assert_eq!(got.len(), 36, "{got}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_method_the_path_does_not_take_is_a_405_problem_with_allow() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::DELETE, "/v1/requests"),
        (reqwest::Method::PUT, "/healthz"),
    ] {
        let r = http
            .request(method.clone(), format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert!(
            r.headers().contains_key("allow"),
            "{method} {path}: Allow header"
        );
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["status"], 405);
        assert_eq!(body["code"], "method_not_allowed");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn openapi_document_is_served_and_describes_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/config", "get"),
        ("/v1/me", "get"),
        ("/v1/entitlements", "get"),
        ("/v1/requests", "get"),
        ("/v1/requests", "post"),
        ("/v1/requests/{id}", "get"),
        ("/v1/requests/{id}/approve", "post"),
        ("/v1/requests/{id}/deny", "post"),
        ("/v1/requests/{id}/cancel", "post"),
        ("/v1/requests/{id}/extend", "post"),
        ("/v1/requests/{id}/review", "post"),
        ("/v1/grants/{id}/drop", "post"),
        ("/v1/grants/{id}/revoke", "post"),
        ("/v1/events", "get"),
        ("/v1/audit", "get"),
        ("/v1/audit/verify", "get"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} is not described");
        if path.starts_with("/v1/") && path != "/v1/config" {
            assert_eq!(op["security"][0]["bearer"], serde_json::json!([]), "{path}");
            let unauthorized = &op["responses"]["401"]["content"]["application/problem+json"];
            assert_eq!(
                unauthorized["schema"]["$ref"], "#/components/schemas/Problem",
                "{method} {path}"
            );
        }
    }
    assert!(
        doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
            .is_object()
    );
    assert!(doc["components"]["schemas"]["EventData"].is_object());
    // Every `$ref` resolves.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
    // The same document as `jitd openapi` prints.
    assert_eq!(
        doc,
        serde_json::to_value(jit_server::api::openapi()).unwrap()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_count_http_requests_by_route_template() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/v1/requests/abc/nothing", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    http.get(format!("{}/healthz", server.url()))
        .send()
        .await
        .unwrap();
    let text = http
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "http_server_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1",
        "http_server_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        "http_server_request_duration_seconds_count{method=\"GET\",route=\"/healthz\"} 1",
        "jit_requests{status=\"pending\"} 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    server.shutdown().await;
}

/// What the peer sent until it closed the connection, or `None` when it
/// was still open after `limit`.
async fn until_closed(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    tokio::time::timeout(limit, async {
        let _ = s.read_to_end(&mut got).await;
    })
    .await
    .ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// A client that starts a request and never finishes it — its head or
/// its body — or connects and sends nothing, is cut off after
/// `request_read_timeout_secs` (slowloris): it cannot hold connections
/// open for ever. A stalled body is answered with a problem; other
/// clients are served meanwhile.
#[tokio::test]
async fn a_request_that_never_finishes_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = support::Issuer::start().await;
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    std::fs::write(dir.path().join("secret"), "not-used-here").unwrap();
    std::fs::write(
        dir.path().join("jitd.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = \"db.sqlite\"\npolicy = \"policy.toml\"\n\
             request_read_timeout_secs = 1\n\
             [keycloak]\nurl = \"http://127.0.0.1:9\"\nrealm = \"test\"\nissuer = \"{}\"\n\
             backend_client_secret_file = \"secret\"\n",
            issuer.issuer
        ),
    )
    .unwrap();
    let cfg = jit_server::Config::load(&dir.path().join("jitd.toml")).unwrap();
    let server = jit_server::start(&cfg).await.unwrap();
    let connect = || tokio::net::TcpStream::connect(server.addr);
    // Far above the 1 s limit: only a connection left open fails.
    let limit = Duration::from_secs(20);

    let mut head = connect().await.unwrap();
    head.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = connect().await.unwrap();
    let mut body = connect().await.unwrap();
    let token = issuer.token("alice", &[]);
    body.write_all(
        format!(
            "POST /v1/requests HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"entit"
        )
        .as_bytes(),
    )
    .await
    .unwrap();

    // Served meanwhile.
    let r = reqwest::get(format!("{}/healthz", server.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let got = until_closed(&mut head, limit)
        .await
        .expect("a head that never ends: connection closed");
    assert!(!got.contains(" 200 "), "{got}");
    until_closed(&mut idle, limit)
        .await
        .expect("a connection that sends nothing: closed");
    let got = until_closed(&mut body, limit)
        .await
        .expect("a body that stops: answered and closed");
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("application/problem+json"), "{got}");

    // A body trickled a byte at a time, each within the limit: all of it
    // must still arrive within the limit.
    let (mut rd, mut wr) = connect().await.unwrap().into_split();
    wr.write_all(
        format!(
            "POST /v1/requests HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..200 {
            if wr.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut got = Vec::new();
    tokio::time::timeout(limit, rd.read_to_end(&mut got))
        .await
        .expect("a trickled body: answered and closed")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    // The deadline (or, on a loaded machine where a 200 ms pause grew
    // past 1 s, the limit between frames) answers; without either the
    // trickle would outlast `limit`.
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("application/problem+json"), "{got}");
    trickle.abort();
    server.shutdown().await;
}
