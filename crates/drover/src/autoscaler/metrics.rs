//! [`AutoscalerMetrics`]: what the tick reports, as plain numbers. The binary exports them as
//! `drover_autoscaler_slots{system,state}`, `drover_autoscaler_reservations{phase}`,
//! `drover_autoscaler_launches_total{system,result}`, `drover_autoscaler_interruptions_total`
//! and `drover_autoscaler_tick_duration_seconds`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use drover_core::{ReservationPhase, SlotState};
use serde::Serialize;

/// Counters and gauges of the autoscaler. Gauges are set from the database at the end of every
/// tick; counters only grow.
#[derive(Debug, Default)]
pub struct AutoscalerMetrics {
    inner: Mutex<MetricsSnapshot>,
}

/// The metrics at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    /// Slots by (system, state), as read at the end of the last tick.
    pub slots: BTreeMap<(String, SlotState), u64>,
    /// Open reservations by phase, as read at the end of the last tick.
    pub reservations: BTreeMap<ReservationPhase, u64>,
    /// Launches by (system, result): `success`, or the failure's category.
    pub launches: BTreeMap<(String, String), u64>,
    /// Slots interrupted (notice or vanished instance), ever.
    pub interruptions: u64,
    /// Ticks run.
    pub ticks: u64,
    /// Seconds of every tick together (with `ticks`, the histogram's sum and count).
    pub tick_seconds_sum: f64,
    /// Seconds of the last tick.
    pub last_tick_seconds: f64,
}

impl AutoscalerMetrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, MetricsSnapshot> {
        self.inner.lock().expect("metrics lock poisoned")
    }

    /// The numbers now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.lock().clone()
    }

    pub(crate) fn launch(&self, system: &str, result: &str) {
        *self
            .lock()
            .launches
            .entry((system.to_owned(), result.to_owned()))
            .or_default() += 1;
    }

    pub(crate) fn interruption(&self) {
        self.lock().interruptions += 1;
    }

    pub(crate) fn set_gauges(
        &self,
        slots: BTreeMap<(String, SlotState), u64>,
        reservations: BTreeMap<ReservationPhase, u64>,
    ) {
        let mut inner = self.lock();
        inner.slots = slots;
        inner.reservations = reservations;
    }

    pub(crate) fn tick(&self, took: Duration) {
        let mut inner = self.lock();
        inner.ticks += 1;
        inner.tick_seconds_sum += took.as_secs_f64();
        inner.last_tick_seconds = took.as_secs_f64();
    }
}
