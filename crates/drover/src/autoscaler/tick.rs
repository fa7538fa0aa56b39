//! The tick: [`tick`] is one function whose inputs are all passed in, and each step is a small
//! function below it. Every count is read from the database (and the runtime's inventory) at
//! the start of the tick; nothing is carried from one tick to the next, so a tick rerun after a
//! crash, or on a new leader, starts from what is true.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use drover_core::{
    Clock, JobState, ReservationAssignParams, ReservationAssignment, ReservationExpireParams,
    ReservationListParams, ReservationPhase, SlotInsertParams, SlotListParams, SlotRecord,
    SlotState, SlotTransitionParams, Store, StoreError,
};
use jiff::Timestamp;
use serde::Serialize;

use super::config::{AutoscalerConfig, SystemConfig};
use super::metrics::AutoscalerMetrics;
use super::runtime::{CapacityRuntime, Instance, InstancePhase, LaunchRequest, bootstrap_script};

/// Everything a tick works with, passed in.
#[derive(Clone, Copy)]
pub struct TickInputs<'a> {
    /// Where slots, reservations and jobs live.
    pub store: &'a dyn Store,
    /// What makes capacity.
    pub runtime: &'a dyn CapacityRuntime,
    /// The systems and limits (validated).
    pub config: &'a AutoscalerConfig,
    /// The time.
    pub clock: &'a dyn Clock,
    /// Where the tick reports.
    pub metrics: &'a AutoscalerMetrics,
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    /// Reservations expired (step 1).
    pub expired: u64,
    /// Slots drained for a notice or handled as vanished (step 2).
    pub interrupted: u64,
    /// Reservations assigned to slots (step 3).
    pub assigned: u64,
    /// Launches made (steps 4 and 5).
    pub launched: u64,
    /// Launches that failed (steps 4 and 5).
    pub launch_failures: u64,
    /// Slots that went to error for taking longer than the boot timeout (step 4).
    pub boot_timeouts: u64,
    /// Idle slots drained (step 6).
    pub drained: u64,
    /// Termination requests for drained slots with no lease left (step 6; repeated each tick
    /// until the instance is gone, runtimes make it idempotent).
    pub terminated: u64,
    /// Instances no slot knows about, terminated (step 7).
    pub orphans_terminated: u64,
}

/// Runs one tick. A store error ends it early (the next tick starts again from the database);
/// a runtime error is logged and its step is retried next tick.
pub async fn tick(cx: TickInputs<'_>) -> Result<TickReport, StoreError> {
    tick_with_slots(cx).await.map(|(report, _)| report)
}

/// [`tick`], also returning the slots as the tick left them (read at its start, updated by
/// its own fenced writes): the simulator's books.
pub(crate) async fn tick_with_slots(
    cx: TickInputs<'_>,
) -> Result<(TickReport, Vec<SlotRecord>), StoreError> {
    let started = std::time::Instant::now();
    let mut report = TickReport::default();
    let now = cx.clock.now();
    report.expired = expire_reservations(cx).await?;
    let inventory = read_inventory(cx).await;
    let mut slots = cx.store.slot_list(SlotListParams::default()).await?;
    if let Some(inventory) = &inventory {
        report.interrupted = handle_interruptions(cx, &mut slots, inventory, now).await?;
        advance_booting(cx, &mut slots, inventory).await?;
    }
    report.assigned = assign_reservations(cx, &mut slots).await?;
    let demand = read_demand(cx, &slots).await?;
    launch_for_demand(cx, &mut slots, &demand, now, &mut report).await?;
    keep_pools(cx, &mut slots, &demand, now, &mut report).await?;
    scale_down(cx, &mut slots, &demand, now, &mut report).await?;
    if let Some(inventory) = &inventory {
        report.orphans_terminated = reconcile(cx, &slots, inventory, now).await;
    }
    record_metrics(cx, &slots).await?;
    cx.metrics.tick(started.elapsed());
    Ok((report, slots))
}

