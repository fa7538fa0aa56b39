//! Validation at the edge: everything a caller hands in is checked here, before the store sees
//! it, so that bad input gets a clear error and changes nothing.

use crate::error::ValidationError;
use crate::job::NewJob;

/// Longest kind, queue or unique key accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Longest unique key accepted.
pub const MAX_UNIQUE_KEY_LEN: usize = 512;

/// Hard limits on what one call may hand in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded args accepted, in bytes. Default 1 MiB.
    pub max_args_bytes: usize,
    /// Most jobs accepted in one bulk enqueue call. Default 100,000.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_args_bytes: 1024 * 1024,
            max_batch: 100_000,
        }
    }
}

impl Limits {
    /// Checks every field of a job about to be inserted.
    pub fn check_job(&self, job: &NewJob) -> Result<(), ValidationError> {
        check_name("kind", &job.kind)?;
        check_name("queue", &job.queue)?;
        if let Some(key) = &job.unique_key {
            check_unique_key(key)?;
        }
        self.check_args(&job.args)?;
        if !(1..=10_000).contains(&job.max_attempts) {
            return Err(ValidationError::Range {
                field: "max_attempts",
                reason: format!("{} is not between 1 and 10000", job.max_attempts),
            });
        }
        if !(i16::MIN as i32..=i16::MAX as i32).contains(&job.priority) {
            return Err(ValidationError::Range {
                field: "priority",
                reason: format!("{} is not between -32768 and 32767", job.priority),
            });
        }
        Ok(())
    }

    /// Checks that `args` is the text of a JSON object within the size limit.
    pub fn check_args(&self, args: &str) -> Result<(), ValidationError> {
        if args.len() > self.max_args_bytes {
            return Err(ValidationError::ArgsTooLarge {
                size: args.len(),
                limit: self.max_args_bytes,
            });
        }
        match serde_json::from_str::<serde_json::Value>(args) {
            // PostgreSQL's jsonb cannot hold a NUL; refused on both backends alike, so that
            // args that work on SQLite in development do not fail on PostgreSQL in production.
            Ok(value @ serde_json::Value::Object(_)) if has_nul(&value) => {
                Err(ValidationError::Args(
                    "contain a NUL character (\\u0000), which PostgreSQL cannot store".into(),
                ))
            }
            Ok(serde_json::Value::Object(_)) => Ok(()),
            Ok(other) => Err(ValidationError::Args(format!(
                "must be a JSON object, got {}",
                json_type_name(&other)
            ))),
            // serde_json stops at 128 levels: the text may be valid JSON, only too deep.
            Err(err) if err.to_string().starts_with("recursion limit exceeded") => Err(
                ValidationError::Args("nested more than 128 levels deep".to_owned()),
            ),
            Err(err) => Err(ValidationError::Args(format!("not valid JSON: {err}"))),
        }
    }

    /// Checks the size of a bulk enqueue batch.
    pub fn check_batch(&self, size: usize) -> Result<(), ValidationError> {
        if size > self.max_batch {
            return Err(ValidationError::BatchTooLarge {
                field: "jobs",
                size,
                limit: self.max_batch,
            });
        }
        Ok(())
    }
}

/// Whether a NUL character is in any string or key of `value`.
fn has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(fields) => fields
            .iter()
            .any(|(key, value)| key.contains('\0') || has_nul(value)),
        _ => false,
    }
}

