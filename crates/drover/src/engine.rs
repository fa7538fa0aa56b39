//! Building, starting and stopping an engine.
//!
//! # Shutdown
//!
//! [`EngineHandle::shutdown`] escalates in steps, each bounded in time:
//!
//! ```text
//!  1. stop claiming ── foremen exit; running jobs continue, leases keep being renewed
//!  2. wait ─────────── up to `shutdown_timeout` for running jobs to finish and be recorded
//!  3. cancel ───────── fire every running job's cancellation token (command tasks get SIGTERM),
//!                      wait up to `cancel_grace`
//!  4. abandon ──────── abort handlers that ignored the cancellation, wait up to `cancel_grace`
//!                      for their hand-backs to be recorded
//!  5. hand back ────── every interrupted run is recorded as handed back: available again
//!                      without using an attempt (at-most-once: discarded, reason recorded)
//! ```
//!
//! If the database cannot be reached even then, the outcomes are given up: the leases expire and
//! the rescuer of another process (or of the next start) takes the jobs. Nothing is lost.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_core::LeaderTerm;
use drover_core::{Clock, DynStore, SystemClock};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::builtin;
use crate::client::{Client, JobDefaults};
use crate::completer;
use crate::config::EngineConfig;
use crate::cron::{CronSchedule, ParsedSchedule};
use crate::error::Error;
use crate::foreman;
use crate::health::HealthReport;
use crate::heartbeat;
use crate::hooks::{FnHook, Hook, Hooks, JobEnd};
use crate::leader::{Elector, LeaderService};
use crate::metrics::{MeteredStore, Metrics};
use crate::probe::EngineProbe;
use crate::remote::RemoteWorkers;
use crate::retention::PreparedPolicy;
use crate::runtime::{Shared, StopReason};
use crate::services::archiver::Archiver;
use crate::services::autoscaler::{AutoscalerParts, AutoscalerService};
use crate::services::counter::Counter;
use crate::services::presence::{self, Pruner};
use crate::services::rescuer::{Rescuer, RescuerConfig};
use crate::services::scheduler::{CronJob, Runnable, Scheduler, SchedulerService};
use crate::stats::EngineStats;
use crate::supervise;
use crate::task::{RawTask, Task, TaskOptions, Typed};

/// Builds an [`Engine`].
pub struct EngineBuilder {
    store: DynStore,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    tasks: HashMap<String, Arc<dyn RawTask>>,
    hooks: Vec<Arc<dyn Hook>>,
    cron: Vec<CronSchedule>,
    retention: Vec<PreparedPolicy>,
    metrics: Option<Arc<Metrics>>,
    autoscaler: Option<AutoscalerParts>,
}

impl EngineBuilder {
    /// Records metrics in `metrics` (default: a registry of the engine's own, see
    /// [`EngineHandle::metrics`]).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the clock (a [`drover_core::SimulatedClock`] in tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Works `queue` with `concurrency` jobs at once (replacing the default queue list on the
    /// first call).
    pub fn queue(mut self, queue: impl Into<String>, concurrency: usize) -> Self {
        if self.config.queues == EngineConfig::default().queues {
            self.config.queues.clear();
        }
        self.config.queues.insert(queue.into(), concurrency);
        self
    }

    /// Registers a typed task.
    pub fn task<T: Task>(self, task: T) -> Self {
        self.raw_task(Arc::new(Typed(task)))
    }

    /// Registers a task that takes the args' JSON text.
    pub fn raw_task(mut self, task: Arc<dyn RawTask>) -> Self {
        self.tasks.insert(task.kind().to_owned(), task);
        self
    }

    /// Registers the built-in kinds `drover.noop`, `drover.sleep` and `drover.fail`.
    pub fn builtin_tasks(mut self) -> Self {
        for task in builtin::all() {
            self.tasks.insert(task.kind().to_owned(), task);
        }
        self
    }

    /// Runs `hook` whenever a job ends.
    pub fn hook(mut self, hook: impl Hook) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Runs `f` whenever a job ends.
    pub fn on_job_end(self, f: impl Fn(&JobEnd) + Send + Sync + 'static) -> Self {
        self.hook(FnHook(f))
    }

