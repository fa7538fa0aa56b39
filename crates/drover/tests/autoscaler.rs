//! The autoscaler tick on both backends — a real SQLite file and the real PostgreSQL server —
//! with a simulated clock and the sim runtime: every step, deterministically.

use std::sync::Arc;
use std::time::Duration;

use drover::autoscaler::{
    AutoscalerConfig, AutoscalerMetrics, CapacityRuntime, LaunchRequest, SimConfig, SimRuntime,
    SystemConfig, TickInputs, TickReport, tick,
};
use drover_core::{
    Clock, DynStore, ReservationInsertParams, ReservationListParams, ReservationPhase,
    ReservationRecord, ReservationReleaseParams, SimulatedClock, SlotInsertParams, SlotListParams,
    SlotRecord, SlotState,
};
use jiff::SignedDuration;

/// Instantiates each check once per backend.
macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = drover_sqlite::SqliteStore::open(
                        drover_sqlite::SqliteConfig::new(dir.path().join("autoscaler.db")),
                    )
                    .unwrap();
                    drover_core::Store::migrate(&store).await.unwrap();
                    super::$check(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    // The simulator's store: the tick behaves on it as on the backends.
                    super::$check(std::sync::Arc::new(
                        drover::autoscaler::MemoryCapacityStore::new(),
                    ))
                    .await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let url = std::env::var("DROVER_TEST_POSTGRES_URL")
                        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
                    let schema = format!("drover_autoscaler_{:016x}", fastrand::u64(..));
                    let mut config = drover_postgres::PgConfig::from_url(
                        &format!("{url}?schema={schema}"),
                    )
                    .unwrap();
                    config.listen = false;
                    let store = std::sync::Arc::new(
                        drover_postgres::PgStore::connect(config).await.unwrap_or_else(|err| {
                            panic!("cannot reach the PostgreSQL test server at {url} \
                                    (set DROVER_TEST_POSTGRES_URL): {err}")
                        }),
                    );
                    drover_core::Store::migrate(store.as_ref()).await.unwrap();
                    super::$check(store.clone()).await;
                    store.drop_schema().await.unwrap();
                }
            )*
        }
    };
}

on_both_backends!(
    demand_launches_once_and_in_flight_slots_cover_it,
    never_past_max_slots_or_the_lease_limit,
    min_and_warm_pools_are_kept,
    an_interruption_drains_hands_back_and_replaces,
    a_draining_slot_holding_a_lease_can_be_interrupted,
    a_vanished_instance_is_handled_as_interrupted,
    a_launch_the_list_does_not_show_yet_is_not_vanished,
    a_failed_launch_is_counted_and_retried_after_the_cooldown,
    a_slot_stuck_booting_goes_to_error,
    reservations_expire_and_idle_slots_scale_down_after_the_idle_time,
    an_orphan_instance_is_terminated_after_the_grace_period,
    a_leader_killed_between_recording_and_making_a_launch_leaves_one_instance,
);

const BOOT: Duration = Duration::from_secs(60);

struct Harness {
    store: DynStore,
    clock: SimulatedClock,
    runtime: SimRuntime,
    config: AutoscalerConfig,
    metrics: AutoscalerMetrics,
}

fn gpu(system: SystemConfig) -> AutoscalerConfig {
    AutoscalerConfig {
        systems: [("gpu".to_owned(), system)].into(),
        max_slots: 100,
        orphan_grace: Duration::from_secs(120),
        interval: Duration::from_secs(5),
    }
}

impl Harness {
    fn new(store: DynStore, config: AutoscalerConfig) -> Self {
        Self::with_sim(store, config, SimConfig::default())
    }

