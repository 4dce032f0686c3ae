//! Outgoing webhooks: audit events pushed to chat and other systems.
//!
//! Each `[[webhook]]` of `jitd.toml` names an endpoint, a body format
//! (CloudEvents 1.0 structured JSON, a Slack incoming-webhook message with
//! Block Kit, or a Microsoft Teams Adaptive Card) and a filter on event
//! kinds and entitlements. The store queues every matching audit row in its
//! outbox in the same transaction as the row itself ([`crate::store`]); one
//! task per endpoint here delivers the queue in audit order.
//!
//! Delivery is at least once: a row leaves the queue only after a 2xx, and
//! every attempt carries the same idempotency id (`webhook-id` header,
//! CloudEvents `id`). Attempts are bounded: transient failures (connection
//! errors, timeouts, 408, 425, 429, 5xx) back off exponentially (1 s
//! doubling to `backoff_max_secs`) up to `max_attempts`; other 4xx answers
//! are permanent. A row given up is kept as `failed` with its last error,
//! logged and counted (`jit_webhook_deliveries_total{outcome="gave_up"}`;
//! `delivered` and `failed` count the other attempts).
//!
//! Every request is signed as in the Standard Webhooks specification:
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`
//! with `webhook-timestamp` in Unix seconds. See `docs/webhooks.md` for how
//! to verify, and the replay window receivers should apply.
//!
//! Approving never happens in chat (a click in chat cannot prove who
//! clicked): messages link to the request (`jit://request/<id>`, and a
//! configured web URL) and name the CLI command.

pub mod format;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use jit_core::api::EventKind;
use serde::Deserialize;
use sha2::Sha256;

use crate::store::{AuditRecord, Claim, OutboxItem, OutboxRouter};
use crate::AppState;

/// Body format of an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CloudEvents 1.0, structured mode (`application/cloudevents+json`).
    #[default]
    Cloudevents,
    /// Slack incoming webhook (`text` + Block Kit `blocks`).
    Slack,
    /// Microsoft Teams incoming webhook / Workflows: an Adaptive Card 1.4.
    Teams,
}

/// One `[[webhook]]` table of `jitd.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique name (`[a-z0-9_-]`, ≤ 64): the key of its outbox rows, its
    /// metric label and how logs name it (the URL itself is never logged).
    pub name: String,
    /// Receiver URL (`http` or `https`). Or `url_file`, for URLs that are
    /// themselves secrets (Slack, Teams).
    #[serde(default)]
    pub url: Option<String>,
    /// File holding the receiver URL (relative to the config's folder).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub format: Format,
    /// Event kinds to send: exact (`request.created`), a family
    /// (`grant.*`) or `*`. Empty: every event.
    #[serde(default)]
    pub events: Vec<String>,
    /// Entitlement ids to send events of. Empty: every entitlement.
    #[serde(default)]
    pub entitlements: Vec<String>,
    /// Environment variable holding the signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the signing secret (relative to the config's folder).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Attempts per event before it is given up (1..=50, default 10).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Limit of one attempt, seconds (1..=120, default 10).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Longest wait between two attempts, seconds (1..=3600, default 300).
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: u64,
    /// Web page of a request, `{id}` replaced by the request id, e.g.
    /// `https://jit.example.com/requests/{id}`: a button in chat messages.
    /// The `jit://request/<id>` deep link is always in the message.
    #[serde(default)]
    pub request_url: Option<String>,
}

fn default_attempts() -> u32 {
    10
}
fn default_timeout() -> u64 {
    10
}
fn default_backoff_max() -> u64 {
    300
}

/// Whether `family` is one a filter may name (`request.*`, `grant.*`,
/// `extension.*`): a family of some [`EventKind`].
fn known_family(family: &str) -> bool {
    EventKind::ALL.iter().any(|k| k.family() == family)
}

