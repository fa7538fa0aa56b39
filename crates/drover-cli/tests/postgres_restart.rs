//! PostgreSQL restarted, and stopped for longer than the lease, under a running `drover
//! worker`. A test binary of its own, with one test: an outage breaks every connection to the
//! server, so it must not run alongside the other PostgreSQL tests, nor beside itself.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pg::PgEnv;

const T: Duration = Duration::from_secs(30);

/// The installed PostgreSQL version, as `/etc/postgresql/<version>` names it.
fn cluster_version() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql: this test restarts a Debian-style local cluster")
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
    versions
        .pop()
        .expect("no cluster version in /etc/postgresql")
}

fn pg_ctlcluster(version: &str, args: &[&str]) -> std::process::Output {
    Command::new("pg_ctlcluster")
        .arg("--skip-systemctl-redirect")
        .arg(version)
        .arg("main")
        .args(args)
        .output()
        .expect("run pg_ctlcluster")
}

/// Waits, when dropped, until the server accepts connections again (starting it if it stays
/// down), so that a failed test does not leave it down for the tests that follow.
struct ServerComesBack {
    version: String,
}

impl Drop for ServerComesBack {
    fn drop(&mut self) {
        let wait = |limit: Duration| {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if pg::server_ready() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        };
        if wait(Duration::from_secs(30)) {
            return;
        }
        eprintln!("PostgreSQL is still down; starting it");
        let out = pg_ctlcluster(&self.version, &["start"]);
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        if !wait(Duration::from_secs(60)) {
            eprintln!("PostgreSQL did not come back; later tests will fail");
        }
    }
}

/// One test, two outages one after the other (see the module's note).
#[test]
fn a_worker_rides_out_a_restart_and_an_outage_longer_than_the_lease() {
    // It restarts the machine's Debian cluster, so it must be the one the tests use, not a
    // throwaway cluster.
    assert!(
        std::env::var(drover_conformance::pg_server::URL_VAR).is_ok(),
        "this test restarts the local Debian cluster: set {} to it (as .ci/run does)",
        drover_conformance::pg_server::URL_VAR
    );
    a_worker_survives_a_server_restart_and_every_job_completes();
    an_outage_longer_than_the_lease_runs_no_job_twice();
}

