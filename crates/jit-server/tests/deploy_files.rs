//! Every metric the Grafana dashboard and the alert rules in `deploy/`
//! query is one jitd exposes (`Metrics::names`), so a renamed metric
//! cannot silently empty a panel or disarm an alert. (promtool checks the
//! rules themselves: `tests/tests/deploy.rs`.)

use std::collections::BTreeSet;
use std::path::PathBuf;

fn deploy() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../../deploy")
}

/// Metric names (`jit_…`, `http_server_…`) in PromQL-bearing text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["jit_", "http_server_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.insert(tail[..end].to_string());
            }
            rest = &tail[end.max(1)..];
        }
    }
    out
}

#[test]
fn dashboard_and_alert_rules_query_metrics_jitd_exposes() {
    let dir = tempfile::tempdir().unwrap();
    let store = jit_server::Store::open(&dir.path().join("db.sqlite")).unwrap();
    let metrics = jit_server::metrics::Metrics::new(store);
    let exposed: BTreeSet<&str> = metrics.names().iter().map(String::as_str).collect();

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/jitd-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs = String::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push_str(t["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        exprs.push_str(v["definition"].as_str().unwrap_or(""));
        exprs.push('\n');
    }
    let rules = std::fs::read_to_string(deploy().join("prometheus/jitd-alerts.yml")).unwrap();
    let rule_exprs: Vec<&str> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let used: BTreeSet<String> = metric_names(&exprs)
        .into_iter()
        .chain(metric_names(&rule_exprs.join("\n")))
        .collect();
    assert!(used.len() >= 10, "too few metrics found: {used:?}");
    let missing: Vec<_> = used
        .iter()
        .filter(|m| !exposed.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "queried but not exposed by jitd: {missing:?}\nexposed: {exposed:?}"
    );
}
