//! The cluster (leader, processes), cron schedules, health probes and `/metrics`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use drover::admin::{ClusterView, CronView};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::ErrorBody;
use crate::http::extract::{NoBody, Path};
use crate::http::{ApiError, AppState};

/// The leader and every registered process.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses((status = 200, description = "Leader and processes", body = ClusterView)))]
pub(crate) async fn get_cluster(
    State(state): State<AppState>,
) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(state.admin.cluster().await?))
}

/// Each cron schedule: expression, zone, last fire, next five fire times.
#[utoipa::path(get, path = "/api/v1/cron", tag = "cluster",
    responses((status = 200, description = "The schedules", body = Vec<CronView>)))]
pub(crate) async fn list_cron(
    State(state): State<AppState>,
) -> Result<Json<Vec<CronView>>, ApiError> {
    Ok(Json(state.admin.cron().await?))
}

/// Enqueue a schedule's job now, outside its schedule (its fire times are unaffected).
#[utoipa::path(post, path = "/api/v1/cron/{name}/run", tag = "cluster",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 201, description = "Enqueued", body = drover_core::InsertedJob),
        (status = 404, description = "No such schedule", body = ErrorBody),
    ))]
pub(crate) async fn run_cron(
    State(state): State<AppState>,
    Path(name): Path<String>,
    _: NoBody,
) -> Result<(StatusCode, Json<drover_core::InsertedJob>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.admin.cron_run_now(&name).await?),
    ))
}

/// What the health probe found.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok` or `unhealthy`.
    status: &'static str,
    /// Whether a read of the database answered.
    database: bool,
    /// Every background loop: its last tick, and whether it is running and ticked in time.
    loops: drover::HealthReport,
}

/// Liveness: the process answers and every background loop reported in time. Whether the
/// database answers is in the body, not the status: the processes ride a database outage out,
/// and a liveness probe that failed with it would have an orchestrator restart every one of
/// them at once (`/readyz` fails instead). Open without a token.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "Unhealthy", body = Health),
    ))]
pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    let loops = state.probe.health();
    let database = database_answers(&state).await;
    let healthy = loops.ok;
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if healthy { "ok" } else { "unhealthy" },
        database,
        loops,
    };
    (status, Json(body)).into_response()
}

async fn database_answers(state: &AppState) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), state.admin.cluster()).await,
        Ok(Ok(_))
    )
}

/// Readiness: the database answers and the server is not shutting down. Open without a token.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready"),
        (status = 503, description = "Shutting down, or the database does not answer", body = ErrorBody),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.stop.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "shutting down",
        ));
    }
    if !database_answers(&state).await {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database does not answer",
        ));
    }
    Ok("ready\n")
}

/// Prometheus metrics in the text format 0.0.4.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.probe.metrics_text().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
