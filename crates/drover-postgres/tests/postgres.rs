//! What only the PostgreSQL backend has to prove: batches beyond the parameter limit,
//! LISTEN/NOTIFY across stores, enqueue inside the caller's transaction, concurrent claims,
//! inserts and migrations, the database clock, batches of outcomes, and the vacuum. Its
//! connections (reconnects, timeouts, closing) are in `connections.rs`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{admin, admin_on, bulk_job, connect, connect_with, eventually, fresh_store};
use drover_core::{
    JobClaimParams, JobFinishParams, JobInsertParams, JobOutcome, JobState, LeaseRef, NewJob,
    Outcome, Store, StoreError,
};
use jiff::Timestamp;

const WAKE_WITHIN: Duration = Duration::from_secs(5);

async fn count_jobs(schema: &str) -> i64 {
    admin_on(schema)
        .await
        .query_one("SELECT count(*) FROM drover_jobs", &[])
        .await
        .expect("count")
        .get(0)
}

/// 70,000 jobs in one call: as scalar parameters that would be 700,000, ten times PostgreSQL's
/// limit of 65,535 per statement. Ids come back in input order; unique keys dedupe across the
/// statement chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_insert_of_70_000_jobs_in_one_call() {
    let (store, guard) = fresh_store().await;
    let mut jobs: Vec<NewJob> = (0..70_000).map(bulk_job).collect();
    jobs[10].unique_key = Some("once".into());
    jobs[69_990].unique_key = Some("once".into());
    let inserted = store
        .job_insert_many(JobInsertParams { jobs, now: None })
        .await
        .expect("insert 70,000 jobs");
    assert_eq!(inserted.len(), 70_000);
    assert!(inserted[69_990].duplicate);
    assert_eq!(inserted[69_990].id, inserted[10].id);
    let fresh: Vec<i64> = inserted
        .iter()
        .filter(|job| !job.duplicate)
        .map(|job| job.id)
        .collect();
    assert_eq!(fresh.len(), 69_999);
    assert!(
        fresh.windows(2).all(|w| w[0] < w[1]),
        "ids grow in input order"
    );
    assert!(inserted.iter().all(|job| job.state == JobState::Available));
    assert_eq!(count_jobs(&guard.schema).await, 69_999);
    let last = store
        .job_get(inserted[69_999].id)
        .await
        .unwrap()
        .expect("last job");
    assert_eq!(last.args.value(), serde_json::json!({"i": 69_999}));
    store.close().await;
}

/// An insert through one store wakes another store on the same schema (through NOTIFY), and
/// not a store on another schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_wakes_a_second_store_on_the_same_schema() {
    let (a, guard) = fresh_store().await;
    let b = connect(&guard.schema).await;
    let (other, _other_guard) = common::fresh_schema();
    let c = connect(&other).await;
    assert_eq!(b.listener_connections(), 1, "b listens once connected");

    let mut b_wakeups = b.wakeups();
    b_wakeups.borrow_and_update();
    let mut c_wakeups = c.wakeups();
    c_wakeups.borrow_and_update();
    a.job_insert_many(JobInsertParams {
        jobs: vec![bulk_job(1)],
        now: None,
    })
    .await
    .unwrap();
    tokio::time::timeout(WAKE_WITHIN, b_wakeups.changed())
        .await
        .expect("b is woken by a's insert")
        .expect("b alive");
    // Both notifications (if c's existed) would be delivered at the same commit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !c_wakeups.has_changed().unwrap(),
        "a store on another schema is not woken"
    );
    a.close().await;
    b.close().await;
    c.close().await;
}

