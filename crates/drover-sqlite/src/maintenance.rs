//! The SQL of cron fires and of the retention archiver.

use drover_core::{ArchiveParams, CronFireParams, CronFireResult, CronState, StoreError, validate};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use crate::store::SqlResult;
use crate::time::{from_text, to_text};

pub(crate) fn cron_register(
    conn: &Connection,
    names: &[String],
    now: Timestamp,
) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO drover_cron_schedules (name, registered_at) VALUES (?1, ?2) \
         ON CONFLICT (name) DO NOTHING",
    )?;
    let now = to_text(now);
    for name in names {
        insert.execute(params![name, now])?;
    }
    Ok(())
}

pub(crate) fn cron_states(conn: &Connection) -> rusqlite::Result<Vec<CronState>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.name, s.registered_at, f.fire_at, f.job_id FROM drover_cron_schedules s \
         LEFT JOIN drover_cron_fires f ON f.schedule = s.name AND f.fire_at = \
             (SELECT max(fire_at) FROM drover_cron_fires WHERE schedule = s.name) \
         ORDER BY s.name",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok(CronState {
            name: row.get(0)?,
            registered_at: from_text(&row.get::<_, String>(1)?)?,
            last_fire_at: row
                .get::<_, Option<String>>(2)?
                .map(|t| from_text(&t))
                .transpose()?,
            last_job_id: row.get(3)?,
        })
    })?;
    rows.collect()
}

pub(crate) fn cron_fire(
    conn: &Connection,
    params: &CronFireParams,
    now: Timestamp,
) -> Result<CronFireResult, StoreError> {
    let now_text = to_text(now);
    let fence = &params.fence;
    let leads: Option<i64> = conn
        .prepare_cached(
            "SELECT term FROM drover_leader \
             WHERE name = ?1 AND leader_id = ?2 AND term = ?3 AND expires_at > ?4",
        )
        .sql()?
        .query_row(
            params![fence.name, fence.leader_id, fence.term, now_text],
            |row| row.get(0),
        )
        .optional()
        .sql()?;
    if leads.is_none() {
        return Ok(CronFireResult::NotLeader);
    }
    let fire_at = to_text(params.fire_at);
    let recorded = conn
        .prepare_cached(
            "INSERT INTO drover_cron_fires (schedule, fire_at, fired_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (schedule, fire_at) DO NOTHING",
        )
        .sql()?
        .execute(params![params.schedule, fire_at, now_text])
        .sql()?;
    if recorded == 0 {
        return Ok(CronFireResult::AlreadyFired);
    }
    let job_id =
        crate::jobs::insert_many(conn, std::slice::from_ref(&params.job), now).sql()?[0].id;
    conn.prepare_cached(
        "UPDATE drover_cron_fires SET job_id = ?3 WHERE schedule = ?1 AND fire_at = ?2",
    )
    .sql()?
    .execute(params![params.schedule, fire_at, job_id])
    .sql()?;
    Ok(CronFireResult::Fired { job_id })
}

pub(crate) fn cron_prune(conn: &Connection, before: Timestamp) -> rusqlite::Result<u64> {
    let n = conn
        .prepare_cached(
            "DELETE FROM drover_cron_fires WHERE fire_at < ?1 \
             AND fire_at < (SELECT max(fire_at) FROM drover_cron_fires f \
                            WHERE f.schedule = drover_cron_fires.schedule)",
        )?
        .execute([to_text(before)])?;
    Ok(n as u64)
}

pub(crate) fn table_columns(
    conn: &Connection,
    table: &str,
) -> rusqlite::Result<Option<Vec<String>>> {
    let mut stmt = conn.prepare_cached("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let columns = stmt
        .query_map([table], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((!columns.is_empty()).then_some(columns))
}

/// Quotes a plain identifier; anything else is refused before it can reach SQL.
fn quote(field: &'static str, name: &str) -> Result<String, StoreError> {
    validate::check_identifier(field, name)?;
    Ok(format!("\"{name}\""))
}

/// The ids past the cutoff, as a subquery over `?1` (cutoff) and `?2` (limit). Two branches, so
/// that each can use its own index.
fn due_ids(params: &ArchiveParams) -> Result<String, StoreError> {
    let table = quote("table", &params.table)?;
    let id = quote("id_column", &params.id_column)?;
    let age = quote("age_column", &params.age_column)?;
    let finished = if params.finished_jobs_only {
        format!(" AND {}", crate::jobs::FINISHED)
    } else {
        String::new()
    };
    let mut sql = format!("SELECT {id} FROM {table} WHERE {age} < ?1{finished}");
    if let Some(fallback) = &params.fallback_column {
        let fallback = quote("fallback_column", fallback)?;
        sql.push_str(&format!(
            " UNION ALL SELECT {id} FROM {table} WHERE {age} IS NULL AND {fallback} < ?1{finished}"
        ));
    }
    Ok(sql)
}

pub(crate) fn archive_batch(conn: &Connection, params: &ArchiveParams) -> Result<u64, StoreError> {
    let table = quote("table", &params.table)?;
    let archive = quote("archive_table", &params.archive_table)?;
    let id = quote("id_column", &params.id_column)?;
    let columns = params
        .columns
        .iter()
        .map(|c| quote("column", c))
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    let cutoff = to_text(params.cutoff);
    let ids: Vec<i64> = conn
        .prepare_cached(&format!("SELECT {id} FROM ({}) LIMIT ?2", due_ids(params)?))
        .sql()?
        .query_map(params![cutoff, params.batch_size as i64], |row| row.get(0))
        .sql()?
        .collect::<rusqlite::Result<_>>()
        .sql()?;
    if ids.is_empty() {
        return Ok(0);
    }
    let ids_json = serde_json::to_string(&ids).expect("ids serialize");
    conn.prepare_cached(&format!(
        "INSERT INTO {archive} ({columns}) SELECT {columns} FROM {table} h \
         WHERE h.{id} IN (SELECT value FROM json_each(?1)) \
           AND NOT EXISTS (SELECT 1 FROM {archive} a WHERE a.{id} = h.{id})"
    ))
    .sql()?
    .execute([&ids_json])
    .sql()?;
    let deleted = conn
        .prepare_cached(&format!(
            "DELETE FROM {table} WHERE {id} IN (SELECT value FROM json_each(?1))"
        ))
        .sql()?
        .execute([&ids_json])
        .sql()?;
    Ok(deleted as u64)
}

pub(crate) fn archive_pending(
    conn: &Connection,
    params: &ArchiveParams,
) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM ({})", due_ids(params)?))
        .sql()?
        .query_row([to_text(params.cutoff)], |row| row.get(0))
        .sql()?;
    Ok(n as u64)
}
