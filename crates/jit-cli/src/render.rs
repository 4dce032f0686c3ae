//! Human output of the CLI.

use chrono::{DateTime, Utc};
use jit_client::ServerEvent;
use jit_core::api::{AuditRecord, EntitlementView, EventKind, RequestView};
use jit_core::{format_duration, Decision};

/// `2026-11-29 11:18:04 UTC`.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A start time in a list: `09:00 UTC` today (by `now`, the server's
/// clock), else `2026-12-01 09:00 UTC`.
pub fn short_time(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t.date_naive() == now.date_naive() {
        t.format("%H:%M UTC").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M UTC").to_string()
    }
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

/// The one-line error for an id prefix that matches several requests:
/// the first five, each by the shortest prefix (at least 8 characters)
/// that only it has among them, with requester, entitlement and status,
/// so the user can pick one without another command.
pub fn ambiguous_prefix(prefix: &str, hits: &[RequestView]) -> String {
    const SHOWN: usize = 5;
    let ids: Vec<&str> = hits.iter().map(|h| h.request.id()).collect();
    let short = |id: &str| -> String {
        let mut n = 8.max(prefix.len() + 1).min(id.len());
        while n < id.len() && ids.iter().filter(|o| o.get(..n) == id.get(..n)).count() > 1 {
            n += 1;
        }
        safe(id.get(..n).unwrap_or(id))
    };
    let listed: Vec<String> = hits
        .iter()
        .take(SHOWN)
        .map(|h| {
            format!(
                "{} ({} → {}, {})",
                short(h.request.id()),
                cut_name(h.request.requester_username(), 24),
                cut_name(&h.entitlement_name, 32),
                h.request.status()
            )
        })
        .collect();
    let more = match hits.len().saturating_sub(SHOWN) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "'{}' matches {} requests: {}{more}; give more characters",
        safe(prefix),
        hits.len(),
        listed.join(", ")
    )
}

/// A user name cut to `max` characters in the middle (`service…jit-ci`):
/// both ends stay readable — a Keycloak service account's name
/// (`service-account-<client>`) differs only at its end, an e-mail-like
/// name at its start. Made [`safe`] as [`cut`].
pub fn cut_name(name: &str, max: usize) -> String {
    let name = safe(name);
    let n = name.chars().count();
    if n <= max || max < 3 {
        return cut(&name, max);
    }
    // Two thirds of what is kept from the end.
    let tail = (max - 1) * 2 / 3;
    let head = max - 1 - tail;
    let mut out: String = name.chars().take(head).collect();
    out.push('…');
    out.extend(name.chars().skip(n - tail));
    out
}

/// How a column's cells sit in their width.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// One column of a [`table`]: its header, alignment and the most
/// characters a cell may take (longer cells are [`cut`] with `…`).
#[derive(Clone, Copy)]
pub struct Column {
    pub head: &'static str,
    pub align: Align,
    pub cap: usize,
}

const fn col(head: &'static str, align: Align, cap: usize) -> Column {
    Column { head, align, cap }
}

/// Width of `s` on a terminal, counted in characters.
fn width(s: &str) -> usize {
    s.chars().count()
}

/// `cell` padded to `w` characters (no padding for the last column).
fn pad(cell: &str, w: usize, align: Align, last: bool) -> String {
    let fill = w.saturating_sub(width(cell));
    match (align, last) {
        (Align::Left, true) => cell.to_string(),
        (Align::Left, false) => format!("{cell}{}", " ".repeat(fill)),
        (Align::Right, _) => format!("{}{cell}", " ".repeat(fill)),
    }
}

/// Each column's width for `rows`: its widest cell or header, at most its
/// cap (a cell is cut to the cap before it is measured).
pub fn widths(cols: &[Column], rows: &[Vec<String>]) -> Vec<usize> {
    cols.iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| width(&cut(r.get(i).map(String::as_str).unwrap_or(""), c.cap)))
                .chain([width(c.head)])
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// One line of cells laid out in `w` (cells cut to their column's cap,
/// made [`safe`]); columns are two spaces apart.
pub fn line(cols: &[Column], w: &[usize], cells: &[String]) -> String {
    let n = cols.len();
    cols.iter()
        .enumerate()
        .map(|(i, c)| {
            let cell = cut(cells.get(i).map(String::as_str).unwrap_or(""), c.cap);
            pad(&cell, w[i], c.align, i + 1 == n)
        })
        .collect::<Vec<_>>()
        .join("  ")
        .trim_end()
        .to_string()
}

/// The header line of `cols` in widths `w`.
pub fn header(cols: &[Column], w: &[usize]) -> String {
    let heads: Vec<String> = cols.iter().map(|c| c.head.to_string()).collect();
    line(cols, w, &heads)
}

/// A table: a header and one line per row, each column as wide as its
/// widest cell up to its cap, so long values never push their neighbours
/// out of line; on a terminal the last column is cut to fit its width.
/// Lines end with `\n`.
pub fn table(cols: &[Column], rows: &[Vec<String>]) -> String {
    let cols = fit(cols, rows, terminal_columns());
    let w = widths(&cols, rows);
    let mut out = header(&cols, &w);
    out.push('\n');
    for r in rows {
        out.push_str(&line(&cols, &w, r));
        out.push('\n');
    }
    out
}

