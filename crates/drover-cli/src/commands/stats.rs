//! `drover stats`: job counts per queue and state.

use std::collections::BTreeMap;

use drover_core::JobState;
use serde::Serialize;

use crate::config::Config;
use crate::{backend, output};

#[derive(Serialize)]
struct Stats {
    backend: &'static str,
    queues: BTreeMap<String, BTreeMap<JobState, u64>>,
    total: BTreeMap<JobState, u64>,
}

pub(crate) async fn run(url: &str, config: &Config, json: bool) -> anyhow::Result<()> {
    let store = backend::open(url, config, false).await?;
    let counts = store.job_count_by_queue().await?;
    let mut stats = Stats {
        backend: store.backend(),
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
    Ok(())
}
