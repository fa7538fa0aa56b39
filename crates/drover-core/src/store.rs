//! The [`Store`] trait: every database operation the engine needs, one method per atomic
//! operation, named noun-first, each taking one params struct so that adding a field never breaks
//! a call site.
//!
//! This is an internal seam: only backends implement it, and the shared conformance suite
//! (`drover-conformance`) checks that they all behave alike. Users reach it through the engine.
//!
//! Time: every params struct that depends on the time carries `now: Option<Timestamp>`. `None`
//! means "the database's clock decides" (production); `Some` pins it (tests, simulated clocks).

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::watch;

use crate::admin::{
    ActResult, JobActParams, QueueCountsRefreshParams, QueuePauseParams, QueueRecord,
};
use crate::capacity::{
    ReservationAssignParams, ReservationCount, ReservationExpireParams, ReservationInsertParams,
    ReservationListParams, ReservationRecord, ReservationReleaseParams, SlotInsertParams,
    SlotListParams, SlotRecord, SlotTransitionParams,
};
use crate::error::StoreError;
use crate::job::{JobId, JobRecord};

mod activity;
mod cluster;
mod jobs;

pub use activity::*;
pub use cluster::*;
pub use jobs::*;

/// The database seam. See the module documentation.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short backend name: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Applies pending schema migrations. Idempotent.
    async fn migrate(&self) -> Result<MigrateReport, StoreError>;

    /// Inserts jobs in one transaction: all or none. A job whose unique key matches an
    /// unfinished job is not inserted; its result names the existing job instead.
    async fn job_insert_many(
        &self,
        params: JobInsertParams,
    ) -> Result<Vec<InsertedJob>, StoreError>;

    /// Makes due scheduled and retryable jobs of the queue available, then claims up to `limit`
    /// available jobs, highest priority first, then oldest, handing each a fresh lease token.
    async fn job_claim(&self, params: JobClaimParams) -> Result<ClaimResult, StoreError>;

    /// Parks a claim to be made inside the transaction of the next enqueue through this store
    /// that makes a job of `params.queue` available now, so that an idle worker's job starts
    /// after one commit instead of two (the enqueue's, then the claim's). The claim resolves
    /// after that commit. `None` when the backend cannot do this; the caller then relies on
    /// [`Store::wakeups`] and [`Store::job_claim`] alone, which it must keep doing anyway (for
    /// enqueues in other processes, and scheduled jobs coming due).
    fn job_claim_parked(&self, params: JobClaimParams) -> Option<ParkedClaim> {
        let _ = params;
        None
    }

    /// Renews the leases of running jobs. Only leases still held (same id, running, same token)
    /// are renewed; the answer says which are held and which have a cancel request.
    async fn job_heartbeat(
        &self,
        params: JobHeartbeatParams,
    ) -> Result<Vec<LeaseStatus>, StoreError>;

    /// Records the outcomes of runs. Each write is fenced by the lease token: an outcome for a
    /// run that no longer holds its lease is rejected (and reported as such), never recorded.
    async fn job_finish_many(
        &self,
        params: JobFinishParams,
    ) -> Result<Vec<FinishResult>, StoreError>;

    /// Makes the due scheduled and retryable jobs of every queue available (at most
    /// `params.limit`, skipping rows another transaction holds) and returns how many; wakes the
    /// workers when any became available. A claim promotes its own queue's due jobs; this is
    /// for the queues nobody claims from at the moment (HTTP workers between requests, or none
    /// yet), so that their counts, lists and metrics show a due job as waiting, not scheduled.
    async fn job_promote_due(&self, params: JobPromoteParams) -> Result<u64, StoreError>;

    /// Rescues running jobs whose lease has expired: available again (at-least-once, attempts
    /// left), or discarded (at-most-once, or no attempts left), with the reason recorded.
    async fn job_rescue_expired(
        &self,
        params: JobRescueParams,
    ) -> Result<Vec<RescuedJob>, StoreError>;

    /// Cancels a job: a pending job becomes `cancelled`; a running job gets a cancel request
    /// that its worker acts on.
    async fn job_cancel(&self, params: JobCancelParams) -> Result<CancelResult, StoreError>;

    /// Operator retry: a finished (or waiting) job becomes available now with a fresh attempt
    /// budget. Recorded in the job's history.
    async fn job_retry(&self, params: JobRetryParams) -> Result<JobRecord, StoreError>;

    /// One job with every field.
    async fn job_get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError>;

    /// Jobs matching the filters, newest first.
    async fn job_list(&self, params: JobListParams) -> Result<Vec<JobRecord>, StoreError>;

    /// Of the given running jobs, those with a cancel request. Read-only and cheap: workers ask
    /// whenever they are woken.
    async fn job_cancel_requested(&self, ids: Vec<JobId>) -> Result<Vec<JobId>, StoreError>;

    /// Job counts per queue and state, counted now: a full scan, for tests and small tables.
    /// Everything that runs often reads [`Store::queue_list`] instead.
    async fn job_count_by_queue(&self) -> Result<Vec<QueueStateCount>, StoreError>;

    // --- Operator actions and views (see `drover::admin`) ---

    /// Applies an operator action to each job, in one transaction; each job's result says
    /// whether it changed and why not (see [`crate::admin::act_refusal`]).
    async fn job_act_many(&self, params: JobActParams) -> Result<Vec<ActResult>, StoreError>;

    /// Pauses or resumes a queue, for every process: no job of a paused queue is claimed (by
    /// [`Store::job_claim`], parked claims included); running jobs finish. Resuming wakes the
    /// workers. Returns the queue as stored.
    async fn queue_pause(&self, params: QueuePauseParams) -> Result<QueueRecord, StoreError>;

    /// Every queue the database knows (paused, or seen by the last count), by name, with its
    /// cached counts. Cheap: reads the cache, never the jobs table.
    async fn queue_list(&self) -> Result<Vec<QueueRecord>, StoreError>;

    /// Counts jobs per queue and state (at most `cap` per state) and the oldest available job
    /// per queue, and stores the result as the cache [`Store::queue_list`] reads. Run by one
    /// process at a time (the leader), every few seconds.
    async fn queue_counts_refresh(
        &self,
        params: QueueCountsRefreshParams,
    ) -> Result<(), StoreError>;

    /// Becomes the leader named `params.name` if nobody holds an unexpired term: takes a new
    /// term (one more than the last) that expires `ttl` from now. `None` when another process
    /// leads (an expected outcome, not an error).
    async fn leader_attempt_elect(
        &self,
        params: LeaderElectParams,
    ) -> Result<Option<LeaderTerm>, StoreError>;

    /// Extends this process's own term, if it still holds it unexpired. `None` when the term
    /// was lost: the caller must stop acting as leader.
    async fn leader_attempt_reelect(
        &self,
        params: LeaderReelectParams,
    ) -> Result<Option<LeaderTerm>, StoreError>;

    /// Gives up a term held by this process so that another can take over at once. False when
    /// the term was no longer held.
    async fn leader_resign(&self, params: LeaderResignParams) -> Result<bool, StoreError>;

    /// The current leader, if its term has not expired.
    async fn leader_get(
        &self,
        name: String,
        now: Option<Timestamp>,
    ) -> Result<Option<LeaderRecord>, StoreError>;

    /// Registers a process, or records its heartbeat.
    async fn process_upsert(&self, params: ProcessUpsertParams) -> Result<(), StoreError>;

    /// Removes a process from the registry (graceful exit).
    async fn process_delete(&self, id: String) -> Result<(), StoreError>;

    /// Every registered process, oldest first.
    async fn process_list(&self) -> Result<Vec<ProcessRecord>, StoreError>;

    /// Removes processes whose last heartbeat is older than `stale_after`. Returns how many.
    async fn process_prune(&self, params: ProcessPruneParams) -> Result<u64, StoreError>;

    /// Records that these cron schedules exist (first sight sets their registration time, the
    /// baseline for missed fire times). Returns the state of every registered schedule.
    async fn cron_register(&self, params: CronRegisterParams)
    -> Result<Vec<CronState>, StoreError>;

    /// Every registered schedule with its last fire.
    async fn cron_states(&self) -> Result<Vec<CronState>, StoreError>;

    /// Fires a schedule: in one transaction, checks that the leader term still holds, records
    /// (schedule, fire time) — unique — and enqueues the job. A fire time is enqueued once,
    /// however often this is called for it.
    async fn cron_fire(&self, params: CronFireParams) -> Result<CronFireResult, StoreError>;

    /// Deletes fire records older than `before`, keeping each schedule's latest.
    async fn cron_prune(&self, params: CronPruneParams) -> Result<u64, StoreError>;

    /// Records a run of a retention policy (failed runs too, with their error), and deletes
    /// the policy's runs beyond the newest `keep`, in one transaction.
    async fn retention_run_insert(
        &self,
        params: RetentionRunInsertParams,
    ) -> Result<(), StoreError>;

    /// Recorded retention runs, by policy name, each policy's newest first (by start), at most
    /// `limit` per policy.
    async fn retention_run_list(
        &self,
        params: RetentionRunListParams,
    ) -> Result<Vec<RetentionRunRecord>, StoreError>;

    /// Adds a process's counts of completed and failed jobs per minute and queue to its own
    /// rows (creating the missing ones), in one transaction. Rows are keyed by process, so
    /// processes never write the same row.
    async fn throughput_add(&self, params: ThroughputAddParams) -> Result<(), StoreError>;

    /// The stored counts per minute from `since` on, summed over every process (and every
    /// queue, unless one is asked for), oldest first; minutes without a row are absent.
    async fn throughput_list(
        &self,
        params: ThroughputListParams,
    ) -> Result<Vec<ThroughputMinute>, StoreError>;

    /// Deletes the counts of minutes before `before`. Returns how many rows went.
    async fn throughput_prune(&self, params: ThroughputPruneParams) -> Result<u64, StoreError>;

    /// The columns of a table of this database, or `None` when it does not exist. `table` must
    /// be a plain identifier (checked by the caller).
    async fn table_columns(&self, table: String) -> Result<Option<Vec<String>>, StoreError>;

    /// Moves up to `batch_size` rows past the cutoff from the hot table to its archive table in
    /// one transaction: insert (skipping ids already archived), then delete. Returns the rows
    /// moved (0 when none are left).
    async fn archive_batch(&self, params: ArchiveParams) -> Result<u64, StoreError>;

    /// How many rows of the hot table are past the cutoff.
    async fn archive_pending(&self, params: ArchiveParams) -> Result<u64, StoreError>;

    /// Wake-ups: the value changes whenever jobs may have become available (an enqueue in this
    /// process, or in another one when the backend can tell).
    fn wakeups(&self) -> watch::Receiver<u64>;

    /// The store's own background work (PostgreSQL: the listener), for the engine's health
    /// report; see [`crate::background`]. Cheap and synchronous: read on every report. Empty
    /// when the backend keeps nothing going by itself.
    fn background_health(&self) -> Vec<crate::background::BackgroundHealth> {
        Vec::new()
    }

    /// Flushes pending writes and closes connections. Later calls fail with
    /// [`StoreError::Closed`].
    async fn close(&self);

    // Capacity (the autoscaler's slots and reservations, see `capacity.rs`). Kept together.

    /// Records a new slot of a system in `launching` at generation 1: the launch is on record
    /// before the runtime is asked to make it.
    async fn slot_insert(&self, params: SlotInsertParams) -> Result<SlotRecord, StoreError>;

    /// Moves a slot to another state, fenced by the state and generation the caller read.
    /// `None` when the slot is gone or no longer in that state and generation (nothing changed).
    /// See [`SlotTransitionParams`] for the side effects of each target state.
    async fn slot_transition(
        &self,
        params: SlotTransitionParams,
    ) -> Result<Option<SlotRecord>, StoreError>;

    /// Slots matching the filters, by id.
    async fn slot_list(&self, params: SlotListParams) -> Result<Vec<SlotRecord>, StoreError>;

    /// Records a pending reservation that expires `ttl` from now.
    async fn reservation_insert(
        &self,
        params: ReservationInsertParams,
    ) -> Result<ReservationRecord, StoreError>;

    /// Assigns pending, unexpired reservations to ready slots of their system, in order, in one
    /// transaction. An assignment is refused (false in the answer, in input order) when the
    /// reservation is no longer pending, the slot is not ready, or the slot already holds its
    /// lease limit: the limit holds however many callers assign at once. List a reservation
    /// once per call.
    async fn reservation_assign(
        &self,
        params: ReservationAssignParams,
    ) -> Result<Vec<bool>, StoreError>;

    /// Releases a pending or assigned reservation (giving its slot's lease back). The record
    /// after the call (unchanged when it had already ended); `None` when there is no such
    /// reservation.
    async fn reservation_release(
        &self,
        params: ReservationReleaseParams,
    ) -> Result<Option<ReservationRecord>, StoreError>;

    /// Expires pending and assigned reservations past their time to live (giving their leases
    /// back). Returns how many.
    async fn reservation_expire(&self, params: ReservationExpireParams) -> Result<u64, StoreError>;

    /// Reservations matching the filters, oldest first.
    async fn reservation_list(
        &self,
        params: ReservationListParams,
    ) -> Result<Vec<ReservationRecord>, StoreError>;

    /// Counts of open (pending and assigned) reservations per system and phase.
    async fn reservation_count(&self) -> Result<Vec<ReservationCount>, StoreError>;

    // --- Finishing and claiming in one transaction (issue 13). ---

    /// Records outcomes, then makes claims, in one transaction (one durable commit instead of
    /// two): the same as [`Store::job_finish_many`] followed by one [`Store::job_claim`] per
    /// claim, all or nothing. The outcomes come first, so a job handed back here may be
    /// claimed again by the same call. An error means nothing was recorded nor claimed.
    async fn job_finish_and_claim(
        &self,
        params: JobFinishClaimParams,
    ) -> Result<FinishClaimResult, StoreError>;
}

