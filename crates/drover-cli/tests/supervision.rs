//! Supervision seen from outside, with real processes and real faults: a worker whose database
//! stops working for good shuts itself down with exit status 4 and says which loop gave up and
//! why; a PostgreSQL listener cut off from its server shows in `/healthz`, and recovers.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::time::{Duration, Instant};

use common::api::Server;
use common::{Env, Worker};
use drover_test_support::pg_cluster::{ClusterOptions, TempCluster};
use nix::sys::signal::Signal;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// A worker that ran a job, then had its jobs table dropped under it (an operator's script
/// aimed at the wrong database): the exit status and the error line.
fn gives_up_with_status_4(worker: &mut Worker, drop_the_table: impl FnOnce()) {
    drop_the_table();
    // The rescuer's calls fail for ten seconds, then it gives up; shutdown follows.
    let status = worker.wait_exit(Duration::from_secs(60));
    let log = worker.log();
    assert_eq!(status.code(), Some(4), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("a background loop stopped"))
        .unwrap_or_else(|| panic!("no error line naming the loop:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("gave up") && line.contains("drover_jobs"),
        "the line says which loop gave up and why: {line}"
    );
    assert!(
        log.contains("shutdown complete after a failure"),
        "it shut down gracefully: {log}"
    );
}

const WORKER: &str = r#"
[worker]
rescue_interval = "200ms"
shutdown_timeout = "2s"

[queues]
default = 2
"#;

#[test]
fn a_sqlite_worker_whose_jobs_table_is_dropped_exits_4_naming_the_loop() {
    let env = Env::new(WORKER);
    env.ok(&["migrate"]);
    let mut worker = env.spawn("worker", &["worker"]);
    let id = env.enqueue(&["drover.noop"]);
    env.wait_job(id, T, |j| j["state"] == "completed");
    gives_up_with_status_4(&mut worker, || {
        let conn = rusqlite::Connection::open(env.path("drover.db")).unwrap();
        conn.busy_timeout(T).unwrap();
        conn.execute_batch("DROP TABLE drover_jobs").unwrap();
    });
}

/// A job runs when the schema goes: its outcome can never be recorded, so the worker stops it
/// at once rather than giving it the whole `shutdown_timeout` (120 s here, longer than
/// `gives_up_with_status_4` waits for the exit).
#[test]
fn a_postgres_worker_whose_schema_is_dropped_exits_4_naming_the_loop() {
    let pg =
        pg::PgEnv::new(&WORKER.replace("shutdown_timeout = \"2s\"", "shutdown_timeout = \"120s\""));
    let mut worker = pg.spawn("worker", &["worker"]);
    let id = pg.enqueue(&["drover.noop"]);
    pg.wait_job(id, T, |j| j["state"] == "completed");
    let long = pg.enqueue(&["drover.sleep", "--args", r#"{"ms":300000}"#]);
    pg.wait_job(long, T, |j| j["state"] == "running");
    gives_up_with_status_4(&mut worker, || {
        pg.sql(&format!("DROP SCHEMA {} CASCADE", pg.schema));
    });
}

/// `/healthz` of a worker, with the listener's entry of its report.
fn health(server: &Server) -> (u16, Value, Value) {
    let (status, body) = server.get("/healthz");
    let listener = body["loops"]["loops"]
        .as_array()
        .and_then(|loops| loops.iter().find(|l| l["name"] == "postgres listener"))
        .cloned()
        .unwrap_or_else(|| panic!("no listener in the report: {body:#}"));
    (status, body, listener)
}

fn wait_health(server: &Server, what: &str, check: impl Fn(u16, &Value) -> bool) -> Value {
    pg::eventually(T, what, || {
        let (status, body, listener) = health(server);
        if check(status, &listener) {
            Ok(body)
        } else {
            Err(format!("{status} {body:#}"))
        }
    })
}

#[test]
fn a_cut_off_postgres_listener_makes_healthz_unhealthy_until_it_reconnects() {
    let cluster = TempCluster::start(ClusterOptions::default())
        .unwrap_or_else(|err| panic!("this test needs the PostgreSQL server binaries: {err}"));
    let url = cluster.url("postgres");
    let env = Env::new(
        r#"
[database]
listener_check_interval = "1s"

[queues]
default = 2
"#,
    );
    let cmd = |args: &[&str]| {
        let mut cmd = env.cmd(args);
        cmd.env("DROVER_DATABASE_URL", &url);
        cmd
    };
    assert!(cmd(&["migrate"]).status().unwrap().success());
    let server = Server::start(
        &env,
        "worker",
        cmd(&["worker", "--listen", "127.0.0.1:0"]),
        None,
    );
    let up = wait_health(&server, "healthy at the start", |status, listener| {
        status == 200 && listener["ok"] == true
    });
    assert_eq!(up["status"], "ok", "{up:#}");
    let terminate = || {
        let n = cluster
            .psql(
                "postgres",
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE query LIKE 'LISTEN drover_wake%'",
            )
            .unwrap();
        assert_eq!(n, "1", "the listener's backend was found and terminated");
    };

    // Terminated while the server takes new connections: it reconnects at once, and a
    // reconnection within the check interval is no outage.
    terminate();
    server
        .process
        .wait_log("PostgreSQL listener reconnected", T);
    let (status, body, listener) = health(&server);
    assert_eq!(
        (status, &listener["ok"]),
        (200, &Value::Bool(true)),
        "{body:#}"
    );

    // Terminated while the server refuses new connections: it stays cut off, and once that has
    // lasted longer than the check interval the report says so.
    let hba = cluster.dir().join("data").join("pg_hba.conf");
    let trusting = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        "local all all trust\nhost all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    cluster.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    let cut_off = Instant::now();
    terminate();
    let down = wait_health(&server, "unhealthy while cut off", |status, listener| {
        status == 503 && listener["ok"] == false
    });
    let listener = health(&server).2;
    let error = listener["error"].as_str().unwrap();
    assert!(
        error.contains("down for") && error.contains("cannot connect"),
        "{down:#}"
    );
    assert!(
        cut_off.elapsed() > Duration::from_secs(1),
        "not before the check interval"
    );

    // Let it back in: it reconnects (within its 5 s backoff) and the report is healthy again.
    std::fs::write(&hba, trusting).unwrap();
    cluster.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    let up = wait_health(&server, "healthy again", |status, listener| {
        status == 200 && listener["ok"] == true
    });
    assert_eq!(up["status"], "ok", "{up:#}");

    let mut worker = server.process;
    worker.signal(Signal::SIGTERM);
    assert_eq!(worker.wait_exit(T).code(), Some(0), "{}", worker.log());
    drop(cluster);
}
