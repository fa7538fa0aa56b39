//! `drover bench`: measures Drover the way the peer queues were measured (the README's Speed
//! section), so that the figures compare side by side: no-op jobs, producer and worker in one process, a fresh
//! database for every run, the median of several runs.
//!
//! - `enqueue_bulk`: N jobs, 1,000 per call (one transaction each).
//! - `enqueue_single`: one job per call, one producer in sequence (the peers' method), and again
//!   with P concurrent producers (what group commit is for).
//! - `drain`: N jobs enqueued first; the clock runs from starting the engine until the last job
//!   is completed in the database.
//! - `latency`: an idle worker; jobs enqueued one at a time, one every gap; from just before the
//!   enqueue call to the moment the handler starts. `latency_cross` does the same through a
//!   second, independent store on the same file, so the wake-up crosses the file system as it
//!   does between processes.
//! - `http_enqueue`, `http_batch`, `http_drain`: the same through the HTTP API (see
//!   [`http_load`]); not part of `all`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use drover::{Client, Engine, EngineConfig, EnqueueRequest, JobContext, JobError, RawTask};
use drover_core::{DynStore, JobId, NewJob};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::cli::{BenchArgs, Scenario};

mod http_load;
mod pages;
mod plot;
mod scenarios;
mod steady;
mod target;

use crate::config::Config;
use crate::output;
use scenarios::{Bench, Results};
use target::Target;

const QUEUE: &str = "bench";
const BULK_CHUNK: usize = 1000;

/// One measure's result, the median of its runs.
#[derive(Debug, Clone, Serialize)]
struct Measure {
    system: &'static str,
    version: &'static str,
    backend: String,
    measure: &'static str,
    n: usize,
    concurrency: usize,
    producers: usize,
    processes: usize,
    /// The prefetch setting: "auto", or the most jobs buffered ("0": none).
    prefetch: String,
    /// Finished jobs in the table during the drain.
    history: usize,
    runs: usize,
    secs: f64,
    jobs_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ms: Option<f64>,
    /// Every run's jobs/s (or p50 for latency), to show the spread.
    all: Vec<f64>,
}

/// One run of one measure.
struct Run {
    n: usize,
    secs: f64,
    latencies_ms: Vec<f64>,
    /// (seconds since start, jobs completed) samples, for the drain plot.
    timeline: Vec<(f64, u64)>,
    /// (seconds since start, slowest enqueue→start in ms) of the jobs enqueued in each
    /// [`steady::WINDOW`], for the steady load's plot; empty for the other measures.
    slowest: Vec<(f64, f64)>,
}

pub(crate) async fn run(
    database: Option<&str>,
    config: &Config,
    args: BenchArgs,
) -> anyhow::Result<()> {
    if args.runs == 0 || args.jobs == 0 || args.concurrency == 0 || args.producers == 0 {
        anyhow::bail!("--runs, --jobs, --concurrency and --producers must be positive");
    }
    let target = Target::new(database)?;
    let progress = progress_bar(args.json);
    let bench = Bench {
        target: &target,
        config,
        args: &args,
        progress: &progress,
    };
    let mut results = Results::default();
    // A run's database outlives the process that the default action of SIGINT ends: a
    // PostgreSQL schema of thousands of jobs, or a SQLite file. Caught, the run stops and its
    // database is removed.
    let interrupted = crate::signals::interrupted();
    let measured = tokio::select! {
        measured = async {
            scenarios::run_measures(&bench, &mut results).await?;
            // Not part of `all`: it fills a table of its own, usually of a million jobs.
            if args.scenario == Scenario::Pages {
                run_pages(&bench).await?;
            }
            anyhow::Ok(())
        } => Ok(measured),
        code = interrupted => Err(code),
    };
    match measured {
        Ok(measured) => measured?,
        Err(code) => {
            progress.finish_and_clear();
            target.remove_all(config).await;
            return Err(anyhow::anyhow!("the runs' databases were removed")
                .context(crate::signals::Interrupted("benchmarking", code)));
        }
    }
    if args.scenario == Scenario::Pages {
        return Ok(());
    }
    progress.finish_and_clear();
    if !args.json {
        print_table(&results.measures);
    }
    if let Some(path) = &args.plot {
        write_plot(&target, &args, &results, path)?;
    }
    Ok(())
}

