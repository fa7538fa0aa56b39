//! Jobs: one, a page of a filtered list, and actions on one or on all that match.

use drover_core::{
    ActResult, JobActParams, JobAction, JobId, JobListParams, JobRecord, JobState, StoreError,
    TimeRange, ValidationError,
};
use serde::Serialize;

use super::Admin;
use crate::error::Error;

/// Most jobs in one page of a list.
pub const MAX_PAGE: usize = 1000;

/// Jobs an action on "everything that matches" changes per store call.
const ACTION_BATCH: usize = 500;

/// The most jobs [`Admin::count_matching`] counts.
pub const MAX_COUNT: usize = 10_000;

/// Which jobs a list or a bulk action is about. Every field narrows; none set means all jobs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only jobs created in this range.
    pub created: TimeRange,
    /// Only jobs finished in this range.
    pub finished: TimeRange,
    /// Only jobs whose args contain this JSON value, given as its text so that numbers compare
    /// exactly (PostgreSQL's `@>` meaning, on both backends).
    pub args_contain: Option<String>,
}

impl JobFilter {
    /// Whether the filter leaves any job out: a field is set, other than an args filter that
    /// is empty (`{}` contains in every object). A bulk action on a filter that narrows
    /// nothing must say `all`, as one with no field set must.
    pub fn narrows(&self) -> bool {
        let args_narrow = self.args_contain.as_deref().is_some_and(|pattern| {
            serde_json::from_str::<serde_json::Value>(pattern).map_or(true, |value| match value {
                serde_json::Value::Object(map) => !map.is_empty(),
                serde_json::Value::Array(items) => !items.is_empty(),
                _ => true,
            })
        });
        args_narrow
            || JobFilter {
                args_contain: None,
                ..self.clone()
            } != JobFilter::default()
    }

    /// Checks names and ranges; the error names the field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(queue) = &self.queue {
            drover_core::validate::check_name("queue", queue)?;
        }
        if let Some(kind) = &self.kind {
            drover_core::validate::check_name("kind", kind)?;
        }
        for (field, range) in [("created", &self.created), ("finished", &self.finished)] {
            if let (Some(from), Some(to)) = (range.from, range.to)
                && from >= to
            {
                return Err(ValidationError::Range {
                    field,
                    reason: format!("the range is empty: {from} is not before {to}"),
                });
            }
        }
        if let Some(pattern) = &self.args_contain {
            let parsed = serde_json::from_str::<serde_json::Value>(pattern).map_err(|err| {
                ValidationError::Range {
                    field: "args",
                    reason: format!("not JSON: {err}"),
                }
            })?;
            // Args are always an object: any other filter would match no job, silently.
            if !parsed.is_object() {
                return Err(ValidationError::Range {
                    field: "args",
                    reason: "the args filter must be a JSON object, like {\"user\": 7}".into(),
                });
            }
        }
        Ok(())
    }

    pub(super) fn params(&self, before_id: Option<JobId>, limit: usize) -> JobListParams {
        JobListParams {
            above_id: None,
            state: self.state,
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            before_id,
            created: self.created,
            finished: self.finished,
            args_contain: self.args_contain.clone(),
            limit,
        }
    }
}

/// A filter as text, as it comes from a command line or a query string. Parsed by
/// [`FilterText::parse`], whose errors name the field.
/// Unknown fields are refused: a misspelt field in a bulk action's filter would otherwise be
/// ignored, and the action would reach every job the rest of the filter matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilterText {
    /// A state name.
    pub state: Option<String>,
    /// A queue name.
    pub queue: Option<String>,
    /// A kind.
    pub kind: Option<String>,
    /// RFC 3339 time.
    pub created_after: Option<String>,
    /// RFC 3339 time.
    pub created_before: Option<String>,
    /// RFC 3339 time.
    pub finished_after: Option<String>,
    /// RFC 3339 time.
    pub finished_before: Option<String>,
    /// A JSON object the args must contain.
    pub args: Option<String>,
}

