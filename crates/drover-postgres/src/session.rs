//! The connection pool, the settings of every pooled session, and [`Db`]: the handle every
//! query goes through.

use std::time::Duration;

use deadpool_postgres::{
    Connect, Hook, HookError, Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime,
    StatementCache,
};
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};
use tokio_util::task::TaskTracker;

use crate::config::PgConfig;
use crate::tls::RustlsConnect;

/// Opens the pool's connections, and runs each one's task where [`PgStore::close`] can wait
/// for it.
///
/// deadpool aborts a connection's task when it drops the connection, so the server never got
/// a Terminate message nor, over TLS, a close_notify: it logged each connection the pool
/// closed (every CLI command's) as "could not receive data from client: Connection reset by
/// peer" and counted the session abandoned. Here the task deadpool aborts only waits for the
/// real one, which ends by itself, cleanly, once its client is dropped.
///
/// [`PgStore::close`]: crate::PgStore
#[derive(Clone)]
pub(crate) struct Connector {
    tls: RustlsConnect,
    /// The connections' tasks.
    pub(crate) tasks: TaskTracker,
}

impl Connector {
    pub(crate) fn new(tls: RustlsConnect) -> Self {
        Self {
            tls,
            tasks: TaskTracker::new(),
        }
    }
}

impl Connect for Connector {
    fn connect(
        &self,
        pg: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error>>
    {
        let pg = pg.clone();
        Box::pin(async move {
            let (client, connection) = pg.connect(self.tls.clone()).await?;
            let task = self.tasks.spawn(async move {
                // Whoever used the connection saw the error; a broken connection is replaced.
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "a pooled connection ended with an error");
                }
            });
            Ok((client, tokio::spawn(async move { _ = task.await })))
        })
    }
}

/// Builds the pool. No connection is opened yet.
pub(crate) fn pool(
    config: &PgConfig,
    pg: tokio_postgres::Config,
    connector: Connector,
    schema: Option<&str>,
) -> Result<Pool, String> {
    let setup = session_setup(config, schema);
    let manager = Manager::from_connect(
        pg,
        connector,
        ManagerConfig {
            // A broken connection is noticed by its connection task (is_closed) and replaced;
            // a test query on every checkout would add a round trip to every operation.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size.max(1))
        // The connection used last goes out first: its statements are prepared and planned.
        // First-in-first-out spread a bulk enqueue's calls over every idle connection, each
        // preparing and custom-planning the insert again (3 % slower with four open).
        .queue_mode(QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.acquire_timeout))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .post_create(Hook::async_fn(move |client, _metrics| {
            let setup = setup.clone();
            Box::pin(async move {
                client
                    .batch_execute(&setup)
                    .await
                    .map_err(HookError::Backend)
            })
        }))
        .build()
        .map_err(|err| format!("cannot build the connection pool: {err}"))
}

/// The `SET` statements every engine session runs once, when it is opened: a stalled statement
/// or an abandoned transaction must not hold locks forever. And no JIT compilation: the
/// engine's statements are short, and once a table is big enough for the planner to call for
/// it, compiling cost more than it saved (the leader's refresh of the queue counts took
/// 240 ms with JIT compilation, in the middle of a drain).
///
/// And [`FLUSH_AFTER`], unless the server, the database, the role or the URL set
/// `backend_flush_after` themselves.
fn session_setup(config: &PgConfig, schema: Option<&str>) -> String {
    let mut sql = format!(
        "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}; \
         SET jit = off; {FLUSH_AFTER}",
        millis(config.statement_timeout),
        millis(config.idle_in_transaction_timeout)
    );
    if let Some(schema) = schema {
        // A checked plain identifier (config::check_schema), so it needs no quoting.
        sql.push_str(&format!(" SET search_path TO {schema};"));
    }
    sql
}

/// Pages a session writes out of shared buffers (its inserts and updates evict dirty pages,
/// and its vacuum writes) are handed to the disk every 256 kB rather than left in the kernel's
/// cache. Left there (PostgreSQL's default, 0), they pile up to the next checkpoint, whose
/// `fsync` then writes hundreds of megabytes at once while every commit's WAL flush waits
/// behind it: under a steady 32,000 jobs/s the enqueue-to-start p99 was 59 / 15 / 84 ms
/// without and 18 / 20 / 27 ms with it (alternated runs, one sitting). A server that cannot
/// take the setting keeps its own: this is a tuning, not a requirement.
const FLUSH_AFTER: &str = "DO $$ BEGIN \
    IF (SELECT source FROM pg_settings WHERE name = 'backend_flush_after') = 'default' THEN \
        PERFORM set_config('backend_flush_after', '256kB', false); \
    END IF; \
    EXCEPTION WHEN OTHERS THEN NULL; \
END $$;";

/// Milliseconds for a timeout setting; 0 would mean "no timeout", so round up to 1.
fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// A connection (or the connection of a transaction) and, for pooled connections, its cache of
/// prepared statements.
///
/// Queries take the SQL text and prepare it once per connection: a pooled connection keeps its
/// statements, so the hot statements are parsed and planned once, not on every call.
pub(crate) struct Db<'a> {
    client: &'a tokio_postgres::Client,
    cache: Option<&'a StatementCache>,
}

impl<'a> Db<'a> {
    pub(crate) fn new(
        client: &'a tokio_postgres::Client,
        cache: Option<&'a StatementCache>,
    ) -> Self {
        Self { client, cache }
    }

    /// The prepared statement for `sql`: from the connection's cache when it has one.
    pub(crate) async fn prepare(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        match self.cache {
            Some(cache) => cache.prepare(self.client, sql).await,
            None => self.client.prepare(sql).await,
        }
    }

    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.prepare(sql).await?;
        self.client.query(&statement, params).await
    }

    pub(crate) async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        let statement = self.prepare(sql).await?;
        self.client.query_one(&statement, params).await
    }

    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.prepare(sql).await?;
        self.client.query_opt(&statement, params).await
    }

    pub(crate) async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.prepare(sql).await?;
        self.client.execute(&statement, params).await
    }

    /// The connection, for pipelining prepared statements.
    pub(crate) fn client(&self) -> &'a tokio_postgres::Client {
        self.client
    }

    /// Runs statements without parameters (DDL), in the simple protocol.
    pub(crate) async fn batch_execute(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(sql).await
    }
}
