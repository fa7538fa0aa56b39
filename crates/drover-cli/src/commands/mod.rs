//! One module per subcommand.

pub(crate) mod archive;
mod axis;
pub(crate) mod bench;
pub(crate) mod cron;
pub(crate) mod enqueue;
pub(crate) mod jobs;
pub(crate) mod migrate;
pub(crate) mod queues;
pub(crate) mod reserve;
pub(crate) mod simulate;
pub(crate) mod slots;
pub(crate) mod stats;
pub(crate) mod worker;
