//! `drover serve` and `drover worker`: run the engine until SIGINT or SIGTERM, then shut down
//! gracefully. Exit status 0 when every running job finished in time, 3 when some had to be
//! cancelled and handed back, 4 when the worker shut itself down because one of the engine's
//! background loops stopped.

use std::process::ExitCode;

use drover::{Engine, EngineConfig, EngineHandle, ShutdownReport};
use drover_core::DynStore;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::WorkerArgs;
use crate::config::Config;
use crate::http::{AppState, HttpSettings};
use crate::{backend, setup, signals};

/// Exit status when shutdown had to cancel running jobs.
pub(crate) const EXIT_INTERRUPTED: u8 = 3;
/// Exit status when a background loop of the engine stopped and the worker shut itself down.
pub(crate) const EXIT_FAILED: u8 = 4;

/// Runs `serve` (`serve_by_default`: the HTTP server listens unless told not to) or `worker`.
pub(crate) async fn run(
    url: &str,
    config: &Config,
    args: &WorkerArgs,
    serve_by_default: bool,
) -> anyhow::Result<ExitCode> {
    // Everything is validated before the database is touched.
    let mut engine_config = setup::engine_config(config, args)?;
    if let (Some(slot), Some(generation)) = (args.slot, args.slot_generation) {
        // The local runtime sees the slot bound once this id is in the process registry.
        engine_config.process_id = Some(crate::local_runtime::worker_process_id(slot, generation));
        // It has no autoscaler: elected, it would hold the term and tick nothing, and no
        // server could become leader to stop it (seen: an orphan slot worker ran forever).
        engine_config.leader_eligible = false;
    }
    // A command that cannot start fails the start before the database file is created.
    setup::check_commands(config, &engine_config.queues)?;
    if args.slot.is_none() {
        setup::check_capacity_commands(config)?;
    }
    let http = http_settings(config, args, serve_by_default)?;
    // A port in use fails the start before anything runs.
    let listener = match &http {
        Some(settings) => Some(settings.bind().await?),
        None => None,
    };
    let store = backend::open_waiting(url, config).await?;
    let handle = build_engine(url, config, args, &store, engine_config)
        .await?
        .start();
    // Long polls end at the first signal; the server itself stays up while running jobs finish,
    // so that remote workers can still report theirs.
    let stop_leasing = CancellationToken::new();
    let stop_server = CancellationToken::new();
    let server = match (listener, http) {
        (Some(listener), Some(settings)) => Some(spawn_server(
            listener,
            settings,
            &handle,
            &stop_leasing,
            &stop_server,
        )?),
        _ => None,
    };
    tracing::info!(database = %backend::redact(url), "drover is running; stop with SIGINT or SIGTERM");

    let (failure, hand_back) = wait_for_stop(&handle, args).await?;
    stop_leasing.cancel();
    // The server stays up while the engine stops, so that HTTP workers can still report
    // their runs; it stops before the hooks drain, so that those outcomes run theirs.
    let stop_http = async {
        stop_server.cancel();
        if let Some(server) = server
            && tokio::time::timeout(std::time::Duration::from_secs(5), server)
                .await
                .is_err()
        {
            tracing::warn!("HTTP connections still open after 5s; closing them");
        }
    };
    // Nothing is gained by waiting for runs whose outcomes cannot be recorded: with a store
    // given up on, they stop at once (and run again on a mended database).
    let timeout = if hand_back || (failure.is_some() && handle.store_gave_up()) {
        std::time::Duration::ZERO
    } else {
        handle.shutdown_timeout()
    };
    let report = handle.shutdown_within_then(timeout, stop_http).await;
    store.close().await;
    Ok(exit_code(failure, &report))
}

