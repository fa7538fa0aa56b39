//! The simulator: the same [`tick`] on simulated time, with the [`SimRuntime`] and the
//! [`MemoryCapacityStore`], against a demand trace. Each job of the trace is a reservation
//! held for the job's duration once assigned; a job handed back by an interruption starts
//! again on another slot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use drover_core::{
    Clock, ReservationId, ReservationInsertParams, ReservationReleaseParams, SimulatedClock,
    SlotId, SlotListParams, SlotState, Store, StoreError,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::config::AutoscalerConfig;
use super::memory::MemoryCapacityStore;
use super::metrics::{AutoscalerMetrics, MetricsSnapshot};
use super::sim::{SimConfig, SimRuntime};
use super::tick::{TickInputs, tick_with_slots};

/// Jobs arriving at one time: one row of the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    /// Time from the start of the trace.
    pub at: Duration,
    /// The system they need.
    pub system: String,
    /// How many.
    pub jobs: u32,
    /// How long each runs once started.
    pub duration: Duration,
}

fn parse_time(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        if secs.is_nan() {
            return Err(format!("{text:?} is not a number of seconds"));
        }
        if secs < 0.0 {
            return Err(format!("{text:?} is negative"));
        }
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{text:?} is too long to be a time or a duration"));
    }
    // The same durations as everywhere else: `90s`, `1h30m`, `2d`, `1w`.
    drover_core::validate::parse_duration(text)
}

/// Most jobs a trace may hold: a simulation holds each as a reservation, and 10,000 took 8 s
/// of a core here.
pub const MAX_TRACE_JOBS: u64 = 20_000;

/// Latest arrival a trace may have: the simulation ticks every few seconds of simulated time
/// from the start to the end.
pub const MAX_TRACE_SPAN: Duration = Duration::from_secs(30 * 86_400);

/// Longest a job of a trace may run: the simulation runs on for twice this long after the last
/// arrival (see [`SimulationOptions::max_drain`]), so that such a job can wait a day for a
/// slot and still be seen to end.
pub const MAX_JOB_DURATION: Duration = Duration::from_secs(86_400);

/// Parses a trace: CSV with the header `time,system,jobs,duration`; times and durations in
/// seconds or like `1h30m`; `#` starts a comment line. Rows may come in any order. At most
/// [`MAX_TRACE_JOBS`] jobs, arriving within [`MAX_TRACE_SPAN`], each running at most
/// [`MAX_JOB_DURATION`].
pub fn parse_trace(text: &str) -> Result<Vec<Arrival>, String> {
    let mut total: u64 = 0;
    let mut rows = Vec::new();
    let mut header = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if !header {
            if fields != ["time", "system", "jobs", "duration"] {
                return Err(format!(
                    "line {}: the header must be time,system,jobs,duration",
                    i + 1
                ));
            }
            header = true;
            continue;
        }
        let at = |what: &str| format!("line {}: {what}", i + 1);
        let [time, system, jobs, duration] = fields[..] else {
            return Err(at("want 4 fields: time,system,jobs,duration"));
        };
        drover_core::validate::check_name("system", system).map_err(|e| at(&e.to_string()))?;
        let arrival = Arrival {
            at: parse_time(time).map_err(|e| at(&format!("time {e}")))?,
            system: system.to_owned(),
            jobs: jobs
                .parse()
                .map_err(|_| at(&format!("jobs {jobs:?} is not a whole number")))?,
            duration: parse_time(duration).map_err(|e| at(&format!("duration {e}")))?,
        };
        if arrival.at > MAX_TRACE_SPAN {
            return Err(at(&format!(
                "time {time} is past the longest trace, {} days",
                MAX_TRACE_SPAN.as_secs() / 86_400
            )));
        }
        if arrival.duration > MAX_JOB_DURATION {
            return Err(at(&format!(
                "duration {duration} is longer than a day: the simulation runs on for two days \
                 after the last arrival, and a longer job might never be seen to end"
            )));
        }
        total += u64::from(arrival.jobs);
        if total > MAX_TRACE_JOBS {
            return Err(at(&format!(
                "the trace has more than {MAX_TRACE_JOBS} jobs by this line: a simulation \
                 holds each one; split it, or scale the counts down"
            )));
        }
        rows.push(arrival);
    }
    if !header {
        return Err("the trace is empty: want a header time,system,jobs,duration".into());
    }
    rows.sort_by_key(|r| r.at);
    Ok(rows)
}

