//! The SQL of every job operation. Write functions run inside the writer's transaction; read
//! functions on a reader connection.

use std::collections::HashSet;

use drover_core::{
    CancelResult, ClaimResult, ClaimedJob, Delivery, ExpiredRun, FinishResult, InsertedJob,
    JobArgs, JobClaimParams, JobHeartbeatParams, JobId, JobListParams, JobOutcome, JobRecord,
    JobState, LeaseStatus, NewJob, Outcome, QueueStateCount, RescueDecision, RescuedJob,
    StoreError, rescue_decision,
};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::store::SqlResult;
use crate::time::{from_text, plus, to_text};

/// States in which a job is unfinished (and holds its unique key), word for word as in the
/// unique index's condition, so that SQLite uses the index.
pub(crate) const LIVE: &str =
    "(state = 'scheduled' OR state = 'available' OR state = 'running' OR state = 'retryable')";
/// States waiting for their time, as in the `drover_jobs_due` index.
const DUE: &str = "(state = 'scheduled' OR state = 'retryable')";
/// Terminal states, as in the `drover_jobs_finished` index.
pub(crate) const FINISHED: &str =
    "(state = 'completed' OR state = 'discarded' OR state = 'cancelled')";

const RECORD_COLUMNS: &str = "id, queue, kind, args, state, priority, attempt, max_attempts, \
     delivery, unique_key, scheduled_at, created_at, attempted_at, completed_at, lease_owner, \
     lease_expires_at, cancel_requested_at, step, errors, history";

