//! Helpers shared by the integration tests: a store on a fresh schema of the test server.
//!
//! The server comes from `DROVER_TEST_POSTGRES_URL`, or is a throwaway cluster started for the
//! test binary when it is unset (`drover_conformance::pg_server`). An unreachable server fails the tests with a
//! message saying so: they never skip silently.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of this module

use std::sync::Arc;
use std::time::Duration;

use drover_core::Store;
use drover_postgres::{PgConfig, PgStore};

/// The test server's URL: `DROVER_TEST_POSTGRES_URL`, or a throwaway cluster
/// ([`drover_conformance::pg_server`]).
pub fn test_url() -> String {
    drover_conformance::pg_server::url()
}

/// A schema name no other test uses.
pub fn random_schema() -> String {
    format!("drover_t_{:016x}", fastrand::u64(..))
}

/// The settings of a store on `schema`.
pub fn config(schema: &str) -> PgConfig {
    let mut config = PgConfig::from_url(&test_url()).expect("DROVER_TEST_POSTGRES_URL parses");
    config.schema = Some(schema.to_owned());
    config.pool_size = 4;
    config
}

/// A store on `schema`, not migrated.
pub async fn connect(schema: &str) -> PgStore {
    connect_with(config(schema)).await
}

/// A store with these settings, not migrated.
pub async fn connect_with(config: PgConfig) -> PgStore {
    PgStore::connect(config).await.unwrap_or_else(|err| {
        panic!(
            "cannot reach the PostgreSQL test server at {} (set DROVER_TEST_POSTGRES_URL to a \
             reachable server; these tests need one): {err}",
            test_url()
        )
    })
}

/// Drops its schema when dropped (at the end of the test).
pub struct SchemaGuard {
    pub schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which may be shutting down: a thread with a
        // runtime of its own does the dropping, and we wait for it (briefly).
        let schema = self.schema.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(client) = admin().await {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
            });
        });
        let _ = thread.join();
    }
}

/// A schema name no other test uses, and the guard that drops it at the end of the test.
pub fn fresh_schema() -> (String, SchemaGuard) {
    let schema = random_schema();
    let guard = SchemaGuard {
        schema: schema.clone(),
    };
    (schema, guard)
}

/// A no-op job of kind `bulk`, told apart by `i`.
pub fn bulk_job(i: usize) -> drover_core::NewJob {
    drover_core::NewJob::new("bulk", format!(r#"{{"i":{i}}}"#))
}

/// A fresh, migrated store on a schema of its own.
pub async fn fresh_store() -> (Arc<PgStore>, SchemaGuard) {
    let (schema, guard) = fresh_schema();
    let store = connect(&schema).await;
    store.migrate().await.expect("migrate");
    (Arc::new(store), guard)
}

/// A plain connection to the test server (for SQL of the test's own).
pub async fn admin() -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(&test_url(), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A plain connection whose `search_path` is `schema`.
pub async fn admin_on(schema: &str) -> tokio_postgres::Client {
    let client = admin().await.unwrap_or_else(|err| {
        panic!(
            "cannot reach the PostgreSQL test server at {}: {err}",
            test_url()
        )
    });
    client
        .batch_execute(&format!("SET search_path TO {schema}"))
        .await
        .expect("set search_path");
    client
}

/// Waits until `check` holds, polling every 20 ms, for at most `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