/// Settings of one simulation.
#[derive(Debug, Clone)]
pub struct SimulationOptions {
    /// The simulated capacity.
    pub sim: SimConfig,
    /// Price of a slot-hour per system (cost is reported where one is given).
    pub prices: BTreeMap<String, f64>,
    /// Time between two samples of the plot's series. Default 1 minute.
    pub sample_every: Duration,
    /// Longest simulated time after the last arrival to let the work finish. Default two days.
    pub max_drain: Duration,
}

impl Default for SimulationOptions {
    fn default() -> Self {
        Self {
            sim: SimConfig::default(),
            prices: BTreeMap::new(),
            sample_every: Duration::from_secs(60),
            max_drain: 2 * MAX_JOB_DURATION,
        }
    }
}

/// What one system went through.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SystemReport {
    /// The system.
    pub system: String,
    /// Hours of slots holding an instance (launching to draining).
    pub slot_hours: f64,
    /// Of which ready and holding no lease.
    pub idle_slot_hours: f64,
    /// Launches that made an instance.
    pub launches: u64,
    /// Launches that failed, and slots that did not boot in time.
    pub failed_launches: u64,
    /// Hand-backs of running jobs by interruptions, each later completed elsewhere.
    pub interruptions_survived: u64,
    /// Jobs in the trace.
    pub jobs_arrived: u64,
    /// Jobs that ran to their end.
    pub jobs_completed: u64,
    /// Jobs that never started; their wait counts as lasting to the end of the run.
    pub jobs_never_started: u64,
    /// Wait from arrival to first start, in seconds: median.
    pub wait_p50_s: f64,
    /// 95th percentile.
    pub wait_p95_s: f64,
    /// Longest.
    pub wait_max_s: f64,
    /// `slot_hours` times the price, when a price is given.
    pub cost: Option<f64>,
}

/// One point of the plot's series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Simulated seconds from the start.
    pub at_s: f64,
    /// The system.
    pub system: String,
    /// Jobs arrived and not finished (waiting or running).
    pub demand: u64,
    /// Ready slots.
    pub ready: u64,
    /// Jobs waiting for a slot.
    pub waiting: u64,
}

/// The result of a simulation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimulationReport {
    /// Per system, by name.
    pub systems: Vec<SystemReport>,
    /// Series for the plot.
    pub samples: Vec<Sample>,
    /// Simulated time, in seconds.
    pub simulated_s: f64,
    /// Ticks run.
    pub ticks: u64,
}

#[derive(Debug)]
struct Job {
    system: String,
    arrival: Timestamp,
    duration: Duration,
    started: Option<Timestamp>,
    first_start: Option<Timestamp>,
    handbacks: u64,
}

/// What the run keeps besides the store: the jobs and the accounting.
#[derive(Default)]
struct Books {
    jobs: HashMap<ReservationId, Job>,
    /// Running jobs and the slot each runs on (a job moved to another slot was handed back).
    running: HashMap<ReservationId, SlotId>,
    waits: BTreeMap<String, Vec<f64>>,
    systems: BTreeMap<String, SystemReport>,
}

impl Books {
    /// Books with an empty report for every configured system, so that a system no job asked
    /// for is still reported.
    fn for_systems(config: &AutoscalerConfig) -> Books {
        let mut books = Books::default();
        for name in config.systems.keys() {
            books.systems.insert(
                name.clone(),
                SystemReport {
                    system: name.clone(),
                    ..Default::default()
                },
            );
        }
        books
    }
}

