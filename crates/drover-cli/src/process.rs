//! Running a child process for a command task or hook: input on stdin, the tail of stderr kept
//! for the error message, and on cancellation SIGTERM to its whole process group, then SIGKILL
//! after a grace. A run whose future is dropped kills its group, so no child outlives its job;
//! a worker killed outright takes its direct child with it ([`crate::spawner`]).
//!
//! A child never inherits the worker's environment: the worker holds the database URL, API
//! tokens and passwords, and a task is user code. It starts from an empty environment plus
//! [`SAFE_BASE`], the variables its config lists in `env_pass`, and what the caller sets
//! (the task's `env` and `DROVER_JOB_*`).

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::spawner;
use tokio_util::sync::CancellationToken;

/// Bytes of stderr kept for the error message.
const STDERR_TAIL: usize = 2048;

/// Variables a child gets from the worker without asking: what a program needs to find its
/// tools, its home and its locale. None of them is a credential. `SHELL`, `LOGNAME` and the
/// like are left out on purpose: a task that needs them says so in `env_pass`.
const SAFE_BASE: &[&str] = &["PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR"];

/// What to run.
pub(crate) struct Spec<'a> {
    pub(crate) argv: &'a [String],
    /// Set in the child after the safe base and `pass`; later entries win.
    pub(crate) env: Vec<(String, String)>,
    /// Names of the worker's variables passed through as they are (`env_pass`).
    pub(crate) pass: &'a [String],
    pub(crate) cwd: Option<&'a PathBuf>,
}

/// The child's whole environment, from the worker's `inherited` variables: the safe base, the
/// `LC_*` locale variables, the named `pass` ones, then `set`.
pub(crate) fn child_env(
    inherited: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    pass: &[String],
    set: Vec<(String, String)>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env: Vec<_> = inherited
        .filter(|(name, _)| {
            let name = name.to_string_lossy();
            SAFE_BASE.contains(&name.as_ref())
                || name.starts_with("LC_")
                || pass.iter().any(|p| *p == name)
        })
        .collect();
    env.extend(set.into_iter().map(|(k, v)| (k.into(), v.into())));
    env
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

/// The process groups of the commands running now, for [`kill_all`].
static RUNNING_GROUPS: std::sync::Mutex<std::collections::BTreeSet<i32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn running_groups() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<i32>> {
    // A panic while holding it leaves the set as it was: still the groups to kill.
    RUNNING_GROUPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SIGKILLs the process group of every command running now. For an exit that runs no drops
/// (the second signal's): each command's shim would kill its group once the kernel tells it
/// that this process died, but this kills them before the exit, not after it.
pub(crate) fn kill_all() {
    let groups = running_groups();
    // Under the same lock as a new group's registration: a command started from now on is
    // killed as it registers, so none slips past on its way to starting.
    KILLED_ALL.store(true, std::sync::atomic::Ordering::SeqCst);
    for &pgid in groups.iter() {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Starts a command (`spawn`, which puts it in a process group of its own, led by itself) and
/// registers its group for [`kill_all`], both under the registry's lock: a [`kill_all`] waits
/// for a start under way and kills it too, and once it has run no command starts. Registered
/// here, by the thread that starts it, because the task that asked may be dropped before it
/// holds a guard (the process exiting after a signal), and what the command started would be
/// left an orphan.
pub(crate) fn start_registered(
    spawn: impl FnOnce() -> std::io::Result<tokio::process::Child>,
) -> std::io::Result<tokio::process::Child> {
    let mut groups = running_groups();
    if KILLED_ALL.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(std::io::Error::other(
            "the process is stopping: no command starts",
        ));
    }
    let child = spawn()?;
    if let Some(pid) = child.id() {
        groups.insert(pid as i32);
    }
    Ok(child)
}

/// Kills the process group `pgid` and forgets it: its command never reached the task that
/// started it.
pub(crate) fn forget_group(pgid: u32) {
    let mut groups = running_groups();
    let pgid = pgid as i32;
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    groups.remove(&pgid);
}

/// Set by [`kill_all`]: the process is on its way out, and no command may outlive it.
static KILLED_ALL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl GroupGuard {
    /// Forgets the group: its process was reaped, and its id may be reused.
    fn disarm(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            running_groups().remove(&pgid.as_raw());
        }
    }

    /// Guards a group registered as it started ([`start_registered`]).
    fn new(pgid: Option<Pid>) -> Self {
        Self { pgid }
    }

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
        self.disarm();
    }
}

pub(crate) async fn run(
    spec: Spec<'_>,
    stdin: &[u8],
    cancel: &CancellationToken,
    kill_grace: Duration,
) -> std::io::Result<Exit> {
    let mut command = spawner::command(spec.argv);
    command
        .env_clear()
        .envs(child_env(std::env::vars_os(), spec.pass, spec.env))
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        // Its own process group, so that a kill reaches everything it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = spec.cwd {
        command.current_dir(cwd);
    }
    let mut child = spawner::spawn(command).await.map_err(|err| {
        std::io::Error::new(
            err.kind(),
            format!("cannot start {:?}: {err}", spec.argv[0]),
        )
    })?;
    let mut guard = GroupGuard::new(child.id().map(|id| Pid::from_raw(id as i32)));

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
            // The run ends with its command: what it left running in its group is killed now,
            // before the pipes are drained, or a background child holding stderr open would
            // keep the run going (and deaf to a cancel) for as long as it lives.
            guard.signal(Signal::SIGKILL);
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
    guard.disarm();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn a_child_gets_the_safe_base_what_is_passed_and_what_is_set_and_nothing_else() {
        let worker = vars(&[
            ("PATH", "/usr/bin"),
            ("HOME", "/home/w"),
            ("LC_ALL", "C.UTF-8"),
            ("DROVER_DATABASE_URL", "postgres://u:secret@db/x"),
            ("DROVER_TOKEN", "t0ken"),
            ("PGPASSWORD", "pw"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_SECRET_ACCESS_KEY", "k"),
        ]);
        let env = child_env(
            worker.into_iter(),
            &["AWS_REGION".to_owned()],
            vec![("DROVER_JOB_ID".to_owned(), "7".to_owned())],
        );
        let names: Vec<_> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(
            names,
            ["PATH", "HOME", "LC_ALL", "AWS_REGION", "DROVER_JOB_ID"]
        );
    }
}
