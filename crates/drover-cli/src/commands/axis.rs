//! Round axes for the SVG plots of `drover bench` and `drover simulate`: four equal steps, each
//! a round number, so that every tick's label is exact (not 12 and 38 for 12.5 and 37.5).

/// Ticks on an axis: four of them above zero.
pub(crate) const STEPS: u32 = 4;

/// The axis's end for data up to `max`: [`STEPS`] times a round step (1, 1.5, 2, 2.5, 3, 4, 5,
/// 6 or 8 times a power of ten), the smallest that reaches `max`.
pub(crate) fn end(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return f64::from(STEPS);
    }
    let raw = max / f64::from(STEPS);
    let exponent = raw.log10().floor() as i32;
    // Divided rather than multiplied by a fraction: 6 / 10 is the 0.6 a label prints exactly.
    let scaled = |m: f64| {
        if exponent >= 0 {
            m * 10f64.powi(exponent)
        } else {
            m / 10f64.powi(-exponent)
        }
    };
    let step = [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(scaled)
        .find(|&step| step >= raw * (1.0 - 1e-9))
        .unwrap_or_else(|| scaled(10.0));
    step * f64::from(STEPS)
}

/// [`end`] for counts: every step a whole number, at least 1 (no tick at 1.5 jobs).
pub(crate) fn end_whole(max: f64) -> f64 {
    let step = end(max) / f64::from(STEPS);
    step.max(1.0).ceil() * f64::from(STEPS)
}

/// A tick's label: at most two decimals, none that are zero; thousands as `k` from 10,000.
pub(crate) fn label(v: f64) -> String {
    let trimmed = |text: String| {
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        }
    };
    if v >= 10_000.0 {
        format!("{}k", trimmed(format!("{:.2}", v / 1000.0)))
    } else {
        trimmed(format!("{v:.2}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_four_round_steps_with_exact_labels() {
        assert_eq!(end(50.0), 60.0);
        assert_eq!(end(37_000.0), 40_000.0);
        assert_eq!(end(0.8), 0.8);
        assert_eq!(end(2.1), 2.4);
        assert_eq!(end(10.0), 10.0);
        assert_eq!(end(0.0), 4.0);
        let ticks: Vec<String> = (0..=STEPS)
            .map(|i| label(end(100.0) * f64::from(i) / f64::from(STEPS)))
            .collect();
        assert_eq!(ticks, ["0", "25", "50", "75", "100"]);
        assert_eq!(
            (end_whole(6.0), end_whole(2.0), end_whole(250.0)),
            (8.0, 4.0, 320.0)
        );
        assert_eq!(label(12_500.0), "12.5k");
        assert_eq!(label(0.6), "0.6");
        assert_eq!(label(37.5), "37.5");
    }
}
