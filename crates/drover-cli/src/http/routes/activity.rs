//! What the cluster did: retention runs per policy, and jobs completed and failed per minute.

use axum::Json;
use axum::extract::State;
use drover::admin::{RetentionView, ThroughputPoint};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::http::error::ErrorBody;
use crate::http::extract::Query;
use crate::http::{ApiError, AppState};

/// Each configured retention policy (the built-in `drover_jobs` for `[jobs_archive]`, then each
/// `[[retention]]`): its tables, the age past which rows move (`13 months`, `7 days`), its cron
/// schedule and next run, and its last ten runs, newest first (`trigger` is `schedule` or
/// `manual`; a failed run has its `error` and the rows its committed batches moved).
#[utoipa::path(get, path = "/api/v1/retention", tag = "retention",
    responses((status = 200, description = "The policies, in the configuration's order",
        body = Vec<RetentionView>)))]
pub(crate) async fn list_retention(
    State(state): State<AppState>,
) -> Result<Json<Vec<RetentionView>>, ApiError> {
    Ok(Json(state.admin.retention().await?))
}

/// The query of `GET /api/v1/throughput`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ThroughputQuery {
    /// How many minutes, up to the current one: 1 to 1440. Default 60.
    minutes: Option<u32>,
}

/// Jobs completed and failed per minute, cluster-wide (every process and queue), oldest first,
/// one point per minute including the current one, zero-filled. `failed` counts attempts that
/// ended in failure (retried or discarded). Each process flushes its counts every 5 seconds, so
/// the current minute lags by up to that much.
#[utoipa::path(get, path = "/api/v1/throughput", tag = "cluster",
    params(ThroughputQuery),
    responses(
        (status = 200, description = "One point per minute: {minute, completed, failed}",
            body = Vec<ThroughputPoint>),
        (status = 400, description = "`minutes` is not between 1 and 1440", body = ErrorBody),
    ))]
pub(crate) async fn get_throughput(
    State(state): State<AppState>,
    Query(query): Query<ThroughputQuery>,
) -> Result<Json<Vec<ThroughputPoint>>, ApiError> {
    let minutes = query.minutes.unwrap_or(60);
    Ok(Json(state.admin.throughput(minutes).await?))
}
