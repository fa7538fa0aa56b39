//! The autoscaler tick with 1,000 slots and 10,000 reservations, on a real SQLite file and on
//! the PostgreSQL test server (`DROVER_TEST_POSTGRES_URL`, a fresh schema). Prints the tick that
//! assigns the 10,000 reservations and the median of steady ticks (goal: under 50 ms).
//!
//! `cargo bench -p drover --bench autoscaler_tick [-- sqlite|postgres]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover::autoscaler::{
    AutoscalerConfig, AutoscalerMetrics, SimConfig, SimRuntime, SystemConfig, TickInputs, tick,
};
use drover_core::{
    Clock, DynStore, ReservationInsertParams, SimulatedClock, SlotListParams, SlotState,
};
use jiff::SignedDuration;

const SLOTS: u32 = 1_000;
const RESERVATIONS: usize = 10_000;

async fn measure(name: &str, store: DynStore) {
    let clock = SimulatedClock::new("2030-01-01T00:00:00Z".parse().unwrap());
    let runtime = SimRuntime::new(
        Arc::new(clock.clone()),
        SimConfig {
            boot_min: Duration::ZERO,
            boot_max: Duration::ZERO,
            ..SimConfig::default()
        },
    );
    let config = AutoscalerConfig {
        systems: [(
            "pool".to_owned(),
            SystemConfig {
                min: SLOTS,
                max: SLOTS,
                max_leases_per_slot: 10,
                reservation_ttl: Duration::from_secs(86_400),
                ..Default::default()
            },
        )]
        .into(),
        max_slots: SLOTS,
        ..Default::default()
    };
    let metrics = AutoscalerMetrics::default();
    let inputs = TickInputs {
        store: store.as_ref(),
        runtime: &runtime,
        config: &config,
        clock: &clock,
        metrics: &metrics,
    };
    let timed = || async {
        let started = Instant::now();
        let report = tick(inputs).await.expect("tick");
        (started.elapsed(), report)
    };
    let (launch, _) = timed().await;
    clock.advance(SignedDuration::from_secs(1));
    let (boot, _) = timed().await;
    let ready = store
        .slot_list(SlotListParams {
            states: vec![SlotState::Ready],
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(ready, SLOTS as usize);
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..(RESERVATIONS / 100) {
        let store = store.clone();
        let now = clock.store_now();
        tasks.spawn(async move {
            for _ in 0..100 {
                store
                    .reservation_insert(ReservationInsertParams {
                        system: "pool".into(),
                        holder: format!("bench-{chunk}"),
                        ttl: Duration::from_secs(86_400),
                        now,
                    })
                    .await
                    .unwrap();
            }
        });
    }
    tasks.join_all().await;
    clock.advance(SignedDuration::from_secs(1));
    let (assign, report) = timed().await;
    assert_eq!(report.assigned, RESERVATIONS as u64);
    let mut steady = Vec::new();
    for _ in 0..21 {
        clock.advance(SignedDuration::from_secs(5));
        steady.push(timed().await.0);
    }
    steady.sort();
    println!(
        "{name}: {SLOTS} slots, {RESERVATIONS} reservations: launch tick {:.0} ms, boot tick {:.0} ms, \
         assign tick {:.0} ms, steady tick median {:.1} ms (max {:.1} ms)",
        launch.as_secs_f64() * 1e3,
        boot.as_secs_f64() * 1e3,
        assign.as_secs_f64() * 1e3,
        steady[steady.len() / 2].as_secs_f64() * 1e3,
        steady[steady.len() - 1].as_secs_f64() * 1e3,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if wants("sqlite") {
        let dir = tempfile::tempdir().unwrap();
        let store = drover_sqlite::SqliteStore::open(drover_sqlite::SqliteConfig::new(
            dir.path().join("bench.db"),
        ))
        .unwrap();
        drover_core::Store::migrate(&store).await.unwrap();
        let store: DynStore = Arc::new(store);
        measure("sqlite", store.clone()).await;
        store.close().await;
    }
    if wants("postgres") {
        let url = std::env::var("DROVER_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("drover_bench_tick_{:016x}", fastrand::u64(..));
        let mut config =
            drover_postgres::PgConfig::from_url(&format!("{url}?schema={schema}")).unwrap();
        config.listen = false;
        let store = Arc::new(drover_postgres::PgStore::connect(config).await.unwrap());
        drover_core::Store::migrate(store.as_ref()).await.unwrap();
        measure("postgres", store.clone()).await;
        store.drop_schema().await.unwrap();
        drover_core::Store::close(store.as_ref()).await;
    }
    if wants("memory") {
        measure(
            "memory",
            Arc::new(drover::autoscaler::MemoryCapacityStore::new()),
        )
        .await;
    }
}
