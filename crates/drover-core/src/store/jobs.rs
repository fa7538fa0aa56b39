//! Params and answers of the [`Store`](super::Store) methods about jobs: insert, claim,
//! heartbeat, finish, rescue, cancel, retry, list.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

#[allow(unused_imports)] // Named by the doc links.
use super::Store;
use crate::admin::TimeRange;
use crate::job::{ClaimedJob, JobId, JobState, NewJob};

/// Params of [`Store::job_insert_many`].
#[derive(Debug, Clone)]
pub struct JobInsertParams {
    /// Validated jobs.
    pub jobs: Vec<NewJob>,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// One result of [`Store::job_insert_many`], in input order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InsertedJob {
    /// The new job's id, or the existing job's id for a duplicate unique key.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
    /// True when a job with the same unique key was unfinished, so nothing was inserted.
    pub duplicate: bool,
}

/// Params of [`Store::job_claim`].
#[derive(Debug, Clone)]
pub struct JobClaimParams {
    /// The queue to claim from.
    pub queue: String,
    /// Most jobs to claim.
    pub limit: usize,
    /// Id of the claiming process; recorded as the lease owner.
    pub owner: String,
    /// How long the lease holds without a heartbeat.
    pub lease: Duration,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Answer of [`Store::job_claim`].
#[derive(Debug, Clone, Default)]
pub struct ClaimResult {
    /// The claimed jobs, highest priority first, then oldest.
    pub jobs: Vec<ClaimedJob>,
    /// When the next scheduled or retryable job of the queue becomes due, if any.
    pub next_due_at: Option<Timestamp>,
}

/// A lease presented by its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef {
    /// The job.
    pub id: JobId,
    /// Token from the claim.
    pub lease_token: i64,
}

/// Params of [`Store::job_heartbeat`].
#[derive(Debug, Clone)]
pub struct JobHeartbeatParams {
    /// Leases to renew, each with the step its run has reached.
    pub leases: Vec<(LeaseRef, Option<String>)>,
    /// New lease length, from now.
    pub lease: Duration,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Answer of [`Store::job_heartbeat`] for one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The job.
    pub id: JobId,
    /// False when the lease was lost (expired and rescued, or the job changed state).
    pub held: bool,
    /// True when an operator asked to cancel the job.
    pub cancel_requested: bool,
}

/// What happened in a run, as recorded by [`Store::job_finish_many`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Succeeded. Terminal.
    Completed,
    /// Failed; run again after `delay` (from now). The state becomes `retryable`.
    Retry {
        /// What went wrong.
        error: String,
        /// Backoff before the next attempt.
        delay: Duration,
    },
    /// Failed for good (attempts exhausted, unknown kind, bad args, interrupted at-most-once).
    /// Terminal.
    Discard {
        /// Why.
        error: String,
    },
    /// Stopped on an operator's cancel request. Terminal.
    Cancelled {
        /// What the handler said, if anything.
        error: Option<String>,
    },
    /// Interrupted by a shutdown: available again without consuming the attempt.
    HandBack {
        /// Why.
        reason: String,
    },
}

/// One outcome, fenced by its run's lease.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    /// The run's lease.
    pub lease: LeaseRef,
    /// The step the run had reached.
    pub step: Option<String>,
    /// What happened.
    pub outcome: Outcome,
}

impl JobOutcome {
    /// The run of `lease` succeeded (no step to record).
    pub fn completed(lease: LeaseRef) -> Self {
        Self {
            lease,
            step: None,
            outcome: Outcome::Completed,
        }
    }
}

/// Params of [`Store::job_finish_many`].
#[derive(Debug, Clone)]
pub struct JobFinishParams {
    /// Outcomes to record.
    pub outcomes: Vec<JobOutcome>,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Answer of [`Store::job_finish_many`] for one outcome, in input order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishResult {
    /// The job.
    pub id: JobId,
    /// False when the lease no longer held: the outcome was not recorded.
    pub accepted: bool,
    /// When not accepted: true when this same lease's run had already recorded an outcome (a
    /// repeated call), false when the lease was lost (a stale run). Lets a remote worker retry a
    /// completion whose answer it never got.
    pub recorded_earlier: bool,
    /// The job's state after the call (when accepted: the state the outcome led to).
    pub state: Option<JobState>,
}

/// Params of [`Store::job_rescue_expired`].
#[derive(Debug, Clone)]
pub struct JobRescueParams {
    /// Most jobs to rescue in one call.
    pub limit: usize,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Parameters of [`Store::job_promote_due`].
#[derive(Debug, Clone)]
pub struct JobPromoteParams {
    /// Most jobs to make available in one call.
    pub limit: usize,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// One job handled by [`Store::job_rescue_expired`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescuedJob {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its state now: `available`, `discarded` or `cancelled`.
    pub state: JobState,
}

/// Params of [`Store::job_cancel`].
#[derive(Debug, Clone)]
pub struct JobCancelParams {
    /// The job.
    pub id: JobId,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Answer of [`Store::job_cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelResult {
    /// The job was waiting and is now `cancelled`.
    Cancelled,
    /// The job is running; its worker was asked to stop.
    Requested,
    /// The job had already finished in this state; nothing changed.
    AlreadyFinished(JobState),
}

/// Params of [`Store::job_retry`].
#[derive(Debug, Clone)]
pub struct JobRetryParams {
    /// The job.
    pub id: JobId,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Params of [`Store::job_list`].
#[derive(Debug, Clone, Default)]
pub struct JobListParams {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs in this queue.
    pub queue: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs with an id below this one (paging, newest first).
    pub before_id: Option<JobId>,
    /// Only jobs with an id above this one: with `before_id`, a window of ids, so that a search
    /// on columns no index covers reads a bounded number of rows.
    pub above_id: Option<JobId>,
    /// Only jobs created in this range.
    pub created: TimeRange,
    /// Only jobs finished in this range (terminal states only, when set).
    pub finished: TimeRange,
    /// Only jobs whose args contain this JSON value (its text: numbers compare exactly), with
    /// PostgreSQL's `@>` meaning: every key of an object present with a containing value,
    /// every element of an array contained.
    pub args_contain: Option<String>,
    /// Most jobs to return.
    pub limit: usize,
}

/// A count of jobs in one queue and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStateCount {
    /// Queue.
    pub queue: String,
    /// State.
    pub state: JobState,
    /// Number of jobs.
    pub count: u64,
}
