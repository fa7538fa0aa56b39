//! `drover bench --scenario http-enqueue|http-batch|http-drain`, run small on both backends:
//! each prints one JSON object per measure with the fields the README's figures come from. The
//! benchmark itself checks every answer (a status other than the expected one, a batch that
//! inserted fewer jobs, or a refused completion fails the run), so a run that succeeds here moved
//! every job it reports.

mod common;
#[path = "common/pg.rs"]
mod pg;

use common::Env;
use serde_json::Value;

/// Runs one HTTP scenario with `jobs` jobs and returns its JSON line.
fn bench(env: &Env, database: Option<&str>, scenario: &str, jobs: usize) -> Value {
    let jobs = jobs.to_string();
    let mut args = vec![
        "bench",
        "--json",
        "--runs",
        "2",
        "--jobs",
        &jobs,
        "--scenario",
        scenario,
    ];
    if let Some(url) = database {
        args.extend(["--database", url]);
    }
    let out = env.ok(&args);
    let lines: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 1, "one measure per HTTP scenario: {out}");
    lines.into_iter().next().unwrap()
}

fn check(line: &Value, backend: &str, measure: &str, n: u64, connections: u64) {
    assert_eq!(line["system"], "drover", "{line}");
    assert_eq!(line["backend"], backend, "{line}");
    assert_eq!(line["measure"], measure, "{line}");
    assert_eq!(line["n"], n, "{line}");
    assert_eq!(line["runs"], 2, "{line}");
    assert_eq!(line["producers"], connections, "{line}");
    let all = line["all"].as_array().expect("every run's rate");
    assert_eq!(all.len(), 2, "{line}");
    let rate = line["jobs_per_sec"].as_f64().unwrap();
    let secs = line["secs"].as_f64().unwrap();
    assert!(rate > 0.0 && secs > 0.0, "{line}");
    // The median of two runs lies between them.
    let (a, b) = (all[0].as_f64().unwrap(), all[1].as_f64().unwrap());
    assert!(
        a.min(b) - 1.0 <= rate && rate <= a.max(b) + 1.0,
        "the median is not between the runs: {line}"
    );
}

fn all_three(database: Option<&str>, backend: &str) {
    let env = Env::new("");
    // 70 single POSTs over 32 connections: some connections send three, some two.
    check(
        &bench(&env, database, "http-enqueue", 70),
        backend,
        "http_enqueue",
        70,
        32,
    );
    // 2,500 jobs: two full batches and one of 500.
    check(
        &bench(&env, database, "http-batch", 2500),
        backend,
        "http_batch",
        2500,
        4,
    );
    // 450 jobs leased 100 at a time by 4 workers: the last lease is short.
    check(
        &bench(&env, database, "http-drain", 450),
        backend,
        "http_drain",
        450,
        4,
    );
}

#[test]
fn http_scenarios_report_their_fields_on_sqlite() {
    all_three(None, "sqlite");
}

#[test]
fn http_scenarios_report_their_fields_on_postgres() {
    pg::require_server();
    all_three(Some(&pg::server_url()), "postgres");
}

#[test]
fn http_scenarios_are_not_part_of_all() {
    let env = Env::new("");
    let out = env.ok(&[
        "bench",
        "--runs",
        "1",
        "--jobs",
        "100",
        "--single-jobs",
        "10",
        "--latency-jobs",
        "5",
        "--processes",
        "1",
        "--scenario",
        "all",
    ]);
    assert!(out.contains("enqueue_bulk"), "{out}");
    assert!(!out.contains("http_"), "{out}");
}
