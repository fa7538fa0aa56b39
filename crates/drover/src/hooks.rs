//! Hooks that run when a job ends (completed, discarded, cancelled). They run after the outcome
//! is committed, off the hot path, through a bounded pool; a failing hook is logged and never
//! changes the job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use drover_core::{JobId, JobState, Outcome};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
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

/// Job ends waiting for the pool, at most. When the queue is full, the completer waits before
/// recording more outcomes: a burst of job ends slows the engine down instead of growing
/// without bound, and no hook is dropped.
const QUEUE: usize = 1024;

/// The registered hooks and the bounded pool that runs them: one dispatcher takes job ends from
/// a bounded queue and runs each in a task of its own once one of `concurrency` permits is
/// free, so a burst of 100,000 job ends waits in the queue (and then in the completer) instead
/// of becoming 100,000 tasks or processes.
pub(crate) struct Hooks {
    hooks: Arc<Vec<Arc<dyn Hook>>>,
    queue: Mutex<Option<mpsc::Sender<JobEnd>>>,
    dispatcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    tracker: TaskTracker,
    /// Job ends handed to the pool and not yet through every hook.
    pending: Arc<AtomicUsize>,
}

impl Hooks {
    /// Starts the pool (on the current runtime) when there are hooks.
    pub(crate) fn new(hooks: Vec<Arc<dyn Hook>>, concurrency: usize) -> Self {
        let hooks = Arc::new(hooks);
        let tracker = TaskTracker::new();
        let pending = Arc::new(AtomicUsize::new(0));
        let (queue, dispatcher) = if hooks.is_empty() {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(QUEUE);
            let dispatcher = tokio::spawn(dispatch(
                rx,
                hooks.clone(),
                tracker.clone(),
                Arc::new(Semaphore::new(concurrency.max(1))),
                pending.clone(),
            ));
            (Some(tx), Some(dispatcher))
        };
        Self {
            hooks,
            queue: Mutex::new(queue),
            dispatcher: Mutex::new(dispatcher),
            tracker,
            pending,
        }
    }

    /// Whether no hook is registered: then a job's end needs no event built for it.
    pub(crate) fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Queues every hook for `event`; waits while the pool's queue is full.
    pub(crate) async fn fire(&self, event: JobEnd) {
        if self.hooks.is_empty() || !event.state.is_terminal() {
            return;
        }
        let queue = self.queue.lock().expect("hook queue lock").clone();
        let Some(queue) = queue else {
            tracing::warn!(
                job = event.id,
                "job ended after the hooks stopped; its hooks do not run"
            );
            return;
        };
        self.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(lost) = queue.send(event).await {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(
                job = lost.0.id,
                "hook pool gone; the job's hooks do not run"
            );
        }
    }

    /// Job ends handed to the pool and not yet through every hook.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Lets the queued hooks run, for at most `limit`; returns how many job ends did not get
    /// through their hooks in time.
    pub(crate) async fn shutdown(&self, limit: Duration) -> usize {
        drop(self.queue.lock().expect("hook queue lock").take());
        let dispatcher = self.dispatcher.lock().expect("hook dispatcher lock").take();
        let drained = async {
            if let Some(dispatcher) = dispatcher {
                let _ = dispatcher.await;
            }
            self.tracker.close();
            self.tracker.wait().await;
        };
        let _ = tokio::time::timeout(limit, drained).await;
        self.pending.load(Ordering::SeqCst)
    }
}

async fn dispatch(
    mut rx: mpsc::Receiver<JobEnd>,
    hooks: Arc<Vec<Arc<dyn Hook>>>,
    tracker: TaskTracker,
    permits: Arc<Semaphore>,
    pending: Arc<AtomicUsize>,
) {
    while let Some(event) = rx.recv().await {
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let hooks = hooks.clone();
        let pending = pending.clone();
        tracker.spawn(async move {
            run_all(&hooks, event).await;
            pending.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
        });
    }
}

/// Runs each hook for `event` in turn, each in a task of its own: a panicking hook must not take
/// the others down with it.
async fn run_all(hooks: &[Arc<dyn Hook>], event: JobEnd) {
    for hook in hooks {
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
}

/// The error a job end carries: the failure's, or a cancel's reason when it gave one.
pub(crate) fn error_of(outcome: &Outcome, state: JobState) -> Option<String> {
    match (outcome, state) {
        (Outcome::Discard { error } | Outcome::Retry { error, .. }, _) => Some(error.clone()),
        (Outcome::Cancelled { error }, _) => error.clone(),
        _ => None,
    }
}
