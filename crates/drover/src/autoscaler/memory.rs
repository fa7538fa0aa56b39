//! [`MemoryCapacityStore`]: the capacity part of the [`Store`] in memory, for the simulator.
//!
//! Why not SQLite in memory: a simulated day of a 1,000-slot fleet is ~17,000 ticks, each
//! reading every slot twice and writing many times; through SQL that is minutes, in memory it
//! is seconds. The same tick code runs on it, and the capacity conformance cases run against it
//! as against both backends (`tests/autoscaler_memory.rs`), so it behaves as they do. Job
//! operations are not supported: the simulator's demand is reservations.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use drover_core::{
    ArchiveParams, CancelResult, ClaimResult, CronFireParams, CronFireResult, CronPruneParams,
    CronRegisterParams, CronState, FinishResult, InsertedJob, JobCancelParams, JobClaimParams,
    JobFinishParams, JobHeartbeatParams, JobId, JobInsertParams, JobListParams, JobPromoteParams,
    JobRecord, JobRescueParams, JobRetryParams, LeaderElectParams, LeaderRecord,
    LeaderReelectParams, LeaderResignParams, LeaderTerm, LeaseStatus, MigrateReport,
    ProcessPruneParams, ProcessRecord, ProcessUpsertParams, QueueStateCount, RescuedJob,
    ReservationAssignParams, ReservationCount, ReservationExpireParams, ReservationId,
    ReservationInsertParams, ReservationListParams, ReservationPhase, ReservationRecord,
    ReservationReleaseParams, SlotId, SlotInsertParams, SlotListParams, SlotRecord, SlotState,
    SlotTransitionParams, Store, StoreError, Wakeups,
};
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

#[derive(Debug, Default)]
struct Inner {
    slots: BTreeMap<SlotId, SlotRecord>,
    /// Pending and assigned reservations.
    open: BTreeMap<ReservationId, ReservationRecord>,
    /// Released and expired ones.
    done: BTreeMap<ReservationId, ReservationRecord>,
    next_slot: SlotId,
    next_reservation: ReservationId,
}

/// Slots and reservations in memory. See the module documentation.
#[derive(Debug, Default)]
pub struct MemoryCapacityStore {
    inner: Mutex<Inner>,
    wakeups: Wakeups,
}

fn unsupported() -> StoreError {
    StoreError::Internal("the in-memory capacity store holds slots and reservations only".into())
}

fn now_or(now: Option<Timestamp>) -> Timestamp {
    now.unwrap_or_else(Timestamp::now)
}

impl MemoryCapacityStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Assigned reservations and their slots, without copying the records (the simulator reads
    /// this every tick).
    pub fn assigned(&self) -> Vec<(ReservationId, SlotId)> {
        self.lock()
            .open
            .values()
            .filter(|r| r.phase == ReservationPhase::Assigned)
            .filter_map(|r| Some((r.id, r.slot_id?)))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory store lock poisoned")
    }
}

impl Inner {
    fn with_instance(&self, mut r: ReservationRecord) -> ReservationRecord {
        r.instance_id = match (r.phase, r.slot_id) {
            (ReservationPhase::Assigned, Some(slot)) => {
                self.slots.get(&slot).and_then(|s| s.instance_id.clone())
            }
            _ => None,
        };
        r
    }

    fn give_back_lease(&mut self, slot: Option<SlotId>, now: Timestamp) {
        if let Some(slot) = slot.and_then(|id| self.slots.get_mut(&id)) {
            slot.leases = slot.leases.saturating_sub(1);
            slot.last_used_at = now;
        }
    }

    fn finish(&mut self, id: ReservationId, phase: ReservationPhase, now: Timestamp) {
        if let Some(mut r) = self.open.remove(&id) {
            let held = (r.phase == ReservationPhase::Assigned)
                .then_some(r.slot_id)
                .flatten();
            self.give_back_lease(held, now);
            r.phase = phase;
            r.finished_at = Some(now);
            self.done.insert(id, r);
        }
    }

    fn get(&self, id: ReservationId) -> Option<ReservationRecord> {
        self.open
            .get(&id)
            .or_else(|| self.done.get(&id))
            .cloned()
            .map(|r| self.with_instance(r))
    }
}

