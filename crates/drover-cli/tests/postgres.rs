//! The real `drover` binary on the real PostgreSQL test server (`DROVER_TEST_POSTGRES_URL`),
//! each test on a schema of its own: several workers draining one backlog with every job run
//! exactly once, a worker killed mid-run, the leader killed, and cross-process wake-ups by
//! LISTEN/NOTIFY. The server restart is in `postgres_restart.rs`.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pg::PgEnv;

const T: Duration = Duration::from_secs(30);

fn ids(text: &str) -> BTreeSet<i64> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap())
        .collect()
}

#[test]
fn three_workers_drain_20000_jobs_each_run_exactly_once() {
    const JOBS: usize = 20_000;
    let pg = PgEnv::new(
        r#"
[worker]
shutdown_timeout = "10s"
"#,
    );
    // Each serves its /metrics: what every process did is read from there.
    let mut workers: Vec<_> = (0..3)
        .map(|i| pg.spawn(&format!("w{i}"), &["worker", "--listen", "127.0.0.1:0"]))
        .collect();
    let lines = vec![r#"{"kind":"drover.noop"}"#.to_owned(); JOBS];
    let started = Instant::now();
    let enqueued = pg.enqueue_file("jobs.jsonl", &lines);
    assert_eq!(enqueued.len(), JOBS);

    pg.wait_sql(
        "SELECT count(*) FROM drover_jobs WHERE state = 'completed'",
        Duration::from_secs(60),
        |n| n == JOBS.to_string(),
    );
    let drained = started.elapsed();

    // Every job: completed on its first attempt, without an error, and nothing else in the table.
    let summary = pg.sql(
        "SELECT count(*), \
                count(*) FILTER (WHERE state = 'completed' AND attempt = 1 \
                                   AND errors = '[]'::jsonb AND lease_owner IS NOT NULL \
                                   AND lease_expires_at IS NULL), \
                count(DISTINCT id) \
         FROM drover_jobs",
    );
    assert_eq!(
        summary,
        format!("{JOBS}|{JOBS}|{JOBS}"),
        "total|clean|distinct"
    );
    let stats = pg.stats();
    assert_eq!(stats["total"]["completed"], JOBS, "{stats:#}");
    assert_eq!(stats["processes"].as_array().unwrap().len(), 3, "{stats:#}");

    // Each process's metrics: the runs it recorded add up to one per job (no job ran twice),
    // every one of them completed, none was refused or rescued, and all three took part.
    let mut completed = 0;
    for (i, worker) in workers.iter().enumerate() {
        let metrics = metrics_of(worker);
        let finished = |outcome: &str| {
            sample_sum(
                &metrics,
                "drover_jobs_finished_total",
                &format!("outcome=\"{outcome}\""),
            )
        };
        let done = finished("completed");
        assert!(done > 0, "w{i} completed nothing:\n{metrics}");
        for outcome in ["retried", "discarded", "cancelled", "handed_back"] {
            assert_eq!(finished(outcome), 0, "w{i} {outcome}:\n{metrics}");
        }
        assert_eq!(
            sample_sum(&metrics, "drover_outcomes_refused_total", ""),
            0,
            "w{i}"
        );
        assert_eq!(
            sample_sum(&metrics, "drover_leases_expired_total", ""),
            0,
            "w{i}"
        );
        completed += done;
    }
    assert_eq!(
        completed, JOBS as u64,
        "completions across the three processes"
    );
    for worker in &workers {
        worker.signal(Signal::SIGTERM);
    }
    for (i, worker) in workers.iter_mut().enumerate() {
        let status = worker.wait_exit(T);
        assert_eq!(status.code(), Some(0), "w{i}:\n{}", worker.log());
    }
    eprintln!("drained {JOBS} jobs with 3 workers in {drained:?}");
}

#[test]
fn jobs_of_a_worker_killed_mid_run_run_again_and_none_is_lost() {
    const JOBS: usize = 30;
    let pg = PgEnv::new(
        r#"
[worker]
lease = "1s"
rescue_interval = "200ms"
leader_ttl = "2s"

[queues]
default = 10
"#,
    );
    let mut victim = pg.spawn("victim", &["worker"]);
    // Its /metrics count the rescues (every rescue after the kill is the survivor's).
    let survivor = pg.spawn("survivor", &["worker", "--listen", "127.0.0.1:0"]);
    let victim_id = pg.process_id(&victim);
    let survivor_id = pg.process_id(&survivor);

    let lines = vec![r#"{"kind":"drover.sleep","args":{"ms":1500}}"#.to_owned(); JOBS];
    let all = pg.enqueue_file("jobs.jsonl", &lines);
    // Both hold running jobs (10 each, 10 wait), none has finished.
    let running_of = |owner: &str| {
        format!(
            "SELECT count(*) FROM drover_jobs WHERE state = 'running' AND lease_owner = '{owner}'"
        )
    };
    pg.wait_sql(&running_of(&victim_id), T, |n| {
        n.parse::<i64>().unwrap() > 0
    });
    pg.wait_sql(&running_of(&survivor_id), T, |n| {
        n.parse::<i64>().unwrap() > 0
    });

    victim.signal(Signal::SIGKILL);
    victim.wait_exit(T);
    // What the dead process held: its leases stay until they expire and are rescued.
    let held = ids(&pg.sql(&format!(
        "SELECT id FROM drover_jobs WHERE state = 'running' AND lease_owner = '{victim_id}'"
    )));
    assert!(
        !held.is_empty(),
        "the victim held no running job when killed"
    );

    pg.wait_sql(
        "SELECT count(*) FROM drover_jobs WHERE state = 'completed'",
        Duration::from_secs(60),
        |n| n == JOBS.to_string(),
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM drover_jobs"),
        JOBS.to_string(),
        "nothing added or lost"
    );
    for &id in &all {
        let job = pg.job(id);
        assert_eq!(job["state"], "completed", "{job:#}");
        let errors = job["errors"].as_array().unwrap();
        if held.contains(&id) {
            assert_eq!(job["attempt"], 2, "a job of the killed worker: {job:#}");
            assert_eq!(errors.len(), 1, "{job:#}");
            assert_eq!(errors[0]["attempt"], 1, "{job:#}");
            let message = errors[0]["message"].as_str().unwrap();
            assert!(message.contains("lease expired"), "{job:#}");
        } else {
            assert_eq!(job["attempt"], 1, "ran more than once: {job:#}");
            assert!(errors.is_empty(), "{job:#}");
        }
    }
    let metrics = metrics_of(&survivor);
    assert_eq!(
        sample_sum(&metrics, "drover_leases_expired_total", ""),
        held.len() as u64,
        "one rescue per held job:\n{metrics}"
    );
    assert_eq!(
        sample_sum(&metrics, "drover_outcomes_refused_total", ""),
        0,
        "{metrics}"
    );
}

#[test]
fn another_process_leads_within_the_bound_after_the_leader_is_killed() {
    let pg = PgEnv::new(
        r#"
[worker]
leader_ttl = "2s"

[[cron]]
name = "tick"
schedule = "* * * * * *"
kind = "drover.noop"
"#,
    );
    // The second process's config lacks the schedule: once it leads, it says so.
    std::fs::write(pg.path("second.toml"), "[worker]\nleader_ttl = \"2s\"\n").unwrap();
    let mut first = pg.spawn("first", &["worker"]);
    first.wait_log("elected leader", T);
    first.wait_log("cron fired", T);
    let second = pg.spawn("second", &["--config", "second.toml", "worker"]);
    // A process registers itself (presence) just after it starts: wait for both.
    let stats = pg::eventually(T, "both processes registered", || {
        let stats = pg.stats();
        if stats["processes"].as_array().unwrap().len() == 2 {
            Ok(stats)
        } else {
            Err(format!("{stats:#}"))
        }
    });
    assert_eq!(stats["backend"], "postgres", "{stats:#}");
    assert_eq!(stats["leader"]["pid"], first.child.id(), "{stats:#}");
    let term = stats["leader"]["term"].as_i64().unwrap();
    assert!(!second.log().contains("elected leader"), "{}", second.log());

    let killed = Instant::now();
    first.signal(Signal::SIGKILL);
    first.wait_exit(T);
    let stats = pg::eventually(Duration::from_secs(15), "a new leader", || {
        let stats = pg.stats();
        if stats["leader"]["pid"] == second.child.id() {
            Ok(stats)
        } else {
            Err(format!("{stats:#}"))
        }
    });
    let took = killed.elapsed();
    // The term (ttl) expires, the next election attempt (every ttl/5) wins; a margin of 4 s
    // for a loaded machine and for `drover stats` to say so.
    let ttl = Duration::from_secs(2);
    let bound = ttl + ttl / 5 + Duration::from_secs(4);
    assert!(took < bound, "took {took:?}, over {bound:?}");
    assert!(
        stats["leader"]["term"].as_i64().unwrap() > term,
        "the term grows with the change of hands: {stats:#}"
    );
    assert!(second.log().contains("elected leader"), "{}", second.log());
    second.wait_log("no [[cron]] schedule of this name", T);
    eprintln!("new leader after {took:?}");
}

#[test]
fn the_database_url_in_logs_and_output_shows_no_password() {
    let mut pg = PgEnv::new("");
    // The test server trusts local connections, so a password is accepted and ignored; it is
    // given both in the userinfo and as an option.
    let server = url::Url::parse(&pg.server).unwrap();
    let mut with = server.clone();
    with.set_password(Some("hunter2")).unwrap();
    let join = if with.query().is_some() { '&' } else { '?' };
    pg.url = format!("{with}{join}schema={}&password=hunter2", pg.schema);
    let migrated = pg.ok(&["migrate"]);
    assert!(migrated.contains(":***@"), "{migrated}");
    assert!(migrated.contains("password=***"), "{migrated}");
    let worker = pg.spawn("worker", &["worker"]);
    let id = pg.enqueue(&["drover.noop"]);
    pg.wait_job(id, T, |j| j["state"] == "completed");
    let log = worker.log();
    assert!(
        log.contains("drover is running") && log.contains(":***@"),
        "{log}"
    );
    for text in [&migrated, &log] {
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[test]
fn job_args_stay_out_of_a_debug_log() {
    // The driver logs each statement's parameters at debug level: the args of the enqueue and
    // of the claim would be among them.
    let pg = PgEnv::new("");
    let mut cmd = pg.cmd(&["serve"]);
    cmd.env("DROVER_LOG", "debug");
    let server = pg.env.spawn_cmd("serve", cmd);
    let id = pg.enqueue(&["drover.noop", "--args", r#"{"card":"4111-SECRET-1111"}"#]);
    pg.wait_job(id, T, |j| j["state"] == "completed");
    let log = server.log();
    assert!(log.contains("DEBUG"), "debug logging is on: {log}");
    assert!(!log.contains("4111-SECRET-1111"), "{log}");
}

#[test]
fn an_enqueue_from_another_process_wakes_an_idle_worker_by_notify() {
    // The poll is 60 s: only a notification can start the job in time.
    let pg = PgEnv::new(
        r#"
[worker]
poll_interval = "60s"
"#,
    );
    let worker = pg.spawn("worker", &["worker"]);
    // Its listener waits on this schema's own channel.
    let listening = pg.sql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN drover_wake_{}'",
        pg.schema
    ));
    assert_eq!(
        listening, "1",
        "one LISTEN connection on the schema's channel"
    );
    for _ in 0..3 {
        let enqueued = Instant::now();
        let id = pg.enqueue(&["drover.noop"]);
        let job = pg.wait_job(id, Duration::from_secs(5), |j| j["state"] == "completed");
        assert_eq!(job["attempt"], 1, "{job:#}");
        eprintln!("completed {:?} after the enqueue began", enqueued.elapsed());
    }
    assert!(!worker.log().contains("WARN"), "{}", worker.log());
}

#[test]
fn tls_settings_in_the_config_apply_and_bad_ones_fail_clearly() {
    // The test server has TLS on: require connects (migrate ran in `new` with it).
    let pg = PgEnv::new("[database]\nsslmode = \"require\"\n");
    pg.enqueue(&["drover.noop"]);
    let stats = pg.stats();
    assert_eq!(stats["total"]["available"], 1, "{stats:#}");

    // A root file that is not there: refused at start-up, naming it.
    std::fs::write(
        pg.path("drover.toml"),
        "[database]\nsslmode = \"verify-full\"\nsslrootcert = \"/nonexistent/ca.pem\"\n",
    )
    .unwrap();
    let out = pg.run(&["stats"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("sslrootcert=/nonexistent/ca.pem"), "{err}");

    // The config and the URL disagree: refused, saying so.
    std::fs::write(
        pg.path("drover.toml"),
        "[database]\nsslmode = \"disable\"\n",
    )
    .unwrap();
    let out = pg
        .cmd(&["stats"])
        .env("DROVER_DATABASE_URL", format!("{}&sslmode=require", pg.url))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("sslmode is set twice"), "{err}");

    // A certificate refused (signed by a CA the URL does not trust) stops a worker's start at
    // once: waiting for the server, as for one that is down, would not change it.
    let other_ca = drover_test_support::certs::TestPki::new(&["localhost"], "drover");
    std::fs::write(pg.path("other-ca.pem"), &other_ca.ca_cert).unwrap();
    std::fs::write(
        pg.path("drover.toml"),
        "[database]\nsslmode = \"verify-ca\"\nsslrootcert = \"other-ca.pem\"\n\
         wait_at_start = \"3s\"\n",
    )
    .unwrap();
    let out = pg.run(&["worker"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not signed by a trusted root"), "{err}");
    assert!(!err.contains("trying again"), "the start waited: {err}");
}

/// The `/metrics` text of a worker started with `--listen`, read once its counts have settled:
/// a run's outcome is counted just after it is recorded, so two reads a moment apart must agree.
fn metrics_of(worker: &common::Worker) -> String {
    let log = worker.log();
    let addr = log
        .split("listening on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no listen address in the log:\n{log}"))
        .to_owned();
    let read = || {
        ureq::get(&format!("http://{addr}/metrics"))
            .call()
            .expect("GET /metrics")
            .into_string()
            .unwrap()
    };
    pg::eventually(T, "settled metrics", || {
        let first = read();
        std::thread::sleep(Duration::from_millis(200));
        let second = read();
        let finished = |text: &str| sample_sum(text, "drover_jobs_finished_total", "");
        if finished(&first) == finished(&second) {
            Ok(second)
        } else {
            Err(second)
        }
    })
}

/// The sum of the samples of `name` whose labels contain `label` (Prometheus text format).
fn sample_sum(metrics: &str, name: &str, label: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (series_name, labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name && labels.contains(label)
        })
        .map(|(_, value)| value.parse::<f64>().unwrap() as u64)
        .sum()
}

/// Every session Drover opens ends with a goodbye to the server (a Terminate message, and over
/// TLS a close_notify), not a dropped connection: a CLI command's, and a whole drain's (a
/// worker's pool of four, its listener, the bench's own). The server counts a session that
/// ended without one as abandoned (and logs "could not receive data from client"): counted
/// per database, so the test runs on a database of its own.
#[test]
fn every_session_ends_with_a_goodbye_not_a_dropped_connection() {
    let (server, database) = (pg::server_url(), OwnDatabase::new());
    let url = with_database(&server, &database.0);
    let database = &database.0;
    let env = common::Env::new("");
    // Past 1,000 inserted jobs the store starts an ANALYZE on a connection of its own, which
    // the command's exit used to cut off.
    std::fs::write(
        env.path("many.jsonl"),
        "{\"kind\":\"drover.noop\"}\n".repeat(1_200),
    )
    .unwrap();
    for args in [
        &["migrate"][..],
        &["enqueue", "drover.noop"],
        &["enqueue", "--file", "many.jsonl"],
        &["jobs", "list"],
        &[
            "bench",
            "--runs",
            "1",
            "--scenario",
            "drain",
            "--jobs",
            "1000",
        ],
    ] {
        let out = drover_at(&env, &url, args);
        assert!(
            out.status.success(),
            "drover {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A session's figures are counted before it leaves pg_stat_activity.
    let ended = pg::eventually(T, "every session ended", || {
        let left = pg::psql(
            &server,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"),
        )?;
        if left != "0" {
            return Err(format!("{left} sessions still open"));
        }
        pg::psql(
            &server,
            &format!(
                "SELECT sessions || ' ' || sessions_abandoned FROM pg_stat_database \
                 WHERE datname = '{database}'"
            ),
        )
    });
    let (sessions, abandoned) = ended.split_once(' ').expect("two figures");
    assert!(sessions.parse::<u32>().unwrap() >= 8, "{sessions} sessions");
    assert_eq!(
        abandoned, "0",
        "sessions ended without a goodbye, of {sessions}"
    );
}

/// A bench interrupted by SIGINT drops the schemas of its runs: left behind, each held up to
/// a million jobs (counted per database, so the test runs on a database of its own).
#[test]
fn an_interrupted_bench_leaves_no_schema_behind() {
    let (server, database) = (pg::server_url(), OwnDatabase::new());
    let url = with_database(&server, &database.0);
    let env = common::Env::new("");
    let mut cmd = env.cmd(&[
        "bench",
        "--runs",
        "3",
        "--scenario",
        "drain",
        "--jobs",
        "300000",
    ]);
    cmd.env("DROVER_DATABASE_URL", &url);
    let mut bench = common::Worker::start(cmd, env.path("bench.log"));
    let schemas = "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'drover_bench%'";
    let jobs = pg::eventually(T, "the first run's jobs are being enqueued", || {
        if pg::psql(&url, schemas)? == "0" {
            return Err("no schema yet".into());
        }
        let table = "SELECT n.nspname FROM pg_namespace n JOIN pg_class c \
                     ON c.relnamespace = n.oid WHERE c.relname = 'drover_jobs'";
        let schema = pg::psql(&url, table)?;
        let count = pg::psql(&url, &format!("SELECT count(*) FROM {schema}.drover_jobs"))?;
        if count == "0" {
            return Err("no job yet".into());
        }
        Ok(count)
    });
    bench.signal(Signal::SIGINT);
    let status = bench.wait_exit(T);
    assert_eq!(status.code(), Some(130), "{}", bench.log());
    assert!(
        bench.log().contains("databases were removed"),
        "{}",
        bench.log()
    );
    assert_eq!(
        pg::psql(&url, schemas).unwrap(),
        "0",
        "a schema is left (interrupted with {jobs} jobs in it)"
    );
}

/// A mistyped `schema=` (or database) gets an error from the commands that only look, not new
/// empty tables and an empty answer.
#[test]
fn looking_at_a_schema_that_was_never_made_creates_nothing() {
    pg::require_server();
    let server = pg::server_url();
    let schema = pg::random_schema();
    let separator = if server.contains('?') { '&' } else { '?' };
    let url = format!("{server}{separator}schema={schema}");
    let env = common::Env::new("");
    for args in [
        &["jobs", "list"][..],
        &["stats"],
        &["queues", "list"],
        &["queues", "resume", "default"],
        &["archive", "run"],
    ] {
        let out = drover_at(&env, &url, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "drover {args:?} answered: {err}");
        assert!(err.contains("no Drover tables"), "{args:?}: {err}");
        assert!(err.contains(&schema), "the URL's schema is named: {err}");
    }
    // With no schedules to show, `cron list` does not even open the database.
    let out = drover_at(&env, &url, &["cron", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made = pg::psql(
        &server,
        &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'"),
    )
    .unwrap();
    assert_eq!(made, "0", "the schema was created");
}

/// `drover ARGS` on the database at `url`, run to its end.
fn drover_at(env: &common::Env, url: &str, args: &[&str]) -> std::process::Output {
    env.cmd(args)
        .env("DROVER_DATABASE_URL", url)
        .output()
        .expect("run drover")
}

/// A database of the test's own on the test server, dropped with it: for what the server
/// counts or lists per database.
struct OwnDatabase(String);

impl OwnDatabase {
    fn new() -> OwnDatabase {
        pg::require_server();
        let database = format!("drover_cli_{:016x}", fastrand::u64(..));
        pg::psql(&pg::server_url(), &format!("CREATE DATABASE {database}"))
            .expect("create the database");
        OwnDatabase(database)
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE {} WITH (FORCE)", self.0);
        let _ = pg::psql(&pg::server_url(), &sql);
    }
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    if query.is_empty() {
        format!("{server}/{database}")
    } else {
        format!("{server}/{database}?{query}")
    }
}
