//! Runs one claimed job: the handler in its own task (so a panic is a failed attempt, not a dead
//! worker), under its timeout and cancellation, then turns what happened into an [`Outcome`].

use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::Duration;

use drover_core::{ClaimedJob, Delivery, FailedRun, Outcome, RetryPolicy, after_failure};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;

use crate::foreman::Pool;
use crate::runtime::{RunHandles, Shared, StopReason, stop_reason};
use crate::task::{JobContext, JobError};

/// How the handler ended.
enum Ran {
    Returned(Result<(), JobError>),
    Panicked(String),
    Abandoned,
    UnknownKind,
    /// Stopped (cancelled, lease lost, shutdown) before its handler started.
    NotStarted,
}

/// Executes a registered run, sends the outcome to the completer, and frees the slot.
pub(crate) async fn execute(
    shared: Arc<Shared>,
    mut job: ClaimedJob,
    handles: RunHandles,
    permit: OwnedSemaphorePermit,
    pool: Arc<Pool>,
) {
    let started = std::time::Instant::now();
    let RunHandles {
        cancel,
        reason,
        step,
        done,
        mut guard,
    } = handles;
    guard.executing();
    let task = shared.tasks.get(&job.kind).cloned();
    let retry = task
        .as_ref()
        .map(|task| task.options().retry)
        .unwrap_or_default();
    guard.retry = retry;
    let ran = match task {
        _ if cancel.is_cancelled() => Ran::NotStarted,
        None => Ran::UnknownKind,
        Some(task) => {
            let timeout = task.options().timeout;
            let ctx = JobContext {
                id: job.id,
                kind: job.kind.as_str().into(),
                queue: job.queue.as_str().into(),
                attempt: job.attempt,
                max_attempts: job.max_attempts,
                cancel: cancel.clone(),
                step: step.clone(),
            };
            let args = std::mem::take(&mut job.args);
            let handle = tokio::spawn(async move { task.run_raw(ctx, args).await });
            if let Some(running) = shared
                .running
                .lock()
                .expect("running lock poisoned")
                .get_mut(&job.id)
            {
                running.abort = Some(handle.abort_handle());
            }
            supervise(
                handle,
                timeout,
                shared.config.cancel_grace,
                &cancel,
                &reason,
            )
            .await
        }
    };
    done.store(true, std::sync::atomic::Ordering::Release);
    pool.pace.record(started.elapsed());

    let step = step.lock().expect("step lock poisoned").clone();
    let outcome = decide(&job, ran, stop_reason(&reason), &retry);
    // The slot is freed only once the outcome is queued: while the completer cannot keep up
    // (the outcome channel is full), the slot stays busy and no further job starts, so the
    // outcomes held in memory stay bounded by the channel plus one per slot.
    guard.finish(step, outcome).await;
    drop(permit);
    pool.slot_freed.notify_one();
}

/// Hands back a job claimed into the foreman's buffer that never started (shutdown): available
/// again without using an attempt, whatever its delivery.
pub(crate) async fn hand_back_unstarted(handles: RunHandles) {
    hand_back_waiting(
        handles,
        "claimed but not started before a worker shutdown; handed back".into(),
    )
    .await;
}

/// Hands back a job that never started, for `reason`: available again without using an
/// attempt, whatever its delivery.
pub(crate) async fn hand_back_waiting(handles: RunHandles, reason: String) {
    handles
        .guard
        .finish(None, Outcome::HandBack { reason })
        .await;
}

/// Waits for the handler; on timeout asks it to stop, then abandons it after the grace.
async fn supervise(
    mut handle: tokio::task::JoinHandle<Result<(), JobError>>,
    timeout: Option<Duration>,
    grace: Duration,
    cancel: &CancellationToken,
    reason: &Arc<AtomicU8>,
) -> Ran {
    let joined = match timeout {
        None => (&mut handle).await,
        Some(limit) => match tokio::time::timeout(limit, &mut handle).await {
            Ok(joined) => joined,
            Err(_) => {
                let _ = reason.compare_exchange(
                    StopReason::None as u8,
                    StopReason::Timeout as u8,
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                );
                cancel.cancel();
                match tokio::time::timeout(grace, &mut handle).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        handle.abort();
                        return Ran::Abandoned;
                    }
                }
            }
        },
    };
    match joined {
        Ok(result) => Ran::Returned(result),
        Err(err) => join_error(err),
    }
}

fn join_error(err: JoinError) -> Ran {
    if err.is_panic() {
        let panic = err.into_panic();
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        Ran::Panicked(message)
    } else {
        Ran::Abandoned
    }
}

