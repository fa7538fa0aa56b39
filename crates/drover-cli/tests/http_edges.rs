//! Who and what reaches a real `drover serve` on loopback: the Host check against DNS
//! rebinding and the framing headers, the listen address and its token, which process listens,
//! a lease from a queue the server works itself, and a client too slow with its headers.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::time::{Duration, Instant};

use common::Env;
use common::api::{Server, serve_args};
use serde_json::{Value, json};

/// A web page whose own name resolves to 127.0.0.1 (DNS rebinding) sends Origin and Host that
/// agree with each other: a server without a token refuses every name but the machine's own,
/// and no page may frame the dashboard.
#[test]
fn a_rebinding_page_cannot_reach_a_server_without_a_token() {
    let env = Env::new("");
    let server = env.serve("rebinding", &[]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let evil = format!("evil.example:{port}");
    let as_evil = |request: ureq::Request| {
        request
            .set("Host", &evil)
            .set("Origin", &format!("http://{evil}"))
    };
    let enqueue = as_evil(ureq::post(&format!("{}/api/v1/jobs", server.url)))
        .send_json(json!({"kind": "drover.noop"}));
    let (status, answer) = Server::answer(enqueue);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DNS-rebinding"),
        "{answer}"
    );
    for path in ["/api/v1/jobs", "/jobs", "/metrics"] {
        let (status, _) =
            Server::answer(as_evil(ureq::get(&format!("{}{path}", server.url))).call());
        assert_eq!(status, 403, "{path}");
    }
    let (_, page) = server.get("/api/v1/jobs");
    assert_eq!(page["jobs"], json!([]), "nothing was enqueued");

    // The machine's own names pass, and every answer forbids framing.
    let response = ureq::get(&format!("{}/jobs", server.url))
        .set("Host", &format!("localhost:{port}"))
        .call()
        .unwrap();
    assert_eq!(response.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        response.header("content-security-policy"),
        Some("frame-ancestors 'none'")
    );
}

/// `[http] listen` is `serve`'s: a `worker` on the same config (beside a `serve` that holds
/// the port) serves HTTP only when its command line asks.
#[test]
fn a_worker_serves_http_only_when_its_command_line_asks() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let env = Env::new(&format!("[http]\nlisten = \"{addr}\"\n"));
    let worker = env.spawn("worker", &["worker"]);
    assert!(!worker.log().contains("listening on"), "{}", worker.log());
    assert!(
        !worker.log().contains('\x1b'),
        "a log file gets no colour codes"
    );
    let mut serve = env.cmd(&["serve"]);
    serve.env_remove("DROVER_LISTEN");
    let out = serve.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

/// An HTTP worker leasing from a queue that `serve`'s own workers take jobs from too is warned
/// about in the log, once per queue: those workers discard the kinds they have no task for.
#[test]
fn leasing_from_a_queue_served_locally_is_warned_once() {
    let env = Env::new("");
    let server = env.serve("shared-queue", &[]);
    let lease = |queue: &str| {
        let body = json!({"queues": [queue], "worker": "py-1", "max": 1, "wait": 0});
        let (status, answer) = server.post("/api/v1/leases", &body);
        assert!(status == 200 || status == 204, "{status} {answer}");
    };
    lease("py");
    lease("default");
    lease("default");
    let log = server.process.log();
    let warned = |queue: &str| {
        log.matches(&format!("an HTTP worker leases from queue \"{queue}\""))
            .count()
    };
    assert_eq!(warned("default"), 1, "{log}");
    assert_eq!(warned("py"), 0, "{log}");
}

