//! `drover jobs list|show|retry|cancel|discard|bulk`, through the admin seam.

use drover::Admin;
use drover::admin::{FilterText, JobFilter, MAX_PAGE};
use drover_core::{ActResult, JobAction, JobRecord, JobState};

use crate::cli::{JobFilterArgs, JobsCommand};
use crate::config::Config;
use crate::{backend, output, setup};

fn filter_text(args: &JobFilterArgs) -> FilterText {
    FilterText {
        state: args.state.clone(),
        queue: args.queue.clone(),
        kind: args.kind.clone(),
        created_after: args.created_after.clone(),
        created_before: args.created_before.clone(),
        finished_after: args.finished_after.clone(),
        finished_before: args.finished_before.clone(),
        args: args.args.clone(),
    }
}

/// The filter of a command, parsed, with the error naming the flag.
fn parse_filter(args: &JobFilterArgs) -> anyhow::Result<JobFilter> {
    filter_text(args).parse().map_err(|err| {
        // "invalid created_after ..." names the flag: --created-after. Only the field's name
        // changes, not the value or the reason.
        let text = err.to_string();
        let Some(rest) = text.strip_prefix("invalid ") else {
            return anyhow::anyhow!("{text}");
        };
        let (field, tail) = rest.split_at(rest.find([' ', ':']).unwrap_or(rest.len()));
        anyhow::anyhow!("invalid {}{tail}", field.replace('_', "-"))
    })
}

pub(crate) async fn run(url: &str, config: &Config, command: JobsCommand) -> anyhow::Result<()> {
    // Arguments are checked before the database is touched.
    match &command {
        JobsCommand::List { filter, limit, .. } => {
            parse_filter(filter)?;
            if !(1..=MAX_PAGE).contains(limit) {
                anyhow::bail!("--limit {limit} is not between 1 and {MAX_PAGE}");
            }
        }
        JobsCommand::Bulk {
            action,
            filter,
            all,
            ..
        } => {
            action.parse::<JobAction>().map_err(anyhow::Error::msg)?;
            if let Some(field) = filter_text(filter).blank_field() {
                anyhow::bail!(
                    "--{} is empty: a bulk action takes no empty filter value (an unset \
                     variable?); leave the flag out to not filter on it",
                    field.replace('_', "-")
                );
            }
            if !parse_filter(filter)?.narrows() && !all {
                anyhow::bail!(
                    "no filter given (an empty --args narrows nothing): pass \
                     --state/--queue/--kind/... to choose jobs, or --all to act on every job"
                );
            }
        }
        _ => {}
    }
    let store = backend::open_existing(url, config).await?;
    let mut admin = setup::admin(store.clone(), config)?;
    // Cancel, discard and a bulk action may end waiting jobs: their hooks run here, as they
    // would in a server for the same action through its API.
    let ends_jobs = matches!(
        command,
        JobsCommand::Cancel { .. } | JobsCommand::Discard { .. } | JobsCommand::Bulk { .. }
    );
    if ends_jobs {
        admin = setup::with_hooks(admin, config);
    }
    // Installed before the action: a signal during a long bulk action stops it between its
    // batches (each committed) instead of finding a handler that only the hooks' wait reads.
    let mut interrupted = std::pin::pin!(crate::signals::interrupted());
    let result = tokio::select! {
        result = dispatch(&admin, command) => result,
        code = &mut interrupted => {
            let stopped = stop_hooks(&admin, "acting on jobs", code);
            store.close().await;
            return Err(stopped);
        }
    };
    let hooks = finish_hooks(&admin, interrupted).await;
    store.close().await;
    result.and(hooks)
}

/// Waits for the hooks of the jobs an action ended, all of them: each is bounded by its own
/// `timeout`, and a job end's hooks are not dropped. SIGINT or SIGTERM stops the wait (see
/// [`stop_hooks`]).
async fn finish_hooks(
    admin: &Admin,
    interrupted: std::pin::Pin<&mut impl std::future::Future<Output = u8>>,
) -> anyhow::Result<()> {
    let left = admin.hooks_left();
    if left > 0 {
        eprintln!("running the hooks of {left} ended jobs (Ctrl-C stops them)");
    }
    tokio::select! {
        _ = admin.finish_hooks() => Ok(()),
        code = interrupted => Err(stop_hooks(admin, "running hooks", code)),
    }
}

/// After SIGINT or SIGTERM (exit status `code`) while `doing`: kills the hooks still running,
/// their whole process groups, and says how many job ends are left without their hooks. The
/// jobs acted on keep their new states: each batch of an action was committed.
fn stop_hooks(admin: &Admin, doing: &'static str, code: u8) -> anyhow::Error {
    // Counted first: a killed hook's run ends, and would leave the count.
    let left = admin.hooks_left();
    crate::process::kill_all();
    anyhow::anyhow!(
        "the jobs acted on keep their new states; the hooks of {left} ended jobs did not run or \
         were stopped"
    )
    .context(crate::signals::Interrupted(doing, code))
}

