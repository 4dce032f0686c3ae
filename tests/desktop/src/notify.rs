//! Reads the log that `python3 -m dbusmock ... -t notification_daemon -l LOG`
//! writes: one record per D-Bus method call on the mock, each a line
//!
//! ```text
//! 1795952652.819 Notify "JIT Access" 0 "" "URGENT access request: alice → prod-db-admin" "body" ["default", "Open", "approve", "Approve"] {"urgency": 2} -1
//! ```
//!
//! i.e. `TIME METHOD ARGS`, where dbusmock formats each argument with
//! `format_arg`: strings in double quotes **without any escaping** (a body
//! may hold `"` or run over several lines), integers and bytes as decimal,
//! booleans as `True`/`False`, arrays as `[a, b]`, dicts as `{k: v}`, and
//! anything else as Python's `repr` (e.g. `dbus.Double(1.5, variant_level=1)`).
//!
//! Because strings are not escaped the format is ambiguous in general. The
//! parser is a small backtracking one that knows the signature of `Notify`
//! (`susssasa{sv}i`): it tries the closing quotes from the nearest on and
//! takes the first reading where all eight arguments have the right shape
//! and the record is consumed exactly. A record runs until the next line
//! that starts a record (`<secs>.<millis> <Method>`).
//!
//! The mock answers `Notify` with ids 1, 2, 3… (or the `replaces_id` when
//! non-zero); [`Notification::id`] is that id, which is what an app gets
//! back and what an `ActionInvoked` signal must carry.

use std::collections::BTreeMap;
use std::path::Path;

/// One value as dbusmock printed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// Python `repr` of a value dbusmock does not format (structs, doubles…).
    Other(String),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// A `Notify` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Seconds since the epoch, as logged (millisecond precision).
    pub time: f64,
    /// The id the mock returned for this call.
    pub id: u32,
    pub app_name: String,
    pub replaces_id: u32,
    pub app_icon: String,
    pub summary: String,
    pub body: String,
    /// `(key, label)` pairs, in order.
    pub actions: Vec<(String, String)>,
    pub hints: BTreeMap<String, Value>,
    pub expire_timeout: i32,
}

impl Notification {
    /// The `urgency` hint (0 low, 1 normal, 2 critical), if sent.
    pub fn urgency(&self) -> Option<u8> {
        self.hints
            .get("urgency")
            .and_then(Value::as_int)
            .and_then(|u| u8::try_from(u).ok())
    }

    /// The action keys (`default`, `approve`, …).
    pub fn action_keys(&self) -> Vec<&str> {
        self.actions.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// Whether an action with `key` was offered.
    pub fn has_action(&self, key: &str) -> bool {
        self.actions.iter().any(|(k, _)| k == key)
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{} [{}] {:?} urgency={:?} actions={:?} body={:?}",
            self.id,
            self.app_name,
            self.summary,
            self.urgency(),
            self.action_keys(),
            self.body
        )
    }
}

/// One record of the log: a method call with its raw argument text.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub time: f64,
    pub method: String,
    /// Everything after `METHOD ` (may span lines), without the final newline.
    pub args: String,
}

/// Whether `line` starts a record; returns `(time, method, rest)`.
fn record_start(line: &str) -> Option<(f64, &str, &str)> {
    let (time, rest) = line.split_once(' ')?;
    let (secs, millis) = time.split_once('.')?;
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || millis.is_empty()
        || !millis.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let method = &rest[..end];
    if method.is_empty() || !method.as_bytes()[0].is_ascii_alphabetic() {
        return None;
    }
    let after = &rest[end..];
    if !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    Some((
        time.parse().ok()?,
        method,
        after.strip_prefix(' ').unwrap_or(""),
    ))
}

/// Splits the log text into records.
pub fn records(text: &str) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    for line in text.split_inclusive('\n') {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        match record_start(bare) {
            Some((time, method, rest)) => out.push(Record {
                time,
                method: method.to_string(),
                args: rest.to_string(),
            }),
            // A continuation line (a string with a newline in it); text
            // before the first record is ignored.
            None => {
                if let Some(last) = out.last_mut() {
                    last.args.push('\n');
                    last.args.push_str(bare);
                }
            }
        }
    }
    out
}

