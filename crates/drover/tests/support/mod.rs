//! A store for tests that stalls on request, around a real one: chosen calls that never answer
//! (a hung connection), a gate that holds every outcome write until it opens (a database that
//! stops recording), an outage of heartbeats, rescues and leadership reads, and claims that take a while (a database under load), counted as they
//! overlap. Everything else goes straight to the inner store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use drover_core::*;
use tokio::sync::watch;

/// A call that [`StallingStore::hang`] can make hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Call {
    CronStates,
    CronFire,
}

/// See the module documentation.
pub(crate) struct StallingStore {
    inner: DynStore,
    /// How many of the next calls of each kind never answer.
    to_hang: Mutex<HashMap<Call, usize>>,
    /// How many calls of each kind were left hanging.
    hung: Mutex<HashMap<Call, usize>>,
    /// Whether outcome writes go through.
    finish_open: watch::Sender<bool>,
    /// Outcomes of the writes waiting at the gate.
    at_gate: AtomicUsize,
    /// Cron fires that enqueued a job.
    fired: AtomicUsize,
    /// Heartbeats answered.
    heartbeats: AtomicUsize,
    /// How long each claim takes before it reaches the inner store.
    claim_delay: Mutex<Duration>,
    /// Claims out now, and the most seen out at once.
    claims_now: AtomicUsize,
    claims_most: AtomicUsize,
    /// The database is away for heartbeats, rescues and reads of the leadership.
    down: std::sync::atomic::AtomicBool,
}

impl StallingStore {
    /// Wraps `inner`, stalling nothing yet.
    pub(crate) fn new(inner: DynStore) -> Self {
        Self {
            inner,
            to_hang: Mutex::default(),
            hung: Mutex::default(),
            finish_open: watch::Sender::new(true),
            at_gate: AtomicUsize::new(0),
            fired: AtomicUsize::new(0),
            heartbeats: AtomicUsize::new(0),
            claim_delay: Mutex::new(Duration::ZERO),
            claims_now: AtomicUsize::new(0),
            claims_most: AtomicUsize::new(0),
            down: Default::default(),
        }
    }

