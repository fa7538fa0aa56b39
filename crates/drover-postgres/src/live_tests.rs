//! Tests against the PostgreSQL test server that need the crate's internals: the hot statements
//! read their partial indexes, never the whole table (finished rows are most of it); pooled
//! sessions carry their settings; real server errors are classified as they should be.
//!
//! The server comes from `DROVER_TEST_POSTGRES_URL`, or is a throwaway cluster started for the
//! test binary when it is unset (`drover_conformance::pg_server`); an unreachable server fails
//! the tests.

use drover_core::{JobInsertParams, NewJob, Store};

use crate::error::DbError;
use crate::{PgConfig, PgStore, finish, jobs};

fn test_url() -> String {
    drover_conformance::pg_server::url()
}

/// Drops its schema when dropped, even when the test panics.
struct SchemaGuard(String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        // The test's runtime may be shutting down: a thread with a runtime of its own drops
        // the schema, and we wait for it.
        let schema = self.0.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&test_url(), tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
            });
        });
        let _ = thread.join();
    }
}

/// A migrated store on a fresh schema, and the guard that drops the schema.
async fn fresh_store() -> (PgStore, SchemaGuard) {
    let schema = format!("drover_t_{:016x}", fastrand::u64(..));
    let guard = SchemaGuard(schema.clone());
    let mut config = PgConfig::from_url(&test_url()).expect("test URL parses");
    config.schema = Some(schema);
    config.listen = false;
    let store = PgStore::connect(config).await.unwrap_or_else(|err| {
        panic!(
            "cannot reach the PostgreSQL test server at {} (set DROVER_TEST_POSTGRES_URL): {err}",
            test_url()
        )
    });
    store.migrate().await.expect("migrate");
    (store, guard)
}

/// A statement to explain: what it is, its SQL, its arguments, and the indexes it may read.
type Case<'a> = (&'a str, &'a str, &'a str, &'a [&'a str]);

