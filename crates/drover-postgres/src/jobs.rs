//! The SQL of every job operation but the insert (see `insert.rs`).
//!
//! The hot operations take as few round trips as they can, because each waits for the
//! server: a completion or a heartbeat is one statement (its own transaction), a claim is one
//! pipelined transaction. The rarer ones (cancel, retry, rescue) run inside the store's
//! transaction.
//!
//! Every write about a running job is fenced by `id`, `state = 'running'` and the lease token
//! (a late write from a run that lost its lease is refused), and every statement that picks rows to change locks them with
//! `FOR UPDATE SKIP LOCKED`: concurrent claimers, rescuers and completers pass each other by
//! instead of queueing behind each other's row locks (or deadlocking).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use drover_core::{
    CancelResult, ClaimResult, ClaimedJob, Delivery, ExpiredRun, JobArgs, JobClaimParams,
    JobHeartbeatParams, JobId, JobListParams, JobRecord, JobState, LeaseStatus, QueueStateCount,
    RescuedJob, StoreError, rescue_decision,
};
use jiff::Timestamp;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{Client, Row, Statement};

use crate::error::DbError;
use crate::session::Db;
use crate::time::{clock, micros, utc_text};

/// SQL: `'running'`, for statements that join a batch of leases (`unnest` of ids) to their
/// jobs, hidden from the planner in a sub-select. Written as a constant, `state = 'running'`
/// lets the planner read the jobs through the partial index `drover_jobs_lease`, and since the
/// statistics seldom see many running jobs it estimates one row there and loops over every
/// running job for each lease of the batch: a generic plan (after five runs of a prepared
/// statement) under which completions took 650 ms a batch (about 950 jobs each) in a
/// 200,000-job drain. Hidden, the only
/// good way in is the primary key, one probe per lease, whatever the statistics say.
macro_rules! running {
    () => {
        "(SELECT 'running'::text)"
    };
}
pub(crate) use running;

/// Makes the queue's due scheduled and retryable jobs available, and says when the next one
/// that is not due yet will be. Rows locked by a concurrent claim are skipped: that claim is
/// promoting them.
pub(crate) const PROMOTE: &str = "WITH promoted AS ( \
         UPDATE drover_jobs SET state = 'available' \
         WHERE id = ANY(ARRAY( \
             SELECT id FROM drover_jobs \
             WHERE state IN ('scheduled', 'retryable') AND queue = $1 \
               AND scheduled_at <= coalesce($2::timestamptz, now()) \
             FOR UPDATE SKIP LOCKED)) \
         RETURNING 1) \
     SELECT (SELECT count(*) FROM promoted), \
            (SELECT min(scheduled_at) FROM drover_jobs \
             WHERE state IN ('scheduled', 'retryable') AND queue = $1 \
               AND scheduled_at > coalesce($2::timestamptz, now()))";

/// The claim's choice of jobs: the queue's available jobs, highest priority first, then oldest,
/// read from the partial index `drover_jobs_fetch`, skipping rows another claim has locked.
macro_rules! claim_pick {
    () => {
        "SELECT id FROM drover_jobs WHERE state = 'available' AND queue = $1 \
           AND NOT EXISTS (SELECT 1 FROM drover_queues \
                           WHERE name = $1 AND paused_at IS NOT NULL) \
         ORDER BY priority DESC, id LIMIT $2 FOR UPDATE SKIP LOCKED"
    };
}

/// The inner `SELECT` of [`CLAIM`], on its own (for `EXPLAIN`).
#[cfg(test)]
pub(crate) const CLAIM_PICK: &str = claim_pick!();

/// Claims the picked jobs. `= ANY(ARRAY(subquery))` rather than `IN (subquery)`: the array is
/// computed once, before the update, so the locking subquery can never be re-run by the plan.
pub(crate) const CLAIM: &str = concat!(
    "UPDATE drover_jobs SET state = 'running', attempt = attempt + 1, attempted_at = c.now, \
         lease_owner = $3, lease_token = $4, \
         lease_expires_at = c.now + $5::bigint * interval '1 microsecond', step = NULL \
     FROM ",
    clock!("$6"),
    " WHERE id = ANY(ARRAY(",
    claim_pick!(),
    ")) RETURNING id, queue, kind, args::text, attempt, max_attempts, priority, delivery, \
       created_at"
);

