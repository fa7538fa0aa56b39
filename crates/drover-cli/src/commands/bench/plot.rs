//! `drover bench --plot out.svg`: drain throughput over time, the enqueue→start latency
//! distribution and, for the steady load, the slowest start over time, drawn as a
//! self-contained SVG (no plotting library: line charts).

use std::fmt::Write;

use super::super::axis;

/// A named line.
#[derive(Clone)]
pub(super) struct Series {
    pub(super) label: String,
    pub(super) points: Vec<(f64, f64)>,
}

/// Throughput over time (jobs/s per sampling interval) from `(secs, completed)` samples.
pub(super) fn throughput(label: String, timeline: &[(f64, u64)]) -> Series {
    let points = timeline
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| {
            let rate = (w[1].1 - w[0].1) as f64 / (w[1].0 - w[0].0);
            ((w[0].0 + w[1].0) / 2.0, rate)
        })
        .collect();
    Series { label, points }
}

/// Points of a distribution's line over all its jobs, and more over its slowest percent: a
/// chart 550 pixels wide shows no more, and a steady run of a million jobs drawn point by point
/// made a 15 MB file.
const CDF_POINTS: usize = 1_000;
const CDF_TAIL_POINTS: usize = 500;

/// The cumulative distribution of latencies: (milliseconds, percent of jobs at or below), at
/// most [`CDF_POINTS`] + [`CDF_TAIL_POINTS`] of them, the fastest and the slowest job always.
pub(super) fn cdf(label: String, latencies_ms: &[f64]) -> Series {
    let mut sorted = latencies_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let last = n.saturating_sub(1);
    let tail_start = (n - n / 100).min(last);
    let mut ranks: Vec<usize> = (0..=CDF_POINTS)
        .map(|k| k * last / CDF_POINTS)
        .chain(
            (0..=CDF_TAIL_POINTS).map(|k| tail_start + k * (last - tail_start) / CDF_TAIL_POINTS),
        )
        .filter(|&i| i < n)
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    let points = ranks
        .into_iter()
        .map(|i| (sorted[i], (i + 1) as f64 / n as f64 * 100.0))
        .collect();
    Series { label, points }
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];
const W: f64 = 640.0;
const H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 52.0;
const BOTTOM: f64 = 45.0;

/// The charts, one above the other; the third only when `slowest` has lines.
pub(super) fn render(
    title: &str,
    throughput: &[Series],
    latency: &[Series],
    slowest: &[Series],
) -> String {
    let mut svg = String::new();
    let charts = if slowest.is_empty() { 2.0 } else { 3.0 };
    let height = charts * H + 30.0;
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    chart(
        &mut svg,
        0.0,
        "drain: jobs/s over time",
        "seconds",
        "jobs/s",
        throughput,
    );
    chart(
        &mut svg,
        H + 30.0,
        "enqueue → start latency (cumulative)",
        "milliseconds",
        "% of jobs",
        latency,
    );
    if !slowest.is_empty() {
        chart(
            &mut svg,
            2.0 * H + 30.0,
            &format!(
                "slowest enqueue → start of the jobs enqueued in each {} ms",
                super::steady::WINDOW.as_millis()
            ),
            "seconds (enqueue time)",
            "milliseconds",
            slowest,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn chart(svg: &mut String, y0: f64, title: &str, x_label: &str, y_label: &str, series: &[Series]) {
    let (x_max, y_max) = series
        .iter()
        .flat_map(|s| s.points.iter())
        .fold((0.0f64, 0.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let x_max = axis::end(x_max);
    let y_max = axis::end(y_max);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / x_max * plot_w;
    let py = |y: f64| y0 + TOP + plot_h - y / y_max * plot_h;
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        W / 2.0,
        y0 + TOP - 12.0,
        escape(title)
    );
    for i in 0..=axis::STEPS {
        let fx = x_max * f64::from(i) / f64::from(axis::STEPS);
        let fy = y_max * f64::from(i) / f64::from(axis::STEPS);
        let _ = write!(
            svg,
            r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" stroke="#eee"/><text x="{x}" y="{label}" text-anchor="middle">{v}</text>"##,
            x = px(fx),
            top = y0 + TOP,
            bottom = y0 + TOP + plot_h,
            label = y0 + TOP + plot_h + 16.0,
            v = axis::label(fx)
        );
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="#eee"/><text x="{lx}" y="{ty}" text-anchor="end">{v}</text>"##,
            left = LEFT,
            right = LEFT + plot_w,
            y = py(fy),
            lx = LEFT - 6.0,
            ty = py(fy) + 4.0,
            v = axis::label(fy)
        );
    }
    let _ = write!(
        svg,
        r#"<rect x="{LEFT}" y="{}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#,
        y0 + TOP
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
        LEFT + plot_w / 2.0,
        y0 + H - 8.0
    );
    let _ = write!(
        svg,
        r#"<text x="14" y="{y}" text-anchor="middle" transform="rotate(-90 14 {y})">{y_label}</text>"#,
        y = y0 + TOP + plot_h / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" fill="{colour}">{}</text>"#,
            LEFT + 10.0,
            y0 + TOP + 16.0 + 14.0 * i as f64,
            escape(&s.label)
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_charts_with_their_series() {
        let t = throughput("run 1".into(), &[(0.0, 0), (0.5, 1000), (1.0, 3000)]);
        assert_eq!(t.points, vec![(0.25, 2000.0), (0.75, 4000.0)]);
        let l = cdf("latency".into(), &[2.0, 1.0, 3.0, 4.0]);
        assert_eq!(l.points[0], (1.0, 25.0));
        assert_eq!(l.points[3], (4.0, 100.0));
        let svg = render(
            "drover <bench>",
            std::slice::from_ref(&t),
            std::slice::from_ref(&l),
            &[],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        let slowest = Series {
            label: "steady run 1".into(),
            points: vec![(0.05, 3.0), (0.15, 40.0)],
        };
        let three = render("steady", &[t], &[l], &[slowest]);
        assert_eq!(three.matches("<polyline").count(), 3);
        assert!(three.contains("slowest enqueue → start"));
        assert!(svg.contains("drover &lt;bench&gt;"));
    }

    #[test]
    fn a_large_distribution_is_drawn_with_its_extremes_and_its_tail() {
        assert!(cdf("none".into(), &[]).points.is_empty());
        // 0.001 ms .. 100 ms; the slowest percent is 99.0 ms and up.
        let latencies: Vec<f64> = (1..=100_000).rev().map(|i| i as f64 / 1000.0).collect();
        let line = cdf("big".into(), &latencies);
        assert!(line.points.len() <= CDF_POINTS + CDF_TAIL_POINTS + 2);
        assert_eq!(line.points.first(), Some(&(0.001, 0.001)));
        assert_eq!(line.points.last(), Some(&(100.0, 100.0)));
        assert!(
            line.points
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
        );
        let in_tail = line.points.iter().filter(|(ms, _)| *ms >= 99.0).count();
        assert!(
            in_tail > CDF_TAIL_POINTS / 2,
            "{in_tail} points in the tail"
        );
    }
}
