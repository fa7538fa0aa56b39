//! TEMP(dashboard): placeholder until the `data` branch lands; replaced by it at merge.

use jiff::Timestamp;
use serde::Serialize;

use super::Admin;
use crate::error::Error;

/// A minute's completed and failed jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ThroughputPoint {
    /// The minute.
    pub minute: Timestamp,
    /// Completed.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
}

/// A policy with its runs.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionView {
    /// Name.
    pub name: String,
    /// Table.
    pub table: String,
    /// Archive.
    pub archive_table: String,
    /// Age.
    pub age: String,
    /// Schedule.
    pub schedule: String,
    /// Next.
    pub next_run_at: Option<Timestamp>,
    /// Runs.
    pub runs: Vec<RetentionRunRecord>,
}

/// A run.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionRunRecord {
    /// Policy.
    pub policy: String,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Timestamp,
    /// Rows.
    pub rows_moved: u64,
    /// Error.
    pub error: Option<String>,
    /// Trigger.
    pub trigger: String,
}

impl Admin {
    /// Placeholder.
    pub async fn throughput(&self, minutes: u32) -> Result<Vec<ThroughputPoint>, Error> {
        let now = self.clock.now().as_second() / 60 * 60;
        Ok((0..minutes as i64)
            .rev()
            .map(|m| ThroughputPoint {
                minute: Timestamp::from_second(now - m * 60).unwrap_or_default(),
                completed: 0,
                failed: 0,
            })
            .collect())
    }

    /// Placeholder.
    pub async fn retention(&self) -> Result<Vec<RetentionView>, Error> {
        Ok(Vec::new())
    }
}
