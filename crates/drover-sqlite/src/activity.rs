//! The SQL of the cluster's record of activity: retention runs and throughput per minute.

use drover_core::{
    RetentionRunInsertParams, RetentionRunListParams, RetentionRunRecord, ThroughputAddParams,
    ThroughputListParams, ThroughputMinute,
};
use jiff::Timestamp;
use rusqlite::{Connection, params};

use crate::time::{from_text, to_text};

/// Counts are `u64` in Rust and `INTEGER` (i64) in SQLite: clamp rather than wrap.
fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn retention_run_insert(
    conn: &Connection,
    params: &RetentionRunInsertParams,
) -> rusqlite::Result<()> {
    let run = &params.run;
    conn.prepare_cached(
        "INSERT INTO drover_retention_runs \
             (policy, trigger, started_at, finished_at, rows_moved, error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        run.policy,
        run.trigger,
        to_text(run.started_at),
        to_text(run.finished_at),
        to_sql(run.rows_moved),
        run.error
    ])?;
    // The newest `keep` of the policy stay; the rest go in the same transaction.
    conn.prepare_cached(
        "DELETE FROM drover_retention_runs WHERE policy = ?1 AND id NOT IN \
             (SELECT id FROM drover_retention_runs WHERE policy = ?1 \
              ORDER BY started_at DESC, id DESC LIMIT ?2)",
    )?
    .execute(params![run.policy, to_sql(params.keep as u64)])?;
    Ok(())
}

pub(crate) fn retention_run_list(
    conn: &Connection,
    params: &RetentionRunListParams,
) -> rusqlite::Result<Vec<RetentionRunRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT policy, trigger, started_at, finished_at, rows_moved, error FROM ( \
             SELECT *, row_number() OVER \
                 (PARTITION BY policy ORDER BY started_at DESC, id DESC) AS n \
             FROM drover_retention_runs WHERE ?1 IS NULL OR policy = ?1) \
         WHERE n <= ?2 ORDER BY policy, started_at DESC, id DESC",
    )?;
    let rows = stmt.query_map(params![params.policy, to_sql(params.limit as u64)], |row| {
        Ok(RetentionRunRecord {
            policy: row.get(0)?,
            trigger: row.get(1)?,
            started_at: from_text(&row.get::<_, String>(2)?)?,
            finished_at: from_text(&row.get::<_, String>(3)?)?,
            rows_moved: row.get::<_, i64>(4)?.max(0) as u64,
            error: row.get(5)?,
        })
    })?;
    rows.collect()
}

pub(crate) fn throughput_add(
    conn: &Connection,
    params: &ThroughputAddParams,
) -> rusqlite::Result<()> {
    let mut upsert = conn.prepare_cached(
        "INSERT INTO drover_throughput (minute, process, queue, completed, failed) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (minute, process, queue) DO UPDATE SET \
             completed = completed + excluded.completed, failed = failed + excluded.failed",
    )?;
    for count in &params.counts {
        upsert.execute(params![
            to_text(count.minute),
            params.process,
            count.queue,
            to_sql(count.completed),
            to_sql(count.failed)
        ])?;
    }
    Ok(())
}

pub(crate) fn throughput_list(
    conn: &Connection,
    params: &ThroughputListParams,
) -> rusqlite::Result<Vec<ThroughputMinute>> {
    let mut stmt = conn.prepare_cached(
        "SELECT minute, sum(completed), sum(failed) FROM drover_throughput \
         WHERE minute >= ?1 AND (?2 IS NULL OR queue = ?2) \
         GROUP BY minute ORDER BY minute",
    )?;
    let rows = stmt.query_map(params![to_text(params.since), params.queue], |row| {
        Ok(ThroughputMinute {
            minute: from_text(&row.get::<_, String>(0)?)?,
            completed: row.get::<_, i64>(1)?.max(0) as u64,
            failed: row.get::<_, i64>(2)?.max(0) as u64,
        })
    })?;
    rows.collect()
}

pub(crate) fn throughput_prune(conn: &Connection, before: Timestamp) -> rusqlite::Result<u64> {
    let n = conn
        .prepare_cached("DELETE FROM drover_throughput WHERE minute < ?1")?
        .execute([to_text(before)])?;
    Ok(n as u64)
}