fn transition(inner: &mut Inner, p: &SlotTransitionParams, now: Timestamp) -> Option<SlotRecord> {
    let slot = inner.slots.get_mut(&p.id)?;
    if slot.state != p.from || slot.generation != p.generation {
        return None;
    }
    let to = p.to;
    let hand_back = p.hand_back || matches!(to, SlotState::Empty | SlotState::Error);
    slot.state = to;
    slot.reason = p.reason.clone();
    slot.state_changed_at = now;
    if to == SlotState::Launching {
        slot.generation += 1;
        slot.launched_at = Some(now);
    }
    slot.instance_id = match &p.instance_id {
        Some(id) => Some(id.clone()),
        None if matches!(
            to,
            SlotState::Launching | SlotState::Empty | SlotState::Error
        ) =>
        {
            None
        }
        None => slot.instance_id.take(),
    };
    slot.notice_at = match p.notice_at {
        Some(at) => Some(at),
        None if to == SlotState::Launching => None,
        None => slot.notice_at,
    };
    match to {
        SlotState::Ready => {
            slot.failures = 0;
            slot.last_used_at = now;
        }
        SlotState::Error => slot.failures += 1,
        _ => {}
    }
    if hand_back {
        slot.leases = 0;
    }
    let updated = slot.clone();
    if hand_back {
        for r in inner.open.values_mut() {
            if r.phase == ReservationPhase::Assigned && r.slot_id == Some(p.id) {
                r.phase = ReservationPhase::Pending;
                r.slot_id = None;
            }
        }
    }
    Some(updated)
}

