//! Relative paths in a config file are relative to the file, not to the directory the process
//! happens to start in: `drover --config /etc/drover/drover.toml serve`, run by a service
//! manager from `/`, must find `sqlite://drover.db` and `./bin/report.sh` next to the config.
//!
//! Paths given on the command line or in the environment (`--database`, `DROVER_DATABASE_URL`)
//! stay relative to the working directory, as every command-line tool's do. A task's own `cwd`,
//! once resolved, is where its program is looked for, as documented for tasks.

use std::path::{Path, PathBuf};

use crate::config::Config;

impl Config {
    /// Makes the file's relative paths relative to `dir`, the directory the config is in.
    pub(crate) fn resolve_paths(&mut self, dir: &Path) {
        if let Some(url) = &self.database.url {
            self.database.url = Some(sqlite_url(url, dir));
        }
        for path in [
            &mut self.database.sslcert,
            &mut self.database.sslkey,
            &mut self.database.sslrootcert,
        ]
        .into_iter()
        .flatten()
        {
            // `sslrootcert = "system"` names the system's roots, not a file.
            if path.as_os_str() != "system" {
                *path = file(path, dir);
            }
        }
        for task in self.tasks.values_mut() {
            match &mut task.cwd {
                Some(cwd) => *cwd = file(cwd, dir),
                None => program(&mut task.command, dir),
            }
        }
        for hook in &mut self.hooks {
            program(&mut hook.command, dir);
        }
        let runtime = &mut self.autoscaler.command;
        for command in [
            &mut runtime.launch,
            &mut runtime.terminate,
            &mut runtime.list,
            &mut runtime.notices,
        ] {
            program(command, dir);
        }
    }
}

fn file(path: &Path, dir: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        // Without its `./`s: `/etc/drover/bin/x`, not `/etc/drover/./bin/x`, in messages.
        let parts = path
            .components()
            .filter(|part| *part != std::path::Component::CurDir);
        dir.join(parts.collect::<PathBuf>())
    }
}

/// A program given as a path (`./bin/job.sh`, `scripts/x`) is found next to the config; a bare
/// name (`python3`) is still looked up on `PATH`.
fn program(command: &mut [String], dir: &Path) {
    if let Some(first) = command.first_mut()
        && first.contains('/')
        && !Path::new(first.as_str()).is_absolute()
    {
        *first = file(Path::new(first.as_str()), dir)
            .to_string_lossy()
            .into_owned();
    }
}

/// `sqlite://PATH?OPTIONS` (or `sqlite:PATH`) with a relative PATH made relative to `dir`; any
/// other URL as is (a PostgreSQL URL's own `sslrootcert=…` is read as given, like `--database`).
fn sqlite_url(url: &str, dir: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_owned();
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if path.is_empty() || path.starts_with('/') || path == ":memory:" {
        return url.to_owned();
    }
    let joined = dir.join(path);
    match query {
        Some(query) => format!("sqlite://{}?{query}", joined.display()),
        None => format!("sqlite://{}", joined.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_of_the_file_resolve_next_to_it() {
        let mut config: Config = toml::from_str(
            r#"
[database]
url = "sqlite://data/drover.db?synchronous=normal"
sslrootcert = "system"
sslcert = "certs/client.pem"
[tasks.report]
command = ["./bin/report.sh", "--fast"]
[tasks.py]
command = ["python3", "job.py"]
[tasks.inside]
command = ["./run.sh"]
cwd = "work"
[[hooks]]
command = ["hooks/notify.sh"]
[autoscaler.command]
launch = ["/usr/local/bin/launch"]
terminate = ["scripts/terminate.sh"]
"#,
        )
        .unwrap();
        config.resolve_paths(Path::new("/etc/drover"));
        assert_eq!(
            config.database.url.as_deref(),
            Some("sqlite:///etc/drover/data/drover.db?synchronous=normal")
        );
        assert_eq!(config.database.sslrootcert, Some(PathBuf::from("system")));
        assert_eq!(
            config.database.sslcert,
            Some(PathBuf::from("/etc/drover/certs/client.pem"))
        );
        assert_eq!(
            config.tasks["report"].command,
            ["/etc/drover/bin/report.sh", "--fast"]
        );
        assert_eq!(config.tasks["py"].command, ["python3", "job.py"]);
        // Relative to its own cwd, which is relative to the file.
        assert_eq!(config.tasks["inside"].command, ["./run.sh"]);
        assert_eq!(
            config.tasks["inside"].cwd,
            Some(PathBuf::from("/etc/drover/work"))
        );
        assert_eq!(config.hooks[0].command, ["/etc/drover/hooks/notify.sh"]);
        assert_eq!(config.autoscaler.command.launch, ["/usr/local/bin/launch"]);
        assert_eq!(
            config.autoscaler.command.terminate,
            ["/etc/drover/scripts/terminate.sh"]
        );
    }

    #[test]
    fn other_urls_and_absolute_paths_are_left_alone() {
        let dir = Path::new("/etc/drover");
        for url in [
            "sqlite:///var/lib/drover.db",
            "sqlite://:memory:",
            "postgres://u@db/x?sslrootcert=ca.pem",
        ] {
            assert_eq!(sqlite_url(url, dir), url);
        }
        assert_eq!(
            sqlite_url("sqlite://drover.db", dir),
            "sqlite:///etc/drover/drover.db"
        );
        assert_eq!(
            sqlite_url("sqlite:data.db", dir),
            "sqlite:///etc/drover/data.db"
        );
    }
}
