//! Tasks of the standalone server, declared in `drover.toml`.

pub(crate) mod command;