/// Columns of the terminal that stdout is; `None` for a pipe or a file
/// (then nothing is cut to a width).
pub fn terminal_columns() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    #[cfg(unix)]
    {
        // SAFETY: TIOCGWINSZ only fills `ws`, a plain struct we own.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
        (ok && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
    }
    #[cfg(not(unix))]
    None
}

/// `cols` with the last column's cap lowered so that a line of `rows`
/// fits in `term` characters (the last column keeps at least 16).
pub fn fit(cols: &[Column], rows: &[Vec<String>], term: Option<usize>) -> Vec<Column> {
    let mut cols = cols.to_vec();
    if let (Some(term), Some(last)) = (term, cols.len().checked_sub(1)) {
        let w = widths(&cols, rows);
        let used: usize = w[..last].iter().sum::<usize>() + 2 * last;
        cols[last].cap = cols[last].cap.min(term.saturating_sub(used).max(16));
    }
    cols
}

/// `Requested prod-db-admin for 30m: pending (id …)`; with a scheduled
/// start, `… for 30m from 2026-12-01 09:00:00 UTC: …`.
pub fn requested(r: &RequestView) {
    println!("{}", requested_line(r));
}

fn requested_line(r: &RequestView) -> String {
    let from = r
        .request
        .start_at()
        .map(|t| format!(" from {}", time(t)))
        .unwrap_or_default();
    format!(
        "Requested {} for {}{from}: {} (id {})",
        r.request.entitlement_id(),
        format_duration(r.request.duration_secs()),
        r.request.status(),
        r.request.id()
    )
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

/// Table of requestable entitlements: id, target, max duration,
/// approvals, ticket (an example of the reference the policy asks for, `-`
/// when none is needed) and name; an unavailable one gets a line saying why.
pub fn entitlements(es: &[EntitlementView]) -> String {
    if es.is_empty() {
        return "Nothing you may request.\n".into();
    }
    const COLS: [Column; 7] = [
        col("ID", Align::Left, 32),
        col("GRANTS", Align::Left, 40),
        col("MAX-DURATION", Align::Right, 12),
        col("MAX-TOTAL", Align::Right, 9),
        col("APPROVALS", Align::Right, 9),
        col("TICKET", Align::Left, 24),
        col("NAME", Align::Left, 48),
    ];
    let rows: Vec<Vec<String>> = es
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.target.clone(),
                format_duration(e.max_duration_secs),
                // With every extension; a jitd that does not say: "-".
                if e.max_total_duration_secs > 0 {
                    format_duration(e.max_total_duration_secs)
                } else {
                    "-".into()
                },
                e.approvals_required.to_string(),
                match e.ticket_pattern.as_deref() {
                    None => "-".into(),
                    Some(p) => match crate::ticket::example(p) {
                        Some(x) => format!("needed, e.g. {x}"),
                        None => "needed".into(),
                    },
                },
                e.display_name.clone(),
            ]
        })
        .collect();
    let cols = fit(&COLS, &rows, terminal_columns());
    let w = widths(&cols, &rows);
    let mut out = header(&cols, &w);
    out.push('\n');
    for (e, r) in es.iter().zip(&rows) {
        out.push_str(&line(&cols, &w, r));
        out.push('\n');
        if !e.available {
            let why = e
                .unavailable_reason
                .as_deref()
                .unwrap_or("cannot be granted now");
            out.push_str(&format!(
                "{}  unavailable: {}\n",
                " ".repeat(w[0]),
                cut(why, 100)
            ));
        }
    }
    if es.iter().any(|e| e.ticket_pattern.is_some()) {
        out.push_str("(TICKET needed: add --ticket with your ticket reference to `jit request`)\n");
    }
    out
}

/// Whether jitd is still to take an ended grant's role away in Keycloak
/// (a standing assignment held before the grant is kept, never removed:
/// its pending step only records that).
fn removing(r: &RequestView) -> bool {
    r.keycloak.removal_pending && r.keycloak.owns_assignment != Some(false)
}

/// LEFT of `jit list`: the time left of an active grant; `granting` for
/// an approved request whose start has come (jitd is assigning the role,
/// or retrying: `jit show` says why); for an ended grant whose role jitd
/// is still taking away in Keycloak `removing`, or `NOT REMOVED` when jitd
/// gave that up (`jit show` says why).
fn left(r: &RequestView, now: DateTime<Utc>) -> String {
    let q = &r.request;
    match q.expires_at() {
        Some(x) if q.status() == jit_core::Status::Active => {
            format_duration((x - now).num_seconds().max(0))
        }
        _ if q.status() == jit_core::Status::Approved
            && matches!(q.kind(), jit_core::RequestKind::Access)
            && q.start_at().is_none_or(|t| t <= now) =>
        {
            "granting".into()
        }
        _ if r.keycloak.removal_failed => "NOT REMOVED".into(),
        _ if removing(r) => "removing".into(),
        _ => "-".into(),
    }
}

