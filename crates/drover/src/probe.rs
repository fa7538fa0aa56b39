//! What the HTTP layer asks of a running engine: the health of its loops, leadership, busy
//! runs and the Prometheus text of its metrics. Cheap to clone; see [`EngineHandle::probe`].
//!
//! [`EngineHandle::probe`]: crate::EngineHandle::probe

use std::sync::Arc;

use drover_core::LeaderTerm;
use tokio::sync::watch;

use crate::error::Error;
use crate::health::HealthReport;
use crate::remote::RemoteWorkers;
use crate::runtime::Shared;

/// Liveness and metrics of a running engine. See [`EngineHandle::probe`](crate::EngineHandle::probe).
#[derive(Clone)]
pub struct EngineProbe {
    pub(crate) shared: Arc<Shared>,
    pub(crate) leader: watch::Receiver<Option<LeaderTerm>>,
    pub(crate) remote: RemoteWorkers,
}

impl std::fmt::Debug for EngineProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineProbe")
            .field("process_id", &self.shared.process_id)
            .finish_non_exhaustive()
    }
}

impl EngineProbe {
    /// The health of every background loop.
    pub fn health(&self) -> HealthReport {
        self.shared
            .health
            .report(&self.shared.store.background_health())
    }

    /// The time by the engine's clock.
    pub fn now(&self) -> jiff::Timestamp {
        self.shared.clock.now()
    }

    /// Whether this process leads.
    pub fn is_leader(&self) -> bool {
        self.leader.borrow().is_some()
    }

    /// Runs in progress here: local workers' and remote workers' leases.
    pub fn busy(&self) -> usize {
        self.shared.running_count() + self.remote.busy()
    }

    /// This process's identity.
    pub fn process_id(&self) -> &str {
        &self.shared.process_id
    }

    /// Sets the gauges of the engine's metrics (queue depths from the cached counts, busy runs,
    /// leadership) and returns them as Prometheus text.
    pub async fn metrics_text(&self) -> Result<String, Error> {
        let queues = self.shared.store.queue_list().await?;
        self.shared.metrics.observe(
            &queues,
            self.shared.clock.now(),
            self.busy(),
            self.is_leader(),
        );
        Ok(self.shared.metrics.encode_text())
    }
}