/// A failure repeated as it was recorded is answered as the first; one that says something
/// else (a discard after a retry, a hand-back after it) is a 409 and changes nothing.
#[test]
fn a_different_failure_for_the_same_lease_is_refused() {
    let env = Env::new("");
    let server = env.serve("repeats", &[]);
    let id = server.ok("/api/v1/jobs", &json!({"kind": "py.task", "queue": "py"}))["id"].clone();
    let body = json!({"queues": ["py"], "worker": "py-1", "wait": 5});
    let token = server.ok("/api/v1/leases", &body)["jobs"][0]["token"].clone();
    let fail = format!("/api/v1/leases/{}/fail", token.as_str().unwrap());
    // Given up on and retried later: contradictory, refused, and the run is still leased.
    let both = json!({"error": "flaky", "retry_in": 5, "discard": true});
    let (status, answer) = server.post(&fail, &both);
    assert_eq!(
        (status, &answer["error"]["field"]),
        (400, &json!("retry_in")),
        "{answer}"
    );
    let retry = json!({"error": "flaky", "retry_in": 3600});
    assert_eq!(server.ok(&fail, &retry)["state"], "retryable");
    assert_eq!(server.ok(&fail, &retry)["repeated"], true);
    let discard = json!({"error": "flaky", "discard": true});
    let hand_back = format!("/api/v1/leases/{}/hand-back", token.as_str().unwrap());
    for (path, body) in [(&fail, discard), (&hand_back, json!(null))] {
        let (status, answer) = server.post(path, &body);
        assert_eq!(status, 409, "{path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("already recorded as retryable"),
            "{answer}"
        );
    }
    let job = server.get(&format!("/api/v1/jobs/{id}")).1;
    assert_eq!(
        (&job["state"], job["errors"].as_array().map(Vec::len)),
        (&json!("retryable"), Some(1))
    );
}

/// A delayed job in a queue no process works (its HTTP workers between requests) is counted as
/// waiting once it is due, not as scheduled: the leader promotes it before counting.
#[test]
fn a_due_job_of_a_queue_nobody_works_counts_as_waiting() {
    let env = Env::new("");
    let server = env.serve("due", &[]);
    let body = json!({"kind": "py.task", "queue": "later", "delay_seconds": 1});
    let id = server.ok("/api/v1/jobs", &body)["id"].clone();
    let later = pg::eventually(Duration::from_secs(20), "counted as waiting", || {
        let (_, queues) = server.get("/api/v1/queues");
        let later = queues
            .as_array()
            .and_then(|q| q.iter().find(|q| q["name"] == "later"));
        let later = later.ok_or_else(|| queues.to_string())?;
        let waiting = later["counts"]["available"] == 1 && later["counts"]["scheduled"] == 0;
        waiting
            .then(|| later.clone())
            .ok_or_else(|| later.to_string())
    });
    assert!(later["oldest_available_age_seconds"].is_number(), "{later}");
    assert_eq!(
        server.get(&format!("/api/v1/jobs/{id}")).1["state"],
        "available"
    );
}

#[test]
fn listening_off_loopback_needs_a_token() {
    let env = Env::new("");
    let err = env.fails(&["serve", "--listen", "0.0.0.0:0"]);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without a token"),
        "{err}"
    );
    let err = env.fails(&["serve", "--listen", "nowhere"]);
    assert!(err.contains("--listen"), "{err}");
    // A host name is resolved (loopback, so no token is needed).
    let named = Server::start(
        &env,
        "named",
        env.cmd(&["serve", "--listen", "localhost:0"]),
        None,
    );
    assert_eq!(named.get("/healthz").0, 200);
    drop(named);
    let out = env
        .cmd(&["serve", "--listen", "0.0.0.0:0"])
        .env("DROVER_TOKEN", "short")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("shorter than 16"));
    // A port in use fails the start, before the engine runs.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = env.fails(&["serve", "--listen", &addr]);
    assert!(err.contains("cannot listen on"), "{err}");
}

/// A server config whose clients have half a second for their headers, and then their body.
const HALF_SECOND: &str = "[http]\nheader_timeout = \"500ms\"\n";

/// A raw connection to `server` (and its address) whose reads give up after 20 s, for a
/// client that sends part of a request and waits.
fn slow_client(server: &Server) -> (std::net::TcpStream, String) {
    let addr = server.url.trim_start_matches("http://").to_owned();
    let slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (slow, addr)
}

/// A client that never finishes its request's headers is cut off after `header_timeout`, and
/// the server goes on answering others.
#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use std::io::{Read, Write};
    let env = Env::new(HALF_SECOND);
    let server = env.serve("serve", &[]);
    let (mut slow, _) = slow_client(&server);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: drover\r\n")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    // The server closes the connection (perhaps after a 408): the read ends instead of timing
    // out.
    slow.read_to_end(&mut answer)
        .expect("the connection is closed, not left waiting");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);
}

