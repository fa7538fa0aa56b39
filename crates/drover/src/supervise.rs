//! Supervision of the engine's background loops: a loop that ends before it was asked to stop,
//! or panics, is logged as an error, marked failed in [`crate::health`], and fails the engine
//! ([`crate::EngineHandle::failure`]), so that the process shuts down gracefully and exits
//! non-zero instead of running half-alive — claiming jobs whose leases nobody renews, say.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::runtime::Shared;

/// Spawns `run` as the loop `name`, which is expected to end only once `stop` fired.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    name: String,
    stop: CancellationToken,
    run: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let inner = tokio::spawn(run);
    let shared = shared.clone();
    tokio::spawn(async move {
        // Aborting the supervisor aborts the loop too.
        let _abort = AbortOnDrop(inner.abort_handle());
        let ended = inner.await;
        let why = match ended {
            Ok(()) if stop.is_cancelled() => return,
            Ok(()) => "ended on its own".to_owned(),
            Err(err) if err.is_panic() => format!("panicked: {}", panic_text(err.into_panic())),
            Err(_) => "was aborted".to_owned(),
        };
        tracing::error!(background_loop = %name, reason = %why,
            "a background loop stopped; the engine is shutting down");
        shared.health.failed(&name, why.clone());
        let mut failure = shared.failure.lock().expect("failure lock poisoned");
        failure.get_or_insert_with(|| format!("{name} {why}"));
        shared.failed.cancel();
    })
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
