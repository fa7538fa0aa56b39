//! `drover queues list|pause|resume`, through the admin seam.

use drover_core::JobState;

use crate::cli::QueuesCommand;
use crate::config::Config;
use crate::{backend, output, setup};

pub(crate) async fn run(url: &str, config: &Config, command: QueuesCommand) -> anyhow::Result<()> {
    if let QueuesCommand::Pause { queue } | QueuesCommand::Resume { queue } = &command {
        drover_core::validate::check_name("queue", queue)?;
    }
    let store = open(url, config, &command).await?;
    let admin = setup::admin(store.clone(), config)?;
    let result = async {
        match command {
            QueuesCommand::List { json } => print_list(&admin.queues().await?, json),
            QueuesCommand::Pause { queue } => {
                let view = admin.set_paused(&queue, true).await?;
                outln!("queue {queue} is paused: its jobs wait, running jobs finish");
                warn_if_unknown(config, &view);
                Ok(())
            }
            QueuesCommand::Resume { queue } => {
                let view = admin.set_paused(&queue, false).await?;
                outln!("queue {queue} is running again");
                warn_if_unknown(config, &view);
                Ok(())
            }
        }
    }
    .await;
    store.close().await;
    result
}

/// Passes the admin's note on a queue nobody works, unless the config names the queue (this
/// command runs no workers, so a configured queue may have none running yet).
fn warn_if_unknown(config: &Config, view: &drover::admin::QueueView) {
    if let Some(note) = view
        .note
        .as_ref()
        .filter(|_| !config.queues.contains_key(&view.name))
    {
        eprintln!("note: {note}");
    }
}

/// The store, which a pause may create (it may come before any worker ran), and a list or a
/// resume (of a pause that must exist) may not.
async fn open(
    url: &str,
    config: &Config,
    command: &QueuesCommand,
) -> anyhow::Result<drover_core::DynStore> {
    match command {
        QueuesCommand::List { .. } | QueuesCommand::Resume { .. } => {
            backend::open_existing(url, config).await
        }
        _ => backend::open(url, config, false).await,
    }
}

/// Prints the queues as a table, or as JSON.
fn print_list(queues: &[drover::admin::QueueView], json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(&queues);
    }
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let count = |state| {
                let n = q.counts[&state];
                if q.counted_at.is_none() {
                    // Never counted: unknown, not empty.
                    "-".to_owned()
                } else if q.estimated {
                    format!("{n}+")
                } else {
                    n.to_string()
                }
            };
            vec![
                q.name.clone(),
                if q.paused { "paused" } else { "running" }.into(),
                count(JobState::Available),
                count(JobState::Running),
                count(JobState::Scheduled),
                count(JobState::Retryable),
                count(JobState::Completed),
                count(JobState::Discarded),
                count(JobState::Cancelled),
                q.oldest_available_age_seconds
                    .map(|s| format!("{s:.1}s"))
                    .unwrap_or_else(|| "-".into()),
                q.processes.to_string(),
                q.http_workers.to_string(),
                output::opt_time(q.counted_at),
            ]
        })
        .collect();
    output::table(
        &[
            "QUEUE",
            "STATUS",
            "AVAILABLE",
            "RUNNING",
            "SCHEDULED",
            "RETRYABLE",
            "COMPLETED",
            "DISCARDED",
            "CANCELLED",
            "OLDEST WAIT",
            "PROCESSES",
            "HTTP WORKERS",
            "COUNTED",
        ],
        &rows,
    );
    if queues.iter().all(|q| q.counted_at.is_none()) {
        eprintln!(
            "note: the counts are the leader's, refreshed every few seconds while \
                 `drover serve` or `drover worker` runs, and none has counted yet; \
                 `drover stats` counts the jobs table now"
        );
    }
    Ok(())
}
