//! `drover archive run`: runs the retention policies now, with a progress bar, and prints the
//! rows moved. Each batch is its own transaction: an interrupted run leaves every row in exactly
//! one table, and the next run continues where it stopped.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;
use serde::Serialize;

use crate::cli::ArchiveCommand;
use crate::config::Config;
use crate::{backend, output, setup};

#[derive(Serialize)]
struct Moved {
    policy: String,
    table: String,
    archive_table: String,
    cutoff: Timestamp,
    rows: u64,
    secs: f64,
}

pub(crate) async fn run(url: &str, config: &Config, command: ArchiveCommand) -> anyhow::Result<()> {
    let ArchiveCommand::Run { policy, json } = command;
    let store = backend::open(url, config, false).await?;
    let result = run_policies(&store, config, policy.as_deref(), json).await;
    store.close().await;
    let moved = result?;
    if json {
        return output::json(&moved);
    }
    for m in &moved {
        println!(
            "{}: moved {} rows from {} to {} (older than {}) in {:.2}s",
            m.policy,
            m.rows,
            m.table,
            m.archive_table,
            output::time(m.cutoff),
            m.secs
        );
    }
    Ok(())
}

async fn run_policies(
    store: &drover_core::DynStore,
    config: &Config,
    only: Option<&str>,
    json: bool,
) -> anyhow::Result<Vec<Moved>> {
    let mut prepared = setup::prepare_retention(store, config).await?;
    if let Some(name) = only {
        prepared.retain(|p| p.policy.name == name);
        if prepared.is_empty() {
            let names: Vec<String> = setup::retention_policies(config)?
                .into_iter()
                .map(|p| p.name)
                .collect();
            anyhow::bail!(
                "no retention policy {name:?}; the policies are: {}",
                names.join(", ")
            );
        }
    }
    let mut moved = Vec::new();
    for policy in prepared {
        let now = Timestamp::now();
        let pending = policy.pending(store, now).await?;
        let progress = if std::io::stderr().is_terminal() && !json {
            ProgressBar::with_draw_target(Some(pending), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        progress.set_style(
            ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} rows  {per_sec}  eta {eta}")
                .expect("valid template"),
        );
        progress.set_message(policy.policy.name.clone());
        let started = std::time::Instant::now();
        let rows = policy.run(store, now, |n| progress.inc(n)).await?;
        progress.finish_and_clear();
        moved.push(Moved {
            policy: policy.policy.name.clone(),
            table: policy.policy.table.clone(),
            archive_table: policy.policy.archive_table.clone(),
            cutoff: policy.params(now).cutoff,
            rows,
            secs: started.elapsed().as_secs_f64(),
        });
    }
    Ok(moved)
}
