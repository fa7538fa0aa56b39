//! The HTTP surface of `drover serve`: the JSON API under `/api/v1/`, its OpenAPI document,
//! `/metrics`, the health probes, and the dashboard at `/`. Handlers are thin: each parses its input, calls the admin
//! seam (`drover::Admin`) or the remote-worker protocol (`drover::remote`), and returns
//! `Result<Json<T>, ApiError>`. Authentication, the same-origin check, the body limit and the
//! request metrics are middleware, not per-handler checks.

mod auth;
mod dashboard;
mod error;
mod extract;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use drover::remote::RemoteWorkers;
use drover::{Admin, EngineProbe};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub(crate) use error::ApiError;

/// Where `drover serve` listens unless told otherwise.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Largest request body by default.
pub(crate) const DEFAULT_MAX_BODY: usize = 2 * 1024 * 1024;
/// [`HttpSettings::header_timeout`] by default.
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP settings in force, checked.
#[derive(Clone)]
pub(crate) struct HttpSettings {
    pub(crate) listen: SocketAddr,
    pub(crate) token: Option<String>,
    pub(crate) max_body_bytes: usize,
    pub(crate) read_only: bool,
    /// How long a client may take to send a request's headers, and a kept-alive connection may
    /// sit idle. `axum::serve` sets no limit: a client that never finished its headers held its
    /// connection (and a file descriptor) for ever.
    pub(crate) header_timeout: Duration,
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never appears in logs.
        f.debug_struct("HttpSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("read_only", &self.read_only)
            .field("header_timeout", &self.header_timeout)
            .finish()
    }
}

impl HttpSettings {
    /// The settings from `--listen`, the environment and `[http]`; `None` when nothing is to be
    /// served (`worker` without `--listen`, or `--listen off`). Refuses to listen off loopback
    /// without a token.
    pub(crate) fn resolve(
        flag: Option<&str>,
        config: &Config,
        serve_by_default: bool,
    ) -> anyhow::Result<Option<HttpSettings>> {
        // `[http] listen` is for `serve`: a `worker` beside it, on the same config, would
        // fail its start on the port `serve` holds.
        let configured = serve_by_default
            .then_some(config.http.listen.as_deref())
            .flatten();
        if !serve_by_default && flag.is_none() && config.http.listen.is_some() {
            tracing::info!(
                "[http] listen is for serve; this worker serves HTTP only with --listen ADDR"
            );
        }
        // Checked even when the flag overrides it: a bad key would fail the next start that
        // goes without the flag.
        if let Some(listen) = config.http.listen.as_deref().filter(|l| *l != "off") {
            resolve_listen(listen, "[http] listen")?;
        }
        let source = if flag.is_some() {
            "--listen"
        } else {
            "[http] listen"
        };
        let listen = match flag.or(configured) {
            Some("off") => return Ok(None),
            Some(listen) => listen.to_owned(),
            None if serve_by_default => DEFAULT_LISTEN.to_owned(),
            None => return Ok(None),
        };
        let listen = resolve_listen(&listen, source)?;
        // Set but empty (`DROVER_TOKEN=` in a unit file) is taken as unset, as shells do.
        let token = std::env::var("DROVER_TOKEN")
            .ok()
            .filter(|token| !token.is_empty())
            .or_else(|| config.http.token.clone());
        if let Some(token) = &token
            && token.len() < 16
        {
            bail!("the API token is shorter than 16 characters; use a long random one");
        }
        if token.is_none() && !listen.ip().is_loopback() {
            bail!(
                "refusing to listen on {listen} without a token: anyone who can reach it could \
                 run jobs. Set DROVER_TOKEN (or [http] token), or listen on 127.0.0.1"
            );
        }
        let max_body_bytes = config.http.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        if max_body_bytes < 1024 {
            bail!("http.max_body_bytes {max_body_bytes} is under 1024");
        }
        let max_args_bytes = config
            .database
            .max_args_bytes
            .unwrap_or(drover_core::validate::Limits::default().max_args_bytes);
        if max_args_bytes >= max_body_bytes {
            // Not refused: the CLI and the library enqueue without the API's body limit.
            tracing::warn!(
                max_args_bytes,
                max_body_bytes,
                "[database] max_args_bytes is not under [http] max_body_bytes: the API refuses \
                 (413) an enqueue whose args are near the args limit, which the CLI accepts"
            );
        }
        let header_timeout = config.http.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT);
        if header_timeout < Duration::from_millis(100) {
            bail!("http.header_timeout {header_timeout:?} is under 100 ms");
        }
        Ok(Some(HttpSettings {
            listen,
            token,
            max_body_bytes,
            read_only: config.http.read_only.unwrap_or(false),
            header_timeout,
        }))
    }

    /// Binds the listener (before the engine starts, so a port in use fails the start).
    pub(crate) async fn bind(&self) -> anyhow::Result<TcpListener> {
        TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("cannot listen on {}", self.listen))
    }
}