/// With 100,000 finished rows and a few live ones, the claim, the promotion, the rescue, the
/// heartbeat and the completion are planned on indexes, never a sequential scan of the jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_statements_use_indexes_over_a_table_of_finished_jobs() {
    let (store, _guard) = fresh_store().await;
    let client = store.client().await.expect("connection");
    client
        .batch_execute(
            "INSERT INTO drover_jobs (queue, kind, args, state, max_attempts, delivery, \
                 scheduled_at, created_at, attempted_at, completed_at, attempt) \
             SELECT 'default', 'done', '{}', 'completed', 3, 'at-least-once', \
                 now() - interval '1 day', now() - interval '1 day', now(), now(), 1 \
             FROM generate_series(1, 100000); \
             INSERT INTO drover_jobs (queue, kind, args, state, max_attempts, delivery, \
                 scheduled_at, created_at) \
             SELECT 'default', 'live', '{}', CASE WHEN i % 3 = 0 THEN 'scheduled' ELSE 'available' END, \
                 3, 'at-least-once', now() + (i % 3) * interval '1 hour', now() \
             FROM generate_series(1, 60) AS i; \
             INSERT INTO drover_jobs (queue, kind, args, state, max_attempts, delivery, \
                 scheduled_at, created_at, attempted_at, attempt, lease_owner, lease_token, \
                 lease_expires_at) \
             SELECT 'default', 'busy', '{}', 'running', 3, 'at-least-once', now(), now(), now(), \
                 1, 'w', i, now() + interval '30 seconds' \
             FROM generate_series(1, 20) AS i; \
             ANALYZE drover_jobs;",
        )
        .await
        .expect("fill the table");

    // Each statement, its arguments (SQL literals, as `EXECUTE` takes them), and the indexes
    // it may read (any one of them will do).
    let cases: Vec<Case<'_>> = vec![
        (
            "claim (inner select)",
            jobs::CLAIM_PICK,
            "'default', 10",
            &["drover_jobs_fetch"],
        ),
        (
            "claim",
            jobs::CLAIM,
            "'default', 10, 'w', 7, 30000000, NULL",
            &["drover_jobs_fetch"],
        ),
        (
            "promotion",
            jobs::PROMOTE,
            "'default', NULL",
            &["drover_jobs_due"],
        ),
        (
            "rescue",
            jobs::RESCUE_EXPIRED,
            "NULL, 10",
            &["drover_jobs_lease"],
        ),
        (
            "heartbeat",
            jobs::HEARTBEAT,
            "'{100001,100002}', '{1,2}', '{NULL,NULL}', 30000000, NULL",
            &["drover_jobs_pkey"],
        ),
        (
            "completion",
            finish::FINISH,
            "'{100001,100002}', '{1,2}', '{completed,retry}', '{NULL,NULL}', '{NULL,NULL}', \
             '{0,1000000}', NULL, 'drover_wake_plan'",
            &["drover_jobs_pkey"],
        ),
        (
            "plain completion",
            finish::FINISH_COMPLETED,
            "'{100001,100002}', '{1,2}', NULL",
            &["drover_jobs_pkey"],
        ),
        (
            "cancel check",
            jobs::CANCEL_REQUESTED,
            "'{100001,100002,100003}'",
            &["drover_jobs_cancel_requested"],
        ),
        (
            "forgetting empty queues",
            crate::admin::FORGET_EMPTY_QUEUES,
            "",
            &["drover_jobs_fetch"],
        ),
    ];
    // Custom plans (a statement's first runs), then the generic plan a prepared statement
    // switches to: the batch statements must reach their jobs by primary key in both, not by
    // looping over every running job for each lease.
    for mode in ["force_custom_plan", "force_generic_plan"] {
        set_plan_mode(&client, mode).await;
        for (what, sql, args, indexes) in &cases {
            let plan = explain(&client, what, sql, args).await;
            // Shown with --nocapture.
            eprintln!("{what} ({mode}):\n{plan}\n");
            assert!(
                !plan.contains("Seq Scan on drover_jobs"),
                "the {what} scans the whole table ({mode}):\n{plan}"
            );
            assert!(
                indexes.iter().any(|index| plan.contains(index)),
                "the {what} uses none of {indexes:?} ({mode}):\n{plan}"
            );
            if indexes == &["drover_jobs_pkey"] {
                assert!(
                    !plan.contains("drover_jobs_lease"),
                    "the {what} reads every running job ({mode}):\n{plan}"
                );
            }
        }
    }
    drop(client);
    store.close().await;
}

