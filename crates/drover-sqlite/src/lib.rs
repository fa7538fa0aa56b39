//! Drover's [`Store`](drover_core::Store) on an embedded SQLite file.
//!
//! - **One writer thread** owns the only write connection. Every write (enqueue, claim,
//!   heartbeat, completion, rescue) is an operation sent to it over a bounded channel; it drains
//!   whatever is queued and runs the batch in one `BEGIN IMMEDIATE` transaction, one savepoint
//!   per operation, so many operations share one commit and one fsync (group commit). Callers
//!   get their answer only after the commit. When the channel stays full, callers get
//!   [`StoreError::Busy`](drover_core::StoreError::Busy) instead of growing memory.
//! - **Readers** use their own connections (WAL lets them read while the writer writes).
//! - **Wake-ups**: a commit that enqueues bumps the in-process [`Wakeups`](drover_core::Wakeups)
//!   and touches a small wake file beside the database; other processes on the same file watch
//!   it with a file-system notification (inotify on Linux).
//! - **Durability**: WAL with `synchronous=FULL` unless [`Synchronous::Normal`] is chosen
//!   explicitly.

mod activity;
mod admin;
mod capacity;
mod cluster;
mod config;
mod jobs;
mod maintenance;
mod readers;
mod schema;
mod store;
mod time;
mod wake;
mod writer;

pub use config::{SqliteConfig, Synchronous};
pub use store::SqliteStore;
