//! Versioned schema migrations. Each version runs once; the applied versions are rows of
//! `drover_schema`. The whole migration is one transaction holding an advisory lock, so that
//! processes starting together wait for each other instead of racing on `CREATE TABLE`.

use crate::error::DbError;
use crate::session::Db;

/// Migrations, in order. Never edit one that has shipped: add a new one.
const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE drover_jobs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue               text        NOT NULL,
    kind                text        NOT NULL,
    args                jsonb       NOT NULL,
    state               text        NOT NULL CHECK (state IN ('scheduled', 'available', 'running',
                            'retryable', 'completed', 'discarded', 'cancelled')),
    priority            integer     NOT NULL DEFAULT 0,
    attempt             integer     NOT NULL DEFAULT 0,
    max_attempts        integer     NOT NULL CHECK (max_attempts > 0),
    delivery            text        NOT NULL CHECK (delivery IN ('at-least-once', 'at-most-once')),
    unique_key          text,
    scheduled_at        timestamptz NOT NULL,
    created_at          timestamptz NOT NULL,
    attempted_at        timestamptz,
    completed_at        timestamptz,
    lease_owner         text,
    lease_token         bigint,
    lease_expires_at    timestamptz,
    cancel_requested_at timestamptz,
    step                text,
    errors              jsonb       NOT NULL DEFAULT '[]',
    history             jsonb       NOT NULL DEFAULT '[]'
) WITH (
    -- Every job is updated several times (claimed, finished): leave room on each page so that
    -- updates stay on the page (HOT when no indexed column changes).
    fillfactor = 90,
    -- The hot table churns: vacuum after 1% of it is dead rather than the default 20%, or
    -- claimed rows leave dead entries at the front of the fetch index and every claim wades
    -- through them (que-rb/que#243, riverqueue/river#59).
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);
-- Partial indexes over live jobs only: finished rows (most of the table) never slow a claim,
-- a promotion or a rescue down.
CREATE INDEX drover_jobs_fetch ON drover_jobs (queue, priority DESC, id)
    WHERE state = 'available';
CREATE INDEX drover_jobs_due ON drover_jobs (queue, scheduled_at)
    WHERE state IN ('scheduled', 'retryable');
CREATE INDEX drover_jobs_lease ON drover_jobs (lease_expires_at)
    WHERE state = 'running';
CREATE UNIQUE INDEX drover_jobs_unique ON drover_jobs (unique_key)
    WHERE unique_key IS NOT NULL
      AND state IN ('scheduled', 'available', 'running', 'retryable');
"#,
    ),
    (
        2,
        r#"
-- One row per leadership; the holder renews expires_at, and term grows with every change of
-- hands so that leader-only writes can check they come from the current term.
CREATE TABLE drover_leader (
    name       text        PRIMARY KEY,
    leader_id  text        NOT NULL,
    term       bigint      NOT NULL,
    elected_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE drover_processes (
    id           text        PRIMARY KEY,
    host         text        NOT NULL,
    pid          bigint      NOT NULL,
    queues       text[]      NOT NULL,
    version      text        NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE drover_cron_schedules (
    name          text        PRIMARY KEY,
    registered_at timestamptz NOT NULL
);
-- One row per (schedule, fire time), written in the same transaction as the job it enqueued.
-- Never emptied by the job archiver, so that an archived job cannot make a fire time new again.
CREATE TABLE drover_cron_fires (
    schedule text        NOT NULL,
    fire_at  timestamptz NOT NULL,
    job_id   bigint,
    fired_at timestamptz NOT NULL,
    PRIMARY KEY (schedule, fire_at)
);
-- Finished jobs move here, out of the hot table: the same columns, in the same order.
CREATE TABLE drover_jobs_archive (
    id                  bigint      PRIMARY KEY,
    queue               text        NOT NULL,
    kind                text        NOT NULL,
    args                jsonb       NOT NULL,
    state               text        NOT NULL,
    priority            integer     NOT NULL,
    attempt             integer     NOT NULL,
    max_attempts        integer     NOT NULL,
    delivery            text        NOT NULL,
    unique_key          text,
    scheduled_at        timestamptz NOT NULL,
    created_at          timestamptz NOT NULL,
    attempted_at        timestamptz,
    completed_at        timestamptz,
    lease_owner         text,
    lease_token         bigint,
    lease_expires_at    timestamptz,
    cancel_requested_at timestamptz,
    step                text,
    errors              jsonb       NOT NULL,
    history             jsonb       NOT NULL
);
CREATE INDEX drover_jobs_finished ON drover_jobs (completed_at)
    WHERE state IN ('completed', 'discarded', 'cancelled');
"#,
    ),
    (
        4,
        r#"
-- A queue's row holds its pause (for every process) and its cached counts' metadata.
CREATE TABLE drover_queues (
    name                text PRIMARY KEY,
    paused_at           timestamptz,
    oldest_available_at timestamptz,
    counted_at          timestamptz
);
-- Counts per queue and state, written by one process (the leader) every few seconds so that
-- nobody counts the jobs table per request.
CREATE TABLE drover_queue_counts (
    queue     text    NOT NULL,
    state     text    NOT NULL,
    count     bigint  NOT NULL,
    estimated boolean NOT NULL,
    PRIMARY KEY (queue, state)
);
-- Lists of failed and cancelled jobs, newest first, however many completed ones there are.
-- Partial, one per state, so that no hot statement (claim, promotion, rescue, archiver) is ever
-- tempted away from its own partial index.
CREATE INDEX drover_jobs_discarded ON drover_jobs (id) WHERE state = 'discarded';
CREATE INDEX drover_jobs_cancelled ON drover_jobs (id) WHERE state = 'cancelled';
"#,
    ),
    (
        5,
        r#"
-- The autoscaler's capacity: one row per slot, reused across its lives (generation grows).
CREATE TABLE drover_slots (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    system           text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('empty', 'launching', 'booting',
                         'binding', 'ready', 'draining', 'error')),
    instance_id      text,
    generation       bigint      NOT NULL,
    leases           integer     NOT NULL DEFAULT 0 CHECK (leases >= 0),
    failures         integer     NOT NULL DEFAULT 0,
    reason           text        NOT NULL,
    created_at       timestamptz NOT NULL,
    launched_at      timestamptz,
    state_changed_at timestamptz NOT NULL,
    last_used_at     timestamptz NOT NULL,
    notice_at        timestamptz
);
CREATE INDEX drover_slots_system ON drover_slots (system, state);
CREATE TABLE drover_reservations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    system      text        NOT NULL,
    phase       text        NOT NULL CHECK (phase IN ('pending', 'assigned', 'released',
                    'expired')),
    holder      text        NOT NULL,
    slot_id     bigint,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    assigned_at timestamptz,
    finished_at timestamptz
);
-- Only open reservations are read by the tick; finished ones never slow it down.
CREATE INDEX drover_reservations_open ON drover_reservations (system, id)
    WHERE phase IN ('pending', 'assigned');
CREATE INDEX drover_reservations_expiry ON drover_reservations (expires_at)
    WHERE phase IN ('pending', 'assigned');
CREATE INDEX drover_reservations_slot ON drover_reservations (slot_id)
    WHERE phase = 'assigned';
"#,
    ),
    (
        6,
        r#"
-- One row per run of a retention policy, failed runs included; each policy keeps its newest.
CREATE TABLE drover_retention_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy      text        NOT NULL,
    trigger     text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    rows_moved  bigint      NOT NULL,
    error       text
);
CREATE INDEX drover_retention_runs_policy ON drover_retention_runs (policy, started_at);
-- Jobs completed and failed per minute: each process adds to its own rows (the process is part
-- of the key), so no two processes write the same row. The leader prunes rows older than a day.
CREATE TABLE drover_throughput (
    minute    timestamptz NOT NULL,
    process   text        NOT NULL,
    queue     text        NOT NULL,
    completed bigint      NOT NULL DEFAULT 0,
    failed    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, process, queue)
);
-- The configured concurrency per queue of each process.
ALTER TABLE drover_processes ADD COLUMN concurrency jsonb NOT NULL DEFAULT '{}';
"#,
    ),
    (
        7,
        r#"
-- Half-full pages for new jobs: a job is written three times (enqueued, claimed, finished),
-- and an update that finds no room on its row's page puts the new version on another page,
-- which costs a second page written, and a lock of the old version WAL-logged before it
-- (heap_update releases the page while it finds another). At fillfactor 90 most claims did
-- that: 2.7 row locks logged per job instead of one, 930 bytes of WAL per claim and
-- completion against 750 at 50, and a 200,000-job drain 8 % slower. A table of claimed and
-- completed jobs took as much room either way (2.0 MB for 5,000 rows): at 90 the updates had
-- moved most rows to fresh pages.
ALTER TABLE drover_jobs SET (fillfactor = 50);
"#,
    ),
    (
        8,
        r#"
-- The HTTP workers that lease through each server, written with its heartbeat: a worker has
-- no row of its own, and without this each server knew only its own.
ALTER TABLE drover_processes ADD COLUMN http_workers jsonb NOT NULL DEFAULT '[]';
"#,
    ),
    (
        9,
        r#"
-- Running jobs with a cancel request: almost always none. Each process reads it for its own
-- runs whenever anything wakes it (every enqueue, under load) so that a cancel takes effect at
-- once; by primary key that read cost one probe per job the process holds, claimed buffers
-- included (up to a thousand), ten times a second: 7 % of the server's time under a steady
-- 15,000 jobs/s.
CREATE INDEX drover_jobs_cancel_requested ON drover_jobs (id)
    WHERE state = 'running' AND cancel_requested_at IS NOT NULL;
"#,
    ),
    (
        10,
        r#"
-- When a process began its graceful shutdown: it claims nothing more and finishes its runs.
ALTER TABLE drover_processes ADD COLUMN draining_since timestamptz;
"#,
    ),
    (
        11,
        r#"
-- The cron schedules each process fires while it leads, so that a view of a schedule can say
-- when the leader's config lacks it; NULL for a process of an older version.
ALTER TABLE drover_processes ADD COLUMN cron jsonb;
"#,
    ),
];

