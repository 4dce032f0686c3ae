//! Benchmark of the Keycloak extension's token bounds (section
//! `token-bounds` of `cargo xtask bench`), on the real Keycloak.
//!
//! It creates a throwaway realm `jit-bench-tokens` (other names than the
//! demo realm, so nothing relies on fixture names) with N users holding a
//! role and the grant ends jitd would write (same attribute format, one
//! `expires_at` for all), and two clients: one with the JIT mapper, one
//! without. Password hashing is set to 1 iteration so that logins cost
//! little; tokens are then renewed with the refresh grant, which runs the
//! protocol mappers.
//!
//! - **Lateness** (the peer figure: Keycloak Workflows removed the
//!   role 0.10–0.13 s late at p50, ≤ 0.21 s at p99, for 50–500 users): at
//!   the common `expires_at`, every user renews at once. A token whose
//!   request was sent after `expires_at` must not carry the role; its
//!   lateness is `send time − expires_at` when it does. Nobody removes the
//!   mapping (no jitd here), which is the worst case the mapper covers.
//! - **Cost**: refresh-grant round trips alternated between the client with
//!   the mapper and the one without, for a user with one grant and a user
//!   with none; p50/p90 and the difference.
//!
//! The bench host and Keycloak share the machine's clock (loopback), so
//! send times and `expires_at` are on one clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use serde_json::{json, Value};

/// The throwaway realm.
pub const REALM: &str = "jit-bench-tokens";
const ROLE: &str = "ops-console-admin";
const MAPPER_CLIENT: &str = "bench-with-mapper";
const PLAIN_CLIENT: &str = "bench-without-mapper";
const ATTRIBUTE: &str = "jit.grants";
/// Keycloak's bootstrap admin as `cargo xtask` starts it (demo only).
const ADMIN: (&str, &str) = ("admin", "admin-pass");
/// Token requests in flight at once.
const CONCURRENCY: usize = 16;

/// One result line: metric, value, note.
pub type Line = (String, String, String);

fn line(m: impl Into<String>, v: impl Into<String>, n: impl Into<String>) -> Line {
    (m.into(), v.into(), n.into())
}

struct Kc {
    url: String,
    http: reqwest::Client,
}

