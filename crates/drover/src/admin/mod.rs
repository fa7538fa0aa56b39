//! The admin seam: everything an operator can see and do, in one place. The CLI, the HTTP API
//! and the dashboard all go through [`Admin`]; none of them calls the [`Store`] directly.
//!
//! Reads are cheap by construction: job lists page by id with a cursor, and counts come from
//! the cache the leader refreshes (`services::counter`), never from a scan per request. Actions
//! on "every job matching a filter" run in bounded batches and report what they changed.

mod capacity;
mod cluster;
mod jobs;
mod queues;
mod retention;
mod search;
mod throughput;

use std::sync::Arc;

use drover_core::{Clock, DynStore, Store};

use crate::client::{Client, JobDefaults};
use crate::cron::CronSchedule;
use crate::metrics::Metrics;
use crate::retention::RetentionPolicy;

pub use cluster::{ClusterView, CronView};
pub use jobs::{BulkReport, FilterText, JobCount, JobFilter, JobPage, MAX_COUNT, MAX_PAGE};
pub use queues::QueueView;
pub use retention::{RUNS_SHOWN, RetentionView};
pub use search::SEARCH_BUDGET;
pub use throughput::{MAX_MINUTES, ThroughputPoint};

/// A process whose last heartbeat is this much older than the newest one has stopped: killed,
/// or cut off from the database. Its row stays until the leader prunes it (after a minute), but
/// it no longer counts as working its queues. Measured against the newest heartbeat, not this
/// host's clock: on PostgreSQL heartbeats carry the database's time.
pub const SILENT_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_secs(20);

/// The newest heartbeat among `processes`: the time [`SILENT_AFTER`] is measured from.
fn newest_heartbeat(processes: &[drover_core::ProcessRecord]) -> Option<jiff::Timestamp> {
    processes.iter().map(|p| p.heartbeat_at).max()
}

/// Whether `process` has stopped heartbeating, by the `newest` heartbeat of its cluster.
fn silent(process: &drover_core::ProcessRecord, newest: jiff::Timestamp) -> bool {
    newest.duration_since(process.heartbeat_at) > SILENT_AFTER
}

/// The processes of `all` that still heartbeat (see [`SILENT_AFTER`]).
fn heartbeating(mut all: Vec<drover_core::ProcessRecord>) -> Vec<drover_core::ProcessRecord> {
    if let Some(newest) = newest_heartbeat(&all) {
        all.retain(|p| !silent(p, newest));
    }
    all
}

