//! Background services. Each has the same anatomy: a config whose fields document their units
//! and defaults, a `run(stop)` loop, and a `run_once()` that returns a small result and that
//! tests call directly. Leader-only services implement `LeaderService` and are started by the
//! elector (`crate::leader`).

pub(crate) mod archiver;
pub mod autoscaler;
pub(crate) mod presence;
pub mod rescuer;
pub mod scheduler;
