//! Chaos on SQLite: three real workers drain command-task jobs while a producer keeps
//! enqueuing and a chaos loop SIGKILLs workers (restarting them) and SIGSTOPs them past their
//! lease (then SIGCONTs them). Then the invariants: every acknowledged job completed, exactly
//! once as a recorded outcome; each ran at least once; every attempt but the last ended in a
//! recorded rescue (no stale completion was accepted); extra runs stay within faults × jobs
//! in flight.
//!
//! `DROVER_CHAOS_JOBS` (default 5,000) and `DROVER_CHAOS_SECS` (default 60: how long chaos goes
//! on at most) make it longer; the default run takes under two minutes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Env, Worker};
use nix::sys::signal::Signal;
use serde_json::Value;

const CONCURRENCY: usize = 16;
const WORKERS: usize = 3;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn three_workers_under_sigkill_and_sigstop_complete_every_job_once() {
    let jobs = env_number("DROVER_CHAOS_JOBS", 5_000) as usize;
    let chaos_for = Duration::from_secs(env_number("DROVER_CHAOS_SECS", 60));
    let env = Env::new(&format!(
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
    ));
    env.ok(&["migrate"]);
    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|i| env.spawn(&format!("w{i}"), &["worker"]))
        .collect();

    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (dir, producing) = (env.dir.path().to_owned(), producing.clone());
        std::thread::spawn(move || produce(&dir, jobs, &producing))
    };

    // Chaos until the producer is done and a while after, within `chaos_for`.
    let started = Instant::now();
    let (kills, stops) = chaos(&env, &mut workers, chaos_for, &producing);
    let acknowledged = producer.join().unwrap();
    assert_eq!(acknowledged.len(), jobs, "every enqueue was acknowledged");
    assert!(kills > 0 && stops > 0, "kills {kills}, stops {stops}");

    // Calm: everything completes.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stats = env.stats();
        let completed = stats["total"]["completed"].as_u64().unwrap_or(0) as usize;
        if completed == jobs {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stuck at {completed} of {jobs}: {stats:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for worker in &workers {
        worker.signal(Signal::SIGTERM);
    }
    for worker in &mut workers {
        worker.wait_exit(Duration::from_secs(20));
    }

    let extra = check_invariants(&env, &acknowledged, kills + stops);
    eprintln!(
        "chaos: {jobs} jobs, {kills} kills, {stops} stops, {extra} extra runs, {:?}",
        started.elapsed()
    );
}

/// Enqueues `jobs` jobs in batches of 100 through `enqueue --file` in `dir` (the test's
/// directory, whose config and database it uses); returns the acknowledged ids.
fn produce(dir: &std::path::Path, jobs: usize, producing: &AtomicBool) -> BTreeSet<i64> {
    let mut acknowledged = BTreeSet::new();
    for batch in 0..jobs.div_ceil(100) {
        let n = (jobs - batch * 100).min(100);
        let lines: String = (0..n)
            .map(|i| format!("{{\"kind\":\"chaos.run\",\"args\":{{\"b\":{batch},\"i\":{i}}}}}\n"))
            .collect();
        let file = dir.join(format!("batch-{batch}.jsonl"));
        std::fs::write(&file, lines).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["enqueue", "--file", file.to_str().unwrap(), "--json"])
            .current_dir(dir)
            .env(
                "DROVER_DATABASE_URL",
                format!("sqlite://{}", dir.join("drover.db").display()),
            )
            .env("DROVER_CONFIG", dir.join("drover.toml"))
            .env("DROVER_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out: Value = serde_json::from_slice(&out.stdout).unwrap();
        for id in out["ids"].as_array().unwrap() {
            acknowledged.insert(id.as_i64().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    producing.store(false, Ordering::SeqCst);
    acknowledged
}

/// SIGKILLs (and restarts) or SIGSTOPs past the lease (then SIGCONTs) a random worker every
/// few hundred ms, while the producer runs and for at least 15 s, within `chaos_for`.
/// Returns the kills and the stops.
fn chaos(
    env: &Env,
    workers: &mut Vec<Worker>,
    chaos_for: Duration,
    producing: &AtomicBool,
) -> (usize, usize) {
    let started = Instant::now();
    let (mut kills, mut stops) = (0usize, 0usize);
    let mut spawned = workers.len();
    let mut rng = fastrand::Rng::with_seed(env_number("DROVER_CHAOS_SEED", 7));
    while started.elapsed() < chaos_for
        && (producing.load(Ordering::SeqCst) || started.elapsed() < Duration::from_secs(15))
    {
        std::thread::sleep(Duration::from_millis(rng.u64(200..600)));
        let i = rng.usize(..workers.len());
        if rng.bool() {
            let mut victim = workers.remove(i);
            victim.signal(Signal::SIGKILL);
            victim.wait_exit(Duration::from_secs(20));
            kills += 1;
            workers.push(env.spawn(&format!("w{spawned}"), &["worker"]));
            spawned += 1;
        } else {
            // Past the 1 s lease: its runs are rescued, and its late completions refused.
            workers[i].signal(Signal::SIGSTOP);
            std::thread::sleep(Duration::from_millis(rng.u64(1200..2500)));
            workers[i].signal(Signal::SIGCONT);
            stops += 1;
        }
    }
    (kills, stops)
}

/// Checks the invariants on the database and the run log; returns the extra runs.
fn check_invariants(env: &Env, acknowledged: &BTreeSet<i64>, faults: usize) -> usize {
    let jobs = acknowledged.len();
    let conn = rusqlite::Connection::open(env.path("drover.db")).unwrap();
    let rows: Vec<(i64, String, i64, i64, i64)> = conn
        .prepare(
            "SELECT id, state, attempt, json_array_length(errors), \
                    (SELECT count(*) FROM json_each(errors) \
                     WHERE json_extract(value, '$.message') LIKE 'lease expired%') \
             FROM drover_jobs",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let ids: BTreeSet<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(
        &ids, acknowledged,
        "the jobs are exactly the acknowledged ones"
    );
    let mut runs: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let log = std::fs::read_to_string(env.path("runs.log")).unwrap();
    for line in log.lines() {
        let (id, attempt) = line.split_once(' ').unwrap();
        runs.entry(id.parse().unwrap())
            .or_default()
            .push(attempt.parse().unwrap());
    }
    for (id, state, attempt, errors, rescues) in &rows {
        assert_eq!(state, "completed", "job {id}");
        // Every attempt before the last ended in a rescue; no stale completion was taken.
        assert_eq!(
            *errors,
            attempt - 1,
            "job {id}: {errors} errors for attempt {attempt}"
        );
        if errors != rescues {
            let all: String = conn
                .query_row("SELECT errors FROM drover_jobs WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .unwrap();
            panic!("job {id}: an error that is not a rescue: {all}");
        }
        let ran = runs.get(id).unwrap_or_else(|| panic!("job {id} never ran"));
        assert!(
            ran.contains(attempt),
            "job {id}: its last attempt {attempt} ran ({ran:?})"
        );
        assert!(
            ran.iter().all(|a| a <= attempt),
            "job {id}: {ran:?} past {attempt}"
        );
    }
    let total_runs: usize = runs.values().map(Vec::len).sum();
    let extra = total_runs - jobs;
    // A fault reruns at most what was in flight: a killed or stopped worker's own runs, but a
    // worker stopped while its SQLite writer held the lock also stalls every other worker's
    // heartbeats past the lease, so the bound is what is in flight in the whole cluster.
    let in_flight = WORKERS * CONCURRENCY;
    assert!(
        extra <= faults * in_flight,
        "{extra} extra runs for {faults} faults × {in_flight} in flight"
    );
    extra
}
