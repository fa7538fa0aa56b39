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
//!
//! While it is down nothing fails — jobs are still claimed, on the engine's slow poll — so it
//! reports what it is doing ([`Listener::health`]): when it last proved itself working, and
//! since when and why it has not been. The engine puts that in its health report. The task is
//! supervised ([`keep_running`]): if it panics, it is logged as an error, reported down, and
//! started again after a pause.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_core::{BackgroundHealth, Outage, Wakeups};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::error::describe;
use crate::tls::RustlsConnect;

/// First pause after a failed connection; it doubles up to the configured maximum.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// How long the periodic check may take before the connection is deemed dead.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener's name in the health report.
pub(crate) const NAME: &str = "postgres listener";

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
    status: Arc<Status>,
    check_interval: Duration,
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
        let status = Arc::new(Status::default());
        let wait = settings.connect_timeout * 2 + Duration::from_secs(1);
        let check_interval = settings.check_interval;
        let task = {
            let (connections, status) = (connections.clone(), status.clone());
            let ready = Mutex::new(Some(ready_tx));
            tokio::spawn(keep_running(stop_rx.clone(), status.clone(), move || {
                run(
                    pg.clone(),
                    settings.clone(),
                    wakeups.clone(),
                    stop_rx.clone(),
                    // Only the first run answers `start`; a restarted one has nobody waiting.
                    ready.lock().expect("ready lock poisoned").take(),
                    connections.clone(),
                    status.clone(),
                )
            }))
        };
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
                status,
                check_interval,
            },
            ready,
        )
    }

    /// How many times the listener has connected and started listening.
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    /// What the listener is doing, for the engine's health report.
    pub(crate) fn health(&self) -> BackgroundHealth {
        let (last_ok, outage) = self.status.read();
        BackgroundHealth {
            name: NAME.to_owned(),
            expected_every: self.check_interval,
            last_ok_ago: last_ok.map(|at| at.elapsed()),
            outage: outage.map(|(since, reason)| Outage {
                for_: since.elapsed(),
                reason,
            }),
        }
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

/// What the listener last did: when it last proved itself working, and since when (and why) it
/// has not been. Written by the task, read by [`Listener::health`].
#[derive(Debug, Default)]
struct Status(Mutex<StatusInner>);

#[derive(Debug, Default)]
struct StatusInner {
    last_ok: Option<Instant>,
    /// Since when, and the latest reason.
    outage: Option<(Instant, String)>,
}

impl Status {
    fn ok(&self) {
        let mut inner = self.0.lock().expect("listener status lock poisoned");
        inner.last_ok = Some(Instant::now());
        inner.outage = None;
    }

    /// Records a failure; an outage already going on keeps its start.
    fn down(&self, reason: String) {
        let mut inner = self.0.lock().expect("listener status lock poisoned");
        match &mut inner.outage {
            Some((_, last)) => *last = reason,
            None => inner.outage = Some((Instant::now(), reason)),
        }
    }

    fn read(&self) -> (Option<Instant>, Option<(Instant, String)>) {
        let inner = self.0.lock().expect("listener status lock poisoned");
        (inner.last_ok, inner.outage.clone())
    }
}

/// Runs the task that `make` returns until it ends (it ends only when stopped); when it panics,
/// logs an error, reports the listener down, and starts a new one after a pause that doubles
/// from [`MIN_BACKOFF`] up to 30 s. A panic is a bug, but a process without its listener still
/// works (on the slow poll), so restarting beats taking the whole process down.
async fn keep_running<F>(
    mut stop: watch::Receiver<bool>,
    status: Arc<Status>,
    mut make: impl FnMut() -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let mut pause = MIN_BACKOFF;
    loop {
        let task = tokio::spawn(make());
        // Aborting this supervisor (the store's close does, when the task does not stop in
        // time) must not leave the task behind.
        let _abort = AbortOnDrop(task.abort_handle());
        let why = match task.await {
            Ok(()) => return,
            Err(err) if err.is_panic() => panic_text(err.into_panic()),
            Err(_) => return,
        };
        tracing::error!(reason = %why, retry_in = ?pause,
            "the PostgreSQL listener task panicked; starting it again");
        status.down(format!("the listener task panicked: {why}"));
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[allow(clippy::too_many_arguments)] // one task's whole context, taken apart once
async fn run(
    pg: tokio_postgres::Config,
    settings: ListenerSettings,
    wakeups: Wakeups,
    mut stop: watch::Receiver<bool>,
    ready: Option<oneshot::Sender<Result<(), String>>>,
    connections: Arc<AtomicU64>,
    status: Arc<Status>,
) {
    // A run started again after a panic has nobody waiting, and wakes the engine once it
    // listens, like any reconnection.
    let mut first = ready.is_some();
    let mut ready = ready;
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
                status.ok();
                // The count goes up before `start` returns, and after the wake-up of a
                // reconnection (so a caller that saw the count go up saw that wake-up too).
                if !std::mem::take(&mut first) {
                    tracing::info!(channel = %settings.channel,
                        "PostgreSQL listener reconnected");
                    // Cover the notifications lost while it was down.
                    wakeups.wake();
                }
                connections.fetch_add(1, Ordering::AcqRel);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                }
                match session
                    .serve(&mut stop, settings.check_interval, &status)
                    .await
                {
                    None => {
                        session.close().await;
                        return;
                    }
                    Some(reason) => {
                        tracing::warn!(channel = %settings.channel, %reason,
                            "PostgreSQL listener lost its connection; reconnecting");
                        status.down(format!("lost its connection: {reason}"));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(channel = %settings.channel, %error, retry_in = ?backoff,
                    "PostgreSQL listener cannot connect");
                status.down(format!("cannot connect: {error}"));
                first = false;
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
    /// Aborts the driver when the session is dropped without [`Session::close`].
    _abort: AbortOnDrop,
}

impl Session {
    /// Ends the session cleanly: once its client is gone, the driver sends the server a
    /// Terminate message (and, over TLS, a close_notify) and ends; an aborted driver would
    /// leave the server to log a connection reset. Waits a second at most.
    async fn close(self) {
        let Session { client, driver, .. } = self;
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(1), driver).await;
    }

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
            _abort: AbortOnDrop(driver.abort_handle()),
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
        status: &Status,
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
                        Ok(Ok(_)) => status.ok(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_down_and_started_again() {
        let (stop, stop_rx) = watch::channel(false);
        let status = Arc::new(Status::default());
        let runs = Arc::new(AtomicU64::new(0));
        let supervisor = tokio::spawn(keep_running(stop_rx.clone(), status.clone(), {
            let runs = runs.clone();
            move || {
                let n = runs.fetch_add(1, Ordering::AcqRel);
                let mut stop = stop_rx.clone();
                async move {
                    assert!(n > 0, "listener bug");
                    let _ = stop.changed().await;
                }
            }
        }));
        let deadline = Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::Acquire) < 2 {
            assert!(Instant::now() < deadline, "never started again");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (last_ok, outage) = status.read();
        assert!(last_ok.is_none());
        let (_, reason) = outage.expect("reported down");
        assert!(reason.contains("panicked: listener bug"), "{reason}");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), supervisor)
            .await
            .expect("the supervisor stops when asked")
            .unwrap();
        assert_eq!(runs.load(Ordering::Acquire), 2);
    }
}
