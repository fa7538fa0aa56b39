//! Workers in any language: the pull protocol behind the HTTP API's `/api/v1/leases`.
//!
//! A remote worker leases jobs (long-polling, woken by the engine's own wake-ups), heartbeats
//! them, and completes, fails or hands them back by their lease token. The token is the fence,
//! exactly as for a local worker: every write is conditional on the job
//! still running under that token, so a worker that stalled past its lease, or was killed and
//! replayed, changes nothing. Repeating the same call with the same token is answered as the
//! first was (the network may lose an answer); only a lost lease is refused.
//!
//! ```text
//!  lease ──► running ──heartbeat──► running ──complete / fail / hand back──► recorded
//!              │                                                               ▲
//!              └── lease not renewed: expires; the rescuer takes the job ──────┘ (token now stale)
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_core::{
    Clock, Delivery, DynStore, JobClaimParams, JobFinishParams, JobHeartbeatParams, JobId,
    JobOutcome, JobState, LeaseRef, Outcome, RetryPolicy, StoreError, ValidationError,
};
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::hooks::Hooks;
use crate::metrics::Metrics;

mod outcomes;
mod seen;

pub use seen::HttpWorkerView;

/// Longest a lease request may wait for work.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Most jobs one lease request may take.
pub const MAX_LEASE: usize = 1000;
/// Most queues one lease request may name: each worker's queues are listed by every server.
pub const MAX_QUEUES: usize = 100;

/// A request for jobs.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// Queues to take jobs from, in order of preference.
    pub queues: Vec<String>,
    /// The worker's name, recorded as the lease owner (`remote:NAME`).
    pub worker: String,
    /// Most jobs to take.
    pub max: usize,
    /// How long to wait for work when none is available.
    pub wait: Duration,
}

impl LeaseRequest {
    /// Checks the request; the error names the field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.queues.is_empty() {
            return Err(ValidationError::Range {
                field: "queues",
                reason: "name at least one queue".into(),
            });
        }
        if self.queues.len() > MAX_QUEUES {
            return Err(ValidationError::Range {
                field: "queues",
                reason: format!(
                    "{} queues is over the limit of {MAX_QUEUES}",
                    self.queues.len()
                ),
            });
        }
        for queue in &self.queues {
            drover_core::validate::check_name("queue", queue)?;
        }
        drover_core::validate::check_name("worker", &self.worker)?;
        if !(1..=MAX_LEASE).contains(&self.max) {
            return Err(ValidationError::Range {
                field: "max",
                reason: format!("{} is not between 1 and {MAX_LEASE}", self.max),
            });
        }
        if self.wait > MAX_WAIT {
            return Err(ValidationError::Range {
                field: "wait",
                reason: format!("{:?} is over the limit of {MAX_WAIT:?}", self.wait),
            });
        }
        Ok(())
    }
}

/// A job handed to a remote worker.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeasedJob {
    /// The lease token: every later call about this run names it.
    pub token: String,
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its args, as stored: every digit of a number kept (a `Value` would turn an integer
    /// beyond 64 bits into a float).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub args: drover_core::JobArgs,
    /// This attempt's number (1 for the first run).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// When the lease expires unless renewed by a heartbeat.
    pub lease_expires_at: Timestamp,
    /// How long a lease (and each renewal) lasts: heartbeat well within it, every third.
    pub lease_seconds: f64,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HeartbeatAnswer {
    /// True when an operator asked to cancel the job: stop, then report it with `fail`.
    pub cancel_requested: bool,
    /// When the lease now expires.
    pub lease_expires_at: Timestamp,
}

/// How a run failed.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    /// What went wrong.
    pub error: String,
    /// The step it failed in.
    pub step: Option<String>,
    /// Run again after this long (default: the retry policy's backoff).
    pub retry_in: Option<Duration>,
    /// Give up now, whatever attempts are left.
    pub discard: bool,
}

