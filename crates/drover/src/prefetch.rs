//! How many jobs a foreman claims beyond its free slots.
//!
//! Every claim is a durable commit, so a pool of ten workers on short jobs that claims only for
//! free slots gets at most ten jobs per commit, and the commit rate caps its throughput. A local
//! buffer of claimed-but-not-started jobs lets claims come in larger batches. A buffered job is
//! held by this process, though: no other process can run it, and if this one dies it waits for
//! its lease to expire. So the buffer only holds what the workers will start soon: about
//! [`HORIZON`] of work at the recent pace, measured as an exponentially weighted average of how
//! long a job holds its slot. Jobs of a few microseconds are claimed hundreds at a time; jobs of
//! a second or more are claimed only for free slots, which spreads them over every process.
//!
//! The pace is learned from finished jobs only, so a pool that has finished nothing yet claims
//! for its free slots alone, and a job that runs long after a run of short ones leaves at most
//! the configured maximum waiting behind it (their leases renewed by heartbeats). The foreman
//! hands those back for other processes once they have waited a second with every slot busy,
//! and records each wait as a sample here, which shrinks the buffer ([`crate::foreman`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How much work, at the recent pace, the buffer holds.
pub(crate) const HORIZON: Duration = Duration::from_millis(25);

/// The default maximum buffer, per slot of the queue's concurrency. A foreman claims once half
/// a batch (slots and buffer) is free, so this sets the size of a claim on a backlog of short
/// jobs: with ten workers 100 drained faster than 50 in every one of six rounds on PostgreSQL
/// (median 7.5 %) and in three of four on SQLite (2026-12-05, builds alternated); 200, with a
/// cap of 2,000, gained nothing more in one comparison.
const AUTO_PER_SLOT: usize = 100;

/// The default maximum buffer, whatever the concurrency.
const AUTO_CAP: usize = 1_000;

/// The most jobs a foreman with `concurrency` slots may hold in its buffer, given the
/// `prefetch` setting (`None`: automatic).
pub(crate) fn max_buffer(setting: Option<usize>, concurrency: usize) -> usize {
    setting.unwrap_or_else(|| (concurrency * AUTO_PER_SLOT).min(AUTO_CAP))
}

/// The recent time a job holds its slot, shared by a foreman and its executors.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    /// Weighted average in nanoseconds; 0 until a job has finished.
    average_nanos: AtomicU64,
}

impl Pace {
    /// Records that a job held its slot for `held`.
    pub(crate) fn record(&self, held: Duration) {
        let sample = u64::try_from(held.as_nanos()).unwrap_or(u64::MAX).max(1);
        // Racing updates may lose a sample; the average does not need to be exact.
        let old = self.average_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            // Weight 1/8: a change of pace shows within a few dozen jobs.
            old - old / 8 + sample / 8
        };
        self.average_nanos.store(new.max(1), Ordering::Relaxed);
    }

    /// Jobs to keep in the buffer: what `concurrency` workers start within [`HORIZON`] at the
    /// recent pace, at most `max`.
    pub(crate) fn buffer_target(&self, concurrency: usize, max: usize) -> usize {
        let average = self.average_nanos.load(Ordering::Relaxed);
        if average == 0 || max == 0 {
            return 0;
        }
        let jobs = HORIZON.as_nanos() * concurrency as u128 / u128::from(average);
        usize::try_from(jobs).unwrap_or(usize::MAX).min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_buffered_before_a_job_has_finished() {
        assert_eq!(Pace::default().buffer_target(10, 100), 0);
    }

    #[test]
    fn short_jobs_fill_the_buffer_up_to_its_maximum() {
        let pace = Pace::default();
        for _ in 0..50 {
            pace.record(Duration::from_micros(20));
        }
        assert_eq!(pace.buffer_target(10, 100), 100);
        assert_eq!(pace.buffer_target(10, 0), 0);
    }

    #[test]
    fn slow_jobs_are_claimed_only_for_free_slots() {
        let pace = Pace::default();
        for _ in 0..50 {
            pace.record(Duration::from_secs(1));
        }
        assert_eq!(pace.buffer_target(10, 100), 0);
    }

    #[test]
    fn the_buffer_follows_a_change_of_pace() {
        let pace = Pace::default();
        for _ in 0..50 {
            pace.record(Duration::from_micros(20));
        }
        for _ in 0..60 {
            pace.record(Duration::from_millis(50));
        }
        // 10 slots, 50 ms a job: 25 ms of work is five jobs.
        let target = pace.buffer_target(10, 100);
        assert!((4..=6).contains(&target), "target {target}");
    }

    #[test]
    fn the_automatic_maximum_scales_with_concurrency_up_to_a_cap() {
        assert_eq!(max_buffer(None, 10), 1_000);
        assert_eq!(max_buffer(None, 4), 400);
        assert_eq!(max_buffer(None, 500), 1_000);
        assert_eq!(max_buffer(Some(0), 10), 0);
        assert_eq!(max_buffer(Some(7), 10), 7);
    }
}
