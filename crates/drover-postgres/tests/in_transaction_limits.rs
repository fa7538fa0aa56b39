//! Enqueues in the caller's transaction are checked against the configured limits
//! ([`PgConfig::limits`](drover_postgres::PgConfig)), like every other insert path, and a
//! refusal writes nothing.

mod common;

use drover_core::{NewJob, Store, StoreError, ValidationError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_in_transaction_uses_the_configured_limits() {
    let (schema, _guard) = common::fresh_schema();
    let mut config = common::config(&schema);
    config.limits.max_args_bytes = 64;
    config.limits.max_batch = 2;
    let store = common::connect_with(config).await;
    store.migrate().await.expect("migrate");
    let mut client = common::admin_on(&schema).await;

    // 100 bytes of args: within the default limit (1 MiB), over the configured 64.
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(90));
    assert!(big.len() > 64);
    let tx = client.transaction().await.unwrap();
    let refused = store
        .insert_jobs_in_transaction(&tx, &[NewJob::new("k", big.as_str())])
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Invalid(ValidationError::ArgsTooLarge {
                limit: 64,
                ..
            }))
        ),
        "{refused:?}"
    );
    let refused = store
        .insert_jobs_in_transaction(&tx, &vec![NewJob::new("k", "{}"); 3])
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Invalid(ValidationError::BatchTooLarge {
                field: "jobs",
                size: 3,
                limit: 2
            }))
        ),
        "{refused:?}"
    );
    let accepted = store
        .insert_jobs_in_transaction(&tx, &vec![NewJob::new("k", "{}"); 2])
        .await
        .expect("within the limits");
    tx.commit().await.unwrap();
    assert_eq!(accepted.len(), 2);

    let total: i64 = client
        .query_one("SELECT count(*) FROM drover_jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 2, "the refused calls wrote nothing");
    store.close().await;
}
