//! Children that die with their worker, and everything they started.
//!
//! A command task's process group is killed when its run ends, is cancelled or is dropped
//! ([`crate::process`]); but a worker killed with SIGKILL runs no code, and its children would
//! run on, orphaned, beside the rerun of their job. Linux's parent-death signal
//! (`PR_SET_PDEATHSIG`) asks the kernel to signal a child when its parent dies.
//!
//! Three details decide how it is set up:
//!
//! - **Who sets it.** The signal must be armed in the child, after the fork. `Command::pre_exec`
//!   would do that, but it is `unsafe` (the closure runs in a forked copy of a multi-threaded
//!   process) and the workspace forbids `unsafe`. Instead the child is this binary again,
//!   started as `drover __drover-exec PID -- PROGRAM ARGS…`: it arms the signal with the safe
//!   `nix` call and checks that its parent is still the worker `PID` (had the worker died
//!   between fork and `prctl`, no signal would ever come). It runs before any other start-up
//!   of the binary ([`shim_if_asked`] is the first thing `main` calls).
//! - **Who gets killed.** The shim does not exec the program: it starts it and stays, the
//!   leader of the run's process group, waiting for it. When the worker dies the shim gets
//!   the parent-death signal and SIGKILLs the whole group, so that what the command started
//!   dies too: a shell's foreground `sleep` outlived its killed shell when the shim exec'd the
//!   shell (seen in QA: the job's rerun and the old run's child ran side by side). The shim
//!   passes the program's exit on as its own, its exit code or the signal that ended it; a
//!   SIGTERM sent to the group (a cancel) is the program's to handle, not the shim's.
//! - **Which parent.** The kernel sends the signal when the *thread* that forked the child
//!   exits, not the process. Tokio's blocking-pool threads exit after ten idle seconds, and a
//!   runtime worker thread can become one (`block_in_place`). So every child is spawned from one
//!   dedicated thread that lives as long as the process ([`spawn`]).
//!
//! What it does not cover: a process that leaves the group (`setsid`, a daemon) on purpose.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::{Mutex, OnceLock, mpsc};

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The first argument that makes the binary the shim that runs a command (see the module docs).
const SHIM: &str = "__drover-exec";

/// The exit status of a shim that could not start its program (as a shell's "not found").
const NOT_STARTED: u8 = 127;

/// A command for `argv` whose process gets SIGKILL when this worker dies. On other systems than
/// Linux, the command itself.
pub(crate) fn command(argv: &[String]) -> Command {
    if cfg!(target_os = "linux") {
        // `/proc/self/exe`, not the binary's path: it still runs this binary after a deploy
        // has replaced or deleted the file.
        let mut command = Command::new("/proc/self/exe");
        command
            .arg(SHIM)
            .arg(std::process::id().to_string())
            .arg("--")
            .args(argv);
        command
    } else {
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command
    }
}

struct Request {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<std::io::Result<Spawned>>,
}

/// A child on its way from the spawner thread to the task that asked for it. Dropped on the
/// way (that task gone, the process exiting), it kills the child's process group and forgets
/// it: what the child started must not outlive it as an orphan, and the group's id must not
/// stay registered for a later kill to hit whatever reuses it.
struct Spawned(Option<Child>);

impl Spawned {
    fn take(mut self) -> Child {
        self.0.take().expect("taken once")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(pid) = self.0.as_ref().and_then(|child| child.id()) {
            crate::process::forget_group(pid);
        }
    }
}

