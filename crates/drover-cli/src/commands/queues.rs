//! `drover queues list|pause|resume`, through the admin seam.

use drover_core::JobState;

use crate::cli::QueuesCommand;
use crate::config::Config;
use crate::{backend, output, setup};

pub(crate) async fn run(url: &str, config: &Config, command: QueuesCommand) -> anyhow::Result<()> {
    if let QueuesCommand::Pause { queue } | QueuesCommand::Resume { queue } = &command {
        drover_core::validate::check_name("queue", queue)?;
    }
    let store = backend::open(url, config, false).await?;
    let admin = setup::admin(store.clone(), config)?;
    let result = async {
        match command {
            QueuesCommand::List { json } => {
                let queues = admin.queues().await?;
                if json {
                    return output::json(&queues);
                }
                let rows: Vec<Vec<String>> = queues
                    .iter()
                    .map(|q| {
                        let count = |state| {
                            let n = q.counts[&state];
                            if q.estimated {
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
                            q.oldest_available_age_seconds
                                .map(|s| format!("{s:.1}s"))
                                .unwrap_or_else(|| "-".into()),
                            q.processes.to_string(),
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
                        "OLDEST WAIT",
                        "PROCESSES",
                        "COUNTED",
                    ],
                    &rows,
                );
                Ok(())
            }
            QueuesCommand::Pause { queue } => {
                admin.set_paused(&queue, true).await?;
                println!("queue {queue} is paused: its jobs wait, running jobs finish");
                Ok(())
            }
            QueuesCommand::Resume { queue } => {
                admin.set_paused(&queue, false).await?;
                println!("queue {queue} is running again");
                Ok(())
            }
        }
    }
    .await;
    store.close().await;
    result
}