/// A spinner on stderr when a person is watching; none with `--json` or when piped.
fn progress_bar(json: bool) -> ProgressBar {
    let progress = if std::io::stderr().is_terminal() && !json {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    progress
        .set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("template"));
    progress.enable_steady_tick(Duration::from_millis(120));
    progress
}

/// The `pages` scenario: page load times rather than measures, so it prints its own report.
async fn run_pages(bench: &Bench<'_>) -> anyhow::Result<()> {
    let args = bench.args;
    bench
        .progress
        .set_message(format!("pages: filling {} jobs", args.jobs));
    let fresh = bench.target.fresh(bench.config).await?;
    let times = pages::pages(&fresh.store, args.jobs, 25).await?;
    fresh.finish().await?;
    bench.progress.finish_and_clear();
    pages::print(&times, bench.target.backend(), args.jobs, args.json)
}

fn write_plot(
    target: &Target,
    args: &BenchArgs,
    results: &Results,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let load = if args.scenario == Scenario::Steady {
        format!("steady load for {:?}", args.duration)
    } else {
        format!("{} jobs", args.jobs)
    };
    let title = format!(
        "drover {} on {} ({load}, concurrency {})",
        env!("CARGO_PKG_VERSION"),
        target.backend(),
        args.concurrency
    );
    std::fs::write(
        path,
        plot::render(
            &title,
            &results.throughput_lines,
            &results.latency_lines,
            &results.slowest_lines,
        ),
    )
    .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", path.display()))?;
    if !args.json {
        outln!("plot written to {}", path.display());
    }
    Ok(())
}

/// The latency run with the median p50, to draw.
fn median_latency_run(runs: &[Run]) -> Option<&Run> {
    let mut with_latency: Vec<&Run> = runs.iter().filter(|r| !r.latencies_ms.is_empty()).collect();
    if with_latency.is_empty() {
        return None;
    }
    let p50 = |r: &Run| {
        let mut l = r.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        percentile(&l, 50.0)
    };
    with_latency.sort_by(|a, b| p50(a).total_cmp(&p50(b)));
    Some(with_latency[with_latency.len() / 2])
}

