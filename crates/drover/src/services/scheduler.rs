//! The cron scheduler (leader-only): at each fire time, records (schedule, fire time) and
//! enqueues its job in one transaction fenced by the leader term, so that a fire time is
//! enqueued exactly once — across restarts, leader changes, and two processes that briefly both
//! believe they lead. Missed fire times follow each schedule's catch-up policy.
//!
//! Every tick is stateless: it reads what the database recorded, plans with
//! [`ParsedSchedule::plan`], and fires. Tests call [`Scheduler::run_once`] with a pinned time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use drover_core::{
    Clock, CronFireParams, CronFireResult, CronPruneParams, CronRegisterParams, DynStore,
    LeaderFence, LeaderTerm, NewJob, StoreError,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cron::ParsedSchedule;
use crate::leader::{LEADERSHIP, LeaderService};
use crate::runtime::Shared;

/// Longest the scheduler sleeps before looking again (so a clock step is noticed).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Longest a scheduler database call may take: a hung connection must not silently stop cron
/// (a timed-out fire is safe to retry: the fire time is recorded at most once).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Fire records older than this are pruned (each schedule's latest is always kept).
const KEEP_FIRES: SignedDuration = SignedDuration::from_hours(24 * 31);
/// A schedule that fired within this time, and that a new leader's config lacks, is warned of
/// at its election (see [`SchedulerService::warn_of_schedules_not_here`]).
const LATELY: SignedDuration = SignedDuration::from_hours(24);

/// A schedule with the job it enqueues, checked at start-up.
#[derive(Debug, Clone)]
pub struct CronJob {
    /// The schedule.
    pub schedule: ParsedSchedule,
    /// The job to enqueue at each fire time (validated).
    pub job: NewJob,
}

/// Whether this process runs the jobs a schedule enqueues ([`CronJob::runnable_here`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runnable {
    /// Its kind has a task here, in a queue this process works.
    Here,
    /// Another process or an HTTP worker must run them; `message` says why. `likely_mistake`
    /// when the schedule names a queue nobody here works for a kind that has a task here (a
    /// typo more often than a plan); otherwise the setup the README recommends for HTTP
    /// workers.
    Elsewhere {
        /// What to log at start.
        message: String,
        /// Whether it deserves a warning rather than a note.
        likely_mistake: bool,
    },
    /// Its queue is worked here with no task for its kind: every fire would be discarded as an
    /// unknown kind (a typo, most often). The engine refuses to build.
    Discarded(String),
}

impl CronJob {
    /// Whether this process will run the jobs it enqueues, given which kinds have a task here
    /// and which queues this process works.
    pub fn runnable_here(
        &self,
        has_task: impl Fn(&str) -> bool,
        queues: &BTreeMap<String, usize>,
    ) -> Runnable {
        let name = &self.schedule.schedule.name;
        let (kind, queue) = (&self.job.kind, &self.job.queue);
        match (has_task(kind), queues.contains_key(queue)) {
            (true, true) => Runnable::Here,
            (false, true) => Runnable::Discarded(format!(
                "cron {name:?} enqueues kind {kind:?} into queue {queue:?}, which this process \
                 works with no task for that kind: every fire would be discarded as an unknown \
                 kind. Declare the task, or send the jobs to a queue this process does not work"
            )),
            (false, false) => Runnable::Elsewhere {
                message: format!(
                    "cron {name:?} enqueues kind {kind:?}, which has no task in this process; \
                     its jobs wait in queue {queue:?} for a process or an HTTP worker that runs it"
                ),
                likely_mistake: false,
            },
            (true, false) => Runnable::Elsewhere {
                message: format!(
                    "cron {name:?} enqueues into queue {queue:?}, which this process does not \
                     work (its queues: {}); its jobs wait for a process that does",
                    queues.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                likely_mistake: true,
            },
        }
    }
}

/// One fire time handled by a tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FireOutcome {
    /// Schedule name.
    pub schedule: String,
    /// The fire time.
    pub fire_at: Timestamp,
    /// What the store did.
    pub result: CronFireResult,
}

/// The scheduler. See the module documentation.
pub struct Scheduler {
    store: DynStore,
    clock: Arc<dyn Clock>,
    jobs: Vec<CronJob>,
}

