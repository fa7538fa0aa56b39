//! The SQL of cron fires and of the retention archiver.

use std::slice;

use drover_core::{
    ArchiveParams, CronFireParams, CronFireResult, CronState, StoreError, ValidationError, validate,
};
use jiff::Timestamp;

use crate::error::DbError;
use crate::insert::{self, InsertSql};
use crate::session::Db;

pub(crate) async fn cron_register(
    db: &Db<'_>,
    names: &[String],
    now: Option<Timestamp>,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO drover_cron_schedules (name, registered_at) \
         SELECT name, coalesce($2::timestamptz, now()) FROM unnest($1::text[]) AS name \
         ON CONFLICT (name) DO NOTHING",
        &[&names, &now],
    )
    .await?;
    Ok(())
}

pub(crate) async fn cron_states(db: &Db<'_>) -> Result<Vec<CronState>, DbError> {
    // COLLATE "C": byte order, as SQLite sorts.
    let rows = db
        .query(
            "SELECT s.name, s.registered_at, f.fire_at, f.job_id FROM drover_cron_schedules s \
             LEFT JOIN LATERAL (SELECT fire_at, job_id FROM drover_cron_fires \
                                WHERE schedule = s.name ORDER BY fire_at DESC LIMIT 1) f ON true \
             ORDER BY s.name COLLATE \"C\"",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| CronState {
            name: row.get(0),
            registered_at: row.get(1),
            last_fire_at: row.get(2),
            last_job_id: row.get(3),
        })
        .collect())
}

pub(crate) async fn cron_fire(
    db: &Db<'_>,
    sql: &InsertSql,
    params: &CronFireParams,
) -> Result<CronFireResult, DbError> {
    let fence = &params.fence;
    // FOR SHARE holds the leader row until the fire commits: a new term cannot begin between
    // this check and the insert (its election waits for the lock).
    let leads = db
        .query_opt(
            "SELECT term FROM drover_leader \
             WHERE name = $1 AND leader_id = $2 AND term = $3 \
               AND expires_at > coalesce($4::timestamptz, now()) \
             FOR SHARE",
            &[&fence.name, &fence.leader_id, &fence.term, &params.now],
        )
        .await?;
    if leads.is_none() {
        return Ok(CronFireResult::NotLeader);
    }
    let recorded = db
        .execute(
            "INSERT INTO drover_cron_fires (schedule, fire_at, fired_at) \
             VALUES ($1, $2, coalesce($3::timestamptz, now())) \
             ON CONFLICT (schedule, fire_at) DO NOTHING",
            &[&params.schedule, &params.fire_at, &params.now],
        )
        .await?;
    if recorded == 0 {
        return Ok(CronFireResult::AlreadyFired);
    }
    let job_id =
        insert::insert_many(db, sql, slice::from_ref(&params.job), params.now).await?[0].id;
    db.execute(
        "UPDATE drover_cron_fires SET job_id = $3 WHERE schedule = $1 AND fire_at = $2",
        &[&params.schedule, &params.fire_at, &job_id],
    )
    .await?;
    Ok(CronFireResult::Fired { job_id })
}

pub(crate) async fn cron_prune(db: &Db<'_>, before: Timestamp) -> Result<u64, DbError> {
    Ok(db
        .execute(
            "DELETE FROM drover_cron_fires f WHERE fire_at < $1 \
               AND fire_at < (SELECT max(fire_at) FROM drover_cron_fires g \
                              WHERE g.schedule = f.schedule)",
            &[&before],
        )
        .await?)
}

/// The columns of a table (or view) on the `search_path`, in order; `None` when there is none.
/// The name is matched exactly, as the archiver quotes it.
pub(crate) async fn table_columns(
    db: &Db<'_>,
    table: &str,
) -> Result<Option<Vec<String>>, DbError> {
    let rows = db
        .query(
            "SELECT a.attname::text FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             WHERE a.attrelid = to_regclass(quote_ident($1)) \
               AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&table],
        )
        .await?;
    let columns: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    Ok((!columns.is_empty()).then_some(columns))
}

