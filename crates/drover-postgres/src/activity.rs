//! The SQL of the cluster's record of activity: retention runs and throughput per minute.

use drover_core::{
    RetentionRunInsertParams, RetentionRunListParams, RetentionRunRecord, ThroughputAddParams,
    ThroughputListParams, ThroughputMinute,
};
use jiff::Timestamp;

use crate::error::DbError;
use crate::session::Db;

/// Counts are `u64` in Rust and `bigint` in PostgreSQL: clamp rather than wrap.
fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_sql(n: i64) -> u64 {
    n.max(0) as u64
}

pub(crate) async fn retention_run_insert(
    db: &Db<'_>,
    params: &RetentionRunInsertParams,
) -> Result<(), DbError> {
    let run = &params.run;
    db.execute(
        "INSERT INTO drover_retention_runs \
             (policy, trigger, started_at, finished_at, rows_moved, error) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &run.policy,
            &run.trigger,
            &run.started_at,
            &run.finished_at,
            &to_sql(run.rows_moved),
            &run.error,
        ],
    )
    .await?;
    // The newest `keep` of the policy stay; the rest go in the same transaction.
    db.execute(
        "DELETE FROM drover_retention_runs WHERE policy = $1 AND id NOT IN \
             (SELECT id FROM drover_retention_runs WHERE policy = $1 \
              ORDER BY started_at DESC, id DESC LIMIT $2)",
        &[&run.policy, &to_sql(params.keep as u64)],
    )
    .await?;
    Ok(())
}

pub(crate) async fn retention_run_list(
    db: &Db<'_>,
    params: &RetentionRunListParams,
) -> Result<Vec<RetentionRunRecord>, DbError> {
    let rows = db
        .query(
            "SELECT policy, trigger, started_at, finished_at, rows_moved, error FROM ( \
                 SELECT *, row_number() OVER \
                     (PARTITION BY policy ORDER BY started_at DESC, id DESC) AS n \
                 FROM drover_retention_runs WHERE $1::text IS NULL OR policy = $1) AS r \
             WHERE n <= $2 ORDER BY policy COLLATE \"C\", started_at DESC, id DESC",
            &[&params.policy, &to_sql(params.limit as u64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| RetentionRunRecord {
            policy: row.get(0),
            trigger: row.get(1),
            started_at: row.get(2),
            finished_at: row.get(3),
            rows_moved: from_sql(row.get(4)),
            error: row.get(5),
        })
        .collect())
}

/// One statement for every count (arrays through `unnest`, repeated keys summed first: one
/// statement may not update a row twice): a process flushes all its deltas in one round trip. Its rows are its own (the process id is part of the key), so concurrent
/// flushes of different processes never touch the same row.
pub(crate) async fn throughput_add(
    db: &Db<'_>,
    params: &ThroughputAddParams,
) -> Result<(), DbError> {
    if params.counts.is_empty() {
        return Ok(());
    }
    let minutes: Vec<Timestamp> = params.counts.iter().map(|c| c.minute).collect();
    let queues: Vec<&str> = params.counts.iter().map(|c| c.queue.as_str()).collect();
    let completed: Vec<i64> = params.counts.iter().map(|c| to_sql(c.completed)).collect();
    let failed: Vec<i64> = params.counts.iter().map(|c| to_sql(c.failed)).collect();
    db.execute(
        "INSERT INTO drover_throughput AS t (minute, process, queue, completed, failed) \
         SELECT m, $1, q, sum(c)::bigint, sum(f)::bigint \
         FROM unnest($2::timestamptz[], $3::text[], $4::bigint[], $5::bigint[]) AS d(m, q, c, f) \
         GROUP BY m, q \
         ON CONFLICT (minute, process, queue) DO UPDATE SET \
             completed = t.completed + excluded.completed, failed = t.failed + excluded.failed",
        &[&params.process, &minutes, &queues, &completed, &failed],
    )
    .await?;
    Ok(())
}

pub(crate) async fn throughput_list(
    db: &Db<'_>,
    params: &ThroughputListParams,
) -> Result<Vec<ThroughputMinute>, DbError> {
    let rows = db
        .query(
            "SELECT minute, sum(completed)::bigint, sum(failed)::bigint FROM drover_throughput \
             WHERE minute >= $1 AND ($2::text IS NULL OR queue = $2) \
             GROUP BY minute ORDER BY minute",
            &[&params.since, &params.queue],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ThroughputMinute {
            minute: row.get(0),
            completed: from_sql(row.get(1)),
            failed: from_sql(row.get(2)),
        })
        .collect())
}

pub(crate) async fn throughput_prune(db: &Db<'_>, before: Timestamp) -> Result<u64, DbError> {
    Ok(db
        .execute(
            "DELETE FROM drover_throughput WHERE minute < $1",
            &[&before],
        )
        .await?)
}