/// The names of every event kind jitd writes, for messages.
fn known_events() -> String {
    EventKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_url(what: &str, u: &str) -> anyhow::Result<url::Url> {
    let parsed =
        url::Url::parse(u.trim()).map_err(|e| anyhow::anyhow!("{what}: not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!(
            "{what}: scheme must be http or https, not {}",
            parsed.scheme()
        );
    }
    // The parser turns `https:///path` into host "path" and accepts
    // `http:example.com`: ask the text itself for `scheme://host`.
    let authority = u.trim().split_once("://").map_or("", |(_, rest)| rest);
    if parsed.host_str().is_none_or(str::is_empty)
        || authority.is_empty()
        || authority.starts_with('/')
    {
        anyhow::bail!("{what}: no host");
    }
    Ok(parsed)
}

impl WebhookConfig {
    /// Resolves relative file paths against `base` (the config's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        for f in [&mut self.url_file, &mut self.secret_file]
            .into_iter()
            .flatten()
        {
            *f = base.join(&*f);
        }
    }

    /// Checks everything that can be checked without the secret: name,
    /// URL (read from `url_file` if given), filters, limits, link template.
    /// Errors name the webhook and the field, never the URL's content.
    pub fn validate(&self) -> anyhow::Result<()> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 64
            || !n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            anyhow::bail!("webhook name {n:?}: use 1-64 of a-z, 0-9, '-', '_'");
        }
        let what = format!("webhook '{n}': url");
        self.receiver_url()
            .and_then(|u| check_url(&what, &u).map(|_| ()))
            .map_err(|e| {
                // url::ParseError does not echo the input; keep it that way.
                anyhow::anyhow!("{e}")
            })?;
        for ev in &self.events {
            let ok = ev == "*"
                || ev.split_once('.').is_some_and(|(fam, kind)| {
                    known_family(fam)
                        && !kind.is_empty()
                        && (kind == "*" || kind.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                });
            if !ok {
                anyhow::bail!(
                    "webhook '{n}': events: {ev:?} is not '*', a family ('request.*', 'grant.*', 'extension.*') or an event kind such as 'request.created' (known: {})",
                    known_events()
                );
            }
            if !ev.ends_with('*') && ev.parse::<EventKind>().is_err() {
                tracing::warn!(webhook = %n, event = %ev, "webhook filter names an event kind jitd does not write (yet)");
            }
        }
        if self.entitlements.iter().any(|e| e.trim().is_empty()) {
            anyhow::bail!("webhook '{n}': entitlements: empty id");
        }
        match (&self.secret_env, &self.secret_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("webhook '{n}': give secret_env or secret_file, not both")
            }
            (None, None) => anyhow::bail!(
                "webhook '{n}': every delivery is signed: set secret_env (an environment variable) or secret_file"
            ),
            _ => {}
        }
        if !(1..=50).contains(&self.max_attempts) {
            anyhow::bail!("webhook '{n}': max_attempts must be 1..=50");
        }
        if !(1..=120).contains(&self.timeout_secs) {
            anyhow::bail!("webhook '{n}': timeout_secs must be 1..=120");
        }
        if !(1..=3600).contains(&self.backoff_max_secs) {
            anyhow::bail!("webhook '{n}': backoff_max_secs must be 1..=3600");
        }
        if let Some(t) = &self.request_url {
            if !t.contains("{id}") {
                anyhow::bail!("webhook '{n}': request_url must contain {{id}}");
            }
            check_url(
                &format!("webhook '{n}': request_url"),
                &t.replace("{id}", "x"),
            )?;
        }
        Ok(())
    }

    /// The receiver URL, from `url` or `url_file`.
    fn receiver_url(&self) -> anyhow::Result<String> {
        match (&self.url, &self.url_file) {
            (Some(u), None) => Ok(u.trim().to_string()),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    anyhow::anyhow!(
                        "webhook '{}': cannot read url_file {}: {e}",
                        self.name,
                        f.display()
                    )
                }),
            _ => anyhow::bail!(
                "webhook '{}': give url or url_file (one of them)",
                self.name
            ),
        }
    }

    /// Whether an audit row of `event` about `entitlement` is for this
    /// endpoint.
    pub fn wants(&self, event: &str, entitlement: &str) -> bool {
        let ev_ok = self.events.is_empty()
            || self.events.iter().any(|f| {
                f == "*"
                    || f == event
                    || f.strip_suffix(".*")
                        .is_some_and(|fam| event.split_once('.').is_some_and(|(e, _)| e == fam))
            });
        let ent_ok =
            self.entitlements.is_empty() || self.entitlements.iter().any(|e| e == entitlement);
        ev_ok && ent_ok
    }
}

/// Checks a set of webhook tables: each valid, names unique.
pub fn validate_all(hooks: &[WebhookConfig]) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    for h in hooks {
        h.validate()?;
        if !seen.insert(h.name.as_str()) {
            anyhow::bail!("webhook name '{}' is used twice", h.name);
        }
    }
    Ok(())
}

/// An endpoint ready to deliver: config plus resolved URL and secret.
pub struct Endpoint {
    pub config: WebhookConfig,
    url: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the URL nor the key: both may be secrets.
        f.debug_struct("Endpoint")
            .field("name", &self.config.name)
            .finish()
    }
}

