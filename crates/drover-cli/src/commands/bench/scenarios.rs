//! The scenarios of `drover bench`, each run `--runs` times on a fresh database and recorded as
//! one measure (or two, for the scenarios measured two ways).

use indicatif::ProgressBar;

use super::plot::{self, Series};
use super::target::{Fresh, Target};
use super::{
    Measure, Run, drain, drain_processes, enqueue_bulk, enqueue_single, http_load, latency,
    median_latency_run, steady, summarize,
};
use crate::cli::{BenchArgs, Scenario};
use crate::config::Config;

/// What every scenario needs: where it runs, with which settings, and where it reports progress.
pub(super) struct Bench<'a> {
    pub(super) target: &'a Target,
    pub(super) config: &'a Config,
    pub(super) args: &'a BenchArgs,
    pub(super) progress: &'a ProgressBar,
}

impl Bench<'_> {
    /// Whether `scenario` was asked for, by name or through `all`.
    fn wants(&self, scenario: Scenario) -> bool {
        self.args.scenario == Scenario::All || self.args.scenario == scenario
    }

    /// Runs `run` `--runs` times, each on a fresh database dropped after it, showing `label`
    /// and the run's number meanwhile.
    async fn each_run(
        &self,
        label: &str,
        mut run: impl AsyncFnMut(&Fresh) -> anyhow::Result<Run>,
    ) -> anyhow::Result<Vec<Run>> {
        let mut runs = Vec::with_capacity(self.args.runs);
        for i in 0..self.args.runs {
            self.progress
                .set_message(format!("{label} run {}/{}", i + 1, self.args.runs));
            let fresh = self.target.fresh(self.config).await?;
            runs.push(run(&fresh).await?);
            fresh.finish().await?;
        }
        Ok(runs)
    }
}

/// The measures so far, in the order they were taken, with the lines to plot from their runs.
#[derive(Default)]
pub(super) struct Results {
    pub(super) measures: Vec<Measure>,
    pub(super) throughput_lines: Vec<Series>,
    pub(super) latency_lines: Vec<Series>,
    pub(super) slowest_lines: Vec<Series>,
}

impl Results {
    /// Summarizes `runs` as the measure `name`, printing it at once with `--json` so that a
    /// long benchmark reports as it goes.
    fn record(&mut self, bench: &Bench<'_>, name: &'static str, producers: usize, runs: Vec<Run>) {
        for (i, run) in runs.iter().enumerate() {
            if run.timeline.len() > 1 {
                self.throughput_lines.push(plot::throughput(
                    format!("{name} run {}", i + 1),
                    &run.timeline,
                ));
            }
            if !run.slowest.is_empty() {
                self.slowest_lines.push(Series {
                    label: format!("{name} run {}", i + 1),
                    points: run.slowest.clone(),
                });
            }
        }
        if let Some(run) = median_latency_run(&runs) {
            self.latency_lines
                .push(plot::cdf(name.to_owned(), &run.latencies_ms));
        }
        let m = summarize(bench.target, name, bench.args, producers, runs);
        if bench.args.json {
            outln!("{}", serde_json::to_string(&m).expect("serializable"));
        }
        self.measures.push(m);
    }
}

/// Runs every scenario that `--scenario` asks for except `pages`, which reports on its own.
pub(super) async fn run_measures(bench: &Bench<'_>, results: &mut Results) -> anyhow::Result<()> {
    if bench.wants(Scenario::EnqueueBulk) {
        measure_enqueue_bulk(bench, results).await?;
    }
    if bench.wants(Scenario::EnqueueSingle) {
        measure_enqueue_single(bench, results).await?;
    }
    if bench.wants(Scenario::Drain) {
        measure_drain(bench, results).await?;
    }
    if bench.wants(Scenario::DrainProcesses) {
        measure_drain_processes(bench, results).await?;
    }
    if bench.wants(Scenario::Latency) {
        measure_latency(bench, results).await?;
    }
    // Not part of `all`: it runs for --duration.
    if bench.args.scenario == Scenario::Steady {
        measure_steady(bench, results).await?;
    }
    // Not part of `all`: the server and its load share the machine with nothing else.
    if let Some(scenario) = http_load::HttpScenario::of(bench.args.scenario) {
        measure_http(bench, results, scenario).await?;
    }
    Ok(())
}

