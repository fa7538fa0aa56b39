//! Bulk insert: columns as arrays and `unnest`, a few thousand rows per statement, in the
//! caller's transaction (all or none).
//!
//! Arrays keep every statement at ten parameters, however many jobs it carries, far from
//! PostgreSQL's limit of 65,535 parameters per statement; chunking keeps
//! each statement's message and memory bounded.
//!
//! Ids are taken from the sequence first, in one round trip, and handed out in input order: the
//! answer can then be matched to the input by id (`RETURNING` promises no order), and ids grow
//! in input order.
//!
//! Unique keys: within one call, a job repeating an earlier job's key answers with that job.
//! Against the table, `ON CONFLICT ... DO NOTHING` on the partial unique index skips a job whose
//! key an unfinished job holds — including one inserted by a concurrent transaction, which the
//! insert waits for — and a second statement looks the holders up. Statements are built with
//! the schema spelled out, because [`crate::PgStore::insert_jobs_in_transaction`] runs them on
//! the caller's connection, whose `search_path` is not ours.

use std::collections::HashMap;

use drover_core::{InsertedJob, JobState, NewJob, StoreError};
use jiff::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::DbError;
use crate::jobs::parse_state;
use crate::session::Db;

/// Rows per `INSERT` statement.
const CHUNK: usize = 5_000;

/// A job whose unique key was held when we looked, by a job that finished before we could
/// name it, is inserted again; this many rounds at most.
const ROUNDS: usize = 4;

/// The statements, with the schema in every table and sequence name.
#[derive(Debug, Clone)]
pub(crate) struct InsertSql {
    allocate: String,
    insert: String,
    holders: String,
    pub(crate) plain: String,
}

impl InsertSql {
    pub(crate) fn new(schema: Option<&str>) -> Self {
        // A checked plain identifier (config::check_schema), so it needs no quoting.
        let prefix = schema.map(|s| format!("{s}.")).unwrap_or_default();
        Self {
            allocate: format!(
                "SELECT ARRAY(SELECT nextval('{prefix}drover_jobs_id_seq') \
                 FROM generate_series(1, $1::integer))"
            ),
            insert: format!(
                "INSERT INTO {prefix}drover_jobs (id, queue, kind, args, state, priority, \
                     max_attempts, delivery, unique_key, scheduled_at, created_at) \
                 OVERRIDING SYSTEM VALUE \
                 SELECT i.id, i.queue, i.kind, i.args::jsonb, \
                     CASE WHEN i.run_at > c.now THEN 'scheduled' ELSE 'available' END, \
                     i.priority, i.max_attempts, i.delivery, i.unique_key, \
                     CASE WHEN i.run_at > c.now THEN i.run_at ELSE c.now END, c.now \
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::integer[], \
                             $6::integer[], $7::text[], $8::text[], $9::timestamptz[]) \
                         AS i(id, queue, kind, args, priority, max_attempts, delivery, \
                              unique_key, run_at), \
                      (SELECT coalesce($10::timestamptz, now()) AS now) AS c \
                 ORDER BY i.id \
                 ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL \
                     AND state IN ('scheduled', 'available', 'running', 'retryable') \
                 DO NOTHING \
                 RETURNING id, state"
            ),
            holders: format!(
                "SELECT unique_key, id, state FROM {prefix}drover_jobs \
                 WHERE unique_key = ANY($1::text[]) \
                   AND state IN ('scheduled', 'available', 'running', 'retryable')"
            ),
            // Ids come from the sequence row by row, in input order (the function scan's
            // order); the answer is matched to the input by ordinality, not by that order.
            plain: format!(
                "WITH input AS MATERIALIZED ( \
                     SELECT nextval('{prefix}drover_jobs_id_seq') AS id, i.* \
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], \
                                 $5::integer[], $6::text[], $7::timestamptz[]) \
                          WITH ORDINALITY \
                          AS i(queue, kind, args, priority, max_attempts, delivery, run_at, ord)), \
                 c AS (SELECT coalesce($8::timestamptz, now()) AS now), \
                 ins AS ( \
                     INSERT INTO {prefix}drover_jobs (id, queue, kind, args, state, priority, \
                         max_attempts, delivery, scheduled_at, created_at) \
                     OVERRIDING SYSTEM VALUE \
                     SELECT i.id, i.queue, i.kind, i.args::jsonb, \
                         CASE WHEN i.run_at > c.now THEN 'scheduled' ELSE 'available' END, \
                         i.priority, i.max_attempts, i.delivery, \
                         CASE WHEN i.run_at > c.now THEN i.run_at ELSE c.now END, c.now \
                     FROM input AS i, c ORDER BY i.id \
                     RETURNING id, state) \
                 SELECT ins.id, ins.state FROM input JOIN ins USING (id) ORDER BY input.ord"
            ),
        }
    }
}

