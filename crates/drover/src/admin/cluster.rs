//! The cluster (the leader and the registered processes) and the cron schedules.

use drover_core::{CronSignature, CronState, InsertedJob, LeaderRecord, ProcessRecord, StoreError};
use jiff::Timestamp;
use serde::Serialize;

use super::Admin;
use crate::cron::{CatchUp, CronSchedule, ParsedSchedule};
use crate::error::Error;
use crate::leader::LEADERSHIP;
use crate::remote::HttpWorkerView;

/// Who leads and who works.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterView {
    /// The leader, while its term holds.
    pub leader: Option<LeaderRecord>,
    /// Every registered process, oldest first.
    pub processes: Vec<ProcessRecord>,
    /// The ids of the processes that stopped heartbeating ([`SILENT_AFTER`](super::SILENT_AFTER)
    /// behind the newest heartbeat): killed, or cut off from the database. They are listed
    /// until the leader prunes them, but work nothing.
    pub silent: Vec<String>,
    /// The HTTP workers heard from in the last minute, or holding leases, by every server:
    /// the answering server's as it knows them now, the others' as of their last heartbeat
    /// (every 5 s). By name, then server.
    pub http_workers: Vec<HttpWorkerView>,
}

impl ClusterView {
    /// Whether `process` has stopped heartbeating (see [`ClusterView::silent`]).
    pub fn is_silent(&self, process: &ProcessRecord) -> bool {
        self.silent.contains(&process.id)
    }
}

/// A cron schedule with what the database knows of it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CronView {
    /// Schedule name.
    pub name: String,
    /// Its cron expression.
    pub schedule: String,
    /// Its time zone (IANA name; UTC when unset).
    pub timezone: String,
    /// The kind it enqueues.
    pub kind: String,
    /// The queue it enqueues into: its own, or else its kind's task's (`default` when neither
    /// says). Always set; optional in the type for compatibility.
    pub queue: Option<String>,
    /// What happens to fire times missed while no leader ran.
    pub catch_up: CatchUp,
    /// Its latest recorded fire time.
    pub last_fire_at: Option<Timestamp>,
    /// The job that fire enqueued.
    pub last_job_id: Option<i64>,
    /// The next fire time (none for a schedule that never fires again).
    pub next_fire_at: Option<Timestamp>,
    /// The next fire times, up to five, the first being `next_fire_at`.
    pub next_fire_times: Vec<Timestamp>,
    /// Whether the process that leads now fires this schedule as shown here: `false` when
    /// its config lacks it, or has it with another expression or time zone (each leader fires
    /// its own config's schedules), so that the next fire times above hold only once a process
    /// with this schedule leads; `None` when no process leads, or the leader's version does
    /// not say.
    pub leader_fires: Option<bool>,
}

impl Admin {
    /// The current leader, if any process leads now (a term that has not expired).
    pub async fn leader(&self) -> Result<Option<LeaderRecord>, Error> {
        Ok(self
            .store()
            .leader_get(LEADERSHIP.into(), self.clock.store_now())
            .await?)
    }

    /// The leader and the registered processes.
    pub async fn cluster(&self) -> Result<ClusterView, Error> {
        let leader = self.leader().await?;
        let mut processes = self.store().process_list().await?;
        // Every process is listed until the leader prunes it, with its last heartbeat; the
        // HTTP workers only of those that still heartbeat, whose lists are current.
        let mut silent = Vec::new();
        if let Some(newest) = super::newest_heartbeat(&processes) {
            for process in processes.iter_mut().filter(|p| super::silent(p, newest)) {
                process.http_workers.clear();
                silent.push(process.id.clone());
            }
        }
        let http_workers = self.http_workers_of(&processes);
        Ok(ClusterView {
            leader,
            processes,
            silent,
            http_workers,
        })
    }

    /// The HTTP workers the `processes` rows list, with this process's own as it knows them
    /// now rather than as of its last heartbeat.
    pub(super) fn http_workers_of(&self, processes: &[ProcessRecord]) -> Vec<HttpWorkerView> {
        let own = self.remote.as_ref().map(|(_, id)| id.as_str());
        let mut workers: Vec<HttpWorkerView> = processes
            .iter()
            .filter(|process| Some(process.id.as_str()) != own)
            .flat_map(|process| {
                process
                    .http_workers
                    .iter()
                    .map(|worker| HttpWorkerView::new(worker.clone(), &process.id))
            })
            .collect();
        if let Some((remote, id)) = &self.remote {
            workers.extend(
                remote
                    .http_workers()
                    .into_iter()
                    .map(|worker| HttpWorkerView::new(worker, id)),
            );
        }
        workers.sort_by(|a, b| (&a.name, &a.server).cmp(&(&b.name, &b.server)));
        workers
    }

    /// Each configured schedule, its last fire and its next fire times.
    pub async fn cron(&self) -> Result<Vec<CronView>, Error> {
        let states = self.store().cron_states().await?;
        let leader_fires = self.leader_cron().await?;
        let now = self.clock.now();
        self.cron
            .iter()
            .map(|schedule| {
                let parsed = ParsedSchedule::parse(schedule.clone())?;
                let state: Option<&CronState> = states.iter().find(|s| s.name == schedule.name);
                let mut next = Vec::new();
                let mut after = now;
                while next.len() < 5 {
                    let Some(at) = parsed.next_after(after) else {
                        break;
                    };
                    next.push(at);
                    after = at;
                }
                Ok(CronView {
                    name: schedule.name.clone(),
                    schedule: schedule.expression.clone(),
                    timezone: schedule.timezone.clone().unwrap_or_else(|| "UTC".into()),
                    kind: schedule.kind.clone(),
                    queue: Some(self.cron_queue(schedule)),
                    catch_up: schedule.catch_up,
                    last_fire_at: state.and_then(|s| s.last_fire_at),
                    last_job_id: state.and_then(|s| s.last_job_id),
                    next_fire_at: next.first().copied(),
                    next_fire_times: next,
                    leader_fires: leader_fires
                        .as_ref()
                        .map(|fired| fired.contains(&schedule.signature())),
                })
            })
            .collect()
    }

    /// The schedules the process that leads now fires, when one leads and its row says.
    async fn leader_cron(&self) -> Result<Option<Vec<CronSignature>>, Error> {
        let Some(leader) = self.leader().await? else {
            return Ok(None);
        };
        Ok(self
            .store()
            .process_list()
            .await?
            .into_iter()
            .find(|process| process.id == leader.leader_id)
            .and_then(|process| process.cron))
    }

    /// The queue a schedule's jobs go to: the schedule's, else its kind's task's defaults.
    fn cron_queue(&self, schedule: &CronSchedule) -> String {
        match self.defaults.prepare(schedule.request()) {
            Ok(job) => job.queue,
            // Checked when the engine was built; shown as declared if it fails here.
            Err(_) => schedule.queue.clone().unwrap_or_else(|| "default".into()),
        }
    }

    /// Enqueues the job of schedule `name` now, outside its schedule. Recorded as an ordinary
    /// enqueue: the schedule's own fire times are unaffected.
    pub async fn cron_run_now(&self, name: &str) -> Result<InsertedJob, Error> {
        let schedule =
            self.cron
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| Error::UnknownName {
                    what: "cron schedule",
                    name: name.to_owned(),
                })?;
        let job = self
            .defaults
            .prepare(schedule.request())
            .map_err(|error| Error::InvalidJob { index: None, error })?;
        let inserted = self.client().insert(vec![job]).await?;
        inserted
            .into_iter()
            .next()
            .ok_or_else(|| Error::Store(StoreError::Internal("insert returned nothing".into())))
    }
}
