//! Cases of the operator's seam: actions on many jobs, queue pause, cached counts, list
//! filters, and repeated outcomes told apart from stale ones.

use drover_core::{
    ActResult, DynStore, JobActParams, JobAction, JobListParams, JobState, NewJob, Outcome,
    QueueCountsRefreshParams, QueuePauseParams, TimeRange,
};
use serde_json::json;

use crate::cases::{LEASE, at, claim, finish, get, insert, insert_one, rescue, t0};

fn job(kind: &str, args: serde_json::Value) -> NewJob {
    NewJob::new(kind, args.to_string())
}

/// Pauses or resumes `queue`, which must succeed.
async fn pause(
    store: &DynStore,
    queue: &str,
    paused: bool,
    now: jiff::Timestamp,
) -> drover_core::QueueRecord {
    store
        .queue_pause(QueuePauseParams {
            queue: queue.into(),
            paused,
            now: Some(now),
        })
        .await
        .unwrap()
}

async fn act(store: &DynStore, ids: Vec<i64>, action: JobAction) -> Vec<ActResult> {
    store
        .job_act_many(JobActParams {
            ids,
            action,
            now: Some(at(10)),
        })
        .await
        .expect("act")
}

/// Retry, cancel and discard apply where they make sense and say why not elsewhere.
pub async fn actions_on_many_jobs_change_only_what_they_apply_to(store: DynStore) {
    let ids = insert(
        &store,
        vec![
            job("a", json!({})),
            job("b", json!({})),
            job("c", json!({})),
        ],
        t0(),
    )
    .await;
    let running = claim(&store, "default", 1, "w", at(1)).await;
    assert_eq!(running[0].id, ids[0]);

    let discarded = act(&store, vec![ids[0], ids[1], 999_999], JobAction::Discard).await;
    assert!(matches!(
        discarded[0],
        ActResult::Unchanged {
            state: JobState::Running,
            ..
        }
    ));
    assert_eq!(
        discarded[1],
        ActResult::Changed {
            state: JobState::Discarded
        }
    );
    assert_eq!(discarded[2], ActResult::NotFound);
    let record = get(&store, ids[1]).await;
    assert_eq!(record.state, JobState::Discarded);
    assert!(record.completed_at.is_some());
    assert_eq!(record.history.last().unwrap().event, "discarded");

    let retried = act(&store, vec![ids[0], ids[1]], JobAction::Retry).await;
    assert!(matches!(
        retried[0],
        ActResult::Unchanged {
            state: JobState::Running,
            ..
        }
    ));
    assert_eq!(
        retried[1],
        ActResult::Changed {
            state: JobState::Available
        }
    );
    assert_eq!(get(&store, ids[1]).await.state, JobState::Available);

    let cancelled = act(&store, vec![ids[0], ids[2]], JobAction::Cancel).await;
    assert_eq!(cancelled[0], ActResult::CancelRequested);
    assert_eq!(
        cancelled[1],
        ActResult::Changed {
            state: JobState::Cancelled
        }
    );
    assert!(get(&store, ids[0]).await.cancel_requested_at.is_some());
    let again = act(&store, vec![ids[2]], JobAction::Cancel).await;
    assert!(matches!(
        again[0],
        ActResult::Unchanged {
            state: JobState::Cancelled,
            ..
        }
    ));
    assert!(act(&store, vec![], JobAction::Retry).await.is_empty());
}

/// The names of the queues the store lists.
async fn queue_names(store: &DynStore) -> Vec<String> {
    let queues = store.queue_list().await.unwrap();
    queues.into_iter().map(|q| q.name).collect()
}