/// Jobs enqueued in the caller's transaction exist if and only if it commits; the caller's
/// search_path does not matter; workers are woken at the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_in_the_callers_transaction_commits_or_rolls_back_with_it() {
    let (store, guard) = fresh_store().await;
    // A plain connection on the default search_path, as a service's own would be.
    let mut client = admin().await.unwrap();
    client
        .batch_execute(
            "CREATE TEMPORARY TABLE orders (id bigint PRIMARY KEY); SET search_path TO public",
        )
        .await
        .unwrap();
    let mut wakeups = store.wakeups();
    wakeups.borrow_and_update();

    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO orders (id) VALUES (1)", &[])
        .await
        .unwrap();
    let committed = store
        .insert_jobs_in_transaction(&tx, &[bulk_job(1), bulk_job(2)])
        .await
        .expect("insert in transaction");
    assert_eq!(committed.len(), 2);
    assert!(
        store.job_get(committed[0].id).await.unwrap().is_none(),
        "invisible before the commit"
    );
    tx.commit().await.unwrap();
    for inserted in &committed {
        let record = store
            .job_get(inserted.id)
            .await
            .unwrap()
            .expect("committed");
        assert_eq!(record.state, JobState::Available);
    }
    tokio::time::timeout(WAKE_WITHIN, wakeups.changed())
        .await
        .expect("woken by the commit")
        .expect("alive");

    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO orders (id) VALUES (2)", &[])
        .await
        .unwrap();
    let rolled_back = store
        .insert_jobs_in_transaction(&tx, &[bulk_job(3)])
        .await
        .expect("insert in transaction");
    tx.rollback().await.unwrap();
    assert!(store.job_get(rolled_back[0].id).await.unwrap().is_none());
    assert_eq!(count_jobs(&guard.schema).await, 2);

    // Bad input is refused before anything is written.
    let tx = client.transaction().await.unwrap();
    let refused = store
        .insert_jobs_in_transaction(&tx, &[NewJob::new("k", "[1, 2]")])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    tx.rollback().await.unwrap();
    store.close().await;
}

/// Many workers claiming at once never get the same job: SKIP LOCKED hands each row to one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_never_share_a_job() {
    let (store, _guard) = fresh_store().await;
    store
        .job_insert_many(JobInsertParams {
            jobs: (0..400).map(bulk_job).collect(),
            now: None,
        })
        .await
        .unwrap();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..6 {
        let store = store.clone();
        workers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .job_claim(JobClaimParams {
                        queue: "default".into(),
                        limit: 7,
                        owner: format!("w{w}"),
                        lease: Duration::from_secs(30),
                        now: None,
                    })
                    .await
                    .expect("claim")
                    .jobs;
                if claimed.is_empty() {
                    return mine;
                }
                let outcomes = claimed
                    .iter()
                    .map(|job| {
                        JobOutcome::completed(LeaseRef {
                            id: job.id,
                            lease_token: job.lease_token,
                        })
                    })
                    .collect();
                let results = store
                    .job_finish_many(JobFinishParams {
                        outcomes,
                        now: None,
                    })
                    .await
                    .expect("finish");
                assert!(results.iter().all(|r| r.accepted));
                mine.extend(claimed.iter().map(|job| job.id));
            }
        });
    }
    let mut seen = HashSet::new();
    while let Some(ids) = workers.join_next().await {
        for id in ids.unwrap() {
            assert!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 400);
    store.close().await;
}

/// Processes migrating the same new schema at once wait for each other: one applies every
/// version, the others find nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_each_version_once() {
    let (schema, _guard) = common::fresh_schema();
    let mut stores = Vec::new();
    for _ in 0..4 {
        let mut config = common::config(&schema);
        config.listen = false;
        stores.push(Arc::new(connect_with(config).await));
    }
    let mut migrations = tokio::task::JoinSet::new();
    for store in &stores {
        let store = store.clone();
        migrations.spawn(async move { store.migrate().await.expect("migrate") });
    }
    let mut applied = Vec::new();
    let mut latest = 0;
    while let Some(report) = migrations.join_next().await {
        let report = report.unwrap();
        latest = latest.max(report.version);
        applied.extend(report.applied);
    }
    applied.sort_unstable();
    assert!(latest >= 3);
    assert_eq!(
        applied,
        (1..=latest).collect::<Vec<_>>(),
        "each version applied exactly once"
    );
    for store in stores {
        store.close().await;
    }
}

/// A schema a newer build migrated is reported as such (its version, above the one this build
/// knows), and nothing is applied or rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_build_is_reported() {
    let (schema, _guard) = common::fresh_schema();
    let store = connect_with(common::config(&schema)).await;
    let first = store.migrate().await.expect("migrate");
    assert!(!first.is_newer_than_known());
    assert_eq!(first.version, first.known);
    admin_on(&schema)
        .await
        .execute(
            "INSERT INTO drover_schema (version) VALUES ($1)",
            &[&(first.known as i32 + 1)],
        )
        .await
        .unwrap();
    let again = store.migrate().await.expect("migrate again");
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.version, first.known + 1);
    assert_eq!(again.known, first.known);
    assert!(again.is_newer_than_known());
    store.close().await;
}

