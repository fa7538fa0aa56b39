//! Vacuuming the jobs table while a backlog drains, and analyzing it while a new one grows.
//!
//! A claim changes a job's state, so its entry in the partial index of available jobs
//! (`drover_jobs_fetch`) dies, and dead entries stay until a vacuum removes them. New jobs are
//! appended at the end of that index and claims take from its front, so during a long drain
//! every claim walks over all the entries claimed before it: measured here, after 500,000
//! claims the claim's index scan read 4,500 pages and took 16 ms instead of 0.3 ms, and a
//! 1,000,000-job drain ran at three quarters of the speed of a short one. Autovacuum does not
//! help in time (it wakes once a minute by default, a server-wide setting).
//!
//! So every process counts the jobs it claims and, after
//! [`vacuum_after_claims`](crate::PgConfig::vacuum_after_claims) of them (a tenth of that
//! the first time), runs
//! `VACUUM (SKIP_LOCKED)` on the jobs table from a connection of its own, in the background:
//! at full speed while a backlog drains, throttled as autovacuum is ([`THROTTLE`]) while the
//! workers keep up ([`keeping_up`]). `SKIP_LOCKED` makes it a no-op while another vacuum
//! (another process's, or autovacuum's) holds the table; a role that does not own the table
//! gets a warning from the server, not an error.
//!
//! Analyzing: a prepared statement's plan is made for the table as it is when the statement
//! first runs, and kept until the table's statistics change. In a new database that plan is
//! made for a table of a few rows, where reading the whole table is cheapest, and it went on
//! reading the whole table on every claim and completion once it had grown: seen here with
//! auto_explain, the promotion of every claim made by a stream of single enqueues read the
//! whole table. Autovacuum's analyze comes within a minute, too late. So a process also runs
//! `ANALYZE` on the jobs table when the jobs it has inserted pass each of [`ANALYZE_AT`]; the
//! new statistics make every session plan again, and past a few thousand rows the plans read
//! by index whatever the size.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::CancelToken;
use tokio_util::task::TaskTracker;

use crate::tls::RustlsConnect;

/// The session's vacuum throttle: autovacuum's own (2 ms of rest after every 200 units of
/// work, its defaults since PostgreSQL 12), where a plain `VACUUM` has none. Unthrottled, a
/// vacuum took 100–250 ms of a core, one every 2 s at 26,000 jobs/s on this 2-core machine, and
/// each showed as a spike of 25–60 ms in the enqueue→start latency; throttled it took
/// 230–710 ms (once 2.2 s) in the background and the p99 of the steady load fell from 25 ms to
/// 18 ms (medians of 3 runs of `drover bench --scenario steady`, 2026-12-05).
const THROTTLE: &str = "SET vacuum_cost_delay = 2; SET vacuum_cost_limit = 200";

/// Jobs inserted by a process after which it analyzes the jobs table.
const ANALYZE_AT: [u64; 3] = [1_000, 5_000, 50_000];

/// The columns the analyze gathers statistics on: those the store's statements filter, sort or
/// join by. The JSON columns (`args`, `errors`, `history`) cost the most to analyze and no plan
/// reads their statistics: on 50,000 jobs the analyze of these columns took 45-50 ms, of the
/// whole row 75-86 ms. The table's size, what the plans needed, is counted either way;
/// autovacuum's own analyze still covers every column.
const ANALYZED_COLUMNS: &str = "id, state, queue, priority, kind, scheduled_at, \
     lease_expires_at, unique_key, completed_at, cancel_requested_at";

/// A vacuum or an analyze of the jobs table, one at a time per process.
#[derive(Debug, Clone, Copy)]
enum Upkeep {
    Vacuum,
    Analyze,
}

/// Whether the workers kept up with the queue over `claims` claims, `full` of which got every
/// job they asked for. When most came back full a backlog is draining: its jobs wait in the
/// queue anyway and every claim walks the dead entries until the vacuum is done, so the vacuum
/// runs at full speed (throttled, a vacuum of a table of 1,000,000 jobs took 7–12 s and the
/// drain fell from 53,000 to 41,000 jobs/s). Otherwise the vacuum is throttled and yields the
/// CPU to the workers, whose jobs' latency it would show in.
fn keeping_up(claims: u64, full: u64) -> bool {
    full * 2 < claims
}

