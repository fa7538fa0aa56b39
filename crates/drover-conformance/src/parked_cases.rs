//! Claims parked by idle workers, made in the enqueue's own transaction, on every backend
//! that parks them.

use std::time::Duration;

use drover_core::{DynStore, JobClaimParams, JobInsertParams, JobState, NewJob};

fn params(queue: &str, limit: usize) -> JobClaimParams {
    JobClaimParams {
        queue: queue.to_owned(),
        limit,
        owner: "test:1".to_owned(),
        lease: Duration::from_secs(30),
        now: None,
    }
}

async fn insert(store: &DynStore, jobs: Vec<NewJob>) -> Vec<i64> {
    store
        .job_insert_many(JobInsertParams { jobs, now: None })
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect()
}

fn in_queue(queue: &str) -> NewJob {
    NewJob {
        queue: queue.to_owned(),
        ..NewJob::new("k", "{}")
    }
}

/// An enqueue into a queue with a parked claim leases its jobs to that claim in its own commit.
pub async fn an_enqueue_makes_the_parked_claim_in_its_own_commit(store: DynStore) {
    let mut wakeups = store.wakeups();
    wakeups.borrow_and_update();
    let mut parked = store
        .job_claim_parked(params("default", 5))
        .expect("the backend parks claims");
    let ids = insert(&store, vec![NewJob::new("k", "{}"), NewJob::new("k", "{}")]).await;
    // Answered once the enqueue has committed: both jobs leased to the parked claim.
    let made = tokio::time::timeout(Duration::from_secs(5), parked.made())
        .await
        .expect("the claim was made")
        .unwrap();
    let claimed: Vec<i64> = made.jobs.iter().map(|job| job.id).collect();
    assert_eq!(claimed, ids);
    for id in ids {
        let job = store.job_get(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.attempt, 1);
        assert_eq!(job.lease_owner.as_deref(), Some("test:1"));
    }
    // Every job went to the parked claim, so nobody else was woken for nothing. Not so on
    // PostgreSQL: its listener hears the enqueue's NOTIFY (meant for other processes) and
    // cannot tell it is this store's own.
    if store.backend() == "sqlite" {
        assert!(!wakeups.has_changed().unwrap());
    }
}

/// Jobs of another queue, or not yet due, leave a parked claim alone; a withdrawn one claims nothing.
pub async fn only_an_enqueue_into_the_parked_queue_makes_the_claim(store: DynStore) {
    let mut wakeups = store.wakeups();
    wakeups.borrow_and_update();
    let parked = store.job_claim_parked(params("mail", 5)).unwrap();
    let other = insert(&store, vec![in_queue("reports")]).await;
    let later = insert(
        &store,
        vec![NewJob {
            queue: "mail".to_owned(),
            scheduled_at: Some(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600)),
            ..NewJob::new("k", "{}")
        }],
    )
    .await;
    assert_eq!(
        store.job_get(other[0]).await.unwrap().unwrap().state,
        JobState::Available
    );
    assert_eq!(
        store.job_get(later[0]).await.unwrap().unwrap().state,
        JobState::Scheduled
    );
    // Workers of other queues, and whoever tracks the next due time, were woken.
    assert!(wakeups.has_changed().unwrap());
    // Withdrawn before any enqueue took it: nothing was claimed for it.
    assert!(parked.withdraw().await.is_none());
    let after = insert(&store, vec![in_queue("mail")]).await;
    assert_eq!(
        store.job_get(after[0]).await.unwrap().unwrap().state,
        JobState::Available
    );
}

/// Jobs beyond a parked claim's limit wake the other workers.
pub async fn a_full_parked_claim_still_wakes_the_other_workers(store: DynStore) {
    let mut wakeups = store.wakeups();
    wakeups.borrow_and_update();
    let mut parked = store.job_claim_parked(params("default", 1)).unwrap();
    insert(&store, vec![NewJob::new("k", "{}"), NewJob::new("k", "{}")]).await;
    assert_eq!(parked.made().await.unwrap().jobs.len(), 1);
    assert!(wakeups.has_changed().unwrap(), "one job is left for others");
}

/// Jobs claimed for a parked claim nobody waits for any more go back, their attempt unused.
pub async fn jobs_claimed_for_a_worker_that_went_away_are_handed_back(store: DynStore) {
    // Dropped without being withdrawn: the enqueue still makes the claim, finds nobody to
    // answer, and hands the job back.
    drop(store.job_claim_parked(params("default", 5)).unwrap());
    let ids = insert(&store, vec![NewJob::new("k", "{}")]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let job = store.job_get(ids[0]).await.unwrap().unwrap();
        if job.state == JobState::Available {
            assert_eq!(job.attempt, 0, "the attempt was not used");
            assert_eq!(job.history.last().unwrap().event, "handed_back");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{job:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Closing the store answers every parked claim with an error.
pub async fn closing_the_store_answers_parked_claims(store: DynStore) {
    let mut parked = store.job_claim_parked(params("default", 5)).unwrap();
    store.close().await;
    let answer = tokio::time::timeout(Duration::from_secs(5), parked.made())
        .await
        .expect("answered at close");
    assert!(answer.is_err());
}
