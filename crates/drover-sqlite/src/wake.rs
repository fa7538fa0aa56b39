//! Cross-process wake-ups on SQLite (the snappea model): a commit that enqueues writes one byte
//! to a small file beside the database; every process on the same database watches that file
//! with a file-system notification and wakes its workers. A slow poll in the engine covers the
//! cases a notification cannot (network file systems, a watcher that failed to start).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use drover_core::Wakeups;
use notify::{EventKind, RecursiveMode, Watcher};

/// The wake file, held open by the writer.
pub(crate) struct WakeFile {
    file: File,
    path: PathBuf,
}

impl WakeFile {
    pub(crate) fn open(path: &Path) -> std::io::Result<WakeFile> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        Ok(WakeFile {
            file,
            path: path.to_owned(),
        })
    }

    /// Signals the watchers. Not synced: it is a signal, not data.
    pub(crate) fn touch(&self) {
        #[cfg(unix)]
        let result = std::os::unix::fs::FileExt::write_at(&self.file, b"w", 0).map(|_| ());
        #[cfg(not(unix))]
        let result = self.file.set_modified(std::time::SystemTime::now());
        if let Err(err) = result {
            tracing::warn!(path = %self.path.display(), error = %err, "could not touch the wake file");
        }
    }
}

/// Watches the wake file and bumps `wakeups` on every change. Dropping it stops the watch.
pub(crate) fn watch(path: &Path, wakeups: Wakeups) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if matches!(event.kind, EventKind::Modify(_) | EventKind::Create(_)) => {
                wakeups.wake()
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "wake file watch error"),
        })?;
    watcher.watch(path, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
