//! Chaos, one case run on both backends: three real workers drain command-task jobs while a
//! producer keeps enqueuing and a chaos loop SIGKILLs workers (restarting them), SIGSTOPs them
//! past their lease (then SIGCONTs them) and — on PostgreSQL — restarts the server as a crash
//! would (`-m immediate`). Then the invariants, from the database and the run log: every
//! acknowledged job completed, exactly once as a recorded outcome; each ran at least once;
//! every attempt but the last ended in a recorded rescue (no stale completion was accepted);
//! extra runs stay within faults × jobs in flight.
//!
//! PostgreSQL runs on a throwaway cluster of the test's own (the shared test server must not be
//! restarted under the other test binaries), with `synchronous_commit = on`: a restart must not
//! lose what was acknowledged. The two cases take turns, so that each has the machine's cores.
//!
//! `DROVER_CHAOS_JOBS` (default 5,000) and `DROVER_CHAOS_SECS` (default 60: how long chaos goes
//! on at most) make it longer; `DROVER_CHAOS_SEED` picks other faults. The default run of both
//! takes under two minutes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Env, Worker};
use drover_test_support::pg_cluster::{ClusterOptions, TempCluster};
use nix::sys::signal::Signal;
use serde_json::Value;

const CONCURRENCY: usize = 16;
const WORKERS: usize = 3;
/// On PostgreSQL, the first server restart comes this long after chaos starts, then one every
/// [`RESTART_EVERY`].
const FIRST_RESTART: Duration = Duration::from_secs(3);
const RESTART_EVERY: Duration = Duration::from_secs(6);

/// The two cases take turns.
static TURN: Mutex<()> = Mutex::new(());

#[test]
fn sqlite_three_workers_under_sigkill_and_sigstop_complete_every_job_once() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let env = Env::new(&config());
    let url = format!("sqlite://{}", env.path("drover.db").display());
    run(Chaos {
        env,
        url,
        server: None,
    });
}

#[test]
fn postgres_three_workers_under_sigkill_sigstop_and_server_restarts_complete_every_job_once() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let cluster = TempCluster::start(
        ClusterOptions::default()
            // The cluster turns it off to start faster; an acknowledged commit must survive the
            // restarts here.
            .setting("synchronous_commit", "on")
            .setting("max_connections", "100"),
    )
    .unwrap_or_else(|err| panic!("this test needs the PostgreSQL server binaries: {err}"));
    let url = cluster.url("postgres");
    run(Chaos {
        env: Env::new(&config()),
        url,
        server: Some(cluster),
    });
}

