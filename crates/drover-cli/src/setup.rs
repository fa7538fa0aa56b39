//! From `drover.toml` to the engine's parts: its settings, the command tasks, the hooks, and a
//! client that applies each task's defaults.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use drover::{Client, EngineConfig, JobDefaults, RawTask, TaskOptions};
use drover_core::{DynStore, JobState, Limits, RetryPolicy, SystemClock};

use crate::cli::WorkerArgs;
use crate::config::{Config, CronSection, JobsArchiveSection, RetentionSection};
use crate::hooks::CommandHook;
use crate::tasks::command::CommandTask;
use drover::cron::{CatchUp, CronSchedule, ParsedSchedule};
use drover::retention::{Keep, PreparedPolicy, RetentionPolicy};

/// Concurrency of a queue that the config names without a concurrency.
const DEFAULT_CONCURRENCY: usize = 10;

pub(crate) fn limits(config: &Config) -> Limits {
    let mut limits = Limits::default();
    if let Some(max) = config.database.max_args_bytes {
        limits.max_args_bytes = max;
    }
    limits
}

/// The queues the config has a process work, and their concurrency: `[queues]` (or `default`),
/// without those bound to a system when `drop_bound` (their slots work them), with the queues
/// of `[tasks]` it does not list.
fn config_queues(config: &Config, drop_bound: bool) -> BTreeMap<String, usize> {
    let mut queues: BTreeMap<String, usize> = if config.queues.is_empty() {
        BTreeMap::from([("default".to_owned(), DEFAULT_CONCURRENCY)])
    } else {
        config
            .queues
            .iter()
            .map(|(queue, section)| (queue.clone(), section.concurrency(DEFAULT_CONCURRENCY)))
            .collect()
    };
    // A queue bound to a system is worked by that system's slots (`drover worker --slot …
    // --queues …`): a process that takes its jobs here would leave the capacity idle.
    let bound: BTreeMap<&str, &str> = config
        .queues
        .iter()
        .filter_map(|(queue, section)| Some((queue.as_str(), section.system()?)))
        .collect();
    // The sim runtime's instances run nothing: there the server works every queue.
    let slots_run_jobs = config.autoscaler.runtime.as_deref() != Some("sim");
    if drop_bound && slots_run_jobs {
        for (queue, system) in &bound {
            queues.remove(*queue);
            tracing::info!(
                queue,
                system,
                "not working queue {queue} here: its jobs run on the slots of system {system} \
                 (--queues {queue} works it here)"
            );
        }
    }
    // A task's queue must be worked, or its jobs would wait forever.
    for (kind, task) in &config.tasks {
        if let Some(queue) = &task.queue
            && !queues.contains_key(queue)
            && !(slots_run_jobs && bound.contains_key(queue.as_str()))
        {
            tracing::info!(
                queue,
                kind,
                concurrency = DEFAULT_CONCURRENCY,
                "working the queue of task {kind}, which [queues] does not list"
            );
            queues.insert(queue.clone(), DEFAULT_CONCURRENCY);
        }
    }
    queues
}

/// The engine settings for `serve` or `worker`.
pub(crate) fn engine_config(config: &Config, args: &WorkerArgs) -> anyhow::Result<EngineConfig> {
    let mut queues = if args.slot.is_some() && args.queues.is_empty() {
        // A slot's worker works what its runtime names and nothing else: none for a system
        // that serves reservations only.
        BTreeMap::new()
    } else {
        config_queues(config, args.queues.is_empty())
    };
    if !args.queues.is_empty() {
        queues = args
            .queues
            .iter()
            .map(|queue| {
                drover_core::validate::check_name("queue", queue)?;
                Ok((
                    queue.clone(),
                    queues.get(queue).copied().unwrap_or(DEFAULT_CONCURRENCY),
                ))
            })
            .collect::<Result<_, drover_core::ValidationError>>()
            .map_err(|err| anyhow::anyhow!("--queues: {err}"))?;
    }
    if let Some(concurrency) = args.concurrency {
        for value in queues.values_mut() {
            *value = concurrency;
        }
    }
    let engine = worker_settings(config, queues, args.shutdown_timeout);
    engine
        .validate()
        .context("check the config's [worker] and [queues] sections")?;
    Ok(engine)
}

