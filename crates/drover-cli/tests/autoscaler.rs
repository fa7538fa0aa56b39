//! The autoscaler through the real binary: `drover serve` with the sim runtime answers
//! `drover reserve --wait`, `drover slots interrupt` hands the lease to a replacement, and bad
//! input is refused with nothing changed.

mod common;

use std::time::{Duration, Instant};

use common::Env;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"
[systems.gpu]
max = 2
idle_timeout = "1h"
[autoscaler]
runtime = "sim"
interval = "100ms"
[autoscaler.sim]
boot_min = "0s"
"#;

/// Slot workers outlive the server that started them, by design (capacity outlives a leader).
/// Dropped after the server, this stops the ones the test caused, by their registered pids, even
/// when the test failed.
struct SlotWorkers<'a>(&'a Env);

impl Drop for SlotWorkers<'_> {
    fn drop(&mut self) {
        // A few rounds: a worker started just before the server died registers a moment later.
        for _ in 0..4 {
            let out = self.0.run(&["stats", "--json"]);
            let stats: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            for process in stats["processes"].as_array().into_iter().flatten() {
                let slot_worker = process["id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("local-"));
                if let (true, Some(pid)) = (slot_worker, process["pid"].as_i64()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn slots(env: &Env) -> Vec<Value> {
    serde_json::from_str::<Value>(&env.ok(&["slots", "list", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn reserve_interrupt_and_release_through_the_cli() {
    let env = Env::new(CONFIG);
    let _server = env.spawn("serve", &["serve"]);
    let reservation: Value = serde_json::from_str(&env.ok(&[
        "reserve", "--system", "gpu", "--ttl", "10m", "--wait", "--json",
    ]))
    .unwrap();
    assert_eq!(reservation["phase"], "assigned", "{reservation}");
    let first = reservation["instance_id"].as_str().unwrap().to_owned();
    let slot_id = reservation["slot_id"].as_i64().unwrap();
    let listed = slots(&env);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "ready");
    assert_eq!(listed[0]["leases"], 1);

    env.ok(&["slots", "interrupt", &slot_id.to_string()]);
    // The lease moves to a replacement; the interrupted slot's instance is gone.
    let deadline = Instant::now() + T;
    loop {
        let now = slots(&env);
        let held = now
            .iter()
            .find(|s| s["leases"] == 1 && s["state"] == "ready");
        if let Some(held) = held {
            assert_ne!(held["instance_id"].as_str(), Some(first.as_str()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no replacement took the lease: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let id = reservation["id"].as_i64().unwrap().to_string();
    // An operator who lost the id finds it among the open reservations.
    let open: Value = serde_json::from_str(&env.ok(&["reservations", "--json"])).unwrap();
    assert_eq!(open[0]["id"], reservation["id"], "{open}");
    assert_eq!(open[0]["phase"], "assigned", "{open}");
    let listed = env.ok(&["reservations", "--system", "gpu"]);
    assert!(
        listed.contains("HOLDER") && listed.contains("cli"),
        "{listed}"
    );
    let released: Value = serde_json::from_str(&env.ok(&["release", &id, "--json"])).unwrap();
    assert_eq!(released["phase"], "released");
    assert_eq!(env.ok(&["reservations"]).trim(), "no open reservation");
}

/// Giving up on `reserve --wait` (Ctrl-C) releases the reservation it made: left pending, it
/// would take a slot for its whole time to live, and its id was never shown.
#[test]
fn an_interrupted_reserve_wait_releases_its_reservation() {
    use std::io::{BufRead, BufReader};
    // One slot of one lease, taken by a first reservation: the second one waits.
    let env = Env::new(&CONFIG.replace("max = 2", "max = 1"));
    let server = env.serve("serve", &[]);
    env.ok(&["reserve", "--system", "gpu", "--wait"]);
    let mut waiting = env
        .cmd(&["reserve", "--system", "gpu", "--wait", "--ttl", "1h"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(waiting.stderr.take().unwrap()).lines();
    let said = lines.next().unwrap().unwrap();
    let id: i64 = said
        .strip_prefix("reservation ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no reservation id in {said:?}"));
    assert!(said.contains("pending"), "{said}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(waiting.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = waiting.wait().unwrap();
    assert!(!status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter()
            .any(|l| l.contains(&format!("reservation {id} released"))),
        "{rest:?}"
    );
    let (code, reservation) = server.get(&format!("/api/v1/reservations/{id}"));
    assert_eq!(code, 200);
    assert_eq!(reservation["phase"], "released", "{reservation}");
}

#[test]
fn bad_capacity_input_is_refused() {
    let env = Env::new(CONFIG);
    env.ok(&["migrate"]);
    let err = env.fails(&["reserve", "--system", "cpu"]);
    assert!(
        err.contains("[systems.cpu]") && err.contains("gpu"),
        "{err}"
    );
    for ttl in ["1000000w", "31d", "0s"] {
        let err = env.fails(&["reserve", "--system", "gpu", "--ttl", ttl]);
        assert!(err.contains("at most 30 days"), "{ttl}: {err}");
    }
    for list in [&["slots", "list"][..], &["reservations"][..]] {
        let err = env.fails(&[list, &["--system", "nope"]].concat());
        assert!(
            err.contains("--system") && err.contains("[systems.nope]"),
            "{list:?}: {err}"
        );
    }
    let err = env.fails(&["slots", "drain", "999"]);
    assert!(err.contains("no slot with id 999"), "{err}");
    let err = env.fails(&["release", "999"]);
    assert!(err.contains("no reservation with id 999"), "{err}");
    assert!(slots(&env).is_empty());

    let bad = Env::new("[systems.gpu]\nmin = 3\nmax = 1\n[autoscaler]\nruntime = \"sim\"\n");
    let err = bad.fails(&["serve"]);
    assert!(err.contains("systems.gpu.min"), "{err}");
}

const LOCAL: &str = r#"
[queues]
default = 2
[queues.train]
concurrency = 1
system = "gpu"
[tasks.nap]
command = ["sleep", "0.3"]
queue = "train"
[systems.gpu]
max = 3
idle_timeout = "1s"
min_lifetime = "1s"
boot_timeout = "30s"
[autoscaler]
runtime = "local"
interval = "200ms"
"#;

/// The local runtime with real processes: a backlog on a system's queue launches `drover
/// worker --slot` processes (never more than the maximum), they drain it, and the idle ones are
/// stopped after the idle time.
#[test]
fn a_backlog_launches_local_workers_that_drain_it_and_stop_when_idle() {
    let env = Env::new(LOCAL);
    let ids: Vec<i64> = (0..12).map(|_| env.enqueue(&["nap"])).collect();
    let _workers = SlotWorkers(&env);
    // The server itself works only `default`: a queue bound to a system is left to its slots.
    let _server = env.spawn("serve", &["serve"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut most = 0;
    loop {
        let now = slots(&env);
        most = most.max(now.len());
        assert!(now.len() <= 3, "past the maximum: {now:?}");
        let done = ids
            .iter()
            .filter(|id| env.job(**id)["state"] == "completed")
            .count();
        if done == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backlog not drained ({done} done): {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Only slot workers serve `train`, so slots were launched and ran the jobs.
    assert!(most >= 1, "no slot was ever seen");
    for id in &ids {
        let owner = env.job(*id)["lease_owner"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            owner.starts_with("local-"),
            "job {id} ran on {owner}, not a slot"
        );
    }
    // Idle: drained and stopped, every worker process gone from the registry.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = slots(&env);
        let workers = env.stats()["processes"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter(|p| p["id"].as_str().unwrap_or_default().starts_with("local-"))
                    .count()
            })
            .unwrap_or(0);
        if now.is_empty() && workers == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "idle workers not stopped: {now:?}, {workers} workers"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let all: Vec<Value> =
        serde_json::from_str::<Value>(&env.ok(&["slots", "list", "--all", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone();
    assert!(!all.is_empty());
    assert!(all.iter().all(|s| s["state"] == "empty"), "{all:?}");
}

/// A slot's worker never leads: it has no autoscaler, so elected it would tick nothing, and no
/// server could take the term from it to stop it. Here the server that launched it stops, the
/// slot worker stays (capacity outlives a server), and a new server becomes leader.
#[test]
fn a_slot_worker_left_by_its_server_never_takes_the_leadership() {
    let config = LOCAL
        .replace("max = 3", "min = 1\nmax = 1")
        .replace("idle_timeout = \"1s\"", "idle_timeout = \"1h\"")
        + "[worker]\nleader_ttl = \"1s\"\n";
    let env = Env::new(&config);
    let _workers = SlotWorkers(&env);
    let mut first = env.spawn("serve", &["serve"]);
    let slot_worker = |stats: &Value| {
        stats["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["id"].as_str().is_some_and(|id| id.starts_with("local-")))
    };
    let deadline = Instant::now() + T;
    while !slot_worker(&env.stats()) {
        assert!(Instant::now() < deadline, "the minimum slot never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    first.signal(nix::sys::signal::Signal::SIGTERM);
    first.wait_exit(T);
    // Its term ended with it: a new server is elected, not the slot worker.
    let _second = env.spawn("serve2", &["serve"]);
    let deadline = Instant::now() + T;
    loop {
        let stats = env.stats();
        let leader = stats["leader"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !leader.starts_with("local-"),
            "the slot worker leads: {stats}"
        );
        if !leader.is_empty() && slot_worker(&stats) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no server became leader: {stats}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A local slot worker killed with SIGKILL leaves its row in the process registry until the
/// leader prunes it (a minute or more): its server, the worker's parent, knows it is gone at
/// once, and its reservation moves to a replacement within a few ticks, not after the prune.
#[test]
fn a_killed_local_slot_worker_is_replaced_without_waiting_for_the_registry() {
    let env = Env::new(&LOCAL.replace("idle_timeout = \"1s\"", "idle_timeout = \"1h\""));
    let _workers = SlotWorkers(&env);
    let _server = env.spawn("serve", &["serve"]);
    let reservation: Value = serde_json::from_str(&env.ok(&[
        "reserve", "--system", "gpu", "--ttl", "10m", "--wait", "--json",
    ]))
    .unwrap();
    let first = reservation["instance_id"].as_str().unwrap().to_owned();
    // Its worker's pid, once it has registered.
    let deadline = Instant::now() + T;
    let pid = loop {
        let stats = env.stats();
        let pid = stats["processes"].as_array().and_then(|processes| {
            processes
                .iter()
                .find(|p| p["id"].as_str().is_some_and(|id| id.starts_with(&first)))
                .and_then(|p| p["pid"].as_i64())
        });
        if let Some(pid) = pid {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the slot worker never registered"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed_at = Instant::now();
    loop {
        let now = slots(&env);
        let held = now
            .iter()
            .find(|s| s["leases"] == 1 && s["state"] == "ready");
        if held.is_some_and(|held| held["instance_id"].as_str() != Some(first.as_str())) {
            break;
        }
        // The registry would have listed the dead worker as ready for 20 s and more.
        assert!(
            killed_at.elapsed() < Duration::from_secs(15),
            "the reservation stayed on the dead worker's slot: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A system no queue is bound to serves reservations only: the local runtime starts a worker
/// that holds the slot and claims no job (it was refused, "no queue is bound", and retried
/// forever).
#[test]
fn a_reservation_only_system_gets_a_local_worker() {
    let env = Env::new(&format!(
        "{LOCAL}\n[systems.lease]\nmax = 1\nidle_timeout = \"1h\"\nboot_timeout = \"30s\"\n"
    ));
    let _workers = SlotWorkers(&env);
    let _server = env.spawn("serve", &["serve"]);
    let reservation: Value = serde_json::from_str(&env.ok(&[
        "reserve", "--system", "lease", "--ttl", "10m", "--wait", "--json",
    ]))
    .unwrap();
    assert_eq!(reservation["phase"], "assigned", "{reservation}");
    let instance = reservation["instance_id"].as_str().unwrap().to_owned();
    let stats = env.stats();
    let worker = stats["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"].as_str().is_some_and(|id| id.starts_with(&instance)))
        .unwrap_or_else(|| panic!("no registered worker for {instance}: {stats}"));
    assert_eq!(worker["queues"], serde_json::json!([]), "{worker}");
}

/// `drover slots interrupt` on a busy local slot: its job is handed back at once (not after
/// its 30 s lease) and a replacement slot finishes it.
#[test]
fn interrupting_a_busy_local_slot_hands_its_job_to_a_replacement() {
    let config = LOCAL
        .replace("sleep\", \"0.3\"", "sleep\", \"4\"")
        .replace("idle_timeout = \"1s\"", "idle_timeout = \"1h\"")
        + "[worker]\nlease = \"30s\"\n";
    let env = Env::new(&config);
    let id = env.enqueue(&["nap"]);
    let _workers = SlotWorkers(&env);
    let _server = env.spawn("serve", &["serve", "--queues", "default"]);
    env.wait_job(id, T, |job| job["state"] == "running");
    // The worker runs the job as soon as it registers; the tick marks its slot ready next.
    let deadline = Instant::now() + T;
    let busy = loop {
        if let Some(ready) = slots(&env).into_iter().find(|s| s["state"] == "ready") {
            break ready;
        }
        assert!(
            Instant::now() < deadline,
            "the busy slot never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let interrupted_at = Instant::now();
    env.ok(&["slots", "interrupt", &busy["id"].to_string()]);
    let job = env.wait_job(id, T, |job| job["state"] == "completed");
    let took = interrupted_at.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}: the job waited for its lease instead of being handed back"
    );
    let history = job["history"].to_string();
    assert!(
        history.to_lowercase().contains("hand"),
        "no hand-back recorded: {history}"
    );
    let now = slots(&env);
    assert!(
        now.iter().all(|s| s["id"] != busy["id"]),
        "the interrupted slot still holds an instance: {now:?}"
    );
}

/// The command runtime with the worked example script (`examples/autoscaler/capacity.sh`):
/// a reservation is answered with the script's instance, whose bootstrap runs a real worker;
/// once released and idle, the script is asked to terminate it.
#[test]
fn the_command_runtime_runs_the_example_script() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/autoscaler/capacity.sh"
    );
    let config = format!(
        r#"
[queues]
default = 1
[queues.train]
system = "gpu"
[systems.gpu]
max = 2
idle_timeout = "1s"
min_lifetime = "1s"
[autoscaler]
runtime = "command"
interval = "200ms"
[autoscaler.command]
launch = ["{script}", "launch"]
terminate = ["{script}", "terminate"]
list = ["{script}", "list"]
timeout = "20s"
env_pass = ["CAPACITY_DIR"]
"#
    );
    let env = Env::new(&config);
    let state = env.path("capacity-state");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_drover"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let _workers = SlotWorkers(&env);
    let mut serve = env.cmd(&["serve", "--queues", "default"]);
    serve
        .env("PATH", &path)
        .env("CAPACITY_DIR", &state)
        .stderr(std::process::Stdio::from(
            std::fs::File::create(env.path("serve.log")).unwrap(),
        ));
    let mut server = common::Worker {
        child: serve.spawn().unwrap(),
        log: env.path("serve.log"),
    };
    server.wait_log("drover is running", T);
    let reservation: Value = serde_json::from_str(&env.ok(&[
        "reserve", "--system", "gpu", "--ttl", "10m", "--wait", "--json",
    ]))
    .unwrap();
    assert_eq!(reservation["phase"], "assigned", "{reservation}");
    let instance = reservation["instance_id"].as_str().unwrap().to_owned();
    assert!(instance.starts_with("i-"), "{instance}");
    assert!(
        state.join(&instance).exists(),
        "the script recorded its instance"
    );
    env.ok(&["release", &reservation["id"].to_string()]);
    let deadline = Instant::now() + T;
    while state.join(&instance).exists() || !slots(&env).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the idle instance was never terminated"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait_exit(T);
}