/// A body that does not arrive (less than its Content-Length, then nothing) is answered 408
/// within the header timeout, and the server stays responsive meanwhile.
#[test]
fn a_client_that_never_finishes_its_body_is_cut_off() {
    use std::io::{Read, Write};
    let env = Env::new(HALF_SECOND);
    let server = env.serve("serve", &[]);
    let (mut slow, addr) = slow_client(&server);
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{"
    );
    slow.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let mut answer = [0u8; 12];
    slow.read_exact(&mut answer).expect("an answer, not a wait");
    assert_eq!(
        &answer,
        b"HTTP/1.1 408",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(server.get("/healthz").0, 200);
    assert_eq!(
        server.get("/api/v1/jobs").1["jobs"],
        json!([]),
        "nothing was enqueued"
    );
}

#[test]
fn a_token_guards_everything_but_the_probes() {
    let env = Env::new("");
    let token = "t0ken-for-the-test-0123456789";
    let server = Server::start(&env, "serve", env.cmd(&serve_args(&[])), Some(token));
    for client in [
        server.with_token(None),
        server.with_token(Some("wrong-token-0123456789")),
    ] {
        let (status, answer) = client.get("/api/v1/jobs");
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
        let (status, _) = client.get("/metrics");
        assert_eq!(status, 401);
        // A path no route matches is guarded too: no 404 tells what exists.
        let (status, _) = client.get("/api/v1/no-such-thing");
        assert_eq!(status, 401);
        let (status, _) = client.get("/healthz");
        assert_eq!(status, 200, "probes stay open");
    }
    let (status, _) = server.get("/api/v1/jobs");
    assert_eq!(status, 200);
    // With the token, a path no route matches is the JSON 404, counted as `unmatched`.
    let (status, answer) = server.get("/api/v1/no-such-thing");
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"drover_http_requests_total{route="unmatched",status="404"} 1"#),
        "{metrics}"
    );
    // The scheme's name is case-insensitive; a wrong token is told apart from a missing one.
    let answer = Server::answer(
        ureq::get(&format!("{}/api/v1/jobs", server.url))
            .set("Authorization", &format!("bearer {token}"))
            .call(),
    );
    assert_eq!(answer.0, 200, "{:?}", answer.1);
    let (_, wrong) = server
        .with_token(Some("wrong-token-0123456789"))
        .get("/api/v1/jobs");
    assert!(
        wrong["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not the server's")),
        "{wrong}"
    );
    // A body declared over the limit is refused at once, before it is sent.
    let answer = Server::answer(
        ureq::post(&format!("{}/api/v1/jobs", server.url))
            .set("Authorization", &format!("Bearer {token}"))
            .set("Content-Type", "application/json")
            .set("Content-Length", "99999999999")
            .timeout(Duration::from_secs(10))
            .send_bytes(b"{}"),
    );
    assert_eq!(
        (answer.0, answer.1["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{:?}",
        answer.1
    );
    // A batch over 10,000 jobs (within the default 2 MiB body limit) is refused whole.
    let too_many: Vec<Value> = (0..10_001).map(|_| json!({"kind": "a"})).collect();
    let (status, answer) = server.post("/api/v1/jobs/batch", &json!({"jobs": too_many}));
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (413, Some("jobs")),
        "{answer}"
    );
    let (_, page) = server.get("/api/v1/jobs");
    assert!(
        page["jobs"].as_array().unwrap().is_empty(),
        "nothing stored"
    );
    let (status, _) = server.get("/readyz");
    assert_eq!(status, 200);
    assert!(
        !server.process.log().contains(token),
        "the token never appears in the log"
    );
    // A browser page on another site cannot act, token or not.
    let answer = Server::answer(
        ureq::post(&format!("{}/api/v1/queues/default/pause", server.url))
            .set("Authorization", &format!("Bearer {token}"))
            .set("Origin", "https://evil.example")
            .call(),
    );
    assert_eq!(answer.0, 403);
}

