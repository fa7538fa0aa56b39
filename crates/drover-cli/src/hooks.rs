//! Hooks of the standalone server: commands from `[[hooks]]`, run when a job ends with the event
//! as JSON on stdin and `DROVER_JOB_*` in the environment. A failing hook is logged; the job is
//! never changed by it. A hook does not inherit the worker's environment: see [`crate::process`].

use std::time::Duration;

use async_trait::async_trait;
use drover::{Hook, JobEnd};
use drover_core::JobState;
use tokio_util::sync::CancellationToken;

use crate::process::{self, Exit, Spec};

pub(crate) struct CommandHook {
    pub(crate) argv: Vec<String>,
    pub(crate) on: Vec<JobState>,
    pub(crate) timeout: Duration,
    pub(crate) env_pass: Vec<String>,
}

#[async_trait]
impl Hook for CommandHook {
    async fn on_job_end(&self, event: &JobEnd) -> Result<(), String> {
        if !self.on.contains(&event.state) {
            return Ok(());
        }
        let input = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let env = vec![
            ("DROVER_JOB_ID".to_owned(), event.id.to_string()),
            ("DROVER_JOB_KIND".to_owned(), event.kind.clone()),
            ("DROVER_JOB_QUEUE".to_owned(), event.queue.clone()),
            ("DROVER_JOB_STATE".to_owned(), event.state.to_string()),
            ("DROVER_JOB_ATTEMPT".to_owned(), event.attempt.to_string()),
        ];
        let timeout = CancellationToken::new();
        let fire = timeout.clone();
        let limit = self.timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            fire.cancel();
        });
        let spec = Spec {
            argv: &self.argv,
            env,
            pass: &self.env_pass,
            cwd: None,
        };
        let result = process::run(spec, &input, &timeout, Duration::from_secs(1)).await;
        timer.abort();
        match result {
            Ok(Exit::Exited { status, .. }) if status.success() => Ok(()),
            Ok(Exit::Exited {
                status,
                stderr_tail,
            }) => Err(format!(
                "hook {:?} {}",
                self.argv[0],
                process::describe(status, &stderr_tail)
            )),
            Ok(Exit::Cancelled) => Err(format!(
                "hook {:?} timed out after {:?}",
                self.argv[0], self.timeout
            )),
            Err(err) => Err(err.to_string()),
        }
    }
}
