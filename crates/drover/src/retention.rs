//! Retention policies: which rows of which table move to its archive table, and when.
//!
//! A policy is checked against the database before anything runs: table and column names must
//! be plain identifiers, both tables must exist, and they must have the same columns (the error
//! names the columns found on one side only). The cutoff is calendar arithmetic in UTC with the
//! day clamped: 13 months before 2026-05-07 is 2025-04-07, one month before 2026-03-31 is
//! 2026-02-28 — never days × 30.

use std::collections::BTreeSet;

use drover_core::{
    ArchiveParams, Clock, DynStore, RetentionRunInsertParams, RetentionRunRecord, StoreError,
    validate,
};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use crate::cron::{CatchUp, CronSchedule, ParsedSchedule};
use crate::error::Error;

/// How long rows stay in the hot table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Calendar months.
    Months(u32),
    /// Days of 24 hours.
    Days(u32),
}

/// A retention policy, as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    /// Unique name.
    pub name: String,
    /// Hot table.
    pub table: String,
    /// Archive table (same columns).
    pub archive_table: String,
    /// Unique id column of both tables. Default `id`.
    pub id_column: String,
    /// Rows older than the cutoff by this column move…
    pub age_column: String,
    /// …or by this one where the age column is null.
    pub fallback_column: Option<String>,
    /// How long rows stay.
    pub keep: Keep,
    /// Rows per transaction.
    pub batch_size: usize,
    /// When the leader runs the policy (cron expression, UTC).
    pub schedule: String,
    /// Only finished jobs (the built-in policy for Drover's own table).
    pub finished_jobs_only: bool,
}

impl RetentionPolicy {
    /// The built-in policy: Drover's own finished jobs (completed, discarded, cancelled) move to
    /// `drover_jobs_archive` 7 days after they finished, checked every 10 minutes.
    pub fn finished_jobs() -> Self {
        Self {
            name: "drover_jobs".into(),
            table: "drover_jobs".into(),
            archive_table: "drover_jobs_archive".into(),
            id_column: "id".into(),
            age_column: "completed_at".into(),
            fallback_column: Some("created_at".into()),
            keep: Keep::Days(7),
            batch_size: 1000,
            schedule: "*/10 * * * *".into(),
            finished_jobs_only: true,
        }
    }
}

/// The cutoff at `now`: rows older than it are moved.
pub fn cutoff(now: Timestamp, keep: Keep) -> Timestamp {
    // `check` bounds the age; a span jiff cannot hold keeps every row rather than panic.
    let span = match keep {
        Keep::Months(n) => Span::new().try_months(n as i64),
        Keep::Days(n) => Span::new().try_hours(n as i64 * 24),
    };
    span.and_then(|span| now.to_zoned(TimeZone::UTC).checked_sub(span))
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MIN)
}

/// Longest age a policy may keep rows, in months.
pub const MAX_KEEP_MONTHS: u32 = 1_200;
/// Longest age a policy may keep rows, in days.
pub const MAX_KEEP_DAYS: u32 = 36_525;

/// Runs kept per policy in the store, newest first.
pub const RUNS_KEPT: usize = 100;

/// What started a retention run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The leader: on the policy's schedule, or catching up when it became leader.
    Schedule,
    /// An operator (`drover archive run`).
    Manual,
}

impl Trigger {
    /// `schedule` or `manual`, as recorded.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
        }
    }
}

/// A policy checked against the database.
#[derive(Debug, Clone)]
pub struct PreparedPolicy {
    /// The declaration.
    pub policy: RetentionPolicy,
    /// The columns both tables share, in the hot table's order.
    pub columns: Vec<String>,
    /// When it runs.
    pub schedule: ParsedSchedule,
}

impl PreparedPolicy {
    /// The store parameters of one batch at `now`.
    pub fn params(&self, now: Timestamp) -> ArchiveParams {
        let p = &self.policy;
        ArchiveParams {
            table: p.table.clone(),
            archive_table: p.archive_table.clone(),
            columns: self.columns.clone(),
            id_column: p.id_column.clone(),
            age_column: p.age_column.clone(),
            fallback_column: p.fallback_column.clone(),
            cutoff: cutoff(now, p.keep),
            batch_size: p.batch_size,
            finished_jobs_only: p.finished_jobs_only,
        }
    }