/// A paused queue gives no job to any claim; resuming gives them again, and other queues are
/// never affected.
pub async fn paused_queues_give_no_jobs_until_resumed(store: DynStore) {
    let mut other = job("a", json!({}));
    other.queue = "other".into();
    insert(&store, vec![job("a", json!({})), other], t0()).await;
    let paused = pause(&store, "default", true, at(1)).await;
    assert_eq!(paused.paused_at, Some(at(1)));
    assert!(claim(&store, "default", 10, "w", at(2)).await.is_empty());
    assert_eq!(claim(&store, "other", 10, "w", at(2)).await.len(), 1);
    // A job enqueued while paused waits too.
    insert_one(&store, job("b", json!({})), at(3)).await;
    assert!(claim(&store, "default", 10, "w", at(4)).await.is_empty());
    // A queue can be paused before it has jobs.
    pause(&store, "later", true, at(4)).await;
    assert_eq!(queue_names(&store).await, ["default", "later"]);

    let mut wakeups = store.wakeups();
    wakeups.borrow_and_update();
    let resumed = pause(&store, "default", false, at(5)).await;
    assert_eq!(resumed.paused_at, None);
    assert!(wakeups.has_changed().unwrap(), "resuming wakes the workers");
    assert_eq!(claim(&store, "default", 10, "w", at(6)).await.len(), 2);
    // Resuming a name never paused (a typo) leaves no queue behind it.
    let typo = pause(&store, "defualt", false, at(7)).await;
    assert_eq!(typo.paused_at, None);
    assert_eq!(queue_names(&store).await, ["default", "later"]);
    assert!(
        store
            .queue_pause(QueuePauseParams {
                queue: "bad name".into(),
                paused: true,
                now: None,
            })
            .await
            .is_err()
    );
}

/// The cache holds what a count found, per queue and state, and marks capped counts.
pub async fn cached_counts_are_refreshed_and_capped(store: DynStore) {
    assert!(store.queue_list().await.unwrap().is_empty());
    let mut jobs: Vec<NewJob> = (0..5).map(|_| job("a", json!({}))).collect();
    let mut mail = job("m", json!({}));
    mail.queue = "mail".into();
    jobs.push(mail);
    insert(&store, jobs, t0()).await;
    claim(&store, "default", 2, "w", at(1)).await;
    let refresh = |cap| QueueCountsRefreshParams {
        cap,
        now: Some(at(2)),
    };
    // Nothing is counted before the first refresh: the cache is what readers see.
    assert!(store.queue_list().await.unwrap().is_empty());
    store.queue_counts_refresh(refresh(100)).await.unwrap();
    let queues = store.queue_list().await.unwrap();
    assert_eq!(queues.len(), 2);
    let default = &queues[0];
    assert_eq!(default.name, "default");
    assert_eq!(default.count(JobState::Available), 3);
    assert_eq!(default.count(JobState::Running), 2);
    assert!(!default.estimated);
    assert_eq!(default.counted_at, Some(at(2)));
    assert_eq!(default.oldest_available_at, Some(t0()));
    assert_eq!(queues[1].count(JobState::Available), 1);

    store.queue_counts_refresh(refresh(2)).await.unwrap();
    let queues = store.queue_list().await.unwrap();
    assert!(queues[0].estimated, "3 available is over a cap of 2");
    let available: u64 = queues.iter().map(|q| q.count(JobState::Available)).sum();
    assert!(available <= 3);
    assert_eq!(queues[0].count(JobState::Running), 2);
}

/// Finished jobs are counted across more than one slice of a sliced count, per queue and
/// state; a finished state past the cap is marked estimated while the others stay exact.
pub async fn finished_counts_span_slices_and_are_capped(store: DynStore) {
    let n = drover_core::COUNT_SLICE as usize * 2 + 500;
    insert(&store, (0..n).map(|_| job("a", json!({}))).collect(), t0()).await;
    let mut mail: Vec<NewJob> = (0..3).map(|_| job("m", json!({}))).collect();
    for job in &mut mail {
        job.queue = "mail".into();
        job.max_attempts = 1;
    }
    insert(&store, mail, t0()).await;
    let mut completed = 0;
    while completed < n {
        let claimed = claim(&store, "default", 1000, "w", at(1)).await;
        let outcomes = claimed
            .iter()
            .map(|job| drover_core::JobOutcome::completed(crate::cases::lease(job)))
            .collect();
        store
            .job_finish_many(drover_core::JobFinishParams {
                outcomes,
                now: Some(at(2)),
            })
            .await
            .unwrap();
        completed += claimed.len();
    }
    let mail = claim(&store, "mail", 3, "w", at(3)).await;
    finish(&store, &mail[0], Outcome::Completed, at(4)).await;
    let discard = Outcome::Discard { error: "no".into() };
    finish(&store, &mail[1], discard, at(4)).await;
    let refresh = |cap| QueueCountsRefreshParams {
        cap,
        now: Some(at(5)),
    };
    store
        .queue_counts_refresh(refresh(1_000_000))
        .await
        .unwrap();
    let queues = store.queue_list().await.unwrap();
    let (default, mail) = (&queues[0], &queues[1]);
    assert_eq!(default.count(JobState::Completed), n as u64);
    assert_eq!(default.count(JobState::Available), 0);
    assert!(!default.estimated);
    assert_eq!(mail.count(JobState::Completed), 1);
    assert_eq!(mail.count(JobState::Discarded), 1);
    assert_eq!(mail.count(JobState::Running), 1);

    store.queue_counts_refresh(refresh(1_000)).await.unwrap();
    let queues = store.queue_list().await.unwrap();
    let (default, mail) = (&queues[0], &queues[1]);
    assert!(default.estimated, "{n} completed is over a cap of 1,000");
    let counted = default.count(JobState::Completed);
    assert!(
        counted > 1_000 && counted < n as u64,
        "counting stopped past the cap: {counted}"
    );
    assert_eq!(mail.count(JobState::Discarded), 1, "under the cap, exact");
}