/// `now: None` means the database clock: times come from the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_clock_decides_when_now_is_not_pinned() {
    let (store, _guard) = fresh_store().await;
    let before = Timestamp::now();
    let id = store
        .job_insert_many(JobInsertParams {
            jobs: vec![bulk_job(1)],
            now: None,
        })
        .await
        .unwrap()[0]
        .id;
    let claimed = store
        .job_claim(JobClaimParams {
            queue: "default".into(),
            limit: 1,
            owner: "w".into(),
            lease: Duration::from_secs(30),
            now: None,
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.len(), 1);
    let record = store.job_get(id).await.unwrap().unwrap();
    // The server runs on this machine: its clock agrees with ours within a minute.
    let skew = jiff::SignedDuration::from_secs(60);
    assert!(record.created_at > before - skew && record.created_at < before + skew);
    let attempted = record.attempted_at.expect("attempted");
    assert_eq!(
        record.lease_expires_at,
        Some(attempted + jiff::SignedDuration::from_secs(30))
    );
    store.close().await;
}

/// Transactions racing to insert the same unique key: one inserts, the others wait for it and
/// answer with its id (SQLite's single writer never races; here the unique index decides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_of_one_unique_key_insert_it_once() {
    let (store, guard) = fresh_store().await;
    let mut inserts = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        inserts.spawn(async move {
            let mut job = bulk_job(i);
            job.unique_key = Some("the-one".into());
            // Other jobs in the same batch are inserted whatever happens to the unique one.
            store
                .job_insert_many(JobInsertParams {
                    jobs: vec![job, bulk_job(100 + i)],
                    now: None,
                })
                .await
                .expect("insert")
        });
    }
    let mut unique = Vec::new();
    while let Some(results) = inserts.join_next().await {
        let results = results.unwrap();
        assert!(!results[1].duplicate);
        unique.push(results[0]);
    }
    assert_eq!(unique.iter().filter(|r| !r.duplicate).count(), 1);
    assert!(unique.iter().all(|r| r.id == unique[0].id));
    assert_eq!(count_jobs(&guard.schema).await, 1 + 8);
    store.close().await;
}