/// Moves a slot, fenced by the state and generation held in `slot`, and updates `slot` from
/// the answer. False when the slot changed meanwhile (another leader, an operator).
async fn transition(
    cx: TickInputs<'_>,
    slot: &mut SlotRecord,
    to: SlotState,
    reason: impl Into<String>,
    change: Change,
) -> Result<bool, StoreError> {
    let updated = cx
        .store
        .slot_transition(SlotTransitionParams {
            id: slot.id,
            from: slot.state,
            generation: slot.generation,
            to,
            instance_id: change.instance_id,
            reason: reason.into(),
            hand_back: change.hand_back,
            notice_at: change.notice_at,
            now: cx.clock.store_now(),
        })
        .await?;
    match updated {
        Some(updated) => {
            *slot = updated;
            Ok(true)
        }
        None => {
            tracing::info!(
                slot = slot.id,
                "slot changed during the tick; it is looked at again next tick"
            );
            Ok(false)
        }
    }
}

/// The optional parts of a transition.
#[derive(Default)]
struct Change {
    instance_id: Option<String>,
    hand_back: bool,
    notice_at: Option<Timestamp>,
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO)
}

// Step 1.

async fn expire_reservations(cx: TickInputs<'_>) -> Result<u64, StoreError> {
    cx.store
        .reservation_expire(ReservationExpireParams {
            now: cx.clock.store_now(),
        })
        .await
}

async fn read_inventory(cx: TickInputs<'_>) -> Option<HashMap<String, Instance>> {
    match cx.runtime.inventory().await {
        Ok(list) => Some(list.into_iter().map(|i| (i.id.clone(), i)).collect()),
        Err(err) => {
            tracing::warn!(error = %err, runtime = cx.runtime.name(),
                "cannot list instances; interruptions and orphans wait for the next tick");
            None
        }
    }
}

// Step 2. Vanished instances (step 7's second half) are handled here too, so that their
// replacements launch in this same tick.

async fn handle_interruptions(
    cx: TickInputs<'_>,
    slots: &mut [SlotRecord],
    inventory: &HashMap<String, Instance>,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let mut interrupted = 0;
    for slot in slots.iter_mut() {
        let Some(instance_id) = slot.instance_id.clone() else {
            continue;
        };
        let serving = matches!(
            slot.state,
            SlotState::Booting | SlotState::Binding | SlotState::Ready
        );
        match inventory.get(&instance_id) {
            Some(instance) if serving && instance.notice_at.is_some() => {
                let change = Change {
                    hand_back: true,
                    notice_at: instance.notice_at,
                    ..Change::default()
                };
                if transition(cx, slot, SlotState::Draining, "interruption notice", change).await? {
                    interrupted += 1;
                    cx.metrics.interruption();
                }
            }
            // Not listed yet: a cloud's list can lag its launch. As an instance no slot knows
            // is not an orphan before the grace period, a launch is not vanished before it;
            // taken for vanished at once, it was relaunched every tick and never terminated.
            None if slot.state == SlotState::Booting
                && slot
                    .launched_at
                    .is_some_and(|at| elapsed(at, now) < cx.config.orphan_grace) => {}
            None if serving => {
                let counted = slot.notice_at.is_some();
                let change = Change::default();
                if !transition(cx, slot, SlotState::Empty, "instance vanished", change).await? {
                    continue;
                }
                tracing::warn!(slot = slot.id, instance = %instance_id,
                    "the instance left the runtime's list: replaced, and sent a terminate in case it still runs");
                // A list that lost it may lag or be wrong; a terminate costs nothing if it is
                // gone, and a leaked instance costs money.
                if let Err(err) = cx.runtime.terminate(&instance_id).await {
                    tracing::warn!(slot = slot.id, instance = %instance_id, error = %err,
                        "cannot terminate a vanished instance");
                }
                if !counted {
                    interrupted += 1;
                    cx.metrics.interruption();
                }
            }
            // A drained slot's instance is gone: its termination (step 6) is done.
            None if slot.state == SlotState::Draining => {
                transition(cx, slot, SlotState::Empty, "terminated", Change::default()).await?;
            }
            _ => {}
        }
    }
    Ok(interrupted)
}

