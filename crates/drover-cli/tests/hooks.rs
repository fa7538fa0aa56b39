//! Job-end hooks run however a job ends on a server: an HTTP worker's outcome and an operator's
//! action through the API run them, as the server's own workers' outcomes do (they ran only
//! for the latter, so a "tell me about discarded jobs" hook missed most of them).

mod common;

use std::time::{Duration, Instant};

use common::Env;
use serde_json::{Value, json};

const CONFIG: &str = r#"
[[hooks]]
command = ["sh", "-c", "cat >> hooks.jsonl; echo >> hooks.jsonl"]
"#;

/// The job end the hook saw for `id`, once it has run.
fn hook_saw(env: &Env, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(env.path("hooks.jsonl")).unwrap_or_default();
        // Hooks run side by side, so two events may share a line: read them as a stream.
        let seen = serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .find(|end| end["id"] == id);
        if let Some(end) = seen {
            return end;
        }
        assert!(
            Instant::now() < deadline,
            "no hook ran for job {id}: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hooks_run_for_http_workers_and_operator_actions() {
    let env = Env::new(CONFIG);
    let server = env.serve("serve", &[]);
    let enqueue = |kind: &str, delay: u64| {
        server.ok(
            "/api/v1/jobs",
            &json!({"kind": kind, "queue": "remote", "delay_seconds": delay}),
        )["id"]
            .as_i64()
            .unwrap()
    };

    // An operator ends waiting jobs: one at a time, by ids, and by a filter.
    let one = enqueue("op.one", 3600);
    let by_ids = enqueue("op.ids", 3600);
    let by_filter = enqueue("op.filter", 3600);
    let (status, _) = server.post(&format!("/api/v1/jobs/{one}/cancel"), &json!(null));
    assert_eq!(status, 200);
    server.ok(
        "/api/v1/jobs/actions",
        &json!({"action": "discard", "ids": [by_ids]}),
    );
    server.ok(
        "/api/v1/jobs/actions",
        &json!({"action": "cancel", "filter": {"kind": "op.filter"}}),
    );
    for (id, state, kind) in [
        (one, "cancelled", "op.one"),
        (by_ids, "discarded", "op.ids"),
        (by_filter, "cancelled", "op.filter"),
    ] {
        let end = hook_saw(&env, id);
        assert_eq!(
            (end["state"].as_str(), end["kind"].as_str()),
            (Some(state), Some(kind))
        );
        assert_eq!(end["queue"], "remote");
    }

    // An HTTP worker ends runs: one completed, one failed for good.
    let done = enqueue("remote.done", 0);
    let failed = enqueue("remote.failed", 0);
    let leased = server.ok(
        "/api/v1/leases",
        &json!({"queues": ["remote"], "worker": "w", "max": 2, "wait": 5}),
    );
    let token = |id: i64| {
        leased["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|job| job["id"] == id)
            .unwrap_or_else(|| panic!("job {id} not leased: {leased}"))["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The step a heartbeat reported reaches the hook, though the batch completion has none.
    server.ok(
        &format!("/api/v1/leases/{}/heartbeat", token(done)),
        &json!({"step": "halfway"}),
    );
    server.ok("/api/v1/leases/complete", &json!({"tokens": [token(done)]}));
    server.ok(
        &format!("/api/v1/leases/{}/fail", token(failed)),
        &json!({"error": "boom", "step": "upload", "discard": true}),
    );
    let end = hook_saw(&env, done);
    assert_eq!(
        (end["state"].as_str(), end["attempt"].as_i64()),
        (Some("completed"), Some(1))
    );
    assert_eq!(end["step"], "halfway", "{end}");
    let end = hook_saw(&env, failed);
    assert_eq!(end["state"], "discarded");
    assert_eq!(
        (end["error"].as_str(), end["step"].as_str()),
        (Some("boom"), Some("upload"))
    );
}

/// The command line's `jobs cancel`, `discard` and `bulk` run the config's hooks for the jobs
/// they end, as a server does for the same action, and exit only once the hooks are done (a
/// hook that takes a second has written its line by the time the command returns).
#[test]
fn the_command_lines_actions_run_hooks_before_it_exits() {
    let env = Env::new(
        r#"
[[hooks]]
command = ["sh", "-c", "sleep 1; cat >> hooks.jsonl; echo >> hooks.jsonl"]
"#,
    );
    let one = env.enqueue(&["cli.one", "--delay", "1h"]);
    let two = env.enqueue(&["cli.two", "--delay", "1h"]);
    let bulk = env.enqueue(&["cli.bulk", "--delay", "1h"]);
    env.ok(&["jobs", "cancel", &one.to_string()]);
    env.ok(&["jobs", "discard", &two.to_string()]);
    env.ok(&["jobs", "bulk", "cancel", "--kind", "cli.bulk"]);
    let text = std::fs::read_to_string(env.path("hooks.jsonl")).unwrap_or_default();
    let ends: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect();
    let seen = |id: i64| {
        ends.iter()
            .find(|end| end["id"] == id)
            .map(|end| end["state"].clone())
    };
    assert_eq!(
        (seen(one), seen(two), seen(bulk)),
        (
            Some(json!("cancelled")),
            Some(json!("discarded")),
            Some(json!("cancelled"))
        ),
        "{text}"
    );
    // A retry ends nothing: no hook, and no wait.
    env.ok(&["jobs", "retry", &two.to_string()]);
    let again = std::fs::read_to_string(env.path("hooks.jsonl")).unwrap_or_default();
    assert_eq!(again, text, "a retry ran no hook");
}

/// Ctrl-C while the command line waits for its hooks stops them, what they started in the
/// background included, and exits with 130, saying how many job ends were left without them.
#[test]
fn sigint_stops_the_command_lines_hooks_and_what_they_started() {
    let env = Env::new(
        r#"
[[hooks]]
command = ["sh", "-c", "sleep 60 & echo $! > sleeper.pid; wait"]
timeout = "2m"
"#,
    );
    let id = env.enqueue(&["cli.slow", "--delay", "1h"]);
    let mut cancel = common::Worker::start(
        env.cmd(&["jobs", "cancel", &id.to_string()]),
        env.path("cancel.log"),
    );
    let pid: i32 = common::wait_file(&env.path("sleeper.pid"), Duration::from_secs(30))
        .trim()
        .parse()
        .unwrap();
    assert!(common::alive(pid));
    cancel.signal(nix::sys::signal::Signal::SIGINT);
    let status = cancel.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{}", cancel.log());
    assert!(
        cancel
            .log()
            .contains("the hooks of 1 ended jobs did not run or were stopped"),
        "{}",
        cancel.log()
    );
    common::wait_gone(pid, Duration::from_secs(10), "the hook's background sleep");
    assert_eq!(
        env.job(id)["state"],
        "cancelled",
        "the cancel itself stands"
    );
}

/// Ctrl-C while many hooks wait their turn: the hooks that start as the process stops (the
/// pool frees the killed ones' places) are killed with what they started too, not left as
/// orphans. Every hook's background `sleep` is gone once the command has exited.
#[test]
fn sigint_leaves_no_hook_of_a_long_bulk_running() {
    let env = Env::new(
        r#"
[worker]
hook_concurrency = 16

[[hooks]]
command = ["sh", "-c", "sleep 60 & echo $! >> sleepers; wait"]
timeout = "2m"
"#,
    );
    let lines: String = (0..300)
        .map(|_| "{\"kind\":\"cli.many\",\"delay\":\"1h\"}\n")
        .collect();
    std::fs::write(env.path("jobs.jsonl"), lines).unwrap();
    env.ok(&["enqueue", "--file", "jobs.jsonl"]);
    let mut bulk = common::Worker::start(
        env.cmd(&["jobs", "bulk", "cancel", "--kind", "cli.many"]),
        env.path("bulk.log"),
    );
    let sleepers = || {
        std::fs::read_to_string(env.path("sleepers"))
            .unwrap_or_default()
            .lines()
            .filter_map(|pid| pid.trim().parse::<i32>().ok())
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while sleepers().len() < 16 {
        assert!(
            Instant::now() < deadline,
            "the hooks never started: {}",
            bulk.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    bulk.signal(nix::sys::signal::Signal::SIGINT);
    let status = bulk.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{}", bulk.log());
    for pid in sleepers() {
        common::wait_gone(pid, Duration::from_secs(10), "a hook's background sleep");
    }
}
