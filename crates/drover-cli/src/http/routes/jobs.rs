//! `/api/v1/jobs`: enqueue one or a batch, list with filters and a cursor, get one, and act on
//! one, on a list of ids, or on every job matching a filter.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use drover::EnqueueRequest;
use drover::admin::{BulkReport, FilterText, JobCount, JobFilter, JobPage, MAX_COUNT};
use drover_core::{ActResult, Delivery, InsertedJob, JobAction, JobId, JobRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::http::error::ErrorBody;
use crate::http::extract::{Body, NoBody, Path, Query};
use crate::http::{ApiError, AppState};

/// Most jobs in one batch request.
const MAX_BATCH: usize = 10_000;

/// A job to enqueue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnqueueBody {
    /// Task kind, like `report.build`.
    kind: String,
    /// Args: a JSON object (default `{}`), stored as sent: numbers of any size keep every
    /// digit.
    #[schema(value_type = Option<Object>)]
    args: Option<Box<serde_json::value::RawValue>>,
    /// Queue (default: the kind's queue, else `default`).
    queue: Option<String>,
    /// Higher runs first (default 0), from -32768 to 32767. Taken as any number so that one
    /// out of range or not whole gets the same 400 naming the field, however large.
    #[schema(value_type = Option<i64>, minimum = -32768, maximum = 32767)]
    priority: Option<serde_json::Number>,
    /// Attempts before the job is discarded (default: the kind's, else 25), from 1 to 10000.
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 10000)]
    max_attempts: Option<serde_json::Number>,
    /// Run at this time (RFC 3339).
    run_at: Option<String>,
    /// Run after this many seconds.
    delay_seconds: Option<f64>,
    /// While a job with this key is unfinished, enqueueing again returns that job (an
    /// idempotency key).
    unique_key: Option<String>,
    /// `at-least-once` (default) or `at-most-once`.
    delivery: Option<String>,
}

impl EnqueueBody {
    /// The engine's request; `index` names the job in a batch's errors.
    fn into_request(self, index: Option<usize>) -> Result<EnqueueRequest, ApiError> {
        let at = |field: &str| match index {
            None => field.to_owned(),
            Some(index) => format!("jobs[{index}].{field}"),
        };
        let args = match self.args {
            None => "{}".to_owned(),
            Some(raw) if raw.get().starts_with('{') => raw.get().to_owned(),
            Some(_) => return Err(ApiError::invalid(at("args"), "args must be a JSON object")),
        };
        let mut request = EnqueueRequest::raw(self.kind, args);
        request.queue = self.queue;
        request.priority = super::whole(at("priority"), self.priority, -32768..=32767)?;
        request.max_attempts = super::whole(at("max_attempts"), self.max_attempts, 1..=10_000)?;
        request.unique_key = self.unique_key;
        if self.run_at.is_some() && self.delay_seconds.is_some() {
            return Err(ApiError::invalid(
                at("delay_seconds"),
                "give run_at or delay_seconds, not both",
            ));
        }
        if let Some(run_at) = self.run_at {
            request.run_at = Some(
                drover_core::validate::parse_time(&run_at)
                    .map_err(|reason| ApiError::invalid(at("run_at"), reason))?,
            );
        }
        if let Some(delay) = self.delay_seconds {
            if !(0.0..=1e9).contains(&delay) {
                return Err(ApiError::invalid(
                    at("delay_seconds"),
                    "must be between 0 and 1e9 seconds",
                ));
            }
            request.delay = Some(std::time::Duration::from_secs_f64(delay));
        }
        if let Some(delivery) = self.delivery {
            request.delivery = Some(
                delivery
                    .parse::<Delivery>()
                    .map_err(|err| ApiError::invalid(at("delivery"), err))?,
            );
        }
        Ok(request)
    }
}

/// What an enqueue did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Enqueued {
    /// The job's id (the existing job's, for a duplicate unique key).
    id: JobId,
    /// Its state.
    state: drover_core::JobState,
    /// True when an unfinished job with the same unique key existed: nothing was inserted.
    duplicate: bool,
}

impl From<InsertedJob> for Enqueued {
    fn from(job: InsertedJob) -> Self {
        Enqueued {
            id: job.id,
            state: job.state,
            duplicate: job.duplicate,
        }
    }
}

/// Enqueue one job.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = EnqueueBody,
    responses(
        (status = 201, description = "Enqueued (committed)", body = Enqueued),
        (status = 200, description = "A duplicate of an unfinished job's unique key", body = Enqueued),
        (status = 400, description = "Invalid job; nothing stored", body = ErrorBody),
        (status = 413, description = "Args or body over the limit", body = ErrorBody),
    ))]
pub(crate) async fn enqueue(
    State(state): State<AppState>,
    Body(body): Body<EnqueueBody>,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    let request = body.into_request(None)?;
    let inserted = state.admin.client().enqueue(request).await?;
    let status = if inserted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(inserted.into())))
}