/// Turns how the handler ended, and why it was stopped, into the outcome to record.
fn decide(job: &ClaimedJob, ran: Ran, reason: StopReason, retry: &RetryPolicy) -> Outcome {
    let failure = |message: String| {
        let run = FailedRun {
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            delivery: job.delivery,
            // The handler reported it (or was stopped for its timeout or lost lease), as
            // opposed to a run cut off by its process's death: retried whatever the delivery.
            interrupted: false,
            cancel_requested: false,
            error: &message,
        };
        after_failure(&run, retry)
    };
    let error_text = |ran: &Ran| match ran {
        Ran::Returned(Err(err)) => Some(err.to_string()),
        Ran::Panicked(message) => Some(format!("handler panicked: {message}")),
        _ => None,
    };
    if let Ran::Returned(Ok(())) = ran {
        return Outcome::Completed;
    }
    if let (Ran::NotStarted, StopReason::Shutdown) = (&ran, reason) {
        return Outcome::HandBack {
            reason: "stopped by a worker shutdown before it started; handed back".into(),
        };
    }
    if let Ran::UnknownKind = ran {
        return Outcome::Discard {
            error: format!(
                "unknown kind {:?}: no task of this kind is registered in this worker",
                job.kind
            ),
        };
    }
    match reason {
        StopReason::Operator => Outcome::Cancelled {
            error: error_text(&ran).filter(|text| text != "cancelled"),
        },
        StopReason::Shutdown => match job.delivery {
            Delivery::AtLeastOnce => Outcome::HandBack {
                reason: "interrupted by a worker shutdown; handed back without using an attempt"
                    .into(),
            },
            Delivery::AtMostOnce => Outcome::Discard {
                error: "interrupted by a worker shutdown; at-most-once jobs are never run again"
                    .into(),
            },
        },
        StopReason::Timeout => failure("timed out".into()),
        StopReason::LeaseLost => failure("lease lost while running".into()),
        StopReason::None => match ran {
            Ran::Returned(Err(JobError::Failed(message))) => failure(message),
            Ran::Returned(Err(JobError::Discard(message))) => Outcome::Discard { error: message },
            Ran::Returned(Err(err @ JobError::InvalidArgs(_))) => Outcome::Discard {
                error: err.to_string(),
            },
            Ran::Returned(Err(JobError::Cancelled)) => Outcome::Cancelled {
                error: Some("the handler cancelled itself".into()),
            },
            Ran::Panicked(message) => failure(format!("handler panicked: {message}")),
            Ran::Abandoned => failure("the handler was aborted".into()),
            Ran::Returned(Ok(())) | Ran::UnknownKind | Ran::NotStarted => {
                unreachable!("handled above, or stopped only with a reason")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(attempt: i32, max_attempts: i32, delivery: Delivery) -> ClaimedJob {
        ClaimedJob {
            id: 1,
            queue: "q".into(),
            kind: "k".into(),
            args: "{}".into(),
            attempt,
            max_attempts,
            priority: 0,
            delivery,
            lease_token: 9,
            created_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn failures_retry_until_the_last_attempt() {
        let policy = RetryPolicy::default();
        let failed = || Ran::Returned(Err(JobError::failed("boom")));
        assert!(matches!(
            decide(
                &job(1, 3, Delivery::AtLeastOnce),
                failed(),
                StopReason::None,
                &policy
            ),
            Outcome::Retry { .. }
        ));
        assert_eq!(
            decide(
                &job(3, 3, Delivery::AtLeastOnce),
                failed(),
                StopReason::None,
                &policy
            ),
            Outcome::Discard {
                error: "boom".into()
            }
        );
        assert!(matches!(
            decide(
                &job(1, 3, Delivery::AtLeastOnce),
                Ran::Panicked("oops".into()),
                StopReason::None,
                &policy
            ),
            Outcome::Retry { error, .. } if error.contains("panicked: oops")
        ));
    }

    #[test]
    fn shutdown_hands_back_or_discards_by_delivery() {
        let policy = RetryPolicy::default();
        assert!(matches!(
            decide(
                &job(1, 3, Delivery::AtLeastOnce),
                Ran::Abandoned,
                StopReason::Shutdown,
                &policy
            ),
            Outcome::HandBack { .. }
        ));
        assert!(matches!(
            decide(
                &job(1, 3, Delivery::AtMostOnce),
                Ran::Returned(Err(JobError::Cancelled)),
                StopReason::Shutdown,
                &policy
            ),
            Outcome::Discard { .. }
        ));
        assert_eq!(
            decide(
                &job(1, 3, Delivery::AtMostOnce),
                Ran::Returned(Ok(())),
                StopReason::Shutdown,
                &policy
            ),
            Outcome::Completed,
            "a run that finished within the grace is completed"
        );
    }

    #[test]
    fn bad_args_and_unknown_kinds_are_discarded() {
        let policy = RetryPolicy::default();
        assert!(matches!(
            decide(
                &job(1, 3, Delivery::AtLeastOnce),
                Ran::Returned(Err(JobError::InvalidArgs("missing field".into()))),
                StopReason::None,
                &policy
            ),
            Outcome::Discard { error } if error.contains("invalid args")
        ));
        assert!(matches!(
            decide(&job(1, 3, Delivery::AtLeastOnce), Ran::UnknownKind, StopReason::None, &policy),
            Outcome::Discard { error } if error.contains("unknown kind")
        ));
        assert_eq!(
            decide(
                &job(1, 3, Delivery::AtLeastOnce),
                Ran::Returned(Err(JobError::Cancelled)),
                StopReason::Operator,
                &policy
            ),
            Outcome::Cancelled { error: None }
        );
    }
}