/// Runs a vacuum of the jobs table after enough claims, an analyze after enough inserts.
pub(crate) struct Vacuum {
    pg: tokio_postgres::Config,
    tls: RustlsConnect,
    /// `VACUUM (SKIP_LOCKED) <schema>.drover_jobs`.
    sql: String,
    /// `ANALYZE (SKIP_LOCKED) <schema>.drover_jobs`.
    analyze_sql: String,
    after_claims: u64,
    connect_timeout: Duration,
    claimed: AtomicU64,
    /// Claims since the last vacuum, and how many of them got all the jobs they asked for.
    claims: AtomicU64,
    full_claims: AtomicU64,
    running: AtomicBool,
    /// The store closed: an upkeep that fails now (its schema may be gone, as when `drover
    /// bench` drops its schema) is no news.
    closed: AtomicBool,
    /// Vacuums run so far.
    runs: AtomicU64,
    inserted: AtomicU64,
    /// How many of [`ANALYZE_AT`] have been passed (and analyzed for).
    analyzed: AtomicUsize,
    /// Analyzes run so far.
    analyses: AtomicU64,
    /// The store's tracker of connection tasks: an upkeep's is one, so that the store's close
    /// waits for its session to end with a goodbye, not cut off by the process's exit.
    tasks: TaskTracker,
    /// Stops the statement of the upkeep running now, if any, when the store closes.
    current: Mutex<Option<CancelToken>>,
}

impl Vacuum {
    pub(crate) fn new(
        pg: tokio_postgres::Config,
        tls: RustlsConnect,
        schema: Option<&str>,
        after_claims: u64,
        connect_timeout: Duration,
        tasks: TaskTracker,
    ) -> Arc<Vacuum> {
        let table = match schema {
            Some(schema) => format!("\"{}\".drover_jobs", schema.replace('"', "\"\"")),
            None => "drover_jobs".to_owned(),
        };
        Arc::new(Vacuum {
            pg,
            tls,
            sql: format!("VACUUM (SKIP_LOCKED) {table}"),
            analyze_sql: format!("ANALYZE (SKIP_LOCKED) {table} ({ANALYZED_COLUMNS})"),
            after_claims,
            connect_timeout,
            claimed: AtomicU64::new(0),
            claims: AtomicU64::new(0),
            full_claims: AtomicU64::new(0),
            running: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            runs: AtomicU64::new(0),
            inserted: AtomicU64::new(0),
            analyzed: AtomicUsize::new(0),
            analyses: AtomicU64::new(0),
            tasks,
            current: Mutex::new(None),
        })
    }

    /// Counts `n` inserted jobs; starts an analyze in the background when they pass the next
    /// of [`ANALYZE_AT`] (or at a later insert, if a vacuum or analyze is running then).
    pub(crate) fn inserted(self: &Arc<Self>, n: usize) {
        let total = self.inserted.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let passed = ANALYZE_AT.iter().take_while(|&&at| total >= at).count();
        if passed <= self.analyzed.load(Ordering::Relaxed) || !self.begin() {
            return;
        }
        self.analyzed.fetch_max(passed, Ordering::Relaxed);
        // Throttled as a vacuum is while the workers keep up: unthrottled, the analyze after
        // 50,000 inserts took 411 ms of a core two seconds into a steady load, and a short
        // backlog formed behind it. Throttled, three alternated runs at 28,000 jobs/s had 3
        // windows of 100 ms with a start slower than 20 ms in their first 4 s, against 4-7
        // (the p99 over the run is set by later windows: checkpoints, vacuums).
        let (claims, full) = (
            self.claims.load(Ordering::Relaxed),
            self.full_claims.load(Ordering::Relaxed),
        );
        self.spawn(Upkeep::Analyze, keeping_up(claims, full));
    }

    /// Analyzes finished so far.
    pub(crate) fn analyses(&self) -> u64 {
        self.analyses.load(Ordering::Relaxed)
    }

    /// Counts `n` jobs claimed of `asked`; starts a vacuum in the background when they add up.
    pub(crate) fn claimed(self: &Arc<Self>, n: usize, asked: usize) {
        if self.after_claims == 0 || n == 0 {
            return;
        }
        self.claims.fetch_add(1, Ordering::Relaxed);
        if n >= asked {
            self.full_claims.fetch_add(1, Ordering::Relaxed);
        }
        let total = self.claimed.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total < self.claims_due() || !self.begin() {
            return;
        }
        self.claimed.store(0, Ordering::Relaxed);
        let claims = self.claims.swap(0, Ordering::Relaxed);
        let full = self.full_claims.swap(0, Ordering::Relaxed);
        self.spawn(Upkeep::Vacuum, keeping_up(claims, full));
    }