/// A batch to enqueue: all or nothing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchBody {
    /// Up to 10,000 jobs.
    jobs: Vec<EnqueueBody>,
}

/// What a batch enqueue did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchEnqueued {
    /// One entry per job, in order.
    jobs: Vec<Enqueued>,
    /// Jobs inserted.
    inserted: usize,
    /// Jobs that were duplicates of an unfinished job's unique key.
    duplicates: usize,
}

/// Enqueue a batch in one transaction: every job is checked first, and one bad job refuses the
/// whole batch with nothing stored.
#[utoipa::path(post, path = "/api/v1/jobs/batch", tag = "jobs", request_body = BatchBody,
    responses(
        (status = 201, description = "Enqueued (committed)", body = BatchEnqueued),
        (status = 200, description = "Every job's unique key matched an unfinished job: nothing new", body = BatchEnqueued),
        (status = 400, description = "A job is invalid; nothing stored", body = ErrorBody),
        (status = 413, description = "More than 10,000 jobs, or a body over the limit", body = ErrorBody),
    ))]
pub(crate) async fn enqueue_batch(
    State(state): State<AppState>,
    Body(body): Body<BatchBody>,
) -> Result<(StatusCode, Json<BatchEnqueued>), ApiError> {
    if body.jobs.len() > MAX_BATCH {
        return Err(ApiError {
            field: Some("jobs".into()),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "{} jobs is over the limit of {MAX_BATCH} per request",
                    body.jobs.len()
                ),
            )
        });
    }
    let requests = body
        .jobs
        .into_iter()
        .enumerate()
        .map(|(index, job)| job.into_request(Some(index)))
        .collect::<Result<Vec<_>, _>>()?;
    let inserted = state.admin.client().enqueue_many(requests).await?;
    let duplicates = inserted.iter().filter(|job| job.duplicate).count();
    // As for one job: 200 when nothing new was made, every job a duplicate.
    let status = if duplicates == inserted.len() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(BatchEnqueued {
            inserted: inserted.len() - duplicates,
            duplicates,
            jobs: inserted.into_iter().map(Enqueued::from).collect(),
        }),
    ))
}

/// Filters of a list, all optional.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only this state.
    state: Option<String>,
    /// Only this queue.
    queue: Option<String>,
    /// Only this kind.
    kind: Option<String>,
    /// Only jobs created at or after this time (RFC 3339).
    created_after: Option<String>,
    /// Only jobs created before this time.
    created_before: Option<String>,
    /// Only jobs finished at or after this time.
    finished_after: Option<String>,
    /// Only jobs finished before this time.
    finished_before: Option<String>,
    /// Only jobs whose args contain this JSON object (URL-encoded), like `{"user":7}`.
    args: Option<String>,
    /// The `next` of the previous page.
    after: Option<JobId>,
    /// Most jobs (1 to 1,000; default 50).
    #[param(minimum = 1)]
    limit: Option<usize>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Page {
    /// Jobs, newest first.
    jobs: Vec<JobRecord>,
    /// Pass as `after` for the next page; absent on the last.
    next: Option<JobId>,
    /// Present when a search on args, kind or times read its budget of 200,000 ids before the
    /// page was full: jobs from this id down are not searched yet; `next` continues there.
    #[serde(skip_serializing_if = "Option::is_none")]
    searched_to: Option<JobId>,
}

/// List jobs, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "A page", body = Page),
        (status = 400, description = "A bad filter", body = ErrorBody),
    ))]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page>, ApiError> {
    let filter = query.filter()?;
    let JobPage {
        jobs,
        next,
        searched_to,
    } = state
        .admin
        .jobs(&filter, query.after, query.limit.unwrap_or(50))
        .await?;
    Ok(Json(Page {
        jobs,
        next,
        searched_to,
    }))
}

impl ListQuery {
    /// The filters, checked; and `after`, which no job id below 0 can be (a page after one
    /// would be empty, which reads as "no such jobs" rather than as the mistake it is).
    fn filter(&self) -> Result<JobFilter, ApiError> {
        if let Some(after) = self.after.filter(|&after| after < 0) {
            return Err(ApiError::invalid(
                "after",
                format!("after: {after} is not a job id (a whole number of 0 or more)"),
            ));
        }
        Ok(FilterText {
            state: self.state.clone(),
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            created_after: self.created_after.clone(),
            created_before: self.created_before.clone(),
            finished_after: self.finished_after.clone(),
            finished_before: self.finished_before.clone(),
            args: self.args.clone(),
        }
        .parse()?)
    }
}

/// How many jobs match, counted up to a cap.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Counted {
    /// Jobs counted.
    count: u64,
    /// True when counting stopped at the cap: there are more.
    at_least: bool,
}