/// The engine's settings from `[worker]`, for `queues`, with the command line's shutdown
/// timeout when given.
pub(crate) fn worker_settings(
    config: &Config,
    queues: BTreeMap<String, usize>,
    shutdown_timeout: Option<Duration>,
) -> EngineConfig {
    let worker = &config.worker;
    let defaults = EngineConfig::default();
    EngineConfig {
        queues,
        lease: worker.lease.unwrap_or(defaults.lease),
        heartbeat_interval: worker.heartbeat_interval,
        poll_interval: worker.poll_interval.unwrap_or(defaults.poll_interval),
        rescue_interval: worker.rescue_interval,
        shutdown_timeout: shutdown_timeout
            .or(worker.shutdown_timeout)
            .unwrap_or(defaults.shutdown_timeout),
        cancel_grace: worker.cancel_grace.unwrap_or(Duration::from_secs(10)),
        leader_ttl: worker.leader_ttl.unwrap_or(defaults.leader_ttl),
        leader_eligible: defaults.leader_eligible,
        prefetch: worker.prefetch.or(defaults.prefetch),
        hook_concurrency: worker.hook_concurrency.unwrap_or(defaults.hook_concurrency),
        limits: limits(config),
        process_id: None,
        counts: drover::services::counter::CounterConfig {
            interval: worker.counts_interval.unwrap_or(defaults.counts.interval),
            cap: worker.counts_cap.unwrap_or(defaults.counts.cap),
        },
    }
}

fn task_options(config: &Config) -> HashMap<String, TaskOptions> {
    config
        .tasks
        .iter()
        .map(|(kind, task)| {
            let defaults = TaskOptions::default();
            let retry = RetryPolicy {
                base: task.backoff.unwrap_or(defaults.retry.base),
                max: task.backoff_max.unwrap_or(defaults.retry.max),
                ..defaults.retry
            };
            let options = TaskOptions {
                queue: task.queue.clone().unwrap_or(defaults.queue),
                max_attempts: task.max_attempts.unwrap_or(defaults.max_attempts),
                timeout: task.timeout,
                retry,
                delivery: task
                    .delivery
                    .as_deref()
                    .map(|d| d.parse().expect("validated at load"))
                    .unwrap_or(defaults.delivery),
            };
            (kind.clone(), options)
        })
        .collect()
}

/// The command tasks declared in the config.
pub(crate) fn command_tasks(config: &Config) -> Vec<Arc<dyn RawTask>> {
    let options = task_options(config);
    config
        .tasks
        .iter()
        .map(|(kind, task)| {
            Arc::new(CommandTask {
                kind: kind.clone(),
                argv: task.command.clone(),
                env: task.env.clone(),
                env_pass: task.env_pass.clone(),
                cwd: task.cwd.clone(),
                options: options[kind].clone(),
                kill_grace: task.kill_grace.unwrap_or(Duration::from_secs(5)),
                log_args: config.log.args,
            }) as Arc<dyn RawTask>
        })
        .collect()
}

/// Checks the command tasks of the queues this process works before any job runs: their
/// working directory exists, and their program is found where the exec will look for it (on
/// the task's `PATH`, or the worker's). Otherwise every job of theirs would fail, attempt after
/// attempt, for a mistake the start could have named. Tasks of other queues are left alone:
/// their programs may be installed only on the hosts that work them. The hooks' programs are
/// checked too (on the worker's `PATH`).
pub(crate) fn check_commands(
    config: &Config,
    queues: &BTreeMap<String, usize>,
) -> anyhow::Result<()> {
    let options = task_options(config);
    let inherited_path = std::env::var("PATH").unwrap_or_default();
    for (kind, task) in &config.tasks {
        if !queues.contains_key(&options[kind].queue) {
            continue;
        }
        if let Some(cwd) = &task.cwd
            && !cwd.is_dir()
        {
            anyhow::bail!("tasks.{kind:?}.cwd: {} is not a directory", cwd.display());
        }
        let path = task.env.get("PATH").unwrap_or(&inherited_path);
        check_program(
            &format!("tasks.{kind:?}.command"),
            &task.command[0],
            task.cwd.as_deref(),
            path,
        )?;
    }
    // Hooks run at every job's end: a missing program would fail each of them, in the log only.
    for (i, hook) in config.hooks.iter().enumerate() {
        check_program(
            &format!("hooks[{i}].command"),
            &hook.command[0],
            None,
            &inherited_path,
        )?;
    }
    Ok(())
}

