//! Shutdown signals. The first SIGINT or SIGTERM starts a graceful shutdown; a second one kills
//! the running commands' process groups and exits at once (leases still protect the jobs: they
//! are rescued once their lease expires).

use tokio::signal::unix::{SignalKind, signal};

/// Waits for the first SIGINT or SIGTERM, then arms the second-signal exit. Returns its name.
pub(crate) async fn first_then_arm_second() -> &'static str {
    let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let name = tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    };
    tokio::spawn(async move {
        let second = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::warn!(
            signal = second,
            "second signal: exiting now; running jobs will be rescued when their leases expire"
        );
        crate::process::kill_all();
        std::process::exit(130);
    });
    name
}
