//! Time in SQL: the pinned-or-database clock, timestamps as text inside JSON, and durations.
//!
//! Every statement takes its `now` as an optional parameter: `NULL` means the database clock
//! (`now()`, the start of the transaction, so every statement of one transaction agrees), a
//! value pins it (tests, simulated clocks). PostgreSQL keeps microseconds.

use std::time::Duration;

/// SQL: the text form of a `timestamptz` expression inside JSON (errors, history), the same
/// fixed-width RFC 3339 text as the SQLite backend (`2030-01-01T00:00:00.000000Z`), whatever
/// the session's time zone.
macro_rules! utc_text {
    ($expr:literal) => {
        concat!(
            "to_char(",
            $expr,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
}
pub(crate) use utc_text;

/// SQL: a one-row `FROM` item `c` with the statement's clock, `c.now` (timestamptz) and
/// `c.now_text` (its text form), from the parameter `$p` (`NULL` for the database clock).
macro_rules! clock {
    ($param:literal) => {
        concat!(
            "(SELECT n AS now, ",
            $crate::time::utc_text!("n"),
            " AS now_text FROM (SELECT coalesce(",
            $param,
            "::timestamptz, now()) AS n) AS x) AS c"
        )
    };
}
pub(crate) use clock;

/// Longest duration handed to SQL: a hundred years. Longer leases, backoffs and ttls mean
/// "practically forever", and clamping keeps `now + interval` inside PostgreSQL's range and
/// exact in the `float8 * interval` product (below 2^53 microseconds).
const MAX_MICROS: u128 = 100 * 366 * 24 * 3600 * 1_000_000;

/// A duration as microseconds for `$n::bigint * interval '1 microsecond'`.
pub(crate) fn micros(d: Duration) -> i64 {
    d.as_micros().min(MAX_MICROS) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_clamp() {
        assert_eq!(micros(Duration::from_millis(1500)), 1_500_000);
        assert_eq!(micros(Duration::MAX), MAX_MICROS as i64);
        assert!((MAX_MICROS as f64) < 2f64.powi(53));
    }

    #[test]
    fn fragments_compose() {
        assert_eq!(
            clock!("$3"),
            "(SELECT n AS now, to_char(n AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
             AS now_text FROM (SELECT coalesce($3::timestamptz, now()) AS n) AS x) AS c"
        );
    }
}