/// Table of requests; LEFT is `expires_at − now` (server clock) for active
/// grants, DURATION a grant's whole length (with applied extensions). An
/// applied extension is part of its grant (`jit show GRANT`), not a row —
/// unless `applied` (the user asked for `--status applied`).
/// Column widths come from the rows, each up to a cap (cut with `…`).
pub fn list(rows: &[RequestView], now: DateTime<Utc>, applied: bool) -> String {
    let rows: Vec<&RequestView> = rows
        .iter()
        .filter(|r| {
            if applied {
                return true;
            }
            // `approved` is how jitd before `applied` left them.
            let applied = matches!(
                r.request.status(),
                jit_core::Status::Applied | jit_core::Status::Approved
            );
            !(applied && matches!(r.request.kind(), jit_core::RequestKind::Extension { .. }))
        })
        .collect();
    if rows.is_empty() {
        return "No requests.\n".into();
    }
    const COLS: [Column; 8] = [
        col("ID", Align::Left, 8),
        col("STATUS", Align::Left, 10),
        col("ENTITLEMENT", Align::Left, 28),
        col("REQUESTER", Align::Left, REQUESTER_CAP),
        col("DURATION", Align::Right, 10),
        col("LEFT", Align::Right, 11),
        col("VOTES", Align::Left, 7),
        col("REASON", Align::Left, 60),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let q = &r.request;
            let mut reason = safe(q.justification());
            if q.urgent() {
                reason = format!("[urgent] {reason}");
            }
            if let jit_core::RequestKind::Extension { grant_id } = &q.kind() {
                reason = format!("[more time for {}] {reason}", short(grant_id));
            }
            // An approved grant whose start has come says `granting` in
            // LEFT instead.
            if let Some(t) = q.start_at().filter(|t| match q.status() {
                jit_core::Status::Pending => true,
                jit_core::Status::Approved => *t > now,
                _ => false,
            }) {
                reason = format!("[starts {}] {reason}", short_time(t, now));
            }
            vec![
                short(q.id()).to_string(),
                q.status().as_str().to_string(),
                q.entitlement_id().to_string(),
                cut_name(q.requester_username(), REQUESTER_CAP),
                format_duration(r.total_secs.max(q.duration_secs())),
                left(r, now),
                format!("{}/{}", q.approvals(), q.approvals_required()),
                reason,
            ]
        })
        .collect();
    table(&COLS, &cells)
}

/// How a request that is no longer active ended, as jitd recorded it (who
/// ended it, when, why): `already dropped: ended by its requester alice at
/// …`, `already revoked by bob at …: reason`, `already expired at …`.
pub fn how_it_ended(r: &RequestView) -> String {
    use jit_core::Status as S;
    let q = &r.request;
    // An extension is a request for more time on a grant, not a grant:
    // point at its grant.
    if let jit_core::RequestKind::Extension { grant_id } = q.kind() {
        let g = short(grant_id);
        let open = if q.status() == S::Pending {
            format!(
                "; while pending, its requester withdraws it (`jit cancel {x}`) or an approver refuses it (`jit deny {x}`)",
                x = short(q.id())
            )
        } else {
            String::new()
        };
        return format!(
            "it is an extension request ({}) of grant {g}, not a grant: the grant is ended by its requester (`jit drop {g}`) or an approver (`jit revoke {g}`){open}",
            q.status(),
        );
    }
    let at = q.ended_at().map(time).unwrap_or_else(|| "-".into());
    let by = q.ended_by().unwrap_or("-");
    let why = q
        .end_reason()
        .map(|w| format!(": {}", cut(w, 100)))
        .unwrap_or_default();
    match q.status() {
        S::Revoked if q.ended_by() == Some(q.requester_username()) => {
            format!("already dropped: ended by its requester {by} at {at}")
        }
        S::Revoked => format!("already revoked by {by} at {at}{why}"),
        S::Expired => format!("already expired at {at}"),
        S::Failed => format!("not granted: Keycloak refused it at {at}{why}"),
        S::Pending | S::Approved => format!(
            "not active yet: it is {}; `jit cancel {}` withdraws it",
            q.status(),
            short(q.id())
        ),
        // Refused while approved (jitd still giving the role), active by
        // the time we looked again.
        S::Active => {
            "it was not active yet when asked (jitd was giving the role in Keycloak); it is active now: run the command again".into()
        }
        s => format!("not an active grant: it is {s}"),
    }
}