    fn with_sim(store: DynStore, config: AutoscalerConfig, sim: SimConfig) -> Self {
        config.validate().unwrap();
        let clock = SimulatedClock::new("2030-01-01T00:00:00Z".parse().unwrap());
        let runtime = SimRuntime::new(
            Arc::new(clock.clone()),
            SimConfig {
                boot_min: BOOT,
                boot_max: BOOT,
                ..sim
            },
        );
        Self {
            store,
            clock,
            runtime,
            config,
            metrics: AutoscalerMetrics::default(),
        }
    }

    async fn tick(&self) -> TickReport {
        tick(TickInputs {
            store: self.store.as_ref(),
            runtime: &self.runtime,
            config: &self.config,
            clock: &self.clock,
            metrics: &self.metrics,
        })
        .await
        .expect("tick")
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(SignedDuration::try_from(by).unwrap());
    }

    /// Ticks every 5 s of simulated time for `span`.
    async fn run_for(&self, span: Duration) -> Vec<TickReport> {
        let mut reports = Vec::new();
        let mut passed = Duration::ZERO;
        while passed < span {
            self.advance(Duration::from_secs(5));
            passed += Duration::from_secs(5);
            reports.push(self.tick().await);
        }
        reports
    }

    async fn reserve(&self, n: usize, ttl: Duration) -> Vec<ReservationRecord> {
        let mut made = Vec::new();
        for _ in 0..n {
            made.push(
                self.store
                    .reservation_insert(ReservationInsertParams {
                        system: "gpu".into(),
                        holder: "test".into(),
                        ttl,
                        now: self.clock.store_now(),
                    })
                    .await
                    .unwrap(),
            );
        }
        made
    }

    async fn release(&self, id: i64) {
        self.store
            .reservation_release(ReservationReleaseParams {
                id,
                now: self.clock.store_now(),
            })
            .await
            .unwrap();
    }

    async fn slots(&self, state: SlotState) -> Vec<SlotRecord> {
        self.store
            .slot_list(SlotListParams {
                states: vec![state],
                ..Default::default()
            })
            .await
            .unwrap()
    }

    async fn reservations(&self, phase: ReservationPhase) -> Vec<ReservationRecord> {
        self.store
            .reservation_list(ReservationListParams {
                phases: vec![phase],
                ..Default::default()
            })
            .await
            .unwrap()
    }

    fn gauge(&self, state: SlotState) -> u64 {
        self.metrics
            .snapshot()
            .slots
            .get(&("gpu".to_owned(), state))
            .copied()
            .unwrap_or(0)
    }