impl Scheduler {
    /// A scheduler for `jobs` on `store`.
    pub fn new(store: DynStore, clock: Arc<dyn Clock>, jobs: Vec<CronJob>) -> Self {
        Self { store, clock, jobs }
    }

    /// Records the schedules in the database (first sight is the baseline for missed times).
    pub async fn register(&self, now: Option<Timestamp>) -> Result<(), StoreError> {
        deadline(
            "cron register",
            self.store.cron_register(CronRegisterParams {
                names: self
                    .jobs
                    .iter()
                    .map(|j| j.schedule.schedule.name.clone())
                    .collect(),
                now,
            }),
        )
        .await
        .map(|_| ())
    }

    /// One tick at `now`: fires every due fire time, fenced by `fence`. Stops at the first
    /// `NotLeader`.
    pub async fn run_once(
        &self,
        fence: &LeaderFence,
        now: Timestamp,
    ) -> Result<Vec<FireOutcome>, StoreError> {
        let states: HashMap<String, _> = deadline("cron states", self.store.cron_states())
            .await?
            .into_iter()
            .map(|state| (state.name.clone(), state))
            .collect();
        let mut outcomes = Vec::new();
        for job in &self.jobs {
            let name = &job.schedule.schedule.name;
            for fire_at in job.schedule.plan(states.get(name), now) {
                let fire = self.store.cron_fire(CronFireParams {
                    schedule: name.clone(),
                    fire_at,
                    job: job.job.clone(),
                    fence: fence.clone(),
                    // The database clock decides the term, unless time is simulated.
                    now: self.clock.store_now().map(|_| now),
                });
                let result = deadline("cron fire", fire).await?;
                outcomes.push(FireOutcome {
                    schedule: name.clone(),
                    fire_at,
                    result,
                });
                if result == CronFireResult::NotLeader {
                    return Ok(outcomes);
                }
            }
        }
        Ok(outcomes)
    }

    /// When the next fire time after `now` comes, over every schedule.
    pub fn next_fire(&self, now: Timestamp) -> Option<Timestamp> {
        self.jobs
            .iter()
            .filter_map(|job| job.schedule.next_after(now))
            .min()
    }
}

/// `call`, failed as unavailable if it takes longer than [`CALL_TIMEOUT`].
async fn deadline<T>(
    what: &str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "{what} did not answer within {CALL_TIMEOUT:?}"
            )))
        })
}

/// The scheduler as a leader service.
pub(crate) struct SchedulerService {
    pub(crate) scheduler: Scheduler,
    pub(crate) shared: Arc<Shared>,
}

impl SchedulerService {
    /// Each process fires the schedules of its own config while it leads: a schedule that
    /// fired lately under another leader, and that this process's config lacks, stops firing
    /// now. Said at the election, since nothing else would say it (a rolling deploy with a
    /// new config, or a `drover worker` started with another file).
    async fn warn_of_schedules_not_here(&self) {
        let scheduler = &self.scheduler;
        let Ok(states) = deadline("cron states", scheduler.store.cron_states()).await else {
            return;
        };
        let lately = scheduler
            .clock
            .now()
            .checked_sub(LATELY)
            .unwrap_or(Timestamp::MIN);
        for state in states {
            let here = scheduler
                .jobs
                .iter()
                .any(|job| job.schedule.schedule.name == state.name);
            if let Some(at) = state.last_fire_at.filter(|at| *at > lately && !here) {
                tracing::warn!(schedule = %state.name, last_fire_at = %at,
                    "this process leads now, and its config has no [[cron]] schedule of this \
                     name, which fired lately: it does not fire while this process leads (give \
                     every process that may lead the same [[cron]] section)");
            }
        }
    }
}

