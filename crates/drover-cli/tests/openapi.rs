//! The OpenAPI document types what the API answers: no JSON answer is declared as a bare
//! `object`, and the answers of a real `drover serve` to every kind of request validate against
//! the schemas the document declares for them, strictly (an answer field the schema does not
//! declare fails, so a field added to an engine type without its schema, or the other way round,
//! is caught). The schemas are derived from the engine's own types, so this checks the derive
//! and its serde attributes agree.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Env;
use common::api::Server;
use serde_json::{Value, json};

const CONFIG: &str = r#"
[queues]
default = 1

[worker]
lease = "30s"
counts_interval = "100ms"

[[cron]]
name = "nightly"
schedule = "0 3 * * *"
kind = "drover.noop"
queue = "held"

[systems.gpu]
max = 1
idle_timeout = "1h"
reservation_ttl = "45m"

[autoscaler]
runtime = "sim"
interval = "100ms"
"#;

/// Validates each sample answer against its operation's schema for that status, with every
/// object schema closed to undeclared properties; prints one line per failure and exits 1.
const VALIDATE: &str = r#"
import json, sys
import jsonschema

doc, samples = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))

def close(schema):
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            close(value)
    elif isinstance(schema, list):
        for value in schema:
            close(value)

components = doc["components"]
close(components)
failures, untyped = [], []
for path, operations in doc["paths"].items():
    for method, op in operations.items():
        for status, response in op.get("responses", {}).items():
            content = response.get("content", {}).get("application/json")
            schema = (content or {}).get("schema", {})
            bare = {"type": "object"}
            if status.startswith("2") and (schema == bare or schema.get("items") == bare):
                untyped.append(f"{method} {path} {status}")
for sample in samples:
    op = doc["paths"][sample["path"]][sample["method"]]
    response = op["responses"].get(str(sample["status"]))
    if response is None:
        failures.append(f"{sample['method']} {sample['path']}: status {sample['status']} undocumented")
        continue
    schema = dict(response["content"]["application/json"]["schema"])
    close(schema)
    schema["components"] = components
    validator = jsonschema.Draft202012Validator(schema)
    for error in validator.iter_errors(sample["body"]):
        failures.append(f"{sample['method']} {sample['path']} {sample['status']}: "
                        f"{error.message} at {list(error.absolute_path)}")
for line in untyped:
    print("untyped answer:", line)
for line in failures:
    print(line)
sys.exit(1 if failures or untyped else 0)
"#;

/// One answer, with the operation it answers.
struct Sample {
    method: &'static str,
    template: &'static str,
    status: u16,
    body: Value,
}

fn sample(method: &'static str, template: &'static str, answer: (u16, Value)) -> Sample {
    let (status, body) = answer;
    assert!(
        (200..300).contains(&status),
        "{method} {template}: {status} {body}"
    );
    Sample {
        method,
        template,
        status,
        body,
    }
}