pub(crate) fn insert_many(
    conn: &Connection,
    jobs: &[NewJob],
    now: Timestamp,
) -> rusqlite::Result<Vec<InsertedJob>> {
    let now_text = to_text(now);
    let mut find_unique = conn.prepare_cached(&format!(
        "SELECT id, state FROM drover_jobs WHERE unique_key = ?1 AND {LIVE}"
    ))?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO drover_jobs (queue, kind, args, state, priority, max_attempts, delivery, \
         unique_key, scheduled_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Some(key) = &job.unique_key {
            let existing = find_unique
                .query_row([key], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
                .optional()?;
            if let Some((id, state)) = existing {
                out.push(InsertedJob {
                    id,
                    state: parse_state(&state)?,
                    duplicate: true,
                });
                continue;
            }
        }
        let (state, scheduled_at) = match job.scheduled_at {
            Some(at) if at > now => (JobState::Scheduled, to_text(at)),
            _ => (JobState::Available, now_text.clone()),
        };
        insert.execute(params![
            job.queue,
            job.kind,
            job.args,
            state.as_str(),
            job.priority,
            job.max_attempts,
            job.delivery.as_str(),
            job.unique_key,
            scheduled_at,
            now_text,
        ])?;
        out.push(InsertedJob {
            id: conn.last_insert_rowid(),
            state,
            duplicate: false,
        });
    }
    Ok(out)
}

/// Claims up to `?6` available jobs. `LIMIT ?6 + 0`, not `LIMIT ?6`: with STAT4, a bare bound
/// limit makes SQLite re-plan the statement on every run.
const CLAIM: &str = "UPDATE drover_jobs SET state = 'running', attempt = attempt + 1, \
         attempted_at = ?1, lease_owner = ?2, lease_token = ?3, lease_expires_at = ?4, step = NULL \
     WHERE id IN (SELECT id FROM drover_jobs WHERE state = 'available' AND queue = ?5 \
                  ORDER BY priority DESC, id LIMIT ?6 + 0) \
     RETURNING id, queue, kind, args, attempt, max_attempts, priority, delivery, created_at";

pub(crate) fn claim(
    conn: &Connection,
    params: &JobClaimParams,
    now: Timestamp,
) -> rusqlite::Result<ClaimResult> {
    // A paused queue gives nothing; its resume wakes the workers.
    let paused = conn
        .prepare_cached("SELECT paused_at IS NOT NULL FROM drover_queues WHERE name = ?1")?
        .query_row([&params.queue], |row| row.get::<_, bool>(0))
        .optional()?
        .unwrap_or(false);
    if paused {
        return Ok(ClaimResult::default());
    }
    let now_text = to_text(now);
    conn.prepare_cached(&format!(
        "UPDATE drover_jobs SET state = 'available' \
         WHERE {DUE} AND queue = ?1 AND scheduled_at <= ?2"
    ))?
    .execute(params![params.queue, now_text])?;

    let mut jobs = Vec::new();
    if params.limit > 0 {
        let token = fastrand::i64(1..i64::MAX);
        let expires = to_text(plus(now, params.lease));
        let mut claim = conn.prepare_cached(CLAIM)?;
        let rows = claim.query_map(
            params![
                now_text,
                params.owner,
                token,
                expires,
                params.queue,
                params.limit as i64
            ],
            |row| {
                Ok(ClaimedJob {
                    id: row.get(0)?,
                    queue: row.get(1)?,
                    kind: row.get(2)?,
                    args: row.get(3)?,
                    attempt: row.get(4)?,
                    max_attempts: row.get(5)?,
                    priority: row.get(6)?,
                    delivery: parse_delivery(&row.get::<_, String>(7)?)?,
                    lease_token: token,
                    created_at: from_text(&row.get::<_, String>(8)?)?,
                })
            },
        )?;
        for job in rows {
            jobs.push(job?);
        }
        // RETURNING gives no order guarantee.
        jobs.sort_by_key(|job| (std::cmp::Reverse(job.priority), job.id));
    }

    let next_due_at = conn
        .prepare_cached(&format!(
            "SELECT min(scheduled_at) FROM drover_jobs WHERE {DUE} AND queue = ?1"
        ))?
        .query_row([&params.queue], |row| row.get::<_, Option<String>>(0))?
        .map(|text| from_text(&text))
        .transpose()?;
    Ok(ClaimResult { jobs, next_due_at })
}

pub(crate) fn heartbeat(
    conn: &Connection,
    params: &JobHeartbeatParams,
    now: Timestamp,
) -> rusqlite::Result<Vec<LeaseStatus>> {
    let expires = to_text(plus(now, params.lease));
    let mut renew = conn.prepare_cached(
        "UPDATE drover_jobs SET lease_expires_at = ?1, step = coalesce(?2, step) \
         WHERE id = ?3 AND state = 'running' AND lease_token = ?4 \
         RETURNING cancel_requested_at IS NOT NULL",
    )?;
    let mut out = Vec::with_capacity(params.leases.len());
    for (lease, step) in &params.leases {
        let cancel: Option<bool> = renew
            .query_row(params![expires, step, lease.id, lease.lease_token], |row| {
                row.get(0)
            })
            .optional()?;
        out.push(LeaseStatus {
            id: lease.id,
            held: cancel.is_some(),
            cancel_requested: cancel.unwrap_or(false),
        });
    }
    Ok(out)
}

pub(crate) fn finish_many(
    conn: &Connection,
    outcomes: &[JobOutcome],
    now: Timestamp,
) -> rusqlite::Result<Vec<FinishResult>> {
    let now_text = to_text(now);
    let mut out = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let id = outcome.lease.id;
        let token = outcome.lease.lease_token;
        let (changed, state) = record_outcome(conn, outcome, now, &now_text)?;
        if changed == 1 {
            out.push(FinishResult {
                id,
                accepted: true,
                recorded_earlier: false,
                state: Some(state),
            });
        } else {
            out.push(refused_finish(conn, id, token)?);
        }
    }
    Ok(out)
}

