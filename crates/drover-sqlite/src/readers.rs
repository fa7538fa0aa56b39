//! Read connections: a small pool of connections used on blocking threads, so that reads never
//! queue behind the writer.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use drover_core::StoreError;
use rusqlite::{Connection, OpenFlags};

use crate::store::map_err;

/// Most idle read connections kept open.
const MAX_IDLE: usize = 4;

/// Most reads at once, so most connections open and blocking threads busy: a burst of reads
/// (a dashboard, many `drover stats`) waits for a connection instead of opening hundreds.
pub(crate) const MAX_OPEN: usize = 8;

#[derive(Clone)]
pub(crate) struct Readers {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    busy_timeout: std::time::Duration,
    idle: Mutex<Vec<Connection>>,
    open: tokio::sync::Semaphore,
}

impl Readers {
    pub(crate) fn new(path: PathBuf, busy_timeout: std::time::Duration) -> Readers {
        Readers {
            inner: Arc::new(Inner {
                path,
                busy_timeout,
                idle: Mutex::new(Vec::new()),
                open: tokio::sync::Semaphore::new(MAX_OPEN),
            }),
        }
    }

    /// Runs `read` on a pooled connection on a blocking thread.
    pub(crate) async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.read_with(move |conn| read(conn).map_err(map_err))
            .await
    }
}

impl Readers {
    /// Like [`Readers::read`], for reads that return store errors of their own.
    pub(crate) async fn read_with<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let permit = self
            .inner
            .open
            .acquire()
            .await
            .map_err(|_| StoreError::Internal("reader pool closed".into()))?;
        let result = tokio::task::spawn_blocking(move || {
            let conn = inner.checkout()?;
            let result = read(&conn);
            inner.checkin(conn);
            result
        })
        .await
        .map_err(|err| StoreError::Internal(format!("read task failed: {err}")))?;
        drop(permit);
        result
    }
}

impl Inner {
    fn checkout(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().expect("reader pool poisoned").pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(map_err)?;
        conn.busy_timeout(self.busy_timeout).map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(32);
        register_functions(&conn).map_err(map_err)?;
        Ok(conn)
    }

    fn checkin(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("reader pool poisoned");
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// `drover_json_contains(doc, pattern)`: PostgreSQL's `@>` on JSON text, numbers compared
/// exactly, for the args filter of job lists. Text that is not JSON contains nothing.
fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "drover_json_contains",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let text = |i: usize| -> rusqlite::Result<Option<&str>> {
                ctx.get_raw(i)
                    .as_str_or_null()
                    .map_err(|err| rusqlite::Error::UserFunctionError(Box::new(err)))
            };
            Ok(match (text(0)?, text(1)?) {
                (Some(doc), Some(pattern)) => drover_core::json_contains(doc, pattern),
                _ => false,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_reads_waits_for_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        Connection::open(&path).unwrap();
        let readers = Readers::new(path, std::time::Duration::from_secs(1));
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let reads: Vec<_> = (0..64)
            .map(|_| {
                let (readers, now, most) = (readers.clone(), now.clone(), most.clone());
                tokio::spawn(async move {
                    readers
                        .read(move |conn| {
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(n, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(10));
                            now.fetch_sub(1, Ordering::SeqCst);
                            conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                        })
                        .await
                })
            })
            .collect();
        for read in reads {
            assert_eq!(read.await.unwrap().unwrap(), 1);
        }
        let most = most.load(Ordering::SeqCst);
        assert!((2..=MAX_OPEN).contains(&most), "{most} reads at once");
    }
}
