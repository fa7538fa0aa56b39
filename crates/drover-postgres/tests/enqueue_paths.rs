//! The two ways an enqueue is written on PostgreSQL — one statement in its own implicit
//! transaction for jobs without unique keys, a transaction of several statements for the rest —
//! give the same answers, and both wake a second store once their jobs are committed (the
//! wake-up is sent after the commit, by the notifier).

mod common;

use std::time::Duration;

use common::{admin_on, connect, fresh_store};
use drover_core::{JobInsertParams, JobState, NewJob, Store};

const WAKE_WITHIN: Duration = Duration::from_secs(5);

fn job(i: usize) -> NewJob {
    let mut job = NewJob::new("paths", format!(r#"{{"i":{i}}}"#));
    job.queue = format!("q{}", i % 3);
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_enqueue_paths_answer_in_input_order_and_wake_a_second_store() {
    let (a, guard) = fresh_store().await;
    let b = connect(&guard.schema).await;
    let mut woken = b.wakeups();

    // Plain: no unique key. One scheduled job among them.
    let mut plain: Vec<NewJob> = (0..50).map(job).collect();
    plain[7].scheduled_at = Some(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1));
    woken.borrow_and_update();
    let inserted = a
        .job_insert_many(JobInsertParams {
            jobs: plain.clone(),
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(inserted.len(), 50);
    assert!(
        inserted.windows(2).all(|w| w[0].id < w[1].id),
        "ids grow in input order"
    );
    for (i, (result, job)) in inserted.iter().zip(&plain).enumerate() {
        assert!(!result.duplicate);
        let expected = if i == 7 {
            JobState::Scheduled
        } else {
            JobState::Available
        };
        assert_eq!(result.state, expected, "job {i}");
        let stored = a.job_get(result.id).await.unwrap().expect("stored");
        assert_eq!(stored.queue, job.queue, "the answer's id is this job's");
        assert_eq!(stored.args.value(), serde_json::json!({ "i": i }));
    }
    tokio::time::timeout(WAKE_WITHIN, woken.changed())
        .await
        .expect("b is woken by the plain enqueue")
        .expect("b alive");

    // With a unique key: the transaction path; a repeat of the key is a duplicate.
    let mut keyed = job(100);
    keyed.unique_key = Some("k".into());
    let mut mixed = vec![job(101), keyed.clone(), keyed];
    mixed[0].queue = "fresh".into();
    woken.borrow_and_update();
    let inserted = a
        .job_insert_many(JobInsertParams {
            jobs: mixed,
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(
        inserted.iter().map(|j| j.duplicate).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    assert_eq!(inserted[1].id, inserted[2].id);
    tokio::time::timeout(WAKE_WITHIN, woken.changed())
        .await
        .expect("b is woken by the transactional enqueue")
        .expect("b alive");

    let count: i64 = admin_on(&guard.schema)
        .await
        .query_one("SELECT count(*) FROM drover_jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 52);
    a.close().await;
    b.close().await;
}

/// A plain enqueue that the database refuses (here: args that are not JSON, which only a
/// caller skipping validation can send) stores nothing and wakes nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_plain_enqueue_stores_nothing_and_wakes_nobody() {
    let (a, guard) = fresh_store().await;
    let b = connect(&guard.schema).await;
    let mut woken = b.wakeups();
    woken.borrow_and_update();
    let jobs = vec![job(1), NewJob::new("paths", "not json")];
    let err = a
        .job_insert_many(JobInsertParams { jobs, now: None })
        .await
        .expect_err("invalid JSON is refused by the database");
    assert!(!err.to_string().is_empty());
    let count: i64 = admin_on(&guard.schema)
        .await
        .query_one("SELECT count(*) FROM drover_jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "nothing stored");
    // A wake-up would come within a round trip of the commit; give it ten times that.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), woken.changed())
            .await
            .is_err(),
        "nobody is woken"
    );
    a.close().await;
    b.close().await;
}
