//! Jobs completed and failed per minute, cluster-wide.
//!
//! Each process counts its outcomes in memory and adds them to its own rows with its presence
//! heartbeat (every 5 s), so this view lags by up to that much, and reads a few hundred small
//! rows whatever the job volume.

use drover_core::{ThroughputListParams, ValidationError};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::Admin;
use crate::error::Error;
use crate::metrics::throughput::minute_of;

/// Most minutes one call may ask for: a day (the leader prunes older rows).
pub const MAX_MINUTES: u32 = 1440;

/// Outcomes of one minute, summed over every process and queue of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThroughputPoint {
    /// The minute (its first second).
    pub minute: Timestamp,
    /// Runs that completed in it.
    pub completed: u64,
    /// Attempts that ended in failure in it (retried or discarded).
    pub failed: u64,
}

impl Admin {
    /// The last `minutes` minutes (1..=1440), oldest first, one point per minute including the
    /// current one, zero-filled, summed over every process and queue of the cluster.
    pub async fn throughput(&self, minutes: u32) -> Result<Vec<ThroughputPoint>, Error> {
        if !(1..=MAX_MINUTES).contains(&minutes) {
            return Err(Error::Invalid(ValidationError::Range {
                field: "minutes",
                reason: format!("{minutes} is not between 1 and {MAX_MINUTES}"),
            }));
        }
        let current = minute_of(self.clock.now());
        let since = current - SignedDuration::from_mins(i64::from(minutes - 1));
        let stored = self
            .store()
            .throughput_list(ThroughputListParams { since, queue: None })
            .await?;
        Ok(zero_filled(since, minutes, &stored))
    }
}

/// One point per minute from `since`, `minutes` of them, with the stored counts where there
/// are some (rows past the last minute, from a process whose clock runs ahead, are left out).
fn zero_filled(
    since: Timestamp,
    minutes: u32,
    stored: &[drover_core::ThroughputMinute],
) -> Vec<ThroughputPoint> {
    let mut stored = stored.iter().peekable();
    (0..i64::from(minutes))
        .map(|i| {
            let minute = since + SignedDuration::from_mins(i);
            let mut point = ThroughputPoint {
                minute,
                completed: 0,
                failed: 0,
            };
            while let Some(row) = stored.next_if(|row| row.minute <= minute) {
                if row.minute == minute {
                    point.completed += row.completed;
                    point.failed += row.failed;
                }
            }
            point
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::ThroughputMinute;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn every_minute_is_present_and_stored_counts_land_on_theirs() {
        let since = ts("2030-01-01T00:00:00Z");
        let stored = [
            ThroughputMinute {
                minute: ts("2030-01-01T00:01:00Z"),
                completed: 5,
                failed: 1,
            },
            ThroughputMinute {
                minute: ts("2030-01-01T00:03:00Z"),
                completed: 2,
                failed: 0,
            },
            // Past the window (a clock running ahead): left out.
            ThroughputMinute {
                minute: ts("2030-01-01T00:09:00Z"),
                completed: 9,
                failed: 9,
            },
        ];
        let points = zero_filled(since, 4, &stored);
        let counts: Vec<(u64, u64)> = points.iter().map(|p| (p.completed, p.failed)).collect();
        assert_eq!(counts, vec![(0, 0), (5, 1), (0, 0), (2, 0)]);
        assert_eq!(points[3].minute, ts("2030-01-01T00:03:00Z"));
    }
}