fn secs(d: SignedDuration) -> f64 {
    d.as_secs_f64().max(0.0)
}

fn after(ts: Timestamp, d: Duration) -> Timestamp {
    ts.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// Runs the trace through the tick on simulated time. Deterministic for one seed.
pub async fn simulate(
    config: &AutoscalerConfig,
    trace: &[Arrival],
    options: &SimulationOptions,
) -> Result<SimulationReport, StoreError> {
    let start: Timestamp = "2030-01-01T00:00:00Z".parse().expect("valid");
    let clock = SimulatedClock::new(start);
    let runtime = SimRuntime::new(Arc::new(clock.clone()), options.sim.clone());
    let store = MemoryCapacityStore::new();
    let metrics = AutoscalerMetrics::default();
    let inputs = TickInputs {
        store: &store,
        runtime: &runtime,
        config,
        clock: &clock,
        metrics: &metrics,
    };
    let mut books = Books::for_systems(config);
    let last_arrival = trace.last().map_or(Duration::ZERO, |a| a.at);
    let give_up = after(start, last_arrival + options.max_drain);
    let (mut next, mut ticks, mut next_sample) = (0, 0u64, start);
    let mut samples = Vec::new();
    loop {
        let now = clock.now();
        while next < trace.len() && after(start, trace[next].at) <= now {
            arrive(&store, &mut books, &trace[next], start, now).await?;
            next += 1;
        }
        let (_, slots) = tick_with_slots(inputs).await?;
        ticks += 1;
        follow_jobs(&store, &mut books, now).await?;
        account(
            &slots,
            &mut books,
            config,
            now,
            &mut next_sample,
            options,
            start,
            &mut samples,
        );
        let done = next == trace.len() && books.jobs.is_empty();
        if (done && fleet_settled(&store, config).await?) || now >= give_up {
            break;
        }
        clock.advance(SignedDuration::try_from(config.interval).expect("validated"));
    }
    count_never_started(&mut books, clock.now());
    let systems = system_reports(books, &metrics.snapshot(), options);
    Ok(SimulationReport {
        systems,
        samples,
        simulated_s: secs(clock.now().duration_since(start)),
        ticks,
    })
}

/// Jobs that never started wait until the end of the run: counted so, they make the wait
/// percentiles lower bounds instead of leaving them out (a run where no job started reported
/// waits of 0 s).
fn count_never_started(books: &mut Books, end: Timestamp) {
    for job in books.jobs.values().filter(|job| job.first_start.is_none()) {
        books
            .waits
            .entry(job.system.clone())
            .or_default()
            .push(secs(end.duration_since(job.arrival)));
        if let Some(report) = books.systems.get_mut(&job.system) {
            report.jobs_never_started += 1;
        }
    }
}

/// Each system's report completed from the run: launches from the metrics, the wait
/// percentiles and the cost.
fn system_reports(
    mut books: Books,
    snapshot: &MetricsSnapshot,
    options: &SimulationOptions,
) -> Vec<SystemReport> {
    let mut systems: Vec<SystemReport> = books.systems.into_values().collect();
    for report in &mut systems {
        for ((system, result), n) in &snapshot.launches {
            if *system == report.system {
                if result == "success" {
                    report.launches += n;
                } else {
                    report.failed_launches += n;
                }
            }
        }
        let mut waits = books.waits.remove(&report.system).unwrap_or_default();
        waits.sort_by(f64::total_cmp);
        report.wait_p50_s = percentile(&waits, 0.50);
        report.wait_p95_s = percentile(&waits, 0.95);
        report.wait_max_s = waits.last().copied().unwrap_or(0.0);
        report.cost = options
            .prices
            .get(&report.system)
            .map(|price| price * report.slot_hours);
    }
    systems
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn arrive(
    store: &MemoryCapacityStore,
    books: &mut Books,
    arrival: &Arrival,
    start: Timestamp,
    now: Timestamp,
) -> Result<(), StoreError> {
    if let Some(report) = books.systems.get_mut(&arrival.system) {
        report.jobs_arrived += u64::from(arrival.jobs);
    } else {
        // A system the config does not declare: its jobs would wait forever.
        return Ok(());
    }
    for _ in 0..arrival.jobs {
        let r = store
            .reservation_insert(ReservationInsertParams {
                system: arrival.system.clone(),
                holder: "simulated job".into(),
                ttl: Duration::from_secs(10 * 365 * 86_400),
                now: Some(now),
            })
            .await?;
        books.jobs.insert(
            r.id,
            Job {
                system: arrival.system.clone(),
                arrival: after(start, arrival.at),
                duration: arrival.duration,
                started: None,
                first_start: None,
                handbacks: 0,
            },
        );
    }
    Ok(())
}

/// Starts jobs whose reservation was assigned, notes those handed back, and ends those whose
/// time is up (releasing their reservation).
async fn follow_jobs(
    store: &MemoryCapacityStore,
    books: &mut Books,
    now: Timestamp,
) -> Result<(), StoreError> {
    let assigned: HashMap<ReservationId, SlotId> = store.assigned().into_iter().collect();
    // Pending again, or already reassigned to another slot within the tick.
    let handed_back: Vec<ReservationId> = books
        .running
        .iter()
        .filter(|(id, slot)| assigned.get(id) != Some(slot))
        .map(|(id, _)| *id)
        .collect();
    for id in handed_back {
        books.running.remove(&id);
        if let Some(job) = books.jobs.get_mut(&id) {
            job.started = None;
            job.handbacks += 1;
        }
    }
    for (id, slot) in &assigned {
        if books.running.insert(*id, *slot).is_none()
            && let Some(job) = books.jobs.get_mut(id)
        {
            job.started = Some(now);
            if job.first_start.is_none() {
                job.first_start = Some(now);
                let wait = secs(now.duration_since(job.arrival));
                books
                    .waits
                    .entry(job.system.clone())
                    .or_default()
                    .push(wait);
            }
        }
    }
    let finished: Vec<ReservationId> = books
        .running
        .keys()
        .filter(|id| {
            books.jobs[*id]
                .started
                .is_some_and(|at| after(at, books.jobs[*id].duration) <= now)
        })
        .copied()
        .collect();
    for id in finished {
        store
            .reservation_release(ReservationReleaseParams { id, now: Some(now) })
            .await?;
        books.running.remove(&id);
        let job = books.jobs.remove(&id).expect("running jobs are known");
        if let Some(report) = books.systems.get_mut(&job.system) {
            report.jobs_completed += 1;
            report.interruptions_survived += job.handbacks;
        }
    }
    Ok(())
}

/// Adds one interval of slot time to each system's books, and a sample when one is due.
#[allow(clippy::too_many_arguments)] // reason: the run's state, passed in rather than kept
fn account(
    slots: &[drover_core::SlotRecord],
    books: &mut Books,
    config: &AutoscalerConfig,
    now: Timestamp,
    next_sample: &mut Timestamp,
    options: &SimulationOptions,
    start: Timestamp,
    samples: &mut Vec<Sample>,
) {
    let hours = config.interval.as_secs_f64() / 3600.0;
    let mut ready: BTreeMap<&str, u64> = BTreeMap::new();
    for slot in slots {
        let Some(report) = books.systems.get_mut(&slot.system) else {
            continue;
        };
        let holds =
            slot.state.in_flight() || matches!(slot.state, SlotState::Ready | SlotState::Draining);
        if holds {
            report.slot_hours += hours;
        }
        if slot.state == SlotState::Ready {
            *ready.entry(slot.system.as_str()).or_default() += 1;
            if slot.leases == 0 {
                report.idle_slot_hours += hours;
            }
        }
    }
    if now >= *next_sample {
        *next_sample = after(now, options.sample_every);
        for name in config.systems.keys() {
            let demand = books.jobs.values().filter(|j| &j.system == name).count() as u64;
            let running = books
                .running
                .keys()
                .filter(|id| &books.jobs[*id].system == name)
                .count() as u64;
            samples.push(Sample {
                at_s: secs(now.duration_since(start)),
                system: name.clone(),
                demand,
                ready: ready.get(name.as_str()).copied().unwrap_or(0),
                waiting: demand - running,
            });
        }
    }
}

/// True when every system is back to what it keeps with no demand (the scale-down is part of
/// the cost).
async fn fleet_settled(
    store: &MemoryCapacityStore,
    config: &AutoscalerConfig,
) -> Result<bool, StoreError> {
    let slots = store.slot_list(SlotListParams::default()).await?;
    Ok(config.systems.iter().all(|(name, system)| {
        let holding = slots
            .iter()
            .filter(|s| {
                &s.system == name
                    && (s.state.in_flight()
                        || matches!(s.state, SlotState::Ready | SlotState::Draining))
            })
            .count() as u64;
        holding <= u64::from(system.min.max(system.warm).min(system.max))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_parse_and_bad_rows_are_named() {
        let trace = parse_trace("# a burst\ntime,system,jobs,duration\n600,gpu,3,5m\n0,gpu,1,30\n")
            .unwrap();
        assert_eq!(trace.len(), 2);
        assert_eq!(trace[0].at, Duration::ZERO);
        assert_eq!(trace[1].duration, Duration::from_secs(300));
        let err = parse_trace("time,system,jobs,duration\n0,gpu,many,30\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("many"), "{err}");
        assert!(parse_trace("at,what\n").unwrap_err().contains("header"));
        // Days and weeks, as every other duration of Drover.
        let days = parse_trace("time,system,jobs,duration\n2d,gpu,1,1d\n").unwrap();
        assert_eq!(days[0].at, Duration::from_secs(2 * 86_400));
        assert_eq!(days[0].duration, Duration::from_secs(86_400));
        assert!(parse_trace("").is_err());
        // Bounded: what a simulation can hold and finish.
        for (row, said) in [
            ("0,gpu,1,1w", "longer than a day"),
            ("31d,gpu,1,5m", "past the longest trace"),
            ("99999999999,gpu,1,5m", "past the longest trace"),
            ("0,gpu,1000000,15m", "more than 20000 jobs"),
            ("1e20,gpu,1,60", "too long"),
            ("0,gpu,1,1e400", "too long"),
            ("NaN,gpu,1,60", "not a number"),
            ("0,gpu,1,inf", "too long"),
        ] {
            let err = parse_trace(&format!("time,system,jobs,duration\n{row}\n")).unwrap_err();
            assert!(err.contains("line 2") && err.contains(said), "{row}: {err}");
        }
        let two = "time,system,jobs,duration\n0,gpu,15000,5m\n1,gpu,15000,5m\n";
        assert!(parse_trace(two).unwrap_err().contains("line 3"));
    }

    #[test]
    fn a_job_that_never_started_waits_to_the_end_of_the_run() {
        let config = AutoscalerConfig {
            systems: BTreeMap::from([("gpu".to_owned(), Default::default())]),
            ..Default::default()
        };
        let mut books = Books::for_systems(&config);
        let arrival: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        books.jobs.insert(
            1,
            Job {
                system: "gpu".into(),
                arrival,
                duration: Duration::from_secs(60),
                started: None,
                first_start: None,
                handbacks: 0,
            },
        );
        count_never_started(&mut books, "2026-01-01T02:00:00Z".parse().unwrap());
        assert_eq!(books.waits["gpu"], vec![7200.0]);
        assert_eq!(books.systems["gpu"].jobs_never_started, 1);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.95), 95.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
