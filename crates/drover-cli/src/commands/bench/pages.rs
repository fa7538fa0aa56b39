//! `drover bench --scenario pages`: how fast the dashboard and the API answer on a big table.
//! Fills a fresh database with `--jobs` jobs (80 % completed, 5 % discarded with an error,
//! 15 % waiting; four queues, five kinds, args with a tenant and an order number), starts an
//! engine (so the leader keeps the cached counts) and the real HTTP server on a loopback port,
//! then fetches every page `--latency-jobs` times over HTTP and reports the median, p95 and
//! maximum time to the last byte.

use std::time::{Duration, Instant};

use drover::EngineConfig;
use drover_core::{DynStore, NewJob, Outcome};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const QUEUES: [&str; 4] = ["mail", "billing", "reports", "default"];
const KINDS: [&str; 5] = [
    "mail.send",
    "invoice.render",
    "report.build",
    "user.sync",
    "drover.noop",
];
const CHUNK: usize = 10_000;

/// One page's times.
#[derive(Debug, Serialize)]
pub(super) struct PageTime {
    pub(super) page: String,
    pub(super) requests: usize,
    pub(super) p50_ms: f64,
    pub(super) p95_ms: f64,
    pub(super) max_ms: f64,
    pub(super) bytes: usize,
}

fn job(i: usize) -> NewJob {
    let mut job = NewJob::new(
        KINDS[i % KINDS.len()],
        format!(r#"{{"tenant":{},"order":{i}}}"#, i % 1000),
    );
    job.queue = QUEUES[i % QUEUES.len()].into();
    job
}

/// Fills the table: every chunk is inserted, claimed and finished through the store, except
/// the last 15 %, which stay waiting.
async fn fill(store: &DynStore, n: usize) -> anyhow::Result<()> {
    let client = super::client(store);
    let finished = n * 85 / 100;
    let mut i = 0;
    while i < n {
        let batch = (n - i).min(CHUNK);
        let jobs: Vec<NewJob> = (i..i + batch).map(job).collect();
        for chunk in jobs.chunks(super::BULK_CHUNK) {
            client.insert(chunk.to_vec()).await?;
        }
        // Claims take the oldest first: this chunk's share of the finished 85 %.
        let to_finish = batch.min(finished.saturating_sub(i));
        if to_finish > 0 {
            for queue in QUEUES {
                // One job in 17 fails for good: 5 % of the finished ones.
                super::finish_claimed(store, queue, to_finish.div_ceil(QUEUES.len()), |job| {
                    if job.id % 17 == 0 {
                        Outcome::Discard {
                            error: "card declined by the payment provider".into(),
                        }
                    } else {
                        Outcome::Completed
                    }
                })
                .await?;
            }
        }
        i += batch;
    }
    Ok(())
}

/// GET `path` over a new connection; the status and the body's size.
async fn get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, usize)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP status in {head:?}"))?;
    Ok((status, answer.len()))
}

pub(super) async fn pages(
    store: &DynStore,
    n: usize,
    requests: usize,
) -> anyhow::Result<Vec<PageTime>> {
    fill(store, n).await?;
    let server = super::http_load::Server::start_with(
        store,
        EngineConfig {
            // The leader refreshes the cached counts often, so the pages show them soon.
            counts: drover::services::counter::CounterConfig {
                interval: Duration::from_millis(500),
                ..Default::default()
            },
            ..EngineConfig::default()
        },
    )
    .await?;
    let (addr, admin) = (server.addr, server.engine.admin().clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !admin.queues().await?.iter().any(|q| q.counted_at.is_some()) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the leader never counted the jobs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let newest = admin.jobs(&Default::default(), None, 1).await?.jobs[0].id;
    let deep = newest / 2;
    let paths = [
        "/".to_owned(),
        "/jobs".to_owned(),
        "/jobs?state=completed".to_owned(),
        "/jobs?state=discarded".to_owned(),
        "/jobs?state=available&queue=billing".to_owned(),
        "/jobs?kind=report.build&created_within=24h".to_owned(),
        "/jobs?args=%7B%22tenant%22%3A7%7D".to_owned(),
        // No job has it: the search reads its budget of ids and says where it stopped.
        "/jobs?args=%7B%22tenant%22%3A-1%7D".to_owned(),
        format!("/jobs?after={deep}"),
        format!("/jobs/{deep}"),
        "/queues".to_owned(),
        "/cron".to_owned(),
        "/retention".to_owned(),
        "/processes".to_owned(),
        "/capacity".to_owned(),
        "/api/v1/jobs?limit=50".to_owned(),
        "/api/v1/queues".to_owned(),
        "/api/v1/jobs/count?state=discarded".to_owned(),
    ];
    let times = measure(addr, &paths, requests).await?;
    server.stop().await?;
    Ok(times)
}

/// Fetches each of `paths` once to warm up, then `requests` times, timing each to its last byte.
async fn measure(
    addr: std::net::SocketAddr,
    paths: &[String],
    requests: usize,
) -> anyhow::Result<Vec<PageTime>> {
    let mut times = Vec::new();
    for path in paths {
        let path = path.clone();
        let (status, _) = get(addr, &path).await?; // warm
        anyhow::ensure!(status == 200, "GET {path} answered {status}");
        let mut ms = Vec::with_capacity(requests);
        let mut bytes = 0;
        for _ in 0..requests {
            let start = Instant::now();
            let (status, size) = get(addr, &path).await?;
            ms.push(start.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(status == 200, "GET {path} answered {status}");
            bytes = size;
        }
        ms.sort_by(f64::total_cmp);
        times.push(PageTime {
            p50_ms: super::percentile(&ms, 50.0),
            p95_ms: super::percentile(&ms, 95.0),
            max_ms: *ms.last().unwrap_or(&0.0),
            page: path,
            requests,
            bytes,
        });
    }
    Ok(times)
}

/// The times as a table, or one JSON object per page.
pub(super) fn print(times: &[PageTime], backend: &str, n: usize, json: bool) -> anyhow::Result<()> {
    if json {
        for time in times {
            outln!("{}", serde_json::to_string(time)?);
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = times
        .iter()
        .map(|t| {
            vec![
                t.page.clone(),
                format!("{:.1}", t.p50_ms),
                format!("{:.1}", t.p95_ms),
                format!("{:.1}", t.max_ms),
                format!("{:.1}", t.bytes as f64 / 1024.0),
            ]
        })
        .collect();
    crate::output::table(&["PAGE", "P50 MS", "P95 MS", "MAX MS", "KB"], &rows);
    outln!(
        "({backend}, {n} jobs in the table; {} requests per page, each on a new connection, \
         timed to the last byte)",
        times.first().map_or(0, |t| t.requests)
    );
    Ok(())
}