/// Spawns `command` from the process's long-lived spawner thread (see the module docs).
pub(crate) async fn spawn(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("drover-spawner".into())
            .spawn(move || {
                for mut request in rx {
                    // Tokio's child reaping needs the runtime the caller runs on.
                    let _runtime = request.runtime.enter();
                    let command = &mut request.command;
                    let spawned = crate::process::start_registered(|| command.spawn())
                        .map(|child| Spawned(Some(child)));
                    let _ = request.reply.send(spawned);
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = oneshot::channel();
    let request = Request {
        command,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    let sent = sender
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send(request);
    if sent.is_err() {
        return Err(std::io::Error::other("the spawner thread is gone"));
    }
    answer
        .await
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
        .map(Spawned::take)
}

/// When the binary was started as the shim: runs the program until it ends (see the module
/// docs) and returns its exit code, or ends by the signal that ended it. `None` for every
/// other start.
pub(crate) fn shim_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(SHIM.as_ref()) {
        return None;
    }
    let parent = args.next();
    let _separator = args.next();
    let argv: Vec<OsString> = args.collect();
    Some(supervise(parent, &argv).unwrap_or_else(|err| {
        let program = argv.first().map(|p| p.to_string_lossy().into_owned());
        eprintln!("cannot start {:?}: {err}", program.unwrap_or_default());
        ExitCode::from(NOT_STARTED)
    }))
}

/// The shim's parent-death signal: one nobody sends a command's process group, so that it
/// means only that the worker died.
#[cfg(target_os = "linux")]
const WORKER_DIED: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGUSR2;

#[cfg(target_os = "linux")]
fn supervise(parent: Option<OsString>, argv: &[OsString]) -> Result<ExitCode, String> {
    use nix::sys::signal::{SigSet, Signal, killpg};
    use nix::unistd::{Pid, getpgrp, getppid};

    let parent: i32 = parent
        .and_then(|p| p.to_str()?.parse().ok())
        .ok_or("the shim needs the worker's pid")?;
    // Blocked before they can arrive, and taken with sigwait below. A blocked signal stays
    // blocked across exec, and std's spawn leaves the mask as it is: the program is started
    // with `posix_spawnp` and an empty mask of its own ([`start`]), or a cancel's SIGTERM
    // would never reach it (seen in QA: every cancel and timeout waited for the SIGKILL).
    let mut waited = SigSet::empty();
    for signal in [
        WORKER_DIED,
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
    ] {
        waited.add(signal);
    }
    waited.thread_block().map_err(|e| e.to_string())?;
    nix::sys::prctl::set_pdeathsig(WORKER_DIED).map_err(|e| e.to_string())?;
    if getppid() != Pid::from_raw(parent) {
        return Err("the worker died before the command started".into());
    }
    let child = start(argv)?;
    loop {
        match waited.wait().map_err(|e| e.to_string())? {
            WORKER_DIED => {
                // This process too: nothing of the run outlives its worker.
                let _ = killpg(getpgrp(), Signal::SIGKILL);
            }
            // A cancel's SIGTERM reached the program too: ending is its call.
            Signal::SIGTERM | Signal::SIGINT => {}
            _ => {
                if let Some(code) = ended(child)? {
                    return Ok(code);
                }
            }
        }
    }
}

/// Starts the program (found on `PATH`, as a shell would) with this process's environment, an
/// empty signal mask and SIGPIPE at its default (std ignores it in this binary, and an ignored
/// signal stays ignored across exec).
#[cfg(target_os = "linux")]
fn start(argv: &[OsString]) -> Result<nix::unistd::Pid, String> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawnp};
    use nix::sys::signal::{SigSet, Signal};

    let c_string = |text: &[u8]| {
        CString::new(text).map_err(|_| "an argument or variable holds a NUL byte".to_string())
    };
    let args = argv
        .iter()
        .map(|arg| c_string(arg.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let program = args.first().ok_or("no program to run")?;
    let env = std::env::vars_os()
        .map(|(key, value)| {
            let mut pair = key.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            c_string(&pair)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut attr = PosixSpawnAttr::init().map_err(|e| e.to_string())?;
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    let flags = PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF;
    attr.set_sigmask(&SigSet::empty())
        .and_then(|()| attr.set_sigdefault(&pipe))
        .and_then(|()| attr.set_flags(flags))
        .map_err(|e| e.to_string())?;
    let actions = PosixSpawnFileActions::init().map_err(|e| e.to_string())?;
    posix_spawnp(program, &actions, &attr, &args, &env).map_err(|errno| errno.desc().to_string())
}

/// The shim's exit once the program has ended, as the program ended: with its exit code, or by
/// the signal that killed it. `None` while it runs.
#[cfg(target_os = "linux")]
fn ended(child: nix::unistd::Pid) -> Result<Option<ExitCode>, String> {
    use nix::sys::signal::{SigSet, raise};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

    match waitpid(child, Some(WaitPidFlag::WNOHANG)).map_err(|e| e.to_string())? {
        WaitStatus::Exited(_, code) => Ok(Some(ExitCode::from(code as u8))),
        WaitStatus::Signaled(_, signal, _) => {
            let _ = SigSet::all().thread_unblock();
            let _ = raise(signal);
            // A signal that did not end this process (none should be left): a shell's status.
            Ok(Some(ExitCode::from(128 + signal as u8)))
        }
        _ => Ok(None),
    }
}

#[cfg(not(target_os = "linux"))]
fn supervise(_parent: Option<OsString>, _argv: &[OsString]) -> Result<ExitCode, String> {
    Err("the shim is for Linux only".into())
}
