//! How to connect a PostgreSQL store, and parsing `postgres://` URLs.

use std::fmt;
use std::time::Duration;

/// Longest schema name accepted. PostgreSQL allows 63 bytes per identifier; the wake-up channel
/// is named `drover_wake_<schema>`, and a channel name must fit in 63 bytes too.
pub const MAX_SCHEMA_LEN: usize = 63 - CHANNEL_PREFIX.len() - 1;

/// The LISTEN/NOTIFY channel of the default schema; other schemas append `_<schema>`.
pub(crate) const CHANNEL_PREFIX: &str = "drover_wake";

/// Settings of a [`crate::PgStore`].
#[derive(Clone)]
pub struct PgConfig {
    /// The connection URL, `postgres://` or `postgresql://`, without the `schema` option (see
    /// [`PgConfig::from_url`]). Every other option is handed to `tokio-postgres` as is.
    pub url: String,
    /// The schema holding Drover's tables. `None` uses the server's default `search_path`.
    /// When set, every engine connection runs `SET search_path TO <schema>`, and
    /// [`migrate`](drover_core::Store::migrate) creates the schema when it is missing.
    pub schema: Option<String>,
    /// Most pooled connections. Default 8: a pool near the core count of the database server
    /// is what measured fastest; more connections did not help.
    pub pool_size: usize,
    /// `statement_timeout` of every pooled session: no statement runs longer. Default 30 s.
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of every pooled session: a transaction left open
    /// by a stalled process is ended by the server. Default 60 s.
    pub idle_in_transaction_timeout: Duration,
    /// How long to wait for a new connection (TCP, authentication, session setup). Default 10 s.
    pub connect_timeout: Duration,
    /// How long an operation waits for a free pooled connection before failing with
    /// [`StoreError::Unavailable`](drover_core::StoreError::Unavailable). Default 10 s.
    pub acquire_timeout: Duration,
    /// Run a listener (`LISTEN` on a dedicated connection) so that enqueues by other processes
    /// wake this one. Default true; processes that never claim jobs may turn it off.
    pub listen: bool,
    /// Longest pause between two reconnection attempts of the listener. Default 5 s.
    pub listener_max_backoff: Duration,
    /// How often the listener checks that its connection still answers (a connection can die
    /// silently, and then no notification would ever arrive). Default 30 s.
    pub listener_check_interval: Duration,
    /// `application_name` of the connections, shown in `pg_stat_activity`, unless the URL sets
    /// one. Default `drover`.
    pub application_name: String,
    /// After this many jobs claimed by this process, vacuum the jobs table (in the background,
    /// skipped while another vacuum runs), so that a long drain does not slow down on dead
    /// index entries; see the `vacuum` module. Default 50,000; 0: leave it to autovacuum.
    pub vacuum_after_claims: u64,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PgConfig")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("listen", &self.listen)
            .field("listener_max_backoff", &self.listener_max_backoff)
            .field("listener_check_interval", &self.listener_check_interval)
            .field("application_name", &self.application_name)
            .field("vacuum_after_claims", &self.vacuum_after_claims)
            .finish()
    }
}

impl PgConfig {
    /// Default settings for a URL that has already been split (no `schema` option in it).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            pool_size: 8,
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(10),
            listen: true,
            listener_max_backoff: Duration::from_secs(5),
            listener_check_interval: Duration::from_secs(30),
            application_name: "drover".to_owned(),
            vacuum_after_claims: 50_000,
        }
    }

    /// Parses `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?OPTIONS]` (or `postgresql://`).
    ///
    /// The option `schema=NAME` (a plain lower-case identifier, `[a-z_][a-z0-9_]*`) is taken
    /// out of the URL and stored in [`PgConfig::schema`]; the other options are checked by
    /// `tokio-postgres` here, so that a bad URL fails at start-up rather than on first use.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let (url, schema) = split_schema(url)?;
        url.parse::<tokio_postgres::Config>()
            .map_err(|err| format!("invalid PostgreSQL URL {}: {err}", redact(&url)))?;
        let mut config = PgConfig::new(url);
        config.schema = schema;
        Ok(config)
    }

    /// The `tokio-postgres` settings: the URL (with a `schema` option still in it taken out),
    /// plus the defaults this config supplies when the URL does not.
    pub(crate) fn pg_config(&self) -> Result<(tokio_postgres::Config, Option<String>), String> {
        let (url, url_schema) = split_schema(&self.url)?;
        let schema = match (&self.schema, url_schema) {
            (Some(a), Some(b)) if *a != b => {
                return Err(format!(
                    "the schema is set twice, to {a:?} in the config and to {b:?} in the URL"
                ));
            }
            (Some(a), _) => Some(check_schema(a)?.to_owned()),
            (None, b) => b,
        };
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|err| format!("invalid PostgreSQL URL {}: {err}", redact(&url)))?;
        if pg.get_application_name().is_none() {
            pg.application_name(&self.application_name);
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(self.connect_timeout);
        }
        Ok((pg, schema))
    }
}

