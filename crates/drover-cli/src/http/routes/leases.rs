//! `/api/v1/leases`: workers in any language. Lease jobs (long-polling), heartbeat them, and
//! complete, fail or hand them back by their lease token. A stale or unknown token is a 409 and
//! changes nothing; repeating a call with the same token answers as the first did.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover::remote::{Failure, HeartbeatAnswer, LeaseRequest, LeasedJob, Recorded};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::ErrorBody;
use crate::http::extract::{Body, OptionalBody, Path};
use crate::http::{ApiError, AppState};

/// A request for jobs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseBody {
    /// Queues to take jobs from, in order of preference.
    queues: Vec<String>,
    /// This worker's name (recorded as the lease owner `remote:NAME`).
    worker: String,
    /// Most jobs (1 to 1,000; default 1).
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    max: Option<serde_json::Number>,
    /// Seconds to wait for work when none is available (0 to 30; default 0).
    wait: Option<f64>,
}

/// Jobs leased.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Leased {
    /// Each with its lease token, args, attempt and lease expiry.
    jobs: Vec<LeasedJob>,
}

/// Lease up to `max` jobs, waiting up to `wait` seconds for some (woken by enqueues, not by
/// polling). 204 when none came.
#[utoipa::path(post, path = "/api/v1/leases", tag = "leases", request_body = LeaseBody,
    responses(
        (status = 200, description = "Jobs, each leased to this worker", body = Leased),
        (status = 204, description = "No job came within the wait"),
        (status = 400, description = "A bad request", body = ErrorBody),
    ))]
pub(crate) async fn lease_jobs(
    State(state): State<AppState>,
    Body(body): Body<LeaseBody>,
) -> Result<Response, ApiError> {
    if state.stop.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down; lease from another one",
        ));
    }
    let wait = body.wait.unwrap_or(0.0);
    if !(0.0..=30.0).contains(&wait) {
        return Err(ApiError::invalid(
            "wait",
            "must be between 0 and 30 seconds",
        ));
    }
    let request = LeaseRequest {
        queues: body.queues,
        worker: body.worker,
        max: super::whole("max".into(), body.max, 1..=1000)?.map_or(1, |max| max as usize),
        wait: Duration::from_secs_f64(wait),
    };
    let jobs = state.remote.lease(request, &state.stop).await?;
    if jobs.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(Json(Leased { jobs }).into_response())
}

/// Optional details of a heartbeat or completion.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepBody {
    /// The step the run has reached (recorded; a later failure names it).
    step: Option<String>,
}

/// The heartbeat's answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Renewed {
    /// True when an operator asked to cancel: stop, then report with `fail`.
    cancel_requested: bool,
    /// When the lease now expires.
    lease_expires_at: jiff::Timestamp,
}

impl From<HeartbeatAnswer> for Renewed {
    fn from(answer: HeartbeatAnswer) -> Self {
        Renewed {
            cancel_requested: answer.cancel_requested,
            lease_expires_at: answer.lease_expires_at,
        }
    }
}

/// Extend a lease.
#[utoipa::path(post, path = "/api/v1/leases/{token}/heartbeat", tag = "leases",
    params(("token" = String, Path, description = "The lease token")),
    request_body(content = Option<StepBody>, description = "Optional: the step reached"),
    responses(
        (status = 200, description = "Renewed", body = Renewed),
        (status = 404, description = "No such job (a mistyped token)", body = ErrorBody),
        (status = 409, description = "The lease is lost (expired and rescued, or finished)", body = ErrorBody),
    ))]
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Path(token): Path<String>,
    OptionalBody(body): OptionalBody<StepBody>,
) -> Result<Json<Renewed>, ApiError> {
    let step = body.step;
    Ok(Json(state.remote.heartbeat(&token, step).await?.into()))
}

/// What was recorded.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Done {
    /// The job.
    id: i64,
    /// Its state now.
    state: drover_core::JobState,
    /// True when this call repeated one already recorded.
    repeated: bool,
}

impl From<Recorded> for Done {
    fn from(r: Recorded) -> Self {
        Done {
            id: r.id,
            state: r.state,
            repeated: r.repeated,
        }
    }
}

/// Record that the run succeeded.
#[utoipa::path(post, path = "/api/v1/leases/{token}/complete", tag = "leases",
    params(("token" = String, Path, description = "The lease token")),
    request_body(content = Option<StepBody>, description = "Optional: the last step"),
    responses(
        (status = 200, description = "Recorded", body = Done),
        (status = 404, description = "No such job (a mistyped token)", body = ErrorBody),
        (status = 409, description = "The lease is lost: not recorded", body = ErrorBody),
    ))]
pub(crate) async fn complete(
    State(state): State<AppState>,
    Path(token): Path<String>,
    OptionalBody(body): OptionalBody<StepBody>,
) -> Result<Json<Done>, ApiError> {
    let step = body.step;
    Ok(Json(state.remote.complete(&token, step).await?.into()))
}

/// How the run failed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailBody {
    /// What went wrong.
    error: String,
    /// The step it failed in.
    step: Option<String>,
    /// Run again after this many seconds (default: exponential backoff).
    retry_in: Option<f64>,
    /// Give up now, whatever attempts are left.
    #[serde(default)]
    discard: bool,
}

/// Record a failed attempt: retried with backoff while attempts are left, else discarded.
#[utoipa::path(post, path = "/api/v1/leases/{token}/fail", tag = "leases",
    params(("token" = String, Path, description = "The lease token")),
    request_body = FailBody,
    responses(
        (status = 200, description = "Recorded", body = Done),
        (status = 404, description = "No such job (a mistyped token)", body = ErrorBody),
        (status = 409, description = "The lease is lost: not recorded", body = ErrorBody),
    ))]
