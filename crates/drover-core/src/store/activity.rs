//! Params and answers of the [`Store`](super::Store) methods that keep a record of what the
//! cluster did: the runs of the retention policies, and jobs completed and failed per minute.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[allow(unused_imports)] // Named by the doc links.
use super::Store;

/// One run of a retention policy, as recorded by [`Store::retention_run_insert`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetentionRunRecord {
    /// The policy's name.
    pub policy: String,
    /// When the run began.
    pub started_at: Timestamp,
    /// When it ended (succeeded or failed).
    pub finished_at: Timestamp,
    /// Rows moved to the archive table (by the batches that committed, also when a later
    /// batch failed).
    pub rows_moved: u64,
    /// Why the run failed; `None` when it succeeded.
    pub error: Option<String>,
    /// What started it: `schedule` (the leader, on the policy's schedule or catching up when it
    /// became leader) or `manual` (`drover archive run`).
    pub trigger: String,
}

/// Params of [`Store::retention_run_insert`].
#[derive(Debug, Clone)]
pub struct RetentionRunInsertParams {
    /// The run.
    pub run: RetentionRunRecord,
    /// How many runs of its policy to keep, newest first (by start): older ones are deleted in
    /// the same transaction, so the table stays small however long the cluster runs.
    pub keep: usize,
}

/// Params of [`Store::retention_run_list`].
#[derive(Debug, Clone, Default)]
pub struct RetentionRunListParams {
    /// Only this policy's runs; `None` for every policy.
    pub policy: Option<String>,
    /// Most runs per policy, newest first.
    pub limit: usize,
}

/// One process's counts of one queue in one minute: a delta for
/// [`Store::throughput_add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThroughputCount {
    /// The minute (its first second; seconds and below are zero).
    pub minute: Timestamp,
    /// The queue.
    pub queue: String,
    /// Runs that completed.
    pub completed: u64,
    /// Attempts that ended in failure (retried or discarded).
    pub failed: u64,
}

/// Params of [`Store::throughput_add`].
#[derive(Debug, Clone)]
pub struct ThroughputAddParams {
    /// The process whose counts these are: its rows are written by it alone.
    pub process: String,
    /// Counts to add to what is stored (rows missing are created).
    pub counts: Vec<ThroughputCount>,
}

/// Params of [`Store::throughput_list`].
#[derive(Debug, Clone, Default)]
pub struct ThroughputListParams {
    /// Minutes from this one on.
    pub since: Timestamp,
    /// Only this queue; `None` sums every queue.
    pub queue: Option<String>,
}

/// Counts of one minute summed over every process (and every queue, unless one was asked
/// for), as answered by [`Store::throughput_list`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ThroughputMinute {
    /// The minute.
    pub minute: Timestamp,
    /// Runs that completed.
    pub completed: u64,
    /// Attempts that ended in failure.
    pub failed: u64,
}

/// Params of [`Store::throughput_prune`].
#[derive(Debug, Clone)]
pub struct ThroughputPruneParams {
    /// Minutes before this one are deleted.
    pub before: Timestamp,
}
