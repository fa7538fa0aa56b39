//! Leader election: one process per database runs the services that must run once per cluster
//! (the process pruner, the cron scheduler and the retention archiver; the rescuer runs in every
//! process). Those services are started and stopped here, in one place, so that none of
//! them knows about leadership.
//!
//! ```text
//!            elect (every retry interval, or at once on a wake-up after a resignation)
//!  follower ──────────────────────────────────────────────────────────────► leader
//!     ▲                                                                     │ reelect every ttl/3
//!     │  term lost, or no successful reelect before the local trust window  │
//!     └──────────────────────── ends (services stopped first) ◄─────────────┘
//!                                  shutdown: services stopped, then resign
//! ```
//!
//! The database clock decides the term (a lease row with `expires_at`); the process clock only
//! decides when to stop trusting itself: a leader counts its term from the moment it *sent* the
//! last successful reelect, and steps down a safety margin before `ttl` has passed from then, so
//! it has stopped acting before any other process can be elected.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use drover_core::{LeaderElectParams, LeaderReelectParams, LeaderResignParams, LeaderTerm};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::runtime::Shared;

/// The leadership every engine on one database competes for.
pub(crate) const LEADERSHIP: &str = "default";

/// A service that runs only on the leader. `run` returns when `stop` fires, and not before:
/// a service that ends earlier is taken for a failure ([`crate::supervise`]).
#[async_trait]
pub(crate) trait LeaderService: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn run(self: Arc<Self>, term: LeaderTerm, stop: CancellationToken);
}

pub(crate) struct Elector {
    shared: Arc<Shared>,
    services: Vec<Arc<dyn LeaderService>>,
    status: watch::Sender<Option<LeaderTerm>>,
}

impl Elector {
    pub(crate) fn new(
        shared: Arc<Shared>,
        services: Vec<Arc<dyn LeaderService>>,
        status: watch::Sender<Option<LeaderTerm>>,
    ) -> Self {
        Self {
            shared,
            services,
            status,
        }
    }

    fn ttl(&self) -> Duration {
        self.shared.config.leader_ttl
    }

    /// Competes for leadership until `stop` fires; resigns on the way out.
    pub(crate) async fn run(self, stop: CancellationToken) {
        if !self.shared.config.leader_eligible {
            stop.cancelled().await;
            return;
        }
        let mut wakeups = self.shared.store.wakeups();
        let retry = (self.ttl() / 5).max(Duration::from_millis(100));
        loop {
            if stop.is_cancelled() {
                return;
            }
            match self.elect().await {
                Some(term) => {
                    if !self.lead(term, &stop).await {
                        return;
                    }
                }
                None => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                        // A resignation wakes everyone: try again at once.
                        changed = wakeups.changed() => {
                            if changed.is_err() {
                                wakeups = self.shared.store.wakeups();
                            }
                        }
                    }
                }
            }
        }
    }

    async fn elect(&self) -> Option<LeaderTerm> {
        let call = self.shared.store.leader_attempt_elect(LeaderElectParams {
            name: LEADERSHIP.into(),
            leader_id: self.shared.process_id.clone(),
            ttl: self.ttl(),
            now: self.shared.clock.store_now(),
        });
        match tokio::time::timeout(self.ttl() / 3, call).await {
            Ok(Ok(term)) => {
                self.shared.health.ok("leader election");
                term
            }
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "leader election attempt failed");
                None
            }
            Err(_) => None,
        }
    }

    /// Leads until the term is lost (returns true: compete again) or `stop` fires (returns
    /// false, after resigning).
    async fn lead(&self, mut term: LeaderTerm, stop: &CancellationToken) -> bool {
        let ttl = self.ttl();
        let margin = ttl / 5;
        let mut trusted_until = Instant::now() + ttl - margin;
        tracing::info!(term = term.term, process = %self.shared.process_id, "elected leader");
        self.status.send_replace(Some(term));
        let services_stop = CancellationToken::new();
        let tasks: Vec<_> = self
            .services
            .iter()
            .map(|service| {
                tracing::debug!(service = service.name(), "starting leader service");
                self.shared.health.register(service.name(), None);
                let stop = services_stop.child_token();
                let run = service.clone().run(term, stop.clone());
                crate::supervise::spawn(&self.shared, service.name().into(), stop, run)
            })
            .collect();

        let keep_competing = loop {
            tokio::select! {
                _ = stop.cancelled() => break false,
                _ = tokio::time::sleep_until(trusted_until) => {
                    tracing::warn!(term = term.term, "could not renew the leader term in time; stepping down");
                    break true;
                }
                _ = tokio::time::sleep(ttl / 3) => {
                    let sent = Instant::now();
                    let call = self.shared.store.leader_attempt_reelect(LeaderReelectParams {
                        name: LEADERSHIP.into(),
                        leader_id: self.shared.process_id.clone(),
                        term: term.term,
                        ttl,
                        now: self.shared.clock.store_now(),
                    });
                    match tokio::time::timeout(ttl / 3, call).await {
                        Ok(Ok(Some(renewed))) => {
                            self.shared.health.ok("leader election");
                            term = renewed;
                            trusted_until = sent + ttl - margin;
                            self.status.send_replace(Some(term));
                        }
                        Ok(Ok(None)) => {
                            tracing::warn!(term = term.term, "leader term lost; stepping down");
                            break true;
                        }
                        Ok(Err(err)) => tracing::warn!(error = %err, "leader renewal failed; will retry"),
                        Err(_) => tracing::warn!("leader renewal timed out; will retry"),
                    }
                }
            }
        };

        self.step_down(term, tasks, &services_stop, margin).await;
        if !keep_competing {
            self.resign(term).await;
        }
        keep_competing
    }

    /// Stops acting as leader before anything else, and says so at once: a service stuck in a
    /// hung database call must not keep this process reporting itself leader. Services get
    /// the trust `margin` to stop; one that does not is aborted (its writes are fenced by the
    /// term anyway).
    async fn step_down(
        &self,
        term: LeaderTerm,
        mut tasks: Vec<tokio::task::JoinHandle<()>>,
        services_stop: &CancellationToken,
        margin: Duration,
    ) {
        self.status.send_replace(None);
        services_stop.cancel();
        let stopping = futures_join(tasks.iter_mut());
        if tokio::time::timeout(margin, stopping).await.is_err() {
            tracing::warn!(
                term = term.term,
                ?margin,
                "a leader service did not stop in time; aborting it"
            );
            for task in &tasks {
                task.abort();
            }
        }
        for service in &self.services {
            self.shared.health.stopped(service.name());
        }
    }

    /// Gives the term up, so that another process leads at once rather than after the ttl.
    async fn resign(&self, term: LeaderTerm) {
        let resign = self.shared.store.leader_resign(LeaderResignParams {
            name: LEADERSHIP.into(),
            leader_id: self.shared.process_id.clone(),
            term: term.term,
        });
        match tokio::time::timeout(Duration::from_secs(5), resign).await {
            Ok(Ok(true)) => tracing::info!(term = term.term, "resigned leadership"),
            Ok(Ok(false)) => {}
            _ => tracing::warn!("could not resign leadership; it passes on when the term expires"),
        }
    }
}

/// Waits for every task (their results do not matter here).
async fn futures_join<'a>(tasks: impl Iterator<Item = &'a mut tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}
