//! What the HTTP layer asks of a running engine: the health of its loops, leadership, busy
//! runs and the Prometheus text of its metrics. Cheap to clone; see [`EngineHandle::probe`].
//!
//! [`EngineHandle::probe`]: crate::EngineHandle::probe

use std::sync::Arc;

use drover_core::LeaderTerm;
use tokio::sync::watch;

use crate::health::HealthReport;
use crate::remote::RemoteWorkers;
use crate::runtime::Shared;

/// How long a scrape waits for the cached queue counts before it answers without them.
const COUNTS_READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// leadership) and returns them as Prometheus text. While the database does not answer
    /// the text is still given, with `drover_database_up 0`: a scraper that lost every series
    /// for the length of an outage would lose the process's own counters with them.
    pub async fn metrics_text(&self) -> String {
        // Within a scraper's patience: a pool waiting for a server that is down takes longer.
        let read = tokio::time::timeout(COUNTS_READ_LIMIT, self.shared.store.queue_list()).await;
        let queues = match read {
            Ok(Ok(queues)) => Some(queues),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "metrics: the queue counts could not be read");
                None
            }
            Err(_) => None,
        };
        self.shared.metrics.observe(
            queues.as_deref(),
            self.shared.clock.now(),
            self.busy(),
            self.is_leader(),
        );
        self.shared.metrics.encode_text()
    }
}
