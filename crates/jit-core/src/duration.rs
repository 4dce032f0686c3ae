//! Human durations ("90s", "45m", "4h", "1h30m") as whole seconds: the one
//! grammar jitd, the `jit` CLI, the policy file and the desktop app accept.
//!
//! ```text
//! duration = part { [spaces] part }        e.g. "1h30m", "1h 30m", "2 days"
//! part     = digits [spaces] unit
//! unit     = d | day | days                    86 400 s
//!          | h | hr | hrs | hour | hours          3 600 s
//!          | m | min | mins | minute | minutes       60 s
//!          | s | sec | secs | second | seconds        1 s
//! ```
//!
//! Rules: units are lower case (`M` is refused, never months or minutes);
//! each unit at most once, largest first (`5m5m` and `30m1h` are refused);
//! whole numbers only; a bare number needs a unit; the total is > 0 and at
//! most [`MAX_DURATION_SECS`]. The desktop app's front end runs the same
//! table (`ui/src/logic/duration-grammar.json`, written from [`UNITS`] and
//! [`CASES`] by this module's tests) so it can never disagree.

use crate::DomainError;

/// Each unit with its spellings (the first is the canonical one) and its
/// length in seconds, largest first — the order parts must come in.
pub const UNITS: &[(&[&str], i64)] = &[
    (&["d", "day", "days"], 86_400),
    (&["h", "hr", "hrs", "hour", "hours"], 3_600),
    (&["m", "min", "mins", "minute", "minutes"], 60),
    (&["s", "sec", "secs", "second", "seconds"], 1),
];

/// The longest duration the grammar accepts: 3650 days, in seconds.
pub const MAX_DURATION_SECS: i64 = 3650 * 86_400;

/// Parses a human duration such as `90s`, `45m`, `4h`, `1h30m` or `1h 30m`
/// into whole seconds (`i64`), by the grammar of this module.
///
/// Errors: [`DomainError::InvalidDuration`] with the reason (empty, no
/// unit, unknown or upper-case unit, repeated or out-of-order unit,
/// fraction, zero, too large).
pub fn parse_duration(text: &str) -> Result<i64, DomainError> {
    let invalid = |why: String| DomainError::InvalidDuration {
        input: text.to_string(),
        reason: why,
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(invalid("empty; use e.g. 90s, 45m, 4h or 1h30m".into()));
    }
    let b = t.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    // Index in UNITS of the last unit used; the next must be smaller.
    let mut last: Option<usize> = None;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(invalid(
                "not a duration; use e.g. 90s, 45m, 4h or 1h30m".into(),
            ));
        }
        let digits = &t[start..i];
        if i < b.len() && (b[i] == b'.' || b[i] == b',') {
            return Err(invalid(
                "whole numbers only, e.g. 90m instead of 1.5h".into(),
            ));
        }
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &t[ustart..i];
        if unit.is_empty() {
            return Err(invalid(if i == b.len() && start == 0 {
                "a unit is required, e.g. 90s, 45m, 4h".into()
            } else {
                format!("'{digits}' needs a unit (s, m, h or d)")
            }));
        }
        let Some(u) = UNITS.iter().position(|(names, _)| names.contains(&unit)) else {
            let lower = unit.to_ascii_lowercase();
            return Err(invalid(
                if UNITS
                    .iter()
                    .any(|(names, _)| names.contains(&lower.as_str()))
                {
                    format!("units are lower case: write '{lower}' instead of '{unit}'")
                } else {
                    format!("unknown unit '{unit}'; use s, m, h or d")
                },
            ));
        };
        match last {
            Some(l) if l == u => {
                return Err(invalid(format!(
                    "the unit '{}' appears twice; write each unit once, e.g. 1h30m",
                    UNITS[u].0[0]
                )))
            }
            Some(l) if l > u => {
                return Err(invalid(
                    "put the largest unit first (d, h, m, s), e.g. 1h30m".into(),
                ))
            }
            _ => {}
        }
        last = Some(u);
        let n: i64 = digits
            .parse()
            .ok()
            .filter(|n| *n <= MAX_DURATION_SECS)
            .ok_or_else(|| invalid("too large".into()))?;
        total = n
            .checked_mul(UNITS[u].1)
            .and_then(|x| x.checked_add(total))
            .filter(|x| *x <= MAX_DURATION_SECS)
            .ok_or_else(|| invalid("too large: at most 3650d".into()))?;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
    }
    if total == 0 {
        return Err(invalid("must be greater than zero".into()));
    }
    Ok(total)
}

