//! `/v1/audit` (JSON, JSON lines, CSV) and `/v1/audit/verify`.

use super::*;
use crate::openapi::AuditFormat;

/// Query of `GET /v1/audit`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditParams {
    /// Only rows after this sequence number (≥ 0; a negative one is 400,
    /// as for `/v1/events`).
    #[serde(default)]
    #[param(minimum = 0)]
    since: i64,
    /// At most this many rows (default 10000, max 100000).
    #[param(minimum = 0)]
    limit: Option<usize>,
    /// `json` (default), `jsonl` or `csv`.
    #[param(value_type = Option<AuditFormat>)]
    format: Option<String>,
}

/// Audit rows the caller may see, oldest first: auditors all, others the
/// rows of requests they may see.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])),
    params(AuditParams),
    responses((status = 200, description = "Audit rows", content(
        (Vec<AuditRecord> = "application/json"),
        (String = "application/jsonl"),
        (String = "text/csv"),
    ))))]
pub(super) async fn audit(
    State(state): St,
    caller: Caller,
    Q(q): Q<AuditParams>,
) -> Result<Response, ApiError> {
    if q.since < 0 {
        return Err(ApiError::BadRequest(
            "since must be an audit sequence number: a whole number ≥ 0".into(),
        ));
    }
    let limit = q.limit.unwrap_or(10_000).min(100_000);
    let viewer = Viewer::of(&caller.principal, &state.policy());
    let (rows, _) = state
        .store
        .audit_visible(&viewer, q.since, None, limit)
        .await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(rows).into_response()),
        "jsonl" => {
            let mut s = String::new();
            for r in &rows {
                s.push_str(&serde_json::to_string(r).expect("audit row serialises"));
                s.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "application/jsonl")], s).into_response())
        }
        "csv" => {
            let mut s = String::from("seq,at,event,request_id,entitlement_id,requester_id,actor,reason,from_status,to_status,prev_hash,hash,actor_client\n");
            for r in &rows {
                // Quote every cell; neutralise spreadsheet formulas (=, +, -, @).
                let f = |v: &str| {
                    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                        format!("'{v}")
                    } else {
                        v.to_string()
                    };
                    format!("\"{}\"", v.replace('"', "\"\""))
                };
                s.push_str(
                    &[
                        r.seq.to_string(),
                        r.at.to_rfc3339(),
                        f(r.event.as_str()),
                        f(&r.request_id),
                        f(&r.entitlement_id),
                        f(&r.requester_id),
                        f(&r.actor),
                        f(r.reason.as_deref().unwrap_or("")),
                        f(r.from_status.as_deref().unwrap_or("")),
                        f(r.to_status.as_deref().unwrap_or("")),
                        r.prev_hash.clone(),
                        r.hash.clone(),
                        f(r.actor_client.as_deref().unwrap_or("")),
                    ]
                    .join(","),
                );
                s.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "text/csv")], s).into_response())
        }
        other => Err(ApiError::BadRequest(format!(
            "unknown format '{other}' (json, jsonl or csv)"
        ))),
    }
}

/// Recomputes the whole hash chain (auditors only).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses(
        (status = 200, description = "Result of the check", body = AuditVerification),
        (status = 403, description = "Not an auditor (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn audit_verify(State(state): St, caller: Caller) -> Result<Response, ApiError> {
    if !state.policy().is_auditor(&caller.principal) {
        return Err(ApiError::Forbidden(
            "verifying the whole audit chain is for auditors".into(),
        ));
    }
    Ok(Json(state.store.verify_audit().await?).into_response())
}
