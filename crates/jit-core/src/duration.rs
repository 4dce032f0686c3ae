//! Human durations ("90s", "45m", "4h", "1h30m") as whole seconds.

use crate::DomainError;

/// Parses a human duration such as `90s`, `45m`, `4h`, `1h30m` or `1h 30m`
/// into whole seconds (`i64`). Units: `s`, `m`, `h`, `d` (and the longer
/// spellings `humantime` accepts). A bare number is refused: the unit must be
/// explicit so "30" is never read as seconds when minutes were meant.
///
/// Errors: [`DomainError::InvalidDuration`] for empty, unit-less, zero,
/// sub-second or unparsable input.
pub fn parse_duration(text: &str) -> Result<i64, DomainError> {
    let t = text.trim();
    let invalid = |why: &str| DomainError::InvalidDuration {
        input: text.to_string(),
        reason: why.to_string(),
    };
    if t.is_empty() {
        return Err(invalid("empty"));
    }
    if t.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid("a unit is required, e.g. 90s, 45m, 4h"));
    }
    // humantime wants "1h 30m"; accept the compact "1h30m" too.
    let mut spaced = String::with_capacity(t.len() + 4);
    let mut prev_alpha = false;
    for c in t.chars() {
        if c.is_ascii_digit() && prev_alpha {
            spaced.push(' ');
        }
        prev_alpha = c.is_alphabetic();
        spaced.push(c);
    }
    let d = humantime::parse_duration(&spaced).map_err(|e| invalid(&e.to_string()))?;
    if d.subsec_nanos() != 0 {
        return Err(invalid("whole seconds only"));
    }
    let secs = i64::try_from(d.as_secs()).map_err(|_| invalid("too large"))?;
    if secs == 0 {
        return Err(invalid("must be greater than zero"));
    }
    Ok(secs)
}

/// Formats seconds compactly: `5400` → `1h30m`, `90` → `1m30s`, `0` → `0s`.
/// Negative values are formatted with a leading `-`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        for (input, secs) in [
            ("90s", 90),
            ("45m", 2700),
            ("4h", 14_400),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("2d", 172_800),
            (" 15m ", 900),
        ] {
            assert_eq!(parse_duration(input).unwrap(), secs, "{input}");
        }
    }

    #[test]
    fn refuses_bad_input() {
        for input in ["", "30", "0s", "abc", "-5m", "1.5s", "5 parsecs"] {
            assert!(
                matches!(
                    parse_duration(input),
                    Err(DomainError::InvalidDuration { .. })
                ),
                "{input}"
            );
        }
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(90), "1m30s");
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(-61), "-1m1s");
        assert_eq!(format_duration(86_400), "1d");
    }
}
