//! How to open a SQLite store, and parsing `sqlite://` URLs.

use drover_core::redact::redact_url;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// SQLite's `synchronous` setting for the write connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync the WAL on every commit: an acknowledged write survives a crash of the process and
    /// of the machine. The default.
    #[default]
    Full,
    /// fsync only at checkpoints: survives a crash of the process, but the last commits may be
    /// lost when the machine loses power. An explicit choice, never a silent default.
    Normal,
}

impl FromStr for Synchronous {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Synchronous::Full),
            "normal" => Ok(Synchronous::Normal),
            other => Err(format!(
                "unknown synchronous setting {other:?}; expected full or normal"
            )),
        }
    }
}

/// Settings of a [`crate::SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file. Created when missing.
    pub path: PathBuf,
    /// Durability of commits. Default [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// How long a connection waits for a lock held by another process. Default 5 s.
    pub busy_timeout: Duration,
    /// Operations that may wait for the writer before callers are held back. Default 4,096.
    pub write_queue: usize,
    /// How long a caller waits for room in a full write queue before getting a busy error.
    /// Default 10 s.
    pub write_wait: Duration,
    /// Most operations in one commit. Default 1,024.
    pub max_ops_per_commit: usize,
    /// Watch the wake file for enqueues by other processes. Default true.
    pub watch_wake_file: bool,
}

impl SqliteConfig {
    /// Default settings for the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            write_queue: 4096,
            write_wait: Duration::from_secs(10),
            max_ops_per_commit: 1024,
            watch_wake_file: true,
        }
    }

    /// Parses `sqlite://PATH[?synchronous=full|normal]`: `sqlite://drover.db` is relative to the
    /// working directory, `sqlite:///var/lib/drover.db` is absolute.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| format!("{:?} is not a sqlite:// URL", redact_url(url)))?;
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(format!("{:?} names no database file", redact_url(url)));
        }
        let mut config = SqliteConfig::new(path);
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("synchronous", value)) => config.synchronous = value.parse()?,
                _ => {
                    // The option's value is not shown: `password=…` is a common mistake here.
                    let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                    return Err(format!(
                        "unknown option {name:?} in {:?}; the only option is synchronous=full|normal",
                        redact_url(url)
                    ));
                }
            }
        }
        Ok(config)
    }

    /// The wake file beside the database that enqueues touch.
    pub fn wake_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push("-wake");
        PathBuf::from(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let c = SqliteConfig::from_url("sqlite://drover.db").unwrap();
        assert_eq!(c.path, PathBuf::from("drover.db"));
        assert_eq!(c.synchronous, Synchronous::Full);
        let c = SqliteConfig::from_url("sqlite:///tmp/x.db?synchronous=normal").unwrap();
        assert_eq!(c.path, PathBuf::from("/tmp/x.db"));
        assert_eq!(c.synchronous, Synchronous::Normal);
        assert!(SqliteConfig::from_url("postgres://x").is_err());
        assert!(SqliteConfig::from_url("sqlite://").is_err());
        assert!(SqliteConfig::from_url("sqlite://a.db?fsync=off").is_err());
        for url in [
            "sqlite://a.db?password=hunter2",
            "sqlite://a.db?sslpassword=hunter2",
            "file://u:hunter2@a.db",
        ] {
            let err = SqliteConfig::from_url(url).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert_eq!(c.wake_path(), PathBuf::from("/tmp/x.db-wake"));
    }
}
