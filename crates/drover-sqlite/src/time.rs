//! Timestamps are stored as fixed-width ISO-8601 text in UTC with microseconds
//! (`2026-11-23T06:08:46.123456Z`), so that text order is time order and the file stays
//! readable with the `sqlite3` shell.

use jiff::Timestamp;

/// The stored form of a timestamp.
pub(crate) fn to_text(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses the stored form back.
pub(crate) fn from_text(text: &str) -> rusqlite::Result<Timestamp> {
    text.parse().map_err(|err: jiff::Error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
    })
}

/// Adds a std duration, saturating at the end of time.
pub(crate) fn plus(ts: Timestamp, by: std::time::Duration) -> Timestamp {
    jiff::SignedDuration::try_from(by)
        .ok()
        .and_then(|d| ts.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_fixed_width_and_round_trips() {
        let ts: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(to_text(ts), "2026-01-02T03:04:05.000000Z");
        let ts: Timestamp = "2026-01-02T03:04:05.1234567Z".parse().unwrap();
        assert_eq!(to_text(ts), "2026-01-02T03:04:05.123456Z");
        assert_eq!(
            from_text("2026-01-02T03:04:05.123456Z").unwrap(),
            "2026-01-02T03:04:05.123456Z".parse::<Timestamp>().unwrap()
        );
    }
}