/// A hand-back (work available again) and a cancel request (a worker must look) wake the
/// workers of other processes, not only those of this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_backs_and_cancel_requests_wake_other_stores() {
    let (a, guard) = fresh_store().await;
    let b = connect(&guard.schema).await;
    a.job_insert_many(JobInsertParams {
        jobs: vec![bulk_job(1), bulk_job(2)],
        now: None,
    })
    .await
    .unwrap();
    let claimed = a
        .job_claim(JobClaimParams {
            queue: "default".into(),
            limit: 2,
            owner: "w".into(),
            lease: Duration::from_secs(30),
            now: None,
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.len(), 2);

    let mut wakeups = b.wakeups();
    wakeups.borrow_and_update();
    let handed_back = a
        .job_finish_many(JobFinishParams {
            outcomes: vec![JobOutcome {
                lease: LeaseRef {
                    id: claimed[0].id,
                    lease_token: claimed[0].lease_token,
                },
                step: None,
                outcome: Outcome::HandBack {
                    reason: "shutdown".into(),
                },
            }],
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(handed_back[0].state, Some(JobState::Available));
    tokio::time::timeout(WAKE_WITHIN, wakeups.changed())
        .await
        .expect("b is woken by the hand-back")
        .unwrap();

    wakeups.borrow_and_update();
    let cancel = a
        .job_cancel(drover_core::JobCancelParams {
            id: claimed[1].id,
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(cancel, drover_core::CancelResult::Requested);
    tokio::time::timeout(WAKE_WITHIN, wakeups.changed())
        .await
        .expect("b is woken by the cancel request")
        .unwrap();
    a.close().await;
    b.close().await;
}

/// One batch of outcomes answers as if they were recorded one by one (as SQLite does): a
/// repeated lease is rejected and sees the state the first one led to; a wrong token before the
/// right one is rejected and sees the job still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_outcomes_answers_as_if_recorded_one_by_one() {
    let (store, _guard) = fresh_store().await;
    store
        .job_insert_many(JobInsertParams {
            jobs: vec![bulk_job(1), bulk_job(2)],
            now: None,
        })
        .await
        .unwrap();
    let claimed = store
        .job_claim(JobClaimParams {
            queue: "default".into(),
            limit: 2,
            owner: "w".into(),
            lease: Duration::from_secs(30),
            now: None,
        })
        .await
        .unwrap()
        .jobs;
    let lease = |i: usize, token: i64| LeaseRef {
        id: claimed[i].id,
        lease_token: token,
    };
    let outcome = |lease, outcome| JobOutcome {
        lease,
        step: None,
        outcome,
    };
    let discard = || Outcome::Discard {
        error: "late".into(),
    };
    let results = store
        .job_finish_many(JobFinishParams {
            outcomes: vec![
                outcome(lease(0, claimed[0].lease_token), Outcome::Completed),
                outcome(lease(0, claimed[0].lease_token), discard()),
                outcome(lease(1, claimed[1].lease_token ^ 1), discard()),
                outcome(lease(1, claimed[1].lease_token), Outcome::Completed),
                outcome(
                    LeaseRef {
                        id: 999_999,
                        lease_token: 1,
                    },
                    Outcome::Completed,
                ),
            ],
            now: None,
        })
        .await
        .unwrap();
    let answers: Vec<(bool, Option<JobState>)> =
        results.iter().map(|r| (r.accepted, r.state)).collect();
    assert_eq!(
        answers,
        vec![
            (true, Some(JobState::Completed)),
            (false, Some(JobState::Completed)),
            (false, Some(JobState::Running)),
            (true, Some(JobState::Completed)),
            (false, None),
        ]
    );
    let record = store.job_get(claimed[0].id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Completed);
    assert!(
        record.errors.is_empty(),
        "the rejected discard left no trace"
    );
    store.close().await;
}

/// A running job with a cancel request whose lease expires is cancelled by the rescue, not run
/// again, with the reason recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_with_a_cancel_request_is_cancelled() {
    let (store, _guard) = fresh_store().await;
    let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let at = |secs| t0 + jiff::SignedDuration::from_secs(secs);
    let id = store
        .job_insert_many(JobInsertParams {
            jobs: vec![bulk_job(1)],
            now: Some(t0),
        })
        .await
        .unwrap()[0]
        .id;
    store
        .job_claim(JobClaimParams {
            queue: "default".into(),
            limit: 1,
            owner: "w".into(),
            lease: Duration::from_secs(30),
            now: Some(at(1)),
        })
        .await
        .unwrap();
    store
        .job_cancel(drover_core::JobCancelParams {
            id,
            now: Some(at(2)),
        })
        .await
        .unwrap();
    let rescued = store
        .job_rescue_expired(drover_core::JobRescueParams {
            limit: 10,
            now: Some(at(40)),
        })
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].state, JobState::Cancelled);
    let record = store.job_get(id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Cancelled);
    assert_eq!(record.completed_at, Some(at(40)));
    assert_eq!(
        record.errors[0].message,
        "lease expired at 2030-01-01T00:00:31.000000Z while a cancel was requested"
    );
    assert_eq!(record.errors[0].at, at(40));
    store.close().await;
}

/// After `vacuum_after_claims` claimed jobs (a tenth of them the first time) the store vacuums
/// the jobs table on its own (the dead entries that claims leave in the index of available jobs
/// would otherwise slow every later claim of a long drain), and the server records the vacuum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_add_up_to_a_vacuum_of_the_jobs_table() {
    let (schema, _guard) = common::fresh_schema();
    let mut config = common::config(&schema);
    config.vacuum_after_claims = 100;
    let store = connect_with(config).await;
    store.migrate().await.unwrap();
    store
        .job_insert_many(JobInsertParams {
            jobs: (0..150).map(bulk_job).collect(),
            now: None,
        })
        .await
        .unwrap();
    let claim = |limit| JobClaimParams {
        queue: "default".into(),
        limit,
        owner: "w".into(),
        lease: Duration::from_secs(30),
        now: None,
    };
    assert_eq!(store.job_claim(claim(5)).await.unwrap().jobs.len(), 5);
    // 5 claimed: not yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.vacuums(), 0);
    assert_eq!(store.job_claim(claim(10)).await.unwrap().jobs.len(), 10);
    eventually(Duration::from_secs(20), "the first vacuum", || async {
        store.vacuums() == 1
    })
    .await;
    // Past the first, a vacuum every 100 claims.
    assert_eq!(store.job_claim(claim(60)).await.unwrap().jobs.len(), 60);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.vacuums(), 1);
    assert_eq!(store.job_claim(claim(60)).await.unwrap().jobs.len(), 60);
    eventually(Duration::from_secs(20), "the second vacuum", || async {
        store.vacuums() == 2
    })
    .await;
    let vacuumed: i64 = admin_on(&schema)
        .await
        .query_one(
            "SELECT vacuum_count FROM pg_stat_user_tables \
             WHERE schemaname = current_schema() AND relname = 'drover_jobs'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(vacuumed, 2);
}