/// Records one outcome if its run still holds the lease: the rows changed (0 or 1) and the
/// state the job would move to.
fn record_outcome(
    conn: &Connection,
    outcome: &JobOutcome,
    now: Timestamp,
    now_text: &str,
) -> rusqlite::Result<(usize, JobState)> {
    // The statements are literals put together at compile time (`concat!`), so that a job's
    // outcome costs no formatting. Every statement releases the lease and is fenced by (id,
    // running, lease token): a run that lost its lease changes nothing. The token stays: a
    // repeated outcome of the same run is then told apart from a stale one. So does the owner:
    // a finished job names the process of its last attempt.
    macro_rules! outcome_sql {
        ($($set:expr),+ $(,)?) => {
            concat!(
                "UPDATE drover_jobs SET ",
                $($set,)+
                " lease_expires_at = NULL \
                 WHERE id = ?1 AND state = 'running' AND lease_token = ?2"
            )
        };
    }
    // SET expressions see the row as it was: `lease_owner` is the attempt's process.
    macro_rules! errors_plus_one {
        () => {
            "json_insert(errors, '$[#]', json_object('attempt', attempt, \
             'at', ?3, 'step', ?4, 'message', ?5, 'process', lease_owner))"
        };
    }
    let id = outcome.lease.id;
    let token = outcome.lease.lease_token;
    let step = &outcome.step;
    Ok(match &outcome.outcome {
        Outcome::Completed => (
            conn.prepare_cached(outcome_sql!(
                "state = 'completed', completed_at = ?3, step = coalesce(?4, step),"
            ))?
            .execute(params![id, token, now_text, step])?,
            JobState::Completed,
        ),
        Outcome::Retry { error, delay } => (
            conn.prepare_cached(outcome_sql!(
                "state = 'retryable', scheduled_at = ?6, step = coalesce(?4, step), errors = ",
                errors_plus_one!(),
                ","
            ))?
            .execute(params![
                id,
                token,
                now_text,
                step,
                error,
                to_text(plus(now, *delay))
            ])?,
            JobState::Retryable,
        ),
        Outcome::Discard { error } => (
            conn.prepare_cached(outcome_sql!(
                "state = 'discarded', completed_at = ?3, step = coalesce(?4, step), errors = ",
                errors_plus_one!(),
                ","
            ))?
            .execute(params![id, token, now_text, step, error])?,
            JobState::Discarded,
        ),
        Outcome::Cancelled { error } => (
            conn.prepare_cached(outcome_sql!(
                "state = 'cancelled', completed_at = ?3, step = coalesce(?4, step), \
                 errors = CASE WHEN ?5 IS NULL THEN errors ELSE ",
                errors_plus_one!(),
                " END,"
            ))?
            .execute(params![id, token, now_text, step, error])?,
            JobState::Cancelled,
        ),
        Outcome::HandBack { reason } => (
            conn.prepare_cached(outcome_sql!(
                "state = 'available', attempt = attempt - 1, scheduled_at = ?3, \
                 step = coalesce(?4, step), history = json_insert(history, '$[#]', \
                 json_object('at', ?3, 'event', 'handed_back', 'detail', ?5)),"
            ))?
            .execute(params![id, token, now_text, step, reason])?,
            JobState::Available,
        ),
    })
}

/// The result for an outcome its statement did not record: the job's state now, and whether
/// this same run (by its lease token) had already recorded it.
fn refused_finish(conn: &Connection, id: JobId, token: i64) -> rusqlite::Result<FinishResult> {
    let current = conn
        .prepare_cached("SELECT state, lease_token FROM drover_jobs WHERE id = ?1")?
        .query_row([id], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<i64>>(1)?))
        })
        .optional()?;
    let state = current.as_ref().map(|(s, _)| parse_state(s)).transpose()?;
    Ok(FinishResult {
        id,
        accepted: false,
        recorded_earlier: state.is_some_and(|s| s != JobState::Running)
            && current.and_then(|(_, t)| t) == Some(token),
        state,
    })
}

/// Makes at most `limit` due scheduled and retryable jobs of any queue available.
pub(crate) fn promote_due(
    conn: &Connection,
    limit: usize,
    now: Timestamp,
) -> rusqlite::Result<u64> {
    let promoted = conn
        .prepare_cached(&format!(
            "UPDATE drover_jobs SET state = 'available' WHERE id IN ( \
                 SELECT id FROM drover_jobs WHERE {DUE} AND scheduled_at <= ?1 LIMIT ?2)"
        ))?
        .execute(params![to_text(now), limit as i64])?;
    Ok(promoted as u64)
}

