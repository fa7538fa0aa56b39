//! The routes, one module per resource. Every route is declared once, with its OpenAPI
//! description, through `utoipa_axum::routes!`: the document at `/api/openapi.json` is built
//! from the same declarations as the router, so the two cannot drift.

mod activity;
mod capacity;
mod cluster;
mod jobs;
mod leases;
mod queues;

use std::sync::Arc;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Drover",
        description = "The job server's API: enqueue, inspect and act on jobs, pause queues, \
                       see the cluster and cron schedules, and work jobs from any language by \
                       leasing them. Every error is `{\"error\": {\"code\", \"message\", \"field\"}}`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "jobs", description = "Enqueue, list, inspect, retry, cancel and discard jobs"),
        (name = "queues", description = "Queue depth and pause / resume"),
        (name = "cluster", description = "The leader, the processes, the cron schedules and the \
                                          cluster's throughput"),
        (name = "retention", description = "The retention policies and their recent runs"),
        (name = "capacity", description = "The autoscaler's slots and reservations"),
        (name = "leases", description = "Workers in any language: lease, heartbeat, complete, fail"),
        (name = "operations", description = "Health probes and Prometheus metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every API route with its description.
pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::enqueue, jobs::list_jobs))
        .routes(routes!(jobs::enqueue_batch))
        .routes(routes!(jobs::count_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::act_on_job))
        .routes(routes!(jobs::act_on_jobs))
        .routes(routes!(queues::list_queues))
        .routes(routes!(queues::pause_queue))
        .routes(routes!(queues::resume_queue))
        .routes(routes!(cluster::get_cluster))
        .routes(routes!(cluster::list_cron))
        .routes(routes!(cluster::run_cron))
        .routes(routes!(activity::get_throughput))
        .routes(routes!(activity::list_retention))
        .routes(routes!(leases::lease_jobs))
        .routes(routes!(leases::heartbeat))
        .routes(routes!(leases::complete))
        .routes(routes!(leases::complete_many))
        .routes(routes!(leases::cancel_requests))
        .routes(routes!(leases::wake))
        .routes(routes!(leases::fail))
        .routes(routes!(leases::hand_back))
        .routes(routes!(capacity::list_slots))
        .routes(routes!(capacity::drain_slot))
        .routes(routes!(capacity::interrupt_slot))
        .routes(routes!(capacity::reserve, capacity::list_reservations))
        .routes(routes!(capacity::get_reservation))
        .routes(routes!(capacity::release))
        .routes(routes!(cluster::healthz))
        .routes(routes!(cluster::readyz))
        .routes(routes!(cluster::metrics))
}

/// Declares on every operation the error answers any route may give, so that a client
/// generated from the document knows them: 401 and 403 (the token, the same-origin check,
/// read-only) except on the open health probes; 400 for a malformed path parameter; and for a
/// JSON body 408 (it did not arrive in time), 413 (too large), 415 (not JSON) and 422 (a field
/// of the wrong type, or one the route does not know). Each route's own answers stay as they
/// are.
pub(crate) fn declare_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let open = super::auth::OPEN.contains(&path.as_str());
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            let mut declare = |status: &str, description: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error(description));
            };
            if !open {
                declare(
                    "401",
                    "No bearer token, or not the server's (when one guards it)",
                );
                declare(
                    "403",
                    "A cross-site request, or an operator action on a read-only server",
                );
            }
            // Every operation reads or writes the database (or the engine's state).
            declare(
                "503",
                "The database is unreachable or busy, or the server is shutting down: retry later",
            );
            if path.contains('{') {
                declare("400", "A malformed path parameter");
            }
            if operation.request_body.is_some() {
                declare(
                    "408",
                    "The body did not arrive within the server's header timeout",
                );
                declare("413", "The body is over the server's limit");
                declare("415", "The body is not JSON (Content-Type)");
                declare(
                    "422",
                    "A field of the wrong type, or one the route does not know",
                );
            }
        }
    }
}

/// `/api/openapi.json`.
pub(crate) fn openapi_route(doc: Arc<utoipa::openapi::OpenApi>) -> axum::Router<AppState> {
    axum::Router::new().route(
        "/api/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { Json(doc.as_ref().clone()) }
        }),
    )
}

/// Counts every answer by route template and status (never by path, so ids are not labels).
pub(crate) async fn record_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    if let Some(metrics) = state.admin.metrics() {
        metrics.http_request(&route, response.status().as_u16());
    }
    response
}

/// A route asked with a method it does not take: the same JSON error as every other (axum's
/// own has an empty body). axum adds the `Allow` header.
pub(crate) async fn method_not_allowed(request: Request) -> Response {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            shown_path(request.uri().path())
        ),
    )
    .into_response()
}

/// A path to echo in an error: a lease token in it is cut out, since whoever reads the answer
/// (a worker's log, a proxy's) could record its job's outcome with it.
fn shown_path(path: &str) -> std::borrow::Cow<'_, str> {
    const LEASES: &str = "/api/v1/leases/";
    match path
        .strip_prefix(LEASES)
        .and_then(|rest| rest.split_once('/'))
    {
        Some((token, rest)) if !token.is_empty() => format!("{LEASES}…/{rest}").into(),
        _ => path.into(),
    }
}

pub(crate) async fn not_found(request: Request) -> Response {
    if super::dashboard::is_page(request.uri().path()) {
        return super::dashboard::not_found(request.uri().path());
    }
    ApiError::not_found(format!(
        "no route {} {}",
        request.method(),
        shown_path(request.uri().path())
    ))
    .into_response()
}

/// `number` as a whole number within `range`, or a 400 naming `field`.
pub(crate) fn whole(
    field: String,
    number: Option<serde_json::Number>,
    range: std::ops::RangeInclusive<i32>,
) -> Result<Option<i32>, ApiError> {
    let Some(number) = number else {
        return Ok(None);
    };
    // A whole number written as a float (`1.0`, `1e2`, `-0`) is that number, as JSON means it.
    let whole = number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
            .map(|f| f as i64)
    });
    whole
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| range.contains(n))
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                format!(
                    "must be a whole number from {} to {}, not {number}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::shown_path;

    #[test]
    fn a_lease_token_is_cut_from_an_echoed_path() {
        assert_eq!(
            shown_path("/api/v1/leases/2.1924003370077040017/heartbeatz"),
            "/api/v1/leases/…/heartbeatz"
        );
        assert_eq!(
            shown_path("/api/v1/leases/complete"),
            "/api/v1/leases/complete"
        );
        assert_eq!(shown_path("/api/v1/jobs/7/nope"), "/api/v1/jobs/7/nope");
    }
}
