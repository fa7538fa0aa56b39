//! Versioned schema migrations, applied in order inside the writer's transaction. Each version
//! runs once; the applied versions are rows of `drover_schema`.

use rusqlite::Connection;

/// Migrations, in order. Never edit one that has shipped: add a new one.
///
/// State sets are written as `OR` chains, not `IN (...)` lists: SQLite evaluates a constant
/// `IN` list in a CHECK or a partial-index condition through an ephemeral table on every row
/// written, which once cost a fifth of the insert path. Queries that must use a partial index
/// repeat its condition word for word (see `jobs.rs`).
const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE drover_jobs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    queue               TEXT    NOT NULL,
    kind                TEXT    NOT NULL,
    args                TEXT    NOT NULL,
    state               TEXT    NOT NULL CHECK (state = 'scheduled' OR state = 'available'
                            OR state = 'running' OR state = 'retryable' OR state = 'completed'
                            OR state = 'discarded' OR state = 'cancelled'),
    priority            INTEGER NOT NULL DEFAULT 0,
    attempt             INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL CHECK (max_attempts > 0),
    delivery            TEXT    NOT NULL CHECK (delivery = 'at-least-once'
                            OR delivery = 'at-most-once'),
    unique_key          TEXT,
    scheduled_at        TEXT    NOT NULL,
    created_at          TEXT    NOT NULL,
    attempted_at        TEXT,
    completed_at        TEXT,
    lease_owner         TEXT,
    lease_token         INTEGER,
    lease_expires_at    TEXT,
    cancel_requested_at TEXT,
    step                TEXT,
    errors              TEXT    NOT NULL DEFAULT '[]',
    history             TEXT    NOT NULL DEFAULT '[]'
);
-- The claim reads only this partial index, so finished rows never slow it down.
CREATE INDEX drover_jobs_fetch ON drover_jobs (queue, priority DESC, id)
    WHERE state = 'available';
CREATE INDEX drover_jobs_due ON drover_jobs (queue, scheduled_at)
    WHERE (state = 'scheduled' OR state = 'retryable');
CREATE INDEX drover_jobs_lease ON drover_jobs (lease_expires_at)
    WHERE state = 'running';
CREATE UNIQUE INDEX drover_jobs_unique ON drover_jobs (unique_key)
    WHERE unique_key IS NOT NULL
      AND (state = 'scheduled' OR state = 'available' OR state = 'running'
           OR state = 'retryable');
"#,
    ),
    (
        2,
        r#"
-- One row per leadership; the holder renews expires_at, and term grows with every change of
-- hands so that leader-only writes can check they come from the current term.
CREATE TABLE drover_leader (
    name       TEXT    PRIMARY KEY,
    leader_id  TEXT    NOT NULL,
    term       INTEGER NOT NULL,
    elected_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL
);
CREATE TABLE drover_processes (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    queues       TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    started_at   TEXT    NOT NULL,
    heartbeat_at TEXT    NOT NULL
);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE drover_cron_schedules (
    name          TEXT PRIMARY KEY,
    registered_at TEXT NOT NULL
);
-- One row per (schedule, fire time), written in the same transaction as the job it enqueued.
-- Never emptied by the job archiver, so that an archived job cannot make a fire time new again.
CREATE TABLE drover_cron_fires (
    schedule TEXT    NOT NULL,
    fire_at  TEXT    NOT NULL,
    job_id   INTEGER,
    fired_at TEXT    NOT NULL,
    PRIMARY KEY (schedule, fire_at)
);
-- Finished jobs move here, out of the hot table.
CREATE TABLE drover_jobs_archive (
    id                  INTEGER PRIMARY KEY,
    queue               TEXT    NOT NULL,
    kind                TEXT    NOT NULL,
    args                TEXT    NOT NULL,
    state               TEXT    NOT NULL,
    priority            INTEGER NOT NULL,
    attempt             INTEGER NOT NULL,
    max_attempts        INTEGER NOT NULL,
    delivery            TEXT    NOT NULL,
    unique_key          TEXT,
    scheduled_at        TEXT    NOT NULL,
    created_at          TEXT    NOT NULL,
    attempted_at        TEXT,
    completed_at        TEXT,
    lease_owner         TEXT,
    lease_token         INTEGER,
    lease_expires_at    TEXT,
    cancel_requested_at TEXT,
    step                TEXT,
    errors              TEXT    NOT NULL,
    history             TEXT    NOT NULL
);
CREATE INDEX drover_jobs_finished ON drover_jobs (completed_at)
    WHERE (state = 'completed' OR state = 'discarded' OR state = 'cancelled');
"#,
    ),
    (
        4,
        r#"
-- A queue's row holds its pause (for every process) and its cached counts' metadata.
CREATE TABLE drover_queues (
    name                TEXT PRIMARY KEY,
    paused_at           TEXT,
    oldest_available_at TEXT,
    counted_at          TEXT
);
-- Counts per queue and state, written by one process (the leader) every few seconds so that
-- nobody counts the jobs table per request.
CREATE TABLE drover_queue_counts (
    queue     TEXT    NOT NULL,
    state     TEXT    NOT NULL,
    count     INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
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
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    system           TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state = 'empty' OR state = 'launching'
                         OR state = 'booting' OR state = 'binding' OR state = 'ready'
                         OR state = 'draining' OR state = 'error'),
    instance_id      TEXT,
    generation       INTEGER NOT NULL,
    leases           INTEGER NOT NULL DEFAULT 0 CHECK (leases >= 0),
    failures         INTEGER NOT NULL DEFAULT 0,
    reason           TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    launched_at      TEXT,
    state_changed_at TEXT    NOT NULL,
    last_used_at     TEXT    NOT NULL,
    notice_at        TEXT
);
CREATE INDEX drover_slots_system ON drover_slots (system, state);
CREATE TABLE drover_reservations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    system      TEXT    NOT NULL,
    phase       TEXT    NOT NULL CHECK (phase = 'pending' OR phase = 'assigned'
                    OR phase = 'released' OR phase = 'expired'),
    holder      TEXT    NOT NULL,
    slot_id     INTEGER,
    created_at  TEXT    NOT NULL,
    expires_at  TEXT    NOT NULL,
    assigned_at TEXT,
    finished_at TEXT
);
-- Only open reservations are read by the tick; finished ones never slow it down.
CREATE INDEX drover_reservations_open ON drover_reservations (system, id)
    WHERE (phase = 'pending' OR phase = 'assigned');
