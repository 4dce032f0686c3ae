//! The JIT policy: which entitlements can be requested, for how long, and who
//! decides. Read from TOML (see `config/policy.toml` for a commented example).
//!
//! Only entitlements listed here can ever be granted: the server resolves every
//! grant through [`Policy::entitlement`], never from client input.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::principal::Principal;
use crate::{format_duration, parse_duration};

/// What an entitlement is in Keycloak. Stored with each request as a snapshot,
/// so a revoke never depends on the policy still listing the entitlement.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    ts_rs::TS,
)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntitlementKind {
    /// A realm role, by name.
    RealmRole { role: String },
    /// A client role: `client` is the client's `clientId`, `role` the role name.
    ClientRole { client: String, role: String },
    /// Membership of a group, by full path (`/incident-responders`).
    Group { path: String },
}

impl std::fmt::Display for EntitlementKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntitlementKind::RealmRole { role } => write!(f, "realm role {role}"),
            EntitlementKind::ClientRole { client, role } => {
                write!(f, "client role {client}/{role}")
            }
            EntitlementKind::Group { path } => write!(f, "group {path}"),
        }
    }
}

/// An automatic-approval rule. All the conditions given must hold; an empty
/// rule is refused when the policy is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoApproveRule {
    /// The requester holds this Keycloak realm role (from the access token).
    pub requester_role: Option<String>,
    /// The requester is a member of this group (from the access token).
    pub requester_group: Option<String>,
    /// Allowed days (UTC), e.g. `["mon","tue"]`; empty means any day.
    pub weekdays: Vec<Weekday>,
    /// Allowed hours `[start, end)` in UTC, 0–24.
    pub hours_utc: Option<(u32, u32)>,
}

impl AutoApproveRule {
    /// Whether the rule approves `requester`'s request at `now` (UTC).
    pub fn matches(&self, requester: &Principal, now: DateTime<Utc>) -> bool {
        if let Some(r) = &self.requester_role {
            if !requester.roles.contains(r) {
                return false;
            }
        }
        if let Some(g) = &self.requester_group {
            if !requester.groups.contains(g.trim_start_matches('/')) {
                return false;
            }
        }
        if !self.weekdays.is_empty() && !self.weekdays.contains(&now.weekday()) {
            return false;
        }
        if let Some((start, end)) = self.hours_utc {
            let h = now.hour();
            if h < start || h >= end {
                return false;
            }
        }
        true
    }

    /// One-line description for the audit log.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = &self.requester_role {
            parts.push(format!("requester holds role {r}"));
        }
        if let Some(g) = &self.requester_group {
            parts.push(format!("requester in group {g}"));
        }
        if !self.weekdays.is_empty() {
            let days: Vec<String> = self.weekdays.iter().map(|d| d.to_string()).collect();
            parts.push(format!("on {}", days.join(",")));
        }
        if let Some((s, e)) = self.hours_utc {
            parts.push(format!("between {s:02}:00 and {e:02}:00 UTC"));
        }
        parts.join(" and ")
    }
}

/// Most characters any entitlement may allow in a justification: the
/// ceiling of `justification_max` in the policy (its default too), so a
/// policy cannot make jitd store and show an unbounded text.
pub const MAX_JUSTIFICATION_CHARS: usize = 1000;

/// One requestable entitlement, validated.
#[derive(Debug, Clone, Serialize)]
pub struct Entitlement {
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub kind: EntitlementKind,
    /// Longest grant, seconds.
    pub max_duration: i64,
    /// Duration used when the request names none, seconds.
    pub default_duration: i64,
    /// Longest a grant may run in all, its duration plus every extension,
    /// seconds (`max_total_duration`; default 4 × `max_duration`). An
    /// extension that would go beyond it is refused
    /// (`total_duration_exceeds_max`): past it the requester asks again.
    pub max_total_duration: i64,
    /// Distinct approvals needed (≥ 1). One deny ends the request.
    pub approvals_required: u32,
    /// Realm roles whose holders may approve.
    pub approver_roles: Vec<String>,
    /// Groups (name or path) whose members may approve.
    pub approver_groups: Vec<String>,
    /// Realm roles allowed to request; with `requester_groups`, empty means anyone.
    pub requester_roles: Vec<String>,
    pub requester_groups: Vec<String>,
    /// Justification length bounds, in characters.
    pub justification_min: usize,
    pub justification_max: usize,
    /// If set, a ticket reference matching it is required.
    #[serde(skip)]
    pub ticket_pattern: Option<Regex>,
    /// How long a request may wait for a decision before it lapses, seconds.
    pub pending_ttl: i64,
    /// End the user's Keycloak sessions when the grant ends (expiry, drop
    /// or revoke alike; the name is the policy key's), so a refresh
    /// token cannot mint a new token with the role (Keycloak keeps a removed
    /// role in already-issued access tokens until they expire).
    pub end_sessions_on_revoke: bool,
    /// The requester may self-activate in an emergency; reviewed afterwards.
    pub break_glass: bool,
    pub auto_approve: Vec<AutoApproveRule>,
}