/// A queue with no job left in the jobs table (all finished and archived) is forgotten by the
/// next exact count, unless it is paused or a registered process works it; a count that passed
/// its cap forgets nothing, since it may not have seen every queue.
pub async fn empty_queues_are_forgotten_unless_paused_or_worked(store: DynStore) {
    let queues = ["gone", "paused", "worked", "busy"];
    let jobs: Vec<NewJob> = queues
        .iter()
        .map(|queue| {
            let mut job = job("k", json!({}));
            job.queue = (*queue).into();
            job
        })
        .collect();
    insert(&store, jobs, t0()).await;
    for queue in &queues[..3] {
        let job = claim(&store, queue, 1, "w", at(1)).await.remove(0);
        finish(&store, &job, Outcome::Completed, at(2)).await;
    }
    let names = |list: Vec<drover_core::QueueRecord>| -> Vec<String> {
        list.into_iter().map(|q| q.name).collect()
    };
    let refresh = |cap| QueueCountsRefreshParams {
        cap,
        now: Some(at(3)),
    };
    store.queue_counts_refresh(refresh(100)).await.unwrap();
    assert_eq!(
        names(store.queue_list().await.unwrap()),
        ["busy", "gone", "paused", "worked"]
    );

    pause(&store, "paused", true, at(3)).await;
    store
        .process_upsert(drover_core::ProcessUpsertParams {
            id: "p1".into(),
            host: "host-1".into(),
            pid: 42,
            queues: vec!["worked".into()],
            concurrency: Default::default(),
            version: "0.1.0".into(),
            http_workers: vec![],
            cron: vec![],
            draining: false,
            now: Some(at(3)),
        })
        .await
        .unwrap();
    assert_eq!(archive_finished_before(&store, at(10)).await, 3);

    // The busy queue's job is over a cap of zero: an estimated count forgets nothing.
    store.queue_counts_refresh(refresh(0)).await.unwrap();
    assert_eq!(store.queue_list().await.unwrap().len(), 4);

    store.queue_counts_refresh(refresh(100)).await.unwrap();
    let list = store.queue_list().await.unwrap();
    assert_eq!(names(list.clone()), ["busy", "paused", "worked"]);
    assert!(list[1].paused_at.is_some(), "the pause is kept");
    assert_eq!(list[0].count(JobState::Available), 1);

    // Resumed and no longer worked: both go at the next count.
    pause(&store, "paused", false, at(4)).await;
    store.process_delete("p1".into()).await.unwrap();
    store.queue_counts_refresh(refresh(100)).await.unwrap();
    assert_eq!(names(store.queue_list().await.unwrap()), ["busy"]);
}

/// Moves every finished job completed before `cutoff` to the archive table; how many moved.
async fn archive_finished_before(store: &DynStore, cutoff: jiff::Timestamp) -> u64 {
    let columns = store
        .table_columns("drover_jobs".into())
        .await
        .unwrap()
        .unwrap();
    let archive = drover_core::ArchiveParams {
        table: "drover_jobs".into(),
        archive_table: "drover_jobs_archive".into(),
        columns,
        id_column: "id".into(),
        age_column: "completed_at".into(),
        fallback_column: None,
        cutoff,
        batch_size: 100,
        finished_jobs_only: true,
    };
    store.archive_batch(archive).await.unwrap()
}

