//! The Python client (`clients/python/drover.py`) against a real `drover serve`: enqueue,
//! a worker that runs jobs, a worker killed with SIGKILL mid-job whose job runs again after its
//! lease (the killed attempt's completion, replayed, gets 409), a graceful stop on SIGTERM that
//! ends a waiting lease request at once, completions of jobs that finish together recorded
//! in one call, a worker that gets its own rescued job back while the first run goes on,
//! a shutdown timeout that hands back a run still going, and an outcome recorded through a
//! server outage longer than the lease.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Env;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

fn scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python/tests/scenario.py")
}

fn python(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(scenario())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python3 is needed for the client tests");
    assert!(
        out.status.success(),
        "scenario {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap()
}

/// The client's own checks of what a caller passes (queues given as one name, NaN, unknown
/// batch keys, a kind registered twice), which need no server: `clients/python/tests`.
#[test]
fn the_clients_input_checks_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python");
    let out = Command::new("python3")
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "tests",
            "-p",
            "test_*.py",
        ])
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("python3 is needed for the client tests");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Ran ") && said.contains("OK"), "{said}");
}

/// A Python worker process; killed when dropped.
struct PyWorker(Child);

impl PyWorker {
    fn start(url: &str, queue: &str, record: &Path, concurrency: usize) -> PyWorker {
        Self::start_with(url, queue, record, concurrency, 0)
    }

    fn start_with(
        url: &str,
        queue: &str,
        record: &Path,
        concurrency: usize,
        prefetch: usize,
    ) -> PyWorker {
        Self::start_waiting(url, queue, record, concurrency, prefetch, 1.0)
    }

    /// With `wait` seconds per lease request.
    fn start_waiting(
        url: &str,
        queue: &str,
        record: &Path,
        concurrency: usize,
        prefetch: usize,
        wait: f64,
    ) -> PyWorker {
        let child = Command::new("python3")
            .arg(scenario())
            .args(["worker", url, queue])
            .arg(record)
            .arg(concurrency.to_string())
            .arg(prefetch.to_string())
            .arg(wait.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        PyWorker(child)
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.0.id() as i32), signal).unwrap();
    }
}

impl Drop for PyWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn records(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

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

const CONFIG: &str = "[worker]\nlease = \"2s\"\n";

#[test]
fn a_python_worker_runs_jobs_enqueued_by_the_python_client() {
    let env = Env::new(CONFIG);
    let server = env.serve("serve", &[]);
    let record = env.path("record.jsonl");
    let enqueued = python(&["enqueue", &server.url, "py", "20"]);
    assert_eq!(enqueued["again"]["duplicate"], true);
    assert_eq!(enqueued["again"]["id"], enqueued["first"]["id"]);
    assert_eq!(enqueued["rest"]["inserted"], 19);
    let errors = python(&["errors", &server.url]);
    let codes: Vec<(u64, &str)> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["status"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (400, "invalid_job"),
            (400, "invalid_request"),
            (404, "not_found"),
            (400, "invalid_request"),
            (400, "invalid_job"),
            (400, "invalid_request"),
        ]
    );

    // A queue name with a slash is one path segment.
    let queues = python(&["queues", &server.url, "team/a"]);
    assert_eq!(
        (&queues["paused"]["name"], &queues["paused"]["paused"]),
        (&json!("team/a"), &json!(true)),
        "{queues}"
    );
    assert_eq!(queues["resumed"]["paused"], false, "{queues}");

    let _worker = PyWorker::start(&server.url, "py", &record, 4);
    eventually(Duration::from_secs(60), "20 jobs done", || {
        let ends = records(&record)
            .iter()
            .filter(|r| r["event"] == "end")
            .count();
        (ends == 20).then_some(())
    });
    let stats = env.stats();
    eventually(Duration::from_secs(20), "all completed", || {
        let stats = env.stats();
        (stats["queues"]["py"]["completed"] == 20).then_some(())
    });
    assert_eq!(stats["queues"]["py"]["discarded"], 0);
}

/// An enqueue whose answer is lost (a proxy passes it on and drops the answer) is sent once and
/// raises, saying the outcome is unknown, rather than being sent again as a second job; and a
/// keep-alive connection the server closed while idle is replaced before the next enqueue.
#[test]
fn an_enqueue_whose_answer_is_lost_is_not_sent_twice() {
    let env = Env::new("[http]\nheader_timeout = \"1s\"\n");
    let server = env.serve("serve", &[]);
    let said = python(&["lost-answer", &server.url, "lost"]);
    assert_eq!(said["lost"]["code"], "unreachable", "{said}");
    assert!(
        said["lost"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown")),
        "{said}"
    );
    assert_eq!(
        said["closed_idle"], true,
        "the server kept the idle connection: {said}"
    );
    assert!(said["after_idle"]["id"].is_i64(), "{said}");
    let jobs: Value =
        serde_json::from_str(&env.ok(&["jobs", "list", "--queue", "lost", "--json"])).unwrap();
    let kinds: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|&&k| k == "py.lost").count(),
        1,
        "{jobs:#}"
    );
    assert_eq!(
        kinds.iter().filter(|&&k| k == "py.idle").count(),
        1,
        "{jobs:#}"
    );
}

