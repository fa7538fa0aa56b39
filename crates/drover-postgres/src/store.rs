//! [`PgStore`]: the [`Store`] implementation, wiring the pool, the listener and the SQL
//! modules together.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deadpool_postgres::Pool;
use drover_core::{
    ArchiveParams, CancelResult, ClaimResult, CronFireParams, CronFireResult, CronPruneParams,
    CronRegisterParams, CronState, FinishClaimResult, FinishResult, InsertedJob, JobCancelParams,
    JobClaimParams, JobFinishClaimParams, JobFinishParams, JobHeartbeatParams, JobId,
    JobInsertParams, JobListParams, JobPromoteParams, JobRecord, JobRescueParams, JobRetryParams,
    LeaderElectParams, LeaderRecord, LeaderReelectParams, LeaderResignParams, LeaderTerm,
    LeaseStatus, MigrateReport, NewJob, ProcessPruneParams, ProcessRecord, ProcessUpsertParams,
    QueueStateCount, RescuedJob, ReservationAssignParams, ReservationCount,
    ReservationExpireParams, ReservationInsertParams, ReservationListParams, ReservationRecord,
    ReservationReleaseParams, SlotInsertParams, SlotListParams, SlotRecord, SlotTransitionParams,
    Store, StoreError, Wakeups,
};
use jiff::Timestamp;
use tokio::sync::{oneshot, watch};

use crate::batch::Pending;
use crate::config::{PgConfig, redact};
use crate::error::{DbError, map_pool};
use crate::finish;
use crate::insert::InsertSql;
use crate::listener::Listener;
use crate::session::Db;
use crate::txn::{in_transaction, on_connection};
use crate::vacuum::Vacuum;
use crate::writer::{InsertWriter, inserted_queues};
use crate::{
    activity, admin, capacity, cluster, finish_claim, insert, jobs, maintenance, schema, wake,
};

mod open;

#[cfg(test)]
pub(crate) use open::WORKER_CONNECTIONS;

