//! [`SqliteStore`]: the [`Store`] implementation, wiring the writer, the readers and the wake
//! file together.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use drover_core::{
    ArchiveParams, CancelResult, ClaimResult, CronFireParams, CronFireResult, CronPruneParams,
    CronRegisterParams, CronState, FinishClaimResult, FinishResult, InsertedJob, JobCancelParams,
    JobClaimParams, JobFinishClaimParams, JobFinishParams, JobHeartbeatParams, JobId,
    JobInsertParams, JobListParams, JobPromoteParams, JobRecord, JobRescueParams, JobRetryParams,
    LeaderElectParams, LeaderRecord, LeaderReelectParams, LeaderResignParams, LeaderTerm,
    LeaseStatus, MigrateReport, ProcessPruneParams, ProcessRecord, ProcessUpsertParams,
    QueueStateCount, RescuedJob, ReservationAssignParams, ReservationCount,
    ReservationExpireParams, ReservationInsertParams, ReservationListParams, ReservationRecord,
    ReservationReleaseParams, SlotInsertParams, SlotListParams, SlotRecord, SlotTransitionParams,
    Store, StoreError, Wakeups,
};
use jiff::Timestamp;
use rusqlite::Connection;
use tokio::sync::watch;

use crate::config::{SqliteConfig, Synchronous};
use crate::readers::Readers;
use crate::wake::{WakeFile, watch as watch_wake_file};
use crate::writer::{Writer, is_busy};
use crate::{activity, admin, capacity, cluster, jobs, maintenance, schema, time};
use drover_core::parked::ParkedClaims;

/// A [`Store`] on one SQLite file. See the crate documentation for its design.
pub struct SqliteStore {
    config: SqliteConfig,
    writer: tokio::sync::RwLock<Option<Writer>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    readers: Readers,
    wakeups: Wakeups,
    // Held for its Drop: the watch ends with the store.
    _watcher: Option<notify::RecommendedWatcher>,
    /// Set once the schema was found current.
    schema_current: std::sync::atomic::AtomicBool,
    /// Claims of idle workers waiting for an enqueue.
    parked: Arc<ParkedClaims>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.config.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating when missing) the database file and starts the writer. Does not migrate:
    /// call [`Store::migrate`].
    pub fn open(config: SqliteConfig) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(&config.path).map_err(|err| {
            StoreError::Unavailable(format!(
                "cannot open SQLite database {}: {err}",
                config.path.display()
            ))
        })?;
        conn.busy_timeout(config.busy_timeout).map_err(map_err)?;
        // SQLite opens a file it may not write read-only, quietly: every claim would then fail
        // with "attempt to write a readonly database" until the engine gave up. Said now.
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(map_err)? {
            return Err(StoreError::Unavailable(format!(
                "the SQLite database {} is read-only for this user (the file or its directory, \
                 where its -wal and -shm files live, is not writable)",
                config.path.display()
            )));
        }
        let journal: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(map_err)?;
        if !journal.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "SQLite refused WAL mode (journal_mode is {journal}); is {} on a network file system?",
                config.path.display()
            )));
        }
        let synchronous = match config.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
        ))
        .map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(64);

        let wakeups = Wakeups::default();
        let wake_path = config.wake_path();
        let wake_file = match WakeFile::open(&wake_path) {
            Ok(file) => Some(file),
            Err(err) => {
                tracing::warn!(path = %wake_path.display(), error = %err,
                    "cannot open the wake file; other processes will see enqueues only at their next poll");
                None
            }
        };
        let watcher = if config.watch_wake_file && wake_file.is_some() {
            match watch_wake_file(&wake_path, wakeups.clone()) {
                Ok(watcher) => Some(watcher),
                Err(err) => {
                    tracing::warn!(error = %err,
                        "cannot watch the wake file; enqueues by other processes are seen at the next poll");
                    None
                }
            }
        } else {
            None
        };
        let parked = Arc::new(ParkedClaims::default());
        let (writer, thread) = Writer::start(
            conn,
            config.write_queue,
            config.write_wait,
            config.max_ops_per_commit,
            wakeups.clone(),
            wake_file,
            parked.clone(),
        );
        Ok(SqliteStore {
            parked,
            readers: Readers::new(config.path.clone(), config.busy_timeout),
            config,
            writer: tokio::sync::RwLock::new(Some(writer)),
            thread: Mutex::new(Some(thread)),
            wakeups,
            _watcher: watcher,
            schema_current: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The settings the store was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.config
    }

    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut crate::writer::WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let guard = self.writer.read().await;
        let writer = guard.as_ref().ok_or(StoreError::Closed)?;
        writer.write(work).await
    }

    /// Fails with a clear message when the schema is older than this build; checked once,
    /// then remembered, so that reads do not pay for it every time.
    async fn ensure_migrated(&self) -> Result<(), StoreError> {
        if self
            .schema_current
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(());
        }
        let version = self.readers.read(schema::version).await?;
        if version < schema::LATEST {
            return Err(StoreError::Internal(format!(
                "the database schema is at version {version}, this build needs {}: run `drover migrate`",
                schema::LATEST
            )));
        }
        self.schema_current
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