impl FilterText {
    /// The first field given as an empty (or blank) value. A list takes it as unset, as a
    /// form's empty field is; a bulk action refuses it, since `--queue "$QUEUE"` with the
    /// variable unset would otherwise act on every queue.
    pub fn blank_field(&self) -> Option<&'static str> {
        [
            ("state", &self.state),
            ("queue", &self.queue),
            ("kind", &self.kind),
            ("created_after", &self.created_after),
            ("created_before", &self.created_before),
            ("finished_after", &self.finished_after),
            ("finished_before", &self.finished_before),
            ("args", &self.args),
        ]
        .into_iter()
        .find(|(_, value)| value.as_deref().is_some_and(|v| v.trim().is_empty()))
        .map(|(field, _)| field)
    }

    /// The filter, checked.
    pub fn parse(&self) -> Result<JobFilter, ValidationError> {
        let nonempty =
            |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        let time = |field: &'static str,
                    v: &Option<String>|
         -> Result<Option<jiff::Timestamp>, ValidationError> {
            nonempty(v)
                .map(|text| {
                    drover_core::validate::parse_time(&text)
                        .map_err(|reason| ValidationError::Range { field, reason })
                })
                .transpose()
        };
        let filter = JobFilter {
            state: nonempty(&self.state)
                .map(|s| s.parse::<JobState>())
                .transpose()
                .map_err(|reason| ValidationError::Range {
                    field: "state",
                    reason,
                })?,
            queue: nonempty(&self.queue),
            kind: nonempty(&self.kind),
            created: TimeRange {
                from: time("created_after", &self.created_after)?,
                to: time("created_before", &self.created_before)?,
            },
            finished: TimeRange {
                from: time("finished_after", &self.finished_after)?,
                to: time("finished_before", &self.finished_before)?,
            },
            args_contain: nonempty(&self.args),
        };
        filter.validate()?;
        Ok(filter)
    }
}

/// One page of a job list, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobRecord>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<JobId>,
    /// Set when a search on columns no index covers (args, kind, times) stopped after reading
    /// its budget of rows ([`SEARCH_BUDGET`](crate::admin::SEARCH_BUDGET)) before the page was full: jobs from this id down
    /// were not searched yet, and `next` (the same id) continues the search there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub searched_to: Option<JobId>,
}

/// What an action on every matching job did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BulkReport {
    /// Jobs that matched the filter.
    pub matched: u64,
    /// Jobs the action changed.
    pub changed: u64,
    /// Jobs it left as they were (the action does not apply to their state).
    pub unchanged: u64,
}

/// How many jobs match a filter, counted up to a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JobCount {
    /// Jobs counted.
    pub count: u64,
    /// True when the count stopped at the cap: there are at least this many.
    pub at_least: bool,
}

impl Admin {
    /// One job with every field.
    pub async fn job(&self, id: JobId) -> Result<JobRecord, Error> {
        self.store()
            .job_get(id)
            .await?
            .ok_or(Error::Store(StoreError::NotFound(id)))
    }