pub(crate) async fn fail(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Body(body): Body<FailBody>,
) -> Result<Json<Done>, ApiError> {
    let retry_in = match body.retry_in {
        // Either would be ignored while its sender believed it counted.
        Some(_) if body.discard => {
            return Err(ApiError::invalid(
                "retry_in",
                "a run given up on (discard: true) is not retried: send one or the other",
            ));
        }
        Some(secs) if !(0.0..=1e9).contains(&secs) => {
            return Err(ApiError::invalid(
                "retry_in",
                "must be between 0 and 1e9 seconds",
            ));
        }
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    let failure = Failure {
        error: body.error,
        step: body.step,
        retry_in,
        discard: body.discard,
    };
    Ok(Json(state.remote.fail(&token, failure).await?.into()))
}

/// Whether the handed-back run had started.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HandBackBody {
    /// True when the handler had started (an at-most-once job is then discarded, not re-run).
    #[serde(default)]
    started: bool,
}

/// Give a run back unfinished (the worker is stopping): available again, its attempt not used.
#[utoipa::path(post, path = "/api/v1/leases/{token}/hand-back", tag = "leases",
    params(("token" = String, Path, description = "The lease token")),
    request_body(content = Option<HandBackBody>, description = "Optional"),
    responses(
        (status = 200, description = "Recorded", body = Done),
        (status = 404, description = "No such job (a mistyped token)", body = ErrorBody),
        (status = 409, description = "The lease is lost", body = ErrorBody),
    ))]
pub(crate) async fn hand_back(
    State(state): State<AppState>,
    Path(token): Path<String>,
    OptionalBody(body): OptionalBody<HandBackBody>,
) -> Result<Json<Done>, ApiError> {
    let started = body.started;
    Ok(Json(state.remote.hand_back(&token, started).await?.into()))
}

/// Many runs to record as completed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteManyBody {
    /// Lease tokens (at most 1,000).
    tokens: Vec<String>,
}

/// One result of a batch completion: what was recorded, or why not.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CompletedOne {
    /// The token.
    token: String,
    /// What was recorded, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    done: Option<Done>,
    /// Why not (`lease_lost`, `not_found`).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Record many runs as completed in one call (one transaction): each token gets its own
/// result, so one lost lease does not refuse the others.
#[utoipa::path(post, path = "/api/v1/leases/complete", tag = "leases", request_body = CompleteManyBody,
    responses(
        (status = 200, description = "One result per token, in order", body = Vec<CompletedOne>),
        (status = 400, description = "A malformed token", body = ErrorBody),
        (status = 413, description = "More than 1,000 tokens, or the body over the server's limit", body = ErrorBody),
    ))]
pub(crate) async fn complete_many(
    State(state): State<AppState>,
    Body(body): Body<CompleteManyBody>,
) -> Result<Json<Vec<CompletedOne>>, ApiError> {
    let results = state.remote.complete_many(&body.tokens).await?;
    Ok(Json(
        body.tokens
            .into_iter()
            .zip(results)
            .map(|(token, result)| match result {
                Ok(recorded) => CompletedOne {
                    token,
                    done: Some(recorded.into()),
                    error: None,
                },
                Err(err) => CompletedOne {
                    token,
                    done: None,
                    error: Some(ApiError::from(err).code.to_owned()),
                },
            })
            .collect(),
    ))
}

/// The lease tokens of a worker's running jobs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokensBody {
    /// At most 1,000.
    tokens: Vec<String>,
}

/// Which runs an operator asked to cancel.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CancelRequests {
    /// The tokens given whose job has a cancel request: stop those runs, then report with
    /// `fail` (recorded as cancelled).
    cancel_requested: Vec<String>,
}

/// Ask which running jobs were cancelled, without renewing their leases: a cheap read that a
/// worker can make every second or so, where heartbeats come only every third of the lease.
#[utoipa::path(post, path = "/api/v1/leases/cancel-requests", tag = "leases", request_body = TokensBody,
    responses(
        (status = 200, description = "The tokens whose job has a cancel request", body = CancelRequests),
        (status = 400, description = "A malformed token", body = ErrorBody),
        (status = 413, description = "More than 1,000 tokens, or the body over the server's limit", body = ErrorBody),
    ))]
pub(crate) async fn cancel_requests(
    State(state): State<AppState>,
    Body(body): Body<TokensBody>,
) -> Result<Json<CancelRequests>, ApiError> {
    Ok(Json(CancelRequests {
        cancel_requested: state.remote.cancel_requested(&body.tokens).await?,
    }))
}

/// A worker that is stopping.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WakeBody {
    /// The worker name its lease requests give.
    worker: String,
}

/// What a wake-up ended.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Woken {
    /// Long polls of that worker that were waiting, now answered (204, or with the jobs they
    /// had already leased).
    polls: usize,
}

/// End a worker's waiting long polls at once: a worker that is stopping calls this from another
/// connection instead of closing the one that polls, so that no job leased by that poll is left
/// undelivered.
#[utoipa::path(post, path = "/api/v1/leases/wake", tag = "leases", request_body = WakeBody,
    responses(
        (status = 200, description = "The waiting polls were ended", body = Woken),
        (status = 400, description = "Not a worker name", body = ErrorBody),
    ))]
pub(crate) async fn wake(
    State(state): State<AppState>,
    Body(body): Body<WakeBody>,
) -> Result<Json<Woken>, ApiError> {
    Ok(Json(Woken {
        polls: state.remote.wake(&body.worker)?,
    }))
}
