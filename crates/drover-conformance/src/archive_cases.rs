//! Cases of the retention archiver's store methods.

use drover_core::{DynStore, JobCancelParams, JobState, NewJob, Outcome, StoreError};
use jiff::Timestamp;

use crate::cases::{at, claim, finish, get, insert, insert_one, t0};

fn jobs_policy(columns: Vec<String>, cutoff: Timestamp) -> drover_core::ArchiveParams {
    drover_core::ArchiveParams {
        table: "drover_jobs".into(),
        archive_table: "drover_jobs_archive".into(),
        columns,
        id_column: "id".into(),
        age_column: "attempted_at".into(),
        fallback_column: Some("created_at".into()),
        cutoff,
        batch_size: 2,
        finished_jobs_only: true,
    }
}

/// The archiver moves finished rows past the cutoff — by the age column, or by the fallback
/// where the age column is null — in bounded batches, and every row stays in exactly one table.
pub async fn archive_moves_finished_rows_past_the_cutoff(store: DynStore) {
    let columns = store
        .table_columns("drover_jobs".into())
        .await
        .unwrap()
        .expect("the jobs table exists");
    assert!(columns.contains(&"id".to_owned()) && columns.contains(&"state".to_owned()));
    assert_eq!(
        store
            .table_columns("drover_jobs_archive".into())
            .await
            .unwrap()
            .unwrap(),
        columns
    );
    assert!(
        store
            .table_columns("no_such_table".into())
            .await
            .unwrap()
            .is_none()
    );

    // Five old jobs: three run and completed at 1..3 s, one cancelled before it ran (no
    // attempted_at: the fallback decides), one still waiting. One recent completed job.
    let mut waiting = NewJob::new("k", "{}");
    waiting.scheduled_at = Some(at(100_000));
    let mut jobs = vec![NewJob::new("k", "{}"); 4];
    jobs.push(waiting);
    let old = insert(&store, jobs, t0()).await;
    for (i, job) in claim(&store, "default", 3, "w", at(1))
        .await
        .iter()
        .enumerate()
    {
        finish(&store, job, Outcome::Completed, at(2 + i as i64)).await;
    }
    store
        .job_cancel(JobCancelParams {
            id: old[3],
            now: Some(at(5)),
        })
        .await
        .unwrap();
    let recent = insert_one(&store, NewJob::new("k", "{}"), at(100)).await;
    let job = claim(&store, "default", 1, "w", at(101)).await.remove(0);
    assert_eq!(job.id, recent);
    finish(&store, &job, Outcome::Completed, at(102)).await;

    let policy = jobs_policy(columns.clone(), at(50));
    assert_eq!(store.archive_pending(policy.clone()).await.unwrap(), 4);
    let mut moved = Vec::new();
    loop {
        let n = store.archive_batch(policy.clone()).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 2, "batches are bounded");
        moved.push(n);
    }
    assert_eq!(moved.iter().sum::<u64>(), 4);
    assert_eq!(store.archive_pending(policy.clone()).await.unwrap(), 0);
    for id in &old[..4] {
        assert!(
            store.job_get(*id).await.unwrap().is_none(),
            "job {id} archived"
        );
    }
    assert_eq!(
        get(&store, old[4]).await.state,
        JobState::Scheduled,
        "unfinished jobs stay"
    );
    assert_eq!(
        get(&store, recent).await.state,
        JobState::Completed,
        "recent jobs stay"
    );
    // The archived rows are in the archive table: moving again finds nothing to do, and the
    // archive has the same columns, so a second archive of the same ids is skipped.
    let archive_policy = drover_core::ArchiveParams {
        table: "drover_jobs_archive".into(),
        archive_table: "drover_jobs_archive".into(),
        ..jobs_policy(columns, at(50))
    };
    assert_eq!(store.archive_pending(archive_policy).await.unwrap(), 4);
}

/// Names that are not plain identifiers never reach SQL.
pub async fn archive_refuses_names_that_are_not_identifiers(store: DynStore) {
    let columns = vec!["id".to_owned()];
    for table in ["drover_jobs; DROP TABLE drover_jobs", "it's", "a\"b", ""] {
        let policy = drover_core::ArchiveParams {
            table: table.into(),
            ..jobs_policy(columns.clone(), t0())
        };
        assert!(matches!(
            store.archive_batch(policy).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(store.table_columns(table.into()).await.is_err());
    }
    assert!(
        store
            .table_columns("drover_jobs".into())
            .await
            .unwrap()
            .is_some()
    );
}
