//! The listener: a task with a connection of its own (outside the pool, which would recycle it)
//! running `LISTEN` on the store's channel, bumping [`Wakeups`] on every notification.
//!
//! ```text
//!   connect ──► LISTEN ──► serve: notification → wake
//!      ▲                     │    every check interval: LISTEN again (a dead peer is noticed)
//!      │                     ▼
//!      └── backoff ◄── connection lost          stop signal / store dropped ──► exit
//! ```
//!
//! Notifications sent while the listener is down are lost, so after every reconnection it wakes
//! the engine once: whatever became available in the gap is then claimed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use drover_core::Wakeups;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::error::describe;
use crate::tls::RustlsConnect;

/// First pause after a failed connection; it doubles up to the configured maximum.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// How long the periodic check may take before the connection is deemed dead.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the listener task.
#[derive(Clone)]
pub(crate) struct ListenerSettings {
    pub(crate) channel: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) check_interval: Duration,
    pub(crate) tls: RustlsConnect,
}

/// A running listener. Dropping it (with the store) stops the task.
#[derive(Debug)]
pub(crate) struct Listener {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    connections: Arc<AtomicU64>,
}

impl Listener {
    /// Starts the task and waits until it listens, or its first attempt failed (it then keeps
    /// trying in the background; the error is returned for the caller to report).
    pub(crate) async fn start(
        pg: tokio_postgres::Config,
        settings: ListenerSettings,
        wakeups: Wakeups,
    ) -> (Listener, Result<(), String>) {
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel();
        let connections = Arc::new(AtomicU64::new(0));
        let wait = settings.connect_timeout * 2 + Duration::from_secs(1);
        let task = tokio::spawn(run(
            pg,
            settings,
            wakeups,
            stop_rx,
            ready_tx,
            connections.clone(),
        ));
        let ready = match tokio::time::timeout(wait, ready_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the listener task ended before listening".to_owned()),
            Err(_) => Err(format!("the listener was not listening within {wait:?}")),
        };
        (
            Listener {
                stop,
                task,
                connections,
            },
            ready,
        )
    }

    /// How many times the listener has connected and started listening.
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    /// Stops the task and waits (briefly) for it to close its connection.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

async fn run(
    pg: tokio_postgres::Config,
    settings: ListenerSettings,
    wakeups: Wakeups,
    mut stop: watch::Receiver<bool>,
    ready: oneshot::Sender<Result<(), String>>,
    connections: Arc<AtomicU64>,
) {
    let mut ready = Some(ready);
    let mut backoff = MIN_BACKOFF;
    loop {
        let opened = tokio::select! {
            biased;
            _ = stop.changed() => return,
            opened = Session::open(&pg, &settings, &wakeups) => opened,
        };
        match opened {
            Ok(mut session) => {
                backoff = MIN_BACKOFF;
                // The count goes up before `start` returns, and after the wake-up of a
                // reconnection (so a caller that saw the count go up saw that wake-up too).
                match ready.take() {
                    Some(ready) => {
                        connections.fetch_add(1, Ordering::AcqRel);
                        let _ = ready.send(Ok(()));
                    }
                    None => {
                        tracing::info!(channel = %settings.channel,
                            "PostgreSQL listener reconnected");
                        // Cover the notifications lost while it was down.
                        wakeups.wake();
                        connections.fetch_add(1, Ordering::AcqRel);
                    }
                }
                match session.serve(&mut stop, settings.check_interval).await {
                    None => return,
                    Some(reason) => tracing::warn!(channel = %settings.channel, %reason,
                        "PostgreSQL listener lost its connection; reconnecting"),
                }
            }
            Err(error) => {
                tracing::warn!(channel = %settings.channel, %error, retry_in = ?backoff,
                    "PostgreSQL listener cannot connect");
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(error));
                }
            }
        }
        // Up to a quarter more, so that processes cut off together do not reconnect in step.
        let jitter = backoff.mul_f64(fastrand::f64() / 4.0);
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tokio::time::sleep(backoff + jitter) => {}
        }
        backoff = (backoff * 2).min(settings.max_backoff.max(MIN_BACKOFF));
    }
}

/// One listening connection.
struct Session {
    client: tokio_postgres::Client,
    /// Drives the connection: the client's queries, and the notifications, which it turns into
    /// wake-ups. Ends when the connection does.
    driver: JoinHandle<Result<(), tokio_postgres::Error>>,
    /// `LISTEN <channel>`: also the periodic check. Listening again is a no-op, and it keeps
    /// the session's last query, as `pg_stat_activity` shows it, a `LISTEN`.
    listen: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Session {
    async fn open(
        pg: &tokio_postgres::Config,
        settings: &ListenerSettings,
        wakeups: &Wakeups,
    ) -> Result<Session, String> {
        let (client, mut connection) =
            tokio::time::timeout(settings.connect_timeout, pg.connect(settings.tls.clone()))
                .await
                .map_err(|_| format!("no connection within {:?}", settings.connect_timeout))?
                .map_err(|err| describe(&err))?;
        let wakeups = wakeups.clone();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(_))) => wakeups.wake(),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(err),
                    None => return Ok(()),
                }
            }
        });
        // The channel is `drover_wake` or `drover_wake_<checked plain identifier>`.
        let listen = format!("LISTEN {}", settings.channel);
        let session = Session {
            client,
            driver,
            listen,
        };
        tokio::time::timeout(
            settings.connect_timeout,
            session.client.batch_execute(&session.listen),
        )
        .await
        .map_err(|_| format!("LISTEN took longer than {:?}", settings.connect_timeout))?
        .map_err(|err| describe(&err))?;
        Ok(session)
    }

    /// Serves until the connection is lost (the reason) or the listener is stopped (`None`).
    async fn serve(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        check_interval: Duration,
    ) -> Option<String> {
        let mut checks = tokio::time::interval(check_interval.max(Duration::from_millis(100)));
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checks.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return None,
                ended = &mut self.driver => {
                    return Some(match ended {
                        Ok(Ok(())) => "the server closed the connection".to_owned(),
                        Ok(Err(err)) => describe(&err),
                        Err(err) => format!("the connection task failed: {err}"),
                    });
                }
                _ = checks.tick() => {
                    match tokio::time::timeout(CHECK_TIMEOUT, self.client.batch_execute(&self.listen))
                        .await
                    {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return Some(describe(&err)),
                        Err(_) => {
                            return Some(format!("no answer to a check within {CHECK_TIMEOUT:?}"));
                        }
                    }
                }
            }
        }
    }
}
