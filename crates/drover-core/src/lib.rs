//! Drover's core: the job model and its states, validation of what comes in, the injected
//! [`Clock`], the retry policy, and the [`Store`] trait — the one seam between the engine and a
//! database backend.
//!
//! Nothing in this crate talks to a database. Backends (`drover-sqlite`, `drover-postgres`)
//! implement [`Store`]; the engine (`drover`) uses only this crate, so it
//! cannot name a backend type.

pub mod admin;
pub mod background;
pub mod capacity;
pub mod clock;
pub mod error;
pub mod job;
pub mod json_text;
pub mod parked;
pub mod redact;
pub mod retry;
pub mod store;
pub mod validate;

pub use admin::{
    ActResult, COUNT_REST, COUNT_SLICE, CompletedTally, JobActParams, JobAction,
    QueueCountsRefreshParams, QueuePauseParams, QueueRecord, TimeRange, act_refusal,
    indexed_count_states,
};
pub use background::{BackgroundHealth, Outage};
pub use capacity::*;
pub use clock::{Clock, SimulatedClock, SystemClock};
pub use error::{StoreError, ValidationError};
pub use job::{
    AttemptError, ClaimedJob, Delivery, HistoryEntry, JobId, JobRecord, JobState, NewJob,
};
pub use json_text::{JobArgs, json_contains};
pub use retry::{
    ExpiredRun, FailedRun, RescueDecision, RetryPolicy, after_failure, rescue_decision,
};
pub use store::*;
pub use validate::Limits;