/// Params of [`Store::job_finish_and_claim`].
#[derive(Debug, Clone)]
pub struct JobFinishClaimParams {
    /// Outcomes to record, as in [`JobFinishParams`].
    pub outcomes: Vec<JobOutcome>,
    /// Claims to make after the outcomes are recorded, each as in [`Store::job_claim`] (with
    /// its own `now`, which should be the same as this one).
    pub claims: Vec<JobClaimParams>,
    /// The time of the outcomes; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Answer of [`Store::job_finish_and_claim`].
#[derive(Debug, Clone, Default)]
pub struct FinishClaimResult {
    /// One result per outcome, in input order, as [`Store::job_finish_many`] answers.
    pub finished: Vec<FinishResult>,
    /// One result per claim, in input order.
    pub claimed: Vec<ClaimResult>,
}

/// A shared handle to a store.
pub type DynStore = Arc<dyn Store>;

/// A claim parked by [`Store::job_claim_parked`], waiting for an enqueue.
///
/// Withdraw it rather than dropping it: a claim made just as it is dropped has nobody to run its
/// jobs, so the backend hands them back (available again, their attempt not used), which
/// records a hand-back in their history.
pub struct ParkedClaim {
    answer: tokio::sync::oneshot::Receiver<Result<ClaimResult, StoreError>>,
    /// Removes the claim from the backend's waiting list; false when an enqueue already took it.
    unpark: Option<Box<dyn FnOnce() -> bool + Send>>,
}

impl ParkedClaim {
    /// A parked claim answered on `answer`; `unpark` withdraws it from the backend, returning
    /// false when an enqueue took it first (its answer then arrives on `answer`).
    pub fn new(
        answer: tokio::sync::oneshot::Receiver<Result<ClaimResult, StoreError>>,
        unpark: impl FnOnce() -> bool + Send + 'static,
    ) -> Self {
        Self {
            answer,
            unpark: Some(Box::new(unpark)),
        }
    }

