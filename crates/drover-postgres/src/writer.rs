//! The enqueue writer: enqueues queued by many callers are written together, one transaction
//! per batch, in a task of its own (see `batch.rs`), and idle workers' parked claims are made in
//! the same transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use drover_core::parked::{Parked, ParkedClaims};
use drover_core::{ClaimResult, InsertedJob, NewJob, StoreError, Wakeups};
use jiff::Timestamp;

use crate::batch::{InsertQueue, Pending};
use crate::error::{DbError, map_pool};
use crate::insert::{self, InsertSql};
use crate::notifier::Notifier;
use crate::session::Db;
use crate::txn::in_transaction;
use crate::{finish, parked, wake};

/// What a flush of queued enqueues needs, cloned out of the store so that it can run in a task
/// of its own (see `batch.rs`).
#[derive(Clone)]
pub(crate) struct InsertWriter {
    pub(crate) pool: Pool,
    pub(crate) insert_sql: InsertSql,
    pub(crate) channel: String,
    pub(crate) wakeups: Wakeups,
    pub(crate) closed: Arc<AtomicBool>,
    pub(crate) queue: Arc<InsertQueue>,
    /// Claims of idle workers of this process, made in the transaction of the next enqueue
    /// into their queue (see the `parked` module).
    pub(crate) parked: Arc<ParkedClaims>,
    /// Wakes other processes once an enqueue has committed.
    pub(crate) notifier: Arc<Notifier>,
}

impl InsertWriter {
    pub(crate) fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// Pauses before a transaction is tried again after a deadlock or a serialization
    /// failure: a few milliseconds, more each time, at random so that the two sides of a
    /// deadlock do not collide again.
    pub(crate) async fn pause_before_retry(&self, tries: u32, err: &DbError) {
        let pause = Duration::from_millis(fastrand::u64(1..=10 * u64::from(tries)));
        tracing::debug!(error = ?err, tries, ?pause, "transaction rolled back; trying again");
        tokio::time::sleep(pause).await;
    }

    /// Flushes batches until nothing is queued.
    pub(crate) async fn flush_all(self) {
        while let Some(batch) = self.queue.take() {
            self.flush(batch).await;
        }
    }

    /// Writes a batch of queued enqueues in one transaction and answers each caller. If the
    /// batch fails, each caller's jobs are tried alone, so that one caller's trouble is not
    /// another's.
    async fn flush(&self, batch: Vec<Pending>) {
        let now = batch[0].now;
        if batch.len() > 1 {
            let jobs: Vec<NewJob> = batch.iter().flat_map(|p| p.jobs.iter().cloned()).collect();
            if let Ok(mut inserted) = self.insert_now(&jobs, now).await {
                for pending in batch {
                    let rest = inserted.split_off(pending.jobs.len());
                    let _ = pending.reply.send(Ok(inserted));
                    inserted = rest;
                }
                return;
            }
        }
        for pending in batch {
            let result = self.insert_now(&pending.jobs, pending.now).await;
            let _ = pending.reply.send(result);
        }
    }

    async fn insert_now(
        &self,
        jobs: &[NewJob],
        now: Option<Timestamp>,
    ) -> Result<Vec<InsertedJob>, StoreError> {
        if insert::is_plain(jobs) {
            let claims = self.take_parked(jobs);
            if claims.is_empty() {
                return self.insert_plain(jobs, now).await;
            }
            return self.insert_plain_claiming(jobs, now, claims).await;
        }
        // Claims taken by a try that failed are answered with its error (their workers claim
        // the ordinary way); a try that commits answers its own.
        let mut taken: Vec<Parked> = Vec::new();
        let result = in_transaction!(self, |db| {
            let inserted = insert::insert_many(db, &self.insert_sql, jobs, now).await?;
            // Other processes hear of the jobs after the commit (see the notifier module).
            let payloads = inserted_queues(&inserted, jobs);
            // Local workers need a wake-up only for queues that no parked claim emptied.
            let mut wake = false;
            let mut made = Vec::new();
            for queue in parked::available_queues(&inserted, jobs) {
                match self.parked.take(queue) {
                    Some(claim) => {
                        taken.push(claim);
                        let claim = taken.last().expect("just pushed");
                        let result = parked::claim_in_transaction(db, claim).await?;
                        wake |= result.jobs.len() >= claim.params.limit;
                        made.push(result);
                    }
                    None => wake = true,
                }
            }
            (inserted, wake, made, payloads)
        });
        let (inserted, wake, made, payloads) = match result {
            Ok(done) => done,
            Err(err) => {
                for claim in taken {
                    let _ = claim.answer.send(Err(err.clone()));
                }
                return Err(err);
            }
        };
        self.notifier.notify(payloads);
        if wake {
            self.wakeups.wake();
        }
        // The last try's claims come last; earlier tries' were rolled back with them, and
        // their workers claim the ordinary way.
        let rolled_back = taken.len() - made.len();
        for claim in taken.drain(..rolled_back) {
            let _ = claim.answer.send(Err(StoreError::Unavailable(
                "the enqueue that took this parked claim was rolled back".into(),
            )));
        }
        for (claim, result) in taken.into_iter().zip(made) {
            if let Err(Ok(unwanted)) = claim.answer.send(Ok(result)) {
                self.hand_back(unwanted).await;
            }
        }
        Ok(inserted)
    }