impl Entitlement {
    /// Whether `p` may approve, deny or revoke requests for this entitlement
    /// (by realm role or group). Self-approval is checked separately.
    pub fn is_approver(&self, p: &Principal) -> bool {
        self.approver_roles.iter().any(|r| p.roles.contains(r))
            || self
                .approver_groups
                .iter()
                .any(|g| p.groups.contains(g.trim_start_matches('/')))
    }

    /// Whether `p` may request this entitlement.
    pub fn may_request(&self, p: &Principal) -> bool {
        (self.requester_roles.is_empty() && self.requester_groups.is_empty())
            || self.requester_roles.iter().any(|r| p.roles.contains(r))
            || self
                .requester_groups
                .iter()
                .any(|g| p.groups.contains(g.trim_start_matches('/')))
    }

    /// The ticket pattern as text, if any.
    pub fn ticket_pattern_str(&self) -> Option<&str> {
        self.ticket_pattern.as_ref().map(|r| r.as_str())
    }
}

/// The whole policy, validated; entitlements keyed by id.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub entitlements: BTreeMap<String, Entitlement>,
    /// Realm roles whose holders see every request and the whole audit log.
    pub auditor_roles: Vec<String>,
    /// How far ahead a scheduled start may be, seconds.
    pub max_start_ahead: i64,
}

impl Policy {
    /// Looks an entitlement up by id.
    pub fn entitlement(&self, id: &str) -> Option<&Entitlement> {
        self.entitlements.get(id)
    }

    /// Whether `p` holds an auditor role.
    pub fn is_auditor(&self, p: &Principal) -> bool {
        self.auditor_roles.iter().any(|r| p.roles.contains(r))
    }

    /// Parses and validates a policy file's text.
    ///
    /// Errors: a [`PolicyError`] naming the 1-based line and the field at
    /// fault (TOML syntax, unknown field, bad duration, regex, inconsistent
    /// bounds, duplicate id or Keycloak target, no entitlement at all).
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let raw = RawPolicy::parse(text)?;
        let auditor_roles = raw
            .auditor_roles
            .unwrap_or_else(|| vec!["jit-auditor".into()]);
        let max_start_ahead = match raw.max_start_ahead {
            Some(s) => parse_duration(s.get_ref()).map_err(|e| PolicyError {
                line: line_of(text, s.span().start),
                field: "max_start_ahead".into(),
                message: e.to_string(),
            })?,
            None => 7 * 86_400,
        };
        let mut entitlements = BTreeMap::new();
        let mut targets = BTreeSet::new();
        for spanned in raw.entitlement {
            let line = line_of(text, spanned.span().start);
            let raw = spanned.into_inner();
            let e = raw.build(&FieldErrors {
                text,
                line,
                id: &raw.id,
            })?;
            let err = FieldErrors {
                text,
                line,
                id: &e.id,
            };
            if !targets.insert(e.kind.clone()) {
                return Err(err.at(
                    "kind",
                    format!("{} is already the target of another entitlement", e.kind),
                ));
            }
            if entitlements.contains_key(&e.id) {
                return Err(err.at("id", "duplicate id".into()));
            }
            entitlements.insert(e.id.clone(), e);
        }
        if entitlements.is_empty() {
            // An empty (e.g. truncated) file would end every JIT grant.
            return Err(PolicyError {
                line: 0,
                field: "entitlement".into(),
                message:
                    "the policy defines no entitlement; refusing it (it would end all JIT access)"
                        .into(),
            });
        }
        Ok(Policy {
            entitlements,
            auditor_roles,
            max_start_ahead,
        })
    }
}

