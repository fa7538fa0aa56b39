//! Background services. Each has the same anatomy: a config whose fields document their units
//! and defaults, a `run(stop)` loop, and a `run_once()` that returns a small result and that
//! tests call directly.

pub mod rescuer;