/// Starts a 60 s Python job with `config`, cancels it once it runs, and waits `limit` for its
/// handler to stop; returns the job once its outcome is recorded.
fn cancel_a_running_python_job(config: &str, limit: Duration) -> Value {
    let env = Env::new(config);
    let server = env.serve("serve", &[]);
    let record = env.path("record.jsonl");
    let _worker = PyWorker::start(&server.url, "py", &record, 1);
    let job = server.ok(
        "/api/v1/jobs",
        &json!({"kind": "py.record", "queue": "py", "args": {"sleep": 60, "on_cancel": "return"}}),
    );
    let id = job["id"].as_i64().unwrap();
    eventually(Duration::from_secs(30), "the job starts", || {
        records(&record)
            .into_iter()
            .find(|r| r["event"] == "start" && r["id"] == id)
    });
    let (status, _) = server.post(&format!("/api/v1/jobs/{id}/cancel"), &json!(null));
    assert_eq!(status, 200);
    eventually(limit, "the handler stops", || {
        records(&record)
            .into_iter()
            .find(|r| r["event"] == "stopped" && r["id"] == id)
    });
    eventually(Duration::from_secs(20), "the outcome", || {
        let job = env.job(id);
        (job["state"] != "running").then_some(job)
    })
}

/// A handler that returns early because its job was cancelled leaves the job cancelled, not
/// completed.
#[test]
fn a_cancelled_python_job_that_returns_is_recorded_cancelled() {
    let job = cancel_a_running_python_job(CONFIG, Duration::from_secs(20));
    assert_eq!(job["state"], "cancelled", "{job:#}");
}

/// A cancel reaches the handler long before the next heartbeat: with a 90 s lease the
/// heartbeat comes every 30 s, and the worker's cancel check (every second) must carry it.
#[test]
fn a_cancel_reaches_a_python_handler_between_heartbeats() {
    let job = cancel_a_running_python_job("[worker]\nlease = \"90s\"\n", Duration::from_secs(15));
    assert_eq!(job["state"], "cancelled", "{job:#}");
}