/// Booting and binding slots follow their instance's phase.
async fn advance_booting(
    cx: TickInputs<'_>,
    slots: &mut [SlotRecord],
    inventory: &HashMap<String, Instance>,
) -> Result<(), StoreError> {
    for slot in slots.iter_mut() {
        let Some(instance) = slot.instance_id.as_ref().and_then(|id| inventory.get(id)) else {
            continue;
        };
        let phase = instance.phase;
        if slot.state == SlotState::Booting && phase != InstancePhase::Booting {
            let reason = "instance running";
            if !transition(cx, slot, SlotState::Binding, reason, Change::default()).await? {
                continue;
            }
        }
        if slot.state == SlotState::Binding && phase == InstancePhase::Ready {
            transition(
                cx,
                slot,
                SlotState::Ready,
                "worker bound",
                Change::default(),
            )
            .await?;
        }
    }
    Ok(())
}

// Step 3.

async fn assign_reservations(
    cx: TickInputs<'_>,
    slots: &mut [SlotRecord],
) -> Result<u64, StoreError> {
    let mut assigned = 0;
    for (name, system) in &cx.config.systems {
        let max = system.max_leases_per_slot;
        // Fullest first, so that work packs onto few slots and the rest can go idle.
        let mut ready: Vec<&mut SlotRecord> = slots
            .iter_mut()
            .filter(|s| s.system == *name && s.state == SlotState::Ready && s.leases < max)
            .collect();
        ready.sort_by_key(|s| (std::cmp::Reverse(s.leases), s.id));
        let free: u64 = ready.iter().map(|s| u64::from(max - s.leases)).sum();
        if free == 0 {
            continue;
        }
        let pending = cx
            .store
            .reservation_list(ReservationListParams {
                system: Some(name.clone()),
                phases: vec![ReservationPhase::Pending],
                limit: free as usize,
                ..Default::default()
            })
            .await?;
        // Never more than the limit within the tick: planned leases count as held.
        let mut plan = Vec::with_capacity(pending.len());
        let mut targets = Vec::with_capacity(pending.len());
        let mut extra = vec![0u32; ready.len()];
        let mut at = 0;
        for reservation in &pending {
            while at < ready.len() && ready[at].leases + extra[at] >= max {
                at += 1;
            }
            if at == ready.len() {
                break;
            }
            plan.push(ReservationAssignment {
                reservation: reservation.id,
                slot: ready[at].id,
                max_leases: max,
            });
            targets.push(at);
            extra[at] += 1;
        }
        let accepted = cx
            .store
            .reservation_assign(ReservationAssignParams {
                assignments: plan,
                now: cx.clock.store_now(),
            })
            .await?;
        for (ok, index) in accepted.iter().zip(&targets) {
            if *ok {
                ready[*index].leases += 1;
                assigned += 1;
            }
        }
    }
    Ok(assigned)
}

/// Leases wanted per system: held leases, pending reservations, and the available and running
/// jobs of the system's queues.
#[derive(Debug, Default, Clone, Copy)]
struct Demand {
    leases: u64,
}

impl Demand {
    /// Slots that cover the demand.
    fn slots(self, system: &SystemConfig) -> u64 {
        self.leases.div_ceil(u64::from(system.max_leases_per_slot))
    }
}

async fn read_demand(
    cx: TickInputs<'_>,
    slots: &[SlotRecord],
) -> Result<BTreeMap<String, Demand>, StoreError> {
    let mut demand: BTreeMap<String, Demand> = BTreeMap::new();
    for slot in slots.iter().filter(|s| s.state == SlotState::Ready) {
        demand.entry(slot.system.clone()).or_default().leases += u64::from(slot.leases);
    }
    for count in cx.store.reservation_count().await? {
        if count.phase == ReservationPhase::Pending {
            demand.entry(count.system).or_default().leases += count.count;
        }
    }
    let bound: HashMap<&str, &str> = cx
        .config
        .systems
        .iter()
        .flat_map(|(name, s)| s.queues.iter().map(move |q| (q.as_str(), name.as_str())))
        .collect();
    if !bound.is_empty() {
        for count in cx.store.job_count_by_queue().await? {
            let wanted = matches!(count.state, JobState::Available | JobState::Running);
            if let (true, Some(system)) = (wanted, bound.get(count.queue.as_str())) {
                demand.entry((*system).to_owned()).or_default().leases += count.count;
            }
        }
    }
    Ok(demand)
}

