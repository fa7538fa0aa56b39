//! `drover bench --scenario http-enqueue|http-batch|http-drain`: the HTTP API under load. The
//! real server (the router `drover serve` runs, with its middleware) listens on a loopback port
//! in this process, over a fresh database; the load comes from hyper's client over keep-alive
//! connections, also in this process, so the figures include the client's CPU on the same
//! cores, as any load tool on this machine would.
//!
//! - `http-enqueue`: `--jobs` single-job `POST /api/v1/jobs`, from [`SINGLE_CONNECTIONS`]
//!   connections each sending its next request when the last one is answered.
//! - `http-batch`: `POST /api/v1/jobs/batch` of [`BATCH_SIZE`] jobs, from
//!   [`BATCH_CONNECTIONS`] connections.
//! - `http-drain`: `--jobs` jobs enqueued first (not timed); then [`DRAIN_WORKERS`] workers
//!   lease up to [`DRAIN_LEASE`] jobs at a time and complete each batch in one
//!   `POST /api/v1/leases/complete`. The clock stops at the last acknowledged completion.
//!
//! Every answer is checked (status and count), so a run that lost a job fails rather than
//! reporting a figure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drover::{Engine, EngineConfig};
use drover_core::DynStore;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{BULK_CHUNK, QUEUE, Run, client, noop_jobs};
use crate::cli::{BenchArgs, Scenario};
use crate::http::{AppState, HttpSettings};

/// Connections sending single-job enqueues (the issue's figure).
pub(super) const SINGLE_CONNECTIONS: usize = 32;
/// Connections sending batches.
pub(super) const BATCH_CONNECTIONS: usize = 4;
/// Jobs per batch request.
pub(super) const BATCH_SIZE: usize = 1000;
/// Workers draining over HTTP.
pub(super) const DRAIN_WORKERS: usize = 4;
/// Most jobs per lease request.
pub(super) const DRAIN_LEASE: usize = 100;

/// The HTTP scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HttpScenario {
    Enqueue,
    Batch,
    Drain,
}

impl HttpScenario {
    /// The HTTP scenario `scenario` names, if it names one.
    pub(super) fn of(scenario: Scenario) -> Option<HttpScenario> {
        match scenario {
            Scenario::HttpEnqueue => Some(HttpScenario::Enqueue),
            Scenario::HttpBatch => Some(HttpScenario::Batch),
            Scenario::HttpDrain => Some(HttpScenario::Drain),
            _ => None,
        }
    }

    /// The measure's name in the output.
    pub(super) fn name(self) -> &'static str {
        match self {
            HttpScenario::Enqueue => "http_enqueue",
            HttpScenario::Batch => "http_batch",
            HttpScenario::Drain => "http_drain",
        }
    }

    /// Connections (or workers) sending requests at once.
    pub(super) fn connections(self) -> usize {
        match self {
            HttpScenario::Enqueue => SINGLE_CONNECTIONS,
            HttpScenario::Batch => BATCH_CONNECTIONS,
            HttpScenario::Drain => DRAIN_WORKERS,
        }
    }
}

/// The server under test: the engine (for the remote-worker protocol and the admin seam) and
/// the router on a loopback port. Also the page benchmark's server (`pages.rs`).
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    pub(super) engine: drover::EngineHandle,
}

impl Server {
    async fn start(store: &DynStore) -> anyhow::Result<Server> {
        Self::start_with(store, EngineConfig::default()).await
    }

    /// Starts an engine with `config` — its queues replaced by one of its own, so that no
    /// local worker takes the benchmark's jobs — and the router in front of it.
    pub(super) async fn start_with(
        store: &DynStore,
        config: EngineConfig,
    ) -> anyhow::Result<Server> {
        let engine = Engine::builder(store.clone())
            .config(EngineConfig {
                queues: [("bench_idle".to_owned(), 1)].into(),
                poll_interval: Duration::from_secs(60),
                ..config
            })
            .builtin_tasks()
            .build()?
            .start();
        let settings = HttpSettings {
            listen: "127.0.0.1:0".parse()?,
            token: None,
            max_body_bytes: crate::http::DEFAULT_MAX_BODY,
            read_only: false,
            header_timeout: crate::http::DEFAULT_HEADER_TIMEOUT,
        };
        let listener = settings.bind().await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let state = AppState::new(&engine, settings, stop.clone());
        let task = tokio::spawn(crate::http::serve(listener, state, stop.clone()));
        Ok(Server {
            addr,
            stop,
            task,
            engine,
        })
    }

    pub(super) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        self.engine.shutdown().await;
        Ok(())
    }
}