/// Claims, in a transaction of its own: `BEGIN`, the promotion, the claim and `COMMIT` go to
/// the server together (pipelined), one round trip instead of four. Runs outside any
/// transaction.
pub(crate) async fn claim(db: &Db<'_>, params: &JobClaimParams) -> Result<ClaimResult, DbError> {
    let statements = ClaimStatements::prepare(db).await?;
    let client = db.client();
    // Each request is sent when its future is first polled; `biased` polls them in order. When
    // a statement fails, the ones after it fail too and COMMIT rolls the transaction back.
    let (begin, claimed, commit) = tokio::join!(
        biased;
        client.batch_execute("BEGIN"),
        statements.claim(client, params),
        client.batch_execute("COMMIT"),
    );
    begin?;
    let claimed = claimed?;
    commit?;
    Ok(claimed)
}

/// The promotion and the claim, prepared, for a claim sent in a pipeline.
pub(crate) struct ClaimStatements {
    promote: Statement,
    claim: Statement,
}

impl ClaimStatements {
    /// Prepares both (from the connection's cache after the first call). Done before a
    /// pipeline starts: a prepare between its requests would send them out of order.
    pub(crate) async fn prepare(db: &Db<'_>) -> Result<Self, DbError> {
        Ok(Self {
            promote: db.prepare(PROMOTE).await?,
            claim: db.prepare(CLAIM).await?,
        })
    }

    /// Sends the queue's promotion and then the claim (both requests go out when this is first
    /// polled, in that order) and reads the claimed jobs.
    pub(crate) async fn claim(
        &self,
        client: &Client,
        params: &JobClaimParams,
    ) -> Result<ClaimResult, DbError> {
        let token = fastrand::i64(1..i64::MAX);
        let limit = i64::try_from(params.limit).unwrap_or(i64::MAX);
        let lease = micros(params.lease);
        let promote_params: [&(dyn ToSql + Sync); 2] = [&params.queue, &params.now];
        let claim_params: [&(dyn ToSql + Sync); 6] = [
            &params.queue,
            &limit,
            &params.owner,
            &token,
            &lease,
            &params.now,
        ];
        let (promoted, claimed) = tokio::join!(
            biased;
            client.query_one(&self.promote, &promote_params),
            client.query(&self.claim, &claim_params),
        );
        let next_due_at: Option<Timestamp> = promoted?.get(1);
        claim_result(claimed?, token, next_due_at)
    }
}

/// The jobs of a claim's rows, in claim order.
fn claim_result(
    rows: Vec<Row>,
    token: i64,
    next_due_at: Option<Timestamp>,
) -> Result<ClaimResult, DbError> {
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        jobs.push(ClaimedJob {
            id: row.get(0),
            queue: row.get(1),
            kind: row.get(2),
            args: row.get(3),
            attempt: row.get(4),
            max_attempts: row.get(5),
            priority: row.get(6),
            delivery: parse_delivery(row.get(7))?,
            lease_token: token,
            created_at: row.get(8),
        });
    }
    // RETURNING gives no order guarantee.
    jobs.sort_by_key(|job| (std::cmp::Reverse(job.priority), job.id));
    Ok(ClaimResult { jobs, next_due_at })
}

/// Renews the leases still held, and reports which of them have a cancel request.
pub(crate) const HEARTBEAT: &str = concat!(
    "UPDATE drover_jobs j SET \
         lease_expires_at = c.now + $4::bigint * interval '1 microsecond', \
         step = coalesce(h.step, j.step) \
     FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS h(id, token, step), ",
    clock!("$5"),
    " WHERE j.id = h.id AND j.state = ",
    running!(),
    " AND j.lease_token = h.token \
     RETURNING j.id, h.token, j.cancel_requested_at IS NOT NULL"
);

