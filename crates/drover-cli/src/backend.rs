//! Opening the store a database URL names. The binary is the only place that knows backend
//! types.

use std::sync::Arc;

use anyhow::bail;
use drover_core::DynStore;
use drover_postgres::{PgConfig, PgStore};
use drover_sqlite::{SqliteConfig, SqliteStore};

use crate::config::Config;

/// The database URL in force: flag or environment, then the config, then the default. An empty
/// value counts as not set, as an env file or a compose file leaves `DROVER_DATABASE_URL=`: the
/// config's URL is not overridden by nothing.
pub(crate) fn database_url(flag: Option<&str>, config: &Config) -> String {
    flag.filter(|url| !url.trim().is_empty())
        .map(str::to_owned)
        .or_else(|| config.database.url.clone())
        .unwrap_or_else(|| "sqlite://drover.db".to_owned())
}

/// Opens and migrates the store. `watch` asks for cross-process wake-ups (workers only).
pub(crate) async fn open(url: &str, config: &Config, watch: bool) -> anyhow::Result<DynStore> {
    migrated(connect(url, config, watch).await?, url).await
}

/// Opens the store, not migrated.
pub(crate) async fn connect(url: &str, config: &Config, watch: bool) -> anyhow::Result<DynStore> {
    Ok(if url.starts_with("sqlite:") {
        let mut sqlite = SqliteConfig::from_url(url).map_err(anyhow::Error::msg)?;
        if let Some(sync) = &config.database.synchronous
            && !url.contains("synchronous=")
        {
            sqlite.synchronous = sync.parse().map_err(anyhow::Error::msg)?;
        }
        sqlite.watch_wake_file = watch;
        let ignored = config.database.postgres_only_keys();
        if !ignored.is_empty() {
            // Not an error: a config written for PostgreSQL may be run against a SQLite file
            // with --database for a try-out, and these keys change nothing there.
            eprintln!(
                "warning: [database] {} {} to PostgreSQL only; ignored for the SQLite file {url}",
                ignored.join(", "),
                if ignored.len() == 1 {
                    "applies"
                } else {
                    "apply"
                }
            );
        }
        Arc::new(SqliteStore::open(sqlite)?)
    } else if is_postgres(url) {
        Arc::new(open_postgres(url, config, watch).await?)
    } else if (url.starts_with("postgres:") || url.starts_with("postgresql:"))
        && !url.contains("://")
    {
        // `postgres:/u:pw@h/db`: a slash short. Not echoed, for the password it may hold.
        bail!(
            "the database URL starts with postgres: but not postgres:// (two slashes): a \
             PostgreSQL database is postgres://USER@HOST/DB"
        );
    } else if !url.contains("://") && !url.contains('@') && !url.contains(['=', ' ']) && {
        // A bare path, like `jobs.db`, echoed as the URL it should be; anything else (a token
        // set as the URL by mistake) is not.
        url.contains('/')
            || [".db", ".sqlite", ".sqlite3"]
                .iter()
                .any(|e| url.ends_with(e))
    } {
        bail!(
            "database URL {url:?} has no scheme: a SQLite file is sqlite://{url}, a PostgreSQL database postgres://USER@HOST/DB"
        );
    } else if !url.contains("://") {
        // Perhaps a libpq key/value string (`host=... password=...`): never echoed.
        bail!(
            "the database URL has no scheme and is not a path (key=value connection strings \
             are not supported): a SQLite file is sqlite://PATH, a PostgreSQL database \
             postgres://USER@HOST/DB"
        );
    } else {
        bail!(
            "unsupported database URL {:?}: expected sqlite://PATH or postgres://USER@HOST/DB",
            redact(url)
        );
    })
}

/// `store`, migrated. A schema newer than this build knows is used, with a warning: during a
/// rolling upgrade the older processes keep running against it until they are replaced.
async fn migrated(store: DynStore, url: &str) -> anyhow::Result<DynStore> {
    let report = migrate(&store, url).await?;
    if report.is_newer_than_known() {
        tracing::warn!("{}", newer_schema(url, &report));
    }
    Ok(store)
}

/// Migrates `store`; when that fails, closes it and names the URL in the error.
pub(crate) async fn migrate(
    store: &DynStore,
    url: &str,
) -> anyhow::Result<drover_core::MigrateReport> {
    match store.migrate().await {
        Ok(report) => Ok(report),
        Err(error) => {
            store.close().await;
            Err(anyhow::Error::new(error)
                .context(format!("cannot migrate the database at {}", redact(url))))
        }
    }
}

/// What to say of a database whose schema a newer build of Drover migrated.
pub(crate) fn newer_schema(url: &str, report: &drover_core::MigrateReport) -> String {
    format!(
        "the database at {} is at schema version {}, newer than this drover knows ({}): a \
         newer drover migrated it, and this one may misread or miswrite what it holds; run \
         the newer drover",
        redact(url),
        report.version,
        report.known
    )
}

