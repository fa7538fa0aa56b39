//! Keeps the leases of running jobs alive and carries cancel requests to them.
//!
//! Every heartbeat interval, one store call renews every lease this process holds (and saves
//! each run's current step). A lease found lost (the run was rescued elsewhere) stops the run;
//! its outcome will be refused anyway. A cancel request stops the run with reason "operator".
//! Between heartbeats, a store wake-up triggers a cheap read of cancel requests, so that
//! `drover jobs cancel` from another process takes effect at once. Only runs that a live task
//! owns are renewed ([`crate::guard`]).

use std::sync::Arc;
use std::time::Duration;

use drover_core::{JobHeartbeatParams, JobId};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::runtime::{RunningJob, Shared, StopReason};

/// Least time between two cancel checks triggered by wake-ups.
const CANCEL_CHECK_GAP: Duration = Duration::from_millis(100);

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let every = shared.config.heartbeat_every();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wakeups = shared.store.wakeups();
    // A wake-up too soon after the last check defers the check rather than dropping it.
    let mut check_due: Option<Instant> = None;
    let mut last_check: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => beat(&shared, every).await,
            changed = wakeups.changed() => {
                if changed.is_err() {
                    // The store is closing: no more wake-ups, heartbeats on the ticker only.
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = ticker.tick() => beat(&shared, every).await,
                        }
                    }
                }
                if shared.running_count() > 0 {
                    let earliest = last_check.map_or_else(Instant::now, |at| at + CANCEL_CHECK_GAP);
                    check_due = Some(check_due.map_or(earliest, |due| due.min(earliest)));
                }
            }
            _ = sleep_until(check_due) => {
                check_due = None;
                last_check = Some(Instant::now());
                check_cancels(&shared).await;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Renews every lease held; stops runs whose lease is lost or that have a cancel request.
pub(crate) async fn beat(shared: &Shared, deadline: Duration) {
    let leases: Vec<_> = {
        let mut running = shared.running.lock().expect("running lock poisoned");
        forget_unowned(shared, &mut running);
        running
            .values()
            // Runs stopped by shutdown keep their lease until their hand-back is recorded.
            .map(|job| {
                let step = job.step.lock().expect("step lock poisoned").clone();
                (job.lease.clone(), step)
            })
            .collect()
    };
    if leases.is_empty() {
        shared.health.ok("heartbeat");
        return;
    }
    // The lease each status answers for: by the time the answer comes, this process may have
    // claimed the same job again (it was rescued from a stall), and that new run must not be
    // stopped for the old lease.
    let sent: std::collections::HashMap<JobId, i64> = leases
        .iter()
        .map(|(lease, _)| (lease.id, lease.lease_token))
        .collect();
    let call = shared.store.job_heartbeat(JobHeartbeatParams {
        leases,
        lease: shared.config.lease,
        now: shared.clock.store_now(),
    });
    let statuses = match tokio::time::timeout(deadline, call).await {
        Ok(Ok(statuses)) => {
            shared.health.ok("heartbeat");
            statuses
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "heartbeat failed; running jobs continue");
            return;
        }
        Err(_) => {
            tracing::warn!(?deadline, "heartbeat timed out; running jobs continue");
            return;
        }
    };
    let running = shared.running.lock().expect("running lock poisoned");
    for status in statuses {
        let Some(job) = running
            .get(&status.id)
            .filter(|job| sent.get(&status.id) == Some(&job.lease.lease_token))
        else {
            continue;
        };
        if !status.held {
            if job.done.load(std::sync::atomic::Ordering::Acquire) {
                // The run ended and its outcome is being recorded (often it just was): the
                // completer reports a refusal if there is one.
                continue;
            }
            tracing::warn!(job = status.id, "lease lost; stopping the run");
            job.stop(StopReason::LeaseLost);
        } else if status.cancel_requested {
            job.stop(StopReason::Operator);
        }
    }
}

/// Forgets runs that no live task owns (see [`crate::guard`]): their lease is not renewed, so
/// it expires and the rescuer takes the job, instead of a dead run being kept alive forever.
fn forget_unowned(shared: &Shared, running: &mut std::collections::HashMap<JobId, RunningJob>) {
    let before = running.len();
    running.retain(|id, job| {
        let owned = job.owner.strong_count() > 0;
        if !owned {
            tracing::error!(
                job = id,
                "a run has no owner left; letting its lease expire"
            );
        }
        owned
    });
    if running.len() < before {
        shared.settled.notify_waiters();
    }
}

async fn check_cancels(shared: &Shared) {
    let ids: Vec<_> = shared
        .running
        .lock()
        .expect("running lock poisoned")
        .keys()
        .copied()
        .collect();
    match shared.store.job_cancel_requested(ids).await {
        Ok(ids) => {
            let running = shared.running.lock().expect("running lock poisoned");
            for id in ids {
                if let Some(job) = running.get(&id) {
                    job.stop(StopReason::Operator);
                }
            }
        }
        Err(err) => tracing::debug!(error = %err, "cancel check failed"),
    }
}
