//! `drover`: the Drover job server and its command line.
//!
//! Run `drover --help` for the commands. The binary is a thin shell over the `drover` engine:
//! it reads `drover.toml`, opens the store a database URL names, and maps commands to engine and
//! store calls.

/// `println!` for a command's output: when the reader has gone (`drover jobs list | head`) the
/// command ends quietly, as other Unix tools do, instead of panicking in `println!`.
macro_rules! outln {
    () => {
        $crate::output::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod backend;
mod capacity_config;
mod cli;
mod command_runtime;
mod commands;
mod config;
mod config_errors;
mod config_paths;
mod hooks;
mod http;
mod local_runtime;
mod output;
mod process;
mod setup;
mod signals;
mod spawner;
mod tasks;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::config::Config;

/// The log filter: `DROVER_LOG`, else `RUST_LOG`, else `info` for the servers and `warn` for
/// the other commands. tokio-postgres logs every statement's parameters at debug level, job
/// args among them, so it stays at `warn` unless the filter names it.
fn log_filter(default: &'static str) -> EnvFilter {
    let set = ["DROVER_LOG", "RUST_LOG"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().map(|text| (name, text)));
    let filter = set
        .as_ref()
        .and_then(|(name, text)| match EnvFilter::try_new(text) {
            Ok(filter) => Some(filter),
            Err(err) => {
                // Said once, on stderr: the log it would configure is not set up yet.
                eprintln!("warning: {name}={text:?} is not a log filter ({err}); using {default}");
                None
            }
        })
        .unwrap_or_else(|| EnvFilter::new(default));
    let text = set.map(|(_, text)| text);
    if text.is_some_and(|text| text.contains("tokio_postgres")) {
        filter
    } else {
        filter.add_directive("tokio_postgres=warn".parse().expect("a valid directive"))
    }
}

fn main() -> ExitCode {
    if let Some(code) = spawner::shim_if_asked() {
        return code;
    }
    let cli = Cli::parse();
    // A simulation's launch failures and interruptions are simulated, and counted in its
    // report: as warnings they would only break up its table.
    let default_log = match cli.command {
        Command::Serve(_) | Command::Worker(_) => "info",
        Command::Simulate(_) => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(default_log))
        .with_writer(std::io::stderr)
        // A log that cannot be written (its reader gone: `drover serve 2>&1 | head`) is lost,
        // not fatal: by default the subscriber reports it with `eprintln!`, which panics on
        // the same broken pipe and took the server down without a graceful shutdown.
        .log_internal_errors(false)
        // Colours for a terminal only: a log file or a collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            match err.downcast_ref::<signals::Interrupted>() {
                Some(interrupted) => ExitCode::from(interrupted.1),
                None => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config_path().as_deref())?;
    let url = backend::database_url(cli.database.as_deref(), &config);
    match cli.command {
        Command::Serve(args) => return commands::worker::run(&url, &config, &args, true).await,
        Command::Worker(args) => return commands::worker::run(&url, &config, &args, false).await,
        Command::Enqueue(args) => commands::enqueue::run(&url, &config, args).await?,
        Command::Jobs { command } => commands::jobs::run(&url, &config, command).await?,
        Command::Queues { command } => commands::queues::run(&url, &config, command).await?,
        Command::Stats { json } => commands::stats::run(&url, &config, json).await?,
        Command::Cron { command } => commands::cron::run(&url, &config, command).await?,
        Command::Archive { command } => commands::archive::run(&url, &config, command).await?,
        Command::Migrate => commands::migrate::run(&url, &config).await?,
        Command::Bench(args) => {
            commands::bench::run(cli.database.as_deref(), &config, args).await?
        }
        Command::Slots { command } => commands::slots::run(&url, &config, command).await?,
        Command::Simulate(args) => commands::simulate::run(&config, args).await?,
        Command::Reserve(args) => commands::reserve::reserve(&url, &config, args).await?,
        Command::Reservations { system, json } => {
            commands::reserve::list(&url, &config, system, json).await?
        }
        Command::Release { id, json } => {
            commands::reserve::release(&url, &config, id, json).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}
