//! The autoscaler service (leader-only): runs [`crate::autoscaler::tick`] every interval. The
//! tick keeps nothing in memory, so a new leader's first tick simply continues from the
//! database.

use std::sync::Arc;

use drover_core::{LeaderTerm, StoreError};
use tokio_util::sync::CancellationToken;

use crate::autoscaler::{
    AutoscalerConfig, AutoscalerMetrics, CapacityRuntime, TickInputs, TickReport, tick,
};
use crate::leader::LeaderService;
use crate::runtime::Shared;

/// The parts the autoscaler service is built from (see `EngineBuilder::autoscaler`).
#[derive(Clone)]
pub struct AutoscalerParts {
    /// The systems and limits (validated by the engine's `build`).
    pub config: AutoscalerConfig,
    /// What makes capacity.
    pub runtime: Arc<dyn CapacityRuntime>,
    /// Where the ticks report; shared with whoever exports them.
    pub metrics: Arc<AutoscalerMetrics>,
}

pub(crate) struct AutoscalerService {
    pub(crate) shared: Arc<Shared>,
    pub(crate) parts: AutoscalerParts,
}

impl AutoscalerService {
    /// One tick.
    pub(crate) async fn run_once(&self) -> Result<TickReport, StoreError> {
        tick(TickInputs {
            store: self.shared.store.as_ref(),
            runtime: self.parts.runtime.as_ref(),
            config: &self.parts.config,
            clock: self.shared.clock.as_ref(),
            metrics: &self.parts.metrics,
        })
        .await
    }
}

#[async_trait::async_trait]
impl LeaderService for AutoscalerService {
    fn name(&self) -> &'static str {
        "autoscaler"
    }

    async fn run(self: Arc<Self>, _term: LeaderTerm, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(self.parts.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => match self.run_once().await {
                    Ok(report) => {
                        self.shared.health.ok("autoscaler");
                        if report != TickReport::default() {
                            tracing::info!(?report, "autoscaler tick");
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "autoscaler tick failed; the next tick starts again from the database"),
                },
            }
        }
    }
}
