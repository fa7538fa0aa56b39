//! Recording outcomes: the fence (`id`, `state = 'running'`, the lease token) is in each
//! statement's `WHERE`, so a late outcome from a run that lost its lease changes nothing.
//!
//! Two statements. [`FINISH`] takes outcomes of every kind and reports, for each, what it found
//! and what it did. [`FINISH_COMPLETED`] takes plain completions, the bulk of any drain, and
//! does only the update: measured on this machine it costs about a quarter less server CPU per
//! job (no per-row `CASE`s, no second read of each job to report on). What it leaves out, the
//! state of a job whose completion was refused, is read afterwards for those jobs only.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use drover_core::{FinishResult, JobOutcome, JobState, Outcome};
use jiff::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::DbError;
use crate::jobs::{parse_state, pg_text, running};
use crate::session::Db;
use crate::time::{clock, micros};

/// Records outcomes of every kind in one statement (its own transaction). The fence is in the
/// `WHERE`; the final `SELECT` reports, for each outcome, the state it led to, or (rejected) the
/// job's state as the statement found it, and how many queues it notified on channel `$8`: a
/// hand-back made work available, a retry changed when work is next due.
pub(crate) const FINISH: &str = concat!(
    "WITH o AS ( \
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
                              $6::bigint[]) \
             WITH ORDINALITY AS o(id, token, outcome, step, message, delay_us, ord)), \
     upd AS ( \
         UPDATE drover_jobs j SET \
             state = CASE o.outcome WHEN 'completed' THEN 'completed' \
                 WHEN 'retry' THEN 'retryable' WHEN 'discard' THEN 'discarded' \
                 WHEN 'cancelled' THEN 'cancelled' ELSE 'available' END, \
             completed_at = CASE WHEN o.outcome IN ('completed', 'discard', 'cancelled') \
                 THEN c.now ELSE j.completed_at END, \
             scheduled_at = CASE o.outcome \
                 WHEN 'retry' THEN c.now + o.delay_us * interval '1 microsecond' \
                 WHEN 'hand_back' THEN c.now ELSE j.scheduled_at END, \
             attempt = CASE WHEN o.outcome = 'hand_back' THEN j.attempt - 1 ELSE j.attempt END, \
             step = coalesce(o.step, j.step), \
             errors = CASE WHEN o.outcome IN ('retry', 'discard') \
                     OR (o.outcome = 'cancelled' AND o.message IS NOT NULL) \
                 THEN j.errors || jsonb_build_array(jsonb_build_object('attempt', j.attempt, \
                     'at', c.now_text, 'step', o.step, 'message', o.message, \
                     'process', j.lease_owner)) \
                 ELSE j.errors END, \
             history = CASE WHEN o.outcome = 'hand_back' \
                 THEN j.history || jsonb_build_array(jsonb_build_object('at', c.now_text, \
                     'event', 'handed_back', 'detail', o.message)) \
                 ELSE j.history END, \
             lease_expires_at = NULL \
         FROM o, ",
    clock!("$7"),
    " WHERE j.id = o.id AND j.state = ",
    running!(),
    " AND j.lease_token = o.token \
         RETURNING o.ord, j.state, j.queue), \
     notified AS ( \
         SELECT pg_notify($8, q) FROM (SELECT DISTINCT queue FROM upd \
                                       WHERE state IN ('available', 'retryable')) AS d(q)) \
     SELECT o.ord, u.state, cur.state, (SELECT count(*) FROM notified), cur.lease_token \
     FROM o LEFT JOIN upd u ON u.ord = o.ord LEFT JOIN drover_jobs cur ON cur.id = o.id \
     ORDER BY o.ord"
);

/// Records plain completions (`$1` ids, `$2` tokens, `$3` the pinned clock). Returns the
/// `(id, token)` of each accepted; completions notify nobody (no work became available).
pub(crate) const FINISH_COMPLETED: &str = concat!(
    "UPDATE drover_jobs j SET state = 'completed', completed_at = c.now, \
         lease_expires_at = NULL \
     FROM unnest($1::bigint[], $2::bigint[]) AS o(id, token), ",
    clock!("$3"),
    " WHERE j.id = o.id AND j.state = ",
    running!(),
    " AND j.lease_token = o.token \
     RETURNING j.id, o.token"
);

/// A batch's steps and messages, as text parameters.
pub(crate) type Texts<'a> = (Vec<Option<&'a str>>, Vec<Option<&'a str>>);

/// What [`finish_many`] did, and whether it notified listeners.
pub(crate) struct Finished {
    pub(crate) results: Vec<FinishResult>,
    pub(crate) notified: bool,
}