CREATE INDEX drover_reservations_expiry ON drover_reservations (expires_at)
    WHERE (phase = 'pending' OR phase = 'assigned');
CREATE INDEX drover_reservations_slot ON drover_reservations (slot_id)
    WHERE phase = 'assigned';
"#,
    ),
    (
        6,
        r#"
-- One row per run of a retention policy, failed runs included; each policy keeps its newest.
CREATE TABLE drover_retention_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    policy      TEXT    NOT NULL,
    trigger     TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    finished_at TEXT    NOT NULL,
    rows_moved  INTEGER NOT NULL,
    error       TEXT
);
CREATE INDEX drover_retention_runs_policy ON drover_retention_runs (policy, started_at);
-- Jobs completed and failed per minute: each process adds to its own rows (the process is part
-- of the key), so no two processes write the same row. The leader prunes rows older than a day.
CREATE TABLE drover_throughput (
    minute    TEXT    NOT NULL,
    process   TEXT    NOT NULL,
    queue     TEXT    NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, process, queue)
);
-- The configured concurrency per queue of each process (a JSON object).
ALTER TABLE drover_processes ADD COLUMN concurrency TEXT NOT NULL DEFAULT '{}';
"#,
    ),
    (
        7,
        r#"
-- The HTTP workers that lease through each server (a JSON array), written with its heartbeat:
-- a worker has no row of its own, and without this each server knew only its own.
ALTER TABLE drover_processes ADD COLUMN http_workers TEXT NOT NULL DEFAULT '[]';
"#,
    ),
    (
        8,
        r#"
-- Running jobs with a cancel request: almost always none. Each process reads it for its own
-- runs whenever anything wakes it (every enqueue, under load) so that a cancel takes effect at
-- once; one lookup per job it holds (claimed buffers included, up to a thousand) cost more.
CREATE INDEX drover_jobs_cancel_requested ON drover_jobs (id)
    WHERE state = 'running' AND cancel_requested_at IS NOT NULL;
"#,
    ),
    (
        9,
        r#"
-- When a process began its graceful shutdown: it claims nothing more and finishes its runs.
ALTER TABLE drover_processes ADD COLUMN draining_since TEXT;
"#,
    ),
    (
        10,
        r#"
-- The cron schedules each process fires while it leads (a JSON array), so that a view of a
-- schedule can say when the leader's config lacks it; NULL for a process of an older version.
ALTER TABLE drover_processes ADD COLUMN cron TEXT;
"#,
    ),
];

/// The newest schema version this build knows.
pub(crate) const LATEST: u32 = 10;

/// Applies what is missing; returns the versions applied.
pub(crate) fn migrate(conn: &Connection, now: &str) -> rusqlite::Result<Vec<u32>> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS drover_schema (
             version    INTEGER PRIMARY KEY,
             applied_at TEXT NOT NULL
         )",
    )?;
    let current: u32 = conn.query_row(
        "SELECT coalesce(max(version), 0) FROM drover_schema",
        [],
        |row| row.get(0),
    )?;
    let mut applied = Vec::new();
    for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        conn.execute_batch(sql)?;
        conn.execute(
            "INSERT INTO drover_schema (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![version, now],
        )?;
        applied.push(version);
    }
    Ok(applied)
}

/// The schema version of the database (0 when never migrated).
pub(crate) fn version(conn: &Connection) -> rusqlite::Result<u32> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'drover_schema'",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM drover_schema",
        [],
        |row| row.get(0),
    )
}