    fn launches(&self, result: &str) -> u64 {
        self.metrics
            .snapshot()
            .launches
            .get(&("gpu".to_owned(), result.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

const HOUR: Duration = Duration::from_secs(3600);

async fn demand_launches_once_and_in_flight_slots_cover_it(store: DynStore) {
    let h = Harness::new(store, gpu(SystemConfig::default()));
    h.reserve(3, HOUR).await;
    let first = h.tick().await;
    assert_eq!(first.launched, 3);
    assert_eq!(h.slots(SlotState::Booting).await.len(), 3);
    // The slots on their way cover the demand: nothing more, tick after tick, until they boot.
    for report in h.run_for(BOOT - Duration::from_secs(10)).await {
        assert_eq!(report.launched, 0, "launched again for covered demand");
    }
    assert_eq!(h.runtime.counts().made, 3);
    let reports = h.run_for(Duration::from_secs(15)).await;
    assert_eq!(reports.iter().map(|r| r.assigned).sum::<u64>(), 3);
    assert_eq!(reports.iter().map(|r| r.launched).sum::<u64>(), 0);
    let ready = h.slots(SlotState::Ready).await;
    assert_eq!(ready.len(), 3);
    assert!(ready.iter().all(|s| s.leases == 1));
    let assigned = h.reservations(ReservationPhase::Assigned).await;
    assert_eq!(assigned.len(), 3);
    assert!(assigned.iter().all(|r| r.instance_id.is_some()));
    assert_eq!(h.gauge(SlotState::Ready), 3);
    assert_eq!(h.launches("success"), 3);
    assert_eq!(
        h.metrics.snapshot().reservations[&ReservationPhase::Assigned],
        3
    );
}

async fn never_past_max_slots_or_the_lease_limit(store: DynStore) {
    let mut config = gpu(SystemConfig {
        max: 4,
        max_leases_per_slot: 2,
        ..Default::default()
    });
    config.max_slots = 3;
    let h = Harness::new(store, config);
    h.reserve(50, HOUR).await;
    for _ in 0..3 {
        h.tick().await;
    }
    for _ in 0..40 {
        h.advance(Duration::from_secs(5));
        h.tick().await;
        let slots = h.store.slot_list(SlotListParams::default()).await.unwrap();
        let holding = slots
            .iter()
            .filter(|s| s.state != SlotState::Empty && s.state != SlotState::Error)
            .count();
        assert!(holding <= 3, "{holding} slots past the fleet maximum of 3");
        assert!(slots.iter().all(|s| s.leases <= 2), "lease limit passed");
        assert!(h.runtime.counts().live <= 3);
    }
    assert_eq!(h.reservations(ReservationPhase::Assigned).await.len(), 6);
    assert_eq!(h.runtime.counts().made, 3);
}

async fn min_and_warm_pools_are_kept(store: DynStore) {
    let h = Harness::new(
        store,
        gpu(SystemConfig {
            min: 2,
            warm: 1,
            idle_timeout: Duration::from_secs(60),
            min_lifetime: Duration::from_secs(60),
            ..Default::default()
        }),
    );
    assert_eq!(
        h.tick().await.launched,
        2,
        "the minimum, which also holds the warm slot"
    );
    h.run_for(BOOT + Duration::from_secs(5)).await;
    assert_eq!(h.slots(SlotState::Ready).await.len(), 2);
    // Two jobs' worth of demand: two busy slots plus one warm.
    let held = h.reserve(2, HOUR).await;
    let report = h.tick().await;
    assert_eq!(report.assigned, 2);
    assert_eq!(report.launched, 1, "a new warm slot");
    h.run_for(BOOT + Duration::from_secs(5)).await;
    let ready = h.slots(SlotState::Ready).await;
    assert_eq!(ready.len(), 3);
    assert_eq!(
        ready.iter().filter(|s| s.leases == 0).count(),
        1,
        "one warm"
    );
    // Demand gone: back to the minimum after the idle time, never below it.
    for r in &held {
        h.release(r.id).await;
    }
    h.run_for(Duration::from_secs(600)).await;
    assert_eq!(h.slots(SlotState::Ready).await.len(), 2);
    assert_eq!(h.runtime.counts().live, 2);
}

async fn an_interruption_drains_hands_back_and_replaces(store: DynStore) {
    let h = Harness::new(store, gpu(SystemConfig::default()));
    let reservation = h.reserve(1, HOUR).await.remove(0);
    h.tick().await;
    h.run_for(BOOT + Duration::from_secs(5)).await;
    let slot = h.slots(SlotState::Ready).await.remove(0);
    assert_eq!(slot.leases, 1);
    let instance = slot.instance_id.clone().unwrap();
    assert!(h.runtime.give_notice(&instance, Duration::from_secs(120)));

    let report = h.tick().await;
    assert_eq!(report.interrupted, 1);
    assert_eq!(
        report.launched, 1,
        "the replacement launches in the same tick"
    );
    assert_eq!(
        report.terminated, 1,
        "the drained slot has nothing left to finish"
    );
    let handed = h.reservations(ReservationPhase::Pending).await;
    assert_eq!(
        handed.len(),
        1,
        "handed back at once, not after a lease expiry"
    );
    assert_eq!(handed[0].id, reservation.id);
    assert!(!h.runtime.live_instances().contains(&instance));
    assert_eq!(h.metrics.snapshot().interruptions, 1);

    h.run_for(BOOT + Duration::from_secs(5)).await;
    let now_held = h.reservations(ReservationPhase::Assigned).await;
    assert_eq!(now_held.len(), 1);
    assert_ne!(now_held[0].instance_id.as_deref(), Some(instance.as_str()));
}

/// A slot an operator drained keeps its lease for as long as the reservation lives; an
/// interruption then hands it back at once (it was refused: "only a booting, binding or ready
/// slot").
async fn a_draining_slot_holding_a_lease_can_be_interrupted(store: DynStore) {
    use drover::autoscaler::admin;
    let h = Harness::new(store, gpu(SystemConfig::default()));
    let reservation = h.reserve(1, HOUR).await.remove(0);
    h.tick().await;
    h.run_for(BOOT + Duration::from_secs(5)).await;
    let slot = h.slots(SlotState::Ready).await.remove(0);
    admin::drain(h.store.as_ref(), &h.clock, slot.id)
        .await
        .unwrap();
    h.tick().await;
    assert_eq!(
        h.slots(SlotState::Draining).await[0].leases,
        1,
        "still held"
    );

    let interrupted = admin::interrupt(h.store.as_ref(), &h.clock, slot.id)
        .await
        .unwrap();
    assert!(interrupted.notice_at.is_some());
    let again = admin::interrupt(h.store.as_ref(), &h.clock, slot.id).await;
    assert!(again.is_err(), "interrupted once: {again:?}");
    assert_eq!(h.reservations(ReservationPhase::Pending).await.len(), 1);
    let report = h.tick().await;
    assert_eq!(report.terminated, 1);
    let instance = slot.instance_id.unwrap();
    assert!(!h.runtime.live_instances().contains(&instance));
    h.run_for(BOOT + Duration::from_secs(5)).await;
    assert!(h.slots(SlotState::Draining).await.is_empty());
    let held = h.reservations(ReservationPhase::Assigned).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id, reservation.id);
    assert_ne!(held[0].instance_id.as_deref(), Some(instance.as_str()));
}

async fn a_vanished_instance_is_handled_as_interrupted(store: DynStore) {
    let h = Harness::new(store, gpu(SystemConfig::default()));
    h.reserve(1, HOUR).await;
    h.tick().await;
    h.run_for(BOOT + Duration::from_secs(5)).await;
    let slot = h.slots(SlotState::Ready).await.remove(0);
    assert!(h.runtime.vanish(slot.instance_id.as_deref().unwrap()));
    let report = h.tick().await;
    assert_eq!(report.interrupted, 1);
    assert_eq!(report.launched, 1);
    assert_eq!(h.reservations(ReservationPhase::Pending).await.len(), 1);
    let emptied = h
        .store
        .slot_list(SlotListParams {
            id: Some(slot.id),
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    // The vanished slot's row is the one relaunched (rows are reused).
    assert_eq!(emptied.state, SlotState::Booting);
    assert_eq!(emptied.generation, slot.generation + 1);
}

/// A cloud's list can lag its launches: a launched instance missing from the list is given the
/// orphan grace to appear, rather than taken for vanished and relaunched every tick (22
/// launches in 22 s, none terminated, seen in QA with a command runtime). One that never
/// appears is vanished after the grace, and sent a terminate in case it runs all the same.
async fn a_launch_the_list_does_not_show_yet_is_not_vanished(store: DynStore) {
    let h = Harness::new(store, gpu(SystemConfig::default()));
    h.runtime.lag_list(Duration::from_secs(30));
    h.reserve(1, HOUR).await;
    h.tick().await;
    let reports = h.run_for(BOOT + Duration::from_secs(10)).await;
    assert!(
        reports
            .iter()
            .all(|r| r.interrupted == 0 && r.launched == 0)
    );
    assert_eq!(h.runtime.counts().made, 1, "launched once");
    assert_eq!(h.slots(SlotState::Ready).await.len(), 1, "and it served");

    // An instance the list never shows: vanished once the grace is over, terminated, and
    // replaced once (not every tick).
    h.runtime.lag_list(Duration::from_secs(3600));
    h.reserve(1, HOUR).await;
    h.tick().await;
    let reports = h.run_for(Duration::from_secs(115)).await;
    assert!(
        reports.iter().all(|r| r.interrupted == 0),
        "within the grace"
    );
    assert_eq!(h.runtime.counts().made, 2);
    let reports = h.run_for(Duration::from_secs(10)).await;
    assert_eq!(reports.iter().map(|r| r.interrupted).sum::<u64>(), 1);
    assert_eq!(h.runtime.counts().made, 3, "replaced once");
    assert_eq!(
        h.runtime.counts().terminated,
        1,
        "the unlisted one was terminated"
    );
}

async fn a_failed_launch_is_counted_and_retried_after_the_cooldown(store: DynStore) {
    let h = Harness::new(
        store,
        gpu(SystemConfig {
            error_cooldown: Duration::from_secs(30),
            ..Default::default()
        }),
    );
    h.reserve(1, HOUR).await;
    h.runtime.fail_next_launches(2);
    let report = h.tick().await;
    assert_eq!(report.launch_failures, 1);
    assert_eq!(h.launches("capacity"), 1);
    let failed = h.slots(SlotState::Error).await;
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].reason.contains("launch failed"),
        "{}",
        failed[0].reason
    );
    // Within the cool-down: nothing is launched.
    h.advance(Duration::from_secs(25));
    assert_eq!(h.tick().await, TickReport::default());
    // After it: retried, fails again, and the next cool-down is twice as long.
    h.advance(Duration::from_secs(10));
    assert_eq!(h.tick().await.launch_failures, 1);
    assert_eq!(h.slots(SlotState::Error).await[0].failures, 2);
    h.advance(Duration::from_secs(35));
    assert_eq!(h.tick().await.launched, 0, "the second cool-down is 60 s");
    h.advance(Duration::from_secs(30));
    let report = h.tick().await;
    assert_eq!(report.launched, 1);
    assert_eq!(h.launches("capacity"), 2);
    assert_eq!(h.launches("success"), 1);
    let booting = h.slots(SlotState::Booting).await;
    assert_eq!(booting.len(), 1);
    assert_eq!(booting[0].id, failed[0].id, "the errored row is relaunched");
    assert_eq!(booting[0].generation, 3);
    assert_eq!(h.runtime.counts().made, 1);
}

async fn a_slot_stuck_booting_goes_to_error(store: DynStore) {
    let config = gpu(SystemConfig {
        boot_timeout: Duration::from_secs(120),
        ..Default::default()
    });
    let h = Harness::with_sim(store, config, SimConfig::default());
    // Boots slower than the timeout.
    let h = Harness {
        runtime: SimRuntime::new(
            Arc::new(h.clock.clone()),
            SimConfig {
                boot_min: Duration::from_secs(600),
                boot_max: Duration::from_secs(600),
                ..SimConfig::default()
            },
        ),
        ..h
    };
    h.reserve(1, HOUR).await;
    h.tick().await;
    h.advance(Duration::from_secs(115));
    assert_eq!(h.tick().await.boot_timeouts, 0);
    h.advance(Duration::from_secs(10));
    let report = h.tick().await;
    assert_eq!(report.boot_timeouts, 1);
    let failed = h.slots(SlotState::Error).await;
    assert_eq!(failed.len(), 1);
    assert!(failed[0].reason.contains("boot timeout"));
    assert_eq!(
        h.runtime.counts().terminated,
        1,
        "its instance is taken away"
    );
    assert_eq!(h.launches("boot_timeout"), 1);
}

async fn reservations_expire_and_idle_slots_scale_down_after_the_idle_time(store: DynStore) {
    let h = Harness::new(
        store,
        gpu(SystemConfig {
            idle_timeout: Duration::from_secs(60),
            min_lifetime: Duration::from_secs(300),
            ..Default::default()
        }),
    );
    h.reserve(1, Duration::from_secs(100)).await;
    h.tick().await;
    h.run_for(BOOT + Duration::from_secs(5)).await;
    assert_eq!(h.reservations(ReservationPhase::Assigned).await.len(), 1);
    h.advance(Duration::from_secs(40));
    assert_eq!(h.tick().await.expired, 1);
    assert_eq!(h.slots(SlotState::Ready).await[0].leases, 0);
    // Idle for more than the idle time, but younger than the minimum lifetime: kept.
    let reports = h.run_for(Duration::from_secs(120)).await;
    assert!(reports.iter().all(|r| r.drained == 0));
    let reports = h.run_for(Duration::from_secs(120)).await;
    assert_eq!(reports.iter().map(|r| r.drained).sum::<u64>(), 1);
    assert_eq!(reports.iter().map(|r| r.terminated).sum::<u64>(), 1);
    assert_eq!(h.runtime.counts().live, 0);
    assert_eq!(h.slots(SlotState::Empty).await.len(), 1);
    assert!(h.reservations(ReservationPhase::Expired).await.len() == 1);
}

async fn an_orphan_instance_is_terminated_after_the_grace_period(store: DynStore) {
    let h = Harness::new(store, gpu(SystemConfig::default()));
    let orphan = h.runtime.add_orphan();
    assert_eq!(
        h.tick().await.orphans_terminated,
        0,
        "within the grace period"
    );
    h.advance(Duration::from_secs(121));
    assert_eq!(h.tick().await.orphans_terminated, 1);
    assert!(!h.runtime.live_instances().contains(&orphan));
}

async fn a_leader_killed_between_recording_and_making_a_launch_leaves_one_instance(
    store: DynStore,
) {
    let h = Harness::new(store, gpu(SystemConfig::default()));
    h.reserve(2, HOUR).await;
    // Leader one recorded two launches and died: before calling the runtime for the first,
    // and after the runtime made the second but before recording its answer.
    let record = || {
        h.store.slot_insert(SlotInsertParams {
            system: "gpu".into(),
            reason: "demand".into(),
            now: h.clock.store_now(),
        })
    };
    let _unmade = record().await.unwrap();
    let made = record().await.unwrap();
    let first_instance = h
        .runtime
        .launch(&LaunchRequest {
            slot: made.id,
            generation: made.generation,
            system: "gpu".into(),
            bootstrap: String::new(),
        })
        .await
        .unwrap();
    // Leader two's tick, much later than the orphan grace period.
    h.advance(Duration::from_secs(300));
    let report = h.tick().await;
    assert_eq!(report.launched, 2, "both recorded launches completed");
    assert_eq!(report.orphans_terminated, 0);
    assert_eq!(h.runtime.counts().made, 2, "exactly one instance per slot");
    let booting = h.slots(SlotState::Booting).await;
    assert_eq!(booting.len(), 2);
    let recorded = booting.iter().find(|s| s.id == made.id).unwrap();
    assert_eq!(
        recorded.instance_id.as_deref(),
        Some(first_instance.as_str())
    );
    h.run_for(BOOT + Duration::from_secs(5)).await;
    assert_eq!(h.runtime.counts().made, 2);
    assert_eq!(h.reservations(ReservationPhase::Assigned).await.len(), 2);
}

/// The service runs the tick on the leader: a reservation made while the engine runs is
/// answered with a slot and its instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_runs_the_tick_as_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(
        drover_sqlite::SqliteStore::open(drover_sqlite::SqliteConfig::new(
            dir.path().join("service.db"),
        ))
        .unwrap(),
    );
    store.migrate().await.unwrap();
    let clock = Arc::new(drover_core::SystemClock);
    let runtime = Arc::new(SimRuntime::new(
        clock.clone(),
        SimConfig {
            boot_min: Duration::ZERO,
            boot_max: Duration::ZERO,
            ..SimConfig::default()
        },
    ));
    let metrics = Arc::new(AutoscalerMetrics::default());
    let mut config = gpu(SystemConfig::default());
    config.interval = Duration::from_millis(50);
    let engine = drover::Engine::builder(store.clone())
        .autoscaler(drover::services::autoscaler::AutoscalerParts {
            config,
            runtime: runtime.clone(),
            metrics: metrics.clone(),
        })
        .build()
        .unwrap();
    let handle = engine.start();
    let reservation = store
        .reservation_insert(ReservationInsertParams {
            system: "gpu".into(),
            holder: "test".into(),
            ttl: HOUR,
            now: None,
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let answered = loop {
        let now = store
            .reservation_list(ReservationListParams {
                id: Some(reservation.id),
                ..Default::default()
            })
            .await
            .unwrap()
            .remove(0);
        if now.phase == ReservationPhase::Assigned {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never assigned: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(answered.instance_id.unwrap().starts_with("sim-"));
    assert!(metrics.snapshot().ticks > 0);
    assert_eq!(runtime.counts().made, 1);
    handle.shutdown().await;
}

#[test]
fn a_bad_autoscaler_config_refuses_to_build() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(
        drover_sqlite::SqliteStore::open(drover_sqlite::SqliteConfig::new(dir.path().join("b.db")))
            .unwrap(),
    );
    let clock = Arc::new(drover_core::SystemClock);
    let err = drover::Engine::builder(store)
        .autoscaler(drover::services::autoscaler::AutoscalerParts {
            config: gpu(SystemConfig {
                min: 3,
                max: 1,
                ..Default::default()
            }),
            runtime: Arc::new(SimRuntime::new(clock, SimConfig::default())),
            metrics: Arc::default(),
        })
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("systems.gpu.min"), "{err}");
}

/// The simulator is deterministic for one seed, completes every job, and survives interruptions
/// by running handed-back jobs elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_is_deterministic_and_completes_every_job() {
    use drover::autoscaler::simulate::{SimulationOptions, parse_trace, simulate};
    let trace =
        parse_trace("time,system,jobs,duration\n0,gpu,5,10m\n600,gpu,20,15m\n3600,gpu,3,5m\n")
            .unwrap();
    let config = gpu(SystemConfig {
        max: 10,
        warm: 1,
        idle_timeout: Duration::from_secs(120),
        min_lifetime: Duration::from_secs(120),
        ..Default::default()
    });
    let options = SimulationOptions {
        sim: SimConfig {
            seed: 3,
            interruption_rate: 2.0,
            launch_failure_rate: 0.1,
            ..SimConfig::default()
        },
        prices: [("gpu".to_owned(), 2.0)].into(),
        ..Default::default()
    };
    let first = simulate(&config, &trace, &options).await.unwrap();
    let again = simulate(&config, &trace, &options).await.unwrap();
    assert_eq!(first, again, "same seed, same run");
    let gpu = &first.systems[0];
    assert_eq!(gpu.jobs_arrived, 28);
    assert_eq!(gpu.jobs_completed, 28);
    assert!(gpu.interruptions_survived > 0, "{gpu:?}");
    assert!(gpu.failed_launches > 0, "{gpu:?}");
    assert!(gpu.launches >= 10);
    assert!(gpu.wait_max_s >= gpu.wait_p95_s && gpu.wait_p95_s >= gpu.wait_p50_s);
    assert!(gpu.slot_hours > gpu.idle_slot_hours);
    assert_eq!(gpu.cost, Some(gpu.slot_hours * 2.0));
    // Never past the maximum, at any sample.
    assert!(first.samples.iter().all(|s| s.ready <= 10));
    let other = SimulationOptions {
        sim: SimConfig {
            seed: 4,
            ..options.sim.clone()
        },
        ..options
    };
    assert_ne!(simulate(&config, &trace, &other).await.unwrap(), first);
}
