//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::parse_duration;

/// Drover: a durable background-job engine and job server.
#[derive(Debug, Parser)]
#[command(name = "drover", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Database URL: sqlite://PATH (default sqlite://drover.db) or postgres://USER@HOST/DB,
    /// with ?schema=NAME for tables of their own and ?sslmode=… as libpq (an empty
    /// DROVER_DATABASE_URL counts as not set).
    // `--help` would show the variable's value, password and all.
    #[arg(
        long,
        global = true,
        env = "DROVER_DATABASE_URL",
        hide_env_values = true
    )]
    pub(crate) database: Option<String>,

    /// Config file (default ./drover.toml when present; an empty DROVER_CONFIG, as an env file
    /// or a compose file leaves it, counts as not set).
    // Taken as text, since clap refuses an empty path before anything can look at it; and no
    // value shown, as `[env: DROVER_CONFIG=]` read like a broken default.
    #[arg(long, global = true, env = "DROVER_CONFIG", hide_env_values = true)]
    config: Option<String>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// The config file asked for, if any: an empty value is none.
    pub(crate) fn config_path(&self) -> Option<PathBuf> {
        self.config
            .as_deref()
            .filter(|path| !path.is_empty())
            .map(PathBuf::from)
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the job server: every queue of the config (default: `default` with 10 workers).
    Serve(WorkerArgs),
    /// Run workers for some queues.
    Worker(WorkerArgs),
    /// Enqueue one job, or many from a JSONL file.
    Enqueue(EnqueueArgs),
    /// List, inspect, retry and cancel jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Queues: their counts, pause and resume (for every process).
    Queues {
        #[command(subcommand)]
        command: QueuesCommand,
    },
    /// Job counts per queue and state.
    Stats {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Cron schedules of the config.
    Cron {
        #[command(subcommand)]
        command: CronCommand,
    },
    /// The retention archiver: moves old rows from hot tables to their archive tables.
    Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    },
    /// Apply pending schema migrations (also done automatically at start).
    Migrate,
    /// Measure enqueue, drain and latency on a fresh database, as the peers are measured.
    Bench(BenchArgs),
    /// The autoscaler's slots: list, drain, interrupt.
    Slots {
        #[command(subcommand)]
        command: SlotsCommand,
    },
    /// Reserve one lease of a system's capacity; prints the reservation (and, with --wait,
    /// its slot and instance once assigned).
    Reserve(ReserveArgs),
    /// Run the autoscaler on simulated time against a demand trace (CSV: time,system,jobs,
    /// duration) with the config's systems and [autoscaler.sim] capacity.
    Simulate(SimulateArgs),
    /// The open reservations (pending and assigned), oldest first: what holds or waits for
    /// each system's capacity.
    Reservations {
        /// Only this system's.
        #[arg(long)]
        system: Option<String>,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Release a reservation.
    Release {
        /// The reservation's id.
        id: i64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// `drover slots …`.
#[derive(Debug, Subcommand)]
pub(crate) enum SlotsCommand {
    /// Every slot that is not empty, by id.
    List {
        /// Only slots of this system.
        #[arg(long)]
        system: Option<String>,
        /// Empty slots too.
        #[arg(long)]
        all: bool,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Stop giving the slot new leases; its instance is terminated once they are finished.
    Drain {
        /// The slot's id.
        id: i64,
    },
    /// Act as if the slot's instance got an interruption notice: its work is handed back at
    /// once and a replacement launches when demand needs it.
    Interrupt {
        /// The slot's id.
        id: i64,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// The demand trace.
    #[arg(long)]
    pub(crate) demand: std::path::PathBuf,
    /// Print one JSON document.
    #[arg(long)]
    pub(crate) json: bool,
    /// Draw demand, ready slots and waiting work over time into this SVG file.
    #[arg(long)]
    pub(crate) plot: Option<std::path::PathBuf>,
    /// Run once per value of a setting and print the trade-off: warm=0..4 or
    /// idle_timeout=1m,5m,10m.
    #[arg(long)]
    pub(crate) sweep: Option<String>,
    /// Seed of the simulated capacity (overrides [autoscaler.sim] seed).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct ReserveArgs {
    /// The system, as declared in [systems.NAME].
    #[arg(long)]
    pub(crate) system: String,
    /// Time to live, like 10m (default: the system's reservation_ttl).
    #[arg(long, value_parser = crate::config::parse_duration)]
    pub(crate) ttl: Option<std::time::Duration>,
    /// Who holds it (shown in listings).
    #[arg(long, default_value = "cli")]
    pub(crate) holder: String,
    /// Wait until a slot is assigned (at most the time to live).
    #[arg(long)]
    pub(crate) wait: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Jobs for the bulk-enqueue and drain measures.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) jobs: usize,
    /// Jobs for the single-enqueue measure.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) single_jobs: usize,
    /// Worker concurrency for the drain and latency measures.
    #[arg(long, default_value_t = 10)]
    pub(crate) concurrency: usize,
    /// Finished jobs to put in the table before the drain measure (how cost grows with history).
    #[arg(long, default_value_t = 0)]
    pub(crate) history: usize,
    /// Worker processes for the drain-processes measure.
    #[arg(long, default_value_t = 3)]
    pub(crate) processes: usize,
    /// Most jobs each worker pool may claim beyond its free slots (the engine's `prefetch`;
    /// default: automatic, up to 100 × concurrency; 0: claim only for free slots).
    #[arg(long)]
    pub(crate) prefetch: Option<usize>,
    /// Concurrent producers for the concurrent single-enqueue measure.
    #[arg(long, default_value_t = 16)]
    pub(crate) producers: usize,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub(crate) scenario: Scenario,
    /// Repeat every measure this many times and report the median.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Jobs in the latency measure, enqueued one at a time.
    #[arg(long, default_value_t = 200)]
    pub(crate) latency_jobs: usize,
    /// Gap between two enqueues of the latency measure.
    #[arg(long, value_parser = parse_duration, default_value = "5ms")]
    pub(crate) latency_gap: Duration,
    /// Print one JSON object per measure.
    #[arg(long)]
    pub(crate) json: bool,
    /// Draw drain throughput over time and the latency distribution into this SVG file.
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
    /// Steady scenario: jobs enqueued per second (default: half the drain rate, measured first).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Steady scenario: how long the producer enqueues.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub(crate) duration: Duration,
    /// Steady scenario: milliseconds each job holds its slot (as `drover.sleep` does); 0: no-op.
    #[arg(long, default_value_t = 0)]
    pub(crate) job_ms: u64,
}

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    EnqueueBulk,
    EnqueueSingle,
    Drain,
    /// Drain with several `drover worker` processes on one database.
    DrainProcesses,
    Latency,
    /// Enqueue at a fixed rate while workers drain: latency under load (not part of `all`).
    Steady,
    /// The dashboard's and the API's page times on a table of `--jobs` jobs (not part of `all`).
    Pages,
    /// Single-job POSTs to the HTTP API from 32 keep-alive connections (not part of `all`).
    HttpEnqueue,
    /// POSTs of 1,000 jobs to the HTTP API (not part of `all`).
    HttpBatch,
    /// `--jobs` jobs drained by 4 HTTP workers leasing 100 at a time (not part of `all`).
    HttpDrain,
    All,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Queues to work, comma-separated (default: every queue of the config).
    #[arg(long, value_delimiter = ',')]
    pub(crate) queues: Vec<String>,
    /// Jobs run at once per queue (overrides the config; from 1 to 10000).
    #[arg(long, value_parser = clap::builder::TypedValueParser::map(
        clap::value_parser!(u64).range(1..=10_000), |n| n as usize))]
    pub(crate) concurrency: Option<usize>,
    /// How long running jobs may finish after SIGTERM before they are cancelled.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) shutdown_timeout: Option<Duration>,
    /// Serve the HTTP API, dashboard and /metrics on this address (`serve`: default
    /// 127.0.0.1:7070, or env DROVER_LISTEN, or `[http] listen`; `worker`: only when given).
    /// `off` serves nothing.
    #[arg(long)]
    pub(crate) listen: Option<String>,
    /// Serve as this autoscaler slot (started by the `local` runtime).
    #[arg(long, requires = "slot_generation")]
    pub(crate) slot: Option<i64>,
    /// The slot's generation (with --slot).
    #[arg(long, requires = "slot", hide = true)]
    pub(crate) slot_generation: Option<i64>,
}