/// A pause takes effect for a queue nobody knows yet (it may be filled paused), but a typo
/// would leave the real queue running: the answer carries a note naming the queues in use, and
/// no note for a queue the server works.
#[test]
fn a_pause_of_a_queue_nobody_knows_says_so() {
    let env = Env::new("[queues]\nmail = 2\n[worker]\ncounts_interval = \"100ms\"\n");
    let server = env.serve("pause-note", &[]);
    let typo = pg::eventually(Duration::from_secs(20), "a note", || {
        let (status, answer) = server.post("/api/v1/queues/mial/pause", &json!(null));
        let note = answer["note"].as_str().unwrap_or_default();
        (status == 200 && note.contains("mail"))
            .then_some(answer.clone())
            .ok_or(format!("{status} {answer}"))
    });
    assert_eq!(typo["paused"], true, "the pause took effect: {typo}");
    assert!(
        typo["note"].as_str().unwrap().contains("check the name"),
        "{typo}"
    );
    // Once the counter has written the paused typo's zeros, it is still no queue in use.
    pg::eventually(Duration::from_secs(20), "the typo counted", || {
        let (_, queues) = server.get("/api/v1/queues");
        let counted = queues
            .as_array()
            .into_iter()
            .flatten()
            .any(|q| q["name"] == "mial" && !q["counted_at"].is_null());
        counted.then_some(()).ok_or(queues.to_string())
    });
    let (_, again) = server.post("/api/v1/queues/mial/pause", &json!(null));
    assert!(again["note"].as_str().is_some(), "{again}");
    let (status, known) = server.post("/api/v1/queues/mail/pause", &json!(null));
    assert_eq!((status, &known["paused"]), (200, &json!(true)), "{known}");
    assert!(
        known.get("note").is_none(),
        "a queue in use gets no note: {known}"
    );
}

/// A body of the wrong shape names the field at fault, however deep: a wrong type, an unknown
/// field, a missing one. Text that is no JSON at all is the body's fault.
#[test]
fn a_body_of_the_wrong_shape_names_its_field() {
    let env = Env::new("");
    let server = env.serve("fields", &[]);
    for (path, body, field) in [
        (
            "/api/v1/jobs",
            json!({"kind": "a", "priority": "high"}),
            "priority",
        ),
        ("/api/v1/jobs", json!({"kind": "a", "colour": 1}), "colour"),
        ("/api/v1/jobs", json!({"args": {}}), "kind"),
        (
            "/api/v1/jobs",
            json!({"kind": "a", "delay_seconds": "5m"}),
            "delay_seconds",
        ),
        (
            "/api/v1/jobs/batch",
            json!({"jobs": [{"kind": "a"}, {"kind": 5}]}),
            "jobs[1].kind",
        ),
        (
            "/api/v1/jobs/batch",
            json!({"jobs": [{"kind": "a"}, {"args": {}}]}),
            "jobs[1].kind",
        ),
        (
            "/api/v1/jobs/batch",
            json!({"jobs": [{"kind": "a", "zz": 1}]}),
            "jobs[0].zz",
        ),
    ] {
        let (status, answer) = server.post(path, &body);
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (422, Some(field)),
            "{path} {body}: {answer}"
        );
    }
    for (text, field) in [
        ("{nope", "body"),
        ("", "body"),
        (r#"{"kind": "a", "priority": 1e400}"#, "priority"),
    ] {
        let (status, answer) = server.post_raw("/api/v1/jobs", "application/json", text.as_bytes());
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (400, Some(field)),
            "{text}: {answer}"
        );
    }
    // A key given twice is named too; a compressed body is refused as such, not as garbage.
    let (status, answer) = server.post_raw(
        "/api/v1/jobs",
        "application/json",
        br#"{"kind": "a", "kind": "b"}"#,
    );
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("kind")),
        "{answer}"
    );
    let (status, answer) = Server::answer(
        ureq::post(&format!("{}/api/v1/jobs", server.url))
            .set("Content-Type", "application/json")
            .set("Content-Encoding", "gzip")
            .send_bytes(&[0x1f, 0x8b, 8, 0]),
    );
    assert_eq!(status, 415, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gzip"),
        "{answer}"
    );
    // What the engine refuses in a batch is named by the job's place too, the first included.
    for (jobs, field) in [
        (json!([{"kind": "a"}, {"kind": ""}]), "jobs[1].kind"),
        (
            json!([{"kind": "a", "priority": 40000}]),
            "jobs[0].priority",
        ),
        (
            json!([{"kind": "a"}, {"kind": "b", "queue": "bad q"}]),
            "jobs[1].queue",
        ),
    ] {
        let (status, answer) = server.post("/api/v1/jobs/batch", &json!({"jobs": jobs}));
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (400, Some(field)),
            "{jobs}: {answer}"
        );
    }
    // serde reads a struct from an array, field by field: every body is an object or nothing.
    for (path, body) in [
        (
            "/api/v1/jobs",
            json!([
                "drover.noop",
                {},
                "arrays",
                5,
                2,
                null,
                null,
                "k",
                "at-most-once"
            ]),
        ),
        (
            "/api/v1/jobs/batch",
            json!([[["drover.noop", {}, "arrays", 0, 1, null, null, null, null]]]),
        ),
        ("/api/v1/leases", json!([["arrays"], "w", 1, 0])),
        ("/api/v1/jobs/actions", json!(["discard", [1], null, false])),
        ("/api/v1/jobs", json!([1])),
    ] {
        let (status, answer) = server.post(path, &body);
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (422, Some("body")),
            "{path} {body}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("expected a JSON object"), "{message}");
    }
    let (_, page) = server.get("/api/v1/jobs");
    assert_eq!(page["jobs"], json!([]), "nothing was enqueued");
}

