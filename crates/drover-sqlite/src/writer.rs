//! The writer thread: the only connection that writes, with group commit.
//!
//! Callers send an operation (a closure over the connection) on a bounded channel and await its
//! answer. The thread takes the first queued operation, then whatever else is already queued (up
//! to `max_ops_per_commit`), and runs them in one `BEGIN IMMEDIATE` transaction with a savepoint
//! each: an operation that fails rolls back only its own savepoint. Answers are sent after the
//! `COMMIT`, so "acknowledged" always means "committed". A failed commit fails every operation of
//! the batch.
//!
//! Claims parked by idle workers (see [`drover_core::parked`]) that a batch's enqueues gave work are
//! made after the batch's operations, before the `COMMIT`, and answered right after it.
//!
//! `BEGIN IMMEDIATE` takes the write lock up front: a deferred transaction that reads and then
//! writes fails with `SQLITE_BUSY_SNAPSHOT` when another process wrote in between, whatever the
//! busy timeout (rails/solid_queue#385).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::JoinHandle;
use std::time::Duration;

use drover_core::{ClaimResult, StoreError, Wakeups};
use jiff::Timestamp;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::jobs;
use crate::wake::WakeFile;
use drover_core::parked::{Parked, ParkedClaims};

/// What an operation may ask of the writer besides its own SQL.
pub(crate) struct WriteCtx<'c> {
    pub(crate) conn: &'c Connection,
    /// Set by operations that may have made jobs available: after the commit, wake workers here
    /// and in other processes.
    pub(crate) wake: bool,
    parked: &'c ParkedClaims,
    /// Parked claims this batch's enqueues gave work, made before the commit.
    taken: Vec<Parked>,
}

impl WriteCtx<'_> {
    /// Records that jobs of `queue` are available now: a claim parked on the queue is made in
    /// this transaction; without one, workers are woken after the commit.
    pub(crate) fn made_available(&mut self, queue: &str) {
        if self.taken.iter().any(|p| p.params.queue == queue) {
            return;
        }
        match self.parked.take(queue) {
            Some(parked) => self.taken.push(parked),
            None => self.wake = true,
        }
    }
}

trait Operation: Send {
    /// Runs the SQL; false when it failed (its savepoint is then rolled back).
    fn apply(&mut self, cx: &mut WriteCtx<'_>) -> bool;
    /// Sends the answer once the transaction's fate is known.
    fn answer(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Op<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Operation for Op<T, F>
where
    T: Send,
    F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, cx: &mut WriteCtx<'_>) -> bool {
        let work = self.work.take().expect("operation applied twice");
        let result = catch_unwind(AssertUnwindSafe(|| work(cx))).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(StoreError::Internal(format!(
                "write operation panicked: {what}"
            )))
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(mut self: Box<Self>, commit: Result<(), StoreError>) {
        let result = match commit {
            Ok(()) => self.result.take().expect("answer before apply"),
            Err(err) => Err(err),
        };
        // The caller may have gone away; the work is done either way.
        let _ = self.reply.send(result);
    }
}

/// The sending side, held by the store.
pub(crate) struct Writer {
    tx: mpsc::Sender<Box<dyn Operation>>,
    wait: Duration,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn start(
        conn: Connection,
        capacity: usize,
        wait: Duration,
        max_ops: usize,
        wakeups: Wakeups,
        wake_file: Option<WakeFile>,
        parked: std::sync::Arc<ParkedClaims>,
    ) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("drover-sqlite-writer".into())
            .spawn(move || run(conn, rx, max_ops.max(1), wakeups, wake_file, &parked))
            .expect("spawn the SQLite writer thread");
        (Writer { tx, wait }, thread)
    }

    /// Runs `work` in the next group commit and returns its result once committed.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op: Box<dyn Operation> = Box::new(Op {
            work: Some(work),
            result: None,
            reply,
        });
        match self.tx.send_timeout(op, self.wait).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                return Err(StoreError::Busy(self.wait));
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(StoreError::Closed),
        }
        answer.await.unwrap_or(Err(StoreError::Closed))
    }
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn Operation>>,
    max_ops: usize,
    wakeups: Wakeups,
    wake_file: Option<WakeFile>,
    parked: &ParkedClaims,
) {
    let mut batch: Vec<Box<dyn Operation>> = Vec::with_capacity(max_ops);
    let (mut commits, mut ops) = (0u64, 0u64);
    let mut busy = false;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        gather(&mut rx, &mut batch, max_ops, busy);
        // Company is worth waiting for only under load: a quiet writer commits a lone
        // operation at once.
        busy = batch.len() > 1;
        let mut cx = WriteCtx {
            conn: &conn,
            wake: false,
            parked,
            taken: Vec::new(),
        };
        let (commit, claims) = run_batch(&mut cx, &mut batch);
        commits += 1;
        ops += batch.len() as u64;
        let wake = cx.wake && commit.is_ok();
        for (parked, claim) in claims {
            answer_parked(&conn, parked, commit.clone().and(claim));
        }
        if wake {
            // Wake before answering: a worker in this process starts claiming while the
            // enqueuer is still being told its job is stored.
            wakeups.wake();
            if let Some(file) = &wake_file {
                file.touch();
            }
        }
        for op in batch.drain(..) {
            op.answer(commit.clone());
        }
    }
    tracing::debug!(commits, ops, "SQLite writer stopped");
}