/// The columns of [`FINISH`]'s `unnest`, one row per lease: the first outcome presented for
/// it (a repeat can only be rejected, as when outcomes are recorded one by one).
pub(crate) struct FinishArgs<'a> {
    /// Index in the outcomes of each row sent.
    pub(crate) sent: Vec<usize>,
    pub(crate) ids: Vec<i64>,
    pub(crate) tokens: Vec<i64>,
    pub(crate) kinds: Vec<&'static str>,
    steps: Vec<Option<Cow<'a, str>>>,
    messages: Vec<Option<Cow<'a, str>>>,
    pub(crate) delays: Vec<i64>,
}

impl<'a> FinishArgs<'a> {
    pub(crate) fn new(outcomes: &'a [JobOutcome]) -> Self {
        let mut leases: HashSet<(i64, i64)> = HashSet::new();
        let mut sent: Vec<usize> = (0..outcomes.len())
            .filter(|&i| leases.insert((outcomes[i].lease.id, outcomes[i].lease.lease_token)))
            .collect();
        // In id order: the statement locks its rows in the order of the `unnest`, and so does
        // a heartbeat of the same leases (`jobs::heartbeat`). In two different orders they
        // deadlocked, and the server takes `deadlock_timeout` (1 s) to notice: every job of the
        // process waited that long, once every few heartbeats under steady load.
        sent.sort_by_key(|&i| outcomes[i].lease.id);
        let mut args = FinishArgs {
            ids: Vec::with_capacity(sent.len()),
            tokens: Vec::with_capacity(sent.len()),
            kinds: Vec::with_capacity(sent.len()),
            steps: Vec::with_capacity(sent.len()),
            messages: Vec::with_capacity(sent.len()),
            delays: Vec::with_capacity(sent.len()),
            sent,
        };
        for &index in &args.sent {
            let outcome = &outcomes[index];
            args.ids.push(outcome.lease.id);
            args.tokens.push(outcome.lease.lease_token);
            args.steps.push(outcome.step.as_deref().map(pg_text));
            let (kind, message, delay) = match &outcome.outcome {
                Outcome::Completed => ("completed", None, 0),
                Outcome::Retry { error, delay } => ("retry", Some(error.as_str()), micros(*delay)),
                Outcome::Discard { error } => ("discard", Some(error.as_str()), 0),
                Outcome::Cancelled { error } => ("cancelled", error.as_deref(), 0),
                Outcome::HandBack { reason } => ("hand_back", Some(reason.as_str()), 0),
            };
            args.kinds.push(kind);
            args.messages.push(message.map(pg_text));
            args.delays.push(delay);
        }
        args
    }

    /// Whether every outcome is a plain completion (no step to record): [`FINISH_COMPLETED`]
    /// records them.
    fn completions_only(&self) -> bool {
        self.kinds.iter().all(|&kind| kind == "completed") && self.steps.iter().all(Option::is_none)
    }

    /// The statement that records these outcomes.
    pub(crate) fn sql(&self) -> &'static str {
        if self.completions_only() {
            FINISH_COMPLETED
        } else {
            FINISH
        }
    }

    /// The steps and messages as [`FINISH`] takes them.
    pub(crate) fn texts(&self) -> Texts<'_> {
        (
            self.steps.iter().map(|s| s.as_deref()).collect(),
            self.messages.iter().map(|s| s.as_deref()).collect(),
        )
    }

    /// The parameters of [`Self::sql`], with `texts` from [`Self::texts`].
    pub(crate) fn params<'p>(
        &'p self,
        texts: &'p Texts<'p>,
        now: &'p Option<Timestamp>,
        channel: &'p &'p str,
    ) -> Vec<&'p (dyn ToSql + Sync)> {
        if self.completions_only() {
            vec![&self.ids, &self.tokens, now]
        } else {
            vec![
                &self.ids,
                &self.tokens,
                &self.kinds,
                &texts.0,
                &texts.1,
                &self.delays,
                now,
                channel,
            ]
        }
    }

    /// What the statement of [`Self::sql`] saw, from its rows.
    pub(crate) async fn seen(&self, db: &Db<'_>, rows: &[Row]) -> Result<Seen, DbError> {
        if self.completions_only() {
            completions_seen(db, self, rows).await
        } else {
            Seen::of_finish(rows)
        }
    }
}

/// Records `outcomes` in one statement, its own transaction.
pub(crate) async fn finish_many(
    db: &Db<'_>,
    channel: &str,
    outcomes: &[JobOutcome],
    now: Option<Timestamp>,
) -> Result<Finished, DbError> {
    let args = FinishArgs::new(outcomes);
    let texts = args.texts();
    let rows = db
        .query(args.sql(), &args.params(&texts, &now, &channel))
        .await?;
    let seen = args.seen(db, &rows).await?;
    Ok(finish_results(outcomes, &args.sent, &seen))
}

/// What a statement saw of each row sent (in the order sent), and whether it notified.
pub(crate) struct Seen {
    rows: Vec<SeenRow>,
    notified: bool,
}