pub(crate) async fn heartbeat(
    db: &Db<'_>,
    params: &JobHeartbeatParams,
) -> Result<Vec<LeaseStatus>, DbError> {
    // One row per lease: an UPDATE joined to two rows for the same job would apply one of them
    // at random. The latest step named wins, as when the leases are renewed one by one.
    let mut leases: Vec<(i64, i64, Option<Cow<'_, str>>)> = Vec::new();
    let mut seen: HashMap<(i64, i64), usize> = HashMap::new();
    for (lease, step) in &params.leases {
        let step = step.as_deref().map(pg_text);
        match seen.get(&(lease.id, lease.lease_token)) {
            Some(&i) => {
                if step.is_some() {
                    leases[i].2 = step;
                }
            }
            None => {
                seen.insert((lease.id, lease.lease_token), leases.len());
                leases.push((lease.id, lease.lease_token, step));
            }
        }
    }
    // In id order, as completions are sent (`FinishArgs::new`): both lock their rows in the
    // order of the `unnest`, and in two different orders they deadlock.
    leases.sort_by_key(|lease| lease.0);
    let ids: Vec<i64> = leases.iter().map(|l| l.0).collect();
    let tokens: Vec<i64> = leases.iter().map(|l| l.1).collect();
    let steps: Vec<Option<&str>> = leases.iter().map(|l| l.2.as_deref()).collect();
    let rows = db
        .query(
            HEARTBEAT,
            &[&ids, &tokens, &steps, &micros(params.lease), &params.now],
        )
        .await?;
    let held: HashMap<(i64, i64), bool> = rows
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();
    Ok(params
        .leases
        .iter()
        .map(|(lease, _)| {
            let cancel = held.get(&(lease.id, lease.lease_token));
            LeaseStatus {
                id: lease.id,
                held: cancel.is_some(),
                cancel_requested: cancel.copied().unwrap_or(false),
            }
        })
        .collect())
}

/// Locks expired leases, oldest first, with what the rescue decision needs.
pub(crate) const RESCUE_EXPIRED: &str = concat!(
    "SELECT id, attempt, max_attempts, delivery, cancel_requested_at IS NOT NULL, ",
    utc_text!("lease_expires_at"),
    ", lease_expires_at \
     FROM drover_jobs \
     WHERE state = 'running' AND lease_expires_at < coalesce($1::timestamptz, now()) \
     ORDER BY lease_expires_at LIMIT $2 \
     FOR UPDATE SKIP LOCKED"
);

/// Applies the rescue decisions made in Rust ([`drover_core::rescue_decision`]): the new
/// state and the message of each job come in as parameters.
pub(crate) const RESCUE_APPLY: &str = concat!(
    "UPDATE drover_jobs j SET state = d.new_state, \
         completed_at = CASE WHEN d.new_state = 'available' THEN NULL ELSE c.now END, \
         scheduled_at = CASE WHEN d.new_state = 'available' THEN c.now ELSE j.scheduled_at END, \
         errors = j.errors || jsonb_build_array(jsonb_build_object('attempt', j.attempt, \
             'at', c.now_text, 'step', j.step, 'message', d.message, \
             'process', j.lease_owner)), \
         lease_token = NULL, lease_expires_at = NULL \
     FROM unnest($2::bigint[], $3::text[], $4::text[]) AS d(id, new_state, message), ",
    clock!("$1"),
    " WHERE j.id = d.id AND j.state = ",
    running!(),
    " \
     RETURNING j.id, j.kind, j.queue, j.state"
);

/// Makes at most `$2` due scheduled and retryable jobs of any queue available, skipping rows
/// another transaction holds (a claim promoting its own queue); one row per queue that got any.
const PROMOTE_DUE: &str = "WITH promoted AS ( \
         UPDATE drover_jobs SET state = 'available' \
         WHERE id = ANY(ARRAY( \
             SELECT id FROM drover_jobs \
             WHERE state IN ('scheduled', 'retryable') \
               AND scheduled_at <= coalesce($1::timestamptz, now()) \
             LIMIT $2 FOR UPDATE SKIP LOCKED)) \
         RETURNING queue) \
     SELECT queue, count(*) FROM promoted GROUP BY queue";

/// [`PROMOTE_DUE`], in the caller's transaction: how many jobs each queue got.
pub(crate) async fn promote_due(
    db: &Db<'_>,
    limit: usize,
    now: Option<Timestamp>,
) -> Result<Vec<(String, u64)>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = db.query(PROMOTE_DUE, &[&now, &limit]).await?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get::<_, i64>(1) as u64))
        .collect())
}

