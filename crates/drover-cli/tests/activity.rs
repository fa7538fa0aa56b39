//! What the dashboard reads about the cluster's activity, through a real `drover serve` on both
//! backends: throughput per minute, the retention policies with their runs (scheduled and
//! manual), each queue's cluster-wide concurrency, and the process of each attempt.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::time::{Duration, Instant};

use common::Env;
use common::api::{Server, serve_args};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[queues]
default = 3
mail = 2

[worker]
counts_interval = "100ms"
"#;

/// Generous: presence flushes every 5 s, and the machine is shared.
const WITHIN: Duration = Duration::from_secs(40);

fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WITHIN:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn error_field(answer: &Value) -> &str {
    answer["error"]["field"].as_str().unwrap_or("")
}

/// Bad ranges are refused naming the field, with nothing else to it; the default is an hour,
/// one point per minute, oldest first, ending at the current minute.
fn throughput_validates_and_zero_fills(server: &Server) {
    for (query, field) in [
        ("minutes=0", "minutes"),
        ("minutes=1441", "minutes"),
        ("minutes=-3", "minutes"),
        ("minutes=lots", "minutes"),
    ] {
        let (status, answer) = server.get(&format!("/api/v1/throughput?{query}"));
        assert_eq!(
            (status, error_field(&answer)),
            (400, field),
            "{query}: {answer}"
        );
    }
    let (status, points) = server.get("/api/v1/throughput");
    assert_eq!(status, 200, "{points}");
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 60);
    let minutes: Vec<jiff::Timestamp> = points
        .iter()
        .map(|p| p["minute"].as_str().unwrap().parse().unwrap())
        .collect();
    for pair in minutes.windows(2) {
        assert_eq!(pair[1].duration_since(pair[0]).as_secs(), 60);
    }
    let now = jiff::Timestamp::now();
    let last = *minutes.last().unwrap();
    assert!(
        now.duration_since(last).as_secs() < 120 && last <= now,
        "the last point is the current minute: {last} at {now}"
    );
    let (status, one) = server.get("/api/v1/throughput?minutes=1440");
    assert_eq!((status, one.as_array().unwrap().len()), (200, 1440));
}

fn sums(server: &Server) -> (u64, u64) {
    let (status, points) = server.get("/api/v1/throughput?minutes=10");
    assert_eq!(status, 200, "{points}");
    points.as_array().unwrap().iter().fold((0, 0), |(c, f), p| {
        (
            c + p["completed"].as_u64().unwrap(),
            f + p["failed"].as_u64().unwrap(),
        )
    })
}

/// Three completions and two failures (one retried, then discarded) show up in the
/// cluster-wide throughput; the failed job's attempts name the process that ran them, and so
/// does the finished job.
fn outcomes_reach_the_throughput(server: &Server) -> Value {
    for _ in 0..3 {
        let (status, answer) = server.post("/api/v1/jobs", &json!({"kind": "drover.noop"}));
        assert_eq!(status, 201, "{answer}");
    }
    let (status, failing) = server.post(
        "/api/v1/jobs",
        &json!({"kind": "drover.fail", "queue": "mail", "max_attempts": 2,
                "args": {"message": "no"}}),
    );
    assert_eq!(status, 201, "{failing}");
    let id = failing["id"].as_i64().unwrap();
    // The retry's backoff is a few seconds: wait for the discard.
    let job = eventually("the failing job is discarded", || {
        let (_, job) = server.get(&format!("/api/v1/jobs/{id}"));
        (job["state"] == "discarded").then_some(job)
    });
    eventually("3 completed and 2 failed in the throughput", || {
        (sums(server) == (3, 2)).then_some(())
    });
    job
}

fn queues_sum_their_concurrency(server: &Server) {
    eventually("each queue's concurrency", || {
        let (_, queues) = server.get("/api/v1/queues");
        let of = |name: &str| {
            queues
                .as_array()?
                .iter()
                .find(|q| q["name"] == name)
                .and_then(|q| q["concurrency"].as_u64())
        };
        (of("default")? == 3 && of("mail")? == 2).then_some(())
    });
}

/// The built-in policy: no run at election (a policy that never ran waits for its schedule,
/// every ten minutes), then a manual run; `archive list` shows the same.
fn retention_runs_are_listed(server: &Server, cli: &dyn Fn(&[&str]) -> String) {
    let (status, policies) = server.get("/api/v1/retention");
    assert_eq!(status, 200, "{policies}");
    let policy = &policies[0];
    assert_eq!(policy["name"], "drover_jobs");
    assert_eq!(policy["table"], "drover_jobs");
    assert_eq!(policy["archive_table"], "drover_jobs_archive");
    assert_eq!(policy["age"], "7 days");
    assert_eq!(policy["schedule"], "*/10 * * * *");
    assert!(policy["next_run_at"].is_string(), "{policy}");
    // A scheduled run only at a ten-minute mark (the test may cross one), never at election.
    for run in policy["runs"].as_array().unwrap() {
        let started: jiff::Timestamp = run["started_at"].as_str().unwrap().parse().unwrap();
        let time = started.to_zoned(jiff::tz::TimeZone::UTC).time();
        assert!(
            run["trigger"] == "schedule" && time.minute() % 10 == 0 && time.second() < 5,
            "a run at election: {policy}"
        );
    }

    cli(&["archive", "run"]);
    let (_, policies) = server.get("/api/v1/retention");
    let runs = policies[0]["runs"].as_array().unwrap();
    assert!(!runs.is_empty(), "{policies}");
    assert_eq!(
        (
            &runs[0]["trigger"],
            &runs[0]["error"],
            &runs[0]["rows_moved"]
        ),
        (&json!("manual"), &Value::Null, &json!(0)),
        "newest first: {policies}"
    );

    let listed: Value = serde_json::from_str(&cli(&["archive", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["name"], "drover_jobs");
    assert_eq!(listed[0]["runs"][0]["trigger"], "manual");
    let table = cli(&["archive", "list"]);
    assert!(
        table.contains("drover_jobs") && table.contains("moved 0 rows (manual)"),
        "{table}"
    );
}

fn round_trip(server: &Server, cli: &dyn Fn(&[&str]) -> String) {
    throughput_validates_and_zero_fills(server);
    let failed = outcomes_reach_the_throughput(server);
    let owner = failed["lease_owner"]
        .as_str()
        .expect("a finished job keeps its owner");
    let pid = server.process.child.id().to_string();
    assert!(owner.contains(&pid), "{failed:#}");
    let errors = failed["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{failed:#}");
    for error in errors {
        assert_eq!(error["process"].as_str(), Some(owner), "{failed:#}");
    }
    queues_sum_their_concurrency(server);
    retention_runs_are_listed(server, cli);
}

#[test]
fn activity_through_the_api_on_sqlite() {
    let env = Env::new(CONFIG);
    let server = Server::start(&env, "serve", env.cmd(&serve_args(&[])), None);
    round_trip(&server, &|args| env.ok(args));
}

#[test]
fn activity_through_the_api_on_postgres() {
    let pg = pg::PgEnv::new(CONFIG);
    let server = Server::start(&pg.env, "serve", pg.cmd(&serve_args(&[])), None);
    round_trip(&server, &|args| pg.ok(args));
}