/// What a JSON value is, for messages: "an object", "an array", "a number", ...
pub fn json_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Parses a duration like `30s`, `1m 30s`, `250ms`, `2d`, `1w` or `PT30S`. Days are 24 hours
/// and weeks 7 days (a delay of `2d` is 48 hours, whatever the clocks do in between); months
/// and years are refused, as they have no fixed length.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let span: jiff::Span = text.trim().parse().map_err(|err: jiff::Error| {
        // jiff says `failed to set nan value for seconds` of a number too big for its unit.
        let said = err.to_string();
        if said.contains("failed to set") {
            format!("{text:?} is out of range (the longest duration is about 19,000 years)")
        } else if said.contains("unit designator") {
            // jiff's own example units here, `years` among them, are refused below.
            format!(
                "{text:?} is not a duration like 30s, 5m, 2d or 250ms: each number needs one \
                 of the units w, d, h, m, s, ms, us or ns"
            )
        } else {
            format!("{text:?} is not a duration like 30s, 5m, 2d or 250ms ({err})")
        }
    })?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(format!(
            "{text:?}: months and years have no fixed length; give days or weeks (like 30d)"
        ));
    }
    let signed = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|err| format!("{text:?} is out of range ({err})"))?;
    std::time::Duration::try_from(signed).map_err(|_| format!("{text:?} is negative"))
}

/// Parses an RFC 3339 time (`2026-12-01T09:00:00Z`, or with an offset). A well-formed time
/// outside the range a timestamp can hold (years -9999 to 9999, in UTC) is told apart from
/// text that is no time at all, whose parser's complaint about an overflow would puzzle.
pub fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    // The parser's own words for these would name a byte or its internals.
    if !text.is_ascii() {
        return Err(format!(
            "{text:?} is not an RFC 3339 time: it holds a character other than ASCII digits, \
             letters and separators (like 2026-12-01T09:00:00Z)"
        ));
    }
    if let Some((_, fraction)) = text.split_once('.')
        && fraction.bytes().take_while(u8::is_ascii_digit).count() > 9
    {
        return Err(format!(
            "{text:?} has more than 9 digits of fraction: times are kept to the nanosecond"
        ));
    }
    // A `+` in a URL's query string is read as a space, and the time loses its offset's sign.
    if let Some((time, offset)) = text.rsplit_once(' ')
        && time.len() >= 19
        && offset.len() == 5
        && offset.as_bytes()[2] == b':'
    {
        return Err(format!(
            "{text:?} has a space where its offset's + should be: in a URL's query, write + as %2B"
        ));
    }
    let time = text.parse::<jiff::Timestamp>().map_err(|err| {
        let pieces = jiff::fmt::temporal::Pieces::parse(text);
        if pieces.as_ref().is_ok_and(|p| p.offset().is_none()) {
            format!(
                "{text:?} has no UTC offset: write Z for UTC (2026-12-01T09:00:00Z) or the \
                 offset (2026-12-01T10:00:00+01:00)"
            )
        } else if pieces.is_ok() {
            // The exact ends (jiff's, a day short of the years' ends, -009999-01-02T01:59:59Z
            // and 9999-12-30T22:00:00.999999999Z) read as a mistake; the years say enough.
            format!("{text:?} is out of range: times run from the year -9999 to 9999-12-30")
        } else {
            format!("{text:?} is not an RFC 3339 time like 2026-12-01T09:00:00Z: {err}")
        }
    })?;
    // The parser takes offsets up to ±25:59:59 (Temporal's range); RFC 3339's hours stop at
    // 23, and `+25:00` is more likely a typo than a place.
    if let Ok(pieces) = jiff::fmt::temporal::Pieces::parse(text)
        && let Some(jiff::fmt::temporal::PiecesOffset::Numeric(offset)) = pieces.offset()
        && offset.offset().seconds().abs() >= 24 * 3600
    {
        return Err(format!(
            "{text:?} has an offset of 24 hours or more: RFC 3339 offsets run from -23:59 to +23:59"
        ));
    }
    // The parser also takes Temporal's looser forms (no seconds, `+0100`, a decimal comma),
    // which other RFC 3339 readers of the same text, such as a client's, would refuse.
    // The parser reads a leap second as :59 of the same minute, at any minute: refused rather
    // than moved.
    if text.get(17..19) == Some("60") {
        return Err(format!(
            "{text:?} has 60 seconds: leap seconds are not taken; write :59"
        ));
    }
    if !rfc3339_shape(text.as_bytes()) {
        return Err(format!(
            "{text:?} is not written as RFC 3339: give seconds and a colon in the offset, like \
             2026-12-01T09:00:00Z, 2026-12-01T09:00:00.250Z or 2026-12-01T10:00:00+01:00"
        ));
    }
    Ok(time)
}

