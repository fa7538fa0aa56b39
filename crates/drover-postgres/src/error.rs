//! From PostgreSQL and pool errors to [`StoreError`]: what may pass (a lost connection, a
//! timeout, a server restart) is `Unavailable`, so that background loops retry; bad input is
//! `Invalid`; the rest is a bug and `Internal`.

use deadpool_postgres::PoolError;
use drover_core::{StoreError, ValidationError};
use tokio_postgres::error::SqlState;

/// The error of an operation inside the store: from the database, or a decision of the store
/// itself (a missing job, a conflict) that must also roll the transaction back.
#[derive(Debug)]
pub(crate) enum DbError {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        DbError::Pg(err)
    }
}

impl From<StoreError> for DbError {
    fn from(err: StoreError) -> Self {
        DbError::Store(err)
    }
}

impl DbError {
    /// Whether the transaction was rolled back by the server for a reason that a second try
    /// usually avoids: a deadlock or a serialization failure. Nothing was written, so
    /// retrying is safe (unlike after a lost connection, when a commit may have happened).
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            DbError::Pg(err) => matches!(
                err.code(),
                Some(&SqlState::T_R_SERIALIZATION_FAILURE | &SqlState::T_R_DEADLOCK_DETECTED)
            ),
            DbError::Store(_) => false,
        }
    }

    pub(crate) fn into_store(self) -> StoreError {
        match self {
            DbError::Pg(err) => map_pg(&err),
            DbError::Store(err) => err,
        }
    }
}

/// Maps a `tokio-postgres` error.
pub(crate) fn map_pg(err: &tokio_postgres::Error) -> StoreError {
    let Some(db) = err.as_db_error() else {
        // No SQLSTATE: the connection broke, timed out or never opened (transient), or a
        // value did not convert (a bug).
        let text = describe(err);
        return if err.is_closed() || has_io_source(err) || is_connection_failure(&text) {
            StoreError::Unavailable(text)
        } else {
            StoreError::Internal(text)
        };
    };
    let code = db.code().code();
    let text = describe(err);
    match code {
        // The class of the error decides, except for the few codes named here.
        "42P01" => StoreError::Internal(format!(
            "{text} (has the schema been migrated? run `drover migrate`)"
        )),
        // Text PostgreSQL cannot store: a NUL character, or `\u0000` inside JSON args.
        "22P05" | "22021" => StoreError::Invalid(ValidationError::Args(db.message().to_owned())),
        // Serialization failures and deadlocks that survived the store's own retries; lock
        // timeouts; an idle transaction ended by the server.
        "40001" | "40P01" | "55P03" | "25P03" => StoreError::Unavailable(text),
        _ if code.starts_with("08") // connection exception
            || code.starts_with("53") // insufficient resources (too many connections, disk full)
            || code.starts_with("57") // operator intervention: shutdown, statement timeout
            || code.starts_with("58") =>
        // system error (I/O)
        {
            StoreError::Unavailable(text)
        }
        _ => StoreError::Internal(text),
    }
}

/// Maps an error from taking a connection out of the pool.
pub(crate) fn map_pool(err: PoolError) -> StoreError {
    match err {
        PoolError::Closed => StoreError::Closed,
        PoolError::Backend(err) => map_pg(&err),
        PoolError::Timeout(kind) => StoreError::Unavailable(format!(
            "no PostgreSQL connection within the time limit ({kind:?}): the pool is exhausted \
             or the server is unreachable"
        )),
        PoolError::PostCreateHook(err) => {
            StoreError::Unavailable(format!("cannot set up a new PostgreSQL session: {err}"))
        }
        PoolError::NoRuntimeSpecified => {
            StoreError::Internal("the connection pool has no async runtime".into())
        }
    }
}

/// The error's text with its cause: `tokio-postgres` keeps the server's message in the source.
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        let cause_text = without_manual_link(&cause_text);
        if !text.contains(cause_text) {
            text.push_str(": ");
            text.push_str(cause_text);
        }
        source = cause.source();
    }
    text
}

/// rustls ends some errors with a link to its manual (`peer closed connection without sending
/// TLS close_notify: https://docs.rs/rustls/…`): for its developers, not an operator reading
/// why the database went away.
fn without_manual_link(text: &str) -> &str {
    match text.find(": https://docs.rs/") {
        Some(at) => &text[..at],
        None => text,
    }
}

fn has_io_source(err: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

fn is_connection_failure(text: &str) -> bool {
    [
        "error connecting",
        "error communicating",
        "timeout",
        "connection closed",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_manual_links_are_left_out() {
        assert_eq!(
            without_manual_link(
                "peer closed connection without sending TLS close_notify: \
                 https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof"
            ),
            "peer closed connection without sending TLS close_notify"
        );
        assert_eq!(
            without_manual_link("connection refused"),
            "connection refused"
        );
    }
}