/// True when [`insert_plain`] can insert these jobs: no unique key (so no job can be skipped,
/// and no second round is needed) and few enough for one statement.
pub(crate) fn is_plain(jobs: &[NewJob]) -> bool {
    !jobs.is_empty() && jobs.len() <= CHUNK && jobs.iter().all(|j| j.unique_key.is_none())
}

/// Inserts [plain](is_plain) jobs in one statement: run outside an explicit transaction, it is
/// its own transaction, so the enqueue costs one round trip and one commit instead of four
/// round trips (`BEGIN`, ids, insert, `COMMIT`). It returns once that commit is done, like the
/// transaction it replaces.
pub(crate) async fn insert_plain(
    db: &Db<'_>,
    sql: &InsertSql,
    jobs: &[NewJob],
    now: Option<Timestamp>,
) -> Result<Vec<InsertedJob>, DbError> {
    let columns = PlainColumns::new(jobs);
    let rows = db.query(&sql.plain, &columns.params(&now)).await?;
    columns.inserted(&rows)
}

/// The parameters of the plain insert ([`InsertSql::plain`]), for callers that pipeline it.
pub(crate) struct PlainColumns<'a> {
    queues: Vec<&'a str>,
    kinds: Vec<&'a str>,
    args: Vec<&'a str>,
    priorities: Vec<i32>,
    max_attempts: Vec<i32>,
    deliveries: Vec<&'a str>,
    run_at: Vec<Option<Timestamp>>,
}

impl<'a> PlainColumns<'a> {
    pub(crate) fn new(jobs: &'a [NewJob]) -> Self {
        let column = |f: fn(&NewJob) -> &str| -> Vec<&str> { jobs.iter().map(f).collect() };
        Self {
            queues: column(|j| &j.queue),
            kinds: column(|j| &j.kind),
            args: column(|j| &j.args),
            priorities: jobs.iter().map(|j| j.priority).collect(),
            max_attempts: jobs.iter().map(|j| j.max_attempts).collect(),
            deliveries: column(|j| j.delivery.as_str()),
            run_at: jobs.iter().map(|j| j.scheduled_at).collect(),
        }
    }

    pub(crate) fn params<'p>(&'p self, now: &'p Option<Timestamp>) -> [&'p (dyn ToSql + Sync); 8] {
        [
            &self.queues,
            &self.kinds,
            &self.args,
            &self.priorities,
            &self.max_attempts,
            &self.deliveries,
            &self.run_at,
            now,
        ]
    }

    /// The jobs inserted, from the statement's rows (in input order).
    pub(crate) fn inserted(&self, rows: &[Row]) -> Result<Vec<InsertedJob>, DbError> {
        if rows.len() != self.queues.len() {
            return Err(StoreError::Internal(format!(
                "inserted {} rows for {} jobs",
                rows.len(),
                self.queues.len()
            ))
            .into());
        }
        rows.iter()
            .map(|row| {
                Ok(InsertedJob {
                    id: row.get(0),
                    state: parse_state(row.get(1))?,
                    duplicate: false,
                })
            })
            .collect()
    }
}

