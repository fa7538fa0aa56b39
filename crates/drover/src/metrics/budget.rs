//! A ceiling on the (queue, kind) pairs that get series of their own.
//!
//! Queues and kinds come from whoever enqueues. A client that names kinds after its users
//! (`report.user-123`) would otherwise add some sixty series per kind (counters, two
//! histograms of 25 buckets) to every scrape, without end. Beyond the ceiling, jobs are
//! counted under `queue="(other)", kind="(other)"`, and the process warns once.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::JobLabels;

/// The most (queue, kind) pairs with series of their own, by default.
pub const MAX_LABELED_PAIRS: usize = 1_000;

/// The label value of every pair beyond the ceiling.
pub const OTHER: &str = "(other)";

/// The pairs admitted so far.
#[derive(Debug)]
pub(super) struct LabelBudget {
    max: usize,
    /// Kinds by queue: looked up without allocating.
    admitted: RwLock<HashMap<String, HashSet<String>>>,
    /// How many pairs `admitted` holds, read without its lock: once full, a job of a pair
    /// beyond (asked for on every job of it, since no family has its series) takes no write
    /// lock.
    count: AtomicUsize,
    warned: AtomicBool,
}

impl LabelBudget {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            admitted: RwLock::default(),
            count: Default::default(),
            warned: AtomicBool::new(false),
        }
    }

    /// The labels of a job of `kind` in `queue`: its own while the ceiling allows.
    pub(super) fn labels(&self, queue: &str, kind: &str) -> JobLabels {
        let known = self
            .admitted
            .read()
            .expect("metrics lock poisoned")
            .get(queue)
            .is_some_and(|kinds| kinds.contains(kind));
        if known || (!self.full(queue, kind) && self.admit(queue, kind)) {
            return JobLabels {
                queue: queue.into(),
                kind: kind.into(),
            };
        }
        JobLabels {
            queue: OTHER.into(),
            kind: OTHER.into(),
        }
    }

    /// Whether the ceiling is reached (warning once when it is).
    fn full(&self, queue: &str, kind: &str) -> bool {
        let full = self.count.load(Ordering::Relaxed) >= self.max;
        if full && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit = self.max,
                queue,
                kind,
                "more (queue, kind) pairs than the metrics keep apart: jobs of the new ones are \
                 counted under queue and kind \"(other)\""
            );
        }
        full
    }

    /// Admits a new pair if the ceiling allows; false when it does not.
    fn admit(&self, queue: &str, kind: &str) -> bool {
        let mut admitted = self.admitted.write().expect("metrics lock poisoned");
        if admitted
            .get(queue)
            .is_some_and(|kinds| kinds.contains(kind))
        {
            return true;
        }
        // Another thread may have filled it since `full` looked.
        if self.full(queue, kind) {
            return false;
        }
        admitted
            .entry(queue.to_owned())
            .or_default()
            .insert(kind.to_owned());
        self.count.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_beyond_the_ceiling_share_one_label() {
        let budget = LabelBudget::new(2);
        let a = budget.labels("q", "a");
        assert_eq!((a.queue.as_str(), a.kind.as_str()), ("q", "a"));
        assert_eq!(budget.labels("r", "a").queue, "r");
        let third = budget.labels("q", "b");
        assert_eq!((third.queue.as_str(), third.kind.as_str()), (OTHER, OTHER));
        // Those admitted keep their own labels.
        assert_eq!(budget.labels("q", "a").kind, "a");
    }
}
