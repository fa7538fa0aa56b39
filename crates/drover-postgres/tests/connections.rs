//! The PostgreSQL backend's connections: a listener that reconnects after its backend is
//! terminated, a pool that recovers after its connections are, a failed claim that leaves its
//! connection clean, statement timeouts, an unreachable server, reads before migrating, and
//! closing or dropping a store.

mod common;

use std::time::Duration;

use common::{admin, admin_on, bulk_job, connect, connect_with, eventually, fresh_store};
use drover_core::{JobClaimParams, JobInsertParams, JobState, Store, StoreError};
use drover_postgres::{PgConfig, PgStore};

const WAKE_WITHIN: Duration = Duration::from_secs(5);

/// The listener's connection is terminated by the server; it reconnects on its own, and then an
/// insert from another store wakes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_after_its_backend_is_terminated() {
    let (a, guard) = fresh_store().await;
    let mut config = common::config(&guard.schema);
    config.listener_max_backoff = Duration::from_millis(500);
    let b = connect_with(config).await;
    assert_eq!(b.listener_connections(), 1);

    // Only this test's listeners: other tests run at the same time.
    let terminated: i64 = admin()
        .await
        .unwrap()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' AND query = $1",
            &[&format!("LISTEN drover_wake_{}", guard.schema)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(terminated >= 1, "the listeners were found and terminated");

    eventually(
        Duration::from_secs(10),
        "b's listener reconnects",
        || async { b.listener_connections() >= 2 },
    )
    .await;
    // From here on, a change can only come from a notification: the reconnection's own
    // wake-up happened before the count went up.
    let mut wakeups = b.wakeups();
    wakeups.borrow_and_update();
    a.job_insert_many(JobInsertParams {
        jobs: vec![bulk_job(1)],
        now: None,
    })
    .await
    .unwrap();
    tokio::time::timeout(WAKE_WITHIN, wakeups.changed())
        .await
        .expect("b is woken again after reconnecting")
        .expect("b alive");
    a.close().await;
    b.close().await;
}

/// A statement stuck behind a lock ends at the statement timeout, as a transient error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_blocked_past_its_timeout_is_unavailable() {
    let (schema, _guard) = common::fresh_schema();
    let mut config = common::config(&schema);
    config.statement_timeout = Duration::from_millis(300);
    config.listen = false;
    let store = connect_with(config).await;
    store.migrate().await.unwrap();

    let mut locker = admin_on(&schema).await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE drover_jobs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let blocked = store.job_get(1).await;
    assert!(
        matches!(&blocked, Err(StoreError::Unavailable(why)) if why.contains("statement timeout")),
        "{blocked:?}"
    );
    assert!(blocked.unwrap_err().is_transient());
    tx.rollback().await.unwrap();
    assert!(store.job_get(1).await.unwrap().is_none());
    store.close().await;
}

/// An unreachable server fails the connect, as a transient error that names the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_the_connect() {
    let mut config = PgConfig::from_url("postgres://postgres@127.0.0.1:1/test").unwrap();
    config.connect_timeout = Duration::from_secs(2);
    let err = PgStore::connect(config)
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        matches!(&err, StoreError::Unavailable(why) if why.contains("127.0.0.1:1")),
        "{err:?}"
    );
}

/// After close, calls fail with Closed and the listener's connection is gone; dropping a store
/// without closing it stops its listener too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_drop_stop_the_store_and_its_listener() {
    let (store, guard) = fresh_store().await;
    let listeners = || {
        let schema = guard.schema.clone();
        async move {
            admin()
                .await
                .unwrap()
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = $1",
                    &[&format!("LISTEN drover_wake_{schema}")],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(listeners().await, 1);
    store.close().await;
    assert!(matches!(store.job_get(1).await, Err(StoreError::Closed)));
    assert!(matches!(
        store
            .job_insert_many(JobInsertParams {
                jobs: vec![bulk_job(1)],
                now: None
            })
            .await,
        Err(StoreError::Closed)
    ));
    eventually(
        Duration::from_secs(5),
        "the listener disconnects",
        || async { listeners().await == 0 },
    )
    .await;

    let dropped = connect(&guard.schema).await;
    eventually(Duration::from_secs(5), "a new listener", || async {
        listeners().await == 1
    })
    .await;
    drop(dropped);
    eventually(
        Duration::from_secs(5),
        "the dropped store's listener disconnects",
        || async { listeners().await == 0 },
    )
    .await;
}

/// Reads before `migrate` name the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_before_migrating_say_to_migrate() {
    let (schema, _guard) = common::fresh_schema();
    let store = connect(&schema).await;
    let err = store.job_get(1).await.expect_err("not migrated");
    assert!(err.to_string().contains("drover migrate"), "{err}");
    store.close().await;
}

/// A claim whose pipelined transaction fails midway (here: a statement timeout behind a lock)
/// reports a transient error and leaves its connection clean for the next operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_claim_leaves_its_connection_clean() {
    let (schema, _guard) = common::fresh_schema();
    let mut config = common::config(&schema);
    // One connection: the next operation reuses the one the failed claim had.
    config.pool_size = 1;
    config.statement_timeout = Duration::from_millis(300);
    config.listen = false;
    let store = connect_with(config).await;
    store.migrate().await.unwrap();
    store
        .job_insert_many(JobInsertParams {
            jobs: vec![bulk_job(1)],
            now: None,
        })
        .await
        .unwrap();
    let claim = || {
        store.job_claim(JobClaimParams {
            queue: "default".into(),
            limit: 1,
            owner: "w".into(),
            lease: Duration::from_secs(30),
            now: None,
        })
    };

    let mut locker = admin_on(&schema).await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE drover_jobs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let failed = claim().await;
    assert!(
        matches!(&failed, Err(StoreError::Unavailable(why)) if why.contains("statement timeout")),
        "{failed:?}"
    );
    tx.rollback().await.unwrap();

    let claimed = claim().await.expect("the connection is usable again").jobs;
    assert_eq!(claimed.len(), 1, "the failed claim took nothing");
    let record = store.job_get(claimed[0].id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Running);
    assert_eq!(record.attempt, 1);
    store.close().await;
}

/// The pool's connections are terminated by the server: operations meanwhile fail only with
/// transient errors, and the store recovers on its own with fresh connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_after_its_connections_are_terminated() {
    let (schema, _guard) = common::fresh_schema();
    let mut config = common::config(&schema);
    config.application_name = format!("drover_test_{schema}");
    let store = connect_with(config).await;
    store.migrate().await.unwrap();
    let id = store
        .job_insert_many(JobInsertParams {
            jobs: vec![bulk_job(1)],
            now: None,
        })
        .await
        .unwrap()[0]
        .id;

    let terminated: i64 = admin()
        .await
        .unwrap()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&format!("drover_test_{schema}")],
        )
        .await
        .unwrap()
        .get(0);
    assert!(terminated >= 2, "the pool's and the listener's connections");

    eventually(Duration::from_secs(10), "the store works again", || async {
        match store.job_get(id).await {
            Ok(found) => found.is_some(),
            Err(err) => {
                assert!(err.is_transient(), "{err:?}");
                false
            }
        }
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the listener reconnects",
        || async { store.listener_connections() >= 2 },
    )
    .await;
    store.close().await;
}
