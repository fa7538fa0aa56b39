//! The `command` capacity runtime: the user's own scripts make and take away capacity.
//!
//! Each call runs a command with a JSON document on stdin and reads JSON from stdout:
//! - `launch`: stdin `{"slot", "generation", "system", "bootstrap"}` (also in `DROVER_SLOT_ID`,
//!   `DROVER_SLOT_GENERATION`, `DROVER_SYSTEM`, `DROVER_BOOTSTRAP`); must be idempotent by slot
//!   and generation;
//!   prints `{"instance_id": "..."}`.
//! - `terminate`: stdin `{"instance_id"}`; succeeds when the instance is already gone.
//! - `list`: prints `[{"instance_id", "slot"?, "generation"?, "phase"?, "created_at"?}]`, every
//!   instance that exists (`phase`: booting, binding or ready, default ready).
//! - `notices` (optional): prints `[{"instance_id", "at"}]`, instances about to be taken away.
//!
//! Exit status 0 is success, 75 (`EX_TEMPFAIL`) a retryable error, anything else permanent.
//! A command that overruns its timeout gets SIGTERM, then SIGKILL after the grace, and counts as
//! a retryable `timeout`.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use drover::autoscaler::{CapacityRuntime, Instance, InstancePhase, LaunchRequest, RuntimeError};
use jiff::Timestamp;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// Exit status of a retryable failure (sysexits' EX_TEMPFAIL).
const RETRYABLE: i32 = 75;

/// `[autoscaler.command]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandSection {
    #[serde(default)]
    pub(crate) launch: Vec<String>,
    #[serde(default)]
    pub(crate) terminate: Vec<String>,
    #[serde(default)]
    pub(crate) list: Vec<String>,
    #[serde(default)]
    pub(crate) notices: Vec<String>,
    #[serde(default, deserialize_with = "crate::config::duration")]
    pub(crate) timeout: Option<Duration>,
    #[serde(default, deserialize_with = "crate::config::duration")]
    pub(crate) kill_grace: Option<Duration>,
    /// Variables of the server's environment the scripts also get (a cloud's credentials),
    /// beside the safe base every child gets: none of the others, the server's secrets among
    /// them.
    #[serde(default)]
    pub(crate) env_pass: Vec<String>,
}