fn config() -> String {
    format!(
        r#"
[worker]
lease = "1s"
rescue_interval = "200ms"
poll_interval = "500ms"
shutdown_timeout = "2s"
prefetch = 0

[queues]
default = {CONCURRENCY}

[tasks."chaos.run"]
command = ["sh", "-c", "echo \"$DROVER_JOB_ID $DROVER_JOB_ATTEMPT\" >> runs.log"]
max_attempts = 1000
"#
    )
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A test directory with its config, the database's URL, and (PostgreSQL) the server that
/// chaos may restart.
struct Chaos {
    env: Env,
    url: String,
    server: Option<TempCluster>,
}

impl Chaos {
    fn backend(&self) -> &'static str {
        if self.server.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.env.cmd(args);
        cmd.env("DROVER_DATABASE_URL", &self.url);
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run drover");
        assert!(
            out.status.success(),
            "drover {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn spawn_worker(&self, name: &str) -> Worker {
        self.env.spawn_cmd(name, self.cmd(&["worker"]))
    }

    /// Every job's row, read straight from the database.
    fn rows(&self) -> Vec<Row> {
        const COLUMNS: &str = "id, state, attempt, ";
        match &self.server {
            None => {
                let conn = rusqlite::Connection::open(self.env.path("drover.db")).unwrap();
                let sql = format!(
                    "SELECT {COLUMNS} json_array_length(errors), \
                       (SELECT count(*) FROM json_each(errors) \
                        WHERE json_extract(value, '$.message') LIKE 'lease expired%'), \
                       json_extract(args, '$.b'), json_extract(args, '$.t'), errors \
                     FROM drover_jobs"
                );
                conn.prepare(&sql)
                    .unwrap()
                    .query_map([], |r| {
                        Ok(Row {
                            id: r.get(0)?,
                            state: r.get(1)?,
                            attempt: r.get(2)?,
                            errors: r.get(3)?,
                            rescues: r.get(4)?,
                            batch_try: (r.get(5)?, r.get(6)?),
                            error_text: r.get(7)?,
                        })
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            Some(server) => {
                let sql = format!(
                    "SELECT {COLUMNS} jsonb_array_length(errors), \
                       (SELECT count(*) FROM jsonb_array_elements(errors) e \
                        WHERE e->>'message' LIKE 'lease expired%'), \
                       args->>'b', args->>'t', errors \
                     FROM drover_jobs"
                );
                let out = server.psql("postgres", &sql).expect("read the jobs");
                out.lines()
                    .map(|line| {
                        let f: Vec<&str> = line.splitn(8, '|').collect();
                        let n = |i: usize| f[i].parse::<i64>().unwrap();
                        Row {
                            id: n(0),
                            state: f[1].to_owned(),
                            attempt: n(2),
                            errors: n(3),
                            rescues: n(4),
                            batch_try: (n(5), n(6)),
                            error_text: f[7].to_owned(),
                        }
                    })
                    .collect()
            }
        }
    }
}

/// One job's row.
struct Row {
    id: i64,
    state: String,
    attempt: i64,
    /// Errors recorded, and how many of them are rescues ("lease expired").
    errors: i64,
    rescues: i64,
    /// The producer's batch and try (`args.b`, `args.t`).
    batch_try: (i64, i64),
    error_text: String,
}

/// What the producer did.
#[derive(Default)]
struct Produced {
    /// Ids of acknowledged enqueues.
    acknowledged: BTreeSet<i64>,
    /// (batch, try) of enqueues that failed: they may or may not have been stored.
    failed: BTreeSet<(i64, i64)>,
}

/// The figures of a run.
struct Figures {
    kills: usize,
    stops: usize,
    restarts: usize,
}

fn run(chaos: Chaos) {
    let jobs = env_number("DROVER_CHAOS_JOBS", 5_000) as usize;
    let chaos_for = Duration::from_secs(env_number("DROVER_CHAOS_SECS", 60));
    chaos.ok(&["migrate"]);
    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|i| chaos.spawn_worker(&format!("w{i}")))
        .collect();

    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (dir, url) = (chaos.env.dir.path().to_owned(), chaos.url.clone());
        let producing = producing.clone();
        std::thread::spawn(move || produce(&dir, &url, jobs, &producing))
    };

    // Chaos until the producer is done and a while after, within `chaos_for`.
    let started = Instant::now();
    let figures = inflict(&chaos, &mut workers, chaos_for, &producing);
    let produced = producer.join().unwrap();
    let chaos_ended = started.elapsed();
    assert_eq!(
        produced.acknowledged.len(),
        jobs,
        "every batch was acknowledged, at the latest on a later try"
    );
    assert!(
        figures.kills > 0 && figures.stops > 0,
        "kills {}, stops {}",
        figures.kills,
        figures.stops
    );
    if chaos.server.is_some() {
        assert!(figures.restarts > 0, "no server restart happened");
    }

    // Calm: everything stored completes, acknowledged or not.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stats: Value = serde_json::from_str(&chaos.ok(&["stats", "--json"])).unwrap();
        let total = &stats["total"];
        let stored: u64 = total
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_u64)
            .sum();
        let completed = total["completed"].as_u64().unwrap_or(0);
        if completed == stored && stored >= produced.acknowledged.len() as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stuck at {completed} of {stored}: {stats:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let drained = started.elapsed();
    for worker in &workers {
        worker.signal(Signal::SIGTERM);
    }
    for worker in &mut workers {
        worker.wait_exit(Duration::from_secs(20));
    }

    let faults = figures.kills + figures.stops + figures.restarts;
    let (stored, extra) = check_invariants(&chaos, &produced, faults);
    eprintln!(
        "chaos ({}): {stored} jobs ({} enqueues failed and were tried again; {} jobs of them \
         stored anyway), {} kills, {} stops, {} server restarts, {extra} extra runs; chaos for \
         {chaos_ended:.1?}, all completed {drained:.1?} after the start",
        chaos.backend(),
        produced.failed.len(),
        stored - produced.acknowledged.len(),
        figures.kills,
        figures.stops,
        figures.restarts,
    );
}

/// Enqueues `jobs` jobs in batches of 100 through `enqueue --file` in `dir` (the test's
/// directory, with its config) on `url`. A batch whose enqueue fails (the server is restarting)
/// is tried again, as a new try (`args.t`), until it is acknowledged.
fn produce(dir: &Path, url: &str, jobs: usize, producing: &AtomicBool) -> Produced {
    let mut produced = Produced::default();
    for batch in 0..jobs.div_ceil(100) {
        let n = (jobs - batch * 100).min(100);
        let deadline = Instant::now() + Duration::from_secs(60);
        for t in 0.. {
            let lines: String = (0..n)
                .map(|i| {
                    format!(
                        "{{\"kind\":\"chaos.run\",\"args\":{{\"b\":{batch},\"t\":{t},\"i\":{i}}}}}\n"
                    )
                })
                .collect();
            let file: PathBuf = dir.join(format!("batch-{batch}-{t}.jsonl"));
            std::fs::write(&file, lines).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_drover"))
                .args(["enqueue", "--file", file.to_str().unwrap(), "--json"])
                .current_dir(dir)
                .env("DROVER_DATABASE_URL", url)
                .env("DROVER_CONFIG", dir.join("drover.toml"))
                .env("DROVER_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            if out.status.success() {
                let out: Value = serde_json::from_slice(&out.stdout).unwrap();
                for id in out["ids"].as_array().unwrap() {
                    produced.acknowledged.insert(id.as_i64().unwrap());
                }
                break;
            }
            produced.failed.insert((batch as i64, t));
            assert!(
                Instant::now() < deadline,
                "batch {batch} never enqueued: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    producing.store(false, Ordering::SeqCst);
    produced
}

/// SIGKILLs (and restarts) or SIGSTOPs past the lease (then SIGCONTs) a random worker every
/// few hundred ms, and restarts the PostgreSQL server now and then, while the producer runs and
/// for at least 15 s, within `chaos_for`.
fn inflict(
    chaos: &Chaos,
    workers: &mut Vec<Worker>,
    chaos_for: Duration,
    producing: &AtomicBool,
) -> Figures {
    let started = Instant::now();
    let mut figures = Figures {
        kills: 0,
        stops: 0,
        restarts: 0,
    };
    let mut spawned = workers.len();
    let mut next_restart = FIRST_RESTART;
    let mut rng = fastrand::Rng::with_seed(env_number("DROVER_CHAOS_SEED", 7));
    while started.elapsed() < chaos_for
        && (producing.load(Ordering::SeqCst) || started.elapsed() < Duration::from_secs(15))
    {
        std::thread::sleep(Duration::from_millis(rng.u64(200..600)));
        if let Some(server) = &chaos.server
            && started.elapsed() >= next_restart
        {
            // Every connection of every worker is cut; their leases may expire meanwhile.
            server.restart_immediate().expect("restart the server");
            figures.restarts += 1;
            next_restart = started.elapsed() + RESTART_EVERY;
            continue;
        }
        let i = rng.usize(..workers.len());
        if rng.bool() {
            let mut victim = workers.remove(i);
            victim.signal(Signal::SIGKILL);
            victim.wait_exit(Duration::from_secs(20));
            figures.kills += 1;
            workers.push(chaos.spawn_worker(&format!("w{spawned}")));
            spawned += 1;
        } else {
            // Past the 1 s lease: its runs are rescued, and its late completions refused.
            workers[i].signal(Signal::SIGSTOP);
            std::thread::sleep(Duration::from_millis(rng.u64(1200..2500)));
            workers[i].signal(Signal::SIGCONT);
            figures.stops += 1;
        }
    }
    figures
}

/// Checks the invariants on the database and the run log; returns the jobs stored and the
/// extra runs.
fn check_invariants(chaos: &Chaos, produced: &Produced, faults: usize) -> (usize, usize) {
    let rows = chaos.rows();
    let ids: BTreeSet<i64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), rows.len());
    let missing: Vec<_> = produced.acknowledged.difference(&ids).collect();
    assert!(missing.is_empty(), "acknowledged jobs lost: {missing:?}");
    for row in rows
        .iter()
        .filter(|r| !produced.acknowledged.contains(&r.id))
    {
        assert!(
            produced.failed.contains(&row.batch_try),
            "job {} was stored but never enqueued: batch and try {:?}",
            row.id,
            row.batch_try
        );
    }
    let mut runs: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let log = std::fs::read_to_string(chaos.env.path("runs.log")).unwrap();
    for line in log.lines() {
        let (id, attempt) = line.split_once(' ').unwrap();
        runs.entry(id.parse().unwrap())
            .or_default()
            .push(attempt.parse().unwrap());
    }
    for row in &rows {
        let id = row.id;
        assert_eq!(row.state, "completed", "job {id}");
        // Every attempt before the last ended in a rescue; no stale completion was taken.
        assert_eq!(
            row.errors,
            row.attempt - 1,
            "job {id}: {} errors for attempt {}",
            row.errors,
            row.attempt
        );
        assert_eq!(
            row.errors, row.rescues,
            "job {id}: an error that is not a rescue: {}",
            row.error_text
        );
        let ran = runs
            .get(&id)
            .unwrap_or_else(|| panic!("job {id} never ran"));
        assert!(
            ran.contains(&row.attempt),
            "job {id}: its last attempt {} ran ({ran:?})",
            row.attempt
        );
        assert!(
            ran.iter().all(|a| *a <= row.attempt),
            "job {id}: {ran:?} past {}",
            row.attempt
        );
    }
    let total_runs: usize = runs.values().map(Vec::len).sum();
    let extra = total_runs - rows.len();
    // A fault reruns at most what was in flight: a killed or stopped worker's own runs, but a
    // worker stopped while its SQLite writer held the lock also stalls every other worker's
    // heartbeats past the lease, and a server restart stalls them all, so the bound is what is
    // in flight in the whole cluster.
    let in_flight = WORKERS * CONCURRENCY;
    assert!(
        extra <= faults * in_flight,
        "{extra} extra runs for {faults} faults × {in_flight} in flight"
    );
    (rows.len(), extra)
}
