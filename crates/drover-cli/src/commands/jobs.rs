//! `drover jobs list|show|retry|cancel`.

use anyhow::Context;
use drover_core::{
    CancelResult, JobCancelParams, JobListParams, JobRecord, JobRetryParams, JobState, Store,
};

use crate::cli::JobsCommand;
use crate::config::Config;
use crate::{backend, output};

/// Most jobs one list may show.
const MAX_LIST: usize = 10_000;

pub(crate) async fn run(url: &str, config: &Config, command: JobsCommand) -> anyhow::Result<()> {
    // Check the arguments before touching the database.
    if let JobsCommand::List {
        state,
        queue,
        kind,
        limit,
        ..
    } = &command
    {
        if let Some(state) = state {
            state.parse::<JobState>().map_err(anyhow::Error::msg)?;
        }
        if let Some(queue) = queue {
            drover_core::validate::check_name("queue", queue)?;
        }
        if let Some(kind) = kind {
            drover_core::validate::check_name("kind", kind)?;
        }
        if !(1..=MAX_LIST).contains(limit) {
            anyhow::bail!("--limit {limit} is not between 1 and {MAX_LIST}");
        }
    }
    let store = backend::open(url, config, false).await?;
    let result = dispatch(store.as_ref(), command).await;
    store.close().await;
    result
}

async fn dispatch(store: &dyn Store, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            state,
            queue,
            kind,
            limit,
            json,
        } => {
            let jobs = store
                .job_list(JobListParams {
                    state: state.map(|s| s.parse().expect("checked")),
                    queue,
                    kind,
                    before_id: None,
                    limit,
                    ..Default::default()
                })
                .await?;
            if json {
                return output::json(&jobs);
            }
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|job| {
                    vec![
                        job.id.to_string(),
                        job.state.to_string(),
                        job.queue.clone(),
                        job.kind.clone(),
                        format!("{}/{}", job.attempt, job.max_attempts),
                        output::time(job.created_at),
                        job.errors
                            .last()
                            .map(|e| output::cut(&e.message, 60))
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "ID",
                    "STATE",
                    "QUEUE",
                    "KIND",
                    "ATTEMPT",
                    "CREATED",
                    "LAST ERROR",
                ],
                &rows,
            );
            Ok(())
        }
        JobsCommand::Show { id, json } => {
            let job = store
                .job_get(id)
                .await?
                .with_context(|| format!("no job with id {id}"))?;
            if json {
                return output::json(&job);
            }
            show(&job);
            Ok(())
        }
        JobsCommand::Retry { id, json } => {
            let job = store.job_retry(JobRetryParams { id, now: None }).await?;
            if json {
                return output::json(&job);
            }
            println!("job {id} is available again");
            Ok(())
        }
        JobsCommand::Cancel { id, json } => {
            let result = store.job_cancel(JobCancelParams { id, now: None }).await?;
            if json {
                return output::json(&serde_json::json!({ "id": id, "result": result }));
            }
            match result {
                CancelResult::Cancelled => println!("job {id} cancelled"),
                CancelResult::Requested => {
                    println!("job {id} is running; its worker was asked to stop it")
                }
                CancelResult::AlreadyFinished(state) => {
                    println!("job {id} already finished ({state}); nothing changed")
                }
            }
            Ok(())
        }
    }
}

fn show(job: &JobRecord) {
    let field = |name: &str, value: String| println!("{name:<18}{value}");
    field("id", job.id.to_string());
    field("kind", job.kind.clone());
    field("queue", job.queue.clone());
    field("state", job.state.to_string());
    field(
        "attempt",
        format!("{} of {}", job.attempt, job.max_attempts),
    );
    field("priority", job.priority.to_string());
    field("delivery", job.delivery.to_string());
    field(
        "unique key",
        job.unique_key.clone().unwrap_or_else(|| "-".into()),
    );
    field("created", output::time(job.created_at));
    field("scheduled", output::time(job.scheduled_at));
    field("attempted", output::opt_time(job.attempted_at));
    field("completed", output::opt_time(job.completed_at));
    if job.state == JobState::Running {
        field("lease owner", job.lease_owner.clone().unwrap_or_default());
        field("lease expires", output::opt_time(job.lease_expires_at));
    }
    if let Some(at) = job.cancel_requested_at {
        field("cancel requested", output::time(at));
    }
    field("step", job.step.clone().unwrap_or_else(|| "-".into()));
    field("args", job.args.to_string());
    if !job.errors.is_empty() {
        println!("errors:");
        for error in &job.errors {
            let step = error
                .step
                .as_deref()
                .map(|s| format!(" in step {s}"))
                .unwrap_or_default();
            println!(
                "  attempt {} at {}{step}: {}",
                error.attempt,
                output::time(error.at),
                error.message
            );
        }
    }
    if !job.history.is_empty() {
        println!("history:");
        for entry in &job.history {
            println!(
                "  {} {}: {}",
                output::time(entry.at),
                entry.event,
                entry.detail
            );
        }
    }
}