/// A plan made while the table was new and small reads all of it (cheapest then), and a
/// prepared statement keeps its plan: once the store's inserts have grown the table, its
/// analyze makes the claim planned again, by index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyze_as_the_table_grows_makes_the_claim_planned_again() {
    let (store, _guard) = fresh_store().await;
    let client = store.client().await.expect("connection");
    client
        .batch_execute(
            "INSERT INTO drover_jobs (queue, kind, args, state, max_attempts, delivery, \
                 scheduled_at, created_at) \
             SELECT 'default', 'live', '{}', 'available', 3, 'at-least-once', now(), now() \
             FROM generate_series(1, 3)",
        )
        .await
        .expect("fill the table");
    set_plan_mode(&client, "force_generic_plan").await;
    client
        .batch_execute(&format!("PREPARE claim AS {}", jobs::CLAIM))
        .await
        .expect("prepare");
    let plan = || async {
        let rows = client
            .query(
                "EXPLAIN EXECUTE claim('default', 10, 'w', 7, 30000000, NULL)",
                &[],
            )
            .await
            .expect("explain");
        rows.iter()
            .map(|row| row.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let small = plan().await;
    assert!(
        small.contains("Seq Scan on drover_jobs"),
        "the premise: a plan for a small table reads all of it:\n{small}"
    );

    let jobs: Vec<NewJob> = (0..10_000).map(|_| NewJob::new("grow", "{}")).collect();
    store
        .job_insert_many(JobInsertParams { jobs, now: None })
        .await
        .expect("insert");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.analyses() == 0 {
        assert!(std::time::Instant::now() < deadline, "no analyze");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let grown = plan().await;
    assert!(
        !grown.contains("Seq Scan on drover_jobs") && grown.contains("drover_jobs_pkey"),
        "the claim was not planned again for the grown table:\n{grown}"
    );
    // The analyze skips the JSON columns, the costliest to analyze, which no plan reads.
    let analyzed: Vec<String> = client
        .query(
            "SELECT attname::text FROM pg_stats WHERE schemaname = current_schema() \
               AND tablename = 'drover_jobs' ORDER BY attname",
            &[],
        )
        .await
        .expect("pg_stats")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        analyzed.iter().any(|column| column == "state")
            && !analyzed
                .iter()
                .any(|column| column == "args" || column == "history"),
        "analyzed columns: {analyzed:?}"
    );
    drop(client);
    store.close().await;
}

async fn set_plan_mode(client: &tokio_postgres::Client, mode: &str) {
    client
        .batch_execute(&format!("SET plan_cache_mode = {mode}"))
        .await
        .expect("plan mode");
}

/// The plan of `sql` run with `args` (SQL literals), as a prepared statement in the session's
/// `plan_cache_mode`: `EXPLAIN` alone plans with the parameters' values.
async fn explain(client: &tokio_postgres::Client, what: &str, sql: &str, args: &str) -> String {
    client
        .batch_execute(&format!("PREPARE plan_check AS {sql}"))
        .await
        .unwrap_or_else(|err| panic!("PREPARE {what}: {err}"));
    let execute = if args.is_empty() {
        "EXECUTE plan_check".to_owned()
    } else {
        format!("EXECUTE plan_check({args})")
    };
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN {execute}"), &[])
        .await
        .unwrap_or_else(|err| panic!("EXPLAIN {what}: {err}"))
        .iter()
        .map(|row| row.get(0))
        .collect();
    client
        .batch_execute("DEALLOCATE plan_check")
        .await
        .expect("deallocate");
    plan.join("\n")
}

/// Every pooled session has its timeouts, the schema's search_path, and JIT off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sessions_carry_their_settings() {
    let (store, guard) = fresh_store().await;
    let client = store.client().await.expect("connection");
    let show = |setting: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SHOW {setting}"), &[])
                .await
                .expect("show")
                .get::<_, String>(0)
        }
    };
    assert_eq!(show("statement_timeout").await, "30s");
    assert_eq!(show("idle_in_transaction_session_timeout").await, "1min");
    assert_eq!(show("search_path").await, guard.0);
    assert_eq!(show("application_name").await, "drover");
    assert_eq!(show("jit").await, "off");
    assert_eq!(show("backend_flush_after").await, "256kB");
    drop(client);
    store.close().await;
}

/// A `backend_flush_after` the URL sets (or the role, the database, the server) is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_setting_of_the_operator_is_kept() {
    let (store, guard) = fresh_store().await;
    store.close().await;
    let url = test_url();
    let join = if url.contains('?') { '&' } else { '?' };
    let mut config =
        PgConfig::from_url(&format!("{url}{join}options=-c%20backend_flush_after%3D0"))
            .expect("url");
    config.schema = Some(guard.0.clone());
    config.listen = false;
    let store = PgStore::connect(config).await.expect("connect");
    let client = store.client().await.expect("connection");
    let value: String = client
        .query_one("SHOW backend_flush_after", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(value, "0");
    drop(client);
    store.close().await;
}

