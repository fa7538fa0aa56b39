//! The shared Store conformance suite on a real SQLite file per test.

use std::sync::Arc;

use drover_core::{DynStore, Store};
use drover_sqlite::{SqliteConfig, SqliteStore};

async fn fresh_store() -> (DynStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("conformance.db")))
        .expect("open store");
    store.migrate().await.expect("migrate");
    (Arc::new(store), dir)
}

drover_conformance::conformance_suite!(fresh_store());