/// The newest schema version this build knows.
pub(crate) const LATEST: u32 = 11;

/// Applies what is missing, inside the caller's transaction; returns the version found and the
/// versions applied.
pub(crate) async fn migrate(db: &Db<'_>, schema: Option<&str>) -> Result<(u32, Vec<u32>), DbError> {
    // Serializes migrations of this schema across processes until the transaction ends.
    db.execute(
        "SELECT pg_advisory_xact_lock($1::bigint)",
        &[&lock_key(schema.unwrap_or(""))],
    )
    .await?;
    if let Some(schema) = schema {
        let exists: bool = db
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&schema],
            )
            .await?
            .get(0);
        if !exists {
            // A checked plain identifier (config::check_schema). The session's search_path
            // already names it, and takes effect as soon as it exists.
            db.batch_execute(&format!("CREATE SCHEMA {schema}")).await?;
        }
    }
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS drover_schema (
             version    integer     PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 = db
        .query_one("SELECT coalesce(max(version), 0) FROM drover_schema", &[])
        .await?
        .get(0);
    let mut applied = Vec::new();
    for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v as i32 > current) {
        db.batch_execute(sql).await?;
        db.execute(
            "INSERT INTO drover_schema (version) VALUES ($1)",
            &[&(version as i32)],
        )
        .await?;
        applied.push(version);
    }
    Ok((current.max(0) as u32, applied))
}

/// The schema version of the database (0 when never migrated).
pub(crate) async fn version(db: &Db<'_>) -> Result<u32, DbError> {
    let row = db
        .query_one("SELECT to_regclass('drover_schema') IS NOT NULL", &[])
        .await?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let version: i32 = db
        .query_one("SELECT coalesce(max(version), 0) FROM drover_schema", &[])
        .await?
        .get(0);
    Ok(version as u32)
}

/// The advisory lock key of a schema's migrations: a fixed tag in the high bits, so that it
/// does not collide with the application's own advisory locks by accident, and a stable hash
/// (FNV-1a) of the schema name in the low bits, so that different schemas migrate in parallel.
fn lock_key(schema: &str) -> i64 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in schema.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (0x6472_6f76_i64 << 32) | i64::from(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, (version, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, i + 1);
        }
        assert_eq!(MIGRATIONS.last().unwrap().0, LATEST);
    }

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("a"), lock_key("a"));
        assert_ne!(lock_key("a"), lock_key("b"));
        assert_eq!(lock_key("") >> 32, 0x6472_6f76);
    }
}