/// The longest failure message kept per attempt: a longer one keeps its start (the message,
/// before any trace), with a note of how much was cut. Every attempt's error stays in the job's
/// row, so a worker sending megabytes per failure would grow it by that much each time.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// `error`, cut to [`MAX_ERROR_BYTES`] at a character boundary.
fn clip(mut error: String) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error;
    }
    let total = error.len();
    let mut end = MAX_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error.truncate(end);
    error.push_str(&format!(" [… {end} of {total} bytes kept]"));
    error
}

/// What was recorded.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Recorded {
    /// The job.
    pub id: JobId,
    /// Its state now.
    pub state: JobState,
    /// True when this call repeated one already recorded (nothing changed this time).
    pub repeated: bool,
}

/// What this process knows of a lease it handed out: for metrics and busy counts only. The
/// database, not this map, decides whether a lease holds.
struct Held {
    /// The worker's name, as it leased.
    worker: Arc<str>,
    queue: String,
    kind: String,
    attempt: i32,
    max_attempts: i32,
    delivery: Delivery,
    claimed: Instant,
    expires: Instant,
    /// The step the last heartbeat reported, for the job-end hooks.
    step: Option<String>,
}

/// The remote-worker protocol over one store. Cheap to clone.
#[derive(Clone)]
pub struct RemoteWorkers {
    store: DynStore,
    clock: Arc<dyn Clock>,
    lease: Duration,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    held: Arc<Mutex<HashMap<(JobId, i64), Held>>>,
    polls: Arc<Polls>,
    shared_queues: Arc<SharedQueues>,
    seen: Arc<seen::Seen>,
    /// The job-end hooks of the process: a run an HTTP worker ends runs them here.
    hooks: Option<Arc<Hooks>>,
}

/// The queues this process's own workers also work, and those a lease was already warned about.
#[derive(Default)]
struct SharedQueues {
    local: std::collections::BTreeSet<String>,
    warned: Mutex<std::collections::HashSet<String>>,
}

impl SharedQueues {
    /// Warns, once per queue, when a remote worker leases from a queue the local workers take
    /// jobs from too: they discard the kinds they have no task for, which are most often the
    /// very kinds the remote worker is there for.
    fn warn_once(&self, request: &LeaseRequest) {
        for queue in request.queues.iter().filter(|q| self.local.contains(*q)) {
            if self
                .warned
                .lock()
                .expect("warned queues poisoned")
                .insert(queue.clone())
            {
                tracing::warn!(
                    queue = %queue,
                    worker = %request.worker,
                    "an HTTP worker leases from queue {queue:?}, which this process's own \
                     workers also take jobs from: they discard as unknown every kind they have \
                     no task for. Keep HTTP workers' queues out of this process's queues"
                );
            }
        }
    }
}

/// Long polls in flight, by worker name, so that a worker that is stopping can end its own
/// poll at once ([`RemoteWorkers::wake`]) instead of waiting out `wait`. Ending the poll from
/// the server, rather than by closing the connection, keeps every leased job delivered: a poll
/// that claimed jobs answers with them, and the worker hands them back.
#[derive(Default)]
struct Polls {
    by_worker: Mutex<HashMap<String, Poll>>,
}

struct Poll {
    /// Polls of this worker name waiting now.
    waiting: usize,
    /// Bumped by a wake-up.
    wake: watch::Sender<u64>,
}

/// Counts a poll as waiting until dropped.
struct PollGuard<'a> {
    polls: &'a Polls,
    worker: String,
}

impl Polls {
    fn enter(&self, worker: &str) -> (PollGuard<'_>, watch::Receiver<u64>) {
        let mut by_worker = self.by_worker.lock().expect("poll map poisoned");
        let poll = by_worker.entry(worker.to_owned()).or_insert_with(|| Poll {
            waiting: 0,
            wake: watch::channel(0).0,
        });
        poll.waiting += 1;
        let mut woken = poll.wake.subscribe();
        woken.borrow_and_update();
        (
            PollGuard {
                polls: self,
                worker: worker.to_owned(),
            },
            woken,
        )
    }

