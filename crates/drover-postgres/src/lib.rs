//! Drover's [`Store`](drover_core::Store) on PostgreSQL, for when the work outgrows one
//! machine: many `drover` processes on many hosts sharing one database.
//!
//! - **Pool**: a bounded [`deadpool_postgres`] pool. Every session sets `statement_timeout`
//!   and `idle_in_transaction_session_timeout` (a stalled statement or an abandoned
//!   transaction must not hold locks forever), and
//!   `search_path` when a schema is configured (`?schema=NAME` in the URL).
//! - **Claims** take up to `limit` jobs in one statement with `FOR UPDATE SKIP LOCKED` on a
//!   partial index over available jobs: concurrent workers never wait for each other, and
//!   finished rows never slow a claim. The claim's transaction (promote due jobs, claim,
//!   commit) is pipelined: one round trip. Every later write about a run is fenced by its lease
//!   token.
//! - **Enqueues**: concurrent enqueues are written together (group commit, `batch.rs`); jobs
//!   without unique keys go in one `INSERT … SELECT FROM unnest(…)` statement in its own
//!   implicit transaction (one round trip).
//! - **Batches**: inserts and completions send columns as arrays (`unnest`), one statement for
//!   thousands of rows, far from the 65,535-parameter limit. A batch of completions, of any
//!   outcomes, is one statement.
//! - **Wake-ups**: a transaction that makes work available sends `pg_notify` with a queue name
//!   (never job data) — except an enqueue, whose wake-up is sent just after its commit, in a
//!   transaction of its own (PostgreSQL serializes notifying commits; see `notifier.rs`); a
//!   listener task on a connection of its own runs `LISTEN`, bumps the
//!   store's [`Wakeups`](drover_core::Wakeups), and reconnects with backoff when its connection
//!   is lost, waking once after each reconnection to cover the gap. The channel is
//!   `drover_wake`, or `drover_wake_<schema>` with a schema, so that stores on different
//!   schemas of one database do not wake each other.
//! - **Time**: `now: None` in a params struct means the database clock; `Some` pins it.
//! - **Transactional enqueue**: [`PgStore::insert_jobs_in_transaction`] inserts jobs in the
//!   caller's own transaction, so that a job exists if and only if that transaction commits.
//! - **Errors**: lost connections, timeouts and pool exhaustion are
//!   [`StoreError::Unavailable`](drover_core::StoreError::Unavailable) (transient);
//!   transactions rolled back for a deadlock are retried inside the store.
//!
//! ```no_run
//! use drover_core::Store;
//! use drover_postgres::{PgConfig, PgStore};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = PgConfig::from_url("postgres://drover@db.internal/app?schema=drover")?;
//! let store = PgStore::connect(config).await?;
//! store.migrate().await?;
//! # Ok(())
//! # }
//! ```

mod activity;
mod admin;
mod batch;
mod capacity;
mod cluster;
mod config;
mod error;
mod finish;
mod finish_claim;
mod insert;
mod jobs;
mod listener;
#[cfg(test)]
mod live_tests;
mod maintenance;
mod notifier;
mod parked;
mod schema;
mod session;
mod store;
mod time;
mod tls;
mod txn;
mod vacuum;
mod wake;
mod writer;

pub use config::{MAX_SCHEMA_LEN, PgConfig, check_schema, redact};
pub use store::PgStore;
pub use tls::{SslMode, TlsSettings, is_certificate_refused};
