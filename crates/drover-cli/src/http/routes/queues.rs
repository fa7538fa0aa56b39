//! `/api/v1/queues`: depth per state (from the cached count), and pause / resume.

use axum::Json;
use axum::extract::State;
use drover::admin::QueueView;

use crate::http::error::ErrorBody;
use crate::http::extract::{NoBody, Path};
use crate::http::{ApiError, AppState};

/// Every queue: counts per state (from the leader's cached count, refreshed every few seconds;
/// `estimated` marks counts that reached the cap), the oldest waiting job, whether it is
/// paused, and how many processes work it.
#[utoipa::path(get, path = "/api/v1/queues", tag = "queues",
    responses((status = 200, description = "The queues, by name", body = Vec<QueueView>)))]
pub(crate) async fn list_queues(
    State(state): State<AppState>,
) -> Result<Json<Vec<QueueView>>, ApiError> {
    Ok(Json(state.admin.queues().await?))
}

/// Pause a queue for every process: its jobs wait, none is claimed; running jobs finish.
#[utoipa::path(post, path = "/api/v1/queues/{name}/pause", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, description = "The queue, paused (with a `note` when no one works it)", body = QueueView),
        (status = 400, description = "Not a queue name", body = ErrorBody),
    ))]
pub(crate) async fn pause_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
    _: NoBody,
) -> Result<Json<QueueView>, ApiError> {
    Ok(Json(state.admin.set_paused(&name, true).await?))
}

/// Resume a paused queue; its workers are woken at once.
#[utoipa::path(post, path = "/api/v1/queues/{name}/resume", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, description = "The queue, running (with a `note` when no one works it)", body = QueueView),
        (status = 400, description = "Not a queue name", body = ErrorBody),
    ))]
pub(crate) async fn resume_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
    _: NoBody,
) -> Result<Json<QueueView>, ApiError> {
    Ok(Json(state.admin.set_paused(&name, false).await?))
}
