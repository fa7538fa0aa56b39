//! The retention archiver (leader-only): runs every policy once when this process becomes
//! leader (to catch up), then each on its schedule. Each batch is one transaction; a crash at
//! any point leaves every row in exactly one of the two tables, and the next run continues.
//! Every run is recorded in the store (`drover_retention_runs`), failed ones with their error.

use std::sync::Arc;
use std::time::Duration;

use drover_core::LeaderTerm;
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
            self.run_policy(policy, &stop).await;
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
