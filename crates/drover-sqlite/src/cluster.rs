//! The SQL of leader election and the process registry.

use drover_core::{
    LeaderElectParams, LeaderRecord, LeaderReelectParams, LeaderResignParams, LeaderTerm,
    ProcessRecord, ProcessUpsertParams,
};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use crate::time::{from_text, plus, to_text};

pub(crate) fn elect(
    conn: &Connection,
    params: &LeaderElectParams,
    now: Timestamp,
) -> rusqlite::Result<Option<LeaderTerm>> {
    let expires = plus(now, params.ttl);
    // Takes the row when it is missing or its term has expired; never while another process
    // holds an unexpired term.
    let term: Option<i64> = conn
        .prepare_cached(
            "INSERT INTO drover_leader (name, leader_id, term, elected_at, expires_at) \
             VALUES (?1, ?2, 1, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET leader_id = excluded.leader_id, \
                 term = drover_leader.term + 1, elected_at = excluded.elected_at, \
                 expires_at = excluded.expires_at \
             WHERE drover_leader.expires_at <= excluded.elected_at \
             RETURNING term",
        )?
        .query_row(
            params![
                params.name,
                params.leader_id,
                to_text(now),
                to_text(expires)
            ],
            |row| row.get(0),
        )
        .optional()?;
    Ok(term.map(|term| LeaderTerm {
        term,
        elected_at: now,
        expires_at: expires,
    }))
}

pub(crate) fn reelect(
    conn: &Connection,
    params: &LeaderReelectParams,
    now: Timestamp,
) -> rusqlite::Result<Option<LeaderTerm>> {
    let expires = plus(now, params.ttl);
    conn.prepare_cached(
        "UPDATE drover_leader SET expires_at = ?4 \
         WHERE name = ?1 AND leader_id = ?2 AND term = ?3 AND expires_at > ?5 \
         RETURNING elected_at",
    )?
    .query_row(
        params![
            params.name,
            params.leader_id,
            params.term,
            to_text(expires),
            to_text(now)
        ],
        |row| row.get::<_, String>(0),
    )
    .optional()?
    .map(|elected_at| {
        Ok(LeaderTerm {
            term: params.term,
            elected_at: from_text(&elected_at)?,
            expires_at: expires,
        })
    })
    .transpose()
}

pub(crate) fn resign(conn: &Connection, params: &LeaderResignParams) -> rusqlite::Result<bool> {
    // The row stays (with an expiry in the past) so that the next term number keeps growing.
    let changed = conn
        .prepare_cached(
            "UPDATE drover_leader SET expires_at = '0000-01-01T00:00:00.000000Z' \
             WHERE name = ?1 AND leader_id = ?2 AND term = ?3",
        )?
        .execute(params![params.name, params.leader_id, params.term])?;
    Ok(changed == 1)
}

pub(crate) fn leader(
    conn: &Connection,
    name: &str,
    now: Timestamp,
) -> rusqlite::Result<Option<LeaderRecord>> {
    conn.prepare_cached(
        "SELECT name, leader_id, term, elected_at, expires_at FROM drover_leader \
         WHERE name = ?1 AND expires_at > ?2",
    )?
    .query_row(params![name, to_text(now)], |row| {
        Ok(LeaderRecord {
            name: row.get(0)?,
            leader_id: row.get(1)?,
            term: row.get(2)?,
            elected_at: from_text(&row.get::<_, String>(3)?)?,
            expires_at: from_text(&row.get::<_, String>(4)?)?,
        })
    })
    .optional()
}

pub(crate) fn process_upsert(
    conn: &Connection,
    params: &ProcessUpsertParams,
    now: Timestamp,
) -> rusqlite::Result<()> {
    let queues = serde_json::to_string(&params.queues).expect("strings serialize");
    let concurrency = serde_json::to_string(&params.concurrency).expect("a map serializes");
    let http_workers = serde_json::to_string(&params.http_workers).expect("records serialize");
    let cron = serde_json::to_string(&params.cron).expect("records serialize");
    conn.prepare_cached(
        "INSERT INTO drover_processes \
             (id, host, pid, queues, version, started_at, heartbeat_at, concurrency, \
              http_workers, draining_since, cron) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, CASE WHEN ?9 THEN ?6 END, ?10) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, \
             queues = excluded.queues, concurrency = excluded.concurrency, \
             http_workers = excluded.http_workers, cron = excluded.cron, \
             draining_since = CASE WHEN ?9 THEN coalesce(drover_processes.draining_since, \
                                                         excluded.draining_since) END",
    )?
    .execute(params![
        params.id,
        params.host,
        params.pid,
        queues,
        params.version,
        to_text(now),
        concurrency,
        http_workers,
        params.draining,
        cron
    ])?;
    Ok(())
}

pub(crate) fn process_delete(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM drover_processes WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

pub(crate) fn process_list(conn: &Connection) -> rusqlite::Result<Vec<ProcessRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, host, pid, queues, version, started_at, heartbeat_at, concurrency, \
                http_workers, draining_since, cron \
         FROM drover_processes ORDER BY started_at, id",
    )?;
    let rows = stmt.query_map([], |row| {
        let queues: String = row.get(3)?;
        Ok(ProcessRecord {
            id: row.get(0)?,
            host: row.get(1)?,
            pid: row.get(2)?,
            queues: serde_json::from_str(&queues).unwrap_or_default(),
            version: row.get(4)?,
            started_at: from_text(&row.get::<_, String>(5)?)?,
            heartbeat_at: from_text(&row.get::<_, String>(6)?)?,
            concurrency: serde_json::from_str(&row.get::<_, String>(7)?).unwrap_or_default(),
            http_workers: serde_json::from_str(&row.get::<_, String>(8)?).unwrap_or_default(),
            draining_since: row
                .get::<_, Option<String>>(9)?
                .map(|at| from_text(&at))
                .transpose()?,
            // Written by this code only; another shape reads as not recorded.
            cron: row
                .get::<_, Option<String>>(10)?
                .and_then(|cron| serde_json::from_str(&cron).ok()),
        })
    })?;
    rows.collect()
}

pub(crate) fn process_prune(
    conn: &Connection,
    stale_after: std::time::Duration,
    now: Timestamp,
) -> rusqlite::Result<u64> {
    let cutoff = jiff::SignedDuration::try_from(stale_after)
        .ok()
        .and_then(|d| now.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN);
    let n = conn
        .prepare_cached("DELETE FROM drover_processes WHERE heartbeat_at < ?1")?
        .execute([to_text(cutoff)])?;
    Ok(n as u64)
}
