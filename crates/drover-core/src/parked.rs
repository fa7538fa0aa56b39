//! Claims parked by idle workers of this process ([`crate::Store::job_claim_parked`]), for a
//! backend to make inside the transaction of the enqueue that gives them work.
//!
//! An idle worker's job otherwise costs two durable commits before it starts: the enqueue's,
//! then the worker's claim, and the second one is most of the enqueue→start latency. A backend
//! that makes a parked claim after the enqueue's inserts and before its `COMMIT` has the job
//! inserted and leased in one commit; the worker gets its jobs as soon as that commit returns.
//! This module is the list of waiting claims both backends share; the SQL is theirs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::{ClaimResult, JobClaimParams, JobOutcome, LeaseRef, Outcome, ParkedClaim, StoreError};
use tokio::sync::oneshot;

/// The outcomes that hand back the jobs of a claim made for a worker that had stopped waiting:
/// available again, their attempt not used. Both backends record them the same way.
pub fn hand_back_outcomes(unwanted: &ClaimResult) -> Vec<JobOutcome> {
    unwanted
        .jobs
        .iter()
        .map(|job| JobOutcome {
            lease: LeaseRef {
                id: job.id,
                lease_token: job.lease_token,
            },
            step: None,
            outcome: Outcome::HandBack {
                reason: "claimed for a worker that had stopped waiting; handed back".into(),
            },
        })
        .collect()
}

/// A parked claim, as the backend sees it.
pub struct Parked {
    id: u64,
    /// The claim to make.
    pub params: JobClaimParams,
    /// Where its result goes; a send that fails means the worker stopped waiting, and the
    /// backend must hand the jobs back.
    pub answer: oneshot::Sender<Result<ClaimResult, StoreError>>,
}

/// The claims waiting for an enqueue.
#[derive(Default)]
pub struct ParkedClaims {
    waiting: Mutex<Vec<Parked>>,
    /// Length of `waiting`, so that an enqueue with nobody parked takes no lock.
    count: AtomicUsize,
    next_id: AtomicU64,
}

impl ParkedClaims {
    /// Parks a claim until an enqueue takes it or it is withdrawn.
    pub fn park(self: &Arc<Self>, params: JobClaimParams) -> ParkedClaim {
        let (answer, receiver) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut waiting = self.lock();
            waiting.push(Parked { id, params, answer });
            self.count.store(waiting.len(), Ordering::Release);
        }
        let claims = Arc::clone(self);
        ParkedClaim::new(receiver, move || {
            let mut waiting = claims.lock();
            let before = waiting.len();
            waiting.retain(|parked| parked.id != id);
            claims.count.store(waiting.len(), Ordering::Release);
            waiting.len() < before
        })
    }

    /// Takes the first claim parked on `queue`, if any.
    pub fn take(&self, queue: &str) -> Option<Parked> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut waiting = self.lock();
        let index = waiting.iter().position(|p| p.params.queue == queue)?;
        let parked = waiting.remove(index);
        self.count.store(waiting.len(), Ordering::Release);
        Some(parked)
    }

    /// True when a claim is parked on `queue` (an enqueue into it should take it).
    pub fn waiting_on(&self, queue: &str) -> bool {
        self.count.load(Ordering::Acquire) > 0
            && self.lock().iter().any(|p| p.params.queue == queue)
    }

    /// Drops every parked claim: their waiters get [`StoreError::Closed`].
    pub fn clear(&self) {
        let mut waiting = self.lock();
        waiting.clear();
        self.count.store(0, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Parked>> {
        // A panic while holding this lock cannot leave the list half-changed.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
