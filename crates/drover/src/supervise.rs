//! Supervision of the engine's background loops: a loop that ends before it was asked to stop,
//! or panics, is logged as an error, marked failed in [`crate::health`], and fails the engine
//! ([`crate::EngineHandle::failure`]), so that the process shuts down gracefully and exits
//! non-zero instead of running half-alive — claiming jobs whose leases nobody renews, say.
//!
//! A loop may also give up ([`Persistence`]): when every call it made for
//! [`GIVE_UP_AFTER`] failed with an error that retrying does not fix — the jobs table was
//! dropped, the database file replaced by an empty one — the process is not working, and
//! saying so (exit status 4 from `drover worker`) beats logging the same error forever.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_core::StoreError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::runtime::Shared;

/// How long a loop keeps calling the store while every call fails with an error that retrying
/// does not fix, before it gives up.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// What a loop's future returns: `()` for a loop that ends only when stopped, or
/// `Result<(), String>` for one that may give up (`Err` says why).
pub(crate) trait LoopEnd {
    /// Why the loop gave up, if it did.
    fn gave_up(self) -> Option<String>;
}

impl LoopEnd for () {
    fn gave_up(self) -> Option<String> {
        None
    }
}

impl LoopEnd for Result<(), String> {
    fn gave_up(self) -> Option<String> {
        self.err()
    }
}

/// Tells a passing fault from a lasting one, for a loop that calls the store on a timer.
/// Transient errors ([`StoreError::is_transient`]: a lost connection, a locked database) never
/// make a loop give up — a server restart must not take the workers down — and they end a
/// streak: the database said something that may pass.
#[derive(Debug, Default)]
pub(crate) struct Persistence {
    /// The first failure of the current streak, and how many calls failed since.
    streak: Option<(Instant, u32)>,
}

impl Persistence {
    /// Records a successful call.
    pub(crate) fn ok(&mut self) {
        self.streak = None;
    }

    /// Records a failed call; `Err` (why) when the loop should give up: at least three calls
    /// in a row over [`GIVE_UP_AFTER`] failed with errors that retrying does not fix.
    pub(crate) fn failed(&mut self, err: &StoreError) -> Result<(), String> {
        self.failed_at(err, Instant::now())
    }

    fn failed_at(&mut self, err: &StoreError, now: Instant) -> Result<(), String> {
        if err.is_transient() {
            self.streak = None;
            return Ok(());
        }
        let (since, failures) = self.streak.get_or_insert((now, 0));
        *failures += 1;
        let lasted = now.saturating_duration_since(*since);
        if *failures >= 3 && lasted >= GIVE_UP_AFTER {
            return Err(format!(
                "every call for {}s failed with an error that retrying does not fix; the last: {err}",
                lasted.as_secs()
            ));
        }
        Ok(())
    }
}

/// Spawns `run` as the loop `name`, which is expected to end only once `stop` fired (or when
/// it gives up, see [`LoopEnd`]).
pub(crate) fn spawn<E: LoopEnd + Send + 'static>(
    shared: &Arc<Shared>,
    name: String,
    stop: CancellationToken,
    run: impl Future<Output = E> + Send + 'static,
) -> JoinHandle<()> {
    let inner = tokio::spawn(run);
    let shared = shared.clone();
    tokio::spawn(async move {
        // Aborting the supervisor aborts the loop too.
        let _abort = AbortOnDrop(inner.abort_handle());
        let ended = inner.await;
        let why = match ended {
            Ok(_) if stop.is_cancelled() => return,
            Ok(end) => match end.gave_up() {
                Some(why) => {
                    shared
                        .store_gave_up
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    format!("gave up: {why}")
                }
                None => "ended on its own".to_owned(),
            },
            Err(err) if err.is_panic() => format!("panicked: {}", panic_text(err.into_panic())),
            Err(_) => "was aborted".to_owned(),
        };
        tracing::error!(background_loop = %name, reason = %why,
            "a background loop stopped; the engine is shutting down");
        shared.health.failed(&name, why.clone());
        let mut failure = shared.failure.lock().expect("failure lock poisoned");
        failure.get_or_insert_with(|| format!("{name} {why}"));
        shared.failed.cancel();
    })
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_gives_up_only_on_lasting_errors_that_retrying_does_not_fix() {
        let gone = StoreError::Internal("no such table: drover_jobs".into());
        let down = StoreError::Unavailable("connection refused".into());
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut p = Persistence::default();
        // A server that stays down never makes a loop give up.
        for s in 0..60 {
            assert!(p.failed_at(&down, at(s)).is_ok());
        }
        // A streak broken by a success, or by a transient error, starts over.
        for s in 60..69 {
            assert!(p.failed_at(&gone, at(s)).is_ok());
        }
        p.ok();
        for s in 69..78 {
            assert!(p.failed_at(&gone, at(s)).is_ok());
        }
        assert!(p.failed_at(&down, at(78)).is_ok());
        // Lasting: given up once every call failed for GIVE_UP_AFTER.
        let start = 79;
        let limit = GIVE_UP_AFTER.as_secs();
        for s in start..start + limit {
            assert!(p.failed_at(&gone, at(s)).is_ok(), "gave up early at {s}");
        }
        let why = p.failed_at(&gone, at(start + limit)).expect_err("gives up");
        assert!(why.contains("no such table"), "{why}");
        // Two calls far apart are not enough.
        let mut p = Persistence::default();
        assert!(p.failed_at(&gone, at(0)).is_ok());
        assert!(p.failed_at(&gone, at(100)).is_ok());
        assert!(p.failed_at(&gone, at(101)).is_err());
    }
}
