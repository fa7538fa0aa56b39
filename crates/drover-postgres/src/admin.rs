//! The SQL of operator actions and views: actions on many jobs, queue pause, and the cached
//! counts.

use std::collections::BTreeMap;

use drover_core::{
    ActResult, COUNT_REST, COUNT_SLICE, CancelResult, CompletedTally, JobAction, JobId, JobState,
    QueueRecord, StoreError, act_refusal, indexed_count_states,
};
use jiff::Timestamp;

use crate::error::DbError;
use crate::jobs::{self, parse_state};
use crate::session::Db;
use crate::time::clock;

/// What [`act_many`] did, with the queues whose workers should hear of it.
pub(crate) struct Acted {
    pub(crate) results: Vec<ActResult>,
    pub(crate) queues: Vec<String>,
}

/// Applies `action` to each job inside the store's transaction.
pub(crate) async fn act_many(
    db: &Db<'_>,
    ids: &[JobId],
    action: JobAction,
    now: Option<Timestamp>,
) -> Result<Acted, DbError> {
    let mut results = Vec::with_capacity(ids.len());
    let mut queues = std::collections::BTreeSet::new();
    for &id in ids {
        let Some(row) = db
            .query_opt(
                "SELECT state, queue FROM drover_jobs WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
        else {
            results.push(ActResult::NotFound);
            continue;
        };
        let state = parse_state(row.get(0))?;
        let queue: String = row.get(1);
        if let Some(reason) = act_refusal(action, state) {
            results.push(ActResult::Unchanged {
                state,
                reason: reason.into(),
            });
            continue;
        }
        let result = match action {
            JobAction::Retry => match jobs::retry(db, id, now).await {
                Ok(_) => ActResult::Changed {
                    state: JobState::Available,
                },
                // Refused by the check before the update: nothing was written.
                Err(DbError::Store(StoreError::Conflict { reason, .. })) => {
                    ActResult::Unchanged { state, reason }
                }
                Err(err) => return Err(err),
            },
            JobAction::Cancel => match jobs::cancel(db, id, now).await?.result {
                CancelResult::Cancelled => ActResult::Changed {
                    state: JobState::Cancelled,
                },
                CancelResult::Requested => ActResult::CancelRequested,
                CancelResult::AlreadyFinished(state) => ActResult::Unchanged {
                    state,
                    reason: "the job has already finished".into(),
                },
            },
            JobAction::Discard => {
                db.execute(
                    concat!(
                        "UPDATE drover_jobs SET state = 'discarded', completed_at = c.now, \
                             history = history || jsonb_build_array(jsonb_build_object( \
                                 'at', c.now_text, 'event', 'discarded', \
                                 'detail', 'discarded by an operator before it ran')) \
                         FROM ",
                        clock!("$2"),
                        " WHERE id = $1 AND state IN ('scheduled', 'available', 'retryable')"
                    ),
                    &[&id, &now],
                )
                .await?;
                ActResult::Changed {
                    state: JobState::Discarded,
                }
            }
        };
        if result.changed() {
            queues.insert(queue);
        }
        results.push(result);
    }
    Ok(Acted {
        results,
        queues: queues.into_iter().collect(),
    })
}

/// Pauses or resumes `queue`.
pub(crate) async fn pause(
    db: &Db<'_>,
    queue: &str,
    paused: bool,
    now: Option<Timestamp>,
) -> Result<(), DbError> {
    // A resume only clears a pause: resuming a name never seen must not make it a queue that
    // lists forever after.
    if paused {
        db.execute(
            "INSERT INTO drover_queues (name, paused_at) \
             VALUES ($1, coalesce($2::timestamptz, now())) \
             ON CONFLICT (name) DO UPDATE SET paused_at = excluded.paused_at",
            &[&queue, &now],
        )
        .await?;
    } else {
        db.execute(
            "UPDATE drover_queues SET paused_at = NULL WHERE name = $1",
            &[&queue],
        )
        .await?;
    }
    Ok(())
}

/// Every known queue with its cached counts, by name (byte order, as SQLite sorts).
pub(crate) async fn queue_list(db: &Db<'_>) -> Result<Vec<QueueRecord>, DbError> {
    let mut queues: BTreeMap<String, QueueRecord> = BTreeMap::new();
    for row in db
        .query(
            "SELECT name, paused_at, oldest_available_at, counted_at FROM drover_queues",
            &[],
        )
        .await?
    {
        let name: String = row.get(0);
        queues.insert(
            name.clone(),
            QueueRecord {
                name,
                paused_at: row.get(1),
                counts: BTreeMap::new(),
                estimated: false,
                oldest_available_at: row.get(2),
                counted_at: row.get(3),
            },
        );
    }
    for row in db
        .query(
            "SELECT queue, state, count, estimated FROM drover_queue_counts",
            &[],
        )
        .await?
    {
        if let Some(queue) = queues.get_mut(row.get::<_, &str>(0)) {
            queue
                .counts
                .insert(parse_state(row.get(1))?, row.get::<_, i64>(2) as u64);
            queue.estimated |= row.get::<_, bool>(3);
        }
    }
    Ok(queues.into_values().collect())
}

/// A count: the jobs per queue and state, each marked estimated when its state passed the cap.
pub(crate) type Counts = Vec<(String, JobState, u64, bool)>;

/// Counts at most `cap` jobs per state, so the cost is bounded by the cap, not by the table.
/// Every state but `completed` is counted through its partial index, the completed jobs in
/// slices of [`COUNT_SLICE`] ids with a rest after each (see [`COUNT_SLICE`] for why). Outside
/// any transaction, so that no snapshot is held across the slices.
pub(crate) async fn count(db: &Db<'_>, cap: u64) -> Result<Counts, DbError> {
    let limit = i64::try_from(cap.saturating_add(1)).unwrap_or(i64::MAX);
    let mut counts = Counts::new();
    for state in indexed_count_states() {
        // The state is written into the statement so that the planner can pick the state's
        // partial index (a generic plan for a parameter could not).
        let rows = db
            .query(
                &format!(
                    "SELECT queue, count(*) FROM \
                         (SELECT queue FROM drover_jobs WHERE state = '{}' LIMIT $1) AS s \
                     GROUP BY queue",
                    state.as_str()
                ),
                &[&limit],
            )
            .await?;
        let total: i64 = rows.iter().map(|row| row.get::<_, i64>(1)).sum();
        let estimated = total as u64 > cap;
        for row in rows {
            counts.push((row.get(0), state, row.get::<_, i64>(1) as u64, estimated));
        }
    }
    let ends = db
        .query_one("SELECT min(id), max(id) FROM drover_jobs", &[])
        .await?;
    let (Some(mut from), Some(last)) =
        (ends.get::<_, Option<i64>>(0), ends.get::<_, Option<i64>>(1))
    else {
        return Ok(counts);
    };
    let mut tally = CompletedTally::new(cap);
    while from <= last && !tally.capped() {
        let started = std::time::Instant::now();
        let to = from.saturating_add(COUNT_SLICE);
        for row in db
            .query(
                "SELECT queue, count(*) FROM drover_jobs \
                 WHERE id >= $1 AND id < $2 AND state = 'completed' \
                 GROUP BY queue",
                &[&from, &to],
            )
            .await?
        {
            tally.add(row.get(0), row.get::<_, i64>(1) as u64);
        }
        from = to;
        tokio::time::sleep(started.elapsed() * COUNT_REST).await;
    }
    counts.extend(tally.into_counts());
    Ok(counts)
}

/// Forgets the queues an exact count found no job in, unless paused (the pause must outlive an
/// empty queue) or named by a registered process (a worked queue stays listed while idle);
/// otherwise a queue used once, or a typo, stays on every list forever. The count is no
/// snapshot (a job handed back between two of its statements, or enqueued since, was not
/// seen), so the live jobs are looked for again here: one lookup per partial index, each state
/// as its index's predicate says it (an `IN` of all four matched none, and the plan read the
/// whole table at every count, candidates or not).
pub(crate) const FORGET_EMPTY_QUEUES: &str = "DELETE FROM drover_queues q WHERE paused_at IS NULL \
       AND NOT EXISTS (SELECT 1 FROM drover_queue_counts c WHERE c.queue = q.name) \
       AND NOT EXISTS (SELECT 1 FROM drover_processes p WHERE q.name = ANY (p.queues)) \
       AND NOT EXISTS (SELECT 1 FROM drover_jobs j \
                       WHERE j.state = 'available' AND j.queue = q.name) \
       AND NOT EXISTS (SELECT 1 FROM drover_jobs j \
                       WHERE j.state IN ('scheduled', 'retryable') AND j.queue = q.name) \
       AND NOT EXISTS (SELECT 1 FROM drover_jobs j \
                       WHERE j.state = 'running' AND j.queue = q.name)";

/// Stores a count and the oldest available job per queue as the cache, in the store's
/// transaction.
pub(crate) async fn store_counts(
    db: &Db<'_>,
    counts: &Counts,
    now: Option<Timestamp>,
) -> Result<(), DbError> {
    let queues: Vec<&str> = counts.iter().map(|(q, ..)| q.as_str()).collect();
    let states: Vec<&str> = counts.iter().map(|(_, s, ..)| s.as_str()).collect();
    let numbers: Vec<i64> = counts.iter().map(|(_, _, n, _)| *n as i64).collect();
    let estimated: Vec<bool> = counts.iter().map(|(.., e)| *e).collect();
    db.execute("DELETE FROM drover_queue_counts", &[]).await?;
    db.execute(
        "INSERT INTO drover_queue_counts (queue, state, count, estimated) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::boolean[])",
        &[&queues, &states, &numbers, &estimated],
    )
    .await?;
    // A count that passed its cap may have missed a queue: only an exact one forgets.
    if counts.iter().all(|(.., estimated)| !estimated) {
        db.execute(FORGET_EMPTY_QUEUES, &[]).await?;
    }
    // Every counted queue gets a row; the kept queues with no jobs left keep theirs.
    db.execute(
        "INSERT INTO drover_queues (name) \
         SELECT DISTINCT queue FROM drover_queue_counts ON CONFLICT (name) DO NOTHING",
        &[],
    )
    .await?;
    db.execute(
        "UPDATE drover_queues q SET counted_at = coalesce($1::timestamptz, now()), \
             oldest_available_at = (SELECT min(scheduled_at) FROM drover_jobs \
                                    WHERE state = 'available' AND queue = q.name)",
        &[&now],
    )
    .await?;
    Ok(())
}
