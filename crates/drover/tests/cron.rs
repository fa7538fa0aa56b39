//! Cron on both backends — a real SQLite file and the real PostgreSQL server — with a simulated
//! clock: fire times enqueued once across a leader change, and the catch-up policies.

use std::sync::Arc;
use std::time::Duration;

use drover::Engine;
use drover::cron::{CatchUp, CronSchedule};
use drover::services::scheduler::Scheduler;
use drover_core::{
    Clock, CronFireResult, DynStore, JobListParams, LeaderElectParams, LeaderFence, SimulatedClock,
};
use jiff::{SignedDuration, Timestamp};

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// Instantiates each check once per backend.
macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = drover_sqlite::SqliteStore::open(
                        drover_sqlite::SqliteConfig::new(dir.path().join("cron.db")),
                    )
                    .unwrap();
                    drover_core::Store::migrate(&store).await.unwrap();
                    super::$check(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let url = drover_conformance::pg_server::url();
                    let schema = format!("drover_cron_{:016x}", fastrand::u64(..));
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
    each_fire_time_is_enqueued_once_across_a_leader_change,
    missed_fire_times_follow_the_catch_up_policy,
    a_bad_expression_refuses_to_build,
);

fn schedule(name: &str, expression: &str, catch_up: CatchUp) -> CronSchedule {
    CronSchedule {
        name: name.into(),
        expression: expression.into(),
        timezone: None,
        kind: "report.build".into(),
        args: format!(r#"{{"schedule":"{name}"}}"#),
        // A queue this engine does not work: it has no task for the kind (it only fires).
        queue: Some("reports".into()),
        catch_up,
    }
}

fn scheduler(store: &DynStore, clock: &SimulatedClock, schedules: Vec<CronSchedule>) -> Scheduler {
    let mut builder = Engine::builder(store.clone()).clock(Arc::new(clock.clone()));
    for s in schedules {
        builder = builder.cron(s);
    }
    let engine = builder.build().unwrap();
    Scheduler::new(
        store.clone(),
        Arc::new(clock.clone()),
        engine.cron_jobs().to_vec(),
    )
}

async fn elect(store: &DynStore, who: &str, now: Timestamp) -> LeaderFence {
    let term = store
        .leader_attempt_elect(LeaderElectParams {
            name: "default".into(),
            leader_id: who.into(),
            ttl: Duration::from_secs(60),
            now: Some(now),
        })
        .await
        .unwrap()
        .expect("elected");
    LeaderFence {
        name: "default".into(),
        leader_id: who.into(),
        term: term.term,
    }
}

async fn jobs_of(store: &DynStore, name: &str) -> Vec<serde_json::Value> {
    store
        .job_list(JobListParams {
            kind: Some("report.build".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.args.value())
        .filter(|args| args["schedule"] == name)
        .collect()
}

async fn each_fire_time_is_enqueued_once_across_a_leader_change(store: DynStore) {
    let clock = SimulatedClock::new(ts("2030-01-01T00:00:10Z"));
    let a_scheduler = scheduler(
        &store,
        &clock,
        vec![schedule("minutely", "* * * * *", CatchUp::Once)],
    );
    let b_scheduler = scheduler(
        &store,
        &clock,
        vec![schedule("minutely", "* * * * *", CatchUp::Once)],
    );
    a_scheduler.register(Some(clock.now())).await.unwrap();
    let a = elect(&store, "a", clock.now()).await;

    clock.set(ts("2030-01-01T00:01:00Z"));
    let fired = a_scheduler.run_once(&a, clock.now()).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert!(matches!(fired[0].result, CronFireResult::Fired { .. }));
    assert!(
        a_scheduler
            .run_once(&a, clock.now())
            .await
            .unwrap()
            .is_empty()
    );

    // a stalls past its term (60 s from 00:00:10); b is elected and fires the next minute.
    clock.advance(SignedDuration::from_secs(15));
    let b = elect(&store, "b", clock.now()).await;
    clock.set(ts("2030-01-01T00:02:00Z"));
    let stale = a_scheduler.run_once(&a, clock.now()).await.unwrap();
    assert_eq!(
        stale[0].result,
        CronFireResult::NotLeader,
        "the stale leader fires nothing"
    );
    let fired = b_scheduler.run_once(&b, clock.now()).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].fire_at, ts("2030-01-01T00:02:00Z"));
    assert!(
        b_scheduler
            .run_once(&b, clock.now())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        jobs_of(&store, "minutely").await.len(),
        2,
        "00:01 and 00:02, once each"
    );
    let states = store.cron_states().await.unwrap();
    assert_eq!(states[0].last_fire_at, Some(ts("2030-01-01T00:02:00Z")));
}

async fn missed_fire_times_follow_the_catch_up_policy(store: DynStore) {
    let clock = SimulatedClock::new(ts("2030-01-01T00:30:00Z"));
    let scheduler = scheduler(
        &store,
        &clock,
        vec![
            schedule("once", "0 * * * *", CatchUp::Once),
            schedule("skip", "0 * * * *", CatchUp::Skip),
            schedule("all", "0 * * * *", CatchUp::All),
        ],
    );
    scheduler.register(Some(clock.now())).await.unwrap();
    // Everything was down from 00:30 to 05:30: 01:00 … 05:00 were missed.
    clock.set(ts("2030-01-01T05:30:00Z"));
    let fence = elect(&store, "a", clock.now()).await;
    scheduler.run_once(&fence, clock.now()).await.unwrap();
    assert_eq!(
        jobs_of(&store, "once").await.len(),
        1,
        "one run for everything missed"
    );
    assert_eq!(
        jobs_of(&store, "skip").await.len(),
        0,
        "missed times are skipped"
    );
    assert_eq!(
        jobs_of(&store, "all").await.len(),
        5,
        "one run per missed time"
    );
    // Back to normal: 06:00 fires once for every policy.
    clock.set(ts("2030-01-01T06:00:01Z"));
    let fence = elect(&store, "a", clock.now()).await;
    scheduler.run_once(&fence, clock.now()).await.unwrap();
    assert_eq!(jobs_of(&store, "once").await.len(), 2);
    assert_eq!(jobs_of(&store, "skip").await.len(), 1);
    assert_eq!(jobs_of(&store, "all").await.len(), 6);
}

async fn a_bad_expression_refuses_to_build(store: DynStore) {
    let err = Engine::builder(store)
        .cron(schedule("nightly-report", "0 25 * * *", CatchUp::Once))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nightly-report") && err.contains("0 25 * * *"),
        "{err}"
    );
}
