//! The cases. Each takes a fresh, migrated store and panics on a violation.

use std::time::Duration;

use drover_core::{
    CancelResult, Delivery, DynStore, JobCancelParams, JobClaimParams, JobFinishParams,
    JobHeartbeatParams, JobId, JobInsertParams, JobListParams, JobOutcome, JobPromoteParams,
    JobRescueParams, JobRetryParams, JobState, LeaseRef, NewJob, Outcome, StoreError,
};
use jiff::{SignedDuration, Timestamp};

/// The pinned start time of every case.
pub fn t0() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

pub(crate) fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

pub(crate) const LEASE: Duration = Duration::from_secs(30);

pub(crate) async fn insert(store: &DynStore, jobs: Vec<NewJob>, now: Timestamp) -> Vec<JobId> {
    store
        .job_insert_many(JobInsertParams {
            jobs,
            now: Some(now),
        })
        .await
        .expect("insert")
        .into_iter()
        .map(|job| job.id)
        .collect()
}

pub(crate) async fn insert_one(store: &DynStore, job: NewJob, now: Timestamp) -> JobId {
    insert(store, vec![job], now).await[0]
}

pub(crate) async fn claim(
    store: &DynStore,
    queue: &str,
    limit: usize,
    owner: &str,
    now: Timestamp,
) -> Vec<drover_core::ClaimedJob> {
    store
        .job_claim(JobClaimParams {
            queue: queue.into(),
            limit,
            owner: owner.into(),
            lease: LEASE,
            now: Some(now),
        })
        .await
        .expect("claim")
        .jobs
}

pub(crate) async fn finish(
    store: &DynStore,
    job: &drover_core::ClaimedJob,
    outcome: Outcome,
    now: Timestamp,
) -> drover_core::FinishResult {
    store
        .job_finish_many(JobFinishParams {
            outcomes: vec![JobOutcome {
                lease: lease(job),
                step: None,
                outcome,
            }],
            now: Some(now),
        })
        .await
        .expect("finish")[0]
}

pub(crate) fn lease(job: &drover_core::ClaimedJob) -> LeaseRef {
    LeaseRef {
        id: job.id,
        lease_token: job.lease_token,
    }
}

pub(crate) async fn get(store: &DynStore, id: JobId) -> drover_core::JobRecord {
    store.job_get(id).await.expect("get").expect("job exists")
}

pub(crate) async fn rescue(store: &DynStore, now: Timestamp) -> Vec<drover_core::RescuedJob> {
    store
        .job_rescue_expired(JobRescueParams {
            limit: 1000,
            now: Some(now),
        })
        .await
        .expect("rescue")
}

/// Migrating a migrated store applies nothing and keeps the data.
pub async fn migrate_is_idempotent(store: DynStore) {
    let id = insert_one(&store, NewJob::new("k", "{}"), t0()).await;
    let report = store.migrate().await.expect("migrate again");
    assert!(report.applied.is_empty(), "applied {:?}", report.applied);
    assert!(report.version >= 1);
    assert_eq!(get(&store, id).await.id, id);
}

/// Every field written by an insert comes back from a get.
pub async fn insert_then_get_round_trips_every_field(store: DynStore) {
    let job = NewJob {
        queue: "mail".into(),
        kind: "mail.send".into(),
        args: r#"{"to":"a@example.com","n":3}"#.into(),
        priority: 7,
        max_attempts: 4,
        scheduled_at: None,
        unique_key: Some("mail-1".into()),
        delivery: Delivery::AtMostOnce,
    };
    let inserted = store
        .job_insert_many(JobInsertParams {
            jobs: vec![job],
            now: Some(t0()),
        })
        .await
        .unwrap();
    assert_eq!(inserted.len(), 1);
    assert_eq!(inserted[0].state, JobState::Available);
    assert!(!inserted[0].duplicate);
    let record = get(&store, inserted[0].id).await;
    assert_eq!(record.queue, "mail");
    assert_eq!(record.kind, "mail.send");
    assert_eq!(
        record.args.value(),
        serde_json::json!({"to": "a@example.com", "n": 3})
    );
    assert_eq!(record.priority, 7);
    assert_eq!(record.max_attempts, 4);
    assert_eq!(record.attempt, 0);
    assert_eq!(record.delivery, Delivery::AtMostOnce);
    assert_eq!(record.unique_key.as_deref(), Some("mail-1"));
    assert_eq!(record.created_at, t0());
    assert_eq!(record.scheduled_at, t0());
    assert_eq!(record.state, JobState::Available);
    assert!(record.errors.is_empty());
    assert!(record.completed_at.is_none());
    assert!(
        store
            .job_get(inserted[0].id + 1000)
            .await
            .unwrap()
            .is_none()
    );
}

