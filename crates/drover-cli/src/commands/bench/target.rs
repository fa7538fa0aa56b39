//! Where `drover bench` runs: a fresh database for every run — a new SQLite file (in a
//! temporary directory, or beside the file `--database` names, so that the disk under test is
//! the user's choice), or a new PostgreSQL schema on the server `--database` names, dropped
//! after the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use drover_core::{DynStore, Store};
use drover_postgres::PgStore;

use crate::backend;
use crate::config::Config;

enum Kind {
    Sqlite {
        dir: tempfile::TempDir,
        beside: Option<String>,
    },
    Postgres {
        url: String,
        prefix: String,
    },
}

pub(super) struct Target {
    kind: Kind,
    counter: AtomicUsize,
    /// The server refused a checkpoint once (said once, not per run).
    checkpoint_refused: AtomicBool,
}

/// A fresh database and what it takes to remove it.
pub(super) struct Fresh {
    pub(super) store: DynStore,
    /// Its URL, for other processes.
    pub(super) url: String,
    n: usize,
    pg: Option<Arc<PgStore>>,
}

impl Fresh {
    /// Closes the store and, on PostgreSQL, drops its schema.
    pub(super) async fn finish(self) -> anyhow::Result<()> {
        match self.pg {
            Some(pg) => {
                pg.drop_schema().await?;
                pg.close().await;
            }
            None => self.store.close().await,
        }
        Ok(())
    }
}

impl Target {
    pub(super) fn new(database: Option<&str>) -> anyhow::Result<Target> {
        let kind = match database {
            None => Kind::Sqlite {
                dir: tempfile::Builder::new().prefix("drover-bench-").tempdir()?,
                beside: None,
            },
            Some(url) if url.starts_with("sqlite:") => Kind::Sqlite {
                dir: tempfile::Builder::new().prefix("drover-bench-").tempdir()?,
                beside: Some(url.to_owned()),
            },
            Some(url) if backend::is_postgres(url) => {
                if url.contains("schema=") {
                    anyhow::bail!(
                        "drover bench creates (and drops) a schema of its own per run; remove schema= from the URL"
                    );
                }
                Kind::Postgres {
                    url: url.to_owned(),
                    prefix: format!("drover_bench_{:08x}", fastrand::u32(..)),
                }
            }
            Some(url) => anyhow::bail!(
                "unsupported database URL {:?}: expected sqlite:// or postgres://",
                backend::redact(url)
            ),
        };
        Ok(Target {
            kind,
            counter: AtomicUsize::new(0),
            checkpoint_refused: AtomicBool::new(false),
        })
    }

    pub(super) fn backend(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite { .. } => "sqlite",
            Kind::Postgres { .. } => "postgres",
        }
    }

    fn url(&self, n: usize) -> String {
        match &self.kind {
            Kind::Sqlite { dir, beside: None } => {
                format!("sqlite://{}/bench-{n}.db", dir.path().display())
            }
            Kind::Sqlite {
                beside: Some(url), ..
            } => {
                let rest = url.trim_start_matches("sqlite://");
                let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
                let query = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{query}")
                };
                format!("sqlite://{path}.bench-{n}{query}")
            }
            Kind::Postgres { url, prefix } => {
                let join = if url.contains('?') { '&' } else { '?' };
                format!("{url}{join}schema={prefix}_{n}")
            }
        }
    }

    async fn open(&self, n: usize, config: &Config, watch: bool) -> anyhow::Result<Fresh> {
        let url = self.url(n);
        if backend::is_postgres(&url) {
            let pg = Arc::new(backend::open_postgres(&url, config, watch).await?);
            pg.migrate().await?;
            Ok(Fresh {
                store: pg.clone(),
                url,
                n,
                pg: Some(pg),
            })
        } else {
            Ok(Fresh {
                store: backend::open(&url, config, watch).await?,
                url,
                n,
                pg: None,
            })
        }
    }

    /// A fresh, migrated database. On PostgreSQL the server checkpoints first, so that every
    /// run starts from the same state rather than with the writes of the run before (a steady
    /// run leaves about a gigabyte of WAL) still to be flushed. Measured after steady runs
    /// (2026-12-06), six drains with it ran at a median of 49,200/s and without at 47,400/s:
    /// within the noise, but the figures no longer depend on what ran before.
    pub(super) async fn fresh(&self, config: &Config) -> anyhow::Result<Fresh> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let fresh = self.open(n, config, true).await?;
        if let Some(pg) = &fresh.pg {
            let done = pg
                .checkpoint()
                .await
                .map_err(|err| anyhow::anyhow!("checkpoint before the run: {err}"))?;
            if !done && !self.checkpoint_refused.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "this role may not CHECKPOINT (a superuser or pg_checkpoint may): each run \
                     starts while the server may still be writing out the one before"
                );
            }
        }
        Ok(fresh)
    }

    /// Drops the schema of every run started, on PostgreSQL: after an interrupt, when a run
    /// could not finish. SQLite's files go when the target is dropped.
    pub(super) async fn remove_all(&self, config: &Config) {
        if !matches!(self.kind, Kind::Postgres { .. }) {
            return;
        }
        for n in 0..self.counter.load(Ordering::Relaxed) {
            let url = self.url(n);
            let dropped = match backend::open_postgres(&url, config, false).await {
                Ok(pg) => {
                    let dropped = pg.drop_schema().await;
                    pg.close().await;
                    dropped.map_err(anyhow::Error::new)
                }
                Err(err) => Err(err),
            };
            if let Err(err) = dropped {
                eprintln!(
                    "could not drop the schema of run {n} ({}): {err:#}",
                    backend::redact(&url)
                );
            }
        }
    }

    /// A second, independent store on the same database as `fresh`, as another process would
    /// open it.
    pub(super) async fn second(&self, config: &Config, fresh: &Fresh) -> anyhow::Result<DynStore> {
        Ok(self.open(fresh.n, config, false).await?.store)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // Files beside a user-named database are removed too.
        if let Kind::Sqlite {
            beside: Some(url), ..
        } = &self.kind
        {
            let path = url.trim_start_matches("sqlite://");
            let path = path.split('?').next().unwrap_or(path);
            for n in 0..self.counter.load(Ordering::Relaxed) {
                for suffix in ["", "-wal", "-shm", "-wake"] {
                    let _ = std::fs::remove_file(format!("{path}.bench-{n}{suffix}"));
                }
            }
        }
    }
}
