//! The engine's error type.

use drover_core::{StoreError, ValidationError};

/// An error from the engine's API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job handed to enqueue was refused; nothing was stored.
    #[error("{}{}", .index.map(|i| format!("job {i}: ")).unwrap_or_default(), .error)]
    InvalidJob {
        /// Position of the job in a batch; `None` for a single enqueue.
        index: Option<usize>,
        /// What is wrong with it.
        error: ValidationError,
    },
    /// Input other than a job was refused.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The engine configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store failed (including a missing job and an action that does not apply).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A named thing (a cron schedule, a queue) that does not exist.
    #[error("no {what} named {name:?}")]
    UnknownName {
        /// What was looked for.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// An operator action on capacity (slots, reservations) that did nothing.
    #[error(transparent)]
    Capacity(#[from] crate::autoscaler::admin::AdminError),
    /// A lease presented by a remote worker that it no longer holds: the job was rescued,
    /// finished by another run, or the token is unknown. Nothing changed.
    #[error("lease lost: {0}")]
    LeaseLost(String),
}
