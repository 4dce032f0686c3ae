//! An example ticket reference for an entitlement's `ticket_pattern`, so
//! people are told "add --ticket INC-123", never shown a regular
//! expression.

use regex_syntax::hir::{Class, Hir, HirKind};

/// A short reference that `pattern` (as jitd's API shows it, e.g.
/// `^(?:INC-[0-9]+)$`) accepts: the first alternative of each choice,
/// digits as 1, 2, 3…, letters from the start of their range, an
/// open-ended repetition three times. `None` when no such example can be
/// made (or it would not match), so callers never show a wrong one.
pub fn example(pattern: &str) -> Option<String> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let mut out = String::new();
    sample(&hir, 0, &mut out)?;
    let re = regex::Regex::new(pattern).ok()?;
    (re.is_match(&out) && !out.trim().is_empty()).then_some(out)
}

/// Appends to `out` one text `h` matches; `nth` varies the characters a
/// class gives inside a repetition (1, 2, 3 rather than 1, 1, 1).
fn sample(h: &Hir, nth: usize, out: &mut String) -> Option<()> {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(l) => out.push_str(std::str::from_utf8(&l.0).ok()?),
        HirKind::Class(c) => out.push(class_char(c, nth)?),
        HirKind::Repetition(r) => {
            let times = match r.max {
                None => r.min.max(3),
                Some(_) => r.min,
            };
            for i in 0..times {
                sample(&r.sub, i as usize, out)?;
            }
        }
        HirKind::Capture(c) => sample(&c.sub, nth, out)?,
        HirKind::Concat(parts) => {
            for p in parts {
                sample(p, nth, out)?;
            }
        }
        HirKind::Alternation(alts) => sample(alts.first()?, nth, out)?,
    }
    Some(())
}

/// A readable character of class `c`: a digit from 1 up, else the
/// `nth` character of its first range of letters or digits, else its
/// first printable character.
fn class_char(c: &Class, nth: usize) -> Option<char> {
    let ranges: Vec<(char, char)> = match c {
        Class::Unicode(u) => u.ranges().iter().map(|r| (r.start(), r.end())).collect(),
        Class::Bytes(b) => b
            .ranges()
            .iter()
            .filter(|r| r.start().is_ascii())
            .map(|r| (r.start() as char, r.end().min(0x7f) as char))
            .collect(),
    };
    let has = |ch: char| ranges.iter().any(|&(a, b)| a <= ch && ch <= b);
    let digit = char::from(b'1' + (nth % 9) as u8);
    if has(digit) {
        return Some(digit);
    }
    for &(a, b) in &ranges {
        if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() {
            let span = b as u32 - a as u32 + 1;
            return char::from_u32(a as u32 + (nth as u32 % span));
        }
    }
    ranges
        .iter()
        .flat_map(|&(a, b)| (a..=b).take(128))
        .find(|ch| !ch.is_control() && !ch.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::example;

    #[test]
    fn examples_match_their_pattern_and_read_like_references() {
        assert_eq!(example("^(?:INC-[0-9]+)$").as_deref(), Some("INC-123"));
        assert_eq!(example("INC-[0-9]+").as_deref(), Some("INC-123"));
        assert_eq!(
            example(r"^(?:(INC|CHG)-\d{4})$").as_deref(),
            Some("INC-1234")
        );
        assert_eq!(
            example("^(?:[A-Z]{2,3}-[0-9]{3,})$").as_deref(),
            Some("AB-123")
        );
        assert_eq!(
            example("^(?:(?i)jira-[a-z]+-[0-9]+)$").as_deref(),
            Some("JIRA-ABC-123")
        );
        // Nothing to show rather than a wrong example or the expression.
        assert_eq!(example("^(?:)$"), None);
        assert_eq!(example("(unclosed"), None);
    }
}
