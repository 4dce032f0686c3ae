//! Token validation against a JWKS served on loopback: a rotated key is
//! accepted at once, random `kid`s cannot make the validator hammer the
//! JWKS endpoint, and another issuer's token names the expected issuer.
//! Keys are generated per run (ES256, ring), never stored.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use jit_keycloak::{AuthError, TokenValidator};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Key {
    kid: String,
    der: Vec<u8>,
    jwk: serde_json::Value,
}

fn new_key(kid: &str) -> Key {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    // Uncompressed point: 0x04 ‖ x (32 bytes) ‖ y (32 bytes).
    let p = pair.public_key().as_ref();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    Key {
        kid: kid.into(),
        der: pkcs8.as_ref().to_vec(),
        jwk: serde_json::json!({
            "kid": kid, "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "x": b64(&p[1..33]), "y": b64(&p[33..65]),
        }),
    }
}

fn token(key: &Key, kid: &str, iss: &str) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    let exp = chrono::Utc::now().timestamp() + 300;
    encode(
        &h,
        &serde_json::json!({
            "iss": iss, "aud": "jit-api", "sub": "u-1", "typ": "Bearer",
            "preferred_username": "alice", "exp": exp,
        }),
        &EncodingKey::from_ec_der(&key.der),
    )
    .unwrap()
}

/// A JWKS endpoint on loopback that counts its requests; `keys` is what it
/// serves now.
struct Jwks {
    issuer: String,
    hits: Arc<AtomicUsize>,
    keys: Arc<Mutex<Vec<serde_json::Value>>>,
}

async fn serve_jwks(keys: Vec<serde_json::Value>) -> Jwks {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/realms/test", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let keys = Arc::new(Mutex::new(keys));
    let (h, k) = (hits.clone(), keys.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (h, k) = (h.clone(), k.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::json!({ "keys": *k.lock().unwrap() }).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Jwks { issuer, hits, keys }
}

#[tokio::test]
async fn a_rotated_key_is_accepted_at_once() {
    let (a, b) = (new_key("key-a"), new_key("key-b"));
    let jwks = serve_jwks(vec![a.jwk.clone()]).await;
    let v = TokenValidator::new(&jwks.issuer, "jit-api", jit_keycloak::http_client());
    v.validate(&token(&a, &a.kid, &jwks.issuer)).await.unwrap();
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1);
    // Keycloak gets a new active key right after jitd's fetch.
    jwks.keys.lock().unwrap().push(b.jwk.clone());
    let t = v.validate(&token(&b, &b.kid, &jwks.issuer)).await.unwrap();
    assert_eq!(t.principal.username, "alice");
    assert_eq!(
        jwks.hits.load(Ordering::SeqCst),
        2,
        "one refetch for the new kid"
    );
    // Known keys need no fetch.
    v.validate(&token(&a, &a.kid, &jwks.issuer)).await.unwrap();
    v.validate(&token(&b, &b.kid, &jwks.issuer)).await.unwrap();
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kids_fetch_at_most_once_a_second() {
    let a = new_key("key-a");
    let jwks = serve_jwks(vec![a.jwk.clone()]).await;
    let v = TokenValidator::new(&jwks.issuer, "jit-api", jit_keycloak::http_client());
    v.validate(&token(&a, &a.kid, &jwks.issuer)).await.unwrap();
    let started = Instant::now();
    // 3 waves of 100 concurrent tokens with random kids, 300 ms apart.
    let mut tasks = Vec::new();
    for wave in 0..3 {
        for i in 0..100 {
            let (v, t) = (
                v.clone(),
                token(&a, &format!("random-{wave}-{i}"), &jwks.issuer),
            );
            tasks.push(tokio::spawn(async move { v.validate(&t).await }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err(), AuthError::UnknownKey);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hits = jwks.hits.load(Ordering::SeqCst) - 1;
    // At most one fetch per started second (the first at once).
    let bound = elapsed.ceil() as usize + 1;
    assert!(hits >= 1, "an unknown kid must trigger a refetch");
    assert!(
        hits <= bound,
        "{hits} JWKS fetches for 300 random kids in {elapsed:.1} s (bound {bound})"
    );
    assert_eq!(v.jwks_fetches() as usize, hits + 1);
    // A known key still validates without waiting for the refetch slot.
    let t0 = Instant::now();
    v.validate(&token(&a, &a.kid, &jwks.issuer)).await.unwrap();
    assert_eq!(
        jwks.hits.load(Ordering::SeqCst),
        hits + 1,
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn another_issuer_is_named_and_nothing_else_of_the_token() {
    let a = new_key("key-a");
    let jwks = serve_jwks(vec![a.jwk.clone()]).await;
    let v = TokenValidator::new(&jwks.issuer, "jit-api", jit_keycloak::http_client());
    let e = v
        .validate(&token(&a, &a.kid, "http://localhost:9/realms/other"))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&jwks.issuer), "{text}");
    assert!(text.contains("http://localhost:9/realms/other"), "{text}");
    assert!(!text.contains("alice") && !text.contains("u-1"), "{text}");
    assert_eq!(
        jwks.hits.load(Ordering::SeqCst),
        0,
        "no key lookup for another issuer"
    );
}
