//! `/api/v1/queues`: depth per state (from the cached count), and pause / resume.

use axum::Json;
use axum::extract::State;
use drover::admin::QueueView;
use serde::Serialize;

use crate::http::error::ErrorBody;
use crate::http::extract::Path;
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

/// A queue after a pause or resume, with a note when the name may be a typo.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PausedQueue {
    #[serde(flatten)]
    queue: QueueView,
    /// Present when no process or HTTP worker works the queue and no count has seen a job in
    /// it: the pause took effect all the same (a queue may be paused before its first job),
    /// but a misspelt name leaves the real queue running.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// Pause a queue for every process: its jobs wait, none is claimed; running jobs finish.
#[utoipa::path(post, path = "/api/v1/queues/{name}/pause", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, description = "The queue, paused", body = PausedQueue),
        (status = 400, description = "Not a queue name", body = ErrorBody),
    ))]
pub(crate) async fn pause_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PausedQueue>, ApiError> {
    set_paused(&state, &name, true).await
}

/// Resume a paused queue; its workers are woken at once.
#[utoipa::path(post, path = "/api/v1/queues/{name}/resume", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, description = "The queue, running", body = PausedQueue),
        (status = 400, description = "Not a queue name", body = ErrorBody),
    ))]
pub(crate) async fn resume_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PausedQueue>, ApiError> {
    set_paused(&state, &name, false).await
}

async fn set_paused(
    state: &AppState,
    name: &str,
    paused: bool,
) -> Result<Json<PausedQueue>, ApiError> {
    let queue = state.admin.set_paused(name, paused).await?;
    let note = state.admin.unknown_queue_note(&queue).await?;
    Ok(Json(PausedQueue { queue, note }))
}
