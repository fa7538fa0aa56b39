//! Cron and the retention archiver through the real binary on a real SQLite file: schedules
//! validated at start, each fire time enqueued once while leaders are killed, rows conserved
//! when the archiver is killed mid-run, and unsafe or mismatched tables refused.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::Env;
use nix::sys::signal::Signal;
use rusqlite::Connection;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

fn db(env: &Env) -> Connection {
    let conn = Connection::open(env.path("drover.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

#[test]
fn a_bad_schedule_refuses_the_start_naming_it() {
    let cases = [
        (
            "[[cron]]\nname = \"nightly-report\"\nschedule = \"0 3 * *\"\nkind = \"report.build\"\n",
            "nightly-report",
        ),
        (
            "[[cron]]\nname = \"nightly-report\"\nschedule = \"0 3 * * *\"\nkind = \"report.build\"\ntimezone = \"Europe/Atlantis\"\n",
            // Named by its key, not quoted: no value of the file is (see config_errors).
            "unknown time zone",
        ),
        (
            "[[cron]]\nname = \"x\"\nschedule = \"0 3 * * *\"\nkind = \"k\"\ncatch_up = \"sometimes\"\n",
            "unknown catch_up",
        ),
        (
            "[[cron]]\nname = \"x\"\nschedule = \"0 3 * * *\"\nkind = \"k\"\nargs = 5\n",
            "args",
        ),
    ];
    for (config, expected) in cases {
        let env = Env::new(config);
        let err = env.fails(&["serve"]);
        assert!(err.contains(expected), "{config}: {err}");
        assert!(err.contains("cron"), "{err}");
        assert!(!env.path("drover.db").exists());
    }
    // Args the kind's task refuses: named as the file's other errors are, the value cut out.
    let env = Env::new(
        "[[cron]]\nname = \"x\"\nschedule = \"0 3 * * *\"\nkind = \"drover.sleep\"\nargs = { ms = \"supersecretvalue\" }\n",
    );
    let err = env.fails(&["serve"]);
    assert!(err.contains("invalid config "), "{err}");
    assert!(err.contains("drover.sleep takes"), "{err}");
    assert!(!err.contains("supersecretvalue"), "{err}");
    assert!(!err.contains("invalid configuration"), "{err}");
}

/// A schedule this process would discard every fire of (its queue is worked here, with no task
/// for its kind: a typo) refuses the start; one sent to a queue worked elsewhere starts with a
/// warning.
#[test]
fn a_schedule_whose_jobs_would_be_discarded_refuses_the_start() {
    let cron = "[[cron]]\nname = \"nightly\"\nschedule = \"0 3 * * *\"\nkind = \"report.biuld\"\n";
    let env = Env::new(cron);
    let err = env.fails(&["serve"]);
    assert!(err.contains("cron \"nightly\""), "{err}");
    assert!(err.contains("discarded as an unknown kind"), "{err}");

    let env = Env::new(&format!("{cron}queue = \"reports\"\n"));
    let serve = env.spawn("serve", &["serve"]);
    assert!(
        serve.log().contains("which has no task in this process"),
        "{}",
        serve.log()
    );
}

#[test]
fn cron_list_shows_last_and_next_fire() {
    let env = Env::new(
        "[tasks.\"report.build\"]\ncommand = [\"true\"]\nqueue = \"reports\"\n\n[[cron]]\nname = \"nightly\"\nschedule = \"0 3 * * *\"\nkind = \"report.build\"\ntimezone = \"Europe/Berlin\"\nargs = { format = \"pdf\" }\n",
    );
    let rows: Value = serde_json::from_str(&env.ok(&["cron", "list", "--json"])).unwrap();
    let row = &rows[0];
    assert_eq!(row["name"], "nightly");
    assert_eq!(row["queue"], "reports", "the queue of the kind's task");
    assert_eq!(row["timezone"], "Europe/Berlin");
    assert!(row["last_fire_at"].is_null());
    let next: jiff::Timestamp = row["next_fire_at"].as_str().unwrap().parse().unwrap();
    let berlin = next.to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap());
    assert_eq!((berlin.hour(), berlin.minute()), (3, 0));
    let listed = env.ok(&["cron", "list"]);
    assert!(listed.contains("nightly"), "{listed}");
    assert!(listed.contains("no process leads now"), "{listed}");
    assert!(row["leader_fires"].is_null(), "{row}");

    // A leader whose config lacks the schedule does not fire it: the list says so (each
    // leader fires its own config's schedules), and says when one that has it leads.
    std::fs::write(env.path("bare.toml"), "").unwrap();
    let mut cmd = env.cmd(&["worker"]);
    cmd.env("DROVER_CONFIG", env.path("bare.toml"));
    let mut bare = env.spawn_cmd("bare", cmd);
    bare.wait_log("elected leader", T);
    let row = leader_fires_known(&env);
    assert_eq!(row["leader_fires"], false, "{row}");
    let listed = env.ok(&["cron", "list"]);
    assert!(
        listed.contains("the process that leads now does not fire nightly"),
        "{listed}"
    );
    bare.signal(Signal::SIGTERM);
    bare.wait_exit(T);
    let worker = env.spawn("worker", &["worker"]);
    worker.wait_log("elected leader", T);
    assert_eq!(leader_fires_known(&env)["leader_fires"], true);
    let listed = env.ok(&["cron", "list"]);
    assert!(!listed.contains("does not fire"), "{listed}");
}

/// The first schedule of `cron list --json` once it says whether the leader fires it (the
/// leader's row lists its schedules from its first heartbeat on).
fn leader_fires_known(env: &Env) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let rows: Value = serde_json::from_str(&env.ok(&["cron", "list", "--json"])).unwrap();
        if !rows[0]["leader_fires"].is_null() {
            return rows[0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "never known: {rows}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_fire_time_is_enqueued_once_while_leaders_are_killed() {
    let env = Env::new(
        r#"
[worker]
leader_ttl = "1s"

[[cron]]
name = "tick"
schedule = "* * * * * *"
kind = "drover.noop"
catch_up = "all"
"#,
    );
    let mut workers = vec![env.spawn("w0", &["worker"]), env.spawn("w1", &["worker"])];
    let mut spawned = 2;
    let watch = db(&env);
    let fired = || -> i64 {
        watch
            .query_row(
                "SELECT count(*) FROM drover_cron_fires WHERE schedule = 'tick'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    // Waits until the schedule fired twice more than `since`, under a leader among `workers`;
    // returns the fire count and the leader's pid.
    let fired_twice_more = |since: i64, workers: &[common::Worker]| -> (i64, u32) {
        let deadline = std::time::Instant::now() + T;
        loop {
            let now = fired();
            let leader = env.stats()["leader"]["pid"].as_u64().map(|p| p as u32);
            if let Some(pid) = leader.filter(|p| workers.iter().any(|w| w.child.id() == *p))
                && now >= since + 2
            {
                return (now, pid);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cron stalled at {now} fires"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Kill whoever leads, three times, each once cron has been seen firing under it.
    let mut kills = 0;
    let mut seen = 0;
    for _ in 0..3 {
        let (now, pid) = fired_twice_more(seen, &workers);
        seen = now;
        if kills == 0 {
            let listed = env.ok(&["cron", "list"]);
            assert!(!listed.contains("no process leads"), "{listed}");
        }
        let i = workers.iter().position(|w| w.child.id() == pid).unwrap();
        let mut leader = workers.remove(i);
        leader.signal(Signal::SIGKILL);
        leader.wait_exit(T);
        kills += 1;
        workers.push(env.spawn(&format!("w{spawned}"), &["worker"]));
        spawned += 1;
    }
    // And the survivors keep firing.
    fired_twice_more(seen, &workers);
    assert_eq!(kills, 3, "every kill hit a leader");
    for worker in &workers {
        worker.signal(Signal::SIGTERM);
    }
    for worker in &mut workers {
        worker.wait_exit(T);
    }

    let conn = db(&env);
    let fires: Vec<(String, Option<i64>)> = conn
        .prepare("SELECT fire_at, job_id FROM drover_cron_fires WHERE schedule = 'tick' ORDER BY fire_at")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(fires.len() >= 8, "fired {} times", fires.len());
    let jobs: i64 = conn
        .query_row(
            "SELECT count(*) FROM drover_jobs WHERE kind = 'drover.noop'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(jobs as usize, fires.len(), "one job per fire time, no more");
    let distinct: BTreeSet<_> = fires.iter().filter_map(|f| f.1).collect();
    assert_eq!(distinct.len(), fires.len(), "every fire has its own job");
    // No second between the first and the last fire is missing (catch_up = all).
    let times: Vec<jiff::Timestamp> = fires.iter().map(|f| f.0.parse().unwrap()).collect();
    for pair in times.windows(2) {
        assert_eq!(
            pair[1].duration_since(pair[0]),
            jiff::SignedDuration::from_secs(1),
            "gap between {} and {}",
            pair[0],
            pair[1]
        );
    }
}

const USAGE_TABLES: &str = "
CREATE TABLE usage_details (id INTEGER PRIMARY KEY, account TEXT NOT NULL,
    completed_at TEXT, created_at TEXT NOT NULL);
CREATE INDEX usage_completed ON usage_details (completed_at);
CREATE INDEX usage_created ON usage_details (created_at);
CREATE TABLE usage_details_archive (id INTEGER PRIMARY KEY, account TEXT NOT NULL,
    completed_at TEXT, created_at TEXT NOT NULL);
";

const USAGE_POLICY: &str = r#"
[jobs_archive]
enabled = false

[[retention]]
name = "usage"
table = "usage_details"
archive_table = "usage_details_archive"
age_column = "completed_at"
fallback_column = "created_at"
months = 13
batch_size = 1000
schedule = "0 2 * * *"
"#;

fn counts(conn: &Connection) -> (i64, i64, i64) {
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    (
        count("SELECT count(*) FROM usage_details"),
        count("SELECT count(*) FROM usage_details_archive"),
        count("SELECT count(*) FROM usage_details h JOIN usage_details_archive a USING (id)"),
    )
}

#[test]
fn archive_run_moves_old_rows_including_legacy_ones_by_the_fallback() {
    let env = Env::new(USAGE_POLICY);
    env.ok(&["migrate"]);
    let conn = db(&env);
    conn.execute_batch(USAGE_TABLES).unwrap();
    // 13 months before now: rows from 2020 go, rows from the future stay; a legacy row with no
    // completed_at goes by its created_at; an open row with a recent created_at stays.
    conn.execute_batch(
        "INSERT INTO usage_details VALUES
           (1, 'a', '2020-01-31T10:00:00.000000Z', '2020-01-01T00:00:00.000000Z'),
           (2, 'a', '2020-02-29T10:00:00Z',        '2020-01-01T00:00:00Z'),
           (3, 'b', NULL,                          '2019-06-01T00:00:00Z'),
           (4, 'b', NULL,                          '2999-01-01T00:00:00Z'),
           (5, 'c', '2999-01-01T00:00:00Z',        '2020-01-01T00:00:00Z');",
    )
    .unwrap();
    let out: Value = serde_json::from_str(&env.ok(&["archive", "run", "--json"])).unwrap();
    assert_eq!(out[0]["policy"], "usage");
    assert_eq!(out[0]["rows"], 3);
    let left: Vec<i64> = conn
        .prepare("SELECT id FROM usage_details ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, vec![4, 5]);
    assert_eq!(counts(&conn), (2, 3, 0));
    // Idempotent.
    let again: Value = serde_json::from_str(&env.ok(&["archive", "run", "--json"])).unwrap();
    assert_eq!(again[0]["rows"], 0);
    let err = env.fails(&["archive", "run", "--policy", "nope"]);
    assert!(err.contains("usage"), "{err}");
}

#[test]
fn rows_are_conserved_when_the_archiver_is_killed_mid_run() {
    let env = Env::new(&USAGE_POLICY.replace("batch_size = 1000", "batch_size = 500"));
    env.ok(&["migrate"]);
    let conn = db(&env);
    conn.execute_batch(USAGE_TABLES).unwrap();
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
         INSERT INTO usage_details SELECT i, 'acct', '2020-01-01T00:00:00.000000Z',
             '2020-01-01T00:00:00.000000Z' FROM n;",
    )
    .unwrap();
    // Each run is killed once it has been seen moving rows (a positive signal, not a guess at
    // its timing); a kill counts as mid-run when rows were left on both sides.
    let mut interrupted_mid_run = 0;
    for round in 0..3 {
        let (_, before, _) = counts(&conn);
        let mut child = env
            .cmd(&["archive", "run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + T;
        while counts(&conn).1 <= before && child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the archiver never moved a row"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Signal::SIGKILL,
        );
        child.wait().unwrap();
        let (hot, archive, both) = counts(&conn);
        assert_eq!(
            hot + archive,
            200_000,
            "killed in round {round}: rows lost or doubled"
        );
        assert_eq!(both, 0, "no row is in both tables");
        if archive > before && hot > 0 {
            interrupted_mid_run += 1;
        }
    }
    assert!(
        interrupted_mid_run >= 2,
        "only {interrupted_mid_run} of 3 kills landed in the middle of a run"
    );
    // A last run finishes whatever the killed ones left.
    env.ok(&["archive", "run"]);
    let (hot, archive, both) = counts(&conn);
    assert_eq!((hot, archive, both), (0, 200_000, 0));
}

#[test]
fn mismatched_or_unsafe_tables_are_refused() {
    let env = Env::new(USAGE_POLICY);
    env.ok(&["migrate"]);
    let conn = db(&env);
    conn.execute_batch(
        "CREATE TABLE usage_details (id INTEGER PRIMARY KEY, account TEXT, region TEXT,
             completed_at TEXT, created_at TEXT);
         CREATE TABLE usage_details_archive (id INTEGER PRIMARY KEY, account TEXT,
             completed_at TEXT, created_at TEXT, note TEXT);",
    )
    .unwrap();
    let err = env.fails(&["serve"]);
    assert!(err.contains("region") && err.contains("note"), "{err}");
    let err = env.fails(&["archive", "run"]);
    assert!(err.contains("different columns"), "{err}");
    // The refused run is recorded as the policy's newest, with its error.
    let listed: Value = serde_json::from_str(&env.ok(&["archive", "list", "--json"])).unwrap();
    let usage = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "usage");
    let newest = &usage.unwrap_or_else(|| panic!("{listed}"))["runs"][0];
    assert_eq!(
        (&newest["trigger"], &newest["rows_moved"]),
        (&json!("manual"), &json!(0))
    );
    assert!(
        newest["error"]
            .as_str()
            .unwrap()
            .contains("different columns"),
        "{listed}"
    );

    for table in ["usage\\\"details", "usage; DROP TABLE drover_jobs", "it's"] {
        let env = Env::new(
            &USAGE_POLICY.replace("table = \"usage_details\"", &format!("table = \"{table}\"")),
        );
        let err = env.fails(&["serve"]);
        assert!(
            err.contains("plain identifier") || err.contains("must start"),
            "{table}: {err}"
        );
    }
    let env = Env::new(USAGE_POLICY);
    let err = env.fails(&["serve"]);
    assert!(err.contains("does not exist"), "{err}");

    // Drover's own tables belong to the built-in policy: refused before the database is opened.
    for (key, table) in [
        ("table", "drover_jobs"),
        ("archive_table", "drover_cron_fires"),
    ] {
        let config = USAGE_POLICY.replace(
            &format!(
                "\n{key} = \"{}\"",
                if key == "table" {
                    "usage_details"
                } else {
                    "usage_details_archive"
                }
            ),
            &format!("\n{key} = \"{table}\""),
        );
        assert_ne!(config, USAGE_POLICY);
        let env = Env::new(&config);
        for command in ["serve", "worker"] {
            let err = env.fails(&[command]);
            assert!(
                err.contains(&format!("{key} {table}")) && err.contains("drover_*"),
                "{err}"
            );
        }
        assert!(
            !env.path("drover.db").exists(),
            "the database was not touched"
        );
    }
}

/// A policy whose batch fails (here a NOT NULL column in its archive table only) does not keep
/// the others from running: the error names it, the exit status says a policy failed, and the
/// next policy's rows moved all the same.
#[test]
fn a_failing_policy_does_not_stop_the_others() {
    // The failing policy comes first: the usage policy runs after it.
    let strict = "[[retention]]
name = \"strict\"
table = \"notes\"
archive_table = \"notes_archive\"
age_column = \"done_at\"
months = 1

";
    let config = USAGE_POLICY.replacen("[[retention]]", &format!("{strict}[[retention]]"), 1);
    assert!(config.find("strict") < config.find("\"usage\""));
    let env = Env::new(&config);
    env.ok(&["migrate"]);
    let conn = db(&env);
    conn.execute_batch(USAGE_TABLES).unwrap();
    conn.execute_batch(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, note TEXT, done_at TEXT);
         CREATE TABLE notes_archive (id INTEGER PRIMARY KEY, note TEXT NOT NULL, done_at TEXT);
         INSERT INTO notes VALUES (1, NULL, '2020-01-01T00:00:00Z');
         INSERT INTO usage_details VALUES (1, 'a', '2020-01-31T10:00:00Z', '2020-01-01T00:00:00Z');",
    )
    .unwrap();
    let err = env.fails(&["archive", "run"]);
    assert!(
        err.contains("retention \"strict\"") && err.contains("NOT NULL"),
        "{err}"
    );
    assert!(err.contains("1 of the retention policies failed"), "{err}");
    let out = env.run(&["archive", "run", "--json"]);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let strict = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["policy"] == "strict")
        .expect("the failed policy is in the JSON");
    assert!(
        strict["error"].as_str().unwrap().contains("NOT NULL"),
        "{rows}"
    );
    // Asked for alone, its own error is the answer.
    let alone = env.fails(&["archive", "run", "--policy", "strict"]);
    assert!(
        alone.contains("NOT NULL") && !alone.contains("the others ran"),
        "{alone}"
    );
    assert_eq!(counts(&conn), (0, 1, 0), "the usage policy ran");
    let notes: i64 = conn
        .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(notes, 1, "the failed batch moved nothing");
}
