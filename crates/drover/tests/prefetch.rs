//! The prefetch buffer when long jobs follow short ones, with two engines on one database (a
//! SQLite file, a PostgreSQL schema) as two processes would run: the first, its pace set by
//! no-op jobs, claims a batch of long jobs into its buffer; the ones waiting there behind its
//! busy slot are handed back (unstarted, no attempt used) and the idle second engine runs them.

use std::sync::Arc;
use std::time::Duration;

use drover::{Engine, EngineConfig, EnqueueRequest};
use drover_core::{DynStore, JobRecord, JobState, Store};
use drover_sqlite::{SqliteConfig, SqliteStore};

async fn open(path: &std::path::Path) -> DynStore {
    let store = SqliteStore::open(SqliteConfig::new(path)).unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

fn config(concurrency: usize) -> EngineConfig {
    EngineConfig {
        queues: [("default".to_owned(), concurrency)].into(),
        // The second engine's poll is short, so that the test does not depend on how a
        // hand-back's wake-up crosses between two stores in one process.
        poll_interval: Duration::from_millis(200),
        shutdown_timeout: Duration::ZERO,
        cancel_grace: Duration::from_millis(500),
        ..EngineConfig::default()
    }
}

async fn jobs(store: &DynStore, ids: &[i64]) -> Vec<JobRecord> {
    let mut all = Vec::new();
    for &id in ids {
        all.push(store.job_get(id).await.unwrap().unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_long_jobs_waiting_in_a_busy_buffer_go_to_an_idle_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prefetch.db");
    long_jobs_waiting_in_a_busy_buffer_go_to_an_idle_process(open(&path).await, open(&path).await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_long_jobs_waiting_in_a_busy_buffer_go_to_an_idle_process() {
    let url = drover_conformance::pg_server::url();
    let schema = format!("drover_prefetch_{:016x}", fastrand::u64(..));
    let connect = async || {
        let config =
            drover_postgres::PgConfig::from_url(&format!("{url}?schema={schema}")).unwrap();
        let store = drover_postgres::PgStore::connect(config)
            .await
            .unwrap_or_else(|err| {
                panic!("cannot reach the PostgreSQL test server at {url}: {err}")
            });
        store.migrate().await.unwrap();
        Arc::new(store)
    };
    let (store_a, store_b) = (connect().await, connect().await);
    long_jobs_waiting_in_a_busy_buffer_go_to_an_idle_process(store_a.clone(), store_b.clone())
        .await;
    store_a.drop_schema().await.unwrap();
}

async fn long_jobs_waiting_in_a_busy_buffer_go_to_an_idle_process(
    store_a: DynStore,
    store_b: DynStore,
) {
    let first = Engine::builder(store_a.clone())
        .config(config(1))
        .builtin_tasks()
        .build()
        .unwrap()
        .start();
    let client = first.client();
    // No-op jobs set the first engine's pace to microseconds: a big buffer.
    let quick = enqueue(&client, "drover.noop", "{}", 50).await;
    wait_for_jobs(&store_a, &quick, "the no-ops finish", |all| {
        all.iter().all(|j| j.state == JobState::Completed)
    })
    .await;

    // Six long jobs: one runs, the first engine's buffer takes the other five.
    let long = enqueue(&client, "drover.sleep", r#"{"ms":60000}"#, 6).await;
    let held_by = |engine: &drover::EngineHandle, job: &JobRecord| {
        job.state == JobState::Running && job.lease_owner.as_deref() == Some(engine.process_id())
    };
    wait_for_jobs(&store_a, &long, "the first engine takes all six", |all| {
        all.iter().all(|j| held_by(&first, j))
    })
    .await;

    // An idle second process, with three free slots.
    let second = Engine::builder(store_b.clone())
        .config(config(3))
        .builtin_tasks()
        .build()
        .unwrap()
        .start();
    let all = wait_for_jobs(&store_b, &long, "the idle engine gets three", |all| {
        all.iter().filter(|j| held_by(&second, j)).count() == 3
    })
    .await;
    for job in all.iter().filter(|j| held_by(&second, j)) {
        assert_eq!(job.attempt, 1, "the hand-back used no attempt: {job:#?}");
        assert!(
            job.history
                .iter()
                .any(|h| h.event == "handed_back" && h.detail.contains("slots were all busy")),
            "{job:#?}"
        );
    }
    // The first engine did not take them straight back: it still runs one, buffers none of
    // the two left (available, for whichever slot frees first).
    let all = jobs(&store_a, &long).await;
    let by_first = all.iter().filter(|j| held_by(&first, j)).count();
    assert_eq!(by_first, 1, "{all:#?}");
    second.shutdown().await;
    first.shutdown().await;
}

/// Enqueues `n` jobs of `kind` with `args` in one call; their ids.
async fn enqueue(client: &drover::Client, kind: &str, args: &str, n: usize) -> Vec<i64> {
    let requests = (0..n).map(|_| EnqueueRequest::raw(kind, args)).collect();
    let inserted = client.enqueue_many(requests).await.unwrap();
    inserted.iter().map(|j| j.id).collect()
}

/// The jobs `ids`, read again every 20 ms until `done` holds of them; fails after 10 s,
/// saying `what` did not happen.
async fn wait_for_jobs(
    store: &DynStore,
    ids: &[i64],
    what: &str,
    done: impl Fn(&[JobRecord]) -> bool,
) -> Vec<JobRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = jobs(store, ids).await;
        if done(&all) {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 10 s: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