impl Kc {
    async fn admin_token(&self) -> Result<String> {
        let r: Value = self
            .http
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.url
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", ADMIN.0),
                ("password", ADMIN.1),
            ])
            .send()
            .await?
            .error_for_status()
            .context("master admin login (is this the xtask's Keycloak?)")?
            .json()
            .await?;
        r["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no admin token"))
    }

    async fn token(&self, form: &[(&str, &str)]) -> Result<Value> {
        let resp = self
            .http
            .post(format!(
                "{}/realms/{REALM}/protocol/openid-connect/token",
                self.url
            ))
            .form(form)
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            bail!("token endpoint: HTTP {status}: {body}");
        }
        Ok(body)
    }

    async fn login(&self, client: &str, user: &str) -> Result<Value> {
        self.token(&[
            ("grant_type", "password"),
            ("client_id", client),
            ("username", user),
            ("password", &format!("{user}-pw")),
        ])
        .await
    }

    async fn refresh(&self, client: &str, refresh_token: &str) -> Result<Value> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", client),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn drop_realm(&self) -> Result<()> {
        let t = self.admin_token().await?;
        let r = self
            .http
            .delete(format!("{}/admin/realms/{REALM}", self.url))
            .bearer_auth(t)
            .send()
            .await?;
        if !(r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND) {
            bail!("deleting realm {REALM}: HTTP {}", r.status());
        }
        Ok(())
    }

    /// Creates the realm with `users` users (names `u0001`...), each holding
    /// the role and, when `end` is given, one grant ending then.
    async fn create_realm(&self, users: usize, end: Option<DateTime<Utc>>) -> Result<()> {
        self.drop_realm().await?;
        let mapper = json!({
            "name": "jit grant bounds", "protocol": "openid-connect",
            "protocolMapper": "oidc-jit-grant-mapper",
            "config": {"access.token.claim": "true", "id.token.claim": "true",
                       "userinfo.token.claim": "true", "introspection.token.claim": "true"}
        });
        let client = |id: &str, mappers: Vec<Value>| {
            json!({"clientId": id, "publicClient": true, "directAccessGrantsEnabled": true,
                   "standardFlowEnabled": false, "fullScopeAllowed": true,
                   "attributes": {"access.token.lifespan": "300"},
                   "protocolMappers": mappers})
        };
        let grant = |i: usize| {
            end.map(|e| {
                vec![json!({
                    "grant": format!("bench-{i:04}"),
                    "entitlement": "ops-console",
                    "target": {"kind": "realm_role", "role": ROLE},
                    "expires_at": e.to_rfc3339_opts(SecondsFormat::Millis, true),
                })
                .to_string()]
            })
        };
        let users: Vec<Value> = (1..=users)
            .map(|i| {
                let name = format!("u{i:04}");
                let mut u = json!({
                    "username": name, "enabled": true, "email": format!("{name}@bench.test"),
                    "firstName": "Bench", "lastName": name,
                    "credentials": [{"type": "password", "value": format!("{name}-pw"), "temporary": false}],
                    "realmRoles": [ROLE],
                });
                if let Some(g) = grant(i) {
                    u["attributes"] = json!({ ATTRIBUTE: g });
                }
                u
            })
            .collect();
        let profile = json!({
            "attributes": [
                {"name": "username", "permissions": {"view": ["admin", "user"], "edit": ["admin", "user"]}},
                {"name": "email", "permissions": {"view": ["admin", "user"], "edit": ["admin", "user"]}},
                {"name": "firstName", "permissions": {"view": ["admin", "user"], "edit": ["admin", "user"]}},
                {"name": "lastName", "permissions": {"view": ["admin", "user"], "edit": ["admin", "user"]}},
                {"name": ATTRIBUTE, "multivalued": true, "permissions": {"view": ["admin"], "edit": ["admin"]}}
            ]
        });
        let realm = json!({
            "realm": REALM, "enabled": true, "sslRequired": "none",
            "passwordPolicy": "hashIterations(1)",
            "accessTokenLifespan": 300,
            "roles": {"realm": [{"name": ROLE}]},
            "clients": [client(MAPPER_CLIENT, vec![mapper]), client(PLAIN_CLIENT, vec![])],
            "components": {"org.keycloak.userprofile.UserProfileProvider": [{
                "providerId": "declarative-user-profile",
                "config": {"kc.user.profile.config": [profile.to_string()]}
            }]},
            "users": users,
        });
        let t = self.admin_token().await?;
        let r = self
            .http
            .post(format!("{}/admin/realms", self.url))
            .bearer_auth(t)
            .json(&realm)
            .timeout(Duration::from_secs(600))
            .send()
            .await?;
        if !r.status().is_success() {
            let s = r.status();
            bail!("creating realm {REALM}: HTTP {s}: {}", r.text().await?);
        }
        Ok(())
    }
}

fn claims(tokens: &Value) -> Result<Value> {
    jit_testkit::decode_jwt_claims(
        tokens["access_token"]
            .as_str()
            .ok_or_else(|| anyhow!("no access_token"))?,
    )
}

