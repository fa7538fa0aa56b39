//! The engine on a real SQLite file: lifecycle, retries, poison input, cancellation, hooks and
//! graceful shutdown. Tests wait on signals (hooks, state changes), never on fixed sleeps.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use drover::{
    Engine, EngineConfig, EngineHandle, EnqueueRequest, JobContext, JobEnd, JobError, Task,
    TaskOptions,
};
use drover_core::{Delivery, DynStore, JobId, JobRecord, JobState, RetryPolicy, Store};
use drover_sqlite::{SqliteConfig, SqliteStore};
use serde::Deserialize;
use tokio::sync::mpsc;

struct Harness {
    store: DynStore,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("engine.db"))).unwrap();
    store.migrate().await.unwrap();
    Harness {
        store: Arc::new(store),
        _dir: dir,
    }
}

fn quick_config() -> EngineConfig {
    EngineConfig {
        // Long poll: a test that passes proves the wake-up path, not the poll.
        poll_interval: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(5),
        cancel_grace: Duration::from_millis(500),
        ..EngineConfig::default()
    }
}

/// Hook events, as a channel the test can wait on.
fn ends() -> (
    impl Fn(&JobEnd) + Send + Sync + 'static,
    mpsc::UnboundedReceiver<JobEnd>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (move |event: &JobEnd| drop(tx.send(event.clone())), rx)
}

async fn next_end(rx: &mut mpsc::UnboundedReceiver<JobEnd>) -> JobEnd {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a job ended within 10 s")
        .expect("hook channel open")
}

async fn get(store: &DynStore, id: JobId) -> JobRecord {
    store.job_get(id).await.unwrap().unwrap()
}

