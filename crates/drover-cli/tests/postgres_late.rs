//! A PostgreSQL server that comes up after `drover worker` starts (a host that boots Drover
//! first, a compose file that starts both at once): the worker waits for it, saying why, then
//! works. The "late server" is a TCP forwarder to the real test server, opened only once the
//! worker has said it is waiting.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Worker;
use pg::PgEnv;

/// `url` with its `host:port` replaced by `addr`.
fn via(url: &str, addr: &str) -> String {
    let (scheme_user, rest) = url.split_once('@').expect("a URL with user@host");
    let tail = rest.find(['/', '?']).map_or("", |at| &rest[at..]);
    format!("{scheme_user}@{addr}{tail}")
}

/// The `host:port` of `url`.
fn host_port(url: &str) -> String {
    let rest = url.split_once('@').expect("a URL with user@host").1;
    rest[..rest.find(['/', '?']).unwrap_or(rest.len())].to_owned()
}

/// A free port, closed again: nothing listens there until a test opens it.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Copies bytes one way until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// Forwards every connection to `listener` to `target`, in threads of its own.
fn forward(listener: TcpListener, target: String) {
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pipe(client, server));
            std::thread::spawn(move || pipe(s2, c2));
        }
    });
}

#[test]
fn a_worker_waits_for_a_database_that_comes_up_after_it() {
    let pg = PgEnv::new("[queues]\ndefault = 1\n");
    let port = free_port();
    // A password in the URL (the test server trusts, and ignores it) must stay out of the
    // wait's messages.
    let late = via(&pg.url, &format!("127.0.0.1:{port}")).replacen('@', ":hunter2@", 1);
    let mut cmd = pg.cmd(&["worker"]);
    cmd.env("DROVER_DATABASE_URL", &late).stdout(Stdio::null());
    let worker = Worker::start(cmd, pg.path("worker.log"));
    worker.wait_log("cannot reach the database yet", Duration::from_secs(20));
    assert!(
        !worker.log().contains("drover is running"),
        "{}",
        worker.log()
    );

    forward(
        TcpListener::bind(("127.0.0.1", port)).expect("the port is still free"),
        host_port(&pg.url),
    );
    worker.wait_log("drover is running", Duration::from_secs(30));
    assert!(!worker.log().contains("hunter2"), "{}", worker.log());
    let id = pg.enqueue(&["drover.noop"]);
    pg::eventually(Duration::from_secs(30), "the job runs", || {
        let job = pg.job(id);
        (job["state"] == "completed")
            .then_some(())
            .ok_or_else(|| format!("{job}\n{}", worker.log()))
    });
}

#[test]
fn a_wrong_database_url_still_fails_at_once() {
    let pg = PgEnv::new("");
    // A database that does not exist is no passing outage: no wait.
    let missing = pg.url.replacen("/test", "/no_such_database_here", 1);
    let started = Instant::now();
    let out = pg
        .cmd(&["worker"])
        .env("DROVER_DATABASE_URL", &missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no_such_database_here"), "{said}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it failed after {:?}",
        started.elapsed()
    );
}

/// A server that never comes: the worker tries until `wait_at_start` has passed, the last try
/// at its end (the pauses between tries double, and the last is cut to fit), then gives up
/// saying how long it waited.
#[test]
fn a_worker_waits_as_long_as_wait_at_start_says() {
    let pg = PgEnv::new("[database]\nwait_at_start = \"3s\"\n");
    let nowhere = via(&pg.url, &format!("127.0.0.1:{}", free_port()));
    let started = Instant::now();
    let out = pg
        .cmd(&["worker"])
        .env("DROVER_DATABASE_URL", &nowhere)
        .output()
        .unwrap();
    let waited = started.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("gave up waiting for the database after 3s"),
        "{said}"
    );
    assert!(
        waited >= Duration::from_secs(3),
        "gave up after {waited:?}: {said}"
    );
}

/// SIGINT ends the wait at once, with the status a shell gives a command the signal stopped.
#[test]
fn sigint_ends_the_wait_with_status_130() {
    let pg = PgEnv::new("");
    let port = free_port();
    let mut cmd = pg.cmd(&["worker"]);
    cmd.env(
        "DROVER_DATABASE_URL",
        via(&pg.url, &format!("127.0.0.1:{port}")),
    )
    .stdout(Stdio::null());
    let mut worker = Worker::start(cmd, pg.path("worker.log"));
    worker.wait_log("cannot reach the database yet", Duration::from_secs(20));
    worker.signal(nix::sys::signal::Signal::SIGINT);
    let status = worker.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{}", worker.log());
    assert!(
        worker
            .log()
            .contains("interrupted while waiting for the database"),
        "{}",
        worker.log()
    );
}
