//! The SQL of operator actions and views: actions on many jobs, queue pause, and the cached
//! counts (counted on a reader, stored by the writer, so the count never holds the write lock).

use std::collections::BTreeMap;

use drover_core::{
    ActResult, COUNT_REST, COUNT_SLICE, CompletedTally, JobAction, JobId, JobState, QueueRecord,
    StoreError, act_refusal, indexed_count_states,
};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use crate::jobs;
use crate::store::SqlResult;
use crate::time::{from_text, to_text};

/// Applies `action` to each job inside the writer's transaction.
pub(crate) fn act_many(
    conn: &Connection,
    ids: &[JobId],
    action: JobAction,
    now: Timestamp,
) -> Result<Vec<ActResult>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        let Some(state) = jobs::current_state(conn, id).sql()? else {
            out.push(ActResult::NotFound);
            continue;
        };
        if let Some(reason) = act_refusal(action, state) {
            out.push(ActResult::Unchanged {
                state,
                reason: reason.into(),
            });
            continue;
        }
        let result = match action {
            JobAction::Retry => match jobs::retry(conn, id, now) {
                Ok(()) => ActResult::Changed {
                    state: JobState::Available,
                },
                // Refused before anything was written (a unique key held by another job).
                Err(StoreError::Conflict { reason, .. }) => ActResult::Unchanged { state, reason },
                Err(err) => return Err(err),
            },
            JobAction::Cancel => match jobs::cancel(conn, id, now)? {
                drover_core::CancelResult::Cancelled => ActResult::Changed {
                    state: JobState::Cancelled,
                },
                drover_core::CancelResult::Requested => ActResult::CancelRequested,
                drover_core::CancelResult::AlreadyFinished(state) => ActResult::Unchanged {
                    state,
                    reason: "the job has already finished".into(),
                },
            },
            JobAction::Discard => {
                discard(conn, id, now).sql()?;
                ActResult::Changed {
                    state: JobState::Discarded,
                }
            }
        };
        out.push(result);
    }
    Ok(out)
}

fn discard(conn: &Connection, id: JobId, now: Timestamp) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE drover_jobs SET state = 'discarded', completed_at = ?2, \
         history = json_insert(history, '$[#]', json_object('at', ?2, \
             'event', 'discarded', 'detail', 'discarded by an operator before it ran')) \
         WHERE id = ?1 AND (state = 'scheduled' OR state = 'available' OR state = 'retryable')",
    )?
    .execute(params![id, to_text(now)])?;
    Ok(())
}

/// Pauses or resumes `queue`.
pub(crate) fn pause(
    conn: &Connection,
    queue: &str,
    paused: bool,
    now: Timestamp,
) -> rusqlite::Result<()> {
    // A resume only clears a pause: resuming a name never seen must not make it a queue that
    // lists forever after.
    if paused {
        conn.prepare_cached(
            "INSERT INTO drover_queues (name, paused_at) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET paused_at = excluded.paused_at",
        )?
        .execute(params![queue, to_text(now)])?;
    } else {
        conn.prepare_cached("UPDATE drover_queues SET paused_at = NULL WHERE name = ?1")?
            .execute(params![queue])?;
    }
    Ok(())
}

/// Every known queue with its cached counts, by name.
pub(crate) fn queue_list(conn: &Connection) -> rusqlite::Result<Vec<QueueRecord>> {
    let opt = |text: Option<String>| text.map(|t| from_text(&t)).transpose();
    let mut queues: BTreeMap<String, QueueRecord> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT name, paused_at, oldest_available_at, counted_at FROM drover_queues",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok(QueueRecord {
            name: row.get(0)?,
            paused_at: opt(row.get(1)?)?,
            counts: BTreeMap::new(),
            estimated: false,
            oldest_available_at: opt(row.get(2)?)?,
            counted_at: opt(row.get(3)?)?,
        })
    })?;
    for queue in rows {
        let queue = queue?;
        queues.insert(queue.name.clone(), queue);
    }
    let mut stmt =
        conn.prepare_cached("SELECT queue, state, count, estimated FROM drover_queue_counts")?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, bool>(3)?,
        ))
    })?;
    for row in rows {
        let (name, state, count, estimated) = row?;
        if let Some(queue) = queues.get_mut(&name) {
            queue
                .counts
                .insert(jobs::parse_state(&state)?, count as u64);
            queue.estimated |= estimated;
        }
    }
    Ok(queues.into_values().collect())
}