    /// Waits until an enqueue made the claim. Cancel-safe: polling it again keeps waiting.
    pub async fn made(&mut self) -> Result<ClaimResult, StoreError> {
        match (&mut self.answer).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Withdraws the claim. When an enqueue took it first, waits for that claim's answer and
    /// returns it: its jobs are this caller's to run.
    pub async fn withdraw(mut self) -> Option<Result<ClaimResult, StoreError>> {
        let unpark = self.unpark.take().expect("withdrawn once");
        if unpark() {
            return None;
        }
        Some(self.made().await)
    }
}

impl std::fmt::Debug for ParkedClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedClaim").finish_non_exhaustive()
    }
}

/// What [`Store::migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateReport {
    /// Versions applied by this call (empty when the schema was current).
    pub applied: Vec<u32>,
    /// The schema version now: the database's own when a newer build migrated it.
    pub version: u32,
    /// The newest schema version this build knows.
    pub known: u32,
}

impl MigrateReport {
    /// Whether a newer build migrated the database past what this one knows: it may misread
    /// or miswrite what the newer schema holds. Never migrated down.
    pub fn is_newer_than_known(&self) -> bool {
        self.version > self.known
    }
}

/// The wake-up channel a backend feeds and the engine listens to: a counter bumped whenever
/// jobs may have become available.
#[derive(Debug, Clone)]
pub struct Wakeups {
    tx: Arc<watch::Sender<u64>>,
}

impl Default for Wakeups {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(0).0),
        }
    }
}

impl Wakeups {
    /// Wakes every subscriber.
    pub fn wake(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later wake-up.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}
