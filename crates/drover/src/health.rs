//! Health of the background loops: each loop's last successful tick (by the injected clock) and
//! whether it is still running, so that a stalled or dead loop is visible — a hung connection
//! must not silently stop a service, and a loop that ended must not leave the process
//! half-alive ([`crate::supervise`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_core::{BackgroundHealth, Clock};
use jiff::Timestamp;
use serde::Serialize;

/// The health of every background loop of an engine, as served at `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthReport {
    /// When the report was made (the engine's clock).
    pub at: Timestamp,
    /// True when every loop is ok.
    pub ok: bool,
    /// One entry per loop and per piece of the store's background work, by name.
    pub loops: Vec<LoopHealth>,
}

/// One background loop's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoopHealth {
    /// The loop, e.g. `heartbeat`, `completer`, `foreman default`, `cron scheduler`, or the
    /// store's own background work, e.g. `postgres listener`.
    pub name: String,
    /// Its last successful tick, if it has had one. Loops driven by events (the completer,
    /// the foremen) tick only when there is work.
    pub last_tick: Option<Timestamp>,
    /// Longest expected time between two ticks, for loops on a timer.
    pub expected_every_ms: Option<u64>,
    /// Running, and (for a timed loop) ticked within three of its intervals, or not yet due.
    pub ok: bool,
    /// Why it is not ok: it ended or panicked, or its last tick is too old.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    since: Option<Timestamp>,
    last_tick: Option<Timestamp>,
    every: Option<Duration>,
    failed: Option<String>,
}

/// The loops' health, shared by the loops and the engine handle.
#[derive(Debug)]
pub(crate) struct Health {
    clock: Arc<dyn Clock>,
    loops: Mutex<BTreeMap<String, Entry>>,
}

impl Health {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            loops: Mutex::new(BTreeMap::new()),
        }
    }

    /// Declares a loop that ticks about every `every` (or on events, `None`).
    pub(crate) fn register(&self, name: &str, every: Option<Duration>) {
        let since = Some(self.clock.now());
        self.loops.lock().expect("health lock poisoned").insert(
            name.to_owned(),
            Entry {
                since,
                every,
                ..Entry::default()
            },
        );
    }

    /// Records a successful tick of `name`.
    pub(crate) fn ok(&self, name: &str) {
        let now = self.clock.now();
        let mut loops = self.loops.lock().expect("health lock poisoned");
        loops.entry(name.to_owned()).or_default().last_tick = Some(now);
    }

    /// Records that `name` ended or panicked.
    pub(crate) fn failed(&self, name: &str, why: String) {
        let mut loops = self.loops.lock().expect("health lock poisoned");
        loops.entry(name.to_owned()).or_default().failed = Some(why);
    }

    /// Forgets a loop that stopped as asked (a leader service after a step-down).
    pub(crate) fn stopped(&self, name: &str) {
        self.loops
            .lock()
            .expect("health lock poisoned")
            .remove(name);
    }

    /// The report on every loop, and on the store's own background work (`background`, from
    /// [`drover_core::Store::background_health`]).
    pub(crate) fn report(&self, background: &[BackgroundHealth]) -> HealthReport {
        let now = self.clock.now();
        let mut loops: Vec<LoopHealth> = self
            .loops
            .lock()
            .expect("health lock poisoned")
            .iter()
            .map(|(name, entry)| judge(name, entry, now))
            .collect();
        loops.extend(background.iter().map(|work| judge_background(work, now)));
        loops.sort_by(|a, b| a.name.cmp(&b.name));
        HealthReport {
            at: now,
            ok: loops.iter().all(|l| l.ok),
            loops,
        }
    }
}

fn judge(name: &str, entry: &Entry, now: Timestamp) -> LoopHealth {
    let stale = entry.every.and_then(|every| {
        let reference = entry.last_tick.or(entry.since)?;
        let age = Duration::try_from(now.duration_since(reference)).unwrap_or(Duration::ZERO);
        (age > every * 3).then(|| {
            format!(
                "no successful tick for {:?} (expected every {every:?})",
                Duration::from_millis(age.as_millis() as u64)
            )
        })
    });
    let error = entry.failed.clone().or(stale);
    LoopHealth {
        name: name.to_owned(),
        last_tick: entry.last_tick,
        expected_every_ms: entry.every.map(|d| d.as_millis() as u64),
        ok: error.is_none(),
        error,
    }
}