/// The server down for three leases while jobs run: the runs that ended in the outage are
/// recorded by their worker, and the ones still going have their leases renewed, before any
/// rescue; every job completes at its first attempt. Meanwhile the worker answers its probes:
/// alive (an orchestrator must not restart it), not ready, and its metrics with the database
/// marked down.
fn an_outage_longer_than_the_lease_runs_no_job_twice() {
    let pg = PgEnv::new(
        r#"
[worker]
lease = "2s"
shutdown_timeout = "10s"

[queues]
default = 4
"#,
    );
    let version = cluster_version();
    let mut server = common::api::Server::start(
        &pg.env,
        "worker",
        pg.cmd(&["worker", "--listen", "127.0.0.1:0"]),
        None,
    );
    // Two end in the outage, two after it.
    let lines: Vec<String> = [2_500, 2_500, 9_000, 9_000]
        .iter()
        .map(|ms| format!(r#"{{"kind":"drover.sleep","args":{{"ms":{ms}}}}}"#))
        .collect();
    let all = pg.enqueue_file("long.jsonl", &lines);
    pg.wait_sql(
        "SELECT count(*) FROM drover_jobs WHERE state = 'running'",
        T,
        |n| n == "4",
    );
    let back = ServerComesBack { version };
    let out = pg_ctlcluster(&back.version, &["stop", "-m", "fast"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let down_at = Instant::now();
    let (status, health) = server.get("/healthz");
    assert_eq!(status, 200, "{health:#}");
    assert_eq!(health["database"], false, "{health:#}");
    let (status, ready) = server.get_text("/readyz");
    assert_eq!(status, 503, "{ready}");
    let (status, metrics) = server.get_text("/metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("drover_database_up 0"), "{metrics}");
    assert!(metrics.contains("drover_workers_busy "), "{metrics}");
    // The outage itself: three leases without a server.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(down_at.elapsed()));
    let out = pg_ctlcluster(&back.version, &["start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pg.wait_sql(
        "SELECT count(*) FROM drover_jobs WHERE state = 'completed'",
        Duration::from_secs(60),
        |n| n == "4",
    );
    for &id in &all {
        let job = pg.job(id);
        assert_eq!(job["attempt"], 1, "ran again after the outage: {job:#}");
        assert_eq!(job["errors"], serde_json::json!([]), "{job:#}");
    }
    let (_, metrics) = server.get_text("/metrics");
    assert!(metrics.contains("drover_database_up 1"), "{metrics}");
    let worker = &mut server.process;
    let log = worker.log();
    assert!(
        !log.contains("lease lost") && !log.contains("lost its lease"),
        "{log}"
    );
    worker.signal(Signal::SIGTERM);
    assert_eq!(worker.wait_exit(T).code(), Some(0), "{}", worker.log());
}

fn a_worker_survives_a_server_restart_and_every_job_completes() {
    const JOBS: usize = 40;
    // A 60 s poll: after the restart only the store's own retries and the reconnected
    // listener's wake-ups can get the work done in time.
    let pg = PgEnv::new(
        r#"
[worker]
poll_interval = "60s"
shutdown_timeout = "10s"

[queues]
default = 10
"#,
    );
    let version = cluster_version();
    let mut worker = pg.spawn("worker", &["worker"]);
    let lines = vec![r#"{"kind":"drover.sleep","args":{"ms":300}}"#.to_owned(); JOBS];
    let all = pg.enqueue_file("jobs.jsonl", &lines);

    // Restart while jobs run and others wait.
    let before = pg.wait_sql(
        "SELECT count(*) FILTER (WHERE state = 'running'), \
                count(*) FILTER (WHERE state = 'completed') FROM drover_jobs",
        T,
        |out| !out.starts_with("0|"),
    );
    let completed_before: usize = before.split('|').nth(1).unwrap().parse().unwrap();
    assert!(
        completed_before < JOBS,
        "the restart would come too late: {before}"
    );

    let back = ServerComesBack { version };
    let restarted = Instant::now();
    let out = pg_ctlcluster(&back.version, &["restart", "-m", "immediate"]);
    assert!(
        out.status.success(),
        "pg_ctlcluster restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pg::eventually(
        Duration::from_secs(60),
        "the server accepts connections",
        || {
            if pg::server_ready() {
                Ok(())
            } else {
                Err("pg_isready says no".into())
            }
        },
    );
    let outage = restarted.elapsed();

    // Every job reaches `completed`: none lost, none stuck.
    pg.wait_sql(
        "SELECT count(*) FROM drover_jobs WHERE state = 'completed'",
        Duration::from_secs(60),
        |n| n == JOBS.to_string(),
    );
    let done = restarted.elapsed();
    assert_eq!(pg.sql("SELECT count(*) FROM drover_jobs"), JOBS.to_string());
    // At least once: a second attempt only after its lease expired, said in its errors.
    let mut reruns = 0;
    for &id in &all {
        let job = pg.job(id);
        assert_eq!(job["state"], "completed", "{job:#}");
        let errors = job["errors"].as_array().unwrap();
        match job["attempt"].as_i64().unwrap() {
            1 => assert!(errors.is_empty(), "{job:#}"),
            2 => {
                reruns += 1;
                assert_eq!(errors.len(), 1, "{job:#}");
                let message = errors[0]["message"].as_str().unwrap();
                assert!(message.contains("lease expired"), "{job:#}");
            }
            _ => panic!("ran more than twice: {job:#}"),
        }
    }

    // The worker is still there, noticed the outage and reconnected.
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker exited:\n{}",
        worker.log()
    );
    worker.wait_log("PostgreSQL listener lost its connection", T);
    worker.wait_log("PostgreSQL listener reconnected", T);
    // Its listener works again: an enqueue from another process starts a job at once.
    let id = pg.enqueue(&["drover.noop"]);
    pg.wait_job(id, Duration::from_secs(5), |j| j["state"] == "completed");

    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(T);
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    eprintln!(
        "server back after {outage:?}, all {JOBS} jobs completed {done:?} after the restart \
         began ({completed_before} before it, {reruns} run twice)"
    );
}
