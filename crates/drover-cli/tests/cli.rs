//! The command line as a user meets it: enqueue and inspect, bad input refused with nothing
//! stored, invalid config refusing the start, command tasks and hooks, the benchmark's output.

mod common;

use std::time::Duration;

use common::Env;
use nix::sys::signal::Signal;
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

fn total(env: &Env) -> u64 {
    env.stats()["total"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

#[test]
fn enqueue_list_show_retry_cancel() {
    let env = Env::new("");
    let id = env.enqueue(&[
        "report.build",
        "--args",
        r#"{"format":"pdf"}"#,
        "--queue",
        "reports",
        "--priority",
        "-3",
        "--max-attempts",
        "4",
        "--unique-key",
        "r-1",
    ]);
    let job = env.job(id);
    assert_eq!(job["kind"], "report.build");
    assert_eq!(job["queue"], "reports");
    assert_eq!(job["priority"], -3);
    assert_eq!(job["max_attempts"], 4);
    assert_eq!(job["args"]["format"], "pdf");
    assert_eq!(job["state"], "available");

    let dup: Value = serde_json::from_str(&env.ok(&[
        "enqueue",
        "report.build",
        "--unique-key",
        "r-1",
        "--json",
    ]))
    .unwrap();
    assert_eq!(dup["id"], id);
    assert_eq!(dup["duplicate"], true);

    let later = env.enqueue(&["drover.noop", "--delay", "1h"]);
    assert_eq!(env.job(later)["state"], "scheduled");
    let at = env.enqueue(&["drover.noop", "--run-at", "2099-01-01T00:00:00Z"]);
    assert_eq!(env.job(at)["scheduled_at"], "2099-01-01T00:00:00Z");

    let list = env.ok(&["jobs", "list", "--queue", "reports"]);
    assert!(
        list.contains("report.build") && !list.contains("drover.noop"),
        "{list}"
    );
    let listed: Value =
        serde_json::from_str(&env.ok(&["jobs", "list", "--json", "--state", "scheduled"])).unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 2);
    assert!(listed["next"].is_null(), "one page holds both");
    // Paging with the cursor walks every job once, newest first.
    let page: Value =
        serde_json::from_str(&env.ok(&["jobs", "list", "--json", "--limit", "1"])).unwrap();
    let next = page["next"].as_i64().expect("more than one job");
    let rest: Value = serde_json::from_str(&env.ok(&[
        "jobs",
        "list",
        "--json",
        "--limit",
        "1000",
        "--after",
        &next.to_string(),
    ]))
    .unwrap();
    assert!(
        rest["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["id"].as_i64().unwrap() < next)
    );
    let shown = env.ok(&["jobs", "show", &id.to_string()]);
    assert!(shown.contains("attempt           0 of 4"), "{shown}");

    assert!(
        env.ok(&["jobs", "cancel", &id.to_string()])
            .contains("cancelled")
    );
    assert_eq!(env.job(id)["state"], "cancelled");
    assert!(
        env.ok(&["jobs", "cancel", &id.to_string()])
            .contains("already finished")
    );
    assert!(
        env.ok(&["jobs", "retry", &id.to_string()])
            .contains("available again")
    );
    let job = env.job(id);
    assert_eq!(job["state"], "available");
    assert_eq!(
        job["history"].as_array().unwrap().last().unwrap()["event"],
        "operator_retry"
    );

    let stats = env.stats();
    assert_eq!(stats["queues"]["reports"]["available"], 1);
    assert_eq!(stats["queues"]["default"]["scheduled"], 2);
    assert!(
        env.fails(&["jobs", "show", "999"])
            .contains("no job with id 999")
    );
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_nothing_stored() {
    let env = Env::new("[database]\nmax_args_bytes = 64\n");
    env.ok(&["migrate"]);
    let cases: &[(&[&str], &str)] = &[
        (&["enqueue", "bad kind"], "may contain only"),
        (
            &["enqueue", "k", "--args", "[1,2]"],
            "must be a JSON object, got an array",
        ),
        (&["enqueue", "k", "--args", "{oops"], "not valid JSON"),
        (
            &[
                "enqueue",
                "k",
                "--args",
                &format!(r#"{{"a":"{}"}}"#, "x".repeat(100)),
            ],
            "over the limit of 64 bytes",
        ),
        (&["enqueue", "k", "--queue", ""], "invalid queue"),
        (&["enqueue", "k", "--max-attempts", "0"], "--max-attempts"),
        (&["enqueue", "k", "--delay", "soon"], "not a duration"),
        (&["enqueue", "k", "--run-at", "tomorrow"], "RFC 3339"),
        (&["enqueue", "k", "--priority", "99999"], "--priority"),
        (&["jobs", "list", "--state", "sleeping"], "unknown state"),
        (&["jobs", "list", "--limit", "0"], "--limit"),
    ];
    for (args, expected) in cases {
        let err = env.fails(args);
        assert!(
            err.contains(expected),
            "drover {args:?}: expected {expected:?} in {err:?}"
        );
    }
    assert_eq!(total(&env), 0, "nothing was stored");
}

#[test]
fn a_jsonl_file_is_enqueued_whole_or_not_at_all() {
    let env = Env::new("");
    let good: String = (0..2500)
        .map(|i| format!("{{\"kind\":\"drover.noop\",\"args\":{{\"i\":{i}}}}}\n"))
        .collect();
    std::fs::write(env.path("good.jsonl"), &good).unwrap();
    let out: Value =
        serde_json::from_str(&env.ok(&["enqueue", "--file", "good.jsonl", "--json"])).unwrap();
    assert_eq!(out["enqueued"], 2500);
    assert_eq!(total(&env), 2500);

    let bad = "{\"kind\":\"drover.noop\"}\n{\"kind\":\"\"}\nnot json\n{\"kind\":\"k\",\"args\":[1]}\n{\"kind\":\"k\",\"colour\":1}\n{\"kind\":\"k\",\"delay\":\"5s\",\"run_at\":\"2030-01-01T00:00:00Z\"}\n{\"kind\":\"k\",\"args\":{\"s\":\"\\u0000\"}}\n[]\n";
    std::fs::write(env.path("bad.jsonl"), bad).unwrap();
    let err = env.fails(&["enqueue", "--file", "bad.jsonl"]);
    for line in [
        "line 2:", "line 3:", "line 4:", "line 5:", "line 6:", "line 7:",
    ] {
        assert!(err.contains(line), "{line} missing from {err}");
    }
    assert!(
        err.contains("line 8: expected a JSON object like") && err.contains("got an array"),
        "{err}"
    );
    assert!(!err.contains("line 1:"), "{err}");
    // A field of the wrong shape is named, with its column, not serde's "at line 1".
    assert!(err.contains("line 5: colour: unknown field"), "{err}");
    assert!(err.contains("line 3: not valid JSON"), "{err}");
    // A second job on one line is refused, not dropped.
    std::fs::write(
        env.path("glued.jsonl"),
        "{\"kind\":\"drover.noop\"}{\"kind\":\"drover.noop\"}\n",
    )
    .unwrap();
    let glued = env.fails(&["enqueue", "--file", "glued.jsonl"]);
    assert!(
        glued.contains("line 1: more after the job's JSON object"),
        "{glued}"
    );
    assert!(!err.contains("at line 1 column"), "{err}");
    assert!(
        err.contains("7 bad line(s)") && err.contains("nothing was enqueued"),
        "{err}"
    );
    assert_eq!(total(&env), 2500, "none of the bad file was stored");

    // A byte order mark before the first line, and the API's delay_seconds, are taken; a line
    // with two delays is not.
    let api_style = "\u{feff}{\"kind\":\"k\",\"delay_seconds\":3600}\n";
    std::fs::write(env.path("api.jsonl"), api_style).unwrap();
    let out = env.ok(&["enqueue", "--file", "api.jsonl"]);
    assert!(out.starts_with("enqueued 1 job from"), "{out}");
    let two = "{\"kind\":\"k\",\"delay\":\"5s\",\"delay_seconds\":5}\n";
    std::fs::write(env.path("two.jsonl"), two).unwrap();
    let err = env.fails(&["enqueue", "--file", "two.jsonl"]);
    assert!(
        err.contains("give one of delay, delay_seconds and run_at"),
        "{err}"
    );
    assert_eq!(total(&env), 2501);
}

#[test]
fn an_invalid_config_refuses_to_start_and_names_the_key() {
    let cases = [
        ("[worker]\nshutdown_timout = \"5s\"\n", "shutdown_timout"),
        ("[worker]\nlease = \"forever\"\n", "[worker] lease"),
        (
            "[tasks.\"report.build\"]\ntimeout = \"60s\"\n",
            "tasks.\"report.build\".command",
        ),
        (
            "[tasks.\"a\"]\ncommand = [\"true\"]\ndelivery = \"twice\"\n",
            "delivery",
        ),
        ("[queues]\ndefault = 0\n", "queues.default"),
        ("[database]\nsynchronous = \"off\"\n", "synchronous"),
        // Named as the config's key, although DROVER_LISTEN (set here) overrides it.
        ("[http]\nlisten = \"not an addr\"\n", "[http] listen"),
    ];
    for (config, key) in cases {
        let env = Env::new(config);
        let err = env.fails(&["serve"]);
        assert!(
            err.contains(key),
            "config {config:?}: {key:?} not in {err:?}"
        );
        assert!(
            !env.path("drover.db").exists(),
            "the database was not touched"
        );
    }
    let env = Env::new("");
    let err = env.fails(&["--config", "missing.toml", "stats"]);
    assert!(err.contains("missing.toml"), "{err}");
    let err = env.fails(&["--database", "mysql://x", "stats"]);
    assert!(err.contains("unsupported database URL"), "{err}");
    let err = env.fails(&["--database", "jobs.db", "stats"]);
    assert!(err.contains("sqlite://jobs.db"), "{err}");
}

/// A secret under the wrong key is never shown: every check names the key, not the value.
#[test]
fn a_config_error_never_shows_a_value_of_the_file() {
    const SECRET: &str = "postgres://u:S3cret-x@h/db";
    let cases = [
        "[worker]\nlease = \"@\"",
        "[database]\nsslmode = \"@\"",
        "[database]\nsynchronous = \"@\"",
        "[http]\nlisten = \"@\"",
        "[[cron]]\nname = \"a\"\nschedule = \"@\"\nkind = \"k\"",
        "[[cron]]\nname = \"a\"\nschedule = \"* * * * *\"\nkind = \"k\"\ntimezone = \"@\"",
        "[[cron]]\nname = \"a\"\nschedule = \"* * * * *\"\nkind = \"k\"\ncatch_up = \"@\"",
        "[tasks.k]\ncommand = [\"true\"]\ndelivery = \"@\"",
        "[tasks.k]\ncommand = [\"true\"]\nqueue = \"@\"",
        "[tasks.k]\ncommand = [\"true\"]\nenv_pass = [\"@\"]",
        "[[hooks]]\ncommand = [\"true\"]\non = [\"@\"]",
        "[jobs_archive]\nschedule = \"@\"",
        "[autoscaler]\nruntime = \"@\"",
    ];
    for case in cases {
        let env = Env::new(&case.replace('@', SECRET));
        let err = env.fails(&["serve"]);
        assert!(
            !err.to_lowercase().contains("s3cret"),
            "{case}: the value is shown: {err}"
        );
        assert!(
            err.contains("invalid config") || err.contains("listen"),
            "{case}: {err}"
        );
    }
}

#[test]
fn command_tasks_get_args_on_stdin_and_their_failures_are_recorded() {
    let env = Env::new(
        r#"
[worker]
poll_interval = "60s"

[tasks."shell.ok"]
command = ["sh", "-c", "cat > \"out-$DROVER_JOB_ID.json\"; echo \"$DROVER_JOB_KIND $DROVER_JOB_QUEUE $DROVER_JOB_ATTEMPT\" > \"env-$DROVER_JOB_ID.txt\""]

[tasks."shell.fail"]
command = ["sh", "-c", "echo 'disk on fire' >&2; exit 7"]
max_attempts = 2
backoff = "10ms"

[tasks."shell.slow"]
command = ["sh", "-c", "sleep 30 & echo $! > child.pid; wait"]
timeout = "300ms"
max_attempts = 1
kill_grace = "200ms"

[[hooks]]
command = ["sh", "-c", "cat >> hooks.jsonl; echo >> hooks.jsonl"]
"#,
    );
    let _worker = env.spawn("worker", &["worker"]);
    let ok = env.enqueue(&["shell.ok", "--args", r#"{"n":42}"#]);
    let fail = env.enqueue(&["shell.fail"]);
    let slow = env.enqueue(&["shell.slow"]);

    env.wait_job(ok, T, |j| j["state"] == "completed");
    let shown = env.ok(&["jobs", "show", &ok.to_string()]);
    assert!(
        shown.contains("last run by"),
        "a finished job names its process: {shown}"
    );
    let stdin: Value = serde_json::from_str(
        &std::fs::read_to_string(env.path(&format!("out-{ok}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(stdin["n"], 42);
    let vars = std::fs::read_to_string(env.path(&format!("env-{ok}.txt"))).unwrap();
    assert_eq!(vars.trim(), "shell.ok default 1");

    let job = env.wait_job(fail, T, |j| j["state"] == "discarded");
    let errors = job["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["message"], "exited with status 7: disk on fire");

    let job = env.wait_job(slow, T, |j| j["state"] == "discarded");
    assert_eq!(job["errors"][0]["message"], "timed out");
    // The timeout killed the whole process group, the background `sleep 30` included.
    let pid: i32 = std::fs::read_to_string(env.path("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    common::wait_gone(pid, T, "the background sleep, after its job's timeout");

    // Hooks ran once per ended job, with the event on stdin.
    let deadline = std::time::Instant::now() + T;
    let events: Vec<Value> = loop {
        let text = std::fs::read_to_string(env.path("hooks.jsonl")).unwrap_or_default();
        // Hooks run side by side, so two events may share a line: read them as a stream.
        let events: Vec<Value> = serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .collect();
        if events.len() >= 3 || std::time::Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(events.len(), 3, "{events:?}");
    let ended = |id: i64| events.iter().find(|e| e["id"] == id).unwrap()["state"].clone();
    assert_eq!(ended(ok), "completed");
    assert_eq!(ended(fail), "discarded");
    assert_eq!(ended(slow), "discarded");
}

#[test]
fn database_urls_in_errors_never_show_a_password() {
    // No wait for the unreachable server: the wait's own messages are checked in
    // postgres_late.rs.
    let env = Env::new("[database]\nwait_at_start = \"0s\"\n");
    let secret = "hunter2";
    let sqlite = format!("sqlite://{}", env.path("x.db").display());
    let cases = [
        // Unsupported scheme, in userinfo and as an option.
        format!("mysql://u:{secret}@h/db?password={secret}"),
        // SQLite: options it does not know.
        format!("{sqlite}?password={secret}"),
        format!("{sqlite}?sslpassword={secret}"),
        // PostgreSQL that cannot be reached (port 1), a bad one (port out of range), a bad option.
        format!("postgres://u:{secret}@127.0.0.1:1/db?password={secret}&connect_timeout=2"),
        format!("postgres://u:{secret}@127.0.0.1/db?sslpassword={secret}"),
        format!("postgres://u:{secret}@127.0.0.1:99999/db"),
        format!("postgresql://u@127.0.0.1/db?password={secret}&sslmode=sometimes"),
        // Not a URL: a libpq key/value string is not echoed.
        format!("host=127.0.0.1 user=u password={secret}"),
    ];
    for url in &cases {
        for command in [&["migrate"][..], &["stats"], &["worker"]] {
            let out = env
                .cmd(command)
                .env("DROVER_DATABASE_URL", url)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(!out.status.success(), "{url} {command:?}: {text}");
            assert!(!text.contains(secret), "{url} {command:?}: {text}");
            assert!(!text.is_empty(), "{url} {command:?} said why");
        }
    }
    // `--help` names the variable, not its value.
    let help = env
        .cmd(&["serve", "--help"])
        .env("DROVER_DATABASE_URL", &cases[0])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("DROVER_DATABASE_URL"), "{text}");
    assert!(!text.contains(secret), "{text}");
}

/// Every `NAME=` line of an `env` dump.
fn names(dump: &str) -> Vec<&str> {
    dump.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn tasks_and_hooks_get_no_secret_of_the_worker_only_what_is_passed() {
    let env = Env::new(
        r#"
[tasks."env.dump"]
command = ["sh", "-c", "env > task-env.txt"]
env = { REPORTS_DIR = "/srv/r" }
env_pass = ["AWS_REGION"]

[[hooks]]
command = ["sh", "-c", "env > hook-env.tmp && mv hook-env.tmp hook-env.txt"]
env_pass = ["HOOK_ONLY"]
"#,
    );
    // `env.cmd` sets DROVER_DATABASE_URL.
    let url = format!("sqlite://{}", env.path("drover.db").display());
    let mut cmd = env.cmd(&["worker"]);
    cmd.env("DROVER_TOKEN", "t0ken-secret")
        .env("PGPASSWORD", "pg-secret")
        .env("AWS_SECRET_ACCESS_KEY", "aws-secret")
        .env("AWS_REGION", "eu-west-1")
        .env("HOOK_ONLY", "h")
        .env("LC_TIME", "C");
    let _worker = env.spawn_cmd("worker", cmd);
    let id = env.enqueue(&["env.dump"]);
    env.wait_job(id, T, |j| j["state"] == "completed");
    let task = std::fs::read_to_string(env.path("task-env.txt")).unwrap();
    let hook = common::wait_file(&env.path("hook-env.txt"), T);
    for dump in [&task, &hook] {
        for secret in [url.as_str(), "t0ken-secret", "pg-secret", "aws-secret"] {
            assert!(!dump.contains(secret), "{secret} leaked:\n{dump}");
        }
        let names = names(dump);
        for name in ["DROVER_DATABASE_URL", "DROVER_TOKEN", "PGPASSWORD"] {
            assert!(!names.contains(&name), "{name} leaked:\n{dump}");
        }
        assert!(
            names.contains(&"PATH") && names.contains(&"LC_TIME"),
            "{dump}"
        );
        assert!(names.contains(&"DROVER_JOB_ID"), "{dump}");
    }
    assert!(task.contains("AWS_REGION=eu-west-1\n"), "{task}");
    assert!(task.contains("REPORTS_DIR=/srv/r\n"), "{task}");
    assert!(!names(&task).contains(&"HOOK_ONLY"), "{task}");
    assert!(hook.contains("HOOK_ONLY=h\n"), "{hook}");
    assert!(!names(&hook).contains(&"AWS_REGION"), "{hook}");
}

#[test]
fn a_failing_hook_never_changes_the_job() {
    let env = Env::new("[[hooks]]\ncommand = [\"sh\", \"-c\", \"exit 1\"]\n");
    let mut worker = env.spawn("worker", &["worker"]);
    let id = env.enqueue(&["drover.noop"]);
    env.wait_job(id, T, |j| j["state"] == "completed");
    worker.wait_log("job-end hook failed", T);
    assert_eq!(env.job(id)["state"], "completed");
    worker.signal(Signal::SIGTERM);
    assert_eq!(worker.wait_exit(T).code(), Some(0));
}

#[test]
fn migrate_is_idempotent() {
    let env = Env::new("");
    let first = env.ok(&["migrate"]);
    let second = env.ok(&["migrate"]);
    assert!(first.contains("is at schema version "), "{first}");
    assert_eq!(first, second);
}

/// A config written for PostgreSQL, run against a SQLite file, works, and says which of its
/// keys changed nothing.
#[test]
fn postgres_only_settings_on_sqlite_are_named_as_ignored() {
    let env = Env::new("[database]\nsslmode = \"require\"\npool_size = 20\n");
    let out = env.run(&["migrate"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: [database] sslmode, pool_size apply to PostgreSQL only"),
        "{err}"
    );
    let quiet = Env::new("[database]\nsynchronous = \"normal\"\n").run(&["migrate"]);
    assert!(quiet.stderr.is_empty(), "{quiet:?}");
}

#[test]
fn bench_prints_a_table_a_plot_and_json() {
    let env = Env::new("");
    let plot = env.path("bench.svg");
    let small = [
        "bench",
        "--runs",
        "1",
        "--jobs",
        "300",
        "--single-jobs",
        "50",
        "--latency-jobs",
        "20",
        "--processes",
        "2",
    ];
    let mut args = small.to_vec();
    args.extend(["--scenario", "all", "--plot", plot.to_str().unwrap()]);
    let table = env.ok(&args);
    for measure in [
        "enqueue_bulk",
        "enqueue_single",
        "drain",
        "drain_processes",
        "latency",
        "latency_cross",
    ] {
        assert!(table.contains(measure), "{measure} missing from:\n{table}");
    }
    assert!(table.contains("JOBS/S"), "{table}");
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    assert!(svg.contains("<svg"), "{svg}");

    let mut args = small.to_vec();
    args.extend(["--json", "--scenario", "drain"]);
    let json = env.ok(&args);
    let lines: Vec<Value> = json
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 1, "{json}");
    let drain = &lines[0];
    assert_eq!(drain["system"], "drover");
    assert_eq!(drain["backend"], "sqlite");
    assert_eq!(drain["measure"], "drain");
    assert_eq!(drain["n"], 300);
    assert!(drain["jobs_per_sec"].as_f64().unwrap() > 0.0);

    // Steady load: 200 jobs/s for one second, holding their slots 2 ms; then with the rate
    // taken from a drain (half of it).
    let mut args = small.to_vec();
    args.extend([
        "--json",
        "--scenario",
        "steady",
        "--rate",
        "200",
        "--duration",
        "1s",
        "--job-ms",
        "2",
    ]);
    let json = env.ok(&args);
    let steady: Value = serde_json::from_str(json.trim()).expect("one JSON object");
    assert_eq!(steady["measure"], "steady");
    assert_eq!(steady["n"], 200);
    let (p50, p99, max) = (
        steady["p50_ms"].as_f64().unwrap(),
        steady["p99_ms"].as_f64().unwrap(),
        steady["max_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{steady}");
    let mut args = small.to_vec();
    args.extend([
        "--scenario",
        "steady",
        "--duration",
        "300ms",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let table = env.ok(&args);
    assert!(table.contains("steady"), "{table}");
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    assert!(
        svg.contains("steady run 1"),
        "the throughput over time is drawn"
    );
}

/// Commands that only look (at jobs, queues, retention, slots) or act on what exists (a slot, a
/// reservation) do not create a database where none is: a mistyped path would otherwise answer
/// with an empty, new database.
#[test]
fn looking_at_a_database_that_does_not_exist_creates_nothing() {
    let env = Env::new("");
    for command in [
        &["jobs", "list"][..],
        &["jobs", "show", "1"],
        &["stats"],
        &["queues", "list"],
        &["archive", "list"],
        &["slots", "list"],
        &["slots", "drain", "1"],
        &["slots", "interrupt", "1"],
        &["release", "1"],
    ] {
        let err = env.fails(command);
        assert!(err.contains("no database at"), "{command:?}: {err}");
    }
    assert!(!env.path("drover.db").exists());
    // An empty DROVER_CONFIG (as an env file leaves it) is no config given, not an error.
    let out = env
        .cmd(&["jobs", "list"])
        .env("DROVER_CONFIG", "")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no database at"), "{said}");
    // Once it exists, the same commands answer.
    env.ok(&["migrate"]);
    env.ok(&["jobs", "list"]);
    env.ok(&["stats"]);
}

/// A command task or hook that could never start (its program is not where exec looks, its
/// working directory is missing) refuses the start, naming it, rather than failing every job;
/// a task of a queue this process does not work is left alone.
#[test]
fn a_task_that_cannot_start_refuses_the_start_naming_it() {
    for (config, expected) in [
        (
            "[tasks.\"a.b\"]\ncommand = [\"no-such-program-xyz\"]\n",
            "tasks.\"a.b\".command: no executable \"no-such-program-xyz\" on PATH",
        ),
        (
            "[tasks.\"a.b\"]\ncommand = [\"./run.sh\"]\n",
            // Next to the config file, wherever the process starts.
            "run.sh\" at that path",
        ),
        (
            "[tasks.\"a.b\"]\ncommand = [\"true\"]\ncwd = \"/nonexistent-dir\"\n",
            "tasks.\"a.b\".cwd: /nonexistent-dir is not a directory",
        ),
        (
            "[[hooks]]\ncommand = [\"true\"]\n[[hooks]]\ncommand = [\"/no/such/hook\"]\n",
            "hooks[1].command: no executable \"/no/such/hook\" at that path",
        ),
    ] {
        let env = Env::new(config);
        let err = env.fails(&["worker"]);
        assert!(err.contains(expected), "{config}: {err}");
        assert!(
            !env.path("drover.db").exists(),
            "refused before the database"
        );
    }
    let env =
        Env::new("[tasks.\"a.b\"]\ncommand = [\"no-such-program-xyz\"]\nqueue = \"elsewhere\"\n");
    let worker = env.spawn("worker", &["worker", "--queues", "default"]);
    assert!(worker.log().contains("drover is running"));
}

/// A SQLite file this user may not write is refused at start, saying so, rather than opened
/// read-only by SQLite (as it does, quietly) for every claim to fail. As root, who may write
/// anything, the command runs as `nobody` (setpriv, from util-linux).
#[test]
fn a_read_only_database_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new("");
    env.ok(&["migrate"]);
    let db = env.path("drover.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    // The directory stays open to others: the test's user may be dropped to nobody.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // The file is this user's own: its owner says whether this user is root.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&db).unwrap()) == 0;
    let mut cmd = if root {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_drover"));
        cmd
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
    };
    let out = cmd
        .args(["worker", "--database"])
        .arg(format!("sqlite://{}", db.display()))
        .env("DROVER_CONFIG", "/dev/null")
        .current_dir(env.dir.path())
        .output()
        .expect("run drover");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("is read-only for this user"), "{err}");
}

/// A bulk action needs a filter that leaves some job out, or `--all`: an empty `--args` or an
/// empty value narrows nothing and is refused as no filter is.
#[test]
fn a_bulk_action_needs_a_filter_that_narrows_or_all() {
    let env = Env::new("");
    let kept = env.enqueue(&["report.build", "--queue", "keep", "--args", r#"{"n":1}"#]);
    let hit = env.enqueue(&["report.build", "--queue", "drop", "--args", r#"{"n":2}"#]);
    for filter in [vec![], vec!["--args", "{}"]] {
        let mut args = vec!["jobs", "bulk", "discard"];
        args.extend(&filter);
        let said = env.fails(&args);
        assert!(said.contains("--all"), "{filter:?}: {said}");
    }
    // An empty value (an unset variable) is refused even beside a real filter, and even with
    // --all: it would otherwise widen the action to every queue.
    for filter in [
        vec!["--queue", ""],
        vec!["--queue", " ", "--state", "available"],
        vec!["--kind", "", "--all"],
    ] {
        let mut args = vec!["jobs", "bulk", "discard"];
        args.extend(&filter);
        let said = env.fails(&args);
        assert!(said.contains("is empty"), "{filter:?}: {said}");
    }
    assert_eq!(env.job(kept)["state"], "available", "nothing was discarded");
    env.ok(&["jobs", "bulk", "discard", "--args", r#"{"n":2}"#]);
    assert_eq!(env.job(hit)["state"], "discarded");
    assert_eq!(env.job(kept)["state"], "available");
    env.ok(&["jobs", "bulk", "discard", "--all"]);
    assert_eq!(env.job(kept)["state"], "discarded");
}

/// A server whose log reader goes away (`drover serve 2>&1 | head`) keeps running, and still
/// shuts down gracefully: a log line it cannot write is lost, not a panic.
#[test]
fn a_closed_log_pipe_does_not_stop_the_server() {
    use std::io::{BufRead, BufReader};
    let env = Env::new("");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = env
        .cmd(&["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here: every later log line meets a closed pipe.
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let deadline = std::time::Instant::now() + T;
    while ureq::get(&ready).call().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never answered (first line: {first})"
        );
        assert!(child.try_wait().unwrap().is_none(), "the server died");
        std::thread::sleep(Duration::from_millis(50));
    }
    env.enqueue(&["drover.noop"]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "a graceful stop");
}