    /// Claims after which the next vacuum is due: a tenth of `after_claims` for the first one.
    /// A steady load that starts on a new table had starts slower than 20 ms in 3, 7 and 14
    /// windows of 100 ms of its first 3 s (first vacuum after 50,000 claims), against 0, 3 and
    /// 3 with the first vacuum after 5,000 and the analyze of [`ANALYZED_COLUMNS`] (alternated
    /// runs of `drover bench --scenario steady --rate 28000`, 2026-12-06; the two changes were
    /// measured together). Why, not measured: until a table has been vacuumed its free space
    /// map is empty, so every row version that leaves its page goes to the table's end.
    fn claims_due(&self) -> u64 {
        if self.runs.load(Ordering::Relaxed) == 0 {
            (self.after_claims / 10).max(1)
        } else {
            self.after_claims
        }
    }

    /// Marks an upkeep as running; false when one already is.
    fn begin(&self) -> bool {
        self.running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Runs `upkeep` in the background, with [`THROTTLE`] when `throttled`; the caller has
    /// [begun](Self::begin) it.
    fn spawn(self: &Arc<Self>, upkeep: Upkeep, throttled: bool) {
        let this = Arc::clone(self);
        self.tasks.spawn(async move {
            let started = std::time::Instant::now();
            let (sql, done, consequence) = match upkeep {
                Upkeep::Vacuum => (
                    &this.sql,
                    &this.runs,
                    "claims slow down until autovacuum runs",
                ),
                Upkeep::Analyze => (
                    &this.analyze_sql,
                    &this.analyses,
                    "statements may read all of it until autovacuum analyzes it",
                ),
            };
            match this.run(throttled, sql).await {
                Ok(()) => {
                    done.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(took = ?started.elapsed(), statement = %sql,
                        throttled, "jobs table upkeep done");
                }
                Err(error) if this.closed.load(Ordering::Acquire) => {
                    tracing::debug!(%error, statement = %sql, "upkeep after the store closed")
                }
                Err(error) => tracing::warn!(%error, statement = %sql,
                    "cannot run the jobs table's upkeep; {consequence}"),
            }
            this.running.store(false, Ordering::Release);
        });
    }

    /// The store is closing, or dropping its schema: from now on a failed upkeep is logged at
    /// debug level only, and the one running now is cancelled (a vacuum of a large table would
    /// outlast the store's wait for its sessions), to end its session itself.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let current = self.current.lock().expect("upkeep lock poisoned").take();
        if let Some(token) = current {
            let cancel = token.cancel_query(self.tls.clone());
            if let Err(error) = tokio::time::timeout(self.connect_timeout, cancel).await {
                tracing::debug!(%error, "cancelling the jobs table's upkeep timed out");
            }
        }
    }

    /// Vacuums finished so far.
    pub(crate) fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Runs `sql` on a new connection, after [`THROTTLE`] when `throttled`.
    async fn run(&self, throttled: bool, sql: &str) -> Result<(), String> {
        // A connection of its own: VACUUM cannot run in a transaction, either may outlast the
        // pool's statement timeout, and must not hold a pooled connection for that long.
        let (client, connection) =
            tokio::time::timeout(self.connect_timeout, self.pg.connect(self.tls.clone()))
                .await
                .map_err(|_| "connecting timed out".to_owned())?
                .map_err(|err| crate::error::describe(&err))?;
        let driver = tokio::spawn(connection);
        *self.current.lock().expect("upkeep lock poisoned") = Some(client.cancel_token());
        if self.closed.load(Ordering::Acquire) {
            // Closed while connecting: nothing to cancel yet, and nothing to start.
            self.current.lock().expect("upkeep lock poisoned").take();
            drop(client);
            let _ = driver.await;
            return Err("the store closed".to_owned());
        }
        let result = async {
            if throttled {
                client.batch_execute(THROTTLE).await?;
            }
            client.batch_execute(sql).await
        }
        .await
        .map_err(|err| crate::error::describe(&err));
        self.current.lock().expect("upkeep lock poisoned").take();
        drop(client);
        let _ = driver.await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::keeping_up;

    #[test]
    fn a_vacuum_is_throttled_only_while_the_workers_keep_up() {
        assert!(
            keeping_up(700, 8),
            "steady load: most claims found fewer jobs than asked"
        );
        assert!(
            !keeping_up(280, 280),
            "a backlog: every claim came back full"
        );
        assert!(!keeping_up(10, 5), "half full counts as a backlog");
        assert!(keeping_up(10, 4));
    }
}