fn carries(claims: &Value) -> bool {
    claims["realm_access"]["roles"]
        .as_array()
        .is_some_and(|a| a.iter().any(|r| r == ROLE))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Lateness for `n` grants ending in the same instant.
async fn lateness(kc: &Arc<Kc>, n: usize) -> Result<Vec<Line>> {
    // Users and sessions first (slow on a loaded box), then the grant ends
    // written as jitd does, all with one `expires_at` a little ahead.
    let setup_started = Instant::now();
    kc.create_realm(n, None).await?;
    eprintln!(
        "jit-bench:   realm with {n} users in {:.1} s; logging them in",
        setup_started.elapsed().as_secs_f64()
    );
    let names: Vec<String> = (1..=n).map(|i| format!("u{i:04}")).collect();
    let sessions: Vec<Result<(String, String, String)>> = futures::stream::iter(names.clone())
        .map(|u| {
            let kc = kc.clone();
            async move {
                let a = kc.login(MAPPER_CLIENT, &u).await?;
                let b = kc.login(PLAIN_CLIENT, &u).await?;
                if !carries(&claims(&a)?) {
                    bail!("{u}: the role is missing from the first token");
                }
                Ok((
                    u,
                    a["refresh_token"].as_str().unwrap_or_default().to_string(),
                    b["refresh_token"].as_str().unwrap_or_default().to_string(),
                ))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let sessions: Vec<(String, String, String)> = sessions.into_iter().collect::<Result<_>>()?;
    let t = kc.admin_token().await?;
    let users: Vec<Value> = kc
        .http
        .get(format!(
            "{}/admin/realms/{REALM}/users?max={}&briefRepresentation=false",
            kc.url,
            n + 10
        ))
        .bearer_auth(&t)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let end = Utc::now() + chrono::Duration::seconds(20 + (n as i64) * 3 / 20);
    let value = |name: &str| {
        json!({
            "grant": format!("bench-{name}"),
            "entitlement": "ops-console",
            "target": {"kind": "realm_role", "role": ROLE},
            "expires_at": end.to_rfc3339_opts(SecondsFormat::Millis, true),
        })
        .to_string()
    };
    let writes: Vec<Result<()>> = futures::stream::iter(users)
        .map(|mut u| {
            let kc = kc.clone();
            let t = t.clone();
            let v = value(u["username"].as_str().unwrap_or_default());
            async move {
                let id = u["id"].as_str().unwrap_or_default().to_string();
                u["attributes"] = json!({ ATTRIBUTE: [v] });
                kc.http
                    .put(format!("{}/admin/realms/{REALM}/users/{id}", kc.url))
                    .bearer_auth(&t)
                    .json(&u)
                    .send()
                    .await?
                    .error_for_status()?;
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    writes.into_iter().collect::<Result<Vec<()>>>()?;
    let sample = claims(&kc.refresh(MAPPER_CLIENT, &sessions[0].1).await?)?;
    if !carries(&sample) || sample["exp"].as_i64() > Some(end.timestamp()) {
        bail!("a token before the end must carry the role and end by it: {sample}");
    }
    let wait = (end - Utc::now()).to_std().map_err(|_| {
        anyhow!("writing the grant ends took past their end; the machine is too loaded for n = {n}")
    })?;
    eprintln!(
        "jit-bench:   {n} sessions and grant ends ready; {:.1} s until expires_at",
        wait.as_secs_f64()
    );
    tokio::time::sleep(wait).await;
    // Everyone renews right after expires_at, with and without the mapper.
    let results: Vec<Result<(f64, bool, f64, bool)>> = futures::stream::iter(sessions)
        .map(|(_, with, without)| {
            let kc = kc.clone();
            async move {
                let sent = Utc::now();
                let c = claims(&kc.refresh(MAPPER_CLIENT, &with).await?)?;
                let late = (sent - end).num_microseconds().unwrap_or(0) as f64 / 1e6;
                let sent2 = Utc::now();
                let c2 = claims(&kc.refresh(PLAIN_CLIENT, &without).await?)?;
                let late2 = (sent2 - end).num_microseconds().unwrap_or(0) as f64 / 1e6;
                Ok((late, carries(&c), late2, carries(&c2)))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let results: Vec<(f64, bool, f64, bool)> = results.into_iter().collect::<Result<_>>()?;
    let after: Vec<&(f64, bool, f64, bool)> = results.iter().filter(|r| r.0 > 0.0).collect();
    let mut late_with: Vec<f64> = after.iter().filter(|r| r.1).map(|r| r.0).collect();
    late_with.sort_by(f64::total_cmp);
    let plain_carrying = results.iter().filter(|r| r.2 > 0.0 && r.3).count();
    let mut sent: Vec<f64> = results.iter().map(|r| r.0).collect();
    sent.sort_by(f64::total_cmp);
    let with_fig = if late_with.is_empty() {
        "0 s (p50, p99, max)".to_string()
    } else {
        format!(
            "p50 {:.3} s, p99 {:.3} s, max {:.3} s",
            percentile(&late_with, 0.5),
            percentile(&late_with, 0.99),
            late_with[late_with.len() - 1]
        )
    };
    Ok(vec![
        line(
            format!("{n} grants, same expires_at: tokens (mapper) requested after expires_at carrying the role"),
            format!("{} of {}", late_with.len(), after.len()),
            format!(
                "requests sent {:.3}–{:.3} s after expires_at",
                percentile(&sent, 0.0),
                percentile(&sent, 1.0)
            ),
        ),
        line(
            format!("{n} grants: lateness with the mapper"),
            with_fig,
            "peer (Keycloak Workflows, 100 ms runner): p50 0.10–0.13 s, p99 ≤ 0.21 s",
        ),
        line(
            format!("{n} grants: same tokens from a client without the mapper carrying the role"),
            format!("{plain_carrying} of {}", after.len()),
            "mapping left in Keycloak on purpose: without the mapper, lateness = jitd's removal lateness (section burst)",
        ),
    ])
}

/// Extra cost per token issuance: refresh-grant round trips, alternating
/// the client with the mapper and the one without.
async fn cost(kc: &Arc<Kc>, rounds: usize) -> Result<Vec<Line>> {
    let end = Utc::now() + chrono::Duration::hours(2);
    // u0001 gets one grant; u0002 none (created with a grant, then cleared).
    kc.create_realm(2, Some(end)).await?;
    let t = kc.admin_token().await?;
    let users: Vec<Value> = kc
        .http
        .get(format!(
            "{}/admin/realms/{REALM}/users?username=u0002&exact=true",
            kc.url
        ))
        .bearer_auth(&t)
        .send()
        .await?
        .json()
        .await?;
    let mut u2 = users
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("u0002 missing"))?;
    let id = u2["id"].as_str().unwrap_or_default().to_string();
    u2["attributes"] = json!({});
    kc.http
        .put(format!("{}/admin/realms/{REALM}/users/{id}", kc.url))
        .bearer_auth(&t)
        .json(&u2)
        .send()
        .await?
        .error_for_status()?;
    let mut out = Vec::new();
    for (user, label) in [
        ("u0001", "user with 1 grant"),
        ("u0002", "user without grants"),
    ] {
        let mut rt_with = kc.login(MAPPER_CLIENT, user).await?["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut rt_without = kc.login(PLAIN_CLIENT, user).await?["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for i in 0..rounds + 20 {
            let t0 = Instant::now();
            let a = kc.refresh(MAPPER_CLIENT, &rt_with).await?;
            let d_with = t0.elapsed().as_secs_f64() * 1000.0;
            let t1 = Instant::now();
            let b = kc.refresh(PLAIN_CLIENT, &rt_without).await?;
            let d_without = t1.elapsed().as_secs_f64() * 1000.0;
            rt_with = a["refresh_token"].as_str().unwrap_or_default().to_string();
            rt_without = b["refresh_token"].as_str().unwrap_or_default().to_string();
            if i >= 20 {
                // The first rounds warm Keycloak's caches and the JIT.
                with.push(d_with);
                without.push(d_without);
            }
            if i == 20 && user == "u0001" && claims(&a)?["jit_grants"].is_null() {
                bail!("the mapper did not run (no jit_grants claim)");
            }
        }
        with.sort_by(f64::total_cmp);
        without.sort_by(f64::total_cmp);
        let (w50, o50) = (percentile(&with, 0.5), percentile(&without, 0.5));
        let (w90, o90) = (percentile(&with, 0.9), percentile(&without, 0.9));
        out.push(line(
            format!("token issuance (refresh grant), {label}: with / without the mapper"),
            format!("p50 {w50:.2} / {o50:.2} ms; p90 {w90:.2} / {o90:.2} ms"),
            format!(
                "difference at p50 {:+.2} ms ({rounds} rounds each, alternated)",
                w50 - o50
            ),
        ));
    }
    Ok(out)
}

/// Runs the section against Keycloak at `url` (the xtask's, with the
/// extension in `providers/`); the throwaway realm is removed afterwards.
pub async fn run(url: &str) -> Result<Vec<Line>> {
    let kc = Arc::new(Kc {
        url: url.trim_end_matches('/').to_string(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
    });
    let mut out = Vec::new();
    let result = async {
        for n in [50, 200, 500] {
            eprintln!("jit-bench: token-bounds: {n} grants ending at once");
            out.extend(lateness(&kc, n).await?);
        }
        eprintln!("jit-bench: token-bounds: cost per token issuance");
        out.extend(cost(&kc, 300).await?);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let cleanup = kc.drop_realm().await;
    result?;
    cleanup?;
    Ok(out)
}
