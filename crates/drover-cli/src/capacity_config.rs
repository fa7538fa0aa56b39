//! The autoscaler's part of `drover.toml`: `[systems.NAME]`, `[autoscaler]` (with
//! `[autoscaler.sim]`), and the `system` of a queue in the table form of `[queues]`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use drover::autoscaler::{AutoscalerConfig, CapacityRuntime, SimConfig, SimRuntime, SystemConfig};
use serde::Deserialize;

use crate::config::{Config, duration};

/// A queue: its concurrency (`default = 10`) or a table (`[queues.gpu] concurrency = 2,
/// system = "gpu"`).
#[derive(Debug, Clone)]
pub(crate) enum QueueSection {
    Concurrency(usize),
    Table(QueueTable),
}

/// By hand rather than `untagged`, whose one error for every mistake ("data did not match any
/// variant") named neither the misspelt key of a table nor what a number must be.
impl<'de> Deserialize<'de> for QueueSection {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = QueueSection;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a concurrency (like 10) or a table (concurrency, system)")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<QueueSection, E> {
                usize::try_from(n)
                    .map(QueueSection::Concurrency)
                    .map_err(|_| E::custom(format!("concurrency {n} is too large")))
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<QueueSection, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("concurrency {n} is negative")))
                    .and_then(|n| self.visit_u64(n))
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                map: M,
            ) -> Result<QueueSection, M::Error> {
                QueueTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(QueueSection::Table)
            }
        }
        de.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueTable {
    pub(crate) concurrency: Option<usize>,
    /// The system whose capacity runs this queue's jobs: they are its demand.
    pub(crate) system: Option<String>,
}

impl QueueSection {
    /// Concurrency of a queue that names none.
    pub(crate) fn concurrency(&self, default: usize) -> usize {
        match self {
            QueueSection::Concurrency(n) => *n,
            QueueSection::Table(t) => t.concurrency.unwrap_or(default),
        }
    }

    /// The system whose slots run this queue's jobs, when it is bound to one.
    pub(crate) fn system(&self) -> Option<&str> {
        match self {
            QueueSection::Concurrency(_) => None,
            QueueSection::Table(t) => t.system.as_deref(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SystemSection {
    pub(crate) min: Option<u32>,
    pub(crate) max: Option<u32>,
    pub(crate) warm: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) min_lifetime: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) boot_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) reservation_ttl: Option<Duration>,
    pub(crate) max_leases_per_slot: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) error_cooldown: Option<Duration>,
    /// Price of one slot-hour, for the simulator's cost.
    pub(crate) price_per_hour: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AutoscalerSection {
    pub(crate) max_slots: Option<u32>,
    /// `local` (default), `command` or `sim`.
    pub(crate) runtime: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) orphan_grace: Option<Duration>,
    #[serde(default)]
    pub(crate) sim: SimSection,
    #[serde(default)]
    pub(crate) command: crate::command_runtime::CommandSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SimSection {
    pub(crate) seed: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) boot_min: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) boot_max: Option<Duration>,
    pub(crate) launch_failure_rate: Option<f64>,
    /// Interruptions per instance-hour.
    pub(crate) interruption_rate: Option<f64>,
    #[serde(default, deserialize_with = "duration")]
    pub(crate) notice: Option<Duration>,
}

impl SimSection {
    pub(crate) fn config(&self) -> anyhow::Result<SimConfig> {
        let d = SimConfig::default();
        let sim = SimConfig {
            seed: self.seed.unwrap_or(d.seed),
            boot_min: self.boot_min.unwrap_or(d.boot_min),
            boot_max: self.boot_max.or(self.boot_min).unwrap_or(d.boot_max),
            launch_failure_rate: self.launch_failure_rate.unwrap_or(d.launch_failure_rate),
            interruption_rate: self.interruption_rate.unwrap_or(d.interruption_rate),
            notice: self.notice.unwrap_or(d.notice),
        };
        if !(0.0..=1.0).contains(&sim.launch_failure_rate) {
            bail!("autoscaler.sim.launch_failure_rate: must be between 0 and 1");
        }
        if !(sim.interruption_rate >= 0.0 && sim.interruption_rate.is_finite()) {
            bail!("autoscaler.sim.interruption_rate: must be a finite number, zero or more");
        }
        if sim.boot_max < sim.boot_min {
            bail!("autoscaler.sim.boot_max: shorter than boot_min");
        }
        Ok(sim)
    }
}

