//! Outcomes per minute and queue, counted in memory where outcomes are recorded and flushed to
//! the store with the presence heartbeat (`services::presence`).
//!
//! The hot path only bumps two numbers in a small map: no database write per outcome, and no
//! row shared between processes (each flush adds to the process's own rows). A flush takes the
//! counts; a failed one puts them back, so nothing is lost while the database is away. (A flush
//! whose commit succeeded but whose answer was lost counts twice: a figure for a chart, not a
//! ledger.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use drover_core::{Outcome, ThroughputCount};
use jiff::{SignedDuration, Timestamp};

/// Counts older than this are dropped when put back after a failed flush: the leader prunes
/// them from the database at that age anyway, and a long outage must not grow memory forever.
const KEEP: SignedDuration = SignedDuration::from_hours(24);

/// Counts of one queue per minute: (completed, failed).
type Minutes = BTreeMap<Timestamp, (u64, u64)>;

/// The counts of one process, not yet flushed.
#[derive(Debug, Default)]
pub struct Throughput {
    /// Per queue (looked up by `&str`: no allocation per outcome), per minute: (completed,
    /// failed).
    counts: Mutex<HashMap<String, Minutes>>,
}

/// The start of the minute `at` falls in.
pub fn minute_of(at: Timestamp) -> Timestamp {
    let second = at.as_second().div_euclid(60) * 60;
    Timestamp::from_second(second).unwrap_or(at)
}

impl Throughput {
    /// Counts one recorded outcome of `queue` at `at`: completions, and failures (retried or
    /// discarded). Cancellations and hand-backs are neither.
    pub fn record(&self, queue: &str, outcome: &Outcome, at: Timestamp) {
        let (completed, failed) = match outcome {
            Outcome::Completed => (1, 0),
            Outcome::Retry { .. } | Outcome::Discard { .. } => (0, 1),
            Outcome::Cancelled { .. } | Outcome::HandBack { .. } => return,
        };
        let minute = minute_of(at);
        let mut counts = self.counts.lock().expect("throughput lock poisoned");
        let minutes = match counts.get_mut(queue) {
            Some(minutes) => minutes,
            None => counts.entry(queue.to_owned()).or_default(),
        };
        let entry = minutes.entry(minute).or_default();
        entry.0 += completed;
        entry.1 += failed;
    }

    /// Takes every count for a flush, leaving none.
    pub fn take(&self) -> Vec<ThroughputCount> {
        let counts = std::mem::take(&mut *self.counts.lock().expect("throughput lock poisoned"));
        let mut out: Vec<ThroughputCount> = counts
            .into_iter()
            .flat_map(|(queue, minutes)| {
                minutes
                    .into_iter()
                    .map(move |(minute, (completed, failed))| ThroughputCount {
                        minute,
                        queue: queue.clone(),
                        completed,
                        failed,
                    })
            })
            .collect();
        out.sort_by(|a, b| (a.minute, &a.queue).cmp(&(b.minute, &b.queue)));
        out
    }

    /// Puts back counts whose flush failed, for the next one (dropping those older than a day
    /// before `now`).
    pub fn restore(&self, taken: Vec<ThroughputCount>, now: Timestamp) {
        let oldest = now - KEEP;
        let mut counts = self.counts.lock().expect("throughput lock poisoned");
        for count in taken.into_iter().filter(|c| c.minute >= oldest) {
            let entry = counts
                .entry(count.queue)
                .or_default()
                .entry(count.minute)
                .or_default();
            entry.0 += count.completed;
            entry.1 += count.failed;
        }
    }

    /// True when nothing waits for a flush.
    pub fn is_empty(&self) -> bool {
        self.counts
            .lock()
            .expect("throughput lock poisoned")
            .is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn outcomes_count_per_minute_and_queue_and_survive_a_failed_flush() {
        let t = Throughput::default();
        let fail = Outcome::Retry {
            error: "x".into(),
            delay: std::time::Duration::ZERO,
        };
        t.record("a", &Outcome::Completed, ts("2030-01-01T00:00:59.9Z"));
        t.record("a", &Outcome::Completed, ts("2030-01-01T00:00:00Z"));
        t.record("a", &fail, ts("2030-01-01T00:01:00Z"));
        t.record(
            "b",
            &Outcome::Discard { error: "x".into() },
            ts("2030-01-01T00:00:10Z"),
        );
        t.record(
            "b",
            &Outcome::Cancelled { error: None },
            ts("2030-01-01T00:00:10Z"),
        );
        t.record(
            "b",
            &Outcome::HandBack { reason: "x".into() },
            ts("2030-01-01T00:00:10Z"),
        );
        let taken = t.take();
        let row = |m: &str, q: &str, c, f| ThroughputCount {
            minute: ts(m),
            queue: q.into(),
            completed: c,
            failed: f,
        };
        assert_eq!(
            taken,
            vec![
                row("2030-01-01T00:00:00Z", "a", 2, 0),
                row("2030-01-01T00:00:00Z", "b", 0, 1),
                row("2030-01-01T00:01:00Z", "a", 0, 1),
            ]
        );
        assert!(t.is_empty());
        // A failed flush puts them back, added to what came in meanwhile; a day-old count goes.
        t.record("a", &Outcome::Completed, ts("2030-01-01T00:01:30Z"));
        let mut back = taken.clone();
        back.push(row("2029-12-30T00:00:00Z", "a", 5, 5));
        t.restore(back, ts("2030-01-01T00:02:00Z"));
        let again = t.take();
        assert_eq!(again.len(), 3);
        assert_eq!(again[2], row("2030-01-01T00:01:00Z", "a", 1, 1));
    }

    #[test]
    fn minutes_floor_before_the_epoch_too() {
        assert_eq!(
            minute_of(ts("1969-12-31T23:59:30Z")),
            ts("1969-12-31T23:59:00Z")
        );
    }
}
