//! The autoscaler's numbers ([`crate::autoscaler::metrics::AutoscalerMetrics`]) as Prometheus
//! series, copied from its snapshot just before each scrape.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::autoscaler::metrics::AutoscalerMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabels {
    system: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaunchLabels {
    system: String,
    result: String,
}

/// The autoscaler's series.
#[derive(Debug, Default)]
pub(super) struct AutoscalerSeries {
    slots: Family<SlotLabels, Gauge>,
    reservations: Family<PhaseLabels, Gauge>,
    launches: Family<LaunchLabels, Counter>,
    interruptions: Counter,
    ticks: Counter,
    last_tick: Gauge<f64, AtomicU64>,
}

impl AutoscalerSeries {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "drover_autoscaler_slots",
            "Slots per system and state, at the end of the last tick",
            self.slots.clone(),
        );
        registry.register(
            "drover_autoscaler_reservations",
            "Open reservations per phase, at the end of the last tick",
            self.reservations.clone(),
        );
        registry.register(
            "drover_autoscaler_launches",
            "Launches per system and result (success, or the failure's category)",
            self.launches.clone(),
        );
        registry.register(
            "drover_autoscaler_interruptions",
            "Slots interrupted (a notice, or an instance that vanished)",
            self.interruptions.clone(),
        );
        registry.register(
            "drover_autoscaler_ticks",
            "Autoscaler ticks run by this process",
            self.ticks.clone(),
        );
        registry.register(
            "drover_autoscaler_tick_duration_seconds",
            "How long the last autoscaler tick took",
            self.last_tick.clone(),
        );
    }

    /// Copies the autoscaler's snapshot into the series (counters by their growth).
    pub(super) fn observe(&self, source: &Arc<AutoscalerMetrics>) {
        let snapshot = source.snapshot();
        for ((system, state), n) in &snapshot.slots {
            self.slots
                .get_or_create(&SlotLabels {
                    system: system.clone(),
                    state: state.as_str(),
                })
                .set(*n as i64);
        }
        for (phase, n) in &snapshot.reservations {
            self.reservations
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(*n as i64);
        }
        for ((system, result), n) in &snapshot.launches {
            let counter = self.launches.get_or_create(&LaunchLabels {
                system: system.clone(),
                result: result.clone(),
            });
            grow(&counter, *n);
        }
        grow(&self.interruptions, snapshot.interruptions);
        grow(&self.ticks, snapshot.ticks);
        self.last_tick.set(snapshot.last_tick_seconds);
    }
}

fn grow(counter: &Counter, to: u64) {
    let now = counter.get();
    if to > now {
        counter.inc_by(to - now);
    }
}
