//! The simulator's plot: per system, demand (jobs waiting or running), ready slots and waiting
//! jobs over simulated hours, as one SVG with no dependency.

use std::fmt::Write;

use super::super::axis;

use drover::autoscaler::simulate::{Arrival, Sample, SimulationReport};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 60.0;
const TOP: f64 = 30.0;
const PLOT_W: f64 = WIDTH - LEFT - 20.0;
const PLOT_H: f64 = HEIGHT - TOP - 40.0;

const SERIES: [(&str, &str); 3] = [
    ("demand", "#1f77b4"),
    ("ready slots", "#2ca02c"),
    ("waiting", "#d62728"),
];

/// The SVG document.
pub(super) fn render(report: &SimulationReport, _trace: &[Arrival]) -> String {
    let systems: Vec<&str> = report.systems.iter().map(|s| s.system.as_str()).collect();
    let mut svg = String::new();
    let total_h = HEIGHT * systems.len().max(1) as f64;
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total_h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let max_x = axis::end(report.simulated_s / 3600.0);
    for (i, system) in systems.iter().enumerate() {
        let y0 = i as f64 * HEIGHT;
        let points: Vec<_> = report
            .samples
            .iter()
            .filter(|s| s.system == *system)
            .collect();
        let max_y = points
            .iter()
            .map(|s| s.demand.max(s.ready).max(s.waiting))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let max_y = axis::end_whole(max_y);
        let _ = write!(
            svg,
            r#"<text x="{LEFT}" y="{}" font-size="13">system {}: jobs and slots over simulated hours</text>"#,
            y0 + 18.0,
            escape(system)
        );
        let _ = write!(
            svg,
            r##"<rect x="{LEFT}" y="{}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#999"/>"##,
            y0 + TOP
        );
        draw_axis_labels(&mut svg, y0, max_x, max_y);
        draw_series(&mut svg, y0, &points, max_x, max_y);
    }
    svg.push_str("</svg>\n");
    svg
}

/// The value labels of the y axis and the hour labels of the x axis, four steps each.
fn draw_axis_labels(svg: &mut String, y0: f64, max_x: f64, max_y: f64) {
    for tick in 0..=axis::STEPS {
        let share = f64::from(tick) / f64::from(axis::STEPS);
        let y = y0 + TOP + PLOT_H - PLOT_H * share;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 5.0,
            y + 4.0,
            axis::label(max_y * share)
        );
        let x = LEFT + PLOT_W * share;
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{}" text-anchor="middle">{} h</text>"#,
            y0 + TOP + PLOT_H + 15.0,
            axis::label(max_x * share)
        );
    }
}

/// Each series as a line over the chart at `y0`, with its legend below.
fn draw_series(svg: &mut String, y0: f64, points: &[&Sample], max_x: f64, max_y: f64) {
    for (k, (label, color)) in SERIES.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|s| {
                let v = match k {
                    0 => s.demand,
                    1 => s.ready,
                    _ => s.waiting,
                } as f64;
                let x = LEFT + PLOT_W * (s.at_s / 3600.0) / max_x;
                let y = y0 + TOP + PLOT_H - PLOT_H * v / max_y;
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        let lx = LEFT + 10.0 + 110.0 * k as f64;
        let ly = y0 + TOP + PLOT_H + 32.0;
        let _ = write!(
            svg,
            r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{ly}">{label}</text>"#,
            ly - 9.0,
            lx + 14.0
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
    use drover::autoscaler::simulate::{Sample, SystemReport};

    use super::*;

    #[test]
    fn draws_every_series_of_every_system() {
        let report = SimulationReport {
            systems: vec![SystemReport {
                system: "gpu".into(),
                ..Default::default()
            }],
            samples: (0u32..10)
                .map(|i| Sample {
                    at_s: f64::from(i) * 60.0,
                    system: "gpu".into(),
                    demand: u64::from(i),
                    ready: 2,
                    waiting: 1,
                })
                .collect(),
            simulated_s: 600.0,
            ticks: 120,
        };
        let svg = render(&report, &[]);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("system gpu"));
        assert!(svg.ends_with("</svg>\n"));
    }
}