    /// Moves every row past the cutoff at `now`, batch after batch; `on_batch` sees each batch's
    /// row count. Returns the rows moved.
    pub async fn run(
        &self,
        store: &DynStore,
        now: Timestamp,
        mut on_batch: impl FnMut(u64),
    ) -> Result<u64, StoreError> {
        let params = self.params(now);
        let mut total = 0;
        loop {
            let moved = store.archive_batch(params.clone()).await?;
            if moved == 0 {
                return Ok(total);
            }
            total += moved;
            on_batch(moved);
        }
    }

    /// [`PreparedPolicy::run`], timed by `clock` and recorded in the store (failed runs too,
    /// with their error; the newest [`RUNS_KEPT`] per policy are kept). `trigger` says what
    /// started it: [`Trigger::Schedule`] or [`Trigger::Manual`]. A run that could not be
    /// recorded is logged, and its own result returned all the same.
    pub async fn run_recorded(
        &self,
        store: &DynStore,
        clock: &dyn Clock,
        trigger: Trigger,
        mut on_batch: impl FnMut(u64),
    ) -> Result<u64, StoreError> {
        let started_at = clock.now();
        let mut moved = 0;
        let result = self
            .run(store, started_at, |n| {
                moved += n;
                on_batch(n);
            })
            .await;
        let run = RetentionRunRecord {
            policy: self.policy.name.clone(),
            started_at,
            finished_at: clock.now(),
            rows_moved: moved,
            error: result.as_ref().err().map(ToString::to_string),
            trigger: trigger.as_str().to_owned(),
        };
        record(store, run).await;
        result
    }

    /// Rows past the cutoff at `now`.
    pub async fn pending(&self, store: &DynStore, now: Timestamp) -> Result<u64, StoreError> {
        store.archive_pending(self.params(now)).await
    }
}

/// Records a run of the policy `name` that failed before it could move a row (its check
/// against the database, [`prepare`]), as [`PreparedPolicy::run_recorded`] records the others:
/// an operator reading the runs sees the failure, not the last success.
pub async fn record_failure(
    store: &DynStore,
    clock: &dyn Clock,
    name: &str,
    trigger: Trigger,
    error: &Error,
) {
    let now = clock.now();
    let run = RetentionRunRecord {
        policy: name.to_owned(),
        started_at: now,
        finished_at: now,
        rows_moved: 0,
        error: Some(error.to_string()),
        trigger: trigger.as_str().to_owned(),
    };
    record(store, run).await;
}

/// Stores `run`, keeping the newest [`RUNS_KEPT`] of its policy. A run that cannot be recorded
/// is logged: the run itself happened, or failed, all the same.
async fn record(store: &DynStore, run: RetentionRunRecord) {
    let policy = run.policy.clone();
    let recorded = store
        .retention_run_insert(RetentionRunInsertParams {
            run,
            keep: RUNS_KEPT,
        })
        .await;
    if let Err(err) = recorded {
        tracing::warn!(%policy, error = %err, "cannot record the retention run");
    }
}

/// Checks what can be checked without the database — names, batch size, schedule — and returns
/// the parsed schedule. The error names the policy and what is wrong.
pub fn check(policy: &RetentionPolicy) -> Result<ParsedSchedule, Error> {
    let fail = |what: String| Error::Config(format!("retention {:?}: {what}", policy.name));
    for (field, value) in [
        ("table", Some(&policy.table)),
        ("archive_table", Some(&policy.archive_table)),
        ("id_column", Some(&policy.id_column)),
        ("age_column", Some(&policy.age_column)),
        ("fallback_column", policy.fallback_column.as_ref()),
    ] {
        if let Some(value) = value {
            validate::check_identifier(field, value).map_err(|err| fail(err.to_string()))?;
        }
    }
    if policy.table == policy.archive_table {
        return Err(fail("table and archive_table are the same".into()));
    }
    check_not_drovers_own(policy).map_err(fail)?;
    match policy.keep {
        Keep::Months(n) if !(1..=MAX_KEEP_MONTHS).contains(&n) => {
            return Err(fail(format!(
                "months = {n} is not between 1 and {MAX_KEEP_MONTHS} (100 years)"
            )));
        }
        Keep::Days(n) if !(1..=MAX_KEEP_DAYS).contains(&n) => {
            return Err(fail(format!(
                "days = {n} is not between 1 and {MAX_KEEP_DAYS} (100 years)"
            )));
        }
        _ => {}
    }
    if !(1..=100_000).contains(&policy.batch_size) {
        return Err(fail(format!(
            "batch_size {} is not between 1 and 100000",
            policy.batch_size
        )));
    }
    ParsedSchedule::parse(CronSchedule {
        name: format!("retention.{}", policy.name),
        expression: policy.schedule.clone(),
        timezone: None,
        kind: "drover.retention".into(),
        args: "{}".into(),
        queue: None,
        catch_up: CatchUp::Once,
    })
    .map_err(|err| fail(err.to_string()))
}