/// A real deadlock: the transaction that loses is one the store may try again, and the error
/// that escapes after the last try is transient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_is_retryable_and_transient() {
    let (store, _guard) = fresh_store().await;
    let mut one = store.client().await.expect("connection");
    let mut two = store.client().await.expect("connection");
    let setup = store.client().await.expect("connection");
    setup
        .batch_execute(
            "INSERT INTO drover_leader (name, leader_id, term, elected_at, expires_at) \
             VALUES ('a', 'x', 1, now(), now()), ('b', 'x', 1, now(), now())",
        )
        .await
        .expect("rows to lock");
    let tx_one = one.transaction().await.expect("begin");
    let tx_two = two.transaction().await.expect("begin");
    let lock = "UPDATE drover_leader SET term = term + 1 WHERE name = $1";
    tx_one.execute(lock, &[&"a"]).await.expect("one locks a");
    tx_two.execute(lock, &[&"b"]).await.expect("two locks b");
    // Each now waits for the other; the server's deadlock detector ends one of them.
    let (first, second) =
        tokio::join!(tx_one.execute(lock, &[&"b"]), tx_two.execute(lock, &[&"a"]));
    let err = match (first, second) {
        (Err(err), Ok(_)) | (Ok(_), Err(err)) => DbError::from(err),
        other => panic!("expected exactly one deadlock victim: {other:?}"),
    };
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.into_store().is_transient());
    drop((tx_one, tx_two));
    store.close().await;
}

/// A completion and a heartbeat of the same leases, presented in opposite orders, while a third
/// transaction holds one row in the middle: both lock their rows in id order, so when the
/// middle row is let go the completion finishes and the heartbeat then finds the jobs done.
/// In opposite orders each held what the other needed next, a deadlock that stalled every job
/// of the process for the server's `deadlock_timeout` (1 s) under steady load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_and_a_heartbeat_of_the_same_leases_do_not_deadlock() {
    use drover_core::{JobClaimParams, JobHeartbeatParams, JobOutcome, LeaseRef};
    use std::time::{Duration, Instant};

    let (store, _guard) = fresh_store().await;
    let jobs: Vec<NewJob> = (0..200).map(|_| NewJob::new("busy", "{}")).collect();
    store
        .job_insert_many(JobInsertParams { jobs, now: None })
        .await
        .expect("insert");
    let claimed = store
        .job_claim(JobClaimParams {
            queue: "default".into(),
            limit: 200,
            owner: "w".into(),
            lease: Duration::from_secs(60),
            now: None,
        })
        .await
        .expect("claim")
        .jobs;
    assert_eq!(claimed.len(), 200);
    let mut leases: Vec<LeaseRef> = claimed
        .iter()
        .map(|job| LeaseRef {
            id: job.id,
            lease_token: job.lease_token,
        })
        .collect();
    leases.sort_by_key(|lease| lease.id);

    let mut blocker = store.client().await.expect("connection");
    let hold = blocker.transaction().await.expect("begin");
    hold.execute(
        "SELECT 1 FROM drover_jobs WHERE id = $1 FOR UPDATE",
        &[&leases[100].id],
    )
    .await
    .expect("hold the middle row");

    let finishing = store.client().await.expect("connection");
    let beating = store.client().await.expect("connection");
    let watch = store.client().await.expect("connection");
    let mut pids: Vec<i32> = Vec::new();
    for client in [&finishing, &beating] {
        pids.push(
            client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .expect("pid")
                .get(0),
        );
    }
    // Until `n` of the two sessions wait for a row lock.
    let waiting = |n: i64| {
        let (watch, pids) = (&watch, &pids);
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let count: i64 = watch
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE pid = ANY($1) AND wait_event_type = 'Lock'",
                        &[pids],
                    )
                    .await
                    .expect("activity")
                    .get(0);
                if count >= n {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{n} sessions never waited for a lock"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    let outcomes: Vec<JobOutcome> = leases
        .iter()
        .map(|lease| JobOutcome::completed(lease.clone()))
        .collect();
    let renewals = JobHeartbeatParams {
        leases: leases
            .iter()
            .rev()
            .map(|lease| (lease.clone(), None))
            .collect(),
        lease: Duration::from_secs(60),
        now: None,
    };
    let (finishing_db, beating_db) = (
        crate::session::Db::new(&finishing, None),
        crate::session::Db::new(&beating, None),
    );
    let (finished, renewed, ()) = tokio::join!(
        finish::finish_many(&finishing_db, "drover_test_wake", &outcomes, None),
        async {
            waiting(1).await;
            jobs::heartbeat(&beating_db, &renewals).await
        },
        async {
            waiting(2).await;
            hold.commit().await.expect("let the middle row go");
        },
    );
    let finished = finished.unwrap_or_else(|err| panic!("the completion failed: {err:?}"));
    assert!(finished.results.iter().all(|result| result.accepted));
    let renewed = renewed.unwrap_or_else(|err| panic!("the heartbeat failed: {err:?}"));
    assert_eq!(renewed.len(), 200);
    assert!(
        renewed.iter().all(|status| !status.held),
        "the heartbeat ran before the completion it waited for"
    );
    drop((finishing, beating, watch, blocker));
    store.close().await;
}

