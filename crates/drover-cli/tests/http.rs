//! The HTTP API of a real `drover serve` on loopback, on both backends: round trips, every
//! error path (a 4xx with a JSON body, never a 5xx, nothing written), pause across processes,
//! the metrics through promtool and the OpenAPI document through a validator. Who may reach
//! the server is in `http_edges.rs`.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Env;
use common::api::{Server, serve_args};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[queues]
default = 2

[worker]
lease = "2s"
counts_interval = "100ms"
counts_cap = 5

[http]
max_body_bytes = 4096

[tasks."echo.args"]
command = ["sh", "-c", "cat > echoed-args.json"]

[[cron]]
name = "nightly"
schedule = "0 3 * * *"
kind = "drover.noop"
queue = "held"
"#;

/// Waits until `probe` gives `Some`, for at most `limit`.
fn eventually<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn total_jobs(server: &Server) -> u64 {
    let mut total = 0;
    let mut after: Option<i64> = None;
    loop {
        let path = match after {
            Some(id) => format!("/api/v1/jobs?limit=1000&after={id}"),
            None => "/api/v1/jobs?limit=1000".to_owned(),
        };
        let (status, page) = server.get(&path);
        assert_eq!(status, 200, "{page}");
        total += page["jobs"].as_array().unwrap().len() as u64;
        match page["next"].as_i64() {
            Some(next) => after = Some(next),
            None => return total,
        }
    }
}

