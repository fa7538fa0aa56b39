//! [`MeteredStore`]: the store seam instrumented once. Every operation is timed into
//! `drover_store_commit_seconds{op}`, and the operations whose results are metrics (enqueues,
//! rescued leases, cron fires, archived rows) are counted here, whoever called them.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use drover_core::*;
use tokio::sync::watch;

use super::Metrics;

/// A [`Store`] that records metrics about every call and otherwise does what the inner store
/// does.
pub struct MeteredStore {
    inner: DynStore,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: DynStore, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

impl std::fmt::Debug for MeteredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredStore")
            .field("backend", &self.inner.backend())
            .finish_non_exhaustive()
    }
}

/// Times `$call` into the histogram of `$op`.
macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.metrics.store_op($op, started.elapsed());
        result
    }};
}

#[async_trait]
impl Store for MeteredStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn migrate(&self) -> Result<MigrateReport, StoreError> {
        self.inner.migrate().await
    }

    async fn job_insert_many(
        &self,
        params: JobInsertParams,
    ) -> Result<Vec<InsertedJob>, StoreError> {
        let labels: Vec<(String, String)> = params
            .jobs
            .iter()
            .map(|job| (job.queue.clone(), job.kind.clone()))
            .collect();
        let inserted = timed!(self, "job_insert_many", self.inner.job_insert_many(params))?;
        for ((queue, kind), job) in labels.iter().zip(&inserted) {
            if !job.duplicate {
                self.metrics.enqueued(queue, kind);
            }
        }
        Ok(inserted)
    }

    async fn job_claim(&self, params: JobClaimParams) -> Result<ClaimResult, StoreError> {
        timed!(self, "job_claim", self.inner.job_claim(params))
    }

    fn job_claim_parked(&self, params: JobClaimParams) -> Option<ParkedClaim> {
        self.inner.job_claim_parked(params)
    }

    async fn job_finish_and_claim(
        &self,
        params: JobFinishClaimParams,
    ) -> Result<FinishClaimResult, StoreError> {
        timed!(
            self,
            "job_finish_and_claim",
            self.inner.job_finish_and_claim(params)
        )
    }

    async fn job_heartbeat(
        &self,
        params: JobHeartbeatParams,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        timed!(self, "job_heartbeat", self.inner.job_heartbeat(params))
    }

    async fn job_finish_many(
        &self,
        params: JobFinishParams,
    ) -> Result<Vec<FinishResult>, StoreError> {
        timed!(self, "job_finish_many", self.inner.job_finish_many(params))
    }

    async fn job_promote_due(&self, params: JobPromoteParams) -> Result<u64, StoreError> {
        timed!(self, "job_promote_due", self.inner.job_promote_due(params))
    }

    async fn job_rescue_expired(
        &self,
        params: JobRescueParams,
    ) -> Result<Vec<RescuedJob>, StoreError> {
        let rescued = timed!(
            self,
            "job_rescue_expired",
            self.inner.job_rescue_expired(params)
        )?;
        for job in &rescued {
            self.metrics.lease_expired(&job.queue, &job.kind);
        }
        Ok(rescued)
    }

    async fn job_cancel(&self, params: JobCancelParams) -> Result<CancelResult, StoreError> {
        timed!(self, "job_cancel", self.inner.job_cancel(params))
    }

    async fn job_retry(&self, params: JobRetryParams) -> Result<JobRecord, StoreError> {
        timed!(self, "job_retry", self.inner.job_retry(params))
    }

    async fn job_get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        timed!(self, "job_get", self.inner.job_get(id))
    }

    async fn job_list(&self, params: JobListParams) -> Result<Vec<JobRecord>, StoreError> {
        timed!(self, "job_list", self.inner.job_list(params))
    }

    async fn job_cancel_requested(&self, ids: Vec<JobId>) -> Result<Vec<JobId>, StoreError> {
        timed!(
            self,
            "job_cancel_requested",
            self.inner.job_cancel_requested(ids)
        )
    }

    async fn job_count_by_queue(&self) -> Result<Vec<QueueStateCount>, StoreError> {
        timed!(self, "job_count_by_queue", self.inner.job_count_by_queue())
    }

    async fn job_act_many(&self, params: JobActParams) -> Result<Vec<ActResult>, StoreError> {
        timed!(self, "job_act_many", self.inner.job_act_many(params))
    }

    async fn queue_pause(&self, params: QueuePauseParams) -> Result<QueueRecord, StoreError> {
        timed!(self, "queue_pause", self.inner.queue_pause(params))
    }

    async fn queue_list(&self) -> Result<Vec<QueueRecord>, StoreError> {
        timed!(self, "queue_list", self.inner.queue_list())
    }

    async fn queue_counts_refresh(
        &self,
        params: QueueCountsRefreshParams,
    ) -> Result<(), StoreError> {
        timed!(
            self,
            "queue_counts_refresh",
            self.inner.queue_counts_refresh(params)
        )
    }

    async fn leader_attempt_elect(
        &self,
        params: LeaderElectParams,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        timed!(
            self,
            "leader_attempt_elect",
            self.inner.leader_attempt_elect(params)
        )
    }

    async fn leader_attempt_reelect(
        &self,
        params: LeaderReelectParams,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        timed!(
            self,
            "leader_attempt_reelect",
            self.inner.leader_attempt_reelect(params)
        )
    }

    async fn leader_resign(&self, params: LeaderResignParams) -> Result<bool, StoreError> {
        timed!(self, "leader_resign", self.inner.leader_resign(params))
    }

    async fn leader_get(
        &self,
        name: String,
        now: Option<jiff::Timestamp>,
    ) -> Result<Option<LeaderRecord>, StoreError> {
        timed!(self, "leader_get", self.inner.leader_get(name, now))
    }

    async fn process_upsert(&self, params: ProcessUpsertParams) -> Result<(), StoreError> {
        timed!(self, "process_upsert", self.inner.process_upsert(params))
    }

    async fn process_delete(&self, id: String) -> Result<(), StoreError> {
        timed!(self, "process_delete", self.inner.process_delete(id))
    }

    async fn process_list(&self) -> Result<Vec<ProcessRecord>, StoreError> {
        timed!(self, "process_list", self.inner.process_list())
    }

    async fn process_prune(&self, params: ProcessPruneParams) -> Result<u64, StoreError> {
        timed!(self, "process_prune", self.inner.process_prune(params))
    }

    async fn cron_register(
        &self,
        params: CronRegisterParams,
    ) -> Result<Vec<CronState>, StoreError> {
        timed!(self, "cron_register", self.inner.cron_register(params))
    }

    async fn cron_states(&self) -> Result<Vec<CronState>, StoreError> {
        timed!(self, "cron_states", self.inner.cron_states())
    }

    async fn cron_fire(&self, params: CronFireParams) -> Result<CronFireResult, StoreError> {
        let (queue, kind) = (params.job.queue.clone(), params.job.kind.clone());
        let result = timed!(self, "cron_fire", self.inner.cron_fire(params))?;
        if matches!(result, CronFireResult::Fired { .. }) {
            self.metrics.enqueued(&queue, &kind);
            self.metrics.cron_fired(&queue, &kind);
        }
        Ok(result)
    }

    async fn cron_prune(&self, params: CronPruneParams) -> Result<u64, StoreError> {
        timed!(self, "cron_prune", self.inner.cron_prune(params))
    }

    async fn retention_run_insert(
        &self,
        params: RetentionRunInsertParams,
    ) -> Result<(), StoreError> {
        timed!(
            self,
            "retention_run_insert",
            self.inner.retention_run_insert(params)
        )
    }

    async fn retention_run_list(
        &self,
        params: RetentionRunListParams,
    ) -> Result<Vec<RetentionRunRecord>, StoreError> {
        timed!(
            self,
            "retention_run_list",
            self.inner.retention_run_list(params)
        )
    }

    async fn throughput_add(&self, params: ThroughputAddParams) -> Result<(), StoreError> {
        timed!(self, "throughput_add", self.inner.throughput_add(params))
    }

    async fn throughput_list(
        &self,
        params: ThroughputListParams,
    ) -> Result<Vec<ThroughputMinute>, StoreError> {
        timed!(self, "throughput_list", self.inner.throughput_list(params))
    }

    async fn throughput_prune(&self, params: ThroughputPruneParams) -> Result<u64, StoreError> {
        timed!(
            self,
            "throughput_prune",
            self.inner.throughput_prune(params)
        )
    }

    async fn table_columns(&self, table: String) -> Result<Option<Vec<String>>, StoreError> {
        self.inner.table_columns(table).await
    }

    async fn archive_batch(&self, params: ArchiveParams) -> Result<u64, StoreError> {
        let table = params.table.clone();
        let moved = timed!(self, "archive_batch", self.inner.archive_batch(params))?;
        self.metrics.archived(&table, moved);
        Ok(moved)
    }

    async fn archive_pending(&self, params: ArchiveParams) -> Result<u64, StoreError> {
        timed!(self, "archive_pending", self.inner.archive_pending(params))
    }

    async fn slot_insert(&self, params: SlotInsertParams) -> Result<SlotRecord, StoreError> {
        timed!(self, "slot_insert", self.inner.slot_insert(params))
    }

    async fn slot_transition(
        &self,
        params: SlotTransitionParams,
    ) -> Result<Option<SlotRecord>, StoreError> {
        timed!(self, "slot_transition", self.inner.slot_transition(params))
    }

    async fn slot_list(&self, params: SlotListParams) -> Result<Vec<SlotRecord>, StoreError> {
        timed!(self, "slot_list", self.inner.slot_list(params))
    }

    async fn reservation_insert(
        &self,
        params: ReservationInsertParams,
    ) -> Result<ReservationRecord, StoreError> {
        timed!(
            self,
            "reservation_insert",
            self.inner.reservation_insert(params)
        )
    }

    async fn reservation_assign(
        &self,
        params: ReservationAssignParams,
    ) -> Result<Vec<bool>, StoreError> {
        timed!(
            self,
            "reservation_assign",
            self.inner.reservation_assign(params)
        )
    }

    async fn reservation_release(
        &self,
        params: ReservationReleaseParams,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        timed!(
            self,
            "reservation_release",
            self.inner.reservation_release(params)
        )
    }

    async fn reservation_expire(&self, params: ReservationExpireParams) -> Result<u64, StoreError> {
        timed!(
            self,
            "reservation_expire",
            self.inner.reservation_expire(params)
        )
    }

    async fn reservation_list(
        &self,
        params: ReservationListParams,
    ) -> Result<Vec<ReservationRecord>, StoreError> {
        timed!(
            self,
            "reservation_list",
            self.inner.reservation_list(params)
        )
    }

    async fn reservation_count(&self) -> Result<Vec<ReservationCount>, StoreError> {
        timed!(self, "reservation_count", self.inner.reservation_count())
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