/// Builds the [`PolicyError`]s of one `[[entitlement]]` table: the field's
/// line (or the table's) and `entitlement 'id'.field`.
struct FieldErrors<'a> {
    text: &'a str,
    /// The table's 1-based line.
    line: usize,
    id: &'a str,
}

impl FieldErrors<'_> {
    fn at(&self, field: &str, message: String) -> PolicyError {
        PolicyError {
            line: field_line(self.text, self.line, field),
            field: format!("entitlement '{}'.{field}", self.id),
            // Some messages (regex) span lines; keep the error on one.
            message: one_line(&message),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl RawPolicy {
    /// The file's TOML, with a syntax or shape error at its line and key.
    fn parse(text: &str) -> Result<RawPolicy, PolicyError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            // The key on the offending line, when there is one (`key = value`).
            let field = text
                .lines()
                .nth(line.saturating_sub(1))
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().to_string())
                .filter(|k| !k.is_empty() && !k.starts_with('['))
                .unwrap_or_default();
            PolicyError {
                line,
                field,
                message: one_line(e.message()),
            }
        })
    }
}

impl RawEntitlement {
    /// The entitlement this table defines, every field checked.
    fn build(&self, err: &FieldErrors) -> Result<Entitlement, PolicyError> {
        self.check_id(err)?;
        let kind = self.kind(err)?;
        let dur =
            |field: &str, v: &str| parse_duration(v).map_err(|e| err.at(field, e.to_string()));
        let max_duration = dur("max_duration", &self.max_duration)?;
        let default_duration = match &self.default_duration {
            Some(d) => dur("default_duration", d)?,
            None => max_duration,
        };
        if default_duration > max_duration {
            return Err(err.at(
                "default_duration",
                format!(
                    "{} is longer than max_duration {}",
                    format_duration(default_duration),
                    format_duration(max_duration)
                ),
            ));
        }
        let max_total_duration = match &self.max_total_duration {
            Some(d) => dur("max_total_duration", d)?,
            None => max_duration.saturating_mul(4),
        };
        if max_total_duration < max_duration {
            return Err(err.at(
                "max_total_duration",
                format!(
                    "{} is shorter than max_duration {}",
                    format_duration(max_total_duration),
                    format_duration(max_duration)
                ),
            ));
        }
        let pending_ttl = match &self.pending_ttl {
            Some(d) => dur("pending_ttl", d)?,
            None => 86_400,
        };
        let approvals_required = self.approvals_required.unwrap_or(1);
        if !(1..=10).contains(&approvals_required) {
            return Err(err.at("approvals_required", "must be between 1 and 10".into()));
        }
        if self.approver_roles.is_empty() && self.approver_groups.is_empty() {
            return Err(err.at(
                "approver_roles",
                "at least one approver role or group is required".into(),
            ));
        }
        let (justification_min, justification_max) = self.justification_bounds(err)?;
        let ticket_pattern = match &self.ticket_pattern {
            Some(p) => Some(
                Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| err.at("ticket_pattern", e.to_string()))?,
            ),
            None => None,
        };
        let auto_approve = self
            .auto_approve
            .iter()
            .enumerate()
            .map(|(i, a)| a.build(&format!("auto_approve[{i}]"), err))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Entitlement {
            display_name: self.display_name.clone().unwrap_or_else(|| self.id.clone()),
            description: self.description.clone().unwrap_or_default(),
            id: self.id.clone(),
            kind,
            max_duration,
            default_duration,
            max_total_duration,
            approvals_required,
            approver_roles: self.approver_roles.clone(),
            approver_groups: self.approver_groups.clone(),
            requester_roles: self.requester_roles.clone(),
            requester_groups: self.requester_groups.clone(),
            justification_min,
            justification_max,
            ticket_pattern,
            pending_ttl,
            end_sessions_on_revoke: self.end_sessions_on_revoke,
            break_glass: self.break_glass,
            auto_approve,
        })
    }

    /// Ids are non-empty: letters, digits, `-`, `_`, `.`.
    fn check_id(&self, err: &FieldErrors) -> Result<(), PolicyError> {
        let ok = !self.id.is_empty()
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if ok {
            Ok(())
        } else {
            Err(err.at("id", "must be non-empty: letters, digits, - _ .".into()))
        }
    }

    /// The Keycloak target: exactly one of `realm_role`, `client_role`,
    /// `group` (a group path gets its leading `/`).
    fn kind(&self, err: &FieldErrors) -> Result<EntitlementKind, PolicyError> {
        match (&self.realm_role, &self.client_role, &self.group) {
            (Some(role), None, None) => Ok(EntitlementKind::RealmRole { role: role.clone() }),
            (None, Some(c), None) => Ok(EntitlementKind::ClientRole {
                client: c.client.clone(),
                role: c.role.clone(),
            }),
            (None, None, Some(g)) => Ok(EntitlementKind::Group {
                path: format!("/{}", g.trim_start_matches('/')),
            }),
            _ => Err(err.at(
                "kind",
                "exactly one of realm_role, client_role or group is required".into(),
            )),
        }
    }

    /// `(justification_min, justification_max)`, defaults 10 and 1000;
    /// break-glass needs a justification.
    fn justification_bounds(&self, err: &FieldErrors) -> Result<(usize, usize), PolicyError> {
        const CEILING: usize = MAX_JUSTIFICATION_CHARS;
        let min = self.justification_min.unwrap_or(10);
        let max = self.justification_max.unwrap_or(CEILING);
        if max > CEILING {
            return Err(err.at(
                "justification_max",
                format!(
                    "{max} is above jitd's limit: a justification is at most {CEILING} characters"
                ),
            ));
        }
        if min > max {
            return Err(err.at(
                "justification_min",
                "must not exceed justification_max".into(),
            ));
        }
        if self.break_glass && min == 0 {
            return Err(err.at(
                "justification_min",
                "break-glass entitlements require a justification (min ≥ 1)".into(),
            ));
        }
        Ok((min, max))
    }
}

