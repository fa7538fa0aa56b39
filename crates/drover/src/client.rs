//! Enqueuing jobs: single or bulk, validated at the edge, acknowledged only once committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drover_core::{
    Clock, Delivery, DynStore, InsertedJob, JobInsertParams, Limits, NewJob, ValidationError,
};
use jiff::Timestamp;
use serde::Serialize;

use crate::error::Error;
use crate::task::TaskOptions;

/// One job to enqueue. Unset options come from the task's [`TaskOptions`] when the client knows
/// the kind, else from the defaults of [`NewJob::new`].
#[derive(Debug, Clone, Default)]
pub struct EnqueueRequest {
    /// Task kind.
    pub kind: String,
    /// Args: the text of a JSON object.
    pub args: String,
    /// Queue.
    pub queue: Option<String>,
    /// Priority: higher runs first.
    pub priority: Option<i32>,
    /// Attempts before the job is discarded.
    pub max_attempts: Option<i32>,
    /// Run at this time.
    pub run_at: Option<Timestamp>,
    /// Run after this delay (ignored when `run_at` is set).
    pub delay: Option<Duration>,
    /// Uniqueness key.
    pub unique_key: Option<String>,
    /// Delivery guarantee.
    pub delivery: Option<Delivery>,
}

impl EnqueueRequest {
    /// A job of `kind` with args serialized from `args` (which must serialize to an object).
    pub fn new(kind: impl Into<String>, args: &impl Serialize) -> Result<Self, Error> {
        let args = serde_json::to_string(args)
            .map_err(|err| ValidationError::Args(format!("cannot serialize args: {err}")))?;
        Ok(Self::raw(kind, args))
    }

    /// A job of `kind` with args given as JSON text.
    pub fn raw(kind: impl Into<String>, args: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            args: args.into(),
            ..Self::default()
        }
    }

    /// Sets the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets the attempts allowed.
    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Runs the job at `at`.
    pub fn run_at(mut self, at: Timestamp) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Runs the job after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sets the uniqueness key.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Sets the delivery guarantee.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = Some(delivery);
        self
    }
}

/// Turns requests into validated jobs: applies per-kind defaults and the input limits. Needs no
/// database, so that bad input is refused before one is opened.
#[derive(Clone)]
pub struct JobDefaults {
    clock: Arc<dyn Clock>,
    limits: Limits,
    defaults: Arc<HashMap<String, TaskOptions>>,
}

impl std::fmt::Debug for JobDefaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobDefaults")
            .field("limits", &self.limits)
            .field("kinds", &self.defaults.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl JobDefaults {
    /// `defaults` holds per-kind options applied to requests that leave them unset.
    pub fn new(
        clock: Arc<dyn Clock>,
        limits: Limits,
        defaults: HashMap<String, TaskOptions>,
    ) -> Self {
        Self {
            clock,
            limits,
            defaults: Arc::new(defaults),
        }
    }

    /// The input limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The clock that scheduled times are computed from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The options of a kind this process knows (its tasks), if any.
    pub fn task_options(&self, kind: &str) -> Option<&TaskOptions> {
        self.defaults.get(kind)
    }

    /// Turns a request into a validated job, applying defaults. Stores nothing.
    pub fn prepare(&self, request: EnqueueRequest) -> Result<NewJob, ValidationError> {
        let defaults = self.defaults.get(&request.kind);
        let mut job = NewJob::new(request.kind, request.args);
        if let Some(options) = defaults {
            job.queue = options.queue.clone();
            job.max_attempts = options.max_attempts;
            job.delivery = options.delivery;
        }
        if let Some(queue) = request.queue {
            job.queue = queue;
        }
        if let Some(priority) = request.priority {
            job.priority = priority;
        }
        if let Some(max_attempts) = request.max_attempts {
            job.max_attempts = max_attempts;
        }
        if let Some(delivery) = request.delivery {
            job.delivery = delivery;
        }
        job.unique_key = request.unique_key;
        let too_long = || ValidationError::Range {
            field: "delay",
            reason: "too long".into(),
        };
        job.scheduled_at = match (request.run_at, request.delay) {
            (Some(at), _) => Some(at),
            (None, Some(delay)) => {
                let delay = jiff::SignedDuration::try_from(delay).map_err(|_| too_long())?;
                Some(
                    self.clock
                        .now()
                        .checked_add(delay)
                        .map_err(|_| too_long())?,
                )
            }
            (None, None) => None,
        };
        self.limits.check_job(&job)?;
        crate::builtin::check_args(&job.kind, &job.args)?;
        Ok(job)
    }
}

/// Enqueues jobs. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    store: DynStore,
    defaults: JobDefaults,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("backend", &self.store.backend())
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client on `store`. `defaults` holds per-kind options applied to requests that leave
    /// them unset.
    pub fn new(
        store: DynStore,
        clock: Arc<dyn Clock>,
        limits: Limits,
        defaults: HashMap<String, TaskOptions>,
    ) -> Self {
        Self::with_defaults(store, JobDefaults::new(clock, limits, defaults))
    }

    /// A client on `store` with prepared defaults.
    pub fn with_defaults(store: DynStore, defaults: JobDefaults) -> Self {
        Self { store, defaults }
    }

    /// The store this client writes to.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// Turns a request into a validated job, applying defaults. Stores nothing.
    pub fn prepare(&self, request: EnqueueRequest) -> Result<NewJob, ValidationError> {
        self.defaults.prepare(request)
    }

    /// Enqueues one job and returns once it is committed.
    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<InsertedJob, Error> {
        let job = self
            .prepare(request)
            .map_err(|error| Error::InvalidJob { index: None, error })?;
        Ok(self.insert(vec![job]).await?.remove(0))
    }

    /// Enqueues many jobs in one transaction: every job is validated first, and one bad job
    /// refuses the whole call with nothing stored.
    pub async fn enqueue_many(
        &self,
        requests: Vec<EnqueueRequest>,
    ) -> Result<Vec<InsertedJob>, Error> {
        self.defaults.limits.check_batch(requests.len())?;
        let jobs = requests
            .into_iter()
            .enumerate()
            .map(|(index, request)| {
                self.prepare(request).map_err(|error| Error::InvalidJob {
                    index: Some(index),
                    error,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.insert(jobs).await
    }

    /// Inserts jobs built by [`Client::prepare`] (or by hand): each is checked against the
    /// configured limits again, so no path stores a job the edge would refuse.
    pub async fn insert(&self, jobs: Vec<NewJob>) -> Result<Vec<InsertedJob>, Error> {
        self.defaults.limits.check_batch(jobs.len())?;
        for (index, job) in jobs.iter().enumerate() {
            self.defaults
                .limits
                .check_job(job)
                .map_err(|error| Error::InvalidJob {
                    index: Some(index),
                    error,
                })?;
        }
        Ok(self
            .store
            .job_insert_many(JobInsertParams {
                jobs,
                now: self.defaults.clock.store_now(),
            })
            .await?)
    }
}