#[async_trait::async_trait]
impl LeaderService for SchedulerService {
    fn name(&self) -> &'static str {
        "cron scheduler"
    }

    async fn run(self: Arc<Self>, term: LeaderTerm, stop: CancellationToken) {
        let scheduler = &self.scheduler;
        self.warn_of_schedules_not_here().await;
        if scheduler.jobs.is_empty() {
            stop.cancelled().await;
            return;
        }
        let fence = LeaderFence {
            name: LEADERSHIP.into(),
            leader_id: self.shared.process_id.clone(),
            term: term.term,
        };
        let mut registered = false;
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            let now = scheduler.clock.now();
            if !registered {
                match scheduler.register(scheduler.clock.store_now()).await {
                    Ok(()) => registered = true,
                    Err(err) => tracing::warn!(error = %err, "cannot register cron schedules yet"),
                }
            }
            if registered {
                match scheduler.run_once(&fence, now).await {
                    Ok(outcomes) => {
                        self.shared.health.ok("cron scheduler");
                        for outcome in &outcomes {
                            match outcome.result {
                                CronFireResult::Fired { job_id } => tracing::info!(
                                    schedule = %outcome.schedule, fire_at = %outcome.fire_at, job = job_id, "cron fired"),
                                CronFireResult::AlreadyFired => tracing::debug!(
                                    schedule = %outcome.schedule, fire_at = %outcome.fire_at, "cron fire time already enqueued"),
                                CronFireResult::NotLeader => {
                                    tracing::warn!(
                                        term = term.term,
                                        "cron: the leader term no longer holds; not firing"
                                    );
                                    stop.cancelled().await;
                                    return;
                                }
                            }
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cron tick failed; retrying"),
                }
                if last_prune.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
                    last_prune = Some(tokio::time::Instant::now());
                    let before = now.checked_sub(KEEP_FIRES).unwrap_or(Timestamp::MIN);
                    let prune = scheduler.store.cron_prune(CronPruneParams { before });
                    if let Err(err) = deadline("cron prune", prune).await {
                        tracing::debug!(error = %err, "cron fire pruning failed");
                    }
                }
            }
            let sleep = if registered {
                scheduler
                    .next_fire(scheduler.clock.now())
                    .map(|next| {
                        Duration::try_from(next.duration_since(scheduler.clock.now()))
                            .unwrap_or(Duration::ZERO)
                    })
                    .unwrap_or(MAX_SLEEP)
                    .min(MAX_SLEEP)
            } else {
                Duration::from_secs(1)
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                // A hair after the fire time, so it is due by the database's clock too.
                _ = tokio::time::sleep(sleep + Duration::from_millis(5)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::{CatchUp, CronSchedule};

    fn cron_job(kind: &str, queue: &str) -> CronJob {
        let schedule = CronSchedule {
            name: "nightly".into(),
            expression: "0 3 * * *".into(),
            timezone: None,
            kind: kind.into(),
            args: "{}".into(),
            queue: Some(queue.into()),
            catch_up: CatchUp::Once,
        };
        let mut job = NewJob::new(kind, "{}");
        job.queue = queue.into();
        CronJob {
            schedule: ParsedSchedule::parse(schedule).unwrap(),
            job,
        }
    }

    #[test]
    fn a_schedule_whose_jobs_would_be_discarded_is_refused_and_one_left_to_others_noted() {
        let queues = BTreeMap::from([("default".to_owned(), 10), ("mail".to_owned(), 2)]);
        let known = |kind: &str| kind == "report.build";
        let runnable =
            |kind: &str, queue: &str| cron_job(kind, queue).runnable_here(known, &queues);

        assert_eq!(runnable("report.build", "mail"), Runnable::Here);

        let Runnable::Discarded(typo) = runnable("report.biuld", "default") else {
            panic!("a kind with no task in a worked queue is refused");
        };
        assert!(
            typo.contains("\"nightly\"") && typo.contains("\"report.biuld\""),
            "{typo}"
        );
        assert!(typo.contains("discarded as an unknown kind"), "{typo}");

        let Runnable::Elsewhere {
            message,
            likely_mistake: false,
        } = runnable("py.report", "py")
        else {
            panic!("an HTTP worker's kind in its own queue is the recommended setup");
        };
        assert!(message.contains("HTTP worker"), "{message}");

        let Runnable::Elsewhere {
            message,
            likely_mistake: true,
        } = runnable("report.build", "reports")
        else {
            panic!("a queue nobody here works, for a kind with a task here, is warned about");
        };
        assert!(message.contains("queue \"reports\""), "{message}");
        assert!(message.contains("default, mail"), "{message}");
    }
}