/// How long a busy writer waits for company when only one operation is queued. Operations come
/// in pairs under load (a batch of completions and the claim that refills the freed slots are
/// sent within microseconds of each other); committing them together halves the fsyncs.
const GATHER_WINDOW: Duration = Duration::from_micros(60);

/// Adds whatever else is queued to the batch; when `busy`, waits briefly for a second operation.
fn gather(
    rx: &mut mpsc::Receiver<Box<dyn Operation>>,
    batch: &mut Vec<Box<dyn Operation>>,
    max_ops: usize,
    busy: bool,
) {
    let started = std::time::Instant::now();
    while batch.len() < max_ops {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(mpsc::error::TryRecvError::Empty)
                if busy && batch.len() == 1 && started.elapsed() < GATHER_WINDOW =>
            {
                std::thread::yield_now();
            }
            Err(_) => break,
        }
    }
}

/// A parked claim made in a batch, with its result before the commit.
type MadeClaim = (Parked, Result<ClaimResult, StoreError>);

fn run_batch(
    cx: &mut WriteCtx<'_>,
    batch: &mut [Box<dyn Operation>],
) -> (Result<(), StoreError>, Vec<MadeClaim>) {
    if let Err(err) = begin_immediate(cx.conn) {
        return (Err(err), Vec::new());
    }
    let mut claims = Vec::new();
    let result = apply_all(cx, batch)
        .and_then(|()| make_parked_claims(cx, &mut claims))
        .and_then(|()| exec(cx.conn, "COMMIT"));
    // Claims taken by an operation that failed before they could be made still get an answer.
    claims.extend(cx.taken.drain(..).map(|p| (p, Ok(ClaimResult::default()))));
    if let Err(err) = result {
        tracing::error!(error = %err, "SQLite transaction failed; the whole batch is rolled back");
        let _ = cx.conn.execute_batch("ROLLBACK");
        return (Err(crate::store::map_err(err)), claims);
    }
    (Ok(()), claims)
}

/// Makes the parked claims the batch's enqueues took, each in its own savepoint.
fn make_parked_claims(cx: &mut WriteCtx<'_>, made: &mut Vec<MadeClaim>) -> rusqlite::Result<()> {
    for parked in std::mem::take(&mut cx.taken) {
        exec(cx.conn, "SAVEPOINT claim")?;
        let now = parked.params.now.unwrap_or_else(Timestamp::now);
        let result = jobs::claim(cx.conn, &parked.params, now);
        match &result {
            // A full claim may have left jobs that other workers could take.
            Ok(claim) => cx.wake |= claim.jobs.len() >= parked.params.limit,
            Err(_) => exec(cx.conn, "ROLLBACK TO claim")?,
        }
        exec(cx.conn, "RELEASE claim")?;
        made.push((parked, result.map_err(crate::store::map_err)));
    }
    Ok(())
}

/// Gives a made claim to its worker. A worker that withdrew in the meantime cannot run the
/// jobs, so they are handed back at once (available again, attempt not used).
fn answer_parked(conn: &Connection, parked: Parked, result: Result<ClaimResult, StoreError>) {
    let Err(Ok(unwanted)) = parked.answer.send(result) else {
        return;
    };
    if unwanted.jobs.is_empty() {
        return;
    }
    let outcomes = drover_core::parked::hand_back_outcomes(&unwanted);
    let handed_back = begin_immediate(conn).and_then(|()| {
        jobs::finish_many(conn, &outcomes, Timestamp::now())
            .and_then(|_| exec(conn, "COMMIT"))
            .map_err(|err| {
                let _ = conn.execute_batch("ROLLBACK");
                crate::store::map_err(err)
            })
    });
    if let Err(err) = handed_back {
        tracing::warn!(error = %err, jobs = outcomes.len(),
            "cannot hand back jobs claimed for a worker that stopped waiting; the rescuer will take them when their leases expire");
    }
}

/// Runs each operation in its own savepoint, so that a failing one rolls back alone.
fn apply_all(cx: &mut WriteCtx<'_>, batch: &mut [Box<dyn Operation>]) -> rusqlite::Result<()> {
    for op in batch.iter_mut() {
        exec(cx.conn, "SAVEPOINT op")?;
        if !op.apply(cx) {
            exec(cx.conn, "ROLLBACK TO op")?;
        }
        exec(cx.conn, "RELEASE op")?;
    }
    Ok(())
}

/// Runs a statement through the statement cache: `execute_batch` would parse it every time.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Takes the write lock, retrying while another process holds it. Each try already waits for
/// the busy timeout, so a few tries cover a long lock without spinning.
fn begin_immediate(conn: &Connection) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        match exec(conn, "BEGIN IMMEDIATE") {
            Ok(()) => return Ok(()),
            Err(err) if is_busy(&err) && tries < 3 => {
                tries += 1;
                tracing::warn!(
                    tries,
                    "SQLite database is locked by another process; waiting"
                );
                std::thread::sleep(Duration::from_millis(50 * tries));
            }
            Err(err) => return Err(crate::store::map_err(err)),
        }
    }
}

pub(crate) fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
