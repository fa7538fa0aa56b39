//! A claimed run always ends: its [`RunGuard`] records an outcome or a hand-back whatever
//! happens to the task that owns it.
//!
//! A run is registered at its claim and owned first by its foreman's buffer, then by its
//! executor, then (as a message) by the completer until its outcome is recorded. The guard goes
//! along. If it is dropped without having sent the run's outcome — the executor panicked
//! outside the handler, its future was dropped, the foreman died with jobs in its buffer — it
//! sends one itself: a hand-back for a job that never reached an executor, otherwise an
//! interrupted attempt ([`drover_core::after_failure`]: retried, or discarded when it was the
//! last attempt or the job is at-most-once). Were the outcome channel full or closed, the run
//! is left to its lease: the guard's ownership token dies with it, the heartbeat stops renewing
//! a run that nobody owns ([`RunGuard::owner`]) and forgets it, and the rescuer takes it once
//! the lease expires.

use std::sync::{Arc, Mutex, Weak};

use drover_core::{
    ClaimedJob, Delivery, FailedRun, JobOutcome, LeaseRef, Outcome, RetryPolicy, after_failure,
};
use tokio::sync::mpsc;

use crate::runtime::Finished;

/// Settles its run when dropped unless [`RunGuard::finish`] did.
pub(crate) struct RunGuard {
    outcomes: mpsc::Sender<Finished>,
    lease: LeaseRef,
    kind: String,
    queue: String,
    attempt: i32,
    max_attempts: i32,
    delivery: Delivery,
    step: Arc<Mutex<Option<String>>>,
    /// The task's retry policy, once the executor knows it.
    pub(crate) retry: RetryPolicy,
    /// Whether an executor took the run (else it never started).
    executing: bool,
    /// Alive while someone owns the run; taken into the outcome message.
    owner: Option<Arc<()>>,
}

impl RunGuard {
    pub(crate) fn new(
        outcomes: mpsc::Sender<Finished>,
        job: &ClaimedJob,
        step: Arc<Mutex<Option<String>>>,
    ) -> RunGuard {
        RunGuard {
            outcomes,
            lease: LeaseRef {
                id: job.id,
                lease_token: job.lease_token,
            },
            kind: job.kind.clone(),
            queue: job.queue.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            delivery: job.delivery,
            step,
            retry: RetryPolicy::default(),
            executing: false,
            owner: Some(Arc::new(())),
        }
    }

    /// The token the heartbeat checks: dead once nobody owns the run.
    pub(crate) fn owner(&self) -> Weak<()> {
        Arc::downgrade(self.owner.as_ref().expect("owned until finished"))
    }

    /// An executor has taken the run: from now on a lost run counts as an attempt.
    pub(crate) fn executing(&mut self) {
        self.executing = true;
    }

    /// Sends the run's outcome to the completer, waiting while its queue is full.
    pub(crate) async fn finish(mut self, step: Option<String>, outcome: Outcome) {
        let finished = self.message(step, outcome);
        let outcomes = self.outcomes.clone();
        drop(self);
        // A closed channel: the engine is shutting down past its deadline; the lease expires.
        let _ = outcomes.send(finished).await;
    }

    fn message(&mut self, step: Option<String>, outcome: Outcome) -> Finished {
        Finished {
            outcome: JobOutcome {
                lease: self.lease.clone(),
                step,
                outcome,
            },
            // The guard is spent once its message is made: its names move into it.
            kind: std::mem::take(&mut self.kind),
            queue: std::mem::take(&mut self.queue),
            attempt: self.attempt,
            _owner: self.owner.take().expect("finished once"),
        }
    }

    /// What to record for a run whose owner vanished.
    fn lost_outcome(&self) -> Outcome {
        if !self.executing {
            return Outcome::HandBack {
                reason: "claimed, but its worker stopped before starting it; handed back".into(),
            };
        }
        let run = FailedRun {
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            delivery: self.delivery,
            interrupted: true,
            cancel_requested: false,
            error: "the executor stopped before recording an outcome (it panicked or was dropped)",
        };
        after_failure(&run, &self.retry)
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.owner.is_none() {
            return;
        }
        let outcome = self.lost_outcome();
        tracing::error!(job = self.lease.id, kind = %self.kind, ?outcome,
            "a run lost its executor without an outcome; recording one for it");
        let step = self.step.lock().map(|s| s.clone()).unwrap_or(None);
        let finished = self.message(step, outcome);
        if let Err(err) = self.outcomes.try_send(finished) {
            // Dropping the message drops the owner token: the heartbeat lets the lease go.
            tracing::error!(job = self.lease.id, error = %err,
                "cannot queue the outcome; the lease will expire and the rescuer will take the job");
        }
    }
}