impl RawAutoApprove {
    /// The rule, named `field` (`auto_approve[i]`) in errors: known
    /// weekdays, `hours_utc` as `[start, end)` within the day, and never
    /// empty (an empty rule would approve everything).
    fn build(&self, field: &str, err: &FieldErrors) -> Result<AutoApproveRule, PolicyError> {
        let weekdays = self
            .weekdays
            .iter()
            .map(|d| {
                d.parse::<Weekday>()
                    .map_err(|_| err.at(field, format!("unknown weekday '{d}'")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hours_utc = match self.hours_utc {
            Some([s, e]) if s < e && e <= 24 => Some((s, e)),
            Some(_) => {
                return Err(err.at(
                    field,
                    "hours_utc must be [start, end) with 0 ≤ start < end ≤ 24".into(),
                ))
            }
            None => None,
        };
        if self.requester_role.is_none()
            && self.requester_group.is_none()
            && weekdays.is_empty()
            && hours_utc.is_none()
        {
            return Err(err.at(field, "an empty rule would approve everything".into()));
        }
        Ok(AutoApproveRule {
            requester_role: self.requester_role.clone(),
            requester_group: self.requester_group.clone(),
            weekdays,
            hours_utc,
        })
    }
}

/// A policy file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy line {line}: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct PolicyError {
    /// 1-based line (0 if unknown).
    pub line: usize,
    /// The field at fault, e.g. `entitlement 'prod-db'.max_duration`.
    pub field: String,
    pub message: String,
}

/// The 1-based line of `field = …` within the entitlement table starting at
/// `table_line`, or `table_line` if the field is not written there.
fn field_line(text: &str, table_line: usize, field: &str) -> usize {
    let key = field.split('[').next().unwrap_or(field);
    for (i, l) in text.lines().enumerate().skip(table_line.saturating_sub(1)) {
        let t = l.trim_start();
        if i + 1 > table_line && t.starts_with("[[entitlement]]") {
            break;
        }
        let is_key = t
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        let is_rule = key == "auto_approve" && t.starts_with("[[entitlement.auto_approve]]");
        if is_key || is_rule {
            return i + 1;
        }
    }
    table_line
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    auditor_roles: Option<Vec<String>>,
    max_start_ahead: Option<toml::Spanned<String>>,
    #[serde(default)]
    entitlement: Vec<toml::Spanned<RawEntitlement>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntitlement {
    id: String,
    display_name: Option<String>,
    description: Option<String>,
    realm_role: Option<String>,
    client_role: Option<RawClientRole>,
    group: Option<String>,
    max_duration: String,
    default_duration: Option<String>,
    max_total_duration: Option<String>,
    approvals_required: Option<u32>,
    #[serde(default)]
    approver_roles: Vec<String>,
    #[serde(default)]
    approver_groups: Vec<String>,
    #[serde(default)]
    requester_roles: Vec<String>,
    #[serde(default)]
    requester_groups: Vec<String>,
    justification_min: Option<usize>,
    justification_max: Option<usize>,
    ticket_pattern: Option<String>,
    pending_ttl: Option<String>,
    #[serde(default)]
    end_sessions_on_revoke: bool,
    #[serde(default)]
    break_glass: bool,
    #[serde(default)]
    auto_approve: Vec<RawAutoApprove>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawClientRole {
    client: String,
    role: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutoApprove {
    requester_role: Option<String>,
    requester_group: Option<String>,
    #[serde(default)]
    weekdays: Vec<String>,
    hours_utc: Option<[u32; 2]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
auditor_roles = ["jit-auditor"]

[[entitlement]]
id = "prod-db-admin"
display_name = "Production DB admin"
realm_role = "prod-db-admin"
max_duration = "1h"
default_duration = "15m"
approver_roles = ["jit-approver-db"]
ticket_pattern = "INC-[0-9]+"

[[entitlement]]
id = "billing-admin"
client_role = { client = "billing-app", role = "billing-admin" }
max_duration = "4h"
approvals_required = 2
approver_groups = ["/ops"]

[[entitlement]]
id = "incident"
group = "incident-responders"
max_duration = "2h"
approver_roles = ["jit-approver-ops"]
break_glass = true
[[entitlement.auto_approve]]
requester_role = "oncall"
hours_utc = [8, 18]
"#;

    #[test]
    fn parses_a_good_policy() {
        let p = Policy::from_toml(GOOD).unwrap();
        assert_eq!(p.entitlements.len(), 3);
        let db = p.entitlement("prod-db-admin").unwrap();
        assert_eq!(db.max_duration, 3600);
        assert_eq!(db.default_duration, 900);
        assert_eq!(db.approvals_required, 1);
        assert_eq!(db.pending_ttl, 86_400);
        assert!(db.ticket_pattern.as_ref().unwrap().is_match("INC-42"));
        assert!(!db.ticket_pattern.as_ref().unwrap().is_match("xINC-42"));
        let inc = p.entitlement("incident").unwrap();
        assert_eq!(
            inc.kind,
            EntitlementKind::Group {
                path: "/incident-responders".into()
            }
        );
        assert_eq!(inc.auto_approve[0].hours_utc, Some((8, 18)));
        assert_eq!(p.max_start_ahead, 7 * 86_400);
    }

    fn error_of(text: &str) -> PolicyError {
        Policy::from_toml(text).unwrap_err()
    }

    #[test]
    fn an_empty_policy_is_refused() {
        let e = error_of("auditor_roles = [\"x\"]\n");
        assert_eq!(e.field, "entitlement", "{e}");
        assert!(Policy::from_toml("").is_err());
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = error_of("[[entitlement]]\nid = \"x\"\nmax_duration = 5\n");
        assert_eq!(e.line, 3, "{e}");
        assert_eq!(e.field, "max_duration", "{e}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = error_of("[[entitlement]]\nid = \"x\"\nrealm_role=\"r\"\nmax_duration=\"1h\"\napprover_roles=[\"a\"]\nmax_duraton = \"2h\"\n");
        assert!(e.message.contains("max_duraton"), "{e}");
    }

    #[test]
    fn max_total_duration_defaults_to_four_grants_and_is_never_below_one() {
        let one = |extra: &str| {
            format!("[[entitlement]]\nid = \"x\"\nrealm_role=\"r\"\nmax_duration=\"1h\"\napprover_roles=[\"a\"]\n{extra}")
        };
        let p = Policy::from_toml(&one("")).unwrap();
        assert_eq!(p.entitlement("x").unwrap().max_total_duration, 4 * 3600);
        let p = Policy::from_toml(&one("max_total_duration = \"8h\"\n")).unwrap();
        assert_eq!(p.entitlement("x").unwrap().max_total_duration, 8 * 3600);
        let e = error_of(&one("max_total_duration = \"30m\"\n"));
        assert!(e.field.ends_with("max_total_duration"), "{e}");
        assert!(e.message.contains("shorter than max_duration 1h"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_field_and_line() {
        let text = "auditor_roles=[]\n\n[[entitlement]]\nid = \"x\"\nrealm_role=\"r\"\nmax_duration=\"1h\"\ndefault_duration=\"2h\"\napprover_roles=[\"a\"]\n";
        let e = error_of(text);
        assert!(e.field.ends_with("default_duration"), "{e}");
        assert_eq!(e.line, 7, "the field's own line: {e}");
        assert!(e.to_string().contains("policy line 7"), "{e}");
    }

    #[test]
    fn rules_are_checked() {
        let base =
            |extra: &str| format!("[[entitlement]]\nid = \"x\"\nmax_duration=\"1h\"\n{extra}\n");
        let cases = [
            (base("approver_roles=[\"a\"]"), "kind"),
            (base("realm_role=\"r\"\ngroup=\"g\"\napprover_roles=[\"a\"]"), "kind"),
            (base("realm_role=\"r\""), "approver_roles"),
            (base("realm_role=\"r\"\napprover_roles=[\"a\"]\napprovals_required=0"), "approvals_required"),
            (base("realm_role=\"r\"\napprover_roles=[\"a\"]\nticket_pattern=\"(\""), "ticket_pattern"),
            (base("realm_role=\"r\"\napprover_roles=[\"a\"]\npending_ttl=\"soon\""), "pending_ttl"),
            (base("realm_role=\"r\"\napprover_roles=[\"a\"]\njustification_min=50\njustification_max=5"), "justification_min"),
            (base("realm_role=\"r\"\napprover_roles=[\"a\"]\njustification_max=100000"), "justification_max"),
            (base("realm_role=\"r\"\napprover_roles=[\"a\"]\n[[entitlement.auto_approve]]\n"), "auto_approve[0]"),
        ];
        for (text, field) in cases {
            let e = error_of(&text);
            assert!(e.field.ends_with(field), "expected {field}, got {e}");
        }
    }

    #[test]
    fn duplicate_ids_and_targets_are_refused() {
        let one = "[[entitlement]]\nid = \"x\"\nrealm_role=\"r\"\nmax_duration=\"1h\"\napprover_roles=[\"a\"]\n";
        let e = error_of(&format!("{one}{one}"));
        assert!(e.message.contains("already the target"), "{e}");
        let other = one
            .replace("id = \"x\"", "id = \"y\"")
            .replace("\"r\"", "\"s\"");
        let dup = other.replace("id = \"y\"", "id = \"x\"");
        let e = error_of(&format!("{one}{dup}"));
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn auto_approve_rules_match() {
        let p = Policy::from_toml(GOOD).unwrap();
        let rule = &p.entitlement("incident").unwrap().auto_approve[0];
        let mut alice = Principal::new("1", "alice");
        let noon: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
        let night: DateTime<Utc> = "2026-11-30T22:00:00Z".parse().unwrap();
        assert!(!rule.matches(&alice, noon));
        alice.roles.insert("oncall".into());
        assert!(rule.matches(&alice, noon));
        assert!(!rule.matches(&alice, night));
        assert!(rule.describe().contains("oncall"));
    }

    #[test]
    fn approvers_by_role_or_group() {
        let p = Policy::from_toml(GOOD).unwrap();
        let billing = p.entitlement("billing-admin").unwrap();
        let mut bob = Principal::new("2", "bob");
        assert!(!billing.is_approver(&bob));
        bob.groups.insert("ops".into());
        assert!(billing.is_approver(&bob));
        assert!(billing.may_request(&bob));
    }
}
