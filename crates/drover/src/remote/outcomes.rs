//! Recording an HTTP worker's outcome: the store's answer as the worker sees it (a repeat is
//! answered as the first, a contradiction or a lost lease refused), the metrics, and the
//! process's job-end hooks for the outcomes that end a job.

use drover_core::{JobFinishParams, JobOutcome, JobState, LeaseRef, Outcome, StoreError};

use super::{Held, Recorded, RemoteWorkers};
use crate::error::Error;
use crate::hooks::JobEnd;

impl RemoteWorkers {
    pub(super) async fn record(
        &self,
        lease: LeaseRef,
        step: Option<String>,
        outcome: Outcome,
    ) -> Result<Recorded, Error> {
        let result = self
            .store
            .job_finish_many(JobFinishParams {
                outcomes: vec![JobOutcome {
                    lease: lease.clone(),
                    step: step.clone(),
                    outcome: outcome.clone(),
                }],
                now: self.clock.store_now(),
            })
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Internal("finish returned nothing".into()))?;
        let (answer, held) = self.settle(lease, &outcome, result);
        if let Ok(recorded) = &answer {
            self.announce(recorded, held, &outcome, step);
        }
        answer
    }

    /// After an outcome was taken: runs the job-end hooks if it ended its job (a repeat has run
    /// them), and counts it in the metrics and the throughput if the lease was not handed out
    /// here (another server did, or this one restarted since: [`Self::settle`] counted the
    /// others), reading the job for what the lease would have said. In a task of its own: the
    /// outcome is committed, and a request dropped by its client (or one waiting on a full
    /// hook queue) must not lose the hook.
    pub(super) fn announce(
        &self,
        recorded: &Recorded,
        held: Option<Held>,
        outcome: &Outcome,
        step: Option<String>,
    ) {
        if recorded.repeated {
            return;
        }
        let hooks = self
            .hooks
            .clone()
            .filter(|hooks| !hooks.is_empty() && recorded.state.is_terminal());
        let uncounted = held.is_none();
        if hooks.is_none() && !uncounted {
            return;
        }
        let (id, state) = (recorded.id, recorded.state);
        let error = crate::hooks::error_of(outcome, state);
        let (store, metrics, clock) =
            (self.store.clone(), self.metrics.clone(), self.clock.clone());
        let outcome = outcome.clone();
        tokio::spawn(async move {
            let (kind, queue, attempt, step) = match held {
                // The outcome's own step, else the last heartbeat's.
                Some(held) => (held.kind, held.queue, held.attempt, step.or(held.step)),
                None => match store.job_get(id).await {
                    Ok(Some(job)) => {
                        let now = clock.now();
                        let ran = job
                            .attempted_at
                            .and_then(|at| {
                                std::time::Duration::try_from(now.duration_since(at)).ok()
                            })
                            .unwrap_or_default();
                        metrics.finished(&job.queue, &job.kind, &outcome, ran, now);
                        (job.kind, job.queue, job.attempt, step.or(job.step))
                    }
                    _ => {
                        tracing::warn!(
                            job = id,
                            "job ended, but cannot be read for its hooks \
                            and metrics"
                        );
                        return;
                    }
                },
            };
            let Some(hooks) = hooks else {
                return;
            };
            hooks
                .fire(JobEnd {
                    id,
                    kind,
                    queue,
                    state,
                    attempt,
                    error,
                    step,
                })
                .await;
        });
    }

    /// What one finish result means for the remote worker, and the lease as this process knew
    /// it (for the hooks) when the outcome was taken; metrics for accepted outcomes.
    pub(super) fn settle(
        &self,
        lease: LeaseRef,
        outcome: &Outcome,
        result: drover_core::FinishResult,
    ) -> (Result<Recorded, Error>, Option<Held>) {
        let key = (lease.id, lease.lease_token);
        let held = self.held.lock().expect("lease map poisoned").remove(&key);
        let answer = self.answer(lease, outcome, result, held.as_ref());
        (answer, held)
    }

    fn answer(
        &self,
        lease: LeaseRef,
        outcome: &Outcome,
        result: drover_core::FinishResult,
        held: Option<&Held>,
    ) -> Result<Recorded, Error> {
        match (result.accepted, result.state) {
            (true, Some(state)) => {
                if let Some(held) = held {
                    self.metrics.finished(
                        &held.queue,
                        &held.kind,
                        outcome,
                        held.claimed.elapsed(),
                        self.clock.now(),
                    );
                }
                Ok(Recorded {
                    id: lease.id,
                    state,
                    repeated: false,
                })
            }
            // The same call again (its first answer was lost): answered as the first. A call
            // that contradicts what was recorded (a completion after a failure, a discard after
            // a retry, a hand-back after either) must not be answered as a success the worker
            // would believe.
            (false, Some(state)) if result.recorded_earlier => {
                if !could_have_led_to(outcome, state) {
                    self.metrics.refused();
                    return Err(Error::LeaseLost(format!(
                        "job {} was already recorded as {state} under this lease; this \
                         different outcome was not recorded",
                        lease.id
                    )));
                }
                Ok(Recorded {
                    id: lease.id,
                    state,
                    repeated: true,
                })
            }
            (_, None) => Err(Error::Store(StoreError::NotFound(lease.id))),
            (false, Some(state)) => {
                self.metrics.refused();
                Err(Error::LeaseLost(format!(
                    "job {} is {state} and no longer held by this lease: it expired and was \
                     rescued, or another run has it now (also when this outcome was recorded \
                     before and the job was retried since); this call changed nothing",
                    lease.id
                )))
            }
        }
    }
}

/// Whether `outcome`, recorded under a lease, can have left its job in `state` while no other
/// lease took it since: a retry's job may have become available again when it came due.
fn could_have_led_to(outcome: &Outcome, state: JobState) -> bool {
    match outcome {
        Outcome::Completed => state == JobState::Completed,
        Outcome::Retry { .. } => matches!(state, JobState::Retryable | JobState::Available),
        Outcome::Discard { .. } => state == JobState::Discarded,
        Outcome::Cancelled { .. } => state == JobState::Cancelled,
        Outcome::HandBack { .. } => state == JobState::Available,
    }
}