#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    /// Task kind, like report.build.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub(crate) kind: Option<String>,
    /// Args as a JSON object.
    #[arg(long, default_value = "{}")]
    pub(crate) args: String,
    /// Queue (default: the task's queue, else `default`).
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Higher runs first (default 0; from -32768 to 32767).
    #[arg(long, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(i16::MIN as i64..=i16::MAX as i64))]
    pub(crate) priority: Option<i32>,
    /// Run after this delay, like 30s or 5m.
    #[arg(long, value_parser = parse_duration, conflicts_with = "run_at")]
    pub(crate) delay: Option<Duration>,
    /// Run at this time (RFC 3339, like 2026-12-01T09:00:00Z).
    #[arg(long)]
    pub(crate) run_at: Option<String>,
    /// Attempts before the job is discarded (default 25, or the task's; from 1 to 10000).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub(crate) max_attempts: Option<i32>,
    /// While a job with this key is unfinished, enqueue returns that job instead.
    #[arg(long)]
    pub(crate) unique_key: Option<String>,
    /// Never run the job again once started (an interrupted run is discarded).
    #[arg(long)]
    pub(crate) at_most_once: bool,
    /// Enqueue every line of this JSONL file (`-` for stdin) in one transaction per 1,000 jobs,
    /// after checking every line.
    #[arg(long)]
    pub(crate) file: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueuesCommand {
    /// Each queue with its job counts (from the leader's cached count) and whether it is paused.
    List {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Pause a queue: its jobs wait and no process claims them; running jobs finish.
    Pause {
        /// Queue name.
        queue: String,
    },
    /// Resume a paused queue.
    Resume {
        /// Queue name.
        queue: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CronCommand {
    /// Each schedule, its last fire and its next fire time.
    List {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ArchiveCommand {
    /// Run the retention policies now (the leader also runs them on their schedules).
    Run {
        /// Only this policy (`drover_jobs` is Drover's own finished jobs).
        #[arg(long)]
        policy: Option<String>,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// The retention policies: what each moves, its last run and its next run.
    List {
        /// Print one JSON document (each policy with its last ten runs).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[command(flatten)]
        filter: JobFilterArgs,
        /// Continue after this job id (the last id of the previous page).
        #[arg(long)]
        after: Option<i64>,
        /// Most jobs to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print one JSON document (`{"jobs": [...], "next": ID}`).
        #[arg(long)]
        json: bool,
    },
    /// Show every field of a job and every attempt's error.
    Show {
        /// Job id.
        id: i64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Make a finished job available again (recorded in its history).
    Retry {
        /// Job id.
        id: i64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a waiting job, or ask a running one to stop.
    Cancel {
        /// Job id.
        id: i64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Discard a waiting job (it will not run).
    Discard {
        /// Job id.
        id: i64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Retry, cancel or discard every job matching a filter, in batches.
    Bulk {
        /// retry, cancel or discard.
        action: String,
        #[command(flatten)]
        filter: JobFilterArgs,
        /// Act on every job when no filter is given (refused otherwise, to avoid accidents).
        #[arg(long)]
        all: bool,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// Filters of a job list or bulk action.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct JobFilterArgs {
    /// Only jobs in this state.
    #[arg(long)]
    pub(crate) state: Option<String>,
    /// Only jobs in this queue.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Only jobs of this kind.
    #[arg(long)]
    pub(crate) kind: Option<String>,
    /// Only jobs created at or after this time (RFC 3339).
    #[arg(long)]
    pub(crate) created_after: Option<String>,
    /// Only jobs created before this time (RFC 3339).
    #[arg(long)]
    pub(crate) created_before: Option<String>,
    /// Only jobs finished at or after this time (RFC 3339).
    #[arg(long)]
    pub(crate) finished_after: Option<String>,
    /// Only jobs finished before this time (RFC 3339).
    #[arg(long)]
    pub(crate) finished_before: Option<String>,
    /// Only jobs whose args contain this JSON object, like '{"user":7}'.
    #[arg(long)]
    pub(crate) args: Option<String>,
}