    /// Adds a cron schedule, fired by the leader.
    pub fn cron(mut self, schedule: CronSchedule) -> Self {
        self.cron.push(schedule);
        self
    }

    /// Adds a retention policy (checked with [`crate::retention::prepare`]), run by the leader.
    pub fn retention(mut self, policy: PreparedPolicy) -> Self {
        self.retention.push(policy);
        self
    }

    /// Runs the capacity autoscaler on the leader (see [`crate::autoscaler`]).
    pub fn autoscaler(mut self, parts: AutoscalerParts) -> Self {
        self.autoscaler = Some(parts);
        self
    }

    /// Validates the configuration — settings, task kinds, every cron expression and time zone,
    /// every cron job — and builds the engine. Nothing starts on an error. A cron schedule
    /// whose kind has no task here, in a queue this engine works, is an error (its workers
    /// would discard every fire as an unknown kind); one left to other processes is logged.
    pub fn build(self) -> Result<Engine, Error> {
        self.config.validate()?;
        for (kind, task) in &self.tasks {
            drover_core::validate::check_name("kind", kind)?;
            drover_core::validate::check_name("queue", &task.options().queue)?;
        }
        let defaults = job_defaults(&self.clock, &self.config, &self.tasks);
        let mut names = std::collections::HashSet::new();
        let mut cron = Vec::with_capacity(self.cron.len());
        for schedule in self.cron {
            if !names.insert(schedule.name.clone()) {
                return Err(Error::Config(format!(
                    "cron {:?} is declared twice",
                    schedule.name
                )));
            }
            let job = defaults.prepare(schedule.request()).map_err(|err| {
                Error::Config(format!("cron {:?}: invalid job: {err}", schedule.name))
            })?;
            let cron_job = CronJob {
                schedule: ParsedSchedule::parse(schedule)?,
                job,
            };
            let has_task = |kind: &str| self.tasks.contains_key(kind);
            match cron_job.runnable_here(has_task, &self.config.queues) {
                Runnable::Here => {}
                Runnable::Discarded(message) => return Err(Error::Config(message)),
                Runnable::Elsewhere {
                    message,
                    likely_mistake: true,
                } => tracing::warn!("{message}"),
                Runnable::Elsewhere { message, .. } => tracing::info!("{message}"),
            }
            cron.push(cron_job);
        }
        if let Some(parts) = &self.autoscaler {
            parts
                .config
                .validate()
                .map_err(|err| Error::Config(err.to_string()))?;
        }
        let process_id = self.config.process_id.clone().unwrap_or_else(process_id);
        let metrics = self.metrics.unwrap_or_default();
        if let Some(parts) = &self.autoscaler {
            metrics.attach_autoscaler(parts.metrics.clone());
        }
        for task in self.tasks.values() {
            metrics.declare(&task.options().queue, task.kind());
        }
        for queue in self.config.queues.keys() {
            metrics.declare_queue(queue);
        }
        for job in &cron {
            metrics.declare(&job.job.queue, &job.job.kind);
        }
        for policy in &self.retention {
            metrics.declare_table(&policy.policy.table);
        }
        Ok(Engine {
            autoscaler: self.autoscaler,
            store: Arc::new(MeteredStore::new(self.store, metrics.clone())),
            metrics,
            clock: self.clock,
            config: self.config,
            tasks: self.tasks,
            hooks: self.hooks,
            cron,
            retention: self.retention,
            process_id,
        })
    }
}