/// A worker's store (one that listens) has its engine's connections open once `connect`
/// returns; any other store (the CLI's, the API's admin) opens one. The pool hands out the
/// connection used last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_store_opens_its_connections_at_connect() {
    let (admin, guard) = fresh_store().await;
    assert_eq!(admin.connections_open(), 1, "an admin store opens one");
    admin.close().await;
    let mut config = PgConfig::from_url(&test_url()).expect("test URL parses");
    config.schema = Some(guard.0.clone());
    config.listen = true;
    let worker = PgStore::connect(config).await.expect("connect");
    assert_eq!(
        worker.connections_open(),
        crate::store::WORKER_CONNECTIONS,
        "a worker store opens its engine's connections"
    );
    // One call after another gets the same session back, its statements prepared, not the
    // next of the idle ones in turn.
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let client = worker.client().await.expect("connection");
        let row = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid");
        sessions.push(row.get::<_, i32>(0));
    }
    sessions.dedup();
    assert_eq!(sessions.len(), 1, "calls went to sessions {sessions:?}");
    worker.close().await;
}

/// `drover bench` checkpoints before each run: a superuser's checkpoint reaches the server (a
/// new checkpoint record, which `CHECKPOINT` waits for), and a role without the privilege gets
/// `false`, not an error that would end the bench.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_runs_with_the_privilege_and_is_declined_without_it() {
    let (store, _guard) = fresh_store().await;
    let client = store.client().await.expect("connection");
    let last: String = client
        .query_one(
            "SELECT checkpoint_lsn::text FROM pg_control_checkpoint()",
            &[],
        )
        .await
        .expect("the control file")
        .get(0);
    assert!(
        store.checkpoint().await.expect("checkpoint"),
        "a superuser may"
    );
    let newer: bool = client
        .query_one(
            "SELECT checkpoint_lsn > $1::text::pg_lsn FROM pg_control_checkpoint()",
            &[&last],
        )
        .await
        .expect("the control file")
        .get(0);
    assert!(newer, "no checkpoint after {last}");

    let role = format!("drover_t_role_{:08x}", fastrand::u32(..));
    client
        .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
        .await
        .expect("create role");
    let mut config = PgConfig::from_url(&test_url()).expect("test URL parses");
    // The same server as the test's user (trust authentication, as the test servers have).
    let (scheme, rest) = config.url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    config.url = format!("{scheme}://{role}@{host}");
    config.listen = false;
    let outcome = match PgStore::connect(config).await {
        Ok(unprivileged) => {
            let outcome = unprivileged.checkpoint().await;
            unprivileged.close().await;
            outcome
        }
        Err(err) => Err(err),
    };
    client
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .expect("drop role");
    assert!(
        !outcome.expect("declined, not failed"),
        "an unprivileged role may not"
    );
    drop(client);
    store.close().await;
}
