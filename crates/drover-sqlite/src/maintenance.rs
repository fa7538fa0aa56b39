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

/// The shape of a time the archiver compares as text: ISO 8601 with a `T`, as Drover writes
/// them. SQLite compares any number as less than any text, and text character by character, so
/// an epoch number or `12/31/2099` would be "older" than every cutoff.
const ISO_TEXT: &str = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T*";

/// The same with a space for the `T`: SQLite's own form (`datetime('now')`, `CURRENT_TIMESTAMP`,
/// in UTC), compared with the cutoff written the same way.
const SQLITE_TEXT: &str = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] *";

/// A time with an offset other than `Z` (`+05:00`, `-05:00` after the time): as text it
/// compares as if it were UTC, hours off.
const OFFSET: [&str; 2] = ["*[+]*", "??????????[T ]*-*"];

/// Whether `column` has no offset but `Z`, as SQL.
fn no_offset(column: &str) -> String {
    format!(
        "{column} NOT GLOB '{}' AND {column} NOT GLOB '{}'",
        OFFSET[0], OFFSET[1]
    )
}

/// Whether `column` holds a UTC time in one of the two shapes, as SQL.
fn utc_text(column: &str) -> String {
    format!(
        "({column} GLOB '{ISO_TEXT}' OR {column} GLOB '{SQLITE_TEXT}') AND {}",
        no_offset(column)
    )
}

/// `column` past the cutoff, only when it holds a UTC time in one of the two shapes: `?1` is
/// the cutoff as [`ISO_TEXT`], `?3` as [`SQLITE_TEXT`]. Each branch has both bounds, so that
/// each can be an index's range; the lower one keeps numbers (which sort before text) out.
fn past_cutoff(column: &str) -> String {
    format!(
        "((({column} >= '0' AND {column} < ?1 AND {column} GLOB '{ISO_TEXT}') \
         OR ({column} >= '0' AND {column} < ?3 AND {column} GLOB '{SQLITE_TEXT}')) AND {})",
        no_offset(column)
    )
}

/// The cutoff as [`SQLITE_TEXT`].
fn sqlite_text(cutoff: Timestamp) -> String {
    cutoff.strftime("%Y-%m-%d %H:%M:%S%.f").to_string()
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
    let mut sql = format!(
        "SELECT {id} FROM {table} WHERE {}{finished}",
        past_cutoff(&age)
    );
    if let Some(fallback) = &params.fallback_column {
        let fallback = quote("fallback_column", fallback)?;
        sql.push_str(&format!(
            " UNION ALL SELECT {id} FROM {table} WHERE {age} IS NULL AND {}{finished}",
            past_cutoff(&fallback)
        ));
    }
    Ok(sql)
}

/// How many rows of a user's table hold, in the age column, something other than a time in
/// the [`ISO_TEXT`] shape: rows the archiver never moves. One scan, made once at start-up.
pub(crate) fn misfit_ages(conn: &Connection, params: &ArchiveParams) -> Result<u64, StoreError> {
    let table = quote("table", &params.table)?;
    let age = quote("age_column", &params.age_column)?;
    let misfit = |column: &str| {
        format!(
            "({column} IS NOT NULL AND NOT (typeof({column}) = 'text' AND {}))",
            utc_text(column)
        )
    };
    let mut when = misfit(&age);
    if let Some(fallback) = &params.fallback_column {
        let fallback = quote("fallback_column", fallback)?;
        when = format!("{when} OR ({age} IS NULL AND {})", misfit(&fallback));
    }
    let n: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM {table} WHERE {when}"),
            [],
            |row| row.get(0),
        )
        .sql()?;
    Ok(n as u64)
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
        .query_map(
            params![cutoff, params.batch_size as i64, sqlite_text(params.cutoff)],
            |row| row.get(0),
        )
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
        .prepare_cached(&format!(
            "SELECT count(*) FROM ({}) LIMIT ?2",
            due_ids(params)?
        ))
        .sql()?
        .query_row(
            params![to_text(params.cutoff), -1, sqlite_text(params.cutoff)],
            |row| row.get(0),
        )
        .sql()?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only times in Drover's own text form or SQLite's are compared with the cutoff (each
    /// with the cutoff in its own form): an epoch number or a US date would sort as older than
    /// any cutoff, and a far-future row would be archived. They stay, and the start-up probe
    /// counts them.
    #[test]
    fn only_iso_text_ages_are_archived() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, done);
             CREATE TABLE t_archive (id INTEGER PRIMARY KEY, done);
             INSERT INTO t (id, done) VALUES
                 (1, '2020-01-01T00:00:00Z'), (2, '2099-01-01T00:00:00Z'),
                 (3, '12/31/2099'), (4, 4102444800), (5, 1.5), (6, NULL),
                 (7, '2020-01-01 00:00:00'), (8, X'00'), (9, '2099-01-01 00:00:00'),
                 (10, '2026-11-30 23:59:59'), (11, '2026-12-01 00:00:00'),
                 (12, '2026-11-30T20:00:00-05:00'), (13, '2026-12-01T04:00:00+05:00');",
        )
        .unwrap();
        let params = ArchiveParams {
            table: "t".into(),
            archive_table: "t_archive".into(),
            columns: vec!["id".into(), "done".into()],
            id_column: "id".into(),
            age_column: "done".into(),
            fallback_column: None,
            cutoff: "2026-12-01T00:00:00Z".parse().unwrap(),
            batch_size: 100,
            finished_jobs_only: false,
        };
        assert_eq!(archive_pending(&conn, &params).unwrap(), 3);
        assert_eq!(archive_batch(&conn, &params).unwrap(), 3);
        let archived: Vec<i64> = conn
            .prepare("SELECT id FROM t_archive")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(archived, vec![1, 7, 10]);
        assert_eq!(
            misfit_ages(&conn, &params).unwrap(),
            6,
            "3, 4, 5, 8, 12 and 13"
        );
    }
}
