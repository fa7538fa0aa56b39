//! The engine's hardening on a real SQLite file: a burst of job ends through the bounded hook
//! pool, a run that always ends whatever happens to its executor, cron calls that hang,
//! outcomes that the store stops recording, and claims that take a while.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use drover::{Engine, EngineConfig, EnqueueRequest, JobEnd, RawTask, TaskOptions};
use drover_core::{DynStore, JobId, JobState, Store};
use drover_sqlite::{SqliteConfig, SqliteStore};

async fn store() -> (DynStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("engine.db"))).unwrap();
    store.migrate().await.unwrap();
    (Arc::new(store), dir)
}

fn quick_config() -> EngineConfig {
    EngineConfig {
        poll_interval: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(5),
        cancel_grace: Duration::from_millis(500),
        ..EngineConfig::default()
    }
}

/// How many calls of a [`GaugeHook`] run at once, the most seen, and the jobs it saw.
#[derive(Default)]
struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    seen: std::sync::Mutex<Vec<JobId>>,
}

struct GaugeHook(Arc<Gauge>);

#[async_trait]
impl drover::Hook for GaugeHook {
    async fn on_job_end(&self, event: &JobEnd) -> Result<(), String> {
        use std::sync::atomic::Ordering::SeqCst;
        let gauge = &self.0;
        let now = gauge.now.fetch_add(1, SeqCst) + 1;
        gauge.most.fetch_max(now, SeqCst);
        // Long enough that an unbounded pool would run many at once.
        tokio::time::sleep(Duration::from_millis(5)).await;
        gauge.seen.lock().unwrap().push(event.id);
        gauge.now.fetch_sub(1, SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_job_ends_waits_for_the_hook_pool_and_loses_no_hook() {
    let (store, _dir) = store().await;
    let client = Engine::builder(store.clone())
        .builtin_tasks()
        .build()
        .unwrap()
        .client();
    let n = 3_000;
    let requests: Vec<_> = (0..n)
        .map(|_| EnqueueRequest::raw("drover.noop", "{}"))
        .collect();
    let mut ids: Vec<JobId> = client
        .enqueue_many(requests)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    let gauge = Arc::new(Gauge::default());
    let handle = Engine::builder(store.clone())
        .config(EngineConfig {
            queues: [("default".to_owned(), 50)].into(),
            hook_concurrency: 3,
            ..quick_config()
        })
        .builtin_tasks()
        .hook(GaugeHook(gauge.clone()))
        .build()
        .unwrap()
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while gauge.seen.lock().unwrap().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hooks never all ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(handle.shutdown().await.clean());
    let most = gauge.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        most <= 3,
        "{most} hooks ran at once, more than the pool's 3"
    );
    assert!(most >= 2, "the pool ran hooks side by side ({most})");
    let mut seen = gauge.seen.lock().unwrap().clone();
    seen.sort_unstable();
    ids.sort_unstable();
    assert_eq!(seen, ids, "each job's hook ran once");
}

/// A task whose options panic once armed: the executor reads them outside the handler, so an
/// armed run panics where no handler's panic guard reaches.
struct BadOptions(Arc<AtomicBool>);

#[async_trait]
impl RawTask for BadOptions {
    fn kind(&self) -> &str {
        "test.bad_options"
    }

    fn options(&self) -> TaskOptions {
        if self.0.load(Ordering::SeqCst) {
            panic!("options bug");
        }
        TaskOptions::default()
    }

    async fn run_raw(
        &self,
        _ctx: drover::JobContext,
        _args: String,
    ) -> Result<(), drover::JobError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_executor_panics_outside_the_handler_still_ends() {
    let (store, _dir) = store().await;
    let armed = Arc::new(AtomicBool::new(false));
    let handle = Engine::builder(store.clone())
        .config(EngineConfig {
            // Short, so that were the run left to its lease it would be rescued quickly: the
            // assertions below tell an outcome recorded by the guard from a rescue.
            lease: Duration::from_secs(2),
            ..quick_config()
        })
        .raw_task(Arc::new(BadOptions(armed.clone())))
        .build()
        .unwrap()
        .start();
    armed.store(true, Ordering::SeqCst);
    // Enqueued through a client whose task is never armed: the enqueue reads options too.
    let mut request = EnqueueRequest::raw("test.bad_options", "{}");
    request.max_attempts = Some(2);
    let client = Engine::builder(store.clone())
        .raw_task(Arc::new(BadOptions(Arc::new(AtomicBool::new(false)))))
        .build()
        .unwrap()
        .client();
    let id = client.enqueue(request).await.unwrap().id;
    // Attempt 1 fails, attempt 2 (after the default 1 s backoff) is discarded: two recorded
    // failures, within the backoff plus a margin, and no rescue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let job = loop {
        let job = store.job_get(id).await.unwrap().unwrap();
        if job.state == JobState::Discarded {
            break job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never ended: {job:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job.attempt, 2, "{job:#?}");
    assert_eq!(job.errors.len(), 2, "{job:#?}");
    for error in &job.errors {
        assert!(error.message.contains("executor stopped"), "{job:#?}");
    }
    assert_eq!(
        handle.stats().rescued,
        0,
        "recorded by the guard, not rescued"
    );
    handle.shutdown().await;
}

/// The system clock until armed; then every reading panics, as a bug in a loop would.
#[derive(Debug, Default)]
struct FaultyClock(AtomicBool);

impl drover_core::Clock for FaultyClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }

    fn store_now(&self) -> Option<jiff::Timestamp> {
        if self.0.load(Ordering::SeqCst) {
            panic!("clock bug");
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_that_panics_fails_the_engine_and_shows_in_health() {
    let (store, _dir) = store().await;
    let clock = Arc::new(FaultyClock::default());
    let handle = Engine::builder(store.clone())
        .clock(clock.clone())
        .config(EngineConfig {
            lease: Duration::from_secs(1),
            rescue_interval: Some(Duration::from_millis(100)),
            ..quick_config()
        })
        .builtin_tasks()
        .build()
        .unwrap()
        .start();
    // Every loop is covered, the leader's services once it leads.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let report = loop {
        let report = handle.health();
        if report.loops.iter().any(|l| l.name == "cron scheduler")
            && report
                .loops
                .iter()
                .any(|l| l.name == "rescuer" && l.last_tick.is_some())
        {
            break report;
        }
        assert!(tokio::time::Instant::now() < deadline, "{report:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(report.ok, "{report:#?}");
    let names: Vec<_> = report.loops.iter().map(|l| l.name.as_str()).collect();
    for name in [
        "completer",
        "foreman default",
        "heartbeat",
        "leader election",
        "presence",
        "process pruner",
        "rescuer",
        "retention archiver",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(
        serde_json::to_string(&report)
            .unwrap()
            .contains("\"last_tick\"")
    );

    clock.0.store(true, Ordering::SeqCst);
    // The rescuer reads the clock every 100 ms: it panics first or soon.
    let failure = tokio::time::timeout(Duration::from_secs(20), handle.failure())
        .await
        .expect("the engine reports the dead loop");
    assert!(failure.contains("panicked: clock bug"), "{failure}");
    let report = handle.health();
    assert!(!report.ok);
    let failed = report
        .loops
        .iter()
        .find(|l| l.error.as_deref().is_some_and(|e| e.contains("clock bug")))
        .unwrap_or_else(|| panic!("{report:#?}"));
    assert!(!failed.ok);
    clock.0.store(false, Ordering::SeqCst);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stuck_in_a_hung_call_reports_stepping_down_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.db");
    let mut config = SqliteConfig::new(&path);
    // A long busy timeout: a write behind the lock below hangs for 30 s.
    config.busy_timeout = Duration::from_secs(30);
    let store = SqliteStore::open(config).unwrap();
    store.migrate().await.unwrap();
    let ttl = Duration::from_secs(3);
    let handle = Engine::builder(Arc::new(store))
        .config(EngineConfig {
            leader_ttl: ttl,
            ..quick_config()
        })
        .builtin_tasks()
        .cron(drover::cron::CronSchedule {
            name: "every-second".into(),
            expression: "* * * * * *".into(),
            timezone: None,
            kind: "drover.noop".into(),
            args: "{}".into(),
            queue: None,
            catch_up: drover::cron::CatchUp::Skip,
        })
        .build()
        .unwrap()
        .start();
    let mut leadership = handle.leadership();
    tokio::time::timeout(
        Duration::from_secs(20),
        leadership.wait_for(|t| t.is_some()),
    )
    .await
    .expect("it leads")
    .unwrap();
    // Another connection holds the write lock: the reelection and the cron scheduler's next
    // fire (within a second) both hang behind it.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let locked = tokio::time::Instant::now();
    // The term is trusted for ttl − ttl/5 after its last renewal; then it must report the
    // step-down, not wait for the scheduler's hung write (30 s). A margin of 2 s.
    let bound = ttl + Duration::from_secs(2);
    let stepped_down = tokio::time::timeout(bound, leadership.wait_for(|t| t.is_none())).await;
    let took = locked.elapsed();
    blocker.execute_batch("ROLLBACK").unwrap();
    assert!(
        stepped_down.is_ok(),
        "still reported leader {took:?} after the lock"
    );
    assert!(handle.leader_term().is_none());
    handle.shutdown().await;
}

/// The scheduler's deadline on each database call (`CALL_TIMEOUT` in
/// crates/drover/src/services/scheduler.rs).
const CRON_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs an engine that fires a no-op every second on a store where the first `call` never
/// answers, and checks that the scheduler gives that call up and fires again.
async fn a_hung_cron_call_times_out_and_the_scheduler_fires_again(call: support::Call) {
    let (inner, _dir) = store().await;
    let store = Arc::new(support::StallingStore::new(inner));
    store.hang(call, 1);
    let handle = Engine::builder(store.clone())
        .config(quick_config())
        .builtin_tasks()
        .cron(drover::cron::CronSchedule {
            name: "every-second".into(),
            expression: "* * * * * *".into(),
            timezone: None,
            kind: "drover.noop".into(),
            args: "{}".into(),
            queue: None,
            catch_up: drover::cron::CatchUp::Skip,
        })
        .build()
        .unwrap()
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.hung(call) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduler never made the call that hangs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fired_before = store.fired();
    // Without a deadline the scheduler waits on the hung call for ever; with one, it fires at
    // the next second after the timeout. A generous margin for a loaded machine.
    let hung = tokio::time::Instant::now();
    let deadline = hung + CRON_CALL_TIMEOUT + Duration::from_secs(20);
    while store.fired() == fired_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cron fire {:?} after the hung {call:?}",
            hung.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.hung(call), 1, "only the one call hung");
    assert!(handle.health().ok, "{:#?}", handle.health());
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_cron_fire_times_out_and_the_scheduler_fires_again() {
    a_hung_cron_call_times_out_and_the_scheduler_fires_again(support::Call::CronFire).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_cron_states_times_out_and_the_scheduler_fires_again() {
    a_hung_cron_call_times_out_and_the_scheduler_fires_again(support::Call::CronStates).await;
}

/// Outcomes the engine's channel holds (`OUTCOME_QUEUE` in crates/drover/src/runtime.rs).
const OUTCOME_QUEUE: usize = 4096;
/// Most outcomes the completer takes into one write (`MAX_BATCH` in completer.rs).
const MAX_BATCH: usize = 1024;

/// A task that counts how many times its handler started, then takes `.1` (none for zero).
struct CountedNoop(Arc<std::sync::atomic::AtomicUsize>, Duration);

#[async_trait]
impl RawTask for CountedNoop {
    fn kind(&self) -> &str {
        "test.counted"
    }

    async fn run_raw(
        &self,
        _ctx: drover::JobContext,
        _args: String,
    ) -> Result<(), drover::JobError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        if !self.1.is_zero() {
            tokio::time::sleep(self.1).await;
        }
        Ok(())
    }
}

/// Enqueues `n` jobs for [`CountedNoop`].
async fn enqueue_counted(store: &Arc<support::StallingStore>, n: usize) {
    let client = Engine::builder(store.clone())
        .raw_task(Arc::new(CountedNoop(Arc::default(), Duration::ZERO)))
        .build()
        .unwrap()
        .client();
    let requests: Vec<_> = (0..n)
        .map(|_| EnqueueRequest::raw("test.counted", "{}"))
        .collect();
    client.enqueue_many(requests).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_wait_while_outcomes_cannot_be_recorded_and_all_are_recorded_after() {
    let (inner, _dir) = store().await;
    let store = Arc::new(support::StallingStore::new(inner));
    let concurrency = 20;
    // While nothing is recorded, the handlers that have run are: the completer's batch at the
    // gate, the channel's outcomes, and one executor waiting to send in each slot.
    let most_held = MAX_BATCH + OUTCOME_QUEUE + concurrency;
    // Enough that executors queueing without limit would run well past that.
    let n = most_held + 2_000;
    enqueue_counted(&store, n).await;
    store.close_finish();
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handle = Engine::builder(store.clone())
        .config(EngineConfig {
            queues: [("default".to_owned(), concurrency)].into(),
            // Frequent heartbeats: the test's sign that the engine went on working meanwhile.
            heartbeat_interval: Some(Duration::from_millis(200)),
            ..quick_config()
        })
        .raw_task(Arc::new(CountedNoop(started.clone(), Duration::ZERO)))
        .build()
        .unwrap()
        .start();
    let starts = || started.load(Ordering::SeqCst);
    // The pipeline fills: the completer's first write waits at the gate with its batch, then
    // the channel fills, then every slot's executor waits to send.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let full = loop {
        let now_started = starts();
        let at_gate = store.outcomes_at_gate();
        assert!(
            now_started <= most_held,
            "{now_started} handlers ran while nothing could be recorded, more than {most_held}"
        );
        if at_gate > 0 && now_started >= at_gate + OUTCOME_QUEUE + concurrency {
            break now_started;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pipeline never filled: {now_started} started, {at_gate} at the gate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let at_gate = store.outcomes_at_gate();
    assert_eq!(
        full,
        at_gate + OUTCOME_QUEUE + concurrency,
        "handlers ran beyond a full pipeline ({at_gate} outcomes at the gate)"
    );
    // Handlers stop starting: nothing more has run after several more heartbeats (each a
    // full turn of a loop that runs beside the executors).
    let beats = store.heartbeats();
    while store.heartbeats() < beats + 5 {
        assert!(tokio::time::Instant::now() < deadline, "no heartbeats");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(starts(), full, "handlers went on starting");
    assert_eq!(handle.stats().completed, 0, "nothing recorded yet");

    store.open_finish();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while handle.stats().completed < n as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything was recorded: {:?}",
            handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(handle.shutdown().await.clean());
    assert_eq!(starts(), n, "each job ran once");
    let completed: u64 = store
        .job_count_by_queue()
        .await
        .unwrap()
        .iter()
        .filter(|c| c.state == JobState::Completed)
        .map(|c| c.count)
        .sum();
    assert_eq!(completed, n as u64, "every job recorded completed");
}

/// Sleeps for its args' `ms`, counting its starts.
struct CountedSleep(Arc<std::sync::atomic::AtomicUsize>);

#[async_trait]
impl RawTask for CountedSleep {
    fn kind(&self) -> &str {
        "test.sleep"
    }

    async fn run_raw(
        &self,
        _ctx: drover::JobContext,
        args: String,
    ) -> Result<(), drover::JobError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let args: serde_json::Value = serde_json::from_str(&args).unwrap();
        tokio::time::sleep(Duration::from_millis(args["ms"].as_u64().unwrap())).await;
        Ok(())
    }
}

/// An outage longer than the lease: every lease expires by the database's clock while the
/// runs go on and their outcomes wait. Once the database answers again, the owner renews its
/// leases and records what finished (here 3 s later, as a completer between two tries would)
/// before any rescue: no job runs twice, none is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_longer_than_the_lease_the_owner_records_before_any_rescue() {
    let (inner, _dir) = store().await;
    let store = Arc::new(support::StallingStore::new(inner));
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let requests: Vec<EnqueueRequest> = [1_000, 1_000, 1_000, 1_000, 9_000, 9_000]
        .iter()
        .map(|ms| EnqueueRequest::raw("test.sleep", format!(r#"{{"ms":{ms}}}"#)))
        .collect();
    Engine::builder(store.clone())
        .raw_task(Arc::new(CountedSleep(Arc::default())))
        .build()
        .unwrap()
        .client()
        .enqueue_many(requests)
        .await
        .unwrap();
    let lease = Duration::from_secs(2);
    let handle = Engine::builder(store.clone())
        .config(EngineConfig {
            queues: [("default".to_owned(), 6)].into(),
            lease,
            // A rescue pass soon after the outage, a heartbeat later: the rescuer must hold
            // back on its own, not win or lose a race.
            rescue_interval: Some(Duration::from_millis(100)),
            heartbeat_interval: Some(Duration::from_secs(1)),
            ..quick_config()
        })
        .raw_task(Arc::new(CountedSleep(started.clone())))
        .build()
        .unwrap()
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while started.load(Ordering::SeqCst) < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the jobs did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.set_down(true);
    store.close_finish();
    // The outage itself: three leases, in which the short runs end.
    tokio::time::sleep(3 * lease).await;
    store.set_down(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    store.open_finish();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handle.stats().completed < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all recorded: {:?}",
            handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(handle.shutdown().await.clean());
    assert_eq!(started.load(Ordering::SeqCst), 6, "a job ran twice");
    let all = drover_core::JobListParams {
        limit: 10,
        ..Default::default()
    };
    for job in store.job_list(all).await.unwrap() {
        assert_eq!(job.state, JobState::Completed, "{job:?}");
        assert_eq!(job.attempt, 1, "{job:?}");
    }
}

/// While claims are slow and jobs fast, a foreman sends a second claim beside the first (its
/// workers ran through the buffer meanwhile), never a third, and every job runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_queue_has_two_claims_out_while_claims_are_slow_and_never_more() {
    let (inner, _dir) = store().await;
    let store = Arc::new(support::StallingStore::new(inner));
    let n = 3_000;
    enqueue_counted(&store, n).await;
    // Jobs of a few milliseconds give the foreman time to see each slot free up, so a claim
    // goes out while the buffer still holds jobs, and the second claim's occasion (the buffer
    // run through while the first is out) comes however loaded the machine is. With no-op
    // jobs a busy machine could finish a whole batch before the foreman looked.
    store.slow_claims(Duration::from_millis(40));
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handle = Engine::builder(store.clone())
        .config(EngineConfig {
            queues: [("default".to_owned(), 10)].into(),
            ..quick_config()
        })
        .raw_task(Arc::new(CountedNoop(
            started.clone(),
            Duration::from_millis(2),
        )))
        .build()
        .unwrap()
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while handle.stats().completed < n as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog did not drain: {:?}",
            handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(handle.shutdown().await.clean());
    assert_eq!(store.claims_most(), 2, "claims out at once");
    assert_eq!(started.load(Ordering::SeqCst), n, "each job ran once");
}