/// The HMAC key of a secret: Standard Webhooks secrets (`whsec_` + base64)
/// are decoded; any other secret is used as its UTF-8 bytes.
pub fn signing_key(secret: &str) -> anyhow::Result<Vec<u8>> {
    let s = secret.trim();
    if s.is_empty() {
        anyhow::bail!("empty secret");
    }
    match s.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| anyhow::anyhow!("a whsec_ secret must be base64 after the prefix")),
        None => Ok(s.as_bytes().to_vec()),
    }
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` — the value
/// of the `webhook-signature` header (Standard Webhooks).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Checks a `webhook-signature` header value (space-separated `v1,<sig>`
/// entries) in constant time, and that `timestamp` is within
/// `tolerance_secs` of `now_secs`. What a receiver does; used by the tests.
pub fn verify(
    key: &[u8],
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now_secs: i64,
    tolerance_secs: i64,
) -> bool {
    if (now_secs - timestamp).abs() > tolerance_secs {
        return false;
    }
    header.split_whitespace().any(|entry| {
        let Some(sig) = entry.strip_prefix("v1,") else {
            return false;
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    })
}

/// The configured endpoints of a running jitd.
#[derive(Debug, Default)]
pub struct Webhooks {
    pub endpoints: Vec<Arc<Endpoint>>,
    /// CloudEvents `source`: `urn:jit-access:{realm}`.
    pub source: String,
}

impl Webhooks {
    /// Resolves URLs and secrets (environment or files) of validated
    /// configs. Errors: a secret variable unset or a file unreadable.
    pub fn new(configs: &[WebhookConfig], realm: &str) -> anyhow::Result<Webhooks> {
        validate_all(configs)?;
        let mut endpoints = Vec::new();
        for c in configs {
            let secret = match (&c.secret_env, &c.secret_file) {
                (Some(var), _) => std::env::var(var).map_err(|_| {
                    anyhow::anyhow!(
                        "webhook '{}': environment variable {var} (its secret) is not set",
                        c.name
                    )
                })?,
                (_, Some(f)) => std::fs::read_to_string(f).map_err(|e| {
                    anyhow::anyhow!(
                        "webhook '{}': cannot read secret_file {}: {e}",
                        c.name,
                        f.display()
                    )
                })?,
                _ => unreachable!("validated"),
            };
            let key = signing_key(&secret)
                .map_err(|e| anyhow::anyhow!("webhook '{}': secret: {e}", c.name))?;
            endpoints.push(Arc::new(Endpoint {
                config: c.clone(),
                url: c.receiver_url()?,
                key,
            }));
        }
        Ok(Webhooks {
            endpoints,
            source: format!("urn:jit-access:{realm}"),
        })
    }

    /// The outbox router: names of the endpoints that want `rec`.
    pub fn router(self: &Arc<Self>) -> Option<OutboxRouter> {
        if self.endpoints.is_empty() {
            return None;
        }
        let me = self.clone();
        Some(Arc::new(move |rec: &AuditRecord| {
            me.endpoints
                .iter()
                .filter(|e| e.config.wants(rec.event.as_str(), &rec.entitlement_id))
                .map(|e| e.config.name.clone())
                .collect()
        }))
    }
}

/// Outcome of one attempt.
enum Attempt {
    Delivered,
    /// Worth another attempt (connection, timeout, 408/425/429/5xx).
    Transient(String),
    /// The receiver refused it for good (other 4xx).
    Permanent(String),
}

/// Wait before attempt `n + 1` after `n` failed attempts: 1 s doubling,
/// capped at `max_secs`.
pub fn backoff(n: u32, max_secs: u64) -> Duration {
    let secs = 1u64.checked_shl(n.saturating_sub(1)).unwrap_or(u64::MAX);
    Duration::from_secs(secs.min(max_secs))
}

/// Starts one delivery task per endpoint; they end when `state.stopping`
/// flips. Rows of endpoints no longer configured are given up first.
pub fn spawn(state: Arc<AppState>, hooks: Arc<Webhooks>) -> Vec<tokio::task::JoinHandle<()>> {
    let known: Vec<String> = hooks
        .endpoints
        .iter()
        .map(|e| e.config.name.clone())
        .collect();
    let store = state.store.clone();
    let housekeeping = tokio::spawn(async move {
        match store.outbox_abandon_unknown(&known, Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                rows = n,
                "webhook events of endpoints no longer configured given up"
            ),
            Err(e) => crate::store::log_failure(&e, "outbox check failed"),
        }
        // Finished rows are kept a week for inspection.
        if let Err(e) = store
            .outbox_prune(Utc::now() - chrono::Duration::days(7))
            .await
        {
            crate::store::log_failure(&e, "outbox prune failed");
        }
    });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("jitd/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client");
    hooks
        .endpoints
        .iter()
        .map(|e| {
            tokio::spawn(run_endpoint(
                state.clone(),
                hooks.clone(),
                e.clone(),
                http.clone(),
            ))
        })
        .chain([housekeeping])
        .collect()
}

async fn run_endpoint(
    state: Arc<AppState>,
    hooks: Arc<Webhooks>,
    ep: Arc<Endpoint>,
    http: reqwest::Client,
) {
    let mut stop = state.stopping.subscribe();
    let mut seq = state.last_seq.subscribe();
    let name = ep.config.name.clone();
    // Another jitd on the same database may hold a lease: poll now and then.
    let idle_poll = Duration::from_secs(5);
    loop {
        if *stop.borrow() {
            return;
        }
        let now = Utc::now();
        let lease = now + chrono::Duration::seconds(ep.config.timeout_secs as i64 + 5);
        let wait = match state.store.outbox_claim(&name, now, lease).await {
            Ok(Claim::Item(item)) => {
                deliver_and_record(&state, &hooks, &ep, &http, *item).await;
                continue;
            }
            Ok(Claim::WaitUntil(t)) => (t - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(idle_poll),
            Ok(Claim::Idle) => idle_poll,
            Err(e) => {
                crate::store::log_failure(&e, &format!("outbox read failed (webhook {name})"));
                idle_poll
            }
        };
        tokio::select! {
            _ = seq.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn deliver_and_record(
    state: &AppState,
    hooks: &Webhooks,
    ep: &Endpoint,
    http: &reqwest::Client,
    item: OutboxItem,
) {
    let name = &ep.config.name;
    let attempt = item.attempts + 1;
    let started = std::time::Instant::now();
    let outcome = attempt_once(state, hooks, ep, http, &item).await;
    let took = started.elapsed();
    let now = Utc::now();
    let ev = &item.event;
    let result = match outcome {
        Attempt::Delivered => {
            state.metrics.webhook_attempt(name, "delivered", took);
            tracing::debug!(webhook = %name, event = %ev.record.event, id = %ev.id, attempt, "webhook delivered");
            state.store.outbox_delivered(item.id, attempt, now).await
        }
        Attempt::Transient(err) if attempt < ep.config.max_attempts => {
            state.metrics.webhook_attempt(name, "failed", took);
            let wait = backoff(attempt, ep.config.backoff_max_secs);
            tracing::warn!(webhook = %name, event = %ev.record.event, id = %ev.id, attempt, error = %err, retry_in_secs = wait.as_secs(), "webhook delivery failed; will retry");
            state
                .store
                .outbox_retry(
                    item.id,
                    attempt,
                    now + chrono::Duration::from_std(wait).unwrap_or_default(),
                    &err,
                )
                .await
        }
        Attempt::Transient(err) | Attempt::Permanent(err) => {
            state.metrics.webhook_attempt(name, "gave_up", took);
            let err = if attempt >= ep.config.max_attempts {
                format!("{err} (gave up after {attempt} attempts)")
            } else {
                format!("{err} (refused for good)")
            };
            tracing::error!(webhook = %name, event = %ev.record.event, id = %ev.id, request = %ev.record.request_id, attempt, error = %err, "webhook event given up");
            state.store.outbox_failed(item.id, attempt, now, &err).await
        }
    };
    if let Err(e) = result {
        // The lease runs out and the row is sent again: at least once.
        crate::store::log_failure(&e, &format!("outbox update failed (webhook {name})"));
    }
}

async fn attempt_once(
    state: &AppState,
    hooks: &Webhooks,
    ep: &Endpoint,
    http: &reqwest::Client,
    item: &OutboxItem,
) -> Attempt {
    let ev = &item.event;
    let policy = state.policy();
    let name = policy
        .entitlement(&ev.record.entitlement_id)
        .map(|e| e.display_name.clone())
        .unwrap_or_else(|| ev.record.entitlement_id.clone());
    let link = ep
        .config
        .request_url
        .as_ref()
        .map(|t| t.replace("{id}", &ev.record.request_id));
    let ctx = format::Context {
        source: &hooks.source,
        entitlement_name: &name,
        web_url: link.as_deref(),
    };
    let (content_type, body) = format::render(ep.config.format, ev, &ctx);
    let timestamp = Utc::now().timestamp();
    let signature = sign(&ep.key, &ev.id, timestamp, &body);
    let sent = http
        .post(&ep.url)
        .timeout(Duration::from_secs(ep.config.timeout_secs))
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header("webhook-id", &ev.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(resp) if resp.status().is_success() => Attempt::Delivered,
        Ok(resp) => {
            let s = resp.status();
            let msg = format!("receiver answered {s}");
            if s.is_server_error() || matches!(s.as_u16(), 408 | 425 | 429) {
                Attempt::Transient(msg)
            } else {
                Attempt::Permanent(msg)
            }
        }
        // Without the URL: it may be a secret (Slack, Teams).
        Err(e) => Attempt::Transient(describe(&e)),
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut src = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// How far a receiver should let `webhook-timestamp` be from its own
/// clock, seconds, each way (documented in `docs/webhooks.md`): older or
/// newer requests are refused as possible replays.
pub const REPLAY_WINDOW_SECS: i64 = 300;

#[cfg(test)]
mod tests;