async fn dispatch(admin: &Admin, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            filter,
            after,
            limit,
            json,
        } => {
            let page = admin.jobs(&parse_filter(&filter)?, after, limit).await?;
            if json {
                return output::json(&page);
            }
            list(&page.jobs);
            match (page.searched_to, page.next) {
                (Some(to), _) => eprintln!(
                    "searched down to job {to} (a search on args, kind or times reads at most \
                     {} ids a page); search older jobs: add --after {to}",
                    drover::admin::SEARCH_BUDGET
                ),
                (None, Some(next)) => eprintln!("more jobs: add --after {next}"),
                (None, None) => {}
            }
            Ok(())
        }
        JobsCommand::Show { id, json } => {
            let job = admin.job(id).await?;
            if json {
                return output::json(&job);
            }
            show(&job);
            Ok(())
        }
        JobsCommand::Retry { id, json } => act(admin, id, JobAction::Retry, json).await,
        JobsCommand::Cancel { id, json } => act(admin, id, JobAction::Cancel, json).await,
        JobsCommand::Discard { id, json } => act(admin, id, JobAction::Discard, json).await,
        JobsCommand::Bulk {
            action,
            filter,
            json,
            ..
        } => {
            let action: JobAction = action.parse().map_err(anyhow::Error::msg)?;
            let report = admin.act_matching(&parse_filter(&filter)?, action).await?;
            if json {
                return output::json(&report);
            }
            outln!(
                "{} {} matched; {} {}, {} left as they were",
                report.matched,
                if report.matched == 1 { "job" } else { "jobs" },
                report.changed,
                past(action),
                report.unchanged
            );
            Ok(())
        }
    }
}

fn past(action: JobAction) -> &'static str {
    match action {
        JobAction::Retry => "retried",
        JobAction::Cancel => "cancelled (or asked to stop)",
        JobAction::Discard => "discarded",
    }
}

async fn act(admin: &Admin, id: i64, action: JobAction, json: bool) -> anyhow::Result<()> {
    let result = admin.act_on(vec![id], action).await?.remove(0);
    match (&result, action) {
        (ActResult::NotFound, _) => anyhow::bail!(drover_core::StoreError::NotFound(id)),
        // Cancelling or discarding what already ended is not a mistake: it will not run, as
        // wished.
        (ActResult::Unchanged { state, .. }, JobAction::Cancel | JobAction::Discard)
            if state.is_terminal() => {}
        (ActResult::Unchanged { state, reason }, _) => {
            anyhow::bail!("job {id} is {state}: {reason}")
        }
        _ => {}
    }
    if json {
        return output::json(&serde_json::json!({ "id": id, "result": result }));
    }
    match result {
        ActResult::Changed {
            state: JobState::Available,
        } => outln!("job {id} is available again"),
        ActResult::Changed { state } => outln!("job {id} is {state}"),
        ActResult::CancelRequested => {
            outln!("job {id} is running; its worker was asked to stop it")
        }
        ActResult::Unchanged { state, .. } => {
            outln!("job {id} already finished ({state}); nothing changed")
        }
        ActResult::NotFound => unreachable!("refused above"),
    }
    Ok(())
}

fn list(jobs: &[JobRecord]) {
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
                    .map(|e| format!("attempt {}: {}", e.attempt, output::cut(&e.message, 50)))
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
}

fn show(job: &JobRecord) {
    let field = |name: &str, value: String| outln!("{name:<18}{value}");
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
    // Set when the job ended, whichever way: "completed" would misname a discarded one's.
    field("finished", output::opt_time(job.completed_at));
    if job.state == JobState::Running {
        field("lease owner", job.lease_owner.clone().unwrap_or_default());
        field("lease expires", output::opt_time(job.lease_expires_at));
    } else if let Some(owner) = &job.lease_owner {
        // Kept when the run ends: which process ran the last attempt.
        field("last run by", owner.clone());
    }
    if let Some(at) = job.cancel_requested_at {
        field("cancel requested", output::time(at));
    }
    field("step", job.step.clone().unwrap_or_else(|| "-".into()));
    field("args", job.args.get().to_owned());
    if !job.errors.is_empty() {
        outln!("errors:");
        for error in &job.errors {
            let step = error
                .step
                .as_deref()
                .map(|s| format!(" in step {s}"))
                .unwrap_or_default();
            outln!(
                "  attempt {} at {}{step}: {}",
                error.attempt,
                output::time(error.at),
                error.message
            );
        }
    }
    if !job.history.is_empty() {
        outln!("history:");
        for entry in &job.history {
            outln!(
                "  {} {}: {}",
                output::time(entry.at),
                entry.event,
                entry.detail
            );
        }
    }
}
