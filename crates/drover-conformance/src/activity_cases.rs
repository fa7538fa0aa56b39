//! Cases of the cluster's record of activity: retention runs, throughput per minute, and who ran
//! each attempt (the process in a failed attempt's entry, the lease owner of a finished job).

use std::collections::BTreeMap;
use std::time::Duration;

use drover_core::{
    DynStore, NewJob, Outcome, ProcessUpsertParams, RetentionRunInsertParams,
    RetentionRunListParams, RetentionRunRecord, ThroughputAddParams, ThroughputCount,
    ThroughputListParams, ThroughputMinute, ThroughputPruneParams,
};
use jiff::Timestamp;

use crate::cases::{at, claim, finish, get, insert_one, rescue, t0};

fn run(policy: &str, started: Timestamp, rows: u64, error: Option<&str>) -> RetentionRunRecord {
    RetentionRunRecord {
        policy: policy.into(),
        started_at: started,
        finished_at: started + jiff::SignedDuration::from_millis(1500),
        rows_moved: rows,
        error: error.map(str::to_owned),
        trigger: if error.is_some() {
            "manual"
        } else {
            "schedule"
        }
        .into(),
    }
}

async fn runs(store: &DynStore, policy: Option<&str>, limit: usize) -> Vec<RetentionRunRecord> {
    store
        .retention_run_list(RetentionRunListParams {
            policy: policy.map(str::to_owned),
            limit,
        })
        .await
        .expect("list runs")
}

/// Runs are recorded with every field (failed ones with their error), listed newest first per
/// policy up to the limit, and each policy keeps only its newest `keep` runs.
pub async fn retention_runs_are_recorded_newest_first_and_bounded(store: DynStore) {
    assert!(runs(&store, None, 10).await.is_empty());
    for i in 0..6 {
        let error = (i == 4).then_some("database is locked");
        store
            .retention_run_insert(RetentionRunInsertParams {
                run: run("usage", at(i * 60), 100 + i as u64, error),
                keep: 4,
            })
            .await
            .expect("insert run");
    }
    store
        .retention_run_insert(RetentionRunInsertParams {
            run: run("drover_jobs", at(30), 7, None),
            keep: 4,
        })
        .await
        .expect("insert run");

    let usage = runs(&store, Some("usage"), 10).await;
    let started: Vec<Timestamp> = usage.iter().map(|r| r.started_at).collect();
    assert_eq!(
        started,
        vec![at(300), at(240), at(180), at(120)],
        "the newest four stay, newest first"
    );
    assert_eq!(
        usage[1],
        run("usage", at(240), 104, Some("database is locked"))
    );
    assert_eq!(usage[0].rows_moved, 105);
    assert_eq!(usage[0].error, None);
    assert_eq!(usage[0].trigger, "schedule");

    let all = runs(&store, None, 2).await;
    let seen: Vec<(&str, Timestamp)> = all
        .iter()
        .map(|r| (r.policy.as_str(), r.started_at))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("drover_jobs", at(30)),
            ("usage", at(300)),
            ("usage", at(240))
        ],
        "at most the limit per policy, by policy"
    );
    assert!(runs(&store, Some("nothing"), 10).await.is_empty());
}

fn count(minute: Timestamp, queue: &str, completed: u64, failed: u64) -> ThroughputCount {
    ThroughputCount {
        minute,
        queue: queue.into(),
        completed,
        failed,
    }
}

async fn add(store: &DynStore, process: &str, counts: Vec<ThroughputCount>) {
    store
        .throughput_add(ThroughputAddParams {
            process: process.into(),
            counts,
        })
        .await
        .expect("add throughput");
}

async fn minutes(store: &DynStore, since: Timestamp, queue: Option<&str>) -> Vec<ThroughputMinute> {
    store
        .throughput_list(ThroughputListParams {
            since,
            queue: queue.map(str::to_owned),
        })
        .await
        .expect("list throughput")
}

fn point(minute: Timestamp, completed: u64, failed: u64) -> ThroughputMinute {
    ThroughputMinute {
        minute,
        completed,
        failed,
    }
}

