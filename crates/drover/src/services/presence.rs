//! Presence: this process registers itself (id, host, pid, queues and their concurrency, and the
//! HTTP workers that lease through it) and heartbeats, so that an operator can see who is
//! working, and who is draining: when the graceful shutdown begins a heartbeat says so at once,
//! and the row stays until the drain is over. The leader prunes processes that went silent.
//!
//! The heartbeat also flushes this process's throughput counts (outcomes per minute and queue,
//! counted in memory by [`crate::metrics::throughput`]) into its own rows, and once more when
//! the process stops; the leader prunes rows older than a day.

use std::sync::Arc;
use std::time::Duration;

use drover_core::{
    ProcessPruneParams, ProcessUpsertParams, ThroughputAddParams, ThroughputPruneParams,
};
use jiff::SignedDuration;
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderService;
use crate::remote::RemoteWorkers;
use crate::runtime::Shared;
use crate::supervise::Persistence;

/// Time between two presence heartbeats.
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);
/// A process silent for this long is removed from the registry.
const STALE_AFTER: Duration = Duration::from_secs(60);
/// Throughput rows older than this are pruned: the longest view asks for a day.
const THROUGHPUT_KEPT: SignedDuration = SignedDuration::from_hours(24);

/// Heartbeats until `stop` fires, then leaves the registry; gives up on a database that no
/// longer works ([`Persistence`]). Once `draining` fires (claiming has stopped) the heartbeats
/// say so, the first one at once.
pub(crate) async fn run(
    shared: Arc<Shared>,
    remote: RemoteWorkers,
    draining: CancellationToken,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut persistence = Persistence::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            // Wakes once, when the drain begins; a heartbeat follows at once.
            _ = draining.cancelled(), if !draining.is_cancelled() => {}
            _ = ticker.tick() => {}
        }
        let params = upsert_params(&shared, &remote, draining.is_cancelled());
        match tokio::time::timeout(INTERVAL, shared.store.process_upsert(params)).await {
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
        flush_throughput(&shared).await;
    }
    flush_throughput(&shared).await;
    let delete = shared.store.process_delete(shared.process_id.clone());
    let _ = tokio::time::timeout(Duration::from_secs(5), delete).await;
    Ok(())
}

/// Adds the throughput counted since the last flush to this process's rows. A flush that fails
/// (or times out) puts the counts back for the next one: nothing is lost while the database is
/// away, and the hot path never waits for it.
pub(crate) async fn flush_throughput(shared: &Shared) {
    let throughput = shared.metrics.throughput();
    let counts = throughput.take();
    if counts.is_empty() {
        return;
    }
    let call = shared.store.throughput_add(ThroughputAddParams {
        process: shared.process_id.clone(),
        counts: counts.clone(),
    });
    let failed = match tokio::time::timeout(INTERVAL, call).await {
        Ok(Ok(())) => return,
        Ok(Err(err)) => err.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    tracing::debug!(error = %failed, rows = counts.len(),
        "throughput flush failed; keeping the counts for the next one");
    throughput.restore(counts, shared.clock.now());
}

fn upsert_params(shared: &Shared, remote: &RemoteWorkers, draining: bool) -> ProcessUpsertParams {
    let (host, pid) = crate::engine::host_and_pid(&shared.process_id);
    ProcessUpsertParams {
        id: shared.process_id.clone(),
        host,
        pid,
        queues: shared.config.queues.keys().cloned().collect(),
        concurrency: shared
            .config
            .queues
            .iter()
            .map(|(queue, &n)| (queue.clone(), u32::try_from(n).unwrap_or(u32::MAX)))
            .collect(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        http_workers: keep_recorded(remote.http_workers()),
        cron: shared.cron.clone(),
        draining,
        now: shared.clock.store_now(),
    }
}

/// Most HTTP workers a process row lists: the row is rewritten every heartbeat and read by
/// every cluster view, and worker names are the clients' to choose (up to 1,000 are kept in
/// memory). The ones that asked for work most recently are kept.
const MAX_RECORDED_WORKERS: usize = 100;

/// At most [`MAX_RECORDED_WORKERS`] of `workers`, by name: what this process's row records.
fn keep_recorded(
    mut workers: Vec<drover_core::HttpWorkerRecord>,
) -> Vec<drover_core::HttpWorkerRecord> {
    if workers.len() > MAX_RECORDED_WORKERS {
        // Those holding leases first, then the most recent.
        workers.sort_by_key(|w| std::cmp::Reverse((w.running > 0, w.last_seen)));
        workers.truncate(MAX_RECORDED_WORKERS);
        workers.sort_by(|a, b| a.name.cmp(&b.name));
    }
    workers
}

/// Leader-only: removes processes that stopped heartbeating (killed, or their host died).
pub(crate) struct Pruner {
    pub(crate) shared: Arc<Shared>,
}

impl Pruner {
    /// Deletes throughput rows older than a day (by this process's clock).
    async fn prune_throughput(&self) {
        let before = self.shared.clock.now() - THROUGHPUT_KEPT;
        let call = self
            .shared
            .store
            .throughput_prune(ThroughputPruneParams { before });
        match tokio::time::timeout(INTERVAL, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::debug!(error = %err, "throughput prune failed"),
            Err(_) => tracing::debug!("throughput prune timed out"),
        }
    }
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
                    self.prune_throughput().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_keeps_the_leaseholders_then_the_latest_workers() {
        let at = |s| jiff::Timestamp::from_second(s).unwrap();
        let worker = |i: usize, running| drover_core::HttpWorkerRecord {
            name: format!("w{i:04}"),
            queues: vec!["q".into()],
            running,
            last_seen: at(i as i64),
        };
        // The oldest one holds a lease; the rest are idle, newer and newer.
        let mut all = vec![worker(0, 2)];
        all.extend((1..300).map(|i| worker(i, 0)));
        let kept = keep_recorded(all);
        assert_eq!(kept.len(), MAX_RECORDED_WORKERS);
        assert_eq!(kept[0].name, "w0000", "the leaseholder is kept");
        assert_eq!(kept[1].name, "w0201", "then the 99 latest");
        assert!(kept.windows(2).all(|w| w[0].name < w[1].name));
        let few: Vec<_> = (0..3).map(|i| worker(i, 0)).collect();
        assert_eq!(keep_recorded(few.clone()), few);
    }
}