/// Rescues expired leases, oldest first, in the caller's transaction: locks them, decides
/// each with [`drover_core::rescue_decision`], and applies the decisions.
pub(crate) async fn rescue_expired(
    db: &Db<'_>,
    limit: usize,
    now: Option<Timestamp>,
) -> Result<Vec<RescuedJob>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = db.query(RESCUE_EXPIRED, &[&now, &limit]).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut states = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    let mut expired_at = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: JobId = row.get(0);
        let delivery: &str = row.get(3);
        let expired_text: String = row.get(5);
        let decision = rescue_decision(&ExpiredRun {
            attempt: row.get(1),
            max_attempts: row.get(2),
            // The column is checked at insert; were it unreadable, never risk a second run.
            delivery: delivery.parse().unwrap_or(Delivery::AtMostOnce),
            cancel_requested: row.get(4),
            expired_at: &expired_text,
        });
        ids.push(id);
        states.push(decision.state.as_str().to_owned());
        messages.push(decision.message);
        expired_at.insert(id, row.get::<_, Timestamp>(6));
    }
    let rows = db
        .query(RESCUE_APPLY, &[&now, &ids, &states, &messages])
        .await?;
    let mut rescued: Vec<(Timestamp, RescuedJob)> = Vec::with_capacity(rows.len());
    for row in rows {
        let id: JobId = row.get(0);
        rescued.push((
            expired_at[&id],
            RescuedJob {
                id,
                kind: row.get(1),
                queue: row.get(2),
                state: parse_state(row.get(3))?,
            },
        ));
    }
    rescued.sort_by_key(|(expired, job)| (*expired, job.id));
    Ok(rescued.into_iter().map(|(_, job)| job).collect())
}

/// What [`cancel`] did, and the job's queue (to wake its workers).
pub(crate) struct Cancelled {
    pub(crate) result: CancelResult,
    pub(crate) queue: String,
}

