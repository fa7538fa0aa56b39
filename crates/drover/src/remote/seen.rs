//! The HTTP workers this server has heard from: their names, the queues they lease from, and
//! the leases they hold through it. An HTTP worker has no row in the database (only its jobs'
//! lease owners name it), so without this an operator saw no trace of one on the processes
//! page or in `GET /api/v1/cluster`. Kept in memory, per server, and written into the server's
//! process row with each presence heartbeat, so that every server and the CLI list them all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use drover_core::HttpWorkerRecord;
use jiff::Timestamp;
use serde::Serialize;

/// How long a worker is listed after its latest lease request, while it holds no lease here. A
/// worker asks again at least every 30 s (the longest wait) while it has a free slot.
pub(crate) const SEEN_FOR: Duration = Duration::from_secs(60);

/// Most worker names remembered: names are the client's to choose, and a client that made up a
/// new one per request must not grow the map without end. Past it, new names are not listed.
const MAX_NAMES: usize = 1_000;

/// An HTTP worker, as the server it leases through sees it: [`HttpWorkerRecord`] and that
/// server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HttpWorkerView {
    /// The name it leases under (its jobs' lease owner is `remote:NAME`).
    pub name: String,
    /// The queues of its latest lease request.
    pub queues: Vec<String>,
    /// Leases it holds through that server (as of the server's last heartbeat, for another
    /// server's workers).
    pub running: usize,
    /// Its latest lease request.
    pub last_seen: Timestamp,
    /// The id of the server process it leases through (see `processes`). A worker behind a
    /// load balancer that talks to several servers is listed once for each.
    pub server: String,
}

impl HttpWorkerView {
    /// `worker` as `server` saw it.
    pub fn new(worker: HttpWorkerRecord, server: &str) -> Self {
        Self {
            name: worker.name,
            queues: worker.queues,
            running: worker.running,
            last_seen: worker.last_seen,
            server: server.to_owned(),
        }
    }
}

/// The workers heard from, by name.
#[derive(Default)]
pub(crate) struct Seen {
    by_name: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    queues: Vec<String>,
    at: Instant,
    last_seen: Timestamp,
}

impl Seen {
    /// Notes a lease request of `worker` for `queues`, made at `now`.
    pub(crate) fn lease_requested(&self, worker: &str, queues: &[String], now: Timestamp) {
        let mut by_name = self.by_name.lock().expect("seen workers poisoned");
        // A worker asks again and again with the same queues: no allocation then.
        if let Some(entry) = by_name.get_mut(worker) {
            if entry.queues != queues {
                entry.queues = queues.to_vec();
            }
            entry.at = Instant::now();
            entry.last_seen = now;
            return;
        }
        if by_name.len() >= MAX_NAMES {
            let fresh = Instant::now() - SEEN_FOR;
            by_name.retain(|_, entry| entry.at > fresh);
            if by_name.len() >= MAX_NAMES {
                return;
            }
        }
        by_name.insert(
            worker.to_owned(),
            Entry {
                queues: queues.to_vec(),
                at: Instant::now(),
                last_seen: now,
            },
        );
    }

    /// The workers heard from within [`SEEN_FOR`], or holding leases (`running`, by name), by
    /// name; the others are forgotten.
    pub(crate) fn list(&self, running: &HashMap<String, usize>) -> Vec<HttpWorkerRecord> {
        let fresh = Instant::now().checked_sub(SEEN_FOR);
        let mut by_name = self.by_name.lock().expect("seen workers poisoned");
        by_name.retain(|name, entry| {
            running.get(name).is_some_and(|&n| n > 0) || fresh.is_none_or(|t| entry.at > t)
        });
        let mut workers: Vec<HttpWorkerRecord> = by_name
            .iter()
            .map(|(name, entry)| HttpWorkerRecord {
                name: name.clone(),
                queues: entry.queues.clone(),
                running: running.get(name).copied().unwrap_or(0),
                last_seen: entry.last_seen,
            })
            .collect();
        workers.sort_by(|a, b| a.name.cmp(&b.name));
        workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_listed_by_name_with_their_running_leases() {
        let seen = Seen::default();
        let now = Timestamp::UNIX_EPOCH;
        seen.lease_requested("b", &["mail".into()], now);
        seen.lease_requested("a", &["gpu".into(), "mail".into()], now);
        seen.lease_requested("b", &["reports".into()], now);
        let running = HashMap::from([("b".to_owned(), 2)]);
        let listed = seen.list(&running);
        assert_eq!(
            listed
                .iter()
                .map(|w| (w.name.as_str(), w.queues.clone(), w.running))
                .collect::<Vec<_>>(),
            vec![
                ("a", vec!["gpu".to_owned(), "mail".to_owned()], 0),
                ("b", vec!["reports".to_owned()], 2),
            ]
        );
    }

    #[test]
    fn made_up_names_do_not_grow_the_map_without_end() {
        let seen = Seen::default();
        for i in 0..MAX_NAMES + 50 {
            seen.lease_requested(&format!("w{i}"), &[], Timestamp::UNIX_EPOCH);
        }
        assert_eq!(seen.list(&HashMap::new()).len(), MAX_NAMES);
    }
}