/// Slots that hold or may hold an instance: what the maximums count.
fn holds_instance(state: SlotState) -> bool {
    state.in_flight() || matches!(state, SlotState::Ready | SlotState::Draining)
}

/// Slots serving or on their way: what covers demand.
fn covers_demand(state: SlotState) -> bool {
    state.in_flight() || state == SlotState::Ready
}

fn count(slots: &[SlotRecord], system: &str, f: impl Fn(SlotState) -> bool) -> u64 {
    slots
        .iter()
        .filter(|s| s.system == system && f(s.state))
        .count() as u64
}

// Step 4.

async fn launch_for_demand(
    cx: TickInputs<'_>,
    slots: &mut Vec<SlotRecord>,
    demand: &BTreeMap<String, Demand>,
    now: Timestamp,
    report: &mut TickReport,
) -> Result<(), StoreError> {
    fail_stuck_boots(cx, slots, now, report).await?;
    resume_launches(cx, slots, report).await?;
    for (name, system) in &cx.config.systems {
        let need = demand.get(name).copied().unwrap_or_default().slots(system);
        // Capacity on its way counts: launching again for demand it will serve is the bug.
        let covered = count(slots, name, covers_demand);
        let missing = need.saturating_sub(covered);
        launch_slots(cx, slots, name, missing, "demand", now, report).await?;
    }
    Ok(())
}

/// Slots launched longer ago than the boot timeout and still not ready go to error (their
/// instance, if any, is terminated).
async fn fail_stuck_boots(
    cx: TickInputs<'_>,
    slots: &mut [SlotRecord],
    now: Timestamp,
    report: &mut TickReport,
) -> Result<(), StoreError> {
    for slot in slots.iter_mut().filter(|s| s.state.in_flight()) {
        let Some(system) = cx.config.systems.get(&slot.system) else {
            continue;
        };
        let launched = slot.launched_at.unwrap_or(slot.state_changed_at);
        if elapsed(launched, now) <= system.boot_timeout {
            continue;
        }
        if let Some(instance) = &slot.instance_id
            && let Err(err) = cx.runtime.terminate(instance).await
        {
            // The instance becomes an orphan and is terminated by a later reconcile.
            tracing::warn!(slot = slot.id, error = %err, "cannot terminate a stuck instance");
        }
        let reason = format!(
            "not ready within the boot timeout ({:?})",
            system.boot_timeout
        );
        if transition(cx, slot, SlotState::Error, reason, Change::default()).await? {
            cx.metrics.launch(&slot.system, "boot_timeout");
            report.boot_timeouts += 1;
        }
    }
    Ok(())
}

/// Launches recorded but never answered (a leader died between recording and making them)
/// are made again: the runtime returns the instance of the first attempt if it made one.
async fn resume_launches(
    cx: TickInputs<'_>,
    slots: &mut [SlotRecord],
    report: &mut TickReport,
) -> Result<(), StoreError> {
    for slot in slots.iter_mut().filter(|s| s.state == SlotState::Launching) {
        make_launch(cx, slot, report).await?;
    }
    Ok(())
}

/// The system's launches pause until this time after a failure.
fn backoff_until(slots: &[SlotRecord], name: &str, system: &SystemConfig) -> Option<Timestamp> {
    slots
        .iter()
        .filter(|s| s.system == name && s.state == SlotState::Error)
        .filter_map(|s| {
            let cooldown =
                jiff::SignedDuration::try_from(system.cooldown_after(s.failures)).ok()?;
            s.state_changed_at.checked_add(cooldown).ok()
        })
        .max()
}