fn noop_jobs(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| {
            let mut job = NewJob::new("drover.noop", format!(r#"{{"i":{i}}}"#));
            job.queue = QUEUE.into();
            job
        })
        .collect()
}

fn client(store: &DynStore) -> Client {
    Client::new(
        store.clone(),
        Arc::new(drover_core::SystemClock),
        Default::default(),
        HashMap::new(),
    )
}

async fn enqueue_bulk(store: &DynStore, n: usize) -> anyhow::Result<Run> {
    let client = client(store);
    let jobs = noop_jobs(n);
    let start = Instant::now();
    for chunk in jobs.chunks(BULK_CHUNK) {
        client.insert(chunk.to_vec()).await?;
    }
    Ok(Run {
        n,
        secs: start.elapsed().as_secs_f64(),
        latencies_ms: Vec::new(),
        timeline: Vec::new(),
        slowest: Vec::new(),
    })
}

async fn enqueue_single(store: &DynStore, n: usize, producers: usize) -> anyhow::Result<Run> {
    let client = client(store);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let client = client.clone();
        let share = n / producers + usize::from(p < n % producers);
        tasks.push(tokio::spawn(async move {
            for i in 0..share {
                let request =
                    EnqueueRequest::raw("drover.noop", format!(r#"{{"i":{i}}}"#)).queue(QUEUE);
                client.enqueue(request).await?;
            }
            Ok::<_, drover::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(Run {
        n,
        secs: start.elapsed().as_secs_f64(),
        latencies_ms: Vec::new(),
        timeline: Vec::new(),
        slowest: Vec::new(),
    })
}

fn bench_engine(
    store: &DynStore,
    concurrency: usize,
    prefetch: Option<usize>,
    task: Arc<dyn RawTask>,
) -> anyhow::Result<Engine> {
    Ok(Engine::builder(store.clone())
        .config(EngineConfig {
            queues: [(QUEUE.to_owned(), concurrency)].into(),
            prefetch,
            // Only wake-ups may explain a quick start.
            poll_interval: Duration::from_secs(60),
            ..EngineConfig::default()
        })
        .builtin_tasks()
        .raw_task(task)
        .build()?)
}

async fn drain(
    store: &DynStore,
    n: usize,
    concurrency: usize,
    prefetch: Option<usize>,
    history: usize,
) -> anyhow::Result<Run> {
    fill_history(store, history).await?;
    let client = client(store);
    for chunk in noop_jobs(n).chunks(BULK_CHUNK) {
        client.insert(chunk.to_vec()).await?;
    }
    let engine = bench_engine(
        store,
        concurrency,
        prefetch,
        Arc::new(drover::builtin::Noop),
    )?;
    let start = Instant::now();
    let handle = engine.start();
    let mut timeline = vec![(0.0, 0)];
    let mut next_sample = Duration::from_millis(50);
    // The engine counts a completion once the store has committed it.
    loop {
        let completed = handle.stats().completed;
        if completed >= n as u64 {
            break;
        }
        if start.elapsed() >= next_sample {
            timeline.push((start.elapsed().as_secs_f64(), completed));
            next_sample += Duration::from_millis(50);
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    timeline.push((secs, n as u64));
    handle.shutdown().await;
    Ok(Run {
        n,
        secs,
        latencies_ms: Vec::new(),
        timeline,
        slowest: Vec::new(),
    })
}

/// Puts `n` finished jobs in the table (in another queue), so that the drain measures how the
/// hot path copes with history: claimed and completed in batches of 10,000 through the store.
async fn fill_history(store: &DynStore, n: usize) -> anyhow::Result<()> {
    const CHUNK: usize = 10_000;
    let client = client(store);
    let mut left = n;
    while left > 0 {
        let batch = left.min(CHUNK);
        let jobs: Vec<NewJob> = noop_jobs(batch)
            .into_iter()
            .map(|mut job| {
                job.queue = "bench_history".into();
                job
            })
            .collect();
        for chunk in jobs.chunks(BULK_CHUNK) {
            client.insert(chunk.to_vec()).await?;
        }
        finish_claimed(store, "bench_history", batch, |_| {
            drover_core::Outcome::Completed
        })
        .await?;
        left -= batch;
    }
    Ok(())
}

/// Claims up to `limit` jobs of `queue` through the store and records `outcome` of each: how
/// the benchmarks put finished jobs in a table without running them.
async fn finish_claimed(
    store: &DynStore,
    queue: &str,
    limit: usize,
    outcome: impl Fn(&drover_core::ClaimedJob) -> drover_core::Outcome,
) -> anyhow::Result<()> {
    let claimed = store
        .job_claim(drover_core::JobClaimParams {
            queue: queue.into(),
            limit,
            owner: "bench".into(),
            lease: Duration::from_secs(600),
            now: None,
        })
        .await?
        .jobs;
    let outcomes = claimed
        .iter()
        .map(|job| drover_core::JobOutcome {
            lease: drover_core::LeaseRef {
                id: job.id,
                lease_token: job.lease_token,
            },
            step: None,
            outcome: outcome(job),
        })
        .collect();
    store
        .job_finish_many(drover_core::JobFinishParams {
            outcomes,
            now: None,
        })
        .await?;
    Ok(())
}

/// Drains `--jobs` jobs with `--processes` real `drover worker` processes (this binary), each
/// with `--concurrency` workers; the clock runs from spawning them until the last job is
/// completed in the database.
/// Whether a job is waiting, scheduled or running.
async fn unfinished(store: &DynStore) -> anyhow::Result<bool> {
    use drover_core::JobState::{Available, Retryable, Running, Scheduled};
    for state in [Available, Running, Scheduled, Retryable] {
        let params = drover_core::JobListParams {
            state: Some(state),
            limit: 1,
            ..Default::default()
        };
        if !store.job_list(params).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Jobs completed, from a count of the whole table.
async fn completed_jobs(store: &DynStore) -> anyhow::Result<u64> {
    Ok(store
        .job_count_by_queue()
        .await?
        .iter()
        .filter(|c| c.state == drover_core::JobState::Completed)
        .map(|c| c.count)
        .sum())
}

async fn drain_processes(fresh: &target::Fresh, args: &BenchArgs) -> anyhow::Result<Run> {
    let client = client(&fresh.store);
    for chunk in noop_jobs(args.jobs).chunks(BULK_CHUNK) {
        client.insert(chunk.to_vec()).await?;
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("drover.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\n{}poll_interval = \"60s\"\n\n[jobs_archive]\nenabled = false\n",
            args.prefetch
                .map(|n| format!("prefetch = {n}\n"))
                .unwrap_or_default()
        ),
    )?;
    let exe = std::env::current_exe()?;
    let start = Instant::now();
    let mut children = Vec::new();
    for _ in 0..args.processes {
        children.push(
            tokio::process::Command::new(&exe)
                .args(["worker", "--queues", QUEUE, "--concurrency"])
                .arg(args.concurrency.to_string())
                .env("DROVER_DATABASE_URL", &fresh.url)
                .env("DROVER_CONFIG", &config)
                .env("DROVER_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()?,
        );
    }
    let mut timeline = vec![(0.0, 0)];
    let mut next_sample = Duration::from_millis(100);
    let completed = loop {
        // Whether any job is left to run, from the live states' indexes: a count of the
        // whole table every few milliseconds took a good part of a core from the workers.
        // The plot's samples count it less often.
        if start.elapsed() >= next_sample {
            let done = completed_jobs(&fresh.store).await?;
            timeline.push((start.elapsed().as_secs_f64(), done));
            next_sample += Duration::from_millis(100);
        }
        if !unfinished(&fresh.store).await? {
            let done = completed_jobs(&fresh.store).await?;
            timeline.push((start.elapsed().as_secs_f64(), done));
            if done >= args.jobs as u64 {
                break done;
            }
        }
        for child in &mut children {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("a worker process exited early ({status})");
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let secs = start.elapsed().as_secs_f64();
    for child in &children {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for child in &mut children {
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    Ok(Run {
        n: completed as usize,
        secs,
        latencies_ms: Vec::new(),
        timeline,
        slowest: Vec::new(),
    })
}

/// Reports the moment each job's handler starts.
struct Stamp(mpsc::UnboundedSender<(JobId, Instant)>);

#[async_trait]
impl RawTask for Stamp {
    fn kind(&self) -> &str {
        "bench.stamp"
    }

    async fn run_raw(&self, ctx: JobContext, _args: String) -> Result<(), JobError> {
        let _ = self.0.send((ctx.id(), Instant::now()));
        Ok(())
    }
}

async fn latency(store: &DynStore, producer: &DynStore, args: &BenchArgs) -> anyhow::Result<Run> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = bench_engine(store, args.concurrency, args.prefetch, Arc::new(Stamp(tx)))?.start();
    let client = client(producer);
    // Let the engine settle into its idle wait.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut sent = HashMap::new();
    let start = Instant::now();
    for _ in 0..args.latency_jobs {
        let before = Instant::now();
        let job = client
            .enqueue(EnqueueRequest::raw("bench.stamp", "{}").queue(QUEUE))
            .await?;
        sent.insert(job.id, before);
        tokio::time::sleep(args.latency_gap).await;
    }
    let mut latencies = Vec::with_capacity(args.latency_jobs);
    while latencies.len() < args.latency_jobs {
        let (id, started) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .map_err(|_| anyhow::anyhow!("a latency job did not start within 30 s"))?
            .ok_or_else(|| anyhow::anyhow!("engine stopped"))?;
        let before = sent[&id];
        latencies.push(started.duration_since(before).as_secs_f64() * 1000.0);
    }
    let secs = start.elapsed().as_secs_f64();
    handle.shutdown().await;
    Ok(Run {
        n: args.latency_jobs,
        secs,
        latencies_ms: latencies,
        timeline: Vec::new(),
        slowest: Vec::new(),
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summarize(
    target: &Target,
    name: &'static str,
    args: &BenchArgs,
    producers: usize,
    runs: Vec<Run>,
) -> Measure {
    let n = runs[0].n;
    let mut secs: Vec<f64> = runs.iter().map(|r| r.secs).collect();
    let mut rates: Vec<f64> = runs.iter().map(|r| r.n as f64 / r.secs).collect();
    let latency = !runs[0].latencies_ms.is_empty();
    let (p50, p99, max, all) = if latency {
        summarize_latencies(&runs)
    } else {
        (None, None, None, rates.clone())
    };
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let runs_workers = runs_workers(name);
    Measure {
        system: "drover",
        version: env!("CARGO_PKG_VERSION"),
        backend: target.backend().to_owned(),
        measure: name,
        n,
        concurrency: if runs_workers { args.concurrency } else { 1 },
        producers: if name == "drain_processes" {
            1
        } else {
            producers
        },
        processes: if name == "drain_processes" {
            producers
        } else {
            1
        },
        history: if name == "drain" { args.history } else { 0 },
        prefetch: if runs_workers {
            args.prefetch
                .map_or_else(|| "auto".to_owned(), |n| n.to_string())
        } else {
            "0".to_owned()
        },
        runs: runs.len(),
        secs: round(median(&mut secs)),
        jobs_per_sec: median(&mut rates).round(),
        p50_ms: p50.map(round),
        p99_ms: p99.map(round),
        max_ms: max.map(round),
        all: all.into_iter().map(round).collect(),
    }
}

/// Whether the measure `name` runs jobs through workers, so that `--concurrency` and
/// `--prefetch` apply to it; the enqueue measures run none.
fn runs_workers(name: &str) -> bool {
    matches!(
        name,
        "drain" | "drain_processes" | "latency" | "latency_cross" | "steady"
    )
}

/// The medians over the runs of each run's p50, p99 and maximum latency, with every run's p50
/// to show the spread.
fn summarize_latencies(runs: &[Run]) -> (Option<f64>, Option<f64>, Option<f64>, Vec<f64>) {
    let per_run: Vec<(f64, f64, f64)> = runs
        .iter()
        .map(|r| {
            let mut l = r.latencies_ms.clone();
            l.sort_by(f64::total_cmp);
            (
                percentile(&l, 50.0),
                percentile(&l, 99.0),
                *l.last().unwrap(),
            )
        })
        .collect();
    let mut p50s: Vec<f64> = per_run.iter().map(|r| r.0).collect();
    let mut p99s: Vec<f64> = per_run.iter().map(|r| r.1).collect();
    let mut maxes: Vec<f64> = per_run.iter().map(|r| r.2).collect();
    let all = p50s.clone();
    (
        Some(median(&mut p50s)),
        Some(median(&mut p99s)),
        Some(median(&mut maxes)),
        all,
    )
}

fn print_table(results: &[Measure]) {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|m| {
            vec![
                m.measure.to_owned(),
                m.backend.clone(),
                m.n.to_string(),
                m.concurrency.to_string(),
                m.producers.to_string(),
                m.processes.to_string(),
                format!("{:.0}", m.jobs_per_sec),
                m.p50_ms
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "-".into()),
                m.p99_ms
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "-".into()),
                m.max_ms
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "-".into()),
                m.runs.to_string(),
            ]
        })
        .collect();
    output::table(
        &[
            "MEASURE",
            "BACKEND",
            "N",
            "CONC",
            "PRODUCERS",
            "PROCESSES",
            "JOBS/S",
            "P50 MS",
            "P99 MS",
            "MAX MS",
            "RUNS",
        ],
        &rows,
    );
    outln!("(medians of the runs; latency measures report jobs/s of the paced enqueue only)");
}
