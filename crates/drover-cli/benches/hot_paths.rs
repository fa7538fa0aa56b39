//! Criterion benchmarks of the store's hot paths on each backend: enqueue a batch, claim a
//! batch, complete a batch (100 jobs each). SQLite runs on a temporary file with the durable
//! default (`synchronous=FULL`); PostgreSQL on `DROVER_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) in a schema of its own, dropped at the end.
//!
//! `cargo bench -p drover-cli --bench hot_paths` (add `-- sqlite` or `-- postgres` to pick one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use drover_core::{
    DynStore, JobClaimParams, JobFinishParams, JobInsertParams, JobOutcome, LeaseRef, NewJob, Store,
};
use drover_postgres::{PgConfig, PgStore};
use drover_sqlite::{SqliteConfig, SqliteStore};

const BATCH: usize = 100;

fn jobs() -> Vec<NewJob> {
    (0..BATCH)
        .map(|i| NewJob::new("drover.noop", format!(r#"{{"i":{i}}}"#)))
        .collect()
}

async fn insert(store: &DynStore) {
    store
        .job_insert_many(JobInsertParams {
            jobs: jobs(),
            now: None,
        })
        .await
        .expect("insert");
}

async fn claim(store: &DynStore) -> Vec<drover_core::ClaimedJob> {
    store
        .job_claim(JobClaimParams {
            queue: "default".into(),
            limit: BATCH,
            owner: "bench".into(),
            lease: Duration::from_secs(60),
            now: None,
        })
        .await
        .expect("claim")
        .jobs
}

async fn complete(store: &DynStore, claimed: Vec<drover_core::ClaimedJob>) {
    let outcomes = claimed
        .into_iter()
        .map(|job| {
            JobOutcome::completed(LeaseRef {
                id: job.id,
                lease_token: job.lease_token,
            })
        })
        .collect();
    store
        .job_finish_many(JobFinishParams {
            outcomes,
            now: None,
        })
        .await
        .expect("complete");
}

fn hot_paths(c: &mut Criterion, backend: &str, store: DynStore, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group(backend);
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(criterion::Throughput::Elements(BATCH as u64));
    group.bench_function("enqueue_batch_100", |b| {
        b.to_async(rt).iter(|| insert(&store));
    });
    group.bench_function("claim_batch_100", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let store = store.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    insert(&store).await;
                    let started = Instant::now();
                    let claimed = claim(&store).await;
                    total += started.elapsed();
                    complete(&store, claimed).await;
                }
                total
            }
        });
    });
    group.bench_function("complete_batch_100", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let store = store.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    insert(&store).await;
                    let claimed = claim(&store).await;
                    let started = Instant::now();
                    complete(&store, claimed).await;
                    total += started.elapsed();
                }
                total
            }
        });
    });
    group.finish();
}

fn sqlite(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store: DynStore = rt.block_on(async {
        let store = SqliteStore::open(SqliteConfig::new(dir.path().join("bench.db"))).unwrap();
        store.migrate().await.unwrap();
        Arc::new(store)
    });
    hot_paths(c, "sqlite", store.clone(), &rt);
    rt.block_on(store.close());
}

fn postgres(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = std::env::var("DROVER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("drover_criterion_{:08x}", fastrand::u32(..));
    let store = rt.block_on(async {
        let mut config = PgConfig::from_url(&format!("{url}?schema={schema}")).unwrap();
        config.listen = false;
        let store = PgStore::connect(config)
            .await
            .unwrap_or_else(|err| panic!("cannot reach PostgreSQL at {url}: {err}"));
        store.migrate().await.unwrap();
        Arc::new(store)
    });
    hot_paths(c, "postgres", store.clone(), &rt);
    rt.block_on(async {
        store.drop_schema().await.expect("drop the bench schema");
        store.close().await;
    });
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