/// Drover's own tables (`drover_*`) are moved only by the built-in policy, which knows which
/// jobs are finished: a user policy on `drover_jobs` would archive running jobs, and one on
/// `drover_cron_fires` would break exactly-once cron. Compared without regard to case, since
/// SQLite names are case-insensitive.
fn check_not_drovers_own(policy: &RetentionPolicy) -> Result<(), String> {
    let own = |table: &str| table.to_ascii_lowercase().starts_with("drover_");
    if policy.finished_jobs_only {
        let builtin = RetentionPolicy::finished_jobs();
        if policy.table != builtin.table || policy.archive_table != builtin.archive_table {
            return Err(format!(
                "finished_jobs_only applies to {} → {} only, not {} → {}",
                builtin.table, builtin.archive_table, policy.table, policy.archive_table
            ));
        }
        return Ok(());
    }
    for (field, table) in [
        ("table", &policy.table),
        ("archive_table", &policy.archive_table),
    ] {
        if own(table) {
            return Err(format!(
                "{field} {table} is one of Drover's own tables (drover_*), which only the \
                 built-in [jobs_archive] policy may move"
            ));
        }
    }
    Ok(())
}

/// Checks a policy against the database: [`check`], then both tables exist with the same
/// columns. The error names the policy and what is wrong.
pub async fn prepare(store: &DynStore, policy: RetentionPolicy) -> Result<PreparedPolicy, Error> {
    let schedule = check(&policy)?;
    let fail = |what: String| Error::Config(format!("retention {:?}: {what}", policy.name));
    let columns_of = |table: String| async move {
        store
            .table_columns(table.clone())
            .await
            .map_err(|err| fail(format!("cannot read the columns of {table}: {err}")))?
            .ok_or_else(|| {
                fail(format!(
                    "table {table} does not exist where Drover's own tables are (with \
                     PostgreSQL's ?schema=NAME, in that schema only)"
                ))
            })
    };
    let hot = columns_of(policy.table.clone()).await?;
    let archive = columns_of(policy.archive_table.clone()).await?;
    let hot_set: BTreeSet<_> = hot.iter().collect();
    let archive_set: BTreeSet<_> = archive.iter().collect();
    if hot_set != archive_set {
        let only = |a: &BTreeSet<&String>, b: &BTreeSet<&String>| {
            a.difference(b)
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sides: Vec<String> = [
            (&policy.table, only(&hot_set, &archive_set)),
            (&policy.archive_table, only(&archive_set, &hot_set)),
        ]
        .into_iter()
        .filter(|(_, columns)| !columns.is_empty())
        .map(|(table, columns)| format!("only in {table}: [{columns}]"))
        .collect();
        return Err(fail(format!(
            "{} and {} have different columns: {}",
            policy.table,
            policy.archive_table,
            sides.join("; ")
        )));
    }
    for (field, column) in [
        ("id_column", Some(&policy.id_column)),
        ("age_column", Some(&policy.age_column)),
        ("fallback_column", policy.fallback_column.as_ref()),
    ] {
        if let Some(column) = column
            && !hot_set.contains(column)
        {
            return Err(fail(format!(
                "{field} {column} is not a column of {}",
                policy.table
            )));
        }
    }
    let prepared = PreparedPolicy {
        policy,
        columns: hot,
        schedule,
    };
    // The statement itself, moving nothing (a batch of no rows, which the database plans but
    // need not scan for): a column whose type cannot be compared with a time, or archive
    // columns of other types, fail here, at start, rather than every run.
    let probe = ArchiveParams {
        batch_size: 0,
        ..prepared.params(Timestamp::UNIX_EPOCH)
    };
    match store.archive_batch(probe).await {
        Ok(_) => {}
        // Not the statement's fault: the runs will say so if it lasts.
        Err(err @ (StoreError::Unavailable(_) | StoreError::Busy(_) | StoreError::Closed)) => {
            tracing::warn!(policy = %prepared.policy.name, error = %err, "cannot try the archiving statement now");
        }
        Err(err) => {
            return Err(Error::Config(format!(
                "retention {:?}: the database refuses its archiving statement: {err}",
                prepared.policy.name
            )));
        }
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_policy(table: &str, archive_table: &str) -> RetentionPolicy {
        RetentionPolicy {
            name: "usage".into(),
            table: table.into(),
            archive_table: archive_table.into(),
            finished_jobs_only: false,
            ..RetentionPolicy::finished_jobs()
        }
    }

    #[test]
    fn a_user_policy_on_drovers_own_tables_is_refused_naming_the_table() {
        assert!(check(&RetentionPolicy::finished_jobs()).is_ok());
        assert!(check(&user_policy("usage", "usage_archive")).is_ok());
        for (table, archive, named) in [
            ("drover_jobs", "usage_archive", "table drover_jobs"),
            (
                "usage",
                "drover_jobs_archive",
                "archive_table drover_jobs_archive",
            ),
            ("Drover_Cron_Fires", "x_archive", "table Drover_Cron_Fires"),
            ("drover_leader", "drover_leader_old", "table drover_leader"),
        ] {
            let err = check(&user_policy(table, archive)).unwrap_err().to_string();
            assert!(err.contains(named) && err.contains("\"usage\""), "{err}");
        }
        let err = check(&RetentionPolicy {
            table: "usage".into(),
            ..RetentionPolicy::finished_jobs()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("finished_jobs_only"), "{err}");
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn months_are_calendar_months_with_the_day_clamped() {
        assert_eq!(
            cutoff(ts("2026-05-07T10:00:00Z"), Keep::Months(13)),
            ts("2025-04-07T10:00:00Z")
        );
        assert_eq!(
            cutoff(ts("2026-03-31T00:00:00Z"), Keep::Months(1)),
            ts("2026-02-28T00:00:00Z")
        );
        // Leap years: one month before 2024-03-31 is 2024-02-29; a year before 2024-02-29
        // is 2023-02-28.
        assert_eq!(
            cutoff(ts("2024-03-31T00:00:00Z"), Keep::Months(1)),
            ts("2024-02-29T00:00:00Z")
        );
        assert_eq!(
            cutoff(ts("2024-02-29T12:00:00Z"), Keep::Months(12)),
            ts("2023-02-28T12:00:00Z")
        );
        assert_eq!(
            cutoff(ts("2026-05-07T10:00:00Z"), Keep::Days(30)),
            ts("2026-04-07T10:00:00Z")
        );
    }

    /// An age past a century is refused by name; one jiff cannot hold (only reachable by
    /// skipping the check) keeps every row instead of panicking the archiver.
    #[test]
    fn an_age_past_a_century_is_refused_and_never_panics() {
        for keep in [Keep::Days(7_400_000), Keep::Months(240_000), Keep::Days(0)] {
            let err = check(&RetentionPolicy {
                keep,
                ..RetentionPolicy::finished_jobs()
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains("100 years"), "{err}");
        }
        assert!(
            check(&RetentionPolicy {
                keep: Keep::Days(MAX_KEEP_DAYS),
                ..RetentionPolicy::finished_jobs()
            })
            .is_ok()
        );
        let now = ts("2026-05-07T10:00:00Z");
        assert_eq!(cutoff(now, Keep::Days(u32::MAX)), Timestamp::MIN);
        assert_eq!(cutoff(now, Keep::Months(u32::MAX)), Timestamp::MIN);
    }
}