    fn wake(&self, worker: &str) -> usize {
        let by_worker = self.by_worker.lock().expect("poll map poisoned");
        match by_worker.get(worker) {
            Some(poll) => {
                poll.wake.send_modify(|n| *n += 1);
                poll.waiting
            }
            None => 0,
        }
    }
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        let mut by_worker = self.polls.by_worker.lock().expect("poll map poisoned");
        if let Some(poll) = by_worker.get_mut(&self.worker) {
            poll.waiting -= 1;
            if poll.waiting == 0 {
                by_worker.remove(&self.worker);
            }
        }
    }
}

impl std::fmt::Debug for RemoteWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWorkers")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Parses a lease token (`ID.TOKEN`).
pub fn parse_token(token: &str) -> Result<LeaseRef, ValidationError> {
    let invalid = || ValidationError::Range {
        field: "token",
        reason: "not a lease token (expected ID.TOKEN as handed out by a lease)".into(),
    };
    let (id, lease_token) = token.split_once('.').ok_or_else(invalid)?;
    Ok(LeaseRef {
        id: id.parse().map_err(|_| invalid())?,
        lease_token: lease_token.parse().map_err(|_| invalid())?,
    })
}

/// A batch of lease tokens, at most [`MAX_LEASE`], each checked.
fn parse_tokens(tokens: &[String]) -> Result<Vec<LeaseRef>, Error> {
    if tokens.len() > MAX_LEASE {
        return Err(Error::Invalid(ValidationError::BatchTooLarge {
            field: "tokens",
            size: tokens.len(),
            limit: MAX_LEASE,
        }));
    }
    Ok(tokens
        .iter()
        .map(|t| parse_token(t))
        .collect::<Result<Vec<_>, _>>()?)
}

fn token_of(lease: &LeaseRef) -> String {
    format!("{}.{}", lease.id, lease.lease_token)
}