/// One queue as stored, after a pause or resume.
pub(crate) fn queue_get(conn: &Connection, queue: &str) -> rusqlite::Result<QueueRecord> {
    let found = queue_list(conn)?.into_iter().find(|q| q.name == queue);
    Ok(found.unwrap_or_else(|| QueueRecord::unseen(queue)))
}

/// A count taken on a reader: per queue, per state (capped), and the oldest available job.
#[derive(Debug, Default)]
pub(crate) struct Counted {
    counts: Vec<(String, JobState, u64, bool)>,
    oldest: BTreeMap<String, String>,
}

/// Counts at most `cap` jobs per state, so the cost is bounded by the cap, not by the table.
///
/// Every state but `completed` is counted through its partial index, the completed jobs by
/// [`count_completed`].
pub(crate) fn count(conn: &Connection, cap: u64) -> rusqlite::Result<Counted> {
    let mut counted = Counted::default();
    let limit = i64::try_from(cap.saturating_add(1)).unwrap_or(i64::MAX);
    for state in indexed_count_states() {
        // The state is written into the statement so that SQLite can pick the state's partial
        // index (it cannot for a bound parameter).
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT queue, count(*) FROM \
                 (SELECT queue FROM drover_jobs WHERE state = '{}' LIMIT ?1 + 0) \
             GROUP BY queue",
            state.as_str()
        ))?;
        let rows: Vec<(String, i64)> = stmt
            .query_map(params![limit], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let total: i64 = rows.iter().map(|(_, n)| n).sum();
        let estimated = total as u64 > cap;
        for (queue, n) in rows {
            counted.counts.push((queue, state, n as u64, estimated));
        }
    }
    count_completed(conn, cap, &mut counted)?;
    // The fetch index is ordered by priority; the oldest is the smallest scheduled_at among
    // available jobs, read per queue from the queues found above.
    let mut oldest = conn.prepare_cached(
        "SELECT min(scheduled_at) FROM drover_jobs WHERE state = 'available' AND queue = ?1",
    )?;
    let queues: std::collections::BTreeSet<String> = counted
        .counts
        .iter()
        .filter(|(_, state, _, _)| *state == JobState::Available)
        .map(|(queue, ..)| queue.clone())
        .collect();
    for queue in queues {
        let at: Option<String> = oldest
            .query_row([&queue], |row| row.get(0))
            .optional()?
            .flatten();
        if let Some(at) = at {
            counted.oldest.insert(queue, at);
        }
    }
    Ok(counted)
}

/// The smallest and the largest id of the jobs table: two lookups at its ends. Written as
/// `SELECT min(id), max(id)`, SQLite reads the whole table (it takes a min or max from an
/// index only when it is the query's one aggregate): 1,000,000 rows in one read at the start
/// of every count, seen as a stall of 15–70 ms of the enqueue→start latency at 55,000 jobs/s.
const ID_RANGE: &str =
    "SELECT (SELECT min(id) FROM drover_jobs), (SELECT max(id) FROM drover_jobs)";

