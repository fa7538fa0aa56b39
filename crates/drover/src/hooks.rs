//! Hooks that run when a job ends (completed, discarded, cancelled). They run after the outcome
//! is committed, off the hot path; a failing hook is logged and never changes the job.

use std::sync::Arc;

use async_trait::async_trait;
use drover_core::{JobId, JobState};
use serde::Serialize;
use tokio_util::task::TaskTracker;

/// A job reached a terminal state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobEnd {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// `completed`, `discarded` or `cancelled`.
    pub state: JobState,
    /// The attempt that ended it.
    pub attempt: i32,
    /// The error of the last attempt, if it failed.
    pub error: Option<String>,
    /// The step the last attempt reached.
    pub step: Option<String>,
}

/// Something to run when a job ends.
#[async_trait]
pub trait Hook: Send + Sync + 'static {
    /// Called once per job end. An error is logged.
    async fn on_job_end(&self, event: &JobEnd) -> Result<(), String>;
}

/// A hook from a plain closure.
pub(crate) struct FnHook<F>(pub(crate) F);

#[async_trait]
impl<F> Hook for FnHook<F>
where
    F: Fn(&JobEnd) + Send + Sync + 'static,
{
    async fn on_job_end(&self, event: &JobEnd) -> Result<(), String> {
        (self.0)(event);
        Ok(())
    }
}

/// The registered hooks and the tasks running them.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    hooks: Arc<Vec<Arc<dyn Hook>>>,
    pub(crate) tracker: TaskTracker,
}

impl Hooks {
    pub(crate) fn new(hooks: Vec<Arc<dyn Hook>>) -> Self {
        Self {
            hooks: Arc::new(hooks),
            tracker: TaskTracker::new(),
        }
    }

    /// Runs every hook for `event` in the background.
    pub(crate) fn fire(&self, event: JobEnd) {
        if self.hooks.is_empty() || !event.state.is_terminal() {
            return;
        }
        let hooks = self.hooks.clone();
        self.tracker.spawn(async move {
            for hook in hooks.iter() {
                // A panicking hook must not take the others down with it.
                let hook = hook.clone();
                let ev = event.clone();
                let result = tokio::spawn(async move { hook.on_job_end(&ev).await }).await;
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        tracing::warn!(job = event.id, kind = %event.kind, error = %err, "job-end hook failed")
                    }
                    Err(err) => {
                        tracing::warn!(job = event.id, kind = %event.kind, error = %err, "job-end hook panicked")
                    }
                }
            }
        });
    }
}