/// Everything a user does with the API, on one server.
fn round_trip(server: &Server) {
    // Enqueue one, a duplicate by unique key, and a batch.
    let (status, one) = server.post(
        "/api/v1/jobs",
        &json!({"kind": "drover.noop", "args": {"user": {"id": 7}}, "queue": "held",
                "unique_key": "u-7"}),
    );
    assert_eq!(status, 201, "{one}");
    let id = one["id"].as_i64().unwrap();
    let (status, dup) = server.post(
        "/api/v1/jobs",
        &json!({"kind": "drover.noop", "queue": "held", "unique_key": "u-7"}),
    );
    assert_eq!(
        (status, dup["id"].as_i64(), dup["duplicate"].as_bool()),
        (200, Some(id), Some(true))
    );
    let batch = server.ok(
        "/api/v1/jobs/batch",
        &json!({"jobs": [
            {"kind": "drover.noop", "queue": "held", "args": {"n": 1}},
            {"kind": "drover.noop", "queue": "held", "unique_key": "u-7"},
            {"kind": "drover.noop", "queue": "held", "delay_seconds": 3600},
        ]}),
    );
    assert_eq!(
        (batch["inserted"].as_u64(), batch["duplicates"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(batch["jobs"][1]["id"].as_i64(), Some(id));
    assert_eq!(batch["jobs"][2]["state"], "scheduled");

    // Get and list with filters and the cursor.
    let (status, job) = server.get(&format!("/api/v1/jobs/{id}"));
    assert_eq!((status, &job["args"]), (200, &json!({"user": {"id": 7}})));
    let (_, found) = server.get("/api/v1/jobs?args=%7B%22user%22%3A%7B%22id%22%3A7%7D%7D");
    let ids: Vec<i64> = found["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![id]);
    let (_, first) = server.get("/api/v1/jobs?queue=held&limit=1");
    let next = first["next"].as_i64().expect("a second page");
    let (_, second) = server.get(&format!("/api/v1/jobs?queue=held&limit=1&after={next}"));
    assert!(second["jobs"][0]["id"].as_i64().unwrap() < next);

    // Pause the queue: its jobs wait; the counts say so.
    let paused = server.ok("/api/v1/queues/held/pause", &json!(null));
    assert_eq!(paused["paused"], true);
    let queues = eventually(Duration::from_secs(20), "counts include held", || {
        let (_, queues) = server.get("/api/v1/queues");
        let held = queues
            .as_array()?
            .iter()
            .find(|q| q["name"] == "held")?
            .clone();
        (held["counts"]["available"].as_u64()? >= 2).then_some(held)
    });
    assert_eq!(queues["paused"], true);
    server.ok("/api/v1/queues/held/resume", &json!(null));
    // A name with a slash is one path segment once encoded, as the dashboard's buttons send it.
    let slashed = server.ok("/api/v1/queues/team%2Fmail/pause", &json!(null));
    assert_eq!(
        (&slashed["name"], &slashed["paused"]),
        (&json!("team/mail"), &json!(true)),
        "{slashed}"
    );
    server.ok("/api/v1/queues/team%2Fmail/resume", &json!(null));

    // Act on one job, then on a filter.
    let (status, acted) = server.post(&format!("/api/v1/jobs/{id}/discard"), &json!(null));
    assert_eq!(
        (status, &acted["result"]["state"]),
        (200, &json!("discarded")),
        "{acted}"
    );
    let (status, again) = server.post(&format!("/api/v1/jobs/{id}/discard"), &json!(null));
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let (status, _) = server.post(&format!("/api/v1/jobs/{id}/retry"), &json!(null));
    assert_eq!(status, 200);
    let (status, bad) = server.post(&format!("/api/v1/jobs/{id}/explode"), &json!(null));
    assert_eq!(
        (status, bad["error"]["field"].as_str()),
        (400, Some("action"))
    );
    // A misspelt filter field is refused, not ignored (which would cancel the whole queue):
    // the scheduled job is still there for the next action.
    let (status, typo) = server.post(
        "/api/v1/jobs/actions",
        &json!({"action": "cancel", "filter": {"queue": "held", "statee": "scheduled"}}),
    );
    assert_eq!(status, 422, "{typo}");
    assert!(
        typo["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("statee")),
        "{typo}"
    );
    let bulk = server.ok(
        "/api/v1/jobs/actions",
        &json!({"action": "cancel", "filter": {"queue": "held", "state": "scheduled"}}),
    );
    assert_eq!(
        (bulk["matched"].as_u64(), bulk["changed"].as_u64()),
        (Some(1), Some(1)),
        "{bulk}"
    );
    // An id with no job is neither changed nor unchanged.
    let ids = server.ok(
        "/api/v1/jobs/actions",
        &json!({"action": "retry", "ids": [id, 999_999_999]}),
    );
    assert_eq!(
        (
            ids["matched"].as_u64(),
            ids["changed"].as_u64(),
            ids["unchanged"].as_u64()
        ),
        (Some(1), Some(0), Some(1)),
        "{ids}"
    );
    // A filter that narrows nothing (an empty args filter, an empty value) needs "all" too.
    let discarded = || {
        let (_, page) = server.get("/api/v1/jobs?state=discarded&limit=1000");
        page["jobs"].as_array().unwrap().len()
    };
    let before = discarded();
    for (filter, field) in [
        (json!({}), "filter"),
        (json!({"args": "{}"}), "filter"),
        (json!({"queue": "", "state": "available"}), "filter.queue"),
    ] {
        let (status, empty) = server.post(
            "/api/v1/jobs/actions",
            &json!({"action": "discard", "filter": filter, "all": field != "filter"}),
        );
        assert_eq!(
            (status, empty["error"]["field"].as_str()),
            (400, Some(field)),
            "{filter}: {empty}"
        );
    }
    assert_eq!(discarded(), before, "nothing was discarded");

    // Cron and the cluster.
    let (_, cron) = server.get("/api/v1/cron");
    assert_eq!(cron[0]["name"], "nightly");
    assert_eq!(cron[0]["next_fire_times"].as_array().unwrap().len(), 5);
    assert_eq!(cron[0]["next_fire_at"], cron[0]["next_fire_times"][0]);
    let (status, ran) = server.post("/api/v1/cron/nightly/run", &json!(null));
    assert_eq!(status, 201, "{ran}");
    let (status, _) = server.post("/api/v1/cron/weekly/run", &json!(null));
    assert_eq!(status, 404);
    eventually(Duration::from_secs(20), "a leader", || {
        let (_, cluster) = server.get("/api/v1/cluster");
        cluster["leader"].is_object().then_some(())
    });

    leases(server);
    capacity(server);
    errors(server);
}

/// Reservations and slots through the API (the autoscaler's tick is tested elsewhere).
/// Args are stored as sent: a number beyond 64 bits keeps every digit on its way to the task
/// (on PostgreSQL through `jsonb`, whose numbers are exact).
fn args_keep_every_digit(server: &Server) {
    let (status, job) = server.post_raw(
        "/api/v1/jobs",
        "application/json",
        br#"{"kind":"echo.args","args":{"n":123456789012345678901234567890}}"#,
    );
    assert_eq!(status, 201, "{job}");
    let dir = server.process.log.parent().unwrap();
    let echoed = common::wait_file(&dir.join("echoed-args.json"), Duration::from_secs(20));
    assert!(
        echoed.contains("123456789012345678901234567890"),
        "{echoed}"
    );
    // As leased to an HTTP worker (read as text: this test's JSON parser would round it).
    server.post_raw(
        "/api/v1/jobs",
        "application/json",
        br#"{"kind":"py.digits","queue":"digits","args":{"n":-98765432109876543210.5}}"#,
    );
    let (status, leased) = server.post_text(
        "/api/v1/leases",
        r#"{"queues": ["digits"], "worker": "test", "wait": 5}"#,
    );
    assert_eq!(status, 200, "{leased}");
    // (PostgreSQL writes `{"n": …}`, with a space.)
    assert!(leased.contains("-98765432109876543210.5"), "{leased}");
    // And as an operator reads it: the API's job, the list, and the dashboard's page.
    let id = job["id"].as_i64().unwrap();
    for path in [
        format!("/api/v1/jobs/{id}"),
        "/api/v1/jobs?kind=echo.args".to_owned(),
        format!("/jobs/{id}"),
    ] {
        let (status, text) = server.get_text(&path);
        assert_eq!(status, 200, "{path}: {text}");
        assert!(
            text.contains("123456789012345678901234567890"),
            "{path}: {text}"
        );
    }
}

fn capacity(server: &Server) {
    // This server's config declares no system: a reservation would wait for capacity that
    // nothing makes. (tests/openapi.rs reserves, reads and releases on a server with one.)
    let (status, refused) = server.post(
        "/api/v1/reservations",
        &json!({"system": "gpu", "ttl_seconds": 60, "holder": "api-test"}),
    );
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["field"], "system", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no [systems.gpu]") && message.contains("no system is declared"),
        "{message}"
    );
    let (status, _) = server.get("/api/v1/reservations/1");
    assert_eq!(status, 404, "nothing was stored");
    let (status, slots) = server.get("/api/v1/slots?all=true");
    assert_eq!((status, slots.as_array().map(Vec::len)), (200, Some(0)));
    let (status, _) = server.post("/api/v1/slots/424242/drain", &json!(null));
    assert_eq!(status, 404);
    for ttl in [json!(0), json!(0.0001), json!(86_400 * 31)] {
        let (status, bad) = server.post(
            "/api/v1/reservations",
            &json!({"system": "gpu", "ttl_seconds": ttl, "holder": "x"}),
        );
        assert_eq!(
            (status, bad["error"]["field"].as_str()),
            (400, Some("ttl_seconds")),
            "{ttl}: {bad}"
        );
    }
    let (status, bad) = server.post(
        "/api/v1/reservations",
        &json!({"system": "gpu", "ttl_seconds": 60, "holder": "a\u{0}b"}),
    );
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["error"]["field"], "holder", "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid holder"),
        "{bad}"
    );
}

/// The lease protocol: lease, heartbeat, complete, repeat, and a stale token.
fn leases(server: &Server) {
    server.ok(
        "/api/v1/jobs",
        &json!({"kind": "py.task", "queue": "remote", "args": {"x": 1}}),
    );
    let leased = server.ok(
        "/api/v1/leases",
        &json!({"queues": ["remote"], "worker": "test", "max": 10, "wait": 5}),
    );
    let job = &leased["jobs"][0];
    assert_eq!(
        (job["kind"].as_str(), job["attempt"].as_i64()),
        (Some("py.task"), Some(1))
    );
    let token = job["token"].as_str().unwrap().to_owned();
    let beat = server.ok(
        &format!("/api/v1/leases/{token}/heartbeat"),
        &json!({"step": "half"}),
    );
    assert_eq!(beat["cancel_requested"], false);
    let done = server.ok(&format!("/api/v1/leases/{token}/complete"), &json!(null));
    assert_eq!(
        (done["state"].as_str(), done["repeated"].as_bool()),
        (Some("completed"), Some(false))
    );
    let again = server.ok(&format!("/api/v1/leases/{token}/complete"), &json!(null));
    assert_eq!(
        again["repeated"], true,
        "a repeated completion is answered as the first"
    );
    // A different outcome for the same lease is refused, naming what was recorded.
    let (status, late) = server.post(
        &format!("/api/v1/leases/{token}/fail"),
        &json!({"error": "late"}),
    );
    assert_eq!(status, 409, "{late}");
    let message = late["error"]["message"].as_str().unwrap();
    assert!(message.contains("already recorded as completed"), "{late}");
    assert_eq!(
        server.get(&format!("/api/v1/jobs/{}", job["id"])).1["state"],
        "completed"
    );
    let (status, _) = server.post(
        "/api/v1/leases",
        &json!({"queues": ["remote"], "worker": "test", "wait": 0.2}),
    );
    assert_eq!(status, 204, "nothing left to lease");
    // The worker has no process row, but the server it talks to lists it, on the API and the
    // processes page.
    let (_, cluster) = server.get("/api/v1/cluster");
    let worker = cluster["http_workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "test")
        .unwrap_or_else(|| panic!("no HTTP worker 'test' in {cluster:#}"));
    assert_eq!(
        (&worker["queues"], &worker["running"]),
        (&json!(["remote"]), &json!(0)),
        "{worker}"
    );
    let (status, page) = server.get_text("/processes");
    assert_eq!(status, 200);
    assert!(page.contains("data-http-worker=\"test\""), "{page}");
    let (_, page) = server.get_text("/queues");
    assert!(
        page.contains("1 HTTP"),
        "the queue's HTTP worker is counted: {page}"
    );

    // A lease left to expire goes back to the queue and its token goes stale.
    server.ok(
        "/api/v1/jobs",
        &json!({"kind": "py.task", "queue": "remote"}),
    );
    let first = server.ok(
        "/api/v1/leases",
        &json!({"queues": ["remote"], "worker": "a", "wait": 5}),
    );
    let stale = first["jobs"][0]["token"].as_str().unwrap().to_owned();
    let second = eventually(
        Duration::from_secs(30),
        "the expired lease is leased again",
        || {
            let (status, body) = server.post(
                "/api/v1/leases",
                &json!({"queues": ["remote"], "worker": "b", "wait": 1}),
            );
            (status == 200).then_some(body)
        },
    );
    assert_eq!(second["jobs"][0]["attempt"], 2);
    let (status, _) = server.post(&format!("/api/v1/leases/{stale}/complete"), &json!(null));
    assert_eq!(status, 409, "the stale run's completion is refused");
    // A batch completion: each token its own result, the stale one refused alone.
    let token = second["jobs"][0]["token"].as_str().unwrap();
    let (status, results) = server.post(
        "/api/v1/leases/complete",
        &json!({"tokens": [token, stale]}),
    );
    assert_eq!(status, 200, "{results}");
    assert_eq!(results[0]["done"]["state"], "completed");
    assert_eq!(results[1]["error"], "lease_lost");
}

/// Every bad input: a 4xx with a JSON error, and nothing written.
fn errors(server: &Server) {
    let before = total_jobs(server);
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "/api/v1/jobs",
            b"{\"kind\":".to_vec(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            "/api/v1/jobs",
            b"{\"kind\":\"a\"}".to_vec(),
            "text/plain",
            415,
            "invalid_request",
        ),
        (
            "/api/v1/jobs",
            b"{\"kind\":\"a\",\"colour\":1}".to_vec(),
            "application/json",
            422,
            "invalid_request",
        ),
        (
            "/api/v1/jobs",
            b"{\"kind\":\"bad kind\"}".to_vec(),
            "application/json",
            400,
            "invalid_job",
        ),
        (
            "/api/v1/jobs",
            b"{\"kind\":\"a\",\"args\":[1]}".to_vec(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            "/api/v1/jobs",
            b"{\"kind\":\"a\",\"run_at\":\"2030-01-01T00:00:00Z\",\"delay_seconds\":5}".to_vec(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            "/api/v1/jobs",
            b"{\"kind\":\"a\",\"args\":{\"s\":\"x\\u0000\"}}".to_vec(),
            "application/json",
            400,
            "invalid_job",
        ),
        (
            "/api/v1/jobs",
            b"{\"kind\":\"a\",\"run_at\":\"soon\"}".to_vec(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            "/api/v1/jobs",
            format!(
                "{{\"kind\":\"a\",\"args\":{{\"s\":\"{}\"}}}}",
                "x".repeat(8000)
            )
            .into_bytes(),
            "application/json",
            413,
            "payload_too_large",
        ),
        (
            "/api/v1/jobs/batch",
            b"{\"jobs\":[{\"kind\":\"a\"},{\"kind\":\"\"}]}".to_vec(),
            "application/json",
            400,
            "invalid_job",
        ),
        (
            "/api/v1/leases",
            b"{\"queues\":[],\"worker\":\"w\"}".to_vec(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            "/api/v1/leases",
            b"{\"queues\":[\"q\"],\"worker\":\"w\",\"wait\":99}".to_vec(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            "/api/v1/leases/nonsense/complete",
            Vec::new(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            "/api/v1/leases/1.1/complete",
            Vec::new(),
            "application/json",
            409,
            "lease_lost",
        ),
        (
            "/api/v1/leases/987654.1/heartbeat",
            b"{}".to_vec(),
            "application/json",
            404,
            "not_found",
        ),
        (
            "/api/v1/leases/987654.1/complete",
            Vec::new(),
            "application/json",
            404,
            "not_found",
        ),
        (
            "/api/v1/leases/1.1/heartbeat",
            b"{\"colour\":1}".to_vec(),
            "application/json",
            422,
            "invalid_request",
        ),
        (
            "/api/v1/queues/bad%20name/pause",
            Vec::new(),
            "application/json",
            400,
            "invalid_request",
        ),
    ];
    for (path, body, content_type, status, code) in cases {
        let (got, answer) = server.post_raw(path, content_type, &body);
        assert_eq!(got, status, "POST {path}: {answer}");
        assert_eq!(
            answer["error"]["code"].as_str(),
            Some(code),
            "POST {path}: {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // A single job's error is about that job, not "job 0" of a batch.
    let (_, answer) = server.post("/api/v1/jobs", &json!({"kind": "bad kind"}));
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("invalid kind"), "{answer}");
    let ids: Vec<i64> = (1..=1001).collect();
    let (status, answer) = server.post(
        "/api/v1/jobs/actions",
        &json!({"action": "cancel", "ids": ids}),
    );
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (413, Some("ids")),
        "{answer}"
    );
    for (path, field) in [
        ("/api/v1/jobs?state=sleeping", "state"),
        ("/api/v1/jobs?args=notjson", "args"),
        ("/api/v1/jobs?args=7", "args"),
        ("/api/v1/jobs?created_after=yesterday", "created_after"),
        ("/api/v1/jobs?limit=0", "limit"),
        ("/api/v1/jobs/count?limit=0", "limit"),
        ("/api/v1/jobs?limit=-1", "limit"),
        ("/api/v1/jobs?limit=abc", "limit"),
        ("/api/v1/jobs?after=-5", "after"),
        ("/api/v1/jobs/count?after=-5", "after"),
        ("/api/v1/jobs?colour=red", "colour"),
        ("/api/v1/jobs/abc", "path"),
    ] {
        let (status, answer) = server.get(path);
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (400, Some(field)),
            "GET {path}: {answer}"
        );
    }
    let (status, answer) = server.get("/api/v1/jobs/999999999");
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = server.get("/no/such/route");
    assert_eq!(status, 404);
    let response = ureq::delete(&format!("{}/api/v1/jobs/1", server.url)).call();
    let allow = match &response {
        Err(ureq::Error::Status(_, r)) => r.header("allow").map(str::to_owned),
        _ => None,
    };
    let (status, answer) = Server::answer(response);
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{answer}"
    );
    assert!(allow.is_some_and(|a| a.contains("GET")), "the Allow header");
    assert_eq!(total_jobs(server), before, "bad input stored nothing");
}

#[test]
fn api_round_trips_on_sqlite() {
    let env = Env::new(CONFIG);
    let server = env.serve("serve", &[]);
    round_trip(&server);
    args_keep_every_digit(&server);
    metrics_pass_promtool(&server);
    openapi_covers_every_route(&server);
}

#[test]
fn api_round_trips_on_postgres() {
    let pg = pg::PgEnv::new(CONFIG);
    let server = Server::start(&pg.env, "serve", pg.cmd(&serve_args(&[])), None);
    round_trip(&server);
    args_keep_every_digit(&server);
}

fn metrics_pass_promtool(server: &Server) {
    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200);
    let text = text.as_str().expect("metrics are text").to_owned();
    for name in [
        "drover_jobs_enqueued_total",
        "drover_jobs_finished_total",
        "drover_job_duration_seconds_bucket",
        "drover_job_queue_wait_seconds_bucket",
        "drover_queue_jobs",
        "drover_queue_oldest_available_age_seconds",
        "drover_workers_busy",
        "drover_leases_expired_total",
        "drover_outcomes_refused_total",
        "drover_leader",
        "drover_cron_fires_total",
        "drover_archive_rows_total",
        "drover_store_commit_seconds_bucket",
        "drover_http_requests_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(
        text.contains("drover_leases_expired_total{queue=\"remote\",kind=\"py.task\"} 1"),
        "{text}"
    );
    let refused: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("drover_outcomes_refused_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("drover_outcomes_refused_total");
    assert!(refused >= 1.0, "the stale completion is counted");
    assert!(
        !text.contains("job_id") && !text.contains("user"),
        "no ids or args in labels"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian package prometheus; .ci/run installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openapi_covers_every_route(server: &Server) {
    let (status, doc) = server.get("/api/openapi.json");
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let path = std::env::temp_dir().join(format!("drover-openapi-{}.json", std::process::id()));
    std::fs::write(&path, doc.to_string()).unwrap();
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .expect("python3");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "the OpenAPI document is not valid (needs `pip install openapi-spec-validator`; .ci/run \
         installs it): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The errors any route may give are declared, but for the open probes' auth errors.
    let enqueue = &doc["paths"]["/api/v1/jobs"]["post"]["responses"];
    for status in ["401", "403", "413", "415", "422"] {
        assert!(
            enqueue.get(status).is_some(),
            "POST /api/v1/jobs lacks {status}"
        );
    }
    assert!(doc["paths"]["/api/v1/jobs/{id}"]["get"]["responses"]["400"].is_object());
    assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
    // Every documented operation is routed: none answers "no route".
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 26, "{:?}", paths.keys());
    for (template, operations) in paths {
        let concrete = template
            .replace("{id}", "1")
            .replace("{action}", "retry")
            .replace("{name}", "nightly")
            .replace("{token}", "1.1");
        for method in operations.as_object().unwrap().keys() {
            let (_, answer) = match method.as_str() {
                "get" => server.get(&concrete),
                "post" => server.post_raw(&concrete, "application/json", b"{}"),
                other => panic!("unexpected method {other}"),
            };
            let message = answer["error"]["message"].as_str().unwrap_or("");
            assert!(
                !message.starts_with("no route"),
                "{method} {template} is documented but not routed"
            );
        }
    }
}

/// A pause written by one process holds in another, across its restart, until resumed.
#[test]
fn a_pause_holds_across_processes() {
    let env = Env::new("[queues]\nq = 1\nother = 1\n");
    env.ok(&["queues", "pause", "q"]);
    let worker = env.spawn("worker", &["worker"]);
    let held = env.enqueue(&["drover.noop", "--queue", "q"]);
    // The positive signal that the worker is claiming: a job of another queue completes.
    let probe = env.enqueue(&["drover.noop", "--queue", "other"]);
    env.wait_job(probe, Duration::from_secs(20), |j| {
        j["state"] == "completed"
    });
    assert_eq!(
        env.job(held)["state"],
        "available",
        "a paused queue's job waits"
    );
    drop(worker);
    let worker = env.spawn("worker2", &["worker"]);
    let probe = env.enqueue(&["drover.noop", "--queue", "other"]);
    env.wait_job(probe, Duration::from_secs(20), |j| {
        j["state"] == "completed"
    });
    assert_eq!(
        env.job(held)["state"],
        "available",
        "the pause survives a restart"
    );
    let listed: Value = serde_json::from_str(&env.ok(&["queues", "list", "--json"])).unwrap();
    let q = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "q")
        .unwrap();
    assert_eq!(q["paused"], true);
    env.ok(&["queues", "resume", "q"]);
    env.wait_job(held, Duration::from_secs(20), |j| j["state"] == "completed");
    drop(worker);
}