/// Counts the completed jobs (until past `cap`) in slices of [`COUNT_SLICE`] ids, each its own
/// read transaction, so that the checkpoint is free between them, resting after each (see
/// [`COUNT_SLICE`] for why).
fn count_completed(conn: &Connection, cap: u64, counted: &mut Counted) -> rusqlite::Result<()> {
    let (first, last): (Option<i64>, Option<i64>) =
        conn.query_row(ID_RANGE, [], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let (Some(mut from), Some(last)) = (first, last) else {
        return Ok(());
    };
    // NOT INDEXED: the slice is a range of the table itself; the finished index would cost a
    // lookup of the table per row.
    let mut slice = conn.prepare_cached(
        "SELECT queue, count(*) FROM drover_jobs NOT INDEXED \
         WHERE id >= ?1 AND id < ?2 AND state = 'completed' \
         GROUP BY queue",
    )?;
    let mut tally = CompletedTally::new(cap);
    while from <= last && !tally.capped() {
        let started = std::time::Instant::now();
        let rows = slice.query_map(params![from, from.saturating_add(COUNT_SLICE)], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (queue, n) = row?;
            tally.add(queue, n as u64);
        }
        from = from.saturating_add(COUNT_SLICE);
        std::thread::sleep(started.elapsed() * COUNT_REST);
    }
    counted.counts.extend(tally.into_counts());
    Ok(())
}

/// Forgets the queues an exact count found no job in, unless paused (the pause must outlive
/// an empty queue) or named by a registered process (a worked queue stays listed while idle).
/// Otherwise a queue used once, or a typo, stays on every list forever. The count was taken on
/// a reader, statement by statement (a job handed back between two of them, or enqueued since,
/// was not seen), so the live jobs are looked for again here, in the writer's transaction: one
/// lookup per partial index, each state written as its index's predicate is (an `IN` of all
/// four matched none, and read the whole table).
const FORGET_EMPTY_QUEUES: &str = "DELETE FROM drover_queues \
     WHERE paused_at IS NULL \
       AND name NOT IN (SELECT queue FROM drover_queue_counts) \
       AND name NOT IN (SELECT q.value FROM drover_processes p, json_each(p.queues) q) \
       AND NOT EXISTS (SELECT 1 FROM drover_jobs j \
                       WHERE j.state = 'available' AND j.queue = drover_queues.name) \
       AND NOT EXISTS (SELECT 1 FROM drover_jobs j \
                       WHERE (j.state = 'scheduled' OR j.state = 'retryable') \
                         AND j.queue = drover_queues.name) \
       AND NOT EXISTS (SELECT 1 FROM drover_jobs j \
                       WHERE j.state = 'running' AND j.queue = drover_queues.name)";

/// Stores a count as the cache, inside the writer's transaction.
pub(crate) fn store_counts(
    conn: &Connection,
    counted: &Counted,
    now: Timestamp,
) -> rusqlite::Result<()> {
    let now = to_text(now);
    conn.execute("DELETE FROM drover_queue_counts", [])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO drover_queue_counts (queue, state, count, estimated) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut upsert = conn.prepare_cached(
        "INSERT INTO drover_queues (name, oldest_available_at, counted_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET oldest_available_at = excluded.oldest_available_at, \
             counted_at = excluded.counted_at",
    )?;
    let mut seen = std::collections::BTreeSet::new();
    for (queue, state, count, estimated) in &counted.counts {
        insert.execute(params![queue, state.as_str(), *count as i64, estimated])?;
        if seen.insert(queue.clone()) {
            upsert.execute(params![queue, counted.oldest.get(queue), now])?;
        }
    }
    // A count that passed its cap may have missed a queue: only an exact one forgets.
    if counted.counts.iter().all(|(.., estimated)| !estimated) {
        conn.prepare_cached(FORGET_EMPTY_QUEUES)?.execute([])?;
    }
    // Queues with no jobs left that are kept keep their row (and pause), with empty counts.
    conn.prepare_cached(
        "UPDATE drover_queues SET oldest_available_at = NULL, counted_at = ?1 \
         WHERE name NOT IN (SELECT queue FROM drover_queue_counts)",
    )?
    .execute([now])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{FORGET_EMPTY_QUEUES, ID_RANGE};

    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map([], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Forgetting empty queues looks for their live jobs through the partial indexes, never by
    /// reading the jobs table (in the writer, at every count).
    #[test]
    fn forgetting_queues_reads_the_live_jobs_by_index() {
        let conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&conn, "2030-01-01T00:00:00.000000Z").unwrap();
        let plan = plan(&conn, FORGET_EMPTY_QUEUES);
        assert!(!plan.iter().any(|step| step == "SCAN j"), "{plan:?}");
        for index in ["drover_jobs_fetch", "drover_jobs_due", "drover_jobs_lease"] {
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{index}: {plan:?}"
            );
        }
    }

    /// The count's first statement finds the ends of the table by its key, never reading all
    /// of it, and finds them right.
    #[test]
    fn the_id_range_is_two_lookups_not_a_scan() {
        let conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&conn, "2030-01-01T00:00:00.000000Z").unwrap();
        let plan = plan(&conn, ID_RANGE);
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN drover_jobs")),
            "{plan:?}"
        );
        assert_eq!(
            plan.iter()
                .filter(|step| step.starts_with("SEARCH drover_jobs"))
                .count(),
            2,
            "{plan:?}"
        );
        let range = |conn: &Connection| -> (Option<i64>, Option<i64>) {
            conn.query_row(ID_RANGE, [], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap()
        };
        assert_eq!(range(&conn), (None, None));
        conn.execute_batch(
            "INSERT INTO drover_jobs (id, queue, kind, args, state, max_attempts, delivery, \
                 scheduled_at, created_at) \
             VALUES (7, 'q', 'k', '{}', 'available', 1, 'at-least-once', 'x', 'x'), \
                    (3, 'q', 'k', '{}', 'available', 1, 'at-least-once', 'x', 'x'), \
                    (12, 'q', 'k', '{}', 'available', 1, 'at-least-once', 'x', 'x')",
        )
        .unwrap();
        assert_eq!(range(&conn), (Some(3), Some(12)));
    }
}
