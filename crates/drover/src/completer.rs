//! Records outcomes in batches, and makes the foremen's claims beside them.
//!
//! Whatever has finished since the last write goes to the store in one call. A foreman's claim
//! ([`claim`]) is sent here too, and made in the same call and transaction as the outcomes
//! waiting then ([`drover_core::Store::job_finish_and_claim`]): while a backlog drains, each
//! batch costs one durable commit instead of two (one for the completions of the last batch,
//! one for the claim of the next). With nothing to record a claim goes alone, at once.
//!
//! One write at a time. Two side by side were measured on PostgreSQL (2026-12-05, alternated
//! with one): 200,000-job drains 5 % faster, 20,000-job drains the same, and under a steady
//! 32,000 jobs/s the enqueue→start p99 rose to 34.4 / 27.4 ms from 24.0 / 23.7 ms; on SQLite,
//! whose writes wait for its one writer anyway, 2 % slower. Not kept.
//!
//! A claim never waits behind a write: while the completer is writing, a foreman claims on its
//! own, in parallel. Holding outcomes back until the next claim (so that every batch shares one
//! transaction) was measured slower on PostgreSQL: the completions of one batch and the claim
//! of the next then run one after the other instead of side by side, and on this hardware a
//! commit costs less than the row work (see the README's Speed section).
//!
//! Outcomes are kept and retried while the database is unreachable; a run stays "running" in
//! this process until its outcome is recorded, so shutdown waits for the bookkeeping too. A
//! claim that fails is answered with the error (its foreman backs off); its outcomes are then
//! recorded on their own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover_core::{
    ClaimResult, FinishResult, JobClaimParams, JobFinishClaimParams, JobFinishParams, Outcome,
    StoreError,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::executor;
use crate::hooks::JobEnd;
use crate::runtime::{Finished, Shared};
use crate::stats::Counters;

/// Most outcomes written in one call.
const MAX_BATCH: usize = 1024;

/// Where foremen hand their claims to the completer.
pub(crate) struct ClaimDesk {
    requests: mpsc::UnboundedSender<ClaimRequest>,
    /// The completer is writing: a claim sent now would wait for that write.
    busy: AtomicBool,
}

impl ClaimDesk {
    /// The desk, and the receiving end for [`run`].
    pub(crate) fn new() -> (ClaimDesk, mpsc::UnboundedReceiver<ClaimRequest>) {
        let (requests, rx) = mpsc::unbounded_channel();
        (
            ClaimDesk {
                requests,
                busy: AtomicBool::new(false),
            },
            rx,
        )
    }
}

/// A foreman's claim, to be made with the next outcomes.
pub(crate) struct ClaimRequest {
    params: JobClaimParams,
    reply: oneshot::Sender<Result<ClaimResult, StoreError>>,
}

/// Claims through the completer (so that the claim shares a transaction with the outcomes
/// waiting to be recorded), or directly while it is writing or when it has stopped.
pub(crate) async fn claim(
    shared: &Shared,
    params: JobClaimParams,
) -> Result<ClaimResult, StoreError> {
    let (reply, answer) = oneshot::channel();
    let deadline = shared.config.lease;
    let sent = if shared.claims.busy.load(Ordering::Acquire) {
        Err(params)
    } else {
        shared
            .claims
            .requests
            .send(ClaimRequest { params, reply })
            .map_err(|mpsc::error::SendError(request)| request.params)
    };
    if let Err(params) = sent {
        return with_deadline(deadline, shared.store.job_claim(params)).await;
    }
    // Every database call in a background loop has a deadline: a hung connection must not
    // silently stop fetching. Jobs claimed after the foreman gave up are handed back.
    with_deadline(deadline, async {
        answer.await.unwrap_or(Err(StoreError::Closed))
    })
    .await
}

async fn with_deadline<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "claim did not answer within {deadline:?}"
        ))),
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Finished>,
    mut claims: mpsc::UnboundedReceiver<ClaimRequest>,
    abandon: CancellationToken,
) {
    let mut batch: Vec<Finished> = Vec::new();
    let mut requests: Vec<ClaimRequest> = Vec::new();
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some(first) => batch.push(first),
                None => return,
            },
            Some(request) = claims.recv() => requests.push(request),
            _ = abandon.cancelled() => return,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // Busy before the last look at the claims: one sent after it would wait for this write.
        shared.claims.busy.store(true, Ordering::Release);
        while let Ok(request) = claims.try_recv() {
            requests.push(request);
        }
        if !requests.is_empty() {
            finish_and_claim(&shared, &mut batch, &mut requests).await;
        }
        if !batch.is_empty() && !record(&shared, &mut batch, &abandon).await {
            return;
        }
        shared.claims.busy.store(false, Ordering::Release);
    }
}

/// Records the batch and makes the claims in one call. The claims are answered either way; the
/// batch is left as it was when the call failed, for [`record`] to retry.
async fn finish_and_claim(
    shared: &Shared,
    batch: &mut Vec<Finished>,
    requests: &mut Vec<ClaimRequest>,
) {
    let params = JobFinishClaimParams {
        outcomes: batch.iter().map(|f| f.outcome.clone()).collect(),
        claims: requests.iter().map(|r| r.params.clone()).collect(),
        now: shared.clock.store_now(),
    };
    match shared.store.job_finish_and_claim(params).await {
        Ok(result) => {
            for (request, claimed) in requests.drain(..).zip(result.claimed) {
                if let Err(Ok(unwanted)) = request.reply.send(Ok(claimed)) {
                    // The foreman gave up waiting: nobody will run these. Handed back from a
                    // task of their own: the outcome goes through this completer's own queue.
                    for job in unwanted.jobs {
                        let handles = shared.register(&job);
                        tokio::spawn(executor::hand_back_unstarted(handles));
                    }
                }
            }
            settled(shared, batch, &result.finished).await;
        }
        Err(err) => {
            for request in requests.drain(..) {
                let _ = request.reply.send(Err(err.clone()));
            }
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
    settled(shared, batch, &results).await;
    true
}

/// Counts the recorded outcomes (and their metrics), fires the hooks of jobs that ended, and
/// forgets the runs.
async fn settled(shared: &Shared, batch: &mut Vec<Finished>, results: &[FinishResult]) {
    shared.health.ok("completer");
    let counters = &shared.counters;
    let held: Vec<Option<std::time::Instant>> = {
        let running = shared.running.lock().expect("running lock poisoned");
        batch
            .iter()
            .map(|f| running.get(&f.outcome.lease.id).map(|r| r.claimed_at))
            .collect()
    };
    for ((finished, result), claimed_at) in batch.iter().zip(results).zip(held) {
        if !result.accepted {
            shared.metrics.refused();
            Counters::add(&counters.stale_rejected, 1);
            let state = result
                .state
                .map_or_else(|| "gone".to_owned(), |s| s.to_string());
            tracing::warn!(job = result.id, %state,
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
            shared.clock.now(),
        );
        if let Some(state) = result.state.filter(|s| s.is_terminal())
            && !shared.hooks.is_empty()
        {
            shared
                .hooks
                .fire(JobEnd {
                    id: result.id,
                    kind: finished.kind.clone(),
                    queue: finished.queue.clone(),
                    state,
                    attempt: finished.attempt,
                    error: crate::hooks::error_of(&finished.outcome.outcome, state),
                    step: finished.outcome.step.clone(),
                })
                .await;
        }
    }
    settle(shared, batch.drain(..).map(|f| f.outcome.lease));
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