/// A `--system` that filters a list: a well-formed name, and one the config declares when it
/// declares any. (A system the config does not declare has no slots or reservations to show,
/// unless another config once did: only a config that declares systems can tell a typo.)
pub(crate) fn check_system_flag(config: &Config, system: &str) -> anyhow::Result<()> {
    drover_core::validate::check_name("system", system)?;
    let declared: Vec<String> = autoscaler_config(config)?
        .map(|autoscaler| autoscaler.systems.keys().cloned().collect())
        .unwrap_or_default();
    if !declared.is_empty() {
        drover::autoscaler::admin::check_declared(system, &declared)
            .map_err(|err| anyhow::anyhow!("--system: {err}"))?;
    }
    Ok(())
}

/// The runtimes a config may name.
pub(crate) const RUNTIMES: [&str; 3] = ["local", "command", "sim"];

/// The autoscaler's settings from the config; `None` when it declares no system.
pub(crate) fn autoscaler_config(config: &Config) -> anyhow::Result<Option<AutoscalerConfig>> {
    // Checked even with no system declared: every key is checked at start, and a runtime
    // misspelt there would only show once a system is added.
    check_runtime(&config.autoscaler)?;
    if config.systems.is_empty() {
        for (queue, section) in &config.queues {
            if let Some(system) = section.system() {
                bail!("queues.{queue}.system: no [systems.{system}] is declared");
            }
        }
        return Ok(None);
    }
    let section = &config.autoscaler;
    let defaults = AutoscalerConfig::default();
    let mut systems = BTreeMap::new();
    for (name, s) in &config.systems {
        let d = SystemConfig::default();
        let queues = config
            .queues
            .iter()
            .filter(|(_, q)| q.system() == Some(name.as_str()))
            .map(|(queue, _)| queue.clone())
            .collect();
        if let Some(price) = s.price_per_hour
            && !(price >= 0.0 && price.is_finite())
        {
            bail!("systems.{name}.price_per_hour: must be a finite number, zero or more");
        }
        systems.insert(
            name.clone(),
            SystemConfig {
                min: s.min.unwrap_or(d.min),
                max: s.max.unwrap_or(d.max),
                warm: s.warm.unwrap_or(d.warm),
                idle_timeout: s.idle_timeout.unwrap_or(d.idle_timeout),
                min_lifetime: s.min_lifetime.unwrap_or(d.min_lifetime),
                boot_timeout: s.boot_timeout.unwrap_or(d.boot_timeout),
                reservation_ttl: s.reservation_ttl.unwrap_or(d.reservation_ttl),
                max_leases_per_slot: s.max_leases_per_slot.unwrap_or(d.max_leases_per_slot),
                error_cooldown: s.error_cooldown.unwrap_or(d.error_cooldown),
                queues,
            },
        );
    }
    for (queue, q) in &config.queues {
        if let Some(system) = q.system()
            && !systems.contains_key(system)
        {
            bail!("queues.{queue}.system: no [systems.{system}] is declared");
        }
    }
    let autoscaler = AutoscalerConfig {
        systems,
        max_slots: section.max_slots.unwrap_or(defaults.max_slots),
        orphan_grace: section.orphan_grace.unwrap_or(defaults.orphan_grace),
        interval: section.interval.unwrap_or(defaults.interval),
    };
    autoscaler.validate()?;
    Ok(Some(autoscaler))
}

/// The `[autoscaler]` section's runtime and that runtime's own section.
fn check_runtime(section: &AutoscalerSection) -> anyhow::Result<()> {
    let runtime = section.runtime.as_deref().unwrap_or("local");
    if !RUNTIMES.contains(&runtime) {
        bail!("autoscaler.runtime: {runtime:?} is not one of local, command, sim");
    }
    section.sim.config()?;
    if runtime == "command" {
        section.command.validate()?;
    }
    Ok(())
}