#[test]
fn a_killed_python_worker_s_job_runs_again_and_its_stale_completion_is_refused() {
    let env = Env::new(CONFIG);
    let server = env.serve("serve", &[]);
    let record = env.path("record.jsonl");
    python(&["enqueue", &server.url, "py", "1", "30"]);
    let victim = PyWorker::start(&server.url, "py", &record, 1);
    let started = eventually(Duration::from_secs(30), "the job starts", || {
        records(&record).into_iter().find(|r| r["event"] == "start")
    });
    victim.signal(Signal::SIGKILL);
    drop(victim);
    let stale = started["token"].as_str().unwrap().to_owned();

    // Short job this time: a second worker finishes the rerun quickly.
    let id = started["id"].as_i64().unwrap();
    let second_record = env.path("second.jsonl");
    let _second = PyWorker::start(&server.url, "py", &second_record, 1);
    let rerun = eventually(Duration::from_secs(60), "the job runs again", || {
        records(&second_record)
            .into_iter()
            .find(|r| r["event"] == "start")
    });
    assert_eq!(rerun["id"].as_i64(), Some(id));
    assert_eq!(rerun["attempt"], 2, "rerun after the lease expired");
    let job = env.job(id);
    assert!(
        job["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("lease expired"),
        "{job:#}"
    );
    let replay = python(&["complete", &server.url, &stale]);
    assert_eq!(replay["status"], 409, "{replay}");
    assert_eq!(replay["code"], "lease_lost");
    let job = env.job(id);
    assert_ne!(job["state"], "completed", "the replay recorded nothing");
}

#[test]
fn sigterm_finishes_the_running_job_and_hands_back_the_rest() {
    let env = Env::new(CONFIG);
    let server = env.serve("serve", &[]);
    let record = env.path("record.jsonl");
    python(&["enqueue", &server.url, "py", "3", "1.5"]);
    // One at a time, two more leased ahead: those two are leased but not started.
    let worker = PyWorker::start_with(&server.url, "py", &record, 1, 2);
    let started = eventually(Duration::from_secs(30), "a job starts", || {
        records(&record).into_iter().find(|r| r["event"] == "start")
    });
    eventually(Duration::from_secs(20), "all three leased", || {
        (env.stats()["queues"]["py"]["running"] == 3).then_some(())
    });
    worker.signal(Signal::SIGTERM);
    let mut worker = worker;
    let status = eventually(Duration::from_secs(30), "the worker exits", || {
        worker.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    let done = records(&record);
    assert_eq!(done.iter().filter(|r| r["event"] == "start").count(), 1);
    assert_eq!(
        done.iter().filter(|r| r["event"] == "end").count(),
        1,
        "the running job finished"
    );
    let id = started["id"].as_i64().unwrap();
    assert_eq!(env.job(id)["state"], "completed");
    let stats = env.stats();
    assert_eq!(
        stats["queues"]["py"]["available"], 2,
        "the unstarted two were handed back"
    );
    let waiting: Value =
        serde_json::from_str(&env.ok(&["jobs", "list", "--json", "--state", "available"])).unwrap();
    for job in waiting["jobs"].as_array().unwrap() {
        assert_eq!(job["attempt"], 0, "a hand-back uses no attempt: {job}");
        assert_eq!(job["history"][0]["event"], "handed_back");
    }
}

/// The value of the series `name{labels}` in `/metrics`, 0 when absent.
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn jobs_that_finish_together_are_completed_in_one_call() {
    let env = Env::new(CONFIG);
    let server = env.serve("serve", &[]);
    let record = env.path("record.jsonl");
    // Eight at a time, each 0.3 s: every round of eight finishes within moments of each other.
    python(&["enqueue", &server.url, "py", "24", "0.3"]);
    let _worker = PyWorker::start(&server.url, "py", &record, 8);
    eventually(Duration::from_secs(60), "all 24 completed", || {
        (env.stats()["queues"]["py"]["completed"] == 24).then_some(())
    });
    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    let metrics = metrics.as_str().expect("metrics are text");
    let batches = series(
        metrics,
        r#"drover_http_requests_total{route="/api/v1/leases/complete",status="200"}"#,
    );
    let singles = series(
        metrics,
        r#"drover_http_requests_total{route="/api/v1/leases/{token}/complete",status="200"}"#,
    );
    assert!(batches >= 1.0, "no batch completion:\n{metrics}");
    assert!(
        batches + singles < 24.0,
        "{batches} batch and {singles} single completion calls for 24 jobs: not batched"
    );
    let ends = records(&record)
        .iter()
        .filter(|r| r["event"] == "end")
        .count();
    assert_eq!(ends, 24);
}

#[test]
fn sigterm_ends_a_waiting_lease_request_at_once() {
    let env = Env::new(CONFIG);
    let server = env.serve("serve", &[]);
    let record = env.path("record.jsonl");
    // Nothing to do, and 30 s per lease request: without a wake-up, the stop would wait it out.
    let worker = PyWorker::start_waiting(&server.url, "idle", &record, 1, 0, 30.0);
    let name = format!("py-{}", worker.0.id());
    // The wake-up endpoint counts the worker's waiting polls: once one waits, the worker is in
    // its long poll. (Ending it here is harmless: the worker, not stopping, polls again.)
    eventually(Duration::from_secs(30), "the worker polls", || {
        let woken = server.ok(
            "/api/v1/leases/wake",
            &serde_json::json!({ "worker": name }),
        );
        (woken["polls"].as_u64() == Some(1)).then_some(())
    });
    worker.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let mut worker = worker;
    let status = eventually(
        Duration::from_secs(10),
        "the worker exits well within its 30 s poll",
        || worker.0.try_wait().unwrap(),
    );
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(10));
    let (status, bad) = server.post(
        "/api/v1/leases/wake",
        &serde_json::json!({ "worker": "no spaces" }),
    );
    assert_eq!(
        (status, bad["error"]["field"].as_str()),
        (400, Some("worker")),
        "{bad}"
    );
}

/// A worker that stalled past its lease gets the rescued job back while its first run is still
/// going: the second run is heartbeated and completed, and the first's end does not drop it
/// (it did, when runs were kept by job id: the job then ran again every lease, to the last
/// attempt). A handler that calls `sys.exit` fails its attempt without ending its thread.
#[test]
fn a_python_worker_that_gets_its_own_rescued_job_back_finishes_it_once() {
    let env = Env::new("[worker]\nlease = \"2s\"\nrescue_interval = \"200ms\"\n");
    let server = env.serve("serve", &[]);
    let record = env.path("record.jsonl");
    let client = |body: Value| {
        let (status, answer) = server.post("/api/v1/jobs", &body);
        assert_eq!(status, 201, "{answer}");
        answer["id"].as_i64().unwrap()
    };
    let id = client(json!({"kind": "py.record", "queue": "py",
                           "args": {"sleep": 8, "ignore_cancel": true}}));
    let worker = PyWorker::start(&server.url, "py", &record, 2);
    eventually(Duration::from_secs(30), "the first run starts", || {
        records(&record).into_iter().find(|r| r["event"] == "start")
    });
    worker.signal(Signal::SIGSTOP);
    eventually(Duration::from_secs(30), "the lease expires", || {
        let job = env.job(id);
        (job["state"] != "running").then_some(())
    });
    worker.signal(Signal::SIGCONT);
    let exit = client(json!({"kind": "py.record", "queue": "py", "args": {"exit": true}}));
    eventually(Duration::from_secs(60), "the job completes", || {
        (env.job(id)["state"] == "completed").then_some(())
    });
    let starts: Vec<i64> = records(&record)
        .iter()
        .filter(|r| r["event"] == "start" && r["id"] == id)
        .map(|r| r["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(starts, vec![1, 2], "one rerun, completed");
    assert_eq!(env.job(id)["attempt"], 2);
    let exited = eventually(Duration::from_secs(30), "the exit is recorded", || {
        let job = env.job(exit);
        (job["state"] != "running" && job["state"] != "available").then_some(job)
    });
    let message = exited["errors"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("SystemExit: 3"), "{exited:#}");
}

/// With a shutdown timeout, SIGTERM does not wait for a handler that ignores it: at the timeout
/// its run is handed back (no attempt used) and the worker exits.
#[test]
fn sigterm_hands_back_a_run_still_going_at_the_shutdown_timeout() {
    let env = Env::new(CONFIG);
    let server = env.serve("serve", &[]);
    let record = env.path("record.jsonl");
    let (status, job) = server.post(
        "/api/v1/jobs",
        &json!({"kind": "py.record", "queue": "py", "args": {"sleep": 60, "ignore_cancel": true}}),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    let child = Command::new("python3")
        .arg(scenario())
        .args(["worker", &server.url, "py"])
        .arg(&record)
        .env("SHUTDOWN_TIMEOUT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut worker = PyWorker(child);
    eventually(Duration::from_secs(30), "the job starts", || {
        records(&record).into_iter().find(|r| r["event"] == "start")
    });
    worker.signal(Signal::SIGTERM);
    let status = eventually(Duration::from_secs(20), "the worker exits", || {
        worker.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    let job = env.job(id);
    assert_eq!(job["state"], "available", "handed back: {job:#}");
    assert_eq!(job["attempt"], 0, "a hand-back uses no attempt: {job:#}");
}

/// A server away for longer than the lease (killed, then started again on the same database
/// and address): the Python worker keeps offering the outcome of the job that finished
/// meanwhile, the restarted server leaves the expired lease to its owner for a lease before it
/// rescues anything, and takes the completion: the job ran once. The lease is longer than the
/// client's longest pause between tries (5 s), so a try lands within the server's grace.
#[test]
fn an_outcome_offered_through_a_server_outage_longer_than_the_lease_is_recorded() {
    let env = Env::new("[worker]\nlease = \"8s\"\n");
    let server = env.serve("serve", &[]);
    let url = server.url.clone();
    let record = env.path("record.jsonl");
    python(&["enqueue", &url, "py", "1", "1"]);
    let worker = PyWorker::start(&url, "py", &record, 1);
    let started = eventually(Duration::from_secs(30), "the job starts", || {
        records(&record).into_iter().find(|r| r["event"] == "start")
    });
    let id = started["id"].as_i64().unwrap();
    server.process.signal(Signal::SIGKILL);
    drop(server);
    eventually(
        Duration::from_secs(30),
        "the job ends, the server away",
        || records(&record).into_iter().find(|r| r["event"] == "end"),
    );

    // The server stays away until the lease has ended by its clock, and then for longer than
    // the client's longest pause, so that the client has tried past the lease's end.
    let job = env.job(id);
    assert_eq!(job["state"], "running", "{job:#}");
    let expires: jiff::Timestamp = job["lease_expires_at"].as_str().unwrap().parse().unwrap();
    eventually(Duration::from_secs(30), "the lease ends", || {
        (jiff::Timestamp::now() > expires + jiff::SignedDuration::from_secs(6)).then_some(())
    });

    let addr = url.trim_start_matches("http://");
    let _restarted = common::api::Server::start(
        &env,
        "restarted",
        env.cmd(&["serve", "--listen", addr]),
        None,
    );
    let job = env.wait_job(id, Duration::from_secs(30), |job| job["state"] != "running");
    assert_eq!(job["state"], "completed", "{job:#}");
    assert_eq!(job["attempt"], 1, "it ran once: {job:#}");
    let starts = records(&record)
        .into_iter()
        .filter(|r| r["event"] == "start")
        .count();
    assert_eq!(starts, 1, "the job ran again");
    drop(worker);
}
