//! `AdminClient::set_user_attribute` against a loopback stand-in for
//! Keycloak's admin API: the write sends back the user-profile fields only,
//! so a concurrent admin change to `enabled`, `emailVerified` or
//! `requiredActions` (e.g. disabling the user) is never undone by it.

use std::sync::{Arc, Mutex};

use jit_keycloak::AdminClient;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The stand-in's state: the user as Keycloak holds it, and every PUT body.
#[derive(Default)]
struct Realm {
    user: Value,
    puts: Vec<Value>,
    /// After each PUT: `Some(values)` — another writer sets `jit.grants`
    /// to these at once; `Some([])` — the realm drops the attribute.
    after_put: Option<Vec<String>>,
}

async fn serve(listener: TcpListener, realm: Arc<Mutex<Realm>>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let realm = realm.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = sock.into_split();
            let mut rd = BufReader::new(rd);
            loop {
                let mut line = String::new();
                if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().unwrap_or("").to_string();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    rd.read_line(&mut h).await.unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                }
                let mut body = vec![0; len];
                rd.read_exact(&mut body).await.unwrap();
                let (status, answer) = match (method.as_str(), path.as_str()) {
                    ("POST", p) if p.ends_with("/protocol/openid-connect/token") => (
                        "200 OK",
                        json!({"access_token": "t", "expires_in": 300}).to_string(),
                    ),
                    ("GET", "/admin/realms/r/users/u1") => {
                        ("200 OK", realm.lock().unwrap().user.to_string())
                    }
                    ("PUT", "/admin/realms/r/users/u1") => {
                        let sent: Value = serde_json::from_slice(&body).unwrap();
                        let mut r = realm.lock().unwrap();
                        // Like Keycloak: fields absent from the body stay.
                        for (k, v) in sent.as_object().unwrap() {
                            r.user[k] = v.clone();
                        }
                        r.puts.push(sent);
                        if let Some(v) = r.after_put.clone() {
                            if v.is_empty() {
                                r.user["attributes"]
                                    .as_object_mut()
                                    .unwrap()
                                    .remove("jit.grants");
                            } else {
                                r.user["attributes"]["jit.grants"] = json!(v);
                            }
                        }
                        ("204 No Content", String::new())
                    }
                    _ => ("404 Not Found", String::new()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    answer.len()
                );
                if wr.write_all(head.as_bytes()).await.is_err()
                    || wr.write_all(answer.as_bytes()).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

#[tokio::test]
async fn the_attribute_write_never_sends_back_enabled_or_required_actions() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let realm = Arc::new(Mutex::new(Realm {
        user: json!({
            "id": "u1", "username": "someone", "email": "someone@example.org",
            "firstName": "Some", "lastName": "One",
            "enabled": true, "emailVerified": true, "requiredActions": [],
            "attributes": {"department": ["ops"]},
        }),
        puts: vec![],
        after_put: None,
    }));
    tokio::spawn(serve(listener, realm.clone()));
    let admin = AdminClient::new(&base, "r", "backend", "secret", reqwest::Client::new());

    let values = vec![r#"{"grant":"g1"}"#.to_string()];
    let changed = admin
        .set_user_attribute("u1", "jit.grants", &values)
        .await
        .expect("attribute written");
    assert!(changed);

    let r = realm.lock().unwrap();
    assert_eq!(r.puts.len(), 1, "one write");
    let sent = r.puts[0].as_object().unwrap();
    for field in ["enabled", "emailVerified", "requiredActions", "id"] {
        assert!(
            !sent.contains_key(field),
            "`{field}` must not be sent back (an admin's change in between would be undone): {sent:?}"
        );
    }
    assert_eq!(sent["username"], "someone");
    assert_eq!(sent["email"], "someone@example.org");
    assert_eq!(
        sent["attributes"]["department"],
        json!(["ops"]),
        "other attributes kept"
    );
    assert_eq!(sent["attributes"]["jit.grants"], json!(values));
}

/// A re-read that shows other values means another writer (another jitd
/// replica) came in between: `Overwritten` with what it found, worth a new
/// try — not `NotKept`, which says the realm's user profile drops the
/// attribute (a configuration error).
#[tokio::test]
async fn another_writer_in_between_is_not_taken_for_a_realm_that_drops_the_attribute() {
    for (after_put, want) in [
        (vec![r#"{"grant":"g2"}"#.to_string()], "overwritten"),
        (vec![], "not kept"),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let realm = Arc::new(Mutex::new(Realm {
            user: json!({"id": "u1", "username": "someone", "attributes": {}}),
            puts: vec![],
            after_put: Some(after_put.clone()),
        }));
        tokio::spawn(serve(listener, realm.clone()));
        let admin = AdminClient::new(&base, "r", "backend", "secret", reqwest::Client::new());
        let e = admin
            .set_user_attribute("u1", "jit.grants", &[r#"{"grant":"g1"}"#.to_string()])
            .await
            .expect_err("the write did not stay");
        match (want, &e) {
            ("overwritten", jit_keycloak::KeycloakError::Overwritten { found, .. }) => {
                assert_eq!(found, &after_put);
                assert!(e.is_transient(), "{e}");
            }
            ("not kept", jit_keycloak::KeycloakError::NotKept(_)) => {
                assert!(!e.is_transient(), "{e}");
            }
            _ => panic!("{want}: got {e:?}"),
        }
    }
}