/// A configured engine, not yet running.
pub struct Engine {
    store: DynStore,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    tasks: HashMap<String, Arc<dyn RawTask>>,
    hooks: Vec<Arc<dyn Hook>>,
    cron: Vec<CronJob>,
    retention: Vec<PreparedPolicy>,
    autoscaler: Option<AutoscalerParts>,
    process_id: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("process_id", &self.process_id)
            .field("queues", &self.config.queues)
            .field("tasks", &self.tasks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A builder on `store` with the default configuration and the system clock.
    pub fn builder(store: DynStore) -> EngineBuilder {
        EngineBuilder {
            store,
            clock: Arc::new(SystemClock),
            config: EngineConfig::default(),
            tasks: HashMap::new(),
            hooks: Vec::new(),
            cron: Vec::new(),
            retention: Vec::new(),
            metrics: None,
            autoscaler: None,
        }
    }

    /// The cron schedules, checked.
    pub fn cron_jobs(&self) -> &[CronJob] {
        &self.cron
    }

    /// A client that enqueues with this engine's task defaults.
    pub fn client(&self) -> Client {
        client_for(&self.store, &self.clock, &self.config, &self.tasks)
    }

    /// This process's identity in leases.
    pub fn process_id(&self) -> &str {
        &self.process_id
    }

    /// Starts the foremen, the completer, the heartbeat and the rescuer.
    pub fn start(self) -> EngineHandle {
        let (outcomes, outcomes_rx) = mpsc::channel(crate::runtime::OUTCOME_QUEUE);
        let hook_concurrency = self.config.hook_concurrency;
        // What its presence row says it fires while it leads: nothing, if it may not lead.
        let cron_fired = self
            .cron
            .iter()
            .filter(|_| self.config.leader_eligible)
            .map(|job| job.schedule.schedule.signature())
            .collect();
        let (claims, claims_rx) = completer::ClaimDesk::new();
        let shared = Arc::new(Shared {
            store: self.store,
            clock: self.clock.clone(),
            config: self.config,
            tasks: self.tasks,
            hooks: Arc::new(Hooks::new(self.hooks, hook_concurrency)),
            process_id: self.process_id,
            running: Mutex::new(HashMap::new()),
            outcomes,
            claims,
            counters: Default::default(),
            settled: Default::default(),
            health: crate::health::Health::new(self.clock.clone()),
            metrics: self.metrics,
            failed: CancellationToken::new(),
            failure: Mutex::new(None),
            store_gave_up: Default::default(),
            cron: cron_fired,
        });
        let retention_policies: Vec<_> = self.retention.iter().map(|p| p.policy.clone()).collect();
        let cron_schedules: Vec<CronSchedule> = self
            .cron
            .iter()
            .map(|job| job.schedule.schedule.clone())
            .collect();
        let stop_claiming = CancellationToken::new();
        let stop_services = CancellationToken::new();
        let abandon = CancellationToken::new();
        let remote = RemoteWorkers::new(
            shared.store.clone(),
            shared.clock.clone(),
            shared.config.lease,
            shared.metrics.clone(),
        )
        .with_local_queues(shared.config.queues.keys().cloned())
        .with_hooks(shared.hooks.clone());
        let foremen = spawn_foremen(&shared, &stop_claiming);
        let mut services = spawn_process_loops(
            &shared,
            outcomes_rx,
            claims_rx,
            &remote,
            &abandon,
            &stop_claiming,
            &stop_services,
        );
        let systems = self
            .autoscaler
            .as_ref()
            .map(|parts| parts.config.systems.clone())
            .unwrap_or_default();
        let leader_services = leader_services(&shared, self.cron, self.retention, self.autoscaler);
        // Leadership ends as the shutdown begins, with the claiming: a process draining its
        // last jobs neither keeps nor takes the lead, which another can hold without a gap (a
        // draining process elected when the leader resigned held it until it exited, and one
        // killed at the end of its drain left none for a term).
        let (elector, leader) = spawn_elector(&shared, leader_services, &stop_claiming);
        services.push(elector);
        tracing::info!(process = %shared.process_id, queues = ?shared.config.queues,
            backend = shared.store.backend(), "engine started");
        let admin = Admin::new(
            shared.store.clone(),
            job_defaults(&shared.clock, &shared.config, &shared.tasks),
            cron_schedules,
        )
        .with_retention(retention_policies)
        .with_http_workers(remote.clone(), shared.process_id.clone())
        .with_hooks(shared.hooks.clone())
        .with_systems(systems)
        .with_metrics(shared.metrics.clone());
        EngineHandle {
            admin,
            remote,
            shared,
            stop_claiming,
            stop_services,
            abandon,
            foremen,
            services,
            leader,
        }
    }

    /// Starts the engine, runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> ShutdownReport {
        let handle = self.start();
        signal.await;
        handle.shutdown().await
    }
}

