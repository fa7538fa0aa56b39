//! The SQL of leader election and the process registry. Terms and their expiry follow the
//! database clock unless the caller pins `now`: process clocks disagree, the database is one.

use std::collections::BTreeMap;

use drover_core::{
    CronSignature, HttpWorkerRecord, LeaderElectParams, LeaderRecord, LeaderReelectParams,
    LeaderResignParams, LeaderTerm, ProcessRecord, ProcessUpsertParams,
};
use jiff::Timestamp;
use tokio_postgres::types::Json;

use crate::error::DbError;
use crate::session::Db;
use crate::time::{clock, micros};

pub(crate) async fn elect(
    db: &Db<'_>,
    params: &LeaderElectParams,
) -> Result<Option<LeaderTerm>, DbError> {
    // Takes the row when it is missing or its term has expired; never while another process
    // holds an unexpired term. A concurrent candidate waits for the row lock, then finds the
    // term unexpired and gets nothing.
    let row = db
        .query_opt(
            concat!(
                "INSERT INTO drover_leader (name, leader_id, term, elected_at, expires_at) \
                 SELECT $1, $2, 1, c.now, c.now + $3::bigint * interval '1 microsecond' FROM ",
                clock!("$4"),
                " ON CONFLICT (name) DO UPDATE SET leader_id = excluded.leader_id, \
                     term = drover_leader.term + 1, elected_at = excluded.elected_at, \
                     expires_at = excluded.expires_at \
                 WHERE drover_leader.expires_at <= excluded.elected_at \
                 RETURNING term, elected_at, expires_at"
            ),
            &[
                &params.name,
                &params.leader_id,
                &micros(params.ttl),
                &params.now,
            ],
        )
        .await?;
    Ok(row.map(|row| LeaderTerm {
        term: row.get(0),
        elected_at: row.get(1),
        expires_at: row.get(2),
    }))
}

pub(crate) async fn reelect(
    db: &Db<'_>,
    params: &LeaderReelectParams,
) -> Result<Option<LeaderTerm>, DbError> {
    let row = db
        .query_opt(
            concat!(
                "UPDATE drover_leader SET \
                     expires_at = c.now + $4::bigint * interval '1 microsecond' FROM ",
                clock!("$5"),
                " WHERE name = $1 AND leader_id = $2 AND term = $3 AND expires_at > c.now \
                 RETURNING elected_at, expires_at"
            ),
            &[
                &params.name,
                &params.leader_id,
                &params.term,
                &micros(params.ttl),
                &params.now,
            ],
        )
        .await?;
    Ok(row.map(|row| LeaderTerm {
        term: params.term,
        elected_at: row.get(0),
        expires_at: row.get(1),
    }))
}

pub(crate) async fn resign(db: &Db<'_>, params: &LeaderResignParams) -> Result<bool, DbError> {
    // The row stays (with an expiry long past, whatever clock the candidates use) so that the
    // next term number keeps growing.
    let changed = db
        .execute(
            "UPDATE drover_leader SET expires_at = '0001-01-01 00:00:00+00' \
             WHERE name = $1 AND leader_id = $2 AND term = $3",
            &[&params.name, &params.leader_id, &params.term],
        )
        .await?;
    Ok(changed == 1)
}

pub(crate) async fn leader(
    db: &Db<'_>,
    name: &str,
    now: Option<Timestamp>,
) -> Result<Option<LeaderRecord>, DbError> {
    let row = db
        .query_opt(
            "SELECT name, leader_id, term, elected_at, expires_at FROM drover_leader \
             WHERE name = $1 AND expires_at > coalesce($2::timestamptz, now())",
            &[&name, &now],
        )
        .await?;
    Ok(row.map(|row| LeaderRecord {
        name: row.get(0),
        leader_id: row.get(1),
        term: row.get(2),
        elected_at: row.get(3),
        expires_at: row.get(4),
    }))
}

pub(crate) async fn process_upsert(
    db: &Db<'_>,
    params: &ProcessUpsertParams,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO drover_processes \
             (id, host, pid, queues, version, started_at, heartbeat_at, concurrency, \
              http_workers, draining_since, cron) \
         VALUES ($1, $2, $3, $4::text[], $5, coalesce($6::timestamptz, now()), \
                 coalesce($6::timestamptz, now()), $7::jsonb, $8::jsonb, \
                 CASE WHEN $9 THEN coalesce($6::timestamptz, now()) END, $10::jsonb) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, \
             queues = excluded.queues, concurrency = excluded.concurrency, \
             http_workers = excluded.http_workers, cron = excluded.cron, \
             draining_since = CASE WHEN $9 THEN coalesce(drover_processes.draining_since, \
                                                         excluded.draining_since) END",
        &[
            &params.id,
            &params.host,
            &i64::from(params.pid),
            &params.queues,
            &params.version,
            &params.now,
            &Json(&params.concurrency),
            &Json(&params.http_workers),
            &params.draining,
            &Json(&params.cron),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn process_delete(db: &Db<'_>, id: &str) -> Result<(), DbError> {
    db.execute("DELETE FROM drover_processes WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

pub(crate) async fn process_list(db: &Db<'_>) -> Result<Vec<ProcessRecord>, DbError> {
    let rows = db
        .query(
            "SELECT id, host, pid, queues, version, started_at, heartbeat_at, concurrency, \
                    http_workers, draining_since, cron \
             FROM drover_processes ORDER BY started_at, id COLLATE \"C\"",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ProcessRecord {
            id: row.get(0),
            host: row.get(1),
            pid: u32::try_from(row.get::<_, i64>(2)).unwrap_or(0),
            queues: row.get(3),
            version: row.get(4),
            started_at: row.get(5),
            heartbeat_at: row.get(6),
            concurrency: row.get::<_, Json<BTreeMap<String, u32>>>(7).0,
            // Written by this code only; a shape another version wrote lists no worker
            // rather than failing the whole list.
            http_workers: row
                .try_get::<_, Json<Vec<HttpWorkerRecord>>>(8)
                .map(|workers| workers.0)
                .unwrap_or_default(),
            draining_since: row.get(9),
            cron: row
                .try_get::<_, Option<Json<Vec<CronSignature>>>>(10)
                .ok()
                .flatten()
                .map(|cron| cron.0),
        })
        .collect())
}

pub(crate) async fn process_prune(
    db: &Db<'_>,
    stale_after: std::time::Duration,
    now: Option<Timestamp>,
) -> Result<u64, DbError> {
    Ok(db
        .execute(
            "DELETE FROM drover_processes WHERE heartbeat_at < \
                 coalesce($1::timestamptz, now()) - $2::bigint * interval '1 microsecond'",
            &[&now, &micros(stale_after)],
        )
        .await?)
}
