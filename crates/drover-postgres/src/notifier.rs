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
//! The enqueue's caller is answered after its commit, without waiting for the send (waiting
//! cost a third of the single-enqueue rate); closing the store waits for the sends still
//! queued, so that a short-lived program (`drover enqueue`) has woken the workers when it
//! exits. What changes: if this process dies (or the database connection fails, or the store
//! is dropped without being closed) between the commit and the send, other processes find the
//! jobs at their next poll instead of at once. This process's own workers are woken directly.
//! Enqueues in a caller's transaction ([`crate::PgStore::insert_jobs_in_transaction`]) still
//! notify inside it: only the caller knows when it commits.

use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use tokio::sync::watch;

use crate::session::Db;
use crate::wake;

/// Sends the wake-ups of committed enqueues; see the module documentation.
pub(crate) struct Notifier {
    pool: Pool,
    channel: String,
    state: Mutex<State>,
    /// The latest generation whose send is over (sent, or failed and logged).
    sent: watch::Sender<u64>,
}

struct State {
    /// Queues whose wake-up is not sent yet, distinct.
    pending: Vec<String>,
    /// The generation `pending` will be sent as; every send takes the next one.
    next: u64,
    /// A task is sending.
    sending: bool,
}

impl Notifier {
    pub(crate) fn new(pool: Pool, channel: String) -> Arc<Notifier> {
        Arc::new(Notifier {
            pool,
            channel,
            state: Mutex::new(State {
                pending: Vec::new(),
                next: 1,
                sending: false,
            }),
            sent: watch::channel(0).0,
        })
    }

    /// Waits until every wake-up queued before this call has been sent (or has failed).
    pub(crate) async fn sent(&self) {
        let target = {
            let state = self.state.lock().expect("notifier poisoned");
            // Queued but not taken: the next send carries them. Nothing queued: what was
            // queued before is in the send under way, or already sent.
            if state.pending.is_empty() {
                state.next - 1
            } else {
                state.next
            }
        };
        let mut sent = self.sent.subscribe();
        // The sender lives as long as `self`.
        let _ = sent.wait_for(|&done| done >= target).await;
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
            let (queues, generation) = {
                let mut state = self.state.lock().expect("notifier poisoned");
                if state.pending.is_empty() {
                    state.sending = false;
                    return;
                }
                let generation = state.next;
                state.next += 1;
                (std::mem::take(&mut state.pending), generation)
            };
            let payloads = wake::payloads(queues.iter().map(String::as_str));
            if let Err(error) = self.send(&payloads).await {
                // The jobs are committed: other processes find them at their next poll.
                tracing::warn!(%error, queues = ?queues,
                    "cannot send the wake-up of committed enqueues; other processes will find \
                     the jobs at their next poll");
            }
            self.sent.send_replace(generation);
        }
    }

    async fn send(&self, payloads: &[String]) -> Result<(), String> {
        let client = self.pool.get().await.map_err(|err| err.to_string())?;
        let db = Db::new(&client, Some(client.statement_cache.as_ref()));
        wake::notify(&db, &self.channel, payloads)
            .await
            .map_err(|err| err.into_store().to_string())
    }
}
