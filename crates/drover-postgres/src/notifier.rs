//! Wake-ups for other processes after an enqueue, sent after its commit rather than inside it.
//!
//! PostgreSQL serializes the commits of transactions that sent a `NOTIFY`: each holds a global
//! lock from before its commit record is written until it is flushed, so notifying commits
//! cannot share a WAL flush. Measured here with pgbench, 16 clients each inserting one row:
//! ~4,900 commits/s without a notification, ~440/s with one. A transaction that only notifies
//! writes no WAL and is cheap (~11,000/s on one connection). So an enqueue commits its rows
//! without a notification, and the queues it filled are handed to this notifier, which sends
//! them in a transaction of their own, folding together the queues of every enqueue that
//! committed while it was sending (at most one send at a time per store).
//!
//! What changes: a listener hears of the jobs one round trip after their commit instead of at
//! it, and if this process dies (or the database connection fails) between the two, other
//! processes find the jobs at their next poll instead. The jobs themselves are committed before
//! the caller is answered, as before; this process's own workers are woken directly.
//! Enqueues in a caller's transaction ([`crate::PgStore::insert_jobs_in_transaction`]) still
//! notify inside it: only the caller knows when it commits.

use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;

use crate::session::Db;
use crate::wake;

/// Sends the wake-ups of committed enqueues; see the module documentation.
pub(crate) struct Notifier {
    pool: Pool,
    channel: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Queues whose wake-up is not sent yet, distinct.
    pending: Vec<String>,
    /// A task is sending.
    sending: bool,
}

impl Notifier {
    pub(crate) fn new(pool: Pool, channel: String) -> Arc<Notifier> {
        Arc::new(Notifier {
            pool,
            channel,
            state: Mutex::default(),
        })
    }

    /// Queues wake-ups for `queues`, whose jobs have committed, and makes sure a task sends
    /// them. Does not wait for the send.
    pub(crate) fn notify(self: &Arc<Self>, queues: Vec<String>) {
        if queues.is_empty() {
            return;
        }
        let mut state = self.state.lock().expect("notifier poisoned");
        for queue in queues {
            if !state.pending.contains(&queue) {
                state.pending.push(queue);
            }
        }
        if state.sending {
            return;
        }
        state.sending = true;
        drop(state);
        tokio::spawn(self.clone().send_all());
    }

    /// Sends until nothing is pending.
    async fn send_all(self: Arc<Self>) {
        loop {
            let queues = {
                let mut state = self.state.lock().expect("notifier poisoned");
                if state.pending.is_empty() {
                    state.sending = false;
                    return;
                }
                std::mem::take(&mut state.pending)
            };
            let payloads = wake::payloads(queues.iter().map(String::as_str));
            if let Err(error) = self.send(&payloads).await {
                // The jobs are committed: other processes find them at their next poll.
                tracing::warn!(%error, queues = ?queues,
                    "cannot send the wake-up of committed enqueues; other processes will find \
                     the jobs at their next poll");
            }
        }
    }

    async fn send(&self, payloads: &[String]) -> Result<(), String> {
        let client = self.pool.get().await.map_err(|err| err.to_string())?;
        let db = Db::new(&client, Some(client.statement_cache.as_ref()));
        wake::notify(&db, &self.channel, payloads)
            .await
            .map_err(|err| format!("{err:?}"))
    }
}
