//! Webhook bodies: CloudEvents 1.0 (structured JSON), Slack Block Kit and
//! Microsoft Teams Adaptive Card. Pure functions of the event, so they are
//! tested as data.
//!
//! Chat messages say who asks for what, why, for how long and how urgent,
//! and link to the request — the `jit://request/<id>` deep link (opens the
//! desktop app) and, when configured, a web page. They never offer to
//! approve: a click in chat cannot prove who clicked.

use jit_core::format_duration;
use serde_json::{json, Value};

use super::Format;
use crate::store::WebhookEvent;

/// What the renderer needs besides the event.
pub struct Context<'a> {
    /// CloudEvents `source`.
    pub source: &'a str,
    /// The entitlement's display name in the policy in force (else its id).
    pub entitlement_name: &'a str,
    /// Web page of the request, if configured.
    pub web_url: Option<&'a str>,
}

/// `jit://request/<id>`: opens the request in the desktop app.
pub fn deep_link(request_id: &str) -> String {
    format!("jit://request/{request_id}")
}

/// The `Content-Type` and body of `ev` in `format`.
pub fn render(format: Format, ev: &WebhookEvent, ctx: &Context) -> (&'static str, Vec<u8>) {
    let (ct, v) = match format {
        Format::Cloudevents => ("application/cloudevents+json", cloudevent(ev, ctx)),
        Format::Slack => ("application/json", slack(ev, ctx)),
        Format::Teams => ("application/json", teams(ev, ctx)),
    };
    (ct, serde_json::to_vec(&v).expect("JSON serialises"))
}

/// CloudEvents 1.0 structured mode: `type` is `jit.<event>`, `subject` the
/// request id, `data` the audit row plus the request snapshot and links.
pub fn cloudevent(ev: &WebhookEvent, ctx: &Context) -> Value {
    let mut data = serde_json::to_value(ev).expect("event serialises");
    if let Value::Object(m) = &mut data {
        m.remove("id");
        m.insert("entitlement_name".into(), json!(ctx.entitlement_name));
        m.insert("link".into(), json!(deep_link(&ev.record.request_id)));
        if let Some(u) = ctx.web_url {
            m.insert("web_url".into(), json!(u));
        }
    }
    json!({
        "specversion": "1.0",
        "id": ev.id,
        "source": ctx.source,
        "type": format!("jit.{}", ev.record.event),
        "subject": ev.record.request_id,
        "time": ev.record.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// Who asked (with "service account" when the requester is a client's
/// service account).
fn requester(ev: &WebhookEvent) -> String {
    match &ev.request.requester_client() {
        Some(c) => format!(
            "{} (service account of client {c})",
            ev.request.requester_username()
        ),
        None => ev.request.requester_username().to_string(),
    }
}

/// One line saying what happened, in plain words.
pub fn headline(ev: &WebhookEvent, what: &str) -> String {
    let r = &ev.request;
    let who = requester(ev);
    let actor = &ev.record.actor;
    use jit_core::api::EventKind as K;
    match &ev.record.event {
        K::RequestCreated if r.break_glass() => {
            format!("Break-glass: {who} activated {what}")
        }
        K::RequestCreated if matches!(r.kind(), jit_core::RequestKind::Extension { .. }) => {
            format!("{who} asks to extend {what}")
        }
        K::RequestCreated if r.urgent() => format!("Urgent: {who} asks for {what}"),
        K::RequestCreated => format!("{who} asks for {what}"),
        K::RequestVoted => format!("{actor} voted on {who}'s request for {what}"),
        K::RequestApproved => format!("{actor} approved {who}'s request for {what}"),
        K::RequestDenied => format!("{actor} denied {who}'s request for {what}"),
        K::RequestCancelled => format!("{who}'s request for {what} was cancelled"),
        K::RequestLapsed => {
            format!("{who}'s request for {what} lapsed: nobody decided in time")
        }
        K::RequestReviewed => format!("{actor} reviewed {who}'s break-glass use of {what}"),
        K::GrantGranted => format!("{who} now holds {what}"),
        K::GrantExtended => format!("{who}'s access to {what} was extended"),
        K::GrantExpired => format!("{who}'s access to {what} expired"),
        K::GrantDropped => format!("{who} gave up {what}"),
        K::GrantRevoked => format!("{actor} revoked {who}'s access to {what}"),
        K::GrantRemoved => format!("{what} removed from {who} in Keycloak"),
        K::GrantKept => format!("{who} keeps {what} (held before the grant)"),
        K::GrantStanding => format!("{who} already held {what}"),
        K::GrantRemovalFailed => {
            format!(
                "Removal FAILED: {what} stays with {who} in Keycloak until an administrator acts"
            )
        }
        K::GrantRemovalRetried => {
            format!("{actor} retried removing {what} from {who} in Keycloak")
        }
        _ => format!("{}: {who}, {what}", ev.record.event),
    }
}

/// Facts shown in chat: (title, value), values plain text.
fn facts(ev: &WebhookEvent, what: &str) -> Vec<(&'static str, String)> {
    let r = &ev.request;
    let mut f = vec![
        ("Who", requester(ev)),
        ("What", format!("{what} ({})", r.target())),
        ("For", format_duration(r.duration_secs())),
        (
            "Urgency",
            if r.break_glass() {
                "break-glass".into()
            } else if r.urgent() {
                "urgent".into()
            } else {
                "normal".into()
            },
        ),
        ("Status", r.status().as_str().to_string()),
    ];
    if let Some(t) = &r.ticket() {
        f.push(("Ticket", t.to_string()));
    }
    if let Some(x) = r.expires_at() {
        f.push((
            "Until",
            x.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    f
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Slack `mrkdwn` escaping: `&`, `<`, `>` (so a justification cannot ping
/// `<!channel>` or hide a link).
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack incoming-webhook message: `text` (notification fallback) and
/// Block Kit `blocks`.
pub fn slack(ev: &WebhookEvent, ctx: &Context) -> Value {
    let r = &ev.request;
    let head = headline(ev, ctx.entitlement_name);
    let fields: Vec<Value> = facts(ev, ctx.entitlement_name)
        .into_iter()
        .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", slack_escape(&v))}))
        .collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&head, 150), "emoji": true}}),
        json!({"type": "section", "fields": fields}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Why*\n{}", slack_escape(&truncate(r.justification(), 2900)))}}),
    ];
    if let Some(reason) = ev
        .record
        .reason
        .as_ref()
        .filter(|x| *x != r.justification())
    {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": slack_escape(&truncate(&format!("{}: {reason}", ev.record.actor), 2900))}]}));
    }
    if let Some(u) = ctx.web_url {
        blocks.push(json!({"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open request"}, "url": u, "action_id": "open_request"}]}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
        "Open in the JIT app: `{}` · decide there or with `jit approve {}` / `jit deny {}` — not in chat",
        deep_link(r.id()), short(r.id()), short(r.id())
    )}]}));
    json!({ "text": slack_escape(&head), "blocks": blocks })
}

