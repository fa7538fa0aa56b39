//! The retention policies: what each moves, when it runs next, and its recent runs.

use drover_core::{RetentionRunListParams, RetentionRunRecord};
use serde::Serialize;

use super::Admin;
use crate::error::Error;
use crate::retention::{Keep, RetentionPolicy};

/// Runs shown per policy, newest first.
pub const RUNS_SHOWN: usize = 10;

/// A retention policy as an operator sees it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetentionView {
    /// The policy's name (`drover_jobs` for the built-in `[jobs_archive]`).
    pub name: String,
    /// The hot table.
    pub table: String,
    /// The table its rows move to.
    pub archive_table: String,
    /// How long rows stay: `13 months`, `7 days`.
    pub age: String,
    /// When the leader runs it (cron expression, UTC).
    pub schedule: String,
    /// Its next scheduled run.
    pub next_run_at: Option<jiff::Timestamp>,
    /// Its recent runs, newest first, at most [`RUNS_SHOWN`].
    pub runs: Vec<RetentionRunRecord>,
}

/// `13 months`, `1 month`, `7 days`.
pub(crate) fn age_text(keep: Keep) -> String {
    let (n, unit) = match keep {
        Keep::Months(n) => (n, "month"),
        Keep::Days(n) => (n, "day"),
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

impl Admin {
    /// Each configured retention policy (in the configuration's order), its next run and its
    /// last [`RUNS_SHOWN`] runs, as every process that ran it recorded them.
    pub async fn retention(&self) -> Result<Vec<RetentionView>, Error> {
        if self.retention.is_empty() {
            return Ok(Vec::new());
        }
        let runs = self
            .store()
            .retention_run_list(RetentionRunListParams {
                policy: None,
                limit: RUNS_SHOWN,
            })
            .await?;
        let now = self.clock.now();
        self.retention
            .iter()
            .map(|policy: &RetentionPolicy| {
                let schedule = crate::retention::check(policy)?;
                let mine = runs
                    .iter()
                    .filter(|run| run.policy == policy.name)
                    .cloned()
                    .collect();
                Ok(RetentionView {
                    name: policy.name.clone(),
                    table: policy.table.clone(),
                    archive_table: policy.archive_table.clone(),
                    age: age_text(policy.keep),
                    schedule: policy.schedule.clone(),
                    next_run_at: schedule.next_after(now),
                    runs: mine,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_a_person_writes_them() {
        assert_eq!(age_text(Keep::Months(13)), "13 months");
        assert_eq!(age_text(Keep::Months(1)), "1 month");
        assert_eq!(age_text(Keep::Days(7)), "7 days");
        assert_eq!(age_text(Keep::Days(1)), "1 day");
    }
}