/// The store's own background work: unhealthy once it has been down for longer than it is
/// expected to prove itself working — a reconnection within that time is not an outage worth
/// reporting — or when it has gone quiet for three of those intervals without saying why.
fn judge_background(work: &BackgroundHealth, now: Timestamp) -> LoopHealth {
    let every = work.expected_every;
    let error = match (&work.outage, work.last_ok_ago) {
        (Some(outage), _) if outage.for_ > every => Some(format!(
            "down for {:?} (expected back within {every:?}): {}",
            round_ms(outage.for_),
            outage.reason
        )),
        (Some(_), _) => None,
        (None, Some(ago)) if ago > every * 3 => Some(format!(
            "no successful check for {:?} (expected every {every:?})",
            round_ms(ago)
        )),
        (None, _) => None,
    };
    // Placed on the engine's clock: the store measures ages, not times.
    let last_tick = work
        .last_ok_ago
        .and_then(|ago| jiff::SignedDuration::try_from(ago).ok())
        .and_then(|ago| now.checked_sub(ago).ok());
    LoopHealth {
        name: work.name.clone(),
        last_tick,
        expected_every_ms: Some(every.as_millis() as u64),
        ok: error.is_none(),
        error,
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use drover_core::SimulatedClock;
    use jiff::SignedDuration;

    use super::*;

    #[test]
    fn a_loop_is_ok_while_it_ticks_and_not_when_stale_or_failed() {
        let clock = Arc::new(SimulatedClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
        let health = Health::new(clock.clone());
        health.register("heartbeat", Some(Duration::from_secs(10)));
        health.register("completer", None);
        assert!(health.report(&[]).ok);
        clock.advance(SignedDuration::from_secs(25));
        health.ok("heartbeat");
        clock.advance(SignedDuration::from_secs(25));
        let report = health.report(&[]);
        assert!(report.ok, "{report:?}");
        assert_eq!(
            report.loops[1].last_tick,
            Some("2026-01-01T00:00:25Z".parse().unwrap())
        );
        clock.advance(SignedDuration::from_secs(10));
        let report = health.report(&[]);
        assert!(
            !report.ok
                && report.loops[1]
                    .error
                    .as_ref()
                    .unwrap()
                    .contains("no successful tick")
        );
        health.ok("heartbeat");
        health.failed("completer", "panicked: boom".into());
        let report = health.report(&[]);
        assert_eq!(report.loops[0].error.as_deref(), Some("panicked: boom"));
        assert!(!report.ok);
    }

    #[test]
    fn store_work_is_unhealthy_only_when_down_for_longer_than_its_interval() {
        let clock = Arc::new(SimulatedClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
        let health = Health::new(clock.clone());
        health.register("heartbeat", None);
        let every = Duration::from_secs(2);
        let work = |last_ok_ago: Option<u64>, down_for: Option<u64>| BackgroundHealth {
            name: "postgres listener".into(),
            expected_every: every,
            last_ok_ago: last_ok_ago.map(Duration::from_secs),
            outage: down_for.map(|secs| drover_core::Outage {
                for_: Duration::from_secs(secs),
                reason: "lost its connection: terminated".into(),
            }),
        };
        let listener = |report: HealthReport| {
            report
                .loops
                .into_iter()
                .find(|l| l.name == "postgres listener")
                .unwrap()
        };
        let up = health.report(&[work(Some(1), None)]);
        assert!(up.ok, "{up:?}");
        assert_eq!(
            listener(up).last_tick,
            Some("2025-12-31T23:59:59Z".parse().unwrap())
        );
        // A reconnection within the interval is not reported.
        assert!(health.report(&[work(Some(5), Some(1))]).ok);
        let down = health.report(&[work(Some(5), Some(3))]);
        assert!(!down.ok);
        let error = listener(down).error.unwrap();
        assert!(
            error.contains("down for 3s") && error.contains("terminated"),
            "{error}"
        );
        // Up but silent for three intervals: a check that never answers.
        assert!(!health.report(&[work(Some(7), None)]).ok);
        assert!(health.report(&[work(None, None)]).ok);
    }
}
