//! Built-in kinds for smoke tests and benchmarks: `drover.noop`, `drover.sleep` (`{"ms": N}`,
//! stops early when cancelled) and `drover.fail` (`{"message": "…"}`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::task::{JobContext, JobError, RawTask, Task, Typed};

/// Does nothing (and does not even decode its args).
pub struct Noop;

#[async_trait]
impl RawTask for Noop {
    fn kind(&self) -> &str {
        "drover.noop"
    }

    async fn run_raw(&self, _ctx: JobContext, _args: String) -> Result<(), JobError> {
        Ok(())
    }
}

/// Args of `drover.sleep`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepArgs {
    /// Milliseconds to sleep.
    pub ms: u64,
}

/// Sleeps for `ms` milliseconds, or until cancelled.
pub struct Sleep;

#[async_trait]
impl Task for Sleep {
    const KIND: &'static str = "drover.sleep";
    type Args = SleepArgs;

    async fn run(&self, ctx: JobContext, args: SleepArgs) -> Result<(), JobError> {
        ctx.step("sleeping");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(args.ms)) => Ok(()),
            _ = ctx.cancellation().cancelled() => Err(JobError::Cancelled),
        }
    }
}

/// Args of `drover.fail`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailArgs {
    /// The error message.
    #[serde(default = "default_message")]
    pub message: String,
}

fn default_message() -> String {
    "drover.fail failed as asked".into()
}

/// Fails every attempt with its message.
pub struct Fail;

#[async_trait]
impl Task for Fail {
    const KIND: &'static str = "drover.fail";
    type Args = FailArgs;

    async fn run(&self, _ctx: JobContext, args: FailArgs) -> Result<(), JobError> {
        Err(JobError::Failed(args.message))
    }
}

/// Refuses, at enqueue, args a built-in kind would refuse when it runs (`{"ms": "5"}`, an
/// unknown key): a bad job is better refused by its producer than discarded by a worker
/// later. Other kinds' args are their tasks' business; only their shape (an object) is
/// checked.
pub(crate) fn check_args(kind: &str, args: &str) -> Result<(), drover_core::ValidationError> {
    let (decoded, expected) = match kind {
        Sleep::KIND => (
            serde_json::from_str::<SleepArgs>(args).map(drop),
            r#"{"ms": N}"#,
        ),
        Fail::KIND => (
            serde_json::from_str::<FailArgs>(args).map(drop),
            r#"{"message": "…"} or {}"#,
        ),
        _ => return Ok(()),
    };
    decoded.map_err(|err| {
        drover_core::ValidationError::Args(format!("{kind} takes {expected}: {err}"))
    })
}

pub(crate) fn all() -> Vec<Arc<dyn RawTask>> {
    vec![
        Arc::new(Noop),
        Arc::new(Typed(Sleep)),
        Arc::new(Typed(Fail)),
    ]
}