pub(crate) async fn cancel(
    db: &Db<'_>,
    id: JobId,
    now: Option<Timestamp>,
) -> Result<Cancelled, DbError> {
    let row = db
        .query_opt(
            "SELECT state, queue FROM drover_jobs WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(StoreError::NotFound(id))?;
    let state = parse_state(row.get(0))?;
    let queue: String = row.get(1);
    let result = match state {
        JobState::Scheduled | JobState::Available | JobState::Retryable => {
            db.execute(
                concat!(
                    "UPDATE drover_jobs SET state = 'cancelled', completed_at = c.now, \
                         cancel_requested_at = c.now, \
                         history = history || jsonb_build_array(jsonb_build_object( \
                             'at', c.now_text, 'event', 'cancelled', \
                             'detail', 'cancelled by an operator before it ran')) \
                     FROM ",
                    clock!("$2"),
                    " WHERE id = $1"
                ),
                &[&id, &now],
            )
            .await?;
            CancelResult::Cancelled
        }
        JobState::Running => {
            db.execute(
                concat!(
                    "UPDATE drover_jobs SET \
                         cancel_requested_at = coalesce(cancel_requested_at, c.now), \
                         history = history || jsonb_build_array(jsonb_build_object( \
                             'at', c.now_text, 'event', 'cancel_requested', \
                             'detail', 'cancel requested while running')) \
                     FROM ",
                    clock!("$2"),
                    " WHERE id = $1"
                ),
                &[&id, &now],
            )
            .await?;
            CancelResult::Requested
        }
        done => CancelResult::AlreadyFinished(done),
    };
    Ok(Cancelled { result, queue })
}

/// Operator retry; returns the job as it is now.
pub(crate) async fn retry(
    db: &Db<'_>,
    id: JobId,
    now: Option<Timestamp>,
) -> Result<JobRecord, DbError> {
    let row = db
        .query_opt(
            "SELECT state, attempt, unique_key FROM drover_jobs WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(StoreError::NotFound(id))?;
    let state = parse_state(row.get(0))?;
    let attempt: i32 = row.get(1);
    let unique_key: Option<String> = row.get(2);
    if state == JobState::Running {
        return Err(StoreError::Conflict {
            id,
            state: state.to_string(),
            reason: "a running job cannot be retried; cancel it first".into(),
        }
        .into());
    }
    if let (Some(key), true) = (&unique_key, state.is_terminal()) {
        let holder = db
            .query_opt(
                "SELECT id FROM drover_jobs WHERE unique_key = $1 AND id <> $2 \
                   AND state IN ('scheduled', 'available', 'running', 'retryable')",
                &[key, &id],
            )
            .await?;
        if let Some(holder) = holder {
            let holder: i64 = holder.get(0);
            return Err(StoreError::Conflict {
                id,
                state: state.to_string(),
                reason: format!("unfinished job {holder} holds its unique key {key:?}"),
            }
            .into());
        }
    }
    let detail = format!("retried by an operator; was {state} after {attempt} attempt(s)");
    let row = db
        .query_one(
            &format!(
                "UPDATE drover_jobs SET state = 'available', attempt = 0, scheduled_at = c.now, \
                     completed_at = NULL, cancel_requested_at = NULL, step = NULL, \
                     history = history || jsonb_build_array(jsonb_build_object( \
                         'at', c.now_text, 'event', 'operator_retry', 'detail', $3::text)) \
                 FROM {} WHERE id = $1 RETURNING {RECORD_COLUMNS}",
                clock!("$2")
            ),
            &[&id, &now, &detail],
        )
        .await
        .map_err(|err| unique_conflict(err, id, state))?;
    record(&row)
}

/// A unique violation while making a job live again: an unfinished job took its key after we
/// looked (a concurrent insert).
fn unique_conflict(err: tokio_postgres::Error, id: JobId, state: JobState) -> DbError {
    if err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return StoreError::Conflict {
            id,
            state: state.to_string(),
            reason: "an unfinished job holds its unique key".into(),
        }
        .into();
    }
    err.into()
}

const RECORD_COLUMNS: &str = "drover_jobs.id, queue, kind, args::text, state, priority, attempt, \
     max_attempts, delivery, unique_key, scheduled_at, created_at, attempted_at, completed_at, \
     lease_owner, lease_expires_at, cancel_requested_at, step, errors, history";

pub(crate) async fn get(db: &Db<'_>, id: JobId) -> Result<Option<JobRecord>, DbError> {
    db.query_opt(
        &format!("SELECT {RECORD_COLUMNS} FROM drover_jobs WHERE id = $1"),
        &[&id],
    )
    .await?
    .map(|row| record(&row))
    .transpose()
}

pub(crate) async fn list(db: &Db<'_>, params: &JobListParams) -> Result<Vec<JobRecord>, DbError> {
    // Only the filters in use are written into the statement, so that the planner sees plain
    // conditions; each shape is prepared once.
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(state) = params.state {
        // Written into the statement so that the planner can pick the state's partial index.
        conditions.push(format!("state = '{}'", state.as_str()));
    }
    let mut add = |condition: &str, value: Box<dyn ToSql + Sync + Send>| {
        values.push(value);
        conditions.push(condition.replace('?', &format!("${}", values.len())));
    };
    if let Some(queue) = &params.queue {
        add("queue = ?::text", Box::new(queue.clone()));
    }
    if let Some(kind) = &params.kind {
        add("kind = ?::text", Box::new(kind.clone()));
    }
    if let Some(id) = params.before_id {
        add("id < ?::bigint", Box::new(id));
    }
    if let Some(id) = params.above_id {
        add("id > ?::bigint", Box::new(id));
    }
    if let Some(from) = params.created.from {
        add("created_at >= ?::timestamptz", Box::new(from));
    }
    if let Some(to) = params.created.to {
        add("created_at < ?::timestamptz", Box::new(to));
    }
    const FINISHED: &str = "state IN ('completed', 'discarded', 'cancelled')";
    if let Some(from) = params.finished.from {
        add(
            &format!("{FINISHED} AND completed_at >= ?::timestamptz"),
            Box::new(from),
        );
    }
    if let Some(to) = params.finished.to {
        add(
            &format!("{FINISHED} AND completed_at < ?::timestamptz"),
            Box::new(to),
        );
    }
    if let Some(pattern) = &params.args_contain {
        // As text, cast by the server: the pattern's numbers stay exact.
        add("args @> ?::text::jsonb", Box::new(pattern.clone()));
    }
    values.push(Box::new(i64::try_from(params.limit).unwrap_or(i64::MAX)));
    let limit = values.len();
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM drover_jobs {filter} ORDER BY id DESC LIMIT ${limit}"
    );
    let refs: Vec<&(dyn ToSql + Sync)> = values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = db.query(&sql, &refs).await?;
    rows.iter().map(record).collect()
}

