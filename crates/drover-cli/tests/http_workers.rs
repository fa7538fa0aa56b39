//! HTTP workers are listed by every server and the CLI, not only by the server they lease
//! through: each server writes the workers it hears from into its process row with its
//! presence heartbeat. Two real `drover serve` processes on one database, on both backends.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::process::Output;
use std::time::Duration;

use common::Env;
use common::api::{Server, serve_args};
use pg::eventually;
use serde_json::{Value, json};

const CONFIG: &str = "[queues]\ndefault = 1\n";

/// The id `server` registered under, found by its pid in another server's process list.
fn process_id(of: &Server, asked: &Server) -> String {
    let pid = of.process.pid().as_raw();
    eventually(Duration::from_secs(20), "the server registers", || {
        let (_, cluster) = asked.get("/api/v1/cluster");
        cluster["processes"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["pid"] == pid))
            .and_then(|p| p["id"].as_str().map(str::to_owned))
            .ok_or_else(|| cluster.to_string())
    })
}

/// `worker` as `cluster` lists it, if it does.
fn listed<'a>(cluster: &'a Value, worker: &str) -> Option<&'a Value> {
    cluster["http_workers"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == worker)
}

/// A worker leases through `a`; `b`, the CLI and `b`'s dashboard list it, with `a` as its
/// server and its running lease.
fn listed_everywhere(a: &Server, b: &Server, cli: &dyn Fn(&[&str]) -> Output) {
    let a_id = process_id(a, b);
    a.ok("/api/v1/jobs", &json!({"kind": "py.task", "queue": "py"}));
    let leased = a.ok(
        "/api/v1/leases",
        &json!({"queues": ["py", "spare"], "worker": "far-worker", "wait": 5}),
    );
    let token = leased["jobs"][0]["token"].as_str().unwrap().to_owned();

    // The other server learns of it from the first one's next heartbeat (every 5 s).
    let worker = eventually(Duration::from_secs(20), "b lists a's worker", || {
        let (_, cluster) = b.get("/api/v1/cluster");
        listed(&cluster, "far-worker")
            .cloned()
            .ok_or_else(|| cluster.to_string())
    });
    assert_eq!(
        (&worker["server"], &worker["queues"], &worker["running"]),
        (&json!(a_id), &json!(["py", "spare"]), &json!(1)),
        "{worker}"
    );
    // The server it talks to lists it once, as it is now.
    let (_, cluster) = a.get("/api/v1/cluster");
    let on_a: Vec<&Value> = cluster["http_workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["name"] == "far-worker")
        .collect();
    assert_eq!(on_a.len(), 1, "{cluster:#}");
    assert_eq!(on_a[0]["server"], json!(a_id));

    let (_, queues) = b.get("/api/v1/queues");
    let py = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "py")
        .unwrap_or_else(|| panic!("{queues:#}"));
    assert_eq!(
        (&py["http_workers"], &py["processes"]),
        (&json!(1), &json!(0))
    );
    let (_, page) = b.get_text("/processes");
    assert!(page.contains("data-http-worker=\"far-worker\""), "{page}");
    let (_, page) = b.get_text("/queues");
    assert!(
        page.contains("1 HTTP"),
        "b counts the queue's worker: {page}"
    );

    let stats = cli(&["stats", "--json"]);
    let stats: Value = serde_json::from_slice(&stats.stdout).expect("stats --json");
    let from_cli = listed(&stats, "far-worker").unwrap_or_else(|| panic!("{stats:#}"));
    assert_eq!(from_cli["server"], json!(a_id));
    // A queue only HTTP workers work, with no job ever counted in it, is known: pausing it
    // warns about no typo (without the HTTP workers it would, as for a queue named "sapre").
    let typo = cli(&["queues", "pause", "sapre"]);
    assert!(String::from_utf8_lossy(&typo.stderr).contains("no process"));
    cli(&["queues", "resume", "sapre"]);
    let pause = cli(&["queues", "pause", "spare"]);
    assert!(pause.status.success());
    let said = String::from_utf8_lossy(&pause.stderr);
    assert!(!said.contains("no process"), "{said}");
    cli(&["queues", "resume", "spare"]);

    a.ok(&format!("/api/v1/leases/{token}/complete"), &json!(null));
    let worker = eventually(Duration::from_secs(20), "b sees the lease end", || {
        let (_, cluster) = b.get("/api/v1/cluster");
        listed(&cluster, "far-worker")
            .filter(|w| w["running"] == 0)
            .cloned()
            .ok_or_else(|| cluster.to_string())
    });
    assert_eq!(worker["server"], json!(a_id));
}

/// The concurrency `queue` has in `server`'s queue list.
fn concurrency(server: &Server, queue: &str) -> Option<u64> {
    let (_, queues) = server.get("/api/v1/queues");
    queues
        .as_array()?
        .iter()
        .find(|q| q["name"] == queue)
        .and_then(|q| q["concurrency"].as_u64())
}

