//! How to connect a PostgreSQL store, and parsing `postgres://` URLs.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use drover_core::Limits;

use crate::tls::TlsSettings;

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
    /// After this many jobs claimed by this process (the first time after a tenth of them),
    /// vacuum the jobs table (in the background, skipped while another vacuum runs), so that a
    /// long drain does not slow down on dead index entries; see the `vacuum` module. Default
    /// 50,000; 0: leave it to autovacuum.
    pub vacuum_after_claims: u64,
    /// TLS of every connection (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, with libpq's
    /// meanings; see [`SslMode`](crate::SslMode)). The URL's options fill the fields left
    /// unset here; a field set differently in both is an error.
    pub tls: TlsSettings,
    /// The limits [`PgStore::insert_jobs_in_transaction`](crate::PgStore::insert_jobs_in_transaction)
    /// validates jobs with (args size, batch size): set them to the application's own, as
    /// `[database] max_args_bytes` does for `drover`. Default [`Limits::default`].
    pub limits: Limits,
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
            .field("tls", &self.tls)
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
            tls: TlsSettings::default(),
            limits: Limits::default(),
        }
    }

    /// Parses `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?OPTIONS]` (or `postgresql://`).
    ///
    /// The option `schema=NAME` (a plain lower-case identifier, `[a-z_][a-z0-9_]*`) is taken
    /// out of the URL and stored in [`PgConfig::schema`], and the TLS options `sslmode`,
    /// `sslrootcert`, `sslcert` and `sslkey` in [`PgConfig::tls`]; the other options are checked
    /// by `tokio-postgres` here, so that a bad URL fails at start-up rather than on first use.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let options = split_options(url)?;
        options
            .url
            .parse::<tokio_postgres::Config>()
            .map_err(|err| invalid_url(&options.url, &err))?;
        let mut config = PgConfig::new(options.url);
        config.schema = options.schema;
        config.tls = options.tls;
        Ok(config)
    }

    /// The `tokio-postgres` settings: the URL (with the options Drover handles, when still in
    /// it, taken out), plus the defaults this config supplies when the URL does not; the
    /// schema; and the TLS settings in force.
    pub(crate) fn pg_config(
        &self,
    ) -> Result<(tokio_postgres::Config, Option<String>, TlsSettings), String> {
        let UrlOptions {
            url,
            schema: url_schema,
            tls: url_tls,
        } = split_options(&self.url)?;
        let mut tls = self.tls.clone();
        tls.merge(url_tls)?;
        let schema = match (&self.schema, url_schema) {
            (Some(a), Some(b)) if *a != b => {
                return Err(format!(
                    "the schema is set twice, to {a:?} in the config and to {b:?} in the URL"
                ));
            }
            (Some(a), _) => Some(check_schema(a)?.to_owned()),
            (None, b) => b,
        };
        let mut pg: tokio_postgres::Config = url.parse().map_err(|err| invalid_url(&url, &err))?;
        if pg.get_application_name().is_none() {
            pg.application_name(&self.application_name);
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(self.connect_timeout);
        }
        // An idle connection behind a NAT or a cloud load balancer is dropped silently after
        // a few minutes (AWS's NAT: 350 s), and the next statement on it would wait for the
        // operating system to give up. Keepalives every minute keep it open and find out when
        // it is not; libpq's default leaves them to the system's two hours. A URL that sets
        // `keepalives_idle` keeps its own.
        if pg.get_keepalives_idle() == OS_KEEPALIVE_IDLE {
            pg.keepalives_idle(KEEPALIVE_IDLE);
        }
        pg.ssl_mode(tls.pg_mode());
        Ok((pg, schema, tls))
    }
}

/// The idle time before TCP keepalives start, unless the URL says otherwise.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// tokio-postgres's default idle time before keepalives (the usual system default).
const OS_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// The wake-up channel of a schema: stores on different schemas of one database do not wake
/// each other.
pub(crate) fn channel(schema: Option<&str>) -> String {
    match schema {
        Some(schema) => format!("{CHANNEL_PREFIX}_{schema}"),
        None => CHANNEL_PREFIX.to_owned(),
    }
}

