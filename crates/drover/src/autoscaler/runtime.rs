//! [`CapacityRuntime`]: the one seam between the autoscaler and whatever makes capacity (worker
//! processes on this machine, a user's scripts, a simulation). Injected like the clock.

use async_trait::async_trait;
use drover_core::SlotId;
use jiff::Timestamp;
use serde::Serialize;

/// What a launch is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchRequest {
    /// The slot the instance is for.
    pub slot: SlotId,
    /// The slot's generation: a launch is idempotent by (slot, generation), so that a leader
    /// killed between recording a launch and making it cannot make a second instance.
    pub generation: i64,
    /// The system.
    pub system: String,
    /// A script that starts a worker for the slot on the new instance.
    pub bootstrap: String,
}

/// How far an instance has come, as the runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstancePhase {
    /// Starting.
    Booting,
    /// Running; its worker has not yet registered with its slot id.
    Binding,
    /// Its worker serves the slot.
    Ready,
}

/// An instance that exists, as listed by [`CapacityRuntime::inventory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// The runtime's id of it.
    pub id: String,
    /// The slot and generation it was launched for, when the runtime knows.
    pub slot: Option<(SlotId, i64)>,
    /// How far it has come.
    pub phase: InstancePhase,
    /// When it will be taken away, if the provider gave notice (a spot interruption).
    pub notice_at: Option<Timestamp>,
    /// When it was made: orphans are terminated only after a grace period from here.
    pub created_at: Timestamp,
}

/// Whether retrying may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeErrorKind {
    /// Worth retrying after the cool-down (no capacity now, a timeout).
    Retryable,
    /// Will fail again as it is (bad credentials, an unknown image).
    Permanent,
}

/// A failed runtime call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{category} ({kind:?}): {message}")]
pub struct RuntimeError {
    /// Whether retrying may help.
    pub kind: RuntimeErrorKind,
    /// A short label, the `result` of the launch metric (`capacity`, `timeout`, `exit_2`).
    pub category: String,
    /// What happened (never holds secrets).
    pub message: String,
}

impl RuntimeError {
    /// A retryable error.
    pub fn retryable(category: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: RuntimeErrorKind::Retryable,
            category: category.into(),
            message: message.into(),
        }
    }

    /// A permanent error.
    pub fn permanent(category: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: RuntimeErrorKind::Permanent,
            category: category.into(),
            message: message.into(),
        }
    }
}

/// Makes and takes away capacity. Every method must be safe to call again after a crash: the
/// tick is rerun from the database's state, not from memory.
#[async_trait]
pub trait CapacityRuntime: Send + Sync {
    /// Short name (`local`, `command`, `sim`).
    fn name(&self) -> &'static str;

    /// Makes an instance for the slot and returns its id. Idempotent by (slot, generation):
    /// asked again, it returns the instance it made the first time.
    async fn launch(&self, request: &LaunchRequest) -> Result<String, RuntimeError>;

    /// Takes an instance away. Succeeds when it is already gone.
    async fn terminate(&self, instance_id: &str) -> Result<(), RuntimeError>;

    /// Takes an interrupted instance away: work it still runs is handed back at once rather
    /// than finished. By default the same as [`CapacityRuntime::terminate`].
    async fn terminate_now(&self, instance_id: &str) -> Result<(), RuntimeError> {
        self.terminate(instance_id).await
    }

    /// Every instance that exists now, with its phase and any notice.
    async fn inventory(&self) -> Result<Vec<Instance>, RuntimeError>;
}

/// The bootstrap script of a slot: starts a worker bound to it, serving its system's queues.
/// The database and config reach it through `DROVER_DATABASE_URL` and `DROVER_CONFIG`, which
/// the runtime sets up on the instance (secrets never appear in the script).
pub fn bootstrap_script(slot: SlotId, generation: i64, system: &str, queues: &[String]) -> String {
    // A system no queue is bound to serves reservations only: its worker claims no job.
    let queues = if queues.is_empty() {
        String::new()
    } else {
        format!(" --queues {}", queues.join(","))
    };
    format!(
        "#!/bin/sh\n# drover slot {slot} (generation {generation}) of system {system}\n\
         exec drover worker --slot {slot} --slot-generation {generation}{queues}\n"
    )
}