async fn measure_enqueue_bulk(bench: &Bench<'_>, results: &mut Results) -> anyhow::Result<()> {
    let jobs = bench.args.jobs;
    let runs = bench
        .each_run("enqueue_bulk", async |fresh| {
            enqueue_bulk(&fresh.store, jobs).await
        })
        .await?;
    results.record(bench, "enqueue_bulk", 1, runs);
    Ok(())
}

/// One producer in sequence (the peers' method), then `--producers` concurrent ones, unless
/// that is also one.
async fn measure_enqueue_single(bench: &Bench<'_>, results: &mut Results) -> anyhow::Result<()> {
    let args = bench.args;
    for producers in [1, args.producers] {
        let label = format!("enqueue_single ({producers} producers)");
        let runs = bench
            .each_run(&label, async |fresh| {
                enqueue_single(&fresh.store, args.single_jobs, producers).await
            })
            .await?;
        results.record(bench, "enqueue_single", producers, runs);
        if producers == args.producers {
            break;
        }
    }
    Ok(())
}

async fn measure_drain(bench: &Bench<'_>, results: &mut Results) -> anyhow::Result<()> {
    let args = bench.args;
    let runs = bench
        .each_run("drain", async |fresh| {
            drain(
                &fresh.store,
                args.jobs,
                args.concurrency,
                args.prefetch,
                args.history,
            )
            .await
        })
        .await?;
    results.record(bench, "drain", 1, runs);
    Ok(())
}

async fn measure_drain_processes(bench: &Bench<'_>, results: &mut Results) -> anyhow::Result<()> {
    let args = bench.args;
    let label = format!("drain with {} processes,", args.processes);
    let runs = bench
        .each_run(&label, async |fresh| drain_processes(fresh, args).await)
        .await?;
    results.record(bench, "drain_processes", args.processes, runs);
    Ok(())
}

/// `latency` with the producer on the worker's own store, then `latency_cross` with the
/// producer on a second store, so that the wake-up crosses the file system.
async fn measure_latency(bench: &Bench<'_>, results: &mut Results) -> anyhow::Result<()> {
    let args = bench.args;
    for cross in [false, true] {
        let name = if cross { "latency_cross" } else { "latency" };
        let runs = bench
            .each_run(name, async |fresh| {
                if !cross {
                    return latency(&fresh.store, &fresh.store, args).await;
                }
                let producer = bench.target.second(bench.config, fresh).await?;
                let run = latency(&fresh.store, &producer, args).await;
                producer.close().await;
                run
            })
            .await?;
        results.record(bench, name, 1, runs);
    }
    Ok(())
}

async fn measure_steady(bench: &Bench<'_>, results: &mut Results) -> anyhow::Result<()> {
    let args = bench.args;
    let rate = steady_rate(bench).await?;
    let label = format!("steady at {rate:.0} jobs/s for {:?},", args.duration);
    let runs = bench
        .each_run(&label, async |fresh| {
            steady::steady(&fresh.store, args, rate).await
        })
        .await?;
    results.record(bench, "steady", 1, runs);
    Ok(())
}

/// The steady load's rate: `--rate`, or else half the rate of one drain without history.
async fn steady_rate(bench: &Bench<'_>) -> anyhow::Result<f64> {
    let args = bench.args;
    Ok(match args.rate {
        Some(rate) if rate > 0.0 => rate,
        Some(_) => anyhow::bail!("--rate must be positive"),
        None => {
            bench
                .progress
                .set_message("steady: measuring the drain rate");
            let fresh = bench.target.fresh(bench.config).await?;
            let run = drain(&fresh.store, args.jobs, args.concurrency, args.prefetch, 0).await?;
            fresh.finish().await?;
            run.n as f64 / run.secs / 2.0
        }
    })
}

async fn measure_http(
    bench: &Bench<'_>,
    results: &mut Results,
    scenario: http_load::HttpScenario,
) -> anyhow::Result<()> {
    let args = bench.args;
    let runs = bench
        .each_run(scenario.name(), async |fresh| {
            http_load::run(&fresh.store, scenario, args).await
        })
        .await?;
    results.record(bench, scenario.name(), scenario.connections(), runs);
    Ok(())
}