impl CommandSection {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        for (name, command) in [
            ("launch", &self.launch),
            ("terminate", &self.terminate),
            ("list", &self.list),
        ] {
            if command.is_empty() || command[0].is_empty() {
                anyhow::bail!(
                    "autoscaler.command.{name}: the command runtime needs a {name} command, like {name} = [\"./capacity.sh\", \"{name}\"]"
                );
            }
        }
        for name in &self.env_pass {
            crate::config::check_env_name("autoscaler.command.env_pass", name)?;
        }
        if self.timeout == Some(Duration::ZERO) {
            anyhow::bail!("autoscaler.command.timeout: must be positive");
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Launched {
    instance_id: String,
}

#[derive(Deserialize)]
struct Listed {
    instance_id: String,
    slot: Option<i64>,
    generation: Option<i64>,
    phase: Option<String>,
    created_at: Option<Timestamp>,
}

#[derive(Deserialize)]
struct Notice {
    instance_id: String,
    at: Timestamp,
}

/// Capacity through the user's scripts.
pub(crate) struct CommandRuntime {
    section: CommandSection,
    /// First sight of instances listed without a creation time (for the orphan grace period).
    seen: std::sync::Mutex<HashMap<String, Timestamp>>,
}

impl CommandRuntime {
    pub(crate) fn new(section: CommandSection) -> Self {
        Self {
            section,
            seen: Default::default(),
        }
    }

    async fn run(
        &self,
        what: &str,
        command: &[String],
        input: serde_json::Value,
        env: &[(&str, String)],
    ) -> Result<Vec<u8>, RuntimeError> {
        let timeout = self.section.timeout.unwrap_or(Duration::from_secs(60));
        let grace = self.section.kill_grace.unwrap_or(Duration::from_secs(5));
        let set = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let env = crate::process::child_env(std::env::vars_os(), &self.section.env_pass, set);
        let mut child = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .env_clear()
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                RuntimeError::permanent("spawn", format!("cannot run the {what} command: {err}"))
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let body = input.to_string();
        // Read by tasks of their own: the answer is what the script wrote by the time it
        // exited, even when a process it left running (the instance it launched) holds its
        // pipes open.
        let stdout = Pipe::follow(child.stdout.take().expect("piped"), Pipe::ANSWER, false);
        let stderr = Pipe::follow(child.stderr.take().expect("piped"), Pipe::TAIL, true);
        let io = async {
            // A script that does not read its input must not block us.
            let _ = stdin.write_all(body.as_bytes()).await;
            drop(stdin);
            child.wait().await
        };
        let status = match tokio::time::timeout(timeout, io).await {
            Ok(Ok(done)) => done,
            Ok(Err(err)) => return Err(RuntimeError::retryable("io", err.to_string())),
            Err(_) => {
                if let Some(pid) = child.id() {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                    if tokio::time::timeout(grace, child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                }
                return Err(RuntimeError::retryable(
                    "timeout",
                    format!("the {what} command ran longer than {timeout:?}"),
                ));
            }
        };
        let out = stdout.written().await;
        let said = last_line(&stderr.written().await);
        match status.code() {
            Some(0) => Ok(out),
            Some(RETRYABLE) => Err(RuntimeError::retryable(
                format!("exit_{RETRYABLE}"),
                format!("the {what} command failed (retryable){said}"),
            )),
            Some(code) => Err(RuntimeError::permanent(
                format!("exit_{code}"),
                format!("the {what} command failed with exit status {code}{said}"),
            )),
            None => Err(RuntimeError::retryable(
                "signal",
                format!("the {what} command was killed by a signal"),
            )),
        }
    }
}

/// One of a script's output pipes, read as it comes by a task of its own; standard error is
/// passed on to the server's too (the operator reads the script's own words in the server's
/// log).
struct Pipe {
    kept: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Pipe {
    /// The most of standard output kept: an answer (a list of instances) is far smaller.
    const ANSWER: usize = 16 << 20;
    /// The most of standard error kept: its last line goes into a slot's reason.
    const TAIL: usize = 4096;

    /// Reads `pipe` to its end, keeping its last `keep` bytes.
    fn follow(
        mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        keep: usize,
        pass_on: bool,
    ) -> Self {
        let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let tail = kept.clone();
        let reader = tokio::spawn(async move {
            let mut chunk = vec![0u8; 8192];
            while let Ok(n @ 1..) = tokio::io::AsyncReadExt::read(&mut pipe, &mut chunk).await {
                if pass_on {
                    let _ = std::io::Write::write_all(&mut std::io::stderr(), &chunk[..n]);
                }
                let mut kept = tail.lock().unwrap_or_else(|p| p.into_inner());
                kept.extend_from_slice(&chunk[..n]);
                let excess = kept.len().saturating_sub(keep);
                kept.drain(..excess);
            }
        });
        Self { kept, reader }
    }

    /// What the script wrote, once it exited. A process it left running in the background
    /// may hold the pipe open for good: past a moment, what came so far is the answer.
    async fn written(mut self) -> Vec<u8> {
        if tokio::time::timeout(Duration::from_millis(200), &mut self.reader)
            .await
            .is_err()
        {
            self.reader.abort();
        }
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Pipe {
    /// A script given up on (past its timeout) leaves no reader behind.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The last line a failed script wrote to its standard error, as `: LINE`, at most 200
/// characters and without control characters (it is shown on the dashboard and the CLI).
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let Some(line) = text.lines().map(str::trim).rfind(|line| !line.is_empty()) else {
        return String::new();
    };
    let mut clean: String = line.chars().filter(|c| !c.is_control()).take(200).collect();
    if line.chars().count() > 200 {
        clean.push('…');
    }
    format!(": {clean}")
}

fn bad_output(what: &str, err: serde_json::Error) -> RuntimeError {
    RuntimeError::permanent(
        "bad_output",
        format!("the {what} command printed unexpected JSON: {err}"),
    )
}

#[async_trait]
impl CapacityRuntime for CommandRuntime {
    fn name(&self) -> &'static str {
        "command"
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<String, RuntimeError> {
        let env = [
            ("DROVER_SLOT_ID", request.slot.to_string()),
            ("DROVER_SLOT_GENERATION", request.generation.to_string()),
            ("DROVER_SYSTEM", request.system.clone()),
            ("DROVER_BOOTSTRAP", request.bootstrap.clone()),
        ];
        let input = serde_json::to_value(request).expect("serializable");
        let out = self
            .run("launch", &self.section.launch, input, &env)
            .await?;
        let launched: Launched =
            serde_json::from_slice(&out).map_err(|err| bad_output("launch", err))?;
        Ok(launched.instance_id)
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), RuntimeError> {
        let input = serde_json::json!({ "instance_id": instance_id });
        self.run("terminate", &self.section.terminate, input, &[])
            .await
            .map(|_| ())
    }

    async fn inventory(&self) -> Result<Vec<Instance>, RuntimeError> {
        let out = self
            .run("list", &self.section.list, serde_json::json!({}), &[])
            .await?;
        let listed: Vec<Listed> =
            serde_json::from_slice(&out).map_err(|err| bad_output("list", err))?;
        let notices: HashMap<String, Timestamp> = if self.section.notices.is_empty() {
            HashMap::new()
        } else {
            let out = self
                .run("notices", &self.section.notices, serde_json::json!({}), &[])
                .await?;
            let notices: Vec<Notice> =
                serde_json::from_slice(&out).map_err(|err| bad_output("notices", err))?;
            notices.into_iter().map(|n| (n.instance_id, n.at)).collect()
        };
        let now = Timestamp::now();
        let mut seen = self.seen.lock().expect("seen lock poisoned");
        seen.retain(|id, _| listed.iter().any(|l| &l.instance_id == id));
        listed
            .into_iter()
            .map(|l| {
                let phase = match l.phase.as_deref().unwrap_or("ready") {
                    "booting" => InstancePhase::Booting,
                    "binding" => InstancePhase::Binding,
                    "ready" => InstancePhase::Ready,
                    other => {
                        return Err(RuntimeError::permanent(
                            "bad_output",
                            format!("the list command printed phase {other:?}"),
                        ));
                    }
                };
                let created_at = l
                    .created_at
                    .unwrap_or_else(|| *seen.entry(l.instance_id.clone()).or_insert(now));
                Ok(Instance {
                    slot: l.slot.zip(l.generation),
                    notice_at: notices.get(&l.instance_id).copied(),
                    phase,
                    created_at,
                    id: l.instance_id,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use drover::autoscaler::RuntimeErrorKind;

    use super::*;

    fn runtime(launch: &[&str], timeout_ms: u64) -> CommandRuntime {
        let v = |c: &[&str]| c.iter().map(|s| s.to_string()).collect();
        CommandRuntime::new(CommandSection {
            launch: v(launch),
            terminate: v(&["true"]),
            list: v(&["echo", "[]"]),
            notices: Vec::new(),
            timeout: Some(Duration::from_millis(timeout_ms)),
            kill_grace: Some(Duration::from_millis(100)),
            env_pass: Vec::new(),
        })
    }

    /// The scripts see the server's variables only when `env_pass` names them (cargo sets
    /// `CARGO_PKG_NAME` in the environment of this test, as a server's secret would be).
    #[tokio::test]
    async fn scripts_get_only_the_variables_passed_to_them() {
        assert!(
            std::env::var_os("CARGO_PKG_NAME").is_some(),
            "run under cargo"
        );
        let script = r#"cat >/dev/null; echo "{\"instance_id\":\"i-${CARGO_PKG_NAME:-none}\"}""#;
        let mut runtime = runtime(&["sh", "-c", script], 5_000);
        assert_eq!(runtime.launch(&request()).await.unwrap(), "i-none");
        runtime.section.env_pass = vec!["CARGO_PKG_NAME".into()];
        let passed = runtime.launch(&request()).await.unwrap();
        assert_eq!(passed, format!("i-{}", env!("CARGO_PKG_NAME")));
    }

    fn request() -> LaunchRequest {
        LaunchRequest {
            slot: 4,
            generation: 2,
            system: "gpu".into(),
            bootstrap: "true".into(),
        }
    }

    #[tokio::test]
    async fn exit_status_separates_retryable_from_permanent() {
        let ok = runtime(
            &[
                "sh",
                "-c",
                r#"cat >/dev/null; echo "{\"instance_id\":\"i-$DROVER_SLOT_ID-$DROVER_SLOT_GENERATION\"}""#,
            ],
            5_000,
        );
        assert_eq!(ok.launch(&request()).await.unwrap(), "i-4-2");
        let err = runtime(&["sh", "-c", "exit 75"], 5_000)
            .launch(&request())
            .await
            .unwrap_err();
        assert_eq!(
            (err.kind, err.category.as_str()),
            (RuntimeErrorKind::Retryable, "exit_75")
        );
        let err = runtime(
            &[
                "sh",
                "-c",
                "echo booting >&2; echo 'quota exceeded: 0 of 8 GPUs' >&2; exit 3",
            ],
            5_000,
        )
        .launch(&request())
        .await
        .unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Permanent);
        assert!(
            err.message
                .ends_with("exit status 3: quota exceeded: 0 of 8 GPUs"),
            "{}",
            err.message
        );
        let err = runtime(&["echo", "not json"], 5_000)
            .launch(&request())
            .await
            .unwrap_err();
        assert_eq!(err.category, "bad_output");
    }

    /// A launch script that starts its instance in the background, which keeps the script's
    /// standard output and error open, still answers once the script exits.
    #[tokio::test]
    async fn a_background_child_holding_the_pipes_does_not_hold_the_launch() {
        let script = r#"cat >/dev/null; sleep 30 & echo '{"instance_id":"i-bg"}'"#;
        let started = std::time::Instant::now();
        let id = runtime(&["sh", "-c", script], 20_000)
            .launch(&request())
            .await
            .unwrap();
        assert_eq!(id, "i-bg");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn an_overrunning_command_is_stopped_and_retryable() {
        let started = std::time::Instant::now();
        let err = runtime(&["sleep", "30"], 200)
            .launch(&request())
            .await
            .unwrap_err();
        assert_eq!(
            (err.kind, err.category.as_str()),
            (RuntimeErrorKind::Retryable, "timeout")
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            runtime(&["true"], 1_000)
                .inventory()
                .await
                .unwrap()
                .is_empty()
        );
    }
}