/// The statements of one retention policy, with every name checked and quoted before it is
/// put into SQL.
#[derive(Debug)]
pub(crate) struct ArchiveSql {
    /// Moves up to `$2` rows past the cutoff `$1`; answers how many.
    batch: String,
    /// Counts the rows past the cutoff `$1`.
    pending: String,
}

impl ArchiveSql {
    pub(crate) fn new(params: &ArchiveParams) -> Result<Self, StoreError> {
        let table = quote("table", &params.table)?;
        let archive = quote("archive_table", &params.archive_table)?;
        let id = quote("id_column", &params.id_column)?;
        let age = quote("age_column", &params.age_column)?;
        let columns = params
            .columns
            .iter()
            .map(|c| quote("column", c))
            .collect::<Result<Vec<_>, _>>()?
            .join(", ");
        let finished = if params.finished_jobs_only {
            " AND state IN ('completed', 'discarded', 'cancelled')"
        } else {
            ""
        };
        // Two branches, so that each can use its own index. `$1::timestamptz` compares with
        // `timestamp` and `date` columns too (in the session's time zone).
        let mut due = format!("SELECT {id} FROM {table} WHERE {age} < $1::timestamptz{finished}");
        if let Some(fallback) = &params.fallback_column {
            let fallback = quote("fallback_column", fallback)?;
            due.push_str(&format!(
                " UNION ALL SELECT {id} FROM {table} \
                 WHERE {age} IS NULL AND {fallback} < $1::timestamptz{finished}"
            ));
        }
        Ok(Self {
            // One statement: the rows deleted from the hot table are the rows inserted into the
            // archive (but for ids archived already), so each row ends in exactly one table.
            // The ids travel as arrays (`= ANY(ARRAY(...))`): with a join, the planner chose a
            // hash anti-join that scanned the whole archive table on every batch, which made a
            // run quadratic in the size of the archive.
            batch: format!(
                "WITH due AS (SELECT {id} FROM ({due}) d LIMIT $2), \
                 moved AS (DELETE FROM {table} WHERE {id} = ANY(ARRAY(SELECT {id} FROM due)) \
                           RETURNING {columns}), \
                 archived AS (INSERT INTO {archive} ({columns}) SELECT {columns} FROM moved m \
                              WHERE NOT (m.{id} = ANY(ARRAY( \
                                  SELECT a.{id} FROM {archive} a \
                                  WHERE a.{id} = ANY(ARRAY(SELECT {id} FROM due))))) \
                              RETURNING 1) \
                 SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM archived)"
            ),
            pending: format!("SELECT count(*) FROM ({due}) d"),
        })
    }
}

/// Quotes a plain identifier; anything else is refused before it can reach SQL.
fn quote(field: &'static str, name: &str) -> Result<String, StoreError> {
    validate::check_identifier(field, name)?;
    Ok(format!("\"{name}\""))
}

/// Refuses a batch that would move rows into their own table, which would delete them. (The
/// engine refuses such a policy at start-up; this guards the store's other callers.)
pub(crate) fn check_distinct_tables(params: &ArchiveParams) -> Result<(), StoreError> {
    if params.table == params.archive_table {
        return Err(ValidationError::Name {
            field: "archive_table",
            value: params.archive_table.clone(),
            reason: "is the same as the table",
        }
        .into());
    }
    Ok(())
}

pub(crate) async fn archive_batch(
    db: &Db<'_>,
    sql: &ArchiveSql,
    params: &ArchiveParams,
) -> Result<u64, DbError> {
    let limit = i64::try_from(params.batch_size).unwrap_or(i64::MAX);
    let moved: i64 = db
        .query_one(&sql.batch, &[&params.cutoff, &limit])
        .await?
        .get(0);
    Ok(moved as u64)
}

pub(crate) async fn archive_pending(
    db: &Db<'_>,
    sql: &ArchiveSql,
    params: &ArchiveParams,
) -> Result<u64, DbError> {
    let pending: i64 = db.query_one(&sql.pending, &[&params.cutoff]).await?.get(0);
    Ok(pending as u64)
}
