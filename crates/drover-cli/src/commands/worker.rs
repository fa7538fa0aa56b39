//! `drover serve` and `drover worker`: run the engine until SIGINT or SIGTERM, then shut down
//! gracefully. Exit status 0 when every running job finished in time, 3 when some had to be
//! cancelled and handed back.

use std::process::ExitCode;

use drover::Engine;

use crate::cli::WorkerArgs;
use crate::config::Config;
use crate::{backend, setup, signals};

/// Exit status when shutdown had to cancel running jobs.
pub(crate) const EXIT_INTERRUPTED: u8 = 3;

pub(crate) async fn run(url: &str, config: &Config, args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    // Everything is validated before the database is touched.
    let mut engine_config = setup::engine_config(config, args)?;
    if let (Some(slot), Some(generation)) = (args.slot, args.slot_generation) {
        // The local runtime sees the slot bound once this id is in the process registry.
        engine_config.process_id = Some(crate::local_runtime::worker_process_id(slot, generation));
    }
    let store = backend::open(url, config, true).await?;
    // The archiver refuses to start on tables it cannot archive safely.
    let retention = setup::prepare_retention(&store, config).await?;
    let mut builder = Engine::builder(store.clone())
        .config(engine_config)
        .builtin_tasks();
    for schedule in setup::cron_schedules(config)? {
        builder = builder.cron(schedule);
    }
    for policy in retention {
        builder = builder.retention(policy);
    }
    for task in setup::command_tasks(config) {
        builder = builder.raw_task(task);
    }
    for hook in setup::command_hooks(config) {
        builder = builder.hook(hook);
    }
    // A slot's own worker does not scale: it would launch workers for the slots it serves.
    if args.slot.is_none()
        && let Some(autoscaler) = crate::capacity_config::autoscaler_config(config)?
    {
        let runtime = crate::capacity_config::runtime(config, &autoscaler, &store, url)?;
        builder = builder.autoscaler(drover::services::autoscaler::AutoscalerParts {
            config: autoscaler,
            runtime,
            metrics: Default::default(),
        });
    }
    let handle = builder.build()?.start();
    tracing::info!(database = %backend::redact(url), "drover is running; stop with SIGINT or SIGTERM");

    // A slot worker whose slot was interrupted gets SIGUSR1: it hands back what it runs at once
    // (its capacity is going away), instead of finishing it.
    let mut interrupted = match args.slot {
        Some(_) => Some(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::user_defined1(),
        )?),
        None => None,
    };
    let interrupt = async {
        match &mut interrupted {
            Some(signal) => signal.recv().await,
            None => std::future::pending().await,
        }
    };
    let (signal, hand_back) = tokio::select! {
        signal = signals::first_then_arm_second() => (signal, false),
        _ = interrupt => ("SIGUSR1", true),
    };
    tracing::info!(
        signal,
        running = handle.running(),
        "shutting down: no new jobs are claimed (send the signal again to exit at once)"
    );
    let report = if hand_back {
        handle.shutdown_within(std::time::Duration::ZERO).await
    } else {
        handle.shutdown().await
    };
    store.close().await;
    if report.clean() {
        tracing::info!("shutdown complete; every running job finished");
        Ok(ExitCode::SUCCESS)
    } else {
        tracing::warn!(
            cancelled = report.cancelled,
            aborted = report.aborted,
            unrecorded = report.unrecorded,
            "shutdown complete; interrupted jobs were handed back"
        );
        Ok(ExitCode::from(EXIT_INTERRUPTED))
    }
}
