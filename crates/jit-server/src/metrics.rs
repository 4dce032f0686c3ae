//! Prometheus metrics of jitd (prometheus-client), served at `GET /metrics`
//! in the Prometheus text format 0.0.4. Names follow the Prometheus
//! conventions: `jit_` prefix for the domain, `http_server_` for the HTTP
//! layer, base units (seconds), `_total` on counters.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `jit_requests` | gauge | `status` | requests in the store by status (extensions as `extension_<status>`) |
//! | `jit_revocations_late` | gauge | | grants whose revoke is late: more than 5 s past their end with the role not yet confirmed removed, or whose removal failed for good (`removal_failed`) (`jit_core::lateness`, the same rule as the API's `revoke_late`) |
//! | `jit_audit_last_seq` | gauge | | highest audit sequence number |
//! | `jit_database_up` | gauge | | 1 when this scrape read the store gauges above, 0 when the database did not answer (within 3 s): the scrape still answers, with the in-memory metrics |
//! | `jit_request_transitions_total` | counter | `entitlement`, `status` | requests entering a status (since start) |
//! | `jit_grant_duration_seconds` | histogram | | wall time of the Keycloak step that grants |
//! | `jit_grant_lateness_seconds` | histogram | | role confirmed in Keycloak − when it was due (approval or start time) |
//! | `jit_removal_duration_seconds` | histogram | | wall time of the Keycloak step that removes |
//! | `jit_removal_lateness_seconds` | histogram | | role confirmed removed − when access should have ended |
//! | `jit_removals_failed_total` | counter | | removals given up for an administrator (`removal_failed`: Keycloak refused, or kept failing past `removal_retry_limit_secs`) |
//! | `jit_disabled_check_last_success_timestamp_seconds` | gauge | | when the check of open requests against Keycloak's disabled users last ran to the end on this jitd (Unix time, seconds, UTC; 0 before the first): alert when it falls behind `disabled_check_secs` |
//! | `jit_disabled_check_failures_total` | counter | | checks against Keycloak's disabled users that could not read them (nothing ended that round) |
//! | `jit_disabled_check_interval_seconds` | gauge | | `[scheduler] disabled_check_secs` in force (seconds): the alert on the gauge above allows three of them, at least 900 s |
//! | `jit_keycloak_request_duration_seconds` | histogram | `operation` | every HTTP call to Keycloak |
//! | `jit_keycloak_errors_total` | counter | `operation`, `kind` | failed Keycloak calls by kind |
//! | `jit_sse_subscribers` | gauge | | open `/v1/events` streams |
//! | `jit_webhook_deliveries_total` | counter | `endpoint`, `outcome` | webhook delivery attempts |
//! | `jit_webhook_delivery_duration_seconds` | histogram | `endpoint` | webhook delivery attempt time |
//! | `http_server_requests_total` | counter | `method`, `route`, `status` | HTTP requests served |
//! | `http_server_request_duration_seconds` | histogram | `method`, `route` | time to the response head |
//!
//! `route` is the matched route template (`/v1/requests/{id}`), never the
//! raw path, so ids do not multiply series.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::{AuditRecord, Store};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    entitlement: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeycloakLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeycloakErrorLabels {
    operation: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpDurationLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    endpoint: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets (seconds): 5 ms … ~41 s.
fn latency() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 14,
    ))
}

/// Lateness buckets (seconds): 0.1 s … ~27 min. Late revocations matter at
/// every scale, from a slow tick to a long Keycloak outage.
fn lateness() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.1, 2.0, 15,
    ))
}

/// Every metric of a jitd. Cheap to share (`Arc`); each method records one
/// observation and never fails.
pub struct Metrics {
    registry: Registry,
    transitions: Family<TransitionLabels, Counter>,
    grant_duration: Histogram,
    grant_lateness: Histogram,
    removal_duration: Histogram,
    removal_lateness: Histogram,
    removals_failed: Counter,
    disabled_check_success: Gauge,
    disabled_check_failures: Counter,
    disabled_check_interval: Gauge,
    keycloak_duration: HistogramFamily<KeycloakLabels>,
    keycloak_errors: Family<KeycloakErrorLabels, Counter>,
    sse_subscribers: Gauge,
    webhook_deliveries: Family<WebhookLabels, Counter>,
    webhook_duration: HistogramFamily<EndpointLabels>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<HttpDurationLabels>,
    /// Every series name this registry can expose (see [`Metrics::names`]).
    names: Vec<String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Gauges read from the store at each scrape (they survive restarts and are
/// the same on every replica).
struct StoreGauges(Store);

impl std::fmt::Debug for StoreGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreGauges")
    }
}

