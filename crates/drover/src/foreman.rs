//! The foreman of one queue: claims as many jobs as it has room for, in one store call, and
//! hands each to an executor task.
//!
//! It sleeps until something can have changed — a wake-up from the store (an enqueue here or
//! in another process), a slot freed, the due time of the next scheduled job, or the slow
//! safety-net poll — and never polls in a tight loop. At start it drains the backlog, one batch
//! at a time.
//!
//! ```text
//!             full batch claimed                         room for half a batch, or all idle
//!          ┌──────────────────────┐                    ┌───────────────────────────────┐
//!          ▼                      │                    │                               ▼
//!   ┌─────────────┐  little room  ┌┴───────────┐       │   ┌────────────┐  wait over  ┌───────┐
//!   │  Claimable  ├──────────────►│ ToppingUp  ├───────┘   │  Backoff   ├────────────►│ claim │
//!   └─────────────┘               └────────────┘           └────────────┘             └──┬────┘
//!          ▲   wake-up, poll, job due   ┌────────────┐      ▲ claim failed               │
//!          └────────────────────────────┤    Idle    │◄─────┴── short batch ─────────────┘
//!                                       │ (parked)   │
//!                                       └────────────┘
//! ```
//!
//! Batching: every claim costs a commit, so claiming one slot at a time as jobs finish would
//! cap throughput at the commit rate. While jobs are running and less than half the room is
//! free, the foreman waits up to [`TOP_UP_WAIT`] for more to free up, then claims it all in one
//! call. An idle foreman claims at once, so this costs no latency on a quiet queue. Claims go
//! through the completer ([`crate::completer::claim`]), which makes them in the same
//! transaction as the outcomes it is about to record: one durable commit per batch instead of
//! two.
//!
//! Prefetch: the foreman also claims beyond its free slots into a local buffer, as many jobs as
//! the workers will start within a few milliseconds at the recent pace (see [`crate::prefetch`]),
//! so that short jobs are claimed in large batches. Buffered jobs hold leases (renewed by
//! heartbeats) and are handed back unstarted at shutdown; if the process dies they are rescued
//! like running jobs — an at-most-once job that waited in the buffer is then discarded although
//! it never ran, which at-most-once allows.
//!
//! The pace comes from finished jobs, so it cannot see long jobs coming after short ones: a
//! queue whose pace was set by a cron no-op claims a batch of minute-long jobs into its buffer,
//! where they wait behind its busy slots while other processes idle (seen in QA: 9/3/3 of 15
//! jobs over three processes of 5 slots). So a buffered job that has waited [`STALE_AFTER`]
//! with every slot busy is handed back, unstarted and without using an attempt, for any
//! process to claim (the hand-back wakes them), and its wait counts as a sample of the pace,
//! which stops this foreman claiming it straight back into its buffer.
//!
//! Parked claims: when nothing is known to be claimable, the foreman parks a claim with the
//! store ([`drover_core::Store::job_claim_parked`]). A backend that supports it makes that claim
//! inside the transaction of the next enqueue into the queue from this process, so an idle
//! worker's job starts after one durable commit instead of two. Wake-ups and ordinary claims
//! still run beside it, for enqueues from other processes and jobs coming due.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use drover_core::{ClaimResult, ClaimedJob, JobClaimParams, ParkedClaim, StoreError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::completer;
use crate::executor;
use crate::prefetch::{self, Pace};
use crate::runtime::{RunHandles, Shared};
use crate::stats::Counters;

/// Most claims a foreman has out at once.
const CLAIMS_IN_FLIGHT: usize = 2;

/// How long a buffered job may wait, every slot busy, before it is handed back for another
/// process: forty times the [`prefetch::HORIZON`] it was claimed to start within.
const STALE_AFTER: Duration = Duration::from_secs(1);

/// Longest a freed slot waits for others before the foreman claims for it.
const TOP_UP_WAIT: Duration = Duration::from_millis(2);

