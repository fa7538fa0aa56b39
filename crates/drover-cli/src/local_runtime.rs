//! The `local` capacity runtime: a slot is a `drover worker --slot ID` process on this machine,
//! serving its system's queues. Binding is the worker registering itself (its process id starts
//! with the instance id), so the inventory is read from the process registry in the database:
//! a new leader sees the workers an old leader started.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;

use async_trait::async_trait;
use drover::autoscaler::{CapacityRuntime, Instance, InstancePhase, LaunchRequest, RuntimeError};
use drover_core::{DynStore, SlotId};
use jiff::Timestamp;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Instance ids are `local-SLOT-GENERATION`: the same launch always names the same instance.
fn instance_id(slot: SlotId, generation: i64) -> String {
    format!("local-{slot}-{generation}")
}

fn parse_instance(id: &str) -> Option<(SlotId, i64)> {
    let rest = id.strip_prefix("local-")?;
    let (slot, generation) = rest.split_once('-')?;
    Some((slot.parse().ok()?, generation.parse().ok()?))
}

/// The process id a slot's worker registers with.
pub(crate) fn worker_process_id(slot: SlotId, generation: i64) -> String {
    format!("{}@{}", instance_id(slot, generation), std::process::id())
}

struct Child {
    child: tokio::process::Child,
    started_at: Timestamp,
}

/// Worker processes on this machine.
pub(crate) struct LocalRuntime {
    store: DynStore,
    exe: PathBuf,
    database_url: String,
    config_path: Option<PathBuf>,
    /// System → the queues its workers serve.
    queues: BTreeMap<String, Vec<String>>,
    children: Mutex<HashMap<String, Child>>,
    /// The last signal sent to each instance: the tick asks again every tick until the worker
    /// is gone, and a second SIGTERM would make it exit at once.
    signalled: Mutex<HashMap<String, Signal>>,
    /// Workers of ours that exited while the registry still lists them (until the leader
    /// prunes a silent process, a minute or more): gone, whatever the registry says.
    exited: Mutex<HashSet<String>>,
}

impl LocalRuntime {
    pub(crate) fn new(
        store: DynStore,
        database_url: String,
        config_path: Option<PathBuf>,
        queues: BTreeMap<String, Vec<String>>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            store,
            exe: std::env::current_exe()?,
            database_url,
            config_path,
            queues,
            children: Mutex::new(HashMap::new()),
            signalled: Mutex::new(HashMap::new()),
            exited: Mutex::new(HashSet::new()),
        })
    }

    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<String, Child>> {
        self.children.lock().expect("children lock poisoned")
    }

    async fn signal(&self, instance: &str, signal: Signal) -> Result<(), RuntimeError> {
        {
            let mut signalled = self.signalled.lock().expect("signalled lock poisoned");
            if signalled.get(instance) == Some(&signal) {
                return Ok(());
            }
            signalled.insert(instance.to_owned(), signal);
        }
        let child_pid = self.children().get(instance).and_then(|c| c.child.id());
        let pid = match child_pid {
            Some(pid) => Some(pid),
            None => self.registered().await?.get(instance).map(|(pid, _)| *pid),
        };
        if let Some(pid) = pid
            && let Err(err) = kill(Pid::from_raw(pid as i32), signal)
            && err != nix::errno::Errno::ESRCH
        {
            return Err(RuntimeError::retryable("signal", err.to_string()));
        }
        Ok(())
    }

    async fn registered(&self) -> Result<HashMap<String, (u32, Timestamp)>, RuntimeError> {
        let processes = self
            .store
            .process_list()
            .await
            .map_err(|err| RuntimeError::retryable("registry", err.to_string()))?;
        Ok(processes
            .into_iter()
            .filter_map(|p| {
                let (instance, _) = p.id.split_once('@')?;
                parse_instance(instance)?;
                Some((instance.to_owned(), (p.pid, p.started_at)))
            })
            .collect())
    }
}

#[async_trait]
impl CapacityRuntime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<String, RuntimeError> {
        let id = instance_id(request.slot, request.generation);
        let known = self.children().contains_key(&id);
        if known || self.registered().await?.contains_key(&id) {
            return Ok(id);
        }
        let queues = self
            .queues
            .get(&request.system)
            .cloned()
            .unwrap_or_default();
        let mut command = tokio::process::Command::new(&self.exe);
        command
            .arg("worker")
            .arg("--slot")
            .arg(request.slot.to_string())
            .arg("--slot-generation")
            .arg(request.generation.to_string());
        // A system no queue is bound to serves reservations only: its worker holds the slot
        // and claims no job.
        if !queues.is_empty() {
            command.arg("--queues").arg(queues.join(","));
        }
        command
            .env("DROVER_DATABASE_URL", &self.database_url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(path) = &self.config_path {
            command.env("DROVER_CONFIG", path);
        }
        let child = command.spawn().map_err(|err| {
            RuntimeError::retryable("spawn", format!("cannot start a worker: {err}"))
        })?;
        self.children().insert(
            id.clone(),
            Child {
                child,
                started_at: Timestamp::now(),
            },
        );
        Ok(id)
    }

    async fn terminate(&self, instance: &str) -> Result<(), RuntimeError> {
        // SIGTERM: the worker stops claiming, finishes (or hands back) what runs, and exits.
        self.signal(instance, Signal::SIGTERM).await
    }

    async fn terminate_now(&self, instance: &str) -> Result<(), RuntimeError> {
        // SIGUSR1: a slot worker hands back what it runs at once, then exits.
        self.signal(instance, Signal::SIGUSR1).await
    }

    async fn inventory(&self) -> Result<Vec<Instance>, RuntimeError> {
        let mut registered = self.registered().await?;
        let mut found: BTreeMap<String, Instance> = BTreeMap::new();
        {
            let mut children = self.children();
            let mut exited = self.exited.lock().expect("exited lock poisoned");
            // Reap exited workers: their instances are gone, though the registry lists them
            // until their rows are pruned (a worker killed with SIGKILL leaves its row): taken
            // for ready meanwhile, one was given reservations for over a minute.
            children.retain(|id, c| {
                let running = matches!(c.child.try_wait(), Ok(None));
                if !running {
                    exited.insert(id.clone());
                }
                running
            });
            exited.retain(|id| registered.contains_key(id));
            registered.retain(|id, _| !exited.contains(id));
            self.signalled
                .lock()
                .expect("signalled lock poisoned")
                .retain(|id, _| children.contains_key(id) || registered.contains_key(id));
            for (id, c) in children.iter() {
                found.insert(
                    id.clone(),
                    Instance {
                        id: id.clone(),
                        slot: parse_instance(id),
                        phase: if registered.contains_key(id) {
                            InstancePhase::Ready
                        } else {
                            InstancePhase::Binding
                        },
                        notice_at: None,
                        created_at: c.started_at,
                    },
                );
            }
        }
        for (id, (_, started_at)) in registered {
            found.entry(id.clone()).or_insert_with(|| Instance {
                slot: parse_instance(&id),
                id,
                phase: InstancePhase::Ready,
                notice_at: None,
                created_at: started_at,
            });
        }
        Ok(found.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_round_trip() {
        assert_eq!(parse_instance(&instance_id(12, 3)), Some((12, 3)));
        assert_eq!(parse_instance("sim-4"), None);
        assert!(worker_process_id(5, 1).starts_with("local-5-1@"));
    }
}
