//! A task that runs a command: the job's args as JSON on stdin, `DROVER_JOB_*` in the
//! environment (which is not the worker's: see [`crate::process`]); exit 0 is success, anything else a failed attempt whose message holds the tail of
//! stderr. Cancellation and timeouts kill the process group.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use drover::{JobContext, JobError, RawTask, TaskOptions};

use crate::process::{self, Exit, Spec};

/// A command task from `[tasks."KIND"]`.
pub(crate) struct CommandTask {
    pub(crate) kind: String,
    pub(crate) argv: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) env_pass: Vec<String>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) options: TaskOptions,
    pub(crate) kill_grace: Duration,
    pub(crate) log_args: bool,
}

#[async_trait]
impl RawTask for CommandTask {
    fn kind(&self) -> &str {
        &self.kind
    }

    fn options(&self) -> TaskOptions {
        self.options.clone()
    }

    async fn run_raw(&self, ctx: JobContext, args: String) -> Result<(), JobError> {
        if self.log_args {
            tracing::info!(job = ctx.id(), kind = %self.kind, attempt = ctx.attempt(), args = %args, "starting command");
        } else {
            tracing::debug!(job = ctx.id(), kind = %self.kind, attempt = ctx.attempt(), "starting command");
        }
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.extend([
            ("DROVER_JOB_ID".to_owned(), ctx.id().to_string()),
            ("DROVER_JOB_KIND".to_owned(), ctx.kind().to_owned()),
            ("DROVER_JOB_QUEUE".to_owned(), ctx.queue().to_owned()),
            ("DROVER_JOB_ATTEMPT".to_owned(), ctx.attempt().to_string()),
            (
                "DROVER_JOB_MAX_ATTEMPTS".to_owned(),
                ctx.max_attempts().to_string(),
            ),
        ]);
        ctx.step("command");
        let spec = Spec {
            argv: &self.argv,
            env,
            pass: &self.env_pass,
            cwd: self.cwd.as_ref(),
        };
        match process::run(spec, args.as_bytes(), ctx.cancellation(), self.kill_grace).await {
            Ok(Exit::Exited { status, .. }) if status.success() => Ok(()),
            Ok(Exit::Exited {
                status,
                stderr_tail,
            }) => Err(JobError::Failed(process::describe(status, &stderr_tail))),
            Ok(Exit::Cancelled) => Err(JobError::Cancelled),
            Err(err) => Err(JobError::Failed(err.to_string())),
        }
    }
}
