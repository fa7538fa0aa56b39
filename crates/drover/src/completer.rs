//! Records outcomes in batches: whatever has finished since the last write goes to the store in
//! one call (and, with group commit, often in the same transaction as the next claim). Outcomes
//! are kept and retried while the database is unreachable; a run stays "running" in this process
//! until its outcome is recorded, so shutdown waits for the bookkeeping too.

use std::sync::Arc;
use std::time::Duration;

use drover_core::{JobFinishParams, JobState, Outcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hooks::JobEnd;
use crate::runtime::{Finished, Shared};
use crate::stats::Counters;

/// Most outcomes written in one call.
const MAX_BATCH: usize = 1024;

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Finished>,
    abandon: CancellationToken,
) {
    let mut batch: Vec<Finished> = Vec::new();
    loop {
        let first = tokio::select! {
            next = rx.recv() => match next {
                Some(first) => first,
                None => return,
            },
            _ = abandon.cancelled() => return,
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if !record(&shared, &mut batch, &abandon).await {
            return;
        }
    }
}

/// Writes the batch, retrying transient failures until `abandon` fires. Returns false when
/// abandoned.
async fn record(shared: &Shared, batch: &mut Vec<Finished>, abandon: &CancellationToken) -> bool {
    let mut pause = Duration::from_millis(50);
    let results = loop {
        let params = JobFinishParams {
            outcomes: batch.iter().map(|f| f.outcome.clone()).collect(),
            now: shared.clock.store_now(),
        };
        match shared.store.job_finish_many(params).await {
            Ok(results) => break results,
            Err(err) => {
                tracing::warn!(error = %err, jobs = batch.len(), retry_in = ?pause,
                    "cannot record job outcomes yet; keeping them and retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = abandon.cancelled() => {
                        tracing::error!(jobs = batch.len(),
                            "shutting down with job outcomes unrecorded; their leases will expire and the rescuer will take them");
                        settle(shared, batch.drain(..).map(|f| f.outcome.lease));
                        return false;
                    }
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    };
    shared.health.ok("completer");
    let counters = &shared.counters;
    let held: Vec<Option<std::time::Instant>> = {
        let running = shared.running.lock().expect("running lock poisoned");
        batch
            .iter()
            .map(|f| running.get(&f.outcome.lease.id).map(|r| r.claimed_at))
            .collect()
    };
    for ((finished, result), claimed_at) in batch.iter().zip(&results).zip(held) {
        if !result.accepted {
            shared.metrics.refused();
            Counters::add(&counters.stale_rejected, 1);
            tracing::warn!(job = result.id, state = ?result.state,
                "outcome refused: this run had lost its lease (it was rescued or finished elsewhere)");
            continue;
        }
        let counter = match &finished.outcome.outcome {
            Outcome::Completed => &counters.completed,
            Outcome::Retry { .. } => &counters.retried,
            Outcome::Discard { .. } => &counters.discarded,
            Outcome::Cancelled { .. } => &counters.cancelled,
            Outcome::HandBack { .. } => &counters.handed_back,
        };
        Counters::add(counter, 1);
        shared.metrics.finished(
            &finished.queue,
            &finished.kind,
            &finished.outcome.outcome,
            claimed_at.map(|at| at.elapsed()).unwrap_or_default(),
        );
        if let Some(state) = result.state.filter(|s| s.is_terminal()) {
            shared
                .hooks
                .fire(JobEnd {
                    id: result.id,
                    kind: finished.kind.clone(),
                    queue: finished.queue.clone(),
                    state,
                    attempt: finished.attempt,
                    error: error_of(&finished.outcome.outcome, state),
                    step: finished.outcome.step.clone(),
                })
                .await;
        }
    }
    settle(shared, batch.drain(..).map(|f| f.outcome.lease));
    true
}

fn error_of(outcome: &Outcome, state: JobState) -> Option<String> {
    match (outcome, state) {
        (Outcome::Discard { error } | Outcome::Retry { error, .. }, _) => Some(error.clone()),
        (Outcome::Cancelled { error }, _) => error.clone(),
        _ => None,
    }
}

/// Forgets runs whose outcome is settled and wakes whoever waits for the engine to go idle.
/// Only the run of that lease: a job rescued from this process and claimed by it again is a
/// new run under the same id, which a late outcome of the old run must not forget.
fn settle(shared: &Shared, leases: impl Iterator<Item = drover_core::LeaseRef>) {
    {
        let mut running = shared.running.lock().expect("running lock poisoned");
        for lease in leases {
            if running
                .get(&lease.id)
                .is_some_and(|run| run.lease.lease_token == lease.lease_token)
            {
                running.remove(&lease.id);
            }
        }
    }
    shared.settled.notify_waiters();
}
