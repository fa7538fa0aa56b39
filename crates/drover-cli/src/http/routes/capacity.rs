//! `/api/v1/slots` and `/api/v1/reservations`: the autoscaler's capacity, for operators and for
//! programs that need a lease of a system (a GPU machine) outside the job queue.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use drover_core::{ReservationRecord, SlotRecord};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::http::error::ErrorBody;
use crate::http::extract::{Body, NoBody, Path, Query};
use crate::http::{ApiError, AppState};

/// Which slots.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SlotQuery {
    /// Only this system's.
    system: Option<String>,
    /// Empty slots too.
    #[serde(default)]
    all: bool,
}

/// The slots, by id.
#[utoipa::path(get, path = "/api/v1/slots", tag = "capacity", params(SlotQuery),
    responses((status = 200, description = "The slots", body = Vec<SlotRecord>)))]
pub(crate) async fn list_slots(
    State(state): State<AppState>,
    Query(query): Query<SlotQuery>,
) -> Result<Json<Vec<SlotRecord>>, ApiError> {
    Ok(Json(state.admin.slots(query.system, query.all).await?))
}

/// Drain a slot: it takes no new lease, finishes those it holds, then is terminated.
#[utoipa::path(post, path = "/api/v1/slots/{id}/drain", tag = "capacity",
    params(("id" = i64, Path, description = "Slot id")),
    responses(
        (status = 200, description = "Draining", body = SlotRecord),
        (status = 404, description = "No such slot", body = ErrorBody),
        (status = 409, description = "Not in a state that can drain", body = ErrorBody),
    ))]
pub(crate) async fn drain_slot(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    _: NoBody,
) -> Result<Json<SlotRecord>, ApiError> {
    Ok(Json(state.admin.drain_slot(id).await?))
}

/// Interrupt a slot as a provider's notice would: its leases are handed back at once, and a
/// replacement is launched when demand needs one.
#[utoipa::path(post, path = "/api/v1/slots/{id}/interrupt", tag = "capacity",
    params(("id" = i64, Path, description = "Slot id")),
    responses(
        (status = 200, description = "Interrupted", body = SlotRecord),
        (status = 404, description = "No such slot", body = ErrorBody),
        (status = 409, description = "Not in a state that can be interrupted", body = ErrorBody),
    ))]
pub(crate) async fn interrupt_slot(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    _: NoBody,
) -> Result<Json<SlotRecord>, ApiError> {
    Ok(Json(state.admin.interrupt_slot(id).await?))
}

/// A reservation to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReserveBody {
    /// The system, like `gpu`.
    system: String,
    /// Seconds the reservation lives unless released, 1 to 30 days' worth (default: the
    /// system's `reservation_ttl`).
    ttl_seconds: Option<f64>,
    /// Who holds it, shown to operators (default `api`).
    holder: Option<String>,
}

/// Reserve one lease of a system; poll `GET /api/v1/reservations/{id}` until it is assigned
/// (it then names its slot and instance), and release it when done.
#[utoipa::path(post, path = "/api/v1/reservations", tag = "capacity", request_body = ReserveBody,
    responses(
        (status = 201, description = "Pending", body = ReservationRecord),
        (status = 400, description = "A bad system or ttl", body = ErrorBody),
    ))]
pub(crate) async fn reserve(
    State(state): State<AppState>,
    Body(body): Body<ReserveBody>,
) -> Result<(StatusCode, Json<ReservationRecord>), ApiError> {
    // Checked here as well as by the admin seam: `from_secs_f64` panics on what is not finite.
    use drover::autoscaler::admin::{MAX_RESERVATION_TTL, MIN_RESERVATION_TTL};
    let limits = MIN_RESERVATION_TTL.as_secs_f64()..=MAX_RESERVATION_TTL.as_secs_f64();
    let ttl = match body.ttl_seconds {
        Some(seconds) if !limits.contains(&seconds) => {
            return Err(ApiError::invalid(
                "ttl_seconds",
                "must be at least 1 second and at most 30 days",
            ));
        }
        seconds => seconds.map(Duration::from_secs_f64),
    };
    let holder = body.holder.as_deref().unwrap_or("api");
    let record = state.admin.reserve(&body.system, ttl, holder).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// Which reservations.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReservationQuery {
    /// Only this system's.
    system: Option<String>,
}

/// The open reservations (pending and assigned), oldest first, at most 1,000: what holds or
/// waits for each system's capacity, and how to find a reservation whose id was lost.
#[utoipa::path(get, path = "/api/v1/reservations", tag = "capacity", params(ReservationQuery),
    responses((status = 200, description = "The open reservations", body = Vec<ReservationRecord>)))]
pub(crate) async fn list_reservations(
    State(state): State<AppState>,
    Query(query): Query<ReservationQuery>,
) -> Result<Json<Vec<ReservationRecord>>, ApiError> {
    Ok(Json(state.admin.reservations(query.system).await?))
}

/// One reservation.
#[utoipa::path(get, path = "/api/v1/reservations/{id}", tag = "capacity",
    params(("id" = i64, Path, description = "Reservation id")),
    responses(
        (status = 200, description = "The reservation", body = ReservationRecord),
        (status = 404, description = "No such reservation", body = ErrorBody),
    ))]
pub(crate) async fn get_reservation(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<ReservationRecord>, ApiError> {
    Ok(Json(state.admin.reservation(id).await?))
}

/// Release a reservation: its lease goes back to its slot.
#[utoipa::path(post, path = "/api/v1/reservations/{id}/release", tag = "capacity",
    params(("id" = i64, Path, description = "Reservation id")),
    responses(
        (status = 200, description = "Released", body = ReservationRecord),
        (status = 404, description = "No such reservation", body = ErrorBody),
    ))]
pub(crate) async fn release(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    _: NoBody,
) -> Result<Json<ReservationRecord>, ApiError> {
    Ok(Json(state.admin.release(id).await?))
}