/// Drives every kind of answer once and returns them.
fn answers(server: &Server) -> Vec<Sample> {
    let mut out = Vec::new();
    let one = server.post(
        "/api/v1/jobs",
        &json!({"kind": "drover.noop", "queue": "held", "args": {"user": 7}, "unique_key": "k"}),
    );
    let id = one.1["id"].as_i64().unwrap();
    out.push(sample("post", "/api/v1/jobs", one));
    out.push(sample(
        "post",
        "/api/v1/jobs",
        server.post(
            "/api/v1/jobs",
            &json!({"kind": "drover.noop", "queue": "held", "unique_key": "k"}),
        ),
    ));
    out.push(sample(
        "post",
        "/api/v1/jobs/batch",
        server.post(
            "/api/v1/jobs/batch",
            &json!({"jobs": [{"kind": "drover.noop", "queue": "remote", "max_attempts": 1},
                             {"kind": "drover.noop", "queue": "remote"}]}),
        ),
    ));
    out.push(sample(
        "post",
        "/api/v1/jobs/{id}/{action}",
        server.post(&format!("/api/v1/jobs/{id}/cancel"), &json!(null)),
    ));
    out.push(sample(
        "post",
        "/api/v1/jobs/{id}/{action}",
        server.post(&format!("/api/v1/jobs/{id}/retry"), &json!(null)),
    ));
    out.push(sample(
        "post",
        "/api/v1/jobs/actions",
        server.post(
            "/api/v1/jobs/actions",
            &json!({"action": "cancel", "ids": [id, 999999]}),
        ),
    ));

    // A remote worker's round: lease, heartbeat, fail one (errors and history on the job),
    // complete the other in a batch.
    let leased = server.post(
        "/api/v1/leases",
        &json!({"queues": ["remote"], "worker": "w", "max": 2, "wait": 1}),
    );
    let tokens: Vec<String> = leased.1["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["token"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tokens.len(), 2, "{}", leased.1);
    out.push(sample("post", "/api/v1/leases", leased));
    out.push(sample(
        "post",
        "/api/v1/leases/{token}/heartbeat",
        server.post(
            &format!("/api/v1/leases/{}/heartbeat", tokens[0]),
            &json!({"step": "halfway"}),
        ),
    ));
    let asked = server.post("/api/v1/leases/cancel-requests", &json!({"tokens": tokens}));
    assert_eq!(asked.1["cancel_requested"], json!([]), "{}", asked.1);
    out.push(sample("post", "/api/v1/leases/cancel-requests", asked));
    out.push(sample(
        "post",
        "/api/v1/leases/{token}/fail",
        server.post(
            &format!("/api/v1/leases/{}/fail", tokens[0]),
            &json!({"error": "boom", "step": "halfway"}),
        ),
    ));
    out.push(sample(
        "post",
        "/api/v1/leases/complete",
        server.post(
            "/api/v1/leases/complete",
            &json!({"tokens": [tokens[1], tokens[0]]}),
        ),
    ));
    let failed = leased_id(&tokens[0]);
    out.push(sample(
        "get",
        "/api/v1/jobs/{id}",
        server.get(&format!("/api/v1/jobs/{failed}")),
    ));
    let page = server.get("/api/v1/jobs?limit=50");
    assert!(page.1["jobs"].as_array().unwrap().len() >= 3);
    out.push(sample("get", "/api/v1/jobs", page));

    out.push(sample(
        "post",
        "/api/v1/queues/{name}/pause",
        server.post("/api/v1/queues/held/pause", &json!(null)),
    ));
    out.push(sample(
        "post",
        "/api/v1/queues/{name}/resume",
        server.post("/api/v1/queues/held/resume", &json!(null)),
    ));
    // Counted by the leader every 100 ms: wait until the counts are there.
    let queues = eventually(|| {
        let answer = server.get("/api/v1/queues");
        let counted = answer.1.as_array().is_some_and(|qs| {
            qs.iter()
                .any(|q| q["name"] == "held" && !q["counted_at"].is_null())
        });
        counted.then_some(answer)
    });
    out.push(sample("get", "/api/v1/queues", queues));
    let cluster = eventually(|| {
        let answer = server.get("/api/v1/cluster");
        (!answer.1["leader"].is_null()).then_some(answer)
    });
    out.push(sample("get", "/api/v1/cluster", cluster));
    out.push(sample("get", "/api/v1/cron", server.get("/api/v1/cron")));
    out.push(sample(
        "post",
        "/api/v1/cron/{name}/run",
        server.post("/api/v1/cron/nightly/run", &json!(null)),
    ));

    let reserved = server.post(
        "/api/v1/reservations",
        &json!({"system": "gpu", "ttl_seconds": 60, "holder": "openapi"}),
    );
    let reservation = reserved.1["id"].as_i64().unwrap();
    out.push(sample("post", "/api/v1/reservations", reserved));
    // Demand launches a slot (the sim runtime): wait for it, so that a slot is typed too.
    let slots = eventually(|| {
        let answer = server.get("/api/v1/slots?all=true");
        (answer.1.as_array().is_some_and(|s| !s.is_empty())).then_some(answer)
    });
    out.push(sample("get", "/api/v1/slots", slots));
    out.push(sample(
        "get",
        "/api/v1/reservations/{id}",
        server.get(&format!("/api/v1/reservations/{reservation}")),
    ));
    // Only the system: the holder defaults to `api`, the time to live to the system's.
    let defaulted = server.post("/api/v1/reservations", &json!({"system": "gpu"}));
    assert_eq!(defaulted.0, 201, "{}", defaulted.1);
    assert_eq!(defaulted.1["holder"], "api", "{}", defaulted.1);
    let lives = defaulted.1["expires_at"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        - defaulted.1["created_at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap();
    assert_eq!(lives.get_seconds(), 45 * 60, "{}", defaulted.1);
    server.post(
        &format!("/api/v1/reservations/{}/release", defaulted.1["id"]),
        &json!(null),
    );
    // The open ones: the first, not the one just released.
    let open = server.get("/api/v1/reservations?system=gpu");
    let ids: Vec<i64> = open
        .1
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![reservation], "{}", open.1);
    out.push(sample("get", "/api/v1/reservations", open));
    out.push(sample(
        "post",
        "/api/v1/reservations/{id}/release",
        server.post(
            &format!("/api/v1/reservations/{reservation}/release"),
            &json!(null),
        ),
    ));
    out.push(sample("get", "/healthz", server.get("/healthz")));
    out
}

/// Polls `probe` every 50 ms until it gives `Some`, for at most 30 s.
fn eventually<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "not within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn leased_id(token: &str) -> i64 {
    token.split('.').next().unwrap().parse().unwrap()
}

#[test]
fn every_answer_validates_against_its_typed_schema() {
    let env = Env::new(CONFIG);
    let server = env.serve("serve", &[]);
    let samples = answers(&server);
    let (status, doc) = server.get("/api/openapi.json");
    assert_eq!(status, 200);

    // The engine types are components of their own, not inline objects.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "JobRecord",
        "JobState",
        "ActResult",
        "QueueView",
        "ClusterView",
        "CronView",
        "LeasedJob",
        "SlotRecord",
        "ReservationRecord",
        "HealthReport",
        "InsertedJob",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    let states: Vec<&str> = schemas["JobState"]["enum"]
        .as_array()
        .expect("JobState is an enum of strings")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(states.contains(&"available") && states.contains(&"discarded"));

    // A client generated from the document must expect the database to be away sometimes.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let operations = item.as_object().unwrap().iter();
        for (method, operation) in operations.filter(|(key, _)| key.as_str() != "parameters") {
            assert!(
                operation["responses"].get("503").is_some(),
                "{method} {path} does not declare 503"
            );
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let doc_path = dir.path().join("openapi.json");
    let samples_path = dir.path().join("samples.json");
    std::fs::write(&doc_path, doc.to_string()).unwrap();
    let samples: Vec<Value> = samples
        .into_iter()
        .map(
            |s| json!({"method": s.method, "path": s.template, "status": s.status, "body": s.body}),
        )
        .collect();
    std::fs::write(&samples_path, Value::Array(samples).to_string()).unwrap();
    let out = Command::new("python3")
        .args(["-c", VALIDATE])
        .arg(&doc_path)
        .arg(&samples_path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "answers that do not match the OpenAPI document (needs python3-jsonschema, which \
         openapi-spec-validator installs):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the document says of a request is what the server does: the priority range it
/// declares is the one taken, as is max_attempts' (one past it, far past it or not whole is the
/// same 400 naming the field),
/// and the optional bodies are optional (absent, or `null`).
#[test]
fn the_documented_request_rules_are_the_servers() {
    let env = Env::new(CONFIG);
    let server = env.serve("serve", &[]);
    let (_, doc) = server.get("/api/openapi.json");
    let priority = &doc["components"]["schemas"]["EnqueueBody"]["properties"]["priority"];
    let (min, max) = (priority["minimum"].as_i64(), priority["maximum"].as_i64());
    assert_eq!((min, max), (Some(-32768), Some(32767)), "{priority}");
    // A whole number written as a float is that number.
    for (written, stored) in [(json!(1.0), 1), (json!(-0.0), 0), (json!(1e2), 100)] {
        let (status, job) = server.post("/api/v1/jobs", &json!({"kind": "k", "priority": written}));
        assert_eq!(status, 201, "{written}: {job}");
        let (_, got) = server.get(&format!("/api/v1/jobs/{}", job["id"]));
        assert_eq!(got["priority"], json!(stored), "{written}: {got}");
    }
    for ok in [min.unwrap(), max.unwrap()] {
        let (status, job) = server.post("/api/v1/jobs", &json!({"kind": "k", "priority": ok}));
        assert_eq!(status, 201, "{job}");
        let (_, stored) = server.get(&format!("/api/v1/jobs/{}", job["id"]));
        assert_eq!(stored["priority"], json!(ok), "{stored}");
    }
    let attempts = &doc["components"]["schemas"]["EnqueueBody"]["properties"]["max_attempts"];
    let range = (attempts["minimum"].as_i64(), attempts["maximum"].as_i64());
    assert_eq!(range, (Some(1), Some(10_000)), "{attempts}");
    // Past the range, past 64 bits, or not whole: the same 400 naming the field.
    let beyond = || [json!(u64::MAX), json!(1e30), json!(1.5)];
    for (field, bad) in [("priority", json!(32768)), ("priority", json!(-32769))]
        .into_iter()
        .chain(beyond().map(|bad| ("priority", bad)))
        .chain([("max_attempts", json!(0)), ("max_attempts", json!(10_001))])
        .chain(beyond().map(|bad| ("max_attempts", bad)))
    {
        let (status, answer) = server.post("/api/v1/jobs", &json!({"kind": "k", field: bad}));
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (400, Some(field)),
            "{field} {bad}: {answer}"
        );
    }
    for path in [
        "/api/v1/leases/{token}/heartbeat",
        "/api/v1/leases/{token}/complete",
    ] {
        let body = &doc["paths"][path]["post"]["requestBody"];
        assert_ne!(body["required"], true, "{path}: {body}");
    }
}
