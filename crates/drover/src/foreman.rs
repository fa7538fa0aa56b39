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
//! Prefetch: the foreman also claims beyond its free slots into a local buffer, as many jobs as
//! the workers will start within a few milliseconds at the recent pace (see [`crate::prefetch`]),
//! so that short jobs are claimed in large batches. Buffered jobs hold leases (renewed by
//! heartbeats) and are handed back unstarted at shutdown; if the process dies they are rescued
//! like running jobs — an at-most-once job that waited in the buffer is then discarded although
//! it never ran, which at-most-once allows.
//!
//! Parked claims: when nothing is known to be claimable, the foreman parks a claim with the
//! store ([`drover_core::Store::job_claim_parked`]). A backend that supports it (SQLite) makes
//! that claim inside the transaction of the next enqueue into the queue from this process, so an
//! idle worker's job starts after one durable commit instead of two. Wake-ups and ordinary
//! claims still run beside it, for enqueues from other processes and jobs coming due.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use drover_core::{ClaimResult, ClaimedJob, JobClaimParams, ParkedClaim, StoreError};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::executor;
use crate::prefetch::{self, Pace};
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
    let max_buffer = prefetch::max_buffer(shared.config.prefetch, concurrency);
    let slots = Arc::new(Semaphore::new(concurrency));
    let pool = Arc::new(Pool::default());
    let mut buffer: VecDeque<(ClaimedJob, RunHandles)> = VecDeque::new();
    let mut wakeups = shared.store.wakeups();
    wakeups.borrow_and_update();
    let poll = shared.config.poll_interval;
    let mut should_claim = true;
    let mut next_due: Option<tokio::time::Instant> = None;
    let mut pause = Duration::from_millis(50);
    let mut top_up_at: Option<tokio::time::Instant> = None;
    let mut parked: Option<ParkedClaim> = None;
    let mut parked_limit = 0;

    loop {
        if stop_claiming.is_cancelled() {
            break;
        }
        start_buffered(&shared, &slots, &pool, &mut buffer);
        let free = slots.available_permits();
        let buffer_target = pool.pace.buffer_target(concurrency, max_buffer);
        let room = free + buffer_target.saturating_sub(buffer.len());
        let batch_ready = room >= (concurrency + buffer_target).div_ceil(2)
            || free == concurrency
            || top_up_at.is_some_and(|at| at <= tokio::time::Instant::now());
        if should_claim && room > 0 && !batch_ready && top_up_at.is_none() {
            top_up_at = Some(tokio::time::Instant::now() + TOP_UP_WAIT);
        }
        if should_claim && room > 0 && batch_ready {
            top_up_at = None;
            // Never two claims at once: a parked one is withdrawn first, and if an enqueue
            // took it meanwhile, its jobs are this round's.
            let claimed = match parked.take() {
                Some(claim) => match claim.withdraw().await {
                    Some(Ok(result)) => Ok(result),
                    _ => claim_now(&shared, &queue, room).await,
                },
                None => claim_now(&shared, &queue, room).await,
            };
            match claimed {
                Ok(result) => {
                    pause = Duration::from_millis(50);
                    // A full batch means more may be waiting; otherwise wait for a signal.
                    should_claim = result.jobs.len() >= room;
                    next_due = result.next_due_at.map(|at| due_instant(&shared, at));
                    start_or_buffer(&shared, result.jobs, &slots, &pool, &mut buffer);
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
        // Nothing known to be claimable: park a claim, so that an enqueue in this process
        // leases its job to us in its own commit.
        if !should_claim && room > 0 && parked.is_none() {
            parked = shared
                .store
                .job_claim_parked(claim_params(&shared, &queue, room));
            parked_limit = room;
        }
        tokio::select! {
            biased;
            _ = stop_claiming.cancelled() => break,
            made = parked_claim(&mut parked) => {
                parked = None;
                match made {
                    Ok(result) => {
                        should_claim = result.jobs.len() >= parked_limit;
                        next_due = result.next_due_at.map(|at| due_instant(&shared, at));
                        start_or_buffer(&shared, result.jobs, &slots, &pool, &mut buffer);
                    }
                    // The store closed (the wake-ups end too) or the commit failed: claim
                    // the ordinary way.
                    Err(_) => should_claim = true,
                }
            }
            changed = wakeups.changed() => {
                if changed.is_err() {
                    // The store is gone; nothing more will come.
                    break;
                }
                should_claim = true;
            }
            _ = pool.slot_freed.notified() => {}
            _ = tokio::time::sleep(poll) => should_claim = true,
            _ = sleep_until(next_due) => {
                next_due = None;
                should_claim = true;
            }
            _ = sleep_until(top_up_at) => {}
        }
    }
    // A claim an enqueue made just before the stop: its jobs join the buffer's, handed back.
    if let Some(claim) = parked.take()
        && let Some(Ok(result)) = claim.withdraw().await
    {
        buffer_claimed(&shared, result.jobs, &mut buffer);
    }
    // Jobs still in the buffer never started: hand them back without using an attempt.
    for (_, handles) in buffer.drain(..) {
        executor::hand_back_unstarted(handles).await;
    }
}

/// Queues claimed jobs behind those already buffered, and starts as many as have free slots.
fn start_or_buffer(
    shared: &Arc<Shared>,
    jobs: Vec<ClaimedJob>,
    slots: &Arc<Semaphore>,
    pool: &Arc<Pool>,
    buffer: &mut VecDeque<(ClaimedJob, RunHandles)>,
) {
    Counters::add(&shared.counters.claimed, jobs.len() as u64);
    buffer_claimed(shared, jobs, buffer);
    start_buffered(shared, slots, pool, buffer);
}

/// Registers claimed jobs as this process's runs and queues them in the buffer.
fn buffer_claimed(
    shared: &Shared,
    jobs: Vec<ClaimedJob>,
    buffer: &mut VecDeque<(ClaimedJob, RunHandles)>,
) {
    buffer.extend(jobs.into_iter().map(|job| {
        let handles = shared.register(&job);
        (job, handles)
    }));
}

/// Starts buffered jobs, oldest claim first, while slots are free.
fn start_buffered(
    shared: &Arc<Shared>,
    slots: &Arc<Semaphore>,
    pool: &Arc<Pool>,
    buffer: &mut VecDeque<(ClaimedJob, RunHandles)>,
) {
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
            pool.clone(),
        ));
    }
}

async fn parked_claim(parked: &mut Option<ParkedClaim>) -> Result<ClaimResult, StoreError> {
    match parked {
        Some(claim) => claim.made().await,
        None => std::future::pending().await,
    }
}

/// What a foreman's executors tell it.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// Signalled when a job gives its slot back.
    pub(crate) slot_freed: Notify,
    /// How long jobs have been holding their slots.
    pub(crate) pace: Pace,
}

fn claim_params(shared: &Shared, queue: &str, limit: usize) -> JobClaimParams {
    JobClaimParams {
        queue: queue.to_owned(),
        limit,
        owner: shared.process_id.clone(),
        lease: shared.config.lease,
        now: shared.clock.store_now(),
    }
}

async fn claim_now(shared: &Shared, queue: &str, limit: usize) -> Result<ClaimResult, StoreError> {
    let call = shared.store.job_claim(claim_params(shared, queue, limit));
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
