//! The job model: states, delivery guarantees, and the records that flow through the store.
//!
//! ```text
//!  enqueue ──► scheduled ──(due)──► available ──(claim)──► running ──► completed
//!     │                                ▲                      │  ├───► retryable ──(backoff)──► available
//!     └──────────(no delay)────────────┘                      │  ├───► discarded
//!                                                             │  └───► cancelled
//!                 lease expired / handed back at shutdown ────┘ (available again, or
//!                                                                discarded if at-most-once)
//! ```
//!
//! Terminal states (`completed`, `discarded`, `cancelled`) never change again except by an
//! explicit operator retry, which is recorded in the job's history.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A job's id: unique within one database, increasing in insertion order.
pub type JobId = i64;

/// Where a job is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobState {
    /// Waiting for its `scheduled_at` time.
    Scheduled,
    /// Ready to be claimed.
    Available,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Failed an attempt; available again at its backoff time.
    Retryable,
    /// Finished successfully. Terminal.
    Completed,
    /// Gave up: attempts exhausted, unknown kind, bad args, or an interrupted at-most-once job.
    /// Terminal.
    Discarded,
    /// Cancelled by an operator. Terminal.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Discarded,
        JobState::Cancelled,
    ];

    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Discarded => "discarded",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the state never changes again (but for an operator retry).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Discarded | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state {s:?}; expected one of: {}",
                    JobState::ALL.map(JobState::as_str).join(", ")
                )
            })
    }
}

/// What happens to a job whose worker is interrupted mid-run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Delivery {
    /// Run again after the lease expires. A job may run twice only when a process died or lost
    /// its lease mid-run.
    #[default]
    AtLeastOnce,
    /// Never run again once started: an interrupted job is discarded with the reason recorded.
    AtMostOnce,
}

impl Delivery {
    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::AtLeastOnce => "at-least-once",
            Delivery::AtMostOnce => "at-most-once",
        }
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Delivery {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "at-least-once" => Ok(Delivery::AtLeastOnce),
            "at-most-once" => Ok(Delivery::AtMostOnce),
            other => Err(format!(
                "unknown delivery {other:?}; expected at-least-once or at-most-once"
            )),
        }
    }
}

/// A job to insert. Build it with [`NewJob::new`] and validate it with
/// [`crate::Limits::check_job`] before handing it to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Queue the job waits in.
    pub queue: String,
    /// Task kind: names the handler.
    pub kind: String,
    /// Arguments: the text of a JSON object.
    pub args: String,
    /// Higher runs first. Default 0.
    pub priority: i32,
    /// Attempts before the job is discarded. At least 1.
    pub max_attempts: i32,
    /// Run at this time; `None` runs as soon as a worker is free.
    pub scheduled_at: Option<Timestamp>,
    /// While a job with this key is unfinished, enqueuing another returns the first one's id.
    pub unique_key: Option<String>,
    /// What happens when a run is interrupted.
    pub delivery: Delivery,
}

impl NewJob {
    /// A job of `kind` in the `default` queue, with default options.
    pub fn new(kind: impl Into<String>, args: impl Into<String>) -> Self {
        Self {
            queue: "default".to_owned(),
            kind: kind.into(),
            args: args.into(),
            priority: 0,
            max_attempts: 25,
            scheduled_at: None,
            unique_key: None,
            delivery: Delivery::AtLeastOnce,
        }
    }
}

/// One failed or interrupted attempt, as recorded on the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptError {
    /// The attempt's number, from 1.
    pub attempt: i32,
    /// When it ended.
    pub at: Timestamp,
    /// The step the handler had named last, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// What went wrong.
    pub message: String,
    /// The process that held the attempt's lease (absent in entries written before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

/// An operator action or engine event on a job that is not a failure: an operator retry, a
/// cancel request, a hand-back at shutdown, a rescue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    /// When it happened.
    pub at: Timestamp,
    /// Short name: `operator_retry`, `cancel_requested`, `handed_back`, `rescued`.
    pub event: String,
    /// Free text.
    pub detail: String,
}

/// A job as stored: every field, for `jobs show` and the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRecord {
    /// Id.
    pub id: JobId,
    /// Queue.
    pub queue: String,
    /// Task kind.
    pub kind: String,
    /// Arguments (a JSON object), as stored: every digit of a number kept.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub args: crate::JobArgs,
    /// Current state.
    pub state: JobState,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts started (and counted) so far.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Delivery guarantee.
    pub delivery: Delivery,
    /// Uniqueness key, if any.
    pub unique_key: Option<String>,
    /// When the job becomes (or became) available.
    pub scheduled_at: Timestamp,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When the latest attempt started.
    pub attempted_at: Option<Timestamp>,
    /// When it reached a terminal state.
    pub completed_at: Option<Timestamp>,
    /// The process holding, or that last held, the lease: kept when the run ends, so a
    /// finished job names the process of its last attempt.
    pub lease_owner: Option<String>,
    /// When the lease runs out unless renewed.
    pub lease_expires_at: Option<Timestamp>,
    /// When an operator asked for cancellation, if they did.
    pub cancel_requested_at: Option<Timestamp>,
    /// The step the latest attempt had reached.
    pub step: Option<String>,
    /// One entry per failed or interrupted attempt.
    pub errors: Vec<AttemptError>,
    /// Operator actions and engine events.
    pub history: Vec<HistoryEntry>,
}

/// A job handed to a worker by a claim. The lease token fences every later write about this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// Id.
    pub id: JobId,
    /// Queue.
    pub queue: String,
    /// Task kind.
    pub kind: String,
    /// Arguments: the text of a JSON object.
    pub args: String,
    /// This attempt's number, from 1.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Priority.
    pub priority: i32,
    /// Delivery guarantee.
    pub delivery: Delivery,
    /// Fencing token of this claim: writes about this run must present it.
    pub lease_token: i64,
    /// When it was enqueued.
    pub created_at: Timestamp,
}