pub(crate) fn rescue_expired(
    conn: &Connection,
    limit: usize,
    now: Timestamp,
) -> rusqlite::Result<Vec<RescuedJob>> {
    let now_text = to_text(now);
    #[allow(clippy::type_complexity)] // one row of a local query
    let expired: Vec<(i64, i32, i32, String, bool, Option<String>, String, String)> = conn
        .prepare_cached(
            "SELECT id, attempt, max_attempts, delivery, cancel_requested_at IS NOT NULL, \
                    lease_expires_at, kind, queue \
             FROM drover_jobs WHERE state = 'running' AND lease_expires_at < ?1 \
             ORDER BY lease_expires_at LIMIT ?2",
        )?
        .query_map(params![now_text, limit as i64], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
                row.get(7)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut update = conn.prepare_cached(
        "UPDATE drover_jobs SET state = ?2, \
             completed_at = CASE WHEN ?2 = 'available' THEN NULL ELSE ?3 END, \
             scheduled_at = CASE WHEN ?2 = 'available' THEN ?3 ELSE scheduled_at END, \
             errors = json_insert(errors, '$[#]', json_object('attempt', attempt, 'at', ?3, \
                 'step', step, 'message', ?4, 'process', lease_owner)), \
             lease_token = NULL, lease_expires_at = NULL \
         WHERE id = ?1 AND state = 'running'",
    )?;
    let mut out = Vec::with_capacity(expired.len());
    for (id, attempt, max_attempts, delivery, cancel_requested, expired_at, kind, queue) in expired
    {
        let expired_at = expired_at.unwrap_or_default();
        // The column is checked at insert; were it unreadable, never risk a second run.
        let delivery = delivery.parse().unwrap_or(Delivery::AtMostOnce);
        let RescueDecision { state, message } = rescue_decision(&ExpiredRun {
            attempt,
            max_attempts,
            delivery,
            cancel_requested,
            expired_at: &expired_at,
        });
        update.execute(params![id, state.as_str(), now_text, message])?;
        out.push(RescuedJob {
            id,
            kind,
            queue,
            state,
        });
    }
    Ok(out)
}

pub(crate) fn cancel(
    conn: &Connection,
    id: JobId,
    now: Timestamp,
) -> Result<CancelResult, StoreError> {
    let now_text = to_text(now);
    let state = current_state(conn, id)
        .sql()?
        .ok_or(StoreError::NotFound(id))?;
    match state {
        JobState::Scheduled | JobState::Available | JobState::Retryable => {
            conn.prepare_cached(
                "UPDATE drover_jobs SET state = 'cancelled', completed_at = ?2, \
                 cancel_requested_at = ?2, \
                 history = json_insert(history, '$[#]', json_object('at', ?2, \
                     'event', 'cancelled', 'detail', 'cancelled by an operator before it ran')) \
                 WHERE id = ?1",
            )
            .sql()?
            .execute(params![id, now_text])
            .sql()?;
            Ok(CancelResult::Cancelled)
        }
        JobState::Running => {
            conn.prepare_cached(
                "UPDATE drover_jobs SET cancel_requested_at = coalesce(cancel_requested_at, ?2), \
                 history = json_insert(history, '$[#]', json_object('at', ?2, \
                     'event', 'cancel_requested', 'detail', 'cancel requested while running')) \
                 WHERE id = ?1",
            )
            .sql()?
            .execute(params![id, now_text])
            .sql()?;
            Ok(CancelResult::Requested)
        }
        done => Ok(CancelResult::AlreadyFinished(done)),
    }
}

pub(crate) fn retry(conn: &Connection, id: JobId, now: Timestamp) -> Result<(), StoreError> {
    let now_text = to_text(now);
    let (state, attempt, unique_key): (String, i32, Option<String>) = conn
        .prepare_cached("SELECT state, attempt, unique_key FROM drover_jobs WHERE id = ?1")
        .sql()?
        .query_row([id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()
        .sql()?
        .ok_or(StoreError::NotFound(id))?;
    let state = parse_state(&state).sql()?;
    if state == JobState::Running {
        return Err(StoreError::Conflict {
            id,
            state: state.to_string(),
            reason: "a running job cannot be retried; cancel it first".into(),
        });
    }
    if let (Some(key), true) = (&unique_key, state.is_terminal()) {
        let holder: Option<i64> = conn
            .prepare_cached(&format!(
                "SELECT id FROM drover_jobs WHERE unique_key = ?1 AND {LIVE} AND id != ?2"
            ))
            .sql()?
            .query_row(params![key, id], |row| row.get(0))
            .optional()
            .sql()?;
        if let Some(holder) = holder {
            return Err(StoreError::Conflict {
                id,
                state: state.to_string(),
                reason: format!("unfinished job {holder} holds its unique key {key:?}"),
            });
        }
    }
    let detail = format!("retried by an operator; was {state} after {attempt} attempt(s)");
    conn.prepare_cached(
        "UPDATE drover_jobs SET state = 'available', attempt = 0, scheduled_at = ?2, \
         completed_at = NULL, cancel_requested_at = NULL, step = NULL, \
         history = json_insert(history, '$[#]', json_object('at', ?2, \
             'event', 'operator_retry', 'detail', ?3)) \
         WHERE id = ?1",
    )
    .sql()?
    .execute(params![id, now_text, detail])
    .sql()?;
    Ok(())
}

pub(crate) fn get(conn: &Connection, id: JobId) -> rusqlite::Result<Option<JobRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM drover_jobs WHERE id = ?1"
    ))?
    .query_row([id], record)
    .optional()
}