/// The services only the leader runs: pruning presence, counting jobs, cron, archiving, and
/// the autoscaler when there is one.
fn leader_services(
    shared: &Arc<Shared>,
    cron: Vec<CronJob>,
    retention: Vec<PreparedPolicy>,
    autoscaler: Option<AutoscalerParts>,
) -> Vec<Arc<dyn LeaderService>> {
    let mut leader_services: Vec<Arc<dyn LeaderService>> = vec![
        Arc::new(Pruner {
            shared: shared.clone(),
        }),
        Arc::new(Counter::new(shared.clone(), shared.config.counts)),
        Arc::new(SchedulerService {
            scheduler: Scheduler::new(shared.store.clone(), shared.clock.clone(), cron),
            shared: shared.clone(),
        }),
        Arc::new(Archiver {
            shared: shared.clone(),
            policies: retention,
        }),
    ];
    if let Some(parts) = autoscaler {
        leader_services.push(Arc::new(AutoscalerService {
            shared: shared.clone(),
            parts,
        }));
    }
    leader_services
}

/// The supervised leader election, which runs `leader_services` while this process leads and
/// resigns when `stop` fires, and the receiver of the current leader term.
fn spawn_elector(
    shared: &Arc<Shared>,
    leader_services: Vec<Arc<dyn LeaderService>>,
    stop: &CancellationToken,
) -> (JoinHandle<()>, watch::Receiver<Option<LeaderTerm>>) {
    let (leader_tx, leader) = watch::channel(None);
    let elector = Elector::new(shared.clone(), leader_services, leader_tx);
    let elector = supervise::spawn(
        shared,
        "leader election".into(),
        stop.clone(),
        elector.run(stop.clone()),
    );
    (elector, leader)
}

/// One supervised foreman per queue.
fn spawn_foremen(shared: &Arc<Shared>, stop_claiming: &CancellationToken) -> Vec<JoinHandle<()>> {
    shared
        .config
        .queues
        .iter()
        .map(|(queue, &concurrency)| {
            let name = format!("foreman {queue}");
            shared.health.register(&name, None);
            let run = foreman::run(
                shared.clone(),
                queue.clone(),
                concurrency,
                stop_claiming.clone(),
            );
            supervise::spawn(shared, name, stop_claiming.clone(), run)
        })
        .collect()
}

/// The loops every process runs, supervised: completer, heartbeat, presence and rescuer.
fn spawn_process_loops(
    shared: &Arc<Shared>,
    outcomes_rx: mpsc::Receiver<crate::runtime::Finished>,
    claims_rx: mpsc::UnboundedReceiver<completer::ClaimRequest>,
    remote: &RemoteWorkers,
    abandon: &CancellationToken,
    stop_claiming: &CancellationToken,
    stop_services: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let config = &shared.config;
    let health = &shared.health;
    health.register("completer", None);
    health.register("heartbeat", Some(config.heartbeat_every()));
    health.register("presence", Some(presence::INTERVAL));
    health.register("rescuer", Some(config.rescue_every()));
    // A process that does not compete never reports in: no deadline to miss.
    let election_deadline = config.leader_eligible.then_some(config.leader_ttl);
    health.register("leader election", election_deadline);
    let completer = supervise::spawn(
        shared,
        "completer".into(),
        abandon.clone(),
        completer::run(shared.clone(), outcomes_rx, claims_rx, abandon.clone()),
    );
    let heartbeat = supervise::spawn(
        shared,
        "heartbeat".into(),
        stop_services.clone(),
        heartbeat::run(shared.clone(), stop_services.clone()),
    );
    let presence = supervise::spawn(
        shared,
        "presence".into(),
        stop_services.clone(),
        presence::run(
            shared.clone(),
            remote.clone(),
            stop_claiming.clone(),
            stop_services.clone(),
        ),
    );
    // The rescuer runs in every process, not only the leader's: its writes are fenced, and
    // orphans of a stalled leader are reclaimed without waiting for a leader handover.
    let rescuer = Rescuer::new(
        shared.clone(),
        RescuerConfig {
            interval: config.rescue_every(),
            batch: 1000,
        },
    );
    let rescuer = supervise::spawn(shared, "rescuer".into(), stop_services.clone(), {
        let stop = stop_services.clone();
        async move { rescuer.run(stop).await }
    });
    vec![completer, heartbeat, presence, rescuer]
}

