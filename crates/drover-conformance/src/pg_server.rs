//! The PostgreSQL server the tests use: `DROVER_TEST_POSTGRES_URL` when it is set (CI sets it
//! to the local server), otherwise a throwaway cluster that this test process starts for itself
//! — `initdb` into a temporary directory, a free port on 127.0.0.1, trust authentication, a
//! database `test` — and that goes away when the process exits. So `cargo test` works on a
//! fresh machine that merely has the PostgreSQL server binaries installed.
//!
//! The cluster is stopped without any code running at exit: the postgres process runs under a
//! small shell that waits on a pipe held open by this process; when the process ends, however
//! it ends, the pipe closes, and the shell stops the server and removes its directory.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The variable naming an existing server.
pub const URL_VAR: &str = "DROVER_TEST_POSTGRES_URL";

/// The test server's URL (without a `schema` option); starts the throwaway cluster the first
/// time it is needed. Panics with one clear line when neither is possible.
pub fn url() -> String {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    let url = URL.get_or_init(|| match std::env::var(URL_VAR) {
        Ok(url) => Ok(url),
        Err(_) => start(),
    });
    match url {
        Ok(url) => url.clone(),
        Err(why) => panic!("{why}"),
    }
}

/// Keeps the watchdog's stdin open for as long as this process lives.
static WATCHDOG: Mutex<Option<Child>> = Mutex::new(None);

fn start() -> Result<String, String> {
    let bin = bin_dir().ok_or_else(|| {
        format!(
            "{URL_VAR} is unset and no PostgreSQL server binaries (initdb, postgres) were found \
             in /usr/lib/postgresql/*/bin or on the PATH: install the PostgreSQL server or set \
             {URL_VAR}"
        )
    })?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port for a throwaway PostgreSQL: {e}"))?
        .port();
    let dir = std::env::temp_dir().join(format!("drover-test-pg-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // PostgreSQL refuses to run as root: run it as the `postgres` user then.
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if as_root {
        run(Command::new("chown").args(["postgres:", dir.to_str().unwrap()]))?;
    }
    let data = dir.join("data");
    let initdb = bin.join("initdb");
    run(user(as_root, &initdb).args([
        "-D",
        data.to_str().unwrap(),
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-sync",
    ]))?;
    let script = format!(
        "'{postgres}' -D '{data}' -p {port} -k '{dir}' -c listen_addresses=127.0.0.1 \
         -c fsync=off -c max_connections=200 > '{dir}/server.log' 2>&1 & pid=$!; \
         read _; kill -INT $pid; wait $pid; rm -rf '{dir}'",
        postgres = bin.join("postgres").display(),
        data = data.display(),
        dir = dir.display(),
    );
    let watchdog = user(as_root, Path::new("sh"))
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the throwaway PostgreSQL: {e}"))?;
    *WATCHDOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(watchdog);
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = || {
        Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "1"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    while !ready() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("the throwaway PostgreSQL did not start: {log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    run(Command::new(bin.join("psql")).args([
        "-X",
        "-q",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-c",
        "CREATE DATABASE test",
    ]))?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/test");
    // Straight to stderr, not through `eprintln!`, which the test harness captures.
    let _ = writeln!(
        std::io::stderr(),
        "{URL_VAR} is unset: started a throwaway PostgreSQL cluster at {url} (data in {}), \
         stopped when the tests end",
        dir.display()
    );
    Ok(url)
}

/// `program`, run as `postgres` when this process is root.
fn user(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The newest `/usr/lib/postgresql/N/bin` with `initdb`, or the directory of `initdb` on the
/// `PATH`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().or_else(|| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
        })
    })
}