impl RemoteWorkers {
    /// The protocol over `store`; leases last `lease` unless renewed.
    pub fn new(
        store: DynStore,
        clock: Arc<dyn Clock>,
        lease: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            clock,
            lease,
            retry: RetryPolicy::default(),
            metrics,
            held: Arc::default(),
            polls: Arc::default(),
            shared_queues: Arc::default(),
            seen: Arc::default(),
            hooks: None,
        }
    }

    /// Runs `hooks` when an HTTP worker's outcome ends a job, as the process's own workers'
    /// outcomes do.
    pub(crate) fn with_hooks(mut self, hooks: Arc<Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Names the queues this process's own workers work, so that a lease from one of them is
    /// warned about (once per queue) in the log.
    pub fn with_local_queues(mut self, queues: impl IntoIterator<Item = String>) -> Self {
        self.shared_queues = Arc::new(SharedQueues {
            local: queues.into_iter().collect(),
            warned: Mutex::default(),
        });
        self
    }

    /// When a lease taken or renewed at `now` expires.
    fn expiry_from(&self, now: Timestamp) -> Timestamp {
        jiff::SignedDuration::try_from(self.lease)
            .ok()
            .and_then(|lease| now.checked_add(lease).ok())
            .unwrap_or(now)
    }

    /// Leases held by remote workers through this process (expired ones not counted).
    pub fn busy(&self) -> usize {
        let now = Instant::now();
        let mut held = self.held.lock().expect("lease map poisoned");
        held.retain(|_, h| h.expires + self.lease > now);
        held.values().filter(|h| h.expires > now).count()
    }

    /// The HTTP workers heard from lately (see [`HttpWorkerView`]), by name.
    pub fn http_workers(&self) -> Vec<drover_core::HttpWorkerRecord> {
        let now = Instant::now();
        let mut running: HashMap<String, usize> = HashMap::new();
        for held in self.held.lock().expect("lease map poisoned").values() {
            if held.expires > now {
                *running.entry(held.worker.to_string()).or_default() += 1;
            }
        }
        self.seen.list(&running)
    }

    /// Takes up to `max` jobs, waiting up to `wait` for some to become available. Returns
    /// empty when none came in time, or when `stop` fires (the server is shutting down).
    pub async fn lease(
        &self,
        request: LeaseRequest,
        stop: &CancellationToken,
    ) -> Result<Vec<LeasedJob>, Error> {
        request.validate()?;
        self.shared_queues.warn_once(&request);
        self.seen
            .lease_requested(&request.worker, &request.queues, self.clock.now());
        let deadline = tokio::time::Instant::now() + request.wait;
        let owner = format!("remote:{}", request.worker);
        let mut wakeups = self.store.wakeups();
        // Registered before the first claim, so that a wake-up sent while it runs is not lost.
        let (_poll, mut woken) = self.polls.enter(&request.worker);
        loop {
            wakeups.borrow_and_update();
            let (jobs, next_due_at) = self.claim(&request, &owner).await?;
            if !jobs.is_empty() {
                return Ok(jobs);
            }
            // A scheduled or retried job coming due wakes nobody: the claim said when the next
            // one will be, and the wait ends then, as a local foreman's does.
            let due = next_due_at.map(|at| crate::foreman::due_instant(&*self.clock, at));
            tokio::select! {
                changed = wakeups.changed() => {
                    if changed.is_err() {
                        return Ok(Vec::new());
                    }
                }
                _ = crate::foreman::sleep_until(due) => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                _ = stop.cancelled() => return Ok(Vec::new()),
                _ = woken.changed() => return Ok(Vec::new()),
            }
        }
    }

    /// Ends the long polls of `worker` that wait now (they answer with no job), for a worker
    /// that is stopping. Returns how many were waiting; 0 when none was (nothing to do).
    pub fn wake(&self, worker: &str) -> Result<usize, Error> {
        drover_core::validate::check_name("worker", worker)?;
        Ok(self.polls.wake(worker))
    }

    /// Claims for `request`, queue by queue; the jobs, and when the next job not yet due in
    /// those queues will be.
    async fn claim(
        &self,
        request: &LeaseRequest,
        owner: &str,
    ) -> Result<(Vec<LeasedJob>, Option<Timestamp>), Error> {
        let mut out = Vec::new();
        let mut next_due_at: Option<Timestamp> = None;
        for queue in &request.queues {
            let want = request.max - out.len();
            if want == 0 {
                break;
            }
            let claimed = self
                .store
                .job_claim(JobClaimParams {
                    queue: queue.clone(),
                    limit: want,
                    owner: owner.to_owned(),
                    lease: self.lease,
                    now: self.clock.store_now(),
                })
                .await?;
            if let Some(at) = claimed.next_due_at {
                next_due_at = Some(next_due_at.map_or(at, |next| next.min(at)));
            }
            let now = self.clock.now();
            let expires_at = self.expiry_from(now);
            let worker: Arc<str> = Arc::from(request.worker.as_str());
            let mut held = self.held.lock().expect("lease map poisoned");
            for job in claimed.jobs {
                self.metrics
                    .waited(&job.queue, &job.kind, job.created_at, now);
                let lease = LeaseRef {
                    id: job.id,
                    lease_token: job.lease_token,
                };
                held.insert(
                    (job.id, job.lease_token),
                    Held {
                        worker: worker.clone(),
                        queue: job.queue.clone(),
                        kind: job.kind.clone(),
                        attempt: job.attempt,
                        max_attempts: job.max_attempts,
                        delivery: job.delivery,
                        claimed: Instant::now(),
                        expires: Instant::now() + self.lease,
                        step: None,
                    },
                );
                // Args were checked as a JSON object at enqueue: only a hand-edited row gets
                // `{}` here.
                let args = drover_core::JobArgs::from_text(job.args).unwrap_or_default();
                out.push(LeasedJob {
                    token: token_of(&lease),
                    id: job.id,
                    kind: job.kind,
                    queue: job.queue,
                    args,
                    attempt: job.attempt,
                    max_attempts: job.max_attempts,
                    lease_expires_at: expires_at,
                    lease_seconds: self.lease.as_secs_f64(),
                });
            }
        }
        Ok((out, next_due_at))
    }

    /// Renews a lease, recording the step the run has reached.
    pub async fn heartbeat(
        &self,
        token: &str,
        step: Option<String>,
    ) -> Result<HeartbeatAnswer, Error> {
        let lease = parse_token(token)?;
        let status = self
            .store
            .job_heartbeat(JobHeartbeatParams {
                leases: vec![(lease.clone(), step.clone())],
                lease: self.lease,
                now: self.clock.store_now(),
            })
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Internal("heartbeat returned nothing".into()))?;
        if !status.held {
            // A lost heartbeat is rare, so the lookup that tells a token of a job that is
            // not there (a mistyped token) from a lease that ran out costs next to nothing; it
            // is answered as an outcome for such a token is.
            if let Ok(None) = self.store.job_get(lease.id).await {
                return Err(Error::Store(StoreError::NotFound(lease.id)));
            }
            return Err(Error::LeaseLost(format!(
                "job {} is no longer running under this lease (it expired and was rescued, or \
                 the run was already recorded)",
                lease.id
            )));
        }
        if let Some(held) = self
            .held
            .lock()
            .expect("lease map poisoned")
            .get_mut(&(lease.id, lease.lease_token))
        {
            held.expires = Instant::now() + self.lease;
            if step.is_some() {
                held.step = step;
            }
        }
        Ok(HeartbeatAnswer {
            cancel_requested: status.cancel_requested,
            lease_expires_at: self.expiry_from(self.clock.now()),
        })
    }

    /// Which of `tokens` belong to jobs an operator asked to cancel: a cheap read (nothing is
    /// renewed), so that a worker can ask every second or so and stop a cancelled run long
    /// before its next heartbeat.
    pub async fn cancel_requested(&self, tokens: &[String]) -> Result<Vec<String>, Error> {
        let leases = parse_tokens(tokens)?;
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let cancelled = self
            .store
            .job_cancel_requested(leases.iter().map(|lease| lease.id).collect())
            .await?;
        Ok(leases
            .iter()
            .zip(tokens)
            .filter(|(lease, _)| cancelled.contains(&lease.id))
            .map(|(_, token)| token.clone())
            .collect())
    }

    /// Records that the run succeeded.
    pub async fn complete(&self, token: &str, step: Option<String>) -> Result<Recorded, Error> {
        let lease = parse_token(token)?;
        self.record(lease, step, Outcome::Completed).await
    }

    /// Records that many runs succeeded, in one store call: one result per token, in order (a
    /// lost lease is an `Err` for that token only).
    pub async fn complete_many(
        &self,
        tokens: &[String],
    ) -> Result<Vec<Result<Recorded, Error>>, Error> {
        let leases = parse_tokens(tokens)?;
        let outcomes = leases
            .iter()
            .map(|lease| JobOutcome::completed(lease.clone()))
            .collect();
        let results = self
            .store
            .job_finish_many(JobFinishParams {
                outcomes,
                now: self.clock.store_now(),
            })
            .await?;
        let settled = leases
            .into_iter()
            .zip(results)
            .map(|(lease, result)| self.settle(lease, &Outcome::Completed, result))
            .collect::<Vec<_>>();
        Ok(settled
            .into_iter()
            .map(|(answer, held)| {
                if let Ok(recorded) = &answer {
                    self.announce(recorded, held, &Outcome::Completed, None);
                }
                answer
            })
            .collect())
    }

    /// Records a failed attempt: retried with backoff while attempts are left, else discarded;
    /// a job whose cancel was requested is recorded as cancelled.
    pub async fn fail(&self, token: &str, mut failure: Failure) -> Result<Recorded, Error> {
        let lease = parse_token(token)?;
        failure.error = clip(failure.error);
        if failure.error.is_empty() {
            return Err(Error::Invalid(ValidationError::Range {
                field: "error",
                reason: "say what went wrong".into(),
            }));
        }
        let (attempt, max_attempts) = match self.known(&lease) {
            Some((attempt, max, _)) => (attempt, max),
            None => {
                let job = self
                    .store
                    .job_get(lease.id)
                    .await?
                    .ok_or(StoreError::NotFound(lease.id))?;
                (job.attempt, job.max_attempts)
            }
        };
        let cancelled = self
            .store
            .job_cancel_requested(vec![lease.id])
            .await?
            .contains(&lease.id);
        let outcome = if cancelled {
            Outcome::Cancelled {
                error: Some(failure.error),
            }
        } else if failure.discard || attempt >= max_attempts {
            Outcome::Discard {
                error: failure.error,
            }
        } else {
            Outcome::Retry {
                error: failure.error,
                delay: failure
                    .retry_in
                    .unwrap_or_else(|| self.retry.random_delay(attempt)),
            }
        };
        self.record(lease, failure.step, outcome).await
    }

    /// Gives an unfinished run back (the worker is stopping): available again without using the
    /// attempt. An at-most-once job that had started is discarded instead, as for local workers.
    pub async fn hand_back(&self, token: &str, started: bool) -> Result<Recorded, Error> {
        let lease = parse_token(token)?;
        let at_most_once = self
            .known(&lease)
            .is_some_and(|(_, _, delivery)| delivery == Delivery::AtMostOnce);
        let outcome = if started && at_most_once {
            Outcome::Discard {
                error: "interrupted by a remote worker's shutdown; at-most-once jobs are never \
                        run again"
                    .into(),
            }
        } else {
            Outcome::HandBack {
                reason: "handed back by a stopping remote worker".into(),
            }
        };
        self.record(lease, None, outcome).await
    }

    fn known(&self, lease: &LeaseRef) -> Option<(i32, i32, Delivery)> {
        self.held
            .lock()
            .expect("lease map poisoned")
            .get(&(lease.id, lease.lease_token))
            .map(|h| (h.attempt, h.max_attempts, h.delivery))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_request_names_at_most_a_hundred_queues() {
        let request = |n: usize| LeaseRequest {
            queues: (0..n).map(|i| format!("q{i}")).collect(),
            worker: "w".into(),
            max: 1,
            wait: Duration::ZERO,
        };
        assert!(request(MAX_QUEUES).validate().is_ok());
        let err = request(MAX_QUEUES + 1).validate().unwrap_err();
        assert!(err.to_string().contains("queues"), "{err}");
    }

    #[test]
    fn a_long_failure_keeps_its_start() {
        assert_eq!(clip("short".into()), "short");
        let long = format!("ValueError: bad input {}", "é".repeat(MAX_ERROR_BYTES));
        let clipped = clip(long.clone());
        assert!(clipped.starts_with("ValueError: bad input"));
        assert!(clipped.len() < MAX_ERROR_BYTES + 64, "{}", clipped.len());
        assert!(clipped.ends_with(&format!("of {} bytes kept]", long.len())));
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let lease = LeaseRef {
            id: 42,
            lease_token: -7,
        };
        assert_eq!(parse_token(&token_of(&lease)).unwrap(), lease);
        for bad in ["", "42", "42.", ".7", "a.b", "1.2.3"] {
            assert!(parse_token(bad).is_err(), "{bad:?}");
        }
    }
}
