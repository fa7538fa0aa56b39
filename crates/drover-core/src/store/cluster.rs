//! Params and answers of the [`Store`](super::Store) methods about the cluster's shared state:
//! leadership, the process registry, cron fires and the retention archiver.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[allow(unused_imports)] // Named by the doc links.
use super::Store;
use crate::job::{JobId, NewJob};

/// Params of [`Store::leader_attempt_elect`].
#[derive(Debug, Clone)]
pub struct LeaderElectParams {
    /// Which leadership (one per cluster: `default`).
    pub name: String,
    /// The candidate process's id.
    pub leader_id: String,
    /// How long the term lasts unless extended.
    pub ttl: Duration,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Params of [`Store::leader_attempt_reelect`].
#[derive(Debug, Clone)]
pub struct LeaderReelectParams {
    /// Which leadership.
    pub name: String,
    /// The leader process's id.
    pub leader_id: String,
    /// The term it holds.
    pub term: i64,
    /// New length of the term, from now.
    pub ttl: Duration,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Params of [`Store::leader_resign`].
#[derive(Debug, Clone)]
pub struct LeaderResignParams {
    /// Which leadership.
    pub name: String,
    /// The leader process's id.
    pub leader_id: String,
    /// The term it holds.
    pub term: i64,
}

/// A term won or extended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LeaderTerm {
    /// Increases every time leadership changes hands; leader-only writes check it.
    pub term: i64,
    /// When this term began.
    pub elected_at: Timestamp,
    /// When it ends unless extended (database clock).
    pub expires_at: Timestamp,
}

/// The leader as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaderRecord {
    /// Which leadership.
    pub name: String,
    /// The leader process's id.
    pub leader_id: String,
    /// Its term.
    pub term: i64,
    /// When the term began.
    pub elected_at: Timestamp,
    /// When it ends unless extended.
    pub expires_at: Timestamp,
}

/// Params of [`Store::process_upsert`].
#[derive(Debug, Clone)]
pub struct ProcessUpsertParams {
    /// Process id (`host:pid:random`).
    pub id: String,
    /// Host name.
    pub host: String,
    /// OS process id.
    pub pid: u32,
    /// Queues it works.
    pub queues: Vec<String>,
    /// Its configured concurrency (most jobs at once) per queue it works.
    pub concurrency: BTreeMap<String, u32>,
    /// Drover version.
    pub version: String,
    /// The HTTP workers that lease through it (a server), as it last heard from them.
    pub http_workers: Vec<HttpWorkerRecord>,
    /// The cron schedules it fires while it leads.
    pub cron: Vec<CronSignature>,
    /// It has begun its graceful shutdown: it claims nothing more and finishes what it runs.
    /// The first heartbeat that says so records when.
    pub draining: bool,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// An HTTP worker (the Python client's, or any other language's) as the server it leases
/// through last saw it. A worker has no row of its own: each server writes the workers it
/// heard from into its process row with every heartbeat, so that every server and the CLI
/// see them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HttpWorkerRecord {
    /// The name it leases under (its jobs' lease owner is `remote:NAME`).
    pub name: String,
    /// The queues of its latest lease request.
    pub queues: Vec<String>,
    /// Leases it held through the server then.
    pub running: usize,
    /// Its latest lease request.
    pub last_seen: Timestamp,
}

/// A cron schedule as a process fires it while it leads: written with its heartbeat, so that
/// every view of a schedule can say whether the leader of the moment fires it (each process
/// fires the schedules of its own config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CronSignature {
    /// Schedule name.
    pub name: String,
    /// Its cron expression.
    pub schedule: String,
    /// Its time zone (IANA name; `None` for UTC).
    pub timezone: Option<String>,
}

/// A registered process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessRecord {
    /// Process id.
    pub id: String,
    /// Host name.
    pub host: String,
    /// OS process id.
    pub pid: u32,
    /// Queues it works.
    pub queues: Vec<String>,
    /// Its configured concurrency per queue it works (empty for a process registered by a
    /// version that did not record it).
    pub concurrency: BTreeMap<String, u32>,
    /// Drover version.
    pub version: String,
    /// When it registered.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub heartbeat_at: Timestamp,
    /// The HTTP workers that leased through it lately (a server), as of its last heartbeat.
    pub http_workers: Vec<HttpWorkerRecord>,
    /// When it began its graceful shutdown (it claims nothing more, finishes what it runs and
    /// then leaves the registry); `None` while it works.
    pub draining_since: Option<Timestamp>,
    /// The cron schedules it fires while it leads; `None` for a process of a version that did
    /// not record them.
    pub cron: Option<Vec<CronSignature>>,
}

/// Params of [`Store::process_prune`].
#[derive(Debug, Clone)]
pub struct ProcessPruneParams {
    /// Processes silent for longer than this are removed.
    pub stale_after: Duration,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Params of [`Store::cron_register`].
#[derive(Debug, Clone)]
pub struct CronRegisterParams {
    /// Schedule names.
    pub names: Vec<String>,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// What the database knows of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CronState {
    /// Schedule name.
    pub name: String,
    /// When the schedule was first seen.
    pub registered_at: Timestamp,
    /// Its latest recorded fire time.
    pub last_fire_at: Option<Timestamp>,
    /// The job that fire enqueued.
    pub last_job_id: Option<JobId>,
}

/// Proof that a write comes from the current leader term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderFence {
    /// Which leadership.
    pub name: String,
    /// The leader process's id.
    pub leader_id: String,
    /// The term it holds.
    pub term: i64,
}

/// Params of [`Store::cron_fire`].
#[derive(Debug, Clone)]
pub struct CronFireParams {
    /// Schedule name.
    pub schedule: String,
    /// The fire time (as the schedule computes it, not the time of firing).
    pub fire_at: Timestamp,
    /// The job to enqueue.
    pub job: NewJob,
    /// The term the firing process holds.
    pub fence: LeaderFence,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Answer of [`Store::cron_fire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CronFireResult {
    /// Recorded and enqueued.
    Fired {
        /// The job enqueued.
        job_id: JobId,
    },
    /// This fire time was already recorded: nothing done.
    AlreadyFired,
    /// The term no longer holds: nothing done.
    NotLeader,
}

/// Params of [`Store::cron_prune`].
#[derive(Debug, Clone)]
pub struct CronPruneParams {
    /// Fire records older than this go (each schedule's latest stays).
    pub before: Timestamp,
}

/// One retention batch (also used to count what is pending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveParams {
    /// Hot table (a plain identifier, checked by the caller).
    pub table: String,
    /// Archive table with the same columns.
    pub archive_table: String,
    /// Every column, in one order, to copy.
    pub columns: Vec<String>,
    /// The unique id column of both tables.
    pub id_column: String,
    /// Rows whose age column is older than the cutoff are moved…
    pub age_column: String,
    /// …or, where the age column is null, rows whose fallback column is.
    pub fallback_column: Option<String>,
    /// The cutoff.
    pub cutoff: Timestamp,
    /// Most rows in one batch.
    pub batch_size: usize,
    /// Only rows of finished jobs (the built-in policy for Drover's own jobs).
    pub finished_jobs_only: bool,
}
