//! `drover.toml`: the standalone server's configuration. Every key is checked at start-up;
//! an unknown key, a bad duration or a task without a command refuses the start and names the
//! offending key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use drover_core::{Delivery, JobState};
use serde::Deserialize;

use crate::config_errors::{FileValues, syntax};

/// The whole file. Every section is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub(crate) database: DatabaseSection,
    #[serde(default)]
    pub(crate) worker: WorkerSection,
    /// Queue name → concurrency, or a table with `concurrency` and `system`.
    #[serde(default)]
    pub(crate) queues: BTreeMap<String, crate::capacity_config::QueueSection>,
    #[serde(default)]
    pub(crate) tasks: BTreeMap<String, TaskSection>,
    #[serde(default)]
    pub(crate) hooks: Vec<HookSection>,
    #[serde(default)]
    pub(crate) cron: Vec<CronSection>,
    #[serde(default)]
    pub(crate) retention: Vec<RetentionSection>,
    #[serde(default)]
    pub(crate) jobs_archive: JobsArchiveSection,
    #[serde(default)]
    pub(crate) log: LogSection,
    #[serde(default)]
    pub(crate) http: HttpSection,
    /// Kinds of capacity the autoscaler manages.
    #[serde(default)]
    pub(crate) systems: BTreeMap<String, crate::capacity_config::SystemSection>,
    #[serde(default)]
    pub(crate) autoscaler: crate::capacity_config::AutoscalerSection,
    /// The file this was loaded from (handed to the autoscaler's local workers).
    #[serde(skip)]
    pub(crate) source: Option<PathBuf>,
}

/// The HTTP API, the dashboard and `/metrics`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpSection {
    /// Address to listen on (`serve` default 127.0.0.1:7070); `--listen` takes precedence.
    pub(crate) listen: Option<String>,
    /// Bearer token required on every request but the health probes; `DROVER_TOKEN` takes
    /// precedence. Required to listen on anything but loopback.
    pub(crate) token: Option<String>,
    /// Largest request body accepted, in bytes (default 2 MiB).
    pub(crate) max_body_bytes: Option<usize>,
    /// Refuse every state-changing request (enqueue excepted: see the README).
    pub(crate) read_only: Option<bool>,
    /// How long a client may take to send a request's headers, and a kept-alive connection may
    /// sit idle (default 30 s).
    #[serde(default, deserialize_with = "duration")]
    pub(crate) header_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CronSection {
    pub(crate) name: String,
    /// Five or six fields.
    pub(crate) schedule: String,
    pub(crate) kind: String,
    pub(crate) args: Option<serde_json::Value>,
    pub(crate) queue: Option<String>,
    /// IANA time zone; UTC when absent.
    pub(crate) timezone: Option<String>,
    /// once | skip | all
    pub(crate) catch_up: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionSection {
    // Required, but optional here: serde's "missing field" for an entry of an array of
    // tables points at line 1 and names no entry; `setup::retention_policy` names both.
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) table: String,
    #[serde(default)]
    pub(crate) archive_table: String,
    pub(crate) id_column: Option<String>,
    #[serde(default)]
    pub(crate) age_column: String,
    pub(crate) fallback_column: Option<String>,
    pub(crate) months: Option<u32>,
    pub(crate) days: Option<u32>,
    pub(crate) batch_size: Option<usize>,
    pub(crate) schedule: Option<String>,
}

