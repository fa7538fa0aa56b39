//! Cases of [`Store::job_finish_and_claim`](drover_core::Store::job_finish_and_claim): the
//! outcomes of one batch and the claims of the next in one transaction.

use drover_core::{
    DynStore, JobClaimParams, JobFinishClaimParams, JobOutcome, JobState, NewJob, Outcome,
};
use jiff::Timestamp;

use crate::cases::{LEASE, at, claim, get, insert, lease, t0};

fn claim_params(queue: &str, limit: usize, now: Timestamp) -> JobClaimParams {
    JobClaimParams {
        queue: queue.into(),
        limit,
        owner: "w".into(),
        lease: LEASE,
        now: Some(now),
    }
}

/// The outcomes are recorded first: a job handed back in the call is claimable by the same
/// call, with a fresh lease, and completed jobs are not claimed again.
pub async fn finish_and_claim_records_outcomes_before_claiming(store: DynStore) {
    let ids = insert(
        &store,
        (0..3).map(|_| NewJob::new("k", "{}")).collect(),
        t0(),
    )
    .await;
    let running = claim(&store, "default", 2, "w", at(1)).await;
    assert_eq!(running.len(), 2);
    let result = store
        .job_finish_and_claim(JobFinishClaimParams {
            outcomes: vec![
                JobOutcome::completed(lease(&running[0])),
                JobOutcome {
                    lease: lease(&running[1]),
                    step: None,
                    outcome: Outcome::HandBack {
                        reason: "shutdown".into(),
                    },
                },
            ],
            claims: vec![claim_params("default", 10, at(2))],
            now: Some(at(2)),
        })
        .await
        .expect("finish and claim");
    assert_eq!(result.finished.len(), 2);
    assert!(result.finished.iter().all(|r| r.accepted));
    assert_eq!(result.finished[0].state, Some(JobState::Completed));
    assert_eq!(result.finished[1].state, Some(JobState::Available));
    assert_eq!(result.claimed.len(), 1);
    let claimed: Vec<i64> = result.claimed[0].jobs.iter().map(|j| j.id).collect();
    assert_eq!(
        claimed,
        vec![ids[1], ids[2]],
        "the handed-back job and the unclaimed one"
    );
    let again = &result.claimed[0].jobs[0];
    assert_ne!(again.lease_token, running[1].lease_token, "a fresh lease");
    assert_eq!(again.attempt, 1, "the hand-back did not use an attempt");
    assert_eq!(get(&store, ids[0]).await.state, JobState::Completed);
    assert_eq!(get(&store, ids[1]).await.state, JobState::Running);
}

/// Claims for several queues, in the order given, each within its limit; an outcome whose
/// lease no longer holds is rejected, the rest of the call goes ahead.
pub async fn finish_and_claim_claims_for_several_queues_and_rejects_stale_outcomes(
    store: DynStore,
) {
    let mut jobs = Vec::new();
    for queue in ["a", "a", "a", "b"] {
        let mut job = NewJob::new("k", "{}");
        job.queue = queue.into();
        jobs.push(job);
    }
    let ids = insert(&store, jobs, t0()).await;
    let first = claim(&store, "a", 1, "w", at(1)).await.remove(0);
    let done = JobOutcome::completed(lease(&first));
    let result = store
        .job_finish_and_claim(JobFinishClaimParams {
            outcomes: vec![done.clone()],
            claims: vec![],
            now: Some(at(2)),
        })
        .await
        .expect("finish only");
    assert!(result.finished[0].accepted);
    assert!(result.claimed.is_empty());

    let result = store
        .job_finish_and_claim(JobFinishClaimParams {
            // Already recorded: this run's lease is gone.
            outcomes: vec![done],
            claims: vec![claim_params("b", 5, at(3)), claim_params("a", 1, at(3))],
            now: Some(at(3)),
        })
        .await
        .expect("finish and claim");
    assert!(!result.finished[0].accepted);
    assert_eq!(result.finished[0].state, Some(JobState::Completed));
    let b: Vec<i64> = result.claimed[0].jobs.iter().map(|j| j.id).collect();
    let a: Vec<i64> = result.claimed[1].jobs.iter().map(|j| j.id).collect();
    assert_eq!(b, vec![ids[3]]);
    assert_eq!(
        a,
        vec![ids[1]],
        "the oldest available job of a, within the limit"
    );
    assert_eq!(get(&store, ids[2]).await.state, JobState::Available);
}

/// Without outcomes the call is a claim: due scheduled jobs are promoted, and the next due
/// time is reported.
pub async fn finish_and_claim_with_nothing_to_finish_is_a_claim(store: DynStore) {
    let mut soon = NewJob::new("k", "{}");
    soon.scheduled_at = Some(at(10));
    let mut later = NewJob::new("k", "{}");
    later.scheduled_at = Some(at(100));
    let ids = insert(&store, vec![soon, later], t0()).await;
    let result = store
        .job_finish_and_claim(JobFinishClaimParams {
            outcomes: vec![],
            claims: vec![claim_params("default", 10, at(20))],
            now: Some(at(20)),
        })
        .await
        .expect("claim");
    assert!(result.finished.is_empty());
    let claimed: Vec<i64> = result.claimed[0].jobs.iter().map(|j| j.id).collect();
    assert_eq!(claimed, vec![ids[0]]);
    assert_eq!(result.claimed[0].next_due_at, Some(at(100)));
}
