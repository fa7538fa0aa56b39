//! Helpers for tests that run the real `drover` binary against a real SQLite file.

#![allow(dead_code)] // each test binary uses a different subset
#![allow(unreachable_pub)] // `pub` so that every test binary can use these helpers

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

pub mod api;

/// A directory with a database and a config, and the binary pointed at them.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new(config: &str) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("drover.toml"), config).expect("write config");
        Env { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env(
                "DROVER_DATABASE_URL",
                format!("sqlite://{}", self.path("drover.db").display()),
            )
            .env("DROVER_CONFIG", self.path("drover.toml"))
            // Tests run side by side: a `serve` listens on a port of its own.
            .env("DROVER_LISTEN", "127.0.0.1:0")
            .env("DROVER_LOG", "info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
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
            "drover {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "drover {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn enqueue(&self, args: &[&str]) -> i64 {
        let mut all = vec!["enqueue"];
        all.extend_from_slice(args);
        all.push("--json");
        let out: Value = serde_json::from_str(&self.ok(&all)).unwrap();
        out["id"].as_i64().unwrap()
    }

    pub fn job(&self, id: i64) -> Value {
        serde_json::from_str(&self.ok(&["jobs", "show", &id.to_string(), "--json"])).unwrap()
    }

    pub fn stats(&self) -> Value {
        serde_json::from_str(&self.ok(&["stats", "--json"])).unwrap()
    }

    /// Waits until the job satisfies `check`, re-reading it every 50 ms, for at most `limit`.
    pub fn wait_job(&self, id: i64, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let job = self.job(id);
            if check(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never got there: {job:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `drover worker` (or `serve`) with its log in `<name>.log`, and waits until it runs.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Worker {
        self.spawn_cmd(name, self.cmd(args))
    }

    /// Starts a prepared `drover` command like [`Env::spawn`].
    pub fn spawn_cmd(&self, name: &str, mut cmd: Command) -> Worker {
        cmd.stdout(Stdio::from(
            fs::File::create(self.path(&format!("{name}.out"))).unwrap(),
        ));
        let worker = Worker::start(cmd, self.path(&format!("{name}.log")));
        worker.wait_log("drover is running", Duration::from_secs(20));
        worker
    }
}

/// Waits until `path` exists and is not empty, and returns its text.
pub fn wait_file(path: &std::path::Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if !text.is_empty() {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is a live process: neither gone nor a zombie (a container's init may never
/// reap an orphan).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Waits until process `pid` is gone, for at most `limit`; `what` names it in the failure.
pub fn wait_gone(pid: i32, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        assert!(Instant::now() < deadline, "{what} ({pid}) is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `drover` process. Killed when dropped.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
}

impl Worker {
    /// Starts `cmd` with its stderr in `log`, without waiting for it to say anything: for a
    /// command that is not a server, or one that waits before it runs.
    pub fn start(mut cmd: Command, log: PathBuf) -> Worker {
        let child = cmd
            .stderr(Stdio::from(fs::File::create(&log).unwrap()))
            .spawn()
            .expect("spawn drover");
        Worker { child, log }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal drover");
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `text`.
    pub fn wait_log(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "log never said {text:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "drover did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
