//! Human output of the CLI.

use chrono::{DateTime, Utc};
use jit_client::ServerEvent;
use jit_core::api::{AuditRecord, EntitlementView, RequestView};
use jit_core::{format_duration, Decision};

/// `2026-11-29 11:18:04 UTC`.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Text from the server with any control character shown as `?`, so
/// nothing in a justification or comment can drive the terminal.
pub fn safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `text` (made [`safe`]) cut to `max` characters, with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    let text = safe(text);
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `Requested prod-db-admin for 30m: pending (id …)`.
pub fn requested(r: &RequestView) {
    println!(
        "Requested {} for {}: {} (id {})",
        r.request.entitlement_id(),
        format_duration(r.request.duration_secs()),
        r.request.status(),
        r.request.id()
    );
}

/// `Granted: prod-db-admin is active until … (… left)`, or for an applied
/// extension `Extended: prod-db-admin (added 15m to its grant)`.
pub fn granted(r: &RequestView) {
    if r.request.status() == jit_core::Status::Applied {
        println!(
            "Extended: {} (added {} to its grant)",
            r.request.entitlement_id(),
            format_duration(r.request.duration_secs())
        );
        return;
    }
    println!(
        "Granted: {} is active until {} ({} left)",
        r.request.entitlement_id(),
        r.request.expires_at().map(time).unwrap_or_default(),
        format_duration(r.remaining_secs.unwrap_or(0))
    );
}

/// First 8 characters of an id (commands accept unique prefixes).
pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// One line after an action: `8ab0b6a5 prod-db-admin: {what}`.
pub fn outcome(r: &RequestView, what: &str) {
    println!(
        "{} {}: {what}",
        short(r.request.id()),
        r.request.entitlement_id()
    );
}

/// Table of requestable entitlements (id, target, max duration, approvals).
pub fn entitlements(es: &[EntitlementView]) {
    if es.is_empty() {
        println!("Nothing you may request.");
        return;
    }
    println!(
        "{:<20} {:<36} {:>12}  {:>9}  NAME",
        "ID", "GRANTS", "MAX-DURATION", "APPROVALS"
    );
    for e in es {
        println!(
            "{:<20} {:<36} {:>12}  {:>9}  {}",
            e.id,
            e.target,
            format_duration(e.max_duration_secs),
            e.approvals_required,
            safe(&e.display_name)
        );
        if !e.available {
            println!(
                "{:<20} unavailable: {}",
                "",
                safe(
                    e.unavailable_reason
                        .as_deref()
                        .unwrap_or("cannot be granted now")
                )
            );
        }
    }
}

fn left(r: &RequestView, now: DateTime<Utc>) -> String {
    match r.request.expires_at() {
        Some(x) if r.request.status() == jit_core::Status::Active => {
            format_duration((x - now).num_seconds().max(0))
        }
        _ => "-".into(),
    }
}

/// Table of requests; LEFT is `expires_at − now` (server clock) for active
/// grants, DURATION a grant's whole length (with applied extensions). An
/// applied extension is part of its grant (`jit show GRANT`), not a row.
pub fn list(rows: &[RequestView], now: DateTime<Utc>) {
    let rows: Vec<&RequestView> = rows
        .iter()
        .filter(|r| {
            // `approved` is how jitd before `applied` left them.
            let applied = matches!(
                r.request.status(),
                jit_core::Status::Applied | jit_core::Status::Approved
            );
            !(applied && matches!(r.request.kind(), jit_core::RequestKind::Extension { .. }))
        })
        .collect();
    if rows.is_empty() {
        println!("No requests.");
        return;
    }
    println!(
        "{:<8}  {:<9} {:<18} {:<10} {:>8} {:>8}  {:<6} REASON",
        "ID", "STATUS", "ENTITLEMENT", "REQUESTER", "DURATION", "LEFT", "VOTES"
    );
    for r in rows {
        let q = &r.request;
        let approvals = q.approvals();
        let mut reason = cut(q.justification(), 40);
        if q.urgent() {
            reason = format!("[urgent] {reason}");
        }
        if let jit_core::RequestKind::Extension { grant_id } = &q.kind() {
            reason = format!("[more time for {}] {reason}", short(grant_id));
        }
        println!(
            "{:<8}  {:<9} {:<18} {:<10} {:>8} {:>8}  {:<6} {}",
            short(q.id()),
            q.status().as_str(),
            q.entitlement_id(),
            q.requester_username(),
            format_duration(r.total_secs.max(q.duration_secs())),
            left(r, now),
            format!("{approvals}/{}", q.approvals_required()),
            reason
        );
    }
}

