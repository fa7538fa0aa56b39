//! Helpers for tests that run the real `drover` binary against the PostgreSQL test server, each
//! test on a schema of its own (`drover_cli_<16 hex>`), dropped when the test ends.
//!
//! The server comes from `DROVER_TEST_POSTGRES_URL`, or is a throwaway cluster started for the
//! test binary when it is unset (`drover_conformance::pg_server`). An unreachable server fails the test with a
//! message saying so: these tests never skip. `psql` and `pg_isready` must be on the `PATH`.
//!
//! A test binary includes this module next to `common`:
//!
//! ```ignore
//! mod common;
//! #[path = "common/pg.rs"]
//! mod pg;
//! ```

#![allow(dead_code)] // each test binary uses a different subset
#![allow(unreachable_pub)] // `pub` so that every test binary can use these helpers

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Env, Worker};

/// The test server's URL (without a `schema` option).
pub fn server_url() -> String {
    drover_conformance::pg_server::url()
}

/// Runs one SQL string with `psql` on `url`; its output unaligned, without headers.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run psql (is it installed?): {err}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Panics, saying why, unless the test server answers.
pub fn require_server() {
    let url = server_url();
    if let Err(err) = psql(&url, "SELECT 1") {
        panic!(
            "cannot reach the PostgreSQL test server at {url} (set DROVER_TEST_POSTGRES_URL to a \
             reachable server; these tests need one and never skip): {err}"
        );
    }
}

/// Whether the server accepts connections now (`pg_isready`).
pub fn server_ready() -> bool {
    let url = server_url();
    Command::new("pg_isready")
        .args(["-d", &url, "-t", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

/// Waits until `probe` returns `Ok`, calling it every 50 ms, for at most `limit`; panics naming
/// `what` and the last thing `probe` saw.
pub fn eventually<T>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within {limit:?}; last seen: {last}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A schema name no other test uses.
pub fn random_schema() -> String {
    format!("drover_cli_{:016x}", fastrand::u64(..))
}

/// A directory with a config, a schema of its own on the test server, and the binary pointed at
/// them. Drops the schema when dropped.
pub struct PgEnv {
    pub env: Env,
    pub schema: String,
    /// The URL the binary gets: the server's with `schema=<schema>`.
    pub url: String,
    /// The server's URL, for `psql`.
    pub server: String,
}

impl PgEnv {
    /// Checks the server, then creates and migrates the schema with `drover migrate`.
    pub fn new(config: &str) -> PgEnv {
        require_server();
        let server = server_url();
        let schema = random_schema();
        let separator = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{separator}schema={schema}");
        let pg = PgEnv {
            env: Env::new(config),
            schema,
            url,
            server,
        };
        pg.ok(&["migrate"]);
        pg
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.env.path(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.env.cmd(args);
        cmd.env("DROVER_DATABASE_URL", &self.url);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run drover")
    }

    /// Runs, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "drover {args:?} on {} failed: {}",
            self.url,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn enqueue(&self, args: &[&str]) -> i64 {
        let mut all = vec!["enqueue"];
        all.extend_from_slice(args);
        all.push("--json");
        let out: Value = serde_json::from_str(&self.ok(&all)).unwrap();
        out["id"].as_i64().unwrap()
    }

    /// Writes `lines` to a JSONL file and enqueues it with `drover enqueue --file`; returns the
    /// ids.
    pub fn enqueue_file(&self, name: &str, lines: &[String]) -> Vec<i64> {
        let path = self.path(name);
        fs::write(&path, lines.join("\n") + "\n").expect("write jobs file");
        let out: Value = serde_json::from_str(&self.ok(&[
            "enqueue",
            "--file",
            path.to_str().unwrap(),
            "--json",
        ]))
        .unwrap();
        assert_eq!(out["enqueued"], lines.len(), "{out}");
        out["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_i64().unwrap())
            .collect()
    }

    pub fn job(&self, id: i64) -> Value {
        serde_json::from_str(&self.ok(&["jobs", "show", &id.to_string(), "--json"])).unwrap()
    }

    pub fn stats(&self) -> Value {
        serde_json::from_str(&self.ok(&["stats", "--json"])).unwrap()
    }

    /// Waits until the job satisfies `check`, re-reading it every 50 ms, for at most `limit`.
    pub fn wait_job(&self, id: i64, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
        eventually(limit, &format!("job {id}"), || {
            let job = self.job(id);
            if check(&job) {
                Ok(job)
            } else {
                Err(format!("{job:#}"))
            }
        })
    }

    /// SQL on the test's schema through `psql`; panics on an error.
    pub fn sql(&self, sql: &str) -> String {
        psql(
            &self.server,
            &format!("SET search_path TO {}; {sql}", self.schema),
        )
        .unwrap_or_else(|err| panic!("SQL failed: {sql}: {err}"))
    }

    /// Waits until the SQL's output satisfies `check`.
    pub fn wait_sql(&self, sql: &str, limit: Duration, check: impl Fn(&str) -> bool) -> String {
        eventually(limit, sql, || {
            let out = self.sql(sql);
            if check(&out) { Ok(out) } else { Err(out) }
        })
    }

    /// Starts `drover worker` (or `serve`) with its log in `<name>.log`, and waits until it runs.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Worker {
        let log = self.path(&format!("{name}.log"));
        let child = self
            .cmd(args)
            .stdout(Stdio::from(
                fs::File::create(self.path(&format!("{name}.out"))).unwrap(),
            ))
            .stderr(Stdio::from(fs::File::create(&log).unwrap()))
            .spawn()
            .expect("spawn drover");
        let worker = Worker { child, log };
        worker.wait_log("drover is running", Duration::from_secs(20));
        worker
    }

    /// The engine's process id (`host:pid:xxxx`) of a running worker, from `drover stats`.
    pub fn process_id(&self, worker: &Worker) -> String {
        let pid = u64::from(worker.child.id());
        eventually(
            Duration::from_secs(10),
            "the worker in drover stats",
            || {
                let stats = self.stats();
                stats["processes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["pid"].as_u64() == Some(pid))
                    .map(|p| p["id"].as_str().unwrap().to_owned())
                    .ok_or_else(|| format!("{stats:#}"))
            },
        )
    }
}

impl Drop for PgEnv {
    fn drop(&mut self) {
        // Never panic here: the test may already be unwinding.
        if let Err(err) = psql(
            &self.server,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
        ) {
            eprintln!("could not drop the test schema {}: {err}", self.schema);
        }
    }
}