/// What [`split_options`] takes out of a URL.
struct UrlOptions {
    /// The URL that is left, for `tokio-postgres`.
    url: String,
    schema: Option<String>,
    tls: TlsSettings,
}

/// Takes the options Drover handles itself out of a URL: `schema`, and the TLS options
/// (`tokio-postgres` knows no `verify-ca`, `verify-full` nor certificate files).
fn split_options(url: &str) -> Result<UrlOptions, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "{} is not a PostgreSQL URL: expected postgres:// or postgresql://",
            redact(url)
        ));
    }
    let mut options = UrlOptions {
        url: url.to_owned(),
        schema: None,
        tls: TlsSettings::default(),
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok(options);
    };
    let twice = |name: &str| format!("the {name} option appears twice in {}", redact(url));
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            kept.push(pair);
            continue;
        };
        let path = || PathBuf::from(percent_decode(value));
        match key {
            "schema" if options.schema.is_some() => return Err(twice(key)),
            "schema" => options.schema = Some(check_schema(value)?.to_owned()),
            "sslmode" if options.tls.mode.is_some() => return Err(twice(key)),
            "sslmode" => options.tls.mode = Some(value.parse()?),
            "sslrootcert" if options.tls.root_cert.is_some() => return Err(twice(key)),
            "sslrootcert" => options.tls.root_cert = Some(path()),
            "sslcert" if options.tls.client_cert.is_some() => return Err(twice(key)),
            "sslcert" => options.tls.client_cert = Some(path()),
            "sslkey" if options.tls.client_key.is_some() => return Err(twice(key)),
            "sslkey" => options.tls.client_key = Some(path()),
            // libpq's passphrase of an encrypted client key: rustls reads plain keys only.
            "sslpassword" => {
                return Err(format!(
                    "sslpassword is not supported in {}: give sslkey a key without a \
                     passphrase (openssl pkey -in key.pem -out plain-key.pem), readable by \
                     Drover's user only",
                    redact(url)
                ));
            }
            _ => kept.push(pair),
        }
    }
    options.url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(options)
}

/// Decodes `%XX` escapes (a path in a URL may carry them); anything else is kept as is.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    if name == "information_schema" {
        return Err(format!(
            "invalid schema name {name:?}: PostgreSQL's own catalog views live there"
        ));
    }
    Ok(name)
}

