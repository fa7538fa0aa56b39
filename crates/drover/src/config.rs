//! The engine's settings, with their units and defaults, validated before anything starts.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_core::Limits;

use crate::error::Error;

/// Engine settings. Every duration is wall-clock time.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Queues this process works, with their concurrency (jobs run at once). Default
    /// `default = 10`.
    pub queues: BTreeMap<String, usize>,
    /// How long a claim holds without a heartbeat. Default 30 s.
    pub lease: Duration,
    /// How often running jobs' leases are renewed. Default a third of the lease.
    pub heartbeat_interval: Option<Duration>,
    /// Safety-net poll for work when no wake-up arrives. Default 5 s.
    pub poll_interval: Duration,
    /// How often expired leases are looked for. Default a quarter of the lease, at least 1 s.
    pub rescue_interval: Option<Duration>,
    /// How long shutdown lets running jobs finish before cancelling them. Default 30 s.
    pub shutdown_timeout: Duration,
    /// How long a cancelled run (shutdown, timeout) gets to stop before it is abandoned.
    /// Default 5 s.
    pub cancel_grace: Duration,
    /// How long a leader's term lasts unless renewed; another process takes over within about
    /// this long (plus a fifth) after the leader dies. Default 10 s.
    pub leader_ttl: Duration,
    /// Whether this process competes for leadership, and so may run the leader's services
    /// (cron, retention, counts, the autoscaler's tick). Default true. A process that lacks
    /// the cluster's leader services (an autoscaler slot's worker, which does not scale) must
    /// not: elected, it would hold the term and run none of them.
    pub leader_eligible: bool,
    /// Most jobs a foreman may claim beyond its free slots, into a local buffer, so that short
    /// jobs are claimed in large batches. The buffer adapts to the pace: it holds about what the
    /// workers will start within 25 ms, so slow jobs are claimed only for free slots. `None`
    /// (default): 100 × the queue's concurrency, at most 1,000. `Some(0)`: no buffer.
    pub prefetch: Option<usize>,
    /// Most job-end hooks run at once; more job ends wait for the pool. Default 4.
    pub hook_concurrency: usize,
    /// Input limits for enqueue.
    pub limits: Limits,
    /// Identity of this process in leases; default `host:pid:random`.
    pub process_id: Option<String>,
    /// How often the leader refreshes the cached job counts (and most jobs counted per state).
    pub counts: crate::services::counter::CounterConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            queues: BTreeMap::from([("default".to_owned(), 10)]),
            lease: Duration::from_secs(30),
            heartbeat_interval: None,
            poll_interval: Duration::from_secs(5),
            rescue_interval: None,
            shutdown_timeout: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(5),
            leader_ttl: Duration::from_secs(10),
            leader_eligible: true,
            prefetch: None,
            hook_concurrency: 4,
            limits: Limits::default(),
            process_id: None,
            counts: Default::default(),
        }
    }
}

impl EngineConfig {
    /// The heartbeat interval in force.
    pub fn heartbeat_every(&self) -> Duration {
        self.heartbeat_interval.unwrap_or(self.lease / 3)
    }

    /// The rescue interval in force.
    pub fn rescue_every(&self) -> Duration {
        self.rescue_interval
            .unwrap_or((self.lease / 4).max(Duration::from_secs(1)))
    }

    /// Checks the settings; the error names the offending one.
    pub fn validate(&self) -> Result<(), Error> {
        for (queue, &concurrency) in &self.queues {
            drover_core::validate::check_name("queue", queue)?;
            if !(1..=10_000).contains(&concurrency) {
                return Err(Error::Config(format!(
                    "queue {queue:?}: concurrency {concurrency} is not between 1 and 10000"
                )));
            }
        }
        if self.lease < Duration::from_millis(500) {
            return Err(Error::Config(format!(
                "lease {} is shorter than 500ms",
                shown(self.lease)
            )));
        }
        if self.heartbeat_every() >= self.lease || self.heartbeat_every().is_zero() {
            return Err(Error::Config(format!(
                "heartbeat_interval {} must be positive and shorter than the lease {}",
                shown(self.heartbeat_every()),
                shown(self.lease)
            )));
        }
        if let Some(prefetch) = self.prefetch.filter(|&n| n > 10_000) {
            return Err(Error::Config(format!("prefetch {prefetch} is over 10000")));
        }
        if !(1..=1000).contains(&self.hook_concurrency) {
            return Err(Error::Config(format!(
                "hook_concurrency {} is not between 1 and 1000",
                self.hook_concurrency
            )));
        }
        if self.leader_ttl < Duration::from_millis(300) {
            return Err(Error::Config(format!(
                "leader_ttl {} is shorter than 300ms",
                shown(self.leader_ttl)
            )));
        }
        for (name, value) in [
            ("poll_interval", self.poll_interval),
            ("rescue_interval", self.rescue_every()),
            ("counts_interval", self.counts.interval),
        ] {
            if value < Duration::from_millis(10) {
                return Err(Error::Config(format!(
                    "{name} {} is shorter than 10ms",
                    shown(value)
                )));
            }
        }
        if self.counts.cap == 0 {
            return Err(Error::Config("counts_cap must be positive".into()));
        }
        Ok(())
    }
}

/// A duration as the config writes it (`0s`, `250ms`, `1.5s`), where `Debug` says `0ns`.
fn shown(duration: Duration) -> String {
    if duration.is_zero() {
        "0s".to_owned()
    } else {
        format!("{duration:?}")
    }
}
