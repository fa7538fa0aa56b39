//! Counters of what this process's engine did, for logs, `drover stats` and metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) claimed: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) handed_back: AtomicU64,
    pub(crate) stale_rejected: AtomicU64,
    pub(crate) rescued: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> EngineStats {
        EngineStats {
            claimed: self.claimed.load(Relaxed),
            completed: self.completed.load(Relaxed),
            retried: self.retried.load(Relaxed),
            discarded: self.discarded.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            handed_back: self.handed_back.load(Relaxed),
            stale_rejected: self.stale_rejected.load(Relaxed),
            rescued: self.rescued.load(Relaxed),
        }
    }
}

/// What this engine did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Jobs claimed.
    pub claimed: u64,
    /// Runs recorded as completed.
    pub completed: u64,
    /// Failed attempts recorded as retryable.
    pub retried: u64,
    /// Runs recorded as discarded.
    pub discarded: u64,
    /// Runs recorded as cancelled.
    pub cancelled: u64,
    /// Runs handed back unstarted: at shutdown, or from a buffer whose slots stayed busy.
    pub handed_back: u64,
    /// Outcomes refused because the run had lost its lease (a late write from a stalled run).
    pub stale_rejected: u64,
    /// Expired leases rescued by this process.
    pub rescued: u64,
}