thread_local! {
    /// Set while [`Metrics::encode_without_store`] encodes on this thread.
    static WITHOUT_STORE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `jit_database_up`: whether this scrape read the store gauges.
fn database_up(encoder: &mut DescriptorEncoder, up: bool) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(up as i64);
    g.encode(encoder.encode_descriptor(
        "jit_database_up",
        "1 when this scrape read the store gauges, 0 when the database did not answer",
        None,
        g.metric_type(),
    )?)
}

impl Collector for StoreGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if WITHOUT_STORE.with(|w| w.get()) {
            return database_up(&mut encoder, false);
        }
        let (by_status, late) = match self.0.sync().stats(chrono::Utc::now()) {
            Ok(s) => s,
            Err(e) => {
                crate::store::log_failure(&e, "metrics: cannot read the store");
                return database_up(&mut encoder, false);
            }
        };
        database_up(&mut encoder, true)?;
        {
            let mut family = encoder.encode_descriptor(
                "jit_requests",
                "Requests in the store by status (extensions as extension_<status>)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            let mut seen: Vec<(String, i64)> = jit_core::Status::ALL
                .iter()
                .map(|s| (s.as_str().to_string(), 0))
                .collect();
            for (k, n) in by_status {
                match seen.iter_mut().find(|(s, _)| *s == k) {
                    Some(e) => e.1 = n,
                    None => seen.push((k, n)),
                }
            }
            for (status, n) in &seen {
                let labels = [("status", status.as_str())];
                ConstGauge::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        let g = ConstGauge::new(late);
        g.encode(encoder.encode_descriptor(
            "jit_revocations_late",
            "Grants past their end whose role is not yet confirmed removed from Keycloak",
            None,
            g.metric_type(),
        )?)?;
        if let Ok(seq) = self.0.sync().last_seq() {
            let g = ConstGauge::new(seq);
            g.encode(encoder.encode_descriptor(
                "jit_audit_last_seq",
                "Highest audit sequence number",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// A registry with every metric; the store gauges read `store` at each
    /// scrape.
    pub fn new(store: Store) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(StoreGauges(store)));
        let mut names: Vec<String> = [
            "jit_requests",
            "jit_revocations_late",
            "jit_audit_last_seq",
            "jit_database_up",
        ]
        .map(String::from)
        .to_vec();
        let m = Metrics {
            transitions: Family::default(),
            grant_duration: latency(),
            grant_lateness: lateness(),
            removal_duration: latency(),
            removal_lateness: lateness(),
            removals_failed: Counter::default(),
            disabled_check_success: Gauge::default(),
            disabled_check_failures: Counter::default(),
            disabled_check_interval: Gauge::default(),
            keycloak_duration: Family::new_with_constructor(latency),
            keycloak_errors: Family::default(),
            sse_subscribers: Gauge::default(),
            webhook_deliveries: Family::default(),
            webhook_duration: Family::new_with_constructor(latency),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency),
            registry: Registry::default(),
            names: Vec::new(),
        };
        // Counters get `_total` appended by the encoder.
        registry.register(
            "jit_request_transitions",
            "Requests entering a status, by entitlement and status (since start)",
            m.transitions.clone(),
        );
        registry.register(
            "jit_grant_duration_seconds",
            "Wall time of the Keycloak step that grants a role, seconds",
            m.grant_duration.clone(),
        );
        registry.register(
            "jit_grant_lateness_seconds",
            "Role confirmed in Keycloak minus when the grant was due (approval or start time), seconds",
            m.grant_lateness.clone(),
        );
        registry.register(
            "jit_removal_duration_seconds",
            "Wall time of the Keycloak step that removes a role, seconds",
            m.removal_duration.clone(),
        );
        registry.register(
            "jit_removal_lateness_seconds",
            "Role confirmed removed from Keycloak minus when access should have ended, seconds",
            m.removal_lateness.clone(),
        );
        registry.register(
            "jit_removals_failed",
            "Removals given up for an administrator (removal_failed): Keycloak refused, or kept failing past removal_retry_limit_secs",
            m.removals_failed.clone(),
        );
        registry.register(
            "jit_disabled_check_last_success_timestamp_seconds",
            "When the check of open requests against Keycloak's disabled users last ran to the end (Unix time, seconds; 0 before the first)",
            m.disabled_check_success.clone(),
        );
        registry.register(
            "jit_disabled_check_failures",
            "Checks against Keycloak's disabled users that could not read them (nothing ended that round)",
            m.disabled_check_failures.clone(),
        );
        registry.register(
            "jit_disabled_check_interval_seconds",
            "[scheduler] disabled_check_secs in force: how often the check against Keycloak's disabled users runs, seconds",
            m.disabled_check_interval.clone(),
        );
        registry.register(
            "jit_keycloak_request_duration_seconds",
            "HTTP calls to Keycloak by operation, seconds (failed ones included)",
            m.keycloak_duration.clone(),
        );
        registry.register(
            "jit_keycloak_errors",
            "Failed calls to Keycloak by operation and kind (unreachable, timeout, login, http_5xx, http_429, http_401, http_403, not_found, http_4xx, refused, not_kept, conflict)",
            m.keycloak_errors.clone(),
        );
        registry.register(
            "jit_sse_subscribers",
            "Open /v1/events streams",
            m.sse_subscribers.clone(),
        );
        registry.register(
            "jit_webhook_deliveries",
            "Webhook delivery attempts by endpoint and outcome (delivered, failed, gave_up)",
            m.webhook_deliveries.clone(),
        );
        registry.register(
            "jit_webhook_delivery_duration_seconds",
            "Webhook delivery attempts by endpoint, seconds",
            m.webhook_duration.clone(),
        );
        registry.register(
            "http_server_requests",
            "HTTP requests served by method, route template and status code",
            m.http_requests.clone(),
        );
        registry.register(
            "http_server_request_duration_seconds",
            "Time from request to response head by method and route template, seconds",
            m.http_duration.clone(),
        );
        for (name, kind) in [
            ("jit_request_transitions", "counter"),
            ("jit_grant_duration_seconds", "histogram"),
            ("jit_grant_lateness_seconds", "histogram"),
            ("jit_removal_duration_seconds", "histogram"),
            ("jit_removal_lateness_seconds", "histogram"),
            ("jit_removals_failed", "counter"),
            ("jit_disabled_check_last_success_timestamp_seconds", "gauge"),
            ("jit_disabled_check_failures", "counter"),
            ("jit_disabled_check_interval_seconds", "gauge"),
            ("jit_keycloak_request_duration_seconds", "histogram"),
            ("jit_keycloak_errors", "counter"),
            ("jit_sse_subscribers", "gauge"),
            ("jit_webhook_deliveries", "counter"),
            ("jit_webhook_delivery_duration_seconds", "histogram"),
            ("http_server_requests", "counter"),
            ("http_server_request_duration_seconds", "histogram"),
        ] {
            match kind {
                "counter" => names.push(format!("{name}_total")),
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.push(format!("{name}{s}"));
                    }
                }
                _ => names.push(name.to_string()),
            }
        }
        Metrics {
            registry,
            names,
            ..m
        }
    }

    /// Every series name jitd may expose (counters with `_total`,
    /// histograms as `_bucket`, `_sum`, `_count`); a family without
    /// observations yet is left out of the exposition.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The exposition, Prometheus text format 0.0.4.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// [`Metrics::encode`] without reading the store: the in-memory
    /// metrics and `jit_database_up 0` (a scrape while the database does
    /// not answer). Never blocks.
    pub fn encode_without_store(&self) -> String {
        WITHOUT_STORE.with(|w| w.set(true));
        let out = self.encode();
        WITHOUT_STORE.with(|w| w.set(false));
        out
    }

    /// Counts the status changes in freshly written audit rows.
    pub fn audit_written(&self, recs: &[AuditRecord]) {
        for r in recs {
            if let Some(to) = &r.to_status {
                self.transitions
                    .get_or_create(&TransitionLabels {
                        entitlement: r.entitlement_id.clone(),
                        status: to.clone(),
                    })
                    .inc();
            }
        }
    }

    /// A grant reached Keycloak: the step took `took`, `late_secs` after it
    /// was due.
    pub fn granted(&self, took: Duration, late_secs: f64) {
        self.grant_duration.observe(took.as_secs_f64());
        self.grant_lateness.observe(late_secs.max(0.0));
    }

    /// A role left Keycloak: the step took `took`, `late_secs` after access
    /// should have ended.
    pub fn removed(&self, took: Duration, late_secs: f64) {
        self.removal_duration.observe(took.as_secs_f64());
        self.removal_lateness.observe(late_secs.max(0.0));
    }

    /// A removal was given up (`removal_failed`): an administrator must act.
    pub fn removal_failed(&self) {
        self.removals_failed.inc();
    }

    /// The check against Keycloak's disabled users ran to the end (or had
    /// nothing to check) now.
    pub fn disabled_check_done(&self) {
        self.disabled_check_success
            .set(chrono::Utc::now().timestamp());
    }

    /// The check against Keycloak's disabled users runs every `secs`
    /// seconds (`[scheduler] disabled_check_secs`), exposed so that the
    /// staleness alert follows the configured interval.
    pub fn disabled_check_every(&self, secs: u64) {
        self.disabled_check_interval
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    /// The check against Keycloak's disabled users could not read them.
    pub fn disabled_check_failed(&self) {
        self.disabled_check_failures.inc();
    }

    /// One webhook delivery attempt to `endpoint` (a configured name, never
    /// a URL with a secret in it): `outcome` is `delivered`, `failed` (will
    /// retry) or `gave_up`.
    pub fn webhook_attempt(&self, endpoint: &str, outcome: &str, took: Duration) {
        self.webhook_deliveries
            .get_or_create(&WebhookLabels {
                endpoint: endpoint.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.webhook_duration
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts an open event stream until the guard is dropped.
    pub fn sse_subscriber(self: &Arc<Self>) -> SseGuard {
        self.sse_subscribers.inc();
        SseGuard(self.clone())
    }
}

impl jit_keycloak::CallObserver for Metrics {
    fn observe(&self, call: &jit_keycloak::KeycloakCall) {
        self.keycloak_duration
            .get_or_create(&KeycloakLabels {
                operation: call.operation.clone(),
            })
            .observe(call.elapsed.as_secs_f64());
        if let Some(kind) = call.error_kind {
            self.keycloak_errors
                .get_or_create(&KeycloakErrorLabels {
                    operation: call.operation.clone(),
                    kind: kind.to_string(),
                })
                .inc();
        }
    }
}

/// Held by an open `/v1/events` stream.
pub struct SseGuard(Arc<Metrics>);

impl Drop for SseGuard {
    fn drop(&mut self) {
        self.0.sse_subscribers.dec();
    }
}

/// Middleware: counts each request by method, matched route and status, and
/// times it to the response head.
pub async fn track_http(
    axum::extract::State(m): axum::extract::State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let resp = next.run(req).await;
    m.http_duration
        .get_or_create(&HttpDurationLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_follows_the_conventions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let m = Arc::new(Metrics::new(store));
        m.granted(Duration::from_millis(30), 0.4);
        m.removed(Duration::from_millis(20), 7.0);
        m.webhook_attempt("ops-chat", "delivered", Duration::from_millis(10));
        m.disabled_check_every(3600);
        let guard = m.sse_subscriber();
        let text = m.encode();
        for want in [
            "jit_requests{status=\"active\"} 0",
            "jit_revocations_late 0",
            "jit_audit_last_seq 0",
            "# TYPE jit_grant_lateness_seconds histogram",
            "jit_grant_lateness_seconds_count 1",
            "jit_removal_lateness_seconds_bucket{le=\"12.8\"} 1",
            "jit_sse_subscribers 1",
            "jit_disabled_check_interval_seconds 3600",
            "jit_webhook_deliveries_total{endpoint=\"ops-chat\",outcome=\"delivered\"} 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        drop(guard);
        assert!(m.encode().contains("jit_sse_subscribers 0"));
        assert!(text.contains("jit_database_up 1"), "{text}");
        // A scrape while the database does not answer: the in-memory
        // metrics, no store gauges, and the database said down.
        let quick = m.encode_without_store();
        assert!(quick.contains("jit_database_up 0"), "{quick}");
        assert!(
            quick.contains("jit_grant_lateness_seconds_count 1"),
            "{quick}"
        );
        assert!(!quick.contains("jit_requests{"), "{quick}");
        assert!(
            m.encode().contains("jit_database_up 1"),
            "the next scrape reads it again"
        );
    }
}