/// Waits until the job satisfies `check`, re-reading it whenever the engine could have moved it.
async fn wait_for(store: &DynStore, id: JobId, check: impl Fn(&JobRecord) -> bool) -> JobRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let job = get(store, id).await;
        if check(&job) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} never got there: {job:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the engine has taken `n` jobs in (and, with a free slot each, started them). A
/// job's state is `running` from its claim's commit, which on SQLite can be the enqueue's own
/// (a parked claim), before the foreman has it: a shutdown then hands it back unstarted.
async fn wait_taken(handle: &EngineHandle, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handle.running() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the engine took {} of {n} jobs",
            handle.running()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn enqueue(handle: &EngineHandle, request: EnqueueRequest) -> JobId {
    handle.client().enqueue(request).await.unwrap().id
}

#[derive(Deserialize)]
struct FlakyArgs {
    fail_times: i32,
}

/// Fails its first `fail_times` attempts, naming the step it failed in.
struct Flaky;

#[async_trait]
impl Task for Flaky {
    const KIND: &'static str = "test.flaky";
    type Args = FlakyArgs;

    fn options(&self) -> TaskOptions {
        TaskOptions {
            max_attempts: 3,
            retry: RetryPolicy {
                base: Duration::from_millis(20),
                max: Duration::from_millis(50),
                jitter: 0.0,
            },
            ..TaskOptions::default()
        }
    }

    async fn run(&self, ctx: JobContext, args: FlakyArgs) -> Result<(), JobError> {
        ctx.step("fetch");
        ctx.step("upload");
        if ctx.attempt() <= args.fail_times {
            return Err(JobError::failed(format!(
                "attempt {} failed",
                ctx.attempt()
            )));
        }
        Ok(())
    }
}

struct Panics;

#[async_trait]
impl Task for Panics {
    const KIND: &'static str = "test.panics";
    type Args = serde_json::Value;

    fn options(&self) -> TaskOptions {
        TaskOptions {
            max_attempts: 2,
            retry: RetryPolicy {
                base: Duration::from_millis(10),
                max: Duration::from_millis(10),
                jitter: 0.0,
            },
            ..TaskOptions::default()
        }
    }

    async fn run(&self, _ctx: JobContext, _args: serde_json::Value) -> Result<(), JobError> {
        panic!("handler bug");
    }
}

/// Sleeps, ignoring cancellation: a badly behaved handler.
struct Stubborn;

#[async_trait]
impl Task for Stubborn {
    const KIND: &'static str = "test.stubborn";
    type Args = serde_json::Value;

    async fn run(&self, _ctx: JobContext, _args: serde_json::Value) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

struct Slow;

#[async_trait]
impl Task for Slow {
    const KIND: &'static str = "test.slow";
    type Args = serde_json::Value;

    fn options(&self) -> TaskOptions {
        TaskOptions {
            timeout: Some(Duration::from_millis(100)),
            max_attempts: 1,
            ..TaskOptions::default()
        }
    }

    async fn run(&self, ctx: JobContext, _args: serde_json::Value) -> Result<(), JobError> {
        ctx.step("waiting");
        ctx.cancellation().cancelled().await;
        Err(JobError::Cancelled)
    }
}

fn engine(h: &Harness, on_end: impl Fn(&JobEnd) + Send + Sync + 'static) -> EngineHandle {
    engine_with(h, quick_config(), on_end)
}

/// A started engine with these settings, the built-in tasks and this file's tasks.
fn engine_with(
    h: &Harness,
    config: EngineConfig,
    on_end: impl Fn(&JobEnd) + Send + Sync + 'static,
) -> EngineHandle {
    Engine::builder(h.store.clone())
        .config(config)
        .builtin_tasks()
        .task(Flaky)
        .task(Panics)
        .task(Stubborn)
        .task(Slow)
        .on_job_end(on_end)
        .build()
        .unwrap()
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_and_complete_with_hooks() {
    let h = harness().await;
    let (hook, mut rx) = ends();
    let handle = engine(&h, hook);
    let id = enqueue(&handle, EnqueueRequest::raw("drover.noop", "{}")).await;
    let end = next_end(&mut rx).await;
    assert_eq!((end.id, end.state), (id, JobState::Completed));
    let job = get(&h.store, id).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.attempt, 1);
    assert!(job.completed_at.is_some());
    assert_eq!(
        job.lease_owner.as_deref(),
        Some(handle.process_id()),
        "a finished job names the process that ran it"
    );
    assert!(handle.shutdown().await.clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_with_backoff_and_record_the_step() {
    let h = harness().await;
    let (hook, mut rx) = ends();
    let handle = engine(&h, hook);
    let recovers = enqueue(
        &handle,
        EnqueueRequest::raw("test.flaky", r#"{"fail_times":2}"#),
    )
    .await;
    let end = next_end(&mut rx).await;
    assert_eq!((end.id, end.state), (recovers, JobState::Completed));
    let job = get(&h.store, recovers).await;
    assert_eq!(job.attempt, 3);
    assert_eq!(job.errors.len(), 2);
    assert_eq!(job.errors[0].message, "attempt 1 failed");
    assert_eq!(job.errors[0].step.as_deref(), Some("upload"));
    assert!(job.errors[1].at >= job.errors[0].at + jiff::SignedDuration::from_millis(20));

    let gives_up = enqueue(
        &handle,
        EnqueueRequest::raw("test.flaky", r#"{"fail_times":5}"#),
    )
    .await;
    let end = next_end(&mut rx).await;
    assert_eq!((end.id, end.state), (gives_up, JobState::Discarded));
    assert_eq!(end.error.as_deref(), Some("attempt 3 failed"));
    let job = get(&h.store, gives_up).await;
    assert_eq!(job.errors.len(), 3, "every attempt recorded");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_input_is_discarded_without_killing_the_worker() {
    let h = harness().await;
    let (hook, mut rx) = ends();
    let handle = engine(&h, hook);
    let unknown = enqueue(&handle, EnqueueRequest::raw("no.such.kind", "{}")).await;
    let bad_args = enqueue(
        &handle,
        EnqueueRequest::raw("test.flaky", r#"{"fail_times":"many"}"#),
    )
    .await;
    let panics = enqueue(&handle, EnqueueRequest::raw("test.panics", "{}")).await;
    let mut ended = Vec::new();
    for _ in 0..3 {
        ended.push(next_end(&mut rx).await);
    }
    ended.sort_by_key(|e| e.id);
    assert!(ended.iter().all(|e| e.state == JobState::Discarded));
    assert!(ended[0].error.as_ref().unwrap().contains("unknown kind"));
    assert!(ended[1].error.as_ref().unwrap().contains("invalid args"));
    assert!(
        ended[2]
            .error
            .as_ref()
            .unwrap()
            .contains("panicked: handler bug")
    );
    assert_eq!(get(&h.store, unknown).await.attempt, 1);
    assert_eq!(
        get(&h.store, bad_args).await.attempt,
        1,
        "bad args are not retried"
    );
    assert_eq!(
        get(&h.store, panics).await.errors.len(),
        2,
        "a panic is a failed attempt"
    );

    // The worker is still alive.
    let after = enqueue(&handle, EnqueueRequest::raw("drover.noop", "{}")).await;
    assert_eq!(next_end(&mut rx).await.id, after);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_jobs_run_when_due_not_before() {
    let h = harness().await;
    let (hook, mut rx) = ends();
    let handle = engine(&h, hook);
    let id = enqueue(
        &handle,
        EnqueueRequest::raw("drover.noop", "{}").delay(Duration::from_millis(300)),
    )
    .await;
    assert_eq!(get(&h.store, id).await.state, JobState::Scheduled);
    let end = next_end(&mut rx).await;
    assert_eq!(end.id, id);
    let job = get(&h.store, id).await;
    assert!(job.attempted_at.unwrap() >= job.scheduled_at);
    assert!(job.scheduled_at >= job.created_at + jiff::SignedDuration::from_millis(250));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_keys_return_the_unfinished_job() {
    let h = harness().await;
    let (hook, mut rx) = ends();
    let handle = engine(&h, hook);
    let client = handle.client();
    let request = || EnqueueRequest::raw("drover.sleep", r#"{"ms":200}"#).unique_key("nightly");
    let first = client.enqueue(request()).await.unwrap();
    let second = client.enqueue(request()).await.unwrap();
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(first.id, second.id);
    assert_eq!(next_end(&mut rx).await.id, first.id);
    let third = client.enqueue(request()).await.unwrap();
    assert!(!third.duplicate, "the key is free once the first finished");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_it() {
    let h = harness().await;
    let (hook, mut rx) = ends();
    let handle = engine(&h, hook);
    let id = enqueue(
        &handle,
        EnqueueRequest::raw("drover.sleep", r#"{"ms":60000}"#),
    )
    .await;
    wait_for(&h.store, id, |j| j.state == JobState::Running).await;
    let result = h
        .store
        .job_cancel(drover_core::JobCancelParams { id, now: None })
        .await
        .unwrap();
    assert_eq!(result, drover_core::CancelResult::Requested);
    let end = next_end(&mut rx).await;
    assert_eq!((end.id, end.state), (id, JobState::Cancelled));
    assert_eq!(get(&h.store, id).await.step.as_deref(), Some("sleeping"));
    assert!(handle.shutdown().await.clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_a_failed_attempt() {
    let h = harness().await;
    let (hook, mut rx) = ends();
    let handle = engine(&h, hook);
    let id = enqueue(&handle, EnqueueRequest::raw("test.slow", "{}")).await;
    let end = next_end(&mut rx).await;
    assert_eq!((end.id, end.state), (id, JobState::Discarded));
    let job = get(&h.store, id).await;
    assert_eq!(job.errors[0].message, "timed out");
    assert_eq!(job.errors[0].step.as_deref(), Some("waiting"));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_short_jobs_finish() {
    let h = harness().await;
    let (hook, _rx) = ends();
    let handle = engine(&h, hook);
    let id = enqueue(
        &handle,
        EnqueueRequest::raw("drover.sleep", r#"{"ms":300}"#),
    )
    .await;
    wait_for(&h.store, id, |j| j.state == JobState::Running).await;
    wait_taken(&handle, 1).await;
    let report = handle.shutdown_within(Duration::from_secs(5)).await;
    assert!(report.clean(), "{report:?}");
    assert_eq!(get(&h.store, id).await.state, JobState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_long_jobs_without_using_an_attempt() {
    let h = harness().await;
    let (hook, _rx) = ends();
    let handle = engine(&h, hook);
    let client = handle.client();
    let cooperative = enqueue(
        &handle,
        EnqueueRequest::raw("drover.sleep", r#"{"ms":60000}"#),
    )
    .await;
    let stubborn = enqueue(&handle, EnqueueRequest::raw("test.stubborn", "{}")).await;
    let once = client
        .enqueue(
            EnqueueRequest::raw("drover.sleep", r#"{"ms":60000}"#).delivery(Delivery::AtMostOnce),
        )
        .await
        .unwrap()
        .id;
    for id in [cooperative, stubborn, once] {
        wait_for(&h.store, id, |j| j.state == JobState::Running).await;
    }
    wait_taken(&handle, 3).await;
    let report = handle.shutdown_within(Duration::from_millis(200)).await;
    assert_eq!(report.cancelled, 3);
    assert_eq!(report.aborted, 1, "the stubborn handler was aborted");
    assert_eq!(report.unrecorded, 0);
    assert!(!report.clean());
    for id in [cooperative, stubborn] {
        let job = get(&h.store, id).await;
        assert_eq!(job.state, JobState::Available, "{job:#?}");
        assert_eq!(job.attempt, 0, "hand-back does not use an attempt");
        assert_eq!(job.history.last().unwrap().event, "handed_back");
    }
    let job = get(&h.store, once).await;
    assert_eq!(job.state, JobState::Discarded);
    assert!(job.errors[0].message.contains("at-most-once"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_is_drained_in_bounded_batches() {
    let h = harness().await;
    let client = Engine::builder(h.store.clone())
        .builtin_tasks()
        .build()
        .unwrap()
        .client();
    let requests: Vec<_> = (0..2_000)
        .map(|_| EnqueueRequest::raw("drover.noop", "{}"))
        .collect();
    let ids = client.enqueue_many(requests).await.unwrap();
    let (hook, mut rx) = ends();
    let handle = engine_with(
        &h,
        EngineConfig {
            queues: [("default".to_owned(), 4)].into(),
            ..quick_config()
        },
        hook,
    );
    for _ in 0..ids.len() {
        next_end(&mut rx).await;
    }
    let stats = handle.stats();
    assert_eq!(stats.completed, 2_000);
    assert_eq!(stats.claimed, 2_000);
    let counts = h.store.job_count_by_queue().await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].state, JobState::Completed);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_stored() {
    let h = harness().await;
    let client = Engine::builder(h.store.clone()).build().unwrap().client();
    let cases = [
        EnqueueRequest::raw("", "{}"),
        EnqueueRequest::raw("has space", "{}"),
        EnqueueRequest::raw("k", "[1]"),
        EnqueueRequest::raw("k", "{not json"),
        EnqueueRequest::raw("k", "{}").queue(""),
        EnqueueRequest::raw("k", "{}").max_attempts(0),
        EnqueueRequest::raw("k", format!(r#"{{"blob":"{}"}}"#, "x".repeat(1024 * 1024))),
    ];
    for request in cases {
        let err = client.enqueue(request).await.unwrap_err();
        assert!(matches!(err, drover::Error::InvalidJob { .. }), "{err}");
    }
    let batch = vec![
        EnqueueRequest::raw("k", "{}"),
        EnqueueRequest::raw("k", "{}"),
        EnqueueRequest::raw("k", "null"),
    ];
    let err = client.enqueue_many(batch).await.unwrap_err();
    assert!(err.to_string().starts_with("job 2: invalid args"), "{err}");
    assert!(h.store.job_count_by_queue().await.unwrap().is_empty());
}

async fn wait_leading(handle: &EngineHandle, leading: bool) {
    let mut leadership = handle.leadership();
    tokio::time::timeout(
        Duration::from_secs(10),
        leadership.wait_for(|term| term.is_some() == leading),
    )
    .await
    .expect("leadership changed in time")
    .expect("engine alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_engine_leads_and_hands_over_on_shutdown() {
    let h = harness().await;
    let config = EngineConfig {
        leader_ttl: Duration::from_secs(2),
        ..quick_config()
    };
    let start = || {
        Engine::builder(h.store.clone())
            .config(config.clone())
            .builtin_tasks()
            .build()
            .unwrap()
            .start()
    };
    let first = start();
    wait_leading(&first, true).await;
    let second = start();
    // The second competes but cannot win while the first holds an unexpired term.
    tokio::time::timeout(Duration::from_millis(1500), async {
        let mut l = second.leadership();
        l.wait_for(|t| t.is_some()).await.ok();
    })
    .await
    .expect_err("the second engine must not lead while the first does");
    let term = first.leader_term().unwrap().term;
    let leader = h
        .store
        .leader_get("default".into(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leader.leader_id, first.process_id());
    let processes = h.store.process_list().await.unwrap();
    assert_eq!(processes.len(), 2, "{processes:?}");

    first.shutdown().await;
    // The resignation wakes the second at once; well within the ttl.
    tokio::time::timeout(Duration::from_secs(1), async {
        let mut l = second.leadership();
        l.wait_for(|t| t.is_some()).await.unwrap();
    })
    .await
    .expect("handed over within a second");
    assert_eq!(second.leader_term().unwrap().term, term + 1);
    assert_eq!(h.store.process_list().await.unwrap().len(), 1);
    second.shutdown().await;
}

/// An engine with one slot and a prefetch buffer of at most 4, its slot taken by a long job
/// after a run of short ones (so the buffer, which follows the pace, is at its maximum).
/// Returns the job-end events after the short ones.
async fn one_busy_slot_with_prefetch(
    h: &Harness,
) -> (EngineHandle, JobId, mpsc::UnboundedReceiver<JobEnd>) {
    let (hook, mut rx) = ends();
    let handle = engine_with(
        h,
        EngineConfig {
            queues: [("default".to_owned(), 1)].into(),
            prefetch: Some(4),
            ..quick_config()
        },
        hook,
    );
    let short = (0..20)
        .map(|_| EnqueueRequest::raw("drover.noop", "{}"))
        .collect();
    handle.client().enqueue_many(short).await.unwrap();
    for _ in 0..20 {
        assert_eq!(next_end(&mut rx).await.state, JobState::Completed);
    }
    let busy = enqueue(
        &handle,
        EnqueueRequest::raw("drover.sleep", r#"{"ms":60000}"#),
    )
    .await;
    wait_for(&h.store, busy, |j| j.state == JobState::Running).await;
    (handle, busy, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_reaches_a_prefetched_job() {
    let h = harness().await;
    let (handle, busy, mut rx) = one_busy_slot_with_prefetch(&h).await;
    let client = handle.client();
    let waiting = client
        .enqueue_many(vec![
            EnqueueRequest::raw("drover.noop", "{}"),
            EnqueueRequest::raw("drover.noop", "{}").delivery(Delivery::AtMostOnce),
            EnqueueRequest::raw("drover.noop", "{}"),
        ])
        .await
        .unwrap();
    // All three are claimed into the buffer (their state is running) but none can start.
    for job in &waiting {
        wait_for(&h.store, job.id, |j| j.state == JobState::Running).await;
    }
    // A cancel request reaches a buffered job: it ends cancelled without running.
    h.store
        .job_cancel(drover_core::JobCancelParams {
            id: waiting[2].id,
            now: None,
        })
        .await
        .unwrap();
    h.store
        .job_cancel(drover_core::JobCancelParams {
            id: busy,
            now: None,
        })
        .await
        .unwrap();
    // It takes effect when the job would start: once the busy job is cancelled, the buffer
    // drains — two jobs complete, the cancelled one ends cancelled without running.
    let mut ended = Vec::new();
    for _ in 0..4 {
        ended.push(next_end(&mut rx).await);
    }
    ended.sort_by_key(|e| e.id);
    let states: Vec<_> = ended.iter().map(|e| (e.id, e.state)).collect();
    assert_eq!(
        states,
        vec![
            (busy, JobState::Cancelled),
            (waiting[0].id, JobState::Completed),
            (waiting[1].id, JobState::Completed),
            (waiting[2].id, JobState::Cancelled),
        ]
    );
    assert!(handle.shutdown().await.clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_jobs_of_a_stopping_worker_do_not_use_an_attempt() {
    let h = harness().await;
    let (handle, _busy, _rx) = one_busy_slot_with_prefetch(&h).await;
    let client = handle.client();
    let waiting = client
        .enqueue_many(vec![
            EnqueueRequest::raw("drover.noop", "{}"),
            EnqueueRequest::raw("drover.noop", "{}").delivery(Delivery::AtMostOnce),
        ])
        .await
        .unwrap();
    for job in &waiting {
        wait_for(&h.store, job.id, |j| j.state == JobState::Running).await;
    }
    let report = handle.shutdown_within(Duration::from_millis(100)).await;
    assert_eq!(
        report.cancelled, 1,
        "only the running job was cancelled: {report:?}"
    );
    for job in &waiting {
        let record = get(&h.store, job.id).await;
        assert_eq!(record.state, JobState::Available, "{record:#?}");
        assert_eq!(record.attempt, 0);
        assert_eq!(record.history.last().unwrap().event, "handed_back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_jobs_are_claimed_only_for_free_slots() {
    // The default prefetch follows the pace: after jobs of 100 ms, a one-slot pool holds none
    // in a buffer (25 ms of work is less than one job), so waiting jobs stay available to
    // other processes instead of queueing behind the running one.
    let h = harness().await;
    let (hook, mut rx) = ends();
    let handle = engine_with(
        &h,
        EngineConfig {
            queues: [("default".to_owned(), 1)].into(),
            ..quick_config()
        },
        hook,
    );
    let client = handle.client();
    let slow = || EnqueueRequest::raw("drover.sleep", r#"{"ms":100}"#);
    client.enqueue_many(vec![slow(), slow()]).await.unwrap();
    for _ in 0..2 {
        assert_eq!(next_end(&mut rx).await.state, JobState::Completed);
    }
    let running = enqueue(&handle, slow()).await;
    wait_for(&h.store, running, |j| j.state == JobState::Running).await;
    let waiting = client.enqueue_many(vec![slow(), slow()]).await.unwrap();
    // Long enough for a claim into a buffer to have happened, shorter than the running job.
    tokio::time::sleep(Duration::from_millis(40)).await;
    for job in &waiting {
        assert_eq!(get(&h.store, job.id).await.state, JobState::Available);
    }
    for _ in 0..3 {
        assert_eq!(next_end(&mut rx).await.state, JobState::Completed);
    }
    assert!(handle.shutdown().await.clean());
}
