//! The throughput chart: completed and failed jobs per second over the last hour, one bar pair
//! per minute, drawn as inline SVG on the server (no chart library, nothing to load).

use drover::admin::ThroughputPoint;
use maud::{Markup, PreEscaped, html};

use super::format;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 18.0;

/// Per-second rates of each minute, completed stacked under failed.
pub(super) fn throughput(points: &[ThroughputPoint]) -> Markup {
    let rate = |n: u64| n as f64 / 60.0;
    let peak = points
        .iter()
        .map(|p| rate(p.completed + p.failed))
        .fold(0.0_f64, f64::max);
    let top = nice_ceiling(peak);
    let plot_h = HEIGHT - BOTTOM;
    let slot = (WIDTH - LEFT) / points.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let y = |v: f64| plot_h - v / top * plot_h;
    let completed: f64 = points.iter().map(|p| p.completed as f64).sum();
    let failed: f64 = points.iter().map(|p| p.failed as f64).sum();
    let mut bars = String::new();
    for (i, p) in points.iter().enumerate() {
        let x = LEFT + i as f64 * slot + (slot - bar) / 2.0;
        let (c, f) = (rate(p.completed), rate(p.failed));
        let minute = p.minute.strftime("%H:%M UTC");
        if c > 0.0 {
            bars.push_str(&format!(
                "<rect class=\"ok\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\"><title>{minute}: {c:.1}/s completed</title></rect>",
                y(c),
                plot_h - y(c)
            ));
        }
        if f > 0.0 {
            bars.push_str(&format!(
                "<rect class=\"bad\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\"><title>{minute}: {f:.1}/s failed</title></rect>",
                y(c + f),
                plot_h - y(f)
            ));
        }
    }
    let first = points
        .first()
        .map(|p| p.minute.strftime("%H:%M").to_string());
    let last = points
        .last()
        .map(|p| p.minute.strftime("%H:%M").to_string());
    html! {
        figure.chart data-completed=(completed) data-failed=(failed) {
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
                aria-label=(format!("Completed and failed jobs per second over the last {} minutes", points.len())) {
                line.axis x1=(LEFT) y1=(plot_h) x2=(WIDTH) y2=(plot_h) {}
                line.grid x1=(LEFT) y1="0.5" x2=(WIDTH) y2="0.5" {}
                line.grid x1=(LEFT) y1=(plot_h / 2.0) x2=(WIDTH) y2=(plot_h / 2.0) {}
                text.tick x=(LEFT - 6.0) y="10" text-anchor="end" { (axis_label(top)) }
                text.tick x=(LEFT - 6.0) y=(plot_h / 2.0 + 4.0) text-anchor="end" { (axis_label(top / 2.0)) }
                text.tick x=(LEFT - 6.0) y=(plot_h) text-anchor="end" { "0" }
                @if let (Some(first), Some(last)) = (first, last) {
                    text.tick x=(LEFT) y=(HEIGHT - 3.0) { (first) }
                    text.tick x=(WIDTH) y=(HEIGHT - 3.0) text-anchor="end" { (last) }
                }
                (PreEscaped(bars))
            }
            figcaption {
                span.key.ok {} "completed " strong #count-completed { (format::count(completed as u64)) }
                " · "
                span.key.bad {} "failed " strong #count-failed { (format::count(failed as u64)) }
                span.muted { " in the last " (points.len()) " minutes · peak " (per_second(peak)) "/s" }
            }
        }
    }
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `v` (at least 1), so the axis reads in round steps.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= v)
        .unwrap_or(10.0 * magnitude)
}

fn axis_label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else {
        format!("{v}")
    }
}

fn per_second(v: f64) -> String {
    if v >= 100.0 {
        format::count(v.round() as u64)
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_rounds_up_to_a_round_number() {
        assert_eq!(nice_ceiling(0.2), 1.0);
        assert_eq!(nice_ceiling(1.5), 2.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1234.0), 2000.0);
        assert_eq!(nice_ceiling(50_000.0), 50_000.0);
    }

    #[test]
    fn a_bar_per_busy_minute() {
        let minute = |m: i64| jiff::Timestamp::from_second(1_800_000_000 + m * 60).unwrap();
        let points: Vec<ThroughputPoint> = (0..60)
            .map(|m| ThroughputPoint {
                minute: minute(m),
                completed: if m % 2 == 0 { 600 } else { 0 },
                failed: if m == 59 { 60 } else { 0 },
            })
            .collect();
        let svg = throughput(&points).into_string();
        assert_eq!(svg.matches("class=\"ok\"").count(), 30);
        assert_eq!(svg.matches("class=\"bad\"").count(), 1);
        assert!(svg.contains("10.0/s completed"), "{svg}");
    }
}