/// The autoscaler's commands, for a process that may lead (and so tick): the same check, for
/// a tick that would otherwise warn of a missing program every few seconds.
pub(crate) fn check_capacity_commands(config: &Config) -> anyhow::Result<()> {
    let section = &config.autoscaler;
    if config.systems.is_empty() || section.runtime.as_deref() != Some("command") {
        return Ok(());
    }
    let inherited_path = std::env::var("PATH").unwrap_or_default();
    let command = &section.command;
    for (name, argv) in [
        ("launch", &command.launch),
        ("terminate", &command.terminate),
        ("list", &command.list),
        ("notices", &command.notices),
    ] {
        if let Some(program) = argv.first() {
            check_program(
                &format!("autoscaler.command.{name}"),
                program,
                None,
                &inherited_path,
            )?;
        }
    }
    Ok(())
}

/// An error naming `key` unless exec would find `program`.
fn check_program(
    key: &str,
    program: &str,
    cwd: Option<&std::path::Path>,
    path: &str,
) -> anyhow::Result<()> {
    if program_found(program, cwd, path) {
        return Ok(());
    }
    anyhow::bail!(
        "{key}: no executable {program:?} {}",
        if program.contains('/') {
            "at that path".to_owned()
        } else {
            format!("on PATH ({path})")
        }
    )
}

/// Whether exec would find `program`: a path (relative to `cwd`, if given) when it has a `/`,
/// else a name searched on `path`.
fn program_found(program: &str, cwd: Option<&std::path::Path>, path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |candidate: &std::path::Path| {
        std::fs::metadata(candidate)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let candidate = std::path::Path::new(program);
        return match cwd {
            Some(cwd) if candidate.is_relative() => executable(&cwd.join(candidate)),
            _ => executable(candidate),
        };
    }
    std::env::split_paths(path).any(|dir| executable(&dir.join(program)))
}

/// `admin` running the config's hooks when its actions end jobs, as a server's does.
pub(crate) fn with_hooks(admin: drover::Admin, config: &Config) -> drover::Admin {
    let hooks: Vec<Arc<dyn drover::Hook>> = command_hooks(config)
        .into_iter()
        .map(|hook| Arc::new(hook) as Arc<dyn drover::Hook>)
        .collect();
    if hooks.is_empty() {
        return admin;
    }
    let concurrency = worker_settings(config, BTreeMap::new(), None).hook_concurrency;
    admin.with_job_end_hooks(hooks, concurrency)
}

/// The hooks declared in the config.
pub(crate) fn command_hooks(config: &Config) -> Vec<CommandHook> {
    config
        .hooks
        .iter()
        .map(|hook| CommandHook {
            argv: hook.command.clone(),
            on: match &hook.on {
                Some(states) => states
                    .iter()
                    .map(|s| s.parse().expect("validated at load"))
                    .collect(),
                None => vec![
                    JobState::Completed,
                    JobState::Discarded,
                    JobState::Cancelled,
                ],
            },
            timeout: hook.timeout.unwrap_or(Duration::from_secs(30)),
            env_pass: hook.env_pass.clone(),
        })
        .collect()
}

/// Validation and the config's task defaults, without a database.
pub(crate) fn job_defaults(config: &Config) -> JobDefaults {
    JobDefaults::new(Arc::new(SystemClock), limits(config), task_options(config))
}

/// The admin seam over `store`, with the config's task defaults, cron schedules and retention
/// policies.
pub(crate) fn admin(store: DynStore, config: &Config) -> anyhow::Result<drover::Admin> {
    Ok(
        drover::Admin::new(store, job_defaults(config), cron_schedules(config)?)
            .with_retention(retention_policies(config)?),
    )
}

/// A client that applies the config's task defaults.
pub(crate) fn client(store: DynStore, config: &Config) -> Client {
    Client::with_defaults(store, job_defaults(config))
}