/// The operator's view of one database. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    store: DynStore,
    clock: Arc<dyn Clock>,
    defaults: JobDefaults,
    cron: Arc<Vec<CronSchedule>>,
    retention: Arc<Vec<RetentionPolicy>>,
    metrics: Option<Arc<Metrics>>,
    search_budget: drover_core::JobId,
    /// The autoscaler's systems, when this process runs it: a reservation of any other would
    /// wait in vain, and the capacity views show their pools.
    systems: Option<Arc<std::collections::BTreeMap<String, crate::autoscaler::SystemConfig>>>,
    /// The HTTP workers this process serves, and its id, for the cluster's view.
    remote: Option<(crate::remote::RemoteWorkers, String)>,
    /// The job-end hooks of the process, run when an operator's action ends a job.
    hooks: Option<Arc<crate::hooks::Hooks>>,
    /// The tasks that hand the jobs an action ended to the hooks, for [`Admin::finish_hooks`].
    announcing: tokio_util::task::TaskTracker,
    /// Jobs an action ended that are not handed to the hooks yet.
    unannounced: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// An admin over `store`. `defaults` validates and completes enqueues; `cron` is the
    /// configured schedules (for their views and "run now").
    pub fn new(store: DynStore, defaults: JobDefaults, cron: Vec<CronSchedule>) -> Self {
        Self {
            store,
            clock: defaults.clock().clone(),
            defaults,
            cron: Arc::new(cron),
            retention: Arc::new(Vec::new()),
            metrics: None,
            search_budget: SEARCH_BUDGET,
            systems: None,
            remote: None,
            hooks: None,
            announcing: tokio_util::task::TaskTracker::new(),
            unannounced: Default::default(),
        }
    }

    /// Runs `hooks` when an action of this admin ends a job (a waiting job cancelled or
    /// discarded), as a worker's outcome does.
    pub(crate) fn with_hooks(mut self, hooks: Arc<crate::hooks::Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Runs `hooks` (at most `concurrency` at once) when an action of this admin ends a job,
    /// for an admin outside an engine, as in a one-shot command: an operator's cancel from the
    /// command line tells a job-end hook as one through a server's API does. Starts the hook
    /// pool on the current runtime; call [`Admin::finish_hooks`] before the process exits.
    pub fn with_job_end_hooks(self, hooks: Vec<Arc<dyn crate::Hook>>, concurrency: usize) -> Self {
        self.with_hooks(Arc::new(crate::hooks::Hooks::new(hooks, concurrency)))
    }

    /// Job ends of this admin's actions whose hooks have not all run yet.
    pub fn hooks_left(&self) -> usize {
        let pending = self.hooks.as_ref().map_or(0, |hooks| hooks.pending());
        pending + self.unannounced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for the hooks of every job this admin's actions ended, each bounded by its own
    /// timeout, then stops the hook pool. A caller that must stop sooner drops the future and
    /// reads [`Admin::hooks_left`].
    pub async fn finish_hooks(&self) {
        self.announcing.close();
        self.announcing.wait().await;
        if let Some(hooks) = &self.hooks {
            // Every job end is in the pool now: the pool's own wait is all that is left.
            hooks.shutdown(std::time::Duration::MAX).await;
        }
    }

    /// Reads at most `ids` ids per page of a search on columns no index covers (default
    /// [`SEARCH_BUDGET`]).
    pub fn with_search_budget(mut self, ids: drover_core::JobId) -> Self {
        self.search_budget = ids.max(1);
        self
    }

    /// The configured retention policies (for their views), in the configuration's order.
    pub fn with_retention(mut self, policies: Vec<RetentionPolicy>) -> Self {
        self.retention = Arc::new(policies);
        self
    }

    /// The systems the autoscaler serves, with their settings: reservations of any other are
    /// refused, and one made without a time to live gets its system's. Without this, every
    /// system is taken (the autoscaler may run in another process).
    pub fn with_systems(
        mut self,
        systems: impl IntoIterator<Item = (String, crate::autoscaler::SystemConfig)>,
    ) -> Self {
        self.systems = Some(Arc::new(systems.into_iter().collect()));
        self
    }

    /// The systems the autoscaler of this process serves, with their settings (none when it
    /// runs no autoscaler); `None` when this admin was not told (a library user's).
    pub fn systems(
        &self,
    ) -> Option<&std::collections::BTreeMap<String, crate::autoscaler::SystemConfig>> {
        self.systems.as_deref()
    }

    /// Lists the HTTP workers `remote` serves in [`Admin::cluster`] as they are now, rather
    /// than as the row of `process_id` (this process) last recorded them.
    pub fn with_http_workers(
        mut self,
        remote: crate::remote::RemoteWorkers,
        process_id: String,
    ) -> Self {
        self.remote = Some((remote, process_id));
        self
    }

    /// Records this admin's enqueues and outcomes in `metrics` too.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A client that enqueues with the same validation and defaults.
    pub fn client(&self) -> Client {
        Client::with_defaults(self.store.clone(), self.defaults.clone())
    }

    /// The metrics this admin records in, if any.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The store (for the engine's own services, which sit beside the admin).
    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The job defaults and limits in force.
    pub fn defaults(&self) -> &JobDefaults {
        &self.defaults
    }
}