/// Count the jobs a list with the same filters would page through (older than `after` when
/// given), up to `limit` (here 1 to 10,000; default 10,000). Costs at most `limit` rows, so
/// it is cheap at any table size; used to say how many jobs an action on a filter touches.
#[utoipa::path(get, path = "/api/v1/jobs/count", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "The count", body = Counted),
        (status = 400, description = "A bad filter or limit", body = ErrorBody),
    ))]
pub(crate) async fn count_jobs(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Counted>, ApiError> {
    let filter = query.filter()?;
    let JobCount { count, at_least } = state
        .admin
        .count_matching(&filter, query.after, query.limit.unwrap_or(MAX_COUNT))
        .await?;
    Ok(Json(Counted { count, at_least }))
}

/// One job with every field: args, attempts with their errors and steps, history.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobRecord),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<JobId>,
) -> Result<Json<JobRecord>, ApiError> {
    Ok(Json(state.admin.job(id).await?))
}

/// What an action did to one job.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Acted {
    /// The job.
    id: JobId,
    /// `changed` (with the new state), `cancel_requested`, `unchanged` (with the reason) or
    /// `not_found`.
    result: ActResult,
}

/// Retry, cancel or discard one job. An action that does not apply to the job's state is a
/// 409 with the reason.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/{action}", tag = "jobs",
    params(
        ("id" = i64, Path, description = "Job id"),
        ("action" = JobAction, Path, description = "retry, cancel or discard"),
    ),
    responses(
        (status = 200, description = "Done", body = Acted),
        (status = 400, description = "No such action", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The action does not apply to the job's state", body = ErrorBody),
    ))]
pub(crate) async fn act_on_job(
    State(state): State<AppState>,
    Path((id, action)): Path<(JobId, String)>,
    _: NoBody,
) -> Result<Json<Acted>, ApiError> {
    let action: JobAction = action
        .parse()
        .map_err(|err: String| ApiError::invalid("action", err))?;
    let result = state.admin.act(id, action).await?;
    Ok(Json(Acted { id, result }))
}

/// An action on many jobs: a list of ids, or a filter.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionBody {
    /// `retry`, `cancel` or `discard`. Read as text, so that another word gets an error that
    /// names the field.
    #[schema(value_type = JobAction)]
    action: String,
    /// These jobs (at most 1,000).
    ids: Option<Vec<JobId>>,
    /// Every job matching this filter (the list's filters, as strings).
    filter: Option<FilterText>,
    /// Needed, and true, to act on every job with an empty filter.
    #[serde(default)]
    all: bool,
}

/// What an action on many jobs did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BulkActed {
    /// Jobs matched.
    matched: u64,
    /// Jobs changed.
    changed: u64,
    /// Jobs left as they were (the action does not apply to their state).
    unchanged: u64,
}

impl From<BulkReport> for BulkActed {
    fn from(report: BulkReport) -> Self {
        BulkActed {
            matched: report.matched,
            changed: report.changed,
            unchanged: report.unchanged,
        }
    }
}

/// Retry, cancel or discard the given jobs, or every job matching a filter (in batches, each
/// its own transaction). Reports how many changed.
#[utoipa::path(post, path = "/api/v1/jobs/actions", tag = "jobs", request_body = ActionBody,
    responses(
        (status = 200, description = "Done", body = BulkActed),
        (status = 400, description = "A bad action or filter", body = ErrorBody),
    ))]
pub(crate) async fn act_on_jobs(
    State(state): State<AppState>,
    Body(body): Body<ActionBody>,
) -> Result<Json<BulkActed>, ApiError> {
    let action: JobAction = body
        .action
        .parse()
        .map_err(|err: String| ApiError::invalid("action", err))?;
    let report = match (body.ids, body.filter) {
        (Some(ids), None) => {
            let results = state.admin.act_on(ids, action).await?;
            let changed = results.iter().filter(|r| r.changed()).count() as u64;
            let matched = results
                .iter()
                .filter(|r| !matches!(r, ActResult::NotFound))
                .count() as u64;
            // An id with no job is neither: `unchanged` counts jobs that were found.
            BulkReport {
                matched,
                changed,
                unchanged: matched - changed,
            }
        }
        (None, Some(filter)) => {
            if let Some(field) = filter.blank_field() {
                return Err(ApiError::invalid(
                    format!("filter.{field}"),
                    "empty: leave the field out to not filter on it",
                ));
            }
            let filter = filter.parse()?;
            if !filter.narrows() && !body.all {
                return Err(ApiError::invalid(
                    "filter",
                    "the filter is empty (an empty args filter narrows nothing): set a \
                     field, or \"all\": true to act on every job",
                ));
            }
            state.admin.act_matching(&filter, action).await?
        }
        _ => {
            return Err(ApiError::invalid(
                "ids",
                "give either \"ids\" or \"filter\", not both or neither",
            ));
        }
    };
    Ok(Json(report.into()))
}