/// A `[[cron]]` entry as the engine's schedule, with its expression and time zone checked.
pub(crate) fn cron_schedule(section: &CronSection) -> anyhow::Result<CronSchedule> {
    let args = match &section.args {
        None => "{}".to_owned(),
        Some(value @ serde_json::Value::Object(_)) => serde_json::to_string(value)?,
        Some(_) => anyhow::bail!("args must be a table, like args = {{ format = \"pdf\" }}"),
    };
    let schedule = CronSchedule {
        name: section.name.clone(),
        expression: section.schedule.clone(),
        timezone: section.timezone.clone(),
        kind: section.kind.clone(),
        args,
        queue: section.queue.clone(),
        catch_up: match &section.catch_up {
            Some(policy) => policy.parse().map_err(anyhow::Error::msg)?,
            None => CatchUp::Once,
        },
    };
    drover_core::validate::check_name("kind", &schedule.kind)?;
    // The queue too, as the engine checks it at start: `drover cron list` must not show a
    // schedule that `serve` refuses.
    if let Some(queue) = &schedule.queue {
        drover_core::validate::check_name("queue", queue)?;
    }
    // Said within the config's own error ("invalid config FILE: cron[0]: …"), not as another.
    ParsedSchedule::parse(schedule.clone()).map_err(|err| match err {
        drover::Error::Config(message) => anyhow::Error::msg(message),
        other => other.into(),
    })?;
    Ok(schedule)
}

fn keep(months: Option<u32>, days: Option<u32>, default: Option<Keep>) -> anyhow::Result<Keep> {
    match (months, days, default) {
        (Some(_), Some(_), _) => anyhow::bail!("set months or days, not both"),
        (Some(0), None, _) | (None, Some(0), _) => anyhow::bail!("the retention must be positive"),
        (Some(m), None, _) => Ok(Keep::Months(m)),
        (None, Some(d), _) => Ok(Keep::Days(d)),
        (None, None, Some(keep)) => Ok(keep),
        (None, None, None) => anyhow::bail!("set months = N or days = N"),
    }
}

/// A `[[retention]]` entry as the engine's policy (identifiers checked; the tables are checked
/// against the database at start).
pub(crate) fn retention_policy(section: &RetentionSection) -> anyhow::Result<RetentionPolicy> {
    let policy = RetentionPolicy {
        name: section.name.clone(),
        table: section.table.clone(),
        archive_table: section.archive_table.clone(),
        id_column: section.id_column.clone().unwrap_or_else(|| "id".into()),
        age_column: section.age_column.clone(),
        fallback_column: section.fallback_column.clone(),
        keep: keep(section.months, section.days, None)?,
        batch_size: section.batch_size.unwrap_or(1000),
        schedule: section
            .schedule
            .clone()
            .unwrap_or_else(|| "0 * * * *".into()),
        finished_jobs_only: false,
    };
    check_policy_offline(&policy)?;
    Ok(policy)
}

/// The built-in policy for Drover's own finished jobs, unless disabled.
pub(crate) fn jobs_archive_policy(
    section: &JobsArchiveSection,
) -> anyhow::Result<Option<RetentionPolicy>> {
    if section.enabled == Some(false) {
        return Ok(None);
    }
    let defaults = RetentionPolicy::finished_jobs();
    let policy = RetentionPolicy {
        keep: keep(section.months, section.days, Some(defaults.keep))?,
        batch_size: section.batch_size.unwrap_or(defaults.batch_size),
        schedule: section
            .schedule
            .clone()
            .unwrap_or(defaults.schedule.clone()),
        ..defaults
    };
    check_policy_offline(&policy)?;
    Ok(Some(policy))
}

/// What can be checked without the database: names, batch size, schedule.
fn check_policy_offline(policy: &RetentionPolicy) -> anyhow::Result<()> {
    drover::retention::check(policy)?;
    Ok(())
}

/// Every retention policy of the config: the built-in one first.
pub(crate) fn retention_policies(config: &Config) -> anyhow::Result<Vec<RetentionPolicy>> {
    let mut policies: Vec<RetentionPolicy> = jobs_archive_policy(&config.jobs_archive)?
        .into_iter()
        .collect();
    for section in &config.retention {
        policies.push(retention_policy(section)?);
    }
    Ok(policies)
}

/// Checks every policy against the database; the first problem refuses the start.
pub(crate) async fn prepare_retention(
    store: &DynStore,
    config: &Config,
) -> anyhow::Result<Vec<PreparedPolicy>> {
    let mut prepared = Vec::new();
    for policy in retention_policies(config)? {
        prepared.push(drover::retention::prepare(store, policy).await?);
    }
    Ok(prepared)
}

/// The config's cron schedules.
pub(crate) fn cron_schedules(config: &Config) -> anyhow::Result<Vec<CronSchedule>> {
    config.cron.iter().map(cron_schedule).collect()
}
