//! The `sim` runtime: virtual capacity on the injected clock, with seeded randomness, so that a
//! run is the same every time for one seed.
//!
//! At launch an instance draws its boot time (uniform between `boot_min` and `boot_max`; it is
//! `binding` for the last fifth of it), whether the launch fails (`launch_failure_rate`), and
//! when it will be interrupted (exponential with `interruption_rate` per instance-hour). Notice
//! is given `notice` before an interruption; at the interruption the instance vanishes.
//! Drawing everything at launch keeps a run independent of how often the tick looks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use drover_core::{Clock, SlotId};
use jiff::{SignedDuration, Timestamp};

use super::runtime::{CapacityRuntime, Instance, InstancePhase, LaunchRequest, RuntimeError};

/// Settings of the simulated capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of the random draws.
    pub seed: u64,
    /// Shortest boot. Default 30 s.
    pub boot_min: Duration,
    /// Longest boot. Default 90 s.
    pub boot_max: Duration,
    /// Share of launches that fail (0 to 1). Default 0.
    pub launch_failure_rate: f64,
    /// Interruptions per instance-hour. Default 0.
    pub interruption_rate: f64,
    /// Notice given before an interruption. Default 2 minutes.
    pub notice: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            boot_min: Duration::from_secs(30),
            boot_max: Duration::from_secs(90),
            launch_failure_rate: 0.0,
            interruption_rate: 0.0,
            notice: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone)]
struct SimInstance {
    slot: Option<(SlotId, i64)>,
    created_at: Timestamp,
    /// When it shows in the list (its launch, unless the list lags).
    listed_at: Timestamp,
    binding_at: Timestamp,
    ready_at: Timestamp,
    interrupt_at: Option<Timestamp>,
    notice_at: Option<Timestamp>,
}

#[derive(Debug)]
struct State {
    rng: fastrand::Rng,
    instances: BTreeMap<String, SimInstance>,
    by_slot: HashMap<(SlotId, i64), String>,
    next: u64,
    /// Launch failures forced by a test, before the random draw.
    fail_next: u32,
    made: u64,
    terminated: u64,
    interrupted: u64,
    /// How long a new instance stays out of the list (a test's lagging cloud API).
    list_lag: Duration,
}

/// The simulated runtime. Cloning shares the same capacity.
#[derive(Debug, Clone)]
pub struct SimRuntime {
    clock: Arc<dyn Clock>,
    config: SimConfig,
    state: Arc<Mutex<State>>,
}

/// Counts of what the simulated runtime did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimCounts {
    /// Instances existing now.
    pub live: u64,
    /// Instances ever made.
    pub made: u64,
    /// Instances terminated by the autoscaler.
    pub terminated: u64,
    /// Instances taken away by an interruption.
    pub interrupted: u64,
}