/// Whether `text` has RFC 3339's shape (section 5.6): `YYYY-MM-DD`, `T` (or `t`, or the space
/// its note allows), `hh:mm:ss`, an optional `.` and fraction, then `Z` or `±hh:mm`.
fn rfc3339_shape(text: &[u8]) -> bool {
    let digits = |range: std::ops::Range<usize>| {
        text.get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, allowed: &[u8]| text.get(i).is_some_and(|b| allowed.contains(b));
    let date_time = digits(0..4)
        && at(4, b"-")
        && digits(5..7)
        && at(7, b"-")
        && digits(8..10)
        && at(10, b"Tt ")
        && digits(11..13)
        && at(13, b":")
        && digits(14..16)
        && at(16, b":")
        && digits(17..19);
    if !date_time {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 {
            return false;
        }
        rest = &fraction[len..];
    }
    match rest {
        b"Z" | b"z" => true,
        [sign, h1, h2, b':', m1, m2] => {
            matches!(sign, b'+' | b'-') && [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

/// Checks a kind or queue name: 1 to 128 characters from `A-Z a-z 0-9 . _ - : /`.
pub fn check_name(field: &'static str, value: &str) -> Result<(), ValidationError> {
    let refuse = |reason| {
        Err(ValidationError::Name {
            field,
            value: value.chars().take(80).collect(),
            reason,
        })
    };
    if value.is_empty() {
        return refuse("must not be empty");
    }
    if value.len() > MAX_NAME_LEN {
        return refuse("longer than 128 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'))
    {
        return refuse("may contain only ASCII letters, digits and . _ - : /");
    }
    // `.` and `..` are path segments a URL resolves away: no link or button could name them.
    if value.bytes().all(|b| b == b'.') {
        return refuse("must not be only dots");
    }
    Ok(())
}

/// Checks a table or column name from configuration: a plain identifier (`[A-Za-z_][A-Za-z0-9_]*`,
/// at most 63 characters), so that it can be quoted safely into SQL.
pub fn check_identifier(field: &'static str, value: &str) -> Result<(), ValidationError> {
    let refuse = |reason| {
        Err(ValidationError::Name {
            field,
            value: value.chars().take(80).collect(),
            reason,
        })
    };
    let mut chars = value.chars();
    match chars.next() {
        None => return refuse("must not be empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return refuse("must start with a letter or _");
        }
        _ => {}
    }
    if value.len() > 63 {
        return refuse("longer than 63 characters");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return refuse("may contain only ASCII letters, digits and _ (a plain identifier)");
    }
    Ok(())
}

fn check_unique_key(key: &str) -> Result<(), ValidationError> {
    let refuse = |reason| {
        Err(ValidationError::Name {
            field: "unique_key",
            value: key.chars().take(80).collect(),
            reason,
        })
    };
    if key.is_empty() {
        return refuse("must not be empty");
    }
    if key.len() > MAX_UNIQUE_KEY_LEN {
        return refuse("longer than 512 bytes");
    }
    if key.chars().any(char::is_control) {
        return refuse("must not contain control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("kind", "report.build").is_ok());
        assert!(check_name("kind", "").is_err());
        assert!(check_name("kind", "has space").is_err());
        assert!(check_name("queue", &"q".repeat(129)).is_err());
        assert!(check_name("queue", "a;drop").is_err());
        assert!(check_name("queue", "..").is_err());
        assert!(check_name("queue", ".").is_err());
        assert!(check_name("queue", "a.b").is_ok());
    }

    #[test]
    fn args_must_be_an_object_within_the_limit() {
        let limits = Limits {
            max_args_bytes: 16,
            ..Limits::default()
        };
        assert!(limits.check_args(r#"{"a":1}"#).is_ok());
        for nul in [
            r#"{"a":"\u0000"}"#,
            r#"{"\u0000":1}"#,
            r#"{"a":["\u0000"]}"#,
        ] {
            assert!(
                matches!(limits.check_args(nul), Err(ValidationError::Args(m)) if m.contains("NUL")),
                "{nul}"
            );
        }
        assert!(matches!(
            limits.check_args("[1,2]"),
            Err(ValidationError::Args(m)) if m.contains("an array")
        ));
        assert!(matches!(
            limits.check_args("{"),
            Err(ValidationError::Args(_))
        ));
        assert!(matches!(
            limits.check_args(r#"{"a":"0123456789abcdef"}"#),
            Err(ValidationError::ArgsTooLarge { limit: 16, .. })
        ));
    }

    #[test]
    fn identifiers_are_plain() {
        assert!(check_identifier("table", "usage_details").is_ok());
        assert!(check_identifier("table", "_t1").is_ok());
        assert!(check_identifier("table", "usage\"; DROP TABLE x; --").is_err());
        assert!(check_identifier("table", "a;b").is_err());
        assert!(check_identifier("table", "it's").is_err());
        assert!(check_identifier("table", "1abc").is_err());
        assert!(check_identifier("table", "").is_err());
        assert!(check_identifier("table", "schema.table").is_err());
    }

    #[test]
    fn ranges_are_checked() {
        let mut job = NewJob::new("k", "{}");
        job.max_attempts = 0;
        assert!(Limits::default().check_job(&job).is_err());
        job.max_attempts = 3;
        job.priority = 40_000;
        assert!(Limits::default().check_job(&job).is_err());
        job.priority = -5;
        assert!(Limits::default().check_job(&job).is_ok());
    }

    #[test]
    fn times_out_of_range_are_told_from_bad_text() {
        assert_eq!(
            parse_time("2026-12-01T09:00:00+02:00").unwrap().to_string(),
            "2026-12-01T07:00:00Z"
        );
        let err = parse_time("9999-12-31T23:59:59Z").unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        let err = parse_time("yesterday").unwrap_err();
        assert!(err.contains("not an RFC 3339 time"), "{err}");
        for typo in ["2030-01-01T00:00:00+25:00", "2030-01-01T00:00:00-24:00"] {
            let err = parse_time(typo).unwrap_err();
            assert!(err.contains("-23:59 to +23:59"), "{typo}: {err}");
        }
        assert!(parse_time("2030-01-01T00:00:00+23:59").is_ok());
        assert!(parse_time("2030-01-01T00:00:00-00:00").is_ok());
        for loose in [
            "2030-01-01T00:00Z",
            "2030-01-01T00:00:00+0100",
            "2030-01-01T00:00:00,5Z",
            "2030-01-01T00:00:00+01:00:30",
            "2030-01-01T00:00:00Z[Europe/Paris]",
        ] {
            let err = parse_time(loose).unwrap_err();
            assert!(err.contains("not written as RFC 3339"), "{loose}: {err}");
        }
        let err = parse_time("２０３０-01-01T00:00:00Z").unwrap_err();
        assert!(err.contains("ASCII"), "{err}");
        let err = parse_time("2030-01-01T00:00:00.1234567891Z").unwrap_err();
        assert!(err.contains("9 digits"), "{err}");
        let err = parse_time("2030-01-01T09:17:60Z").unwrap_err();
        assert!(err.contains("leap seconds"), "{err}");
        let err = parse_time("2030-01-01T09:00:00 01:00").unwrap_err();
        assert!(err.contains("%2B"), "{err}");
        for strict in [
            "2030-01-01t00:00:00z",
            "2030-01-01 00:00:00.123456789Z",
            "2030-01-01T00:00:00.5-05:30",
        ] {
            assert!(parse_time(strict).is_ok(), "{strict}");
        }
        for local in ["2030-01-01T00:00:00", "2030-01-01"] {
            let err = parse_time(local).unwrap_err();
            assert!(err.contains("no UTC offset"), "{local}: {err}");
        }
    }
}
