//! Who may do what: the bearer token (compared in constant time) or a dashboard session that
//! stands for it, the same-origin check that keeps a web page in the operator's browser from
//! driving a loopback server, the host check that keeps a DNS-rebinding page from doing the
//! same, and read-only mode. The health probes and the login page stay open. Every answer
//! forbids framing, so no other site can overlay the dashboard's buttons (clickjacking).

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
    let mut response = check(&state, request, next).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    response
}

async fn check(state: &AppState, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if OPEN.contains(&path.as_str()) {
        return next.run(request).await;
    }
    // Without a token the server listens on loopback only, and the one way a web page reaches
    // it is a name of the page's own that resolves to 127.0.0.1 (DNS rebinding): then Origin
    // and Host agree, and only the Host's name gives the page away.
    if state.settings.token.is_none() && !local_or_ip_host(request.headers()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "request refused: without a token the server answers only to localhost or an IP \
             address in Host (so that a DNS-rebinding web page cannot reach it); set a token \
             to serve under other names",
        )
        .into_response();
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

/// Whether `Host` is `localhost` (or a name under it) or an IP address, with any port. Any IP
/// is safe: rebinding needs a name the attacker's DNS answers for, and a page whose origin is
/// an IP address is the server itself, or another machine the browser would not send here. No
/// `Host` at all (HTTP/1.0) passes: a browser always sends one.
fn local_or_ip_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let is_port = |rest: &str| {
        rest.is_empty()
            || rest
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok())
    };
    if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:7070`.
        return rest
            .split_once(']')
            .is_some_and(|(ip, port)| ip.parse::<std::net::Ipv6Addr>().is_ok() && is_port(port));
    }
    // A name, with a port after its last colon or none.
    let (name, port) = host.rfind(':').map_or((host, ""), |at| host.split_at(at));
    if !is_port(port) {
        return false;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
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
    fn only_localhost_and_ip_addresses_pass_the_host_check() {
        let with_host = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, host.parse().unwrap());
            local_or_ip_host(&headers)
        };
        for ok in [
            "127.0.0.1:7070",
            "127.0.0.1",
            "localhost:7070",
            "LOCALHOST",
            "app.localhost:8080",
            "[::1]:7070",
            "localhost.:7070",
            // Any IP: no DNS answer is involved.
            "10.0.0.5:7070",
        ] {
            assert!(with_host(ok), "{ok}");
        }
        for refused in [
            "evil.example:7070",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io:7070",
            "[evil]:7070",
            "[::1]garbage",
            "localhost:http",
        ] {
            assert!(!with_host(refused), "{refused}");
        }
        assert!(
            local_or_ip_host(&HeaderMap::new()),
            "HTTP/1.0 sends no Host"
        );
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
        assert!(is_operator_action(&Method::POST, "/api/v1/slots/2/drain"));
        // A program's own reservation, as its leases: what a read-only server still serves.
        assert!(!is_operator_action(&Method::POST, "/api/v1/reservations"));
        assert!(!is_operator_action(
            &Method::POST,
            "/api/v1/reservations/3/release"
        ));
        assert!(!is_operator_action(&Method::GET, "/api/v1/jobs/7"));
    }
}