/// A route that acts on what its path names takes no body: nothing, `null` or `{}` pass, and
/// anything else is refused before it acts, rather than ignored while its sender thinks it
/// counted.
#[test]
fn a_body_sent_to_a_route_that_takes_none_is_refused() {
    let env = Env::new("");
    let server = env.serve("no-body", &[]);
    let id = server.ok("/api/v1/jobs", &json!({"kind": "a", "delay_seconds": 3600}))["id"]
        .as_i64()
        .unwrap();
    let send = |path: &str, body: &str| server.post_raw(path, "application/json", body.as_bytes());
    for body in ["garbage{", r#"{"reason": "maintenance"}"#, "[]"] {
        let (status, answer) = send("/api/v1/queues/default/pause", body);
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (400, Some("body")),
            "{body}"
        );
        let (status, _) = send(&format!("/api/v1/jobs/{id}/cancel"), body);
        assert_eq!(status, 400, "{body}");
    }
    let (_, queues) = server.get("/api/v1/queues");
    let paused = queues
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["paused"] == true);
    assert!(!paused, "no queue was paused: {queues}");
    assert_eq!(
        env.job(id)["state"],
        "scheduled",
        "the job was not cancelled"
    );
    for body in ["", "null", "{}"] {
        let (status, answer) = send("/api/v1/queues/default/pause", body);
        assert_eq!(status, 200, "{body:?}: {answer}");
    }
}

/// A batch whose every job matched an unfinished one by its unique key made nothing new: 200,
/// as a duplicate single enqueue answers; one that made a job is 201. A body of the wrong
/// shape is said in JSON's words, not Rust's, and an args filter that is not an object is
/// refused.
#[test]
fn a_batch_of_duplicates_only_answers_200() {
    let env = Env::new("");
    let server = env.serve("serve", &[]);
    let batch = json!({"jobs": [
        {"kind": "k", "queue": "held", "unique_key": "u-1", "delay_seconds": 3600}
    ]});
    let (first, _) = server.post("/api/v1/jobs/batch", &batch);
    let (again, answer) = server.post("/api/v1/jobs/batch", &batch);
    assert_eq!((first, again), (201, 200), "{answer}");
    assert_eq!(answer["duplicates"], 1, "{answer}");
    let (status, refused) = server.post("/api/v1/jobs", &json!([]));
    assert_eq!(status, 422, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("expected a JSON object"), "{refused}");
    assert!(!message.contains("struct"), "{refused}");
    // Args are always an object: a filter that is not one would match nothing, silently.
    let (status, refused) = server.get("/api/v1/jobs?args=%5B1%5D");
    assert_eq!(
        (status, &refused["error"]["field"]),
        (400, &json!("args")),
        "{refused}"
    );
}

/// Query numbers out of range say the range of their parameter: a limit is 1 or more, a page
/// cursor a job id (0 or more).
#[test]
fn a_query_number_out_of_range_says_its_range() {
    let env = Env::new("");
    let server = env.serve("query-ranges", &[]);
    for (path, said) in [
        (
            "/api/v1/jobs?limit=-1",
            "limit: not a whole number of 1 or more",
        ),
        ("/api/v1/jobs?after=-5", "after: -5 is not a job id"),
        (
            "/api/v1/jobs?after=x",
            "after: not a whole number of 0 or more",
        ),
    ] {
        let (status, answer) = server.get(path);
        assert_eq!(status, 400, "GET {path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(said), "GET {path}: {answer}");
    }
}
