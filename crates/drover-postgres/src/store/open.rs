//! Opening a [`PgStore`]: the pool, its first connection, the insert writer, the vacuum and
//! the listener.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use drover_core::parked::ParkedClaims;
use drover_core::{StoreError, Wakeups};

use super::PgStore;
use crate::batch::InsertQueue;
use crate::config::{self, PgConfig, redact};
use crate::error::map_pool;
use crate::insert::InsertSql;
use crate::listener::{Listener, ListenerSettings};
use crate::notifier::Notifier;
use crate::session;
use crate::vacuum::Vacuum;
use crate::writer::InsertWriter;

/// Connections a worker's engine has in use at once while a backlog drains: two claims, a
/// completion write, and a heartbeat or an enqueue. Opening them while the first batches are claimed made a
/// 20,000-job drain's first thousand completions 10–20 ms later (a TLS handshake and the
/// session's setup each).
pub(crate) const WORKER_CONNECTIONS: usize = 4;

/// Opens connections until the pool holds `total` (with the one the caller holds), all at
/// once. One that fails is left for the pool to open when it is needed.
async fn warm_up(pool: &Pool, total: usize) {
    let more = total.saturating_sub(pool.status().size);
    let opened = futures_util::future::join_all((0..more).map(|_| pool.get())).await;
    for failed in opened.iter().filter_map(|result| result.as_ref().err()) {
        tracing::debug!(error = %failed, "could not open a spare connection yet");
    }
}

impl PgStore {
    /// Connects: builds the pool, opens a first connection (so that an unreachable server
    /// fails here, with [`StoreError::Unavailable`], not on first use), and starts the
    /// listener. Does not migrate: call [`Store::migrate`].
    ///
    /// A store that listens (a worker's) opens the connections its engine uses at once beside
    /// the first ([`WORKER_CONNECTIONS`]), so that they are not opened in the middle of its
    /// first claims.
    pub async fn connect(config: PgConfig) -> Result<PgStore, StoreError> {
        let (pg, schema, tls) = config.pg_config().map_err(StoreError::Internal)?;
        let tls = tls.connector().map_err(|why| {
            StoreError::Internal(format!(
                "cannot set up TLS for PostgreSQL at {}: {why}",
                redact(&config.url)
            ))
        })?;
        let connector = session::Connector::new(tls.clone());
        let connections = connector.tasks.clone();
        let pool = session::pool(&config, pg.clone(), connector, schema.as_deref())
            .map_err(StoreError::Internal)?;
        // Every refusal names the server, a missing role or database as much as a refused
        // connection: the operator may have several.
        let at = || format!("cannot connect to PostgreSQL at {}", redact(&config.url));
        let first = pool.get().await.map_err(|err| match map_pool(err) {
            StoreError::Unavailable(why) => StoreError::Unavailable(format!("{}: {why}", at())),
            StoreError::Internal(why) => StoreError::Internal(format!("{}: {why}", at())),
            other => other,
        })?;
        if config.listen {
            warm_up(&pool, WORKER_CONNECTIONS.min(config.pool_size)).await;
        }
        drop(first);

        let channel = config::channel(schema.as_deref());
        let insert_sql = InsertSql::new(schema.as_deref());
        let wakeups = Wakeups::default();
        let closed = Arc::new(AtomicBool::new(false));
        let writer = InsertWriter {
            pool: pool.clone(),
            insert_sql: insert_sql.clone(),
            channel: channel.clone(),
            wakeups: wakeups.clone(),
            closed: closed.clone(),
            queue: Arc::new(InsertQueue::default()),
            parked: Arc::new(ParkedClaims::default()),
            notifier: Notifier::new(pool.clone(), channel.clone()),
        };
        let vacuum = Vacuum::new(
            pg.clone(),
            tls.clone(),
            schema.as_deref(),
            config.vacuum_after_claims,
            config.connect_timeout,
            connections.clone(),
        );
        let mut store = PgStore {
            vacuum,
            channel,
            insert_sql,
            writer,
            schema,
            pool,
            connections,
            wakeups,
            closed,
            schema_current: AtomicBool::new(false),
            listener: Mutex::new(None),
            config,
        };
        if store.config.listen {
            let settings = ListenerSettings {
                channel: store.channel.clone(),
                connect_timeout: store.config.connect_timeout,
                max_backoff: store.config.listener_max_backoff,
                check_interval: store.config.listener_check_interval,
                tls,
            };
            let (listener, ready) = Listener::start(pg, settings, store.wakeups.clone()).await;
            if let Err(error) = ready {
                tracing::warn!(%error,
                    "the PostgreSQL listener is not listening yet; it keeps trying, and until it \
                     succeeds enqueues by other processes are noticed only at the next poll");
            }
            store.listener = Mutex::new(Some(listener));
        }
        Ok(store)
    }
}