    /// From now on heartbeats, rescues and reads of the leadership fail as if the database
    /// were away (outcome writes are held by [`StallingStore::close_finish`]), or no longer.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check_up(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the test's outage".into()));
        }
        Ok(())
    }

    /// Every claim from now on takes `delay` before it is made.
    pub(crate) fn slow_claims(&self, delay: Duration) {
        *self.claim_delay.lock().unwrap() = delay;
    }

    /// The most claims seen out at once.
    pub(crate) fn claims_most(&self) -> usize {
        self.claims_most.load(Ordering::SeqCst)
    }

    /// Runs a claim, counted among those out and delayed as set.
    async fn claiming<T>(&self, claim: impl Future<Output = T>) -> T {
        let now = self.claims_now.fetch_add(1, Ordering::SeqCst) + 1;
        self.claims_most.fetch_max(now, Ordering::SeqCst);
        let delay = *self.claim_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let result = claim.await;
        self.claims_now.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// The next `times` calls of `call` never answer.
    pub(crate) fn hang(&self, call: Call, times: usize) {
        *self.to_hang.lock().unwrap().entry(call).or_default() += times;
    }

    /// How many calls of `call` were left hanging so far.
    pub(crate) fn hung(&self, call: Call) -> usize {
        self.hung.lock().unwrap().get(&call).copied().unwrap_or(0)
    }

    /// Holds every outcome write from now on until [`StallingStore::open_finish`].
    pub(crate) fn close_finish(&self) {
        self.finish_open.send_replace(false);
    }

    /// Lets the held outcome writes (and later ones) through.
    pub(crate) fn open_finish(&self) {
        self.finish_open.send_replace(true);
    }

    /// Outcomes held at the gate now.
    pub(crate) fn outcomes_at_gate(&self) -> usize {
        self.at_gate.load(Ordering::SeqCst)
    }

    /// Cron fires that enqueued a job so far.
    pub(crate) fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }

    /// Heartbeats answered so far.
    pub(crate) fn heartbeats(&self) -> usize {
        self.heartbeats.load(Ordering::SeqCst)
    }

    /// Never returns if `call` is due to hang.
    async fn maybe_hang(&self, call: Call) {
        let hang = {
            let mut to_hang = self.to_hang.lock().unwrap();
            match to_hang.get_mut(&call) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    true
                }
                _ => false,
            }
        };
        if hang {
            *self.hung.lock().unwrap().entry(call).or_default() += 1;
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl Store for StallingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn job_finish_many(
        &self,
        params: JobFinishParams,
    ) -> Result<Vec<FinishResult>, StoreError> {
        let mut open = self.finish_open.subscribe();
        if !*open.borrow() {
            let held = params.outcomes.len();
            self.at_gate.fetch_add(held, Ordering::SeqCst);
            let _ = open.wait_for(|open| *open).await;
            self.at_gate.fetch_sub(held, Ordering::SeqCst);
        }
        self.inner.job_finish_many(params).await
    }

    async fn job_finish_and_claim(
        &self,
        params: JobFinishClaimParams,
    ) -> Result<FinishClaimResult, StoreError> {
        // Outcomes with claims fail fast rather than wait: a claim waiting at the gate would hold
        // its foreman for a lease. The completer then writes the outcomes alone, at the gate.
        if !params.outcomes.is_empty() && !*self.finish_open.borrow() {
            return Err(StoreError::Unavailable("outcome writes are held".into()));
        }
        if params.claims.is_empty() {
            return self.inner.job_finish_and_claim(params).await;
        }
        self.claiming(self.inner.job_finish_and_claim(params)).await
    }

    async fn job_heartbeat(
        &self,
        params: JobHeartbeatParams,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        self.check_up()?;
        let answer = self.inner.job_heartbeat(params).await;
        self.heartbeats.fetch_add(1, Ordering::SeqCst);
        answer
    }

    async fn cron_states(&self) -> Result<Vec<CronState>, StoreError> {
        self.maybe_hang(Call::CronStates).await;
        self.inner.cron_states().await
    }

    async fn cron_fire(&self, params: CronFireParams) -> Result<CronFireResult, StoreError> {
        self.maybe_hang(Call::CronFire).await;
        let result = self.inner.cron_fire(params).await?;
        if matches!(result, CronFireResult::Fired { .. }) {
            self.fired.fetch_add(1, Ordering::SeqCst);
        }
        Ok(result)
    }

    async fn migrate(&self) -> Result<MigrateReport, StoreError> {
        self.inner.migrate().await
    }

    async fn job_insert_many(
        &self,
        params: JobInsertParams,
    ) -> Result<Vec<InsertedJob>, StoreError> {
        self.inner.job_insert_many(params).await
    }

    async fn job_claim(&self, params: JobClaimParams) -> Result<ClaimResult, StoreError> {
        self.claiming(self.inner.job_claim(params)).await
    }

    fn job_claim_parked(&self, params: JobClaimParams) -> Option<ParkedClaim> {
        self.inner.job_claim_parked(params)
    }

    async fn job_promote_due(&self, params: JobPromoteParams) -> Result<u64, StoreError> {
        self.check_up()?;
        self.inner.job_promote_due(params).await
    }

    async fn job_rescue_expired(
        &self,
        params: JobRescueParams,
    ) -> Result<Vec<RescuedJob>, StoreError> {
        self.check_up()?;
        self.inner.job_rescue_expired(params).await
    }

    async fn job_cancel(&self, params: JobCancelParams) -> Result<CancelResult, StoreError> {
        self.inner.job_cancel(params).await
    }

    async fn job_retry(&self, params: JobRetryParams) -> Result<JobRecord, StoreError> {
        self.inner.job_retry(params).await
    }

    async fn job_get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.inner.job_get(id).await
    }

    async fn job_list(&self, params: JobListParams) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.job_list(params).await
    }

    async fn job_cancel_requested(&self, ids: Vec<JobId>) -> Result<Vec<JobId>, StoreError> {
        self.inner.job_cancel_requested(ids).await
    }

    async fn job_count_by_queue(&self) -> Result<Vec<QueueStateCount>, StoreError> {
        self.inner.job_count_by_queue().await
    }

    async fn job_act_many(&self, params: JobActParams) -> Result<Vec<ActResult>, StoreError> {
        self.inner.job_act_many(params).await
    }

    async fn queue_pause(&self, params: QueuePauseParams) -> Result<QueueRecord, StoreError> {
        self.inner.queue_pause(params).await
    }

    async fn queue_list(&self) -> Result<Vec<QueueRecord>, StoreError> {
        self.inner.queue_list().await
    }

    async fn queue_counts_refresh(
        &self,
        params: QueueCountsRefreshParams,
    ) -> Result<(), StoreError> {
        self.inner.queue_counts_refresh(params).await
    }

    async fn leader_attempt_elect(
        &self,
        params: LeaderElectParams,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        self.inner.leader_attempt_elect(params).await
    }

    async fn leader_attempt_reelect(
        &self,
        params: LeaderReelectParams,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        self.inner.leader_attempt_reelect(params).await
    }

    async fn leader_resign(&self, params: LeaderResignParams) -> Result<bool, StoreError> {
        self.inner.leader_resign(params).await
    }

    async fn leader_get(
        &self,
        name: String,
        now: Option<jiff::Timestamp>,
    ) -> Result<Option<LeaderRecord>, StoreError> {
        self.check_up()?;
        self.inner.leader_get(name, now).await
    }

    async fn process_upsert(&self, params: ProcessUpsertParams) -> Result<(), StoreError> {
        self.inner.process_upsert(params).await
    }

    async fn process_delete(&self, id: String) -> Result<(), StoreError> {
        self.inner.process_delete(id).await
    }

    async fn process_list(&self) -> Result<Vec<ProcessRecord>, StoreError> {
        self.inner.process_list().await
    }

    async fn process_prune(&self, params: ProcessPruneParams) -> Result<u64, StoreError> {
        self.inner.process_prune(params).await
    }

    async fn cron_register(
        &self,
        params: CronRegisterParams,
    ) -> Result<Vec<CronState>, StoreError> {
        self.inner.cron_register(params).await
    }

    async fn cron_prune(&self, params: CronPruneParams) -> Result<u64, StoreError> {
        self.inner.cron_prune(params).await
    }

    async fn retention_run_insert(
        &self,
        params: RetentionRunInsertParams,
    ) -> Result<(), StoreError> {
        self.inner.retention_run_insert(params).await
    }

    async fn retention_run_list(
        &self,
        params: RetentionRunListParams,
    ) -> Result<Vec<RetentionRunRecord>, StoreError> {
        self.inner.retention_run_list(params).await
    }

    async fn throughput_add(&self, params: ThroughputAddParams) -> Result<(), StoreError> {
        self.inner.throughput_add(params).await
    }

    async fn throughput_list(
        &self,
        params: ThroughputListParams,
    ) -> Result<Vec<ThroughputMinute>, StoreError> {
        self.inner.throughput_list(params).await
    }

    async fn throughput_prune(&self, params: ThroughputPruneParams) -> Result<u64, StoreError> {
        self.inner.throughput_prune(params).await
    }

    async fn table_columns(&self, table: String) -> Result<Option<Vec<String>>, StoreError> {
        self.inner.table_columns(table).await
    }

    async fn archive_batch(&self, params: ArchiveParams) -> Result<u64, StoreError> {
        self.inner.archive_batch(params).await
    }

    async fn archive_pending(&self, params: ArchiveParams) -> Result<u64, StoreError> {
        self.inner.archive_pending(params).await
    }

    async fn slot_insert(&self, params: SlotInsertParams) -> Result<SlotRecord, StoreError> {
        self.inner.slot_insert(params).await
    }

    async fn slot_transition(
        &self,
        params: SlotTransitionParams,
    ) -> Result<Option<SlotRecord>, StoreError> {
        self.inner.slot_transition(params).await
    }

    async fn slot_list(&self, params: SlotListParams) -> Result<Vec<SlotRecord>, StoreError> {
        self.inner.slot_list(params).await
    }

    async fn reservation_insert(
        &self,
        params: ReservationInsertParams,
    ) -> Result<ReservationRecord, StoreError> {
        self.inner.reservation_insert(params).await
    }

    async fn reservation_assign(
        &self,
        params: ReservationAssignParams,
    ) -> Result<Vec<bool>, StoreError> {
        self.inner.reservation_assign(params).await
    }

    async fn reservation_release(
        &self,
        params: ReservationReleaseParams,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        self.inner.reservation_release(params).await
    }

    async fn reservation_expire(&self, params: ReservationExpireParams) -> Result<u64, StoreError> {
        self.inner.reservation_expire(params).await
    }

    async fn reservation_list(
        &self,
        params: ReservationListParams,
    ) -> Result<Vec<ReservationRecord>, StoreError> {
        self.inner.reservation_list(params).await
    }

    async fn reservation_count(&self) -> Result<Vec<ReservationCount>, StoreError> {
        self.inner.reservation_count().await
    }

    fn wakeups(&self) -> watch::Receiver<u64> {
        self.inner.wakeups()
    }

    fn background_health(&self) -> Vec<drover_core::BackgroundHealth> {
        self.inner.background_health()
    }

    async fn close(&self) {
        self.inner.close().await
    }
}