pub(crate) fn list(conn: &Connection, params: &JobListParams) -> rusqlite::Result<Vec<JobRecord>> {
    // Only the filters in use are written into the statement, so that the planner sees plain
    // conditions; each shape is cached on its own.
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(state) = params.state {
        // Written into the statement so that SQLite can pick the state's partial index.
        conditions.push(format!("state = '{}'", state.as_str()));
    }
    let mut add = |condition: &str, value: rusqlite::types::Value| {
        values.push(value);
        conditions.push(condition.replace('?', &format!("?{}", values.len())));
    };
    let text = |s: &str| rusqlite::types::Value::Text(s.to_owned());
    if let Some(queue) = &params.queue {
        add("queue = ?", text(queue));
    }
    if let Some(kind) = &params.kind {
        add("kind = ?", text(kind));
    }
    if let Some(id) = params.before_id {
        add("id < ?", rusqlite::types::Value::Integer(id));
    }
    if let Some(id) = params.above_id {
        add("id > ?", rusqlite::types::Value::Integer(id));
    }
    if let Some(from) = params.created.from {
        add("created_at >= ?", text(&to_text(from)));
    }
    if let Some(to) = params.created.to {
        add("created_at < ?", text(&to_text(to)));
    }
    if let Some(from) = params.finished.from {
        add(
            &format!("{FINISHED} AND completed_at >= ?"),
            text(&to_text(from)),
        );
    }
    if let Some(to) = params.finished.to {
        add(
            &format!("{FINISHED} AND completed_at < ?"),
            text(&to_text(to)),
        );
    }
    if let Some(pattern) = &params.args_contain {
        // Registered on every reader connection (see readers.rs).
        add("drover_json_contains(args, ?)", text(pattern));
    }
    values.push(rusqlite::types::Value::Integer(params.limit as i64));
    let limit_param = format!("?{}", values.len());
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM drover_jobs {filter} ORDER BY id DESC LIMIT {limit_param}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(values), record)?;
    rows.collect()
}

pub(crate) fn cancel_requested(conn: &Connection, ids: &[JobId]) -> rusqlite::Result<Vec<JobId>> {
    // Every running job with a request (index `drover_jobs_cancel_requested`: almost always
    // none), then this process's among them: one read however many jobs it holds.
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM drover_jobs INDEXED BY drover_jobs_cancel_requested \
         WHERE state = 'running' AND cancel_requested_at IS NOT NULL",
    )?;
    let requested: HashSet<JobId> = stmt
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids
        .iter()
        .copied()
        .filter(|id| requested.contains(id))
        .collect())
}

pub(crate) fn count_by_queue(conn: &Connection) -> rusqlite::Result<Vec<QueueStateCount>> {
    let mut stmt = conn.prepare_cached(
        "SELECT queue, state, count(*) FROM drover_jobs GROUP BY queue, state ORDER BY queue, state",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok(QueueStateCount {
            queue: row.get(0)?,
            state: parse_state(&row.get::<_, String>(1)?)?,
            count: row.get::<_, i64>(2)? as u64,
        })
    })?;
    rows.collect()
}

pub(crate) fn current_state(conn: &Connection, id: JobId) -> rusqlite::Result<Option<JobState>> {
    conn.prepare_cached("SELECT state FROM drover_jobs WHERE id = ?1")?
        .query_row([id], |row| row.get::<_, String>(0))
        .optional()?
        .map(|s| parse_state(&s))
        .transpose()
}

fn record(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let opt_ts = |i: usize| -> rusqlite::Result<Option<Timestamp>> {
        row.get::<_, Option<String>>(i)?
            .map(|t| from_text(&t))
            .transpose()
    };
    Ok(JobRecord {
        id: row.get(0)?,
        queue: row.get(1)?,
        kind: row.get(2)?,
        args: JobArgs::from_text(row.get(3)?).map_err(conversion_error)?,
        state: parse_state(&row.get::<_, String>(4)?)?,
        priority: row.get(5)?,
        attempt: row.get(6)?,
        max_attempts: row.get(7)?,
        delivery: parse_delivery(&row.get::<_, String>(8)?)?,
        unique_key: row.get(9)?,
        scheduled_at: from_text(&row.get::<_, String>(10)?)?,
        created_at: from_text(&row.get::<_, String>(11)?)?,
        attempted_at: opt_ts(12)?,
        completed_at: opt_ts(13)?,
        lease_owner: row.get(14)?,
        lease_expires_at: opt_ts(15)?,
        cancel_requested_at: opt_ts(16)?,
        step: row.get(17)?,
        errors: json_as(&row.get::<_, String>(18)?)?,
        history: json_as(&row.get::<_, String>(19)?)?,
    })
}