fn job_defaults(
    clock: &Arc<dyn Clock>,
    config: &EngineConfig,
    tasks: &HashMap<String, Arc<dyn RawTask>>,
) -> JobDefaults {
    let defaults: HashMap<String, TaskOptions> = tasks
        .iter()
        .map(|(kind, task)| (kind.clone(), task.options()))
        .collect();
    JobDefaults::new(clock.clone(), config.limits, defaults)
}

fn client_for(
    store: &DynStore,
    clock: &Arc<dyn Clock>,
    config: &EngineConfig,
    tasks: &HashMap<String, Arc<dyn RawTask>>,
) -> Client {
    Client::with_defaults(store.clone(), job_defaults(clock, config, tasks))
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShutdownReport {
    /// Runs still going when `shutdown_timeout` passed, whose cancellation was fired.
    pub cancelled: usize,
    /// Of those, runs that ignored the cancellation and were aborted.
    pub aborted: usize,
    /// Runs whose outcome could not be recorded (the database was unreachable); their leases
    /// will expire and they will be rescued.
    pub unrecorded: usize,
}

impl ShutdownReport {
    /// True when every run finished within the timeout.
    pub fn clean(&self) -> bool {
        self.cancelled == 0 && self.unrecorded == 0
    }
}

/// A running engine.
pub struct EngineHandle {
    admin: Admin,
    remote: RemoteWorkers,
    shared: Arc<Shared>,
    stop_claiming: CancellationToken,
    stop_services: CancellationToken,
    abandon: CancellationToken,
    foremen: Vec<JoinHandle<()>>,
    services: Vec<JoinHandle<()>>,
    leader: watch::Receiver<Option<LeaderTerm>>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("process_id", &self.shared.process_id)
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// A client that enqueues with this engine's task defaults.
    pub fn client(&self) -> Client {
        client_for(
            &self.shared.store,
            &self.shared.clock,
            &self.shared.config,
            &self.shared.tasks,
        )
    }

    /// The admin seam over this engine's store, with its task defaults and cron schedules.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// This engine's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The protocol for workers in other languages (leases over HTTP), on this engine's store.
    pub fn remote(&self) -> &RemoteWorkers {
        &self.remote
    }

    /// A cheap, cloneable view of this engine's liveness and metrics, for an HTTP server that
    /// lives beside it.
    pub fn probe(&self) -> EngineProbe {
        EngineProbe {
            shared: self.shared.clone(),
            leader: self.leader.clone(),
            remote: self.remote.clone(),
        }
    }

    /// What this engine did so far.
    pub fn stats(&self) -> EngineStats {
        self.shared.counters.snapshot()
    }

    /// Runs in progress (claimed and not yet recorded).
    pub fn running(&self) -> usize {
        self.shared.running_count()
    }

    /// This process's identity in leases.
    pub fn process_id(&self) -> &str {
        &self.shared.process_id
    }

    /// The term this process leads in, if it leads.
    pub fn leader_term(&self) -> Option<LeaderTerm> {
        *self.leader.borrow()
    }

    /// Changes whenever this process gains or loses leadership.
    pub fn leadership(&self) -> watch::Receiver<Option<LeaderTerm>> {
        self.leader.clone()
    }

    /// Every background loop: its last successful tick (by the engine's clock), and whether it
    /// is ok (running, and ticking as often as it should).
    pub fn health(&self) -> HealthReport {
        self.shared
            .health
            .report(&self.shared.store.background_health())
    }

    /// Completes, with what happened, if a background loop ends unasked or panics: the engine
    /// is then half-alive and should be shut down (`drover worker` exits non-zero).
    pub async fn failure(&self) -> String {
        self.shared.failed.cancelled().await;
        self.shared
            .failure
            .lock()
            .expect("failure lock poisoned")
            .clone()
            .unwrap_or_default()
    }

    /// Shuts down with the configured `shutdown_timeout`. See the module documentation.
    pub async fn shutdown(self) -> ShutdownReport {
        let timeout = self.shutdown_timeout();
        self.shutdown_within(timeout).await
    }

    /// Whether a background loop gave up on the store: every call it made for a while failed
    /// with an error that retrying does not fix (its tables dropped, say). Running jobs cannot
    /// record their outcomes then, and will run again once their leases expire on a mended
    /// database, so a shutdown need not wait for them.
    pub fn store_gave_up(&self) -> bool {
        self.shared
            .store_gave_up
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How long [`shutdown`](Self::shutdown) lets running jobs finish (the configured
    /// `shutdown_timeout`).
    pub fn shutdown_timeout(&self) -> Duration {
        self.shared.config.shutdown_timeout
    }

    /// Shuts down, letting running jobs finish for up to `timeout`.
    pub async fn shutdown_within(self, timeout: Duration) -> ShutdownReport {
        self.shutdown_within_then(timeout, async {}).await
    }

    /// Shuts down as [`shutdown_within`](Self::shutdown_within), awaiting `before_hooks` once
    /// the engine has stopped and before its last throughput flush and the job-end hooks'
    /// drain: where a server that records HTTP workers' outcomes stops, so that the outcomes
    /// it takes until then are counted and run their hooks.
    pub async fn shutdown_within_then(
        self,
        timeout: Duration,
        before_hooks: impl std::future::Future<Output = ()>,
    ) -> ShutdownReport {
        let shared = &self.shared;
        let grace = shared.config.cancel_grace;
        let mut report = ShutdownReport::default();

        self.stop_claiming.cancel();
        for foreman in self.foremen {
            let _ = foreman.await;
        }
        tracing::info!(
            running = shared.running_count(),
            ?timeout,
            "stopped claiming; waiting for running jobs"
        );

        if !wait_idle(shared, timeout).await {
            report.cancelled = shared.stop_all(StopReason::Shutdown);
            // A zero timeout is the caller's choice (a second signal, a store given up on),
            // not a wait that ran out.
            let why = if timeout.is_zero() {
                "cancelling running jobs at once"
            } else {
                "shutdown timeout passed; cancelling running jobs"
            };
            tracing::warn!(jobs = report.cancelled, ?grace, "{why}");
            if !wait_idle(shared, grace).await {
                report.aborted = shared.running_count();
                tracing::warn!(
                    jobs = report.aborted,
                    "jobs ignored cancellation; aborting them"
                );
                shared.abort_all();
                if !wait_idle(shared, grace).await {
                    report.unrecorded = shared.running_count();
                    tracing::error!(
                        jobs = report.unrecorded,
                        "could not record the outcome of some jobs; they will be rescued when their lease expires"
                    );
                }
            }
        }
        self.abandon.cancel();
        self.stop_services.cancel();
        for service in self.services {
            let _ = service.await;
        }
        before_hooks.await;
        // Outcomes recorded after presence's last flush (the completer's last batch, remote
        // workers' completions) are flushed here.
        crate::services::presence::flush_throughput(shared).await;
        let unhooked = shared.hooks.shutdown(grace).await;
        if unhooked > 0 {
            tracing::warn!(
                jobs = unhooked,
                ?grace,
                "stopped before every job-end hook had run"
            );
        }
        let stats = shared.counters.snapshot();
        tracing::info!(
            claimed = stats.claimed,
            completed = stats.completed,
            retried = stats.retried,
            discarded = stats.discarded,
            cancelled = stats.cancelled,
            handed_back = stats.handed_back,
            stale_rejected = stats.stale_rejected,
            rescued = stats.rescued,
            "engine stopped"
        );
        report
    }
}

/// Waits until no run is in progress, for at most `limit`. True when idle.
async fn wait_idle(shared: &Shared, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let settled = shared.settled.notified();
        tokio::pin!(settled);
        settled.as_mut().enable();
        if shared.running_count() == 0 {
            return true;
        }
        tokio::select! {
            _ = settled => {}
            _ = tokio::time::sleep_until(deadline) => return shared.running_count() == 0,
        }
    }
}

/// The host and pid encoded in a process id made by [`process_id`].
pub(crate) fn host_and_pid(process_id: &str) -> (String, u32) {
    let mut parts = process_id.rsplitn(3, ':');
    let _random = parts.next();
    let pid = parts.next().and_then(|p| p.parse().ok());
    match (pid, parts.next()) {
        (Some(pid), Some(host)) => (host.to_owned(), pid),
        _ => (process_id.to_owned(), std::process::id()),
    }
}

/// `host:pid:random`: unique per process, even for processes sharing a host name.
fn process_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
}
