//! Prometheus metrics: what the engine did (enqueues, outcomes, durations, rescues, cron fires,
//! archived rows), what the database holds (queue depth per state, the oldest waiting job), and
//! how long store operations take.
//!
//! Labels are queue and kind (and outcome, state, op) only, never job ids or args, and past
//! [`MAX_LABELED_PAIRS`] (queue, kind) pairs the jobs of new pairs share one label
//! ([`budget`]), so the number of series stays bounded. Series of the configured queues and
//! kinds exist from the start, at zero, so that a rate or an alert has something to work on
//! before the first job.
//!
//! Counters and histograms are recorded where the work happens: store operations by
//! [`MeteredStore`], outcomes by the completer and by remote (HTTP) workers' leases (through
//! [`Metrics::finished`], which also counts them per minute for the cluster's throughput, see
//! [`throughput`]). Gauges are
//! set from the cached counts just before each scrape ([`Metrics::observe`]).

mod autoscaler;
mod budget;
mod store;
pub mod throughput;

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use drover_core::{JobState, Outcome, QueueRecord};
use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use budget::{MAX_LABELED_PAIRS, OTHER};
pub use store::MeteredStore;

/// Labels of a job metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// Queue.
    pub queue: String,
    /// Kind.
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    queue: String,
    kind: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStateLabels {
    queue: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: u16,
}

/// The outcome names used as label values.
const OUTCOMES: [&str; 5] = [
    "completed",
    "retried",
    "discarded",
    "cancelled",
    "handed_back",
];

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed => "completed",
        Outcome::Retry { .. } => "retried",
        Outcome::Discard { .. } => "discarded",
        Outcome::Cancelled { .. } => "cancelled",
        Outcome::HandBack { .. } => "handed_back",
    }
}

fn seconds_histogram() -> Histogram {
    // 1 ms to about 4.7 hours, doubling.
    Histogram::new(exponential_buckets(0.001, 2.0, 25))
}