    /// A page of the jobs matching `filter`, newest first, after the cursor `after` (the
    /// `next` of the previous page).
    pub async fn jobs(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage, Error> {
        filter.validate()?;
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::Invalid(ValidationError::Range {
                field: "limit",
                reason: format!("{limit} is not between 1 and {MAX_PAGE}"),
            }));
        }
        if filter.reads_unindexed_columns() {
            return self.search(filter, after, limit).await;
        }
        // One more than asked tells whether a next page exists without a second query.
        let mut jobs = self
            .store()
            .job_list(filter.params(after, limit + 1))
            .await?;
        let next = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|job| job.id)
        } else {
            None
        };
        Ok(JobPage {
            jobs,
            next,
            searched_to: None,
        })
    }

    /// Counts the jobs matching `filter` (older than the cursor `after`, when given), up to
    /// `limit` (at most [`MAX_COUNT`]): what an operator is told before an action on every
    /// matching job. Walks the list a batch at a time, so its cost is bounded by the limit, not
    /// by the table.
    pub async fn count_matching(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobCount, Error> {
        filter.validate()?;
        if !(1..=MAX_COUNT).contains(&limit) {
            return Err(Error::Invalid(ValidationError::Range {
                field: "limit",
                reason: format!("{limit} is not between 1 and {MAX_COUNT}"),
            }));
        }
        let mut count = 0usize;
        let mut cursor = after;
        loop {
            let want = (limit + 1 - count).min(ACTION_BATCH);
            let page = self.store().job_list(filter.params(cursor, want)).await?;
            count += page.len();
            if count > limit {
                return Ok(JobCount {
                    count: limit as u64,
                    at_least: true,
                });
            }
            match page.last() {
                Some(last) if page.len() == want => cursor = Some(last.id),
                _ => {
                    return Ok(JobCount {
                        count: count as u64,
                        at_least: false,
                    });
                }
            }
        }
    }

    /// Applies `action` to one job. A job the action does not apply to is a conflict, with the
    /// reason.
    pub async fn act(&self, id: JobId, action: JobAction) -> Result<ActResult, Error> {
        let result = self.act_on(vec![id], action).await?.remove(0);
        match result {
            ActResult::NotFound => Err(Error::Store(StoreError::NotFound(id))),
            ActResult::Unchanged { state, reason } => Err(Error::Store(StoreError::Conflict {
                id,
                state: state.to_string(),
                reason,
            })),
            changed => Ok(changed),
        }
    }

    /// Runs the job-end hooks for the jobs an action ended (a waiting job cancelled or
    /// discarded; a running one ends through its worker, which runs them), in a task of its
    /// own: the action is committed, and a request dropped by its client must not lose them.
    /// `known` holds the jobs as listed before the action, when the caller has them; others
    /// are read.
    fn announce_ends(&self, ids: &[JobId], results: &[ActResult], known: Option<&[JobRecord]>) {
        let Some(hooks) = self.hooks.clone().filter(|hooks| !hooks.is_empty()) else {
            return;
        };
        let ended: Vec<(JobId, JobState, Option<JobRecord>)> = ids
            .iter()
            .zip(results)
            .filter_map(|(&id, result)| match result {
                ActResult::Changed { state } if state.is_terminal() => {
                    let listed = known.and_then(|jobs| jobs.iter().find(|job| job.id == id));
                    Some((id, *state, listed.cloned()))
                }
                _ => None,
            })
            .collect();
        if ended.is_empty() {
            return;
        }
        let store = self.store.clone();
        let unannounced = self.unannounced.clone();
        unannounced.fetch_add(ended.len(), std::sync::atomic::Ordering::SeqCst);
        self.announcing.spawn(async move {
            for (id, state, listed) in ended {
                let handed = || unannounced.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                let job = match listed {
                    Some(job) => job,
                    None => match store.job_get(id).await {
                        Ok(Some(job)) => job,
                        _ => {
                            tracing::warn!(job = id, "job ended, but cannot be read for its hooks");
                            handed();
                            continue;
                        }
                    },
                };
                // Counted from here by the pool, as pending.
                handed();
                hooks
                    .fire(crate::hooks::JobEnd {
                        id,
                        kind: job.kind,
                        queue: job.queue,
                        state,
                        attempt: job.attempt,
                        error: None,
                        step: job.step,
                    })
                    .await;
            }
        });
    }

    /// Applies `action` to the given jobs (at most [`MAX_PAGE`]); one result per id.
    pub async fn act_on(
        &self,
        ids: Vec<JobId>,
        action: JobAction,
    ) -> Result<Vec<ActResult>, Error> {
        if ids.len() > MAX_PAGE {
            return Err(Error::Invalid(ValidationError::BatchTooLarge {
                field: "ids",
                size: ids.len(),
                limit: MAX_PAGE,
            }));
        }
        let mut results = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ACTION_BATCH) {
            let acted = self
                .store()
                .job_act_many(JobActParams {
                    ids: chunk.to_vec(),
                    action,
                    now: self.clock.store_now(),
                })
                .await?;
            self.announce_ends(chunk, &acted, None);
            results.extend(acted);
        }
        Ok(results)
    }

    /// Applies `action` to every job matching `filter`, in batches (each its own transaction),
    /// walking the list once from the newest job down, so jobs enqueued meanwhile are left
    /// alone. Returns how many matched and changed.
    pub async fn act_matching(
        &self,
        filter: &JobFilter,
        action: JobAction,
    ) -> Result<BulkReport, Error> {
        filter.validate()?;
        let mut report = BulkReport::default();
        let mut cursor = None;
        loop {
            let page = self
                .store()
                .job_list(filter.params(cursor, ACTION_BATCH))
                .await?;
            let Some(last) = page.last() else {
                return Ok(report);
            };
            cursor = Some(last.id);
            let ids: Vec<JobId> = page.iter().map(|job| job.id).collect();
            let results = self
                .store()
                .job_act_many(JobActParams {
                    ids: ids.clone(),
                    action,
                    now: self.clock.store_now(),
                })
                .await?;
            self.announce_ends(&ids, &results, Some(&page));
            report.matched += results.len() as u64;
            let changed = results.iter().filter(|r| r.changed()).count() as u64;
            report.changed += changed;
            report.unchanged += results.len() as u64 - changed;
            if page.len() < ACTION_BATCH {
                return Ok(report);
            }
        }
    }
}