/// First pause after a failed claim; it doubles up to [`MAX_PAUSE`].
const MIN_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// What the foreman knows about its queue, and so what it waits for.
enum State {
    /// Jobs may be waiting (at start, after a full batch, after a signal): claim as soon as
    /// there is room for a batch worth a commit.
    Claimable,
    /// Jobs may be waiting and some room is free, but less than half of it: wait until this
    /// instant (at most [`TOP_UP_WAIT`]) for more to free up, then claim it all at once.
    ToppingUp(Instant),
    /// Nothing known to be claimable: wait for a signal (wake-up, poll, a job coming due),
    /// holding a claim parked with the store when it supports that (with the room it was
    /// parked for).
    Idle(Option<(ParkedClaim, usize)>),
    /// The last claim failed: wait until this instant, then claim again.
    Backoff(Instant),
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    queue: String,
    concurrency: usize,
    stop_claiming: CancellationToken,
) {
    let mut wakeups = shared.store.wakeups();
    wakeups.borrow_and_update();
    let mut foreman = Foreman {
        max_buffer: prefetch::max_buffer(shared.config.prefetch, concurrency),
        slots: Arc::new(Semaphore::new(concurrency)),
        pool: Arc::new(Pool::default()),
        buffer: VecDeque::new(),
        wakeups,
        next_due: None,
        pause: MIN_PAUSE,
        shared,
        queue,
        concurrency,
        stop: stop_claiming,
    };
    let mut state = State::Claimable;
    let parked = loop {
        if foreman.stop.is_cancelled() {
            break match state {
                State::Idle(parked) => parked.map(|(claim, _)| claim),
                _ => None,
            };
        }
        foreman.start_buffered();
        match foreman.step(state).await {
            Ok(next) => state = next,
            Err(Stopped(parked)) => break parked,
        }
    };
    foreman.finish(parked).await;
}

/// The foreman stops claiming; a claim it had parked, if any.
struct Stopped(Option<ParkedClaim>);

/// A foreman's state that lasts across [`State`]s.
struct Foreman {
    shared: Arc<Shared>,
    queue: String,
    concurrency: usize,
    max_buffer: usize,
    /// One permit per slot of the queue's concurrency.
    slots: Arc<Semaphore>,
    pool: Arc<Pool>,
    /// Claimed jobs not started yet, oldest claim first, with the time of their claim.
    buffer: VecDeque<(ClaimedJob, RunHandles, Instant)>,
    wakeups: watch::Receiver<u64>,
    /// When the next scheduled job of the queue comes due, as the last claim said.
    next_due: Option<Instant>,
    /// The pause after the next failed claim.
    pause: Duration,
    stop: CancellationToken,
}