/// All `Notify` calls in the log text, in order, with the ids the mock
/// gave them.
pub fn parse(text: &str) -> Vec<Notification> {
    let recs = records(text);
    let mut out = Vec::new();
    let mut next_id = 1u32;
    let mut i = 0;
    while i < recs.len() {
        if recs[i].method != "Notify" {
            i += 1;
            continue;
        }
        // A body line that happens to look like a record start splits one
        // record in two: if the record alone does not parse, glue the next
        // ones back on (at most a few).
        let mut joined = recs[i].args.clone();
        let mut used = 1;
        let mut parsed = notify_args(&joined);
        while parsed.is_none() && used < 4 && i + used < recs.len() {
            let r = &recs[i + used];
            let ms = format!("{:.3}", r.time);
            joined.push('\n');
            joined.push_str(&format!("{ms} {} {}", r.method, r.args));
            used += 1;
            parsed = notify_args(&joined);
        }
        match parsed {
            Some(mut n) => {
                n.time = recs[i].time;
                if n.replaces_id == 0 {
                    n.id = next_id;
                    next_id += 1;
                } else {
                    n.id = n.replaces_id;
                }
                out.push(n);
                i += used;
            }
            None => {
                // Unparseable (should not happen): still counts for ids.
                next_id += 1;
                i += 1;
            }
        }
    }
    out
}

