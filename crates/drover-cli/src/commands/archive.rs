//! `drover archive run`: runs the retention policies now, with a progress bar, and prints the
//! rows moved. Each batch is its own transaction: an interrupted run leaves every row in exactly
//! one table, and the next run continues where it stopped. Every run is recorded (trigger
//! `manual`), failed ones with their error.
//!
//! `drover archive list`: each policy, its last run and its next run.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;
use serde::Serialize;

use drover::retention::Trigger;
use drover_core::SystemClock;

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
    let (policy, json) = match command {
        ArchiveCommand::Run { policy, json } => (policy, json),
        ArchiveCommand::List { json } => return list(url, config, json).await,
    };
    // Moves rows of tables that must exist: a mistyped URL gets no new tables.
    let store = backend::open_existing(url, config).await?;
    let result = run_policies(&store, config, policy.as_deref(), json).await;
    store.close().await;
    let (moved, failed) = result?;
    if json {
        // The policies that ran, then each that failed, with its error instead of its rows.
        let mut rows: Vec<serde_json::Value> = Vec::new();
        for m in &moved {
            rows.push(serde_json::to_value(m)?);
        }
        for (policy, error) in &failed {
            rows.push(serde_json::json!({"policy": policy, "error": format!("{error:#}")}));
        }
        output::json(&rows)?;
    } else {
        for m in &moved {
            outln!(
                "{}: moved {} {} from {} to {} (older than {}) in {:.2}s",
                m.policy,
                m.rows,
                if m.rows == 1 { "row" } else { "rows" },
                m.table,
                m.archive_table,
                output::time(m.cutoff),
                m.secs
            );
        }
    }
    match (failed.len(), moved.len()) {
        (0, _) => Ok(()),
        (1, 0) => Err(failed.into_iter().next().expect("one").1),
        (n, ran) => {
            for (_, error) in &failed {
                eprintln!("error: {error:#}");
            }
            if ran == 0 {
                anyhow::bail!("all {n} retention policies failed")
            }
            anyhow::bail!("{n} of the retention policies failed (the others ran)")
        }
    }
}

/// Runs each policy (or the one named); a policy that fails, at its check against the database
/// or in a batch, does not keep the others from running. The rows each moved, and the errors.
async fn run_policies(
    store: &drover_core::DynStore,
    config: &Config,
    only: Option<&str>,
    json: bool,
) -> anyhow::Result<(Vec<Moved>, Vec<(String, anyhow::Error)>)> {
    let mut policies = setup::retention_policies(config)?;
    if let Some(name) = only {
        let names: Vec<String> = policies.iter().map(|p| p.name.clone()).collect();
        policies.retain(|p| p.name == name);
        if policies.is_empty() {
            anyhow::bail!(
                "no retention policy {name:?}; the policies are: {}",
                names.join(", ")
            );
        }
    }
    let mut moved = Vec::new();
    let mut failed = Vec::new();
    for policy in policies {
        let name = policy.name.clone();
        let run = async {
            let prepared = match drover::retention::prepare(store, policy).await {
                Ok(prepared) => prepared,
                Err(err) => {
                    let (clock, trigger) = (&SystemClock, Trigger::Manual);
                    drover::retention::record_failure(store, clock, &name, trigger, &err).await;
                    // Its message names the policy already.
                    return Err(anyhow::Error::from(err));
                }
            };
            run_policy(store, prepared, json)
                .await
                .map_err(|err| err.context(format!("retention {name:?}")))
        };
        match run.await {
            Ok(m) => moved.push(m),
            Err(err) => failed.push((name, err)),
        }
    }
    Ok((moved, failed))
}

/// One policy's run, recorded, with a progress bar on a terminal.
async fn run_policy(
    store: &drover_core::DynStore,
    policy: drover::retention::PreparedPolicy,
    json: bool,
) -> anyhow::Result<Moved> {
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
    let rows = policy
        .run_recorded(store, &SystemClock, Trigger::Manual, |n| progress.inc(n))
        .await?;
    progress.finish_and_clear();
    Ok(Moved {
        policy: policy.policy.name.clone(),
        table: policy.policy.table.clone(),
        archive_table: policy.policy.archive_table.clone(),
        cutoff: policy.params(now).cutoff,
        rows,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// `drover archive list`.
async fn list(url: &str, config: &Config, json: bool) -> anyhow::Result<()> {
    let store = backend::open_existing(url, config).await?;
    let views = match setup::admin(store.clone(), config) {
        Ok(admin) => admin.retention().await.map_err(anyhow::Error::from),
        Err(err) => Err(err),
    };
    store.close().await;
    let views = views?;
    if json {
        return output::json(&views);
    }
    if views.is_empty() {
        outln!("no retention policies ([jobs_archive] is disabled and there is no [[retention]])");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let last = v.runs.first();
            vec![
                v.name.clone(),
                format!("{} → {}", v.table, v.archive_table),
                v.age.clone(),
                v.schedule.clone(),
                output::opt_time(last.map(|r| r.started_at)),
                last.map(last_run_text).unwrap_or_else(|| "-".into()),
                output::opt_time(v.next_run_at),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "TABLES",
            "AGE",
            "SCHEDULE",
            "LAST RUN (UTC)",
            "RESULT",
            "NEXT RUN (UTC)",
        ],
        &rows,
    );
    if config.source.is_none() {
        outln!(
            "(no config file, ./drover.toml is absent: these are the built-in defaults; a \
             server's policies show with its config, --config or DROVER_CONFIG)"
        );
    }
    Ok(())
}

/// `moved 120 rows (schedule)`, or `failed after 20 rows: why (manual)`.
fn last_run_text(run: &drover_core::RetentionRunRecord) -> String {
    match &run.error {
        None => format!("moved {} rows ({})", run.rows_moved, run.trigger),
        Some(error) => format!(
            "failed after {} rows: {} ({})",
            run.rows_moved,
            output::cut(error, 60),
            run.trigger
        ),
    }
}
