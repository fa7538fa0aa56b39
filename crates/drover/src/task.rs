//! Tasks: what a job of a kind does. A [`Task`] has typed args; a [`RawTask`] gets the args'
//! JSON text (the standalone server's command tasks).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use drover_core::{Delivery, JobId, RetryPolicy};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// How a failed run ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A failed attempt: retried with backoff while attempts remain, then discarded.
    #[error("{0}")]
    Failed(String),
    /// Give up now, whatever attempts remain.
    #[error("{0}")]
    Discard(String),
    /// The args could not be decoded. Discarded: a retry would fail the same way.
    #[error("invalid args: {0}")]
    InvalidArgs(String),
    /// The handler stopped because its cancellation token fired.
    #[error("cancelled")]
    Cancelled,
}

impl JobError {
    /// A failed attempt with `message`.
    pub fn failed(message: impl std::fmt::Display) -> Self {
        JobError::Failed(message.to_string())
    }

    /// Give up with `message`.
    pub fn discard(message: impl std::fmt::Display) -> Self {
        JobError::Discard(message.to_string())
    }
}

impl From<String> for JobError {
    fn from(message: String) -> Self {
        JobError::Failed(message)
    }
}

impl From<&str> for JobError {
    fn from(message: &str) -> Self {
        JobError::Failed(message.to_owned())
    }
}

impl From<std::io::Error> for JobError {
    fn from(err: std::io::Error) -> Self {
        JobError::Failed(err.to_string())
    }
}

/// Per-task settings. Enqueue uses them as defaults; the worker uses the timeout and retry
/// policy.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// Queue a job of this kind goes to when the enqueue names none. Default `default`.
    pub queue: String,
    /// Attempts before a job is discarded. Default 25.
    pub max_attempts: i32,
    /// Longest a run may take before it is cancelled and counted as a failed attempt.
    /// Default none.
    pub timeout: Option<Duration>,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// What happens to an interrupted run. Default at-least-once.
    pub delivery: Delivery,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            queue: "default".into(),
            max_attempts: 25,
            timeout: None,
            retry: RetryPolicy::default(),
            delivery: Delivery::AtLeastOnce,
        }
    }
}

/// A task with typed args.
///
/// ```
/// use drover::{JobContext, JobError, Task};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Resize { image: String, width: u32 }
///
/// struct ResizeTask;
///
/// #[async_trait::async_trait]
/// impl Task for ResizeTask {
///     const KIND: &'static str = "image.resize";
///     type Args = Resize;
///
///     async fn run(&self, ctx: JobContext, args: Resize) -> Result<(), JobError> {
///         ctx.step("download");
///         // ...
///         ctx.step("resize");
///         if args.width == 0 {
///             return Err(JobError::discard("width must be positive"));
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Task: Send + Sync + 'static {
    /// The kind this task handles.
    const KIND: &'static str;
    /// The args, decoded from the job's JSON object.
    type Args: DeserializeOwned + Send + 'static;

    /// Settings for this kind.
    fn options(&self) -> TaskOptions {
        TaskOptions::default()
    }

    /// Runs one attempt.
    async fn run(&self, ctx: JobContext, args: Self::Args) -> Result<(), JobError>;
}

/// A task that receives the args as JSON text.
#[async_trait]
pub trait RawTask: Send + Sync + 'static {
    /// The kind this task handles.
    fn kind(&self) -> &str;

    /// Settings for this kind.
    fn options(&self) -> TaskOptions {
        TaskOptions::default()
    }

    /// Runs one attempt with the args' JSON text.
    async fn run_raw(&self, ctx: JobContext, args: String) -> Result<(), JobError>;
}

/// Adapts a typed [`Task`] to a [`RawTask`]: undecodable args end as [`JobError::InvalidArgs`].
pub(crate) struct Typed<T>(pub(crate) T);

#[async_trait]
impl<T: Task> RawTask for Typed<T> {
    fn kind(&self) -> &str {
        T::KIND
    }

    fn options(&self) -> TaskOptions {
        self.0.options()
    }

    async fn run_raw(&self, ctx: JobContext, args: String) -> Result<(), JobError> {
        let args: T::Args =
            serde_json::from_str(&args).map_err(|err| JobError::InvalidArgs(err.to_string()))?;
        self.0.run(ctx, args).await
    }
}

/// What a running job can see of itself.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub(crate) id: JobId,
    pub(crate) kind: Arc<str>,
    pub(crate) queue: Arc<str>,
    pub(crate) attempt: i32,
    pub(crate) max_attempts: i32,
    pub(crate) cancel: CancellationToken,
    pub(crate) step: Arc<Mutex<Option<String>>>,
}

impl JobContext {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The job's queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> i32 {
        self.attempt
    }

    /// Attempts allowed.
    pub fn max_attempts(&self) -> i32 {
        self.max_attempts
    }

    /// Fires when the run should stop: an operator cancelled the job, the timeout passed, the
    /// worker is shutting down, or the lease was lost. Handlers doing long work should select on
    /// it and return [`JobError::Cancelled`].
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether the run was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Names the step the run is in. A failure records the step it happened in; heartbeats
    /// save it, so the job's record shows how far each attempt got even if the process dies.
    pub fn step(&self, name: impl Into<String>) {
        *self.step.lock().expect("step lock poisoned") = Some(name.into());
    }

    /// The step named last.
    pub fn current_step(&self) -> Option<String> {
        self.step.lock().expect("step lock poisoned").clone()
    }
}