/// The runtime the config names, for `drover serve`.
pub(crate) fn runtime(
    config: &Config,
    autoscaler: &AutoscalerConfig,
    store: &drover_core::DynStore,
    url: &str,
) -> anyhow::Result<Arc<dyn CapacityRuntime>> {
    match config.autoscaler.runtime.as_deref().unwrap_or("local") {
        "sim" => Ok(Arc::new(SimRuntime::new(
            Arc::new(drover_core::SystemClock),
            config.autoscaler.sim.config()?,
        ))),
        "local" => Ok(Arc::new(crate::local_runtime::LocalRuntime::new(
            store.clone(),
            url.to_owned(),
            config.source.clone(),
            autoscaler
                .systems
                .iter()
                .map(|(name, s)| (name.clone(), s.queues.clone()))
                .collect(),
        )?)),
        "command" => Ok(Arc::new(crate::command_runtime::CommandRuntime::new(
            config.autoscaler.command.clone(),
        ))),
        other => bail!("autoscaler.runtime: {other:?} is not one of local, command, sim"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// The runtime is checked with no system declared too, and a command runtime's programs
    /// must be found, naming the key.
    #[test]
    fn the_runtime_and_its_programs_are_checked_at_start() {
        let err = parse("[autoscaler]\nruntime = \"k8s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("autoscaler.runtime"), "{err}");
        let config = parse(
            r#"
            [queues.train]
            concurrency = 1
            system = "gpu"
            [systems.gpu]
            max = 1
            [autoscaler]
            runtime = "command"
            [autoscaler.command]
            launch = ["sh", "-c", "true"]
            terminate = ["/no/such/terminate.sh"]
            list = ["sh"]
            "#,
        )
        .unwrap();
        autoscaler_config(&config).unwrap();
        let err = crate::setup::check_capacity_commands(&config)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("autoscaler.command.terminate") && err.contains("/no/such"),
            "{err}"
        );
    }

    #[test]
    fn systems_queues_and_the_runtime_parse() {
        let config = parse(
            r#"
            [queues]
            default = 4
            [queues.train]
            concurrency = 1
            system = "gpu"
            [systems.gpu]
            min = 1
            max = 8
            warm = 2
            idle_timeout = "5m"
            max_leases_per_slot = 2
            [autoscaler]
            max_slots = 20
            runtime = "sim"
            [autoscaler.sim]
            seed = 7
            interruption_rate = 0.1
            "#,
        )
        .unwrap();
        assert_eq!(config.queues["default"].concurrency(10), 4);
        assert_eq!(config.queues["train"].concurrency(10), 1);
        let autoscaler = autoscaler_config(&config).unwrap().unwrap();
        let gpu = &autoscaler.systems["gpu"];
        assert_eq!((gpu.min, gpu.max, gpu.warm), (1, 8, 2));
        assert_eq!(gpu.idle_timeout, Duration::from_secs(300));
        assert_eq!(gpu.queues, vec!["train".to_owned()]);
        assert_eq!(autoscaler.max_slots, 20);
        assert_eq!(config.autoscaler.sim.config().unwrap().seed, 7);
        assert_eq!(config.autoscaler.runtime.as_deref(), Some("sim"));
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |text: &str| format!("{:#}", parse(text).unwrap_err());
        assert!(
            err("[queues.q]\nsystem = \"gpu\"\n").contains("queues.q.system"),
            "{}",
            err("[queues.q]\nsystem = \"gpu\"\n")
        );
        let e = err("[systems.gpu]\nmin = 3\nmax = 2\n");
        assert!(e.contains("systems.gpu.min"), "{e}");
        let e = err("[systems.gpu]\n[autoscaler]\nruntime = \"cloud\"\n");
        assert!(e.contains("autoscaler.runtime"), "{e}");
        let e = err("[systems.gpu]\nwarmth = 1\n");
        assert!(e.contains("warmth"), "{e}");
        let e = err("[systems.gpu]\n[autoscaler.sim]\nlaunch_failure_rate = 2.0\n");
        assert!(e.contains("launch_failure_rate"), "{e}");
    }
}
