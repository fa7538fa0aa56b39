//! The counter: refreshes the cached job counts per queue and state (and the oldest waiting
//! job) that the admin, the API, the dashboard and `/metrics` read, so that none of them counts
//! the jobs table. Leader-only: one process counts, however many read.
//!
//! A refresh is bounded (at most `cap` jobs per state are counted; more are reported at the cap,
//! marked estimated), and the next one waits at least ten times as long as the last took, so the
//! counter never takes more than a tenth of the database's time, however large the table grows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_core::{JobPromoteParams, QueueCountsRefreshParams, StoreError};
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderService;
use crate::runtime::Shared;

/// Most due jobs made available before one count: a backlog larger than that is promoted over
/// several refreshes (or by its queue's claims), keeping each refresh's write short.
const PROMOTE_LIMIT: usize = 10_000;

/// Settings of the counter.
#[derive(Debug, Clone, Copy)]
pub struct CounterConfig {
    /// Least time between two refreshes. Default 5 s.
    pub interval: Duration,
    /// Most jobs counted per state. Default 1,000,000.
    pub cap: u64,
}

impl Default for CounterConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            cap: 1_000_000,
        }
    }
}

/// The counter service.
pub(crate) struct Counter {
    shared: Arc<Shared>,
    config: CounterConfig,
}

impl Counter {
    pub(crate) fn new(shared: Arc<Shared>, config: CounterConfig) -> Self {
        Self { shared, config }
    }

    /// One refresh; returns how long it took. Due scheduled and retryable jobs are made
    /// available first, in every queue: a claim promotes its own queue's, but a queue nobody
    /// claims from at the moment (its HTTP workers between requests, or none yet) would
    /// otherwise count a job that is due, and waits, as scheduled, and its oldest wait as none.
    pub(crate) async fn run_once(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let now = self.shared.clock.store_now();
        let store = &self.shared.store;
        let call = async {
            store
                .job_promote_due(JobPromoteParams {
                    limit: PROMOTE_LIMIT,
                    now,
                })
                .await?;
            let cap = self.config.cap;
            store
                .queue_counts_refresh(QueueCountsRefreshParams { cap, now })
                .await
        };
        // A hung count must not stall the service silently: every database call of a
        // background loop has a deadline.
        tokio::time::timeout(self.config.interval.max(Duration::from_secs(30)), call)
            .await
            .map_err(|_| StoreError::Unavailable("counting jobs timed out".into()))??;
        Ok(started.elapsed())
    }
}

#[async_trait::async_trait]
impl LeaderService for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }

    async fn run(self: Arc<Self>, _term: drover_core::LeaderTerm, stop: CancellationToken) {
        loop {
            let pause = match self.run_once().await {
                Ok(took) => {
                    self.shared.health.ok("counter");
                    self.config.interval.max(took * 10)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "refreshing the job counts failed");
                    self.config.interval
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