/// Escapes the Markdown Teams renders in `TextBlock`s, so user text cannot
/// format or add links.
pub fn teams_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '`' | '>' | '~'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Teams message with one Adaptive Card 1.4 attachment.
pub fn teams(ev: &WebhookEvent, ctx: &Context) -> Value {
    let r = &ev.request;
    let head = headline(ev, ctx.entitlement_name);
    let facts: Vec<Value> = facts(ev, ctx.entitlement_name)
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": teams_escape(&v)}))
        .collect();
    let mut body = vec![
        json!({"type": "TextBlock", "text": teams_escape(&head), "weight": "Bolder", "size": "Medium", "wrap": true,
               "color": if r.urgent() || r.break_glass() { "Attention" } else { "Default" }}),
        json!({"type": "FactSet", "facts": facts}),
        json!({"type": "TextBlock", "text": format!("Why: {}", teams_escape(r.justification())), "wrap": true}),
    ];
    if let Some(reason) = ev
        .record
        .reason
        .as_ref()
        .filter(|x| *x != r.justification())
    {
        body.push(json!({"type": "TextBlock", "text": teams_escape(&format!("{}: {reason}", ev.record.actor)), "wrap": true, "isSubtle": true}));
    }
    body.push(json!({"type": "TextBlock", "wrap": true, "isSubtle": true, "text": format!(
        "Open in the JIT app: {} — decide there or with jit approve {} / jit deny {}, not in chat",
        deep_link(r.id()), short(r.id()), short(r.id())
    )}));
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if let Some(u) = ctx.web_url {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open request", "url": u}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }]
    })
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars - 1).collect();
        t.push('…');
        t
    }
}