    /// Inserts jobs without unique keys, into queues where no claim is parked, in one
    /// statement of its own (see [`insert::insert_plain`]). Not tried again: after a lost
    /// connection the commit may have happened, and the caller decides.
    async fn insert_plain(
        &self,
        jobs: &[NewJob],
        now: Option<Timestamp>,
    ) -> Result<Vec<InsertedJob>, StoreError> {
        self.check_open()?;
        let client = self.pool.get().await.map_err(map_pool)?;
        let db = Db::new(&client, Some(client.statement_cache.as_ref()));
        let inserted = insert::insert_plain(&db, &self.insert_sql, jobs, now)
            .await
            .map_err(DbError::into_store)?;
        // Other processes hear of the jobs after the commit (see the notifier module).
        self.notifier
            .notify(jobs.iter().map(|j| j.queue.clone()).collect());
        if inserted
            .iter()
            .any(|j| j.state == drover_core::JobState::Available)
        {
            self.wakeups.wake();
        }
        Ok(inserted)
    }

    /// The claims parked on the queues of `jobs` that are due now (by this process's clock;
    /// a claim taken for a job the database finds scheduled after all just comes back empty).
    fn take_parked(&self, jobs: &[NewJob]) -> Vec<Parked> {
        let now = Timestamp::now();
        let mut looked: Vec<&str> = Vec::new();
        let mut claims: Vec<Parked> = Vec::new();
        for job in jobs {
            if job.scheduled_at.is_some_and(|at| at > now) || looked.contains(&job.queue.as_str()) {
                continue;
            }
            looked.push(&job.queue);
            claims.extend(self.parked.take(&job.queue));
        }
        claims
    }

    /// Inserts plain jobs and makes the parked `claims` in one pipelined transaction (see
    /// [`parked::insert_plain_and_claim`]). Not tried again, as [`Self::insert_plain`].
    async fn insert_plain_claiming(
        &self,
        jobs: &[NewJob],
        now: Option<Timestamp>,
        claims: Vec<Parked>,
    ) -> Result<Vec<InsertedJob>, StoreError> {
        let result = async {
            self.check_open()?;
            let client = self.pool.get().await.map_err(map_pool)?;
            let db = Db::new(&client, Some(client.statement_cache.as_ref()));
            parked::insert_plain_and_claim(&db, &self.insert_sql, jobs, now, &claims)
                .await
                .map_err(DbError::into_store)
        }
        .await;
        let (inserted, made) = match result {
            Ok(done) => done,
            Err(err) => {
                for claim in claims {
                    let _ = claim.answer.send(Err(err.clone()));
                }
                return Err(err);
            }
        };
        self.notifier.notify(inserted_queues(&inserted, jobs));
        // Local workers need a wake-up for queues that no parked claim emptied.
        let emptied = |queue: &str| {
            claims
                .iter()
                .zip(&made)
                .any(|(c, r)| c.params.queue == queue && r.jobs.len() < c.params.limit)
        };
        if parked::available_queues(&inserted, jobs)
            .into_iter()
            .any(|queue| !emptied(queue))
        {
            self.wakeups.wake();
        }
        for (claim, result) in claims.into_iter().zip(made) {
            if let Err(Ok(unwanted)) = claim.answer.send(Ok(result)) {
                self.hand_back(unwanted).await;
            }
        }
        Ok(inserted)
    }

    /// Hands back the jobs of a parked claim whose worker stopped waiting (nobody will run
    /// them): available again, their attempt not used.
    async fn hand_back(&self, unwanted: ClaimResult) {
        if unwanted.jobs.is_empty() {
            return;
        }
        let outcomes = drover_core::parked::hand_back_outcomes(&unwanted);
        let result = in_transaction!(self, |db| {
            finish::finish_many(db, &self.channel, &outcomes, None).await?
        });
        match result {
            Ok(finished) if finished.notified => self.wakeups.wake(),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, jobs = outcomes.len(),
                "cannot hand back jobs claimed for a worker that stopped waiting; the rescuer \
                 will take them when their leases expire"),
        }
    }
}

/// Payloads for the queues where jobs were inserted (duplicates change nothing).
pub(crate) fn inserted_queues(inserted: &[InsertedJob], jobs: &[NewJob]) -> Vec<String> {
    wake::payloads(
        inserted
            .iter()
            .zip(jobs)
            .filter(|(result, _)| !result.duplicate)
            .map(|(_, job)| job.queue.as_str()),
    )
}
