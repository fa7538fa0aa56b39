//! Errors shared by every backend and the engine.

use std::time::Duration;

/// What is wrong with a piece of input. Raised at the edge, before anything is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A kind or queue name that is empty, too long or has characters outside the allowed set.
    #[error("invalid {field} {value:?}: {reason}")]
    Name {
        /// Which field (`kind`, `queue`, `unique_key`).
        field: &'static str,
        /// The value as given (truncated when very long).
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Args that are not a JSON object.
    #[error("invalid args: {0}")]
    Args(String),
    /// Args whose encoded size is over the limit.
    #[error("args are {size} bytes, over the limit of {limit} bytes")]
    ArgsTooLarge {
        /// Encoded size of the args.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A numeric field out of range.
    #[error("invalid {field}: {reason}")]
    Range {
        /// Which field.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A batch with more items than allowed in one call.
    #[error("{size} {field} in one call is over the limit of {limit}")]
    BatchTooLarge {
        /// What the batch holds, as the caller named it (`jobs`, `ids`, `tokens`).
        field: &'static str,
        /// Items in the batch.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// An error from a [`crate::Store`] operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Input refused before anything was written.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The backend is overloaded: the write path stayed full for the whole wait.
    #[error("database busy: the write queue stayed full for {0:?}; retry later")]
    Busy(Duration),
    /// The database is unreachable or refused the operation for a reason that may pass
    /// ("database is locked", a dropped connection). Callers in background loops retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// No job with that id in the jobs table: it never existed, or it finished and the
    /// retention archiver has moved it to the archive table since.
    #[error(
        "no job with id {0} (finished jobs are moved to the table drover_jobs_archive once older \
         than [jobs_archive] keeps them)"
    )]
    NotFound(i64),
    /// The operation does not apply to the job in its current state.
    #[error("job {id} is {state}: {reason}")]
    Conflict {
        /// The job.
        id: i64,
        /// Its current state.
        state: String,
        /// Why the operation does not apply.
        reason: String,
    },
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// A bug or a corrupt database: something that retrying will not fix.
    #[error("database error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether a background loop should retry the operation after a pause.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Busy(_) | StoreError::Unavailable(_))
    }
}