/// A worker killed with SIGKILL leaves its row until the leader prunes it (a minute), but stops
/// counting as working its queue once it has missed its heartbeats.
#[test]
fn a_killed_worker_stops_counting_before_it_is_pruned() {
    let env = Env::new(CONFIG);
    let server = env.serve("serve", &[]);
    let worker = env.spawn(
        "worker",
        &["worker", "--queues", "local", "--concurrency", "4"],
    );
    let pid = worker.pid().as_raw();
    eventually(Duration::from_secs(20), "the worker counts", || {
        let seen = concurrency(&server, "local");
        (seen == Some(4)).then_some(()).ok_or(format!("{seen:?}"))
    });
    worker.signal(nix::sys::signal::Signal::SIGKILL);
    // Within 45 s of the kill, so at most 50 s after its last heartbeat: the pruner removes
    // only rows silent for over 60 s.
    eventually(
        Duration::from_secs(45),
        "the silent worker stops counting",
        || {
            let seen = concurrency(&server, "local").unwrap_or(0);
            (seen == 0).then_some(()).ok_or(format!("{seen}"))
        },
    );
    let (_, cluster) = server.get("/api/v1/cluster");
    assert!(
        cluster["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"] == pid),
        "the silent worker is still listed, with its last heartbeat: {cluster:#}"
    );
}

#[test]
fn http_workers_are_listed_by_every_server_on_sqlite() {
    let env = Env::new(CONFIG);
    let a = env.serve("serve-a", &[]);
    let b = env.serve("serve-b", &[]);
    listed_everywhere(&a, &b, &|args| env.run(args));
}

#[test]
fn http_workers_are_listed_by_every_server_on_postgres() {
    let pg = pg::PgEnv::new(CONFIG);
    let a = Server::start(&pg.env, "serve-a", pg.cmd(&serve_args(&[])), None);
    let b = Server::start(&pg.env, "serve-b", pg.cmd(&serve_args(&[])), None);
    listed_everywhere(&a, &b, &|args| pg.run(args));
}

/// A waiting lease request is answered when a scheduled job comes due, not at the engine's
/// next poll (ten minutes away here) or at the end of its wait.
#[test]
fn a_waiting_lease_request_gets_a_job_as_it_comes_due() {
    let env = Env::new("[worker]\npoll_interval = \"10m\"\n");
    let server = env.serve("serve", &[]);
    let url = format!("{}/api/v1/leases", server.url);
    let waiting = std::thread::spawn(move || {
        Server::answer(
            ureq::post(&url)
                .timeout(Duration::from_secs(40))
                .send_json(json!({"queues": ["due"], "worker": "w", "wait": 30})),
        )
    });
    let job = server.ok(
        "/api/v1/jobs",
        &json!({"kind": "k", "queue": "due", "delay_seconds": 1}),
    );
    let (status, leased) = waiting.join().expect("the lease request");
    assert_eq!(status, 200, "{leased}");
    assert_eq!(leased["jobs"][0]["id"], job["id"], "{leased}");
}

/// An outcome sent through another server than the one that handed out the lease (behind a
/// load balancer, or after a restart) is counted by the server that records it, in its metrics
/// and in the cluster's throughput.
#[test]
fn an_outcome_through_another_server_is_counted_there() {
    let env = Env::new(CONFIG);
    let a = env.serve("serve-a", &[]);
    let b = env.serve("serve-b", &[]);
    a.ok("/api/v1/jobs", &json!({"kind": "k", "queue": "elsewhere"}));
    let leased = a.ok(
        "/api/v1/leases",
        &json!({"queues": ["elsewhere"], "worker": "w", "wait": 5}),
    );
    let token = leased["jobs"][0]["token"].as_str().unwrap().to_owned();
    b.ok(&format!("/api/v1/leases/{token}/complete"), &json!(null));
    let counted = |server: &Server| {
        let (_, text) = server.get_text("/metrics");
        text.lines()
            .filter(|line| line.starts_with("drover_jobs_finished_total{"))
            .filter(|line| line.contains("queue=\"elsewhere\""))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>()
    };
    eventually(Duration::from_secs(20), "b counts the completion", || {
        let seen = counted(&b);
        (seen == 1.0).then_some(()).ok_or(format!("{seen}"))
    });
    assert_eq!(
        counted(&a),
        0.0,
        "only the server that recorded it counts it"
    );
    // The throughput comes from each process's counts, flushed with its heartbeat.
    eventually(Duration::from_secs(20), "the throughput counts it", || {
        let (_, minutes) = a.get("/api/v1/throughput?minutes=5");
        let completed: u64 = minutes
            .as_array()
            .map(|all| all.iter().filter_map(|m| m["completed"].as_u64()).sum())
            .unwrap_or(0);
        (completed == 1).then_some(()).ok_or(minutes.to_string())
    });
}
