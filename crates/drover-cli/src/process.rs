//! Running a child process for a command task or hook: input on stdin, the tail of stderr kept
//! for the error message, and on cancellation SIGTERM to its whole process group, then SIGKILL
//! after a grace. A run whose future is dropped kills its group, so no child outlives its job.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Bytes of stderr kept for the error message.
const STDERR_TAIL: usize = 2048;

/// What to run.
pub(crate) struct Spec<'a> {
    pub(crate) argv: &'a [String],
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<&'a PathBuf>,
}

/// How the process ended.
pub(crate) enum Exit {
    /// It exited on its own.
    Exited {
        status: ExitStatus,
        stderr_tail: String,
    },
    /// It was stopped because `cancel` fired.
    Cancelled,
}

/// Kills the process group when dropped while armed.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH: the group is already gone, which is what we want.
            let _ = killpg(pgid, signal);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

pub(crate) async fn run(
    spec: Spec<'_>,
    stdin: &[u8],
    cancel: &CancellationToken,
    kill_grace: Duration,
) -> std::io::Result<Exit> {
    let mut command = Command::new(&spec.argv[0]);
    command
        .args(&spec.argv[1..])
        .envs(spec.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        // Its own process group, so that a kill reaches everything it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = spec.cwd {
        command.current_dir(cwd);
    }
    let mut child = command.spawn().map_err(|err| {
        std::io::Error::new(
            err.kind(),
            format!("cannot start {:?}: {err}", spec.argv[0]),
        )
    })?;
    let mut guard = GroupGuard {
        pgid: child.id().map(|id| Pid::from_raw(id as i32)),
    };

    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    let writer = tokio::spawn(async move {
        // A child that does not read its stdin closes the pipe: not an error of the job.
        let _ = input.write_all(&stdin).await;
        let _ = input.shutdown().await;
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = tokio::spawn(async move {
        let mut tail = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        let start = tail.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&tail[start..]).trim().to_owned()
    });

    let outcome = tokio::select! {
        status = child.wait() => {
            let status = status?;
            let _ = writer.await;
            let stderr_tail = reader.await.unwrap_or_default();
            Exit::Exited { status, stderr_tail }
        }
        _ = cancel.cancelled() => {
            guard.signal(Signal::SIGTERM);
            if tokio::time::timeout(kill_grace, child.wait()).await.is_err() {
                guard.signal(Signal::SIGKILL);
                let _ = child.wait().await;
            }
            Exit::Cancelled
        }
    };
    // The leader has exited; children it left in the group are killed by the guard.
    guard.signal(Signal::SIGKILL);
    guard.pgid = None;
    Ok(outcome)
}

/// A short description of a non-zero exit.
pub(crate) fn describe(status: ExitStatus, stderr_tail: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "ended abnormally".to_owned(),
    };
    if stderr_tail.is_empty() {
        how
    } else {
        format!("{how}: {stderr_tail}")
    }
}