fn after(ts: Timestamp, d: Duration) -> Timestamp {
    ts.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

impl SimRuntime {
    /// Simulated capacity on `clock`.
    pub fn new(clock: Arc<dyn Clock>, config: SimConfig) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                rng: fastrand::Rng::with_seed(config.seed),
                instances: BTreeMap::new(),
                by_slot: HashMap::new(),
                next: 1,
                fail_next: 0,
                made: 0,
                terminated: 0,
                interrupted: 0,
                list_lag: Duration::ZERO,
            })),
            clock,
            config,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("sim runtime lock poisoned")
    }

    /// Instances launched from now on appear in the list `lag` after their launch, as a
    /// cloud's list can lag behind its launches (a test's way to make that certain).
    pub fn lag_list(&self, lag: Duration) {
        self.lock().list_lag = lag;
    }

    /// The next `n` launches fail (a test's way to make failures certain).
    pub fn fail_next_launches(&self, n: u32) {
        self.lock().fail_next = n;
    }

    /// Gives an instance notice that it will be taken away `notice` from now.
    pub fn give_notice(&self, instance_id: &str, notice: Duration) -> bool {
        let now = self.clock.now();
        let mut state = self.lock();
        match state.instances.get_mut(instance_id) {
            Some(instance) => {
                instance.notice_at = Some(now);
                instance.interrupt_at = Some(after(now, notice));
                true
            }
            None => false,
        }
    }

    /// Takes an instance away at once, without notice.
    pub fn vanish(&self, instance_id: &str) -> bool {
        let mut state = self.lock();
        let gone = state.instances.remove(instance_id);
        if gone.is_some() {
            state.interrupted += 1;
        }
        gone.is_some()
    }

    /// Makes an instance no slot knows about (as a crashed launcher would leave behind).
    pub fn add_orphan(&self) -> String {
        let now = self.clock.now();
        let mut state = self.lock();
        let id = format!("sim-{}", state.next);
        state.next += 1;
        state.made += 1;
        state.instances.insert(
            id.clone(),
            SimInstance {
                slot: None,
                created_at: now,
                listed_at: now,
                binding_at: now,
                ready_at: now,
                interrupt_at: None,
                notice_at: None,
            },
        );
        id
    }

    /// What the runtime did so far.
    pub fn counts(&self) -> SimCounts {
        let state = self.lock();
        SimCounts {
            live: state.instances.len() as u64,
            made: state.made,
            terminated: state.terminated,
            interrupted: state.interrupted,
        }
    }

    /// Instances that exist now (interrupted ones removed).
    pub fn live_instances(&self) -> Vec<String> {
        self.expire(self.clock.now());
        self.lock().instances.keys().cloned().collect()
    }

    /// Removes instances whose interruption time has come.
    fn expire(&self, now: Timestamp) {
        let mut state = self.lock();
        let gone: Vec<String> = state
            .instances
            .iter()
            .filter(|(_, i)| i.interrupt_at.is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            state.instances.remove(&id);
            state.interrupted += 1;
        }
    }

    fn draw_boot(&self, rng: &mut fastrand::Rng) -> Duration {
        let min = self.config.boot_min.as_millis() as u64;
        let max = (self.config.boot_max.as_millis() as u64).max(min);
        Duration::from_millis(rng.u64(min..=max))
    }
}

#[async_trait]
impl CapacityRuntime for SimRuntime {
    fn name(&self) -> &'static str {
        "sim"
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<String, RuntimeError> {
        let now = self.clock.now();
        let key = (request.slot, request.generation);
        let boot;
        let interrupt_in;
        {
            let mut state = self.lock();
            if let Some(id) = state.by_slot.get(&key) {
                return Ok(id.clone());
            }
            if state.fail_next > 0 {
                state.fail_next -= 1;
                return Err(RuntimeError::retryable("capacity", "no capacity (forced)"));
            }
            let rng = &mut state.rng;
            if rng.f64() < self.config.launch_failure_rate {
                return Err(RuntimeError::retryable("capacity", "no capacity"));
            }
            let rate = self.config.interruption_rate;
            interrupt_in = (rate > 0.0).then(|| {
                let hours = -(1.0 - rng.f64()).ln() / rate;
                Duration::from_secs_f64((hours * 3600.0).min(1e9))
            });
            boot = self.draw_boot(rng);
        }
        let ready_at = after(now, boot);
        let binding_at = after(now, boot.mul_f64(0.8));
        let interrupt_at = interrupt_in.map(|d| after(ready_at, d));
        let notice_at = interrupt_at.map(|at| {
            at.checked_sub(SignedDuration::try_from(self.config.notice).unwrap_or_default())
                .unwrap_or(at)
        });
        let mut state = self.lock();
        let id = format!("sim-{}", state.next);
        state.next += 1;
        state.made += 1;
        state.by_slot.insert(key, id.clone());
        let listed_at = after(now, state.list_lag);
        state.instances.insert(
            id.clone(),
            SimInstance {
                slot: Some(key),
                created_at: now,
                listed_at,
                binding_at,
                ready_at,
                interrupt_at,
                notice_at,
            },
        );
        Ok(id)
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        if state.instances.remove(instance_id).is_some() {
            state.terminated += 1;
        }
        Ok(())
    }

    async fn inventory(&self) -> Result<Vec<Instance>, RuntimeError> {
        let now = self.clock.now();
        self.expire(now);
        let state = self.lock();
        Ok(state
            .instances
            .iter()
            .filter(|(_, i)| i.listed_at <= now)
            .map(|(id, i)| Instance {
                id: id.clone(),
                slot: i.slot,
                phase: if now >= i.ready_at {
                    InstancePhase::Ready
                } else if now >= i.binding_at {
                    InstancePhase::Binding
                } else {
                    InstancePhase::Booting
                },
                notice_at: i.notice_at.filter(|at| *at <= now).and(i.interrupt_at),
                created_at: i.created_at,
            })
            .collect())
    }
}