/// A keep-alive client for one server.
#[derive(Clone)]
struct Load {
    client: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Load {
    fn new(addr: SocketAddr, connections: usize) -> Load {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Load {
            client,
            base: format!("http://{addr}"),
        }
    }

    /// POSTs `body` to `path`; the status and the answer's body.
    async fn post(&self, path: &str, body: String) -> anyhow::Result<(StatusCode, Bytes)> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = self.client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// POSTs and insists on `expected`.
    async fn post_expect(
        &self,
        path: &str,
        body: String,
        expected: StatusCode,
    ) -> anyhow::Result<Bytes> {
        let (status, answer) = self.post(path, body).await?;
        if status != expected {
            anyhow::bail!(
                "POST {path} answered {status}, not {expected}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(answer)
    }
}

/// One run of `scenario` on a fresh database.
pub(super) async fn run(
    store: &DynStore,
    scenario: HttpScenario,
    args: &BenchArgs,
) -> anyhow::Result<Run> {
    let server = Server::start(store).await?;
    let load = Load::new(server.addr, scenario.connections());
    let result = match scenario {
        HttpScenario::Enqueue => enqueue_single(&load, args.jobs).await,
        HttpScenario::Batch => enqueue_batches(&load, args.jobs).await,
        HttpScenario::Drain => drain(store, &load, args.jobs).await,
    };
    server.stop().await?;
    let secs = result?;
    Ok(Run {
        n: args.jobs,
        secs,
        latencies_ms: Vec::new(),
        timeline: Vec::new(),
        slowest: Vec::new(),
    })
}

/// Splits `n` into `parts` shares that differ by at most one.
fn share(n: usize, parts: usize, part: usize) -> usize {
    n / parts + usize::from(part < n % parts)
}

async fn enqueue_single(load: &Load, n: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..SINGLE_CONNECTIONS {
        let load = load.clone();
        let jobs = share(n, SINGLE_CONNECTIONS, c);
        tasks.spawn(async move {
            for i in 0..jobs {
                let body =
                    format!(r#"{{"kind":"drover.noop","queue":"{QUEUE}","args":{{"i":{i}}}}}"#);
                load.post_expect("/api/v1/jobs", body, StatusCode::CREATED)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// A batch request's body: `jobs` no-op jobs.
fn batch_body(first: usize, jobs: usize) -> String {
    let mut body = String::with_capacity(jobs * 64 + 16);
    body.push_str(r#"{"jobs":["#);
    for i in first..first + jobs {
        if i > first {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"kind":"drover.noop","queue":"{QUEUE}","args":{{"i":{i}}}}}"#
        ));
    }
    body.push_str("]}");
    body
}

#[derive(Deserialize)]
struct BatchAnswer {
    inserted: usize,
}

async fn enqueue_batches(load: &Load, n: usize) -> anyhow::Result<f64> {
    // The bodies are built before the clock starts: the client's JSON is not the server's cost.
    let batches: Vec<String> = (0..n)
        .step_by(BATCH_SIZE)
        .map(|first| batch_body(first, BATCH_SIZE.min(n - first)))
        .collect();
    let next = Arc::new(std::sync::Mutex::new(batches));
    let inserted = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..BATCH_CONNECTIONS {
        let load = load.clone();
        let next = next.clone();
        let inserted = inserted.clone();
        tasks.spawn(async move {
            loop {
                let Some(body) = next.lock().expect("batch list poisoned").pop() else {
                    return anyhow::Ok(());
                };
                let answer = load
                    .post_expect("/api/v1/jobs/batch", body, StatusCode::CREATED)
                    .await?;
                let answer: BatchAnswer = serde_json::from_slice(&answer)?;
                inserted.fetch_add(answer.inserted, Ordering::Relaxed);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let secs = start.elapsed().as_secs_f64();
    let inserted = inserted.load(Ordering::Relaxed);
    anyhow::ensure!(
        inserted == n,
        "the server acknowledged {inserted} of {n} jobs"
    );
    Ok(secs)
}

#[derive(Deserialize)]
struct Leased {
    jobs: Vec<LeasedJob>,
}

#[derive(Deserialize)]
struct LeasedJob {
    token: String,
}

#[derive(Deserialize)]
struct CompletedOne {
    done: Option<serde_json::Value>,
    error: Option<String>,
}

async fn drain(store: &DynStore, load: &Load, n: usize) -> anyhow::Result<f64> {
    let client = client(store);
    for chunk in noop_jobs(n).chunks(BULK_CHUNK) {
        client.insert(chunk.to_vec()).await?;
    }
    let completed = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(std::sync::OnceLock::new());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..DRAIN_WORKERS {
        let load = load.clone();
        let completed = completed.clone();
        let finished = finished.clone();
        tasks.spawn(async move {
            let lease = format!(
                r#"{{"queues":["{QUEUE}"],"worker":"bench-{w}","max":{DRAIN_LEASE},"wait":0.5}}"#
            );
            while completed.load(Ordering::Relaxed) < n {
                let (status, answer) = load.post("/api/v1/leases", lease.clone()).await?;
                if status == StatusCode::NO_CONTENT {
                    continue;
                }
                anyhow::ensure!(
                    status == StatusCode::OK,
                    "POST /api/v1/leases answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
                let leased: Leased = serde_json::from_slice(&answer)?;
                let tokens: Vec<String> = leased.jobs.into_iter().map(|j| j.token).collect();
                let count = tokens.len();
                let body = serde_json::json!({ "tokens": tokens }).to_string();
                let answer = load
                    .post_expect("/api/v1/leases/complete", body, StatusCode::OK)
                    .await?;
                let results: Vec<CompletedOne> = serde_json::from_slice(&answer)?;
                if let Some(err) = results.iter().find_map(|r| r.error.as_ref()) {
                    anyhow::bail!("a completion was refused: {err}");
                }
                let done = results.iter().filter(|r| r.done.is_some()).count();
                anyhow::ensure!(done == count, "{done} of {count} completions recorded");
                if completed.fetch_add(done, Ordering::Relaxed) + done >= n {
                    // The clock stops at the last acknowledged completion, not when the other
                    // workers' long polls end.
                    let _ = finished.set(Instant::now());
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let completed = completed.load(Ordering::Relaxed);
    anyhow::ensure!(completed == n, "{completed} of {n} jobs completed");
    let end = finished
        .get()
        .ok_or_else(|| anyhow::anyhow!("the drain never finished"))?;
    Ok(end.duration_since(start).as_secs_f64())
}
