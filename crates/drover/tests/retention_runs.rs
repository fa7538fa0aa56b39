//! Every run of a retention policy is recorded, failed runs with their error, and the admin
//! view shows them newest first with the policy's next run.

use std::sync::Arc;

use drover::Admin;
use drover::retention::{Keep, RetentionPolicy, Trigger};
use drover_core::{DynStore, SimulatedClock};
use drover_sqlite::{SqliteConfig, SqliteStore};
use jiff::{SignedDuration, Timestamp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_runs_are_recorded_with_their_error_beside_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retention.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "CREATE TABLE usage (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL);
         CREATE TABLE usage_archive (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL);
         INSERT INTO usage (created_at) VALUES
             ('2029-01-01T00:00:00.000000Z'), ('2029-01-02T00:00:00.000000Z'),
             ('2029-01-03T00:00:00.000000Z'), ('2031-01-01T00:00:00.000000Z');",
    )
    .unwrap();
    let store: DynStore = Arc::new(SqliteStore::open(SqliteConfig::new(&path)).unwrap());
    store.migrate().await.unwrap();
    let policy = RetentionPolicy {
        name: "usage".into(),
        table: "usage".into(),
        archive_table: "usage_archive".into(),
        id_column: "id".into(),
        age_column: "created_at".into(),
        fallback_column: None,
        keep: Keep::Months(13),
        batch_size: 2,
        schedule: "0 2 * * *".into(),
        finished_jobs_only: false,
    };
    let prepared = drover::retention::prepare(&store, policy.clone())
        .await
        .unwrap();
    let start: Timestamp = "2030-06-01T12:00:00Z".parse().unwrap();
    let clock = SimulatedClock::new(start);

    let moved = prepared
        .run_recorded(&store, &clock, Trigger::Schedule, |_| {
            clock.advance(SignedDuration::from_secs(1))
        })
        .await
        .unwrap();
    assert_eq!(moved, 3);

    // The archive table goes away under the policy: the next run fails, and says why.
    clock.advance(SignedDuration::from_mins(10));
    db.execute_batch(
        "DROP TABLE usage_archive;
         INSERT INTO usage (created_at) VALUES ('2029-02-01T00:00:00.000000Z');",
    )
    .unwrap();
    let failed = prepared
        .run_recorded(&store, &clock, Trigger::Manual, |_| {})
        .await;
    assert!(failed.is_err());

    let defaults = drover::JobDefaults::new(
        Arc::new(clock.clone()),
        Default::default(),
        Default::default(),
    );
    let admin = Admin::new(store.clone(), defaults, Vec::new()).with_retention(vec![policy]);
    let views = admin.retention().await.unwrap();
    assert_eq!(views.len(), 1);
    let view = &views[0];
    assert_eq!(
        (
            view.name.as_str(),
            view.age.as_str(),
            view.schedule.as_str()
        ),
        ("usage", "13 months", "0 2 * * *")
    );
    assert_eq!(
        view.next_run_at,
        Some("2030-06-02T02:00:00Z".parse().unwrap())
    );
    assert_eq!(view.runs.len(), 2);
    let (last, first) = (&view.runs[0], &view.runs[1]);
    assert_eq!(last.trigger, "manual");
    assert_eq!(last.rows_moved, 0);
    let error = last.error.as_deref().expect("the failure is recorded");
    assert!(error.contains("usage_archive"), "{error}");
    assert_eq!(first.trigger, "schedule");
    assert_eq!((first.rows_moved, first.error.as_deref()), (3, None));
    assert_eq!(first.started_at, start);
    assert_eq!(
        first.finished_at,
        start + SignedDuration::from_secs(2),
        "timed by the clock: two batches of one second"
    );
    store.close().await;
}
