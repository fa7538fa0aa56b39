//! The shared Store conformance suite on the PostgreSQL test server, a fresh schema per test.

mod common;

use drover_core::DynStore;

async fn fresh_store() -> (DynStore, common::SchemaGuard) {
    let (store, guard) = common::fresh_store().await;
    (store, guard)
}

drover_conformance::conformance_suite!(fresh_store());