/// The `Ended` line of `jit show`: `expired at T`, `T by bob: reason`.
fn ended_line(r: &RequestView, at: DateTime<Utc>) -> String {
    let q = &r.request;
    if q.status() == jit_core::Status::Expired {
        let due = q.expires_at().unwrap_or(at);
        let late = (at - due).num_seconds();
        return if late >= 2 {
            format!(
                "expired at {} (processed by jitd {} later)",
                time(due),
                format_duration(late)
            )
        } else {
            format!("expired at {}", time(due))
        };
    }
    if let (jit_core::Status::Applied, jit_core::RequestKind::Extension { grant_id }) =
        (q.status(), q.kind())
    {
        return format!("{}: applied to grant {}", time(at), short(grant_id));
    }
    let why = q
        .end_reason()
        .map(|w| format!(": {}", safe(w)))
        .unwrap_or_default();
    match q.ended_by() {
        Some(by) => format!("{} by {by}{why}", time(at)),
        None => format!("{}{why}", time(at)),
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
        println!("Ended        {}", ended_line(r, t));
    }
    if let Some(t) = r.keycloak.removed_at {
        // As the audit's `grant.removed` row: how long after the grant
        // ended its role (or membership) left Keycloak, when that is worth
        // saying.
        let late = q
            .ended_at()
            .map(|e| (t - e).num_seconds())
            .filter(|s| *s >= 2)
            .map(|s| format!(", {} after the grant ended", format_duration(s)))
            .unwrap_or_default();
        let what = match q.target() {
            jit_core::EntitlementKind::Group { .. } => "the membership",
            _ => "the role",
        };
        println!("Removed      {}: {what} left Keycloak{late}", time(t));
    } else if q.ended_at().is_some() && r.keycloak.owns_assignment == Some(false) {
        println!(
            "Removed      no: held before the grant (a standing assignment JIT never removes)"
        );
    } else if q.ended_at().is_some()
        && r.keycloak.granted_at.is_some()
        && !r.keycloak.removal_pending
        && !r.keycloak.removal_failed
    {
        // Granted, ended, its removal step done, nothing taken away (a
        // user or role gone would have said `Removed` with a time): jitd
        // found another active grant of the same role (the audit's
        // grant.kept row).
        println!("Removed      no: another active grant of this role keeps it");
    }
    if r.keycloak.removal_failed {
        println!(
            "Keycloak     removal FAILED, jitd stopped trying: {}",
            r.keycloak.last_error.as_deref().unwrap_or("-")
        );
        println!(
            "             fix the cause in Keycloak (or remove the role by hand), then: jit retry-removal {}",
            short(q.id())
        );
    } else if let Some(line) = keycloak_error_line(r) {
        let what = if removing(r) { "removal pending, " } else { "" };
        println!("Keycloak     {what}{line}");
    } else if removing(r) {
        println!("Keycloak     removal pending: jitd is taking the role away");
    }
    // A removal given up says so above (and what to do), not "not yet".
    if r.revoke_late && !r.keycloak.removal_failed {
        println!("WARNING      the grant is over but the role is not yet confirmed removed from Keycloak");
    }
    if q.review_required() {
        match &q.reviewed_by() {
            Some(who) => println!("Review       done by {who}"),
            None => println!("Review       OPEN (break-glass: an approver must review it)"),
        }
    }
}

/// The last Keycloak error of `r`, said as retried only while jitd still
/// works on it (a grant being granted, a removal pending); after a grant
/// ended (e.g. `failed`: given up) it is just the last error. Work waiting
/// out an outage (`waiting: …`, the API's word) is said as is.
fn keycloak_error_line(r: &RequestView) -> Option<String> {
    let e = r.keycloak.last_error.as_ref()?;
    let working = r.keycloak.removal_pending || r.request.status() == jit_core::Status::Approved;
    // jitd's own word for work waiting out a Keycloak outage says it all.
    if e.starts_with("waiting: ") {
        return Some(e.clone());
    }
    Some(if working {
        format!("retrying: {e}")
    } else {
        format!("last error: {e}")
    })
}

/// Widest REQUESTER of `jit list` (longer names: [`cut_name`]).
const REQUESTER_CAP: usize = 20;
/// Widest ACTOR of `jit audit` (longer names: [`cut_name`]), so one
/// service account does not widen the column of every row.
const ACTOR_CAP: usize = 24;

/// Who acted in audit row `r`: a client's service account is marked as
/// such, unless its name says it already (Keycloak names them
/// `service-account-<client>`).
fn actor(r: &AuditRecord) -> String {
    match &r.actor_client {
        Some(_) if !r.actor.starts_with("service-account-") => {
            format!("{} (service account)", r.actor)
        }
        _ => r.actor.clone(),
    }
}

/// Audit rows, one per line (seq, UTC time, event, request, entitlement,
/// actor, reason), columns as wide as this page's widest value up to a cap.
pub fn audit(rows: &[AuditRecord]) -> String {
    if rows.is_empty() {
        return "No audit rows.\n".into();
    }
    const COLS: [Column; 7] = [
        col("SEQ", Align::Right, 12),
        col("TIME (UTC)", Align::Left, 19),
        col("EVENT", Align::Left, 32),
        col("REQUEST", Align::Left, 8),
        col("ENTITLEMENT", Align::Left, 28),
        col("ACTOR", Align::Left, ACTOR_CAP),
        col("REASON", Align::Left, 60),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                r.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.event.as_str().to_string(),
                short(&r.request_id).to_string(),
                r.entitlement_id.clone(),
                cut_name(&actor(r), ACTOR_CAP),
                r.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&COLS, &cells)
}

/// The columns of `jit watch`: fixed widths, since the rows are not known
/// in advance. EVENT is as wide as the longest event name this version
/// knows (a newer jitd's longer name is cut with `…`).
fn event_columns() -> ([Column; 7], Vec<usize>) {
    let cols = [
        col("SEQ", Align::Right, 7),
        col("TIME", Align::Left, 8),
        col("EVENT", Align::Left, event_width()),
        col("REQUEST", Align::Left, 8),
        col("ENTITLEMENT", Align::Left, 20),
        col("ACTOR", Align::Left, 16),
        col("REASON", Align::Left, 60),
    ];
    let mut cols = cols;
    if let Some(term) = terminal_columns() {
        let used: usize = cols[..6].iter().map(|c| c.cap + 2).sum();
        cols[6].cap = cols[6].cap.min(term.saturating_sub(used).max(16));
    }
    let w = cols.iter().map(|c| c.cap).collect();
    (cols, w)
}