/// The built-in policy that moves Drover's own finished jobs to `drover_jobs_archive`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobsArchiveSection {
    pub(crate) enabled: Option<bool>,
    pub(crate) months: Option<u32>,
    pub(crate) days: Option<u32>,
    pub(crate) batch_size: Option<usize>,
    pub(crate) schedule: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatabaseSection {
    /// Database URL; `--database` and `DROVER_DATABASE_URL` take precedence.
    pub(crate) url: Option<String>,
    /// SQLite durability: `full` (default) or `normal`.
    pub(crate) synchronous: Option<String>,
    /// Largest args accepted, in bytes.
    pub(crate) max_args_bytes: Option<usize>,
    /// PostgreSQL TLS, as libpq's `sslmode`: disable, prefer (default), require, verify-ca,
    /// verify-full. The URL's own `sslmode` must agree when both are set.
    pub(crate) sslmode: Option<String>,
    /// PEM file of trusted roots (or `system`), as libpq's `sslrootcert`.
    pub(crate) sslrootcert: Option<PathBuf>,
    /// Client certificate (PEM), as libpq's `sslcert`.
    pub(crate) sslcert: Option<PathBuf>,
    /// The client certificate's key (PEM), as libpq's `sslkey`.
    pub(crate) sslkey: Option<PathBuf>,
    /// PostgreSQL: how often a worker's listener checks that its connection still answers
    /// (default 30 s). `/healthz` reports the listener unhealthy once it has been disconnected
    /// for longer than this.
    #[serde(default, deserialize_with = "duration")]
    pub(crate) listener_check_interval: Option<Duration>,
    /// PostgreSQL: connections in each process's pool (default 8).
    pub(crate) pool_size: Option<usize>,
    /// PostgreSQL: how long `serve` and `worker` wait at start for a server they cannot reach
    /// yet (default 60 s; `0s` fails at once, for a supervisor that restarts them).
    #[serde(default, deserialize_with = "duration")]
    pub(crate) wait_at_start: Option<Duration>,
}

impl DatabaseSection {
    /// The keys set here that only a PostgreSQL store reads.
    pub(crate) fn postgres_only_keys(&self) -> Vec<&'static str> {
        [
            ("sslmode", self.sslmode.is_some()),
            ("sslrootcert", self.sslrootcert.is_some()),
            ("sslcert", self.sslcert.is_some()),
            ("sslkey", self.sslkey.is_some()),
            (
                "listener_check_interval",
                self.listener_check_interval.is_some(),
            ),
            ("pool_size", self.pool_size.is_some()),
            ("wait_at_start", self.wait_at_start.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }

    /// The TLS settings of a PostgreSQL store.
    pub(crate) fn tls(&self) -> anyhow::Result<drover_postgres::TlsSettings> {
        let mode = match &self.sslmode {
            Some(mode) => Some(
                mode.parse()
                    .map_err(|err| anyhow::anyhow!("database.sslmode: {err}"))?,
            ),
            None => None,
        };
        Ok(drover_postgres::TlsSettings {
            mode,
            root_cert: self.sslrootcert.clone(),
            client_cert: self.sslcert.clone(),
            client_key: self.sslkey.clone(),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkerSection {
    #[serde(default, deserialize_with = "duration")]
    pub(crate) shutdown_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) lease: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) heartbeat_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) poll_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) rescue_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) cancel_grace: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) leader_ttl: Option<Duration>,
    /// Most jobs claimed beyond the free slots into a local buffer (default: automatic).
    pub(crate) prefetch: Option<usize>,
    /// How often the leader refreshes the cached job counts (default 5s).
    #[serde(default, deserialize_with = "duration")]
    pub(crate) counts_interval: Option<Duration>,
    /// Most jobs counted per state; larger counts are shown as "at least" (default 1,000,000).
    pub(crate) counts_cap: Option<u64>,
    /// Most hooks run at once (default 4).
    pub(crate) hook_concurrency: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskSection {
    /// Program and arguments; the job's args arrive as JSON on stdin.
    #[serde(default)]
    pub(crate) command: Vec<String>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_attempts: Option<i32>,
    pub(crate) delivery: Option<String>,
    pub(crate) queue: Option<String>,
    /// First retry delay; doubles per attempt.
    #[serde(default, deserialize_with = "duration")]
    pub(crate) backoff: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) backoff_max: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when a run is cancelled or times out.
    #[serde(default, deserialize_with = "duration")]
    pub(crate) kill_grace: Option<Duration>,
    /// Set in the command's environment.
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    /// Names of the worker's own variables passed to the command; no other is inherited.
    #[serde(default)]
    pub(crate) env_pass: Vec<String>,
    pub(crate) cwd: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookSection {
    pub(crate) command: Vec<String>,
    /// States that trigger the hook; all terminal states when absent.
    pub(crate) on: Option<Vec<String>>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) timeout: Option<Duration>,
    /// Names of the worker's own variables passed to the hook; no other is inherited.
    #[serde(default)]
    pub(crate) env_pass: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogSection {
    /// Log job args when a command task starts. Off by default: args carry secrets.
    #[serde(default)]
    pub(crate) args: bool,
}