/// Formats seconds compactly: `5400` → `1h30m`, `90` → `1m30s`, `0` → `0s`.
/// Negative values are formatted with a leading `-`. The result parses back
/// with [`parse_duration`] (for positive values).
pub fn format_duration(secs: i64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let sign = if secs < 0 { "-" } else { "" };
    let mut s = secs.unsigned_abs();
    let mut out = String::from(sign);
    for (unit, n) in [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= n {
            out.push_str(&format!("{}{}", s / n, unit));
            s %= n;
        }
    }
    out
}

/// The grammar's test table, shared with the front end: an input and its
/// seconds, or `None` when it must be refused.
pub const CASES: &[(&str, Option<i64>)] = &[
    ("90s", Some(90)),
    ("45m", Some(2700)),
    ("4h", Some(14_400)),
    ("1h30m", Some(5400)),
    ("1h 30m", Some(5400)),
    ("1d2h3m4s", Some(93_784)),
    ("2d", Some(172_800)),
    (" 15m ", Some(900)),
    ("10min", Some(600)),
    ("2 hours", Some(7200)),
    ("1 hour 5 minutes", Some(3900)),
    ("1h0m", Some(3600)),
    ("3650d", Some(MAX_DURATION_SECS)),
    ("", None),
    ("   ", None),
    ("30", None),
    ("0s", None),
    ("0h0m", None),
    ("abc", None),
    ("h", None),
    ("-5m", None),
    ("+5m", None),
    ("1.5h", None),
    ("5 parsecs", None),
    ("5m5m", None),
    ("1h1h", None),
    ("5min5m", None),
    ("30m1h", None),
    ("5M", None),
    ("5H", None),
    ("2months", None),
    ("1y", None),
    ("1w", None),
    ("5ms", None),
    ("1h30", None),
    ("1h-", None),
    ("3651d", None),
    ("99999999999999999999s", None),
    ("1h\t30m", None),
    ("５m", None),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_table_holds() {
        for (input, want) in CASES {
            let got = parse_duration(input);
            match want {
                Some(secs) => assert_eq!(got.as_ref().ok(), Some(secs), "{input:?}: {got:?}"),
                None => assert!(
                    matches!(got, Err(DomainError::InvalidDuration { .. })),
                    "{input:?} must be refused, got {got:?}"
                ),
            }
        }
    }

    #[test]
    fn reasons_say_what_to_do() {
        let why = |s: &str| match parse_duration(s) {
            Err(DomainError::InvalidDuration { reason, .. }) => reason,
            other => panic!("{s}: {other:?}"),
        };
        assert!(why("5m5m").contains("twice"), "{}", why("5m5m"));
        assert!(why("5M").contains("lower case"), "{}", why("5M"));
        assert!(why("30").contains("unit is required"));
        assert!(why("2months").contains("unknown unit"));
        assert!(
            !why("2months").contains("years"),
            "no unit list from elsewhere"
        );
        assert!(why("30m1h").contains("largest unit first"));
    }

    #[test]
    fn formats_compactly_and_round_trips() {
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(90), "1m30s");
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(-61), "-1m1s");
        assert_eq!(format_duration(86_400), "1d");
        for s in [1, 59, 61, 3599, 3601, 86_399, 93_784, MAX_DURATION_SECS] {
            assert_eq!(parse_duration(&format_duration(s)).unwrap(), s);
        }
    }

    /// The front end's copy of the grammar (units, limit, cases). Rewrite
    /// it with `JIT_UPDATE_GRAMMAR=1 cargo test -p jit-core`.
    #[test]
    fn front_end_grammar_file_is_current() {
        let units: Vec<_> = UNITS
            .iter()
            .map(|(names, secs)| serde_json::json!({ "names": names, "secs": secs }))
            .collect();
        let cases: Vec<_> = CASES
            .iter()
            .map(|(input, secs)| serde_json::json!({ "input": input, "secs": secs }))
            .collect();
        let want = serde_json::to_string_pretty(&serde_json::json!({
            "_comment": "Written by jit-core (crates/jit-core/src/duration.rs); do not edit. JIT_UPDATE_GRAMMAR=1 cargo test -p jit-core rewrites it.",
            "units": units,
            "max_secs": MAX_DURATION_SECS,
            "cases": cases,
        }))
        .unwrap()
            + "\n";
        // The run's own checkout (`cargo test` sets it), not the one this
        // binary was built in: a shared target dir may have built it in
        // another.
        let dir = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let path = std::path::Path::new(&dir).join("../../ui/src/logic/duration-grammar.json");
        if std::env::var_os("JIT_UPDATE_GRAMMAR").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is stale: run JIT_UPDATE_GRAMMAR=1 cargo test -p jit-core",
            path.display()
        );
    }
}