/// The error for a URL `tokio-postgres` refused, with its cause: by itself the error says only
/// "invalid connection string", the cause names the option ("unknown option `x`", "invalid
/// value for option `port`").
fn invalid_url(url: &str, err: &tokio_postgres::Error) -> String {
    match std::error::Error::source(err) {
        Some(cause) => format!("invalid PostgreSQL URL {}: {err}: {cause}", redact(url)),
        None => format!("invalid PostgreSQL URL {}: {err}", redact(url)),
    }
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
    fn a_bad_url_names_the_option_or_the_port() {
        for (url, named) in [
            ("postgres://u@h/db?bogusopt=1", "unknown option `bogusopt`"),
            (
                "postgres://u@h/db?connect_timeout=abc",
                "option `connect_timeout`",
            ),
            ("postgres://u:pw@h:99999/db", "option `port`"),
        ] {
            let err = PgConfig::from_url(url).unwrap_err();
            assert!(err.contains(named), "{url}: {err}");
            assert!(!err.contains(":pw@"), "{err}");
        }
    }

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
        assert_eq!(c.url, "postgresql://u:secret@db/app?connect_timeout=3");
        assert_eq!(c.tls.mode, Some(crate::SslMode::Disable));
        assert_eq!(c.schema.as_deref(), Some("jobs_1"));
        assert_eq!(channel(c.schema.as_deref()), "drover_wake_jobs_1");
        assert!(!format!("{c:?}").contains("secret"));

        let c = PgConfig::from_url("postgres://h/db?schema=_x").unwrap();
        assert_eq!(c.url, "postgres://h/db");
        assert_eq!(c.schema.as_deref(), Some("_x"));
    }

    #[test]
    fn keepalives_start_after_a_minute_unless_the_url_says_otherwise() {
        let idle = |url: &str| {
            let (pg, ..) = PgConfig::from_url(url).unwrap().pg_config().unwrap();
            (pg.get_keepalives(), pg.get_keepalives_idle())
        };
        assert_eq!(idle("postgres://h/db"), (true, Duration::from_secs(60)));
        assert_eq!(
            idle("postgres://h/db?keepalives_idle=300"),
            (true, Duration::from_secs(300))
        );
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
            "postgres://h/db?schema=information_schema",
            "postgres://h/db?schema=a&schema=b",
            "postgres://h/db?nonsense=1",
            "postgres://h/db?sslmode=allow",
            "postgres://h/db?sslmode=verify",
            "postgres://h/db?sslmode=require&sslmode=disable",
            "postgres://h/db?sslrootcert=a&sslrootcert=b",
            "postgres://h/db?sslkey=k.pem&sslpassword=secret",
        ] {
            assert!(PgConfig::from_url(url).is_err(), "{url} was accepted");
        }
        let err = PgConfig::from_url("postgres://h/db?sslkey=k.pem&sslpassword=secret")
            .expect_err("refused");
        assert!(err.contains("sslpassword is not supported"), "{err}");
        assert!(!err.contains("secret"), "the passphrase leaked: {err}");
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
    fn tls_options_leave_the_url_for_the_settings() {
        use crate::SslMode;
        let c = PgConfig::from_url(
            "postgres://u:pw@db/app?sslmode=verify-full&sslrootcert=/etc/ca%20dir/root.pem\
             &sslcert=/c.pem&sslkey=/k.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(c.url, "postgres://u:pw@db/app?application_name=x");
        assert_eq!(c.tls.mode, Some(SslMode::VerifyFull));
        assert_eq!(
            c.tls.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/ca dir/root.pem"))
        );
        assert_eq!(
            c.tls.client_cert.as_deref(),
            Some(std::path::Path::new("/c.pem"))
        );
        assert_eq!(
            c.tls.client_key.as_deref(),
            Some(std::path::Path::new("/k.pem"))
        );
        let (pg, _, tls) = c.pg_config().unwrap();
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(tls, c.tls);

        // Unset means prefer, as in libpq.
        let c = PgConfig::from_url("postgres://db/app").unwrap();
        assert_eq!(c.tls.mode(), SslMode::Prefer);
        let (pg, _, _) = c.pg_config().unwrap();
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Prefer);

        // The config and the URL may both set a field, to the same value only.
        let mut c = PgConfig::new("postgres://db/app?sslmode=require");
        c.tls.mode = Some(SslMode::Require);
        assert!(c.pg_config().is_ok());
        c.tls.mode = Some(SslMode::Disable);
        let err = c.pg_config().unwrap_err();
        assert!(err.contains("sslmode is set twice"), "{err}");
        c.tls.mode = None;
        c.tls.root_cert = Some("/ca.pem".into());
        let (_, _, tls) = c.pg_config().unwrap();
        assert_eq!(tls.mode, Some(SslMode::Require));
        assert_eq!(
            tls.root_cert.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
    }

    #[test]
    fn bad_tls_settings_fail_when_the_connector_is_built() {
        use crate::{SslMode, TlsSettings};
        let missing = TlsSettings {
            mode: Some(SslMode::VerifyFull),
            root_cert: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        };
        let err = missing.connector().err().unwrap();
        assert!(err.contains("sslrootcert=/nonexistent/ca.pem"), "{err}");
        let half = TlsSettings {
            client_cert: Some("/c.pem".into()),
            ..TlsSettings::default()
        };
        assert!(half.connector().err().unwrap().contains("sslkey is not"));
        let weak_system = TlsSettings {
            mode: Some(SslMode::Require),
            root_cert: Some("system".into()),
            ..TlsSettings::default()
        };
        assert!(
            weak_system
                .connector()
                .err()
                .unwrap()
                .contains("verify-full")
        );
        // The system's roots load (the CI machine has ca-certificates).
        let system = TlsSettings {
            mode: Some(SslMode::VerifyFull),
            ..TlsSettings::default()
        };
        assert!(system.connector().is_ok());
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
