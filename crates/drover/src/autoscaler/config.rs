//! The autoscaler's settings: one [`SystemConfig`] per system and the fleet-wide limits,
//! validated before the first tick.

use std::collections::BTreeMap;
use std::time::Duration;

/// One system: a kind of capacity (a GPU machine, a large-memory runner, a spot pool).
#[derive(Debug, Clone, PartialEq)]
pub struct SystemConfig {
    /// Slots kept even with no demand. Default 0.
    pub min: u32,
    /// Slots never exceeded (counting slots that hold or may hold an instance). Default 10.
    pub max: u32,
    /// Ready, idle slots kept beyond the demand, so that new work starts at once. Default 0.
    pub warm: u32,
    /// A ready slot idle for this long is drained (above the pools). Default 5 minutes.
    pub idle_timeout: Duration,
    /// No slot is scaled down before it has lived this long (no flapping). Default 10 minutes.
    pub min_lifetime: Duration,
    /// A slot not ready this long after its launch goes to `error`. Default 10 minutes.
    pub boot_timeout: Duration,
    /// Time to live of reservations made without one. Default 10 minutes.
    pub reservation_ttl: Duration,
    /// Leases one slot holds at most. Default 1.
    pub max_leases_per_slot: u32,
    /// Pause of launches after a failure; doubles with each failure in a row (up to 64×).
    /// Default 30 seconds.
    pub error_cooldown: Duration,
    /// Queues whose available and running jobs are demand for this system (a ready slot's
    /// worker claims them itself).
    pub queues: Vec<String>,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self {
            min: 0,
            max: 10,
            warm: 0,
            idle_timeout: Duration::from_secs(300),
            min_lifetime: Duration::from_secs(600),
            boot_timeout: Duration::from_secs(600),
            reservation_ttl: Duration::from_secs(600),
            max_leases_per_slot: 1,
            error_cooldown: Duration::from_secs(30),
            queues: Vec::new(),
        }
    }
}

impl SystemConfig {
    /// The cool-down after `failures` launch failures in a row.
    pub fn cooldown_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(6);
        self.error_cooldown.saturating_mul(1 << doublings)
    }
}

/// Settings of the whole autoscaler.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalerConfig {
    /// The systems, by name.
    pub systems: BTreeMap<String, SystemConfig>,
    /// Slots over all systems never exceeded. Default 100.
    pub max_slots: u32,
    /// An instance no slot knows about is terminated once it is this old. Default 2 minutes.
    pub orphan_grace: Duration,
    /// Time between two ticks. Default 5 seconds.
    pub interval: Duration,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            systems: BTreeMap::new(),
            max_slots: 100,
            orphan_grace: Duration::from_secs(120),
            interval: Duration::from_secs(5),
        }
    }
}

/// A setting that cannot work, named by its place in `drover.toml`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct AutoscalerConfigError {
    /// Where (`systems.gpu.warm`).
    pub field: String,
    /// Why.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> AutoscalerConfigError {
    AutoscalerConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

impl AutoscalerConfig {
    /// Checks every setting; the first problem found is the error.
    pub fn validate(&self) -> Result<(), AutoscalerConfigError> {
        if self.interval.is_zero() {
            return Err(invalid("autoscaler.interval", "must be more than zero"));
        }
        let mut mins = 0u64;
        for (name, system) in &self.systems {
            drover_core::validate::check_name("system", name)
                .map_err(|err| invalid(format!("systems.{name}"), err.to_string()))?;
            let field = |f: &str| format!("systems.{name}.{f}");
            if system.max == 0 {
                return Err(invalid(field("max"), "must be at least 1"));
            }
            if system.min > system.max {
                return Err(invalid(
                    field("min"),
                    format!("{} is more than max ({})", system.min, system.max),
                ));
            }
            if system.warm > system.max {
                return Err(invalid(
                    field("warm"),
                    format!("{} is more than max ({})", system.warm, system.max),
                ));
            }
            if system.max_leases_per_slot == 0 {
                return Err(invalid(field("max_leases_per_slot"), "must be at least 1"));
            }
            for (f, value) in [
                ("boot_timeout", system.boot_timeout),
                ("reservation_ttl", system.reservation_ttl),
                ("error_cooldown", system.error_cooldown),
            ] {
                if value.is_zero() {
                    return Err(invalid(field(f), "must be more than zero"));
                }
            }
            if system.reservation_ttl > super::admin::MAX_RESERVATION_TTL {
                return Err(invalid(field("reservation_ttl"), "must be at most 30 days"));
            }
            for queue in &system.queues {
                drover_core::validate::check_name("queue", queue)
                    .map_err(|err| invalid(field("queues"), err.to_string()))?;
                if let Some((other, _)) = self
                    .systems
                    .iter()
                    .find(|(other, s)| *other < name && s.queues.contains(queue))
                {
                    return Err(invalid(
                        field("queues"),
                        format!("queue {queue:?} is already bound to system {other:?}"),
                    ));
                }
            }
            mins += u64::from(system.min);
        }
        if self.max_slots == 0 && !self.systems.is_empty() {
            return Err(invalid(
                "autoscaler.max_slots",
                "0 allows no slot at all: every job of a system would wait forever",
            ));
        }
        if mins > u64::from(self.max_slots) {
            return Err(invalid(
                "autoscaler.max_slots",
                format!(
                    "{} is less than the systems' minimums together ({mins})",
                    self.max_slots
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(system: SystemConfig) -> AutoscalerConfig {
        AutoscalerConfig {
            systems: [("gpu".to_owned(), system)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_valid() {
        with(SystemConfig::default()).validate().unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        let err = with(SystemConfig {
            min: 5,
            max: 2,
            ..Default::default()
        })
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "systems.gpu.min");
        assert_eq!(
            err.to_string(),
            "invalid systems.gpu.min: 5 is more than max (2)"
        );
        let err = with(SystemConfig {
            max_leases_per_slot: 0,
            ..Default::default()
        })
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "systems.gpu.max_leases_per_slot");
        let mut config = with(SystemConfig {
            min: 3,
            ..Default::default()
        });
        config.max_slots = 2;
        assert_eq!(config.validate().unwrap_err().field, "autoscaler.max_slots");
        let mut config = with(SystemConfig::default());
        config.max_slots = 0;
        assert_eq!(config.validate().unwrap_err().field, "autoscaler.max_slots");
        let mut config = with(SystemConfig {
            queues: vec!["q".into()],
            ..Default::default()
        });
        config.systems.insert(
            "big".into(),
            SystemConfig {
                queues: vec!["q".into()],
                ..Default::default()
            },
        );
        assert!(
            config
                .validate()
                .unwrap_err()
                .reason
                .contains("already bound")
        );
    }

    #[test]
    fn cooldown_doubles_and_stops_growing() {
        let system = SystemConfig {
            error_cooldown: Duration::from_secs(10),
            ..Default::default()
        };
        assert_eq!(system.cooldown_after(1), Duration::from_secs(10));
        assert_eq!(system.cooldown_after(2), Duration::from_secs(20));
        assert_eq!(system.cooldown_after(3), Duration::from_secs(40));
        assert_eq!(system.cooldown_after(50), Duration::from_secs(640));
    }
}
