//! The capacity autoscaler: launches capacity for the demand of each system, keeps a minimum
//! and a warm pool, drains capacity that is being taken away, and gives back what sits idle.
//!
//! # Model
//!
//! A *system* is a kind of capacity (`[systems.gpu]` in `drover.toml`). A *slot* is one unit of
//! it, stored in the database with its state, instance id, generation and lease count (the
//! state diagram is in [`drover_core::capacity`]). A *reservation* is demand for one lease of a
//! system, with a time to live; jobs available or running in the queues bound to a system are
//! demand too (the slot's worker claims them itself).
//!
//! # The tick
//!
//! [`tick::tick`] runs on the leader every few seconds, with every input passed in (store,
//! runtime, config, clock, metrics), one small function per step:
//!
//! 1. expire reservations past their time to live;
//! 2. interruptions: a slot whose instance got notice drains at once, handing its leases back
//!    (its reservations are pending again, for another slot); a slot whose instance vanished is
//!    handled the same way (step 7's second half, done here so that the replacement launches in
//!    this tick);
//! 3. assign pending reservations to ready slots with free leases, fullest first, never past
//!    the lease limit (the store refuses an assignment over it, so two leaders cannot either);
//! 4. fail slots stuck past the boot timeout, finish launches recorded but never answered, then
//!    launch for the demand that slots serving *and on their way* do not cover, within the
//!    system's and the fleet's maximum, and not during the system's cool-down after a failed
//!    launch (doubling with each failure in a row);
//! 5. keep each system's minimum and warm pool (ready, idle slots beyond the demand);
//! 6. drain ready slots idle past the idle time, above the pools, never before the minimum
//!    lifetime; a draining slot with no lease left has its instance terminated and is empty;
//! 7. terminate instances no slot knows about, after a grace period;
//! 8. set the gauges from the database.
//!
//! # Crash safety
//!
//! Nothing is kept in memory between ticks. A launch is recorded (`launching`, with a new
//! generation) before the runtime is called, and runtimes are idempotent by (slot id,
//! generation): a leader killed between the two leaves a `launching` slot, and the next tick's
//! launch of it returns the instance the first call may have made — never a second one. Every
//! slot change is fenced by the state and generation read, so a stale leader's writes are
//! refused.

pub mod admin;
pub mod config;
pub mod memory;
pub mod metrics;
pub mod runtime;
pub mod sim;
pub mod simulate;
pub mod tick;

pub use config::{AutoscalerConfig, AutoscalerConfigError, SystemConfig};
pub use memory::MemoryCapacityStore;
pub use metrics::{AutoscalerMetrics, MetricsSnapshot};
pub use runtime::{
    CapacityRuntime, Instance, InstancePhase, LaunchRequest, RuntimeError, RuntimeErrorKind,
};
pub use sim::{SimConfig, SimCounts, SimRuntime};
pub use tick::{TickInputs, TickReport, tick};
