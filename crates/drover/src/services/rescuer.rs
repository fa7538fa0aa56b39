//! The rescuer: finds running jobs whose lease expired (their process died or stalled) and makes
//! them available again, or discards them (at-most-once, or no attempts left), with the reason
//! recorded. It runs in every process: every rescue is a write fenced by the expired lease, so
//! two processes rescuing at once rescue each job once, and a stalled or dead leader's orphans
//! are reclaimed by the others without waiting for a leader handover.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_core::{JobRescueParams, JobState, RescuedJob, StoreError};
use tokio_util::sync::CancellationToken;

use crate::hooks::JobEnd;
use crate::runtime::Shared;
use crate::stats::Counters;
use crate::supervise::Persistence;

/// Least time the rescuer leaves expired leases to their owners once the database answers
/// again after an outage: longer than the completer's longest pause between two tries of the
/// outcomes it holds (5 s), whatever the lease.
const AFTER_OUTAGE: Duration = Duration::from_secs(10);

/// Settings of the rescuer.
#[derive(Debug, Clone, Copy)]
pub struct RescuerConfig {
    /// Time between two passes.
    pub interval: Duration,
    /// Most jobs rescued in one store call; a pass repeats until fewer come back. Default 1,000.
    pub batch: usize,
}

/// The rescuer service.
pub(crate) struct Rescuer {
    shared: Arc<Shared>,
    config: RescuerConfig,
}

impl Rescuer {
    pub(crate) fn new(shared: Arc<Shared>, config: RescuerConfig) -> Self {
        Self { shared, config }
    }

    /// Runs a pass every interval until `stop` fires, or until it gives up on a database that
    /// no longer works ([`Persistence`]).
    ///
    /// No pass until the database has answered this process for one lease (at least
    /// [`AFTER_OUTAGE`] after an outage it saw). After an outage longer than the lease, every
    /// lease taken before it has expired by the database's clock, though the processes that
    /// hold them are alive, their runs going on and their outcomes waiting to be recorded.
    /// Rescued at once (as they were), every job that had finished in the outage ran again and
    /// every run still going was stopped; given the time, the owners' heartbeats renew their
    /// leases and their completers record the outcomes first. A process that starts waits one
    /// lease too, having no way to know that the others are not in that case.
    pub(crate) async fn run(&self, stop: CancellationToken) -> Result<(), String> {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut persistence = Persistence::default();
        // The engine has just reached the database (it migrated before starting this).
        let mut grace = self.shared.config.lease;
        let mut reachable_since = Some(Instant::now());
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = ticker.tick() => {
                    let settled = reachable_since.is_some_and(|at| at.elapsed() >= grace);
                    let pass = if settled {
                        self.run_once().await.map(drop)
                    } else {
                        self.probe().await
                    };
                    match pass {
                        Ok(()) => {
                            if reachable_since.is_none() {
                                grace = self.shared.config.lease.max(AFTER_OUTAGE);
                                tracing::info!(?grace, "the database answers again; expired \
                                    leases are left to their owners for the grace before any \
                                    is rescued");
                                reachable_since = Some(Instant::now());
                            }
                            persistence.ok();
                            self.shared.health.ok("rescuer");
                        }
                        Err(err) => {
                            reachable_since = None;
                            tracing::warn!(error = %err, "rescuer pass failed");
                            persistence.failed(&err)?;
                        }
                    }
                }
            }
        }
    }

    /// Whether the database answers the rescuer's own statement, without rescuing anything:
    /// a rescue of none (a jobs table gone fails it, as it fails a pass).
    async fn probe(&self) -> Result<(), StoreError> {
        self.rescue(0).await.map(drop)
    }

    /// Rescues up to `limit` expired leases, in one store call with a deadline.
    async fn rescue(&self, limit: usize) -> Result<Vec<RescuedJob>, StoreError> {
        let call = self.shared.store.job_rescue_expired(JobRescueParams {
            limit,
            now: self.shared.clock.store_now(),
        });
        tokio::time::timeout(self.config.interval.max(Duration::from_secs(5)), call)
            .await
            .map_err(|_| StoreError::Unavailable("rescue timed out".into()))?
    }

    /// One pass: rescues every expired lease. Returns the jobs rescued.
    pub(crate) async fn run_once(&self) -> Result<Vec<RescuedJob>, StoreError> {
        let mut all = Vec::new();
        loop {
            let rescued = self.rescue(self.config.batch).await?;
            let n = rescued.len();
            for job in &rescued {
                tracing::info!(job = job.id, kind = %job.kind, state = %job.state, "rescued a job whose lease expired");
                if job.state != JobState::Available {
                    self.shared
                        .hooks
                        .fire(JobEnd {
                            id: job.id,
                            kind: job.kind.clone(),
                            queue: job.queue.clone(),
                            state: job.state,
                            attempt: 0,
                            error: Some("lease expired".into()),
                            step: None,
                        })
                        .await;
                }
            }
            Counters::add(&self.shared.counters.rescued, n as u64);
            all.extend(rescued);
            if n < self.config.batch {
                return Ok(all);
            }
        }
    }
}