/// Width of the EVENT column of `jit watch`: the longest event name this
/// version knows (`grant.nothing_to_remove`, 23).
pub fn event_width() -> usize {
    EventKind::ALL
        .iter()
        .map(|k| k.as_str().chars().count())
        .max()
        .unwrap_or(0)
}

/// The header line `jit watch` prints before the first event.
pub fn event_header() -> String {
    let (cols, w) = event_columns();
    header(&cols, &w)
}

/// One live event line (`jit watch`), in the columns of [`event_header`].
pub fn event(ev: &ServerEvent) -> String {
    let r = &ev.data.record;
    let (cols, w) = event_columns();
    line(
        &cols,
        &w,
        &[
            ev.id.to_string(),
            r.at.format("%H:%M:%S").to_string(),
            ev.event.as_str().to_string(),
            short(&r.request_id).to_string(),
            r.entitlement_id.clone(),
            cut_name(&actor(r), w[5]),
            r.reason.clone().unwrap_or_default(),
        ],
    )
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

    fn audit_row(seq: i64, event: &str, entitlement: &str, actor: &str) -> AuditRecord {
        serde_json::from_value(serde_json::json!({
            "seq": seq, "at": "2026-11-29T11:18:04Z", "event": event,
            "request_id": format!("{seq:08}-0000-4000-8000-000000000000"),
            "entitlement_id": entitlement, "requester_id": "u1", "actor": actor,
            "reason": "why", "from_status": null, "to_status": null,
            "prev_hash": "", "hash": ""
        }))
        .unwrap()
    }

    fn view(id: &str, entitlement: &str, requester: &str, reason: &str) -> RequestView {
        serde_json::from_value(serde_json::json!({
            "id": id, "kind": {"type": "access"}, "entitlement_id": entitlement,
            "target": {"kind": "realm_role", "role": entitlement},
            "requester_id": "u1", "requester_username": requester,
            "justification": reason, "ticket": null, "urgent": false,
            "break_glass": false, "requested_secs": 1800, "duration_secs": 1800,
            "approvals_required": 1, "votes": [], "status": "pending",
            "created_at": "2026-11-29T11:18:04Z", "pending_until": "2026-11-29T12:18:04Z",
            "start_at": null, "decided_at": null, "activated_at": null,
            "expires_at": null, "ended_at": null, "ended_by": null,
            "end_reason": null, "auto_approved": null, "review_required": false,
            "reviewed_by": null, "reviewed_at": null, "extensions": [],
            "entitlement_name": entitlement, "remaining_secs": null,
            "total_secs": 1800, "approvals": 0,
            "keycloak": {"owns_assignment": null, "granted_at": null,
                "removal_pending": false, "removed_at": null, "attempts": 0,
                "next_attempt_at": null, "last_error": null},
            "revoke_late": false, "awaits_your_review": null
        }))
        .unwrap()
    }

    /// An ambiguous prefix names its matches (it said only how many), each
    /// by a prefix only it has, on one line.
    #[test]
    fn an_ambiguous_prefix_names_its_matches() {
        let hits = [
            view("6d48a1c2-0000-4000-8000-000000000000", "db", "alice", "x"),
            view("6d48a1c2-1000-4000-8000-000000000000", "db", "bob", "x"),
            view(
                "6d48f00e-0000-4000-8000-000000000000",
                "ops",
                "carol\nx",
                "x",
            ),
        ];
        let line = ambiguous_prefix("6d48", &hits);
        assert_eq!(
            line,
            "'6d48' matches 3 requests: 6d48a1c2-0 (alice → db, pending), \
             6d48a1c2-1 (bob → db, pending), 6d48f00e (carol?x → ops, pending); \
             give more characters"
        );
        assert!(!line.contains('\n'));
        let many: Vec<_> = (0..7)
            .map(|i| {
                view(
                    &format!("6d48{i}000-0000-4000-8000-000000000000"),
                    "db",
                    "a",
                    "x",
                )
            })
            .collect();
        assert!(ambiguous_prefix("6d48", &many).contains(" and 2 more; give more characters"));
    }

    /// A grant given up (`failed`) is not said to be retried; one being
    /// granted, or a removal pending, is.
    #[test]
    fn a_keycloak_error_is_said_retried_only_while_jitd_works_on_it() {
        let r = view("8a9a60d7-0000-4000-8000-000000000000", "db", "alice", "why");
        let with = |status: &str, removal_pending: bool| {
            let mut v = serde_json::to_value(&r).unwrap();
            v["status"] = status.into();
            v["keycloak"]["last_error"] = "gave up granting: its window ended".into();
            v["keycloak"]["removal_pending"] = removal_pending.into();
            keycloak_error_line(&serde_json::from_value(v).unwrap()).unwrap()
        };
        assert!(with("failed", false).starts_with("last error: gave up"));
        assert!(with("approved", false).starts_with("retrying: "));
        // Waiting out an outage is said once, not "retrying: waiting: …".
        let mut v = serde_json::to_value(&r).unwrap();
        v["status"] = "approved".into();
        v["keycloak"]["last_error"] =
            "waiting: Keycloak is unreachable (jitd goes on as soon as it answers)".into();
        let line = keycloak_error_line(&serde_json::from_value(v).unwrap()).unwrap();
        assert!(
            line.starts_with("waiting: Keycloak is unreachable"),
            "{line}"
        );
        assert!(with("expired", true).starts_with("retrying: "));
        assert!(keycloak_error_line(&r).is_none());
    }

    /// `jit list` marks an ended grant whose role is still being taken
    /// away, and one jitd gave up removing; other ended rows show `-`.
    #[test]
    fn list_marks_a_removal_pending_or_given_up() {
        let r = view("8a9a60d7-0000-4000-8000-000000000000", "db", "alice", "why");
        let with = |pending: bool, failed: bool| {
            let mut v = serde_json::to_value(&r).unwrap();
            v["status"] = "expired".into();
            v["expires_at"] = "2026-11-29T11:48:04Z".into();
            v["keycloak"]["removal_pending"] = pending.into();
            v["keycloak"]["removal_failed"] = failed.into();
            let r: RequestView = serde_json::from_value(v).unwrap();
            list(&[r], "2026-11-29T12:00:00Z".parse().unwrap(), false)
        };
        assert!(
            with(true, false).contains(" removing "),
            "{}",
            with(true, false)
        );
        assert!(
            with(true, true).contains("NOT REMOVED"),
            "{}",
            with(true, true)
        );
        let done = with(false, false);
        assert!(
            !done.contains("removing") && !done.contains("NOT REMOVED"),
            "{done}"
        );
        // A standing assignment is kept, not removed: not "removing".
        let mut v = serde_json::to_value(&r).unwrap();
        v["status"] = "expired".into();
        v["keycloak"]["removal_pending"] = true.into();
        v["keycloak"]["owns_assignment"] = false.into();
        let kept: RequestView = serde_json::from_value(v).unwrap();
        let text = list(&[kept], "2026-11-29T12:00:00Z".parse().unwrap(), false);
        assert!(!text.contains("removing"), "{text}");
    }

    /// `jit list` says an approved grant whose start has come is being
    /// granted (not `-`, as if nothing were happening); before its start
    /// it is not.
    #[test]
    fn list_marks_an_approved_grant_past_its_start() {
        let r = view("8a9a60d7-0000-4000-8000-000000000000", "db", "alice", "why");
        let with = |start: Option<&str>| {
            let mut v = serde_json::to_value(&r).unwrap();
            v["status"] = "approved".into();
            v["start_at"] = start.map(serde_json::Value::from).unwrap_or_default();
            let r: RequestView = serde_json::from_value(v).unwrap();
            list(&[r], "2026-11-29T12:00:00Z".parse().unwrap(), false)
        };
        for start in [None, Some("2026-11-29T11:59:00Z")] {
            let text = with(start);
            assert!(text.contains(" granting "), "{start:?}: {text}");
            assert!(!text.contains("[starts"), "{start:?}: {text}");
        }
        let later = with(Some("2026-11-29T13:00:00Z"));
        assert!(!later.contains("granting"), "{later}");
        assert!(later.contains("[starts"), "{later}");
    }

    /// A scheduled start is said when the request is made.
    #[test]
    fn a_requested_line_says_a_scheduled_start() {
        let r = view("8a9a60d7-0000-4000-8000-000000000000", "db", "alice", "why");
        assert!(
            !requested_line(&r).contains(" from "),
            "{}",
            requested_line(&r)
        );
        let mut v = serde_json::to_value(&r).unwrap();
        v["start_at"] = "2026-12-01T09:00:00Z".into();
        let r: RequestView = serde_json::from_value(v).unwrap();
        assert_eq!(
            requested_line(&r),
            "Requested db for 30m from 2026-12-01 09:00:00 UTC: pending (id 8a9a60d7-0000-4000-8000-000000000000)"
        );
    }

    /// An extension's id given to drop or revoke names its grant.
    #[test]
    fn how_it_ended_of_an_extension_names_its_grant() {
        let r = view("cc3d9d88-0000-4000-8000-000000000000", "db", "alice", "why");
        let mut v = serde_json::to_value(&r).unwrap();
        v["kind"] = serde_json::json!({"type": "extension", "grant_id": "8a9a60d7-0000-4000-8000-000000000000"});
        let pending: RequestView = serde_json::from_value(v.clone()).unwrap();
        let text = how_it_ended(&pending);
        assert!(
            text.contains("extension request (pending) of grant 8a9a60d7"),
            "{text}"
        );
        assert!(
            text.contains("`jit drop 8a9a60d7`")
                && text.contains("`jit revoke 8a9a60d7`")
                && text.contains("`jit cancel cc3d9d88`")
                && text.contains("`jit deny cc3d9d88`"),
            "{text}"
        );
        v["status"] = "applied".into();
        let applied: RequestView = serde_json::from_value(v).unwrap();
        let text = how_it_ended(&applied);
        assert!(
            text.contains("(applied)") && !text.contains("jit cancel"),
            "{text}"
        );
    }

    /// A drop refused while the grant was being given, and active when
    /// `jit` looked again, never reads "not an active grant: it is active".
    #[test]
    fn how_it_ended_of_a_grant_active_by_now_says_to_run_again() {
        let r = view("8a9a60d7-0000-4000-8000-000000000000", "db", "alice", "why");
        let mut v = serde_json::to_value(&r).unwrap();
        v["status"] = "active".into();
        v["activated_at"] = "2026-11-29T11:18:05Z".into();
        v["expires_at"] = "2026-11-29T11:48:05Z".into();
        let r: RequestView = serde_json::from_value(v).unwrap();
        let text = how_it_ended(&r);
        assert!(!text.contains("not an active grant"), "{text}");
        assert!(text.contains("run the command again"), "{text}");
    }

    /// An applied extension's end is where it went (its grant), never
    /// "by -".
    #[test]
    fn an_applied_extension_ended_by_being_applied_to_its_grant() {
        let r = view("edb57a3b-0000-4000-8000-000000000000", "db", "alice", "why");
        let mut v = serde_json::to_value(&r).unwrap();
        v["status"] = "applied".into();
        v["kind"] = serde_json::json!({"type": "extension", "grant_id": "7a033faa-0000-4000-8000-000000000000"});
        v["ended_at"] = "2026-11-29T11:19:00Z".into();
        let r: RequestView = serde_json::from_value(v).unwrap();
        let at = r.request.ended_at().unwrap();
        let line = ended_line(&r, at);
        assert!(line.contains("applied to grant 7a033faa"), "{line}");
        assert!(!line.contains("by -"), "{line}");
    }

    /// Character offset of `needle` in `line`.
    fn column_of(line: &str, needle: &str) -> usize {
        let byte = line
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {line:?}"));
        line[..byte].chars().count()
    }

    /// Each line's `needles[i]` starts where the header's `head` does.
    fn aligned(text: &str, head: &str, needles: &[&str]) {
        let lines: Vec<&str> = text.lines().collect();
        let at = column_of(lines[0], head);
        for (line, needle) in lines[1..].iter().zip(needles) {
            assert_eq!(column_of(line, needle), at, "{head}:\n{text}");
        }
    }

    #[test]
    fn audit_columns_line_up_whatever_the_event_name() {
        let rows = [
            audit_row(1, "request.created", "db", "someone"),
            audit_row(
                2,
                "grant.nothing_to_remove",
                "a-much-longer-entitlement",
                "x",
            ),
            audit_row(3, "grant.kept", "db", "a-service (service account)"),
        ];
        let text = audit(&rows);
        aligned(&text, "REQUEST", &["00000001", "00000002", "00000003"]);
        aligned(&text, "ACTOR", &["someone", "x ", "a-servic"]);
        aligned(&text, "REASON", &["why", "why", "why"]);
    }

    #[test]
    fn watch_lines_line_up_under_their_header() {
        let ev = |seq: i64, name: &str, entitlement: &str| ServerEvent {
            id: seq,
            event: EventKind::from_name(name),
            data: jit_core::api::EventData {
                record: audit_row(seq, name, entitlement, "someone"),
                request: None,
            },
        };
        let text = [
            event_header(),
            event(&ev(7, "grant.nothing_to_remove", "db")),
            event(&ev(
                12345,
                "grant.kept",
                "an-entitlement-id-longer-than-its-column",
            )),
            event(&ev(8, "some.future_event_name_longer_than_any", "db")),
        ]
        .join("\n");
        aligned(&text, "REQUEST", &["00000007", "00012345", "00000008"]);
        aligned(&text, "ACTOR", &["someone", "someone", "someone"]);
        assert!(text.contains('…'), "cut values are marked:\n{text}");
    }

    /// Applied extensions are rows only when asked for (`--status
    /// applied`): "No requests." for three applied extensions misled.
    #[test]
    fn applied_extensions_are_listed_when_asked_for() {
        let mut v = serde_json::to_value(view(
            "33333333-0000-4000-8000-000000000000",
            "db",
            "al",
            "more time",
        ))
        .unwrap();
        v["kind"] = serde_json::json!({"type": "extension", "grant_id": "11111111-0000-4000-8000-000000000000"});
        v["status"] = "applied".into();
        let ext: RequestView = serde_json::from_value(v).unwrap();
        let now = "2026-11-29T11:20:00Z".parse().unwrap();
        assert_eq!(
            list(std::slice::from_ref(&ext), now, false),
            "No requests.\n"
        );
        assert!(list(&[ext], now, true).contains("33333333"));
    }

    #[test]
    fn list_columns_hold_long_requesters_and_entitlements() {
        let rows = [
            view("11111111-0000-4000-8000-000000000000", "db", "al", "short"),
            view(
                "22222222-0000-4000-8000-000000000000",
                "an-entitlement-id-far-longer-than-anyone-would-type",
                "firstname.lastname.with-a-department@example.org",
                "a reason",
            ),
        ];
        let now = "2026-11-29T11:20:00Z".parse().unwrap();
        let text = list(&rows, now, false);
        // Cut in the middle: both ends of a long name stay.
        aligned(&text, "REQUESTER", &["al", "firstna…@example.org"]);
        aligned(&text, "DURATION", &["     30m", "     30m"]);
        aligned(&text, "VOTES", &["0/1", "0/1"]);
        aligned(&text, "REASON", &["short", "a reason"]);
        assert!(text.contains("an-entitlement-id-far-longe…"), "{text}");
        assert!(!text.contains("with-a-department"), "capped: {text}");
    }

    #[test]
    fn on_a_terminal_the_last_column_is_cut_to_its_width() {
        const COLS: [Column; 3] = [
            col("ID", Align::Left, 8),
            col("WHO", Align::Left, 20),
            col("REASON", Align::Left, 60),
        ];
        let rows = vec![vec!["abcdefgh".into(), "someone".into(), "x".repeat(70)]];
        let fitted = fit(&COLS, &rows, Some(60));
        let w = widths(&fitted, &rows);
        let text = line(&fitted, &w, &rows[0]);
        assert_eq!(text.chars().count(), 60, "{text}");
        assert!(text.ends_with('…'), "{text}");
        // Not a terminal: only the caps apply.
        assert_eq!(fit(&COLS, &rows, None)[2].cap, 60);
        // A narrow terminal keeps a readable last column.
        assert_eq!(fit(&COLS, &rows, Some(20))[2].cap, 16);
    }

    #[test]
    fn entitlements_say_which_need_a_ticket_with_an_example() {
        let e = |id: &str, pattern: Option<&str>| -> EntitlementView {
            serde_json::from_value(serde_json::json!({
                "id": id, "display_name": id, "description": "", "target": "realm role r",
                "max_duration_secs": 3600, "default_duration_secs": 1800,
                "max_total_duration_secs": 7200,
                "approvals_required": 1, "ticket_pattern": pattern,
                "justification_min": 10, "justification_max": 500,
                "break_glass": false, "you_approve": false
            }))
            .unwrap()
        };
        let text = entitlements(&[e("plain", None), e("ticketed", Some("^(?:CHG-[0-9]{5})$"))]);
        let row = text.lines().find(|l| l.starts_with("ticketed")).unwrap();
        assert!(row.contains("needed, e.g. CHG-12345"), "{text}");
        assert!(!text.contains("[0-9]"), "no regular expression: {text}");
        aligned(&text, "TICKET", &["-", "needed"]);
        assert!(text.contains("--ticket"), "{text}");
    }

    /// MAX-TOTAL is the longest a grant may run with its extensions
    /// (`max_total_duration_secs`, once only in --json); "-" from a jitd
    /// that does not say.
    #[test]
    fn entitlements_show_the_total_with_extensions() {
        let e = |id: &str, total: Option<i64>| -> EntitlementView {
            let mut v = serde_json::json!({
                "id": id, "display_name": id, "description": "", "target": "realm role r",
                "max_duration_secs": 3600, "default_duration_secs": 1800,
                "approvals_required": 1, "ticket_pattern": null,
                "justification_min": 10, "justification_max": 500,
                "break_glass": false, "you_approve": false
            });
            if let Some(t) = total {
                v["max_total_duration_secs"] = t.into();
            }
            serde_json::from_value(v).unwrap()
        };
        let text = entitlements(&[e("extendable", Some(4 * 3600)), e("older", None)]);
        assert!(text.lines().next().unwrap().contains("MAX-TOTAL"), "{text}");
        let row = text.lines().find(|l| l.starts_with("extendable")).unwrap();
        assert!(row.split_whitespace().any(|w| w == "4h"), "{text}");
        // "-" for the total and for the ticket.
        let older = text.lines().find(|l| l.starts_with("older")).unwrap();
        assert_eq!(
            older.split_whitespace().filter(|w| *w == "-").count(),
            2,
            "{text}"
        );
    }

    /// Long user names are cut in the middle, so a service account's
    /// distinguishing end stays; one long ACTOR does not widen every row.
    #[test]
    fn long_names_keep_both_ends_and_a_capped_column() {
        assert_eq!(cut_name("alice", 20), "alice");
        let cut = cut_name("service-account-jit-pipeline", 20);
        assert_eq!(cut.chars().count(), 20, "{cut}");
        assert!(
            cut.starts_with("service") && cut.ends_with("jit-pipeline"),
            "{cut}"
        );
        assert!(cut.contains('…'), "{cut}");

        let mut sa = audit_row(
            2,
            "request.created",
            "db",
            "service-account-jit-pipeline-runner",
        );
        sa.actor_client = Some("jit-pipeline-runner".into());
        let text = audit(&[audit_row(1, "request.created", "db", "bob"), sa]);
        let lines: Vec<&str> = text.lines().collect();
        let at = column_of(lines[0], "ACTOR");
        let reason = column_of(lines[0], "REASON");
        assert!(reason - at <= ACTOR_CAP + 2, "ACTOR capped:\n{text}");
        assert!(lines[2].contains("pipeline-runner"), "{text}");
        assert!(
            !lines[2].contains("(service account)"),
            "said once:\n{text}"
        );
    }
}