pub(crate) use drover_core::validate::parse_duration;

/// An environment variable name as `env_pass` takes it: what a shell could export.
pub(crate) fn check_env_name(key: &str, name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("{key}: {name:?} is not a variable name (letters, digits and _, not first a digit)");
    }
    Ok(())
}

pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(de)?;
    // The parser's own words quote what it could not read, a piece of the value that
    // config_errors cannot recognise to hide: only the rule is said.
    parse_duration(&text).map(Some).map_err(|_| {
        serde::de::Error::custom(
            "not a duration like 30s, 5m, 2d or 250ms (a day is 24 hours; months and years \
             are refused)",
        )
    })
}

impl Config {
    /// Loads `path`, or the default `./drover.toml` when present, or an empty config.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let (path, explicit) = match path {
            Some(path) => (path.to_owned(), true),
            None => (PathBuf::from("drover.toml"), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if !explicit && err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read config {}", path.display()));
            }
        };
        // A value of the file is never part of an error: a secret may sit under the wrong key.
        let values = FileValues::of(&text);
        let mut config: Config = toml::from_str(&text).map_err(|err| {
            let message = syntax(&err, &text, &values);
            anyhow::anyhow!("invalid config {}: {message}", path.display())
        })?;
        config.source = std::fs::canonicalize(&path).ok();
        // The directory as the user named it, symlinks kept: a config mounted as a link (a
        // Kubernetes ConfigMap's `..data/`) resolves next to the link, not its target.
        let dir = std::path::absolute(&path)
            .ok()
            .and_then(|path| path.parent().map(Path::to_path_buf));
        if let Some(dir) = dir {
            config.resolve_paths(&dir);
        }
        config.validate().map_err(|err| {
            let message = values.hide(&format!("{err:#}"));
            anyhow::anyhow!("invalid config {}: {message}", path.display())
        })?;
        Ok(config)
    }

    /// Checks what the types cannot.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if let Some(sync) = &self.database.synchronous {
            sync.parse::<drover_sqlite::Synchronous>()
                .map_err(|err| anyhow::anyhow!("database.synchronous: {err}"))?;
        }
        self.database.tls()?;
        // A worker runs four statements side by side while a backlog drains (two claims, a
        // completion write, a heartbeat or enqueue); fewer connections would queue them.
        if let Some(size) = self.database.pool_size
            && !(4..=1000).contains(&size)
        {
            bail!("database.pool_size {size} is not between 4 and 1000");
        }
        // Under a couple of bytes not even `{}` fits: every enqueue would be refused.
        if let Some(max) = self.database.max_args_bytes
            && max < 2
        {
            bail!("database.max_args_bytes {max} is under 2: no args, not even {{}}, would fit");
        }
        self.validate_queues()?;
        // The engine's own rules for `[worker]`, here so that the error names the file.
        crate::setup::worker_settings(self, BTreeMap::new(), None)
            .validate()
            .map_err(|err| match err {
                drover::Error::Config(message) => anyhow::anyhow!("[worker] {message}"),
                other => anyhow::anyhow!("[worker]: {other}"),
            })?;
        for (kind, task) in &self.tasks {
            validate_task(kind, task)?;
        }
        self.validate_cron()?;
        self.validate_retention()?;
        crate::capacity_config::autoscaler_config(self)?;
        crate::setup::jobs_archive_policy(&self.jobs_archive)
            .map_err(|err| anyhow::anyhow!("jobs_archive: {err}"))?;
        self.validate_hooks()
    }

    fn validate_queues(&self) -> anyhow::Result<()> {
        for (queue, section) in &self.queues {
            let concurrency = section.concurrency(1);
            drover_core::validate::check_name("queue", queue)
                .map_err(|err| anyhow::anyhow!("queues.{queue}: {err}"))?;
            if !(1..=10_000).contains(&concurrency) {
                bail!("queues.{queue}: concurrency {concurrency} is not between 1 and 10000");
            }
        }
        Ok(())
    }

    /// Cron entries, whose names must be unique.
    fn validate_cron(&self) -> anyhow::Result<()> {
        let mut cron_names = std::collections::HashSet::new();
        for (i, cron) in self.cron.iter().enumerate() {
            if !cron_names.insert(&cron.name) {
                bail!("cron[{i}]: the name {:?} is used twice", cron.name);
            }
            crate::setup::cron_schedule(cron).map_err(|err| anyhow::anyhow!("cron[{i}]: {err}"))?;
        }
        Ok(())
    }

    /// Retention policies, whose names must be unique and not `drover_jobs`.
    fn validate_retention(&self) -> anyhow::Result<()> {
        let mut retention_names = std::collections::HashSet::new();
        for (i, policy) in self.retention.iter().enumerate() {
            for (key, value) in [
                ("name", &policy.name),
                ("table", &policy.table),
                ("archive_table", &policy.archive_table),
                ("age_column", &policy.age_column),
            ] {
                if value.is_empty() {
                    bail!("retention[{i}]: {key} is required");
                }
            }
            if !retention_names.insert(&policy.name) || policy.name == "drover_jobs" {
                bail!(
                    "retention[{i}]: the name {:?} is already taken",
                    policy.name
                );
            }
            crate::setup::retention_policy(policy)
                .map_err(|err| anyhow::anyhow!("retention[{i}] ({}): {err}", policy.name))?;
        }
        Ok(())
    }

    fn validate_hooks(&self) -> anyhow::Result<()> {
        for (i, hook) in self.hooks.iter().enumerate() {
            if hook.command.is_empty() || hook.command[0].is_empty() {
                bail!("hooks[{i}].command: a hook needs a command");
            }
            for name in &hook.env_pass {
                check_env_name(&format!("hooks[{i}].env_pass"), name)?;
            }
            if hook.on.as_ref().is_some_and(Vec::is_empty) {
                bail!(
                    "hooks[{i}].on: an empty list runs the hook for nothing; leave it out for \
                     every final state"
                );
            }
            if hook.timeout == Some(Duration::ZERO) {
                bail!("hooks[{i}].timeout: must be positive");
            }
            for state in hook.on.iter().flatten() {
                let parsed: JobState = state
                    .parse()
                    .map_err(|err| anyhow::anyhow!("hooks[{i}].on: {err}"))?;
                if !parsed.is_terminal() {
                    bail!(
                        "hooks[{i}].on: {state:?} is not a final state; use completed, discarded or cancelled"
                    );
                }
            }
        }
        Ok(())
    }
}

