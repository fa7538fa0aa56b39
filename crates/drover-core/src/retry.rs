//! When a failed attempt runs again: exponential backoff with jitter, capped; and the one place
//! that decides whether a failed or interrupted run is retried, discarded or cancelled
//! ([`after_failure`]).

use std::time::Duration;

use crate::job::{Delivery, JobState};
use crate::store::Outcome;

/// A run that did not succeed, as [`after_failure`] needs it.
#[derive(Debug, Clone)]
pub struct FailedRun<'a> {
    /// The attempt that failed (from 1).
    pub attempt: i32,
    /// The job's most attempts.
    pub max_attempts: i32,
    /// How the job may be rerun.
    pub delivery: Delivery,
    /// Whether the run was cut off (its process died, its lease expired, its executor stopped)
    /// rather than reporting a failure: an at-most-once job is never run again after that.
    pub interrupted: bool,
    /// Whether an operator asked to cancel the job.
    pub cancel_requested: bool,
    /// What went wrong.
    pub error: &'a str,
}

/// Retry or discard (or cancel): what becomes of a run that did not succeed. An operator's
/// cancel request wins; an interrupted at-most-once run is discarded; then a run with attempts
/// left is retried after `policy`'s backoff, and the last one is discarded.
pub fn after_failure(run: &FailedRun<'_>, policy: &RetryPolicy) -> Outcome {
    let error = run.error.to_owned();
    if run.cancel_requested {
        return Outcome::Cancelled { error: Some(error) };
    }
    if run.interrupted && run.delivery == Delivery::AtMostOnce {
        return Outcome::Discard {
            error: format!("{error}; interrupted, and at-most-once jobs are never run again"),
        };
    }
    if run.attempt >= run.max_attempts {
        Outcome::Discard { error }
    } else {
        Outcome::Retry {
            error,
            delay: policy.random_delay(run.attempt),
        }
    }
}

/// Backoff after failed attempts: `base × 2^(attempt−1)`, capped at `max`, then spread by
/// ±`jitter` (a fraction) so that a burst of failures does not come back as a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt. Default 1 s.
    pub base: Duration,
    /// Longest delay. Default 1 h.
    pub max: Duration,
    /// Fraction of the delay to spread it by, between 0 and 1. Default 0.2.
    pub jitter: f64,
}

/// A running job whose lease expired, as the rescuer finds it.
#[derive(Debug, Clone)]
pub struct ExpiredRun<'a> {
    /// The attempt that was cut off.
    pub attempt: i32,
    /// The job's most attempts.
    pub max_attempts: i32,
    /// How the job may be rerun.
    pub delivery: Delivery,
    /// Whether an operator asked to cancel the job.
    pub cancel_requested: bool,
    /// When the lease expired, as text for the message.
    pub expired_at: &'a str,
}

/// What the rescuer does with an expired run: the state it moves to and the error recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescueDecision {
    /// `available` (run again at once: the lease's expiry was the wait), `discarded` or
    /// `cancelled`.
    pub state: JobState,
    /// The error recorded for the cut-off attempt.
    pub message: String,
}

