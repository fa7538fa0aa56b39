//! The store's own background work, as the engine's health report shows it.
//!
//! A store may keep something going by itself — PostgreSQL's listener connection, which turns
//! notifications into wake-ups. When it is down, nothing fails: jobs are still claimed, on the
//! slow poll. So it must be visible, or a worker would run for days on its poll interval with
//! every health check green. The store reports plain facts ([`Store::background_health`]); the
//! engine judges them, on its own clock, beside its own loops.
//!
//! Ages are measured on the process's monotonic clock: the listener runs on real I/O whatever
//! clock the engine was given, and a wall clock stepping backwards must not make it look fresh.
//!
//! [`Store::background_health`]: crate::Store::background_health

use std::time::Duration;

/// One piece of a store's background work, at the moment it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackgroundHealth {
    /// Its name in the health report, e.g. `postgres listener`.
    pub name: String,
    /// How often it proves itself working while all is well (the listener's check interval).
    /// Down for longer than this, it is reported unhealthy.
    pub expected_every: Duration,
    /// How long ago it last proved itself working (connected, or a check answered); `None`
    /// when it never has.
    pub last_ok_ago: Option<Duration>,
    /// Set while it is not working.
    pub outage: Option<Outage>,
}

/// Why and for how long a piece of background work has not been working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// Time since it stopped working.
    pub for_: Duration,
    /// The last reason it gave (a lost connection, a refused reconnection).
    pub reason: String,
}