fn validate_task(kind: &str, task: &TaskSection) -> anyhow::Result<()> {
    drover_core::validate::check_name("kind", kind)
        .map_err(|err| anyhow::anyhow!("tasks.\"{kind}\": {err}"))?;
    if task.command.is_empty() || task.command[0].is_empty() {
        bail!(
            "tasks.\"{kind}\".command: a task needs a command, like command = [\"python3\", \"job.py\"]"
        );
    }
    if let Some(delivery) = &task.delivery {
        delivery
            .parse::<Delivery>()
            .map_err(|err| anyhow::anyhow!("tasks.\"{kind}\".delivery: {err}"))?;
    }
    if let Some(n) = task.max_attempts
        && !(1..=10_000).contains(&n)
    {
        bail!("tasks.\"{kind}\".max_attempts: {n} is not between 1 and 10000");
    }
    if let Some(queue) = &task.queue {
        drover_core::validate::check_name("queue", queue)
            .map_err(|err| anyhow::anyhow!("tasks.\"{kind}\".queue: {err}"))?;
    }
    if task.timeout == Some(Duration::ZERO) {
        bail!("tasks.\"{kind}\".timeout: must be positive");
    }
    // The cap would win from the first retry: the base was meant as something else.
    if let (Some(base), Some(max)) = (task.backoff, task.backoff_max)
        && base > max
    {
        bail!("tasks.\"{kind}\".backoff {base:?} is longer than its backoff_max {max:?}");
    }
    for name in &task.env_pass {
        check_env_name(&format!("tasks.\"{kind}\".env_pass"), name)?;
    }
    // An empty name or one with `=` would set another variable than the one written, and a
    // NUL fails every exec: each job would fail for what the start can name.
    for (name, value) in &task.env {
        check_env_name(&format!("tasks.\"{kind}\".env"), name)?;
        if name.starts_with("DROVER_JOB_") {
            bail!(
                "tasks.\"{kind}\".env.{name}: DROVER_JOB_* are set by the worker for each job, \
                 over any value given here"
            );
        }
        if value.contains('\0') {
            bail!(
                "tasks.\"{kind}\".env.{name}: the value holds a NUL byte, which no environment can carry"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}", syntax(&e, text, &FileValues::of(text))))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn args_that_nothing_could_fit_are_refused() {
        let err = parse("[[retention]]\nname = \"u\"\ntable = \"t\"\narchive_table = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("retention[0]: age_column is required"),
            "{err}"
        );
        let err = parse("[database]\nmax_args_bytes = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.max_args_bytes"), "{err}");
        assert!(parse("[database]\nmax_args_bytes = 2").is_ok());
    }

    #[test]
    fn a_queue_s_mistake_is_named() {
        let err = parse("[queues.default]\nsystm = \"gpu\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("systm") && err.contains("system"), "{err}");
        let err = parse("[queues]\ndefault = -1").unwrap_err().to_string();
        assert!(err.contains("concurrency -1 is negative"), "{err}");
        let err = parse("[queues]\ndefault = \"ten\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a concurrency (like 10)"), "{err}");
        let config = parse("[queues]\na = 3\n[queues.b]\nconcurrency = 2").unwrap();
        assert_eq!(config.queues["a"].concurrency(10), 3);
        assert_eq!(config.queues["b"].concurrency(10), 2);
    }

    #[test]
    fn a_backoff_longer_than_its_cap_is_refused() {
        let task = "[tasks.t]\ncommand = [\"true\"]\nbackoff = \"2h\"\nbackoff_max = \"1h\"";
        let err = parse(task).unwrap_err().to_string();
        assert!(
            err.contains("tasks.\"t\".backoff 7200s is longer than"),
            "{err}"
        );
    }

    #[test]
    fn the_pool_size_is_checked() {
        let err = parse("[database]\npool_size = 1").unwrap_err().to_string();
        assert!(err.contains("database.pool_size 1"), "{err}");
        assert_eq!(
            parse("[database]\npool_size = 16")
                .unwrap()
                .database
                .pool_size,
            Some(16)
        );
    }

    #[test]
    fn a_syntax_error_names_the_place_but_never_quotes_the_line() {
        for (text, place, word) in [
            (
                "[database]\nuri = \"postgres://u:PwSecret99@db/x\"\n",
                "line 2, column 1",
                "uri",
            ),
            (
                "[database]\nurl = \"postgres://u:PwSecret99@db/x\n",
                "line 2",
                "string",
            ),
            (
                "[http]\n  tokn = \"PwSecret99-0123456789\"",
                "line 2, column 3",
                "tokn",
            ),
            (
                "[worker]\ncounts_cap = -1\n",
                "line 2, column 14 ([worker] counts_cap)",
                "u64",
            ),
            (
                "[database]\npool_size = \"PwSecret99\"\n",
                "([database] pool_size)",
                "string",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(place) && err.contains(word), "{err}");
            assert!(!err.contains("PwSecret99"), "{err}");
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let config = parse(
            r#"
            [worker]
            shutdown_timeout = "30s"
            lease = "30s"
            [queues]
            default = 10
            [tasks."report.build"]
            command = ["python3", "build.py"]
            timeout = "60s"
            max_attempts = 5
            delivery = "at-least-once"
            [[hooks]]
            command = ["./notify.sh"]
            on = ["discarded"]
            "#,
        )
        .unwrap();
        assert_eq!(config.queues["default"].concurrency(1), 10);
        let task = &config.tasks["report.build"];
        assert_eq!(task.timeout, Some(Duration::from_secs(60)));
        assert_eq!(config.worker.lease, Some(Duration::from_secs(30)));
    }

    #[test]
    fn errors_name_the_offending_key() {
        let err = parse("[worker]\nshutdown_timout = \"30s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("shutdown_timout"), "{err}");
        let err = parse("[worker]\nlease = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[worker] lease") && err.contains("not a duration"),
            "{err}"
        );
        let err = parse("[tasks.\"a.b\"]\ntimeout = \"5s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tasks.\"a.b\".command"), "{err}");
        let err = parse("[queues]\ndefault = 0\n").unwrap_err().to_string();
        assert!(err.contains("queues.default"), "{err}");
        let err = parse("[[hooks]]\ncommand = [\"x\"]\non = [\"running\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hooks[0].on"), "{err}");
        let err = parse("[tasks.k]\ncommand = [\"x\"]\nenv_pass = [\"A=B\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tasks.\"k\".env_pass") && err.contains("A=B"),
            "{err}"
        );
        // The engine's rules for [worker], named as the config writes them; hooks' settings.
        let hook = "[[hooks]]\ncommand = [\"x\"]";
        for (text, said) in [
            (
                "[worker]\nlease = \"0s\"",
                "[worker] lease 0s is shorter than 500ms",
            ),
            (
                "[worker]\ncounts_cap = 0",
                "[worker] counts_cap must be positive",
            ),
            (
                "[worker]\npoll_interval = \"1ms\"",
                "[worker] poll_interval 1ms",
            ),
            (&format!("{hook}\non = []"), "hooks[0].on"),
            (&format!("{hook}\ntimeout = \"0s\""), "hooks[0].timeout"),
        ] {
            let err = parse(&format!("{text}\n")).unwrap_err().to_string();
            assert!(err.contains(said), "{text}: {err}");
        }
        for bad in ["\"\"", "\"A=B\"", "DROVER_JOB_ID"] {
            let err = parse(&format!(
                "[tasks.k]\ncommand = [\"x\"]\nenv = {{ {bad} = \"v\" }}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("tasks.\"k\".env"), "{bad}: {err}");
        }
        let err = parse("[[hooks]]\ncommand = [\"x\"]\nenv_pass = [\"1X\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hooks[0].env_pass"), "{err}");
    }

    #[test]
    fn database_tls_settings_parse_and_bad_modes_are_refused() {
        let config = parse(
            "[database]\nsslmode = \"verify-full\"\nsslrootcert = \"/etc/ca.pem\"\n\
             sslcert = \"c.pem\"\nsslkey = \"c.key\"\n",
        )
        .unwrap();
        let tls = config.database.tls().unwrap();
        assert_eq!(tls.mode, Some(drover_postgres::SslMode::VerifyFull));
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(tls.client_key, Some(PathBuf::from("c.key")));
        let err = parse("[database]\nsslmode = \"allow\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("database.sslmode") && err.contains("allow"),
            "{err}"
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("five").is_err());
        assert_eq!(parse_duration("PT30S").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn days_and_weeks_are_fixed_lengths_months_are_refused() {
        assert_eq!(
            parse_duration("2d").unwrap(),
            Duration::from_secs(2 * 86_400)
        );
        assert_eq!(
            parse_duration("1w 1d").unwrap(),
            Duration::from_secs(8 * 86_400)
        );
        assert_eq!(
            parse_duration("P1DT12H").unwrap(),
            Duration::from_secs(36 * 3600)
        );
        let err = parse_duration("1M").unwrap_err();
        assert!(err.contains("one of the units w, d"), "{err}");
        assert!(!err.contains("years"), "{err}");
        let err = parse_duration("1 month").unwrap_err();
        assert!(err.contains("no fixed length"), "{err}");
        let err = parse_duration("99999999999d").unwrap_err();
        assert!(err.contains("99999999999d"), "{err}");
    }
}