/// Filters by time range and by args containment, and pages with a cursor.
pub async fn list_filters_by_time_and_args(store: DynStore) {
    let a = insert_one(
        &store,
        job("k", json!({"user": {"id": 7}, "tags": ["x", "y"]})),
        t0(),
    )
    .await;
    let b = insert_one(&store, job("k", json!({"user": {"id": 8}})), at(10)).await;
    let c = insert_one(&store, job("k", json!({"n": 1})), at(20)).await;
    let list = |params: JobListParams| {
        let store = store.clone();
        async move {
            store
                .job_list(JobListParams {
                    limit: 10,
                    ..params
                })
                .await
                .unwrap()
                .into_iter()
                .map(|j| j.id)
                .collect::<Vec<_>>()
        }
    };
    let contain = |v: serde_json::Value| JobListParams {
        args_contain: Some(v.to_string()),
        ..Default::default()
    };
    assert_eq!(list(contain(json!({"user": {"id": 7}}))).await, vec![a]);
    assert_eq!(list(contain(json!({"tags": ["y"]}))).await, vec![a]);
    assert_eq!(list(contain(json!({"user": {}}))).await, vec![b, a]);
    assert_eq!(list(contain(json!({"n": 1.0}))).await, vec![c]);
    assert!(list(contain(json!({"user": {"id": 9}}))).await.is_empty());
    let created = JobListParams {
        created: TimeRange {
            from: Some(at(5)),
            to: Some(at(20)),
        },
        ..Default::default()
    };
    assert_eq!(list(created).await, vec![b]);

    let running = claim(&store, "default", 1, "w", at(30)).await;
    finish(&store, &running[0], Outcome::Completed, at(40)).await;
    let finished = |from, to| JobListParams {
        finished: TimeRange { from, to },
        ..Default::default()
    };
    assert_eq!(
        list(finished(Some(at(35)), None)).await,
        vec![running[0].id]
    );
    assert!(list(finished(None, Some(at(35)))).await.is_empty());

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(JobListParams {
            before_id: cursor,
            limit: 2,
            ..Default::default()
        })
        .await;
        let page: Vec<i64> = page.into_iter().take(2).collect();
        if page.is_empty() {
            break;
        }
        cursor = page.last().copied();
        seen.extend(page);
    }
    assert_eq!(seen, vec![c, b, a]);
}

/// An args filter compares numbers exactly, past where f64s would call them equal, and by
/// value (`1.0` is `1`), as PostgreSQL's `@>` does.
pub async fn args_filters_compare_numbers_exactly(store: DynStore) {
    let big = NewJob::new(
        "k",
        r#"{"big": 12345678901234567890123, "n": 9007199254740993}"#,
    );
    let big = insert_one(&store, big, t0()).await;
    insert_one(&store, job("k", json!({"big": 1})), at(1)).await;
    let list = |text: &str| {
        let store = store.clone();
        let params = JobListParams {
            args_contain: Some(text.into()),
            limit: 10,
            ..Default::default()
        };
        async move {
            let jobs = store.job_list(params).await.unwrap();
            jobs.into_iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(list(r#"{"big": 12345678901234567890123}"#).await, vec![big]);
    assert!(list(r#"{"big": 12345678901234567890124}"#).await.is_empty());
    assert!(list(r#"{"n": 9007199254740992}"#).await.is_empty());
    assert_eq!(list(r#"{"n": 9007199254740993.0}"#).await, vec![big]);
}

/// The same run's outcome presented twice is told apart from a stale run's.
pub async fn repeated_outcomes_are_told_apart_from_stale_ones(store: DynStore) {
    let id = insert_one(&store, job("k", json!({})), t0()).await;
    let first = claim(&store, "default", 1, "w1", at(1)).await.remove(0);
    // The lease expires; the rescuer makes the job available; another worker runs it.
    let expired =
        at(1) + jiff::SignedDuration::try_from(LEASE).unwrap() + jiff::SignedDuration::from_secs(1);
    assert_eq!(rescue(&store, expired).await.len(), 1);
    let second = claim(&store, "default", 1, "w2", expired).await.remove(0);
    assert_eq!(second.id, id);
    let done = finish(&store, &second, Outcome::Completed, expired).await;
    assert!(done.accepted);
    let repeat = finish(&store, &second, Outcome::Completed, expired).await;
    assert!(!repeat.accepted);
    assert!(
        repeat.recorded_earlier,
        "the same lease's outcome was recorded before"
    );
    let stale = finish(&store, &first, Outcome::Completed, expired).await;
    assert!(!stale.accepted);
    assert!(!stale.recorded_earlier, "the first run lost its lease");
    assert_eq!(stale.state, Some(JobState::Completed));
}