impl Foreman {
    /// Runs one state: waits for what it waits for, claims when it is time.
    async fn step(&mut self, state: State) -> Result<State, Stopped> {
        let room = self.room();
        match state {
            State::Claimable | State::ToppingUp(_) if room == 0 => {
                // Everything is running or buffered: only a freed slot changes that.
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return Err(Stopped(None)),
                    _ = self.pool.slot_freed.notified() => {}
                    _ = sleep_until(self.stale_at()) => self.hand_back_stale(),
                }
                Ok(state)
            }
            State::Claimable if self.batch_ready(room) => Ok(self.claim(room).await),
            State::Claimable => Ok(State::ToppingUp(Instant::now() + TOP_UP_WAIT)),
            State::ToppingUp(until) if self.batch_ready(room) || until <= Instant::now() => {
                Ok(self.claim(room).await)
            }
            State::ToppingUp(until) => {
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return Err(Stopped(None)),
                    _ = self.pool.slot_freed.notified() => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
                Ok(State::ToppingUp(until))
            }
            State::Backoff(until) => {
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return Err(Stopped(None)),
                    _ = tokio::time::sleep_until(until) => {}
                }
                Ok(State::Claimable)
            }
            State::Idle(parked) => self.idle(parked, room).await,
        }
    }

    /// Waits in [`State::Idle`] for a reason to claim.
    async fn idle(
        &mut self,
        parked: Option<(ParkedClaim, usize)>,
        room: usize,
    ) -> Result<State, Stopped> {
        let mut parked = match parked {
            Some(parked) => Some(parked),
            None if room > 0 => self
                .shared
                .store
                .job_claim_parked(claim_params(&self.shared, &self.queue, room))
                .map(|claim| (claim, room)),
            None => None,
        };
        let poll = self.shared.config.poll_interval;
        let stale_at = self.stale_at();
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Err(Stopped(parked.map(|(claim, _)| claim))),
            made = parked_claim(&mut parked) => {
                let limit = parked.map_or(room, |(_, limit)| limit);
                return Ok(match made {
                    Ok(result) => self.claimed(result, limit),
                    // The store closed (the wake-ups end too) or the commit failed: claim the
                    // ordinary way.
                    Err(_) => State::Claimable,
                });
            }
            changed = self.wakeups.changed() => {
                if changed.is_err() {
                    // The store is gone; nothing more will come.
                    return Err(Stopped(parked.map(|(claim, _)| claim)));
                }
            }
            _ = self.pool.slot_freed.notified() => return Ok(State::Idle(parked)),
            _ = sleep_until(stale_at) => {
                self.hand_back_stale();
                return Ok(State::Idle(parked));
            }
            _ = tokio::time::sleep(poll) => {}
            _ = sleep_until(self.next_due) => self.next_due = None,
        }
        // Time to claim. Never two claims at once: the parked one is withdrawn first, and if an
        // enqueue took it meanwhile, its jobs are this round's.
        if let Some((claim, limit)) = parked
            && let Some(Ok(result)) = claim.withdraw().await
        {
            return Ok(self.claimed(result, limit));
        }
        Ok(State::Claimable)
    }

    /// When the oldest buffered job goes stale ([`STALE_AFTER`]), while every slot is busy.
    fn stale_at(&self) -> Option<Instant> {
        if self.slots.available_permits() > 0 {
            return None;
        }
        self.buffer.front().map(|(_, _, at)| *at + STALE_AFTER)
    }

    /// Hands back the buffered jobs that waited [`STALE_AFTER`] with every slot busy (see the
    /// module docs), each wait recorded as a sample of the pace.
    fn hand_back_stale(&mut self) {
        if self.slots.available_permits() > 0 {
            return;
        }
        let now = Instant::now();
        let mut handed = 0;
        while let Some((_, _, at)) = self.buffer.front()
            && now.duration_since(*at) >= STALE_AFTER
        {
            let (job, handles, at) = self.buffer.pop_front().expect("not empty");
            let waited = now.duration_since(at);
            self.pool.pace.record(waited);
            let reason = format!(
                "waited {} ms in the buffer of a worker whose slots were all busy; handed \
                 back for any worker",
                waited.as_millis()
            );
            tracing::debug!(
                job = job.id,
                queue = self.queue,
                ?waited,
                "handed back from the buffer"
            );
            // From a task of its own: the outcome goes through the completer's queue.
            tokio::spawn(executor::hand_back_waiting(handles, reason));
            handed += 1;
        }
        if handed > 0 {
            tracing::info!(
                queue = self.queue,
                jobs = handed,
                "buffered jobs waited behind busy slots; handed back for other workers"
            );
        }
    }

    /// Free slots plus the room left in the buffer.
    fn room(&self) -> usize {
        self.slots.available_permits() + self.buffer_target().saturating_sub(self.buffer.len())
    }

    /// How many jobs the buffer should hold at the recent pace.
    fn buffer_target(&self) -> usize {
        self.pool
            .pace
            .buffer_target(self.concurrency, self.max_buffer)
    }

    /// Half of a full batch (every slot and the buffer): the least room worth a claim's commit
    /// while jobs are running.
    fn half_batch(&self) -> usize {
        (self.concurrency + self.buffer_target()).div_ceil(2)
    }

    /// Whether a claim for `room` is worth its commit now: half a batch is free, or every slot
    /// is (an idle queue claims at once).
    fn batch_ready(&self, room: usize) -> bool {
        room >= self.half_batch() || self.slots.available_permits() == self.concurrency
    }

    /// Claims up to `room` jobs; the state that follows. While the claim is out, buffered
    /// jobs keep starting as slots free up: a claim takes milliseconds on PostgreSQL, long
    /// enough for the workers to run through the rest of the buffer. When the room not yet
    /// asked for reaches a quarter of a full batch, a second claim goes out beside the first
    /// (never more than [`CLAIMS_IN_FLIGHT`]), so that a fast queue is fed by two claims at a
    /// time on two server cores instead of one after the other. A quarter, not a half: the
    /// first claim asked for at least half, so the room left to ask for is at most the other
    /// half, and reaches it only if the first went out at the very moment half was free.
    async fn claim(&mut self, room: usize) -> State {
        let shared = self.shared.clone();
        let queue = self.queue.clone();
        let call = |limit: usize| {
            let (shared, queue) = (&shared, &queue);
            async move {
                let params = claim_params(shared, queue, limit);
                (limit, completer::claim(shared, params).await)
            }
        };
        let mut calls = FuturesUnordered::new();
        calls.push(call(room));
        let mut asked = room;
        let mut next = State::Claimable;
        let mut failed = None;
        while !calls.is_empty() {
            tokio::select! {
                biased;
                Some((limit, result)) = calls.next() => {
                    asked -= limit;
                    match result {
                        Ok(result) => {
                            if let State::Idle(_) = self.claimed(result, limit) {
                                next = State::Idle(None);
                            }
                        }
                        Err(err) => failed = Some(err),
                    }
                }
                _ = self.pool.slot_freed.notified() => {
                    self.start_buffered();
                    let more = self.room().saturating_sub(asked);
                    if calls.len() < CLAIMS_IN_FLIGHT
                        && failed.is_none()
                        && matches!(next, State::Claimable)
                        && more >= self.half_batch().div_ceil(2)
                    {
                        calls.push(call(more));
                        asked += more;
                    }
                }
            }
        }
        match failed {
            None => {
                self.pause = MIN_PAUSE;
                next
            }
            Some(err) => {
                tracing::warn!(queue = self.queue, error = %err, retry_in = ?self.pause,
                    "claim failed");
                let until = Instant::now() + self.pause;
                self.pause = (self.pause * 2).min(MAX_PAUSE);
                State::Backoff(until)
            }
        }
    }

    /// Takes in the jobs of a claim for `limit`; the state that follows. A full batch means
    /// more may be waiting; otherwise the foreman waits for a signal.
    fn claimed(&mut self, result: ClaimResult, limit: usize) -> State {
        let full = result.jobs.len() >= limit;
        self.next_due = result
            .next_due_at
            .map(|at| due_instant(&*self.shared.clock, at));
        Counters::add(&self.shared.counters.claimed, result.jobs.len() as u64);
        self.buffer_claimed(result.jobs);
        self.start_buffered();
        if full {
            State::Claimable
        } else {
            State::Idle(None)
        }
    }

    /// Registers claimed jobs as this process's runs and queues them in the buffer.
    fn buffer_claimed(&mut self, jobs: Vec<ClaimedJob>) {
        let shared = &self.shared;
        let now = Instant::now();
        self.buffer.extend(jobs.into_iter().map(|job| {
            let handles = shared.register(&job);
            (job, handles, now)
        }));
    }

    /// Starts buffered jobs, oldest claim first, while slots are free.
    fn start_buffered(&mut self) {
        while !self.buffer.is_empty() {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            let (job, handles, _) = self.buffer.pop_front().expect("not empty");
            tokio::spawn(executor::execute(
                self.shared.clone(),
                job,
                handles,
                permit,
                self.pool.clone(),
            ));
        }
    }

    /// After the last claim: jobs of a claim an enqueue made just before the stop join the
    /// buffer's, and all are handed back without using an attempt (they never started).
    async fn finish(mut self, parked: Option<ParkedClaim>) {
        if let Some(claim) = parked
            && let Some(Ok(result)) = claim.withdraw().await
        {
            self.buffer_claimed(result.jobs);
        }
        for (_, handles, _) in self.buffer.drain(..) {
            executor::hand_back_unstarted(handles).await;
        }
    }
}

async fn parked_claim(
    parked: &mut Option<(ParkedClaim, usize)>,
) -> Result<ClaimResult, StoreError> {
    match parked {
        Some((claim, _)) => claim.made().await,
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

/// When a job due at `at` (by `clock`) is due here; also the HTTP lease requests' wake-up.
pub(crate) fn due_instant(clock: &dyn drover_core::Clock, at: jiff::Timestamp) -> Instant {
    let wait = at.duration_since(clock.now());
    let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
    // A little after the due time, so the job is due by the database's clock too.
    Instant::now() + wait + Duration::from_millis(1)
}

/// Sleeps until `at`; forever when there is none.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
