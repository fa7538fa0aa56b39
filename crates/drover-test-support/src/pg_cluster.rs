//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, started on a free port
//! of 127.0.0.1, stopped (`pg_ctl stop -m immediate`) and removed when dropped.
//!
//! The binaries are found in `DROVER_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`,
//! else the `PATH`. PostgreSQL refuses to run as root, so under root the cluster runs as the
//! `postgres` user (`runuser`), which then owns the directory.
//!
//! ```no_run
//! use drover_test_support::pg_cluster::{ClusterOptions, TempCluster};
//!
//! let cluster = TempCluster::start(ClusterOptions::default().setting("ssl", "off")).unwrap();
//! let url = cluster.url("postgres"); // postgres://postgres@127.0.0.1:PORT/postgres
//! # let _ = url;
//! ```

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// TLS files of a cluster (PEM text).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The server's certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
    /// CA certificates the server trusts for client certificates (`ssl_ca_file`), if any.
    pub client_ca: Option<String>,
}

/// How to set up a [`TempCluster`].
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// `ssl = on` with these files; `None`: `ssl = off`.
    pub tls: Option<ServerTls>,
    /// `pg_hba.conf` lines; empty: `host all all 127.0.0.1/32 trust` (and the same for `::1`).
    pub hba: Vec<String>,
    /// Further `postgresql.conf` settings (name, value as written in the file).
    pub settings: Vec<(String, String)>,
}

impl ClusterOptions {
    /// Adds a `postgresql.conf` setting, e.g. `("shared_preload_libraries", "'pg_stat_statements'")`.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Turns TLS on with these files.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Adds a `pg_hba.conf` line (replacing the default trust lines).
    pub fn hba(mut self, line: &str) -> Self {
        self.hba.push(line.to_owned());
        self
    }
}

/// A running throwaway cluster; its superuser is `postgres`, trusted from 127.0.0.1 by default.
pub struct TempCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl TempCluster {
    /// Creates and starts a cluster; waits until it accepts connections.
    pub fn start(options: ClusterOptions) -> Result<TempCluster, String> {
        let bin = bin_dir();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("drover-pg-")
            .tempdir()
            .map_err(|err| format!("cannot make a temporary directory: {err}"))?;
        let data = dir.path().join("data");
        let mut cluster = TempCluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        cluster.chown()?;
        cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        cluster.configure(&data, &options)?;
        // A port that was free a moment ago may be taken by now: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port()?;
            let conf = format!("port = {}\n", cluster.port);
            append(&data.join("postgresql.auto.conf"), &conf)?;
            cluster.chown()?;
            match cluster.start_server() {
                Ok(()) => return Ok(cluster),
                Err(err) => {
                    last = err;
                    if !last.contains("could not bind") {
                        break;
                    }
                }
            }
        }
        Err(format!(
            "the throwaway PostgreSQL cluster did not start: {last}"
        ))
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`): every
    /// connection is cut, and no shutdown checkpoint is written (the next start replays the
    /// WAL). Start it again with [`TempCluster::start_again`].
    pub fn stop(&self) -> Result<(), String> {
        let data = self.dir.path().join("data");
        self.run(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
        )
        .map(drop)
    }

    /// Starts a stopped server again, on the same port; waits until it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        self.start_server()
    }

    /// [`TempCluster::stop`] then [`TempCluster::start_again`]: a server that crashed and came
    /// back. (Not `pg_ctl restart`, which cannot send the new server's output to the log file.)
    pub fn restart_immediate(&self) -> Result<(), String> {
        self.stop()?;
        self.start_again()
    }

    /// `pg_ctl start`, the server's output in `server.log`; the error carries the log.
    fn start_server(&self) -> Result<(), String> {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "120",
                "start",
            ],
        )
        .map(drop)
        .map_err(|err| {
            let log = fs::read_to_string(&log).unwrap_or_default();
            format!("{err}\nserver log:\n{log}")
        })
    }

    /// The port the cluster listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The cluster's directory (the data directory is `data` in it, the server log
    /// `server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs SQL with `psql` as `postgres`; the output, unaligned and without headers.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            // The Unix socket: trusted whatever pg_hba.conf says of TCP.
            .arg(format!(
                "host={} port={} user=postgres dbname={db}",
                path_str(self.dir.path()),
                self.port
            ))
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run psql: {err}"))?;
        check("psql", out).map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn configure(&self, data: &Path, options: &ClusterOptions) -> Result<(), String> {
        // fsync off: nothing here must survive a crash of the machine, and it starts faster.
        let mut conf = String::from(
            "listen_addresses = '127.0.0.1'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 50\nshared_buffers = '32MB'\n",
        );
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            path_str(self.dir.path())
        ));
        match &options.tls {
            Some(tls) => {
                write_private(&data.join("server.crt"), &tls.cert)?;
                write_private(&data.join("server.key"), &tls.key)?;
                conf.push_str(
                    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                );
                if let Some(ca) = &tls.client_ca {
                    write_private(&data.join("client_ca.crt"), ca)?;
                    conf.push_str("ssl_ca_file = 'client_ca.crt'\n");
                }
            }
            None => conf.push_str("ssl = off\n"),
        }
        for (name, value) in &options.settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        append(&data.join("postgresql.auto.conf"), &conf)?;
        let hba = if options.hba.is_empty() {
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
                .to_owned()
        } else {
            let mut hba = String::from("local all all trust\n");
            for line in &options.hba {
                hba.push_str(line);
                hba.push('\n');
            }
            hba
        };
        fs::write(data.join("pg_hba.conf"), hba)
            .map_err(|err| format!("cannot write pg_hba.conf: {err}"))?;
        self.chown()
    }

    /// Gives the directory to `postgres` when the cluster runs as that user.
    fn chown(&self) -> Result<(), String> {
        if !self.as_postgres {
            return Ok(());
        }
        let out = Command::new("chown")
            .args(["-R", "postgres:", path_str(self.dir.path())])
            .output()
            .map_err(|err| format!("cannot run chown: {err}"))?;
        check("chown", out).map(drop)
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let out = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run {}: {err}", program.display()))?;
        check(&program.display().to_string(), out)
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if self.port != 0 {
            let data = self.dir.path().join("data");
            let _ = self.run(
                "pg_ctl",
                &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
            );
        }
    }
}

fn check(what: &str, out: Output) -> Result<Output, String> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DROVER_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    // Empty: bare names, found on the PATH.
    versions.pop().map(|(_, bin)| bin).unwrap_or_default()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|err| format!("cannot find a free port: {err}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|err| format!("cannot find a free port: {err}"))
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}

/// Writes a file only its owner may read (PostgreSQL refuses a key others can read).
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o600)))
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}
