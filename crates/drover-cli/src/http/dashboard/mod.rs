//! The dashboard: server-rendered pages for operators at `/`, on the same listener and auth as
//! the API. Every page is one handler that reads through `drover::Admin` and renders HTML with
//! maud; the stylesheet and the script are embedded in the binary, so nothing is loaded from
//! outside. The script refreshes the parts of a page marked `data-live` while the tab is
//! visible, and sends the operator's actions to the JSON API (which does all the checking).
//!
//! Pages stay fast at millions of jobs because they read only what the API reads: cached
//! counts, one page of a list, one job.

mod capacity;
mod chart;
mod cron;
mod format;
mod job;
mod jobs;
mod layout;
mod overview;
mod processes;
mod queues;
mod retention;
pub(crate) mod session;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};

use super::{ApiError, AppState};

/// The dashboard's routes (pages, assets, login).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/jobs", get(jobs::page))
        .route("/jobs/{id}", get(job::page))
        .route("/queues", get(queues::page))
        .route("/cron", get(cron::page))
        .route("/retention", get(retention::page))
        .route("/processes", get(processes::page))
        .route("/capacity", get(capacity::page))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", axum::routing::post(session::logout))
        .route("/assets/dashboard.css", get(stylesheet))
        .route("/assets/dashboard.js", get(script))
}

/// True for the paths the dashboard serves (they answer a missing login with a redirect to the
/// login page rather than a JSON 401).
pub(crate) fn is_page(path: &str) -> bool {
    !(path.starts_with("/api/") || path == "/metrics" || path == "/healthz" || path == "/readyz")
}

/// Paths that answer without a login: the login page itself and the assets it needs.
pub(crate) fn is_open(path: &str) -> bool {
    path == "/login" || path.starts_with("/assets/")
}

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

async fn stylesheet() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn script() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Short: a new binary's assets reach open tabs within minutes.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// A page's failure, rendered as a page with the API error's status and message.
pub(crate) struct PageError(ApiError);

impl<E> From<E> for PageError
where
    ApiError: From<E>,
{
    fn from(error: E) -> Self {
        PageError(ApiError::from(error))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let ApiError {
            status, message, ..
        } = self.0;
        let title = if status == StatusCode::NOT_FOUND {
            "Not found"
        } else if status.is_client_error() {
            "Bad request"
        } else {
            "Unavailable"
        };
        let body = html! {
            section.card.error-page {
                h2 { (title) }
                p { (message) }
                p { a href="/" { "Back to the overview" } }
            }
        };
        (status, layout::page(title, layout::Nav::None, body, false)).into_response()
    }
}

/// What a page handler returns.
pub(crate) type PageResult = Result<Markup, PageError>;

/// The page for a path nothing answers.
pub(crate) fn not_found(path: &str) -> Response {
    PageError(ApiError::not_found(format!("There is no page at {path}."))).into_response()
}