/// One lease of the batch: the state its outcome led to (`None`: refused), and the job's state
/// and lease token as the statement found them.
struct SeenRow {
    new_state: Option<JobState>,
    found_state: Option<JobState>,
    found_token: Option<i64>,
}

impl Seen {
    /// From [`FINISH`]'s rows, which come in the order sent (`ORDER BY o.ord`).
    fn of_finish(rows: &[Row]) -> Result<Seen, DbError> {
        let state = |row: &Row, column| {
            row.get::<_, Option<&str>>(column)
                .map(parse_state)
                .transpose()
        };
        Ok(Seen {
            notified: rows.first().is_some_and(|row| row.get::<_, i64>(3) > 0),
            rows: rows
                .iter()
                .map(|row| {
                    Ok(SeenRow {
                        new_state: state(row, 1)?,
                        found_state: state(row, 2)?,
                        found_token: row.get(4),
                    })
                })
                .collect::<Result<_, DbError>>()?,
        })
    }
}

/// From [`FINISH_COMPLETED`]'s rows: an accepted completion found its job running under its
/// token; the jobs of refused ones are read now (outside the statement's transaction, which
/// may have committed: a refused outcome only reports the state).
async fn completions_seen(
    db: &Db<'_>,
    args: &FinishArgs<'_>,
    rows: &[Row],
) -> Result<Seen, DbError> {
    let accepted: HashSet<(i64, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let refused: Vec<i64> = args
        .ids
        .iter()
        .zip(&args.tokens)
        .filter(|&(&id, &token)| !accepted.contains(&(id, token)))
        .map(|(&id, _)| id)
        .collect();
    let mut found: HashMap<i64, (JobState, Option<i64>)> = HashMap::new();
    if !refused.is_empty() {
        let rows = db
            .query(
                "SELECT id, state, lease_token FROM drover_jobs WHERE id = ANY($1::bigint[])",
                &[&refused],
            )
            .await?;
        for row in rows {
            found.insert(row.get(0), (parse_state(row.get(1))?, row.get(2)));
        }
    }
    let accepted_token: HashMap<i64, i64> = accepted.iter().copied().collect();
    let rows = args
        .ids
        .iter()
        .zip(&args.tokens)
        .map(|(id, token)| {
            if accepted.contains(&(*id, *token)) {
                return SeenRow {
                    new_state: Some(JobState::Completed),
                    found_state: Some(JobState::Running),
                    found_token: Some(*token),
                };
            }
            // Another lease of the same job completed in this statement: it was found running.
            let (found_state, found_token) = match accepted_token.get(id) {
                Some(&other) => (Some(JobState::Running), Some(other)),
                None => found
                    .get(id)
                    .map_or((None, None), |&(state, token)| (Some(state), token)),
            };
            SeenRow {
                new_state: None,
                found_state,
                found_token,
            }
        })
        .collect();
    Ok(Seen {
        rows,
        notified: false,
    })
}

/// What the statement's view of each lease sent says of each outcome.
pub(crate) fn finish_results(outcomes: &[JobOutcome], sent: &[usize], seen: &Seen) -> Finished {
    // The job's state and lease token as the statement found them: the token stays after an
    // outcome, so a rejected outcome with the job's last token repeats one already recorded.
    let mut found: HashMap<i64, Option<JobState>> = HashMap::new();
    let mut found_token: HashMap<i64, Option<i64>> = HashMap::new();
    let mut accepted: HashMap<usize, JobState> = HashMap::new();
    let mut accepted_by_id: HashMap<i64, (usize, JobState)> = HashMap::new();
    for (row, &index) in seen.rows.iter().zip(sent) {
        let id = outcomes[index].lease.id;
        found.insert(id, row.found_state);
        found_token.insert(id, row.found_token);
        if let Some(new_state) = row.new_state {
            accepted.insert(index, new_state);
            accepted_by_id.insert(id, (index, new_state));
        }
    }
    let results = outcomes
        .iter()
        .enumerate()
        .map(|(index, outcome)| {
            let id = outcome.lease.id;
            if let Some(&state) = accepted.get(&index) {
                return FinishResult {
                    id,
                    accepted: true,
                    recorded_earlier: false,
                    state: Some(state),
                };
            }
            // Rejected: the job's state after the outcomes presented before this one, as if
            // they had been recorded one by one.
            let token = outcome.lease.lease_token;
            let (state, recorded_earlier) = match accepted_by_id.get(&id) {
                Some(&(before, after)) if before < index => {
                    (Some(after), outcomes[before].lease.lease_token == token)
                }
                _ => {
                    let state = found.get(&id).copied().flatten();
                    let same_run = found_token.get(&id).copied().flatten() == Some(token);
                    (
                        state,
                        same_run && state.is_some_and(|s| s != JobState::Running),
                    )
                }
            };
            FinishResult {
                id,
                accepted: false,
                recorded_earlier,
                state,
            }
        })
        .collect();
    Finished {
        results,
        notified: seen.notified,
    }
}
