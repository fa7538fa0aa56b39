//! Crash behaviour with real processes: SIGKILL mid-job, SIGSTOP past the lease, SIGTERM with
//! short and long jobs, and cross-process wake-ups.

mod common;

use std::time::Duration;

use common::Env;
use nix::sys::signal::Signal;

/// Short leases so that rescue happens within a test; a long poll so that only wake-ups can
/// explain a quick start.
const FAST_LEASE: &str = r#"
[worker]
lease = "1s"
rescue_interval = "200ms"
poll_interval = "60s"
shutdown_timeout = "500ms"
cancel_grace = "500ms"
"#;

const T: Duration = Duration::from_secs(20);

fn state(job: &serde_json::Value) -> &str {
    job["state"].as_str().unwrap()
}

#[test]
fn a_job_of_a_killed_worker_runs_again_after_its_lease_expires() {
    let env = Env::new(FAST_LEASE);
    let mut first = env.spawn("first", &["worker"]);
    let id = env.enqueue(&["drover.sleep", "--args", r#"{"ms":1500}"#]);
    env.wait_job(id, T, |j| state(j) == "running");
    first.signal(Signal::SIGKILL);
    first.wait_exit(T);
    assert_eq!(state(&env.job(id)), "running", "nobody has rescued it yet");

    let _second = env.spawn("second", &["worker"]);
    let job = env.wait_job(id, T, |j| state(j) == "completed");
    assert_eq!(job["attempt"], 2, "{job:#}");
    let errors = job["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["attempt"], 1);
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("lease expired")
    );
}

#[test]
fn an_at_most_once_job_of_a_killed_worker_is_discarded_not_rerun() {
    let env = Env::new(FAST_LEASE);
    let mut first = env.spawn("first", &["worker"]);
    let id = env.enqueue(&["drover.sleep", "--args", r#"{"ms":1500}"#, "--at-most-once"]);
    env.wait_job(id, T, |j| state(j) == "running");
    first.signal(Signal::SIGKILL);
    first.wait_exit(T);

    let _second = env.spawn("second", &["worker"]);
    let job = env.wait_job(id, T, |j| state(j) == "discarded");
    assert_eq!(job["attempt"], 1, "never run again: {job:#}");
    assert!(
        job["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("interrupted")
    );
}

#[test]
fn a_stale_completion_after_sigstop_past_the_lease_is_rejected() {
    let env = Env::new(FAST_LEASE);
    let stalled = env.spawn("stalled", &["worker"]);
    let id = env.enqueue(&["drover.sleep", "--args", r#"{"ms":1500}"#]);
    env.wait_job(id, T, |j| state(j) == "running");
    stalled.signal(Signal::SIGSTOP);

    let rescuer = env.spawn("rescuer", &["worker"]);
    // The other worker rescues the job once the lease expires and runs it as attempt 2.
    let job = env.wait_job(id, T, |j| state(j) == "running" && j["attempt"] == 2);
    let owner = job["lease_owner"].as_str().unwrap().to_owned();
    assert!(owner.contains(&rescuer.child.id().to_string()), "{job:#}");

    // The stalled worker wakes up with its 1.5 s sleep long over and tries to record its run.
    stalled.signal(Signal::SIGCONT);
    stalled.wait_log("outcome refused", T);
    let job = env.wait_job(id, T, |j| state(j) == "completed");
    assert_eq!(job["attempt"], 2);
    assert!(job["completed_at"].as_str().unwrap() > job["attempted_at"].as_str().unwrap());
    assert_eq!(job["errors"].as_array().unwrap().len(), 1, "{job:#}");
    assert!(
        job["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("lease expired"),
        "{job:#}"
    );
}

#[test]
fn sigterm_lets_a_short_job_finish_and_exits_zero() {
    let env = Env::new(
        r#"
[worker]
shutdown_timeout = "10s"
"#,
    );
    let mut worker = env.spawn("worker", &["worker"]);
    let id = env.enqueue(&["drover.sleep", "--args", r#"{"ms":700}"#]);
    env.wait_job(id, T, |j| state(j) == "running");
    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(T);
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    assert_eq!(state(&env.job(id)), "completed");
}

#[test]
fn sigterm_hands_back_a_job_longer_than_the_timeout_and_exits_non_zero() {
    let env = Env::new(FAST_LEASE);
    let mut worker = env.spawn("worker", &["worker", "--shutdown-timeout", "300ms"]);
    let id = env.enqueue(&["drover.sleep", "--args", r#"{"ms":60000}"#]);
    env.wait_job(id, T, |j| state(j) == "running");
    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(T);
    assert_eq!(status.code(), Some(3), "{}", worker.log());
    let job = env.job(id);
    assert_eq!(state(&job), "available", "{job:#}");
    assert_eq!(job["attempt"], 0, "the hand-back did not use an attempt");
    assert_eq!(job["history"][0]["event"], "handed_back");
}

/// While it drains, a process is listed as draining (by `stats`, and by the dashboard, which a
/// draining server still serves), and it leaves the list once the drain is over.
#[test]
fn a_draining_process_is_listed_as_draining_until_it_exits() {
    let env = Env::new("[worker]\nshutdown_timeout = \"30s\"\n");
    let server = env.serve("serve", &[]);
    let mut worker = server.process;
    let id = env.enqueue(&["drover.sleep", "--args", r#"{"ms":5000}"#]);
    env.wait_job(id, T, |j| state(j) == "running");
    let working = env.stats();
    assert_eq!(
        working["processes"].as_array().map(Vec::len),
        Some(1),
        "{working:#}"
    );
    assert!(
        working["processes"][0]["draining_since"].is_null(),
        "{working:#}"
    );
    worker.signal(Signal::SIGTERM);
    let deadline = std::time::Instant::now() + T;
    while !env.stats()["processes"][0]["draining_since"].is_string() {
        assert!(
            std::time::Instant::now() < deadline,
            "never listed as draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let table = env.ok(&["stats"]);
    assert!(table.contains("draining since"), "{table}");
    let page = ureq::get(&format!("{}/processes", server.url))
        .call()
        .expect("the processes page")
        .into_string()
        .unwrap();
    assert!(
        page.contains("title=\"shutting down since ") && page.contains(">draining <time"),
        "{page}"
    );
    assert_eq!(
        state(&env.job(id)),
        "running",
        "listed as draining while its job runs"
    );
    assert_eq!(worker.wait_exit(T).code(), Some(0), "{}", worker.log());
    assert_eq!(state(&env.job(id)), "completed");
    let gone = env.stats();
    assert_eq!(
        gone["processes"].as_array().map(Vec::len),
        Some(0),
        "{gone:#}"
    );
}

/// A process killed with SIGKILL stops heartbeating: once its last heartbeat is 20 s behind
/// the newest, `stats` (table and JSON) and the dashboard mark it silent rather than working,
/// until the leader prunes it.
#[test]
fn a_killed_process_is_listed_as_silent_until_it_is_pruned() {
    let env = Env::new("");
    let server = env.serve("serve", &[]);
    let mut victim = env.spawn("worker", &["worker"]);
    let victim_pid = victim.child.id();
    let victim_id = env.stats()["processes"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["pid"] == victim_pid))
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .expect("the worker is registered");
    assert_eq!(env.stats()["silent"], serde_json::json!([]));
    victim.signal(Signal::SIGKILL);
    victim.wait_exit(T);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while env.stats()["silent"] != serde_json::json!([victim_id]) {
        assert!(
            std::time::Instant::now() < deadline,
            "never listed as silent: {:#}",
            env.stats()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let table = env.ok(&["stats"]);
    let row = table
        .lines()
        .find(|line| line.contains(&victim_pid.to_string()) && line.contains(&victim_id))
        .unwrap_or_else(|| panic!("no row for the killed worker:\n{table}"));
    assert!(row.contains("silent"), "{table}");
    let (_, page) = server.get_text("/processes");
    assert_eq!(page.matches("class=\"badge silent\"").count(), 1, "{page}");
    let (_, cluster) = server.get("/api/v1/cluster");
    assert_eq!(
        cluster["silent"],
        serde_json::json!([victim_id]),
        "{cluster:#}"
    );
}

/// A second SIGTERM exits at once, and takes the running command's whole process group with
/// it: a shell's background `sleep` does not run on beside the job's rerun.
#[test]
fn a_second_sigterm_kills_what_a_command_started() {
    let env = Env::new(
        r#"
[tasks."shell.wait"]
command = ["sh", "-c", "sleep 30 & echo $! > child.pid; wait"]
"#,
    );
    let mut worker = env.spawn("worker", &["worker", "--shutdown-timeout", "60s"]);
    let id = env.enqueue(&["shell.wait"]);
    let pid: i32 = common::wait_file(&env.path("child.pid"), T)
        .trim()
        .parse()
        .unwrap();
    env.wait_job(id, T, |j| state(j) == "running");
    worker.signal(Signal::SIGTERM);
    worker.wait_log("shutting down", T);
    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(T);
    assert_eq!(status.code(), Some(130), "{}", worker.log());
    common::wait_gone(pid, T, "the background sleep, after its worker exited");
}

/// A cancel's SIGTERM reaches the command itself, with no signal blocked or ignored (a shell
/// clears what it inherits, a Python program does not): a program that handles it cleans up and
/// ends long before `kill_grace` would have killed it.
#[test]
fn a_command_gets_a_cancels_sigterm() {
    let env = Env::new(
        r#"
[tasks."py.term"]
command = ["python3", "-c", "import pathlib, signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: (pathlib.Path('term.txt').write_text('cleaned up'), sys.exit(3)))\npathlib.Path('status.txt').write_text(open('/proc/self/status').read())\ntime.sleep(120)"]
kill_grace = "120s"
"#,
    );
    let _worker = env.spawn("worker", &["worker"]);
    let id = env.enqueue(&["py.term"]);
    let status = common::wait_file(&env.path("status.txt"), T);
    for field in ["SigBlk:", "SigIgn:"] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        let mask = u64::from_str_radix(line[field.len()..].trim(), 16).unwrap();
        let term_or_int = (1 << (15 - 1)) | (1 << (2 - 1));
        assert_eq!(mask & term_or_int, 0, "{line}");
    }
    env.ok(&["jobs", "cancel", &id.to_string()]);
    env.wait_job(id, T, |j| state(j) == "cancelled");
    let said = std::fs::read_to_string(env.path("term.txt")).unwrap();
    assert_eq!(said, "cleaned up");
}

/// A command that exits leaving a child in the background (holding its stderr open) ends its
/// run at once, and the child is killed: the run neither waits for it nor outlives a cancel.
#[test]
fn a_command_ends_when_its_program_exits_and_its_leftovers_die() {
    let env = Env::new(
        r#"
[tasks."shell.bg"]
command = ["sh", "-c", "sleep 60 & echo $! > bg.pid; exit 0"]
"#,
    );
    let _worker = env.spawn("worker", &["worker"]);
    let id = env.enqueue(&["shell.bg"]);
    let pid: i32 = common::wait_file(&env.path("bg.pid"), T)
        .trim()
        .parse()
        .unwrap();
    env.wait_job(id, T, |j| state(j) == "completed");
    common::wait_gone(pid, T, "the background sleep, once its command exited");
}

#[test]
fn an_enqueue_from_another_process_wakes_a_running_worker() {
    // The poll is 60 s: only the file-system wake-up can start the job in time.
    let env = Env::new(FAST_LEASE);
    let _worker = env.spawn("worker", &["worker"]);
    for _ in 0..3 {
        let id = env.enqueue(&["drover.noop"]);
        env.wait_job(id, Duration::from_secs(10), |j| state(j) == "completed");
    }
}

#[test]
fn cancelling_from_another_process_stops_a_running_job() {
    let env = Env::new(FAST_LEASE);
    let _worker = env.spawn("worker", &["worker"]);
    let id = env.enqueue(&["drover.sleep", "--args", r#"{"ms":60000}"#]);
    env.wait_job(id, T, |j| state(j) == "running");
    let out = env.ok(&["jobs", "cancel", &id.to_string()]);
    assert!(out.contains("asked to stop"), "{out}");
    let job = env.wait_job(id, Duration::from_secs(10), |j| state(j) == "cancelled");
    assert!(job["cancel_requested_at"].is_string());
}

#[test]
fn another_process_leads_within_the_bound_after_the_leader_is_killed() {
    let env = Env::new(
        r#"
[worker]
leader_ttl = "2s"
"#,
    );
    let mut first = env.spawn("first", &["worker"]);
    first.wait_log("elected leader", T);
    let second = env.spawn("second", &["worker"]);
    // A process registers itself (presence) just after it starts: wait for both.
    let deadline = std::time::Instant::now() + T;
    let stats = loop {
        let stats = env.stats();
        if stats["processes"].as_array().unwrap().len() == 2 {
            break stats;
        }
        assert!(std::time::Instant::now() < deadline, "{stats:#}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let leader = &stats["leader"];
    assert_eq!(leader["pid"], first.child.id(), "{stats:#}");

    let killed = std::time::Instant::now();
    first.signal(Signal::SIGKILL);
    first.wait_exit(T);
    // The term (ttl 2 s) expires, then the next election attempt (every ttl/5) wins; a margin
    // of 3 s for a loaded machine.
    let ttl = Duration::from_secs(2);
    let bound = ttl + ttl / 5 + Duration::from_secs(3);
    second.wait_log("elected leader", bound + Duration::from_secs(10));
    let took = killed.elapsed();
    assert!(took < bound, "took {took:?}, over {bound:?}");
    let stats = env.stats();
    assert_eq!(stats["leader"]["pid"], second.child.id(), "{stats:#}");
    assert!(stats["leader"]["term"].as_i64().unwrap() >= 2);
}

#[test]
fn the_jobs_of_a_stalled_leader_are_reclaimed_by_another_process_within_the_lease() {
    // A long leader term: the leader keeps it while stopped, so only a rescuer running outside
    // the leader can reclaim its job in time.
    let env = Env::new(&FAST_LEASE.replace("[worker]", "[worker]\nleader_ttl = \"60s\""));
    let leader = env.spawn("leader", &["worker"]);
    leader.wait_log("elected leader", T);
    let id = env.enqueue(&["drover.sleep", "--args", r#"{"ms":60000}"#]);
    let job = env.wait_job(id, T, |j| state(j) == "running");
    assert!(
        job["lease_owner"]
            .as_str()
            .unwrap()
            .contains(&leader.child.id().to_string())
    );
    let other = env.spawn("other", &["worker"]);
    let deadline = std::time::Instant::now() + T;
    while env.stats()["processes"].as_array().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the second process never registered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    leader.signal(Signal::SIGSTOP);
    let stopped = std::time::Instant::now();
    // Lease 1 s + rescue interval 200 ms + a margin of 4 s for a loaded machine; the leader term
    // (60 s) is far longer.
    let bound = Duration::from_millis(1000 + 200 + 4000);
    let job = env.wait_job(id, bound + Duration::from_secs(5), |j| {
        state(j) == "running" && j["attempt"] == 2
    });
    let took = stopped.elapsed();
    assert!(took < bound, "reclaimed after {took:?}, over {bound:?}");
    assert!(
        job["lease_owner"]
            .as_str()
            .unwrap()
            .contains(&other.child.id().to_string()),
        "{job:#}"
    );
    let stats = env.stats();
    assert_eq!(
        stats["leader"]["pid"],
        leader.child.id(),
        "no handover happened: {stats:#}"
    );
    let errors = job["errors"].as_array().unwrap();
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("lease expired"),
        "{job:#}"
    );
    leader.signal(Signal::SIGCONT);
}

/// The parent of `pid`, from `/proc`.
fn parent_of(pid: i32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// A worker killed with SIGKILL takes its command's whole process group with it: the shell it
/// started and the shell's own child, which a kill of the shell alone would have orphaned
/// (seen in QA: the old run's child beside its job's rerun).
#[test]
fn the_children_of_a_command_task_die_with_their_sigkilled_worker() {
    let env = Env::new(&format!(
        r#"{FAST_LEASE}
[tasks."shell.long"]
command = ["sh", "-c", "echo $$ > shell.pid; sleep 300 & echo $! > child.pid.tmp && mv child.pid.tmp child.pid; wait"]
"#
    ));
    let mut worker = env.spawn("worker", &["worker"]);
    let id = env.enqueue(&["shell.long"]);
    env.wait_job(id, T, |j| state(j) == "running");
    let child: i32 = common::wait_file(&env.path("child.pid"), T)
        .trim()
        .parse()
        .unwrap();
    let shell: i32 = common::wait_file(&env.path("shell.pid"), T)
        .trim()
        .parse()
        .unwrap();
    assert!(
        common::alive(child) && common::alive(shell),
        "the command runs"
    );
    // The shell is the child of the worker's shim, which is the worker's own child.
    let shim = parent_of(shell);
    assert_eq!(parent_of(shim as i32), worker.child.id());
    assert_eq!(parent_of(child), shell as u32);

    worker.signal(Signal::SIGKILL);
    worker.wait_exit(T);
    common::wait_gone(shell, T, "the shell, after its worker was killed");
    common::wait_gone(child, T, "the shell's child, after its worker was killed");
    common::wait_gone(shim as i32, T, "the shim, after its worker was killed");
}

#[test]
fn a_locked_sqlite_database_stalls_the_worker_but_loses_nothing() {
    let env = Env::new("[worker]\npoll_interval = \"60s\"\n");
    let mut worker = env.spawn("worker", &["worker"]);
    let id = env.enqueue(&["drover.sleep", "--args", r#"{"ms":300}"#]);
    env.wait_job(id, T, |j| state(j) == "running");
    // Another process holds the write lock for longer than the 5 s busy timeout, while the
    // job finishes and its completion has to wait.
    let conn = rusqlite::Connection::open(env.path("drover.db")).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    // The positive signal that the completion is stuck behind the lock: the worker says so
    // once its 5 s busy timeout has run out.
    worker.wait_log("database is locked", T);
    assert_eq!(
        state(&env.job(id)),
        "running",
        "the completion cannot be written while the lock is held"
    );
    conn.execute_batch("COMMIT").unwrap();
    let job = env.wait_job(id, T, |j| state(j) == "completed");
    assert_eq!(job["attempt"], 1);
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker kept running"
    );
    assert!(
        worker.log().contains("database is locked"),
        "{}",
        worker.log()
    );
    // And it still works afterwards.
    let next = env.enqueue(&["drover.noop"]);
    env.wait_job(next, T, |j| state(j) == "completed");
    worker.signal(Signal::SIGTERM);
    assert_eq!(worker.wait_exit(T).code(), Some(0));
}