/// Records and makes up to `n` launches for a system, within the maximums and outside its
/// cool-down. Rows are reused: an errored slot first (its failure streak grows the cool-down),
/// then an empty one, then a new row.
#[allow(clippy::too_many_arguments)] // reason: the step's inputs, each used once
async fn launch_slots(
    cx: TickInputs<'_>,
    slots: &mut Vec<SlotRecord>,
    name: &str,
    n: u64,
    reason: &str,
    now: Timestamp,
    report: &mut TickReport,
) -> Result<(), StoreError> {
    let Some(system) = cx.config.systems.get(name) else {
        return Ok(());
    };
    for _ in 0..n {
        if backoff_until(slots, name, system).is_some_and(|until| until > now) {
            return Ok(());
        }
        let total: u64 = slots.iter().filter(|s| holds_instance(s.state)).count() as u64;
        if count(slots, name, holds_instance) >= u64::from(system.max)
            || total >= u64::from(cx.config.max_slots)
        {
            return Ok(());
        }
        let reusable = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.system == name && matches!(s.state, SlotState::Error | SlotState::Empty)
            })
            .max_by_key(|(_, s)| {
                (
                    s.state == SlotState::Error,
                    s.failures,
                    std::cmp::Reverse(s.id),
                )
            })
            .map(|(i, _)| i);
        let index = match reusable {
            Some(i) => {
                if !transition(
                    cx,
                    &mut slots[i],
                    SlotState::Launching,
                    reason,
                    Change::default(),
                )
                .await?
                {
                    return Ok(());
                }
                i
            }
            None => {
                let slot = cx
                    .store
                    .slot_insert(SlotInsertParams {
                        system: name.to_owned(),
                        reason: reason.to_owned(),
                        now: cx.clock.store_now(),
                    })
                    .await?;
                slots.push(slot);
                slots.len() - 1
            }
        };
        make_launch(cx, &mut slots[index], report).await?;
    }
    Ok(())
}

/// Asks the runtime for the instance of a `launching` slot (recorded before this call) and
/// records its answer.
async fn make_launch(
    cx: TickInputs<'_>,
    slot: &mut SlotRecord,
    report: &mut TickReport,
) -> Result<(), StoreError> {
    let request = LaunchRequest {
        slot: slot.id,
        generation: slot.generation,
        system: slot.system.clone(),
        bootstrap: bootstrap_script(
            slot.id,
            slot.generation,
            &slot.system,
            cx.config
                .systems
                .get(&slot.system)
                .map_or(&[][..], |s| &s.queues[..]),
        ),
    };
    match cx.runtime.launch(&request).await {
        Ok(instance) => {
            let change = Change {
                instance_id: Some(instance),
                ..Change::default()
            };
            if transition(cx, slot, SlotState::Booting, "launched", change).await? {
                cx.metrics.launch(&slot.system, "success");
                report.launched += 1;
            }
        }
        Err(err) => {
            tracing::warn!(slot = slot.id, system = %slot.system, error = %err, "launch failed");
            // The runtime's own words, first: the category and kind are in the log line above
            // and the launch metric, and a reason is read cut to a table's column.
            let reason = format!("launch failed: {}", err.message);
            if transition(cx, slot, SlotState::Error, reason, Change::default()).await? {
                cx.metrics.launch(&slot.system, &err.category);
                report.launch_failures += 1;
            }
        }
    }
    Ok(())
}

/// The slots a system keeps: its demand plus the warm pool, at least the minimum, at most the
/// maximum.
fn keep(system: &SystemConfig, demand: Demand) -> u64 {
    (demand.slots(system) + u64::from(system.warm))
        .max(u64::from(system.min))
        .min(u64::from(system.max))
}

// Step 5.

async fn keep_pools(
    cx: TickInputs<'_>,
    slots: &mut Vec<SlotRecord>,
    demand: &BTreeMap<String, Demand>,
    now: Timestamp,
    report: &mut TickReport,
) -> Result<(), StoreError> {
    for (name, system) in &cx.config.systems {
        let wanted = keep(system, demand.get(name).copied().unwrap_or_default());
        let missing = wanted.saturating_sub(count(slots, name, covers_demand));
        let reason = if count(slots, name, covers_demand) < u64::from(system.min) {
            "min"
        } else {
            "warm"
        };
        launch_slots(cx, slots, name, missing, reason, now, report).await?;
    }
    Ok(())
}

// Step 6.

