//! `drover stats`: job counts per queue and state.

use std::collections::BTreeMap;

use drover_core::JobState;
use serde::Serialize;

use crate::config::Config;
use crate::{backend, output, setup};

#[derive(Serialize)]
struct Leader {
    id: String,
    host: String,
    pid: Option<u32>,
    term: i64,
    elected_at: jiff::Timestamp,
    expires_at: jiff::Timestamp,
}

#[derive(Serialize)]
struct Stats {
    backend: &'static str,
    leader: Option<Leader>,
    processes: Vec<drover_core::ProcessRecord>,
    /// The processes that stopped heartbeating (killed, or cut off from the database): listed
    /// until the leader prunes them, working nothing.
    silent: Vec<String>,
    /// The HTTP workers every server lists (as of its last heartbeat).
    http_workers: Vec<drover::remote::HttpWorkerView>,
    queues: BTreeMap<String, BTreeMap<JobState, u64>>,
    total: BTreeMap<JobState, u64>,
}

pub(crate) async fn run(url: &str, config: &Config, json: bool) -> anyhow::Result<()> {
    let store = backend::open_existing(url, config).await?;
    let admin = setup::admin(store.clone(), config)?;
    let counts = admin.exact_counts().await?;
    let cluster = admin.cluster().await?;
    let silent = cluster.silent;
    let processes = cluster.processes;
    let leader = cluster.leader.map(|leader| {
        let process = processes.iter().find(|p| p.id == leader.leader_id);
        Leader {
            host: process
                .map(|p| p.host.clone())
                .unwrap_or_else(|| leader.leader_id.split(':').next().unwrap_or("").to_owned()),
            pid: process.map(|p| p.pid),
            id: leader.leader_id,
            term: leader.term,
            elected_at: leader.elected_at,
            expires_at: leader.expires_at,
        }
    });
    let mut stats = Stats {
        backend: store.backend(),
        leader,
        processes,
        silent,
        http_workers: cluster.http_workers,
        queues: BTreeMap::new(),
        total: JobState::ALL.iter().map(|&s| (s, 0)).collect(),
    };
    for count in counts {
        let queue = stats
            .queues
            .entry(count.queue)
            .or_insert_with(|| JobState::ALL.iter().map(|&s| (s, 0)).collect());
        queue.insert(count.state, count.count);
        *stats.total.entry(count.state).or_default() += count.count;
    }
    store.close().await;
    if json {
        return output::json(&stats);
    }
    let mut header = vec!["QUEUE"];
    header.extend(JobState::ALL.iter().map(|s| s.as_str()));
    let row = |name: &str, counts: &BTreeMap<JobState, u64>| {
        let mut row = vec![name.to_owned()];
        row.extend(JobState::ALL.iter().map(|s| counts[s].to_string()));
        row
    };
    let mut rows: Vec<Vec<String>> = stats.queues.iter().map(|(q, c)| row(q, c)).collect();
    rows.push(row("(all)", &stats.total));
    output::table(&header, &rows);
    outln!();
    match &stats.leader {
        Some(leader) => outln!(
            "leader: {} (term {}, until {})",
            leader.id,
            leader.term,
            output::time(leader.expires_at)
        ),
        None => outln!("leader: none"),
    }
    let rows: Vec<Vec<String>> = stats
        .processes
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                p.host.clone(),
                p.pid.to_string(),
                p.queues.join(","),
                output::time(p.started_at),
                output::time(p.heartbeat_at),
                match p.draining_since {
                    _ if stats.silent.contains(&p.id) => "silent (stopped, or cut off)".to_owned(),
                    Some(since) => format!("draining since {}", output::time(since)),
                    None => "working".to_owned(),
                },
            ]
        })
        .collect();
    if !rows.is_empty() {
        output::table(
            &[
                "PROCESS",
                "HOST",
                "PID",
                "QUEUES",
                "STARTED",
                "LAST SEEN",
                "STATE",
            ],
            &rows,
        );
    }
    print_http_workers(&stats.http_workers);
    Ok(())
}

/// The HTTP workers, as a table after the processes'.
fn print_http_workers(workers: &[drover::remote::HttpWorkerView]) {
    if workers.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                w.queues.join(","),
                w.running.to_string(),
                output::time(w.last_seen),
                w.server.clone(),
            ]
        })
        .collect();
    outln!();
    output::table(
        &[
            "HTTP WORKER",
            "QUEUES",
            "RUNNING",
            "LAST LEASE REQUEST",
            "THROUGH SERVER",
        ],
        &rows,
    );
}