/// A [`Store`] on PostgreSQL. See the crate documentation for its design.
pub struct PgStore {
    config: PgConfig,
    schema: Option<String>,
    channel: String,
    pool: Pool,
    /// The tasks of the pool's connections ([`session::Connector`]).
    connections: tokio_util::task::TaskTracker,
    wakeups: Wakeups,
    insert_sql: InsertSql,
    writer: InsertWriter,
    closed: Arc<AtomicBool>,
    /// Set once the schema was found current, so that reads check it only once.
    schema_current: AtomicBool,
    listener: Mutex<Option<Listener>>,
    vacuum: Arc<Vacuum>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &redact(&self.config.url))
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Longest [`Store::close`] waits for the pool's connections to end their sessions.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl PgStore {
    /// How many times this store has vacuumed the jobs table (see
    /// [`PgConfig::vacuum_after_claims`]).
    pub fn vacuums(&self) -> u64 {
        self.vacuum.runs()
    }

    /// How many times this store has analyzed the jobs table as its inserts grew it (at 1,000,
    /// 10,000 and 100,000 jobs), so that prepared statements are planned for its new size.
    pub fn analyses(&self) -> u64 {
        self.vacuum.analyses()
    }

    /// The settings the store was opened with.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    /// How many times the listener has connected and started listening: 1 after a clean
    /// start, one more after every reconnection; 0 when it never could, or does not run.
    pub fn listener_connections(&self) -> u64 {
        self.listener
            .lock()
            .expect("listener lock poisoned")
            .as_ref()
            .map_or(0, Listener::connections)
    }

    /// Enqueues jobs inside the caller's own transaction: the jobs exist if and only if that
    /// transaction commits, and workers are woken (by `NOTIFY`) when it does.
    ///
    /// The jobs are validated first, with the limits of [`PgConfig::limits`] (the defaults
    /// unless set). Table names are qualified
    /// with the store's schema, so the transaction's `search_path` does not matter. Job times
    /// are the transaction's start (`now()`). A deadlock is not retried here: the error is
    /// transient, and the caller retries its whole transaction.
    ///
    /// ```no_run
    /// # async fn example(store: &drover_postgres::PgStore, client: &mut tokio_postgres::Client)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// use drover_core::NewJob;
    ///
    /// let tx = client.transaction().await?;
    /// tx.execute("INSERT INTO orders (id) VALUES ($1)", &[&42_i64]).await?;
    /// store
    ///     .insert_jobs_in_transaction(&tx, &[NewJob::new("order.confirm", r#"{"order":42}"#)])
    ///     .await?;
    /// tx.commit().await?; // the order and its job, or neither
    /// # Ok(())
    /// # }
    /// ```
    pub async fn insert_jobs_in_transaction(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        jobs: &[NewJob],
    ) -> Result<Vec<InsertedJob>, StoreError> {
        let limits = self.config.limits;
        limits.check_batch(jobs.len())?;
        for job in jobs {
            limits.check_job(job)?;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let db = Db::new(tx.client(), None);
        let work = async {
            let inserted = insert::insert_many(&db, &self.insert_sql, jobs, None).await?;
            let payloads = inserted_queues(&inserted, jobs);
            // Our channel name, spelled in full: the caller's session has no notion of it.
            wake::notify(&db, &self.channel, &payloads).await?;
            Ok::<_, DbError>(inserted)
        };
        work.await.map_err(DbError::into_store)
    }

    /// The schema version of the database (0 when Drover never migrated it), read without
    /// migrating: for the commands that must not create the tables where a mistyped URL or
    /// `schema=` points.
    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        on_connection!(self, |db| schema::version(db).await?)
    }

    /// Drops the store's own schema and everything in it (what `drover bench` does with the
    /// schema it created). Refused when the store has no schema of its own: it never drops
    /// `public`.
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        let Some(schema) = &self.schema else {
            return Err(StoreError::Internal(
                "this store has no schema of its own to drop".into(),
            ));
        };
        // An upkeep still running on the table fails once it is gone; that is expected now.
        self.vacuum.close().await;
        let client = self.pool.get().await.map_err(map_pool)?;
        // The name was checked as a plain identifier when the config was parsed.
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .map_err(|err| crate::error::map_pg(&err))
    }

    /// Asks the server for a checkpoint (`CHECKPOINT`), so that the data a previous load left
    /// dirty is written now rather than during the next one: what `drover bench` does before
    /// each run. `Ok(false)` when the role may not (a superuser or `pg_checkpoint` may).
    pub async fn checkpoint(&self) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(map_pool)?;
        match client.batch_execute("CHECKPOINT").await {
            Ok(()) => Ok(true),
            Err(err)
                if err.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                Ok(false)
            }
            Err(err) => Err(crate::error::map_pg(&err)),
        }
    }

    fn check_open(&self) -> Result<(), StoreError> {
        self.writer.check_open()
    }

    async fn pause_before_retry(&self, tries: u32, err: &DbError) {
        self.writer.pause_before_retry(tries, err).await
    }

    /// Fails with a clear message when the schema is older than this build (SQLite does the
    /// same); checked once, then remembered.
    async fn ensure_migrated(&self) -> Result<(), StoreError> {
        if self.schema_current.load(Ordering::Acquire) {
            return Ok(());
        }
        let version = on_connection!(self, |db| schema::version(db).await?)?;
        if version < schema::LATEST {
            return Err(StoreError::Internal(format!(
                "the database schema is at version {version}, this build needs {}: run `drover migrate`",
                schema::LATEST
            )));
        }
        self.schema_current.store(true, Ordering::Release);
        Ok(())
    }

    /// After a commit that may have made work available: wake this process's workers now (the
    /// listener hears the notification too, a moment later).
    fn woke(&self, woke: bool) {
        if woke {
            self.wakeups.wake();
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<MigrateReport, StoreError> {
        let schema = self.schema.as_deref();
        let (found, applied) = in_transaction!(self, |db| schema::migrate(db, schema).await?)?;
        self.schema_current.store(true, Ordering::Release);
        Ok(MigrateReport {
            applied,
            version: found.max(schema::LATEST),
            known: schema::LATEST,
        })
    }

    async fn job_insert_many(
        &self,
        params: JobInsertParams,
    ) -> Result<Vec<InsertedJob>, StoreError> {
        if params.jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.check_open()?;
        let (reply, answer) = oneshot::channel();
        let flush = self.writer.queue.push(Pending {
            jobs: params.jobs,
            now: params.now,
            reply,
        });
        if flush {
            // In a task of its own: a caller that gives up waiting must not strand the
            // enqueues of the others in its batch.
            tokio::spawn(self.writer.clone().flush_all());
        }
        let inserted = answer.await.unwrap_or(Err(StoreError::Closed))?;
        self.vacuum.inserted(inserted.len());
        Ok(inserted)
    }

    fn job_claim_parked(&self, params: JobClaimParams) -> Option<drover_core::ParkedClaim> {
        Some(self.writer.parked.park(params))
    }

    async fn job_claim(&self, params: JobClaimParams) -> Result<ClaimResult, StoreError> {
        // A transaction of its own, pipelined (see jobs::claim).
        let claimed = on_connection!(self, |db| jobs::claim(db, &params).await?)?;
        self.vacuum.claimed(claimed.jobs.len(), params.limit);
        Ok(claimed)
    }

    async fn job_heartbeat(
        &self,
        params: JobHeartbeatParams,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        if params.leases.is_empty() {
            return Ok(Vec::new());
        }
        // One statement: its own transaction.
        on_connection!(self, |db| jobs::heartbeat(db, &params).await?)
    }

    async fn job_finish_many(
        &self,
        params: JobFinishParams,
    ) -> Result<Vec<FinishResult>, StoreError> {
        if params.outcomes.is_empty() {
            return Ok(Vec::new());
        }
        // One statement, notifications included: its own transaction.
        let finished = on_connection!(self, |db| {
            finish::finish_many(db, &self.channel, &params.outcomes, params.now).await?
        })?;
        self.woke(finished.notified);
        Ok(finished.results)
    }

    async fn job_finish_and_claim(
        &self,
        params: JobFinishClaimParams,
    ) -> Result<FinishClaimResult, StoreError> {
        if params.claims.is_empty() {
            let finished = self
                .job_finish_many(JobFinishParams {
                    outcomes: params.outcomes,
                    now: params.now,
                })
                .await?;
            return Ok(FinishClaimResult {
                finished,
                claimed: Vec::new(),
            });
        }
        // One pipelined transaction (see finish_claim).
        let (finished, claimed) = on_connection!(self, |db| {
            finish_claim::finish_and_claim(
                db,
                &self.channel,
                &params.outcomes,
                &params.claims,
                params.now,
            )
            .await?
        })?;
        self.woke(finished.notified);
        self.vacuum.claimed(
            claimed.iter().map(|c| c.jobs.len()).sum(),
            params.claims.iter().map(|c| c.limit).sum(),
        );
        Ok(FinishClaimResult {
            finished: finished.results,
            claimed,
        })
    }

    async fn job_promote_due(&self, params: JobPromoteParams) -> Result<u64, StoreError> {
        let promoted = in_transaction!(self, |db| {
            let promoted = jobs::promote_due(db, params.limit, params.now).await?;
            let payloads = wake::payloads(promoted.iter().map(|(queue, _)| queue.as_str()));
            wake::notify(db, &self.channel, &payloads).await?;
            promoted
        })?;
        self.woke(!promoted.is_empty());
        Ok(promoted.iter().map(|(_, n)| n).sum())
    }

    async fn job_rescue_expired(
        &self,
        params: JobRescueParams,
    ) -> Result<Vec<RescuedJob>, StoreError> {
        let rescued = in_transaction!(self, |db| {
            let rescued = jobs::rescue_expired(db, params.limit, params.now).await?;
            let payloads = wake::payloads(rescued.iter().map(|job| job.queue.as_str()));
            wake::notify(db, &self.channel, &payloads).await?;
            rescued
        })?;
        self.woke(!rescued.is_empty());
        Ok(rescued)
    }

    async fn job_cancel(&self, params: JobCancelParams) -> Result<CancelResult, StoreError> {
        let result = in_transaction!(self, |db| {
            let cancelled = jobs::cancel(db, params.id, params.now).await?;
            // Workers in other processes check their running jobs for cancel requests on
            // wake-up.
            if cancelled.result == CancelResult::Requested {
                wake::notify(db, &self.channel, &[cancelled.queue]).await?;
            }
            cancelled.result
        })?;
        self.woke(result == CancelResult::Requested);
        Ok(result)
    }

    async fn job_retry(&self, params: JobRetryParams) -> Result<JobRecord, StoreError> {
        let record = in_transaction!(self, |db| {
            let record = jobs::retry(db, params.id, params.now).await?;
            wake::notify(db, &self.channel, std::slice::from_ref(&record.queue)).await?;
            record
        })?;
        self.woke(true);
        Ok(record)
    }

    async fn job_get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.ensure_migrated().await?;
        on_connection!(self, |db| jobs::get(db, id).await?)
    }

    async fn job_list(&self, params: JobListParams) -> Result<Vec<JobRecord>, StoreError> {
        self.ensure_migrated().await?;
        on_connection!(self, |db| jobs::list(db, &params).await?)
    }

    async fn job_cancel_requested(&self, ids: Vec<JobId>) -> Result<Vec<JobId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        on_connection!(self, |db| jobs::cancel_requested(db, &ids).await?)
    }

    async fn job_count_by_queue(&self) -> Result<Vec<QueueStateCount>, StoreError> {
        self.ensure_migrated().await?;
        on_connection!(self, |db| jobs::count_by_queue(db).await?)
    }

    async fn job_act_many(
        &self,
        params: drover_core::JobActParams,
    ) -> Result<Vec<drover_core::ActResult>, StoreError> {
        if params.ids.is_empty() {
            return Ok(Vec::new());
        }
        let acted = in_transaction!(self, |db| {
            let acted = admin::act_many(db, &params.ids, params.action, params.now).await?;
            // Retried jobs are available; cancel requests reach workers on their wake-up.
            wake::notify(db, &self.channel, &acted.queues).await?;
            acted
        })?;
        self.woke(!acted.queues.is_empty());
        Ok(acted.results)
    }

    async fn queue_pause(
        &self,
        params: drover_core::QueuePauseParams,
    ) -> Result<drover_core::QueueRecord, StoreError> {
        drover_core::validate::check_name("queue", &params.queue)?;
        let queues = in_transaction!(self, |db| {
            admin::pause(db, &params.queue, params.paused, params.now).await?;
            if !params.paused {
                wake::notify(db, &self.channel, std::slice::from_ref(&params.queue)).await?;
            }
            admin::queue_list(db).await?
        })?;
        self.woke(!params.paused);
        // A resume of a queue with no row writes none.
        Ok(queues
            .into_iter()
            .find(|q| q.name == params.queue)
            .unwrap_or_else(|| drover_core::QueueRecord::unseen(&params.queue)))
    }

    async fn queue_list(&self) -> Result<Vec<drover_core::QueueRecord>, StoreError> {
        self.ensure_migrated().await?;
        on_connection!(self, |db| admin::queue_list(db).await?)
    }

    async fn queue_counts_refresh(
        &self,
        params: drover_core::QueueCountsRefreshParams,
    ) -> Result<(), StoreError> {
        self.ensure_migrated().await?;
        let counts = on_connection!(self, |db| admin::count(db, params.cap).await?)?;
        in_transaction!(self, |db| admin::store_counts(db, &counts, params.now)
            .await?)
    }

    async fn leader_attempt_elect(
        &self,
        params: LeaderElectParams,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        in_transaction!(self, |db| cluster::elect(db, &params).await?)
    }

    async fn leader_attempt_reelect(
        &self,
        params: LeaderReelectParams,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        in_transaction!(self, |db| cluster::reelect(db, &params).await?)
    }

    async fn leader_resign(&self, params: LeaderResignParams) -> Result<bool, StoreError> {
        let resigned = in_transaction!(self, |db| {
            let resigned = cluster::resign(db, &params).await?;
            // Other processes' electors listen to wake-ups: the handover is immediate.
            if resigned {
                wake::notify(db, &self.channel, &[wake::LEADER.to_owned()]).await?;
            }
            resigned
        })?;
        self.woke(resigned);
        Ok(resigned)
    }

    async fn leader_get(
        &self,
        name: String,
        now: Option<Timestamp>,
    ) -> Result<Option<LeaderRecord>, StoreError> {
        self.ensure_migrated().await?;
        on_connection!(self, |db| cluster::leader(db, &name, now).await?)
    }

    async fn process_upsert(&self, params: ProcessUpsertParams) -> Result<(), StoreError> {
        in_transaction!(self, |db| cluster::process_upsert(db, &params).await?)
    }

    async fn process_delete(&self, id: String) -> Result<(), StoreError> {
        in_transaction!(self, |db| cluster::process_delete(db, &id).await?)
    }

    async fn process_list(&self) -> Result<Vec<ProcessRecord>, StoreError> {
        self.ensure_migrated().await?;
        on_connection!(self, |db| cluster::process_list(db).await?)
    }

    async fn process_prune(&self, params: ProcessPruneParams) -> Result<u64, StoreError> {
        in_transaction!(self, |db| {
            cluster::process_prune(db, params.stale_after, params.now).await?
        })
    }

    async fn cron_register(
        &self,
        params: CronRegisterParams,
    ) -> Result<Vec<CronState>, StoreError> {
        in_transaction!(self, |db| {
            maintenance::cron_register(db, &params.names, params.now).await?;
            maintenance::cron_states(db).await?
        })
    }

    async fn cron_states(&self) -> Result<Vec<CronState>, StoreError> {
        self.ensure_migrated().await?;
        on_connection!(self, |db| maintenance::cron_states(db).await?)
    }

    async fn cron_fire(&self, params: CronFireParams) -> Result<CronFireResult, StoreError> {
        let result = in_transaction!(self, |db| {
            let result = maintenance::cron_fire(db, &self.insert_sql, &params).await?;
            if matches!(result, CronFireResult::Fired { .. }) {
                wake::notify(db, &self.channel, std::slice::from_ref(&params.job.queue)).await?;
            }
            result
        })?;
        self.woke(matches!(result, CronFireResult::Fired { .. }));
        Ok(result)
    }

    async fn cron_prune(&self, params: CronPruneParams) -> Result<u64, StoreError> {
        in_transaction!(self, |db| maintenance::cron_prune(db, params.before)
            .await?)
    }

    async fn retention_run_insert(
        &self,
        params: drover_core::RetentionRunInsertParams,
    ) -> Result<(), StoreError> {
        in_transaction!(self, |db| activity::retention_run_insert(db, &params)
            .await?)
    }

    async fn retention_run_list(
        &self,
        params: drover_core::RetentionRunListParams,
    ) -> Result<Vec<drover_core::RetentionRunRecord>, StoreError> {
        self.ensure_migrated().await?;
        on_connection!(self, |db| activity::retention_run_list(db, &params).await?)
    }

    async fn throughput_add(
        &self,
        params: drover_core::ThroughputAddParams,
    ) -> Result<(), StoreError> {
        if params.counts.is_empty() {
            return Ok(());
        }
        // One statement: its own transaction.
        on_connection!(self, |db| activity::throughput_add(db, &params).await?)
    }

    async fn throughput_list(
        &self,
        params: drover_core::ThroughputListParams,
    ) -> Result<Vec<drover_core::ThroughputMinute>, StoreError> {
        self.ensure_migrated().await?;
        on_connection!(self, |db| activity::throughput_list(db, &params).await?)
    }

    async fn throughput_prune(
        &self,
        params: drover_core::ThroughputPruneParams,
    ) -> Result<u64, StoreError> {
        on_connection!(self, |db| activity::throughput_prune(db, params.before)
            .await?)
    }

    async fn table_columns(&self, table: String) -> Result<Option<Vec<String>>, StoreError> {
        drover_core::validate::check_identifier("table", &table)?;
        on_connection!(self, |db| maintenance::table_columns(db, &table).await?)
    }

    async fn archive_batch(&self, params: ArchiveParams) -> Result<u64, StoreError> {
        let sql = maintenance::ArchiveSql::new(&params)?;
        maintenance::check_distinct_tables(&params)?;
        in_transaction!(self, |db| maintenance::archive_batch(db, &sql, &params)
            .await?)
    }

    async fn archive_pending(&self, params: ArchiveParams) -> Result<u64, StoreError> {
        let sql = maintenance::ArchiveSql::new(&params)?;
        on_connection!(self, |db| maintenance::archive_pending(db, &sql, &params)
            .await?)
    }

    fn wakeups(&self) -> watch::Receiver<u64> {
        self.wakeups.subscribe()
    }

    fn background_health(&self) -> Vec<drover_core::BackgroundHealth> {
        let listener = self.listener.lock().expect("listener lock poisoned");
        listener.iter().map(Listener::health).collect()
    }

    async fn close(&self) {
        // Wake-ups of committed enqueues go out before the pool closes, so that a short-lived
        // program (`drover enqueue`) has woken the workers when it exits.
        let _ = tokio::time::timeout(
            self.config
                .connect_timeout
                .max(std::time::Duration::from_secs(1)),
            self.writer.notifier.sent(),
        )
        .await;
        self.closed.store(true, Ordering::Release);
        self.vacuum.close().await;
        self.writer.parked.clear();
        // Later gets fail with Closed; idle connections are closed now, busy ones when they
        // come back. Their tasks say goodbye to the server: waited for, briefly, so that a
        // process that exits next does not cut them off.
        self.pool.close();
        self.connections.close();
        let _ = tokio::time::timeout(CLOSE_WAIT, self.connections.wait()).await;
        let listener = self.listener.lock().expect("listener lock poisoned").take();
        if let Some(listener) = listener {
            listener.stop().await;
        }
    }

    async fn slot_insert(&self, params: SlotInsertParams) -> Result<SlotRecord, StoreError> {
        in_transaction!(self, |db| capacity::slot_insert(db, &params).await?)
    }

    async fn slot_transition(
        &self,
        params: SlotTransitionParams,
    ) -> Result<Option<SlotRecord>, StoreError> {
        in_transaction!(self, |db| capacity::slot_transition(db, &params).await?)
    }

    async fn slot_list(&self, params: SlotListParams) -> Result<Vec<SlotRecord>, StoreError> {
        self.ensure_migrated().await?;
        on_connection!(self, |db| capacity::slot_list(db, &params).await?)
    }

    async fn reservation_insert(
        &self,
        params: ReservationInsertParams,
    ) -> Result<ReservationRecord, StoreError> {
        in_transaction!(self, |db| {
            capacity::reservation_insert(db, &params.system, &params.holder, params.ttl, params.now)
                .await?
        })
    }

    async fn reservation_assign(
        &self,
        params: ReservationAssignParams,
    ) -> Result<Vec<bool>, StoreError> {
        if params.assignments.is_empty() {
            return Ok(Vec::new());
        }
        in_transaction!(self, |db| {
            capacity::reservation_assign(db, &params.assignments, params.now).await?
        })
    }

    async fn reservation_release(
        &self,
        params: ReservationReleaseParams,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        in_transaction!(self, |db| {
            capacity::reservation_release(db, params.id, params.now).await?
        })
    }

    async fn reservation_expire(&self, params: ReservationExpireParams) -> Result<u64, StoreError> {
        in_transaction!(self, |db| capacity::reservation_expire(db, params.now)
            .await?)
    }

    async fn reservation_list(
        &self,
        params: ReservationListParams,
    ) -> Result<Vec<ReservationRecord>, StoreError> {
        self.ensure_migrated().await?;
        on_connection!(self, |db| capacity::reservation_list(db, &params).await?)
    }

    async fn reservation_count(&self) -> Result<Vec<ReservationCount>, StoreError> {
        self.ensure_migrated().await?;
        on_connection!(self, |db| capacity::reservation_count(db).await?)
    }
}

// Used by tests of this crate that run SQL of their own.
#[cfg(test)]
impl PgStore {
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(map_pool)
    }

    /// Connections the pool holds now, in use or idle.
    pub(crate) fn connections_open(&self) -> usize {
        self.pool.status().size
    }
}
