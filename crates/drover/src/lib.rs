//! # Drover
//!
//! A durable background-job engine. Jobs live in a database (SQLite by default, PostgreSQL for
//! many hosts); a foreman per queue claims them in batches, runs typed handlers, and records
//! every outcome. Runs hold leases renewed by heartbeats, and every write about a run is fenced
//! by its lease token, so a process that stalled or died can never overwrite an outcome.
//!
//! ```no_run
//! use std::sync::Arc;
//! use drover::{Engine, EnqueueRequest, JobContext, JobError, Task};
//! use drover_sqlite::{SqliteConfig, SqliteStore};
//! use drover_core::Store;
//!
//! struct Greet;
//!
//! #[async_trait::async_trait]
//! impl Task for Greet {
//!     const KIND: &'static str = "greet";
//!     type Args = serde_json::Value;
//!     async fn run(&self, ctx: JobContext, args: serde_json::Value) -> Result<(), JobError> {
//!         println!("job {} says hello to {}", ctx.id(), args["name"]);
//!         Ok(())
//!     }
//! }
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open(SqliteConfig::new("app.db"))?;
//! store.migrate().await?;
//! let engine = Engine::builder(Arc::new(store)).queue("default", 10).task(Greet).build()?;
//! let handle = engine.start();
//! handle
//!     .client()
//!     .enqueue(EnqueueRequest::new("greet", &serde_json::json!({"name": "Ada"}))?)
//!     .await?;
//! // ... later, on SIGTERM:
//! let report = handle.shutdown().await;
//! assert!(report.clean());
//! # Ok(()) }
//! ```

pub mod admin;
pub mod autoscaler;
pub mod builtin;
mod client;
mod completer;
mod config;
pub mod cron;
mod engine;
mod error;
mod executor;
mod foreman;
mod guard;
mod health;
mod heartbeat;
mod hooks;
mod leader;
pub mod metrics;
mod prefetch;
mod probe;
pub mod remote;
pub mod retention;
mod runtime;
pub mod services;
mod stats;
mod supervise;
mod task;

pub use admin::{Admin, RetentionView, ThroughputPoint};
pub use client::{Client, EnqueueRequest, JobDefaults};
pub use config::EngineConfig;
pub use engine::{Engine, EngineBuilder, EngineHandle, ShutdownReport};
pub use error::Error;
pub use health::{HealthReport, LoopHealth};
pub use hooks::{Hook, JobEnd};
pub use probe::EngineProbe;
pub use stats::EngineStats;
pub use task::{JobContext, JobError, RawTask, Task, TaskOptions};

pub use drover_core as core;