/// Where the HTTP server listens, if anywhere. DROVER_LISTEN is for `serve` only: a `worker`
/// serves only when asked on its command line.
fn http_settings(
    config: &Config,
    args: &WorkerArgs,
    serve_by_default: bool,
) -> anyhow::Result<Option<HttpSettings>> {
    let listen = args.listen.clone().or_else(|| {
        serve_by_default
            .then(|| std::env::var("DROVER_LISTEN").ok())
            .flatten()
            // Empty, as an env file or a compose file leaves it: not set, as for DROVER_TOKEN.
            .filter(|listen| !listen.is_empty())
    });
    HttpSettings::resolve(listen.as_deref(), config, serve_by_default)
}

/// The engine with everything the configuration asks for: cron schedules, retention, command
/// tasks and hooks, and the autoscaler.
async fn build_engine(
    url: &str,
    config: &Config,
    args: &WorkerArgs,
    store: &DynStore,
    engine_config: EngineConfig,
) -> anyhow::Result<Engine> {
    // The archiver refuses to start on tables it cannot archive safely. A slot's worker never
    // leads, so it never archives: its checks would only slow its start.
    let retention = if args.slot.is_some() {
        Vec::new()
    } else {
        setup::prepare_retention(store, config).await?
    };
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
        let runtime = crate::capacity_config::runtime(config, &autoscaler, store, url)?;
        builder = builder.autoscaler(drover::services::autoscaler::AutoscalerParts {
            config: autoscaler,
            runtime,
            metrics: Default::default(),
        });
    }
    builder
        .build()
        .map_err(|err| crate::config_errors::engine_refused(config, err))
}

/// Serves the API, the dashboard and /metrics on `listener` until `stop_server` is cancelled;
/// `stop_leasing` ends the long polls.
fn spawn_server(
    listener: TcpListener,
    settings: HttpSettings,
    handle: &EngineHandle,
    stop_leasing: &CancellationToken,
    stop_server: &CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let bound = listener.local_addr()?;
    tracing::info!(
        auth = settings.token.is_some(),
        "listening on http://{bound}/ (the API, the dashboard and /metrics)"
    );
    let state = AppState::new(handle, settings, stop_leasing.clone());
    let stop = stop_server.clone();
    Ok(tokio::spawn(async move {
        if let Err(err) = crate::http::serve(listener, state, stop).await {
            tracing::error!(error = %err, "the HTTP server failed");
        }
    }))
}

/// Waits for the reason to stop: a signal, a slot interruption (hand back at once: the
/// second value), or a failed background loop (the first value).
async fn wait_for_stop(
    handle: &EngineHandle,
    args: &WorkerArgs,
) -> anyhow::Result<(Option<String>, bool)> {
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
    Ok(tokio::select! {
        signal = signals::first_then_arm_second() => {
            tracing::info!(
                signal,
                running = handle.running(),
                "shutting down: no new jobs are claimed (send the signal again to exit at once)"
            );
            (None, false)
        }
        _ = interrupt => {
            tracing::info!(running = handle.running(),
                "slot interrupted (SIGUSR1): handing back what runs here at once");
            (None, true)
        }
        failure = handle.failure() => {
            tracing::error!(%failure, running = handle.running(),
                "shutting down: a background loop stopped, and a half-alive worker is worse than none");
            (Some(failure), false)
        }
    })
}

/// The exit status after shutdown, logged: see the module's documentation.
fn exit_code(failure: Option<String>, report: &ShutdownReport) -> ExitCode {
    if let Some(failure) = failure {
        tracing::error!(%failure, "shutdown complete after a failure");
        return ExitCode::from(EXIT_FAILED);
    }
    if report.clean() {
        tracing::info!("shutdown complete; every running job finished");
        ExitCode::SUCCESS
    } else {
        tracing::warn!(
            cancelled = report.cancelled,
            aborted = report.aborted,
            unrecorded = report.unrecorded,
            "shutdown complete; interrupted jobs were handed back"
        );
        ExitCode::from(EXIT_INTERRUPTED)
    }
}
