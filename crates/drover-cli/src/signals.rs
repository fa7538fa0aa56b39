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

/// SIGINT or SIGTERM, for a command that cleans up after itself before it exits; its exit
/// status as a shell reports a command the signal stopped (130 or 143). The handlers are
/// installed when this is called, not when the future is first polled: a signal sent right
/// after the command said it is waiting must not find the default action (exit) in place.
pub(crate) fn interrupted() -> impl std::future::Future<Output = u8> {
    let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => 130,
            _ = terminate.recv() => 143,
        }
    }
}

/// The error context of a command cut short by SIGINT or SIGTERM, with what it was doing and
/// the exit status (from [`interrupted`]): `main` exits with it, as a shell reports a command
/// the signal stopped, not with a failure's 1.
#[derive(Debug)]
pub(crate) struct Interrupted(pub(crate) &'static str, pub(crate) u8);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted while {}", self.0)
    }
}