/// The wake-up channel of a schema: stores on different schemas of one database do not wake
/// each other.
pub(crate) fn channel(schema: Option<&str>) -> String {
    match schema {
        Some(schema) => format!("{CHANNEL_PREFIX}_{schema}"),
        None => CHANNEL_PREFIX.to_owned(),
    }
}

/// Takes the `schema=NAME` option out of a URL: the URL that is left, and the schema.
fn split_schema(url: &str) -> Result<(String, Option<String>), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "{} is not a PostgreSQL URL: expected postgres:// or postgresql://",
            redact(url)
        ));
    }
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut schema = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", name)) => {
                if schema.is_some() {
                    return Err(format!(
                        "the schema option appears twice in {}",
                        redact(url)
                    ));
                }
                schema = Some(check_schema(name)?.to_owned());
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, schema))
}

/// Checks that a schema name is a plain identifier, so that it can appear unquoted in SQL.
pub fn check_schema(name: &str) -> Result<&str, String> {
    let mut bytes = name.bytes();
    let plain = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'));
    if !plain {
        return Err(format!(
            "invalid schema name {name:?}: expected a plain identifier ([a-z_][a-z0-9_]*)"
        ));
    }
    if name.len() > MAX_SCHEMA_LEN {
        return Err(format!(
            "invalid schema name {name:?}: longer than {MAX_SCHEMA_LEN} characters"
        ));
    }
    if name.starts_with("pg_") {
        return Err(format!(
            "invalid schema name {name:?}: the prefix pg_ is reserved by PostgreSQL"
        ));
    }
    Ok(name)
}

/// The URL without its password (in the userinfo, or as a `password=` or `sslpassword=`
/// option), for messages and logs: [`drover_core::redact::redact_url`].
pub fn redact(url: &str) -> String {
    drover_core::redact::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_lose_their_schema_option() {
        let c = PgConfig::from_url("postgres://postgres@127.0.0.1:5432/test").unwrap();
        assert_eq!(c.url, "postgres://postgres@127.0.0.1:5432/test");
        assert_eq!(c.schema, None);
        assert_eq!(c.pool_size, 8);
        assert_eq!(channel(c.schema.as_deref()), "drover_wake");

        let c = PgConfig::from_url(
            "postgresql://u:secret@db/app?sslmode=disable&schema=jobs_1&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            c.url,
            "postgresql://u:secret@db/app?sslmode=disable&connect_timeout=3"
        );
        assert_eq!(c.schema.as_deref(), Some("jobs_1"));
        assert_eq!(channel(c.schema.as_deref()), "drover_wake_jobs_1");
        assert!(!format!("{c:?}").contains("secret"));

        let c = PgConfig::from_url("postgres://h/db?schema=_x").unwrap();
        assert_eq!(c.url, "postgres://h/db");
        assert_eq!(c.schema.as_deref(), Some("_x"));
    }

    #[test]
    fn bad_urls_and_schemas_are_refused() {
        for url in [
            "sqlite://x.db",
            "postgres://h/db?schema=Jobs",
            "postgres://h/db?schema=1jobs",
            "postgres://h/db?schema=jobs;drop",
            "postgres://h/db?schema=",
            "postgres://h/db?schema=pg_jobs",
            "postgres://h/db?schema=a&schema=b",
            "postgres://h/db?nonsense=1",
        ] {
            assert!(PgConfig::from_url(url).is_err(), "{url} was accepted");
        }
        let long = "a".repeat(MAX_SCHEMA_LEN + 1);
        assert!(PgConfig::from_url(&format!("postgres://h/db?schema={long}")).is_err());
        let longest = "a".repeat(MAX_SCHEMA_LEN);
        assert!(PgConfig::from_url(&format!("postgres://h/db?schema={longest}")).is_ok());
    }

    #[test]
    fn the_schema_may_come_from_the_config_or_the_url_but_not_differ() {
        let mut c = PgConfig::new("postgres://h/db?schema=a");
        assert_eq!(c.pg_config().unwrap().1.as_deref(), Some("a"));
        c.schema = Some("a".into());
        assert!(c.pg_config().is_ok());
        c.schema = Some("b".into());
        assert!(c.pg_config().is_err());
        c.schema = Some("B".into());
        c.url = "postgres://h/db".into();
        assert!(c.pg_config().is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://u@h/db?sslpassword=k&password=p"),
            "postgres://u@h/db?sslpassword=***&password=***"
        );
    }
}