/// This process's running jobs with a cancel request: read from the index of such jobs
/// (almost always empty), not by primary key, which cost a probe per job held.
pub(crate) const CANCEL_REQUESTED: &str = "SELECT id FROM drover_jobs \
     WHERE state = 'running' AND cancel_requested_at IS NOT NULL AND id = ANY($1::bigint[])";

pub(crate) async fn cancel_requested(db: &Db<'_>, ids: &[JobId]) -> Result<Vec<JobId>, DbError> {
    let rows = db.query(CANCEL_REQUESTED, &[&ids]).await?;
    let requested: HashSet<i64> = rows.iter().map(|row| row.get(0)).collect();
    Ok(ids
        .iter()
        .copied()
        .filter(|id| requested.contains(id))
        .collect())
}

pub(crate) async fn count_by_queue(db: &Db<'_>) -> Result<Vec<QueueStateCount>, DbError> {
    // COLLATE "C": byte order, as SQLite sorts, whatever the database's collation.
    let rows = db
        .query(
            "SELECT queue, state, count(*) FROM drover_jobs GROUP BY queue, state \
             ORDER BY queue COLLATE \"C\", state COLLATE \"C\"",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(QueueStateCount {
                queue: row.get(0),
                state: parse_state(row.get(1))?,
                count: row.get::<_, i64>(2) as u64,
            })
        })
        .collect()
}

fn record(row: &Row) -> Result<JobRecord, DbError> {
    Ok(JobRecord {
        id: row.get(0),
        queue: row.get(1),
        kind: row.get(2),
        // As text: a number keeps every digit.
        args: JobArgs::from_text(row.get(3))
            .map_err(|e| StoreError::Internal(format!("corrupt job row: args: {e}")))?,
        state: parse_state(row.get(4))?,
        priority: row.get(5),
        attempt: row.get(6),
        max_attempts: row.get(7),
        delivery: parse_delivery(row.get(8))?,
        unique_key: row.get(9),
        scheduled_at: row.get(10),
        created_at: row.get(11),
        attempted_at: row.get(12),
        completed_at: row.get(13),
        lease_owner: row.get(14),
        lease_expires_at: row.get(15),
        cancel_requested_at: row.get(16),
        step: row.get(17),
        errors: row.get::<_, Json<_>>(18).0,
        history: row.get::<_, Json<_>>(19).0,
    })
}

pub(crate) fn parse_state(s: &str) -> Result<JobState, DbError> {
    s.parse()
        .map_err(|e: String| StoreError::Internal(format!("corrupt job row: {e}")).into())
}

fn parse_delivery(s: &str) -> Result<Delivery, DbError> {
    s.parse()
        .map_err(|e: String| StoreError::Internal(format!("corrupt job row: {e}")).into())
}

/// PostgreSQL text cannot hold NUL characters; an error message or step name that has one
/// (a handler's output can) is stored with U+FFFD in its place rather than refused.
pub(crate) fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}