/// Inserts the jobs; one result per job, in input order.
pub(crate) async fn insert_many(
    db: &Db<'_>,
    sql: &InsertSql,
    jobs: &[NewJob],
    now: Option<Timestamp>,
) -> Result<Vec<InsertedJob>, DbError> {
    let mut results: Vec<Option<InsertedJob>> = vec![None; jobs.len()];
    // A later job with the key of an earlier one answers with the earlier one's result.
    let mut first_with_key: HashMap<&str, usize> = HashMap::new();
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    let mut pending: Vec<usize> = Vec::with_capacity(jobs.len());
    for (index, job) in jobs.iter().enumerate() {
        match job.unique_key.as_deref() {
            Some(key) => match first_with_key.get(key) {
                Some(&first) => repeats.push((index, first)),
                None => {
                    first_with_key.insert(key, index);
                    pending.push(index);
                }
            },
            None => pending.push(index),
        }
    }

    for _ in 0..ROUNDS {
        if pending.is_empty() {
            break;
        }
        let skipped = insert_round(db, sql, jobs, &pending, now, &mut results).await?;
        if skipped.is_empty() {
            pending.clear();
            break;
        }
        let keys: Vec<&str> = skipped
            .iter()
            .filter_map(|&i| jobs[i].unique_key.as_deref())
            .collect();
        let mut holders: HashMap<String, (i64, JobState)> = HashMap::new();
        for row in db.query(&sql.holders, &[&keys]).await? {
            let state = parse_state(row.get(2))?;
            holders.insert(row.get(0), (row.get(1), state));
        }
        pending = skipped
            .into_iter()
            .filter(|&i| {
                let key = jobs[i].unique_key.as_deref().unwrap_or_default();
                match holders.get(key) {
                    Some(&(id, state)) => {
                        results[i] = Some(InsertedJob {
                            id,
                            state,
                            duplicate: true,
                        });
                        false
                    }
                    // The holder finished in between: the key is free again.
                    None => true,
                }
            })
            .collect();
    }
    if !pending.is_empty() {
        return Err(StoreError::Unavailable(format!(
            "the unique keys of {} job(s) kept changing hands during the insert; retry",
            pending.len()
        ))
        .into());
    }
    for (index, first) in repeats {
        let first = results[first].expect("the first job with a key has a result");
        results[index] = Some(InsertedJob {
            duplicate: true,
            ..first
        });
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every job has a result"))
        .collect())
}

/// Inserts the `pending` jobs, filling their results; returns those skipped because an
/// unfinished job holds their unique key.
async fn insert_round(
    db: &Db<'_>,
    sql: &InsertSql,
    jobs: &[NewJob],
    pending: &[usize],
    now: Option<Timestamp>,
    results: &mut [Option<InsertedJob>],
) -> Result<Vec<usize>, DbError> {
    let count = i32::try_from(pending.len()).map_err(|_| {
        DbError::Store(StoreError::Internal(format!(
            "batch of {} jobs is too large",
            pending.len()
        )))
    })?;
    let mut ids: Vec<i64> = db.query_one(&sql.allocate, &[&count]).await?.get(0);
    ids.sort_unstable();
    let mut skipped = Vec::new();
    for (chunk, chunk_ids) in pending.chunks(CHUNK).zip(ids.chunks(CHUNK)) {
        let column =
            |f: fn(&NewJob) -> &str| -> Vec<&str> { chunk.iter().map(|&i| f(&jobs[i])).collect() };
        let queues = column(|j| &j.queue);
        let kinds = column(|j| &j.kind);
        let args = column(|j| &j.args);
        let deliveries = column(|j| j.delivery.as_str());
        let priorities: Vec<i32> = chunk.iter().map(|&i| jobs[i].priority).collect();
        let max_attempts: Vec<i32> = chunk.iter().map(|&i| jobs[i].max_attempts).collect();
        let unique_keys: Vec<Option<&str>> = chunk
            .iter()
            .map(|&i| jobs[i].unique_key.as_deref())
            .collect();
        let run_at: Vec<Option<Timestamp>> = chunk.iter().map(|&i| jobs[i].scheduled_at).collect();
        let rows = db
            .query(
                &sql.insert,
                &[
                    &chunk_ids,
                    &queues,
                    &kinds,
                    &args,
                    &priorities,
                    &max_attempts,
                    &deliveries,
                    &unique_keys,
                    &run_at,
                    &now,
                ],
            )
            .await?;
        let mut inserted: HashMap<i64, JobState> = HashMap::with_capacity(rows.len());
        for row in rows {
            inserted.insert(row.get(0), parse_state(row.get(1))?);
        }
        for (&index, &id) in chunk.iter().zip(chunk_ids) {
            match inserted.get(&id) {
                Some(&state) => {
                    results[index] = Some(InsertedJob {
                        id,
                        state,
                        duplicate: false,
                    })
                }
                None => skipped.push(index),
            }
        }
    }
    Ok(skipped)
}