/// Every detail of one request, times in UTC.
pub fn show(r: &RequestView, now: DateTime<Utc>) {
    let q = &r.request;
    println!("Request      {}", q.id());
    println!(
        "Entitlement  {} ({}) — {}",
        r.entitlement_name,
        q.entitlement_id(),
        q.target()
    );
    println!("Requester    {}", q.requester_username());
    println!("Status       {}", q.status());
    if let jit_core::RequestKind::Extension { grant_id } = &q.kind() {
        println!("Extends      grant {grant_id}");
    }
    if q.extensions().is_empty() {
        println!(
            "Duration     {} (asked {})",
            format_duration(q.duration_secs()),
            format_duration(q.requested_secs())
        );
    } else {
        println!(
            "Duration     {} in all: {} granted + {} in {} extension{}",
            format_duration(r.total_secs.max(q.duration_secs())),
            format_duration(q.duration_secs()),
            format_duration(r.total_secs - q.duration_secs()),
            q.extensions().len(),
            if q.extensions().len() == 1 { "" } else { "s" }
        );
        for x in q.extensions() {
            println!(
                "Extension    +{} ({}) asked by {}, approved by {} at {}; until {}",
                format_duration(x.added_secs),
                short(&x.id),
                x.requested_by,
                x.approved_by.join(", "),
                time(x.applied_at),
                time(x.expires_at)
            );
        }
    }
    println!("Reason       {}", safe(q.justification()));
    if let Some(t) = &q.ticket() {
        println!("Ticket       {t}");
    }
    if q.urgent() {
        println!(
            "Urgent       yes{}",
            if q.break_glass() {
                " (break-glass)"
            } else {
                ""
            }
        );
    }
    println!("Created      {}", time(q.created_at()));
    if let Some(t) = q.start_at() {
        println!("Starts       {}", time(t));
    }
    for v in q.votes() {
        println!(
            "Vote         {} {}{} at {}",
            v.approver_username,
            match v.decision {
                Decision::Approve => "approved",
                Decision::Deny => "denied",
            },
            v.comment
                .as_ref()
                .map(|c| format!(" — {c}"))
                .unwrap_or_default(),
            time(v.at)
        );
    }
    if let Some(t) = q.activated_at() {
        println!("Granted      {}", time(t));
    }
    if let Some(t) = q.expires_at() {
        if q.status() == jit_core::Status::Active {
            println!("Expires      {} ({} left)", time(t), left(r, now));
        } else {
            println!("Was due      {}", time(t));
        }
    }
    if let Some(t) = q.ended_at() {
        println!(
            "Ended        {} by {} {}",
            time(t),
            q.ended_by().unwrap_or("-"),
            safe(q.end_reason().unwrap_or(""))
        );
    }
    if let Some(e) = &r.keycloak.last_error {
        println!("Keycloak     retrying: {e}");
    }
    if r.revoke_late {
        println!("WARNING      the grant is over but the role is not yet confirmed removed from Keycloak");
    }
    if q.review_required() {
        match &q.reviewed_by() {
            Some(who) => println!("Review       done by {who}"),
            None => println!("Review       OPEN (break-glass: an approver must review it)"),
        }
    }
}

/// Audit rows, one per line (seq, UTC time, event, request, actor, reason).
pub fn audit(rows: &[AuditRecord]) {
    if rows.is_empty() {
        println!("No audit rows.");
        return;
    }
    println!(
        "{:>5}  {:<19}  {:<18} {:<8} {:<16} {:<10} REASON",
        "SEQ", "TIME (UTC)", "EVENT", "REQUEST", "ENTITLEMENT", "ACTOR"
    );
    for r in rows {
        println!(
            "{:>5}  {}  {:<18} {:<8} {:<16} {:<10} {}",
            r.seq,
            r.at.format("%Y-%m-%d %H:%M:%S"),
            r.event,
            short(&r.request_id),
            r.entitlement_id,
            match &r.actor_client {
                Some(_) => format!("{} (service account)", r.actor),
                None => r.actor.clone(),
            },
            cut(r.reason.as_deref().unwrap_or(""), 60)
        );
    }
}

/// One live event line (`jit watch`).
pub fn event(ev: &ServerEvent) {
    let r = &ev.data.record;
    println!(
        "{:>5}  {}  {:<18} {:<8} {:<16} by {:<10} {}",
        ev.id,
        r.at.format("%H:%M:%S"),
        ev.event,
        short(&r.request_id),
        r.entitlement_id,
        r.actor,
        cut(r.reason.as_deref().unwrap_or(""), 60)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_marks_what_it_cuts() {
        assert_eq!(cut("short", 40), "short");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abcd", 4), "abcd");
        assert_eq!(cut("a\u{1b}[31mb", 40), "a?[31mb");
    }
}
