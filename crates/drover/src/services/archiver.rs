//! The retention archiver (leader-only): runs each policy on its schedule, and, when this
//! process becomes leader, at once a policy whose scheduled run was missed (no leader then).
//! A policy that never ran waits for its schedule: `0 2 * * *` was chosen for the night, and
//! a run at every deploy or leader change would move rows at the busiest time instead. Each batch is one transaction; a crash at
//! any point leaves every row in exactly one of the two tables, and the next run continues.
//! Every run is recorded in the store (`drover_retention_runs`), failed ones with their error.

use std::sync::Arc;
use std::time::Duration;

use drover_core::{LeaderTerm, RetentionRunListParams, RetentionRunRecord};
use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderService;
use crate::retention::{PreparedPolicy, Trigger};
use crate::runtime::Shared;

pub(crate) struct Archiver {
    pub(crate) shared: Arc<Shared>,
    pub(crate) policies: Vec<PreparedPolicy>,
}

impl Archiver {
    async fn run_policy(&self, policy: &PreparedPolicy, stop: &CancellationToken) {
        let run = policy.run_recorded(
            &self.shared.store,
            self.shared.clock.as_ref(),
            Trigger::Schedule,
            |_| {},
        );
        tokio::select! {
            _ = stop.cancelled() => {}
            result = run => match result {
                Ok(0) => self.shared.health.ok("retention archiver"),
                Ok(moved) => {
                    self.shared.health.ok("retention archiver");
                    tracing::info!(policy = %policy.policy.name, rows = moved, "archived rows");
                }
                Err(err) => tracing::warn!(policy = %policy.policy.name, error = %err, "retention run failed; it resumes at its next run"),
            }
        }
    }
}

impl Archiver {
    /// Whether a scheduled run of `policy` fell due since its last successful run (a failed
    /// one is tried again). When the runs cannot be read, or the recent ones all failed, yes:
    /// a run too many moves nothing twice.
    async fn missed_a_run(&self, policy: &PreparedPolicy) -> bool {
        let runs = self
            .shared
            .store
            .retention_run_list(RetentionRunListParams {
                policy: Some(policy.policy.name.clone()),
                limit: 10,
            })
            .await;
        match runs {
            Ok(runs) => missed(policy, &runs, self.shared.clock.now()),
            Err(_) => true,
        }
    }
}

/// Whether a scheduled time of `policy` passed between its last successful run among `runs`
/// (newest first) and `now`. A policy that never ran waits for its first; one whose recent
/// runs all failed is due.
fn missed(policy: &PreparedPolicy, runs: &[RetentionRunRecord], now: Timestamp) -> bool {
    if runs.is_empty() {
        return false;
    }
    let Some(last) = runs.iter().find(|run| run.error.is_none()) else {
        return true;
    };
    policy
        .schedule
        .next_after(last.started_at)
        .is_some_and(|due| due <= now)
}

#[async_trait::async_trait]
impl LeaderService for Archiver {
    fn name(&self) -> &'static str {
        "retention archiver"
    }

    async fn run(self: Arc<Self>, _term: LeaderTerm, stop: CancellationToken) {
        if self.policies.is_empty() {
            stop.cancelled().await;
            return;
        }
        for policy in &self.policies {
            if self.missed_a_run(policy).await {
                self.run_policy(policy, &stop).await;
            }
        }
        loop {
            let now = self.shared.clock.now();
            let next: Vec<_> = self
                .policies
                .iter()
                .map(|p| p.schedule.next_after(now))
                .collect();
            let Some(earliest) = next.iter().flatten().min().copied() else {
                stop.cancelled().await;
                return;
            };
            let wait = Duration::try_from(earliest.duration_since(now)).unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait.min(Duration::from_secs(60))) => {}
            }
            if self.shared.clock.now() < earliest {
                continue;
            }
            for (policy, due) in self.policies.iter().zip(next) {
                if due == Some(earliest) {
                    self.run_policy(policy, &stop).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::RetentionPolicy;

    #[test]
    fn only_a_missed_scheduled_run_is_caught_up() {
        let policy = PreparedPolicy {
            schedule: crate::retention::check(&RetentionPolicy {
                schedule: "0 2 * * *".into(),
                ..RetentionPolicy::finished_jobs()
            })
            .unwrap(),
            policy: RetentionPolicy::finished_jobs(),
            columns: Vec::new(),
        };
        let at = |text: &str| text.parse::<Timestamp>().unwrap();
        let run = |started: &str, error: Option<&str>| RetentionRunRecord {
            policy: "drover_jobs".into(),
            started_at: at(started),
            finished_at: at(started),
            rows_moved: 0,
            error: error.map(str::to_owned),
            trigger: "schedule".into(),
        };
        let now = at("2026-12-05T15:00:00Z");
        // Never ran: its first run is tonight's, not now.
        assert!(!missed(&policy, &[], now));
        // Ran at 02:00 today: nothing missed.
        assert!(!missed(&policy, &[run("2026-12-05T02:00:00Z", None)], now));
        // Last ran yesterday morning: today's 02:00 was missed.
        assert!(missed(&policy, &[run("2026-12-04T02:00:00Z", None)], now));
        // Today's run failed: it is tried again, yesterday's success counts.
        let failed_today = [
            run("2026-12-05T02:00:00Z", Some("database unavailable")),
            run("2026-12-04T02:00:00Z", None),
        ];
        assert!(missed(&policy, &failed_today, now));
        assert!(missed(
            &policy,
            &[run("2026-12-05T02:00:00Z", Some("boom"))],
            now
        ));
    }
}
