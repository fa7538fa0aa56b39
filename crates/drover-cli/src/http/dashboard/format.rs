//! How values read on a page: counts with thousands separators, times as "3 min ago" with
//! the exact UTC time on hover, durations in the largest unit that fits.

use jiff::Timestamp;
use maud::{Markup, html};

/// `1234567` → `1,234,567`.
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A span of seconds as one or two units: `45 s`, `3 min 20 s`, `2 h 5 min`, `3 d 4 h`.
pub(super) fn seconds(total: f64) -> String {
    if total < 1.0 {
        return format!("{:.0} ms", total * 1000.0);
    }
    let s = total.round() as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec} s"),
        (0, 0, _) if sec == 0 => format!("{m} min"),
        (0, 0, _) => format!("{m} min {sec} s"),
        (0, _, 0) => format!("{h} h"),
        (0, _, _) => format!("{h} h {m} min"),
        (_, 0, _) => format!("{d} d"),
        _ => format!("{d} d {h} h"),
    }
}

/// The exact time, to the second, in UTC.
pub(super) fn exact(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `at` relative to `now` ("12 s ago", "in 4 min"), with the exact time on hover.
pub(super) fn when(at: Timestamp, now: Timestamp) -> Markup {
    let delta = now.duration_since(at).as_secs_f64();
    let text = if delta.abs() < 1.0 {
        "now".to_owned()
    } else if delta > 0.0 {
        format!("{} ago", seconds(delta))
    } else {
        format!("in {}", seconds(-delta))
    };
    html! { time datetime=(at.to_string()) title=(exact(at)) { (text) } }
}

/// Like [`when`], or a dash when there is no time.
pub(super) fn when_opt(at: Option<Timestamp>, now: Timestamp) -> Markup {
    match at {
        Some(at) => when(at, now),
        None => html! { span.muted { "–" } },
    }
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub(super) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_with_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn durations_use_the_largest_units() {
        assert_eq!(seconds(0.25), "250 ms");
        assert_eq!(seconds(45.0), "45 s");
        assert_eq!(seconds(200.0), "3 min 20 s");
        assert_eq!(seconds(7500.0), "2 h 5 min");
        assert_eq!(seconds(86_400.0 * 3.0 + 3600.0 * 4.0), "3 d 4 h");
    }

    #[test]
    fn long_text_is_cut() {
        let short = clip(r#"{"user": 7, "note": "a long note about nothing"}"#, 12);
        assert_eq!(short.chars().count(), 12);
        assert!(short.ends_with('…'));
        assert_eq!(clip("{}", 12), "{}");
    }
}