fn conversion_error(err: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
}

pub(crate) fn parse_state(s: &str) -> rusqlite::Result<JobState> {
    s.parse()
        .map_err(|e: String| conversion_error(std::io::Error::other(e)))
}

fn parse_delivery(s: &str) -> rusqlite::Result<Delivery> {
    s.parse()
        .map_err(|e: String| conversion_error(std::io::Error::other(e)))
}

fn json_as<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(conversion_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    /// With STAT4 (on in the bundled SQLite), a bound `LIMIT ?` makes SQLite re-plan the
    /// statement on every run; that once cost a fifth of the writer's time.
    #[test]
    fn the_claim_statement_is_not_re_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("p.db")).unwrap();
        crate::schema::migrate(&conn, "2030-01-01T00:00:00.000000Z").unwrap();
        let now = Timestamp::now();
        let jobs: Vec<NewJob> = (0..20).map(|_| NewJob::new("k", "{}")).collect();
        insert_many(&conn, &jobs, now).unwrap();
        let params = JobClaimParams {
            queue: "default".into(),
            limit: 3,
            owner: "o".into(),
            lease: std::time::Duration::from_secs(30),
            now: None,
        };
        for limit in [3, 4, 3, 5] {
            let params = JobClaimParams {
                limit,
                ..params.clone()
            };
            assert_eq!(claim(&conn, &params, now).unwrap().jobs.len(), limit);
        }
        let statement = conn.prepare_cached(CLAIM).unwrap();
        assert_eq!(statement.get_status(StatementStatus::RePrepare), 0);
    }

    /// Writes must not build ephemeral tables (constant `IN` lists in CHECKs and partial-index
    /// conditions did), and the queries must use their partial indexes.
    #[test]
    fn hot_statements_use_their_indexes_and_no_ephemeral_tables() {
        let conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&conn, "2030-01-01T00:00:00.000000Z").unwrap();
        let explain = |sql: &str| -> Vec<String> {
            let n = sql.matches('?').count();
            let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
            stmt.query_map(
                rusqlite::params_from_iter(vec![rusqlite::types::Null; n]),
                |r| r.get::<_, String>(1),
            )
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        for sql in [
            "INSERT INTO drover_jobs (queue, kind, args, state, priority, max_attempts, delivery, \
             unique_key, scheduled_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            "UPDATE drover_jobs SET state = 'completed', completed_at = ? \
             WHERE id = ? AND state = 'running' AND lease_token = ?",
        ] {
            assert!(
                !explain(sql).iter().any(|op| op == "OpenEphemeral"),
                "{sql}"
            );
        }
        let plan = |sql: String| -> String {
            let n = sql.matches('?').count();
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            stmt.query_map(
                rusqlite::params_from_iter(vec![rusqlite::types::Null; n]),
                |r| r.get::<_, String>(3),
            )
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .join("; ")
        };
        for (sql, index) in [
            (format!("SELECT id FROM drover_jobs WHERE {DUE} AND queue = ? AND scheduled_at <= ?"), "drover_jobs_due"),
            (format!("SELECT id FROM drover_jobs WHERE unique_key = ? AND {LIVE}"), "drover_jobs_unique"),
            (format!("SELECT id FROM drover_jobs WHERE completed_at < ? AND {FINISHED}"), "drover_jobs_finished"),
            ("SELECT id FROM drover_jobs WHERE state = 'available' AND queue = ? ORDER BY priority DESC, id".into(), "drover_jobs_fetch"),
            ("SELECT id FROM drover_jobs WHERE state = 'running' AND lease_expires_at < ?".into(), "drover_jobs_lease"),
        ] {
            assert!(plan(sql.clone()).contains(index), "{sql}: {}", plan(sql.clone()));
        }
    }
}
