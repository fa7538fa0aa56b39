//! `--scenario steady`: a producer enqueues at a fixed rate (`--rate`, by default half the
//! drain rate measured just before) for `--duration` while the workers drain, as a service
//! under load runs, rather than a backlog. Reported: enqueue→start p50, p99 and max over the
//! whole run, and (with `--plot`) the completions per second over time and the slowest start of
//! the jobs enqueued in each [`WINDOW`], which shows when a tail happened (to line up with the
//! server's log) and whether it was one stall or many.
//!
//! The producer wakes every [`TICK`] and enqueues, in one call, the jobs that have come due at
//! the rate since its last call; a job's latency runs from just before that call to the moment
//! its handler starts. With `--job-ms N` every job holds its slot for N ms (as `drover.sleep`
//! does), so that `--concurrency` bounds the rate the workers can take.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use drover::{JobContext, JobError, RawTask};
use drover_core::{DynStore, JobId, NewJob};
use tokio::sync::mpsc;

use super::{QUEUE, Run, bench_engine, client};
use crate::cli::BenchArgs;

/// How often the producer enqueues what has come due.
const TICK: Duration = Duration::from_millis(2);

/// How often the completions are sampled for the plot.
const SAMPLE: Duration = Duration::from_millis(100);

/// The span of enqueue times over which the plot shows the slowest start.
pub(super) const WINDOW: Duration = Duration::from_millis(100);

/// Longest the workers may take, after the last enqueue, to start the last job.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Stamps its start, then holds its slot for the configured time.
struct SteadyTask {
    started: mpsc::UnboundedSender<(JobId, Instant)>,
    hold: Duration,
}

#[async_trait]
impl RawTask for SteadyTask {
    fn kind(&self) -> &str {
        "bench.steady"
    }

    async fn run_raw(&self, ctx: JobContext, _args: String) -> Result<(), JobError> {
        let _ = self.started.send((ctx.id(), Instant::now()));
        if !self.hold.is_zero() {
            tokio::time::sleep(self.hold).await;
        }
        Ok(())
    }
}

/// One steady run at `rate` jobs/s.
pub(super) async fn steady(store: &DynStore, args: &BenchArgs, rate: f64) -> anyhow::Result<Run> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = SteadyTask {
        started: tx,
        hold: Duration::from_millis(args.job_ms),
    };
    let handle = bench_engine(store, args.concurrency, args.prefetch, Arc::new(task))?.start();
    let client = client(store);
    // Let the engine settle into its idle wait.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let total = ((rate * args.duration.as_secs_f64()).round() as usize).max(1);
    let mut sent: HashMap<JobId, Instant> = HashMap::with_capacity(total);
    let mut timeline = vec![(0.0, 0)];
    let mut next_sample = SAMPLE;
    let mut enqueued = 0usize;
    let start = Instant::now();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample = |timeline: &mut Vec<(f64, u64)>, completed: u64| {
        if start.elapsed() >= next_sample {
            timeline.push((start.elapsed().as_secs_f64(), completed));
            next_sample += SAMPLE;
        }
    };
    while enqueued < total {
        ticks.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(total);
        if due > enqueued {
            let jobs = steady_jobs(enqueued..due);
            let before = Instant::now();
            for job in client.insert(jobs).await? {
                sent.insert(job.id, before);
            }
            enqueued = due;
        }
        sample(&mut timeline, handle.stats().completed);
    }
    let last_enqueue = Instant::now();
    loop {
        let completed = handle.stats().completed;
        if completed >= total as u64 {
            break;
        }
        if last_enqueue.elapsed() > DRAIN_LIMIT {
            anyhow::bail!(
                "the workers did not keep up: {completed} of {total} jobs done {DRAIN_LIMIT:?} \
                 after the last enqueue (lower --rate)"
            );
        }
        sample(&mut timeline, completed);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    timeline.push((secs, total as u64));
    handle.shutdown().await;

    let starts = start_latencies(&mut rx, &sent, total)?;
    Ok(Run {
        n: total,
        secs,
        slowest: slowest_per_window(&starts, start),
        latencies_ms: starts.into_iter().map(|(_, ms)| ms).collect(),
        timeline,
    })
}

/// The jobs numbered `range`, as the steady load enqueues them.
fn steady_jobs(range: std::ops::Range<usize>) -> Vec<NewJob> {
    range
        .map(|i| {
            let mut job = NewJob::new("bench.steady", format!(r#"{{"i":{i}}}"#));
            job.queue = QUEUE.into();
            job
        })
        .collect()
}

/// Each job's enqueue time and latency in ms, from just before its enqueue to its start as the
/// handler reported it; an error unless all `total` jobs reported.
fn start_latencies(
    rx: &mut mpsc::UnboundedReceiver<(JobId, Instant)>,
    sent: &HashMap<JobId, Instant>,
    total: usize,
) -> anyhow::Result<Vec<(Instant, f64)>> {
    let mut latencies = Vec::with_capacity(total);
    while let Ok((id, started)) = rx.try_recv() {
        if let Some(before) = sent.get(&id) {
            let ms = started.duration_since(*before).as_secs_f64() * 1000.0;
            latencies.push((*before, ms));
        }
    }
    if latencies.len() < total {
        anyhow::bail!(
            "only {} of {total} jobs reported their start",
            latencies.len()
        );
    }
    Ok(latencies)
}

/// The slowest latency among the jobs enqueued in each [`WINDOW`] since `start`, as (seconds
/// at the window's middle, ms), in time order.
fn slowest_per_window(starts: &[(Instant, f64)], start: Instant) -> Vec<(f64, f64)> {
    let mut slowest: Vec<f64> = Vec::new();
    for (enqueued, ms) in starts {
        let window = (enqueued.duration_since(start).as_secs_f64() / WINDOW.as_secs_f64()) as usize;
        if slowest.len() <= window {
            slowest.resize(window + 1, 0.0);
        }
        slowest[window] = slowest[window].max(*ms);
    }
    slowest
        .into_iter()
        .enumerate()
        .map(|(i, ms)| ((i as f64 + 0.5) * WINDOW.as_secs_f64(), ms))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_start_of_each_window_in_time_order() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let starts = [(at(250), 3.0), (at(10), 1.0), (at(90), 7.0), (at(260), 2.0)];
        let windows: Vec<(u64, f64)> = slowest_per_window(&starts, start)
            .into_iter()
            .map(|(secs, ms)| ((secs * 1000.0).round() as u64, ms))
            .collect();
        assert_eq!(windows, vec![(50, 7.0), (150, 0.0), (250, 3.0)]);
    }
}
