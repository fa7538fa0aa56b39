//! The two ways the store runs SQL on a pooled connection, as macros: in a transaction, and
//! statement by statement. Both try again when the server rolled the work back for a deadlock.

/// Tries of a transaction that the server rolled back for a deadlock or a serialization
/// failure, before the error is handed to the caller (as transient).
pub(crate) const TRIES: u32 = 5;

/// Runs `$body` in a transaction on a pooled connection, with `$db` bound to a `&Db`, and
/// evaluates to `Result<T, StoreError>`. `$body` may use `?` on database and store errors.
///
/// The transaction is tried again (up to [`TRIES`] times) when the server rolled it back for a
/// deadlock or a serialization failure: nothing was written. Not after a lost connection: the
/// commit may have happened, and the caller decides.
///
/// A macro rather than a method taking an async closure: the future of such a closure borrows
/// the transaction for a higher-ranked lifetime, and the compiler cannot yet prove it `Send`.
macro_rules! in_transaction {
    ($store:expr, |$db:ident| $body:expr) => {{
        // A PgStore, or the InsertWriter that flushes enqueues in a task of its own.
        let store = $store;
        let mut tries = 0u32;
        loop {
            if let Err(err) = store.check_open() {
                break Err(err);
            }
            tries += 1;
            let mut client = match store.pool.get().await {
                Ok(client) => client,
                Err(err) => break Err($crate::error::map_pool(err)),
            };
            let result: Result<_, $crate::error::DbError> = async {
                let tx = client.transaction().await?;
                let value = {
                    let $db =
                        &$crate::session::Db::new(tx.client(), Some(tx.statement_cache.as_ref()));
                    $body
                };
                tx.commit().await?;
                Ok(value)
            }
            .await;
            match result {
                Ok(value) => break Ok(value),
                Err(err) if err.is_retryable() && tries < $crate::txn::TRIES => {
                    store.pause_before_retry(tries, &err).await;
                }
                Err(err) => break Err(err.into_store()),
            }
        }
    }};
}

/// Runs `$body` on a pooled connection outside any explicit transaction (each statement is its
/// own transaction), with `$db` bound to a `&Db`; evaluates to `Result<T, StoreError>`. Tried
/// again, like [`in_transaction!`], when a statement was rolled back for a deadlock.
macro_rules! on_connection {
    ($store:expr, |$db:ident| $body:expr) => {{
        let store: &$crate::store::PgStore = $store;
        let mut tries = 0u32;
        loop {
            if let Err(err) = store.check_open() {
                break Err(err);
            }
            tries += 1;
            let client = match store.pool.get().await {
                Ok(client) => client,
                Err(err) => break Err($crate::error::map_pool(err)),
            };
            let result: Result<_, $crate::error::DbError> = async {
                let $db = &$crate::session::Db::new(&client, Some(client.statement_cache.as_ref()));
                Ok($body)
            }
            .await;
            match result {
                Ok(value) => break Ok(value),
                Err(err) if err.is_retryable() && tries < $crate::txn::TRIES => {
                    store.pause_before_retry(tries, &err).await;
                }
                Err(err) => break Err(err.into_store()),
            }
        }
    }};
}

pub(crate) use {in_transaction, on_connection};