fn now_or_clock(now: Option<Timestamp>) -> Timestamp {
    now.unwrap_or_else(Timestamp::now)
}

/// Maps a SQLite error to a store error: lock contention and I/O trouble may pass; the rest is
/// a bug or corruption.
pub(crate) fn map_err(err: rusqlite::Error) -> StoreError {
    if is_busy(&err) {
        return StoreError::Unavailable(format!("database is locked: {err}"));
    }
    match err.sqlite_error_code() {
        Some(
            rusqlite::ErrorCode::CannotOpen
            | rusqlite::ErrorCode::SystemIoFailure
            | rusqlite::ErrorCode::DiskFull,
        ) => StoreError::Unavailable(err.to_string()),
        _ => StoreError::Internal(err.to_string()),
    }
}

/// `.sql()` turns a rusqlite result into a store result, so `?` works in functions that
/// return [`StoreError`].
pub(crate) trait SqlResult<T> {
    fn sql(self) -> Result<T, StoreError>;
}

impl<T> SqlResult<T> for rusqlite::Result<T> {
    fn sql(self) -> Result<T, StoreError> {
        self.map_err(map_err)
    }
}

fn sql<T>(result: rusqlite::Result<T>) -> Result<T, StoreError> {
    result.sql()
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<MigrateReport, StoreError> {
        // A current schema needs no write lock: read commands keep working while another
        // process holds the lock.
        let version = self.readers.read(schema::version).await?;
        if version >= schema::LATEST {
            return Ok(MigrateReport {
                applied: Vec::new(),
                version,
                known: schema::LATEST,
            });
        }
        self.write(|cx| {
            let applied = sql(schema::migrate(cx.conn, &time::to_text(Timestamp::now())))?;
            Ok(MigrateReport {
                applied,
                version: schema::LATEST,
                known: schema::LATEST,
            })
        })
        .await
    }

    async fn job_insert_many(
        &self,
        params: JobInsertParams,
    ) -> Result<Vec<InsertedJob>, StoreError> {
        if params.jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |cx| {
            let inserted = sql(jobs::insert_many(
                cx.conn,
                &params.jobs,
                now_or_clock(params.now),
            ))?;
            for (job, new) in params.jobs.iter().zip(&inserted) {
                match (new.duplicate, new.state) {
                    (true, _) => {}
                    (false, drover_core::JobState::Available) => cx.made_available(&job.queue),
                    // A scheduled job changes when work is next due.
                    (false, _) => cx.wake = true,
                }
            }
            Ok(inserted)
        })
        .await
    }

    fn job_claim_parked(&self, params: JobClaimParams) -> Option<drover_core::ParkedClaim> {
        Some(self.parked.park(params))
    }

    async fn job_claim(&self, params: JobClaimParams) -> Result<ClaimResult, StoreError> {
        self.write(move |cx| sql(jobs::claim(cx.conn, &params, now_or_clock(params.now))))
            .await
    }

    async fn job_heartbeat(
        &self,
        params: JobHeartbeatParams,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        if params.leases.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |cx| sql(jobs::heartbeat(cx.conn, &params, now_or_clock(params.now))))
            .await
    }

    async fn job_finish_and_claim(
        &self,
        params: JobFinishClaimParams,
    ) -> Result<FinishClaimResult, StoreError> {
        // One write: it runs inside the writer's group-commit transaction, in its own
        // savepoint, so the outcomes and the claims commit together or not at all.
        self.write(move |cx| {
            let finished = if params.outcomes.is_empty() {
                Vec::new()
            } else {
                sql(jobs::finish_many(
                    cx.conn,
                    &params.outcomes,
                    now_or_clock(params.now),
                ))?
            };
            cx.wake |= finished.iter().any(|r| {
                r.accepted
                    && matches!(
                        r.state,
                        Some(drover_core::JobState::Available | drover_core::JobState::Retryable)
                    )
            });
            let mut claimed = Vec::with_capacity(params.claims.len());
            for claim in &params.claims {
                claimed.push(sql(jobs::claim(cx.conn, claim, now_or_clock(claim.now)))?);
            }
            Ok(FinishClaimResult { finished, claimed })
        })
        .await
    }

    async fn job_finish_many(
        &self,
        params: JobFinishParams,
    ) -> Result<Vec<FinishResult>, StoreError> {
        if params.outcomes.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |cx| {
            let results = sql(jobs::finish_many(
                cx.conn,
                &params.outcomes,
                now_or_clock(params.now),
            ))?;
            // A hand-back made work available; a retry changed when work is next due.
            cx.wake |= results.iter().any(|r| {
                r.accepted
                    && matches!(
                        r.state,
                        Some(drover_core::JobState::Available | drover_core::JobState::Retryable)
                    )
            });
            Ok(results)
        })
        .await
    }

    async fn job_promote_due(&self, params: JobPromoteParams) -> Result<u64, StoreError> {
        self.write(move |cx| {
            let promoted = sql(jobs::promote_due(
                cx.conn,
                params.limit,
                now_or_clock(params.now),
            ))?;
            cx.wake |= promoted > 0;
            Ok(promoted)
        })
        .await
    }

    async fn job_rescue_expired(
        &self,
        params: JobRescueParams,
    ) -> Result<Vec<RescuedJob>, StoreError> {
        self.write(move |cx| {
            let rescued = sql(jobs::rescue_expired(
                cx.conn,
                params.limit,
                now_or_clock(params.now),
            ))?;
            cx.wake |= !rescued.is_empty();
            Ok(rescued)
        })
        .await
    }

    async fn job_cancel(&self, params: JobCancelParams) -> Result<CancelResult, StoreError> {
        self.write(move |cx| {
            let result = jobs::cancel(cx.conn, params.id, now_or_clock(params.now))?;
            // Workers in other processes check their running jobs for cancel requests on wake-up.
            cx.wake |= result == CancelResult::Requested;
            Ok(result)
        })
        .await
    }

    async fn job_retry(&self, params: JobRetryParams) -> Result<JobRecord, StoreError> {
        let id = params.id;
        self.write(move |cx| {
            jobs::retry(cx.conn, params.id, now_or_clock(params.now))?;
            cx.wake = true;
            Ok(())
        })
        .await?;
        self.job_get(id).await?.ok_or(StoreError::NotFound(id))
    }

    async fn job_get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.ensure_migrated().await?;
        self.readers.read(move |conn| jobs::get(conn, id)).await
    }

    async fn job_list(&self, params: JobListParams) -> Result<Vec<JobRecord>, StoreError> {
        self.ensure_migrated().await?;
        self.readers
            .read(move |conn| jobs::list(conn, &params))
            .await
    }

    async fn job_cancel_requested(&self, ids: Vec<JobId>) -> Result<Vec<JobId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.readers
            .read(move |conn| jobs::cancel_requested(conn, &ids))
            .await
    }

    async fn job_count_by_queue(&self) -> Result<Vec<QueueStateCount>, StoreError> {
        self.ensure_migrated().await?;
        self.readers.read(jobs::count_by_queue).await
    }

    async fn job_act_many(
        &self,
        params: drover_core::JobActParams,
    ) -> Result<Vec<drover_core::ActResult>, StoreError> {
        if params.ids.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |cx| {
            let results = admin::act_many(
                cx.conn,
                &params.ids,
                params.action,
                now_or_clock(params.now),
            )?;
            // Retried jobs are available; cancel requests reach workers on their wake-up.
            cx.wake |= results.iter().any(|r| r.changed());
            Ok(results)
        })
        .await
    }

    async fn queue_pause(
        &self,
        params: drover_core::QueuePauseParams,
    ) -> Result<drover_core::QueueRecord, StoreError> {
        drover_core::validate::check_name("queue", &params.queue)?;
        let queue = params.queue.clone();
        self.write(move |cx| {
            sql(admin::pause(
                cx.conn,
                &params.queue,
                params.paused,
                now_or_clock(params.now),
            ))?;
            cx.wake |= !params.paused;
            Ok(())
        })
        .await?;
        self.readers
            .read(move |conn| admin::queue_get(conn, &queue))
            .await
    }

    async fn queue_list(&self) -> Result<Vec<drover_core::QueueRecord>, StoreError> {
        self.ensure_migrated().await?;
        self.readers.read(admin::queue_list).await
    }

    async fn queue_counts_refresh(
        &self,
        params: drover_core::QueueCountsRefreshParams,
    ) -> Result<(), StoreError> {
        self.ensure_migrated().await?;
        // Counted on a reader so that the writer (and every enqueue) never waits for the count.
        let cap = params.cap;
        let counted = self
            .readers
            .read(move |conn| admin::count(conn, cap))
            .await?;
        let now = now_or_clock(params.now);
        self.write(move |cx| sql(admin::store_counts(cx.conn, &counted, now)))
            .await
    }

    async fn leader_attempt_elect(
        &self,
        params: LeaderElectParams,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        self.write(move |cx| sql(cluster::elect(cx.conn, &params, now_or_clock(params.now))))
            .await
    }

    async fn leader_attempt_reelect(
        &self,
        params: LeaderReelectParams,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        self.write(move |cx| sql(cluster::reelect(cx.conn, &params, now_or_clock(params.now))))
            .await
    }

    async fn leader_resign(&self, params: LeaderResignParams) -> Result<bool, StoreError> {
        self.write(move |cx| {
            let resigned = sql(cluster::resign(cx.conn, &params))?;
            // Other processes' electors listen to wake-ups: the handover is immediate.
            cx.wake |= resigned;
            Ok(resigned)
        })
        .await
    }

    async fn leader_get(
        &self,
        name: String,
        now: Option<Timestamp>,
    ) -> Result<Option<LeaderRecord>, StoreError> {
        self.ensure_migrated().await?;
        self.readers
            .read(move |conn| cluster::leader(conn, &name, now_or_clock(now)))
            .await
    }

    async fn process_upsert(&self, params: ProcessUpsertParams) -> Result<(), StoreError> {
        self.write(move |cx| {
            sql(cluster::process_upsert(
                cx.conn,
                &params,
                now_or_clock(params.now),
            ))
        })
        .await
    }

    async fn process_delete(&self, id: String) -> Result<(), StoreError> {
        self.write(move |cx| sql(cluster::process_delete(cx.conn, &id)))
            .await
    }

    async fn process_list(&self) -> Result<Vec<ProcessRecord>, StoreError> {
        self.ensure_migrated().await?;
        self.readers.read(cluster::process_list).await
    }

    async fn process_prune(&self, params: ProcessPruneParams) -> Result<u64, StoreError> {
        self.write(move |cx| {
            sql(cluster::process_prune(
                cx.conn,
                params.stale_after,
                now_or_clock(params.now),
            ))
        })
        .await
    }

    async fn cron_register(
        &self,
        params: CronRegisterParams,
    ) -> Result<Vec<CronState>, StoreError> {
        self.write(move |cx| {
            sql(maintenance::cron_register(
                cx.conn,
                &params.names,
                now_or_clock(params.now),
            ))?;
            sql(maintenance::cron_states(cx.conn))
        })
        .await
    }

    async fn cron_states(&self) -> Result<Vec<CronState>, StoreError> {
        self.ensure_migrated().await?;
        self.readers.read(maintenance::cron_states).await
    }

    async fn cron_fire(&self, params: CronFireParams) -> Result<CronFireResult, StoreError> {
        self.write(move |cx| {
            let result = maintenance::cron_fire(cx.conn, &params, now_or_clock(params.now))?;
            cx.wake |= matches!(result, CronFireResult::Fired { .. });
            Ok(result)
        })
        .await
    }

    async fn cron_prune(&self, params: CronPruneParams) -> Result<u64, StoreError> {
        self.write(move |cx| sql(maintenance::cron_prune(cx.conn, params.before)))
            .await
    }

    async fn retention_run_insert(
        &self,
        params: drover_core::RetentionRunInsertParams,
    ) -> Result<(), StoreError> {
        self.write(move |cx| sql(activity::retention_run_insert(cx.conn, &params)))
            .await
    }

    async fn retention_run_list(
        &self,
        params: drover_core::RetentionRunListParams,
    ) -> Result<Vec<drover_core::RetentionRunRecord>, StoreError> {
        self.ensure_migrated().await?;
        self.readers
            .read(move |conn| activity::retention_run_list(conn, &params))
            .await
    }

    async fn throughput_add(
        &self,
        params: drover_core::ThroughputAddParams,
    ) -> Result<(), StoreError> {
        if params.counts.is_empty() {
            return Ok(());
        }
        self.write(move |cx| sql(activity::throughput_add(cx.conn, &params)))
            .await
    }

    async fn throughput_list(
        &self,
        params: drover_core::ThroughputListParams,
    ) -> Result<Vec<drover_core::ThroughputMinute>, StoreError> {
        self.ensure_migrated().await?;
        self.readers
            .read(move |conn| activity::throughput_list(conn, &params))
            .await
    }

    async fn throughput_prune(
        &self,
        params: drover_core::ThroughputPruneParams,
    ) -> Result<u64, StoreError> {
        self.write(move |cx| sql(activity::throughput_prune(cx.conn, params.before)))
            .await
    }

    async fn table_columns(&self, table: String) -> Result<Option<Vec<String>>, StoreError> {
        drover_core::validate::check_identifier("table", &table)?;
        self.readers
            .read(move |conn| maintenance::table_columns(conn, &table))
            .await
    }

    async fn archive_batch(&self, params: ArchiveParams) -> Result<u64, StoreError> {
        // A batch of none is the start-up probe of a policy: the time to say which rows of a
        // user's table it will never move, since SQLite stores a time in any form.
        if params.batch_size == 0 && !params.finished_jobs_only {
            let probe = params.clone();
            let misfits = self
                .readers
                .read_with(move |conn| maintenance::misfit_ages(conn, &probe))
                .await?;
            if misfits > 0 {
                tracing::warn!(
                    table = %params.table,
                    age_column = %params.age_column,
                    rows = misfits,
                    "rows whose age is not a UTC time as ISO 8601 text (2026-12-01T09:00:00Z, \
                     or SQLite's 2026-12-01 09:00:00) are never archived: SQLite would compare \
                     a number, another form or another offset with the cutoff as text"
                );
            }
        }
        self.write(move |cx| maintenance::archive_batch(cx.conn, &params))
            .await
    }

    async fn archive_pending(&self, params: ArchiveParams) -> Result<u64, StoreError> {
        let inner = self.readers.clone();
        inner
            .read_with(move |conn| maintenance::archive_pending(conn, &params))
            .await
    }

    fn wakeups(&self) -> watch::Receiver<u64> {
        self.wakeups.subscribe()
    }

    async fn close(&self) {
        // Dropping the sender lets the writer finish what is queued, then exit.
        drop(self.writer.write().await.take());
        let thread = self.thread.lock().expect("writer handle poisoned").take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        // Nothing will take them now; their workers learn the store is closed.
        self.parked.clear();
    }

    async fn slot_insert(&self, params: SlotInsertParams) -> Result<SlotRecord, StoreError> {
        self.write(move |cx| {
            sql(capacity::slot_insert(
                cx.conn,
                &params.system,
                &params.reason,
                now_or_clock(params.now),
            ))
        })
        .await
    }

    async fn slot_transition(
        &self,
        params: SlotTransitionParams,
    ) -> Result<Option<SlotRecord>, StoreError> {
        self.write(move |cx| {
            sql(capacity::slot_transition(
                cx.conn,
                &params,
                now_or_clock(params.now),
            ))
        })
        .await
    }

    async fn slot_list(&self, params: SlotListParams) -> Result<Vec<SlotRecord>, StoreError> {
        self.ensure_migrated().await?;
        self.readers
            .read(move |conn| capacity::slot_list(conn, &params))
            .await
    }

    async fn reservation_insert(
        &self,
        params: ReservationInsertParams,
    ) -> Result<ReservationRecord, StoreError> {
        self.write(move |cx| {
            sql(capacity::reservation_insert(
                cx.conn,
                &params.system,
                &params.holder,
                params.ttl,
                now_or_clock(params.now),
            ))
        })
        .await
    }

    async fn reservation_assign(
        &self,
        params: ReservationAssignParams,
    ) -> Result<Vec<bool>, StoreError> {
        if params.assignments.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |cx| {
            sql(capacity::reservation_assign(
                cx.conn,
                &params.assignments,
                now_or_clock(params.now),
            ))
        })
        .await
    }

    async fn reservation_release(
        &self,
        params: ReservationReleaseParams,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        self.write(move |cx| {
            sql(capacity::reservation_release(
                cx.conn,
                params.id,
                now_or_clock(params.now),
            ))
        })
        .await
    }

    async fn reservation_expire(&self, params: ReservationExpireParams) -> Result<u64, StoreError> {
        self.write(move |cx| {
            sql(capacity::reservation_expire(
                cx.conn,
                now_or_clock(params.now),
            ))
        })
        .await
    }

    async fn reservation_list(
        &self,
        params: ReservationListParams,
    ) -> Result<Vec<ReservationRecord>, StoreError> {
        self.ensure_migrated().await?;
        self.readers
            .read(move |conn| capacity::reservation_list(conn, &params))
            .await
    }

    async fn reservation_count(&self) -> Result<Vec<ReservationCount>, StoreError> {
        self.ensure_migrated().await?;
        self.readers.read(capacity::reservation_count).await
    }
}