/// A bulk insert answers one result per job, in order, with increasing ids.
pub async fn bulk_insert_returns_ids_in_order(store: DynStore) {
    let jobs = (0..500)
        .map(|i| NewJob::new("bulk", format!(r#"{{"i":{i}}}"#)))
        .collect();
    let ids = insert(&store, jobs, t0()).await;
    assert_eq!(ids.len(), 500);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not increasing");
    let last = get(&store, ids[499]).await;
    assert_eq!(last.args.value(), serde_json::json!({"i": 499}));
}

/// A duplicate unique key returns the unfinished job and inserts nothing; once that job is
/// finished, the key is free again.
pub async fn unique_key_dedupes_only_while_unfinished(store: DynStore) {
    let mut job = NewJob::new("report", "{}");
    job.unique_key = Some("daily".into());
    let first = store
        .job_insert_many(JobInsertParams {
            jobs: vec![job.clone(), job.clone()],
            now: Some(t0()),
        })
        .await
        .unwrap();
    assert!(!first[0].duplicate);
    assert!(
        first[1].duplicate,
        "second of the same batch is a duplicate"
    );
    assert_eq!(first[0].id, first[1].id);
    let again = store
        .job_insert_many(JobInsertParams {
            jobs: vec![job.clone()],
            now: Some(at(1)),
        })
        .await
        .unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].id, first[0].id);

    let claimed = claim(&store, "default", 10, "w", at(2)).await;
    assert_eq!(claimed.len(), 1);
    let dup_running = insert_one(&store, job.clone(), at(3)).await;
    assert_eq!(
        dup_running, first[0].id,
        "a running job still holds its key"
    );
    assert!(
        finish(&store, &claimed[0], Outcome::Completed, at(4))
            .await
            .accepted
    );

    let fresh = store
        .job_insert_many(JobInsertParams {
            jobs: vec![job],
            now: Some(at(5)),
        })
        .await
        .unwrap();
    assert!(!fresh[0].duplicate);
    assert_ne!(fresh[0].id, first[0].id);
}

/// Claims take the highest priority first, then the oldest.
pub async fn claim_takes_highest_priority_then_oldest(store: DynStore) {
    let mut jobs = Vec::new();
    for (i, priority) in [0, 5, 0, 5, -1].into_iter().enumerate() {
        let mut job = NewJob::new("p", format!(r#"{{"i":{i}}}"#));
        job.priority = priority;
        jobs.push(job);
    }
    let ids = insert(&store, jobs, t0()).await;
    let claimed = claim(&store, "default", 10, "w", at(1)).await;
    let order: Vec<JobId> = claimed.iter().map(|j| j.id).collect();
    assert_eq!(order, vec![ids[1], ids[3], ids[0], ids[2], ids[4]]);
    assert!(claimed.iter().all(|j| j.attempt == 1));
    let record = get(&store, ids[0]).await;
    assert_eq!(record.state, JobState::Running);
    assert_eq!(record.lease_owner.as_deref(), Some("w"));
    assert_eq!(record.attempted_at, Some(at(1)));
    assert_eq!(record.lease_expires_at, Some(at(31)));
}

/// A claim never takes more than its limit, nor jobs of another queue, nor a job twice.
pub async fn claim_respects_limit_and_queue(store: DynStore) {
    let mut other = NewJob::new("k", "{}");
    other.queue = "other".into();
    insert(&store, vec![other], t0()).await;
    insert(
        &store,
        (0..5).map(|_| NewJob::new("k", "{}")).collect(),
        t0(),
    )
    .await;
    let a = claim(&store, "default", 3, "a", at(1)).await;
    let b = claim(&store, "default", 3, "b", at(1)).await;
    let c = claim(&store, "default", 3, "c", at(1)).await;
    assert_eq!((a.len(), b.len(), c.len()), (3, 2, 0));
    let mut ids: Vec<JobId> = a.iter().chain(&b).map(|j| j.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    assert!(a.iter().chain(&b).all(|j| j.queue == "default"));
    assert_eq!(claim(&store, "other", 0, "d", at(1)).await.len(), 0);
    assert_eq!(claim(&store, "other", 5, "d", at(1)).await.len(), 1);
}

/// A job scheduled for later is not claimed before its time; the claim says when it is due.
pub async fn scheduled_jobs_wait_until_due(store: DynStore) {
    let mut job = NewJob::new("later", "{}");
    job.scheduled_at = Some(at(60));
    let inserted = store
        .job_insert_many(JobInsertParams {
            jobs: vec![job],
            now: Some(t0()),
        })
        .await
        .unwrap();
    assert_eq!(inserted[0].state, JobState::Scheduled);
    let early = store
        .job_claim(JobClaimParams {
            queue: "default".into(),
            limit: 10,
            owner: "w".into(),
            lease: LEASE,
            now: Some(at(59)),
        })
        .await
        .unwrap();
    assert!(early.jobs.is_empty());
    assert_eq!(early.next_due_at, Some(at(60)));
    let due = claim(&store, "default", 10, "w", at(60)).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, inserted[0].id);
}

/// Due jobs of every queue become available without a claim, up to the limit and no further;
/// a job not due yet stays scheduled, and the workers are woken.
pub async fn due_jobs_of_every_queue_are_promoted(store: DynStore) {
    let scheduled = |queue: &str, secs| {
        let mut job = NewJob::new("later", "{}");
        job.queue = queue.into();
        job.scheduled_at = Some(at(secs));
        job
    };
    let jobs = vec![
        scheduled("a", 5),
        scheduled("b", 6),
        scheduled("b", 7),
        scheduled("a", 100),
    ];
    let ids = insert(&store, jobs, t0()).await;
    let promote = |limit, secs| JobPromoteParams {
        limit,
        now: Some(at(secs)),
    };
    assert_eq!(store.job_promote_due(promote(10, 4)).await.unwrap(), 0);
    let mut wakeups = store.wakeups();
    wakeups.borrow_and_update();
    assert_eq!(store.job_promote_due(promote(2, 10)).await.unwrap(), 2);
    assert!(
        wakeups.has_changed().unwrap(),
        "promoting wakes the workers"
    );
    assert_eq!(store.job_promote_due(promote(10, 10)).await.unwrap(), 1);
    let mut states = Vec::new();
    for id in ids {
        states.push(store.job_get(id).await.unwrap().unwrap().state);
    }
    use JobState::{Available, Scheduled};
    assert_eq!(states, [Available, Available, Available, Scheduled]);
}

/// An outcome presented with a wrong token changes nothing; the right token is accepted once.
pub async fn completion_is_fenced_by_the_lease_token(store: DynStore) {
    let id = insert_one(&store, NewJob::new("k", "{}"), t0()).await;
    let job = claim(&store, "default", 1, "w", at(1)).await.remove(0);
    let mut forged = job.clone();
    forged.lease_token = job.lease_token.wrapping_add(1);
    let rejected = finish(&store, &forged, Outcome::Completed, at(2)).await;
    assert!(!rejected.accepted);
    assert_eq!(rejected.state, Some(JobState::Running));
    assert_eq!(get(&store, id).await.state, JobState::Running);
    let accepted = finish(&store, &job, Outcome::Completed, at(3)).await;
    assert!(accepted.accepted);
    assert_eq!(accepted.state, Some(JobState::Completed));
    let twice = finish(
        &store,
        &job,
        Outcome::Discard {
            error: "late".into(),
        },
        at(4),
    )
    .await;
    assert!(!twice.accepted, "a finished run cannot be finished again");
    let record = get(&store, id).await;
    assert_eq!(record.state, JobState::Completed);
    assert_eq!(record.completed_at, Some(at(3)));
    assert_eq!(
        record.lease_owner.as_deref(),
        Some("w"),
        "a finished job keeps the owner of its last run"
    );
}

/// The River #1302 scenario: a worker stalls past its lease, the job is rescued and claimed
/// again; the stalled worker's late completion must not be recorded.
pub async fn stale_completion_after_rescue_and_reclaim_is_rejected(store: DynStore) {
    let id = insert_one(&store, NewJob::new("k", "{}"), t0()).await;
    let stale = claim(&store, "default", 1, "a", at(1)).await.remove(0);
    assert!(rescue(&store, at(20)).await.is_empty(), "lease still valid");
    let rescued = rescue(&store, at(40)).await;
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].state, JobState::Available);
    let fresh = claim(&store, "default", 1, "b", at(41)).await.remove(0);
    assert_eq!(fresh.id, id);
    assert_eq!(fresh.attempt, 2);
    assert!(
        !finish(&store, &stale, Outcome::Completed, at(42))
            .await
            .accepted
    );
    let record = get(&store, id).await;
    assert_eq!(record.state, JobState::Running);
    assert_eq!(record.lease_owner.as_deref(), Some("b"));
    assert!(
        finish(&store, &fresh, Outcome::Completed, at(43))
            .await
            .accepted
    );
    let record = get(&store, id).await;
    assert_eq!(record.state, JobState::Completed);
    assert_eq!(record.errors.len(), 1, "the expired attempt is recorded");
    assert_eq!(record.errors[0].attempt, 1);
    assert!(record.errors[0].message.contains("lease expired"));
}

/// Heartbeats renew held leases (so the rescuer leaves them alone), save the step, and report
/// leases that are gone.
pub async fn heartbeat_renews_held_leases_and_reports_lost_ones(store: DynStore) {
    insert(&store, vec![NewJob::new("k", "{}"); 2], t0()).await;
    let jobs = claim(&store, "default", 2, "w", at(1)).await;
    let statuses = store
        .job_heartbeat(JobHeartbeatParams {
            leases: vec![
                (lease(&jobs[0]), Some("upload".into())),
                (
                    LeaseRef {
                        id: jobs[1].id,
                        lease_token: jobs[1].lease_token ^ 1,
                    },
                    None,
                ),
            ],
            lease: LEASE,
            now: Some(at(25)),
        })
        .await
        .unwrap();
    assert!(statuses[0].held && !statuses[0].cancel_requested);
    assert!(!statuses[1].held);
    let rescued = rescue(&store, at(40)).await;
    assert_eq!(rescued.len(), 1, "only the job without a heartbeat expired");
    assert_eq!(rescued[0].id, jobs[1].id);
    let record = get(&store, jobs[0].id).await;
    assert_eq!(record.state, JobState::Running);
    assert_eq!(record.step.as_deref(), Some("upload"));
    assert_eq!(record.lease_expires_at, Some(at(55)));
}

/// A failed attempt becomes retryable at its backoff time, with the error and step recorded.
pub async fn failed_attempt_is_retryable_with_backoff_and_recorded(store: DynStore) {
    let id = insert_one(&store, NewJob::new("k", "{}"), t0()).await;
    let job = claim(&store, "default", 1, "w", at(1)).await.remove(0);
    let result = store
        .job_finish_many(JobFinishParams {
            outcomes: vec![JobOutcome {
                lease: lease(&job),
                step: Some("charge".into()),
                outcome: Outcome::Retry {
                    error: "card declined".into(),
                    delay: Duration::from_secs(10),
                },
            }],
            now: Some(at(2)),
        })
        .await
        .unwrap();
    assert!(result[0].accepted);
    let record = get(&store, id).await;
    assert_eq!(record.state, JobState::Retryable);
    assert_eq!(record.scheduled_at, at(12));
    assert_eq!(record.errors.len(), 1);
    assert_eq!(record.errors[0].attempt, 1);
    assert_eq!(record.errors[0].message, "card declined");
    assert_eq!(record.errors[0].step.as_deref(), Some("charge"));
    assert_eq!(record.errors[0].at, at(2));
    assert!(claim(&store, "default", 1, "w", at(11)).await.is_empty());
    let again = claim(&store, "default", 1, "w", at(12)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
}

/// Discarded and cancelled runs are terminal, with their reason recorded.
pub async fn discard_and_cancel_outcomes_are_terminal(store: DynStore) {
    let ids = insert(&store, vec![NewJob::new("k", "{}"); 2], t0()).await;
    let jobs = claim(&store, "default", 2, "w", at(1)).await;
    finish(
        &store,
        &jobs[0],
        Outcome::Discard {
            error: "unknown kind".into(),
        },
        at(2),
    )
    .await;
    finish(&store, &jobs[1], Outcome::Cancelled { error: None }, at(2)).await;
    let discarded = get(&store, ids[0]).await;
    assert_eq!(discarded.state, JobState::Discarded);
    assert_eq!(discarded.completed_at, Some(at(2)));
    assert_eq!(discarded.errors[0].message, "unknown kind");
    let cancelled = get(&store, ids[1]).await;
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.errors.is_empty());
    assert!(claim(&store, "default", 10, "w", at(100)).await.is_empty());
    assert!(rescue(&store, at(1000)).await.is_empty());
}

/// A job handed back at shutdown is available again with its attempt not counted.
pub async fn hand_back_does_not_consume_an_attempt(store: DynStore) {
    let id = insert_one(&store, NewJob::new("k", "{}"), t0()).await;
    let job = claim(&store, "default", 1, "w", at(1)).await.remove(0);
    assert_eq!(job.attempt, 1);
    let result = finish(
        &store,
        &job,
        Outcome::HandBack {
            reason: "shutdown".into(),
        },
        at(2),
    )
    .await;
    assert!(result.accepted);
    assert_eq!(result.state, Some(JobState::Available));
    let record = get(&store, id).await;
    assert_eq!(record.attempt, 0);
    assert_eq!(record.history.len(), 1);
    assert_eq!(record.history[0].event, "handed_back");
    let again = claim(&store, "default", 1, "w", at(3)).await;
    assert_eq!(again[0].attempt, 1);
}

/// The rescuer makes expired at-least-once jobs available again, and discards at-most-once
/// jobs and jobs on their last attempt, each with the reason.
pub async fn rescue_follows_delivery_and_attempts(store: DynStore) {
    let mut once = NewJob::new("k", "{}");
    once.delivery = Delivery::AtMostOnce;
    let mut last = NewJob::new("k", "{}");
    last.max_attempts = 1;
    let ids = insert(&store, vec![NewJob::new("k", "{}"), once, last], t0()).await;
    claim(&store, "default", 3, "dead", at(1)).await;
    let rescued = rescue(&store, at(32)).await;
    assert_eq!(rescued.len(), 3);
    let state = |id| rescued.iter().find(|r| r.id == id).unwrap().state;
    assert_eq!(state(ids[0]), JobState::Available);
    assert_eq!(state(ids[1]), JobState::Discarded);
    assert_eq!(state(ids[2]), JobState::Discarded);
    let once = get(&store, ids[1]).await;
    assert!(once.errors[0].message.contains("at-most-once"));
    assert!(once.completed_at.is_some());
    let last = get(&store, ids[2]).await;
    assert!(last.errors[0].message.contains("last of 1 attempts"));
    assert!(
        rescue(&store, at(64)).await.is_empty(),
        "rescue is idempotent"
    );
}

/// Cancelling a waiting job cancels it; a running job gets a request its heartbeat reports; a
/// finished job is left alone.
pub async fn cancel_pending_running_and_finished_jobs(store: DynStore) {
    let ids = insert(&store, vec![NewJob::new("k", "{}"); 3], t0()).await;
    let cancel = |id| {
        let store = store.clone();
        async move {
            store
                .job_cancel(JobCancelParams {
                    id,
                    now: Some(at(5)),
                })
                .await
        }
    };
    assert_eq!(cancel(ids[2]).await.unwrap(), CancelResult::Cancelled);
    let running = claim(&store, "default", 2, "w", at(1)).await;
    assert_eq!(cancel(ids[0]).await.unwrap(), CancelResult::Requested);
    assert_eq!(
        store
            .job_cancel_requested(vec![ids[0], ids[1]])
            .await
            .unwrap(),
        vec![ids[0]]
    );
    let statuses = store
        .job_heartbeat(JobHeartbeatParams {
            leases: vec![(lease(&running[0]), None)],
            lease: LEASE,
            now: Some(at(6)),
        })
        .await
        .unwrap();
    assert!(statuses[0].held && statuses[0].cancel_requested);
    finish(&store, &running[1], Outcome::Completed, at(7)).await;
    assert_eq!(
        cancel(ids[1]).await.unwrap(),
        CancelResult::AlreadyFinished(JobState::Completed)
    );
    assert_eq!(get(&store, ids[2]).await.state, JobState::Cancelled);
    assert!(matches!(
        cancel(999_999).await,
        Err(StoreError::NotFound(999_999))
    ));
}

/// An operator retry of a discarded job makes it available with a fresh budget and records it;
/// a running job cannot be retried.
pub async fn operator_retry_is_recorded_and_resets_attempts(store: DynStore) {
    let mut job = NewJob::new("k", "{}");
    job.max_attempts = 1;
    let id = insert_one(&store, job, t0()).await;
    let claimed = claim(&store, "default", 1, "w", at(1)).await.remove(0);
    let retry = |now| {
        let store = store.clone();
        async move { store.job_retry(JobRetryParams { id, now: Some(now) }).await }
    };
    assert!(matches!(
        retry(at(2)).await,
        Err(StoreError::Conflict { .. })
    ));
    finish(
        &store,
        &claimed,
        Outcome::Discard {
            error: "boom".into(),
        },
        at(2),
    )
    .await;
    let record = retry(at(3)).await.unwrap();
    assert_eq!(record.state, JobState::Available);
    assert_eq!(record.attempt, 0);
    assert!(record.completed_at.is_none());
    assert_eq!(record.errors.len(), 1, "the failed attempt stays recorded");
    assert_eq!(record.history.last().unwrap().event, "operator_retry");
    assert!(record.history.last().unwrap().detail.contains("discarded"));
    assert_eq!(claim(&store, "default", 1, "w", at(4)).await.len(), 1);
    assert!(matches!(
        store
            .job_retry(JobRetryParams {
                id: 424_242,
                now: Some(at(5))
            })
            .await,
        Err(StoreError::NotFound(_))
    ));
}

/// Listing filters by state, queue and kind, newest first, with paging; counts group by queue
/// and state.
pub async fn list_filters_and_counts(store: DynStore) {
    let mut mail = NewJob::new("mail.send", "{}");
    mail.queue = "mail".into();
    let ids = insert(
        &store,
        vec![NewJob::new("a", "{}"), NewJob::new("b", "{}"), mail],
        t0(),
    )
    .await;
    claim(&store, "mail", 1, "w", at(1)).await;
    let all = store
        .job_list(JobListParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1], ids[0]]
    );
    let running = store
        .job_list(JobListParams {
            state: Some(JobState::Running),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].kind, "mail.send");
    let by_kind = store
        .job_list(JobListParams {
            kind: Some("a".into()),
            queue: Some("default".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_kind.len(), 1);
    let page = store
        .job_list(JobListParams {
            before_id: Some(ids[2]),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page[0].id, ids[1]);
    // A window of ids: above one, below another (how a search reads a bounded slice).
    let window = store
        .job_list(JobListParams {
            before_id: Some(ids[2]),
            above_id: Some(ids[0]),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        window.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    let counts = store.job_count_by_queue().await.unwrap();
    let count = |queue: &str, state| {
        counts
            .iter()
            .find(|c| c.queue == queue && c.state == state)
            .map(|c| c.count)
    };
    assert_eq!(count("default", JobState::Available), Some(2));
    assert_eq!(count("mail", JobState::Running), Some(1));
    assert_eq!(count("mail", JobState::Available), None);
}

/// An insert wakes subscribers.
pub async fn enqueue_wakes_subscribers(store: DynStore) {
    let mut wakeups = store.wakeups();
    wakeups.borrow_and_update();
    insert_one(&store, NewJob::new("k", "{}"), t0()).await;
    tokio::time::timeout(Duration::from_secs(5), wakeups.changed())
        .await
        .expect("woken within 5 s")
        .expect("store alive");
}