fn fast_histogram() -> Histogram {
    // 50 µs to about 6.5 s, doubling: store operations.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// Every metric of one process.
pub struct Metrics {
    registry: Registry,
    enqueued: Family<JobLabels, Counter>,
    finished: Family<OutcomeLabels, Counter>,
    duration: Family<JobLabels, Histogram, fn() -> Histogram>,
    queue_wait: Family<JobLabels, Histogram, fn() -> Histogram>,
    queue_jobs: Family<QueueStateLabels, Gauge>,
    oldest_available: Family<QueueLabels, Gauge<f64, AtomicU64>>,
    workers_busy: Gauge,
    leases_expired: Family<JobLabels, Counter>,
    outcomes_refused: Counter,
    leader: Gauge,
    database_up: Gauge,
    cron_fires: Family<JobLabels, Counter>,
    archive_rows: Family<TableLabels, Counter>,
    store_seconds: Family<OpLabels, Histogram, fn() -> Histogram>,
    http_requests: Family<HttpLabels, Counter>,
    /// Outcomes per minute and queue, waiting for the presence heartbeat to flush them.
    throughput: throughput::Throughput,
    /// The (queue, kind) pairs with series of their own.
    budget: budget::LabelBudget,
    /// Queues seen by the last [`Metrics::observe`], whose gauges must be reset when a queue
    /// disappears from the counts.
    seen_queues: Mutex<Vec<String>>,
    autoscaler: autoscaler::AutoscalerSeries,
    /// The autoscaler whose numbers are exported, when this engine runs one.
    autoscaler_source:
        std::sync::OnceLock<std::sync::Arc<crate::autoscaler::metrics::AutoscalerMetrics>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every Drover metric, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            enqueued: Family::default(),
            finished: Family::default(),
            duration: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
            queue_wait: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
            queue_jobs: Family::default(),
            oldest_available: Family::default(),
            workers_busy: Gauge::default(),
            leases_expired: Family::default(),
            outcomes_refused: Counter::default(),
            leader: Gauge::default(),
            database_up: Gauge::default(),
            cron_fires: Family::default(),
            archive_rows: Family::default(),
            store_seconds: Family::new_with_constructor(fast_histogram as fn() -> Histogram),
            http_requests: Family::default(),
            throughput: Default::default(),
            budget: budget::LabelBudget::new(MAX_LABELED_PAIRS),
            seen_queues: Mutex::new(Vec::new()),
            autoscaler: Default::default(),
            autoscaler_source: Default::default(),
            registry: Registry::default(),
        };
        metrics.autoscaler.register(&mut registry);
        // The order of registration is the order of the scrape's text.
        metrics.register_job_series(&mut registry);
        metrics.register_process_series(&mut registry);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Registers the series of jobs and queues: enqueued, finished, how long they ran and
    /// waited, and what the queues hold.
    fn register_job_series(&self, r: &mut Registry) {
        r.register(
            "drover_jobs_enqueued",
            "Jobs enqueued (duplicates of a unique key not counted)",
            self.enqueued.clone(),
        );
        r.register(
            "drover_jobs_finished",
            "Runs recorded, by outcome",
            self.finished.clone(),
        );
        r.register(
            "drover_job_duration_seconds",
            "How long a run held its job, from claim to recorded outcome",
            self.duration.clone(),
        );
        r.register(
            "drover_job_queue_wait_seconds",
            "From enqueue to claim",
            self.queue_wait.clone(),
        );
        r.register(
            "drover_queue_jobs",
            "Jobs per queue and state, from the leader's cached count",
            self.queue_jobs.clone(),
        );
        r.register(
            "drover_queue_oldest_available_age_seconds",
            "How long the oldest available job of the queue has waited, at the last count",
            self.oldest_available.clone(),
        );
    }

    /// Registers the series of this process's own work: busy workers, expired leases, refused
    /// outcomes, leadership, cron fires, archived rows, store operations and HTTP requests.
    fn register_process_series(&self, r: &mut Registry) {
        r.register(
            "drover_workers_busy",
            "Runs in progress in this process (local workers and leases of remote workers)",
            self.workers_busy.clone(),
        );
        r.register(
            "drover_leases_expired",
            "Runs whose lease expired and that the rescuer took back",
            self.leases_expired.clone(),
        );
        r.register(
            "drover_outcomes_refused",
            "Outcomes refused because the run had lost its lease",
            self.outcomes_refused.clone(),
        );
        r.register(
            "drover_leader",
            "1 while this process leads, else 0",
            self.leader.clone(),
        );
        r.register(
            "drover_database_up",
            "1 when the scrape's read of the cached queue counts answered, else 0 (the queue \
             gauges then keep the values of the last read that did)",
            self.database_up.clone(),
        );
        r.register(
            "drover_cron_fires",
            "Cron fire times enqueued by this process",
            self.cron_fires.clone(),
        );
        r.register(
            "drover_archive_rows",
            "Rows moved to archive tables by this process",
            self.archive_rows.clone(),
        );
        r.register(
            "drover_store_commit_seconds",
            "Duration of store operations, each its own transaction or part of a group commit",
            self.store_seconds.clone(),
        );
        r.register(
            "drover_http_requests",
            "HTTP requests answered, by route and status",
            self.http_requests.clone(),
        );
    }

    /// Creates the series of a queue and kind at zero, so they exist before the first job.
    pub fn declare(&self, queue: &str, kind: &str) {
        let labels = self.budget.labels(queue, kind);
        let _ = self.enqueued.get_or_create(&labels);
        let _ = self.duration.get_or_create(&labels);
        let _ = self.queue_wait.get_or_create(&labels);
        let _ = self.leases_expired.get_or_create(&labels);
        let _ = self.cron_fires.get_or_create(&labels);
        for outcome in OUTCOMES {
            let _ = self.finished.get_or_create(&OutcomeLabels {
                queue: labels.queue.clone(),
                kind: labels.kind.clone(),
                outcome,
            });
        }
        self.declare_queue(queue);
    }

    /// Exports the numbers of this engine's autoscaler too.
    pub fn attach_autoscaler(
        &self,
        source: std::sync::Arc<crate::autoscaler::metrics::AutoscalerMetrics>,
    ) {
        let _ = self.autoscaler_source.set(source);
    }

    /// Creates the archived-rows series of a retention table at zero.
    pub fn declare_table(&self, table: &str) {
        let _ = self.archive_rows.get_or_create(&TableLabels {
            table: table.into(),
        });
    }

    /// Creates the depth series of a queue at zero.
    pub fn declare_queue(&self, queue: &str) {
        for state in JobState::ALL {
            let _ = self.queue_jobs.get_or_create(&QueueStateLabels {
                queue: queue.into(),
                state: state.as_str(),
            });
        }
        let _ = self.oldest_available.get_or_create(&QueueLabels {
            queue: queue.into(),
        });
    }

    /// Records into the series of `queue` and `kind` in `family`, whose labels `labels` makes
    /// from a job's. The budget is asked only for a pair the family has no series of: a job of
    /// a known pair costs the family's own lookup, as it did before there was a budget (asking
    /// it first cost 4 % of a drain).
    fn series<L, M, C>(
        &self,
        family: &Family<L, M, C>,
        (queue, kind): (&str, &str),
        labels: impl Fn(JobLabels) -> L,
        record: impl FnOnce(&M),
    ) where
        L: Clone + std::hash::Hash + Eq,
        C: MetricConstructor<M>,
    {
        let own = labels(JobLabels {
            queue: queue.into(),
            kind: kind.into(),
        });
        match family.get(&own) {
            Some(metric) => record(&metric),
            None => record(&family.get_or_create(&labels(self.budget.labels(queue, kind)))),
        }
    }

    /// [`Metrics::series`] of a family labelled by queue and kind alone.
    fn job_series<M, C: MetricConstructor<M>>(
        &self,
        family: &Family<JobLabels, M, C>,
        queue: &str,
        kind: &str,
        record: impl FnOnce(&M),
    ) {
        self.series(family, (queue, kind), |labels| labels, record);
    }

    pub(crate) fn enqueued(&self, queue: &str, kind: &str) {
        self.job_series(&self.enqueued, queue, kind, |counter: &Counter| {
            counter.inc();
        });
    }

    /// Records an accepted outcome of a run that held its job for `held`, recorded at `at` (by
    /// the engine's clock): the one place both local and remote workers' outcomes pass.
    pub fn finished(
        &self,
        queue: &str,
        kind: &str,
        outcome: &Outcome,
        held: Duration,
        at: Timestamp,
    ) {
        self.throughput.record(queue, outcome, at);
        let outcome = outcome_name(outcome);
        self.series(
            &self.finished,
            (queue, kind),
            |JobLabels { queue, kind }| OutcomeLabels {
                queue,
                kind,
                outcome,
            },
            |counter: &Counter| {
                counter.inc();
            },
        );
        self.job_series(&self.duration, queue, kind, |histogram| {
            histogram.observe(held.as_secs_f64())
        });
    }

    /// The outcomes counted per minute and not yet flushed to the store.
    pub fn throughput(&self) -> &throughput::Throughput {
        &self.throughput
    }

    /// Records how long a claimed job waited since its enqueue.
    pub fn waited(&self, queue: &str, kind: &str, created_at: Timestamp, now: Timestamp) {
        let wait = now.duration_since(created_at).as_secs_f64().max(0.0);
        self.job_series(&self.queue_wait, queue, kind, |histogram| {
            histogram.observe(wait)
        });
    }

    /// Records an outcome refused for a lost lease.
    pub fn refused(&self) {
        self.outcomes_refused.inc();
    }

    pub(crate) fn lease_expired(&self, queue: &str, kind: &str) {
        self.job_series(&self.leases_expired, queue, kind, |counter: &Counter| {
            counter.inc();
        });
    }

    pub(crate) fn cron_fired(&self, queue: &str, kind: &str) {
        self.job_series(&self.cron_fires, queue, kind, |counter: &Counter| {
            counter.inc();
        });
    }

    pub(crate) fn archived(&self, table: &str, rows: u64) {
        self.archive_rows
            .get_or_create(&TableLabels {
                table: table.into(),
            })
            .inc_by(rows);
    }

    pub(crate) fn store_op(&self, op: &'static str, took: Duration) {
        self.store_seconds
            .get_or_create(&OpLabels { op })
            .observe(took.as_secs_f64());
    }

    /// Records an HTTP answer. `route` is the matched route template (`/api/v1/jobs/{id}`),
    /// never the path itself, so ids never become label values.
    pub fn http_request(&self, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.into(),
                status,
            })
            .inc();
    }

    /// Sets the queue gauges from the cached counts (`None`: the database did not answer, so
    /// they keep their last values and `drover_database_up` reads 0), this process's busy
    /// runs, and its leadership. Called just before a scrape.
    pub fn observe(
        &self,
        queues: Option<&[QueueRecord]>,
        now: Timestamp,
        busy: usize,
        leader: bool,
    ) {
        self.workers_busy.set(busy as i64);
        self.leader.set(i64::from(leader));
        if let Some(source) = self.autoscaler_source.get() {
            self.autoscaler.observe(source);
        }
        self.database_up.set(i64::from(queues.is_some()));
        if let Some(queues) = queues {
            self.observe_queues(queues, now);
        }
    }

    fn observe_queues(&self, queues: &[QueueRecord], now: Timestamp) {
        let mut seen = self.seen_queues.lock().expect("metrics lock poisoned");
        // Queues gone from the counts read zero rather than their last value.
        for gone in seen
            .iter()
            .filter(|q| !queues.iter().any(|r| &r.name == *q))
        {
            for state in JobState::ALL {
                self.queue_jobs
                    .get_or_create(&QueueStateLabels {
                        queue: gone.clone(),
                        state: state.as_str(),
                    })
                    .set(0);
            }
            self.oldest_available
                .get_or_create(&QueueLabels {
                    queue: gone.clone(),
                })
                .set(0.0);
        }
        seen.clear();
        for queue in queues {
            self.declare_queue(&queue.name);
            for state in JobState::ALL {
                self.queue_jobs
                    .get_or_create(&QueueStateLabels {
                        queue: queue.name.clone(),
                        state: state.as_str(),
                    })
                    .set(queue.count(state) as i64);
            }
            let age = queue
                .oldest_available_at
                .map(|at| now.duration_since(at).as_secs_f64().max(0.0))
                .unwrap_or(0.0);
            self.oldest_available
                .get_or_create(&QueueLabels {
                    queue: queue.name.clone(),
                })
                .set(age);
            seen.push(queue.name.clone());
        }
    }

    /// The metrics in the Prometheus text format 0.0.4 (what `promtool check metrics` and every
    /// scraper read).
    pub fn encode_text(&self) -> String {
        prometheus_text(&self.encode_openmetrics())
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// OpenMetrics text to Prometheus text 0.0.4: a counter family is named with its `_total`
/// suffix (OpenMetrics names it without), and there is no `# EOF`.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_their_total_suffix_in_prometheus_text() {
        let metrics = Metrics::new();
        metrics.declare("default", "mail.send");
        metrics.enqueued("default", "mail.send");
        let text = metrics.encode_text();
        assert!(text.contains("# TYPE drover_jobs_enqueued_total counter"));
        assert!(
            text.contains("drover_jobs_enqueued_total{queue=\"default\",kind=\"mail.send\"} 1")
        );
        assert!(text.contains("drover_jobs_finished_total{queue=\"default\",kind=\"mail.send\",outcome=\"discarded\"} 0"));
        assert!(text.contains("# TYPE drover_job_duration_seconds histogram"));
        assert!(!text.contains("# EOF"));
        assert!(metrics.encode_openmetrics().ends_with("# EOF\n"));
    }

    #[test]
    fn kinds_beyond_the_ceiling_are_counted_together() {
        let metrics = Metrics::new();
        for n in 0..MAX_LABELED_PAIRS + 50 {
            metrics.enqueued("q", &format!("user.{n}"));
        }
        let text = metrics.encode_text();
        let enqueued: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("drover_jobs_enqueued_total{"))
            .collect();
        assert_eq!(enqueued.len(), MAX_LABELED_PAIRS + 1);
        assert!(
            text.contains("drover_jobs_enqueued_total{queue=\"(other)\",kind=\"(other)\"} 50"),
            "{}",
            enqueued.last().unwrap()
        );
    }

    #[test]
    fn the_autoscaler_s_numbers_are_exported_counters_by_their_growth() {
        let metrics = Metrics::new();
        let source = std::sync::Arc::new(crate::autoscaler::metrics::AutoscalerMetrics::default());
        metrics.attach_autoscaler(source.clone());
        source.launch("gpu", "success");
        source.launch("gpu", "success");
        source.interruption();
        metrics.observe(Some(&[]), Timestamp::now(), 0, true);
        metrics.observe(Some(&[]), Timestamp::now(), 0, true);
        let text = metrics.encode_text();
        assert!(
            text.contains("drover_autoscaler_launches_total{system=\"gpu\",result=\"success\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("drover_autoscaler_interruptions_total 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE drover_autoscaler_tick_duration_seconds gauge"));
    }
}