/// How long `serve` and `worker` wait at start for a PostgreSQL server they cannot reach yet,
/// unless `[database] wait_at_start` says otherwise.
const DATABASE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// [`open`], for the long-running `serve` and `worker`: a PostgreSQL server that cannot be
/// reached yet (a host that boots Drover before its database, a compose file that starts both
/// at once, a database restarting), or a SQLite file another process has locked, is tried again, with a warning naming the reason each time,
/// for up to `[database] wait_at_start` ([`DATABASE_WAIT`]) or until SIGINT / SIGTERM. Any other error, and every error of a
/// one-shot command, stops the start at once.
pub(crate) async fn open_waiting(url: &str, config: &Config) -> anyhow::Result<DynStore> {
    let wait = config.database.wait_at_start.unwrap_or(DATABASE_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = std::time::Duration::from_millis(250);
    // Installed at the first wait only: before it, and after a start at the first try, a
    // signal keeps its default action until the engine installs its own handlers.
    let mut interrupted = None;
    loop {
        let error = match open(url, config, true).await {
            Ok(store) => return Ok(store),
            Err(error) => error,
        };
        // PostgreSQL away, or a SQLite file another process holds (two servers started at
        // once on a new file: one migrates while the other finds it locked).
        let unreachable = match error.downcast_ref::<drover_core::StoreError>() {
            // A refused certificate is a TLS setting's matter, which waiting will not mend.
            Some(drover_core::StoreError::Unavailable(why)) => {
                (is_postgres(url) && !drover_postgres::is_certificate_refused(why))
                    || why.contains("locked")
                    || why.contains("busy")
            }
            Some(drover_core::StoreError::Busy(_)) => true,
            _ => false,
        };
        if !unreachable {
            return Err(error);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(if wait.is_zero() {
                error
            } else {
                error.context(format!(
                    "gave up waiting for the database after {wait:?} ([database] wait_at_start)"
                ))
            });
        }
        // The last pause ends at the deadline, where the last try is made: the wait is as long
        // as it says.
        let pause_now = pause.min(deadline - now);
        tracing::warn!(
            "cannot reach the database yet, trying again in {pause_now:?} (for up to {wait:?} \
            after the start): {error:#}"
        );
        let signal = interrupted.get_or_insert_with(|| Box::pin(crate::signals::interrupted()));
        tokio::select! {
            _ = tokio::time::sleep(pause_now) => {}
            code = signal.as_mut() => {
                return Err(error.context(crate::signals::Interrupted("waiting for the database", code)));
            }
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Opens the store of a database that must exist already: for commands that only look at
/// jobs or act on existing ones, where a mistyped SQLite path (or a PostgreSQL URL with the
/// wrong database or `schema=`) would otherwise get new, empty tables and answer as if it held
/// no jobs.
pub(crate) async fn open_existing(url: &str, config: &Config) -> anyhow::Result<DynStore> {
    if is_postgres(url) {
        // One connection pool: checked, then migrated (an older schema) and used.
        let store = open_postgres(url, config, false).await?;
        let version = store.schema_version().await;
        if !matches!(version, Ok(v) if v > 0) {
            drover_core::Store::close(&store).await;
            version?;
            bail!(
                "no Drover tables in the database at {}: check --database (or \
                 DROVER_DATABASE_URL), its database name and its schema=, or start `drover \
                 serve` or run `drover migrate` to create them",
                redact(url)
            );
        }
        return migrated(Arc::new(store), url).await;
    } else if url.starts_with("sqlite:") {
        let path = SqliteConfig::from_url(url)
            .map_err(anyhow::Error::msg)?
            .path;
        if !path.exists() {
            bail!(
                "no database at {}: check --database (or DROVER_DATABASE_URL), or start \
                 `drover serve` or run `drover migrate` to create it",
                path.display()
            );
        }
    }
    open(url, config, false).await
}

/// Whether `url` names a PostgreSQL database.
pub(crate) fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Connects to PostgreSQL (not migrated). `listen` starts the LISTEN connection (workers only).
/// TLS settings come from the URL and from `[database]` of the config.
pub(crate) async fn open_postgres(
    url: &str,
    config: &Config,
    listen: bool,
) -> anyhow::Result<PgStore> {
    if config.database.synchronous.is_some() {
        // PostgreSQL's durability is the server's `synchronous_commit`, not a client's.
        eprintln!("warning: [database] synchronous applies to SQLite only; ignored for PostgreSQL");
    }
    let mut pg = PgConfig::from_url(url).map_err(anyhow::Error::msg)?;
    pg.listen = listen;
    if let Some(every) = config.database.listener_check_interval {
        anyhow::ensure!(
            every >= std::time::Duration::from_millis(100),
            "database.listener_check_interval must be at least 100ms, not {every:?}"
        );
        pg.listener_check_interval = every;
    }
    if let Some(size) = config.database.pool_size {
        pg.pool_size = size;
    }
    // Enqueues in the caller's transaction are checked against the same limits as the rest.
    pg.limits = crate::setup::limits(config);
    let mut tls = config.database.tls()?;
    // The URL's options were taken into `pg.tls`; both may set a field, to one value only.
    tls.merge(std::mem::take(&mut pg.tls))
        .map_err(|err| anyhow::anyhow!("{err} {}", redact(url)))?;
    pg.tls = tls;
    Ok(PgStore::connect(pg).await?)
}

/// The URL without its password or secret options, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    drover_core::redact::redact_url(url)
}
