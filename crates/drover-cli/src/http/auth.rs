//! Who may do what: the bearer token (compared in constant time) or a dashboard session that
//! stands for it, the same-origin check that keeps a web page in the operator's browser from
//! driving a loopback server, and read-only mode. The health probes and the login page stay
//! open.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::{ApiError, AppState, dashboard};

/// Paths that answer without a token (load balancers and orchestrators probe them).
pub(crate) const OPEN: [&str; 2] = ["/healthz", "/readyz"];

/// Operator actions, refused in read-only mode (job traffic — enqueues and leases — is not).
fn is_operator_action(method: &Method, path: &str) -> bool {
    if method == Method::GET || method == Method::HEAD {
        return false;
    }
    let path = path.trim_end_matches('/');
    path.starts_with("/api/v1/queues/")
        || path.starts_with("/api/v1/cron/")
        || path.starts_with("/api/v1/slots/")
        || path == "/api/v1/jobs/actions"
        || (path.starts_with("/api/v1/jobs/") && path != "/api/v1/jobs/batch")
}

pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if OPEN.contains(&path.as_str()) {
        return next.run(request).await;
    }
    if let Some(expected) = &state.settings.token
        && !dashboard::is_open(&path)
        && !presented_token(request.headers()).is_some_and(|got| same(got, expected))
        && !state.sessions.signed_in(request.headers())
    {
        if dashboard::is_page(&path) && request.method() == Method::GET {
            let wanted = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let next = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("next", wanted)
                .finish();
            return Redirect::to(&format!("/login?{next}")).into_response();
        }
        let message = if presented_token(request.headers()).is_some() {
            "the bearer token is not the server's"
        } else {
            "a bearer token is required: Authorization: Bearer <token>"
        };
        let mut response =
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD && !same_origin(request.headers()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "cross-site request refused: its Origin does not match the server",
        )
        .into_response();
    }
    if state.settings.read_only && is_operator_action(&method, &path) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "the server is read-only ([http] read_only = true)",
        )
        .into_response();
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's name is
/// case-insensitive (RFC 7235).
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares in time that depends on the lengths only, never on where the first difference
/// is. Hand-written (eight lines) rather than a dependency.
pub(crate) fn same(got: &str, expected: &str) -> bool {
    let (got, expected) = (got.as_bytes(), expected.as_bytes());
    if got.len() != expected.len() {
        return false;
    }
    got.iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

/// A state-changing request from a browser carries `Origin` (and `Sec-Fetch-Site`); one from
/// another site must not act, token or not. Programs send neither and pass.
fn same_origin(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site" || site == "same-site")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o == h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content() {
        assert!(same("s3cret-token-0123", "s3cret-token-0123"));
        assert!(!same("s3cret-token-0124", "s3cret-token-0123"));
        assert!(!same("short", "s3cret-token-0123"));
    }

    #[test]
    fn cross_origin_writes_are_refused() {
        let mut headers = HeaderMap::new();
        assert!(same_origin(&headers), "programs send no Origin");
        headers.insert(header::HOST, "127.0.0.1:7070".parse().unwrap());
        headers.insert(header::ORIGIN, "http://127.0.0.1:7070".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, "http://127.0.0.1:7070".parse().unwrap());
        headers.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&headers));
    }

    #[test]
    fn read_only_refuses_operator_actions_only() {
        assert!(is_operator_action(&Method::POST, "/api/v1/jobs/7/retry"));
        assert!(is_operator_action(
            &Method::POST,
            "/api/v1/queues/mail/pause"
        ));
        assert!(is_operator_action(&Method::POST, "/api/v1/jobs/actions"));
        assert!(!is_operator_action(&Method::POST, "/api/v1/jobs"));
        assert!(!is_operator_action(&Method::POST, "/api/v1/jobs/batch"));
        assert!(!is_operator_action(&Method::POST, "/api/v1/leases"));
        assert!(!is_operator_action(&Method::GET, "/api/v1/jobs/7"));
    }
}