async fn scale_down(
    cx: TickInputs<'_>,
    slots: &mut [SlotRecord],
    demand: &BTreeMap<String, Demand>,
    now: Timestamp,
    report: &mut TickReport,
) -> Result<(), StoreError> {
    for (name, system) in &cx.config.systems {
        let wanted = keep(system, demand.get(name).copied().unwrap_or_default());
        let surplus = count(slots, name, covers_demand).saturating_sub(wanted);
        let mut idle: Vec<&mut SlotRecord> = slots
            .iter_mut()
            .filter(|s| s.system == *name && s.state == SlotState::Ready && s.leases == 0)
            .filter(|s| elapsed(s.idle_since(), now) >= system.idle_timeout)
            .filter(|s| elapsed(s.launched_at.unwrap_or(s.created_at), now) >= system.min_lifetime)
            .collect();
        idle.sort_by_key(|s| (s.idle_since(), s.id));
        for slot in idle.into_iter().take(surplus as usize) {
            if transition(cx, slot, SlotState::Draining, "idle", Change::default()).await? {
                report.drained += 1;
            }
        }
    }
    for slot in slots
        .iter_mut()
        .filter(|s| s.state == SlotState::Draining && s.leases == 0)
    {
        // The slot stays draining (its instance known, so never taken for an orphan) until the
        // instance is gone from the inventory: a worker may take a while to finish its jobs.
        let Some(instance) = &slot.instance_id else {
            transition(cx, slot, SlotState::Empty, "drained", Change::default()).await?;
            continue;
        };
        // An interrupted slot hands back what it still runs; a drained one finishes it.
        let terminated = if slot.notice_at.is_some() {
            cx.runtime.terminate_now(instance).await
        } else {
            cx.runtime.terminate(instance).await
        };
        match terminated {
            Ok(()) => report.terminated += 1,
            Err(err) => tracing::warn!(slot = slot.id, error = %err,
                "cannot terminate a drained instance; retried next tick"),
        }
    }
    Ok(())
}

// Step 7.

/// Terminates instances that no slot knows about, once they are older than the grace period
/// (a launch answered after its slot was read is not an orphan yet).
async fn reconcile(
    cx: TickInputs<'_>,
    slots: &[SlotRecord],
    inventory: &HashMap<String, Instance>,
    now: Timestamp,
) -> u64 {
    let known: HashSet<&str> = slots
        .iter()
        .filter_map(|s| s.instance_id.as_deref())
        .collect();
    let launching: HashSet<(i64, i64)> = slots
        .iter()
        .filter(|s| s.state == SlotState::Launching)
        .map(|s| (s.id, s.generation))
        .collect();
    let mut terminated = 0;
    for instance in inventory.values() {
        if known.contains(instance.id.as_str())
            || instance.slot.is_some_and(|key| launching.contains(&key))
            || elapsed(instance.created_at, now) < cx.config.orphan_grace
        {
            continue;
        }
        match cx.runtime.terminate(&instance.id).await {
            Ok(()) => {
                tracing::info!(instance = %instance.id, "terminated an instance no slot knows about");
                terminated += 1;
            }
            Err(err) => {
                tracing::warn!(instance = %instance.id, error = %err, "cannot terminate an orphan instance")
            }
        }
    }
    terminated
}

// Step 8.

/// The slot gauges come from the slots read at the start of this tick, as its own fenced
/// writes left them: a second read would only add the cost of reading every slot again.
async fn record_metrics(cx: TickInputs<'_>, now: &[SlotRecord]) -> Result<(), StoreError> {
    let mut slots: BTreeMap<(String, SlotState), u64> = BTreeMap::new();
    for name in cx.config.systems.keys() {
        for state in SlotState::ALL {
            slots.insert((name.clone(), state), 0);
        }
    }
    for slot in now {
        match slots.get_mut(&(slot.system.clone(), slot.state)) {
            Some(n) => *n += 1,
            None => {
                slots.insert((slot.system.clone(), slot.state), 1);
            }
        }
    }
    let mut reservations: BTreeMap<ReservationPhase, u64> = [
        (ReservationPhase::Pending, 0),
        (ReservationPhase::Assigned, 0),
    ]
    .into();
    for count in cx.store.reservation_count().await? {
        *reservations.entry(count.phase).or_default() += count.count;
    }
    cx.metrics.set_gauges(slots, reservations);
    Ok(())
}