/// Flushes add to what is stored (repeated keys in one flush included); the list sums every
/// process and queue per minute (or one queue), from a minute on; pruning removes old minutes.
pub async fn throughput_adds_up_per_minute_across_processes(store: DynStore) {
    assert!(minutes(&store, t0(), None).await.is_empty());
    let (m0, m1, m2) = (at(0), at(60), at(120));
    add(
        &store,
        "a",
        vec![count(m0, "q", 3, 1), count(m1, "q", 1, 0)],
    )
    .await;
    add(
        &store,
        "a",
        vec![count(m0, "q", 2, 0), count(m0, "r", 0, 4)],
    )
    .await;
    add(
        &store,
        "b",
        vec![count(m0, "q", 10, 0), count(m2, "q", 1, 1)],
    )
    .await;
    // The same key twice in one flush adds both.
    add(
        &store,
        "b",
        vec![count(m1, "r", 1, 0), count(m1, "r", 1, 0)],
    )
    .await;
    add(&store, "b", Vec::new()).await;

    assert_eq!(
        minutes(&store, m0, None).await,
        vec![point(m0, 15, 5), point(m1, 3, 0), point(m2, 1, 1)]
    );
    assert_eq!(
        minutes(&store, m1, Some("q")).await,
        vec![point(m1, 1, 0), point(m2, 1, 1)]
    );
    assert_eq!(
        minutes(&store, m0, Some("r")).await,
        vec![point(m0, 0, 4), point(m1, 2, 0)]
    );

    let pruned = store
        .throughput_prune(ThroughputPruneParams { before: m1 })
        .await
        .expect("prune");
    assert_eq!(pruned, 3, "the rows of minute 0: a/q, a/r, b/q");
    assert_eq!(
        minutes(&store, t0(), None).await,
        vec![point(m1, 3, 0), point(m2, 1, 1)]
    );
}

/// A failed attempt's entry names the process that held its lease (so does a rescue's), and a
/// finished job keeps the lease owner of its last attempt.
pub async fn attempts_name_their_process_and_finished_jobs_keep_their_owner(store: DynStore) {
    let mut job = NewJob::new("k", "{}");
    job.max_attempts = 3;
    let id = insert_one(&store, job, t0()).await;

    let first = claim(&store, "default", 1, "host:1:aaaa", at(1))
        .await
        .remove(0);
    let retry = Outcome::Retry {
        error: "boom".into(),
        delay: Duration::ZERO,
    };
    assert!(finish(&store, &first, retry, at(2)).await.accepted);
    let record = get(&store, id).await;
    assert_eq!(record.errors.len(), 1);
    assert_eq!(record.errors[0].process.as_deref(), Some("host:1:aaaa"));
    assert_eq!(record.lease_owner.as_deref(), Some("host:1:aaaa"));

    // Its lease expires in another process: the rescue's entry names that process.
    let second = claim(&store, "default", 1, "host:2:bbbb", at(3))
        .await
        .remove(0);
    assert_eq!(second.id, id);
    let rescued = rescue(&store, at(3 + 31)).await;
    assert_eq!(rescued.len(), 1);
    let record = get(&store, id).await;
    assert_eq!(record.errors.len(), 2);
    assert_eq!(record.errors[1].process.as_deref(), Some("host:2:bbbb"));

    let third = claim(&store, "default", 1, "host:3:cccc", at(40))
        .await
        .remove(0);
    assert!(
        finish(&store, &third, Outcome::Completed, at(41))
            .await
            .accepted
    );
    let record = get(&store, id).await;
    assert_eq!(record.state, drover_core::JobState::Completed);
    assert_eq!(
        record.lease_owner.as_deref(),
        Some("host:3:cccc"),
        "a finished job names the process of its last attempt"
    );
    assert_eq!(record.lease_expires_at, None);
    assert_eq!(record.errors.len(), 2, "a completion adds no entry");

    // A discarded job too, with the process in its entry.
    let id = insert_one(&store, NewJob::new("k", "{}"), at(50)).await;
    let run = claim(&store, "default", 1, "host:4:dddd", at(51))
        .await
        .remove(0);
    let discard = Outcome::Discard {
        error: "bad args".into(),
    };
    assert!(finish(&store, &run, discard, at(52)).await.accepted);
    let record = get(&store, id).await;
    assert_eq!(record.lease_owner.as_deref(), Some("host:4:dddd"));
    assert_eq!(record.errors[0].process.as_deref(), Some("host:4:dddd"));
}

/// Processes register the concurrency of each queue they work, and update it with their
/// heartbeat.
pub async fn processes_record_their_concurrency_per_queue(store: DynStore) {
    let upsert = |concurrency: &[(&str, u32)], now| ProcessUpsertParams {
        id: "host:1:aaaa".into(),
        host: "host".into(),
        pid: 1,
        queues: concurrency.iter().map(|(q, _)| (*q).to_owned()).collect(),
        concurrency: concurrency
            .iter()
            .map(|(q, n)| ((*q).to_owned(), *n))
            .collect(),
        version: "0.1.0".into(),
        http_workers: vec![],
        cron: vec![],
        draining: false,
        now: Some(now),
    };
    store
        .process_upsert(upsert(&[("default", 10), ("mail", 2)], t0()))
        .await
        .expect("register");
    let list = store.process_list().await.expect("list");
    assert_eq!(
        list[0].concurrency,
        BTreeMap::from([("default".to_owned(), 10), ("mail".to_owned(), 2)])
    );
    assert_eq!(list[0].queues, vec!["default", "mail"]);
    store
        .process_upsert(upsert(&[("default", 4)], at(5)))
        .await
        .expect("heartbeat");
    let list = store.process_list().await.expect("list");
    assert_eq!(
        list[0].concurrency,
        BTreeMap::from([("default".to_owned(), 4)])
    );
    assert_eq!(list[0].heartbeat_at, at(5));
}
