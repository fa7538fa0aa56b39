//! The foreman of one queue: claims as many jobs as it has room for, in one store call, and
//! hands each to an executor task.
//!
//! It sleeps until something can have changed — a wake-up from the store (an enqueue here or
//! in another process), a slot freed, the due time of the next scheduled job, or the slow
//! safety-net poll — and never polls in a tight loop. At start it drains the backlog, one batch
//! at a time.
//!
//! Batching: every claim costs a commit, so claiming one slot at a time as jobs finish would
//! cap throughput at the commit rate. While jobs are running and less than half the room is
//! free, the foreman waits up to [`TOP_UP_WAIT`] for more to free up, then claims it all in one
//! call (which, with group commit, usually shares its transaction with the completions). An idle
//! foreman claims at once, so this costs no latency on a quiet queue.
//!
//! Prefetch (off by default): with `prefetch = N` the foreman also claims up to N jobs beyond
//! its free slots into a local buffer, so that claims come in larger batches. Buffered jobs hold
//! leases (renewed by heartbeats) and are handed back unstarted at shutdown; if the process dies
//! they are rescued like running jobs — an at-most-once job that waited in the buffer is then
//! discarded although it never ran, which at-most-once allows.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use drover_core::{ClaimedJob, JobClaimParams, StoreError};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::executor;
use crate::runtime::{RunHandles, Shared};
use crate::stats::Counters;

/// Longest a freed slot waits for others before the foreman claims for it.
const TOP_UP_WAIT: Duration = Duration::from_millis(2);

pub(crate) async fn run(
    shared: Arc<Shared>,
    queue: String,
    concurrency: usize,
    stop_claiming: CancellationToken,
) {
    let prefetch = shared.config.prefetch;
    let slots = Arc::new(Semaphore::new(concurrency));
    let slot_freed = Arc::new(Notify::new());
    let mut buffer: VecDeque<(ClaimedJob, RunHandles)> = VecDeque::with_capacity(prefetch);
    let mut wakeups = shared.store.wakeups();
    wakeups.borrow_and_update();
    let poll = shared.config.poll_interval;
    let mut should_claim = true;
    let mut next_due: Option<tokio::time::Instant> = None;
    let mut pause = Duration::from_millis(50);
    let capacity = concurrency + prefetch;
    let batch_threshold = capacity.div_ceil(2);
    let mut top_up_at: Option<tokio::time::Instant> = None;

    loop {
        if stop_claiming.is_cancelled() {
            break;
        }
        // Buffered jobs take freed slots first.
        while !buffer.is_empty() {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break;
            };
            let (job, handles) = buffer.pop_front().expect("not empty");
            tokio::spawn(executor::execute(
                shared.clone(),
                job,
                handles,
                permit,
                slot_freed.clone(),
            ));
        }
        let free = slots.available_permits();
        let room = free + (prefetch - buffer.len());
        let batch_ready = room >= batch_threshold
            || free == concurrency
            || top_up_at.is_some_and(|at| at <= tokio::time::Instant::now());
        if should_claim && room > 0 && !batch_ready && top_up_at.is_none() {
            top_up_at = Some(tokio::time::Instant::now() + TOP_UP_WAIT);
        }
        if should_claim && room > 0 && batch_ready {
            top_up_at = None;
            match claim(&shared, &queue, room).await {
                Ok(result) => {
                    pause = Duration::from_millis(50);
                    let claimed = result.jobs.len();
                    // A full batch means more may be waiting; otherwise wait for a signal.
                    should_claim = claimed == room;
                    next_due = result.next_due_at.map(|at| due_instant(&shared, at));
                    Counters::add(&shared.counters.claimed, claimed as u64);
                    for job in result.jobs {
                        let handles = shared.register(&job);
                        match slots.clone().try_acquire_owned() {
                            Ok(permit) => {
                                tokio::spawn(executor::execute(
                                    shared.clone(),
                                    job,
                                    handles,
                                    permit,
                                    slot_freed.clone(),
                                ));
                            }
                            Err(_) => buffer.push_back((job, handles)),
                        }
                    }
                    continue;
                }
                Err(err) => {
                    tracing::warn!(queue, error = %err, retry_in = ?pause, "claim failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop_claiming.cancelled() => break,
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        tokio::select! {
            _ = stop_claiming.cancelled() => break,
            changed = wakeups.changed() => {
                if changed.is_err() {
                    // The store is gone; nothing more will come.
                    break;
                }
                should_claim = true;
            }
            _ = slot_freed.notified() => {}
            _ = tokio::time::sleep(poll) => should_claim = true,
            _ = sleep_until(next_due) => {
                next_due = None;
                should_claim = true;
            }
            _ = sleep_until(top_up_at) => {}
        }
    }
    // Jobs still in the buffer never started: hand them back without using an attempt.
    for (job, _) in buffer.drain(..) {
        executor::hand_back_unstarted(&shared, job);
    }
}

async fn claim(
    shared: &Shared,
    queue: &str,
    limit: usize,
) -> Result<drover_core::ClaimResult, StoreError> {
    let call = shared.store.job_claim(JobClaimParams {
        queue: queue.to_owned(),
        limit,
        owner: shared.process_id.clone(),
        lease: shared.config.lease,
        now: shared.clock.store_now(),
    });
    // Every database call in a background loop has a deadline: a hung connection must not
    // silently stop fetching.
    match tokio::time::timeout(shared.config.lease, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "claim did not answer within {:?}",
            shared.config.lease
        ))),
    }
}

fn due_instant(shared: &Shared, at: jiff::Timestamp) -> tokio::time::Instant {
    let wait = at.duration_since(shared.clock.now());
    let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
    // A little after the due time, so the job is due by the database's clock too.
    tokio::time::Instant::now() + wait + Duration::from_millis(1)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
