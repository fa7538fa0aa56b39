//! The prefetch buffer when long jobs follow short ones, with two engines on one database (a
//! SQLite file, a PostgreSQL schema) as two processes would run: the first, its pace set by no-op jobs, claims a batch of long jobs
//! into its buffer; the ones waiting there behind its busy slot are handed back (unstarted, no
//! attempt used) and the idle second engine runs them.

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
    let quick: Vec<_> = (0..50)
        .map(|_| EnqueueRequest::raw("drover.noop", "{}"))
        .collect();
    let quick: Vec<i64> = client
        .enqueue_many(quick)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !jobs(&store_a, &quick)
        .await
        .iter()
        .all(|j| j.state == JobState::Completed)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the no-ops never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Six long jobs: one runs, the first engine's buffer takes the other five.
    let long: Vec<_> = (0..6)
        .map(|_| EnqueueRequest::raw("drover.sleep", r#"{"ms":60000}"#))
        .collect();
    let long: Vec<i64> = client
        .enqueue_many(long)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !jobs(&store_a, &long).await.iter().all(|j| {
        j.state == JobState::Running && j.lease_owner.as_deref() == Some(first.process_id())
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first engine did not take all six: {:#?}",
            jobs(&store_a, &long).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // An idle second process, with three free slots.
    let second = Engine::builder(store_b.clone())
        .config(config(3))
        .builtin_tasks()
        .build()
        .unwrap()
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let taken = loop {
        let all = jobs(&store_b, &long).await;
        let taken: Vec<JobRecord> = all
            .into_iter()
            .filter(|j| {
                j.state == JobState::Running
                    && j.lease_owner.as_deref() == Some(second.process_id())
            })
            .collect();
        if taken.len() == 3 {
            break taken;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle engine got {} of the waiting jobs: {:#?}",
            taken.len(),
            jobs(&store_b, &long).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for job in &taken {
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
    let by_first = all
        .iter()
        .filter(|j| j.lease_owner.as_deref() == Some(first.process_id()))
        .filter(|j| j.state == JobState::Running)
        .count();
    assert_eq!(by_first, 1, "{all:#?}");
    second.shutdown().await;
    first.shutdown().await;
}
