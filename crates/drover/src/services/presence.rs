//! Presence: this process registers itself (id, host, pid, queues) and heartbeats, so that an
//! operator can see who is working; the leader prunes processes that went silent.

use std::sync::Arc;
use std::time::Duration;

use drover_core::{ProcessPruneParams, ProcessUpsertParams};
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderService;
use crate::runtime::Shared;
use crate::supervise::Persistence;

/// Time between two presence heartbeats.
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);
/// A process silent for this long is removed from the registry.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Heartbeats until `stop` fires, then leaves the registry; gives up on a database that no
/// longer works ([`Persistence`]).
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) -> Result<(), String> {
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut persistence = Persistence::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {
                let call = shared.store.process_upsert(upsert_params(&shared));
                match tokio::time::timeout(INTERVAL, call).await {
                    Ok(Ok(())) => {
                        persistence.ok();
                        shared.health.ok("presence");
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "presence heartbeat failed");
                        persistence.failed(&err)?;
                    }
                    Err(_) => tracing::debug!("presence heartbeat timed out"),
                }
            }
        }
    }
    let delete = shared.store.process_delete(shared.process_id.clone());
    let _ = tokio::time::timeout(Duration::from_secs(5), delete).await;
    Ok(())
}

fn upsert_params(shared: &Shared) -> ProcessUpsertParams {
    let (host, pid) = crate::engine::host_and_pid(&shared.process_id);
    ProcessUpsertParams {
        id: shared.process_id.clone(),
        host,
        pid,
        queues: shared.config.queues.keys().cloned().collect(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        now: shared.clock.store_now(),
    }
}

/// Leader-only: removes processes that stopped heartbeating (killed, or their host died).
pub(crate) struct Pruner {
    pub(crate) shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl LeaderService for Pruner {
    fn name(&self) -> &'static str {
        "process pruner"
    }

    async fn run(self: Arc<Self>, _term: drover_core::LeaderTerm, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(STALE_AFTER / 2);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {
                    let call = self.shared.store.process_prune(ProcessPruneParams {
                        stale_after: STALE_AFTER,
                        now: self.shared.clock.store_now(),
                    });
                    match tokio::time::timeout(INTERVAL, call).await {
                        Ok(Ok(n)) if n > 0 => tracing::info!(processes = n, "pruned silent processes"),
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => tracing::debug!(error = %err, "process prune failed"),
                        Err(_) => tracing::debug!("process prune timed out"),
                    }
                }
            }
        }
    }
}