#[async_trait]
impl Store for MemoryCapacityStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn migrate(&self) -> Result<MigrateReport, StoreError> {
        Ok(MigrateReport {
            applied: Vec::new(),
            version: 0,
            known: 0,
        })
    }

    async fn job_insert_many(&self, _: JobInsertParams) -> Result<Vec<InsertedJob>, StoreError> {
        Err(unsupported())
    }

    async fn job_claim(&self, _: JobClaimParams) -> Result<ClaimResult, StoreError> {
        Err(unsupported())
    }

    async fn job_heartbeat(&self, _: JobHeartbeatParams) -> Result<Vec<LeaseStatus>, StoreError> {
        Err(unsupported())
    }

    async fn job_finish_many(&self, _: JobFinishParams) -> Result<Vec<FinishResult>, StoreError> {
        Err(unsupported())
    }

    async fn job_promote_due(&self, _: JobPromoteParams) -> Result<u64, StoreError> {
        Err(unsupported())
    }

    async fn job_rescue_expired(&self, _: JobRescueParams) -> Result<Vec<RescuedJob>, StoreError> {
        Err(unsupported())
    }

    async fn job_cancel(&self, _: JobCancelParams) -> Result<CancelResult, StoreError> {
        Err(unsupported())
    }

    async fn job_retry(&self, _: JobRetryParams) -> Result<JobRecord, StoreError> {
        Err(unsupported())
    }

    async fn job_get(&self, _: JobId) -> Result<Option<JobRecord>, StoreError> {
        Ok(None)
    }

    async fn job_list(&self, _: JobListParams) -> Result<Vec<JobRecord>, StoreError> {
        Ok(Vec::new())
    }

    async fn job_cancel_requested(&self, _: Vec<JobId>) -> Result<Vec<JobId>, StoreError> {
        Ok(Vec::new())
    }

    async fn job_count_by_queue(&self) -> Result<Vec<QueueStateCount>, StoreError> {
        Ok(Vec::new())
    }

    async fn job_act_many(
        &self,
        _: drover_core::JobActParams,
    ) -> Result<Vec<drover_core::ActResult>, StoreError> {
        Err(unsupported())
    }

    async fn queue_pause(
        &self,
        _: drover_core::QueuePauseParams,
    ) -> Result<drover_core::QueueRecord, StoreError> {
        Err(unsupported())
    }

    async fn queue_list(&self) -> Result<Vec<drover_core::QueueRecord>, StoreError> {
        Ok(Vec::new())
    }

    async fn queue_counts_refresh(
        &self,
        _: drover_core::QueueCountsRefreshParams,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn job_finish_and_claim(
        &self,
        _: drover_core::JobFinishClaimParams,
    ) -> Result<drover_core::FinishClaimResult, StoreError> {
        Err(unsupported())
    }

    async fn leader_attempt_elect(
        &self,
        _: LeaderElectParams,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        Err(unsupported())
    }

    async fn leader_attempt_reelect(
        &self,
        _: LeaderReelectParams,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        Err(unsupported())
    }

    async fn leader_resign(&self, _: LeaderResignParams) -> Result<bool, StoreError> {
        Err(unsupported())
    }

    async fn leader_get(
        &self,
        _: String,
        _: Option<Timestamp>,
    ) -> Result<Option<LeaderRecord>, StoreError> {
        Ok(None)
    }

    async fn process_upsert(&self, _: ProcessUpsertParams) -> Result<(), StoreError> {
        Err(unsupported())
    }

    async fn process_delete(&self, _: String) -> Result<(), StoreError> {
        Err(unsupported())
    }

    async fn process_list(&self) -> Result<Vec<ProcessRecord>, StoreError> {
        Ok(Vec::new())
    }

    async fn process_prune(&self, _: ProcessPruneParams) -> Result<u64, StoreError> {
        Err(unsupported())
    }

    async fn cron_register(&self, _: CronRegisterParams) -> Result<Vec<CronState>, StoreError> {
        Err(unsupported())
    }

    async fn cron_states(&self) -> Result<Vec<CronState>, StoreError> {
        Ok(Vec::new())
    }

    async fn cron_fire(&self, _: CronFireParams) -> Result<CronFireResult, StoreError> {
        Err(unsupported())
    }

    async fn cron_prune(&self, _: CronPruneParams) -> Result<u64, StoreError> {
        Err(unsupported())
    }

    async fn retention_run_insert(
        &self,
        _: drover_core::RetentionRunInsertParams,
    ) -> Result<(), StoreError> {
        Err(unsupported())
    }

    async fn retention_run_list(
        &self,
        _: drover_core::RetentionRunListParams,
    ) -> Result<Vec<drover_core::RetentionRunRecord>, StoreError> {
        Ok(Vec::new())
    }

    async fn throughput_add(&self, _: drover_core::ThroughputAddParams) -> Result<(), StoreError> {
        Err(unsupported())
    }

    async fn throughput_list(
        &self,
        _: drover_core::ThroughputListParams,
    ) -> Result<Vec<drover_core::ThroughputMinute>, StoreError> {
        Ok(Vec::new())
    }

    async fn throughput_prune(
        &self,
        _: drover_core::ThroughputPruneParams,
    ) -> Result<u64, StoreError> {
        Err(unsupported())
    }

    async fn table_columns(&self, _: String) -> Result<Option<Vec<String>>, StoreError> {
        Err(unsupported())
    }

    async fn archive_batch(&self, _: ArchiveParams) -> Result<u64, StoreError> {
        Err(unsupported())
    }

    async fn archive_pending(&self, _: ArchiveParams) -> Result<u64, StoreError> {
        Err(unsupported())
    }

    fn wakeups(&self) -> watch::Receiver<u64> {
        self.wakeups.subscribe()
    }

    async fn close(&self) {}

    async fn slot_insert(&self, params: SlotInsertParams) -> Result<SlotRecord, StoreError> {
        let now = now_or(params.now);
        let mut inner = self.lock();
        inner.next_slot += 1;
        let slot = SlotRecord {
            id: inner.next_slot,
            system: params.system,
            state: SlotState::Launching,
            instance_id: None,
            generation: 1,
            leases: 0,
            failures: 0,
            reason: params.reason,
            created_at: now,
            launched_at: Some(now),
            state_changed_at: now,
            last_used_at: now,
            notice_at: None,
        };
        inner.slots.insert(slot.id, slot.clone());
        Ok(slot)
    }

    async fn slot_transition(
        &self,
        params: SlotTransitionParams,
    ) -> Result<Option<SlotRecord>, StoreError> {
        let now = now_or(params.now);
        Ok(transition(&mut self.lock(), &params, now))
    }

    async fn slot_list(&self, params: SlotListParams) -> Result<Vec<SlotRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .slots
            .values()
            .filter(|s| params.id.is_none_or(|id| s.id == id))
            .filter(|s| params.system.as_ref().is_none_or(|sys| &s.system == sys))
            .filter(|s| params.states.is_empty() || params.states.contains(&s.state))
            .cloned()
            .collect())
    }

    async fn reservation_insert(
        &self,
        params: ReservationInsertParams,
    ) -> Result<ReservationRecord, StoreError> {
        let now = now_or(params.now);
        let ttl = SignedDuration::try_from(params.ttl).unwrap_or(SignedDuration::MAX);
        let mut inner = self.lock();
        inner.next_reservation += 1;
        let r = ReservationRecord {
            id: inner.next_reservation,
            system: params.system,
            phase: ReservationPhase::Pending,
            holder: params.holder,
            slot_id: None,
            instance_id: None,
            created_at: now,
            expires_at: now.checked_add(ttl).unwrap_or(Timestamp::MAX),
            assigned_at: None,
            finished_at: None,
        };
        inner.open.insert(r.id, r.clone());
        Ok(r)
    }

    async fn reservation_assign(
        &self,
        params: ReservationAssignParams,
    ) -> Result<Vec<bool>, StoreError> {
        let now = now_or(params.now);
        let mut inner = self.lock();
        let mut results = Vec::with_capacity(params.assignments.len());
        for a in &params.assignments {
            let ok = match (inner.open.get(&a.reservation), inner.slots.get(&a.slot)) {
                (Some(r), Some(s)) => {
                    r.phase == ReservationPhase::Pending
                        && r.expires_at > now
                        && s.system == r.system
                        && s.state == SlotState::Ready
                        && s.leases < a.max_leases
                }
                _ => false,
            };
            if ok {
                let slot = inner.slots.get_mut(&a.slot).expect("checked");
                slot.leases += 1;
                slot.last_used_at = now;
                let r = inner.open.get_mut(&a.reservation).expect("checked");
                r.phase = ReservationPhase::Assigned;
                r.slot_id = Some(a.slot);
                r.assigned_at = Some(now);
            }
            results.push(ok);
        }
        Ok(results)
    }

    async fn reservation_release(
        &self,
        params: ReservationReleaseParams,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        let now = now_or(params.now);
        let mut inner = self.lock();
        inner.finish(params.id, ReservationPhase::Released, now);
        Ok(inner.get(params.id))
    }

    async fn reservation_expire(&self, params: ReservationExpireParams) -> Result<u64, StoreError> {
        let now = now_or(params.now);
        let mut inner = self.lock();
        let due: Vec<ReservationId> = inner
            .open
            .values()
            .filter(|r| r.expires_at <= now)
            .map(|r| r.id)
            .collect();
        for id in &due {
            inner.finish(*id, ReservationPhase::Expired, now);
        }
        Ok(due.len() as u64)
    }

    async fn reservation_list(
        &self,
        params: ReservationListParams,
    ) -> Result<Vec<ReservationRecord>, StoreError> {
        let inner = self.lock();
        let open_only = !params.phases.is_empty()
            && params
                .phases
                .iter()
                .all(|p| matches!(p, ReservationPhase::Pending | ReservationPhase::Assigned));
        let mut all: Vec<&ReservationRecord> = inner.open.values().collect();
        if !open_only {
            all.extend(inner.done.values());
            all.sort_by_key(|r| r.id);
        }
        let limit = if params.limit == 0 {
            usize::MAX
        } else {
            params.limit
        };
        Ok(all
            .into_iter()
            .filter(|r| params.id.is_none_or(|id| r.id == id))
            .filter(|r| params.system.as_ref().is_none_or(|sys| &r.system == sys))
            .filter(|r| params.phases.is_empty() || params.phases.contains(&r.phase))
            .take(limit)
            .map(|r| inner.with_instance(r.clone()))
            .collect())
    }

    async fn reservation_count(&self) -> Result<Vec<ReservationCount>, StoreError> {
        let inner = self.lock();
        // Keyed by borrowed names: one allocation per (system, phase), not per reservation.
        let mut counts: BTreeMap<(&str, &'static str), (ReservationPhase, u64)> = BTreeMap::new();
        for r in inner.open.values() {
            counts
                .entry((r.system.as_str(), r.phase.as_str()))
                .or_insert((r.phase, 0))
                .1 += 1;
        }
        Ok(counts
            .into_iter()
            .map(|((system, _), (phase, count))| ReservationCount {
                system: system.to_owned(),
                phase,
                count,
            })
            .collect())
    }
}