/// Reads and parses the log file (a missing file is an empty log: the
/// mock creates it at start, before any call).
pub fn read(path: &Path) -> std::io::Result<Vec<Notification>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(parse(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Parses the argument text of one `Notify` record.
fn notify_args(s: &str) -> Option<Notification> {
    for args in sequences(s) {
        if let Some(n) = shape(args) {
            return Some(n);
        }
    }
    None
}

fn shape(args: Vec<Value>) -> Option<Notification> {
    let [app, replaces, icon, summary, body, actions, hints, timeout]: [Value; 8] =
        args.try_into().ok()?;
    let Value::List(actions) = actions else {
        return None;
    };
    let flat: Vec<String> = actions
        .into_iter()
        .map(|v| match v {
            Value::Str(s) => Some(s),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let pairs = flat.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let actions = pairs.map(|c| (c[0].clone(), c[1].clone())).collect();
    let Value::Dict(hints) = hints else {
        return None;
    };
    let hints = hints
        .into_iter()
        .map(|(k, v)| match k {
            Value::Str(k) => Some((k, v)),
            _ => None,
        })
        .collect::<Option<_>>()?;
    Some(Notification {
        time: 0.0,
        id: 0,
        app_name: app.as_str()?.to_string(),
        replaces_id: u32::try_from(replaces.as_int()?).ok()?,
        app_icon: icon.as_str()?.to_string(),
        summary: summary.as_str()?.to_string(),
        body: body.as_str()?.to_string(),
        actions,
        hints,
        expire_timeout: i32::try_from(timeout.as_int()?).ok()?,
    })
}

/// Every reading of `s` as values separated by single spaces that
/// consumes all of it, nearest closing quotes first.
fn sequences(s: &str) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for (v, rest) in values(s) {
        if rest.is_empty() {
            out.push(vec![v]);
        } else if let Some(rest) = rest.strip_prefix(' ') {
            for mut tail in sequences(rest) {
                tail.insert(0, v.clone());
                out.push(tail);
            }
        }
        // The first complete readings are enough.
        if out.len() >= 8 {
            break;
        }
    }
    out
}

/// Every reading of one value at the start of `s`, with what follows it.
fn values(s: &str) -> Vec<(Value, &str)> {
    let Some(c) = s.chars().next() else {
        return Vec::new();
    };
    match c {
        '"' => s[1..]
            .match_indices('"')
            .map(|(i, _)| (Value::Str(s[1..1 + i].to_string()), &s[i + 2..]))
            .collect(),
        '[' => items(&s[1..], ']')
            .into_iter()
            .map(|(v, r)| (Value::List(v), r))
            .collect(),
        '{' => entries(&s[1..])
            .into_iter()
            .map(|(v, r)| (Value::Dict(v), r))
            .collect(),
        '-' | '0'..='9' => {
            let digits = s[1..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(s.len(), |i| i + 1);
            match s[..digits].parse() {
                Ok(i) => vec![(Value::Int(i), &s[digits..])],
                Err(_) => Vec::new(),
            }
        }
        _ if s.starts_with("True") => vec![(Value::Bool(true), &s[4..])],
        _ if s.starts_with("False") => vec![(Value::Bool(false), &s[5..])],
        _ if c.is_ascii_alphabetic() => {
            // A repr such as `dbus.Double(1.5, variant_level=1)`: a dotted
            // name, then balanced parentheses if any.
            let name_end = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(s.len());
            let mut end = name_end;
            if s[name_end..].starts_with('(') {
                let mut depth = 0usize;
                let mut close = None;
                for (i, ch) in s[name_end..].char_indices() {
                    match ch {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                close = Some(name_end + i + 1);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                match close {
                    Some(e) => end = e,
                    None => return Vec::new(),
                }
            }
            vec![(Value::Other(s[..end].to_string()), &s[end..])]
        }
        _ => Vec::new(),
    }
}

/// Items of a list after its `[`, up to and including `close`.
fn items(s: &str, close: char) -> Vec<(Vec<Value>, &str)> {
    if let Some(rest) = s.strip_prefix(close) {
        return vec![(Vec::new(), rest)];
    }
    let mut out = Vec::new();
    for (v, rest) in values(s) {
        if let Some(r) = rest.strip_prefix(close) {
            out.push((vec![v.clone()], r));
        }
        if let Some(r) = rest.strip_prefix(", ") {
            for (mut tail, r2) in items_nonempty(r, close) {
                tail.insert(0, v.clone());
                out.push((tail, r2));
            }
        }
    }
    out
}

fn items_nonempty(s: &str, close: char) -> Vec<(Vec<Value>, &str)> {
    if s.starts_with(close) {
        return Vec::new();
    }
    items(s, close)
}

type Entries<'a> = Vec<(Vec<(Value, Value)>, &'a str)>;

/// Entries of a dict after its `{`, up to and including `}`.
fn entries(s: &str) -> Entries<'_> {
    if let Some(rest) = s.strip_prefix('}') {
        return vec![(Vec::new(), rest)];
    }
    let mut out = Vec::new();
    for (k, rest) in values(s) {
        let Some(rest) = rest.strip_prefix(": ") else {
            continue;
        };
        for (v, rest) in values(rest) {
            if let Some(r) = rest.strip_prefix('}') {
                out.push((vec![(k.clone(), v.clone())], r));
            }
            if let Some(r) = rest.strip_prefix(", ") {
                if r.starts_with('}') {
                    continue;
                }
                for (mut tail, r2) in entries(r) {
                    tail.insert(0, (k.clone(), v.clone()));
                    out.push((tail, r2));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verbatim from a run of dbusmock 0.28 (Debian 12) fed by `gdbus call`.
    const REAL: &str = "1795952652.778 GetAll /org/freedesktop/Notifications org.freedesktop.DBus.Introspectable
1795952652.799 GetCapabilities
1795952652.819 Notify \"JIT Access\" 0 \"\" \"URGENT access request: alice → prod-db-admin\" \"line one
line two, with 'quotes' and \"dq\"\" [\"default\", \"Open\", \"approve\", \"Approve\", \"deny\", \"Deny\"] {\"urgency\": 2, \"desktop-entry\": \"jit\"} -1
1795952652.844 Notify \"JIT Access\" 0 \"\" \"Access granted: prod-db-admin\" \"\" [] {} 5000
";

    #[test]
    fn parses_a_real_log() {
        let n = parse(REAL);
        assert_eq!(n.len(), 2, "{n:#?}");
        assert_eq!(n[0].id, 1);
        assert_eq!(n[0].app_name, "JIT Access");
        assert_eq!(n[0].summary, "URGENT access request: alice → prod-db-admin");
        assert_eq!(
            n[0].body, "line one\nline two, with 'quotes' and \"dq\"",
            "unescaped quotes and newlines in a body"
        );
        assert_eq!(n[0].urgency(), Some(2));
        assert_eq!(n[0].action_keys(), ["default", "approve", "deny"]);
        assert_eq!(n[0].actions[1], ("approve".into(), "Approve".into()));
        assert_eq!(
            n[0].hints.get("desktop-entry"),
            Some(&Value::Str("jit".into()))
        );
        assert_eq!(n[0].expire_timeout, -1);
        assert!((n[0].time - 1_795_952_652.819).abs() < 1e-6);
        assert_eq!(n[1].id, 2);
        assert_eq!(n[1].summary, "Access granted: prod-db-admin");
        assert_eq!(n[1].body, "");
        assert!(n[1].actions.is_empty() && n[1].hints.is_empty());
        assert_eq!(n[1].urgency(), None);
        assert_eq!(n[1].expire_timeout, 5000);
    }

    #[test]
    fn other_records_and_odd_values() {
        let log = "1.000 CloseNotification 3\n\
                   2.500 Notify \"a\" 7 \"icon\" \"s\" \"b\" [] {\"urgency\": 0, \"transient\": True, \"x\": dbus.Double(1.5, variant_level=1), \"sound\": \"a, b\"} 0\n\
                   3.000 Notify \"a\" 0 \"\" \"t\" \"x\" [] {} -1\n";
        let n = parse(log);
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].id, 7, "replaces_id is the id");
        assert_eq!(n[0].app_icon, "icon");
        assert_eq!(n[0].urgency(), Some(0));
        assert_eq!(n[0].hints["transient"], Value::Bool(true));
        assert_eq!(
            n[0].hints["x"],
            Value::Other("dbus.Double(1.5, variant_level=1)".into())
        );
        assert_eq!(n[0].hints["sound"], Value::Str("a, b".into()));
        assert_eq!(n[1].id, 1);
    }

    #[test]
    fn a_body_line_that_looks_like_a_record() {
        let log = "5.000 Notify \"a\" 0 \"\" \"s\" \"first\n6.000 Notify looks like a record\" [] {} -1\n\
                   7.000 Notify \"a\" 0 \"\" \"next\" \"\" [] {} -1\n";
        let n = parse(log);
        assert_eq!(n.len(), 2, "{n:#?}");
        assert_eq!(n[0].body, "first\n6.000 Notify looks like a record");
        assert_eq!(n[1].summary, "next");
        assert_eq!(n[1].id, 2);
    }

    #[test]
    fn quotes_inside_strings_and_actions() {
        let log = "1.000 Notify \"JIT Access\" 0 \"\" \"say \"hi\" now\" \"b \"q\" [x]\" [\"default\", \"Open \"now\"\"] {\"category\": \"im\"} 10\n";
        let n = parse(log);
        assert_eq!(n.len(), 1, "{n:#?}");
        assert_eq!(n[0].summary, "say \"hi\" now");
        assert_eq!(n[0].body, "b \"q\" [x]");
        assert_eq!(n[0].actions, [("default".into(), "Open \"now\"".into())]);
    }

    /// `" "` inside a summary cannot be told from the end of one string and
    /// the start of the next: the parser takes the shortest summary. The
    /// text is never lost, only split differently.
    #[test]
    fn truly_ambiguous_text_is_split_consistently() {
        let log = "1.000 Notify \"a\" 0 \"\" \"x\" \"y\" \"z\" [] {} 0\n";
        let n = parse(log);
        assert_eq!(n.len(), 1, "{n:#?}");
        assert_eq!(
            (n[0].summary.as_str(), n[0].body.as_str()),
            ("x", "y\" \"z")
        );
    }

    #[test]
    fn empty_and_garbage() {
        assert!(parse("").is_empty());
        assert!(parse("not a log\n").is_empty());
        assert!(records("12.3 GetCapabilities\n")[0].args.is_empty());
    }
}
