//! Background services, each a `run(stop)` loop that returns only once `stop` fires (one that
//! ends earlier fails the engine: `crate::supervise`). The rescuer and the cron scheduler also
//! have a `run_once()` that returns a small result and that tests call directly; the archiver's
//! unit of work is `PreparedPolicy::run` (`crate::retention`); presence and the process pruner
//! are a single store call per tick. Leader-only services implement `LeaderService` and are
//! started by the elector (`crate::leader`); the rescuer runs in every process.

pub(crate) mod archiver;
pub mod autoscaler;
pub mod counter;
pub(crate) mod presence;
pub mod rescuer;
pub mod scheduler;