/// The rescuer's decision for `run`: [`after_failure`] for an interrupted run, so that it is
/// made in one place for the executor and for both backends' rescue statements, which take
/// the result as parameters.
pub fn rescue_decision(run: &ExpiredRun<'_>) -> RescueDecision {
    let failed = FailedRun {
        attempt: run.attempt,
        max_attempts: run.max_attempts,
        delivery: run.delivery,
        interrupted: true,
        cancel_requested: run.cancel_requested,
        error: "",
    };
    let expired = run.expired_at;
    let (state, message) = match after_failure(&failed, &RetryPolicy::default()) {
        Outcome::Cancelled { .. } => (
            JobState::Cancelled,
            format!("lease expired at {expired} while a cancel was requested"),
        ),
        Outcome::Retry { .. } => (
            JobState::Available,
            format!(
                "lease expired at {expired} (the worker died or stalled); rescued to run again"
            ),
        ),
        _ if run.delivery == Delivery::AtMostOnce => (
            JobState::Discarded,
            format!(
                "interrupted: lease expired at {expired} (the worker died or stalled); \
                 at-most-once jobs are never run again"
            ),
        ),
        _ => (
            JobState::Discarded,
            format!(
                "lease expired at {expired} (the worker died or stalled) on the last of {} \
                 attempts",
                run.max_attempts
            ),
        ),
    };
    RescueDecision { state, message }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, after attempt `attempt` (from 1) failed.
    /// `unit` is a number in `[0, 1)` (random in production, fixed in tests).
    pub fn delay(&self, attempt: i32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).clamp(0, 62) as u32;
        let raw = self
            .base
            .checked_mul(1u32.checked_shl(exponent.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        let spread = self.jitter.clamp(0.0, 1.0) * (unit.clamp(0.0, 1.0) * 2.0 - 1.0);
        raw.mul_f64(1.0 + spread)
    }

    /// [`RetryPolicy::delay`] with a random jitter.
    pub fn random_delay(&self, attempt: i32) -> Duration {
        self.delay(attempt, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescue_decisions_follow_after_failure() {
        let run = ExpiredRun {
            attempt: 1,
            max_attempts: 2,
            delivery: Delivery::AtLeastOnce,
            cancel_requested: false,
            expired_at: "T",
        };
        assert_eq!(rescue_decision(&run).state, JobState::Available);
        let last = ExpiredRun {
            attempt: 2,
            ..run.clone()
        };
        let decided = rescue_decision(&last);
        assert_eq!(decided.state, JobState::Discarded);
        assert!(
            decided.message.contains("last of 2 attempts"),
            "{decided:?}"
        );
        let once = ExpiredRun {
            delivery: Delivery::AtMostOnce,
            ..run.clone()
        };
        assert!(rescue_decision(&once).message.contains("at-most-once"));
        let cancel = ExpiredRun {
            cancel_requested: true,
            ..once
        };
        assert_eq!(rescue_decision(&cancel).state, JobState::Cancelled);
    }

    #[test]
    fn after_failure_cancels_discards_or_retries() {
        let policy = RetryPolicy::default();
        let run = FailedRun {
            attempt: 1,
            max_attempts: 3,
            delivery: Delivery::AtLeastOnce,
            interrupted: false,
            cancel_requested: false,
            error: "boom",
        };
        assert!(matches!(
            after_failure(&run, &policy),
            Outcome::Retry { .. }
        ));
        let last = FailedRun {
            attempt: 3,
            ..run.clone()
        };
        assert_eq!(
            after_failure(&last, &policy),
            Outcome::Discard {
                error: "boom".into()
            }
        );
        let once = FailedRun {
            delivery: Delivery::AtMostOnce,
            ..run.clone()
        };
        assert!(matches!(
            after_failure(&once, &policy),
            Outcome::Retry { .. }
        ));
        let cut = FailedRun {
            interrupted: true,
            ..once
        };
        assert!(matches!(
            after_failure(&cut, &policy),
            Outcome::Discard { .. }
        ));
        let cancel = FailedRun {
            cancel_requested: true,
            ..cut
        };
        assert!(matches!(
            after_failure(&cancel, &policy),
            Outcome::Cancelled { .. }
        ));
    }

    #[test]
    fn delay_doubles_and_caps() {
        let policy = RetryPolicy {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
            jitter: 0.0,
        };
        assert_eq!(policy.delay(1, 0.5), Duration::from_secs(2));
        assert_eq!(policy.delay(2, 0.5), Duration::from_secs(4));
        assert_eq!(policy.delay(5, 0.5), Duration::from_secs(32));
        assert_eq!(policy.delay(6, 0.5), Duration::from_secs(60));
        assert_eq!(policy.delay(500, 0.5), Duration::from_secs(60));
    }

    #[test]
    fn jitter_spreads_both_ways() {
        let policy = RetryPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(3600),
            jitter: 0.2,
        };
        assert_eq!(policy.delay(1, 0.0), Duration::from_secs(8));
        assert_eq!(policy.delay(1, 0.5), Duration::from_secs(10));
        assert!(policy.delay(1, 0.999) > Duration::from_millis(11_990));
    }
}
