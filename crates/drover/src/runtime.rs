//! State shared by the parts of a running engine: the jobs this process is running, and the
//! channel their outcomes go through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use drover_core::{Clock, DynStore, JobId, JobOutcome, LeaseRef};
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::config::EngineConfig;
use crate::guard::RunGuard;
use crate::hooks::Hooks;
use crate::stats::Counters;
use crate::task::RawTask;

/// Why a run's cancellation token fired. The first reason set wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum StopReason {
    None = 0,
    Operator = 1,
    Timeout = 2,
    Shutdown = 3,
    LeaseLost = 4,
}

impl StopReason {
    fn from_u8(value: u8) -> StopReason {
        match value {
            1 => StopReason::Operator,
            2 => StopReason::Timeout,
            3 => StopReason::Shutdown,
            4 => StopReason::LeaseLost,
            _ => StopReason::None,
        }
    }
}

/// A run in progress, from its claim until its outcome is recorded.
pub(crate) struct RunningJob {
    pub(crate) lease: LeaseRef,
    pub(crate) cancel: CancellationToken,
    pub(crate) reason: Arc<AtomicU8>,
    pub(crate) step: Arc<Mutex<Option<String>>>,
    pub(crate) abort: Option<AbortHandle>,
    /// Set when the handler has ended and the outcome is on its way to the store.
    pub(crate) done: Arc<AtomicBool>,
    /// When it was claimed: a run's duration in the metrics is from here to its outcome.
    pub(crate) claimed_at: std::time::Instant,
    /// Dead once no task owns the run: its lease is then no longer renewed.
    pub(crate) owner: std::sync::Weak<()>,
}

impl RunningJob {
    /// Asks the run to stop for `reason` (kept only if no reason was set before).
    pub(crate) fn stop(&self, reason: StopReason) {
        let _ = self.reason.compare_exchange(
            StopReason::None as u8,
            reason as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.cancel.cancel();
    }
}

pub(crate) fn stop_reason(reason: &AtomicU8) -> StopReason {
    StopReason::from_u8(reason.load(Ordering::Acquire))
}

/// The parts of a registered run that its executor uses.
pub(crate) struct RunHandles {
    pub(crate) cancel: CancellationToken,
    pub(crate) reason: Arc<AtomicU8>,
    pub(crate) step: Arc<Mutex<Option<String>>>,
    pub(crate) done: Arc<AtomicBool>,
    pub(crate) guard: RunGuard,
}

/// Outcomes waiting for the completer, at most.
pub(crate) const OUTCOME_QUEUE: usize = 4096;

/// An outcome on its way to the store, with what the hooks need.
pub(crate) struct Finished {
    pub(crate) outcome: JobOutcome,
    pub(crate) kind: String,
    pub(crate) queue: String,
    pub(crate) attempt: i32,
    /// Ownership of the run (see [`crate::guard`]), held until its outcome is settled.
    pub(crate) _owner: Arc<()>,
}

pub(crate) struct Shared {
    pub(crate) store: DynStore,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: EngineConfig,
    pub(crate) tasks: HashMap<String, Arc<dyn RawTask>>,
    pub(crate) hooks: Arc<Hooks>,
    pub(crate) process_id: String,
    pub(crate) running: Mutex<HashMap<JobId, RunningJob>>,
    /// Bounded ([`OUTCOME_QUEUE`]): when the completer falls behind, executors wait to send,
    /// their slots stay busy, and claiming slows down.
    pub(crate) outcomes: mpsc::Sender<Finished>,
    /// Claims for the completer to make beside the outcomes it records.
    pub(crate) claims: crate::completer::ClaimDesk,
    pub(crate) counters: Counters,
    /// Notified whenever a run's outcome has been recorded (or abandoned).
    pub(crate) settled: Notify,
    /// Last successful tick of each background service.
    pub(crate) health: crate::health::Health,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Fired when a background loop stopped unasked ([`crate::supervise`]).
    pub(crate) failed: CancellationToken,
    /// The first loop that failed, and how.
    pub(crate) failure: Mutex<Option<String>>,
    /// A loop gave up on the store ([`crate::supervise::Persistence`]): what runs now cannot
    /// record its outcome.
    pub(crate) store_gave_up: std::sync::atomic::AtomicBool,
    /// The cron schedules this process fires while it leads, as its presence row lists them.
    pub(crate) cron: Vec<drover_core::CronSignature>,
}

impl Shared {
    /// Registers a claimed job from the moment of its claim: from then on its lease is renewed
    /// and cancel requests reach it, whether it runs at once or waits in the foreman's buffer.
    pub(crate) fn register(&self, job: &drover_core::ClaimedJob) -> RunHandles {
        let step = Arc::new(Mutex::new(None));
        let handles = RunHandles {
            cancel: CancellationToken::new(),
            reason: Arc::new(AtomicU8::new(StopReason::None as u8)),
            guard: RunGuard::new(self.outcomes.clone(), job, step.clone()),
            step,
            done: Arc::new(AtomicBool::new(false)),
        };
        self.running.lock().expect("running lock poisoned").insert(
            job.id,
            RunningJob {
                lease: LeaseRef {
                    id: job.id,
                    lease_token: job.lease_token,
                },
                cancel: handles.cancel.clone(),
                reason: handles.reason.clone(),
                step: handles.step.clone(),
                abort: None,
                done: handles.done.clone(),
                claimed_at: std::time::Instant::now(),
                owner: handles.guard.owner(),
            },
        );
        self.metrics
            .waited(&job.queue, &job.kind, job.created_at, self.clock.now());
        handles
    }

    pub(crate) fn running_count(&self) -> usize {
        self.running.lock().expect("running lock poisoned").len()
    }

    /// Stops every running job for `reason`; returns how many there were.
    pub(crate) fn stop_all(&self, reason: StopReason) -> usize {
        let running = self.running.lock().expect("running lock poisoned");
        for job in running.values() {
            job.stop(reason);
        }
        running.len()
    }

    /// Aborts the handler tasks of every running job (they ignored their cancellation).
    pub(crate) fn abort_all(&self) {
        let running = self.running.lock().expect("running lock poisoned");
        for job in running.values() {
            job.stop(StopReason::Shutdown);
            if let Some(abort) = &job.abort {
                abort.abort();
            }
        }
    }
}