/// An address and port (`127.0.0.1:7070`, `[::1]:7070`), or a host name and port
/// (`localhost:7070`, its first address); errors name `source` (`--listen`, `[http] listen`),
/// and quote the value only when it came from the command line (see `config_errors`).
fn resolve_listen(listen: &str, source: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let expected = || {
        let what = if source.starts_with('-') {
            format!("{source} {listen:?}")
        } else {
            source.to_owned()
        };
        format!("{what}: expected an address or host name and a port, like 127.0.0.1:7070")
    };
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    listen
        .to_socket_addrs()
        .with_context(expected)?
        .next()
        .with_context(expected)
}

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) admin: Admin,
    pub(crate) remote: RemoteWorkers,
    pub(crate) probe: EngineProbe,
    pub(crate) settings: Arc<HttpSettings>,
    /// Fires when the server is shutting down: long polls return at once.
    pub(crate) stop: CancellationToken,
    /// Browsers signed in to the dashboard (when a token guards the server).
    pub(crate) sessions: Arc<dashboard::session::Sessions>,
}

impl AppState {
    /// The state of a server in front of `engine`, with no browser signed in yet.
    pub(crate) fn new(
        engine: &drover::EngineHandle,
        settings: HttpSettings,
        stop: CancellationToken,
    ) -> Self {
        Self {
            admin: engine.admin().clone(),
            remote: engine.remote().clone(),
            probe: engine.probe(),
            settings: Arc::new(settings),
            stop,
            sessions: Default::default(),
        }
    }
}

/// The whole application: the API, the OpenAPI document, metrics, probes and the dashboard,
/// with middleware.
pub(crate) fn router(state: AppState) -> Router {
    let (api, mut openapi) = routes::api().split_for_parts();
    routes::declare_common_errors(&mut openapi);
    let openapi = Arc::new(openapi);
    api.merge(routes::openapi_route(openapi))
        .merge(dashboard::router())
        .method_not_allowed_fallback(routes::method_not_allowed)
        // Before the layers, so that a path no route matches is guarded and counted (as
        // `route="unmatched"`) like any other request.
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body_guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::record_request,
        ))
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .with_state(state)
}

/// Refuses a body declared (`Content-Length`) over the limit before reading it: the limit
/// itself only stops a body once that many bytes arrived, and a client that declares more than
/// it sends would hold the request open until it gave up. Then reads the body, which must
/// arrive within `header_timeout` as the headers had to: hyper's timeout covers the headers
/// only, and a client trickling its body (or sending less than it declared) held a request,
/// and its connection, open for as long as it liked.
async fn body_guard(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|bytes| bytes > state.settings.max_body_bytes as u64) {
        return ApiError::body_too_large().into_response();
    }
    // A compressed body would otherwise be read as JSON and refused as garbage.
    let encoding = request
        .headers()
        .get(axum::http::header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    if let Some(encoding) = encoding.filter(|e| !e.is_empty() && e != "identity") {
        return ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            format!("Content-Encoding {encoding:?} is not taken: send the body uncompressed"),
        )
        .into_response();
    }
    let (parts, body) = request.into_parts();
    let limit = state.settings.max_body_bytes;
    let within = state.settings.header_timeout;
    let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit));
    let body = match tokio::time::timeout(within, read).await {
        Ok(Ok(collected)) => axum::body::Body::from(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
            return ApiError::body_too_large().into_response();
        }
        Ok(Err(err)) => {
            return ApiError::invalid("body", format!("the request body could not be read: {err}"))
                .into_response();
        }
        Err(_) => {
            return ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "invalid_request",
                format!("the request body did not arrive within {within:?} (http.header_timeout)"),
            )
            .into_response();
        }
    };
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// Serves until `stop` fires, then finishes the requests in flight. hyper's HTTP/1 server,
/// driven here rather than by `axum::serve`, for [`HttpSettings::header_timeout`].
pub(crate) async fn serve(
    mut listener: TcpListener,
    state: AppState,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::Listener;
    let header_timeout = state.settings.header_timeout;
    let app = router(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        // `Listener::accept` waits out errors such as running out of file descriptors.
        let (stream, _) = tokio::select! {
            accepted = Listener::accept(&mut listener) => accepted,
            _ = stop.cancelled() => break,
        };
        // Small answers go out at once, not after Nagle's delay.
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection =
            connections.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}
